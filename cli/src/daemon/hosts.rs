//! The NBD endpoints of host connections: one NBD server per host connection, on its Unix
//! socket (`HOME/hosts/<image>-<id>.sock`, 0600) or its loopback TCP port (`-nbdport`).
//! A client there lists and opens only the volumes of the connection's volume group; every
//! other name is unknown to it (NBD_REP_ERR_UNKNOWN). The site's `nbd.sock` stays the
//! administrator's path to every volume.
//!
//! The set of endpoints follows the catalogs: at start, and after every control request
//! that can add, move or remove one ([`HostEndpoints::reconcile`]). Access changes that
//! keep the endpoint (`chvolgrp`, `rmvolgrp`, `chhostconnect -volgrp`, `rmfbvol`) are the
//! engine's business: it revokes the sessions (`flashtrack::image::sessions`), and
//! [`HostVolumeExport`] answers their requests with ESHUTDOWN until the server stops
//! reading them. An endpoint that goes away is stopped once its revoked sessions have
//! closed (at most the revoke grace), so they see ESHUTDOWN rather than a cut connection.

use super::export::VolumeExport;
use flashtrack::control::{Assign, Request};
use flashtrack::error::{Error, ErrorKind};
use flashtrack::id::{HostId, ImageId, VolumeKey};
use flashtrack::image::hosts::{Endpoint, HOSTS_DIR};
use flashtrack::image::sessions::{HostSession, REVOKE_GRACE};
use flashtrack::nbd::{Export, ExportCatalog, Extent, ServerHandle};
use flashtrack::site::Site;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One running endpoint.
struct Running {
    endpoint: Endpoint,
    handle: ServerHandle,
    /// Sessions open through it.
    live: Arc<AtomicUsize>,
}

/// The endpoints flashd serves for host connections.
pub struct HostEndpoints {
    site: Arc<Site>,
    home: PathBuf,
    running: Mutex<HashMap<(ImageId, HostId), Running>>,
}

impl HostEndpoints {
    pub fn new(site: Arc<Site>, home: PathBuf) -> Self {
        HostEndpoints { site, home, running: Mutex::new(HashMap::new()) }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(ImageId, HostId), Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `req` can add, move or remove an endpoint.
    pub fn moves_endpoints(req: &Request) -> bool {
        matches!(
            req,
            Request::HostCreate { .. }
                | Request::HostChange { .. }
                | Request::HostRemove { .. }
                | Request::ImageRemove { .. }
        )
    }

    /// A request that asks for a TCP port nobody can bind is refused before the catalog
    /// changes (its own endpoint's port, already ours, is fine).
    pub fn precheck(&self, req: &Request) -> Option<Error> {
        let (image, host, port) = match req {
            Request::HostCreate { image, spec } => (image, None, spec.nbdport?),
            Request::HostChange { image, host, change } => match change.nbdport? {
                Assign::Set(p) => (image, Some(*host), p),
                Assign::Clear => return None,
            },
            _ => return None,
        };
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let ours = host.is_some_and(|h| {
            self.running().get(&(image.clone(), h)).is_some_and(|r| r.endpoint == Endpoint::Tcp(addr))
        });
        if ours {
            return None;
        }
        match std::net::TcpListener::bind(addr) {
            Ok(_) => None,
            Err(e) => Some(Error::new(ErrorKind::HostPortInUse, port, format!("cannot listen on {addr}: {e}"))),
        }
    }

    /// Serve exactly the site's host connections: start the missing endpoints, stop the
    /// ones that went away or moved. A failure is logged; the others go on.
    pub fn reconcile(&self) {
        let want: HashMap<(ImageId, HostId), Endpoint> =
            self.site.host_endpoints().into_iter().map(|(i, h, e)| ((i, h), e)).collect();
        let mut running = self.running();
        let gone: Vec<(ImageId, HostId)> =
            running.iter().filter(|(k, r)| want.get(*k) != Some(&r.endpoint)).map(|(k, _)| k.clone()).collect();
        for key in gone {
            if let Some(r) = running.remove(&key) {
                stop(r);
                tracing::info!("host connection {}/{}: endpoint stopped", key.0, key.1);
            }
        }
        for (key, endpoint) in want {
            if running.contains_key(&key) {
                continue;
            }
            match self.start(&key.0, key.1, &endpoint) {
                Ok(r) => {
                    tracing::info!("host connection {}/{}: serving NBD on {endpoint}", key.0, key.1);
                    running.insert(key, r);
                }
                Err(e) => tracing::error!("host connection {}/{}: cannot serve {endpoint}: {e}", key.0, key.1),
            }
        }
    }

    fn start(&self, image: &ImageId, host: HostId, endpoint: &Endpoint) -> io::Result<Running> {
        let live = Arc::new(AtomicUsize::new(0));
        let catalog = Arc::new(HostExports { site: self.site.clone(), image: image.clone(), host, live: live.clone() });
        let server = flashtrack::nbd::Server::default();
        let handle = match endpoint {
            Endpoint::Unix(path) => {
                let dir = self.home.join(HOSTS_DIR);
                if !dir.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                }
                server.serve_unix(path, catalog)?
            }
            Endpoint::Tcp(addr) => server.serve_tcp(*addr, catalog)?,
        };
        Ok(Running { endpoint: endpoint.clone(), handle, live })
    }

    /// At start: remove sockets in `HOME/hosts` that no host connection owns any more (an
    /// image removed while flashd was down, a crash). Only sockets: anything else is left.
    pub fn remove_stale_sockets(&self) {
        use std::os::unix::fs::FileTypeExt;
        let want: Vec<PathBuf> = self
            .site
            .host_endpoints()
            .into_iter()
            .filter_map(|(_, _, e)| match e {
                Endpoint::Unix(p) => Some(p),
                Endpoint::Tcp(_) => None,
            })
            .collect();
        let Ok(entries) = std::fs::read_dir(self.home.join(HOSTS_DIR)) else { return };
        for e in entries.flatten() {
            let socket = e.file_type().is_ok_and(|t| t.is_socket());
            if socket && !want.contains(&e.path()) {
                tracing::info!("removing stale host connection socket {}", e.path().display());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Shutdown: every endpoint stops, its connections close.
    pub fn stop_all(&self) {
        for (_, r) in self.running().drain() {
            r.handle.shutdown();
        }
    }
}

/// Stop an endpoint once its sessions (revoked by the engine) have closed, or a little
/// after the revoke grace.
fn stop(r: Running) {
    let deadline = Instant::now() + REVOKE_GRACE + Duration::from_millis(500);
    while r.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    r.handle.shutdown();
}

/// What one host connection's endpoint offers: its volume group's volumes.
struct HostExports {
    site: Arc<Site>,
    image: ImageId,
    host: HostId,
    live: Arc<AtomicUsize>,
}

impl ExportCatalog for HostExports {
    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        let key: VolumeKey = name.parse().ok()?;
        let (guard, flash, session) = self.site.open_host_via(&self.image, self.host, &key)?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Some(Arc::new(HostVolumeExport { inner: VolumeExport::new(guard, flash), session, live: self.live.clone() }))
    }

    fn list(&self) -> Vec<String> {
        self.site.host_volume_keys(&self.image, self.host).iter().map(ToString::to_string).collect()
    }
}

/// A volume opened through a host connection: every request first asks the session
/// whether the access still stands (ESHUTDOWN once revoked).
struct HostVolumeExport {
    inner: VolumeExport,
    session: Arc<HostSession>,
    live: Arc<AtomicUsize>,
}

impl Drop for HostVolumeExport {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Export for HostVolumeExport {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.write(offset, data, fua)
    }
    fn flush(&self) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.flush()
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.trim(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.write_zeroes(offset, len, may_trim)
    }
    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let _running = self.session.enter()?;
        self.inner.cache(offset, len)
    }
    fn allocation(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let _running = self.session.enter()?;
        self.inner.allocation(offset, len)
    }
    fn dirty_bitmaps(&self) -> Vec<String> {
        self.inner.dirty_bitmaps()
    }
    fn dirty_extents(&self, leaf: &str, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let _running = self.session.enter()?;
        self.inner.dirty_extents(leaf, offset, len)
    }
    fn attach_disconnect(&self, disconnect: Box<dyn Fn() + Send + Sync>) {
        self.session.attach_disconnect(disconnect);
    }
}
