//! The one I/O seam: [`IoEngine`], with an io_uring backend, a pread/pwrite backend and a
//! fault-injecting wrapper for tests. A runtime probe picks the backend
//! (`FLASHTRACK_IO=uring|sync` overrides).
//!
//! Calls block the calling thread until the I/O completes, so buffers stay borrowed for the
//! whole operation; many threads may call at once (the uring backend multiplexes them on a
//! shared ring).

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

pub mod buffer;
#[cfg(test)]
pub(crate) mod conformance;
pub mod fault;
pub mod probe;
pub mod stream;
pub mod sync;
pub mod uring;

pub use buffer::AlignedBuf;
pub use fault::{FaultEngine, FaultOp, FaultRule};
pub use probe::select;
pub use sync::SyncEngine;
pub use uring::UringEngine;

/// Which mechanism an engine uses (for logs and `flashd` status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Uring,
    Sync,
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoKind::Uring => "uring",
            IoKind::Sync => "sync",
        })
    }
}

/// Block I/O on file descriptors. Offsets are absolute in the file or device.
pub trait IoEngine: Send + Sync + fmt::Debug {
    fn kind(&self) -> IoKind;
    /// Fill `buf` from `offset`; bytes past end of file read as zero.
    fn read_at(&self, fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_at(&self, fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make written data durable (fdatasync).
    fn sync_data(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Deallocate `[offset, offset+len)`; reads return zero afterwards.
    fn punch_hole(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()>;
    /// Zero `[offset, offset+len)` keeping it allocated.
    fn zero_range(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()>;

    /// Whether copies between descriptors of this engine may bypass it on a
    /// [`stream::CopyStream`] (its own io_uring). False for engines that must see every I/O
    /// (the pread/pwrite backend by choice, the fault injector of the tests).
    fn streams_copies(&self) -> bool {
        false
    }

    /// Run several operations and return one result per op (bytes transferred), in order.
    /// Ops may run concurrently and in any order, except the read and write inside one
    /// [`Op::Copy`], which are ordered. This default runs them one by one; the uring backend
    /// submits them together.
    fn submit_batch(&self, ops: &mut [Op<'_>]) -> Vec<io::Result<usize>> {
        ops.iter_mut().map(|op| run_op(self, op)).collect()
    }
}

/// One operation of [`IoEngine::submit_batch`]. Buffers stay borrowed until the batch returns.
#[derive(Debug)]
pub enum Op<'a> {
    /// Fill `buf` from `offset` (zero past end of file), like [`IoEngine::read_at`].
    Read { fd: BorrowedFd<'a>, offset: u64, buf: &'a mut [u8] },
    /// Write all of `buf` at `offset`.
    Write { fd: BorrowedFd<'a>, offset: u64, buf: &'a [u8] },
    /// Copy `buf.len()` bytes from `src` at `src_offset` to `dst` at `dst_offset` through
    /// `buf` (a linked read -> write pair on io_uring). The read part zero-fills past EOF.
    Copy { src: BorrowedFd<'a>, src_offset: u64, dst: BorrowedFd<'a>, dst_offset: u64, buf: &'a mut [u8] },
}

/// Run one [`Op`] with the blocking calls of `engine` (the default batch path and the
/// fallback of the uring batch when a linked pair breaks).
pub(crate) fn run_op<E: IoEngine + ?Sized>(engine: &E, op: &mut Op<'_>) -> io::Result<usize> {
    match op {
        Op::Read { fd, offset, buf } => engine.read_at(*fd, buf, *offset).map(|()| buf.len()),
        Op::Write { fd, offset, buf } => engine.write_at(*fd, buf, *offset).map(|()| buf.len()),
        Op::Copy { src, src_offset, dst, dst_offset, buf } => {
            engine.read_at(*src, buf, *src_offset)?;
            engine.write_at(*dst, buf, *dst_offset).map(|()| buf.len())
        }
    }
}

/// Zero `[offset, offset+len)` by writing zeros: the fallback when the file system or
/// device answers EOPNOTSUPP to punch-hole or zero-range. The zero buffer is 4 KiB-aligned
/// and written in 1 MiB pieces, so O_DIRECT descriptors work when `offset` and `len` are
/// block-aligned.
pub(crate) fn write_zeroes<E: IoEngine + ?Sized>(
    engine: &E,
    fd: BorrowedFd<'_>,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let zeroes = buffer::zeroes();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeroes.len() as u64) as usize;
        engine.write_at(fd, &zeroes[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Whether an fallocate error means "this file system or device cannot do that" (so the
/// caller falls back to writing zeros).
pub(crate) fn is_unsupported(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Largest single read or write handed to the kernel (Linux caps one call at
/// MAX_RW_COUNT, just under 2 GiB; 1 GiB keeps the arithmetic round).
pub(crate) const MAX_IO: usize = 1 << 30;
