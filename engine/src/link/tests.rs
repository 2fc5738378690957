//! The link's behaviour, one suite run over both transports (`mem::*` and `tcp::*`).
//!
//! Timing assertions are lower bounds (the VM is shared and noisy); upper bounds, where any,
//! are generous and only catch a link that ignores its settings altogether.

use super::*;
use crate::id::VolumeId;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

const KEY: &[u8] = b"flashtrack test site key 0123456";
const A: LinkAddr = LinkAddr { wwnn: 0x5005_0763_0A00_0001, port: 0x0000 };
const B: LinkAddr = LinkAddr { wwnn: 0x5005_0763_0B00_0002, port: 0x0101 };
const LONG: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Net {
    Mem,
    Tcp,
}

/// Applies nothing; records what it was asked, optionally slowly.
#[derive(Debug, Default)]
struct Recorder {
    applied: Mutex<Vec<(LinkAddr, Message)>>,
    delay_ms: AtomicU64,
    calls: AtomicUsize,
}

impl Handler for Recorder {
    fn handle(&self, from: LinkAddr, msg: Message) -> Reply {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        let reply = match &msg {
            Message::Command(body) => Reply::Data(body.iter().rev().copied().collect()),
            Message::Flush { volume } if volume.0 == 0xDEAD => {
                Reply::Failed(Error::new(ErrorKind::VolumeNotFound, volume, "no such volume"))
            }
            _ => Reply::Done,
        };
        lock(&self.applied).push((from, msg));
        reply
    }
}

impl Recorder {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn slow(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

/// Two endpoints A and B, connected A -> B over `net`.
struct Pair {
    a: LinkEndpoint,
    b: LinkEndpoint,
    ra: Arc<Recorder>,
    rb: Arc<Recorder>,
    /// A's link to B, and B's link to A.
    ab: Link,
    ba: Link,
    tcp: Option<SocketAddr>,
}

fn endpoint(addr: LinkAddr, key: &[u8]) -> (LinkEndpoint, Arc<Recorder>) {
    let r = Arc::new(Recorder::default());
    (LinkEndpoint::new(addr, SiteKey::new(key).unwrap(), r.clone()).unwrap(), r)
}

fn connect(net: Net, a: &LinkEndpoint, b: &LinkEndpoint, tcp: Option<SocketAddr>) -> Result<Link> {
    match net {
        Net::Mem => a.connect_local(b),
        Net::Tcp => a.connect_tcp(tcp.expect("listening"), b.local()),
    }
}

fn listen(net: Net, b: &LinkEndpoint) -> Option<SocketAddr> {
    match net {
        Net::Mem => None,
        Net::Tcp => Some(b.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap()),
    }
}

/// Waits (polling) until `f` holds; panics after a few seconds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pair(net: Net) -> Pair {
    let (a, ra) = endpoint(A, KEY);
    let (b, rb) = endpoint(B, KEY);
    let tcp = listen(net, &b);
    let ab = connect(net, &a, &b, tcp).unwrap();
    let mut ba = None;
    eventually("B's side of the link", || {
        ba = b.link(&A);
        ba.is_some()
    });
    Pair { a, b, ra, rb, ab, ba: ba.unwrap(), tcp }
}

fn write(n: u8, len: usize) -> Message {
    Message::Write {
        volume: VolumeId(0x0100),
        offset: u64::from(n) * 65_536,
        data: vec![n; len],
        fua: n.is_multiple_of(2),
    }
}

fn track(n: u32, len: usize) -> Message {
    Message::Track { volume: VolumeId(0x0101), track: n, data: vec![1; len] }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// --- the suite ------------------------------------------------------------------------------

fn requests_and_replies_both_ways(net: Net) {
    let p = pair(net);
    assert_eq!((p.ab.local(), p.ab.peer(), p.ba.local(), p.ba.peer()), (A, B, B, A));
    assert_eq!(p.ab.request(&write(1, 4096), LONG).unwrap(), Reply::Done);
    assert_eq!(p.ab.request(&Message::Command(b"abc".to_vec()), LONG).unwrap(), Reply::Data(b"cba".to_vec()));
    let failed = p.ab.request(&Message::Flush { volume: VolumeId(0xDEAD) }, LONG).unwrap();
    assert!(matches!(failed, Reply::Failed(ref e) if e.kind == ErrorKind::VolumeNotFound), "{failed:?}");
    // The other direction over the same link.
    assert_eq!(p.ba.request(&track(9, 65_536), LONG).unwrap(), Reply::Done);
    assert!(p.ab.ping(LONG).is_ok());

    let at_b = lock(&p.rb.applied).clone();
    assert_eq!(at_b.len(), 3, "Ping never reaches the handler");
    assert_eq!(at_b[0], (A, write(1, 4096)));
    assert_eq!(lock(&p.ra.applied).clone(), vec![(B, track(9, 65_536))]);

    // Counters agree between the ends once the line is quiet.
    eventually("quiet counters", || {
        let (s, r) = (p.ab.stats(), p.ba.stats());
        s.tx_bytes == r.rx_bytes && r.tx_bytes == s.rx_bytes
    });
    let (s, r) = (p.ab.stats(), p.ba.stats());
    assert_eq!((s.tx_messages, s.rx_messages, r.tx_messages, r.rx_messages), (5, 5, 5, 5));
    assert_eq!((s.in_flight, s.duplicates, s.outcome_unknown, s.retransmissions), (0, 0, 0, 0));
    // Framing overhead is small: 24-byte header plus the message's own fields.
    assert!(s.tx_bytes >= 4096 && s.tx_bytes < 4096 + 5 * 100, "{s:?}");
    assert!(r.tx_bytes >= 65_536 && r.tx_bytes < 65_536 + 5 * 100, "{r:?}");
}

fn latency_makes_round_trips_slower(net: Net) {
    let p = pair(net);
    let props = LinkProps { latency: ms(3), ..LinkProps::default() };
    p.ab.set_props(props).unwrap();
    eventually("B to see the new properties", || p.ba.props() == props);
    for _ in 0..3 {
        let t0 = Instant::now();
        assert_eq!(p.ab.request(&write(2, 512), LONG).unwrap(), Reply::Done);
        assert!(t0.elapsed() >= ms(6), "round trip {:?} < 2 x 3 ms", t0.elapsed());
        let rtt = p.ba.ping(LONG).unwrap();
        assert!(rtt >= ms(6), "ping {rtt:?}");
    }
    // Jitter only adds.
    p.ba.set_props(LinkProps { latency: ms(1), jitter: ms(4), ..LinkProps::default() }).unwrap();
    eventually("A to see the jitter", || p.ab.props().jitter == ms(4));
    for _ in 0..5 {
        assert!(p.ab.ping(LONG).unwrap() >= ms(2));
    }
}

fn bandwidth_limits_throughput(net: Net) {
    let p = pair(net);
    let bw = 4u64 << 20;
    p.ab.set_props(LinkProps { bandwidth: bw, latency: ms(1), ..LinkProps::default() }).unwrap();
    eventually("B to see the bandwidth", || p.ba.props().bandwidth == bw);
    // 1 MiB of tracks in flight at once: about 250 ms at 4 MiB/s.
    let n = 16;
    let t0 = Instant::now();
    let pending: Vec<_> = (0..n).map(|i| p.ab.submit(&track(i, 65_536)).unwrap()).collect();
    for w in pending {
        assert_eq!(w.wait(LONG).unwrap(), Reply::Done);
    }
    let took = t0.elapsed();
    let ideal = Duration::from_secs_f64(f64::from(n) * 65_536.0 / bw as f64);
    assert!(took >= ideal.mul_f64(0.95), "{took:?} for what takes {ideal:?} on the line");
    assert!(took < ideal * 20, "{took:?}: the bandwidth setting looks ignored the other way");
    // Unlimited again: the same is much faster than the cap allowed.
    p.ab.set_props(LinkProps::default()).unwrap();
    eventually("B to see unlimited", || p.ba.props().bandwidth == 0);
    assert_eq!(p.rb.calls(), n as usize);
}

fn loss_is_retransmission_delay_never_loss(net: Net) {
    let p = pair(net);
    let props = LinkProps { latency: ms(1), loss: 0.5, rto: ms(4), ..LinkProps::default() };
    p.ab.set_props(props).unwrap();
    eventually("B to see the loss", || p.ba.props() == props);
    let t0 = Instant::now();
    let pending: Vec<_> = (0..20).map(|i| p.ab.submit(&write(i, 100)).unwrap()).collect();
    for w in pending {
        assert_eq!(w.wait(LONG).unwrap(), Reply::Done, "a lost frame must arrive late, not never");
    }
    let (s, r) = (p.ab.stats(), p.ba.stats());
    assert!(s.retransmissions + r.retransmissions > 0, "{s:?} {r:?}");
    assert!(t0.elapsed() >= ms(2) + props.rto, "retransmissions cost at least one RTO");
    assert_eq!(p.rb.calls(), 20);
}

fn outage_fails_sends_at_both_ends_then_resumes(net: Net) {
    let p = pair(net);
    p.ab.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    assert!(!p.ab.is_up());
    eventually("B to see the outage", || !p.ba.is_up());
    for l in [&p.ab, &p.ba] {
        let e = l.submit(&write(3, 10)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LinkDown, "{e}");
        assert_eq!(l.ping(LONG).unwrap_err().kind, ErrorKind::LinkDown);
    }
    assert_eq!(p.rb.calls() + p.ra.calls(), 0, "nothing crossed during the outage");
    // Either end may end it.
    p.ba.set_props(LinkProps::default()).unwrap();
    eventually("A to see the end of the outage", || p.ab.is_up());
    assert_eq!(p.ab.request(&write(4, 10), LONG).unwrap(), Reply::Done);
    assert_eq!(p.ba.request(&write(5, 10), LONG).unwrap(), Reply::Done);
}

fn outage_ends_requests_in_flight_as_unknown_and_a_resend_applies_once(net: Net) {
    let p = pair(net);
    p.rb.slow(100);
    let msg = write(6, 4096);
    let w = p.ab.submit(&msg).unwrap();
    let id = w.id();
    eventually("B to start applying", || p.rb.calls() == 1);
    let t0 = Instant::now();
    p.ab.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    let e = w.wait(LONG).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkOutcomeUnknown, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2), "the outage must end waiters at once");
    assert_eq!(p.ab.stats().outcome_unknown, 1);
    p.ab.set_props(LinkProps::default()).unwrap();
    eventually("B to see the end of the outage", || p.ba.is_up());
    // Resend under the same ID: B applied it once already (its reply was lost) and resends
    // the reply without applying it again.
    eventually("B to finish applying", || !lock(&p.rb.applied).is_empty());
    assert_eq!(p.ab.submit_as(id, &msg).unwrap().wait(LONG).unwrap(), Reply::Done);
    // The reply may be the first application's, if B's outage ended before it was sent and
    // the resend was registered before it arrived: then B counts the resend a moment later.
    eventually("B to count the resend", || p.ba.stats().duplicates == 1);
    assert_eq!(p.rb.calls(), 1);
}

fn duplicates_are_applied_once(net: Net) {
    let p = pair(net);
    let msg = Message::Command(b"once".to_vec());
    let id = p.ab.next_id();
    let first = p.ab.submit_as(id, &msg).unwrap().wait(LONG).unwrap();
    let again = p.ab.submit_as(id, &msg).unwrap().wait(LONG).unwrap();
    assert_eq!((first, again.clone()), (Reply::Data(b"ecno".to_vec()), again));
    assert_eq!(p.rb.calls(), 1);
    assert_eq!(p.ba.stats().duplicates, 1);

    // A resend while the first is still being applied: ignored, and the first application's
    // reply answers it.
    p.rb.slow(60);
    let id = p.ab.next_id();
    let e = p.ab.submit_as(id, &write(7, 10)).unwrap().wait(ms(5)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkOutcomeUnknown);
    assert_eq!(p.ab.submit_as(id, &write(7, 10)).unwrap().wait(LONG).unwrap(), Reply::Done);
    eventually("B to count the resend", || p.ba.stats().duplicates == 2);
    assert_eq!(p.rb.calls(), 2);

    // The same ID while its first send is still awaiting the reply is refused locally.
    let id = p.ab.next_id();
    let w = p.ab.submit_as(id, &write(8, 10)).unwrap();
    assert_eq!(p.ab.submit_as(id, &write(8, 10)).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(w.wait(LONG).unwrap(), Reply::Done);
}

fn no_reply_in_time_is_outcome_unknown(net: Net) {
    let p = pair(net);
    p.rb.slow(150);
    let t0 = Instant::now();
    let e = p.ab.request(&write(9, 10), ms(20)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkOutcomeUnknown, "{e}");
    assert!(t0.elapsed() >= ms(20));
    let s = p.ab.stats();
    assert_eq!((s.outcome_unknown, s.in_flight), (1, 0));
    // The late reply is dropped quietly; the link goes on.
    p.rb.slow(0);
    assert_eq!(p.ab.request(&write(10, 10), LONG).unwrap(), Reply::Done);
}

fn closing_is_seen_at_both_ends_and_a_new_connection_replaces_it(net: Net) {
    let p = pair(net);
    p.ab.set_props(LinkProps { latency: ms(2), ..LinkProps::default() }).unwrap();
    eventually("B to see the latency", || p.ba.props().latency == ms(2));
    p.ab.close();
    assert!(p.a.link(&B).is_none());
    eventually("B to see the close", || p.ba.is_closed() && p.b.link(&A).is_none());
    assert_eq!(p.ab.submit(&Message::Ping).unwrap_err().kind, ErrorKind::LinkDown);
    assert_eq!(p.ba.submit(&Message::Ping).unwrap_err().kind, ErrorKind::LinkDown);
    // Reconnect: works, and request IDs go on (B's dedup memory of A still holds).
    let ab = connect(net, &p.a, &p.b, p.tcp).unwrap();
    let id = ab.next_id();
    assert!(id.0 > 1);
    assert_eq!(ab.request(&write(11, 10), LONG).unwrap(), Reply::Done);
    assert_eq!(p.rb.calls(), 1);
    p.a.shutdown();
    eventually("B to see A shut down", || p.b.link(&A).is_none());
}

fn a_request_in_progress_when_the_connection_is_replaced_answers_on_the_new_one(net: Net) {
    let p = pair(net);
    p.rb.slow(100);
    let msg = track(12, 1000);
    let w = p.ab.submit(&msg).unwrap();
    let id = w.id();
    eventually("B to start applying", || p.rb.calls() == 1);
    p.ab.close();
    assert_eq!(w.wait(LONG).unwrap_err().kind, ErrorKind::LinkOutcomeUnknown);
    let ab = connect(net, &p.a, &p.b, p.tcp).unwrap();
    // B still applies it: the resend finds it in progress, and the reply comes this way.
    assert_eq!(ab.submit_as(id, &msg).unwrap().wait(Duration::from_secs(3)).unwrap(), Reply::Done);
    assert_eq!(p.rb.calls(), 1);
}

fn wrong_key_is_refused(net: Net) {
    let (a, _) = endpoint(A, b"another key, not the site's one!");
    let (b, rb) = endpoint(B, KEY);
    let tcp = listen(net, &b);
    let e = connect(net, &a, &b, tcp).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LinkAuthFailed, "{e}");
    std::thread::sleep(ms(20));
    assert!(a.links().is_empty() && b.links().is_empty());
    assert_eq!(rb.calls(), 0);
}

/// An authenticated connection to `b` whose frames the test writes by hand.
fn raw_connection(net: Net, b: &LinkEndpoint, tcp: Option<SocketAddr>) -> Box<dyn Stream> {
    let mut s: Box<dyn Stream> = match net {
        Net::Mem => {
            let (ours, theirs) = transport::mem_pair();
            let inner = b.inner.clone();
            std::thread::spawn(move || inner.accept_stream(Box::new(theirs), &"raw"));
            Box::new(ours)
        }
        Net::Tcp => Box::new(TcpStream::connect(tcp.unwrap()).unwrap()),
    };
    auth::client(s.as_mut(), &SiteKey::new(KEY).unwrap(), A, 77, B).unwrap();
    s
}

fn malformed_frames_drop_the_connection(net: Net) {
    let (b, rb) = endpoint(B, KEY);
    let tcp = listen(net, &b);
    let good = frame::encode(frame::FrameType::Request, 1, &write(1, 10).encode());
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[1] = 0;
    let mut too_big = good.clone();
    too_big[16..20].copy_from_slice(&(frame::MAX_PAYLOAD + 1).to_be_bytes());
    let bad_payload = frame::encode(frame::FrameType::Request, 2, &[99]);
    let handshake_again = frame::encode(frame::FrameType::Hello, 0, &[0; 60]);
    let bad_props = frame::encode(frame::FrameType::Props, 0, &[1, 2, 3]);
    for bytes in [bad_crc, bad_magic, too_big, bad_payload, handshake_again, bad_props] {
        let mut s = raw_connection(net, &b, tcp);
        eventually("B to adopt the raw connection", || b.link(&A).is_some());
        s.write_all(&bytes).unwrap();
        // B drops the connection: we read end of file, nothing was applied.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        eventually("B to forget the link", || b.link(&A).is_none());
    }
    assert_eq!(rb.calls(), 0);
    // A well-formed request on a fresh connection is applied and answered.
    let mut s = raw_connection(net, &b, tcp);
    s.write_all(&good).unwrap();
    let reply = transport::read_frame(s.as_mut(), &"b").unwrap();
    assert_eq!((reply.kind, reply.id), (frame::FrameType::Reply, 1));
    assert_eq!(Reply::decode(&reply.payload).unwrap(), Reply::Done);
    // The same request replayed on another authenticated connection: not applied again.
    let mut s2 = raw_connection(net, &b, tcp);
    s2.write_all(&good).unwrap();
    let reply = transport::read_frame(s2.as_mut(), &"b").unwrap();
    assert_eq!(Reply::decode(&reply.payload).unwrap(), Reply::Done);
    assert_eq!(rb.calls(), 1);
}

use std::io::{Read, Write};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(#[test] fn $name() { super::$name(super::Net::Mem) })*
        }
        mod tcp {
            $(#[test] fn $name() { super::$name(super::Net::Tcp) })*
        }
    };
}

suite!(
    requests_and_replies_both_ways,
    latency_makes_round_trips_slower,
    bandwidth_limits_throughput,
    loss_is_retransmission_delay_never_loss,
    outage_fails_sends_at_both_ends_then_resumes,
    outage_ends_requests_in_flight_as_unknown_and_a_resend_applies_once,
    duplicates_are_applied_once,
    no_reply_in_time_is_outcome_unknown,
    closing_is_seen_at_both_ends_and_a_new_connection_replaces_it,
    a_request_in_progress_when_the_connection_is_replaced_answers_on_the_new_one,
    wrong_key_is_refused,
    malformed_frames_drop_the_connection,
);

// --- not per transport ----------------------------------------------------------------------

#[test]
fn addresses_parse_and_print() {
    let a = LinkAddr::parse("5005076303FFC1A5", "I0102").unwrap();
    assert_eq!(a, LinkAddr { wwnn: 0x5005_0763_03FF_C1A5, port: 0x0102 });
    assert_eq!(a.to_string(), "5005076303FFC1A5/I0102");
    assert_eq!(LinkAddr::parse("5005076303ffc1a5", "0102").unwrap(), a);
    for (w, p) in [("5005076303FFC1A", "I0102"), ("5005076303FFC1AZ", "I0102"), ("5005076303FFC1A5", "I01")] {
        assert_eq!(LinkAddr::parse(w, p).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}

#[test]
fn tcp_only_on_loopback() {
    let (a, _) = endpoint(A, KEY);
    assert_eq!(a.listen_tcp("0.0.0.0:0".parse().unwrap()).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(a.connect_tcp("192.0.2.1:9".parse().unwrap(), B).unwrap_err().kind, ErrorKind::InvalidArgument);
    a.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(a.listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn settings_are_validated() {
    let p = pair(Net::Mem);
    let e = p.ab.set_props(LinkProps { loss: 1.0, ..LinkProps::default() }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(p.ab.props(), LinkProps::default());
}

#[test]
fn in_flight_requests_are_capped() {
    // Never more than MAX_IN_FLIGHT awaiting replies; submit waits for a slot.
    let p = pair(Net::Mem);
    p.rb.slow(1);
    let pending: Vec<_> = (0..MAX_IN_FLIGHT + 8).map(|i| p.ab.submit(&track(i as u32, 8)).unwrap()).collect();
    assert!(p.ab.stats().in_flight as usize <= MAX_IN_FLIGHT);
    for w in pending {
        assert_eq!(w.wait(LONG).unwrap(), Reply::Done);
    }
}

#[test]
fn one_listener_routes_to_many_endpoints_and_refuses_the_rest() {
    let c_addr = LinkAddr { wwnn: B.wwnn, port: B.port + 1 };
    let (a, _) = endpoint(A, KEY);
    let (b, rb) = endpoint(B, KEY);
    let (c, rc) = endpoint(c_addr, KEY);
    let l = LinkListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(LinkListener::bind("0.0.0.0:0".parse().unwrap()).is_err(), "loopback only");
    l.serve(&b);
    l.serve(&c);
    let at = l.local_addr();
    assert_eq!(l.served().len(), 2);
    let ab = a.connect_tcp(at, B).unwrap();
    let ac = a.connect_tcp(at, c_addr).unwrap();
    ab.request(&track(1, 8), Duration::from_secs(2)).unwrap();
    ac.request(&track(2, 8), Duration::from_secs(2)).unwrap();
    assert_eq!((rb.calls(), rc.calls()), (1, 1), "each connection reached the endpoint it asked for");
    eventually("B's link to A", || b.link(&A).is_some());
    // An address nobody serves here (or no longer) is refused.
    l.unserve(&c_addr);
    let e = a.connect_tcp(at, c_addr).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = a.connect_tcp(at, LinkAddr { wwnn: 7, port: 0 }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    // A wrong key through the listener is refused like a direct one.
    let (x, _) = endpoint(LinkAddr { wwnn: 9, port: 0 }, b"another key, not the site's one!");
    assert_eq!(x.connect_tcp(at, B).unwrap_err().kind, ErrorKind::LinkAuthFailed);
    // Links outlive the listener; new connections do not.
    l.shutdown();
    ab.request(&track(3, 8), Duration::from_secs(2)).unwrap();
    assert!(a.connect_tcp(at, B).is_err());
}
