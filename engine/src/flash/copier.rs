//! The background copier: copies a relationship's uncopied tracks in runs of adjacent
//! tracks (`next_run`), each run under the range locks of its tracks on both volumes, so it
//! interleaves with host I/O at run granularity and never copies a track a host is writing.
//!
//! A copier thread owns a [`CopyWorker`]: on io_uring, its own [`CopyStream`] (a ring with
//! registered buffers) that is refilled run by run as completions arrive, so the device
//! always has up to [`STREAM_DEPTH`] runs per thread in flight; otherwise (the pread/pwrite
//! backend, the fault-injecting engine of the tests) each run is copied with blocking calls
//! through the volumes' engine. Both go through the same loop ([`ImageFlash::copy_some`]).
//!
//! Host I/O comes first: while hosts read or write the image, a thread keeps only
//! [`HOST_YIELD_DEPTH`] runs in flight and copies at most [`HOST_YIELD_RATE`], so a host's
//! copy-on-write neither queues behind a full copier queue nor waits on the target file's
//! write lock (ext4 serializes buffered writes per file) behind the copier's writes.
//!
//! Locks and the barrier: a run's locks are held until its copy completes. Before a copier
//! waits for a lock it does not get at once, it drains its own runs in flight (releasing
//! their locks): a barrier waiting for those locks (resync, withdraw) could otherwise wait
//! for a copier that waits behind the barrier.

use super::ImageFlash;
use super::intercept::copy_track;
use super::locks::{Claim, LockGuard};
use super::relationship::{FlashState, Relationship};
use crate::geometry::{TRACK_BYTES, TrackNo};
use crate::io::stream::{AbortOnUnwind, CopyJob, CopyStream, SLOT_BYTES};
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// Tracks per run (16 = 1 MiB, one stream buffer): long enough for throughput, short enough
/// to yield to host I/O.
pub const RUN_TRACKS: u32 = 16;
/// `copy_next_run(rel, FROM_CURSOR)`: continue where the relationship's cursor is.
pub const FROM_CURSOR: u32 = u32::MAX;
/// Tracks one [`ImageFlash::copy_next_run`] step reserves at most (16 MiB).
pub const BATCH_TRACKS: u32 = 256;
/// Runs in flight per copier thread on io_uring. The virtio disk of the team's machine
/// peaks at queue depth 32 to 64 (machine.md); two threads at 32 reach it.
pub const STREAM_DEPTH: usize = 64;
/// Runs in flight per copier thread while hosts do I/O on the image (seen within
/// [`HOST_QUIET_MS`]): the copier yields most of the device to them.
pub const HOST_YIELD_DEPTH: usize = 1;
/// Bytes per second one copier thread copies at most while hosts are active.
pub const HOST_YIELD_RATE: u64 = 64 << 20;
/// How recent a host I/O must be for the copier to yield.
pub const HOST_QUIET_MS: u64 = 20;

const _: () = assert!(RUN_TRACKS as u64 * TRACK_BYTES <= SLOT_BYTES as u64);

/// One copier thread's means of copying. See the module docs.
#[derive(Debug, Default)]
pub struct CopyWorker {
    stream: Option<CopyStream>,
    /// Creating a stream failed once: do not retry on every pass.
    no_stream: bool,
    depth: usize,
}

impl CopyWorker {
    /// A worker that streams on io_uring with `depth` runs in flight where the volumes'
    /// engine is io_uring (the ring is made on first use).
    pub fn new(depth: usize) -> CopyWorker {
        CopyWorker { stream: None, no_stream: false, depth }
    }

    /// A worker that copies each run with blocking calls.
    pub fn blocking() -> CopyWorker {
        CopyWorker { stream: None, no_stream: true, depth: 0 }
    }

    fn stream_for(&mut self, rel: &Relationship) -> Option<&mut CopyStream> {
        if self.no_stream || !rel.source.io().streams_copies() || !rel.target.io().streams_copies() {
            return None;
        }
        if self.stream.is_none() {
            match CopyStream::new(self.depth) {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    tracing::warn!("copier: no io_uring copy stream ({e}); copying with blocking calls");
                    self.no_stream = true;
                    return None;
                }
            }
        }
        self.stream.as_mut()
    }
}

/// A run whose locks are held while its copy jobs are in flight.
struct Held<'a> {
    _guard: LockGuard<'a>,
    subs: Vec<Range<u32>>,
    left: usize,
    failed: bool,
    /// Sub-runs are still being submitted.
    open: bool,
}

impl ImageFlash {
    /// One copier step (tests and the model): copy up to [`BATCH_TRACKS`] tracks of `rel`
    /// from track `from` (or the cursor), with blocking calls. Returns where to continue, or
    /// None when nothing is left to copy.
    pub fn copy_next_run(&self, rel: &Arc<Relationship>, from: u32) -> io::Result<Option<u32>> {
        let mut w = CopyWorker::blocking();
        let (n, next) = self.copy_some(rel, &mut w, from, BATCH_TRACKS)?;
        Ok((n > 0).then_some(next))
    }

    /// Copy everything `rel` still borrows (tests, paths without a copier thread), on this
    /// thread's copy stream where there is one.
    pub fn copy_all(&self, rel: &Arc<Relationship>) -> io::Result<()> {
        thread_local! {
            static WORKER: std::cell::RefCell<CopyWorker> = std::cell::RefCell::new(CopyWorker::new(8));
        }
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let mut at = 0;
            loop {
                let (n, next) = self.copy_some(rel, &mut w, at, u32::MAX)?;
                if n == 0 {
                    return Ok(());
                }
                at = next;
            }
        })
    }

    /// Copy uncopied tracks of `rel`, starting at `from` ([`FROM_CURSOR`]: the shared cursor,
    /// so several threads take disjoint runs), until about `budget` tracks were reserved or
    /// nothing is left. Every run is finished (copied or failed) before this returns.
    /// Returns (tracks reserved, where to continue); 0 tracks means nothing was left.
    pub fn copy_some(
        &self,
        rel: &Arc<Relationship>,
        worker: &mut CopyWorker,
        from: u32,
        budget: u32,
    ) -> io::Result<(u32, u32)> {
        let shared = from == FROM_CURSOR;
        let mut at = from;
        let mut reserved = 0u32;
        let mut held: Vec<Option<Held<'_>>> = Vec::new();
        // Dropped before `held`: a panic with copies in flight aborts before their locks go.
        let _unwind = AbortOnUnwind;
        let mut done = Vec::new();
        let mut result = Ok(());
        let mut last_tracks = 0u32;
        while reserved < budget {
            if last_tracks > 0 && self.host_active(HOST_QUIET_MS) {
                // Hosts first: finish our runs (their locks go), then pause as long as the last
                // run would take at HOST_YIELD_RATE, so the copier takes a small share of the
                // device and of the target file's write lock while hosts are busy.
                self.drain(rel, worker, &mut held, &mut done, &mut result, usize::MAX);
                let secs = f64::from(last_tracks) * TRACK_BYTES as f64 / HOST_YIELD_RATE as f64;
                std::thread::sleep(std::time::Duration::from_secs_f64(secs.min(0.05)));
            }
            let Some(run) = reserve(rel, shared, &mut at) else { break };
            reserved += run.len() as u32;
            last_tracks = run.len() as u32;
            // Mutant: copy whole windows from each run's start, ignoring which tracks are done.
            let overwrite = super::mutant::is(super::mutant::Mutant::CopierOverwrites);
            let run = if overwrite { run.start..(run.start + RUN_TRACKS).min(rel.tracks() as u32) } else { run };
            let claims =
                vec![Claim::new(rel.source.handle(), run.clone()), Claim::new(rel.target.handle(), run.clone())];
            let guard = match self.locks.try_lock(claims.clone()) {
                Some(g) => g,
                None => {
                    // Drain first: see the module docs (barriers).
                    self.drain(rel, worker, &mut held, &mut done, &mut result, usize::MAX);
                    self.locks.lock(claims)
                }
            };
            {
                let st = rel.state();
                if st.withdrawn || st.record.state == FlashState::TgtFailed {
                    break;
                }
            }
            // Bits may have been cleared by copy-on-write before we got the locks: copy
            // only the sub-runs still set. Tracks with grains already preserved on the target
            // (`grain.rs`) are finished one by one here, never overwritten by a whole copy.
            let ignore_grains = overwrite || super::mutant::is(super::mutant::Mutant::CopierIgnoresGrains);
            let (subs, partial) = {
                let st = rel.state();
                let borrowed = |t: u32| st.target_bits.contains(TrackNo(t));
                let partial = |t: u32| !ignore_grains && st.grains.get(TrackNo(t)) != 0;
                let subs = sub_runs(&run, |t| overwrite || (borrowed(t) && !partial(t)));
                let partial: Vec<u32> = run.clone().filter(|&t| borrowed(t) && partial(t)).collect();
                (subs, partial)
            };
            for t in partial {
                if let Err(e) = copy_track(rel, TrackNo(t)) {
                    result = Err(e);
                    break;
                }
            }
            if result.is_err() {
                break; // the run's locks go with `guard`
            }
            // File the run first, so completions reaped while its later sub-runs are being
            // submitted (a full stream drains) find it; `open` keeps it from finishing early.
            let tag = held.iter().position(Option::is_none).unwrap_or(held.len());
            if tag == held.len() {
                held.push(None);
            }
            held[tag] = Some(Held { _guard: guard, subs: Vec::new(), left: 0, failed: false, open: true });
            for sub in subs {
                if let Err(e) = self.start_copy(rel, worker, &mut held, &mut done, &mut result, tag, sub) {
                    result = Err(e);
                    break;
                }
            }
            let h = held[tag].as_mut().expect("a run stays filed while open");
            h.open = false;
            if h.left == 0 {
                let h = held[tag].take().expect("checked above");
                self.finish(rel, h, &mut result);
            }
            if result.is_err() {
                break;
            }
        }
        self.drain(rel, worker, &mut held, &mut done, &mut result, usize::MAX);
        result.map(|()| (reserved, at))
    }

    /// Start copying `sub` (its run, with its locks, is `held[tag]`): a hole becomes a discard at once;
    /// data goes to the stream (making room first) or is copied with blocking calls.
    #[allow(clippy::too_many_arguments)]
    fn start_copy<'a>(
        &'a self,
        rel: &Arc<Relationship>,
        worker: &mut CopyWorker,
        held: &mut Vec<Option<Held<'a>>>,
        done: &mut Vec<(u64, io::Result<()>)>,
        result: &mut io::Result<()>,
        tag: usize,
        sub: Range<u32>,
    ) -> io::Result<()> {
        rel.preserve(sub.clone())?;
        let (src, dst) = (&rel.source, &rel.target);
        let off = u64::from(sub.start) * TRACK_BYTES;
        let end = (u64::from(sub.end) * TRACK_BYTES).min(src.size());
        if end <= off {
            return Ok(());
        }
        let len = end - off;
        let fds = src.stream_fd(off, len).zip(dst.stream_fd(off, len));
        if let (Some(((sfd, soff), (dfd, doff))), Some(_)) = (fds, worker.stream_for(rel)) {
            if src.is_hole(off, len) {
                // A hole on an ese target; zeroed, still allocated blocks on a standard one.
                dst.discard(off, len)?;
                rel.mark_copied(sub)?;
                return Ok(());
            }
            // Room for this job; fewer runs in flight while hosts are busy (yield to them).
            let limit = if self.host_active(HOST_QUIET_MS) { HOST_YIELD_DEPTH } else { usize::MAX };
            while worker.stream.as_ref().is_some_and(|s| !s.has_room() || s.in_flight() >= limit) {
                self.drain(rel, worker, held, done, result, 1);
            }
            let job = CopyJob {
                tag: tag as u64,
                src: sfd,
                src_offset: soff,
                dst: dfd,
                dst_offset: doff,
                len: len as usize,
                keep: Box::new((Arc::clone(src), Arc::clone(dst))),
            };
            let stream = worker.stream.as_mut().expect("stream_for returned a stream");
            // SAFETY: `keep` holds both volumes (and so their descriptors) until the job's
            // completion is reaped.
            unsafe { stream.submit(job)? };
            let h = held[tag].as_mut().expect("a run stays filed while open");
            h.subs.push(sub);
            h.left += 1;
            return Ok(());
        }
        match src.copy_runs_to(dst, std::slice::from_ref(&sub)) {
            Ok(()) => {
                rel.mark_copied(sub)?;
            }
            Err(e) => {
                tracing::warn!("copy of tracks {sub:?} failed ({e}); retrying track by track");
                copy_tracks(rel, sub)?;
            }
        }
        Ok(())
    }

    /// Reap until `want` jobs finished (or none is left in flight), then finish every run
    /// whose jobs are all done.
    fn drain<'a>(
        &'a self,
        rel: &Arc<Relationship>,
        worker: &mut CopyWorker,
        held: &mut [Option<Held<'a>>],
        done: &mut Vec<(u64, io::Result<()>)>,
        result: &mut io::Result<()>,
        want: usize,
    ) {
        let Some(stream) = worker.stream.as_mut() else { return };
        if stream.in_flight() == 0 {
            return;
        }
        stream.reap(want, done);
        for (tag, res) in done.drain(..) {
            let Some(slot) = held.get_mut(tag as usize) else {
                tracing::error!("copier: completion for unknown run {tag}");
                continue;
            };
            let Some(h) = slot.as_mut() else { continue };
            h.left -= 1;
            if let Err(e) = res {
                tracing::warn!("copy job failed ({e}); retrying track by track");
                h.failed = true;
            }
            if h.left == 0 && !h.open {
                let h = slot.take().expect("checked above");
                self.finish(rel, h, result);
            }
        }
    }

    /// A run's copies are done: mark its tracks copied (or redo a failed run track by
    /// track, which marks Tgt Failed where the target fails), then release its locks.
    fn finish(&self, rel: &Arc<Relationship>, h: Held<'_>, result: &mut io::Result<()>) {
        for sub in h.subs {
            let r = if h.failed { copy_tracks(rel, sub) } else { rel.mark_copied(sub).map(drop) };
            if let Err(e) = r
                && result.is_ok()
            {
                *result = Err(e);
            }
        }
    }
}

/// Reserve the next run at or after `*at` (or the shared cursor), wrapping once to track 0.
fn reserve(rel: &Relationship, shared: bool, at: &mut u32) -> Option<Range<u32>> {
    let mut st = rel.state();
    if st.withdrawn || st.record.state == FlashState::TgtFailed {
        return None;
    }
    let from = if shared { st.cursor } else { *at };
    let run = st
        .target_bits
        .next_run(from, RUN_TRACKS)
        .or_else(|| if from > 0 { st.target_bits.next_run(0, RUN_TRACKS) } else { None })?;
    if shared {
        st.cursor = run.end;
    }
    *at = run.end;
    Some(run)
}

/// The maximal sub-ranges of `run` whose tracks satisfy `set`.
fn sub_runs(run: &Range<u32>, set: impl Fn(u32) -> bool) -> Vec<Range<u32>> {
    let mut subs = Vec::new();
    let mut t = run.start;
    while t < run.end {
        if set(t) {
            let s0 = t;
            while t < run.end && set(t) {
                t += 1;
            }
            subs.push(s0..t);
        } else {
            t += 1;
        }
    }
    subs
}

/// Copy `sub` one track at a time (the fallback that finds which side fails).
fn copy_tracks(rel: &Arc<Relationship>, sub: Range<u32>) -> io::Result<()> {
    let overwrite = super::mutant::is(super::mutant::Mutant::CopierOverwrites);
    for t in sub {
        if overwrite || rel.state().target_bits.contains(TrackNo(t)) {
            copy_track(rel, TrackNo(t))?;
        }
    }
    Ok(())
}
