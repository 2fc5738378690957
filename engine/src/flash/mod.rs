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
pub mod freeze;
pub mod grain;
pub mod intercept;
pub mod locks;
#[cfg(test)]
mod model;
pub mod mutant;
pub mod persist;
pub mod pprc;
pub mod relationship;
pub mod revert;
pub mod status;

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
    freeze: freeze::FreezeGate,
    store: std::sync::OnceLock<persist::FlashStore>,
    journals: Mutex<persist::Journals>,
    /// Serializes checkpoints with resync (both write generations).
    ckpt_lock: Mutex<()>,
    rels: RwLock<Vec<Arc<Relationship>>>,
    generation: AtomicU64,
    /// PPRC pairs' hooks by volume handle (`pprc.rs`).
    hooks: RwLock<pprc::Hooks>,
    /// Volumes whose journals checkpoints leave alone until their PPRC pairs are back.
    held: Mutex<std::collections::HashSet<u64>>,
    /// What each journal recovered at this start, until the first checkpoint covers it.
    recovered: Mutex<std::collections::HashMap<u64, TrackBitmap>>,
    /// When a host last read or changed a volume of this image (milliseconds on
    /// [`host_clock`]): the copier keeps fewer runs in flight while hosts are active.
    host_seen: AtomicU64,
}

/// Milliseconds since the first call (a process-wide monotonic clock for `host_seen`).
fn host_clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// Process-wide copy-work signal: bumped whenever any image may have new copy work; the
/// copier (one per process) waits on it.
static WORK: Mutex<u64> = Mutex::new(0);
static WORK_CV: Condvar = Condvar::new();

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

    /// A host I/O arrives (called by the intercept's entry points; one relaxed store).
    pub(crate) fn host_io(&self) {
        self.host_seen.store(host_clock(), Ordering::Relaxed);
    }

    /// Whether a host did I/O on this image within the last `ms` milliseconds.
    pub(crate) fn host_active(&self, ms: u64) -> bool {
        let seen = self.host_seen.load(Ordering::Relaxed);
        seen != 0 && host_clock().saturating_sub(seen) <= ms
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

    /// Install relationships under the barrier of all their volumes: no host write is in
    /// flight on any of them while the target bitmaps become all ones, so T0 is one instant
    /// for the whole group (`-freeze` consistency groups). `persist` runs under the barrier
    /// before anything is installed; if it fails, nothing is.
    pub fn install_group<E: From<crate::error::Error>>(
        &self,
        rels: Vec<Arc<Relationship>>,
        persist: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let claims =
            rels.iter().flat_map(|r| [Claim::whole(r.source.handle()), Claim::whole(r.target.handle())]).collect();
        let _barrier = self.locks.lock(claims);
        // A target that is a PPRC primary: all of it is new (T0), out of sync before the
        // catalog names the relationship.
        for r in &rels {
            let all = TrackBitmap::full(r.target.geometry().tracks());
            self.target_changed(&r.target, &all)?;
        }
        persist()?;
        self.rels.write().unwrap_or_else(|p| p.into_inner()).extend(rels);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
        Ok(())
    }

    /// Install one relationship (tests and the model).
    pub fn install(&self, rel: Arc<Relationship>) {
        let _ = self.install_group(vec![rel], || Ok::<(), crate::error::Error>(()));
    }

    /// Remove a relationship under the barrier; `persist` runs under it after the removal
    /// and, if it fails, the relationship is put back.
    pub fn remove_with<E: From<crate::error::Error>>(
        &self,
        rel: &Arc<Relationship>,
        persist: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let _barrier = self.lock_pair(rel);
        // Uncopied tracks of the target stop reading as the source's: a PPRC primary target
        // is out of sync there.
        let borrowed = rel.state().target_bits.clone();
        self.target_changed(&rel.target, &borrowed)?;
        let mut rels = self.rels.write().unwrap_or_else(|p| p.into_inner());
        let Some(at) = rels.iter().position(|r| Arc::ptr_eq(r, rel)) else { return Ok(()) };
        let removed = rels.remove(at);
        drop(rels);
        if let Err(e) = persist() {
            self.rels.write().unwrap_or_else(|p| p.into_inner()).insert(at, removed);
            return Err(e);
        }
        removed.state().withdrawn = true;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Remove a relationship by its volumes (tests and the model).
    pub fn remove(&self, source: u64, target: u64) -> Option<Arc<Relationship>> {
        let rel =
            self.relationships().into_iter().find(|r| r.source.handle() == source && r.target.handle() == target)?;
        let _ = self.remove_with(&rel, || Ok::<(), crate::error::Error>(()));
        Some(rel)
    }

    /// Establish: a new relationship whose target reads as the source does now (T0).
    pub fn establish(&self, source: Arc<Volume>, target: Arc<Volume>, record: FlashRecord) -> Arc<Relationship> {
        let bits = TrackBitmap::full(source.geometry().tracks());
        let rel = Arc::new(Relationship::new(source, target, record, bits));
        self.install(rel.clone());
        rel
    }

    /// Resync (`resyncflash`): under the barrier, the new target bitmap is what was still
    /// uncopied plus what changed on either side (or every track, `full`). Order, each step
    /// safe to crash after:
    /// 1. checkpoint the current bitmaps and clear the copied set's old epoch, so no copied
    ///    bit older than a stored checkpoint survives (nothing copies under the barrier);
    /// 2. store the new bitmaps as the next checkpoint (a crash now recovers "resynced");
    /// 3. the caller's `persist` (catalog: options, state, date); should it fail, the
    ///    checkpoint is put back to the old bitmaps so nothing changed;
    /// 4. memory. Returns the tracks to copy.
    pub fn resync<E: From<crate::error::Error>>(
        &self,
        rel: &Relationship,
        options: FlashOptions,
        now: i64,
        full: bool,
        persist: impl FnOnce(&TrackBitmap) -> Result<(), E>,
    ) -> Result<u64, E> {
        let _barrier = self.lock_pair(rel);
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = {
            let (s, t) = rel.ids();
            persist::pair_name(s, t)
        };
        let snapshot = |st: &relationship::RelState| st.bitmaps();
        self.fold_copied(rel, &name)?;
        let (next, old) = {
            let mut st = rel.state();
            let next = if full {
                TrackBitmap::full(rel.tracks())
            } else {
                resync_bits(&st.target_bits, &st.src_changes, &st.tgt_changes)
            };
            let old = snapshot(&st);
            if mutant::is(mutant::Mutant::ClearBeforePersist) {
                st.src_changes.clear();
                st.tgt_changes.clear();
            }
            (next, old)
        };
        if let Some(store) = self.store() {
            let empty = TrackBitmap::new();
            let g = rel.state().generation + 1;
            // No grains: the new point in time is the source as it is now.
            crate::bitmap::checkpoint::store(
                &store.dir,
                &name,
                g,
                &[next.clone(), empty.clone(), empty.clone(), empty],
            )?;
            rel.state().generation = g;
        }
        crate::bitmap::fail_point("resync-checkpointed")?;
        // A target that is a PPRC primary: the increment's tracks change (out of sync first).
        self.target_changed(&rel.target, &next)?;
        if let Err(e) = persist(&next) {
            if let Some(store) = self.store() {
                let g = rel.state().generation + 1;
                if crate::bitmap::checkpoint::store(&store.dir, &name, g, &old).is_ok() {
                    rel.state().generation = g;
                } else {
                    // The disk says "resynced": so must memory (copying more is always safe).
                    tracing::error!("resync {name}: catalog and undo both failed; keeping the resynced bitmaps");
                    let mut st = rel.state();
                    st.target_bits = next;
                    st.src_changes.clear();
                    st.tgt_changes.clear();
                    st.grains.clear();
                }
            }
            return Err(e);
        }
        crate::bitmap::fail_point("resync-persisted")?;
        let count = {
            let mut st = rel.state();
            st.src_changes.clear();
            st.tgt_changes.clear();
            st.target_bits = next;
            st.grains.clear();
            st.copied = 0;
            st.record.increment = st.target_bits.len();
            st.cursor = 0;
            st.record.options = options;
            st.record.synced = now;
            st.record.state = relationship::FlashState::Valid;
            st.target_bits.len()
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
        Ok(count)
    }

    /// Fold `rel`'s copied set and grain log into a durable checkpoint and clear them, unless
    /// they are clear already. A resync needs them clear before it stores its new bitmaps (a
    /// stale copied bit would otherwise subtract a track of the new increment at recovery,
    /// a stale grain bring back a grain of the old point in time). The caller holds the
    /// checkpoint lock.
    fn fold_copied(&self, rel: &Relationship, name: &str) -> crate::error::Result<()> {
        if self.store().is_none() {
            return Ok(());
        }
        // An earlier fold whose checkpoint failed leaves its bits in the epoch the next
        // begin flips into, so one round may not clear everything: repeat (under a resync's
        // barrier nothing marks, so the second round clears the rest).
        for _ in 0..3 {
            if rel.logs().all(|c| c.is_clear()) {
                return Ok(());
            }
            self.checkpoint_one(rel, name)?;
        }
        if rel.logs().all(|c| c.is_clear()) {
            Ok(())
        } else {
            // Only reachable while copies still mark (no barrier: `settle`); resync holds one.
            Err(crate::error::Error::new(
                crate::error::ErrorKind::Io,
                name,
                "copied set still marked after three checkpoints",
            ))
        }
    }

    /// Checkpoint `rel` alone and clear its logs: begin their epochs, store the bitmaps as
    /// the next generation, end the epochs. The caller holds the checkpoint lock.
    pub(crate) fn checkpoint_one(&self, rel: &Relationship, name: &str) -> crate::error::Result<()> {
        let Some(store) = self.store() else { return Ok(()) };
        let mut tokens = Vec::new();
        for c in rel.logs() {
            tokens.push(c.begin_epoch()?);
        }
        let (g, bits) = {
            let st = rel.state();
            (st.generation + 1, st.bitmaps())
        };
        crate::bitmap::checkpoint::store(&store.dir, name, g, &bits)?;
        rel.state().generation = g;
        for (c, token) in rel.logs().zip(tokens) {
            c.end_epoch(token)?;
        }
        Ok(())
    }

    /// Finish every borrowed track of `rel` whose grains are partly preserved (copy the
    /// rest, clear the bit), so an operation that knows only whole tracks (reverse,
    /// `setflashrevertible`) may follow. The caller holds the pair's barrier.
    pub(crate) fn finish_grains(&self, rel: &Relationship) -> crate::error::Result<()> {
        let tracks: Vec<crate::geometry::TrackNo> = rel.state().grains.tracks().collect();
        for t in tracks {
            intercept::copy_track(rel, t)
                .map_err(|e| crate::error::Error::io(format!("{}:{}", rel.ids().0, rel.ids().1), &e))?;
        }
        Ok(())
    }

    /// A copy just finished: fold its copied set now, off the path of the next resync (which
    /// then has two fewer syncs to make before it answers).
    pub fn settle(&self, rel: &Relationship) -> crate::error::Result<()> {
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        if rel.state().withdrawn {
            return Ok(());
        }
        let (s, t) = rel.ids();
        self.fold_copied(rel, &persist::pair_name(s, t))
    }

    /// The barrier of a relationship's two volumes.
    pub(crate) fn lock_pair(&self, rel: &Relationship) -> locks::LockGuard<'_> {
        self.locks.lock(vec![Claim::whole(rel.source.handle()), Claim::whole(rel.target.handle())])
    }

    /// The relationships changed: I/O re-checks its locks, the copier looks again.
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
    }

    /// Records of every relationship (for the catalog).
    pub fn records(&self) -> Vec<FlashRecord> {
        self.relationships().iter().map(|r| r.state().record.clone()).collect()
    }

    /// Reverse `rel` (its copy is complete): under the barrier the relationship is replaced
    /// by one running target -> source whose uncopied set is what changed on either side
    /// since the last increment. `persist` runs under the barrier first.
    pub fn reverse<E>(
        &self,
        rel: &Arc<Relationship>,
        record: FlashRecord,
        logs: Option<persist::RelLogs>,
        persist: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<crate::error::Error>,
    {
        let _barrier = self.lock_pair(rel);
        self.finish_grains(rel)?;
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        let bits = {
            let st = rel.state();
            resync_bits(&st.target_bits, &st.src_changes, &st.tgt_changes)
        };
        // The old source becomes the target: a PPRC primary there is out of sync at these tracks.
        self.target_changed(&rel.source, &bits)?;
        // The reversed pair's first checkpoint is durable before the catalog names it: a
        // crash right after must not find "no checkpoint" (= every track borrowed).
        if let Some(store) = self.store() {
            let empty = TrackBitmap::new();
            let name = persist::pair_name(record.source, record.target);
            crate::bitmap::checkpoint::store(
                &store.dir,
                &name,
                1,
                &[bits.clone(), empty.clone(), empty.clone(), empty],
            )?;
        }
        persist()?;
        rel.state().withdrawn = true;
        let mut record = record;
        record.increment = bits.len();
        let (copied, grain_log) = match logs {
            Some(l) => (Some(l.copied), l.grains),
            None => (None, None),
        };
        let reversed = Arc::new(
            Relationship::with_copied(rel.target.clone(), rel.source.clone(), record, bits, copied)
                .with_grain_log(grain_log),
        );
        reversed.state().generation = 1;
        if let Some(store) = self.store() {
            let _ = reversed.state_file.set(store.state_path(reversed.ids().0, reversed.ids().1));
        }
        let mut rels = self.rels.write().unwrap_or_else(|p| p.into_inner());
        rels.retain(|r| !Arc::ptr_eq(r, rel));
        rels.push(reversed);
        drop(rels);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.kick();
        Ok(())
    }

    pub fn work_count(&self) -> u64 {
        work_count()
    }

    /// Wake the copier (and `-wait` waiters).
    pub fn kick(&self) {
        *WORK.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        WORK_CV.notify_all();
    }

    /// Wait until `kick` was called after `seen`, or the timeout passes; returns the new count.
    pub fn wait_work(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        wait_work(seen, timeout)
    }
}

/// Wake every waiter (shutdown).
pub fn kick_all() {
    *WORK.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    WORK_CV.notify_all();
}

pub fn work_count() -> u64 {
    *WORK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait until copy work was signalled after `seen`, or the timeout passes.
pub fn wait_work(seen: u64, timeout: std::time::Duration) -> u64 {
    let g = WORK.lock().unwrap_or_else(|p| p.into_inner());
    let (g, _) = WORK_CV.wait_timeout_while(g, timeout, |n| *n == seen).unwrap_or_else(|p| p.into_inner());
    *g
}

/// New target bitmap of a resync: what was still uncopied plus what changed on either side.
pub fn resync_bits(target: &TrackBitmap, src: &TrackBitmap, tgt: &TrackBitmap) -> TrackBitmap {
    let mut next = target.clone();
    next.union_with(src);
    next.union_with(tgt);
    next
}
