//! What a host may learn of a volume's layout besides its bytes: allocation as a read would
//! find it (NBD `base:allocation`), and the change-recording bitmaps of the relationships it
//! takes part in (NBD `qemu:dirty-bitmap:<source>-<target>.src|.tgt`).
//!
//! A target's uncopied tracks read from the source, so their allocation is the source's:
//! reporting the target file's own hole there would tell a client "zero" where a read returns
//! T0 data. The answer is taken under the same track locks a read takes, so a copy or a COW
//! cannot move data between the bitmap look-up and the SEEK_DATA calls.
//!
//! Change recording is reset by a resync (`ImageFlash::resync` clears both bitmaps once the
//! new target bitmap is stored), so after a resync a query shows only what was written since;
//! nothing here caches a bitmap.

use super::ImageFlash;
use super::intercept::tracks;
use crate::geometry::{TRACK_BYTES, TrackNo};
use crate::id::VolumeId;
use crate::volume::Volume;
use std::io;

/// Most runs one allocation answer holds; the host asks again from where it ends.
pub const MAX_RUNS: usize = 64 << 10;

/// A run of bytes: `set` is "allocated" for allocation, "changed" for change recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub len: u64,
    pub set: bool,
}

/// Which change-recording bitmap of a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writes to the source since establish or the last resync.
    Source,
    /// Writes to the target since establish or the last resync.
    Target,
}

fn push(out: &mut Vec<Span>, len: u64, set: bool) {
    match out.last_mut() {
        Some(last) if last.set == set => last.len += len,
        _ if len > 0 => out.push(Span { len, set }),
        _ => {}
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl ImageFlash {
    /// Allocation of `[offset, offset+len)` of `vol` as a host read sees it (see the module
    /// docs); may cover less than `len` when the backing is very fragmented.
    pub fn allocation(&self, vol: &Volume, offset: u64, len: u64) -> io::Result<Vec<Span>> {
        if offset.checked_add(len).is_none_or(|end| end > vol.size()) {
            return Err(einval());
        }
        let own = |v: &Volume, at: u64, n: u64, out: &mut Vec<Span>| -> io::Result<()> {
            for (l, set) in v.allocation(at, n, MAX_RUNS)? {
                push(out, l, set);
            }
            Ok(())
        };
        let mut out = Vec::new();
        if self.roles(vol.handle()).as_target.is_none() {
            own(vol, offset, len, &mut out)?;
            return Ok(out);
        }
        let r = tracks(vol, offset, len);
        let (_guard, roles) = self.lock_for(vol, &r);
        let Some(rel) = roles.as_target else {
            own(vol, offset, len, &mut out)?;
            return Ok(out);
        };
        // Runs answered by one side at a time, as `ImageFlash::read` reads them (a borrowed
        // track's preserved grains are the target's).
        let sides = super::intercept::Sides::of(&rel, &r)?;
        let end = offset + len;
        let mut at = offset;
        while at < end && out.len() < MAX_RUNS {
            let (from_source, stop) = sides.run_end(at, end);
            let side = if from_source { &rel.source } else { vol };
            let before: u64 = out.iter().map(|s| s.len).sum();
            own(side, at, stop - at, &mut out)?;
            let got: u64 = out.iter().map(|s| s.len).sum::<u64>() - before;
            if got < stop - at {
                break; // the run limit cut this side's answer short
            }
            at = stop;
        }
        Ok(out)
    }

    /// The recording relationships `vol` is the source or the target of, as (source, target).
    pub fn recordings(&self, vol: &Volume) -> Vec<(VolumeId, VolumeId)> {
        let roles = self.roles(vol.handle());
        roles
            .as_source
            .iter()
            .chain(roles.as_target.iter())
            .filter_map(|r| {
                let st = r.state();
                st.record.options.record.then_some((st.record.source, st.record.target))
            })
            .collect()
    }

    /// The `side` change-recording bits of relationship `source`:`target` over
    /// `[offset, offset+len)` of a volume of `size` bytes, one span per run of equal bits
    /// (64 KiB tracks, clipped to the range). `None`: no such recording relationship now.
    pub fn changes(
        &self,
        source: VolumeId,
        target: VolumeId,
        side: Side,
        offset: u64,
        len: u64,
    ) -> Option<io::Result<Vec<Span>>> {
        let rel = self.relationships().into_iter().find(|r| {
            let st = r.state();
            st.record.source == source && st.record.target == target && st.record.options.record
        })?;
        if offset.checked_add(len).is_none_or(|end| end > rel.source.size().min(rel.target.size())) {
            return Some(Err(einval()));
        }
        let st = rel.state();
        let bits = match side {
            Side::Source => &st.src_changes,
            Side::Target => &st.tgt_changes,
        };
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let t = at / TRACK_BYTES;
            let stop = ((t + 1) * TRACK_BYTES).min(end);
            push(&mut out, stop - at, bits.contains(TrackNo(t as u32)));
            at = stop;
        }
        Some(Ok(out))
    }
}
