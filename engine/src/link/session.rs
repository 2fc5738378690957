//! One authenticated connection between two endpoints: a [`Link`], its reader and wire threads,
//! requests awaiting replies, and the receiver's deduplication.

use super::auth::Peer;
use super::frame::{self, FrameType};
use super::message::{Message, Reply, RequestId};
use super::shaper::{Counters, LinkProps, LinkStats, Wire, WireItem, bump};
use super::transport::{self, Stream};
use super::{EndpointInner, Job, LinkAddr};
use crate::error::{Error, ErrorKind, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Requests one end may have awaiting replies; `submit` waits for a slot beyond it. This bounds
/// what the (unbounded) wires and worker queues can hold.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Completed requests a receiver remembers per peer incarnation (with their replies).
pub const DEDUP_WINDOW: usize = 65_536;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the receiver knows of a request ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    /// First time: apply it.
    New,
    /// Being applied now: its reply will follow; do nothing.
    InProgress,
    /// Applied: resend this reply.
    Done(Reply),
    /// Older than the window: it may have been applied; say so, do not apply.
    Forgotten,
}

/// The receiver's memory of one peer incarnation's requests (applied at most once).
#[derive(Debug, Default)]
pub(super) struct Dedup {
    state: Mutex<DedupState>,
}

#[derive(Debug, Default)]
struct DedupState {
    /// `None` while in progress.
    entries: HashMap<u64, Option<Reply>>,
    done: VecDeque<u64>,
    /// Highest ID evicted from the window; anything at or below it that is not in `entries`
    /// may have been applied.
    forgotten: Option<u64>,
}

impl Dedup {
    pub fn begin(&self, id: u64) -> Seen {
        let mut st = lock(&self.state);
        match st.entries.get(&id) {
            Some(None) => Seen::InProgress,
            Some(Some(r)) => Seen::Done(r.clone()),
            None if st.forgotten.is_some_and(|f| id <= f) => Seen::Forgotten,
            None => {
                st.entries.insert(id, None);
                Seen::New
            }
        }
    }

    pub fn finish(&self, id: u64, reply: &Reply) {
        let mut st = lock(&self.state);
        st.entries.insert(id, Some(reply.clone()));
        st.done.push_back(id);
        while st.done.len() > DEDUP_WINDOW {
            let Some(old) = st.done.pop_front() else { break };
            st.entries.remove(&old);
            st.forgotten = Some(st.forgotten.map_or(old, |f| f.max(old)));
        }
    }
}

/// A connection to another storage image's port. Cheap to clone; all clones are the same link.
/// It carries [`Message`]s both ways: either end may send requests, and the endpoint's handler
/// answers what arrives.
#[derive(Clone)]
pub struct Link {
    pub(super) inner: Arc<LinkInner>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Link({} -> {})", self.inner.local, self.inner.peer)
    }
}

pub(super) struct LinkInner {
    local: LinkAddr,
    peer: LinkAddr,
    /// The peer endpoint's incarnation (its request IDs are unique within it).
    peer_incarnation: u64,
    /// The endpoint's request sequence, shared by all its links and connections, so IDs are
    /// unique for the endpoint's incarnation (the peer's dedup key).
    next_seq: Arc<AtomicU64>,
    pending: Mutex<HashMap<u64, Sender<Result<Reply>>>>,
    slot_free: Condvar,
    props: Mutex<LinkProps>,
    counters: Counters,
    wire: Mutex<Option<Sender<WireItem>>>,
    stream: Box<dyn Stream>,
    closed: AtomicBool,
    dedup: Arc<Dedup>,
    jobs: Sender<Job>,
    endpoint: Weak<EndpointInner>,
}

/// A request sent and not yet answered; see [`Link::submit`].
#[derive(Debug)]
pub struct Pending {
    link: Link,
    id: RequestId,
    rx: Receiver<Result<Reply>>,
}

impl Pending {
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Waits up to `timeout` for the reply. No reply in time is `LinkOutcomeUnknown`: the
    /// request may or may not have been applied; resend it with [`Link::submit_as`] and the
    /// same ID to find out (the peer applies it at most once).
    pub fn wait(self, timeout: Duration) -> Result<Reply> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                let removed = self.link.inner.take_pending(self.id.0).is_some();
                // A reply that raced the timeout still counts.
                if let Ok(r) = self.rx.try_recv() {
                    return r;
                }
                if removed {
                    bump(&self.link.inner.counters.outcome_unknown, 1);
                }
                Err(Error::new(
                    ErrorKind::LinkOutcomeUnknown,
                    self.link.inner.peer,
                    format!(
                        "no reply to {} within {timeout:?}; it may or may not have been applied. Check the \
                         link (outage, latency, loss) and the remote image, then resend it",
                        self.id
                    ),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::new(ErrorKind::LinkOutcomeUnknown, self.link.inner.peer, "the link closed before the reply"))
            }
        }
    }
}

impl Link {
    pub fn local(&self) -> LinkAddr {
        self.inner.local
    }

    pub fn peer(&self) -> LinkAddr {
        self.inner.peer
    }

    /// A fresh request ID (unique for this endpoint's incarnation).
    pub fn next_id(&self) -> RequestId {
        RequestId(self.inner.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `msg` as a new request; wait for its reply with [`Pending::wait`]. Fails at once
    /// with `LinkDown` during an outage or when the link is closed (nothing was sent).
    pub fn submit(&self, msg: &Message) -> Result<Pending> {
        self.submit_as(self.next_id(), msg)
    }

    /// Sends `msg` under a given request ID: a resend after `LinkOutcomeUnknown` uses the
    /// original ID, and the peer then replies without applying it twice.
    pub fn submit_as(&self, id: RequestId, msg: &Message) -> Result<Pending> {
        let inner = &self.inner;
        let (tx, rx) = bounded(1);
        {
            let mut pending = lock(&inner.pending);
            while pending.len() >= MAX_IN_FLIGHT && !inner.closed.load(Ordering::Acquire) {
                pending = inner
                    .slot_free
                    .wait_timeout(pending, Duration::from_millis(50))
                    .map(|r| r.0)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if pending.contains_key(&id.0) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    inner.peer,
                    format!("{id} is still awaiting its reply"),
                ));
            }
            pending.insert(id.0, tx);
        }
        // Checked after registering, so an outage that begins now fails this request too.
        if let Err(e) = inner.usable() {
            inner.take_pending(id.0);
            return Err(e);
        }
        let bytes = frame::encode(FrameType::Request, id.0, &msg.encode());
        if !inner.send(WireItem::Message(bytes)) {
            inner.take_pending(id.0);
            return Err(Error::new(ErrorKind::LinkDown, inner.peer, "the link is closed"));
        }
        Ok(Pending { link: self.clone(), id, rx })
    }

    /// [`submit`](Self::submit) and [`Pending::wait`].
    pub fn request(&self, msg: &Message, timeout: Duration) -> Result<Reply> {
        self.submit(msg)?.wait(timeout)
    }

    /// A round trip through the peer's link (not its handler).
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        self.request(&Message::Ping, timeout)?;
        Ok(t0.elapsed())
    }

    /// Changes the simulated line for both directions; the peer is told, so both ends see the
    /// same line (an outage is seen at both ends at once).
    pub fn set_props(&self, props: LinkProps) -> Result<()> {
        props.validate()?;
        self.inner.apply_props(props, true);
        Ok(())
    }

    pub fn props(&self) -> LinkProps {
        *lock(&self.inner.props)
    }

    pub fn stats(&self) -> LinkStats {
        self.inner.counters.snapshot(lock(&self.inner.pending).len() as u64)
    }

    /// Connected and not in an outage.
    pub fn is_up(&self) -> bool {
        self.inner.usable().is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes the connection (both ends see it closed); requests awaiting replies end as
    /// outcome unknown.
    pub fn close(&self) {
        self.inner.close("closed locally");
    }

    /// Starts a link over an authenticated stream: its reader and wire threads.
    pub(super) fn start(
        endpoint: &Arc<EndpointInner>,
        stream: Box<dyn Stream>,
        peer_info: Peer,
        dedup: Arc<Dedup>,
        props: LinkProps,
    ) -> Result<(Link, Vec<std::thread::JoinHandle<()>>)> {
        let peer = peer_info.addr;
        let err = |e: std::io::Error| Error::io(peer, &e);
        let mut reader = stream.try_clone_stream().map_err(err)?;
        let mut writer = stream.try_clone_stream().map_err(err)?;
        let (wire_tx, wire_rx) = super::shaper::channel();
        let seed = u64::from_be_bytes(super::auth::random::<8>()?);
        let link = Link {
            inner: Arc::new(LinkInner {
                local: endpoint.local,
                peer,
                peer_incarnation: peer_info.incarnation,
                next_seq: endpoint.next_seq.clone(),
                pending: Mutex::new(HashMap::new()),
                slot_free: Condvar::new(),
                props: Mutex::new(props),
                counters: Counters::default(),
                wire: Mutex::new(Some(wire_tx)),
                stream,
                closed: AtomicBool::new(false),
                dedup,
                jobs: endpoint.jobs.clone(),
                endpoint: Arc::downgrade(endpoint),
            }),
        };
        let name = |what: &str| format!("link-{what}-{:04X}", peer.port);
        let l = link.clone();
        let wire = std::thread::Builder::new()
            .name(name("wire"))
            .spawn(move || {
                let r = Wire::new(props, seed).run(&wire_rx, writer.as_mut(), &l.inner.counters, &l.inner.peer);
                if let Err(e) = r {
                    l.inner.close(&e.detail);
                }
            })
            .map_err(err)?;
        let l = link.clone();
        let read = std::thread::Builder::new().name(name("read")).spawn(move || l.inner.read_loop(reader.as_mut()));
        match read {
            Ok(read) => Ok((link, vec![wire, read])),
            Err(e) => {
                link.inner.close("cannot start");
                Err(err(e))
            }
        }
    }

    /// Where the reply to a request that arrived on this link goes: this link, or, if it closed
    /// meanwhile, the connection that replaced it to the same peer incarnation (whose resend
    /// of the request found it in progress and waits for this reply).
    pub(super) fn reply_route(self) -> Link {
        if !self.is_closed() {
            return self;
        }
        let current = self.inner.endpoint.upgrade().and_then(|ep| ep.link_to(&self.inner.peer));
        match current {
            Some(l) if l.inner.peer_incarnation == self.inner.peer_incarnation => l,
            _ => self,
        }
    }

    /// Sends the reply to request `id` (from a worker).
    pub(super) fn send_reply(&self, id: u64, reply: &Reply) {
        let _ = self.inner.send(WireItem::Message(frame::encode(FrameType::Reply, id, &reply.encode())));
    }

    pub(super) fn dedup(&self) -> &Dedup {
        &self.inner.dedup
    }
}

impl LinkInner {
    fn usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::LinkDown, self.peer, "the link is closed"));
        }
        if lock(&self.props).outage {
            return Err(Error::new(ErrorKind::LinkDown, self.peer, "the link is in an outage; nothing was sent"));
        }
        Ok(())
    }

    fn send(&self, item: WireItem) -> bool {
        let tx = lock(&self.wire).clone();
        tx.is_some_and(|tx| tx.send(item).is_ok())
    }

    fn take_pending(&self, id: u64) -> Option<Sender<Result<Reply>>> {
        let t = lock(&self.pending).remove(&id);
        if t.is_some() {
            self.slot_free.notify_one();
        }
        t
    }

    /// Ends every request awaiting a reply as outcome unknown.
    fn fail_pending(&self, why: &str) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        self.slot_free.notify_all();
        for (id, tx) in drained {
            bump(&self.counters.outcome_unknown, 1);
            let detail = format!("request {id}: {why} before its reply; it may or may not have been applied");
            let _ = tx.send(Err(Error::new(ErrorKind::LinkOutcomeUnknown, self.peer, detail)));
        }
    }

    fn apply_props(&self, p: LinkProps, tell_peer: bool) {
        let old = std::mem::replace(&mut *lock(&self.props), p);
        self.send(WireItem::Props(p));
        if tell_peer {
            self.send(WireItem::Control(frame::encode(FrameType::Props, 0, &p.encode())));
        }
        if p.outage && !old.outage {
            tracing::warn!(local = %self.local, peer = %self.peer, "link: outage begins");
            self.fail_pending("the link went down");
        } else if !p.outage && old.outage {
            tracing::info!(local = %self.local, peer = %self.peer, "link: outage ends");
        }
    }

    fn close(&self, why: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(local = %self.local, peer = %self.peer, "link: closed: {why}");
        lock(&self.wire).take();
        self.stream.shutdown();
        self.fail_pending("the link closed");
        if let Some(ep) = self.endpoint.upgrade() {
            ep.forget(self);
        }
    }

    fn read_loop(self: &Arc<Self>, r: &mut dyn Stream) {
        let why = loop {
            let f = match transport::read_frame(r, &self.peer) {
                Ok(f) => f,
                Err(e) => {
                    if e.kind != ErrorKind::LinkDown {
                        tracing::warn!(peer = %self.peer, "link: dropping the connection: {e}");
                    }
                    break e.detail;
                }
            };
            bump(&self.counters.rx_bytes, f.wire_len() as u64);
            let outage = lock(&self.props).outage;
            match f.kind {
                FrameType::Request | FrameType::Reply => {
                    bump(&self.counters.rx_messages, 1);
                    if outage {
                        // Sent before the peer learnt of the outage: the line lost it.
                        bump(&self.counters.dropped, 1);
                        continue;
                    }
                    if let Err(e) = self.on_message(f.kind, f.id, &f.payload) {
                        tracing::warn!(peer = %self.peer, "link: dropping the connection: {e}");
                        break e.to_string();
                    }
                }
                FrameType::Props => match LinkProps::decode(&f.payload) {
                    Ok(p) => self.apply_props(p, false),
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, "link: dropping the connection: bad properties: {e}");
                        break e.to_string();
                    }
                },
                other => {
                    tracing::warn!(peer = %self.peer, "link: dropping the connection: {other:?} after the handshake");
                    break format!("unexpected {other:?} frame");
                }
            }
        };
        self.close(&why);
    }

    fn on_message(self: &Arc<Self>, kind: FrameType, id: u64, payload: &[u8]) -> Result<(), frame::FrameError> {
        let link = Link { inner: self.clone() };
        if kind == FrameType::Reply {
            let reply = Reply::decode(payload)?;
            // None: the requester gave up (timeout); the reply is late and dropped.
            if let Some(tx) = self.take_pending(id) {
                let _ = tx.send(Ok(reply));
            }
            return Ok(());
        }
        let msg = Message::decode(payload)?;
        if msg == Message::Ping {
            link.send_reply(id, &Reply::Done);
            return Ok(());
        }
        match self.dedup.begin(id) {
            Seen::New => {
                let _ = self.jobs.send(Job { link, id, msg });
            }
            Seen::InProgress => bump(&self.counters.duplicates, 1),
            Seen::Done(reply) => {
                bump(&self.counters.duplicates, 1);
                link.send_reply(id, &reply);
            }
            Seen::Forgotten => {
                bump(&self.counters.duplicates, 1);
                let e = Error::new(
                    ErrorKind::LinkOutcomeUnknown,
                    self.local,
                    format!("request {id} is older than the receiver remembers; it may have been applied"),
                );
                link.send_reply(id, &Reply::Failed(e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_applies_once_and_forgets_old_ids_safely() {
        let d = Dedup::default();
        assert_eq!(d.begin(1), Seen::New);
        assert_eq!(d.begin(1), Seen::InProgress);
        d.finish(1, &Reply::Data(b"r".to_vec()));
        assert_eq!(d.begin(1), Seen::Done(Reply::Data(b"r".to_vec())));
        for id in 2..(DEDUP_WINDOW as u64 + 3) {
            assert_eq!(d.begin(id), Seen::New);
            d.finish(id, &Reply::Done);
        }
        // 1 and 2 fell out of the window: never applied again, reported as unknown.
        assert_eq!(d.begin(1), Seen::Forgotten);
        assert_eq!(d.begin(2), Seen::Forgotten);
        assert_eq!(d.begin(3), Seen::Done(Reply::Done));
        assert_eq!(d.begin(DEDUP_WINDOW as u64 + 10), Seen::New);
    }
}
