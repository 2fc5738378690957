//! Link frames: the wire format under every message, pure encode/decode, no I/O.
//!
//! A frame is a fixed 24-byte header followed by a payload. Everything is big-endian.
//!
//! ```text
//! offset size field
//!      0    4 magic        0x464C_4E4B ("FLNK")
//!      4    1 version      VERSION (a mismatch is refused: ErrorKind::VersionMismatch)
//!      5    1 type         FrameType
//!      6    2 flags        reserved, must be 0
//!      8    8 request ID   the sender's sequence number (0 for handshake and control frames)
//!     16    4 length       payload bytes, at most MAX_PAYLOAD
//!     20    4 crc32c       over header bytes 0..20 and the payload
//! ```
//!
//! Decoders take byte slices and never panic: short or malformed input is a [`FrameError`], so
//! the module can be fuzzed directly. A receiver that sees any [`FrameError`] drops the
//! connection (see `transport::read_frame`).

use crate::error::{Error, ErrorKind};
use std::fmt;

/// "FLNK".
pub const MAGIC: u32 = 0x464C_4E4B;
/// Version of the link protocol (frames, handshake and message payloads).
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 24;
/// Largest payload: a 32 MiB mirrored write (NBD's largest request, `nbd::proto::MAX_PAYLOAD`)
/// plus its fields, so the mirror never has to split a host write.
pub const MAX_PAYLOAD: u32 = (32 << 20) + 4096;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Handshake, client -> server: incarnation, addresses, client nonce.
    Hello = 1,
    /// Handshake, server -> client: incarnation, server nonce, server proof.
    Challenge = 2,
    /// Handshake, client -> server: client proof.
    Response = 3,
    /// Handshake, server -> client: authenticated.
    Welcome = 4,
    /// Handshake, either way: refused, with a reason; the connection closes.
    Refused = 5,
    /// A request (a `Message`), keyed by its request ID.
    Request = 16,
    /// The reply to the request with the same ID.
    Reply = 17,
    /// The link's simulated properties (bandwidth, latency, outage...), sent by the end where
    /// they were set so both ends see the same line. Control plane: it bypasses the simulation.
    Props = 18,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<FrameType> {
        Some(match v {
            1 => FrameType::Hello,
            2 => FrameType::Challenge,
            3 => FrameType::Response,
            4 => FrameType::Welcome,
            5 => FrameType::Refused,
            16 => FrameType::Request,
            17 => FrameType::Reply,
            18 => FrameType::Props,
            _ => return None,
        })
    }
}

/// A decoded frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub id: u64,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?} id {} {} bytes)", self.kind, self.id, self.payload.len())
    }
}

impl Frame {
    pub fn new(kind: FrameType, id: u64, payload: Vec<u8>) -> Frame {
        Frame { kind, id, payload }
    }

    /// Bytes this frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// A header whose fixed fields are valid; the checksum is checked with the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameType,
    pub id: u64,
    pub len: u32,
    pub crc: u32,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the declared payload.
    Short {
        need: usize,
        have: usize,
    },
    BadMagic(u32),
    BadVersion(u8),
    BadType(u8),
    /// Reserved flag bits set.
    BadFlags(u16),
    TooLarge(u32),
    BadCrc {
        expected: u32,
        found: u32,
    },
    /// The payload does not parse as its frame type says.
    BadPayload(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short { need, have } => write!(f, "short frame: need {need} bytes, have {have}"),
            FrameError::BadMagic(m) => write!(f, "bad frame magic {m:#010x}"),
            FrameError::BadVersion(v) => write!(f, "link protocol version {v}, this side speaks {VERSION}"),
            FrameError::BadType(t) => write!(f, "unknown frame type {t}"),
            FrameError::BadFlags(fl) => write!(f, "reserved frame flags set: {fl:#06x}"),
            FrameError::TooLarge(n) => write!(f, "frame payload of {n} bytes exceeds {MAX_PAYLOAD}"),
            FrameError::BadCrc { expected, found } => {
                write!(f, "frame checksum mismatch: header says {expected:#010x}, payload has {found:#010x}")
            }
            FrameError::BadPayload(what) => write!(f, "malformed payload: {what}"),
        }
    }
}

impl FrameError {
    /// The engine error for this frame error from `peer`.
    pub fn to_error(&self, peer: impl fmt::Display) -> Error {
        let kind = match self {
            FrameError::BadVersion(_) => ErrorKind::VersionMismatch,
            _ => ErrorKind::LinkProtocol,
        };
        Error::new(kind, peer, self.to_string())
    }
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..20]), payload)
}

/// Encodes a frame. The payload must not exceed [`MAX_PAYLOAD`] (callers build payloads from
/// bounded parts; a larger one is a bug and is caught by the receiver's decoder).
pub fn encode(kind: FrameType, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    let c = crc(&out, payload);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the fixed fields of a header (magic, version, type, flags, length bound).
pub fn decode_header(buf: &[u8]) -> Result<Header, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Short { need: HEADER_LEN, have: buf.len() });
    }
    let mut f = Fields::new(&buf[..HEADER_LEN]);
    let magic = f.u32()?;
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = f.u8()?;
    if version != VERSION {
        return Err(FrameError::BadVersion(version));
    }
    let t = f.u8()?;
    let kind = FrameType::from_u8(t).ok_or(FrameError::BadType(t))?;
    let flags = f.u16()?;
    if flags != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let id = f.u64()?;
    let len = f.u32()?;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let crc = f.u32()?;
    Ok(Header { kind, id, len, crc })
}

/// Checks a payload against its header's checksum and builds the frame.
pub fn finish(header_bytes: &[u8], header: &Header, payload: Vec<u8>) -> Result<Frame, FrameError> {
    if payload.len() != header.len as usize {
        return Err(FrameError::Short { need: header.len as usize, have: payload.len() });
    }
    let found = crc(header_bytes, &payload);
    if found != header.crc {
        return Err(FrameError::BadCrc { expected: header.crc, found });
    }
    Ok(Frame { kind: header.kind, id: header.id, payload })
}

/// Decodes one whole frame from the start of `buf`; returns it and the bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), FrameError> {
    let header = decode_header(buf)?;
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Err(FrameError::Short { need: total, have: buf.len() });
    }
    let frame = finish(&buf[..HEADER_LEN], &header, buf[HEADER_LEN..total].to_vec())?;
    Ok((frame, total))
}

/// A cursor over a payload whose reads fail with [`FrameError::BadPayload`] instead of
/// panicking.
#[derive(Debug)]
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(FrameError::BadPayload("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Fails unless every byte was read (trailing garbage is malformed).
    pub fn end(&self) -> Result<(), FrameError> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(FrameError::BadPayload("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(FrameType::Request, 0x0102_0304_0506_0708, b"hello link")
    }

    #[test]
    fn round_trip_every_type() {
        for t in [1u8, 2, 3, 4, 5, 16, 17, 18] {
            let kind = FrameType::from_u8(t).unwrap();
            for payload in [&b""[..], b"x", &[0xAB; 70_000][..]] {
                let bytes = encode(kind, u64::from(t) * 1000, payload);
                assert_eq!(bytes.len(), HEADER_LEN + payload.len());
                let (f, used) = decode(&bytes).unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(f, Frame::new(kind, u64::from(t) * 1000, payload.to_vec()));
                assert_eq!(f.wire_len(), bytes.len());
            }
        }
    }

    #[test]
    fn decode_leaves_following_bytes() {
        let mut two = sample();
        two.extend(encode(FrameType::Reply, 9, b"r"));
        let (first, used) = decode(&two).unwrap();
        assert_eq!(first.kind, FrameType::Request);
        let (second, _) = decode(&two[used..]).unwrap();
        assert_eq!((second.kind, second.id, second.payload), (FrameType::Reply, 9, b"r".to_vec()));
    }

    #[test]
    fn short_header_and_short_payload() {
        let b = sample();
        for cut in [0, 1, HEADER_LEN - 1] {
            assert!(matches!(decode(&b[..cut]), Err(FrameError::Short { need: HEADER_LEN, .. })));
        }
        assert!(matches!(decode(&b[..b.len() - 1]), Err(FrameError::Short { .. })));
        let h = decode_header(&b).unwrap();
        let payload = b[HEADER_LEN..b.len() - 1].to_vec();
        assert!(matches!(finish(&b[..HEADER_LEN], &h, payload), Err(FrameError::Short { .. })));
    }

    #[test]
    fn bad_magic() {
        let mut b = sample();
        b[0] ^= 0xFF;
        assert!(matches!(decode(&b), Err(FrameError::BadMagic(_))));
    }

    #[test]
    fn bad_version_is_a_version_mismatch() {
        let mut b = sample();
        b[4] = VERSION + 1;
        let e = decode(&b).unwrap_err();
        assert_eq!(e, FrameError::BadVersion(VERSION + 1));
        assert_eq!(e.to_error("peer").kind, ErrorKind::VersionMismatch);
    }

    #[test]
    fn bad_type() {
        for t in [0u8, 6, 15, 19, 255] {
            let mut b = sample();
            b[5] = t;
            assert_eq!(decode(&b).unwrap_err(), FrameError::BadType(t));
        }
    }

    #[test]
    fn reserved_flags() {
        let mut b = sample();
        b[7] = 1;
        assert_eq!(decode(&b).unwrap_err(), FrameError::BadFlags(1));
    }

    #[test]
    fn oversized_length_refused_before_reading_payload() {
        let mut b = sample();
        b[16..20].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        // Only the header is needed to refuse it: nothing is allocated for the payload.
        let e = decode_header(&b[..HEADER_LEN]).unwrap_err();
        assert_eq!(e, FrameError::TooLarge(MAX_PAYLOAD + 1));
        assert_eq!(e.to_error("peer").kind, ErrorKind::LinkProtocol);
        b[16..20].copy_from_slice(&MAX_PAYLOAD.to_be_bytes());
        assert!(decode_header(&b[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn corrupted_payload_header_or_checksum() {
        let clean = sample();
        // A flipped payload byte, request ID byte, and checksum byte each fail the crc.
        for pos in [HEADER_LEN + 3, 10, 21] {
            let mut b = clean.clone();
            b[pos] ^= 0x40;
            assert!(matches!(decode(&b), Err(FrameError::BadCrc { .. })), "byte {pos}");
        }
    }

    #[test]
    fn fields_never_panic() {
        let mut f = Fields::new(&[1, 2, 3]);
        assert_eq!(f.u16().unwrap(), 0x0102);
        assert!(f.u32().is_err());
        assert!(f.end().is_err());
        assert_eq!(f.rest(), &[3]);
        assert!(f.end().is_ok());
        assert!(Fields::new(&[]).bytes(usize::MAX).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap fuzz: every prefix and every single-byte corruption of a valid frame.
        let b = sample();
        for cut in 0..=b.len() {
            let _ = decode(&b[..cut]);
        }
        for pos in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[pos] ^= 1 << bit;
                assert!(decode(&c).is_err(), "flip at {pos}.{bit} went unnoticed");
            }
        }
    }
}
