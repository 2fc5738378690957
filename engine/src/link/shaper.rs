//! The simulated line: bandwidth, latency, jitter, loss and outage, applied by the sender.
//!
//! Each end shapes what it sends: a frame handed to the [`Wire`] is scheduled on the line
//! ([`Schedule`], pure arithmetic) and written to the transport when it "arrives", so the
//! receiver's code sees the delays without knowing about them. The model, per direction:
//!
//! - **Bandwidth** (bytes/s, 0 = unlimited): the line serialises frames one after another; a
//!   frame of `n` bytes occupies it for `n / bandwidth` seconds, so a burst of N bytes takes
//!   N / bandwidth to cross (plus one latency).
//! - **Latency** (one way) and **jitter**: each frame arrives `latency + U(0, jitter)` after its
//!   last byte left. A request/reply round trip therefore takes at least 2 x latency.
//! - **Loss** (a probability per frame): a lost frame is *not* dropped. It arrives one
//!   retransmission timeout (`rto`) later, and again one `rto` later for each further loss
//!   (at most [`MAX_RETRANSMISSIONS`]), counted in `retransmissions`. This is TCP's and FCP's
//!   behaviour seen from above.
//! - **Order**: a direction delivers frames in the order they were sent, like one TCP stream or
//!   one FC exchange sequence: a delayed (jittered or "lost") frame holds back the ones behind
//!   it (head-of-line blocking); nothing is ever reordered. Requests sent concurrently by
//!   different threads may of course be applied in either order at the receiver (its workers
//!   run in parallel), as on a real storage link.
//! - **Outage**: the line is down in both directions. New requests fail at once with
//!   `ErrorKind::LinkDown` (they never waited and were never sent); frames still on the line
//!   are discarded (counted in `dropped`) and every request awaiting a reply fails at once with
//!   `ErrorKind::LinkOutcomeUnknown`, since it may have been applied. When the outage ends the
//!   link is usable again; resending with the same request ID is safe (the receiver
//!   deduplicates). Setting or clearing an outage at one end reaches the other end as a `Props`
//!   control frame, which, like the transport underneath, is not subject to the simulation.

use super::frame::{Fields, FrameError};
use super::transport::{self, Stream};
use crate::error::{Error, ErrorKind, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Retransmissions of one frame at most (a loss of 0.99 would otherwise take very long).
pub const MAX_RETRANSMISSIONS: u32 = 16;
/// Highest settable loss probability.
pub const MAX_LOSS: f64 = 0.99;
/// Longest settable latency, jitter or retransmission timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Default retransmission timeout (Linux TCP's minimum RTO).
pub const DEFAULT_RTO: Duration = Duration::from_millis(200);

/// The line's properties, settable while the link runs ([`super::Link::set_props`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkProps {
    /// Bytes per second in each direction; 0 = unlimited.
    pub bandwidth: u64,
    /// One-way latency.
    pub latency: Duration,
    /// Extra one-way delay, uniform in [0, jitter].
    pub jitter: Duration,
    /// Probability that a frame is lost (and retransmitted one `rto` later), 0..=[`MAX_LOSS`].
    pub loss: f64,
    /// Retransmission timeout.
    pub rto: Duration,
    /// The line is down.
    pub outage: bool,
}

impl Default for LinkProps {
    fn default() -> Self {
        LinkProps {
            bandwidth: 0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rto: DEFAULT_RTO,
            outage: false,
        }
    }
}

impl LinkProps {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::new(ErrorKind::InvalidArgument, "link", what));
        if !(0.0..=MAX_LOSS).contains(&self.loss) {
            return bad(format!("loss must be between 0 and {MAX_LOSS}, got {}", self.loss));
        }
        for (name, d) in [("latency", self.latency), ("jitter", self.jitter), ("rto", self.rto)] {
            if d > MAX_DELAY {
                return bad(format!("{name} must be at most {MAX_DELAY:?}, got {d:?}"));
            }
        }
        if self.rto.is_zero() {
            return bad("rto must be positive".into());
        }
        Ok(())
    }

    /// The payload of a `Props` frame.
    pub fn encode(&self) -> Vec<u8> {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut b = Vec::with_capacity(37);
        b.extend_from_slice(&self.bandwidth.to_be_bytes());
        b.extend_from_slice(&ns(self.latency).to_be_bytes());
        b.extend_from_slice(&ns(self.jitter).to_be_bytes());
        // Parts per million: exact enough, and no floats on the wire.
        b.extend_from_slice(&((self.loss * 1e6).round() as u32).to_be_bytes());
        b.extend_from_slice(&ns(self.rto).to_be_bytes());
        b.push(u8::from(self.outage));
        b
    }

    pub fn decode(payload: &[u8]) -> Result<LinkProps, FrameError> {
        let mut f = Fields::new(payload);
        let p = LinkProps {
            bandwidth: f.u64()?,
            latency: Duration::from_nanos(f.u64()?),
            jitter: Duration::from_nanos(f.u64()?),
            loss: f64::from(f.u32()?) / 1e6,
            rto: Duration::from_nanos(f.u64()?),
            outage: match f.u8()? {
                0 => false,
                1 => true,
                _ => return Err(FrameError::BadPayload("outage flag")),
            },
        };
        f.end()?;
        p.validate().map_err(|_| FrameError::BadPayload("link properties out of range"))?;
        Ok(p)
    }
}

/// Counters of one end of a link ([`super::Link::stats`]). "Messages" are requests and replies;
/// bytes are whole frames (header included) after authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    pub tx_bytes: u64,
    pub tx_messages: u64,
    pub rx_bytes: u64,
    pub rx_messages: u64,
    /// Frames this end sent that were "lost" and delivered one or more RTOs late.
    pub retransmissions: u64,
    /// Frames this end discarded because the line was down.
    pub dropped: u64,
    /// Requests received again (resent or replayed) and not applied a second time.
    pub duplicates: u64,
    /// Requests of this end that ended as outcome unknown (timeout, outage, lost connection).
    pub outcome_unknown: u64,
    /// Requests of this end awaiting a reply now.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub tx_bytes: AtomicU64,
    pub tx_messages: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_messages: AtomicU64,
    pub retransmissions: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicates: AtomicU64,
    pub outcome_unknown: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self, in_flight: u64) -> LinkStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            tx_bytes: g(&self.tx_bytes),
            tx_messages: g(&self.tx_messages),
            rx_bytes: g(&self.rx_bytes),
            rx_messages: g(&self.rx_messages),
            retransmissions: g(&self.retransmissions),
            dropped: g(&self.dropped),
            duplicates: g(&self.duplicates),
            outcome_unknown: g(&self.outcome_unknown),
            in_flight,
        }
    }
}

/// splitmix64: jitter and loss need speed and independence, not secrecy. Seeded at random.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When a frame arrives, and how often it was "lost" on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arrival {
    pub at: Instant,
    pub retransmissions: u32,
}

/// The state of one direction of the line: when it is free again, when the last frame arrived.
#[derive(Debug)]
pub(super) struct Schedule {
    line_free: Instant,
    last_arrival: Instant,
    rng: Rng,
}

impl Schedule {
    pub fn new(now: Instant, rng: Rng) -> Schedule {
        Schedule { line_free: now, last_arrival: now, rng }
    }

    /// Schedules a frame of `len` bytes handed to the line at `now`.
    pub fn arrival(&mut self, now: Instant, len: usize, p: &LinkProps) -> Arrival {
        let start = self.line_free.max(now);
        let on_line = if p.bandwidth == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(
                u64::try_from(len as u128 * 1_000_000_000 / u128::from(p.bandwidth)).unwrap_or(u64::MAX),
            )
        };
        self.line_free = start + on_line;
        let mut delay = p.latency;
        if !p.jitter.is_zero() {
            delay += p.jitter.mul_f64(self.rng.unit());
        }
        let mut retransmissions = 0;
        while p.loss > 0.0 && retransmissions < MAX_RETRANSMISSIONS && self.rng.unit() < p.loss {
            retransmissions += 1;
            delay += p.rto;
        }
        // In order: never before the frame ahead of it.
        let at = (self.line_free + delay).max(self.last_arrival);
        self.last_arrival = at;
        Arrival { at, retransmissions }
    }
}

/// What a link end hands its wire.
#[derive(Debug)]
pub(super) enum WireItem {
    /// An encoded Request or Reply frame: shaped.
    Message(Vec<u8>),
    /// An encoded control frame (Props): sent at once, even during an outage.
    Control(Vec<u8>),
    /// New properties for the shaping of later frames.
    Props(LinkProps),
}

/// The sending half of one link end: a thread that holds shaped frames until they arrive and
/// then writes them to the transport.
pub(super) struct Wire {
    queue: VecDeque<(Instant, Vec<u8>)>,
    backlog: usize,
    schedule: Schedule,
    props: LinkProps,
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wire({} frames, {} bytes queued)", self.queue.len(), self.backlog)
    }
}

/// How long before a frame is due an unlimited line stops sleeping (see `Wire::run`).
const WAKE_EARLY: Duration = Duration::from_micros(200);

impl Wire {
    pub fn new(props: LinkProps, seed: u64) -> Wire {
        Wire { queue: VecDeque::new(), backlog: 0, schedule: Schedule::new(Instant::now(), Rng::new(seed)), props }
    }

    /// Runs until the channel closes or a write fails (returned; the caller closes the link).
    pub fn run(
        mut self,
        rx: &Receiver<WireItem>,
        out: &mut dyn Stream,
        counters: &Counters,
        peer: &dyn fmt::Display,
    ) -> Result<()> {
        loop {
            let now = Instant::now();
            while self.queue.front().is_some_and(|(at, _)| *at <= now) {
                let Some((_, bytes)) = self.queue.pop_front() else { break };
                self.backlog -= bytes.len();
                transport::write_bytes(out, &bytes, peer)?;
                bump(&counters.tx_bytes, bytes.len() as u64);
                bump(&counters.tx_messages, 1);
            }
            let item = match self.queue.front() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                // Timed waits wake 50-150 µs late on a VM, which would add that to every
                // simulated latency: on an unlimited line (few frames, nothing to pace) the
                // last stretch before a frame is due is spent yielding instead.
                Some((at, _)) if self.props.bandwidth == 0 && at.saturating_duration_since(now) <= WAKE_EARLY => {
                    match rx.try_recv() {
                        Ok(i) => Ok(i),
                        Err(crossbeam_channel::TryRecvError::Empty) => {
                            std::thread::yield_now();
                            Err(RecvTimeoutError::Timeout)
                        }
                        Err(crossbeam_channel::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                    }
                }
                Some((at, _)) if self.props.bandwidth == 0 => rx.recv_deadline(*at - WAKE_EARLY),
                Some((at, _)) => rx.recv_deadline(*at),
            };
            match item {
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(WireItem::Message(bytes)) => {
                    if self.props.outage {
                        bump(&counters.dropped, 1);
                        continue;
                    }
                    let a = self.schedule.arrival(Instant::now(), bytes.len(), &self.props);
                    bump(&counters.retransmissions, u64::from(a.retransmissions));
                    self.backlog += bytes.len();
                    self.queue.push_back((a.at, bytes));
                }
                Ok(WireItem::Control(bytes)) => {
                    transport::write_bytes(out, &bytes, peer)?;
                    bump(&counters.tx_bytes, bytes.len() as u64);
                }
                Ok(WireItem::Props(p)) => {
                    if p.outage {
                        bump(&counters.dropped, self.queue.len() as u64);
                        self.queue.clear();
                        self.backlog = 0;
                    }
                    self.props = p;
                }
            }
        }
    }
}

/// The channel to a wire. Unbounded so that a reply never blocks (a worker blocked on a full
/// wire while the peer's reader waits for ours is a distributed deadlock); what bounds it is
/// the cap on requests in flight at each end (`session::MAX_IN_FLIGHT`), since every frame is
/// a request or the reply to one.
pub(super) fn channel() -> (Sender<WireItem>, Receiver<WireItem>) {
    crossbeam_channel::unbounded()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn props_round_trip_and_validate() {
        let p =
            LinkProps { bandwidth: 100 << 20, latency: ms(5), jitter: ms(1), loss: 0.125, rto: ms(20), outage: true };
        assert_eq!(LinkProps::decode(&p.encode()).unwrap(), p);
        assert_eq!(LinkProps::decode(&LinkProps::default().encode()).unwrap(), LinkProps::default());
        for bad in [
            LinkProps { loss: 1.0, ..p },
            LinkProps { loss: -0.1, ..p },
            LinkProps { latency: Duration::from_secs(11), ..p },
            LinkProps { rto: Duration::ZERO, ..p },
        ] {
            assert_eq!(bad.validate().unwrap_err().kind, ErrorKind::InvalidArgument);
        }
        let mut b = p.encode();
        *b.last_mut().unwrap() = 2;
        assert!(LinkProps::decode(&b).is_err());
        assert!(LinkProps::decode(&b[..10]).is_err());
    }

    #[test]
    fn unlimited_line_adds_only_latency() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Rng::new(1));
        let p = LinkProps { latency: ms(3), ..LinkProps::default() };
        assert_eq!(s.arrival(t0, 1 << 20, &p), Arrival { at: t0 + ms(3), retransmissions: 0 });
        assert_eq!(s.arrival(t0, 1 << 20, &p).at, t0 + ms(3));
    }

    #[test]
    fn bandwidth_serialises_frames() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Rng::new(1));
        let p = LinkProps { bandwidth: 1_000_000, latency: ms(1), ..LinkProps::default() };
        // 10 frames of 10 kB at 1 MB/s: the last leaves after 100 ms, arrives 1 ms later.
        let mut last = t0;
        for _ in 0..10 {
            last = s.arrival(t0, 10_000, &p).at;
        }
        assert_eq!(last, t0 + ms(101));
        // An idle line starts afresh.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(s.arrival(later, 1000, &p).at, later + ms(2));
    }

    #[test]
    fn jitter_and_loss_delay_but_never_reorder() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Rng::new(42));
        let p = LinkProps { latency: ms(2), jitter: ms(3), loss: 0.3, rto: ms(10), ..LinkProps::default() };
        let (mut prev, mut retx) = (t0, 0);
        for i in 0..2000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 100);
            let a = s.arrival(now, 100, &p);
            assert!(a.at >= prev, "frame {i} overtook the one before it");
            assert!(a.at >= now + ms(2) + p.rto * a.retransmissions);
            prev = a.at;
            retx += a.retransmissions;
        }
        // About 0.3 / 0.7 retransmissions per frame; generous bounds.
        assert!((400..=1400).contains(&retx), "{retx} retransmissions");
    }

    #[test]
    fn loss_is_bounded() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Rng::new(7));
        let p = LinkProps { loss: MAX_LOSS, rto: ms(1), ..LinkProps::default() };
        for _ in 0..100 {
            assert!(s.arrival(t0, 1, &p).retransmissions <= MAX_RETRANSMISSIONS);
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(3);
        let mean = (0..10_000).map(|_| r.unit()).sum::<f64>() / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
