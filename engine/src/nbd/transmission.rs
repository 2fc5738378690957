//! Transmission phase: the per-connection pipeline of DESIGN.md "Requests".
//!
//! ```text
//! socket -> reader (decode, validate, read WRITE payload) -> bounded queue -> N workers
//!        -> reply queue -> one writer -> socket
//! ```
//! Replies go out in completion order (the protocol allows it), so a client keeping 32 requests
//! in flight gets 32 executing, not one. Only simple replies are used (structured replies are not
//! negotiated).
//!
//! Error choices (the spec leaves them open; one place, here):
//! * range past the end of the export: `EINVAL` for every command, writes included (the spec
//!   suggests `ENOSPC` for writes; `EINVAL` says "your request is wrong", which it is);
//! * unknown command, unknown or inapplicable flag (`DF`, `FAST_ZERO`, which we do not
//!   advertise): `EINVAL`;
//! * WRITE/TRIM/WRITE_ZEROES on a read-only export: `EPERM`;
//! * READ or WRITE longer than [`proto::MAX_PAYLOAD`]: `EINVAL`; a WRITE's payload is still read
//!   and discarded so the stream stays in frame and the connection stays usable;
//! * an error from the export: its errno via [`proto::errno_from_io`] (unknown -> `EIO`); a panic
//!   in the export: `EIO` for that request only;
//! * bad request magic or a short read of a header or payload: disconnect (out of frame).

use super::proto::{self, RequestHeader};
use super::{Conn, Export};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Payload bytes (READ buffers and WRITE data) one connection may hold at once. Without a cap a
/// client could park queue_depth x 32 MiB of writes in server memory.
pub const PAYLOAD_BUDGET: u64 = 128 << 20;

/// Command flags accepted per command; anything else is `EINVAL`.
fn allowed_flags(command: u16) -> u16 {
    match command {
        proto::CMD_WRITE_ZEROES => proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE,
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
}

#[derive(Debug)]
struct Job {
    cookie: u64,
    op: Op,
    /// Budget bytes held by this job (released by the writer once the reply is sent).
    held: u64,
}

#[derive(Debug)]
struct Reply {
    cookie: u64,
    error: u32,
    data: Vec<u8>,
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

/// Serves requests on `conn` against `export` until the client disconnects (`NBD_CMD_DISC` or
/// EOF), the stream goes out of frame, or the socket is shut down. In-flight requests always
/// finish before this returns.
pub(crate) fn serve(conn: Conn, export: Arc<dyn Export>, workers: usize, queue_depth: usize) -> io::Result<()> {
    let write_half = conn.try_clone()?;
    let (job_tx, job_rx) = bounded::<Job>(queue_depth.max(1));
    let (reply_tx, reply_rx) = bounded::<Reply>(queue_depth.max(1));
    let budget = Budget { used: Mutex::new(0), cv: Condvar::new() };
    let export = export.as_ref();

    thread::scope(|sc| {
        let budget = &budget;
        let writer = thread::Builder::new()
            .name("nbd-reply".into())
            .spawn_scoped(sc, move || write_replies(write_half, reply_rx, budget))?;
        for i in 0..workers.max(1) {
            let (rx, tx) = (job_rx.clone(), reply_tx.clone());
            let spawned = thread::Builder::new().name(format!("nbd-worker-{i}")).spawn_scoped(sc, move || {
                for job in rx.iter() {
                    if tx.send(execute(export, job)).is_err() {
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
        let result = read_requests(&conn, export, &job_tx, &reply_tx, budget);
        // Closing the queue lets workers drain it and exit; then the writer drains and exits.
        drop((job_tx, reply_tx));
        let _ = writer.join();
        result
    })
}

/// The reader: decode, validate, route. Returns when the client is done or out of frame.
fn read_requests(
    conn: &Conn,
    export: &dyn Export,
    jobs: &Sender<Job>,
    replies: &Sender<Reply>,
    budget: &Budget,
) -> io::Result<()> {
    let mut rd = BufReader::with_capacity(64 << 10, conn.try_clone()?);
    let size = export.size();
    let read_only = export.read_only();
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
        let op = match validate(&h, size, read_only) {
            Ok(op) => op,
            Err(error) => {
                discard(&mut rd, payload)?;
                send_reply(replies, Reply { cookie: h.cookie, error, data: Vec::new(), held: 0 })?;
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

/// Checks a well-framed request; `Err` is the NBD error value to reply with. WRITE data is
/// filled in by the caller.
fn validate(h: &RequestHeader, size: u64, read_only: bool) -> Result<Op, u32> {
    let known = matches!(
        h.command,
        proto::CMD_READ | proto::CMD_WRITE | proto::CMD_FLUSH | proto::CMD_TRIM | proto::CMD_WRITE_ZEROES
    );
    if !known || h.flags & !allowed_flags(h.command) != 0 {
        return Err(proto::EINVAL);
    }
    let fua = h.flags & proto::CMD_FLAG_FUA != 0;
    if h.command == proto::CMD_FLUSH {
        // Offset and length are reserved for FLUSH; tolerate non-zero values.
        return Ok(Op::Flush);
    }
    if read_only && h.command != proto::CMD_READ {
        return Err(proto::EPERM);
    }
    let len = u64::from(h.length);
    if h.offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(proto::EINVAL);
    }
    let payload_cmd = matches!(h.command, proto::CMD_READ | proto::CMD_WRITE);
    if payload_cmd && h.length > proto::MAX_PAYLOAD {
        return Err(proto::EINVAL);
    }
    Ok(match h.command {
        proto::CMD_READ => Op::Read { offset: h.offset, len: h.length },
        proto::CMD_WRITE => Op::Write { offset: h.offset, data: Vec::new(), fua },
        proto::CMD_TRIM => Op::Trim { offset: h.offset, len, fua },
        _ => {
            let may_trim = h.flags & proto::CMD_FLAG_NO_HOLE == 0;
            Op::Zeroes { offset: h.offset, len, may_trim, fua }
        }
    })
}

/// Runs one job against the export.
fn execute(export: &dyn Export, job: Job) -> Reply {
    let Job { cookie, op, held } = job;
    // A panicking export fails this request, not the connection.
    let outcome = catch_unwind(AssertUnwindSafe(|| run_op(export, op)));
    match outcome {
        Ok(Ok(data)) => Reply { cookie, error: 0, data, held },
        Ok(Err(e)) => {
            tracing::debug!("nbd: request {cookie:#x} failed: {e}");
            Reply { cookie, error: proto::errno_from_io(&e), data: Vec::new(), held }
        }
        Err(_) => {
            tracing::error!("nbd: export panicked serving request {cookie:#x}");
            Reply { cookie, error: proto::EIO, data: Vec::new(), held }
        }
    }
}

fn run_op(export: &dyn Export, op: Op) -> io::Result<Vec<u8>> {
    match op {
        Op::Read { offset, len } => {
            let mut buf = vec![0u8; len as usize];
            if len > 0 {
                export.read(offset, &mut buf)?;
            }
            Ok(buf)
        }
        Op::Write { offset, data, fua } => {
            if !data.is_empty() {
                export.write(offset, &data, fua)?;
            } else if fua {
                export.flush()?;
            }
            Ok(Vec::new())
        }
        Op::Flush => export.flush().map(|()| Vec::new()),
        Op::Trim { offset, len, fua } => {
            if len > 0 {
                export.trim(offset, len)?;
            }
            // The Export trait has no FUA on trim/zeroes: a flush gives the same guarantee.
            if fua {
                export.flush()?;
            }
            Ok(Vec::new())
        }
        Op::Zeroes { offset, len, may_trim, fua } => {
            if len > 0 {
                export.write_zeroes(offset, len, may_trim)?;
            }
            if fua {
                export.flush()?;
            }
            Ok(Vec::new())
        }
    }
}

/// The reply writer: batches small replies, flushes when the queue runs dry. On a socket error
/// it shuts the socket (so the reader stops) and keeps draining, so workers never block.
fn write_replies(conn: Conn, replies: Receiver<Reply>, budget: &Budget) {
    let mut w = BufWriter::with_capacity(256 << 10, conn);
    let mut failed = false;
    for r in replies.iter() {
        if !failed {
            let mut res = w.write_all(&proto::encode_simple_reply(r.error, r.cookie));
            if res.is_ok() && r.error == 0 && !r.data.is_empty() {
                res = w.write_all(&r.data);
            }
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
