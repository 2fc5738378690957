//! Transmission phase: the per-connection pipeline of DESIGN.md "Requests".
//!
//! ```text
//! socket -> reader (decode, validate, read WRITE payload) -> bounded queue -> N workers
//!        -> reply queue -> one writer -> socket
//! ```
//! Replies go out in completion order (the protocol allows it), so a client keeping 32 requests
//! in flight gets 32 executing, not one.
//!
//! Stages, each a function here: [`read_requests`] (framing + [`validate`]), [`execute`]
//! (one [`Op`] against the [`Export`], producing an [`Outcome`]), [`write_replies`] (encoding).
//! A request that must be refused without running (validation, or a session ended by the
//! server, which replies `ESHUTDOWN`) becomes an [`Outcome::Error`] sent straight to the writer
//! from [`read_requests`]. Only the writer knows the wire form of a reply: with structured replies agreed it sends
//! READ data as one `OFFSET_DATA` chunk flagged DONE (a zero-length read: `NONE`), block
//! status as one `BLOCK_STATUS` chunk per selected context then `NONE`, and every error as an
//! `ERROR` chunk with a message; other successes stay 16-byte simple replies (the spec allows
//! simple replies to anything but READ when they carry no payload).
//!
//! Error choices (the spec leaves them open; one place, here):
//! * range past the end of the export: `EINVAL` for every command, writes included (the spec
//!   suggests `ENOSPC` for writes; `EINVAL` says "your request is wrong", which it is);
//! * unknown command, unknown or inapplicable flag (`DF`, `FAST_ZERO`, which we do not
//!   advertise; `REQ_ONE` outside BLOCK_STATUS): `EINVAL`;
//! * WRITE/TRIM/WRITE_ZEROES on a read-only export: `EPERM`;
//! * READ or WRITE longer than [`proto::MAX_PAYLOAD`]: `EINVAL`; a WRITE's payload is still read
//!   and discarded so the stream stays in frame and the connection stays usable;
//! * BLOCK_STATUS without a selected context, or of length 0: `EINVAL`;
//! * an error from the export: its errno via [`proto::errno_from_io`] (unknown -> `EIO`); a panic
//!   in the export: `EIO` for that request only;
//! * bad request magic or a short read of a header or payload: disconnect (out of frame).
//!
//! `NBD_CMD_CACHE` is validated (range, flags) and passed to [`Export::cache`]; flashd's export
//! turns it into readahead (`posix_fadvise(WILLNEED)`) on a file backing and does nothing on a
//! device region (O_DIRECT there has no page cache to fill).

use super::context::{ContextKind, MetaContext};
use super::handshake::Session;
use super::proto::{self, RequestHeader};
use super::{Conn, Export, Extent};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex};
use std::thread;

/// Payload bytes (READ buffers and WRITE data) one connection may hold at once. Without a cap a
/// client could park queue_depth x 32 MiB of writes in server memory.
pub const PAYLOAD_BUDGET: u64 = 128 << 20;

/// Command flags accepted per command; anything else is `EINVAL`.
fn allowed_flags(command: u16) -> u16 {
    match command {
        proto::CMD_WRITE_ZEROES => proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE,
        proto::CMD_BLOCK_STATUS => proto::CMD_FLAG_FUA | proto::CMD_FLAG_REQ_ONE,
        // FUA is meaningless but harmless on the others; some clients set it on every command.
        _ => proto::CMD_FLAG_FUA,
    }
}

/// One validated request for a worker.
#[derive(Debug)]
enum Op {
    Read { offset: u64, len: u32 },
    Write { offset: u64, data: Vec<u8>, fua: bool },
    Flush,
    Trim { offset: u64, len: u64, fua: bool },
    Zeroes { offset: u64, len: u64, may_trim: bool, fua: bool },
    Cache { offset: u64, len: u64 },
    BlockStatus { offset: u64, len: u32, req_one: bool },
}

#[derive(Debug)]
struct Job {
    cookie: u64,
    op: Op,
    /// Budget bytes held by this job (released by the writer once the reply is sent).
    held: u64,
}

/// What a request produced, before it has a wire form.
#[derive(Debug)]
enum Outcome {
    /// Success without payload.
    Done,
    /// READ data read at `offset`.
    Data {
        offset: u64,
        data: Vec<u8>,
    },
    /// BLOCK_STATUS descriptors per context id.
    Status(Vec<(u32, Vec<(u32, u32)>)>),
    Error {
        errno: u32,
        message: String,
    },
}

#[derive(Debug)]
struct Reply {
    cookie: u64,
    outcome: Outcome,
    held: u64,
}

/// A counting limit on payload bytes in flight.
#[derive(Debug)]
struct Budget {
    used: Mutex<u64>,
    cv: Condvar,
}

impl Budget {
    fn acquire(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // A lone request always fits (n <= MAX_PAYLOAD < PAYLOAD_BUDGET), so this cannot wedge.
        while *used > 0 && *used + n > PAYLOAD_BUDGET {
            used = self.cv.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
    }
    fn release(&self, n: u64) {
        if n > 0 {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            *used = used.saturating_sub(n);
            self.cv.notify_all();
        }
    }
}

/// Serves requests on `conn` for `session` until the client disconnects (`NBD_CMD_DISC` or
/// EOF), the stream goes out of frame, or the socket is shut down. In-flight requests always
/// finish before this returns.
pub(crate) fn serve(conn: Conn, session: &Session, workers: usize, queue_depth: usize) -> io::Result<()> {
    let write_half = conn.try_clone()?;
    let (job_tx, job_rx) = bounded::<Job>(queue_depth.max(1));
    let (reply_tx, reply_rx) = bounded::<Reply>(queue_depth.max(1));
    let budget = Budget { used: Mutex::new(0), cv: Condvar::new() };
    let export = session.export.as_ref();
    let contexts = session.contexts.as_slice();
    let structured = session.structured;

    thread::scope(|sc| {
        let budget = &budget;
        let writer = thread::Builder::new()
            .name("nbd-reply".into())
            .spawn_scoped(sc, move || write_replies(write_half, reply_rx, budget, structured))?;
        for i in 0..workers.max(1) {
            let (rx, tx) = (job_rx.clone(), reply_tx.clone());
            let spawned = thread::Builder::new().name(format!("nbd-worker-{i}")).spawn_scoped(sc, move || {
                for job in rx.iter() {
                    if tx.send(execute(export, contexts, job)).is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                // Threads already spawned exit once the channels close below.
                conn.shutdown();
                drop((job_tx, reply_tx));
                let _ = writer.join();
                return Err(e);
            }
        }
        drop(job_rx);
        let result = read_requests(&conn, session, &job_tx, &reply_tx, budget);
        // Closing the queue lets workers drain it and exit; then the writer drains and exits.
        drop((job_tx, reply_tx));
        let _ = writer.join();
        result
    })
}

/// The reader: decode, validate, route. Returns when the client is done or out of frame.
fn read_requests(
    conn: &Conn,
    session: &Session,
    jobs: &Sender<Job>,
    replies: &Sender<Reply>,
    budget: &Budget,
) -> io::Result<()> {
    let mut rd = BufReader::with_capacity(64 << 10, conn.try_clone()?);
    let limits = Limits {
        size: session.export.size(),
        read_only: session.export.read_only(),
        has_contexts: !session.contexts.is_empty(),
    };
    loop {
        let mut hb = [0u8; proto::REQUEST_LEN];
        if !read_header(&mut rd, &mut hb)? {
            return Ok(());
        }
        let h = proto::decode_request(&hb)?;
        if h.command == proto::CMD_DISC {
            return Ok(());
        }
        let payload = if h.command == proto::CMD_WRITE { h.length } else { 0 };
        let op = match validate(&h, &limits) {
            Ok(op) => op,
            Err((errno, why)) => {
                discard(&mut rd, payload)?;
                let outcome = Outcome::Error { errno, message: why.to_owned() };
                send_reply(replies, Reply { cookie: h.cookie, outcome, held: 0 })?;
                continue;
            }
        };
        let held = match op {
            Op::Read { len, .. } => u64::from(len),
            _ => u64::from(payload),
        };
        budget.acquire(held);
        let op = match op {
            Op::Write { offset, fua, .. } => {
                let mut data = vec![0u8; payload as usize];
                if let Err(e) = rd.read_exact(&mut data) {
                    budget.release(held);
                    return Err(e);
                }
                Op::Write { offset, data, fua }
            }
            other => other,
        };
        if jobs.send(Job { cookie: h.cookie, op, held }).is_err() {
            budget.release(held);
            return Err(io::Error::other("all workers exited"));
        }
    }
}

fn send_reply(replies: &Sender<Reply>, r: Reply) -> io::Result<()> {
    replies.send(r).map_err(|_| io::Error::other("reply writer exited"))
}

/// Reads one header. `Ok(false)` on a clean EOF before its first byte.
fn read_header(rd: &mut impl Read, hb: &mut [u8; proto::REQUEST_LEN]) -> io::Result<bool> {
    let mut got = 0;
    while got < hb.len() {
        match rd.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(proto::DecodeError::Short { need: proto::REQUEST_LEN, got }.into());
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn discard(rd: &mut impl Read, len: u32) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let n = io::copy(&mut rd.take(u64::from(len)), &mut io::sink())?;
    if n < u64::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// What validation needs to know of the session.
#[derive(Debug, Clone, Copy)]
struct Limits {
    size: u64,
    read_only: bool,
    has_contexts: bool,
}

/// Checks a well-framed request; `Err` is the NBD error value to reply with and why. WRITE
/// data is filled in by the caller.
fn validate(h: &RequestHeader, lim: &Limits) -> Result<Op, (u32, &'static str)> {
    let known = matches!(
        h.command,
        proto::CMD_READ
            | proto::CMD_WRITE
            | proto::CMD_FLUSH
            | proto::CMD_TRIM
            | proto::CMD_WRITE_ZEROES
            | proto::CMD_CACHE
            | proto::CMD_BLOCK_STATUS
    );
    if !known {
        return Err((proto::EINVAL, "unknown command"));
    }
    if h.flags & !allowed_flags(h.command) != 0 {
        return Err((proto::EINVAL, "flag not valid for this command"));
    }
    let fua = h.flags & proto::CMD_FLAG_FUA != 0;
    if h.command == proto::CMD_FLUSH {
        // Offset and length are reserved for FLUSH; tolerate non-zero values.
        return Ok(Op::Flush);
    }
    let writes = matches!(h.command, proto::CMD_WRITE | proto::CMD_TRIM | proto::CMD_WRITE_ZEROES);
    if lim.read_only && writes {
        return Err((proto::EPERM, "export is read-only"));
    }
    let len = u64::from(h.length);
    if h.offset.checked_add(len).is_none_or(|end| end > lim.size) {
        return Err((proto::EINVAL, "range past the end of the export"));
    }
    let payload_cmd = matches!(h.command, proto::CMD_READ | proto::CMD_WRITE);
    if payload_cmd && h.length > proto::MAX_PAYLOAD {
        return Err((proto::EINVAL, "request longer than the maximum block size"));
    }
    Ok(match h.command {
        proto::CMD_READ => Op::Read { offset: h.offset, len: h.length },
        proto::CMD_WRITE => Op::Write { offset: h.offset, data: Vec::new(), fua },
        proto::CMD_TRIM => Op::Trim { offset: h.offset, len, fua },
        proto::CMD_CACHE => Op::Cache { offset: h.offset, len },
        proto::CMD_BLOCK_STATUS => {
            if !lim.has_contexts {
                return Err((proto::EINVAL, "no metadata context was selected"));
            }
            if h.length == 0 {
                return Err((proto::EINVAL, "block status of zero bytes"));
            }
            Op::BlockStatus { offset: h.offset, len: h.length, req_one: h.flags & proto::CMD_FLAG_REQ_ONE != 0 }
        }
        _ => {
            let may_trim = h.flags & proto::CMD_FLAG_NO_HOLE == 0;
            Op::Zeroes { offset: h.offset, len, may_trim, fua }
        }
    })
}

/// Runs one job against the export.
fn execute(export: &dyn Export, contexts: &[MetaContext], job: Job) -> Reply {
    let Job { cookie, op, held } = job;
    // A panicking export fails this request, not the connection.
    let outcome = match catch_unwind(AssertUnwindSafe(|| run_op(export, contexts, op))) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            tracing::debug!("nbd: request {cookie:#x} failed: {e}");
            Outcome::Error { errno: proto::errno_from_io(&e), message: e.to_string() }
        }
        Err(_) => {
            tracing::error!("nbd: export panicked serving request {cookie:#x}");
            Outcome::Error { errno: proto::EIO, message: "internal error".into() }
        }
    };
    Reply { cookie, outcome, held }
}

fn run_op(export: &dyn Export, contexts: &[MetaContext], op: Op) -> io::Result<Outcome> {
    match op {
        Op::Read { offset, len } => {
            let mut data = vec![0u8; len as usize];
            if len > 0 {
                export.read(offset, &mut data)?;
            }
            return Ok(Outcome::Data { offset, data });
        }
        Op::Write { offset, data, fua } => {
            if !data.is_empty() {
                export.write(offset, &data, fua)?;
            } else if fua {
                export.flush()?;
            }
        }
        Op::Flush => export.flush()?,
        Op::Trim { offset, len, fua } => {
            if len > 0 {
                export.trim(offset, len)?;
            }
            // The Export trait has no FUA on trim/zeroes: a flush gives the same guarantee.
            if fua {
                export.flush()?;
            }
        }
        Op::Zeroes { offset, len, may_trim, fua } => {
            if len > 0 {
                export.write_zeroes(offset, len, may_trim)?;
            }
            if fua {
                export.flush()?;
            }
        }
        Op::Cache { offset, len } => {
            if len > 0 {
                export.cache(offset, len)?;
            }
        }
        Op::BlockStatus { offset, len, req_one } => {
            let mut chunks = Vec::with_capacity(contexts.len());
            for c in contexts {
                let extents = match &c.kind {
                    ContextKind::Allocation => export.allocation(offset, u64::from(len))?,
                    ContextKind::DirtyBitmap(leaf) => export.dirty_extents(leaf, offset, u64::from(len))?,
                };
                let descriptors = descriptors(&extents, len, req_one);
                if descriptors.is_empty() {
                    return Err(io::Error::other(format!("{}: no extent for offset {offset}", c.name)));
                }
                chunks.push((c.id, descriptors));
            }
            return Ok(Outcome::Status(chunks));
        }
    }
    Ok(Outcome::Done)
}

/// Turns an export's extents into wire descriptors: clipped to the request's `len` (so the
/// sum never exceeds it), empty extents dropped, neighbours with equal flags merged, at most
/// one with `req_one` and at most [`proto::MAX_DESCRIPTORS`] otherwise.
pub(crate) fn descriptors(extents: &[Extent], len: u32, req_one: bool) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut left = u64::from(len);
    for e in extents {
        if left == 0 {
            break;
        }
        // min(left) keeps it within u32.
        let n = e.len.min(left) as u32;
        if n == 0 {
            continue;
        }
        left -= u64::from(n);
        match out.last_mut() {
            Some(last) if last.1 == e.flags => last.0 += n,
            _ => out.push((n, e.flags)),
        }
    }
    out.truncate(if req_one { 1 } else { proto::MAX_DESCRIPTORS });
    out
}

/// Appends the wire form of one reply to `w`.
fn encode_reply(w: &mut impl Write, r: &Reply, structured: bool) -> io::Result<()> {
    match (&r.outcome, structured) {
        (Outcome::Done, _) => w.write_all(&proto::encode_simple_reply(0, r.cookie)),
        (Outcome::Data { data, .. }, false) => {
            w.write_all(&proto::encode_simple_reply(0, r.cookie))?;
            w.write_all(data)
        }
        (Outcome::Error { errno, .. }, false) => w.write_all(&proto::encode_simple_reply(*errno, r.cookie)),
        (Outcome::Data { data, .. }, true) if data.is_empty() => w.write_all(&proto::encode_chunk_none(r.cookie)),
        (Outcome::Data { offset, data }, true) => {
            // All the data is in hand, so the content chunk can be the final one.
            let len = u32::try_from(data.len()).map_err(|_| io::Error::other("read reply too long"))?;
            let hdr = proto::encode_chunk_offset_data(proto::REPLY_FLAG_DONE, r.cookie, *offset, len)
                .ok_or_else(|| io::Error::other("read reply too long"))?;
            w.write_all(&hdr)?;
            w.write_all(data)
        }
        (Outcome::Error { errno, message }, true) => w.write_all(&proto::encode_chunk_error(r.cookie, *errno, message)),
        (Outcome::Status(chunks), _) => {
            // Only reachable with structured replies: contexts need them (handshake).
            let mut b = Vec::with_capacity(64);
            for (id, d) in chunks {
                proto::encode_chunk_block_status(&mut b, 0, r.cookie, *id, d)
                    .ok_or_else(|| io::Error::other("empty block status"))?;
            }
            b.extend_from_slice(&proto::encode_chunk_none(r.cookie));
            w.write_all(&b)
        }
    }
}

/// The reply writer: batches small replies, flushes when the queue runs dry. On a socket error
/// it shuts the socket (so the reader stops) and keeps draining, so workers never block.
fn write_replies(conn: Conn, replies: Receiver<Reply>, budget: &Budget, structured: bool) {
    let mut w = BufWriter::with_capacity(256 << 10, conn);
    let mut failed = false;
    for r in replies.iter() {
        if !failed {
            let mut res = encode_reply(&mut w, &r, structured);
            if res.is_ok() && replies.is_empty() {
                res = w.flush();
            }
            if let Err(e) = res {
                tracing::debug!("nbd: reply write failed: {e}");
                failed = true;
                w.get_ref().shutdown();
            }
        }
        budget.release(r.held);
    }
    if !failed {
        let _ = w.flush();
    }
}
