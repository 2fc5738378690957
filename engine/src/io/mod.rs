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
}
