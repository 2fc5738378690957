//! NBD server: the host path. `proto` is pure (encode/decode, no I/O).
//!
//! The daemon implements [`ExportCatalog`] and [`Export`]; this module knows nothing of volumes.
//! [`Server::serve_unix`] / [`Server::serve_tcp`] run an accept thread; each connection runs the
//! fixed-newstyle handshake ([`handshake`]) and then the transmission pipeline of DESIGN.md
//! "Requests" ([`transmission`]): one reader, a bounded queue, worker threads, one reply writer.
//!
//! Export names of the form `IBM.2107-75FA120/1000` contain a slash. In an NBD URI the export is
//! the path after the authority with its first `/` removed, so qemu and libnbd take it verbatim:
//! `qemu-io -f raw 'nbd+unix:///IBM.2107-75FA120/1000?socket=/home/site/nbd.sock'` (three
//! slashes: empty host, then `/` + name) and `nbd://127.0.0.1:10809/IBM.2107-75FA120/1000`.

pub mod client;
pub mod context;
pub mod handshake;
pub mod proto;
pub mod transmission;

#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tools;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// One open volume, as a host sees it. Called concurrently from several worker threads.
///
/// Offsets and lengths are checked against [`Export::size`] before a call, and lengths are at
/// most [`proto::MAX_PAYLOAD`]; alignment to [`Export::block_size`] is advertised but not
/// enforced, so an implementation must accept any byte range. `flush` must make durable every
/// write completed on *any* session of the volume, because the server advertises
/// `NBD_FLAG_CAN_MULTI_CONN`.
pub trait Export: Send + Sync {
    fn size(&self) -> u64;
    /// Minimum block size to advertise (512, or 4096 on 4K devices).
    fn block_size(&self) -> u32;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// `fua`: the data must be durable before this returns.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `may_trim`: the range may be deallocated (false when the client sent `NO_HOLE`).
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()>;
    fn read_only(&self) -> bool {
        false
    }
    /// The server hands the export, once the handshake is done, a way to end this session:
    /// `disconnect()` makes the server stop reading the connection; requests already read
    /// are answered, then the socket closes. An export whose access can be withdrawn (a
    /// host connection's) keeps it and answers `ESHUTDOWN` meanwhile; others ignore it.
    fn attach_disconnect(&self, _disconnect: Box<dyn Fn() + Send + Sync>) {}
    /// `NBD_CMD_CACHE`: the client will read `[offset, offset+len)` soon. A hint only: it
    /// must not change what any read returns. The default does nothing.
    fn cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// `base:allocation` of `[offset, offset+len)`: consecutive extents from `offset`
    /// (flags [`proto::STATE_HOLE`] / [`proto::STATE_ZERO`]). They may cover less than `len`
    /// (the client asks again) but not more than the export. A hole/zero must never be
    /// reported where a read returns nonzero bytes. The default reports all data.
    fn allocation(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent { len, flags: 0 }])
    }
    /// Leaf names of the dirty bitmaps offered as `qemu:dirty-bitmap:<leaf>` contexts.
    fn dirty_bitmaps(&self) -> Vec<String> {
        Vec::new()
    }
    /// Extents of dirty bitmap `leaf` over `[offset, offset+len)` ([`proto::STATE_DIRTY`]
    /// where set), with the same rules as [`Export::allocation`]. An error when the bitmap
    /// is gone (for example its relationship was withdrawn after the client selected it).
    fn dirty_extents(&self, leaf: &str, _offset: u64, _len: u64) -> io::Result<Vec<Extent>> {
        Err(io::Error::new(io::ErrorKind::NotFound, format!("no dirty bitmap {leaf:?}")))
    }
}

/// One block-status extent: `len` bytes with `flags` (the meaning depends on the context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub flags: u32,
}

/// The exports a server offers.
pub trait ExportCatalog: Send + Sync {
    /// Open the export named `name` for one client session; the session ends when the Arc is
    /// dropped. `None`: no such export (the client gets `NBD_REP_ERR_UNKNOWN`).
    fn open(&self, name: &str) -> Option<Arc<dyn Export>>;
    fn list(&self) -> Vec<String>;
}

/// A connected client socket, Unix or TCP.
#[derive(Debug)]
pub(crate) enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub(crate) fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
    pub(crate) fn shutdown(&self) {
        // Errors mean the socket is already closed, which is the goal.
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
    /// Stop reading: the reader sees end of file; replies can still be written.
    pub(crate) fn shutdown_read(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Read),
            Conn::Tcp(s) => s.shutdown(Shutdown::Read),
        };
    }
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Server configuration; [`Server::default`] gives the DESIGN numbers.
#[derive(Debug, Clone)]
pub struct Server {
    /// Worker threads per connection.
    pub workers: usize,
    /// Capacity of the per-connection request queue (the queue depth a client can reach).
    pub queue_depth: usize,
    /// A client must finish the handshake within this time (idle sockets hold threads).
    pub handshake_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server { workers: 4, queue_depth: 64, handshake_timeout: Duration::from_secs(30) }
    }
}

/// State shared by the accept thread, connection threads and the handle.
#[derive(Debug, Default)]
struct Shared {
    closing: AtomicBool,
    next_id: AtomicU64,
    /// Clones of live client sockets, so shutdown can unblock their threads.
    conns: Mutex<HashMap<u64, Conn>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not take the server down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running server. Dropping it shuts it down.
#[derive(Debug)]
pub struct ServerHandle {
    addr: ListenAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// (dev, ino) of the socket file we created, so shutdown never removes someone else's.
    socket_id: Option<(u64, u64)>,
}

impl Server {
    /// Serves `catalog` on a Unix socket at `path` (mode 0600). A stale socket file is replaced;
    /// a live one (a server answers) or a non-socket file is an error.
    pub fn serve_unix(&self, path: &Path, catalog: Arc<dyn ExportCatalog>) -> io::Result<ServerHandle> {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another server is listening", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        // The directory (site home) should be private too; this closes the socket itself.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let md = std::fs::metadata(path)?;
        let socket_id = Some((md.dev(), md.ino()));
        let accept = move || listener.accept().map(|(s, _)| Conn::Unix(s));
        self.start(ListenAddr::Unix(path.to_path_buf()), socket_id, catalog, accept)
    }

    /// Serves `catalog` on TCP. Only loopback addresses are accepted (NBD has no authentication
    /// here). Port 0 picks a free port; see [`ServerHandle::addr`].
    pub fn serve_tcp(&self, addr: SocketAddr, catalog: Arc<dyn ExportCatalog>) -> io::Result<ServerHandle> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refusing to serve NBD on non-loopback address {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let accept = move || {
            let (s, _) = listener.accept()?;
            // Small replies (16 bytes) must not wait for Nagle.
            s.set_nodelay(true)?;
            Ok(Conn::Tcp(s))
        };
        self.start(ListenAddr::Tcp(local), None, catalog, accept)
    }

    fn start(
        &self,
        addr: ListenAddr,
        socket_id: Option<(u64, u64)>,
        catalog: Arc<dyn ExportCatalog>,
        mut accept: impl FnMut() -> io::Result<Conn> + Send + 'static,
    ) -> io::Result<ServerHandle> {
        let shared = Arc::new(Shared::default());
        let cfg = self.clone();
        let sh = shared.clone();
        let accept = std::thread::Builder::new().name("nbd-accept".into()).spawn(move || {
            while !sh.closing.load(Ordering::Acquire) {
                match accept() {
                    Ok(conn) => spawn_connection(&sh, &cfg, &catalog, conn),
                    Err(e) => {
                        tracing::warn!("nbd: accept failed: {e}");
                        // EMFILE and friends: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
        Ok(ServerHandle { addr, shared, accept: Some(accept), socket_id })
    }
}

fn spawn_connection(sh: &Arc<Shared>, cfg: &Server, catalog: &Arc<dyn ExportCatalog>, conn: Conn) {
    let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = lock(&sh.conns);
        // Checked under the lock so shutdown cannot miss a connection registered late.
        if sh.closing.load(Ordering::Acquire) {
            return;
        }
        match conn.try_clone() {
            Ok(c) => conns.insert(id, c),
            Err(e) => {
                tracing::warn!("nbd: cannot clone client socket: {e}");
                return;
            }
        };
    }
    let (sh2, cfg, catalog) = (sh.clone(), cfg.clone(), catalog.clone());
    let spawned = std::thread::Builder::new().name(format!("nbd-conn-{id}")).spawn(move || {
        if let Err(e) = run_connection(conn, &cfg, catalog.as_ref()) {
            tracing::info!("nbd: connection {id} ended: {e}");
        }
        lock(&sh2.conns).remove(&id);
    });
    let mut threads = lock(&sh.threads);
    threads.retain(|t| !t.is_finished());
    match spawned {
        Ok(t) => threads.push(t),
        Err(e) => {
            tracing::warn!("nbd: cannot spawn connection thread: {e}");
            if let Some(c) = lock(&sh.conns).remove(&id) {
                c.shutdown();
            }
        }
    }
}

fn run_connection(mut conn: Conn, cfg: &Server, catalog: &dyn ExportCatalog) -> io::Result<()> {
    conn.set_read_timeout(Some(cfg.handshake_timeout))?;
    let Some(session) = handshake::negotiate(&mut conn, catalog)? else {
        return Ok(());
    };
    conn.set_read_timeout(None)?;
    let closer = conn.try_clone()?;
    session.export.attach_disconnect(Box::new(move || closer.shutdown_read()));
    transmission::serve(conn, &session, cfg.workers, cfg.queue_depth)
}

impl ServerHandle {
    /// The address actually bound (with the real port for TCP port 0).
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// Stops accepting, closes every client connection (in-flight requests finish, their
    /// replies may be lost), joins all threads and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.closing.store(true, Ordering::Release);
        // Wake the blocking accept() with a connection of our own; std has no other portable way.
        let woke = match &self.addr {
            ListenAddr::Unix(p) => UnixStream::connect(p).is_ok(),
            ListenAddr::Tcp(a) => TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok(),
        };
        if woke {
            let _ = accept.join();
        } else {
            // The socket file vanished: the thread stays blocked until exit; do not hang here.
            tracing::warn!("nbd: could not wake the accept thread; leaving it detached");
        }
        for c in lock(&self.shared.conns).values() {
            c.shutdown();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        if let (ListenAddr::Unix(p), Some(id)) = (&self.addr, self.socket_id)
            && std::fs::symlink_metadata(p).is_ok_and(|md| (md.dev(), md.ino()) == id)
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
