//! Sub-track copy-on-write: a 4 KiB host write to a source track that its target still
//! borrows copies only the 4 KiB grains it overwrites, not the whole 64 KiB track.
//!
//! Why: a whole-track COW turns each random 4 KiB host write into a 64 KiB read and a 64 KiB
//! write on the target (fresh page-cache pages, the target file's write lock), which held
//! host 4 KiB random writes during a background copy to 28% of the IOPS without a
//! relationship; copying the grain keeps them near 80% (BENCHMARKS.md, "NBD host path").
//!
//! The track stays the unit everywhere else: the target bitmap, change recording, resync
//! increments, `lsflash` counts and PPRC out-of-sync sets are all per track. A target bit of
//! 1 still means "the target borrows (part of) this track from the source"; its
//! [`GrainMap`] entry names the grains whose T0 data already sit on the target (preserved).
//! Every consumer of a borrowed track honours the mask:
//! * reads of the target take preserved grains from the target, the rest from the source
//!   (`intercept.rs`);
//! * finishing a track (the copier, a partial target write's fill, `copy_track`) copies only
//!   the grains not preserved, then clears the bit and the mask together;
//! * resync starts a new point in time: every mask is dropped with it;
//! * reverse and `setflashrevertible` first finish every partly preserved track
//!   (`ImageFlash::finish_grains`), so neither has to know about grains.
//!
//! Durability: a grain's mark goes to the relationship's grain log (a [`PersistentBitset`]
//! of `tracks × 16` bits, kill -9 safe) after its target write landed and before the source
//! write that needed it is submitted, exactly as a whole track's mark goes to the copied
//! set; checkpoints store the map as a fourth bitmap of grain numbers (`track × 16 + grain`).
//! The log is preallocated like every bookkeeping file: 4 bytes per track (two epochs of 16
//! bits), 512 KiB for an 8 GiB volume, 512 MiB for 8 TiB; checkpoints visit only the pages
//! that hold marks. Volumes of 2^28 tracks (16 TiB) or more would overflow a grain number:
//! their relationships copy whole tracks, as before.
//!
//! Reads and block status of a target ask `intercept::Sides` which side answers each
//! byte.
//!
//! [`PersistentBitset`]: crate::bitmap::intent::PersistentBitset

use crate::bitmap::TrackBitmap;
use crate::geometry::{TRACK_BYTES, TrackNo};
use std::collections::BTreeMap;
use std::ops::Range;

/// Bytes per grain: the host block size most writes come in.
pub const GRAIN_BYTES: u64 = 4096;
/// Grains per track (a `u16` mask holds them).
pub const GRAINS_PER_TRACK: u32 = (TRACK_BYTES / GRAIN_BYTES) as u32;
const _: () = assert!(GRAINS_PER_TRACK == 16);

/// The most tracks a relationship may have and still copy grains: every grain number and
/// the grain log's bit count fit in a u32 (2^28 tracks would need 2^32 bits).
pub const MAX_GRAIN_TRACKS: u64 = u32::MAX as u64 / GRAINS_PER_TRACK as u64;

/// Grains of one track, bit g = bytes `[g × 4 KiB, (g + 1) × 4 KiB)` of the track.
pub type GrainMask = u16;

/// Every grain of a track holding `track_len` bytes of data (a CKD track or the last FB
/// track is shorter than 64 KiB).
pub fn full_mask(track_len: u64) -> GrainMask {
    let n = track_len.div_ceil(GRAIN_BYTES).min(GRAINS_PER_TRACK as u64) as u32;
    if n == GRAINS_PER_TRACK { GrainMask::MAX } else { ((1u32 << n) - 1) as GrainMask }
}

/// The grains of track `t` that bytes `[offset, offset + len)` of the volume touch, within
/// the track's `track_len` bytes of data.
pub fn touched(t: TrackNo, offset: u64, len: u64, track_len: u64) -> GrainMask {
    let start = t.0 as u64 * TRACK_BYTES;
    let a = offset.max(start) - start;
    let b = (offset + len).min(start + track_len).saturating_sub(start);
    if b <= a {
        return 0;
    }
    let (g0, g1) = ((a / GRAIN_BYTES) as u32, b.div_ceil(GRAIN_BYTES) as u32);
    let mut m = 0u32;
    for g in g0..g1.min(GRAINS_PER_TRACK) {
        m |= 1 << g;
    }
    m as GrainMask & full_mask(track_len)
}

/// The runs of adjacent grains in `mask`, as grain ranges.
pub fn runs(mask: GrainMask) -> Vec<Range<u32>> {
    let mut out = Vec::new();
    let mut g = 0;
    while g < GRAINS_PER_TRACK {
        if mask & (1 << g) != 0 {
            let s = g;
            while g < GRAINS_PER_TRACK && mask & (1 << g) != 0 {
                g += 1;
            }
            out.push(s..g);
        } else {
            g += 1;
        }
    }
    out
}

/// Byte range of grains `g` of track `t`, clipped to the track's data.
pub fn bytes(t: TrackNo, g: &Range<u32>, track_len: u64) -> Range<u64> {
    let start = t.0 as u64 * TRACK_BYTES;
    let a = (g.start as u64 * GRAIN_BYTES).min(track_len);
    let b = (g.end as u64 * GRAIN_BYTES).min(track_len);
    start + a..start + b
}

/// Grain numbers of `mask` on track `t` as ranges of the grain log (`track × 16 + grain`).
pub fn log_ranges(t: TrackNo, mask: GrainMask) -> Vec<Range<u32>> {
    let base = t.0 * GRAINS_PER_TRACK;
    runs(mask).into_iter().map(|r| base + r.start..base + r.end).collect()
}

/// Preserved grains of borrowed tracks: track -> mask (never 0, never a full track: a track
/// whose every grain is preserved is copied, its bit and entry cleared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrainMap(BTreeMap<u32, GrainMask>);

impl GrainMap {
    pub fn new() -> GrainMap {
        GrainMap::default()
    }

    /// The preserved grains of track `t` (0: none).
    pub fn get(&self, t: TrackNo) -> GrainMask {
        self.0.get(&t.0).copied().unwrap_or(0)
    }

    pub fn add(&mut self, t: TrackNo, mask: GrainMask) {
        if mask != 0 {
            *self.0.entry(t.0).or_insert(0) |= mask;
        }
    }

    pub fn remove(&mut self, t: TrackNo) {
        self.0.remove(&t.0);
    }

    pub fn remove_range(&mut self, r: Range<u32>) {
        if self.0.is_empty() || r.start >= r.end {
            return;
        }
        let keys: Vec<u32> = self.0.range(r).map(|(k, _)| *k).collect();
        for k in keys {
            self.0.remove(&k);
        }
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tracks with preserved grains.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn tracks(&self) -> impl Iterator<Item = TrackNo> + '_ {
        self.0.keys().map(|&t| TrackNo(t))
    }

    /// Whether any track of `r` has preserved grains.
    pub fn any_in(&self, r: Range<u32>) -> bool {
        r.start < r.end && self.0.range(r).next().is_some()
    }

    /// Keep only the entries of tracks still borrowed (`target_bits`).
    pub fn retain_borrowed(&mut self, target_bits: &TrackBitmap) {
        self.0.retain(|&t, _| target_bits.contains(TrackNo(t)));
    }

    /// The map as a bitmap of grain numbers (checkpoints).
    pub fn to_bitmap(&self) -> TrackBitmap {
        let mut b = TrackBitmap::new();
        for (&t, &m) in &self.0 {
            for r in log_ranges(TrackNo(t), m) {
                b.insert_range(r);
            }
        }
        b
    }

    /// The map from a bitmap of grain numbers (a checkpoint, a recovered grain log).
    pub fn from_bitmap(b: &TrackBitmap) -> GrainMap {
        let mut m = GrainMap::new();
        for TrackNo(g) in b.iter() {
            m.add(TrackNo(g / GRAINS_PER_TRACK), 1 << (g % GRAINS_PER_TRACK));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_of_writes() {
        let t = TrackNo(2);
        let base = 2 * TRACK_BYTES;
        assert_eq!(touched(t, base, 4096, TRACK_BYTES), 0b1);
        assert_eq!(touched(t, base + 4095, 2, TRACK_BYTES), 0b11);
        assert_eq!(touched(t, base - 512, 1024, TRACK_BYTES), 0b1);
        assert_eq!(touched(t, 0, 10 * TRACK_BYTES, TRACK_BYTES), 0xffff);
        assert_eq!(touched(t, base + TRACK_BYTES, 512, TRACK_BYTES), 0);
        assert_eq!(touched(t, base + 512 * 3, 512, TRACK_BYTES), 0b1);
        // A CKD track of 56,664 bytes has 14 grains; bytes past its data touch none.
        assert_eq!(full_mask(56_664), 0x3fff);
        assert_eq!(touched(t, base + 60_000, 4096, 56_664), 0);
        assert_eq!(full_mask(25_600), 0x7f);
        assert_eq!(full_mask(TRACK_BYTES), 0xffff);
    }

    #[test]
    fn runs_and_bytes() {
        assert_eq!(runs(0b1011_0001), vec![0..1, 4..6, 7..8]);
        assert_eq!(runs(0xffff), vec![0..16]);
        assert!(runs(0).is_empty());
        assert_eq!(bytes(TrackNo(1), &(14..16), 60_000), TRACK_BYTES + 57_344..TRACK_BYTES + 60_000);
        assert_eq!(log_ranges(TrackNo(3), 0b110), vec![49..51]);
    }

    #[test]
    fn the_largest_grained_volume_fits_u32_grain_numbers() {
        let bits = MAX_GRAIN_TRACKS * GRAINS_PER_TRACK as u64;
        assert!(bits <= u32::MAX as u64, "{MAX_GRAIN_TRACKS} tracks have {bits} grains: not a u32 count");
        let last = TrackNo((MAX_GRAIN_TRACKS - 1) as u32);
        assert_eq!(log_ranges(last, 0x8000), vec![u32::MAX - 16..u32::MAX - 15]);
    }

    #[test]
    fn map_round_trips_through_a_bitmap() {
        let mut m = GrainMap::new();
        m.add(TrackNo(0), 0b1);
        m.add(TrackNo(7), 0x8001);
        m.add(TrackNo(7), 0b10);
        m.add(TrackNo(9), 0);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(TrackNo(7)), 0x8003);
        assert_eq!(GrainMap::from_bitmap(&m.to_bitmap()), m);
        let mut bits = TrackBitmap::new();
        bits.insert(TrackNo(7));
        m.retain_borrowed(&bits);
        assert_eq!(m.tracks().collect::<Vec<_>>(), vec![TrackNo(7)]);
        assert!(m.any_in(5..8) && !m.any_in(0..7));
    }
}
