//! Volume geometry: tracks, blocks, cylinders and the byte <-> track math. Pure, exact.
//!
//! * FB: 512-byte blocks; a track is 64 KiB (128 blocks); the last track may be partial.
//! * CKD 3390: 56,664-byte tracks, 15 per cylinder. Track n is stored at n x 64 KiB (a slot);
//!   the 8,872-byte tail of each slot is always zero. The exported size is tracks x 64 KiB.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Bytes per FB track and per CKD slot.
pub const TRACK_BYTES: u64 = 64 * 1024;
/// FB block size.
pub const BLOCK_BYTES: u64 = 512;
/// FB blocks per track.
pub const BLOCKS_PER_TRACK: u64 = TRACK_BYTES / BLOCK_BYTES;
/// Data bytes of one 3390 track.
pub const CKD_TRACK_BYTES: u64 = 56_664;
/// Tracks per 3390 cylinder.
pub const CKD_TRACKS_PER_CYL: u64 = 15;
/// Largest volume in tracks: track numbers are u32 (roaring bitmaps), 256 TiB of FB.
pub const MAX_TRACKS: u64 = u32::MAX as u64;
/// Largest 3390 cylinder count accepted (3390-A EAV architectural limit, 1,182,006 cyl).
pub const CKD_MAX_CYLINDERS: u64 = 1_182_006;
/// 3390 (non-EAV) limit.
pub const CKD_3390_MAX_CYLINDERS: u64 = 65_520;

/// A track number within one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrackNo(pub u32);

/// The shape of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Geometry {
    /// Fixed block: the size in 512-byte blocks.
    Fb { blocks: u64 },
    /// Count-key-data 3390: the size in cylinders.
    Ckd { cylinders: u64 },
}

impl Geometry {
    /// Number of tracks (the last FB track may be partial).
    pub fn tracks(&self) -> u64 {
        match *self {
            Geometry::Fb { blocks } => blocks.div_ceil(BLOCKS_PER_TRACK),
            Geometry::Ckd { cylinders } => cylinders * CKD_TRACKS_PER_CYL,
        }
    }

    /// Size a host sees (the NBD export size, the backing length).
    pub fn size_bytes(&self) -> u64 {
        match *self {
            Geometry::Fb { blocks } => blocks * BLOCK_BYTES,
            Geometry::Ckd { .. } => self.tracks() * TRACK_BYTES,
        }
    }

    /// Bytes of data in track `t` that belong to the volume: 64 KiB, less on a partial last
    /// FB track, 56,664 on CKD (the slot tail excluded).
    pub fn track_data_len(&self, t: TrackNo) -> u64 {
        match *self {
            Geometry::Fb { .. } => {
                let start = t.0 as u64 * TRACK_BYTES;
                (self.size_bytes().saturating_sub(start)).min(TRACK_BYTES)
            }
            Geometry::Ckd { .. } => CKD_TRACK_BYTES,
        }
    }

    /// Tracks touched by bytes `[offset, offset+len)`; empty for `len == 0`.
    pub fn tracks_of(offset: u64, len: u64) -> Range<u32> {
        if len == 0 {
            return 0..0;
        }
        let first = offset / TRACK_BYTES;
        let last = (offset + len - 1) / TRACK_BYTES;
        first as u32..(last + 1) as u32
    }

    /// Whether `[offset, offset+len)` touches a CKD slot tail (bytes 56,664..65,536 of a slot).
    pub fn touches_slot_tail(&self, offset: u64, len: u64) -> bool {
        match self {
            Geometry::Fb { .. } => false,
            Geometry::Ckd { .. } => {
                if len == 0 {
                    return false;
                }
                let end = offset + len;
                let mut slot = offset / TRACK_BYTES;
                while slot * TRACK_BYTES < end {
                    let tail = slot * TRACK_BYTES + CKD_TRACK_BYTES..(slot + 1) * TRACK_BYTES;
                    if offset < tail.end && end > tail.start {
                        return true;
                    }
                    slot += 1;
                }
                false
            }
        }
    }
}

/// How an FB capacity was given (`mkfbvol -type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapType {
    /// GiB (2^30 bytes): `-type ds`, the default.
    Ds,
    /// 10^9 bytes: `-type ess`.
    Ess,
    /// 512-byte blocks: `-type blocks`.
    Blocks,
}

impl CapType {
    /// Blocks for a capacity of `cap` units, or None on overflow.
    pub fn blocks(self, cap: u64) -> Option<u64> {
        match self {
            CapType::Ds => cap.checked_mul((1 << 30) / BLOCK_BYTES),
            // 10^9 / 512 = 1,953,125 exactly.
            CapType::Ess => cap.checked_mul(1_953_125),
            CapType::Blocks => Some(cap),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fb_one_gib_is_16384_tracks() {
        let g = Geometry::Fb { blocks: CapType::Ds.blocks(1).unwrap() };
        assert_eq!(g.tracks(), 16_384);
        assert_eq!(g.size_bytes(), 1 << 30);
        assert_eq!(g.track_data_len(TrackNo(16_383)), TRACK_BYTES);
    }

    #[test]
    fn ckd_3390_9() {
        let g = Geometry::Ckd { cylinders: 10_017 };
        assert_eq!(g.tracks(), 150_255);
        assert_eq!(g.size_bytes(), 150_255 * 65_536);
        assert_eq!(g.track_data_len(TrackNo(0)), 56_664);
        // 3390-3 and 3390-27 for good measure.
        assert_eq!(Geometry::Ckd { cylinders: 3_339 }.tracks(), 50_085);
        assert_eq!(Geometry::Ckd { cylinders: 32_760 }.tracks(), 491_400);
    }

    #[test]
    fn ess_volumes_have_partial_last_track() {
        // 1 GB (10^9 bytes) = 1,953,125 blocks = 15,258 full tracks + 101 blocks.
        let g = Geometry::Fb { blocks: CapType::Ess.blocks(1).unwrap() };
        assert_eq!(g.size_bytes(), 1_000_000_000);
        assert_eq!(g.tracks(), 15_259);
        assert_eq!(g.track_data_len(TrackNo(15_258)), 101 * 512);
        // -type blocks 200: one full track and a 72-block partial one.
        let g = Geometry::Fb { blocks: 200 };
        assert_eq!(g.tracks(), 2);
        assert_eq!(g.track_data_len(TrackNo(1)), 72 * 512);
        assert_eq!(g.track_data_len(TrackNo(2)), 0);
    }

    #[test]
    fn byte_ranges_to_tracks() {
        assert_eq!(Geometry::tracks_of(0, 0), 0..0);
        assert_eq!(Geometry::tracks_of(0, 1), 0..1);
        assert_eq!(Geometry::tracks_of(65_535, 2), 0..2);
        assert_eq!(Geometry::tracks_of(65_536, 65_536), 1..2);
        assert_eq!(Geometry::tracks_of(3 * 65_536 + 5, 200_000), 3..7);
    }

    #[test]
    fn slot_tails() {
        let g = Geometry::Ckd { cylinders: 1 };
        assert!(!g.touches_slot_tail(0, 56_664));
        assert!(g.touches_slot_tail(0, 56_665));
        assert!(g.touches_slot_tail(60_000, 10));
        assert!(!g.touches_slot_tail(65_536, 1000));
        assert!(g.touches_slot_tail(50_000, 100_000));
        assert!(!Geometry::Fb { blocks: 1000 }.touches_slot_tail(0, 512_000));
    }
}
