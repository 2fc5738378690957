//! FlashCopy within one storage image: relationships, the host-I/O intercept, the copier.
//!
//! [`ImageFlash`] owns an image's relationships and its range-lock table. Every operation
//! that changes a volume's bytes goes through [`ImageFlash::write`] / `trim` /
//! `write_zeroes` (the intercept); target reads go through [`ImageFlash::read`] (uncopied
//! tracks come from the source). Establish, resync and withdraw take a per-volume barrier
//! (a whole-volume range lock) so they install bitmaps between host writes, never in the
//! middle of one.
//!
//! A relationship-list generation closes the gap between choosing the locks an I/O needs
//! (which depends on the relationships of its volume) and holding them: after locking, an
//! I/O re-checks the generation and starts over if a relationship came or went.

pub mod copier;
pub mod intercept;
pub mod locks;
#[cfg(test)]
mod model;
pub mod mutant;
pub mod relationship;

use crate::bitmap::TrackBitmap;
use crate::volume::Volume;
use locks::{Claim, RangeLocks};
use relationship::{FlashOptions, FlashRecord, Relationship};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// The FlashCopy side of one storage image.
#[derive(Debug, Default)]
pub struct ImageFlash {
    locks: RangeLocks,
    rels: RwLock<Vec<Arc<Relationship>>>,
    generation: AtomicU64,
    /// Bumped whenever there may be new copy work; the copier waits on it.
    work: Mutex<u64>,
    work_cv: Condvar,
}

/// The relationships a volume takes part in.
#[derive(Debug, Default)]
pub struct Roles {
    pub as_source: Vec<Arc<Relationship>>,
    pub as_target: Option<Arc<Relationship>>,
}

impl ImageFlash {
    pub fn new() -> ImageFlash {
        ImageFlash::default()
    }

    pub fn locks(&self) -> &RangeLocks {
        &self.locks
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn relationships(&self) -> Vec<Arc<Relationship>> {
        self.rels.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn roles(&self, volume: u64) -> Roles {
        let rels = self.rels.read().unwrap_or_else(|p| p.into_inner());
        let mut roles = Roles::default();
        for r in rels.iter() {
            if r.source.handle() == volume {
                roles.as_source.push(r.clone());
            }
            if r.target.handle() == volume {
                roles.as_target = Some(r.clone());
            }
        }
        roles
    }

    /// Install a relationship under the barrier of both volumes: no host write is in flight
    /// on either while the target bitmap becomes all ones, so T0 is one instant.
    pub fn install(&self, rel: Arc<Relationship>) {
        let _barrier = self.locks.lock(vec![Claim::whole(rel.source.handle()), Claim::whole(rel.target.handle())]);
        self.rels.write().unwrap_or_else(|p| p.into_inner()).push(rel);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
    }

    /// Remove a relationship under the barrier; returns it if it was there.
    pub fn remove(&self, source: u64, target: u64) -> Option<Arc<Relationship>> {
        let _barrier = self.locks.lock(vec![Claim::whole(source), Claim::whole(target)]);
        let mut rels = self.rels.write().unwrap_or_else(|p| p.into_inner());
        let at = rels.iter().position(|r| r.source.handle() == source && r.target.handle() == target)?;
        let rel = rels.remove(at);
        rel.state().withdrawn = true;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Some(rel)
    }

    /// Run `f` on a relationship's state under the barrier of both its volumes (resync,
    /// reverse, revert: bitmaps change between host writes).
    pub fn with_barrier<T>(&self, rel: &Relationship, f: impl FnOnce(&mut relationship::RelState) -> T) -> T {
        let _barrier = self.locks.lock(vec![Claim::whole(rel.source.handle()), Claim::whole(rel.target.handle())]);
        let out = f(&mut rel.state());
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
        out
    }

    /// Establish: a new relationship whose target reads as the source does now (T0).
    pub fn establish(&self, source: Arc<Volume>, target: Arc<Volume>, record: FlashRecord) -> Arc<Relationship> {
        let bits = TrackBitmap::full(source.geometry().tracks());
        let rel = Arc::new(Relationship::new(source, target, record, bits));
        self.install(rel.clone());
        rel
    }

    /// Resync (`resyncflash`): under the barrier, the new target bitmap is what was still
    /// uncopied plus what changed on either side; then both change bitmaps are cleared and
    /// the increment's copy count restarts. `persist` runs under the barrier after the new
    /// bitmap is computed and before the change bitmaps are cleared: if it fails, nothing
    /// changed (the caller persists the new generation there). Returns the tracks to copy.
    pub fn resync<E>(
        &self,
        rel: &Relationship,
        options: FlashOptions,
        now: i64,
        persist: impl FnOnce(&TrackBitmap) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.with_barrier(rel, |st| {
            let next = resync_bits(&st.target_bits, &st.src_changes, &st.tgt_changes);
            let mut persist = Some(persist);
            if !mutant::is(mutant::Mutant::ClearBeforePersist)
                && let Some(p) = persist.take()
            {
                p(&next)?;
            }
            st.src_changes.clear();
            st.tgt_changes.clear();
            if let Some(p) = persist.take() {
                p(&next)?;
            }
            st.target_bits = next;
            st.copied = 0;
            st.record.options = options;
            st.record.synced = now;
            Ok(st.target_bits.len())
        })
    }

    /// Records of every relationship (for the catalog).
    pub fn records(&self) -> Vec<FlashRecord> {
        self.relationships().iter().map(|r| r.state().record.clone()).collect()
    }

    /// Wake the copier.
    pub fn kick(&self) {
        *self.work.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.work_cv.notify_all();
    }

    /// Wait until `kick` was called after `seen`, or the timeout passes; returns the new count.
    pub fn wait_work(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let g = self.work.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self.work_cv.wait_timeout_while(g, timeout, |n| *n == seen).unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// New target bitmap of a resync: what was still uncopied plus what changed on either side.
pub fn resync_bits(target: &TrackBitmap, src: &TrackBitmap, tgt: &TrackBitmap) -> TrackBitmap {
    let mut next = target.clone();
    next.union_with(src);
    next.union_with(tgt);
    next
}
