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

impl ImageFlash {
    /// Copy the next run of `rel` at or after track `from`. Returns where to continue, or
    /// None when nothing is left to copy.
    pub fn copy_next_run(&self, rel: &Arc<Relationship>, from: u32) -> io::Result<Option<u32>> {
        let run = {
            let st = rel.state();
            if st.withdrawn || st.record.state == FlashState::TgtFailed {
                return Ok(None);
            }
            match st.target_bits.next_run(from, RUN_TRACKS).or_else(|| st.target_bits.next_run(0, RUN_TRACKS)) {
                Some(r) => r,
                None => return Ok(None),
            }
        };
        // Mutant: copy the whole window from the run's start, ignoring which tracks are done.
        let run = if super::mutant::is(super::mutant::Mutant::CopierOverwrites) {
            run.start..(run.start + RUN_TRACKS).min(rel.tracks() as u32)
        } else {
            run
        };
        let _g = self
            .locks
            .lock(vec![Claim::new(rel.source.handle(), run.clone()), Claim::new(rel.target.handle(), run.clone())]);
        if rel.state().withdrawn {
            return Ok(None);
        }
        // Bits may have been cleared by copy-on-write while we waited for the locks: copy the
        // sub-runs still set, each in one go (`Volume::copy_run_to`).
        let overwrite = super::mutant::is(super::mutant::Mutant::CopierOverwrites);
        let todo: Vec<u32> = {
            let st = rel.state();
            run.clone().filter(|&t| overwrite || st.target_bits.contains(TrackNo(t))).collect()
        };
        let mut i = 0;
        while i < todo.len() {
            let mut j = i + 1;
            while j < todo.len() && todo[j] == todo[j - 1] + 1 {
                j += 1;
            }
            let sub = todo[i]..todo[j - 1] + 1;
            rel.preserve(sub.clone())?;
            match rel.source.copy_run_to(&rel.target, sub.clone()) {
                Ok(()) => {
                    rel.mark_copied(sub)?;
                }
                Err(e) => {
                    // Find out which side failed, track by track (a target failure marks the
                    // relationship Tgt Failed there).
                    tracing::warn!("copy of tracks {sub:?} failed ({e}); retrying track by track");
                    for t in sub {
                        copy_track(rel, TrackNo(t))?;
                    }
                }
            }
            i = j;
        }
        Ok(Some(run.end))
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
