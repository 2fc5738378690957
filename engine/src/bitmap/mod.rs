//! Track bitmaps. `TrackBitmap` is the only type that sees roaring: range operations are
//! checked here, runs of adjacent tracks come out of `next_run`, and on-disk copies are
//! loaded with the validating deserializer.

pub mod checkpoint;

use crate::geometry::TrackNo;
use roaring::RoaringBitmap;
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

#[cfg(test)]
mod tests {
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
