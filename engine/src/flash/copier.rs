//! The background copier: copies a relationship's uncopied tracks in runs of adjacent
//! tracks (`next_run`), each run under the range locks of its tracks on both volumes, so it
//! interleaves with host I/O at run granularity and never copies a track a host is writing.

use super::ImageFlash;
use super::intercept::copy_track;
use super::locks::Claim;
use super::relationship::{FlashState, Relationship};
use crate::geometry::TrackNo;
use std::io;
use std::sync::Arc;

/// Tracks per run (16 = 1 MiB): long enough for throughput, short enough to yield.
pub const RUN_TRACKS: u32 = 16;
/// `copy_next_run(rel, FROM_CURSOR)`: continue where the relationship's cursor is.
pub const FROM_CURSOR: u32 = u32::MAX;
/// Runs in flight together (the copier's queue depth).
pub const BATCH_RUNS: usize = 64;
/// Tracks per batch at most (16 MiB), so host I/O waits for at most one batch's locks.
pub const BATCH_TRACKS: u32 = 256;

impl ImageFlash {
    /// Copy the next runs of `rel` at or after track `from` (wrapping around), up to
    /// [`BATCH_TRACKS`] tracks in [`BATCH_RUNS`] runs, all in flight together. The runs are
    /// reserved (the relationship's cursor moves past them) before copying, so several
    /// copier threads work on disjoint batches. Returns where to continue, or None when
    /// nothing is left to copy.
    pub fn copy_next_run(&self, rel: &Arc<Relationship>, from: u32) -> io::Result<Option<u32>> {
        let runs: Vec<std::ops::Range<u32>> = {
            let mut st = rel.state();
            if st.withdrawn || st.record.state == FlashState::TgtFailed {
                return Ok(None);
            }
            // Copier threads read the shared cursor here, under the lock, so each reserves a
            // batch the others will not take.
            let from = if from == FROM_CURSOR { st.cursor } else { from };
            let mut runs = Vec::new();
            let (mut at, mut tracks, mut wrapped) = (from, 0u32, false);
            while runs.len() < BATCH_RUNS && tracks < BATCH_TRACKS {
                match st.target_bits.next_run(at, RUN_TRACKS) {
                    Some(r) => {
                        tracks += r.len() as u32;
                        at = r.end;
                        runs.push(r);
                    }
                    None if !wrapped && from > 0 => {
                        wrapped = true;
                        at = 0;
                    }
                    None => break,
                }
                if wrapped && at >= from {
                    break;
                }
            }
            // Reserve these runs: another copier thread continues after them.
            if let Some(last) = runs.last() {
                st.cursor = last.end;
            }
            runs
        };
        if runs.is_empty() {
            return Ok(None);
        }
        // Mutant: copy whole windows from each run's start, ignoring which tracks are done.
        let runs: Vec<_> = if super::mutant::is(super::mutant::Mutant::CopierOverwrites) {
            runs.iter().map(|r| r.start..(r.start + RUN_TRACKS).min(rel.tracks() as u32)).collect()
        } else {
            runs
        };
        let claims = runs
            .iter()
            .flat_map(|r| [Claim::new(rel.source.handle(), r.clone()), Claim::new(rel.target.handle(), r.clone())])
            .collect();
        let _g = self.locks.lock(claims);
        if rel.state().withdrawn {
            return Ok(None);
        }
        // Bits may have been cleared by copy-on-write while we waited for the locks: copy
        // only the sub-runs still set.
        let overwrite = super::mutant::is(super::mutant::Mutant::CopierOverwrites);
        let mut subs = Vec::new();
        {
            let st = rel.state();
            for r in &runs {
                let mut t = r.start;
                while t < r.end {
                    if overwrite || st.target_bits.contains(TrackNo(t)) {
                        let s0 = t;
                        while t < r.end && (overwrite || st.target_bits.contains(TrackNo(t))) {
                            t += 1;
                        }
                        subs.push(s0..t);
                    } else {
                        t += 1;
                    }
                }
            }
        }
        for sub in &subs {
            rel.preserve(sub.clone())?;
        }
        match rel.source.copy_runs_to(&rel.target, &subs) {
            Ok(()) => {
                for sub in subs {
                    rel.mark_copied(sub)?;
                }
            }
            Err(e) => {
                // Find out which side failed, track by track (a target failure marks the
                // relationship Tgt Failed there).
                tracing::warn!("batched copy failed ({e}); retrying track by track");
                for sub in subs {
                    for t in sub {
                        if rel.state().target_bits.contains(TrackNo(t)) || overwrite {
                            copy_track(rel, TrackNo(t))?;
                        }
                    }
                }
            }
        }
        Ok(Some(runs.last().map_or(from, |r| r.end)))
    }

    /// Copy everything `rel` still borrows (tests, `-wait` paths without a copier thread).
    pub fn copy_all(&self, rel: &Arc<Relationship>) -> io::Result<()> {
        let mut at = 0;
        while let Some(next) = self.copy_next_run(rel, at)? {
            at = next;
        }
        Ok(())
    }
}
