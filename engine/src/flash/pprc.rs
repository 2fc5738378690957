//! PPRC at the intercept: the hooks the mirror layer (`crate::mirror`) installs on a volume
//! that is a PPRC primary or secondary, and where the intercept calls them (DESIGN.md "How
//! data flows"):
//!
//! * step 2½ [`PairHook::gate`]: a primary whose LSS holds writes (`freezepprc`, or a
//!   `-consistgrp` pair that suspended) parks the write before any lock is taken;
//! * step 3 [`PairHook::host_access`]: a secondary refuses host writes (EPERM), and host
//!   reads unless `-tgtread`, until failed over. Remote apply skips this check: it is how
//!   the secondary's bytes change;
//! * step 7 [`PairHook::record`]: with the volume's journal marked, the pair sets the
//!   tracks' out-of-sync bits (so kill -9 and power loss keep them, as change recording);
//! * step 8 [`PairHook::send`]: a Metro Mirror primary sends the change to the secondary in
//!   parallel with the local write; the intercept waits for both, under the write's track
//!   locks (so two writes of one track reach the secondary in order). The copier and every
//!   command never hold a track lock across the link. Known limit: pairs mirrored both ways
//!   with FlashCopy at both ends can make two such writes wait for each other's locks until
//!   `MIRROR_TIMEOUT`, then suspend (test `pprc_review::r5`, ignored);
//! * FLUSH reaches the secondary ([`PairHook::flush`]);
//! * every checkpoint stores each pair's out-of-sync set between the journal's epoch flip
//!   and its end ([`PairHook::checkpoint`]), so no intent bit is cleared before a durable
//!   out-of-sync set covers it.
//!
//! This module knows nothing of links: the mirror layer implements the trait.

use super::ImageFlash;
use super::locks::Claim;
use crate::bitmap::TrackBitmap;
use crate::volume::Volume;
use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// What a mirrored modification does at the secondary.
#[derive(Debug, Clone, Copy)]
pub enum Mirrored<'a> {
    Write {
        data: &'a [u8],
        fua: bool,
    },
    /// TRIM and WRITE_ZEROES: zeros at the secondary.
    Zero {
        len: u64,
    },
}

/// A mirrored send in flight: waits for the secondary's answer.
pub type InFlight = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// What a PPRC pair needs from the intercept of one of its volumes.
pub trait PairHook: Send + Sync + std::fmt::Debug {
    /// Host access (never asked for remote apply): a secondary refuses.
    fn host_access(&self, _write: bool) -> io::Result<()> {
        Ok(())
    }
    /// Before any lock: park while writes are held (queue full).
    fn gate(&self) {}
    /// Whether host writes are recorded here (then the volume's journal is marked first).
    fn records(&self) -> bool {
        false
    }
    /// Step 7, with the journal marked and the tracks locked: they are about to change.
    fn record(&self, _tracks: &Range<u32>) {}
    /// Step 8: start the mirrored send, if the pair mirrors synchronously now.
    fn send(self: Arc<Self>, _tracks: &Range<u32>, _offset: u64, _m: Mirrored<'_>) -> Option<InFlight> {
        None
    }
    /// The local write of a change whose mirrored send succeeded failed: the secondary may
    /// now hold what the primary does not; the tracks are out of sync again.
    fn local_failed(&self, _tracks: &Range<u32>) {}
    /// FLUSH at this volume.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    /// Whether remote apply may change this volume (it is a PPRC secondary).
    fn accepts_remote(&self) -> bool {
        false
    }
    /// A FlashCopy changed the volume's logical content at these tracks (it became a target,
    /// was resynced or reversed onto): called under the volume's barrier, before the
    /// relationship's catalog commit. A primary adds them to its out-of-sync set durably.
    fn changed(&self, _tracks: &TrackBitmap) -> crate::error::Result<()> {
        Ok(())
    }
    /// Store the out-of-sync set durably (the caller is inside a checkpoint: journal epochs
    /// flipped, not yet ended).
    fn checkpoint(&self) -> crate::error::Result<()> {
        Ok(())
    }
}

pub(super) type Hooks = HashMap<u64, Vec<Arc<dyn PairHook>>>;

impl ImageFlash {
    /// The hooks of a volume (empty for nearly every volume: one read lock, no allocation).
    pub(crate) fn hooks(&self, volume: u64) -> Vec<Arc<dyn PairHook>> {
        let h = self.hooks.read().unwrap_or_else(|p| p.into_inner());
        if h.is_empty() {
            return Vec::new();
        }
        h.get(&volume).cloned().unwrap_or_default()
    }

    /// Every hook of the image (checkpoints).
    pub(crate) fn all_hooks(&self) -> Vec<Arc<dyn PairHook>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).values().flatten().cloned().collect()
    }

    /// Checkpoints leave these volumes' journals alone (their pairs are not restored yet,
    /// and their recovered tracks must reach the pairs first); `install_hook` ends it.
    pub fn hold_journals(&self, volumes: &[u64]) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).extend(volumes.iter().copied());
    }

    /// Install a pair's hook on `vol` under the volume's barrier: no write is in flight
    /// while it arrives, so every later write is recorded (and, if it mirrors, sent).
    pub fn install_hook(&self, vol: &Volume, hook: Arc<dyn PairHook>) {
        let _barrier = self.locks.lock(vec![Claim::whole(vol.handle())]);
        self.hooks.write().unwrap_or_else(|p| p.into_inner()).entry(vol.handle()).or_default().push(hook);
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&vol.handle());
        self.bump();
    }

    /// Replace hook `old` (if any) by `new` on `vol` under one barrier, running `between`
    /// in it: no write of the volume runs unhooked or half-hooked (failover, failback).
    pub fn swap_hook<T>(
        &self,
        vol: &Volume,
        old: Option<&Arc<dyn PairHook>>,
        new: Option<Arc<dyn PairHook>>,
        between: impl FnOnce() -> T,
    ) -> T {
        let _barrier = self.locks.lock(vec![Claim::whole(vol.handle())]);
        let mut h = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        let list = h.entry(vol.handle()).or_default();
        if let Some(old) = old {
            list.retain(|x| !std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(old)));
        }
        if let Some(new) = new {
            list.push(new);
        }
        if list.is_empty() {
            h.remove(&vol.handle());
        }
        drop(h);
        let out = between();
        self.bump();
        out
    }

    /// Tell the hooks of `vol` that a FlashCopy changed these tracks (the caller holds the
    /// volume's barrier).
    pub(super) fn target_changed(&self, vol: &Volume, tracks: &TrackBitmap) -> crate::error::Result<()> {
        if tracks.is_empty() {
            return Ok(());
        }
        for h in self.hooks(vol.handle()) {
            h.changed(tracks)?;
        }
        Ok(())
    }

    /// Remove a hook (compared by address) under the volume's barrier.
    pub fn remove_hook(&self, vol: &Volume, hook: &Arc<dyn PairHook>) {
        let _barrier = self.locks.lock(vec![Claim::whole(vol.handle())]);
        let mut h = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = h.get_mut(&vol.handle()) {
            list.retain(|x| !std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(hook)));
            if list.is_empty() {
                h.remove(&vol.handle());
            }
        }
        drop(h);
        self.bump();
    }

    /// Run `f` under `vol`'s barrier: no host write of the volume is in flight meanwhile
    /// (a pair changes how it mirrors, or takes a consistent out-of-sync set).
    pub fn with_barrier<T>(&self, vol: &Volume, f: impl FnOnce() -> T) -> T {
        let _barrier = self.locks.lock(vec![Claim::whole(vol.handle())]);
        f()
    }

    /// Lock `vol`'s tracks `r` (no host write of them runs meanwhile) and run `f`: the PPRC
    /// copier reads a track this way, then sends it without the lock.
    pub fn with_tracks<T>(&self, vol: &Volume, r: Range<u32>, f: impl FnOnce() -> T) -> T {
        let _guard = self.locks.lock(vec![Claim::new(vol.handle(), r)]);
        f()
    }

    /// The tracks the volume's journal recovered when it was opened at this start, until
    /// the first checkpoint covers them (a pair restored after the FlashCopy relationships
    /// of the same volume still finds them).
    pub fn recovered_changes(&self, volume: u64) -> Option<TrackBitmap> {
        self.recovered.lock().unwrap_or_else(|p| p.into_inner()).get(&volume).cloned()
    }

    /// Remote apply: a mirrored write or copied track from the PPRC primary, through the
    /// intercept (FlashCopy relationships of the secondary stay correct), without the host
    /// access check that refuses hosts.
    pub fn apply_write(&self, vol: &Volume, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.modify_as(vol, offset, super::intercept::Change::Write { data, fua }, true)
    }

    /// Remote apply of zeros (a mirrored TRIM or WRITE_ZEROES).
    pub fn apply_zero(&self, vol: &Volume, offset: u64, len: u64) -> io::Result<()> {
        self.modify_as(vol, offset, super::intercept::Change::Zero { len, may_trim: true }, true)
    }
}
