//! The portable backend: one pread/pwrite/fdatasync/fallocate system call per request, on the
//! calling thread. Used when io_uring is unavailable (seccomp, `kernel.io_uring_disabled`)
//! or forced with `FLASHTRACK_IO=sync`.

use super::{IoEngine, IoKind, MAX_IO, is_unsupported, write_zeroes};
use rustix::fs::FallocateFlags;
use rustix::io::Errno;
use std::io;
use std::os::fd::BorrowedFd;

/// Blocking engine on pread/pwrite. Stateless, so any number of threads may share it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncEngine;

impl SyncEngine {
    pub fn new() -> SyncEngine {
        SyncEngine
    }
}

/// Retry a system call interrupted by a signal (profilers, debuggers) or told to try again.
fn retry<T>(mut call: impl FnMut() -> Result<T, Errno>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// fallocate with `flags`, falling back to writing zeros when unsupported.
fn fallocate_or_zero(
    engine: &SyncEngine,
    fd: BorrowedFd<'_>,
    flags: FallocateFlags,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    if len == 0 {
        // fallocate(2) rejects len 0 with EINVAL; there is nothing to do.
        return Ok(());
    }
    match retry(|| rustix::fs::fallocate(fd, flags, offset, len)) {
        Err(e) if is_unsupported(&e) => write_zeroes(engine, fd, offset, len),
        other => other,
    }
}

impl IoEngine for SyncEngine {
    fn kind(&self) -> IoKind {
        IoKind::Sync
    }

    fn read_at(&self, fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let end = buf.len().min(done + MAX_IO);
            let n = retry(|| rustix::io::pread(fd, &mut buf[done..end], offset + done as u64))?;
            if n == 0 {
                // End of file: the rest of the request reads as zero.
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let end = buf.len().min(done + MAX_IO);
            let n = retry(|| rustix::io::pwrite(fd, &buf[done..end], offset + done as u64))?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote 0 bytes"));
            }
            done += n;
        }
        Ok(())
    }

    fn sync_data(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        retry(|| rustix::fs::fdatasync(fd))
    }

    fn punch_hole(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        fallocate_or_zero(self, fd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len)
    }

    fn zero_range(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        fallocate_or_zero(self, fd, FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::conformance;

    #[test]
    fn round_trip() {
        conformance::round_trip(&SyncEngine);
    }

    #[test]
    fn eof_zero_fill() {
        conformance::eof_zero_fill(&SyncEngine);
    }

    #[test]
    fn punch_and_zero() {
        conformance::punch_and_zero(&SyncEngine);
    }

    #[test]
    fn concurrent_8_threads() {
        conformance::concurrent(std::sync::Arc::new(SyncEngine));
    }

    #[test]
    fn batch() {
        conformance::batch(&SyncEngine);
    }

    #[test]
    fn errors_are_reported() {
        conformance::errors(&SyncEngine);
    }

    #[test]
    fn unsupported_fallocate_falls_back_to_zeros() {
        conformance::fallocate_fallback(&SyncEngine);
    }
}
