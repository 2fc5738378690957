//! A fault-injecting [`IoEngine`] for tests: it wraps a real engine and
//!
//! * fails chosen calls with an errno (EIO, ENOSPC, ...): the next N calls of an operation, or
//!   every call on one descriptor (optionally within an offset range), optionally N times;
//! * simulates power loss: with tracking on, it keeps a pre-image of every range changed
//!   (write, punch, zero) since the last `sync_data` of that file, and [`FaultEngine::power_loss`]
//!   writes the pre-images back in reverse order and truncates to the last synced length,
//!   so the file holds exactly what an fdatasync made durable. After that the "machine is
//!   off": every call fails with EIO until [`FaultEngine::power_on`].
//!
//! Tracking serializes all tracked calls on one mutex (a pre-image read and its write must
//! not interleave with another write); fine for tests, which is all this is for.

use super::buffer::{AlignedBuf, DIRECT_ALIGN};
use super::{IoEngine, IoKind};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The operation a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Sync,
    Punch,
    Zero,
}

/// When to fail and with what errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    op: FaultOp,
    fd: Option<RawFd>,
    range: Option<Range<u64>>,
    /// Calls left to fail; None = forever.
    remaining: Option<u64>,
    errno: i32,
}

impl FaultRule {
    /// Fail the next `n` calls of `op` on any descriptor.
    pub fn next(op: FaultOp, n: u64, errno: i32) -> FaultRule {
        FaultRule { op, fd: None, range: None, remaining: Some(n), errno }
    }

    /// Fail every call of `op` on `fd` (for Sync: every sync of `fd`).
    pub fn on_fd(op: FaultOp, fd: BorrowedFd<'_>, errno: i32) -> FaultRule {
        FaultRule { op, fd: Some(fd.as_raw_fd()), range: None, remaining: None, errno }
    }

    /// Fail every call of `op` on `fd` whose byte range overlaps `range`.
    pub fn range(op: FaultOp, fd: BorrowedFd<'_>, range: Range<u64>, errno: i32) -> FaultRule {
        FaultRule { range: Some(range), ..FaultRule::on_fd(op, fd, errno) }
    }

    /// Only the first `n` matching calls fail.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, op: FaultOp, fd: RawFd, at: &Range<u64>) -> bool {
        // A zero-length request is treated as touching its offset.
        let end = at.end.max(at.start + 1);
        self.op == op
            && self.fd.is_none_or(|f| f == fd)
            && (op == FaultOp::Sync || self.range.as_ref().is_none_or(|r| r.start < end && at.start < r.end))
    }
}

/// One file changed since its last sync.
#[derive(Debug)]
struct Tracked {
    /// A dup of the first descriptor seen, so the file can be restored after the caller's
    /// descriptor is gone.
    fd: OwnedFd,
    /// Regular file (truncated back on power loss) or block device (fixed size).
    regular: bool,
    /// Length at the last sync.
    synced_len: u64,
    /// (offset, previous bytes), oldest first.
    undo: Vec<(u64, AlignedBuf)>,
}

/// Files are keyed by (st_dev, st_ino): descriptor numbers get reused, inodes do not while open.
type FileKey = (u64, u64);

/// A wrapper engine with injectable errors and simulated power loss. See the module docs.
#[derive(Debug)]
pub struct FaultEngine {
    inner: Arc<dyn IoEngine>,
    rules: Mutex<Vec<FaultRule>>,
    /// Present when power-loss tracking is on.
    power: Option<Mutex<HashMap<FileKey, Tracked>>>,
    off: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn file_key(fd: BorrowedFd<'_>) -> io::Result<(FileKey, bool, u64)> {
    let st = rustix::fs::fstat(fd)?;
    let regular = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    Ok(((st.st_dev, st.st_ino), regular, st.st_size as u64))
}

impl FaultEngine {
    /// Error injection only.
    pub fn new(inner: Arc<dyn IoEngine>) -> FaultEngine {
        FaultEngine { inner, rules: Mutex::new(Vec::new()), power: None, off: AtomicBool::new(false) }
    }

    /// Error injection plus power-loss tracking.
    pub fn with_power_loss(inner: Arc<dyn IoEngine>) -> FaultEngine {
        FaultEngine { power: Some(Mutex::new(HashMap::new())), ..FaultEngine::new(inner) }
    }

    pub fn inject(&self, rule: FaultRule) {
        lock(&self.rules).push(rule);
    }

    pub fn clear_faults(&self) {
        lock(&self.rules).clear();
    }

    /// Byte ranges of `fd`'s file changed since its last sync (oldest first).
    pub fn unsynced(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<Range<u64>>> {
        let (key, _, _) = file_key(fd)?;
        let Some(power) = &self.power else {
            return Ok(Vec::new());
        };
        Ok(lock(power)
            .get(&key)
            .map(|t| t.undo.iter().map(|(off, b)| *off..*off + b.len() as u64).collect())
            .unwrap_or_default())
    }

    /// Cut the power: every tracked file goes back to its last synced content and length,
    /// and from now on every call fails with EIO until [`FaultEngine::power_on`].
    pub fn power_loss(&self) -> io::Result<()> {
        self.off.store(true, Ordering::SeqCst);
        let Some(power) = &self.power else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "FaultEngine built without power-loss tracking"));
        };
        let mut files = lock(power);
        for (_, t) in files.drain() {
            for (off, before) in t.undo.iter().rev() {
                self.inner.write_at(t.fd.as_fd(), before, *off)?;
            }
            if t.regular {
                rustix::fs::ftruncate(&t.fd, t.synced_len)?;
            }
            self.inner.sync_data(t.fd.as_fd())?;
        }
        Ok(())
    }

    /// Power back on: calls reach the inner engine again.
    pub fn power_on(&self) {
        self.off.store(false, Ordering::SeqCst);
    }

    /// The injected error for this call, if any.
    fn check(&self, op: FaultOp, fd: BorrowedFd<'_>, at: Range<u64>) -> io::Result<()> {
        if self.off.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut rules = lock(&self.rules);
        let Some(i) = rules.iter().position(|r| r.matches(op, fd.as_raw_fd(), &at)) else {
            return Ok(());
        };
        let errno = rules[i].errno;
        if let Some(n) = rules[i].remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                rules.remove(i);
            }
        }
        Err(io::Error::from_raw_os_error(errno))
    }

    /// Run `change` (which modifies `[offset, offset+len)` of `fd`) after saving what it
    /// overwrites, when tracking is on.
    fn tracked(
        &self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        change: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(power) = &self.power else {
            return change();
        };
        let mut files = lock(power);
        let (key, regular, size) = file_key(fd)?;
        if let Entry::Vacant(slot) = files.entry(key) {
            slot.insert(Tracked { fd: fd.try_clone_to_owned()?, regular, synced_len: size, undo: Vec::new() });
        }
        // Only the part inside the current file matters: beyond it, truncation restores.
        let keep = if regular { len.min(size.saturating_sub(offset)) } else { len };
        if keep > 0 {
            let n = usize::try_from(keep).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
            // Aligned so the pre-image read also works on O_DIRECT descriptors.
            let mut before = AlignedBuf::new(n, DIRECT_ALIGN);
            self.inner.read_at(fd, &mut before, offset)?;
            if let Some(t) = files.get_mut(&key) {
                t.undo.push((offset, before));
            }
        }
        change()
    }
}

impl IoEngine for FaultEngine {
    fn kind(&self) -> IoKind {
        self.inner.kind()
    }

    fn read_at(&self, fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(FaultOp::Read, fd, offset..offset + buf.len() as u64)?;
        self.inner.read_at(fd, buf, offset)
    }

    fn write_at(&self, fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(FaultOp::Write, fd, offset..offset + buf.len() as u64)?;
        self.tracked(fd, offset, buf.len() as u64, || self.inner.write_at(fd, buf, offset))
    }

    fn sync_data(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.check(FaultOp::Sync, fd, 0..0)?;
        let Some(power) = &self.power else {
            return self.inner.sync_data(fd);
        };
        // Held across the sync so no write slips in between "durable" and "forget its undo".
        let mut files = lock(power);
        self.inner.sync_data(fd)?;
        files.remove(&file_key(fd)?.0);
        Ok(())
    }

    fn punch_hole(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.check(FaultOp::Punch, fd, offset..offset + len)?;
        self.tracked(fd, offset, len, || self.inner.punch_hole(fd, offset, len))
    }

    fn zero_range(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.check(FaultOp::Zero, fd, offset..offset + len)?;
        self.tracked(fd, offset, len, || self.inner.zero_range(fd, offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::conformance::{pattern, temp_file};
    use crate::io::{Op, SyncEngine, UringEngine};
    use std::os::unix::fs::FileExt;

    fn engines() -> Vec<Arc<dyn IoEngine>> {
        vec![Arc::new(SyncEngine), Arc::new(UringEngine::new(32).expect("uring"))]
    }

    fn errno(r: io::Result<()>) -> Option<i32> {
        r.expect_err("injected error").raw_os_error()
    }

    #[test]
    fn next_n_calls_fail() {
        let e = FaultEngine::new(Arc::new(SyncEngine));
        let f = temp_file();
        e.inject(FaultRule::next(FaultOp::Write, 2, libc::EIO));
        assert_eq!(errno(e.write_at(f.as_fd(), b"a", 0)), Some(libc::EIO));
        assert_eq!(errno(e.write_at(f.as_fd(), b"a", 0)), Some(libc::EIO));
        e.write_at(f.as_fd(), b"abc", 0).expect("third write succeeds");
        // A failed write wrote nothing.
        assert_eq!(f.metadata().expect("stat").len(), 3);
        e.inject(FaultRule::next(FaultOp::Sync, 1, libc::EIO));
        assert_eq!(errno(e.sync_data(f.as_fd())), Some(libc::EIO));
        e.sync_data(f.as_fd()).expect("sync");
        // Batches go through the same checks.
        e.inject(FaultRule::next(FaultOp::Read, 1, libc::EIO));
        let mut buf = [0u8; 3];
        let res = e.submit_batch(&mut [Op::Read { fd: f.as_fd(), offset: 0, buf: &mut buf }]);
        assert!(res[0].is_err());
    }

    #[test]
    fn range_rules_match_fd_and_offsets() {
        let e = FaultEngine::new(Arc::new(SyncEngine));
        let (f, g) = (temp_file(), temp_file());
        e.inject(FaultRule::range(FaultOp::Write, f.as_fd(), 4096..8192, libc::ENOSPC));
        e.write_at(f.as_fd(), &[1; 4096], 0).expect("below range");
        e.write_at(f.as_fd(), &[1; 4096], 8192).expect("above range");
        e.write_at(g.as_fd(), &[1; 4096], 4096).expect("other fd");
        assert_eq!(errno(e.write_at(f.as_fd(), &[1; 2], 4095)), Some(libc::ENOSPC));
        assert_eq!(errno(e.write_at(f.as_fd(), &[1; 1], 8191)), Some(libc::ENOSPC));
        e.read_at(f.as_fd(), &mut [0; 10], 5000).expect("reads unaffected");
        e.clear_faults();
        e.write_at(f.as_fd(), &[1; 4096], 4096).expect("cleared");

        e.inject(FaultRule::on_fd(FaultOp::Read, g.as_fd(), libc::EIO).times(1));
        assert_eq!(errno(e.read_at(g.as_fd(), &mut [0; 1], 0)), Some(libc::EIO));
        e.read_at(g.as_fd(), &mut [0; 1], 0).expect("only once");
        e.inject(FaultRule::on_fd(FaultOp::Punch, g.as_fd(), libc::EIO));
        assert_eq!(errno(e.punch_hole(g.as_fd(), 0, 4096)), Some(libc::EIO));
        e.zero_range(g.as_fd(), 0, 4096).expect("zero is a different op");
    }

    #[test]
    fn power_loss_rewinds_to_last_sync() {
        for inner in engines() {
            let e = FaultEngine::with_power_loss(Arc::clone(&inner));
            let f = temp_file();
            let synced = pattern(1, 100_000);
            e.write_at(f.as_fd(), &synced, 0).expect("write");
            e.sync_data(f.as_fd()).expect("sync");
            assert!(e.unsynced(f.as_fd()).expect("unsynced").is_empty());

            // Unsynced changes: overwrite, overwrite again, extend, punch, zero.
            e.write_at(f.as_fd(), &pattern(2, 5000), 1000).expect("w1");
            e.write_at(f.as_fd(), &pattern(3, 5000), 3000).expect("w2 overlaps w1");
            e.write_at(f.as_fd(), &pattern(4, 50_000), 90_000).expect("extend");
            e.punch_hole(f.as_fd(), 0, 65_536).expect("punch");
            e.zero_range(f.as_fd(), 70_000, 100).expect("zero");
            assert_eq!(e.unsynced(f.as_fd()).expect("unsynced").len(), 5);
            assert_eq!(f.metadata().expect("stat").len(), 140_000);

            e.power_loss().expect("power loss");
            let mut back = vec![0; 100_000];
            f.read_exact_at(&mut back, 0).expect("read");
            assert_eq!(back, synced, "{:?}", inner.kind());
            assert_eq!(f.metadata().expect("stat").len(), 100_000, "length rewound");
            // The machine is off until power_on.
            assert_eq!(errno(e.write_at(f.as_fd(), b"x", 0)), Some(libc::EIO));
            assert_eq!(errno(e.read_at(f.as_fd(), &mut [0], 0)), Some(libc::EIO));
            e.power_on();
            e.write_at(f.as_fd(), b"x", 0).expect("back on");
        }
    }

    #[test]
    fn power_loss_keeps_synced_writes_and_survives_closed_fds() {
        let e = FaultEngine::with_power_loss(Arc::new(SyncEngine));
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("vol");
        let f = std::fs::File::create_new(&path).expect("create");
        e.write_at(f.as_fd(), &[1; 4096], 0).expect("w");
        e.sync_data(f.as_fd()).expect("sync");
        e.write_at(f.as_fd(), &[2; 4096], 4096).expect("w unsynced");
        drop(f); // the caller's descriptor is gone; the engine's dup still restores
        e.power_loss().expect("power loss");
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data, vec![1; 4096]);
    }

    #[test]
    fn concurrent_writers_with_tracking() {
        let e = Arc::new(FaultEngine::with_power_loss(Arc::new(UringEngine::new(32).expect("uring"))));
        let f = Arc::new(temp_file());
        f.write_all_at(&[9; 8 * 4096], 0).expect("seed");
        e.sync_data(f.as_fd()).expect("sync");
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (e, f) = (Arc::clone(&e), Arc::clone(&f));
                std::thread::spawn(move || {
                    for i in 0..20u64 {
                        e.write_at(f.as_fd(), &pattern(t * 100 + i, 4096), t * 4096).expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(e.unsynced(f.as_fd()).expect("unsynced").len(), 160);
        e.power_loss().expect("power loss");
        let mut back = vec![0; 8 * 4096];
        f.read_exact_at(&mut back, 0).expect("read");
        assert!(back.iter().all(|&b| b == 9));
    }
}
