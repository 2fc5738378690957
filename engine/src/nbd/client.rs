//! A small blocking NBD client: fixed newstyle, `OPT_GO` (falling back to `EXPORT_NAME`),
//! `OPT_LIST`, simple replies. Requests can be pipelined: [`Client::submit`] several, then
//! collect them in completion order with [`Client::wait`]; the caller bounds the depth.
//!
//! Used by `flashio` and the tests. It speaks to any NBD server (qemu-nbd too).

use super::proto::{self, Info, RequestHeader};
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Endpoint {
    fn connect(&self) -> io::Result<super::Conn> {
        Ok(match self {
            Endpoint::Unix(p) => super::Conn::Unix(UnixStream::connect(p)?),
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                super::Conn::Tcp(s)
            }
        })
    }
}

/// Block size constraints the server advertised (defaults when it sent none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub min: u32,
    pub preferred: u32,
    pub max: u32,
}

/// One request to pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        data: &'a [u8],
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
    },
    /// `no_hole`: the server must not deallocate (sends `NBD_CMD_FLAG_NO_HOLE`).
    WriteZeroes {
        offset: u64,
        len: u32,
        no_hole: bool,
    },
}

/// A finished request: its cookie and either the data read (empty for non-reads) or the
/// server's error as an `io::Error` with the errno.
#[derive(Debug)]
pub struct Completion {
    pub cookie: u64,
    pub result: io::Result<Vec<u8>>,
}

/// A connected client in the transmission phase.
#[derive(Debug)]
pub struct Client {
    rd: BufReader<super::Conn>,
    wr: BufWriter<super::Conn>,
    size: u64,
    tflags: u16,
    block: BlockSizes,
    next_cookie: u64,
    /// Cookie -> bytes of data its reply carries (READ length, else 0).
    pending: HashMap<u64, u32>,
}

/// Most bytes of an option reply the client will read (the server's name lists are small).
const MAX_OPTION_REPLY: u32 = 1 << 20;

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Greets the server and returns the connection plus whether NO_ZEROES was agreed.
fn greet(ep: &Endpoint) -> io::Result<(BufReader<super::Conn>, BufWriter<super::Conn>, bool)> {
    let conn = ep.connect()?;
    let mut rd = BufReader::new(conn.try_clone()?);
    let mut wr = BufWriter::with_capacity(256 << 10, conn);
    let mut g = [0u8; proto::GREETING_LEN];
    rd.read_exact(&mut g)?;
    let hflags = proto::decode_greeting(&g)?;
    if hflags & proto::FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol("server does not speak fixed newstyle"));
    }
    let no_zeroes = hflags & proto::FLAG_NO_ZEROES != 0;
    let cflags = proto::FLAG_C_FIXED_NEWSTYLE | if no_zeroes { proto::FLAG_C_NO_ZEROES } else { 0 };
    wr.write_all(&cflags.to_be_bytes())?;
    Ok((rd, wr, no_zeroes))
}

fn send_option(wr: &mut impl Write, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| protocol("option too long"))?;
    wr.write_all(&proto::encode_option_header(option, len))?;
    wr.write_all(data)?;
    wr.flush()
}

/// Reads one option reply; error replies become `io::Error`s carrying the server's message.
fn read_option_reply(rd: &mut impl Read, option: u32) -> io::Result<(u32, Vec<u8>)> {
    let mut hb = [0u8; proto::OPTION_REPLY_HEADER_LEN];
    rd.read_exact(&mut hb)?;
    let h = proto::decode_option_reply_header(&hb)?;
    if h.option != option {
        return Err(protocol(format!("reply for option {} while waiting for {option}", h.option)));
    }
    if h.length > MAX_OPTION_REPLY {
        return Err(protocol(format!("option reply of {} bytes", h.length)));
    }
    let mut data = vec![0u8; h.length as usize];
    rd.read_exact(&mut data)?;
    if proto::is_rep_err(h.reply_type) {
        let msg = String::from_utf8_lossy(&data);
        let kind = match h.reply_type {
            proto::REP_ERR_UNKNOWN => io::ErrorKind::NotFound,
            proto::REP_ERR_UNSUP => io::ErrorKind::Unsupported,
            proto::REP_ERR_POLICY => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        let text = if msg.is_empty() {
            format!("server refused option {option} with reply {:#x}", h.reply_type)
        } else {
            format!("server: {msg}")
        };
        return Err(io::Error::new(kind, text));
    }
    Ok((h.reply_type, data))
}

/// Lists the server's exports (`NBD_OPT_LIST`), then aborts the session politely.
pub fn list(ep: &Endpoint) -> io::Result<Vec<String>> {
    let (mut rd, mut wr, _) = greet(ep)?;
    send_option(&mut wr, proto::OPT_LIST, &[])?;
    let mut names = Vec::new();
    loop {
        match read_option_reply(&mut rd, proto::OPT_LIST)? {
            (proto::REP_SERVER, data) => names.push(proto::decode_rep_server(&data)?),
            (proto::REP_ACK, _) => break,
            (t, _) => return Err(protocol(format!("unexpected reply type {t} to LIST"))),
        }
    }
    send_option(&mut wr, proto::OPT_ABORT, &[])?;
    // The server may close without acknowledging; either is fine.
    let _ = read_option_reply(&mut rd, proto::OPT_ABORT);
    Ok(names)
}

impl Client {
    /// Connects and selects `export` with `NBD_OPT_GO` (or `EXPORT_NAME` on servers that lack GO).
    pub fn connect(ep: &Endpoint, export: &str) -> io::Result<Client> {
        let (mut rd, mut wr, no_zeroes) = greet(ep)?;
        let req = proto::encode_info_request(export, &[proto::INFO_BLOCK_SIZE]);
        send_option(&mut wr, proto::OPT_GO, &req)?;
        let mut size_flags = None;
        let mut block = BlockSizes { min: 1, preferred: 4096, max: proto::MAX_PAYLOAD };
        loop {
            let (ty, data) = match read_option_reply(&mut rd, proto::OPT_GO) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    return Self::export_name(rd, wr, export, no_zeroes);
                }
                Err(e) => {
                    // A refused option leaves the session usable: leave politely (soft
                    // disconnect) so the server logs no protocol error.
                    if e.kind() != io::ErrorKind::InvalidData && send_option(&mut wr, proto::OPT_ABORT, &[]).is_ok() {
                        let _ = read_option_reply(&mut rd, proto::OPT_ABORT);
                    }
                    if e.kind() == io::ErrorKind::NotFound {
                        let msg = format!("no export named {export:?} ({e})");
                        return Err(io::Error::new(io::ErrorKind::NotFound, msg));
                    }
                    return Err(e);
                }
            };
            match ty {
                proto::REP_INFO => match proto::decode_info(&data)? {
                    Info::Export { size, tflags } => size_flags = Some((size, tflags)),
                    Info::BlockSize { min, preferred, max } => block = BlockSizes { min, preferred, max },
                    Info::Name(_) | Info::Other(_) => {}
                },
                proto::REP_ACK => break,
                t => return Err(protocol(format!("unexpected reply type {t} to GO"))),
            }
        }
        let (size, tflags) = size_flags.ok_or_else(|| protocol("server sent no NBD_INFO_EXPORT"))?;
        Ok(Client { rd, wr, size, tflags, block, next_cookie: 1, pending: HashMap::new() })
    }

    fn export_name(
        mut rd: BufReader<super::Conn>,
        mut wr: BufWriter<super::Conn>,
        export: &str,
        no_zeroes: bool,
    ) -> io::Result<Client> {
        send_option(&mut wr, proto::OPT_EXPORT_NAME, export.as_bytes())?;
        let mut b = vec![0u8; if no_zeroes { 10 } else { 134 }];
        rd.read_exact(&mut b).map_err(|e| io::Error::new(e.kind(), format!("export {export:?} refused: {e}")))?;
        let size = u64::from_be_bytes(b[..8].try_into().map_err(|_| protocol("short export reply"))?);
        let tflags = u16::from_be_bytes([b[8], b[9]]);
        let block = BlockSizes { min: 1, preferred: 4096, max: proto::MAX_PAYLOAD };
        Ok(Client { rd, wr, size, tflags, block, next_cookie: 1, pending: HashMap::new() })
    }

    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn transmission_flags(&self) -> u16 {
        self.tflags
    }
    pub fn read_only(&self) -> bool {
        self.tflags & proto::TFLAG_READ_ONLY != 0
    }
    pub fn block_sizes(&self) -> BlockSizes {
        self.block
    }
    /// Requests submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Sends one request without waiting for its reply; returns its cookie.
    pub fn submit(&mut self, req: Request<'_>) -> io::Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let (command, flags, offset, length, data, reply_len) = match req {
            Request::Read { offset, len } => (proto::CMD_READ, 0, offset, len, &[][..], len),
            Request::Write { offset, data, fua } => {
                let len = u32::try_from(data.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let flags = if fua { proto::CMD_FLAG_FUA } else { 0 };
                (proto::CMD_WRITE, flags, offset, len, data, 0)
            }
            Request::Flush => (proto::CMD_FLUSH, 0, 0, 0, &[][..], 0),
            Request::Trim { offset, len } => (proto::CMD_TRIM, 0, offset, len, &[][..], 0),
            Request::WriteZeroes { offset, len, no_hole } => {
                let flags = if no_hole { proto::CMD_FLAG_NO_HOLE } else { 0 };
                (proto::CMD_WRITE_ZEROES, flags, offset, len, &[][..], 0)
            }
        };
        let h = RequestHeader { flags, command, cookie, offset, length };
        self.wr.write_all(&proto::encode_request(&h))?;
        self.wr.write_all(data)?;
        // Flush per request: the server starts on it while we prepare the next one.
        self.wr.flush()?;
        self.pending.insert(cookie, reply_len);
        Ok(cookie)
    }

    /// Waits for the next reply, whichever request it answers.
    pub fn wait(&mut self) -> io::Result<Completion> {
        if self.pending.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no request in flight"));
        }
        let mut hb = [0u8; proto::SIMPLE_REPLY_LEN];
        self.rd.read_exact(&mut hb)?;
        let r = proto::decode_simple_reply(&hb)?;
        let len = self
            .pending
            .remove(&r.cookie)
            .ok_or_else(|| protocol(format!("reply for unknown cookie {:#x}", r.cookie)))?;
        if r.error != 0 {
            return Ok(Completion { cookie: r.cookie, result: Err(proto::io_from_errno(r.error)) });
        }
        let mut data = vec![0u8; len as usize];
        self.rd.read_exact(&mut data)?;
        Ok(Completion { cookie: r.cookie, result: Ok(data) })
    }

    /// Submits one request and waits for it (nothing else may be in flight).
    fn call(&mut self, req: Request<'_>) -> io::Result<Vec<u8>> {
        if !self.pending.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "pipelined requests still in flight"));
        }
        self.submit(req)?;
        self.wait()?.result
    }

    /// Reads `buf.len()` bytes at `offset`, split into requests of at most the server's maximum.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let max = self.block.max.max(512) as usize;
        for (i, chunk) in buf.chunks_mut(max).enumerate() {
            let data = self.call(Request::Read { offset: offset + (i * max) as u64, len: chunk.len() as u32 })?;
            chunk.copy_from_slice(&data);
        }
        Ok(())
    }

    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let max = self.block.max.max(512) as usize;
        for (i, chunk) in data.chunks(max).enumerate() {
            self.call(Request::Write { offset: offset + (i * max) as u64, data: chunk, fua })?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.call(Request::Flush).map(drop)
    }

    pub fn trim(&mut self, offset: u64, len: u32) -> io::Result<()> {
        self.call(Request::Trim { offset, len }).map(drop)
    }

    pub fn write_zeroes(&mut self, offset: u64, len: u32, no_hole: bool) -> io::Result<()> {
        self.call(Request::WriteZeroes { offset, len, no_hole }).map(drop)
    }

    /// Collects outstanding replies, sends `NBD_CMD_DISC` and closes.
    pub fn disconnect(mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.wait()?;
        }
        let h = RequestHeader { flags: 0, command: proto::CMD_DISC, cookie: 0, offset: 0, length: 0 };
        self.wr.write_all(&proto::encode_request(&h))?;
        self.wr.flush()
    }
}
