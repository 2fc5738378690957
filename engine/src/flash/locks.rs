//! Range locks on tracks, owned by operations rather than threads.
//!
//! One table per storage image (FlashCopy relationships never leave an image). An operation
//! names every (volume, track range) it will touch — the host write's tracks, the same tracks
//! of each target it must copy-on-write, the source tracks a target fill reads — and takes
//! them all at once, or waits. All-at-once acquisition under one mutex has the effect of
//! DESIGN.md's ascending (volume, track) order: no two operations can each hold part of
//! what the other wants, so there is no deadlock, whatever the role of each volume. A guard
//! may be moved between threads, so a lock can span I/O completions. A whole-volume range is
//! the volume barrier that establish, resync, reverse and withdraw take.

use std::ops::Range;
use std::sync::{Condvar, Mutex};

/// A runtime volume handle: unique within a process (see `Volume::handle`).
pub type VolumeHandle = u64;

/// One claimed range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub volume: VolumeHandle,
    pub tracks: Range<u32>,
}

impl Claim {
    pub fn new(volume: VolumeHandle, tracks: Range<u32>) -> Claim {
        Claim { volume, tracks }
    }

    /// Every track of a volume: the barrier.
    pub fn whole(volume: VolumeHandle) -> Claim {
        Claim { volume, tracks: 0..u32::MAX }
    }

    fn overlaps(&self, other: &Claim) -> bool {
        self.volume == other.volume && self.tracks.start < other.tracks.end && other.tracks.start < self.tracks.end
    }
}

#[derive(Debug, Default)]
pub struct RangeLocks {
    held: Mutex<Table>,
    released: Condvar,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    held: Vec<(u64, Claim)>,
    /// Barriers waiting for their volumes to drain, by operation ID: later claims on those
    /// volumes queue behind them, so a steady stream of host I/O cannot starve a resync.
    barriers: Vec<(u64, VolumeHandle)>,
    /// Threads waiting in `lock`: a release wakes nobody (no system call) when there are none.
    waiters: usize,
}

/// Held claims; released on drop.
#[derive(Debug)]
pub struct LockGuard<'a> {
    table: &'a RangeLocks,
    id: u64,
}

impl RangeLocks {
    pub fn new() -> RangeLocks {
        RangeLocks::default()
    }

    /// Wait until none of `claims` overlaps a held claim, and no earlier barrier waits on
    /// one of their volumes, then hold them all.
    pub fn lock(&self, claims: Vec<Claim>) -> LockGuard<'_> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut t = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let barrier_vols: Vec<VolumeHandle> =
            claims.iter().filter(|c| c.tracks == (0..u32::MAX)).map(|c| c.volume).collect();
        t.barriers.extend(barrier_vols.iter().map(|&v| (id, v)));
        loop {
            let busy = claims.iter().any(|c| t.held.iter().any(|(_, h)| h.overlaps(c)))
                || claims.iter().any(|c| t.barriers.iter().any(|&(b, v)| b < id && v == c.volume));
            if !busy {
                t.barriers.retain(|&(b, _)| b != id);
                t.held.extend(claims.into_iter().filter(|c| c.tracks.start < c.tracks.end).map(|c| (id, c)));
                return LockGuard { table: self, id };
            }
            t.waiters += 1;
            t = self.released.wait(t).unwrap_or_else(|p| p.into_inner());
            t.waiters -= 1;
        }
    }

    /// Hold `claims` if that needs no waiting (same rules as [`RangeLocks::lock`]), else None.
    pub fn try_lock(&self, claims: Vec<Claim>) -> Option<LockGuard<'_>> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut t = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let busy = claims.iter().any(|c| t.held.iter().any(|(_, h)| h.overlaps(c)))
            || claims.iter().any(|c| t.barriers.iter().any(|&(_, v)| v == c.volume));
        if busy {
            return None;
        }
        t.held.extend(claims.into_iter().filter(|c| c.tracks.start < c.tracks.end).map(|c| (id, c)));
        Some(LockGuard { table: self, id })
    }

    /// Claims held now (tests, diagnostics).
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).held.len()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.table.held.lock().unwrap_or_else(|p| p.into_inner());
        t.held.retain(|(id, _)| *id != self.id);
        let wake = t.waiters > 0;
        drop(t);
        if wake {
            self.table.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn disjoint_claims_do_not_wait_and_overlaps_exclude() {
        let t = Arc::new(RangeLocks::new());
        let a = t.lock(vec![Claim::new(1, 0..4), Claim::new(2, 0..4)]);
        let b = t.lock(vec![Claim::new(1, 4..8)]);
        assert_eq!(t.held(), 3);
        let inside = Arc::new(AtomicUsize::new(0));
        let (t2, in2) = (t.clone(), inside.clone());
        let h = std::thread::spawn(move || {
            let _g = t2.lock(vec![Claim::new(2, 3..5)]);
            in2.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "overlapping claim was granted");
        drop(a);
        h.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
        drop(b);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn barrier_excludes_everything_on_its_volume() {
        let t = Arc::new(RangeLocks::new());
        let g = t.lock(vec![Claim::new(7, 100..101)]);
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            let _b = t2.lock(vec![Claim::whole(7)]);
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!h.is_finished());
        drop(g);
        h.join().unwrap();
    }

    #[test]
    fn a_waiting_barrier_is_not_starved_by_new_io() {
        let t = Arc::new(RangeLocks::new());
        let first = t.lock(vec![Claim::new(3, 0..1)]);
        let t2 = t.clone();
        let barrier = std::thread::spawn(move || {
            let _b = t2.lock(vec![Claim::whole(3)]);
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        // New I/O on the volume now queues behind the barrier instead of overtaking it.
        let t3 = t.clone();
        let later = std::thread::spawn(move || {
            let _g = t3.lock(vec![Claim::new(3, 5..6)]);
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!later.is_finished(), "new I/O overtook a waiting barrier");
        // Other volumes are not held up.
        drop(t.lock(vec![Claim::new(4, 5..6)]));
        drop(first);
        barrier.join().unwrap();
        later.join().unwrap();
    }

    #[test]
    fn many_threads_no_lost_exclusion() {
        let t = Arc::new(RangeLocks::new());
        let counters: Arc<Vec<AtomicUsize>> = Arc::new((0..8).map(|_| AtomicUsize::new(0)).collect());
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (t, c) = (t.clone(), counters.clone());
                std::thread::spawn(move || {
                    for n in 0..500u32 {
                        let track = (n * 7 + i) % 8;
                        let _g = t.lock(vec![Claim::new(1, track..track + 1), Claim::new(2, track..track + 1)]);
                        assert_eq!(c[track as usize].fetch_add(1, Ordering::SeqCst), 0);
                        c[track as usize].fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
