//! Mutual authentication of two link endpoints with a pre-shared site key.
//!
//! Challenge and response both ways, before any command or data crosses:
//!
//! ```text
//! client -> server  Hello     incarnation_c, client addr, server addr, nonce_c (32 random bytes)
//! server -> client  Challenge incarnation_s, nonce_s, proof_s = HMAC(key, "server" | transcript)
//! client -> server  Response  proof_c = HMAC(key, "client" | transcript)
//! server -> client  Welcome
//! transcript = version, client addr, server addr, incarnation_c, incarnation_s, nonce_c, nonce_s
//! ```
//!
//! HMAC-SHA256; proofs are compared in constant time (`Mac::verify_slice`). The client checks
//! the server's proof before it sends its own, so an impostor server learns nothing. Both
//! nonces are fresh per handshake, so a recorded Challenge or Response replayed into a new
//! handshake does not verify; the server also remembers recent client nonces and refuses a
//! Hello whose nonce it has seen (a replayed Hello). The role labels keep a proof from being
//! reflected back in the other role. Either side that refuses sends `Refused` with a reason,
//! logs it (`tracing::warn!`), and closes; the caller gets `ErrorKind::LinkAuthFailed`.
//!
//! The key authenticates; it does not encrypt. The TCP transport is loopback only.

use super::LinkAddr;
use super::frame::{self, Fields, FrameError, FrameType, VERSION};
use super::transport::{self, Stream};
use crate::error::{Error, ErrorKind, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
/// Shortest site key accepted (128 bits).
pub const MIN_KEY_LEN: usize = 16;
/// How long each handshake step may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Client nonces a server remembers to refuse a replayed Hello.
const NONCE_MEMORY: usize = 4096;

// Refusal reasons (payload byte 0 of a Refused frame; the rest is text for the log).
const REFUSED_KEY: u8 = 1;
const REFUSED_REPLAY: u8 = 2;
const REFUSED_ADDRESS: u8 = 3;
const REFUSED_PROTOCOL: u8 = 4;

/// The pre-shared site key. Its bytes never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SiteKey(Vec<u8>);

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteKey({} bytes)", self.0.len())
    }
}

impl SiteKey {
    /// A key from its bytes; at least [`MIN_KEY_LEN`] of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<SiteKey> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "site key",
                format!("a site key needs at least {MIN_KEY_LEN} bytes, got {}", bytes.len()),
            ));
        }
        Ok(SiteKey(bytes))
    }

    /// A fresh random 32-byte key (for a new site).
    pub fn generate() -> Result<SiteKey> {
        Ok(SiteKey(random::<32>()?.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `N` bytes from the operating system's random source.
pub(super) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::new(ErrorKind::Io, "random source", e.to_string()))?;
    Ok(b)
}

/// Recently seen client nonces (server side).
#[derive(Debug, Default)]
pub struct NonceMemory {
    inner: Mutex<Nonces>,
}

/// The set, and the order to forget them in.
#[derive(Debug, Default)]
struct Nonces {
    seen: HashSet<[u8; NONCE_LEN]>,
    order: VecDeque<[u8; NONCE_LEN]>,
}

impl NonceMemory {
    /// Records `nonce`; false if it was already there (a replay).
    fn insert(&self, nonce: [u8; NONCE_LEN]) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !g.seen.insert(nonce) {
            return false;
        }
        g.order.push_back(nonce);
        if g.order.len() > NONCE_MEMORY
            && let Some(old) = g.order.pop_front()
        {
            g.seen.remove(&old);
        }
        true
    }
}

/// Who is at the other end, once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: LinkAddr,
    /// Random per endpoint start; request IDs are unique within it.
    pub incarnation: u64,
}

struct Transcript {
    client: LinkAddr,
    server: LinkAddr,
    inc_c: u64,
    inc_s: u64,
    nonce_c: [u8; NONCE_LEN],
    nonce_s: [u8; NONCE_LEN],
}

impl Transcript {
    fn mac(&self, key: &SiteKey, label: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
        m.update(b"flashtrack-link ");
        m.update(label);
        m.update(&[VERSION]);
        for a in [self.client, self.server] {
            m.update(&a.wwnn.to_be_bytes());
            m.update(&a.port.to_be_bytes());
        }
        m.update(&self.inc_c.to_be_bytes());
        m.update(&self.inc_s.to_be_bytes());
        m.update(&self.nonce_c);
        m.update(&self.nonce_s);
        m
    }

    fn proof(&self, key: &SiteKey, label: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(key, label).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof.
    fn verify(&self, key: &SiteKey, label: &[u8], proof: &[u8]) -> bool {
        self.mac(key, label).verify_slice(proof).is_ok()
    }
}

fn put_addr(b: &mut Vec<u8>, a: LinkAddr) {
    b.extend_from_slice(&a.wwnn.to_be_bytes());
    b.extend_from_slice(&a.port.to_be_bytes());
}

fn get_addr(f: &mut Fields<'_>) -> Result<LinkAddr, FrameError> {
    Ok(LinkAddr { wwnn: f.u64()?, port: f.u16()? })
}

fn send(s: &mut dyn Stream, kind: FrameType, payload: &[u8], peer: &dyn fmt::Display) -> Result<()> {
    transport::write_bytes(s, &frame::encode(kind, 0, payload), peer)
}

/// Sends a refusal, logs it, and returns the error for the caller.
fn refuse(s: &mut dyn Stream, reason: u8, kind: ErrorKind, peer: &dyn fmt::Display, why: &str) -> Error {
    tracing::warn!(peer = %peer, "link: authentication refused: {why}");
    let mut p = vec![reason];
    p.extend_from_slice(why.as_bytes());
    let _ = send(s, FrameType::Refused, &p, peer);
    s.shutdown();
    Error::new(kind, peer, why)
}

/// Reads the next handshake frame; a Refused frame from the peer becomes its error.
fn expect(s: &mut dyn Stream, want: FrameType, peer: &dyn fmt::Display) -> Result<Vec<u8>> {
    let f = transport::read_frame(s, peer)?;
    if f.kind == FrameType::Refused {
        let reason = f.payload.first().copied().unwrap_or(0);
        let text = String::from_utf8_lossy(f.payload.get(1..).unwrap_or_default()).into_owned();
        let kind = match reason {
            REFUSED_KEY | REFUSED_REPLAY => ErrorKind::LinkAuthFailed,
            REFUSED_ADDRESS => ErrorKind::InvalidArgument,
            _ => ErrorKind::LinkProtocol,
        };
        tracing::warn!(peer = %peer, "link: the peer refused the handshake: {text}");
        s.shutdown();
        return Err(Error::new(kind, peer, format!("refused by the peer: {text}")));
    }
    if f.kind != want {
        let why = format!("expected {want:?} during the handshake, got {:?}", f.kind);
        return Err(refuse(s, REFUSED_PROTOCOL, ErrorKind::LinkProtocol, peer, &why));
    }
    Ok(f.payload)
}

fn malformed(s: &mut dyn Stream, peer: &dyn fmt::Display, e: FrameError) -> Error {
    refuse(s, REFUSED_PROTOCOL, ErrorKind::LinkProtocol, peer, &format!("handshake: {e}"))
}

/// The connecting side. `peer` is the address it means to reach; the server must be it.
pub fn client(s: &mut dyn Stream, key: &SiteKey, me: LinkAddr, incarnation: u64, peer: LinkAddr) -> Result<Peer> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(peer, &e))?;
    let nonce_c = random::<NONCE_LEN>()?;
    let mut hello = Vec::with_capacity(8 + 20 + NONCE_LEN);
    hello.extend_from_slice(&incarnation.to_be_bytes());
    put_addr(&mut hello, me);
    put_addr(&mut hello, peer);
    hello.extend_from_slice(&nonce_c);
    send(s, FrameType::Hello, &hello, &peer)?;

    let challenge = expect(s, FrameType::Challenge, &peer)?;
    let mut f = Fields::new(&challenge);
    let parsed = (|| Ok((f.u64()?, f.array::<NONCE_LEN>()?, f.array::<PROOF_LEN>()?, f.end()?)))();
    let (inc_s, nonce_s, proof_s, ()) = parsed.map_err(|e| malformed(s, &peer, e))?;
    let t = Transcript { client: me, server: peer, inc_c: incarnation, inc_s, nonce_c, nonce_s };
    if !t.verify(key, b"server", &proof_s) {
        return Err(refuse(
            s,
            REFUSED_KEY,
            ErrorKind::LinkAuthFailed,
            &peer,
            "the peer's proof does not match the site key",
        ));
    }
    send(s, FrameType::Response, &t.proof(key, b"client"), &peer)?;
    expect(s, FrameType::Welcome, &peer)?;
    s.set_read_timeout(None).map_err(|e| Error::io(peer, &e))?;
    Ok(Peer { addr: peer, incarnation: inc_s })
}

/// A client's first frame: who it is and which address it means to reach.
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    pub inc_c: u64,
    pub client: LinkAddr,
    pub wanted: LinkAddr,
    nonce_c: [u8; NONCE_LEN],
}

/// Reads a client's Hello (a listener shared by several endpoints routes on `wanted`).
pub fn read_hello(s: &mut dyn Stream, remote: &dyn fmt::Display) -> Result<Hello> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(remote, &e))?;
    let hello = expect(s, FrameType::Hello, remote)?;
    let mut f = Fields::new(&hello);
    let parsed = (|| Ok((f.u64()?, get_addr(&mut f)?, get_addr(&mut f)?, f.array::<NONCE_LEN>()?, f.end()?)))();
    let (inc_c, client, wanted, nonce_c, ()) = parsed.map_err(|e| malformed(s, remote, e))?;
    Ok(Hello { inc_c, client, wanted, nonce_c })
}

/// Refuses a Hello for an address nobody serves here.
pub fn refuse_address(s: &mut dyn Stream, hello: &Hello, why: &str) -> Error {
    refuse(s, REFUSED_ADDRESS, ErrorKind::InvalidArgument, &hello.client, why)
}

/// The accepting side, at address `me`. `nonces` is the endpoint's memory of client nonces.
pub fn server(
    s: &mut dyn Stream,
    key: &SiteKey,
    me: LinkAddr,
    incarnation: u64,
    nonces: &NonceMemory,
    remote: &dyn fmt::Display,
) -> Result<Peer> {
    let hello = read_hello(s, remote)?;
    server_after_hello(s, key, me, incarnation, nonces, &hello)
}

/// `server` once the Hello has been read.
pub fn server_after_hello(
    s: &mut dyn Stream,
    key: &SiteKey,
    me: LinkAddr,
    incarnation: u64,
    nonces: &NonceMemory,
    hello: &Hello,
) -> Result<Peer> {
    let Hello { inc_c, client, wanted, nonce_c } = *hello;
    if wanted != me {
        let why = format!("this is {me}, not {wanted}");
        return Err(refuse(s, REFUSED_ADDRESS, ErrorKind::InvalidArgument, &client, &why));
    }
    if !nonces.insert(nonce_c) {
        return Err(refuse(
            s,
            REFUSED_REPLAY,
            ErrorKind::LinkAuthFailed,
            &client,
            "replayed handshake (nonce seen before)",
        ));
    }
    let nonce_s = random::<NONCE_LEN>()?;
    let t = Transcript { client, server: me, inc_c, inc_s: incarnation, nonce_c, nonce_s };
    let mut challenge = Vec::with_capacity(8 + NONCE_LEN + PROOF_LEN);
    challenge.extend_from_slice(&incarnation.to_be_bytes());
    challenge.extend_from_slice(&nonce_s);
    challenge.extend_from_slice(&t.proof(key, b"server"));
    send(s, FrameType::Challenge, &challenge, &client)?;

    let proof_c = expect(s, FrameType::Response, &client)?;
    if !t.verify(key, b"client", &proof_c) {
        return Err(refuse(
            s,
            REFUSED_KEY,
            ErrorKind::LinkAuthFailed,
            &client,
            "the peer's proof does not match the site key",
        ));
    }
    send(s, FrameType::Welcome, &[], &client)?;
    s.set_read_timeout(None).map_err(|e| Error::io(client, &e))?;
    Ok(Peer { addr: client, incarnation: inc_c })
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
