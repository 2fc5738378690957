//! A copy stream: one copier thread's own io_uring, kept full of linked read -> write pairs.
//!
//! The shared [`super::UringEngine`] ring blocks each caller until its request completes, so
//! a batch drains before the next one starts. The copier instead wants a queue that is
//! refilled as completions arrive: [`CopyStream`] is owned by one thread (no locks on the
//! submission path), holds `depth` pre-faulted, 4 KiB-aligned buffers of [`SLOT_BYTES`]
//! registered with the kernel as fixed buffers (READ_FIXED / WRITE_FIXED skip the per-I/O
//! page pinning), and returns completions by tag. One stream per copier thread is the
//! "one ring per core" of the design; the aligned buffers make the same path serve O_DIRECT
//! descriptors.
//!
//! A pair whose read comes back short (end of file) or fails breaks its link (the write is
//! cancelled); the stream then redoes that job with blocking pread/pwrite, zero-filling past
//! end of file, retrying EINTR/EAGAIN, so the caller sees one result per job.
//!
//! If registering the buffers fails (RLIMIT_MEMLOCK for a non-root user on older kernels),
//! the stream uses plain READ/WRITE on the same buffers and says so once in the log.

use super::buffer::{AlignedBuf, DIRECT_ALIGN};
use io_uring::{IoUring, opcode, squeue, types};
use std::any::Any;
use std::io;
use std::os::fd::RawFd;

/// Bytes per buffer: one copier run (16 tracks of 64 KiB).
pub const SLOT_BYTES: usize = 1 << 20;

thread_local! {
    /// Jobs queued on this thread's streams, for [`AbortOnUnwind`].
    static IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Held by a caller that releases locks protecting jobs in flight: if the thread unwinds
/// while jobs are still queued, the process aborts before those locks are released (a copy
/// landing after them could overwrite a host write). Declare it after the lock guards, so
/// it drops first.
#[derive(Debug)]
pub struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() && CopyStream::thread_in_flight() > 0 {
            tracing::error!("copier panicked with copies in flight; aborting (the journal recovers)");
            std::process::abort();
        }
    }
}

/// Jobs pushed before the SQ is handed to the kernel.
const SUBMIT_GROUP: usize = 4;

/// One copy job: `len` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
pub struct CopyJob {
    /// Returned with the completion.
    pub tag: u64,
    pub src: RawFd,
    pub src_offset: u64,
    pub dst: RawFd,
    pub dst_offset: u64,
    /// At most [`SLOT_BYTES`].
    pub len: usize,
    /// Kept alive until the job completes: whatever owns `src` and `dst` (the volumes), so
    /// the descriptors cannot be closed while the kernel uses them.
    pub keep: Box<dyn Any + Send>,
}

impl std::fmt::Debug for CopyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CopyJob {{ tag {}, {}@{} -> {}@{}, {} B }}",
            self.tag, self.src, self.src_offset, self.dst, self.dst_offset, self.len
        )
    }
}

struct Pending {
    job: CopyJob,
    /// CQEs still expected (2 for a linked pair).
    left: u8,
    /// The read's result, when it arrived.
    read: Option<i32>,
    write: Option<i32>,
}

/// A per-thread io_uring copy queue. See the module docs.
pub struct CopyStream {
    ring: IoUring,
    bufs: Vec<AlignedBuf>,
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    fixed: bool,
    /// Jobs pushed to the SQ but not yet handed to the kernel.
    queued: usize,
}

impl std::fmt::Debug for CopyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CopyStream {{ depth {}, in flight {}, fixed {} }}", self.depth(), self.in_flight(), self.fixed)
    }
}

fn transient(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}

impl CopyStream {
    /// A stream with `depth` jobs in flight at most. Fails when io_uring is unavailable.
    pub fn new(depth: usize) -> io::Result<CopyStream> {
        let depth = depth.clamp(1, 1024);
        let entries = (2 * depth as u32).next_power_of_two();
        let ring = IoUring::builder().setup_cqsize(entries * 2).build(entries)?;
        let mut bufs: Vec<AlignedBuf> = (0..depth).map(|_| AlignedBuf::new(SLOT_BYTES, DIRECT_ALIGN)).collect();
        // Pre-fault: first touch of fresh pages runs at a tenth of memcpy speed (machine.md).
        for b in &mut bufs {
            for page in b.chunks_mut(4096) {
                page[0] = 0;
            }
        }
        let iovecs: Vec<libc::iovec> =
            bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        // SAFETY: every iovec points into a buffer owned by the stream, never moved or freed
        // while the ring exists (the Vec's heap blocks stay put; `bufs` is dropped after the
        // ring, see Drop, which also waits for in-flight jobs).
        let fixed = match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => true,
            Err(e) => {
                tracing::info!("copier: fixed buffers unavailable ({e}); using plain reads and writes");
                false
            }
        };
        Ok(CopyStream {
            ring,
            bufs,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            fixed,
            queued: 0,
        })
    }

    /// Jobs that can be in flight at once.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Jobs submitted and not yet returned by [`CopyStream::reap`].
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether another job can be submitted now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Whether the kernel accepted the buffers as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        self.fixed
    }

    /// Queue `job` (the stream must have room and `job.len <= SLOT_BYTES`).
    ///
    /// # Safety
    /// `job.src` and `job.dst` must stay open (not closed or reused) until the job's
    /// completion is returned by [`CopyStream::reap`]; `job.keep` is meant to guarantee it.
    pub unsafe fn submit(&mut self, job: CopyJob) -> io::Result<()> {
        assert!(job.len <= SLOT_BYTES, "copy job larger than a stream buffer");
        let Some(slot) = self.free.pop() else {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "copy stream full"));
        };
        let buf = self.bufs[slot].as_mut_ptr();
        let len = job.len as u32;
        let (rd, wr) = if self.fixed {
            (
                opcode::ReadFixed::new(types::Fd(job.src), buf, len, slot as u16).offset(job.src_offset).build(),
                opcode::WriteFixed::new(types::Fd(job.dst), buf, len, slot as u16).offset(job.dst_offset).build(),
            )
        } else {
            (
                opcode::Read::new(types::Fd(job.src), buf, len).offset(job.src_offset).build(),
                opcode::Write::new(types::Fd(job.dst), buf, len).offset(job.dst_offset).build(),
            )
        };
        let entries =
            [rd.flags(squeue::Flags::IO_LINK).user_data((slot as u64) << 1), wr.user_data(((slot as u64) << 1) | 1)];
        loop {
            // SAFETY: the buffer belongs to this stream and stays allocated until the slot's
            // completions are reaped (Drop drains); the caller keeps the descriptors open.
            // push_multiple publishes the linked pair together.
            let pushed = unsafe { self.ring.submission().push_multiple(&entries) };
            if pushed.is_ok() {
                break;
            }
            // SQ full (cannot happen with 2 entries per slot, but be safe): let the kernel
            // consume it. Nothing of this job is queued yet, so an error can still return.
            if let Err(e) = self.enter(0) {
                self.free.push(slot);
                return Err(e);
            }
        }
        // Queued: from here on the job is the kernel's, and the only way out is its
        // completion (a caller that saw an error here would release its locks while the copy
        // could still run). A failed submission is retried by `reap`, which aborts if the
        // ring is broken.
        self.slots[slot] = Some(Pending { job, left: 2, read: None, write: None });
        IN_FLIGHT.with(|n| n.set(n.get() + 1));
        // Entries go to the kernel in groups (one system call for several pairs), and at
        // the latest when the caller reaps.
        self.queued += 1;
        if self.queued >= SUBMIT_GROUP && self.enter(0).is_err() {
            tracing::warn!("copy stream: submission failed; retrying at the next reap");
        }
        Ok(())
    }

    /// Jobs queued on this thread's streams and not yet reaped (see [`AbortOnUnwind`]).
    pub fn thread_in_flight() -> usize {
        IN_FLIGHT.with(std::cell::Cell::get)
    }

    /// Submit what is queued and wait for at least `want` completions.
    fn enter(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {
                    if want == 0 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait until at least `min` jobs (at most the number in flight) have finished, and
    /// append `(tag, result)` for every finished job to `out`.
    pub fn reap(&mut self, min: usize, out: &mut Vec<(u64, io::Result<()>)>) {
        let min = min.min(self.in_flight());
        let mut got = 0;
        if self.queued > 0 {
            // On failure, the enter below submits them as well (or aborts).
            let _ = self.enter(0);
        }
        loop {
            let mut done = Vec::new();
            for cqe in self.ring.completion() {
                let slot = (cqe.user_data() >> 1) as usize;
                let Some(p) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                    tracing::error!("copy stream: completion for an idle slot {slot}");
                    continue;
                };
                if cqe.user_data() & 1 == 0 {
                    p.read = Some(cqe.result());
                } else {
                    p.write = Some(cqe.result());
                }
                p.left -= 1;
                if p.left == 0 {
                    done.push(slot);
                }
            }
            for slot in done {
                let p = self.slots[slot].take().expect("finished slot is busy");
                let len = p.job.len as i32;
                let res = if p.read == Some(len) && p.write == Some(len) {
                    Ok(())
                } else {
                    // A short or failed read broke the link, or the write was short or
                    // failed: redo the job with blocking calls, which also tells a real
                    // error from end of file and retries transient errors.
                    self.redo(slot, &p.job)
                };
                self.free.push(slot);
                IN_FLIGHT.with(|n| n.set(n.get() - 1));
                out.push((p.job.tag, res));
                got += 1;
            }
            if got >= min {
                return;
            }
            if let Err(e) = self.enter(1) {
                // The kernel may still use our buffers and the callers' descriptors; giving up
                // here could let a stale copy land on a track a host has since written.
                // Crashing is safe (the journal recovers); continuing is not.
                tracing::error!("copy stream: io_uring_enter failed: {e}; aborting");
                std::process::abort();
            }
        }
    }

    fn redo(&mut self, slot: usize, job: &CopyJob) -> io::Result<()> {
        let buf = &mut self.bufs[slot][..job.len];
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: `buf[done..]` is valid writable memory of the given length.
            let n = unsafe {
                libc::pread(
                    job.src,
                    buf[done..].as_mut_ptr().cast(),
                    buf.len() - done,
                    (job.src_offset + done as u64) as libc::off_t,
                )
            };
            match n {
                0 => {
                    buf[done..].fill(0);
                    break;
                }
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if !transient(e.raw_os_error().unwrap_or(0)) {
                        return Err(e);
                    }
                }
            }
        }
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: `buf[done..]` is valid readable memory of the given length.
            let n = unsafe {
                libc::pwrite(
                    job.dst,
                    buf[done..].as_ptr().cast(),
                    buf.len() - done,
                    (job.dst_offset + done as u64) as libc::off_t,
                )
            };
            if n > 0 {
                done += n as usize;
            } else if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "copy: write returned 0"));
            } else {
                let e = io::Error::last_os_error();
                if !transient(e.raw_os_error().unwrap_or(0)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl Drop for CopyStream {
    fn drop(&mut self) {
        // The kernel must be done with every buffer before they are freed.
        let mut sink = Vec::new();
        while self.in_flight() > 0 {
            self.reap(1, &mut sink);
            sink.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn file(len: usize, seed: u8) -> std::fs::File {
        let f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, 0).unwrap();
        f
    }

    #[test]
    fn copies_keep_the_queue_full_and_return_every_tag() {
        let src = file(8 << 20, 7);
        let dst = file(8 << 20, 0);
        let mut s = CopyStream::new(4).unwrap();
        let mut out = Vec::new();
        for i in 0..16u64 {
            if !s.has_room() {
                s.reap(1, &mut out);
            }
            let off = i * (512 << 10);
            let job = CopyJob {
                tag: i,
                src: src.as_raw_fd(),
                src_offset: off,
                dst: dst.as_raw_fd(),
                dst_offset: off,
                len: 512 << 10,
                keep: Box::new(()),
            };
            // SAFETY: both files outlive the stream's use (reaped below before they drop).
            unsafe { s.submit(job).unwrap() };
        }
        s.reap(usize::MAX, &mut out);
        let mut tags: Vec<u64> = out.iter().map(|(t, r)| (*t, r.as_ref().unwrap()).0).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..16).collect::<Vec<_>>());
        let (mut a, mut b) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
        std::os::unix::fs::FileExt::read_exact_at(&src, &mut a, 0).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&dst, &mut b, 0).unwrap();
        assert!(a == b, "destination differs from source");
    }

    #[test]
    fn a_read_past_end_of_file_zero_fills() {
        let src = file(100_000, 3);
        let dst = file(200_000, 9);
        let mut s = CopyStream::new(2).unwrap();
        let job = CopyJob {
            tag: 1,
            src: src.as_raw_fd(),
            src_offset: 65536,
            dst: dst.as_raw_fd(),
            dst_offset: 65536,
            len: 65536,
            keep: Box::new(()),
        };
        // SAFETY: both files outlive the job (reaped below).
        unsafe { s.submit(job).unwrap() };
        let mut out = Vec::new();
        s.reap(1, &mut out);
        assert!(out[0].1.is_ok());
        let mut b = vec![0u8; 65536];
        std::os::unix::fs::FileExt::read_exact_at(&dst, &mut b, 65536).unwrap();
        let mut a = vec![0u8; 100_000 - 65536];
        std::os::unix::fs::FileExt::read_exact_at(&src, &mut a, 65536).unwrap();
        assert_eq!(&b[..a.len()], &a[..]);
        assert!(b[a.len()..].iter().all(|&x| x == 0), "past end of file must read as zero");
    }

    #[test]
    fn errors_come_back_with_their_tag() {
        let src = file(65536, 1);
        let mut s = CopyStream::new(2).unwrap();
        let job = CopyJob {
            tag: 42,
            src: src.as_raw_fd(),
            src_offset: 0,
            dst: -1,
            dst_offset: 0,
            len: 65536,
            keep: Box::new(()),
        };
        // SAFETY: the source outlives the job; -1 is an invalid descriptor the kernel rejects.
        unsafe { s.submit(job).unwrap() };
        let mut out = Vec::new();
        s.reap(1, &mut out);
        assert_eq!(out[0].0, 42);
        assert_eq!(out[0].1.as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}
