//! Server tests over real sockets: an in-memory export driven by our client and by raw,
//! deliberately malformed byte streams.

use super::client::{self, Client, Endpoint, Request};
use super::proto::{self, RequestHeader};
use super::{Export, ExportCatalog, Extent, ListenAddr, Server, ServerHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Offsets with special behaviour in [`MemExport`] when `traps` is set (inside 64 MiB).
pub(super) const SLOW_OFFSET: u64 = 60 << 20; // reads sleep 300 ms
pub(super) const ENOSPC_OFFSET: u64 = 61 << 20; // writes fail with ENOSPC
pub(super) const PANIC_OFFSET: u64 = 62 << 20; // reads panic

/// A `Vec<u8>` export with call counters and a few trap offsets.
#[derive(Debug)]
pub(super) struct MemExport {
    pub data: Mutex<Vec<u8>>,
    pub read_only: bool,
    pub flushes: AtomicUsize,
    pub trims: AtomicUsize,
    /// (offset, len, may_trim) of every write_zeroes.
    pub zeroes: Mutex<Vec<(u64, u64, bool)>>,
    pub fua_writes: AtomicUsize,
    /// Arms the trap offsets (off by default so whole-export readers like qemu-img work).
    pub traps: AtomicBool,
    /// 64 KiB granules written since creation: the dirty bitmap [`MEM_BITMAP`].
    pub written: Mutex<BTreeSet<u64>>,
    /// The dirty bitmap is gone (as when its relationship is withdrawn).
    pub bitmap_gone: AtomicBool,
    /// (offset, len) of every cache hint.
    pub cached: Mutex<Vec<(u64, u64)>>,
}

/// Leaf name of MemExport's dirty bitmap.
pub(super) const MEM_BITMAP: &str = "mem.dirty";
/// Granule of MemExport's allocation and dirty bitmap.
pub(super) const GRANULE: u64 = 64 << 10;

impl MemExport {
    pub fn new(size: usize, read_only: bool) -> Self {
        MemExport {
            data: Mutex::new(vec![0; size]),
            read_only,
            flushes: AtomicUsize::new(0),
            trims: AtomicUsize::new(0),
            zeroes: Mutex::new(Vec::new()),
            fua_writes: AtomicUsize::new(0),
            traps: AtomicBool::new(false),
            written: Mutex::new(BTreeSet::new()),
            bitmap_gone: AtomicBool::new(false),
            cached: Mutex::new(Vec::new()),
        }
    }
}

fn range(offset: u64, len: usize) -> std::ops::Range<usize> {
    offset as usize..offset as usize + len
}

impl Export for MemExport {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn block_size(&self) -> u32 {
        512
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let traps = self.traps.load(Ordering::Relaxed);
        if traps && offset == SLOW_OFFSET {
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(!traps || offset != PANIC_OFFSET, "trap: read at PANIC_OFFSET");
        buf.copy_from_slice(&self.data.lock().unwrap()[range(offset, buf.len())]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        if self.traps.load(Ordering::Relaxed) && offset == ENOSPC_OFFSET {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if fua {
            self.fua_writes.fetch_add(1, Ordering::Relaxed);
        }
        let end = offset + data.len() as u64;
        self.written.lock().unwrap().extend(offset / GRANULE..end.div_ceil(GRANULE));
        self.data.lock().unwrap()[range(offset, data.len())].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.trims.fetch_add(1, Ordering::Relaxed);
        self.data.lock().unwrap()[range(offset, len as usize)].fill(0);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.zeroes.lock().unwrap().push((offset, len, may_trim));
        self.data.lock().unwrap()[range(offset, len as usize)].fill(0);
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.cached.lock().unwrap().push((offset, len));
        Ok(())
    }
    /// All-zero granules are holes; a granule-sized extent each (the server merges them).
    fn allocation(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let data = self.data.lock().unwrap();
        Ok(granules(offset, len, |g| {
            let r = range(g * GRANULE, GRANULE as usize);
            let r = r.start..r.end.min(data.len());
            if data[r].iter().all(|&b| b == 0) { proto::STATE_HOLE | proto::STATE_ZERO } else { 0 }
        }))
    }
    fn dirty_bitmaps(&self) -> Vec<String> {
        if self.bitmap_gone.load(Ordering::Relaxed) { Vec::new() } else { vec![MEM_BITMAP.to_owned()] }
    }
    fn dirty_extents(&self, leaf: &str, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        if leaf != MEM_BITMAP || self.bitmap_gone.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bitmap {leaf} is gone")));
        }
        let w = self.written.lock().unwrap();
        Ok(granules(offset, len, |g| if w.contains(&g) { proto::STATE_DIRTY } else { 0 }))
    }
}

/// One extent per 64 KiB granule touched by `[offset, offset+len)`, clipped to the range.
fn granules(offset: u64, len: u64, flags: impl Fn(u64) -> u32) -> Vec<Extent> {
    let end = offset + len;
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        let g = at / GRANULE;
        let stop = ((g + 1) * GRANULE).min(end);
        out.push(Extent { len: stop - at, flags: flags(g) });
        at = stop;
    }
    out
}

/// A fixed set of named exports.
#[derive(Debug, Default)]
pub(super) struct MemCatalog {
    pub exports: BTreeMap<String, Arc<MemExport>>,
    pub opened: AtomicUsize,
}

impl MemCatalog {
    pub fn with(names: &[(&str, usize, bool)]) -> Arc<Self> {
        let exports = names.iter().map(|&(n, size, ro)| (n.to_owned(), Arc::new(MemExport::new(size, ro)))).collect();
        Arc::new(MemCatalog { exports, opened: AtomicUsize::new(0) })
    }
}

impl ExportCatalog for MemCatalog {
    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        let e = self.exports.get(name)?.clone();
        self.opened.fetch_add(1, Ordering::Relaxed);
        Some(e)
    }
    fn list(&self) -> Vec<String> {
        self.exports.keys().cloned().collect()
    }
}

pub(super) const VOL: &str = "IBM.2107-75FA120/1000";
pub(super) const RO: &str = "IBM.2107-75FA120/1001";

/// Starts a server with a 64 MiB writable and a 1 MiB read-only export on a temp socket.
pub(super) fn start() -> (tempfile::TempDir, Arc<MemCatalog>, ServerHandle, Endpoint) {
    let dir = tempfile::tempdir().unwrap();
    let cat = MemCatalog::with(&[(VOL, 64 << 20, false), (RO, 1 << 20, true)]);
    let path = dir.path().join("nbd.sock");
    let h = Server::default().serve_unix(&path, cat.clone()).unwrap();
    (dir, cat, h, Endpoint::Unix(path))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

#[test]
fn socket_mode_and_list() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _cat, h, ep) = start();
    let md = std::fs::metadata(dir.path().join("nbd.sock")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(client::list(&ep).unwrap(), vec![VOL.to_string(), RO.to_string()]);
    h.shutdown();
    assert!(!dir.path().join("nbd.sock").exists(), "socket file removed on shutdown");
}

#[test]
fn stale_socket_replaced_live_socket_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves a stale file
    let cat = MemCatalog::with(&[(VOL, 1 << 20, false)]);
    let h = Server::default().serve_unix(&path, cat.clone()).unwrap();
    let err = Server::default().serve_unix(&path, cat.clone()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(Server::default().serve_unix(&file, cat.clone()).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "a non-socket file is never removed");
    h.shutdown();
}

#[test]
fn tcp_loopback_only() {
    let cat = MemCatalog::with(&[(VOL, 1 << 20, false)]);
    let err = Server::default().serve_tcp("0.0.0.0:0".parse().unwrap(), cat.clone()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    let h = Server::default().serve_tcp("127.0.0.1:0".parse().unwrap(), cat.clone()).unwrap();
    let ListenAddr::Tcp(addr) = h.addr().clone() else { panic!("tcp addr") };
    let mut c = Client::connect(&Endpoint::Tcp(addr), VOL).unwrap();
    c.write(4096, b"hello", false).unwrap();
    let mut b = [0u8; 5];
    c.read(4096, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    c.disconnect().unwrap();
    h.shutdown();
}

#[test]
fn basic_commands_and_flags() {
    let (_d, cat, h, ep) = start();
    let e = &cat.exports[VOL];
    e.traps.store(true, Ordering::Relaxed);
    let mut c = Client::connect(&ep, VOL).unwrap();
    assert_eq!(c.size(), 64 << 20);
    assert_eq!(c.block_sizes().min, 512);
    assert_eq!(c.block_sizes().max, proto::MAX_PAYLOAD);
    let tf = c.transmission_flags();
    for f in [proto::TFLAG_HAS_FLAGS, proto::TFLAG_SEND_FLUSH, proto::TFLAG_SEND_FUA, proto::TFLAG_SEND_TRIM] {
        assert!(tf & f != 0);
    }
    assert!(tf & proto::TFLAG_CAN_MULTI_CONN != 0 && !c.read_only());
    let data = pattern(1, 1 << 20);
    c.write(0, &data, true).unwrap();
    assert_eq!(e.fua_writes.load(Ordering::Relaxed), 1);
    let mut back = vec![0; 1 << 20];
    c.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    c.write_zeroes(0, 4096, true).unwrap();
    c.write_zeroes(8192, 4096, false).unwrap();
    assert_eq!(*e.zeroes.lock().unwrap(), vec![(0, 4096, false), (8192, 4096, true)]);
    c.trim(65536, 65536).unwrap();
    assert_eq!(e.trims.load(Ordering::Relaxed), 1);
    c.flush().unwrap();
    assert!(e.flushes.load(Ordering::Relaxed) >= 1);
    c.read(0, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0) && back[65536..131072].iter().all(|&b| b == 0));
    assert_eq!(back[4096..8192], data[4096..8192]);
    // Export errors come back as their errno, and the connection goes on.
    let err = c.write(ENOSPC_OFFSET, b"x", false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    let err = c.read(PANIC_OFFSET, &mut [0u8; 16]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let err = c.read((64 << 20) - 1, &mut [0u8; 2]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    c.read(0, &mut [0u8; 0]).unwrap();
    c.disconnect().unwrap();
    h.shutdown();
}

#[test]
fn read_only_export_refuses_writes() {
    let (_d, _cat, h, ep) = start();
    let mut c = Client::connect(&ep, RO).unwrap();
    assert!(c.read_only());
    for err in
        [c.write(0, b"x", false).unwrap_err(), c.trim(0, 512).unwrap_err(), c.write_zeroes(0, 512, false).unwrap_err()]
    {
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
    c.read(0, &mut [0u8; 512]).unwrap();
    c.flush().unwrap();
    h.shutdown();
}

#[test]
fn unknown_export_and_default_name() {
    let (_d, _cat, h, ep) = start();
    let err = Client::connect(&ep, "IBM.2107-75FA120/9999").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // Two exports: the default (empty) name is ambiguous and refused.
    assert_eq!(Client::connect(&ep, "").unwrap_err().kind(), io::ErrorKind::NotFound);
    h.shutdown();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.sock");
    let h = Server::default().serve_unix(&path, MemCatalog::with(&[(VOL, 1 << 20, false)])).unwrap();
    assert_eq!(Client::connect(&Endpoint::Unix(path), "").unwrap().size(), 1 << 20);
    h.shutdown();
}

#[test]
fn replies_out_of_order() {
    let (_d, cat, h, ep) = start();
    cat.exports[VOL].traps.store(true, Ordering::Relaxed);
    let mut c = Client::connect(&ep, VOL).unwrap();
    let slow = c.submit(Request::Read { offset: SLOW_OFFSET, len: 512 }).unwrap();
    let fast = c.submit(Request::Read { offset: 0, len: 512 }).unwrap();
    assert_eq!(c.wait().unwrap().cookie, fast, "the fast read overtakes the slow one");
    assert_eq!(c.wait().unwrap().cookie, slow);
    h.shutdown();
}

#[test]
fn pipelined_eight_threads() {
    let (_d, cat, h, ep) = start();
    const CHUNK: usize = 64 << 10;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ep = ep.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&ep, VOL).unwrap();
                let base = t * (4 << 20);
                let bufs: Vec<Vec<u8>> = (0..64).map(|i| pattern(t * 1000 + i, CHUNK)).collect();
                let mut max_depth = 0;
                for (i, b) in bufs.iter().enumerate() {
                    if c.in_flight() == 32 {
                        c.wait().unwrap().result.unwrap();
                    }
                    c.submit(Request::Write { offset: base + (i * CHUNK) as u64, data: b, fua: false }).unwrap();
                    max_depth = max_depth.max(c.in_flight());
                }
                while c.in_flight() > 0 {
                    c.wait().unwrap().result.unwrap();
                }
                assert_eq!(max_depth, 32);
                let mut cookies = std::collections::HashMap::new();
                for i in 0..64 {
                    let ck = c.submit(Request::Read { offset: base + (i * CHUNK) as u64, len: CHUNK as u32 }).unwrap();
                    cookies.insert(ck, i);
                }
                for _ in 0..64 {
                    let done = c.wait().unwrap();
                    assert_eq!(done.result.unwrap(), bufs[cookies[&done.cookie]]);
                }
                c.flush().unwrap();
                c.disconnect().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let data = cat.exports[VOL].data.lock().unwrap();
    assert_eq!(data[(7 << 22) + 63 * CHUNK..(7 << 22) + 64 * CHUNK], pattern(7063, CHUNK)[..]);
    drop(data);
    h.shutdown();
}

// --- Raw sockets: malformed input ----------------------------------------------------------------

/// A raw connection that has completed the handshake with OPT_GO on `name`.
pub(super) fn raw_go(ep: &Endpoint, name: &str) -> UnixStream {
    let Endpoint::Unix(p) = ep else { panic!() };
    let mut s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let data = proto::encode_info_request(name, &[]);
    s.write_all(&proto::encode_option_header(proto::OPT_GO, data.len() as u32)).unwrap();
    s.write_all(&data).unwrap();
    loop {
        let mut hb = [0u8; 20];
        s.read_exact(&mut hb).unwrap();
        let h = proto::decode_option_reply_header(&hb).unwrap();
        let mut d = vec![0u8; h.length as usize];
        s.read_exact(&mut d).unwrap();
        if h.reply_type == proto::REP_ACK {
            return s;
        }
        assert_eq!(h.reply_type, proto::REP_INFO);
    }
}

pub(super) fn req(s: &mut UnixStream, command: u16, flags: u16, cookie: u64, offset: u64, length: u32) {
    let h = RequestHeader { flags, command, cookie, offset, length };
    s.write_all(&proto::encode_request(&h)).unwrap();
}

pub(super) fn reply(s: &mut UnixStream) -> proto::SimpleReply {
    let mut b = [0u8; 16];
    s.read_exact(&mut b).unwrap();
    proto::decode_simple_reply(&b).unwrap()
}

/// True when the server closed the connection (EOF or reset).
pub(super) fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn malformed_requests_get_errno() {
    let (_d, _cat, h, ep) = start();
    let mut s = raw_go(&ep, VOL);
    let size = 64u64 << 20;
    req(&mut s, 0x99, 0, 1, 0, 512); // unknown command
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_READ, 0, 2, size - 512, 1024); // past the end
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_READ, 0, 3, u64::MAX - 10, 512); // offset + length overflows
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_READ, proto::CMD_FLAG_DF, 4, 0, 512); // flag not negotiated
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    req(&mut s, proto::CMD_READ, 0, 5, 0, proto::MAX_PAYLOAD + 1); // oversize read
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    // Write past the end: payload is consumed, so the next request is still in frame.
    req(&mut s, proto::CMD_WRITE, 0, 6, size, 4);
    s.write_all(b"abcd").unwrap();
    assert_eq!(reply(&mut s).error, proto::EINVAL);
    // Oversize write: 32 MiB + 1 byte of payload is read and discarded.
    let n = proto::MAX_PAYLOAD + 1;
    req(&mut s, proto::CMD_WRITE, 0, 7, 0, n);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&vec![0x5a; n as usize]).unwrap());
    assert_eq!(reply(&mut s), proto::SimpleReply { error: proto::EINVAL, cookie: 7 });
    writer.join().unwrap();
    // Still serving on the same connection.
    req(&mut s, proto::CMD_WRITE, 0, 8, 512, 3);
    s.write_all(b"xyz").unwrap();
    assert_eq!(reply(&mut s), proto::SimpleReply { error: 0, cookie: 8 });
    req(&mut s, proto::CMD_READ, 0, 9, 512, 3);
    assert_eq!(reply(&mut s), proto::SimpleReply { error: 0, cookie: 9 });
    let mut d = [0u8; 3];
    s.read_exact(&mut d).unwrap();
    assert_eq!(&d, b"xyz");
    // DISC: in-flight work finishes, then the server closes.
    req(&mut s, proto::CMD_WRITE, 0, 10, 0, 2);
    s.write_all(b"ok").unwrap();
    req(&mut s, proto::CMD_DISC, 0, 11, 0, 0);
    assert_eq!(reply(&mut s).cookie, 10);
    assert!(closed(&mut s));
    h.shutdown();
}

#[test]
fn framing_errors_disconnect_and_server_survives() {
    let (_d, _cat, h, ep) = start();
    // Bad magic.
    let mut s = raw_go(&ep, VOL);
    s.write_all(&[0xde; 28]).unwrap();
    assert!(closed(&mut s));
    // Short header, then EOF.
    let mut s = raw_go(&ep, VOL);
    s.write_all(&proto::encode_request(&RequestHeader { flags: 0, command: 0, cookie: 1, offset: 0, length: 1 })[..10])
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));
    // Write whose payload never fully arrives.
    let mut s = raw_go(&ep, VOL);
    req(&mut s, proto::CMD_WRITE, 0, 1, 0, 4096);
    s.write_all(&[1; 100]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));
    // Other connections are unaffected.
    let mut c = Client::connect(&ep, VOL).unwrap();
    c.write(0, b"alive", true).unwrap();
    c.disconnect().unwrap();
    h.shutdown();
}

#[test]
fn shutdown_closes_idle_clients() {
    let (_d, _cat, h, ep) = start();
    let mut s = raw_go(&ep, VOL);
    let Endpoint::Unix(p) = &ep else { panic!() };
    let mut mid_handshake = UnixStream::connect(p).unwrap();
    mid_handshake.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = std::time::Instant::now();
    h.shutdown();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(closed(&mut s));
    let mut g = [0u8; 18];
    let _ = mid_handshake.read_exact(&mut g);
    assert!(closed(&mut mid_handshake));
}
