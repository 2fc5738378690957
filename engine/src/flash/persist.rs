//! Durability of an image's FlashCopy state (DESIGN.md "Durability"), on the journal of
//! `crate::bitmap`:
//!
//! * each volume in a relationship has a [`VolumeJournal`] (write-intent bitset + activity
//!   log): the intercept marks a write's tracks before setting change-recording bits and
//!   before submitting the data; recovery ORs what it returns into the change recording of
//!   every relationship of the volume;
//! * each relationship has a `Copied` [`PersistentBitset`]: a copy (COW, fill, copier) sets
//!   the track's bit after the target write landed and before the in-memory target bit is
//!   cleared, so a cleared target bit survives kill -9 and a track is never copied twice
//!   (a second copy after the source changed would break T0);
//! * each relationship has a `Grains` [`PersistentBitset`] too: sub-track copy-on-write
//!   (`grain.rs`) sets a grain's bit after its target write landed and before the source
//!   write over it is submitted; recovery adds it to the checkpoint's grains;
//! * bitmaps are checkpointed off the I/O path with generations: begin the epochs of every
//!   journal and copied set, snapshot, store, end the epochs.
//!
//! Files live in `<image>/flash/`: `<VOL>.intent`, `<VOL>.alog`, `<SRC>_<TGT>.copied`,
//! `<SRC>_<TGT>.grains` and the checkpoints `<SRC>_<TGT>.*`. `FLASHTRACK_BOOT_ID` overrides the kernel's boot ID (a
//! test hook that simulates a reboot, i.e. power loss, between two runs).

use super::ImageFlash;
use super::grain::{self, GrainMap};
use super::relationship::{FlashState, Relationship};
use crate::bitmap::intent::{BitsetConfig, BitsetRole, PersistentBitset};
use crate::bitmap::journal::{JournalConfig, RecoveryKind, Shutdown, VolumeJournal};
use crate::bitmap::{TrackBitmap, checkpoint};
use crate::error::{Error, ErrorKind, Result};
use crate::id::VolumeId;
use crate::io::IoEngine;
use crate::volume::Volume;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment override of the boot ID (tests simulate power loss with it).
pub const BOOT_ID_ENV: &str = "FLASHTRACK_BOOT_ID";

/// Where one image's FlashCopy files are.
#[derive(Debug, Clone)]
pub struct FlashStore {
    pub dir: PathBuf,
    pub io: Arc<dyn IoEngine>,
    /// Boot ID to own files as (None: `FLASHTRACK_BOOT_ID`, else the kernel's).
    pub boot: Option<String>,
}

pub fn boot_id() -> Result<String> {
    match std::env::var(BOOT_ID_ENV) {
        Ok(b) if !b.is_empty() => Ok(b),
        _ => crate::bitmap::boot_id(),
    }
}

pub fn pair_name(s: VolumeId, t: VolumeId) -> String {
    format!("{s}_{t}")
}

fn tracks_u32(v: &Volume) -> u32 {
    v.geometry().tracks().min(u32::MAX as u64) as u32
}

impl FlashStore {
    pub fn new(image_dir: &Path, io: Arc<dyn IoEngine>, boot: Option<String>) -> Result<FlashStore> {
        let dir = image_dir.join("flash");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), &e))?;
        Ok(FlashStore { dir, io, boot })
    }

    fn boot_id(&self) -> Result<String> {
        match &self.boot {
            Some(b) => Ok(b.clone()),
            None => boot_id(),
        }
    }

    fn journal_config(&self, v: &Volume) -> Result<JournalConfig> {
        Ok(JournalConfig {
            dir: self.dir.clone(),
            name: v.key().volume.to_string(),
            tag: v.key().to_string(),
            tracks: tracks_u32(v),
            boot_id: Some(self.boot_id()?),
        })
    }

    fn copied_config(&self, rel_source: &Volume, s: VolumeId, t: VolumeId) -> Result<BitsetConfig> {
        Ok(BitsetConfig {
            path: self.dir.join(format!("{}.copied", pair_name(s, t))),
            role: BitsetRole::Copied,
            tag: format!("{}:{t}", rel_source.key()),
            tracks: tracks_u32(rel_source),
            boot_id: self.boot_id()?,
        })
    }

    /// The grain log of a relationship (`grain.rs`); None for a volume too large for grain
    /// numbers (its relationships copy whole tracks).
    fn grains_config(&self, rel_source: &Volume, s: VolumeId, t: VolumeId) -> Result<Option<BitsetConfig>> {
        let tracks = rel_source.geometry().tracks();
        if tracks > grain::MAX_GRAIN_TRACKS {
            return Ok(None);
        }
        Ok(Some(BitsetConfig {
            path: self.grains_path(s, t),
            role: BitsetRole::Grains,
            tag: format!("{}:{t}", rel_source.key()),
            tracks: (tracks * grain::GRAINS_PER_TRACK as u64) as u32,
            boot_id: self.boot_id()?,
        }))
    }

    fn grains_path(&self, s: VolumeId, t: VolumeId) -> PathBuf {
        self.dir.join(format!("{}.grains", pair_name(s, t)))
    }

    /// The journal of a volume joining its first relationship (created if it has none).
    pub fn journal_for_new(&self, v: &Volume) -> Result<(VolumeJournal, TrackBitmap, Shutdown)> {
        let cfg = self.journal_config(v)?;
        if cfg.intent_path().exists() {
            let r = VolumeJournal::open(&cfg, self.io.clone(), RecoveryKind::Detect)?;
            Ok((r.journal, r.changed, r.previous))
        } else {
            Ok((VolumeJournal::create(&cfg, self.io.clone())?, TrackBitmap::new(), Shutdown::Clean))
        }
    }

    /// A fresh copied set and grain log, and no checkpoint, for a new relationship (stale
    /// files of an earlier relationship of the same pair are removed first).
    pub fn new_relationship(&self, source: &Volume, s: VolumeId, t: VolumeId) -> Result<RelLogs> {
        let cfg = self.copied_config(source, s, t)?;
        PersistentBitset::remove(&cfg.path)?;
        checkpoint::remove_all(&self.dir, &pair_name(s, t))?;
        let _ = std::fs::remove_file(self.state_path(s, t));
        let copied = PersistentBitset::create(cfg)?;
        PersistentBitset::remove(&self.grains_path(s, t))?;
        let grains = match self.grains_config(source, s, t)? {
            Some(cfg) => Some(PersistentBitset::create(cfg)?),
            None => None,
        };
        Ok(RelLogs { copied, grains })
    }

    /// File that records a relationship's failure state (`Tgt Failed`, `Validation
    /// Required`) durably the moment it happens, without the catalog (which needs the site
    /// lock): recovery trusts it over the catalog's state.
    pub fn state_path(&self, s: VolumeId, t: VolumeId) -> PathBuf {
        self.dir.join(format!("{}.state", pair_name(s, t)))
    }

    pub fn clear_state(&self, s: VolumeId, t: VolumeId) {
        let _ = std::fs::remove_file(self.state_path(s, t));
    }

    /// Open a relationship's durable state: the newest checkpoint (all ones if none) minus
    /// the tracks whose copy landed since. Returns the bitmaps, the generation, the copied
    /// set and whether the previous owner lost power.
    pub fn open_relationship(&self, source: &Volume, s: VolumeId, t: VolumeId) -> Result<OpenedRelationship> {
        let name = pair_name(s, t);
        // Three bitmaps (target, source changes, target changes), and since sub-track
        // copy-on-write a fourth (grains); older checkpoints have no grains.
        let (generation, mut bits) = match checkpoint::load(&self.dir, &name)? {
            Some(cp) if cp.bitmaps.len() == 3 || cp.bitmaps.len() == 4 => (cp.generation, cp.bitmaps),
            Some(_) => {
                return Err(Error::new(ErrorKind::Corrupt, &name, "checkpoint holds the wrong number of bitmaps"));
            }
            None => (0, vec![TrackBitmap::full(source.geometry().tracks()), TrackBitmap::new(), TrackBitmap::new()]),
        };
        let mut grains = if bits.len() == 4 { bits.pop().unwrap_or_default() } else { TrackBitmap::new() };
        let cfg = self.copied_config(source, s, t)?;
        let copied = if cfg.path.exists() { PersistentBitset::open(cfg)? } else { PersistentBitset::create(cfg)? };
        let prev = copied.previous_owner().clone();
        let power_lost = !prev.clean && prev.boot_id != copied.config().boot_id;
        let landed = copied.recover();
        bits[0].difference_with(&landed);
        let grain_log = match self.grains_config(source, s, t)? {
            Some(cfg) if cfg.path.exists() => Some(PersistentBitset::open(cfg)?),
            Some(cfg) => Some(PersistentBitset::create(cfg)?),
            None => None,
        };
        if let Some(log) = &grain_log {
            grains.union_with(&log.recover());
        }
        let tgt_changes = bits.pop().unwrap_or_default();
        let src_changes = bits.pop().unwrap_or_default();
        let target_bits = bits.pop().unwrap_or_default();
        // Grains matter only on tracks still borrowed (a finished track's copy landed).
        let mut grains = GrainMap::from_bitmap(&grains);
        grains.retain_borrowed(&target_bits);
        Ok(OpenedRelationship {
            generation,
            target_bits,
            src_changes,
            tgt_changes,
            grains,
            copied,
            grain_log,
            power_lost,
        })
    }

    pub fn remove_relationship(&self, s: VolumeId, t: VolumeId) {
        self.clear_state(s, t);
        let _ = PersistentBitset::remove(&self.dir.join(format!("{}.copied", pair_name(s, t))));
        let _ = PersistentBitset::remove(&self.grains_path(s, t));
        let _ = checkpoint::remove_all(&self.dir, &pair_name(s, t));
    }

    pub fn remove_journal(&self, v: &Volume) {
        if let Ok(cfg) = self.journal_config(v) {
            let _ = VolumeJournal::remove(&cfg);
        }
    }
}

/// The kill -9 safe logs of a relationship: its copied set and its grain log (none for a
/// volume too large for grain numbers).
#[derive(Debug)]
pub struct RelLogs {
    pub copied: PersistentBitset,
    pub grains: Option<PersistentBitset>,
}

#[derive(Debug)]
pub struct OpenedRelationship {
    pub generation: u64,
    pub target_bits: TrackBitmap,
    pub src_changes: TrackBitmap,
    pub tgt_changes: TrackBitmap,
    pub grains: GrainMap,
    pub copied: PersistentBitset,
    pub grain_log: Option<PersistentBitset>,
    pub power_lost: bool,
}

impl ImageFlash {
    /// Attach durable storage (flashd does; the model test runs without).
    pub fn set_store(&self, store: FlashStore) {
        let _ = self.store.set(store);
    }

    pub fn store(&self) -> Option<&FlashStore> {
        self.store.get()
    }

    pub fn journal(&self, volume: u64) -> Option<Arc<VolumeJournal>> {
        self.journals.lock().unwrap_or_else(|p| p.into_inner()).get(&volume).cloned()
    }

    /// Make sure `v` has an open journal (it is joining a relationship); returns what its
    /// journal recovered if it had to be opened.
    pub fn ensure_journal(&self, v: &Volume) -> Result<Option<(TrackBitmap, Shutdown)>> {
        let Some(store) = self.store() else { return Ok(None) };
        let mut j = self.journals.lock().unwrap_or_else(|p| p.into_inner());
        if j.contains_key(&v.handle()) {
            return Ok(None);
        }
        let (journal, changed, previous) = store.journal_for_new(v)?;
        j.insert(v.handle(), Arc::new(journal));
        if !changed.is_empty() {
            self.recovered.lock().unwrap_or_else(|p| p.into_inner()).insert(v.handle(), changed.clone());
        }
        Ok(Some((changed, previous)))
    }

    /// Run `f` (file removal or creation for a relationship) under the checkpoint lock, so
    /// a checkpoint in progress cannot store a withdrawn relationship's bitmaps over them.
    pub fn with_ckpt_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Checkpoint every relationship: flip the epochs of every journal and copied set,
    /// snapshot and store the bitmaps with the next generation, end the epochs. Off the I/O
    /// path; host writes go on (their marks land in the new epoch).
    pub fn checkpoint(&self) -> Result<()> {
        let Some(store) = self.store() else { return Ok(()) };
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        let rels = self.relationships();
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let journals: Vec<Arc<VolumeJournal>> = self
            .journals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(v, _)| !held.contains(v))
            .map(|(_, j)| j.clone())
            .collect();
        let mut jt = Vec::new();
        for j in &journals {
            jt.push(j.begin_checkpoint()?);
        }
        let mut ct = Vec::new();
        for r in &rels {
            let mut tokens = Vec::new();
            for c in r.logs() {
                tokens.push(c.begin_epoch()?);
            }
            ct.push((r.clone(), tokens));
        }
        for r in &rels {
            let (gen_, bitmaps) = {
                let mut st = r.state();
                if st.withdrawn {
                    continue; // its files are gone or about to be: never bring them back
                }
                st.generation += 1;
                (st.generation, st.bitmaps())
            };
            let (s, t) = r.ids();
            checkpoint::store(&store.dir, &pair_name(s, t), gen_, &bitmaps)?;
        }
        for h in self.all_hooks() {
            h.checkpoint()?; // PPRC out-of-sync sets, inside the same epochs
        }
        for (r, tokens) in ct {
            for (c, tok) in r.logs().zip(tokens) {
                c.end_epoch(tok)?;
            }
        }
        for (j, tok) in journals.iter().zip(jt) {
            j.end_checkpoint(tok)?;
        }
        // Every checkpoint now covers what the journals recovered at start (but the held
        // ones', whose pairs are not back yet).
        self.recovered.lock().unwrap_or_else(|p| p.into_inner()).retain(|v, _| held.contains(v));
        Ok(())
    }

    /// Clean shutdown: a last checkpoint, then every journal and copied set closed clean, so
    /// the next start has nothing to recover. I/O must have stopped.
    pub fn close_clean(&self) -> Result<()> {
        self.checkpoint()?;
        let journals: Vec<Arc<VolumeJournal>> =
            self.journals.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, j)| j).collect();
        for j in journals {
            match Arc::try_unwrap(j) {
                Ok(j) => {
                    let t = j.begin_checkpoint()?;
                    j.close_clean(t)?;
                }
                Err(_) => tracing::warn!("a volume journal is still in use at shutdown; it will be recovered at start"),
            }
        }
        for r in self.relationships() {
            for c in r.logs() {
                c.mark_clean()?;
            }
        }
        Ok(())
    }
}

/// After recovery: the relationship's state given how the previous run ended.
pub fn recovered_state(prev: FlashState, power_lost: bool) -> FlashState {
    if power_lost && prev == FlashState::Valid { FlashState::ValidationRequired } else { prev }
}

/// The tracks of `r` that a recovered journal says changed, folded into its recording.
pub fn fold_changes(rel: &Relationship, src_changed: Option<&TrackBitmap>, tgt_changed: Option<&TrackBitmap>) {
    let mut st = rel.state();
    if !st.record.options.record {
        return;
    }
    if let Some(c) = src_changed {
        st.src_changes.union_with(c);
    }
    if let Some(c) = tgt_changed {
        st.tgt_changes.union_with(c);
    }
}

pub type Journals = HashMap<u64, Arc<VolumeJournal>>;

/// Write a failure state durably (file, fsync, directory fsync).
pub fn write_state(path: &Path, state: FlashState) -> Result<()> {
    use std::io::Write;
    let text = match state {
        FlashState::TgtFailed => "TgtFailed",
        FlashState::ValidationRequired => "ValidationRequired",
        FlashState::Valid => "Valid",
    };
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path.display(), &e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| Error::io(path.display(), &e))?;
    if let Some(dir) = path.parent() {
        crate::bitmap::sync_dir(dir)?;
    }
    Ok(())
}

/// The failure state a relationship recorded, if any.
pub fn read_state(path: &Path) -> Option<FlashState> {
    match std::fs::read_to_string(path).ok()?.trim() {
        "TgtFailed" => Some(FlashState::TgtFailed),
        "ValidationRequired" => Some(FlashState::ValidationRequired),
        _ => None,
    }
}
