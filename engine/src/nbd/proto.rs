//! NBD wire format: constants and encode/decode, no I/O.
//!
//! Values follow `doc/proto.md` of NetworkBlockDevice/nbd. Everything is big-endian. Decoders take
//! byte slices and never panic: short or malformed input is a [`DecodeError`], so this module can
//! be fuzzed directly.

use std::fmt;
use std::io;

// --- Handshake --------------------------------------------------------------------------------

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second word of the newstyle greeting and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag (server): fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag (server): may omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this implementation understands; others force a disconnect (spec: MUST).
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

/// Greeting length: NBDMAGIC + IHAVEOPT + handshake flags.
pub const GREETING_LEN: usize = 18;
/// Option request header: IHAVEOPT + option + length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Option reply header: magic + option + reply type + length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

// Option codes.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_PEEK_EXPORT: u32 = 4;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR + 1;
pub const REP_ERR_POLICY: u32 = REP_ERR + 2;
pub const REP_ERR_INVALID: u32 = REP_ERR + 3;
pub const REP_ERR_PLATFORM: u32 = REP_ERR + 4;
pub const REP_ERR_TLS_REQD: u32 = REP_ERR + 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR + 6;
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR + 7;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR + 8;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR + 9;

/// True for the error reply types (high bit set).
pub fn is_rep_err(reply_type: u32) -> bool {
    reply_type & REP_ERR != 0
}

// Info types (payload of `NBD_REP_INFO`, requested in `NBD_OPT_INFO`/`NBD_OPT_GO`).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// --- Transmission -----------------------------------------------------------------------------

// Transmission flags (16 bits, sent with the export).
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_ROTATIONAL: u16 = 1 << 4;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;
pub const TFLAG_SEND_RESIZE: u16 = 1 << 9;
pub const TFLAG_SEND_CACHE: u16 = 1 << 10;
pub const TFLAG_SEND_FAST_ZERO: u16 = 1 << 11;

pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Request header length (compact headers; extended headers are not negotiated).
pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const CHUNK_HEADER_LEN: usize = 20;

// Command codes.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

// Structured reply chunks (negotiated with `NBD_OPT_STRUCTURED_REPLY`).
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;

// Block status flags of `base:allocation` and of qemu's dirty bitmaps.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:*`: the extent is dirty (its bit is set).
pub const STATE_DIRTY: u32 = 1 << 0;

// Metadata context names.
pub const CONTEXT_ALLOCATION: &str = "base:allocation";
/// Prefix of the dirty-bitmap contexts (qemu's registered namespace, `docs/interop/nbd.rst`).
pub const DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
/// Length of one block-status descriptor (length + flags).
pub const DESCRIPTOR_LEN: usize = 8;

// Error values allowed on the wire (they happen to equal Linux errno values).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// --- Limits this implementation chooses (one table, see DESIGN "choose and say so") -----------

/// Largest option payload read into memory; larger ones are refused (see handshake).
pub const MAX_OPTION_LEN: u32 = 4096;
/// Largest READ/WRITE/... payload accepted; also the advertised maximum block size.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Advertised preferred block size: one FB track, the unit of copy-on-write and recording, so
/// a write of this size never fills a partial target track first.
pub const PREFERRED_BLOCK_SIZE: u32 = 64 << 10;
/// Most descriptors in one block-status chunk; a client asks again for the rest (the spec
/// allows a short answer). 64 Ki descriptors = 512 KiB of reply.
pub const MAX_DESCRIPTORS: usize = 64 << 10;
/// Most metadata contexts one `SET_META_CONTEXT` may select (`NBD_REP_ERR_TOO_BIG` beyond).
pub const MAX_CONTEXTS: usize = 64;
/// Longest export name or string (the spec's MUST limit).
pub const MAX_STRING_LEN: usize = 4096;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the fixed layout needs.
    Short { need: usize, got: usize },
    /// The magic number is wrong: the stream is out of frame.
    BadMagic { got: u64 },
    /// Lengths inside the message do not add up, or a string is not UTF-8.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { need, got } => write!(f, "short message: need {need} bytes, got {got}"),
            Self::BadMagic { got } => write!(f, "bad magic {got:#x}"),
            Self::Malformed(what) => write!(f, "malformed message: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for io::Error {
    fn from(e: DecodeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Big-endian cursor over a byte slice; every read checks the length.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(DecodeError::Short { need: self.pos.saturating_add(n), got: self.buf.len() })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed("string is not UTF-8"))
}

// --- Handshake encode/decode ------------------------------------------------------------------

/// The server's newstyle greeting.
pub fn encode_greeting(handshake_flags: u16) -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..].copy_from_slice(&handshake_flags.to_be_bytes());
    b
}

/// Decodes the greeting (client side) into the handshake flags.
pub fn decode_greeting(b: &[u8]) -> Result<u16, DecodeError> {
    let mut r = Reader::new(b);
    let m = r.u64()?;
    if m != NBDMAGIC {
        return Err(DecodeError::BadMagic { got: m });
    }
    let m = r.u64()?;
    if m != IHAVEOPT {
        // Oldstyle servers send cliserv_magic here; we do not speak oldstyle.
        return Err(DecodeError::BadMagic { got: m });
    }
    r.u16()
}

/// Header of one option request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

pub fn encode_option_header(option: u32, length: u32) -> [u8; OPTION_HEADER_LEN] {
    let mut b = [0u8; OPTION_HEADER_LEN];
    b[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[8..12].copy_from_slice(&option.to_be_bytes());
    b[12..].copy_from_slice(&length.to_be_bytes());
    b
}

pub fn decode_option_header(b: &[u8]) -> Result<OptionHeader, DecodeError> {
    let mut r = Reader::new(b);
    let m = r.u64()?;
    if m != IHAVEOPT {
        return Err(DecodeError::BadMagic { got: m });
    }
    Ok(OptionHeader { option: r.u32()?, length: r.u32()? })
}

/// Header of one option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply_type: u32,
    pub length: u32,
}

/// Appends one complete option reply (header + data) to `out`.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    // Callers only pass small payloads (names, info); saturate rather than panic.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
}

pub fn decode_option_reply_header(b: &[u8]) -> Result<OptionReplyHeader, DecodeError> {
    let mut r = Reader::new(b);
    let m = r.u64()?;
    if m != OPTION_REPLY_MAGIC {
        return Err(DecodeError::BadMagic { got: m });
    }
    Ok(OptionReplyHeader { option: r.u32()?, reply_type: r.u32()?, length: r.u32()? })
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, flags and (unless NO_ZEROES) 124 zero bytes.
pub fn encode_export_name_reply(size: u64, tflags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(10 + 124);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&tflags.to_be_bytes());
    if !no_zeroes {
        b.resize(10 + 124, 0);
    }
    b
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: export name and the info types asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

pub fn encode_info_request(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(6 + name.len() + 2 * requests.len());
    b.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&u16::try_from(requests.len()).unwrap_or(u16::MAX).to_be_bytes());
    for r in requests {
        b.extend_from_slice(&r.to_be_bytes());
    }
    b
}

pub fn decode_info_request(b: &[u8]) -> Result<InfoRequest, DecodeError> {
    let mut r = Reader::new(b);
    let name_len = r.u32()? as usize;
    if name_len > MAX_STRING_LEN {
        return Err(DecodeError::Malformed("export name too long"));
    }
    let name = utf8(r.take(name_len)?)?;
    let n = r.u16()? as usize;
    let mut requests = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        requests.push(r.u16()?);
    }
    if !r.rest().is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after info requests"));
    }
    Ok(InfoRequest { name, requests })
}

/// `NBD_REP_INFO` payload for `NBD_INFO_EXPORT`.
pub fn encode_info_export(size: u64, tflags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&tflags.to_be_bytes());
    b
}

/// `NBD_REP_INFO` payload for `NBD_INFO_BLOCK_SIZE`.
pub fn encode_info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    for v in [min, preferred, max] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// `NBD_REP_INFO` payload for `NBD_INFO_NAME`.
pub fn encode_info_name(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + name.len());
    b.extend_from_slice(&INFO_NAME.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// One decoded `NBD_REP_INFO` payload (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    Export {
        size: u64,
        tflags: u16,
    },
    BlockSize {
        min: u32,
        preferred: u32,
        max: u32,
    },
    Name(String),
    /// An info type this client does not interpret (the spec says ignore it).
    Other(u16),
}

pub fn decode_info(b: &[u8]) -> Result<Info, DecodeError> {
    let mut r = Reader::new(b);
    let ty = r.u16()?;
    let info = match ty {
        INFO_EXPORT => Info::Export { size: r.u64()?, tflags: r.u16()? },
        INFO_BLOCK_SIZE => Info::BlockSize { min: r.u32()?, preferred: r.u32()?, max: r.u32()? },
        INFO_NAME => return Ok(Info::Name(utf8(r.rest())?)),
        other => return Ok(Info::Other(other)),
    };
    if !r.rest().is_empty() {
        return Err(DecodeError::Malformed("trailing bytes in info reply"));
    }
    Ok(info)
}

/// `NBD_REP_SERVER` payload: name length + name (no description).
pub fn encode_rep_server(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

pub fn decode_rep_server(b: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(b);
    let n = r.u32()? as usize;
    // Anything after the name is an optional description, which we drop.
    utf8(r.take(n)?)
}

/// Payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub export: String,
    pub queries: Vec<String>,
}

pub fn encode_meta_context_request(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + export.len() + queries.iter().map(|q| 4 + q.len()).sum::<usize>());
    b.extend_from_slice(&u32::try_from(export.len()).unwrap_or(u32::MAX).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&u32::try_from(queries.len()).unwrap_or(u32::MAX).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&u32::try_from(q.len()).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

pub fn decode_meta_context_request(b: &[u8]) -> Result<MetaContextRequest, DecodeError> {
    let mut r = Reader::new(b);
    let name_len = r.u32()? as usize;
    if name_len > MAX_STRING_LEN {
        return Err(DecodeError::Malformed("export name too long"));
    }
    let export = utf8(r.take(name_len)?)?;
    let n = r.u32()? as usize;
    // Each query takes at least 4 bytes, so a count the payload cannot hold is malformed
    // before anything is allocated for it.
    if n > r.rest().len() / 4 {
        return Err(DecodeError::Malformed("more queries than the option holds"));
    }
    let mut queries = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()? as usize;
        if len > MAX_STRING_LEN {
            return Err(DecodeError::Malformed("query too long"));
        }
        queries.push(utf8(r.take(len)?)?);
    }
    if !r.rest().is_empty() {
        return Err(DecodeError::Malformed("trailing bytes after queries"));
    }
    Ok(MetaContextRequest { export, queries })
}

/// `NBD_REP_META_CONTEXT` payload: context id + name.
pub fn encode_rep_meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

pub fn decode_rep_meta_context(b: &[u8]) -> Result<(u32, String), DecodeError> {
    let mut r = Reader::new(b);
    let id = r.u32()?;
    Ok((id, utf8(r.rest())?))
}

// --- Transmission encode/decode ---------------------------------------------------------------

/// One request header (compact form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn encode_request(h: &RequestHeader) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&h.flags.to_be_bytes());
    b[6..8].copy_from_slice(&h.command.to_be_bytes());
    b[8..16].copy_from_slice(&h.cookie.to_be_bytes());
    b[16..24].copy_from_slice(&h.offset.to_be_bytes());
    b[24..].copy_from_slice(&h.length.to_be_bytes());
    b
}

pub fn decode_request(b: &[u8]) -> Result<RequestHeader, DecodeError> {
    let mut r = Reader::new(b);
    if b.len() < REQUEST_LEN {
        return Err(DecodeError::Short { need: REQUEST_LEN, got: b.len() });
    }
    let m = r.u32()?;
    if m != REQUEST_MAGIC {
        return Err(DecodeError::BadMagic { got: u64::from(m) });
    }
    Ok(RequestHeader { flags: r.u16()?, command: r.u16()?, cookie: r.u64()?, offset: r.u64()?, length: r.u32()? })
}

/// A simple reply header (data, if any, follows it on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

pub fn decode_simple_reply(b: &[u8]) -> Result<SimpleReply, DecodeError> {
    let mut r = Reader::new(b);
    let m = r.u32()?;
    if m != SIMPLE_REPLY_MAGIC {
        return Err(DecodeError::BadMagic { got: u64::from(m) });
    }
    Ok(SimpleReply { error: r.u32()?, cookie: r.u64()? })
}

/// Structured reply chunk header; the payload of `length` bytes follows.
pub fn encode_chunk_header(flags: u16, ty: u16, cookie: u64, length: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&ty.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&length.to_be_bytes());
    b
}

/// Header plus the 8-byte offset of an `OFFSET_DATA` chunk carrying `data_len` bytes of data,
/// which the caller sends next. `None` if the chunk would not fit the 32-bit length.
pub fn encode_chunk_offset_data(
    flags: u16,
    cookie: u64,
    offset: u64,
    data_len: u32,
) -> Option<[u8; CHUNK_HEADER_LEN + 8]> {
    let len = data_len.checked_add(8)?;
    let mut b = [0u8; CHUNK_HEADER_LEN + 8];
    b[..CHUNK_HEADER_LEN].copy_from_slice(&encode_chunk_header(flags, REPLY_TYPE_OFFSET_DATA, cookie, len));
    b[CHUNK_HEADER_LEN..].copy_from_slice(&offset.to_be_bytes());
    Some(b)
}

/// A complete `NBD_REPLY_TYPE_ERROR` chunk (always the final one here).
pub fn encode_chunk_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // The message length is 16 bits; cut at a char boundary so the payload stays UTF-8.
    let mut cut = message.len().min(usize::from(u16::MAX) - 6);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let msg = &message.as_bytes()[..cut];
    let mut b = Vec::with_capacity(CHUNK_HEADER_LEN + 6 + msg.len());
    // msg.len() <= 65529, so both conversions are lossless.
    let len = (6 + msg.len()) as u32;
    b.extend_from_slice(&encode_chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, len));
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// The final `NBD_REPLY_TYPE_NONE` chunk.
pub fn encode_chunk_none(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    encode_chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0)
}

/// One structured reply chunk header (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: u16,
    pub ty: u16,
    pub cookie: u64,
    pub length: u32,
}

pub fn decode_chunk_header(b: &[u8]) -> Result<ChunkHeader, DecodeError> {
    let mut r = Reader::new(b);
    let m = r.u32()?;
    if m != STRUCTURED_REPLY_MAGIC {
        return Err(DecodeError::BadMagic { got: u64::from(m) });
    }
    Ok(ChunkHeader { flags: r.u16()?, ty: r.u16()?, cookie: r.u64()?, length: r.u32()? })
}

/// Reads the 4-byte magic that starts every reply, so a client can tell simple from
/// structured before decoding the rest.
pub fn reply_magic(b: &[u8]) -> Result<u32, DecodeError> {
    Reader::new(b).u32()
}

/// Appends one complete `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: context id and descriptors
/// (length, flags). `None` if there are no descriptors or the chunk would not fit 32 bits.
pub fn encode_chunk_block_status(
    out: &mut Vec<u8>,
    flags: u16,
    cookie: u64,
    context: u32,
    descriptors: &[(u32, u32)],
) -> Option<()> {
    if descriptors.is_empty() {
        return None;
    }
    let len = u32::try_from(4 + DESCRIPTOR_LEN * descriptors.len()).ok()?;
    out.extend_from_slice(&encode_chunk_header(flags, REPLY_TYPE_BLOCK_STATUS, cookie, len));
    out.extend_from_slice(&context.to_be_bytes());
    for (length, status) in descriptors {
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&status.to_be_bytes());
    }
    Some(())
}

/// Payload of a block-status chunk: context id and descriptors.
pub fn decode_block_status(b: &[u8]) -> Result<(u32, Vec<(u32, u32)>), DecodeError> {
    let mut r = Reader::new(b);
    let context = r.u32()?;
    let rest = r.rest();
    if rest.is_empty() || !rest.len().is_multiple_of(DESCRIPTOR_LEN) {
        return Err(DecodeError::Malformed("block status payload is not whole descriptors"));
    }
    let mut out = Vec::with_capacity(rest.len() / DESCRIPTOR_LEN);
    for _ in 0..rest.len() / DESCRIPTOR_LEN {
        let length = r.u32()?;
        if length == 0 {
            return Err(DecodeError::Malformed("zero-length block status descriptor"));
        }
        out.push((length, r.u32()?));
    }
    Ok((context, out))
}

/// Payload of an error chunk: error value and message.
pub fn decode_chunk_error(b: &[u8]) -> Result<(u32, String), DecodeError> {
    let mut r = Reader::new(b);
    let error = r.u32()?;
    let n = usize::from(r.u16()?);
    let msg = r.take(n)?;
    Ok((error, String::from_utf8_lossy(msg).into_owned()))
}

/// Maps an I/O error to an NBD error value. Unknown errors become `EIO`.
pub fn errno_from_io(e: &io::Error) -> u32 {
    if let Some(code) = e.raw_os_error() {
        return match code {
            libc::EPERM | libc::EACCES | libc::EROFS => EPERM,
            libc::ENOMEM => ENOMEM,
            libc::EINVAL => EINVAL,
            // The spec asks for EDQUOT and EFBIG to be reported as ENOSPC.
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => ENOSPC,
            libc::EOVERFLOW => EOVERFLOW,
            libc::EOPNOTSUPP => ENOTSUP,
            libc::ESHUTDOWN => ESHUTDOWN,
            _ => EIO,
        };
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => EPERM,
        io::ErrorKind::OutOfMemory => ENOMEM,
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => ENOSPC,
        io::ErrorKind::Unsupported => ENOTSUP,
        _ => EIO,
    }
}

/// Turns an NBD error value from a reply into an `io::Error` (client side).
pub fn io_from_errno(error: u32) -> io::Error {
    match i32::try_from(error) {
        Ok(code) if code > 0 => io::Error::from_raw_os_error(code),
        _ => io::Error::other(format!("NBD error {error}")),
    }
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
