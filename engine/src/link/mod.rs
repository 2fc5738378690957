//! The mirror link: typed, authenticated, simulated connections between the I/O ports of two
//! storage images, the road PPRC (Metro Mirror, Global Copy) and remote FlashCopy drive on.
//!
//! # Layers
//!
//! ```text
//!  PPRC paths/pairs, remote apply, in-band commands   (later; built on this API)
//!  ─────────────────────────────────────────────────────────────────────────────────────
//!  LinkEndpoint (image WWNN, port) ── Link ── submit/request/reply, set_props, stats
//!    session.rs   requests awaiting replies (timeouts -> outcome unknown), dedup, threads
//!    message.rs   Message (Write, Track, Flush, Command, Ping) / Reply, RequestId
//!    shaper.rs    the simulated line: bandwidth, latency, jitter, loss, outage; counters
//!    auth.rs      site key, challenge and response both ways (HMAC-SHA256)
//!    frame.rs     length-prefixed frames: magic, version, type, request ID, CRC32C
//!    transport.rs byte streams: TCP on loopback (two flashd) | in-memory pipe (one flashd)
//! ```
//!
//! Everything above `transport.rs` is the same code for both transports: the in-memory pipe
//! carries the same encoded bytes as TCP, so framing, authentication, shaping, counters and
//! deduplication behave identically inside one flashd and between two.
//!
//! # Endpoints and links
//!
//! A [`LinkEndpoint`] is one I/O port of one storage image, addressed by a [`LinkAddr`]
//! (the image's WWNN and the port number, as `mkpprcpath` names them). It holds the site key
//! and a [`Handler`] that applies what arrives. It connects to another endpoint in the same
//! process ([`LinkEndpoint::connect_local`]) or listens and connects over TCP on loopback
//! ([`LinkEndpoint::listen_tcp`], [`LinkEndpoint::connect_tcp`]). Each connection is
//! authenticated both ways before any frame of data crosses (`auth.rs`) and becomes a [`Link`]
//! at each end, registered under the peer's address ([`LinkEndpoint::link`]). A link is
//! symmetric: either end may send requests (a failback reverses the direction).
//!
//! One process serving many endpoints on one TCP address uses a [`LinkListener`]: it reads
//! each connection's Hello and hands it to the endpoint the Hello asks for (refusing, and
//! logging, an address it does not serve); the handshake then goes on as with `listen_tcp`.
//!
//! # Requests, replies, at most once
//!
//! Every [`Message`] is a request with a [`Reply`]. [`Link::submit`] sends one and returns a
//! [`Pending`]; [`Pending::wait`] returns the reply, or after the timeout
//! `ErrorKind::LinkOutcomeUnknown` (the CLI maps it to exit code 4): the request may or may not
//! have been applied. The caller resends it under the same [`RequestId`]
//! ([`Link::submit_as`]); the receiver remembers the last [`session::DEDUP_WINDOW`] requests
//! of each peer incarnation with their replies, so a resent or replayed request is applied at
//! most once and its reply is sent again. Request IDs are the sender endpoint's sequence; the
//! dedup key is (peer incarnation, ID), the incarnation being a random number each endpoint
//! draws at start and proves in the handshake, so a restarted flashd never collides with its
//! former self. An ID older than the window is answered `LinkOutcomeUnknown`, never reapplied.
//!
//! # The simulated line
//!
//! See `shaper.rs` for the model. In short: shaping is done by the sender; bandwidth
//! serialises frames; latency and jitter delay them; loss delays a frame by one retransmission
//! timeout per loss (never dropped silently, never reordered: a direction is one ordered
//! stream); an **outage** makes new requests fail at once with `ErrorKind::LinkDown` (they were
//! not sent) and ends every request awaiting a reply as `LinkOutcomeUnknown` at once, at both
//! ends. Properties are set at either end with [`Link::set_props`] while the link runs and
//! travel to the other end in a control frame. [`Link::stats`] is a [`LinkStats`] snapshot:
//! bytes and messages each way, retransmissions, drops, duplicates, outcome-unknown count.
//!
//! # Threads
//!
//! Plain threads and crossbeam channels, no async runtime, like the rest of the engine. Per
//! link: a reader (frames in: replies to their waiters, requests to dedup and the workers,
//! property changes) and a wire (the sender's shaping: holds each frame until it "arrives",
//! then writes it). Per endpoint: [`WORKERS`] workers that run the handler and send replies,
//! an accept thread when listening on TCP, and a short-lived thread per handshake. Replies
//! never block (unbounded wire channel); what bounds memory is [`session::MAX_IN_FLIGHT`]
//! requests per end, beyond which `submit` waits. Never hold a track lock across a request
//! (DESIGN.md, Locking).
//!
//! # Errors
//!
//! `LinkDown` (not sent: outage or closed), `LinkOutcomeUnknown` (sent, no reply), `LinkAuthFailed`
//! (wrong key, replayed challenge), `LinkProtocol` (malformed frame: the connection is dropped),
//! `VersionMismatch` (another link protocol version). Refusals and drops are logged with
//! `tracing`.

mod auth;
pub mod frame;
mod message;
mod session;
mod shaper;
mod transport;

#[cfg(test)]
mod tests;

pub use auth::{MIN_KEY_LEN, SiteKey};
pub use message::{Message, Reply, RequestId};
pub use session::{DEDUP_WINDOW, Link, MAX_IN_FLIGHT, Pending};
pub use shaper::{DEFAULT_RTO, LinkProps, LinkStats, MAX_LOSS};

use crate::error::{Error, ErrorKind, Result};
use crossbeam_channel::{Receiver, Sender, select, unbounded};
use session::{Dedup, LinkInner, lock};
use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use transport::Stream;

/// Handler threads per endpoint.
pub const WORKERS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An I/O port of a storage image: the image's WWNN and the port number (`I0100` is 0x0100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkAddr {
    pub wwnn: u64,
    pub port: u16,
}

impl LinkAddr {
    /// From a WWNN of 16 hex digits (as `ImageId::wwnn` gives) and a port `Ixxxx` (or `xxxx`).
    pub fn parse(wwnn: &str, port: &str) -> Result<LinkAddr> {
        let bad = |what: &str| Error::new(ErrorKind::InvalidArgument, format!("{wwnn}/{port}"), what.to_string());
        if wwnn.len() != 16 || !wwnn.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a WWNN is 16 hexadecimal digits"));
        }
        let digits = port.strip_prefix(['I', 'i']).unwrap_or(port);
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("a port is I followed by 4 hexadecimal digits"));
        }
        let wwnn = u64::from_str_radix(wwnn, 16).map_err(|_| bad("bad WWNN"))?;
        let port = u16::from_str_radix(digits, 16).map_err(|_| bad("bad port"))?;
        Ok(LinkAddr { wwnn, port })
    }
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}/I{:04X}", self.wwnn, self.port)
    }
}

/// Applies what arrives over the link (the PPRC layer's remote apply and in-band commands).
/// Runs on the endpoint's worker threads, concurrently; each request is handed over at most
/// once. `Ping` never reaches it.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: LinkAddr, msg: Message) -> Reply;
}

/// A request for a worker.
#[derive(Debug)]
pub(crate) struct Job {
    link: Link,
    id: u64,
    msg: Message,
}

/// One I/O port of a storage image, able to hold links to other ports; see the module docs.
/// Dropping it shuts it down.
pub struct LinkEndpoint {
    inner: Arc<EndpointInner>,
}

impl fmt::Debug for LinkEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkEndpoint({})", self.inner.local)
    }
}

pub(crate) struct EndpointInner {
    local: LinkAddr,
    key: SiteKey,
    incarnation: u64,
    next_seq: Arc<AtomicU64>,
    jobs: Sender<Job>,
    /// Dropped on shutdown: the workers stop.
    stop: Mutex<Option<Sender<()>>>,
    links: Mutex<HashMap<LinkAddr, Link>>,
    dedup: Mutex<HashMap<u64, Arc<Dedup>>>,
    nonces: auth::NonceMemory,
    threads: Mutex<Vec<JoinHandle<()>>>,
    listening: Mutex<Option<SocketAddr>>,
    closing: AtomicBool,
}

impl LinkEndpoint {
    /// An endpoint at `local` that authenticates with `key` and applies requests with `handler`.
    pub fn new(local: LinkAddr, key: SiteKey, handler: Arc<dyn Handler>) -> Result<LinkEndpoint> {
        let (jobs, jobs_rx) = unbounded::<Job>();
        let (stop, stop_rx) = unbounded::<()>();
        let inner = Arc::new(EndpointInner {
            local,
            key,
            incarnation: u64::from_be_bytes(auth::random::<8>()?),
            next_seq: Arc::new(AtomicU64::new(1)),
            jobs,
            stop: Mutex::new(Some(stop)),
            links: Mutex::new(HashMap::new()),
            dedup: Mutex::new(HashMap::new()),
            nonces: auth::NonceMemory::default(),
            threads: Mutex::new(Vec::new()),
            listening: Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        let ep = LinkEndpoint { inner };
        for n in 0..WORKERS {
            let (rx, stop_rx, handler) = (jobs_rx.clone(), stop_rx.clone(), handler.clone());
            let t = std::thread::Builder::new()
                .name(format!("link-work-{:04X}-{n}", local.port))
                .spawn(move || worker(&rx, &stop_rx, handler.as_ref()))
                .map_err(|e| Error::io(local, &e))?;
            ep.inner.keep(t);
        }
        Ok(ep)
    }

    pub fn local(&self) -> LinkAddr {
        self.inner.local
    }

    /// Connects to another endpoint of this process over an in-memory pipe.
    pub fn connect_local(&self, peer: &LinkEndpoint) -> Result<Link> {
        let (mut ours, theirs) = transport::mem_pair();
        let server = peer.inner.clone();
        let accept = std::thread::Builder::new()
            .name("link-handshake".into())
            .spawn(move || server.accept_stream(Box::new(theirs), &"in-process").map(|_| ()))
            .map_err(|e| Error::io(peer.local(), &e))?;
        let client = auth::client(&mut ours, &self.inner.key, self.inner.local, self.inner.incarnation, peer.local());
        if client.is_err() {
            Stream::shutdown(&ours);
        }
        let served =
            accept.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, peer.local(), "handshake panicked")));
        let peer_info = client?;
        served?;
        self.inner.adopt(Box::new(ours), peer_info)
    }

    /// Listens for other flashd on `addr` (loopback only; port 0 picks one). Returns the
    /// address bound.
    pub fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr> {
        transport::check_loopback(addr)?;
        let mut listening = lock(&self.inner.listening);
        if let Some(a) = *listening {
            return Err(Error::new(ErrorKind::InvalidArgument, self.local(), format!("already listening on {a}")));
        }
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::new(ErrorKind::HostPortInUse, addr, e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| Error::io(addr, &e))?;
        let inner = self.inner.clone();
        let t = std::thread::Builder::new()
            .name(format!("link-accept-{:04X}", self.local().port))
            .spawn(move || inner.accept_loop(&listener))
            .map_err(|e| Error::io(addr, &e))?;
        self.inner.keep(t);
        *listening = Some(bound);
        Ok(bound)
    }

    /// Connects to the endpoint `peer` listening at `addr` (another flashd, loopback only).
    pub fn connect_tcp(&self, addr: SocketAddr, peer: LinkAddr) -> Result<Link> {
        let mut s = transport::connect_tcp(addr, CONNECT_TIMEOUT)?;
        let info = auth::client(&mut s, &self.inner.key, self.inner.local, self.inner.incarnation, peer)?;
        self.inner.adopt(Box::new(s), info)
    }

    /// The link to `peer`, if connected.
    pub fn link(&self, peer: &LinkAddr) -> Option<Link> {
        lock(&self.inner.links).get(peer).cloned()
    }

    /// Every open link of this endpoint.
    pub fn links(&self) -> Vec<Link> {
        lock(&self.inner.links).values().cloned().collect()
    }

    /// Closes every link, stops listening and joins the endpoint's threads. Idempotent.
    pub fn shutdown(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(a) = *lock(&self.inner.listening) {
            // Wake the blocking accept() with a connection of our own.
            let _ = TcpStream::connect_timeout(&a, Duration::from_secs(1));
        }
        let links: Vec<Link> = lock(&self.inner.links).drain().map(|(_, l)| l).collect();
        for l in links {
            l.close();
        }
        lock(&self.inner.stop).take();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// One TCP listener (loopback only) for many endpoints of this process: each connection is
/// routed by the address its Hello asks for to the endpoint served under it
/// ([`LinkListener::serve`]); an address nobody serves is refused (and logged). This is how one
/// flashd takes link connections for all its images' ports on one `--link-listen` address.
/// Dropping it stops listening; links already made belong to their endpoints.
pub struct LinkListener {
    inner: Arc<ListenerInner>,
}

struct ListenerInner {
    bound: SocketAddr,
    routes: Mutex<HashMap<LinkAddr, std::sync::Weak<EndpointInner>>>,
    closing: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for LinkListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkListener({})", self.inner.bound)
    }
}

impl LinkListener {
    /// Listens on `addr` (loopback only; port 0 picks one).
    pub fn bind(addr: SocketAddr) -> Result<LinkListener> {
        transport::check_loopback(addr)?;
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::new(ErrorKind::HostPortInUse, addr, e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| Error::io(addr, &e))?;
        let inner = Arc::new(ListenerInner {
            bound,
            routes: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let me = inner.clone();
        let t = std::thread::Builder::new()
            .name("link-listen".into())
            .spawn(move || me.accept_loop(&listener))
            .map_err(|e| Error::io(addr, &e))?;
        inner.keep(t);
        Ok(LinkListener { inner })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.bound
    }

    /// Route connections for `ep`'s address to it (replacing an earlier endpoint there).
    pub fn serve(&self, ep: &LinkEndpoint) {
        lock(&self.inner.routes).insert(ep.local(), Arc::downgrade(&ep.inner));
    }

    /// Stop routing to `addr`.
    pub fn unserve(&self, addr: &LinkAddr) {
        lock(&self.inner.routes).remove(addr);
    }

    /// The addresses served.
    pub fn served(&self) -> Vec<LinkAddr> {
        lock(&self.inner.routes).keys().copied().collect()
    }

    /// Stops listening and joins the listener's threads. Idempotent.
    pub fn shutdown(&self) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = TcpStream::connect_timeout(&self.inner.bound, Duration::from_secs(1));
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for LinkListener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ListenerInner {
    fn keep(&self, t: JoinHandle<()>) {
        keep_thread(&self.threads, t);
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        accept_loop(listener, &self.closing, &self.threads, &self.bound, |s, remote| {
            let me = self.clone();
            move || me.route(Box::new(s), &remote)
        });
    }

    /// Reads the Hello and hands the connection to the endpoint it asks for.
    fn route(&self, mut s: Box<dyn Stream>, remote: &SocketAddr) {
        let hello = match auth::read_hello(s.as_mut(), remote) {
            Ok(h) => h,
            Err(e) => {
                s.shutdown();
                tracing::warn!(listen = %self.bound, "link: handshake with {remote} failed: {e}");
                return;
            }
        };
        let ep = lock(&self.routes).get(&hello.wanted).and_then(std::sync::Weak::upgrade);
        match ep {
            Some(ep) if !ep.closing.load(Ordering::Acquire) => {
                // Refusals are logged by the handshake.
                let _ = ep.accept_after_hello(s, &hello, remote);
            }
            _ => {
                let why = format!("no port {} is served here", hello.wanted);
                drop(auth::refuse_address(s.as_mut(), &hello, &why));
            }
        }
    }
}

impl Drop for LinkEndpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Remember a thread to join at shutdown, forgetting the ones that have finished.
fn keep_thread(threads: &Mutex<Vec<JoinHandle<()>>>, t: JoinHandle<()>) {
    let mut threads = lock(threads);
    threads.retain(|t| !t.is_finished());
    threads.push(t);
}

/// Accept TCP connections until `closing`, running each one's handshake (`serve`) on a
/// thread of its own, kept in `threads`. Shared by an endpoint's own listener and the
/// site-wide `LinkListener`.
fn accept_loop<F, G>(
    listener: &TcpListener,
    closing: &AtomicBool,
    threads: &Mutex<Vec<JoinHandle<()>>>,
    who: &dyn fmt::Display,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> G,
    G: FnOnce() + Send + 'static,
{
    loop {
        let accepted = listener.accept();
        if closing.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((s, remote)) => {
                let _ = s.set_nodelay(true);
                match std::thread::Builder::new().name("link-handshake".into()).spawn(serve(s, remote)) {
                    Ok(t) => keep_thread(threads, t),
                    Err(e) => tracing::warn!("link: cannot start a handshake: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!(local = %who, "link: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn worker(jobs: &Receiver<Job>, stop: &Receiver<()>, handler: &dyn Handler) {
    loop {
        let job = select! {
            recv(jobs) -> j => match j { Ok(j) => j, Err(_) => return },
            recv(stop) -> _ => return,
        };
        let from = job.link.peer();
        let run = std::panic::AssertUnwindSafe(|| handler.handle(from, job.msg));
        let reply = std::panic::catch_unwind(run).unwrap_or_else(|_| {
            tracing::error!(peer = %from, "link: the handler panicked on request {}", job.id);
            Reply::Failed(Error::new(ErrorKind::Io, from, "the remote image failed to apply the request"))
        });
        job.link.dedup().finish(job.id, &reply);
        job.link.reply_route().send_reply(job.id, &reply);
    }
}

impl EndpointInner {
    fn keep(&self, t: JoinHandle<()>) {
        keep_thread(&self.threads, t);
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        accept_loop(listener, &self.closing, &self.threads, &self.local, |s, remote| {
            let inner = self.clone();
            move || drop(inner.accept_stream(Box::new(s), &remote))
        });
    }

    /// The server side of a new connection: authenticate, then adopt it as a link.
    fn accept_stream(self: &Arc<Self>, mut s: Box<dyn Stream>, remote: &dyn fmt::Display) -> Result<Link> {
        let r = auth::server(s.as_mut(), &self.key, self.local, self.incarnation, &self.nonces, remote);
        self.finish_accept(s, r, remote)
    }

    /// The server side once a shared listener has read the Hello and routed it here.
    fn accept_after_hello(
        self: &Arc<Self>,
        mut s: Box<dyn Stream>,
        hello: &auth::Hello,
        remote: &dyn fmt::Display,
    ) -> Result<Link> {
        let r = auth::server_after_hello(s.as_mut(), &self.key, self.local, self.incarnation, &self.nonces, hello);
        self.finish_accept(s, r, remote)
    }

    fn finish_accept(
        self: &Arc<Self>,
        s: Box<dyn Stream>,
        handshake: Result<auth::Peer>,
        remote: &dyn fmt::Display,
    ) -> Result<Link> {
        match handshake {
            Ok(peer) => self.adopt(s, peer),
            Err(e) => {
                s.shutdown();
                if e.kind == ErrorKind::LinkProtocol || e.kind == ErrorKind::LinkDown {
                    tracing::warn!(local = %self.local, "link: handshake with {remote} failed: {e}");
                }
                Err(e)
            }
        }
    }

    /// Starts a link over an authenticated stream and registers it under the peer's address,
    /// replacing (and closing) an older connection to the same peer, whose properties it keeps.
    fn adopt(self: &Arc<Self>, stream: Box<dyn Stream>, peer: auth::Peer) -> Result<Link> {
        let dedup = lock(&self.dedup).entry(peer.incarnation).or_default().clone();
        let props = lock(&self.links).get(&peer.addr).map(Link::props).unwrap_or_default();
        let (link, threads) = Link::start(self, stream, peer, dedup, props)?;
        for t in threads {
            self.keep(t);
        }
        let old = {
            let mut links = lock(&self.links);
            // Checked under the lock so shutdown cannot miss a link registered late.
            if self.closing.load(Ordering::Acquire) { None } else { links.insert(peer.addr, link.clone()) }
        };
        if self.closing.load(Ordering::Acquire) {
            link.close();
            return Err(Error::new(ErrorKind::ShuttingDown, self.local, "the link endpoint is shutting down"));
        }
        if let Some(old) = old {
            old.close();
        }
        tracing::info!(local = %self.local, peer = %peer.addr, "link: up");
        Ok(link)
    }

    fn link_to(&self, peer: &LinkAddr) -> Option<Link> {
        lock(&self.links).get(peer).cloned()
    }

    /// Removes a closed link from the map (unless a newer one replaced it).
    fn forget(&self, inner: &LinkInner) {
        let mut links = lock(&self.links);
        let ours = links.values().find(|l| std::ptr::eq(Arc::as_ptr(&l.inner), inner)).map(Link::peer);
        if let Some(addr) = ours {
            links.remove(&addr);
        }
    }
}
