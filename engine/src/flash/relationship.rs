//! One FlashCopy relationship: its options, dates, state and the three bitmaps.
//!
//! * target bitmap: 1 = the track is not yet copied; the target's T0 data is still on the
//!   source. All ones at establish, O(containers), so establish costs milliseconds even
//!   for 8 TiB.
//! * source / target change recording (with `-record`): tracks written on either side
//!   since the last establish or resync. A resync copies `target | src | tgt`.
//! * the grain map of borrowed tracks whose written 4 KiB grains were already copied to the
//!   target (sub-track copy-on-write, `grain.rs`).

use super::grain::{self, GrainMap, GrainMask};
use crate::bitmap::TrackBitmap;
use crate::bitmap::intent::PersistentBitset;
use crate::geometry::TrackNo;
use crate::id::VolumeId;
use crate::volume::Volume;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};

/// Options given at establish (and replaced by resync).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashOptions {
    /// Change recording (`-record`; implies persist).
    pub record: bool,
    /// The relationship survives the end of the background copy (`-persist`).
    pub persist: bool,
    /// No background copy (`-nocp`): the target keeps borrowing uncopied tracks.
    pub nocopy: bool,
    /// Host writes to the target are refused (`-tgtinhibit`).
    pub tgtinhibit: bool,
    /// Part of a consistency group (`-freeze`): source writes park while the LSS is frozen.
    pub freeze: bool,
    /// The target may be a PPRC primary (`-tgtpprc`); stored and shown.
    pub tgtpprc: bool,
    /// The target must not be online to hosts (`-tgtoffline`): mkflash and resyncflash are
    /// refused while it has an open host session.
    pub tgtoffline: bool,
    /// The target must be space efficient (`-tgtse`).
    pub tgtse: bool,
    /// Sequence number (`-seqnum`).
    pub seqnum: u32,
}

/// Relationship state as `lsflash` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlashState {
    Valid,
    /// The target could not be written (ENOSPC, EIO): target I/O fails, source I/O goes on,
    /// the next resync is a full copy.
    TgtFailed,
    /// After an unclean shutdown where the T0 image could not be proven: never silently
    /// wrong.
    ValidationRequired,
}

/// The persistent part of a relationship (catalog record; bitmaps are checkpointed apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashRecord {
    pub source: VolumeId,
    pub target: VolumeId,
    pub options: FlashOptions,
    pub state: FlashState,
    pub revertible: bool,
    /// Unix seconds.
    pub created: i64,
    pub synced: i64,
    /// Tracks in the current increment (establish or the last resync or reverse), so the
    /// count of tracks copied survives a restart. Absent in older catalogs: 0.
    #[serde(default)]
    pub increment: u64,
}

/// Mutable state, under one mutex: short critical sections only (no I/O while held).
#[derive(Debug)]
pub struct RelState {
    pub record: FlashRecord,
    pub target_bits: TrackBitmap,
    pub src_changes: TrackBitmap,
    pub tgt_changes: TrackBitmap,
    /// Preserved grains of borrowed tracks (`grain.rs`); only tracks whose target bit is 1.
    pub grains: GrainMap,
    /// Tracks copied since establish or the last resync (counts the increment).
    pub copied: u64,
    /// Withdrawn: callers holding an Arc must stop using it.
    pub withdrawn: bool,
    /// Where the copier continues.
    pub cursor: u32,
    /// `rmflash -cp`: remove the relationship when the copy is done.
    pub remove_when_copied: bool,
    /// Generation of the last stored checkpoint.
    pub generation: u64,
}

#[derive(Debug)]
pub struct Relationship {
    pub source: Arc<Volume>,
    pub target: Arc<Volume>,
    /// Tracks whose copy landed since the last checkpoint (kill -9 safe); None without a
    /// store (the model test).
    pub copied: Option<PersistentBitset>,
    /// Grains copied by sub-track copy-on-write since the last checkpoint (kill -9 safe);
    /// None without a store, or for a volume too large for grain numbers.
    pub grain_log: Option<PersistentBitset>,
    state: Mutex<RelState>,
    /// Pre-image journal while revertible (see `revert.rs`); lock order: state, then revert.
    revert: Mutex<Option<super::revert::RevertState>>,
    /// Where a failure state is made durable (`persist::write_state`); unset without a store.
    pub state_file: std::sync::OnceLock<std::path::PathBuf>,
}

impl Relationship {
    pub fn new(source: Arc<Volume>, target: Arc<Volume>, record: FlashRecord, target_bits: TrackBitmap) -> Self {
        Self::with_copied(source, target, record, target_bits, None)
    }

    pub fn with_copied(
        source: Arc<Volume>,
        target: Arc<Volume>,
        record: FlashRecord,
        target_bits: TrackBitmap,
        copied: Option<PersistentBitset>,
    ) -> Self {
        Relationship {
            source,
            target,
            copied,
            grain_log: None,
            revert: Mutex::new(None),
            state_file: std::sync::OnceLock::new(),
            state: Mutex::new(RelState {
                record,
                target_bits,
                src_changes: TrackBitmap::new(),
                tgt_changes: TrackBitmap::new(),
                grains: GrainMap::new(),
                copied: 0,
                withdrawn: false,
                cursor: 0,
                remove_when_copied: false,
                generation: 0,
            }),
        }
    }

    /// The log that makes this relationship's grain marks survive kill -9 (`persist.rs`).
    pub fn with_grain_log(mut self, log: Option<PersistentBitset>) -> Self {
        self.grain_log = log;
        self
    }

    /// Whether host writes to the source copy grains rather than whole tracks: always
    /// without a store (the model), with one only where the grain log exists.
    pub fn grained(&self) -> bool {
        self.tracks() <= grain::MAX_GRAIN_TRACKS && (self.copied.is_none() || self.grain_log.is_some())
    }

    /// The kill -9 safe logs whose bits are relative to the last checkpoint: the copied set,
    /// then the grain log.
    pub fn logs(&self) -> impl Iterator<Item = &PersistentBitset> {
        self.copied.iter().chain(self.grain_log.iter())
    }

    pub fn state(&self) -> MutexGuard<'_, RelState> {
        // Bitmaps are only changed by whole operations under the lock; a panic elsewhere
        // leaves them as the last completed operation made them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn revert(&self) -> MutexGuard<'_, Option<super::revert::RevertState>> {
        self.revert.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ids(&self) -> (VolumeId, VolumeId) {
        (self.source.key().volume, self.target.key().volume)
    }

    /// Tracks of the pair (source and target have the same geometry).
    pub fn tracks(&self) -> u64 {
        self.source.geometry().tracks()
    }
}

impl RelState {
    /// The bitmaps a checkpoint stores: target, source changes, target changes, grains.
    pub fn bitmaps(&self) -> [TrackBitmap; 4] {
        [self.target_bits.clone(), self.src_changes.clone(), self.tgt_changes.clone(), self.grains.to_bitmap()]
    }

    /// Background copy wanted and not finished.
    pub fn copy_active(&self) -> bool {
        !self.withdrawn
            && self.record.state == FlashState::Valid
            && (!self.record.options.nocopy || self.remove_when_copied)
            && !self.target_bits.is_empty()
    }

    /// The relationship has done its job and goes: a non-persistent COPY relationship once
    /// copied, or one withdrawn with `-cp` once copied.
    pub fn finished(&self) -> bool {
        self.target_bits.is_empty()
            && ((!self.record.options.persist && !self.record.options.nocopy) || self.remove_when_copied)
    }
}

impl Relationship {
    /// Enter a failure state, durably before returning (the caller then lets a source
    /// write go on that would otherwise have needed this relationship's copy).
    /// If the state cannot be made durable, memory is left as it was and the error returned
    /// (the host write then fails rather than risk a silently wrong T0 after a crash).
    pub fn fail(&self, state: FlashState) -> std::io::Result<()> {
        if let Some(p) = self.state_file.get() {
            super::persist::write_state(p, state).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        self.state().record.state = state;
        Ok(())
    }

    /// Record that the copy of `tracks` landed on the target, then clear their target bits
    /// (in that order: a cleared bit must survive a crash). Returns how many were set.
    pub fn mark_copied(&self, tracks: std::ops::Range<u32>) -> std::io::Result<u64> {
        let guard = match &self.copied {
            Some(c) => Some(c.mark(tracks.clone()).map_err(|e| std::io::Error::other(e.to_string()))?),
            None => None,
        };
        let mut st = self.state();
        let mut n = 0;
        st.grains.remove_range(tracks.clone());
        for t in tracks {
            if st.target_bits.remove(crate::geometry::TrackNo(t)) {
                n += 1;
            }
        }
        st.copied += n;
        drop(st);
        drop(guard);
        Ok(n)
    }

    /// Record that grains `mask` of borrowed track `t` landed on the target: the grain log
    /// first (kill -9 safe), then memory, before the source write that needed them.
    pub fn mark_grains(&self, t: TrackNo, mask: GrainMask) -> std::io::Result<()> {
        let mut guards = Vec::new();
        if let Some(log) = &self.grain_log {
            for r in grain::log_ranges(t, mask) {
                guards.push(log.mark(r).map_err(|e| std::io::Error::other(e.to_string()))?);
            }
        }
        self.state().grains.add(t, mask);
        drop(guards);
        Ok(())
    }
}
