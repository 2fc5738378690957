//! The journal of one volume: its write-intent bitset ([`super::intent`]) and its activity log
//! ([`super::activity`]), which together implement DESIGN.md's durability table for every
//! bitmap that records changes to the volume (FlashCopy change recording, PPRC out-of-sync).
//!
//! # Caller protocol
//!
//! Files: `<dir>/<name>.intent` and `<dir>/<name>.alog`; the caller's own bitmaps are stored
//! with [`super::checkpoint`] under names of its choosing.
//!
//! 1. **Start.** [`VolumeJournal::create`] for a new volume; otherwise
//!    [`VolumeJournal::open`], which returns the tracks to treat as changed. Load the newest
//!    checkpoint, OR the changed tracks into every change-recording and out-of-sync bitmap of
//!    the volume, and only then accept I/O. The journal keeps those tracks until the next
//!    checkpoint is durable, so a crash before it recovers them again.
//! 2. **Write path**, per host write (and every other change of the volume's bytes):
//!    `let g = journal.mark(tracks)?;` then set the in-memory bits, then `drop(g)`, then submit
//!    the data write. `mark` sets the intent bits (kill -9 safe, no syscall) and, if an
//!    extent is cold, logs it durably (group commit) before returning. If `mark` fails, fail
//!    the write without submitting it.
//! 3. **FLUSH / FUA**: fdatasync the data, and call [`VolumeJournal::flush_point`] (cheap
//!    unless a log batch is being synced); reply after both.
//! 4. **Checkpoint** (off the I/O path, any time): `let t = journal.begin_checkpoint()?;`
//!    (flips the epoch and waits for guards of the old one), snapshot the in-memory bitmaps,
//!    [`super::checkpoint::store`] them with the next generation, then
//!    `journal.end_checkpoint(t)?` (clears the old epoch, retires the activity log). Never
//!    end before the snapshot is durable.
//! 5. **Clean shutdown**: stop and drain I/O, begin a checkpoint, store it, then
//!    [`VolumeJournal::close_clean`] with the token. The next open returns the empty set.
//!
//! Ordering points (failpoints in brackets): intent bits set -> [alog-before-append] -> log
//! record written -> [alog-before-sync] -> log durable -> caller's in-memory bits -> guard
//! dropped -> data write. Checkpoint: flip -> snapshot -> temp file ->
//! [checkpoint-before-rename] -> rename -> [checkpoint-before-prune] ->
//! [bitset-end-epoch-before-clear] -> old epoch cleared and msynced ->
//! [journal-before-retire] -> new log generation -> [alog-retire-before-rename] -> rename.
//!
//! What recovery returns (invariant 3): after a process crash (same boot ID) exactly the
//! intent bits, so marked ⊆ written ∪ in flight; after a power loss (new boot ID) every
//! track of every logged extent, so marked ⊆ written ∪ activity-log extents. Intent bits
//! outside logged extents are left out after a power loss: their data write was never
//! submitted (it waits for the log) or a durable checkpoint already covers them.

use super::activity::{ActivityLog, LogConfig, LogStats};
use super::intent::{BitsetConfig, BitsetRole, EpochGuard, EpochToken, PersistentBitset};
use super::{Error, ErrorKind, Result, TrackBitmap, fail_point};
use crate::io::IoEngine;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// How to judge what happened before this open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    /// From the intent header: clean flag, else same boot ID = process crash, else power loss.
    Detect,
    /// Force process-crash recovery (the page cache is known intact).
    ProcessCrash,
    /// Force power-loss recovery (tests; or an operator who knows the machine went down).
    PowerLoss,
}

/// How the previous owner went away, as the header tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Clean,
    ProcessCrash,
    PowerLoss,
}

/// Where a volume's journal lives and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// File stem, e.g. the volume ID without separators.
    pub name: String,
    /// The volume's ID, recorded in both headers (at most 64 bytes).
    pub tag: String,
    pub tracks: u32,
    /// Boot ID to own the files as; None = this kernel's. Tests set it to simulate reboots.
    pub boot_id: Option<String>,
}

impl JournalConfig {
    pub fn intent_path(&self) -> PathBuf {
        self.dir.join(format!("{}.intent", self.name))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.alog", self.name))
    }

    fn parts(&self) -> Result<(BitsetConfig, LogConfig)> {
        let boot_id = match &self.boot_id {
            Some(b) => b.clone(),
            None => super::boot_id()?,
        };
        let bitset = BitsetConfig {
            path: self.intent_path(),
            role: BitsetRole::WriteIntent,
            tag: self.tag.clone(),
            tracks: self.tracks,
            boot_id,
        };
        Ok((bitset, LogConfig { path: self.log_path(), tag: self.tag.clone(), tracks: self.tracks }))
    }
}

/// A checkpoint in progress; see the module docs, step 4.
#[derive(Debug)]
#[must_use = "the journal keeps the old epoch until end_checkpoint"]
pub struct CheckpointToken(EpochToken);

/// A mark in progress: drop it once the in-memory bits are set.
pub type MarkGuard<'a> = EpochGuard<'a>;

/// What [`VolumeJournal::open`] found.
#[derive(Debug)]
pub struct Recovered {
    pub journal: VolumeJournal,
    /// Tracks to OR into every change-recording and out-of-sync bitmap of the volume.
    pub changed: TrackBitmap,
    /// What the header said about the previous owner.
    pub previous: Shutdown,
    /// The kind of recovery that produced `changed`.
    pub applied: Shutdown,
}

/// The journal of one volume. See the module docs.
#[derive(Debug)]
pub struct VolumeJournal {
    intent: PersistentBitset,
    log: ActivityLog,
}

impl VolumeJournal {
    /// Create the journal of a new volume (its files must not exist).
    pub fn create(cfg: &JournalConfig, io: Arc<dyn IoEngine>) -> Result<VolumeJournal> {
        let (bitset, log) = cfg.parts()?;
        let log = ActivityLog::create(log, io)?;
        let intent = PersistentBitset::create(bitset)?;
        Ok(VolumeJournal { intent, log })
    }

    /// Open an existing journal and recover: returns the tracks that must be treated as
    /// changed (see the module docs). Recovery is part of opening so that no mark can come
    /// before it, and the changed set is made durable in the intent bitset before the header
    /// names this process as owner.
    pub fn open(cfg: &JournalConfig, io: Arc<dyn IoEngine>, kind: RecoveryKind) -> Result<Recovered> {
        let (bitset, log) = cfg.parts()?;
        let intent = PersistentBitset::open(bitset)?;
        let log = ActivityLog::open(log, io, intent.current_seq())?;
        let prev = intent.previous_owner();
        let previous = if prev.clean {
            Shutdown::Clean
        } else if prev.boot_id == intent.config().boot_id {
            Shutdown::ProcessCrash
        } else {
            Shutdown::PowerLoss
        };
        let applied = match kind {
            RecoveryKind::Detect => previous,
            RecoveryKind::ProcessCrash => Shutdown::ProcessCrash,
            RecoveryKind::PowerLoss => Shutdown::PowerLoss,
        };
        let intent_bits = intent.recover();
        let changed = match applied {
            Shutdown::Clean | Shutdown::ProcessCrash => intent_bits,
            Shutdown::PowerLoss => {
                let logged = log.logged_tracks();
                let mut outside = intent_bits;
                outside.difference_with(&logged);
                if !outside.is_empty() {
                    tracing::info!(volume = %cfg.tag, tracks = outside.len(), "intent bits outside logged extents ignored after power loss");
                }
                // Keep them in the intent bitset until the next checkpoint, so a process
                // crash during this run recovers them too.
                let journal = VolumeJournal { intent, log };
                journal.mark_durably(&logged)?;
                journal.intent.claim()?;
                return Ok(Recovered { journal, changed: logged, previous, applied });
            }
        };
        intent.claim()?;
        Ok(Recovered { journal: VolumeJournal { intent, log }, changed, previous, applied })
    }

    /// Mark every track of `set` in the intent bitset and msync it.
    fn mark_durably(&self, set: &TrackBitmap) -> Result<()> {
        let mut from = 0;
        while let Some(run) = set.next_run(from, u32::MAX) {
            drop(self.intent.mark(run.clone())?);
            from = run.end;
        }
        self.intent.sync()
    }

    /// Remove a journal's files (a deleted volume, or a create that did not finish).
    pub fn remove(cfg: &JournalConfig) -> Result<()> {
        PersistentBitset::remove(&cfg.intent_path())?;
        PersistentBitset::remove(&cfg.log_path())?;
        super::sync_dir(&cfg.dir)
    }

    /// Journal `tracks` before their data write is submitted (step 2 of the protocol).
    pub fn mark(&self, tracks: Range<u32>) -> Result<MarkGuard<'_>> {
        let guard = self.intent.mark(tracks.clone())?;
        self.log.note(tracks, guard.seq())?;
        Ok(guard)
    }

    /// What FLUSH and FUA need from the journal (step 3).
    pub fn flush_point(&self) -> Result<()> {
        self.log.flush_point()
    }

    /// Start a checkpoint (step 4): after this returns, the caller's in-memory bitmaps hold
    /// every track marked before it.
    pub fn begin_checkpoint(&self) -> Result<CheckpointToken> {
        self.intent.begin_epoch().map(CheckpointToken)
    }

    /// Finish a checkpoint once the caller's snapshot is durable: clear the old epoch and
    /// drop log extents not written since the flip.
    pub fn end_checkpoint(&self, token: CheckpointToken) -> Result<()> {
        let keep_from = token.0.new_seq();
        self.intent.end_epoch(token.0)?;
        fail_point("journal-before-retire")?;
        self.log.retire(keep_from)
    }

    /// Clean shutdown (step 5), after the final checkpoint's snapshot is durable.
    pub fn close_clean(self, token: CheckpointToken) -> Result<()> {
        self.end_checkpoint(token)?;
        let left = self.intent.recover();
        if !left.is_empty() {
            // Not an error: the tracks stay journaled and are recovered next time.
            tracing::warn!(tracks = left.len(), "writes after the final checkpoint flip; they stay journaled");
        }
        self.intent.close_clean()
    }

    pub fn tracks(&self) -> u32 {
        self.intent.tracks()
    }

    pub fn intent(&self) -> &PersistentBitset {
        &self.intent
    }

    pub fn log(&self) -> &ActivityLog {
        &self.log
    }

    pub fn log_stats(&self) -> LogStats {
        self.log.stats()
    }
}

/// A breach of invariant 3 found by [`check_marked`].
#[derive(Debug, Clone, PartialEq)]
pub enum MarkViolation {
    /// Written but not marked: a lost change.
    Lost(TrackBitmap),
    /// Marked but neither written nor allowed (in flight, or in a logged extent after a power
    /// loss): over-marking that would make an increment copy more than it must.
    Extra(TrackBitmap),
}

impl fmt::Display for MarkViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, set) = match self {
            MarkViolation::Lost(s) => ("written but not marked", s),
            MarkViolation::Extra(s) => ("marked but not written", s),
        };
        let first: Vec<u32> = set.iter().take(8).map(|t| t.0).collect();
        write!(f, "{} tracks {what}, first {first:?}", set.len())
    }
}

/// Invariant 3 as a reusable check: `written ⊆ marked ⊆ written ∪ allowed`. `allowed` is the
/// in-flight set after kill -9, plus the tracks of logged extents after a power loss.
pub fn check_marked(
    marked: &TrackBitmap,
    written: &TrackBitmap,
    allowed: &TrackBitmap,
) -> std::result::Result<(), MarkViolation> {
    let mut lost = written.clone();
    lost.difference_with(marked);
    if !lost.is_empty() {
        return Err(MarkViolation::Lost(lost));
    }
    let mut extra = marked.clone();
    extra.difference_with(written);
    extra.difference_with(allowed);
    if !extra.is_empty() {
        return Err(MarkViolation::Extra(extra));
    }
    Ok(())
}

impl From<MarkViolation> for Error {
    fn from(v: MarkViolation) -> Error {
        Error::new(ErrorKind::Corrupt, "journal", v.to_string())
    }
}
