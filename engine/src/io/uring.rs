//! io_uring backend: one ring shared by every calling thread.
//!
//! * Callers take a slot from a fixed table (as many slots as SQ entries), push their SQE
//!   with `user_data` = slot index under a short submission mutex, submit, and sleep on the
//!   slot's condvar. Many threads therefore have requests in flight at once: NBD queue depth
//!   32 stays 32 instead of being serialized on one lock.
//! * One reaper thread waits in `io_uring_enter(GETEVENTS)`, drains the CQ and wakes the
//!   owner of each slot. In-flight requests never exceed the SQ size and the CQ is twice
//!   that, so the CQ cannot overflow.
//! * No IOPOLL (EOPNOTSUPP on this VM's virtio disk) and no SQPOLL (it costs a core on a
//!   2-core machine, and the IO_LINK publishing gotcha in machine.md §1 goes away too;
//!   linked pairs are still published with one `push_multiple`).
//! * Reads and writes first try `RWF_NOWAIT` on the calling thread: page-cache hits (the
//!   common case for buffered volumes) then cost one system call instead of a ring round trip
//!   through the reaper thread and back (two context switches). What would block goes to
//!   the ring, except buffered writes on a file system without non-blocking buffered writes
//!   (ext4): io_uring would only punt those to a kernel worker that blocks the same way, so
//!   they are written with `pwrite` on the calling thread.
//! * Drop pushes a NOP with [`SHUTDOWN`]; the reaper exits when it sees it. No request can
//!   be pending then: every call blocks until its own completion, and Drop has `&mut self`.

use super::{IoEngine, IoKind, MAX_IO, Op, is_unsupported, run_op, write_zeroes};
use io_uring::{IoUring, Probe, opcode, squeue, types};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// SQ entries (and in-flight slots) of the default ring: room for several NBD connections
/// at queue depth 32 plus a copier.
pub const DEFAULT_ENTRIES: u32 = 512;

/// `user_data` of the NOP that tells the reaper to exit.
const SHUTDOWN: u64 = u64::MAX;

/// Opcodes the engine uses; the probe refuses a kernel lacking any of them.
const REQUIRED_OPS: [(u8, &str); 5] = [
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Fallocate::CODE, "FALLOCATE"),
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain values),
    // so poisoning is ignored rather than spreading the panic to every I/O caller.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn transient(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}

/// Where the reaper leaves one request's result for the thread waiting on it.
#[derive(Debug, Default)]
struct Slot {
    result: Mutex<Option<i32>>,
    done: Condvar,
}

struct Shared {
    ring: IoUring,
    /// Serializes use of the submission queue (the crate's `submission_shared` contract).
    sq: Mutex<()>,
    /// Indexes of unused slots.
    free: Mutex<Vec<u32>>,
    freed: Condvar,
    slots: Box<[Slot]>,
}

impl Shared {
    /// Take `n` free slots at once (all or nothing, so batches cannot deadlock each other).
    fn acquire(&self, n: usize, out: &mut Vec<u32>) {
        debug_assert!(n <= self.slots.len());
        let mut free = lock(&self.free);
        while free.len() < n {
            free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner);
        }
        let at = free.len() - n;
        out.extend(free.drain(at..));
        drop(free);
        for &i in out.iter() {
            *lock(&self.slots[i as usize].result) = None;
        }
    }

    fn release(&self, slots: &[u32]) {
        lock(&self.free).extend_from_slice(slots);
        self.freed.notify_all();
    }

    /// Publish `entries` (already tagged with slot indexes) in one go and submit them.
    ///
    /// # Safety
    /// Every buffer and descriptor the entries point to must stay valid until their
    /// completions have been collected with [`Shared::wait`].
    unsafe fn push(&self, entries: &[squeue::Entry]) {
        {
            let _sq = lock(&self.sq);
            // SAFETY: the `sq` mutex is held, so no other SubmissionQueue exists.
            let mut sq = unsafe { self.ring.submission_shared() };
            loop {
                // SAFETY: the caller keeps the entries' buffers alive until completion.
                // push_multiple publishes a linked pair together (machine.md §1).
                match unsafe { sq.push_multiple(entries) } {
                    Ok(()) => break,
                    Err(_) => {
                        // Full: hand what is queued to the kernel (it consumes the SQ during
                        // the call) and try again.
                        sq.sync();
                        if let Err(e) = self.ring.submit() {
                            tracing::debug!("io_uring submit while SQ full: {e}");
                            std::thread::yield_now();
                        }
                        sq.sync();
                    }
                }
            }
            // Dropping `sq` stores the new tail for the kernel.
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {
                    std::thread::yield_now();
                }
                Err(e) => {
                    // The entries are published; the reaper's next enter submits them, so the
                    // caller still waits for their completions (returning now would free
                    // buffers the kernel may use).
                    tracing::error!("io_uring submit failed: {e}");
                    return;
                }
            }
        }
    }

    /// Block until the request in `slot` completes; returns its raw CQE result.
    fn wait(&self, slot: u32) -> i32 {
        let s = &self.slots[slot as usize];
        let mut result = lock(&s.result);
        loop {
            if let Some(r) = *result {
                return r;
            }
            result = s.done.wait(result).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn complete(&self, user_data: u64, res: i32) {
        let Some(s) = usize::try_from(user_data).ok().and_then(|i| self.slots.get(i)) else {
            tracing::error!("io_uring completion with unknown user_data {user_data}");
            return;
        };
        *lock(&s.result) = Some(res);
        s.done.notify_one();
    }
}

/// The reaper: wait for completions, hand each to its slot, exit on [`SHUTDOWN`].
fn reap(shared: Arc<Shared>) {
    loop {
        if let Err(e) = shared.ring.submitter().submit_and_wait(1) {
            match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => {}
                _ => {
                    tracing::error!("io_uring wait failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        let mut stop = false;
        // SAFETY: this thread is the only one that ever creates a CompletionQueue.
        let mut cq = unsafe { shared.ring.completion_shared() };
        if cq.overflow() > 0 {
            tracing::error!("io_uring CQ overflowed {} times", cq.overflow());
        }
        for cqe in &mut cq {
            if cqe.user_data() == SHUTDOWN {
                stop = true;
            } else {
                shared.complete(cqe.user_data(), cqe.result());
            }
        }
        if stop {
            return;
        }
    }
}

/// The part of a read that completes without blocking (`preadv2(RWF_NOWAIT)`: pages already
/// in the page cache), done on the calling thread: no ring round trip, no hand-off to the
/// reaper and back. Returns the bytes done, or None when end of file was reached (the rest
/// of `buf` is zero-filled). Anything that would block is left to the ring.
fn nowait_read(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Option<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let end = rest.len().min(MAX_IO);
        let mut iov = [std::io::IoSliceMut::new(&mut rest[..end])];
        match rustix::io::preadv2(fd, &mut iov, offset + done as u64, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => {
                buf[done..].fill(0);
                return None;
            }
            Ok(n) => done += n,
            // EAGAIN (would block), EOPNOTSUPP (no NOWAIT here), or a real error the ring
            // will report again: all go to the ring.
            Err(_) => break,
        }
    }
    Some(done)
}

/// The part of a write that completes without blocking (`pwritev2(RWF_NOWAIT)`: a buffered
/// write into allocated blocks), as [`nowait_read`]. Returns the bytes done.
///
/// A file system that cannot do buffered writes without blocking (ext4 answers EOPNOTSUPP to
/// `RWF_NOWAIT` buffered writes) would have io_uring punt every such write to an io-wq kernel
/// thread, which blocks exactly as `pwrite` does, plus two hand-offs. For a descriptor
/// without `O_DIRECT` the write is then done here with `pwrite` (the callers are worker
/// threads already); `O_DIRECT` writes still go to the ring, where they are truly async.
///
/// `refused` remembers an EOPNOTSUPP, so later writes skip the `RWF_NOWAIT` attempt that the
/// file system would refuse again (two system calls per host write otherwise).
fn nowait_write(fd: BorrowedFd<'_>, buf: &[u8], offset: u64, refused: &AtomicBool) -> usize {
    if refused.load(Ordering::Relaxed) {
        return if is_direct(fd) { 0 } else { blocking_write(fd, buf, offset) };
    }
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let iov = [std::io::IoSlice::new(&rest[..rest.len().min(MAX_IO)])];
        match rustix::io::pwritev2(fd, &iov, offset + done as u64, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::OPNOTSUPP) => {
                refused.store(true, Ordering::Relaxed);
                if !is_direct(fd) {
                    return done + blocking_write(fd, &buf[done..], offset + done as u64);
                }
                break;
            }
            Err(_) => break,
        }
    }
    done
}

/// Whether `fd` was opened `O_DIRECT`.
fn is_direct(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT))
}

/// `pwrite` until done or an error (EINTR retried); returns the bytes written. The ring
/// redoes whatever is left, so it reports a real error.
fn blocking_write(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let end = (buf.len() - done).min(MAX_IO);
        match rustix::io::pwrite(fd, &buf[done..done + end], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    done
}

/// Blocking I/O engine on a shared io_uring. See the module docs.
pub struct UringEngine {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
    /// The file system refused an `RWF_NOWAIT` buffered write (see [`nowait_write`]).
    nowait_writes_refused: AtomicBool,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine").field("entries", &self.shared.slots.len()).finish()
    }
}

impl UringEngine {
    /// A ring with `entries` SQ entries (a power of two is best), after checking that the
    /// kernel supports every opcode used. Fails when io_uring is unavailable (seccomp,
    /// `kernel.io_uring_disabled`, old kernel); the caller falls back to the sync engine.
    pub fn new(entries: u32) -> io::Result<UringEngine> {
        let entries = entries.clamp(2, 4096);
        let build = |submit_all: bool| {
            let mut b = IoUring::builder();
            b.setup_cqsize(entries * 2);
            if submit_all {
                // Keep submitting past an SQE that fails at prep time (5.18+).
                b.setup_submit_all();
            }
            b.build(entries)
        };
        let ring = build(true).or_else(|_| build(false))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if let Some((_, name)) = REQUIRED_OPS.iter().find(|(code, _)| !probe.is_supported(*code)) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {name}")));
        }
        let sq_entries = ring.params().sq_entries() as usize;
        let shared = Arc::new(Shared {
            ring,
            sq: Mutex::new(()),
            free: Mutex::new((0..sq_entries as u32).rev().collect()),
            freed: Condvar::new(),
            slots: (0..sq_entries).map(|_| Slot::default()).collect(),
        });
        let reaper = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name("flashtrack-uring".into()).spawn(move || reap(shared))?
        };
        let engine = UringEngine { shared, reaper: Some(reaper), nowait_writes_refused: AtomicBool::new(false) };
        // One round trip proves the ring really works (a seccomp filter may allow setup but
        // not enter).
        // SAFETY: a NOP references no memory.
        let res = unsafe { engine.run(opcode::Nop::new().build()) };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(engine)
    }

    /// Number of requests that can be in flight at once.
    pub fn depth(&self) -> usize {
        self.shared.slots.len()
    }

    /// Submit one entry and wait for its result (raw: negative errno on failure).
    ///
    /// # Safety
    /// Every pointer in `entry` must be valid for the access the opcode makes until this
    /// function returns (it returns only after the completion arrived).
    unsafe fn run(&self, entry: squeue::Entry) -> i32 {
        let mut slot = Vec::with_capacity(1);
        self.shared.acquire(1, &mut slot);
        let entry = entry.user_data(u64::from(slot[0]));
        // SAFETY: forwarded from the caller; we wait for the completion below.
        unsafe { self.shared.push(std::slice::from_ref(&entry)) };
        let res = self.shared.wait(slot[0]);
        self.shared.release(&slot);
        res
    }

    /// Run an entry built by `make` until it does not fail with EINTR/EAGAIN.
    ///
    /// # Safety
    /// As for [`UringEngine::run`], for every entry `make` returns.
    unsafe fn run_retry(&self, make: impl Fn() -> squeue::Entry) -> io::Result<u32> {
        loop {
            // SAFETY: forwarded from the caller.
            let res = unsafe { self.run(make()) };
            match res {
                r if r >= 0 => return Ok(r.unsigned_abs()),
                r if transient(-r) => continue,
                r => return Err(io::Error::from_raw_os_error(-r)),
            }
        }
    }

    fn fallocate(&self, fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let raw = types::Fd(fd.as_raw_fd());
        // SAFETY: FALLOCATE references no memory; `fd` is borrowed for the whole call.
        let res = unsafe { self.run_retry(|| opcode::Fallocate::new(raw, len).offset(offset).mode(mode).build()) };
        match res {
            Err(e) if is_unsupported(&e) => write_zeroes(self, fd, offset, len),
            other => other.map(drop),
        }
    }

    /// Entries for one op (1, or 2 for a linked copy), tagged with `slots`.
    fn entries_of(op: &mut Op<'_>, slots: &[u32], out: &mut Vec<squeue::Entry>) {
        let cap = |n: usize| n.min(MAX_IO) as u32;
        match op {
            Op::Read { fd, offset, buf } => out.push(
                opcode::Read::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), cap(buf.len()))
                    .offset(*offset)
                    .build()
                    .user_data(u64::from(slots[0])),
            ),
            Op::Write { fd, offset, buf } => out.push(
                opcode::Write::new(types::Fd(fd.as_raw_fd()), buf.as_ptr(), cap(buf.len()))
                    .offset(*offset)
                    .build()
                    .user_data(u64::from(slots[0])),
            ),
            Op::Copy { src, src_offset, dst, dst_offset, buf } => {
                // IO_LINK: the write starts only after the read completed in full; a short
                // or failed read cancels it (ECANCELED) and the fallback below finishes.
                out.push(
                    opcode::Read::new(types::Fd(src.as_raw_fd()), buf.as_mut_ptr(), cap(buf.len()))
                        .offset(*src_offset)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(u64::from(slots[0])),
                );
                out.push(
                    opcode::Write::new(types::Fd(dst.as_raw_fd()), buf.as_ptr(), cap(buf.len()))
                        .offset(*dst_offset)
                        .build()
                        .user_data(u64::from(slots[1])),
                );
            }
        }
    }

    /// Turn the raw results of one op into its final result, finishing short or
    /// interrupted transfers with the blocking calls.
    fn finish(&self, op: &mut Op<'_>, res: &[i32]) -> io::Result<usize> {
        let err = |r: i32| Err(io::Error::from_raw_os_error(-r));
        match op {
            Op::Read { fd, offset, buf } => match res[0] {
                r if r >= 0 => {
                    let done = r.unsigned_abs() as usize;
                    if done < buf.len() {
                        self.read_at(*fd, &mut buf[done..], *offset + done as u64)?;
                    }
                    Ok(buf.len())
                }
                r if transient(-r) => run_op(self, op),
                r => err(r),
            },
            Op::Write { fd, offset, buf } => match res[0] {
                r if r >= 0 => {
                    let done = r.unsigned_abs() as usize;
                    if done < buf.len() {
                        self.write_at(*fd, &buf[done..], *offset + done as u64)?;
                    }
                    Ok(buf.len())
                }
                r if transient(-r) => run_op(self, op),
                r => err(r),
            },
            Op::Copy { dst, dst_offset, buf, .. } => {
                let len = buf.len();
                match (res[0], res[1]) {
                    (r, _) if r < 0 && !transient(-r) => err(r),
                    // Short (EOF, or beyond MAX_IO) or interrupted read: the link broke;
                    // redo the whole copy with blocking calls (zero-fill past EOF included).
                    (r, _) if r < 0 || r.unsigned_abs() as usize != len => run_op(self, op),
                    (_, w) if w >= 0 => {
                        let done = w.unsigned_abs() as usize;
                        if done < len {
                            self.write_at(*dst, &buf[done..], *dst_offset + done as u64)?;
                        }
                        Ok(len)
                    }
                    (_, w) if transient(-w) || w == -libc::ECANCELED => {
                        self.write_at(*dst, buf, *dst_offset).map(|()| len)
                    }
                    (_, w) => err(w),
                }
            }
        }
    }

    /// Submit one chunk of ops needing `need` slots (<= depth) and collect the results.
    fn run_chunk(&self, ops: &mut [Op<'_>], need: usize, results: &mut Vec<io::Result<usize>>) {
        let mut slots = Vec::with_capacity(need);
        self.shared.acquire(need, &mut slots);
        let mut entries = Vec::with_capacity(need);
        let mut next = 0;
        for op in ops.iter_mut() {
            let n = op_entries(op);
            Self::entries_of(op, &slots[next..next + n], &mut entries);
            next += n;
        }
        // SAFETY: the ops borrow their buffers and descriptors for the lifetime of `ops`,
        // which outlives this function; we wait for every completion before returning.
        unsafe { self.shared.push(&entries) };
        let raw: Vec<i32> = slots.iter().map(|&s| self.shared.wait(s)).collect();
        self.shared.release(&slots);
        let mut next = 0;
        for op in ops.iter_mut() {
            let n = op_entries(op);
            results.push(self.finish(op, &raw[next..next + n]));
            next += n;
        }
    }
}

fn op_entries(op: &Op<'_>) -> usize {
    match op {
        Op::Copy { .. } => 2,
        Op::Read { .. } | Op::Write { .. } => 1,
    }
}

impl IoEngine for UringEngine {
    fn streams_copies(&self) -> bool {
        true
    }

    fn kind(&self) -> IoKind {
        IoKind::Uring
    }

    fn read_at(&self, fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let raw = types::Fd(fd.as_raw_fd());
        let mut done = match nowait_read(fd, buf, offset) {
            Some(n) => n,
            None => return Ok(()), // end of file reached and zero-filled
        };
        while done < buf.len() {
            let rest = &mut buf[done..];
            let (ptr, len) = (rest.as_mut_ptr(), rest.len().min(MAX_IO) as u32);
            let at = offset + done as u64;
            // SAFETY: `rest` is exclusively borrowed from `buf` for the whole call and
            // run_retry returns only after the completion.
            let n = unsafe { self.run_retry(|| opcode::Read::new(raw, ptr, len).offset(at).build())? };
            if n == 0 {
                // End of file: the rest reads as zero.
                buf[done..].fill(0);
                break;
            }
            done += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()> {
        let raw = types::Fd(fd.as_raw_fd());
        let mut done = nowait_write(fd, buf, offset, &self.nowait_writes_refused);
        while done < buf.len() {
            let rest = &buf[done..];
            let (ptr, len) = (rest.as_ptr(), rest.len().min(MAX_IO) as u32);
            let at = offset + done as u64;
            // SAFETY: `rest` is borrowed from `buf` for the whole call and run_retry
            // returns only after the completion.
            let n = unsafe { self.run_retry(|| opcode::Write::new(raw, ptr, len).offset(at).build())? };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "io_uring write wrote 0 bytes"));
            }
            done += n as usize;
        }
        Ok(())
    }

    fn sync_data(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let raw = types::Fd(fd.as_raw_fd());
        // SAFETY: FSYNC references no memory; `fd` is borrowed for the whole call.
        unsafe { self.run_retry(|| opcode::Fsync::new(raw).flags(types::FsyncFlags::DATASYNC).build()) }.map(drop)
    }

    fn punch_hole(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
    }

    fn zero_range(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(fd, libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
    }

    fn submit_batch(&self, ops: &mut [Op<'_>]) -> Vec<io::Result<usize>> {
        // Chunks use at most half the slots so single requests from other threads keep
        // flowing while a copier batch is in flight.
        let max = (self.depth() / 2).max(2);
        let mut results = Vec::with_capacity(ops.len());
        let mut start = 0;
        while start < ops.len() {
            let (mut end, mut need) = (start, 0);
            while end < ops.len() && need + op_entries(&ops[end]) <= max {
                need += op_entries(&ops[end]);
                end += 1;
            }
            self.run_chunk(&mut ops[start..end], need, &mut results);
            start = end;
        }
        results
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        let nop = opcode::Nop::new().build().user_data(SHUTDOWN);
        // SAFETY: a NOP references no memory. No slot is in use: calls borrow `self` and
        // block until their completion, and we hold `&mut self`.
        unsafe { self.shared.push(std::slice::from_ref(&nop)) };
        if let Some(reaper) = self.reaper.take()
            && reaper.join().is_err()
        {
            tracing::error!("io_uring reaper thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::conformance;

    fn engine() -> UringEngine {
        UringEngine::new(DEFAULT_ENTRIES).expect("io_uring (machine.md says it works here)")
    }

    #[test]
    fn round_trip() {
        conformance::round_trip(&engine());
    }

    #[test]
    fn eof_zero_fill() {
        conformance::eof_zero_fill(&engine());
    }

    #[test]
    fn punch_and_zero() {
        conformance::punch_and_zero(&engine());
    }

    #[test]
    fn concurrent_8_threads() {
        conformance::concurrent(Arc::new(engine()));
    }

    #[test]
    fn batch() {
        conformance::batch(&engine());
    }

    #[test]
    fn errors_are_reported() {
        conformance::errors(&engine());
    }

    #[test]
    fn unsupported_fallocate_falls_back_to_zeros() {
        conformance::fallocate_fallback(&engine());
    }

    /// A tiny ring (4 slots) with 8 threads and batches bigger than the ring: slots are
    /// shared and recycled without deadlock or lost wake-ups.
    #[test]
    fn tiny_ring_is_shared_fairly() {
        let e = Arc::new(UringEngine::new(4).expect("ring"));
        assert_eq!(e.depth(), 4);
        conformance::concurrent(Arc::clone(&e) as Arc<dyn IoEngine>);
        conformance::batch(&*e);
    }

    /// Many engines created and dropped: the reaper exits every time (a leaked thread
    /// would keep the ring fd open; count the process's threads).
    #[test]
    fn drop_joins_reaper() {
        let threads = || std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
        for _ in 0..20 {
            let e = engine();
            let f = conformance::temp_file();
            e.write_at(std::os::fd::AsFd::as_fd(&f), b"abc", 0).expect("write");
        }
        // Other tests run in parallel, so only check that we did not leak 20 threads.
        assert!(threads() < 64, "threads: {}", threads());
    }
}
