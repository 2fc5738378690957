//! A volume at run time: its geometry, its backing (sparse file or device region) and the
//! I/O engine. Host I/O enters here (the NBD server calls these methods); later issues put
//! the FlashCopy intercept in front of the data path.
//!
//! Discards and allocation: a host TRIM, a WRITE_ZEROES that may trim (NBD, FUSE
//! `fallocate --punch-hole`), and the copier's copy of a source hole onto a target all read
//! back zero. On an `-sam ese` volume they punch holes (it stays thin). On a `-sam standard`
//! volume they keep its blocks allocated (zero-range): a thick volume stays fully
//! provisioned, as on a DS8000, so a later write never meets ENOSPC for space it once had.
//! The choice lives in [`Backing::punch`] (see `backing.rs`); device regions have no
//! allocation and are discarded as before.
//!
//! CKD volumes are exported in the slot layout: track n at n x 64 KiB, the last 8,872 bytes of
//! each slot (the tail) always zero. Reads return zero there; a write that would put a
//! nonzero byte in a tail fails with EINVAL. A write whose tail bytes are all zero is
//! accepted and its tail part skipped: hosts with 512-byte sectors must read-modify-write
//! the sector that holds a track's last 344 bytes, and that sector reaches into the tail
//! (56,664 is not a multiple of 512). Trim/zero may cover tails (they stay zero).

pub mod backing;

pub use backing::{Backing, DeviceHandle, set_copy_direct};

use crate::error::{Error, ErrorKind, Result};
use crate::geometry::{CKD_TRACK_BYTES, Geometry, TRACK_BYTES};
use crate::id::VolumeKey;
use crate::io::IoEngine;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// One volume open in the daemon.
#[derive(Debug)]
pub struct Volume {
    key: VolumeKey,
    geometry: Geometry,
    backing: Backing,
    io: Arc<dyn IoEngine>,
    /// Host sessions (NBD connections, FUSE opens) holding the volume.
    sessions: AtomicUsize,
    /// Process-unique identity for lock tables (a re-opened volume gets a new one).
    handle: u64,
}

static NEXT_HANDLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Volume {
    /// A volume over `backing`, which must hold at least the geometry's size (device regions
    /// may be rounded up by the pool allocator).
    pub fn new(key: VolumeKey, geometry: Geometry, backing: Backing, io: Arc<dyn IoEngine>) -> Result<Volume> {
        if backing.len() < geometry.size_bytes() {
            let detail = format!(
                "backing {} holds {} bytes, volume needs {}",
                backing.describe(),
                backing.len(),
                geometry.size_bytes()
            );
            return Err(Error::new(ErrorKind::InvalidArgument, &key, detail));
        }
        let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
        Ok(Volume { key, geometry, backing, io, sessions: AtomicUsize::new(0), handle })
    }

    /// Process-unique identity (lock tables key on it).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    pub fn key(&self) -> &VolumeKey {
        &self.key
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Size a host sees, in bytes.
    pub fn size(&self) -> u64 {
        self.geometry.size_bytes()
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    pub fn io(&self) -> &Arc<dyn IoEngine> {
        &self.io
    }

    /// Preferred (minimum efficient) host I/O size: 512, or the device's logical block size.
    pub fn block_size(&self) -> u32 {
        self.backing.block_size().max(512)
    }

    /// Bytes allocated on disk (sparse files: only what was written).
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        self.backing.allocated_bytes()
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(einval()),
        }
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        self.backing.read(&*self.io, offset, buf)?;
        if let Geometry::Ckd { .. } = self.geometry {
            // Tails are never written nonzero; zero them here too so a backing touched by
            // something else cannot leak bytes into the slot layout.
            zero_slot_tails(offset, buf);
        }
        Ok(())
    }

    /// Write `data` at `offset`; with `fua` the data is durable before this returns.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.check(offset, data.len() as u64)?;
        if self.geometry.touches_slot_tail(offset, data.len() as u64) {
            let mut tails = [0u8; 0].to_vec();
            tails.resize(data.len(), 1);
            zero_slot_tails(offset, &mut tails);
            // `tails[i] == 0` marks a tail byte; each must be zero in the data.
            if tails.iter().zip(data).any(|(&t, &d)| t == 0 && d != 0) {
                return Err(einval());
            }
            let mut at = 0usize;
            while at < data.len() {
                let in_data = tails[at] != 0;
                let run = tails[at..].iter().take_while(|&&t| (t != 0) == in_data).count();
                if in_data {
                    self.backing.write(&*self.io, offset + at as u64, &data[at..at + run])?;
                }
                at += run;
            }
        } else {
            self.backing.write(&*self.io, offset, data)?;
        }
        if fua { self.flush() } else { Ok(()) }
    }

    /// Make every completed write durable (NBD FLUSH).
    pub fn flush(&self) -> io::Result<()> {
        self.backing.sync(&*self.io)
    }

    /// Discard `[offset, offset+len)`; it reads as zero afterwards (a standard volume keeps
    /// the space, module docs).
    pub fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        self.backing.punch(&*self.io, offset, len)
    }

    /// Zero `[offset, offset+len)`; with `may_trim` the space may be deallocated (only on an
    /// ese volume, module docs).
    pub fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.check(offset, len)?;
        if may_trim { self.backing.punch(&*self.io, offset, len) } else { self.backing.zero(&*self.io, offset, len) }
    }

    /// Allocation of `[offset, offset+len)` as runs of (bytes, allocated) from the backing
    /// (see [`Backing::allocation`]); at most `max_runs` runs.
    pub fn allocation(&self, offset: u64, len: u64, max_runs: usize) -> io::Result<Vec<(u64, bool)>> {
        self.check(offset, len)?;
        self.backing.allocation(offset, len, max_runs)
    }

    /// Readahead hint for `[offset, offset+len)` (`posix_fadvise(WILLNEED)`) on a file
    /// backing; nothing on a device region, whose O_DIRECT I/O bypasses the page cache.
    pub fn readahead(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let Some(fd) = self.backing.file_fd() else { return Ok(()) };
        let len = std::num::NonZeroU64::new(len);
        rustix::fs::fadvise(fd, offset, len, rustix::fs::Advice::WillNeed).map_err(io::Error::from)
    }

    /// Copy several runs of tracks to the same tracks of `dst` with all of them in flight at
    /// once: one linked read -> write pair per run, submitted as one batch (io_uring runs
    /// them concurrently, so scattered increments are not copied at queue depth 1). A run
    /// that is one hole becomes a discard on the target (a hole on an ese target, zeroed
    /// blocks that stay allocated on a standard one; copy_file_range would fill it, and
    /// measured slower here besides). Device regions go a run at a time through their
    /// aligned path. Not the host path: no intercept, the caller holds the track locks.
    pub fn copy_runs_to(&self, dst: &Volume, runs: &[std::ops::Range<u32>]) -> io::Result<()> {
        use crate::geometry::TRACK_BYTES;
        use crate::io::Op;
        let size = self.size();
        let (Some(src), Some(dfd)) = (self.backing.file_fd(), dst.backing.file_fd()) else {
            // Device regions: their aligned O_DIRECT path, a run at a time.
            for r in runs {
                let off = r.start as u64 * TRACK_BYTES;
                let end = (r.end as u64 * TRACK_BYTES).min(size);
                let mut buf = vec![0u8; end.saturating_sub(off) as usize];
                self.backing.read(&*self.io, off, &mut buf)?;
                dst.backing.write(&*dst.io, off, &buf)?;
            }
            return Ok(());
        };
        let mut spans = Vec::new();
        for r in runs {
            let off = r.start as u64 * TRACK_BYTES;
            let end = (r.end as u64 * TRACK_BYTES).min(size);
            if end <= off {
                continue;
            }
            if self.backing.is_hole(off, end - off) {
                dst.backing.punch(&*dst.io, off, end - off)?;
            } else {
                spans.push((off, (end - off) as usize));
            }
        }
        let mut bufs: Vec<Vec<u8>> = spans.iter().map(|&(_, len)| vec![0u8; len]).collect();
        let mut ops: Vec<Op<'_>> = spans
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(off, _), buf)| Op::Copy { src, src_offset: off, dst: dfd, dst_offset: off, buf })
            .collect();
        for r in self.io.submit_batch(&mut ops) {
            r?;
        }
        Ok(())
    }

    /// See [`Backing::stream_fd`] (the copier's stream bypasses the engine).
    pub(crate) fn stream_fd(&self, offset: u64, len: u64) -> Option<(std::os::fd::RawFd, u64)> {
        self.backing.stream_fd(offset, len)
    }

    /// Whether `[offset, offset+len)` is a hole of a sparse file (the copier discards it on
    /// the target).
    pub(crate) fn is_hole(&self, offset: u64, len: u64) -> bool {
        self.backing.is_hole(offset, len)
    }

    /// Discard `[offset, offset+len)` below the host rules (the copier's hole copy): reads
    /// zero after; a standard volume keeps the space ([`Backing::punch`]).
    pub(crate) fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.backing.punch(&*self.io, offset, len)
    }

    /// Register a host session; it ends when the guard drops.
    pub fn open_session(self: &Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard { volume: Arc::clone(self) }
    }

    /// Host sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

/// Zero the parts of `buf` (read at volume offset `offset`) that fall in CKD slot tails.
fn zero_slot_tails(offset: u64, buf: &mut [u8]) {
    let end = offset + buf.len() as u64;
    let mut slot = offset / TRACK_BYTES;
    while slot * TRACK_BYTES < end {
        let tail0 = (slot * TRACK_BYTES + CKD_TRACK_BYTES).max(offset);
        let tail1 = ((slot + 1) * TRACK_BYTES).min(end);
        if tail0 < tail1 {
            buf[(tail0 - offset) as usize..(tail1 - offset) as usize].fill(0);
        }
        slot += 1;
    }
}

/// One open host session of a volume; dropping it ends the session.
#[derive(Debug)]
pub struct SessionGuard {
    volume: Arc<Volume>,
}

impl SessionGuard {
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }
}

impl std::ops::Deref for SessionGuard {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        &self.volume
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.volume.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::backing::tests::LoopDev;
    use super::*;
    use crate::io::conformance::pattern;
    use crate::io::{SyncEngine, UringEngine};

    fn engines() -> Vec<Arc<dyn IoEngine>> {
        vec![Arc::new(SyncEngine), Arc::new(UringEngine::new(64).expect("io_uring"))]
    }

    fn key() -> VolumeKey {
        "IBM.2107-75FA120/1000".parse().expect("key")
    }

    fn file_volume(dir: &tempfile::TempDir, g: Geometry, io: Arc<dyn IoEngine>) -> Arc<Volume> {
        let b = Backing::create_file(dir.path().join("v"), g.size_bytes(), false).expect("backing");
        Arc::new(Volume::new(key(), g, b, io).expect("volume"))
    }

    fn errno(r: io::Result<()>) -> Option<i32> {
        r.expect_err("must fail").raw_os_error()
    }

    #[test]
    fn fb_volume_host_io() {
        for io in engines() {
            let dir = tempfile::tempdir().expect("dir");
            let g = Geometry::Fb { blocks: 200 }; // one full track and a partial one
            let v = file_volume(&dir, g, io);
            assert_eq!(v.size(), 102_400);
            assert_eq!(v.block_size(), 512);
            assert_eq!(v.geometry(), g);
            assert_eq!(v.key(), &key());
            let data = pattern(1, 70_000);
            v.write(512, &data, true).expect("fua write");
            let mut back = vec![0; 70_000];
            v.read(512, &mut back).expect("read");
            assert_eq!(back, data);
            v.flush().expect("flush");
            assert_eq!(errno(v.write(102_400 - 511, &[0; 512], false)), Some(libc::EINVAL));
            assert_eq!(errno(v.read(102_400, &mut [0; 1])), Some(libc::EINVAL));
            assert_eq!(errno(v.trim(0, 102_401)), Some(libc::EINVAL));
            assert_eq!(errno(v.write_zeroes(u64::MAX, 2, true)), Some(libc::EINVAL));
            v.read(102_400, &mut []).expect("empty read at the end");
            // write_zeroes with and without trim, then trim everything: all zero, no blocks.
            v.write_zeroes(1024, 4096, false).expect("zero");
            v.write_zeroes(8192, 4096, true).expect("zero with trim");
            v.read(512, &mut back).expect("read");
            assert!(back[512..4608].iter().all(|&b| b == 0));
            assert!(back[7680..11_776].iter().all(|&b| b == 0));
            assert_eq!(back[11_776..], data[11_776..]);
            v.trim(0, v.size()).expect("trim all");
            v.flush().expect("flush");
            assert_eq!(v.allocated_bytes().expect("alloc"), 0);
        }
    }

    #[test]
    fn standard_volume_keeps_its_space() {
        // Every discard (TRIM, WRITE_ZEROES that may trim, the copy of a source hole) reads
        // back zero; a standard file keeps its blocks, an ese one frees them.
        for io in engines() {
            for standard in [true, false] {
                let dir = tempfile::tempdir().expect("dir");
                let g = Geometry::Fb { blocks: 4 * 128 }; // 4 tracks
                let make = |name: &str, thick: bool| {
                    let b = Backing::create_file(dir.path().join(name), g.size_bytes(), thick).expect("backing");
                    Volume::new(key(), g, b, Arc::clone(&io)).expect("volume")
                };
                let src = make("src", false); // all holes
                let v = make("v", standard);
                assert_eq!(v.backing().is_standard(), standard);
                let size = v.size();
                v.write(0, &pattern(5, size as usize), false).expect("fill");
                v.trim(0, TRACK_BYTES).expect("trim");
                v.write_zeroes(TRACK_BYTES, TRACK_BYTES, true).expect("zero, may trim");
                src.copy_runs_to(&v, std::slice::from_ref(&(2..3))).expect("copy of a hole");
                v.discard(3 * TRACK_BYTES, TRACK_BYTES).expect("discard");
                v.flush().expect("flush");
                let mut back = vec![1u8; size as usize];
                v.read(0, &mut back).expect("read");
                assert!(back.iter().all(|&b| b == 0), "every discarded range reads zero");
                let alloc = v.allocated_bytes().expect("alloc");
                if standard {
                    assert!(alloc >= size, "a standard volume kept {alloc} of {size} bytes");
                } else {
                    assert_eq!(alloc, 0, "an ese volume kept blocks of discarded ranges");
                }
            }
        }
    }

    #[test]
    fn standard_is_restored_and_thin_standard_files_are_allocated_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("v");
        let len = 4 * TRACK_BYTES;
        let b = Backing::create_file(&path, len, true).expect("backing");
        b.write(&SyncEngine, TRACK_BYTES, &pattern(9, 4096)).expect("write");
        // As an earlier version left it: holes in a standard file.
        SyncEngine.punch_hole(b.file_fd().expect("file"), 2 * TRACK_BYTES, 2 * TRACK_BYTES).expect("punch");
        drop(b);
        let b = Backing::open_file(&path, len).expect("open");
        assert!(!b.is_standard(), "an opened file is ese until told");
        assert!(b.allocated_bytes().expect("alloc") < len);
        b.set_standard(true).expect("standard");
        assert!(b.is_standard());
        assert!(b.allocated_bytes().expect("alloc") >= len, "allocated again");
        let mut back = vec![0u8; 4096];
        b.read(&SyncEngine, TRACK_BYTES, &mut back).expect("read");
        assert_eq!(back, pattern(9, 4096), "data kept");
        b.set_standard(false).expect("ese");
        b.punch(&SyncEngine, 0, len).expect("punch");
        assert_eq!(b.allocated_bytes().expect("alloc"), 0);
    }

    #[test]
    fn backing_too_small_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let b = Backing::create_file(dir.path().join("v"), 4096, false).expect("backing");
        let err = Volume::new(key(), Geometry::Fb { blocks: 9 }, b, Arc::new(SyncEngine)).expect_err("small");
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn ckd_slot_layout() {
        for io in engines() {
            let dir = tempfile::tempdir().expect("dir");
            let g = Geometry::Ckd { cylinders: 1 }; // 15 tracks
            let v = file_volume(&dir, g, Arc::clone(&io));
            assert_eq!(v.size(), 15 * TRACK_BYTES);
            let track = pattern(7, CKD_TRACK_BYTES as usize);
            v.write(TRACK_BYTES, &track, false).expect("whole track data");
            let mut over = vec![1u8; CKD_TRACK_BYTES as usize + 1];
            assert_eq!(errno(v.write(TRACK_BYTES, &over, false)), Some(libc::EINVAL));
            assert_eq!(errno(v.write(2 * TRACK_BYTES - 1, &[1, 0], false)), Some(libc::EINVAL));
            // A host's read-modify-write of the sector holding a track's end carries zeros
            // into the tail: accepted, the data part written, the tail left alone.
            let last_sector = TRACK_BYTES + CKD_TRACK_BYTES / 512 * 512;
            let mut sector = [0u8; 512];
            sector[..(CKD_TRACK_BYTES % 512) as usize].fill(9);
            v.write(last_sector, &sector, false).expect("sector reaching into the tail");
            over.truncate(CKD_TRACK_BYTES as usize);
            let mut back = vec![0u8; 512];
            v.read(last_sector, &mut back).expect("read");
            assert_eq!(back, sector);
            v.write(TRACK_BYTES, &track, false).expect("rewrite");
            // Plant garbage in a tail behind the volume's back: reads still show zeros.
            v.backing().write(&*io, TRACK_BYTES + CKD_TRACK_BYTES, &[0xFF; 100]).expect("raw write");
            let mut slot = vec![0xAA; 2 * TRACK_BYTES as usize];
            v.read(TRACK_BYTES / 2, &mut slot).expect("read across slots");
            let at = (TRACK_BYTES / 2) as usize;
            assert_eq!(slot[at..at + CKD_TRACK_BYTES as usize], track[..]);
            assert!(slot[at + CKD_TRACK_BYTES as usize..at + TRACK_BYTES as usize].iter().all(|&b| b == 0));
            // Trim and zero may cover tails.
            v.trim(0, 3 * TRACK_BYTES).expect("trim over tails");
            v.write_zeroes(0, v.size(), false).expect("zero all");
            v.read(0, &mut slot).expect("read");
            assert!(slot.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn sessions_count() {
        let dir = tempfile::tempdir().expect("dir");
        let v = file_volume(&dir, Geometry::Fb { blocks: 8 }, Arc::new(SyncEngine));
        assert_eq!(v.sessions(), 0);
        let a = v.open_session();
        let b = v.open_session();
        assert_eq!(v.sessions(), 2);
        assert_eq!(a.size(), 4096);
        drop(a);
        assert_eq!(v.sessions(), 1);
        let t = std::thread::spawn(move || drop(b));
        t.join().expect("thread");
        assert_eq!(v.sessions(), 0);
    }

    #[test]
    fn device_volume() {
        let Some(lo) = LoopDev::new(8 << 20, 4096) else { return };
        let dev = Arc::new(DeviceHandle::open(&lo.path).expect("open"));
        for io in engines() {
            let g = Geometry::Fb { blocks: 2048 }; // 1 MiB
            let b = Backing::device_region(Arc::clone(&dev), 2 << 20, 1 << 20).expect("region");
            // A device region has no allocation: `standard` changes nothing there.
            b.set_standard(true).expect("no-op on a device");
            assert!(!b.is_standard());
            let v = Volume::new(key(), g, b, io).expect("volume");
            assert_eq!(v.block_size(), 4096);
            assert_eq!(v.allocated_bytes().expect("alloc"), 1 << 20);
            let data = pattern(3, 1536);
            v.write(512, &data, true).expect("sub-block write");
            v.write_zeroes(1024, 512, true).expect("sub-block trim");
            let mut back = vec![0xAA; 4096];
            v.read(0, &mut back).expect("read");
            assert!(back[..512].iter().all(|&b| b == 0));
            assert_eq!(back[512..1024], data[..512]);
            assert!(back[1024..1536].iter().all(|&b| b == 0));
            assert_eq!(back[1536..2048], data[1024..]);
            assert!(back[2048..].iter().all(|&b| b == 0));
        }
    }
}
