//! Track bitmaps. `TrackBitmap` is the only type that sees roaring: range operations are
//! checked here, runs of adjacent tracks come out of `next_run`, and on-disk copies are
//! loaded with the validating deserializer.
//!
//! The journal of DESIGN.md's durability table lives here too, as one generic piece that
//! FlashCopy relationships and PPRC pairs share:
//!
//! * [`intent`]: a persistent track bitset (MAP_SHARED file, two epochs) that survives kill -9;
//! * [`activity`]: the activity log of coarse extents that survives power loss;
//! * [`checkpoint`]: generation-numbered roaring checkpoints of the callers' bitmaps;
//! * [`journal`]: [`journal::VolumeJournal`], which ties intent and activity log for one volume
//!   and documents the protocol callers follow.

pub mod activity;
pub mod checkpoint;
pub mod intent;
pub mod journal;
#[cfg(test)]
mod tests;

use crate::error::{Error, ErrorKind, Result};
use crate::geometry::TrackNo;
use roaring::RoaringBitmap;
use std::fs::File;
use std::ops::Range;

/// A set of track numbers of one volume (`0..tracks`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackBitmap {
    bits: RoaringBitmap,
}

impl TrackBitmap {
    pub fn new() -> TrackBitmap {
        TrackBitmap::default()
    }

    /// All of `0..tracks` set: a target bitmap at T0. O(containers), not O(tracks).
    pub fn full(tracks: u64) -> TrackBitmap {
        let mut bits = RoaringBitmap::new();
        if tracks > 0 {
            bits.insert_range(0..tracks.min(u32::MAX as u64) as u32);
        }
        TrackBitmap { bits }
    }

    pub fn insert(&mut self, t: TrackNo) -> bool {
        self.bits.insert(t.0)
    }

    pub fn remove(&mut self, t: TrackNo) -> bool {
        self.bits.remove(t.0)
    }

    pub fn contains(&self, t: TrackNo) -> bool {
        self.bits.contains(t.0)
    }

    pub fn insert_range(&mut self, r: Range<u32>) {
        if r.start < r.end {
            self.bits.insert_range(r);
        }
    }

    pub fn remove_range(&mut self, r: Range<u32>) {
        if r.start < r.end {
            self.bits.remove_range(r);
        }
    }

    pub fn len(&self) -> u64 {
        self.bits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    pub fn clear(&mut self) {
        self.bits.clear();
    }

    /// self |= other.
    pub fn union_with(&mut self, other: &TrackBitmap) {
        self.bits |= &other.bits;
    }

    /// self -= other.
    pub fn difference_with(&mut self, other: &TrackBitmap) {
        self.bits -= &other.bits;
    }

    /// self &= other.
    pub fn intersect_with(&mut self, other: &TrackBitmap) {
        self.bits &= &other.bits;
    }

    pub fn is_subset(&self, other: &TrackBitmap) -> bool {
        self.bits.is_subset(&other.bits)
    }

    /// Whether any track of `r` is set.
    pub fn intersects_range(&self, r: Range<u32>) -> bool {
        r.start < r.end && self.bits.range_cardinality(r) > 0
    }

    /// Store runs as run containers (smaller checkpoints of mostly-contiguous bitmaps).
    pub fn optimize(&mut self) {
        self.bits.optimize();
    }

    pub fn iter(&self) -> impl Iterator<Item = TrackNo> + '_ {
        self.bits.iter().map(TrackNo)
    }

    /// The first run of adjacent set tracks at or after `from`, at most `max` long.
    pub fn next_run(&self, from: u32, max: u32) -> Option<Range<u32>> {
        let mut it = self.bits.range(from..);
        let start = it.next()?;
        let mut end = start + 1;
        for t in it {
            if t != end || end - start >= max {
                break;
            }
            end += 1;
        }
        Some(start..end)
    }

    /// Portable roaring serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bits.serialized_size());
        // Writing to a Vec cannot fail.
        let _ = self.bits.serialize_into(&mut out);
        out
    }

    /// Validating load of [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(data: &[u8]) -> std::io::Result<TrackBitmap> {
        Ok(TrackBitmap { bits: RoaringBitmap::deserialize_from(data)? })
    }
}

/// Allocate `[0, len)` of `file` now, so later writes into it never meet ENOSPC (DESIGN:
/// bookkeeping files are preallocated). Falls back to writing zeros where fallocate is not
/// supported, which also allocates.
pub(crate) fn preallocate(file: &File, len: u64, what: &dyn std::fmt::Display) -> Result<()> {
    use std::os::unix::fs::FileExt;
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            let zeros = vec![0u8; 1 << 16];
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], off).map_err(|e| Error::io(what, &e))?;
                off += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(what, &e.into())),
    }
}

/// Take the exclusive advisory lock of a journal file: the mapping and the log assume one
/// owner (a second flashd, or a second open in this one, is refused rather than raced).
pub(crate) fn lock_exclusive(file: &File, what: &dyn std::fmt::Display) -> Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| Error::new(ErrorKind::VolumeInUse, what, "journal file is locked by another owner"))
}

#[cfg(test)]
thread_local! {
    /// Failpoints armed by unit tests on their own thread (env vars are process-wide).
    static ARMED: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Arm `name` on this thread: the next [`fail_point`] of that name returns an error, which a
/// test treats as "the process died here".
#[cfg(test)]
pub(crate) fn arm_fail_point(name: &'static str) {
    ARMED.with(|a| a.borrow_mut().push(name));
}

/// An ordering point of the journal. With the `failpoints` feature, the catalog's convention:
/// `FLASHTRACK_FAILPOINT=<name>` aborts there (as kill -9 would) and `<name>=error` returns an
/// I/O error; unit tests arm points per thread instead. Copied rather than imported so that
/// bitmap does not depend on image.
pub(crate) fn fail_point(name: &str) -> Result<()> {
    #[cfg(test)]
    {
        let hit = ARMED.with(|a| {
            let mut a = a.borrow_mut();
            a.iter().position(|n| *n == name).map(|i| a.swap_remove(i)).is_some()
        });
        if hit {
            return Err(Error::new(ErrorKind::Io, name, "injected failure"));
        }
    }
    if cfg!(feature = "failpoints")
        && let Ok(v) = std::env::var("FLASHTRACK_FAILPOINT")
    {
        if v == name {
            std::process::abort();
        }
        if v.strip_suffix("=error") == Some(name) {
            return Err(Error::new(ErrorKind::Io, name, "injected failure"));
        }
    }
    Ok(())
}

/// fsync a directory so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir.display(), &e))
}

/// The boot ID of the running kernel: equal across a process crash, new after a reboot.
pub fn boot_id() -> Result<String> {
    const PATH: &str = "/proc/sys/kernel/random/boot_id";
    let s = std::fs::read_to_string(PATH).map_err(|e| Error::io(PATH, &e))?;
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn full_runs_and_round_trip() {
        let mut b = TrackBitmap::full(1000);
        assert_eq!(b.len(), 1000);
        b.remove_range(10..20);
        assert_eq!(b.next_run(0, 64), Some(0..10));
        assert_eq!(b.next_run(5, 64), Some(5..10));
        assert_eq!(b.next_run(10, 64), Some(20..84));
        assert_eq!(b.next_run(990, 64), Some(990..1000));
        assert_eq!(b.next_run(1000, 64), None);
        let c = TrackBitmap::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(b, c);
        assert!(TrackBitmap::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn huge_sparse_volume_is_cheap() {
        // 8 TiB of 64 KiB tracks.
        let b = TrackBitmap::full(8 << 24);
        assert_eq!(b.len(), 8 << 24);
        assert!(b.to_bytes().len() < 64 * 1024);
    }
}
