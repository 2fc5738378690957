//! Persistent track bitsets: one bit per track in a preallocated file mapped MAP_SHARED, so a
//! bit set with a plain atomic store is in the page cache at once and survives kill -9 with no
//! system call. Two uses share the type ([`BitsetRole`]): the per-volume write-intent bitset
//! (a bit is set before the data write of its track is submitted) and the copied-target
//! bitset (a bit is set when a copy to a FlashCopy target has landed, so the cleared target
//! bit is not forgotten).
//!
//! # Epochs
//!
//! The bits live in two epochs, A and B. [`PersistentBitset::mark`] sets bits in the current
//! epoch and returns an [`EpochGuard`]; the caller sets its in-memory bits and then drops the
//! guard. A checkpoint calls [`begin_epoch`](PersistentBitset::begin_epoch), which flips the
//! current epoch and waits until every guard of the old epoch is dropped: from then on, every
//! bit of the old epoch is also in the caller's in-memory bitmaps. The caller snapshots and
//! persists them, then [`end_epoch`](PersistentBitset::end_epoch) clears the old epoch (and
//! msyncs the clear, so stale bits do not come back after a power loss). A mark racing with the
//! checkpoint lands in the new epoch, or in the old one before the flip is waited out; it is
//! never lost. Without the wait, a writer could mark the old epoch, be overtaken by the
//! snapshot, and have its bit cleared before it reached the in-memory bitmap.
//!
//! # File
//!
//! A 4 KiB header (magic, format version, role, track count, volume tag, boot ID of the last
//! owner, clean flag, crc32c), then epoch A and epoch B, each page-aligned. Words are u64,
//! little-endian. The file is allocated in full at creation (never ENOSPC later), locked with
//! flock while open, and never truncated, which is what makes the mapping sound.

use super::{Error, ErrorKind, Result, TrackBitmap, lock_exclusive, preallocate, sync_dir};
use crate::geometry::TrackNo;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// On-disk format version of persistent bitsets.
pub const BITSET_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"FTBITSET";
const HEADER_LEN: u64 = 4096;
const PAGE: u64 = 4096;
/// Longest volume tag the header holds.
pub const TAG_MAX: usize = 64;
const BOOT_ID_LEN: usize = 36;
/// Header bytes covered by the checksum; the crc follows them.
const HEADER_USED: usize = 128;

/// What a bitset records; part of the header so one file cannot be opened as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitsetRole {
    /// Tracks marked before their data write is submitted.
    WriteIntent = 1,
    /// FlashCopy target tracks whose copy has landed (their target bit is clear).
    Copied = 2,
    /// FlashCopy target grains (track × 16 + grain) preserved by sub-track copy-on-write.
    Grains = 3,
}

/// Identity of a bitset file; every field but `boot_id` must match the header on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitsetConfig {
    pub path: PathBuf,
    pub role: BitsetRole,
    /// The volume (or relationship) the file belongs to, at most [`TAG_MAX`] bytes.
    pub tag: String,
    pub tracks: u32,
    /// Boot ID written as the owner's: normally [`super::boot_id`]; tests pass another to
    /// simulate a reboot.
    pub boot_id: String,
}

/// What the header said about the previous owner when the file was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousOwner {
    pub boot_id: String,
    /// The previous owner closed the file with [`PersistentBitset::close_clean`].
    pub clean: bool,
}

/// Proof that a checkpoint flipped the epoch; hand it back to [`PersistentBitset::end_epoch`].
#[derive(Debug)]
#[must_use = "the old epoch stays set until end_epoch"]
pub struct EpochToken {
    old_index: usize,
    new_seq: u64,
}

impl EpochToken {
    /// Sequence number of the epoch that began (every mark from now carries it or a later one).
    pub fn new_seq(&self) -> u64 {
        self.new_seq
    }
}

/// A mark in progress: the checkpoint of its epoch waits until it is dropped. Drop it after
/// the in-memory bits are set, before (or right after) submitting the data write.
#[derive(Debug)]
pub struct EpochGuard<'a> {
    set: &'a PersistentBitset,
    index: usize,
    seq: u64,
}

impl EpochGuard<'_> {
    /// Sequence number of the epoch the mark went into.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for EpochGuard<'_> {
    fn drop(&mut self) {
        self.set.active[self.index].fetch_sub(1, Ordering::SeqCst);
    }
}

/// A persistent track bitset with two epochs. See the module docs.
#[derive(Debug)]
pub struct PersistentBitset {
    cfg: BitsetConfig,
    file: File,
    /// Both epochs, from file offset HEADER_LEN; never remapped or truncated while open.
    map: MmapRaw,
    /// u64 words in use per epoch, and the page-rounded stride between epochs (in words).
    words: usize,
    stride: usize,
    /// Current epoch sequence number; its parity is the epoch index. Only begin_epoch
    /// changes it.
    seq: AtomicU64,
    /// Marks in progress per epoch index (between `mark` and the guard's drop).
    active: [AtomicU64; 2],
    /// A checkpoint is between begin_epoch and end_epoch.
    pending: Mutex<bool>,
    previous: PreviousOwner,
    /// Per epoch, one bit per page of its region that may hold set bits (memory only, built
    /// by a scan at open and kept by `mark`): `end_epoch` and `is_clear` visit only those
    /// pages, so a large, mostly clear set (a grain log: 256 MiB per epoch for 8 TiB) costs
    /// what is marked, not its size.
    dirty: [Box<[AtomicU64]>; 2],
}

/// u64 words per page of an epoch's region.
const PAGE_WORDS: usize = (PAGE / 8) as usize;

fn region_bytes(tracks: u32) -> u64 {
    (u64::from(tracks).div_ceil(64) * 8).next_multiple_of(PAGE)
}

fn file_len(tracks: u32) -> u64 {
    HEADER_LEN + 2 * region_bytes(tracks)
}

impl PersistentBitset {
    /// Create the file (it must not exist), allocated in full, owned by `cfg.boot_id`.
    pub fn create(cfg: BitsetConfig) -> Result<PersistentBitset> {
        check_config(&cfg)?;
        let path = cfg.path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&cfg.path)
            .map_err(|e| Error::io(&path, &e))?;
        lock_exclusive(&file, &path)?;
        preallocate(&file, file_len(cfg.tracks), &path)?;
        write_header(&file, &cfg, false, &path)?;
        if let Some(dir) = cfg.path.parent() {
            sync_dir(dir)?;
        }
        let previous = PreviousOwner { boot_id: cfg.boot_id.clone(), clean: true };
        PersistentBitset::mapped(cfg, file, previous)
    }

    /// Open an existing file. The header must match `cfg` (role, tag, tracks) and this
    /// build's version; a mismatch is refused, never guessed at. Bits of both epochs are
    /// folded into the current one (see [`recover`](Self::recover)). The header still names
    /// the previous owner: call [`claim`](Self::claim) once what it left is safe (recovered
    /// into bits or a checkpoint), and before the first mark.
    pub fn open(cfg: BitsetConfig) -> Result<PersistentBitset> {
        check_config(&cfg)?;
        let path = cfg.path.display().to_string();
        let file = OpenOptions::new().read(true).write(true).open(&cfg.path).map_err(|e| Error::io(&path, &e))?;
        lock_exclusive(&file, &path)?;
        let previous = read_header(&file, &cfg, &path)?;
        let len = file.metadata().map_err(|e| Error::io(&path, &e))?.len();
        if len < file_len(cfg.tracks) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                &path,
                format!("file is {len} bytes, expected {}", file_len(cfg.tracks)),
            ));
        }
        let set = PersistentBitset::mapped(cfg, file, previous)?;
        set.fold();
        set.rebuild_dirty();
        set.sync()?;
        Ok(set)
    }

    /// Record this process (`cfg.boot_id`) as the owner, not clean, durably. Until this is
    /// done a crash is judged by the previous owner's header, which is what keeps a
    /// power-loss recovery from being mistaken for a process crash if we die mid-recovery.
    pub fn claim(&self) -> Result<()> {
        write_header(&self.file, &self.cfg, false, &self.cfg.path.display())
    }

    fn mapped(cfg: BitsetConfig, file: File, previous: PreviousOwner) -> Result<PersistentBitset> {
        let region = region_bytes(cfg.tracks);
        let map = MmapOptions::new()
            .offset(HEADER_LEN)
            .len((2 * region) as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(cfg.path.display(), &e))?;
        let words = u64::from(cfg.tracks).div_ceil(64) as usize;
        let pages = (region / PAGE) as usize;
        let summary = || (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect::<Box<[AtomicU64]>>();
        Ok(PersistentBitset {
            dirty: [summary(), summary()],
            cfg,
            file,
            map,
            words,
            stride: (region / 8) as usize,
            // Even: epoch index 0 is current after open (fold puts old bits there).
            seq: AtomicU64::new(2),
            active: [AtomicU64::new(0), AtomicU64::new(0)],
            pending: Mutex::new(false),
            previous,
        })
    }

    /// Both epochs as atomics.
    fn all_words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_mut_ptr().cast::<AtomicU64>();
        // SAFETY: the mapping is `2 * stride * 8` bytes (map length, a multiple of the page
        // size), starts page-aligned (so aligned for AtomicU64), and lives as long as `self`,
        // which the returned borrow cannot outlive. Every access goes through atomics, so
        // concurrent writers in this process do not race; other processes are kept out by the
        // exclusive flock taken before mapping, and the file is allocated to its full length
        // before mapping and never truncated by this code, so no access meets SIGBUS.
        unsafe { std::slice::from_raw_parts(ptr, 2 * self.stride) }
    }

    fn epoch(&self, index: usize) -> &[AtomicU64] {
        &self.all_words()[index * self.stride..index * self.stride + self.words]
    }

    pub fn config(&self) -> &BitsetConfig {
        &self.cfg
    }

    pub fn tracks(&self) -> u32 {
        self.cfg.tracks
    }

    /// The owner recorded in the header when this file was opened.
    pub fn previous_owner(&self) -> &PreviousOwner {
        &self.previous
    }

    /// Sequence number of the current epoch.
    pub fn current_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Set the bits of `tracks` in the current epoch. No system call and no allocation; a
    /// word whose bits are already set is only read. Keep the guard until the caller's
    /// in-memory bits are set.
    pub fn mark(&self, tracks: std::ops::Range<u32>) -> Result<EpochGuard<'_>> {
        if tracks.start >= tracks.end || tracks.end > self.cfg.tracks {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                self.cfg.path.display(),
                format!("track range {tracks:?} outside 0..{}", self.cfg.tracks),
            ));
        }
        let guard = self.enter();
        let words = self.epoch(guard.index);
        let mut t = tracks.start;
        while t < tracks.end {
            let lo = t % 64;
            let n = (64 - lo).min(tracks.end - t);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo }.to_le();
            let wi = (t / 64) as usize;
            let w = &words[wi];
            // Relaxed is enough: the guard's SeqCst drop orders these before end_epoch's clear.
            if w.load(Ordering::Relaxed) & mask != mask {
                w.fetch_or(mask, Ordering::Relaxed);
                let page = wi / PAGE_WORDS;
                let d = &self.dirty[guard.index][page / 64];
                let bit = 1u64 << (page % 64);
                if d.load(Ordering::Relaxed) & bit == 0 {
                    d.fetch_or(bit, Ordering::Relaxed);
                }
            }
            t += n;
        }
        Ok(guard)
    }

    /// Join the current epoch. Retries if a flip happens between reading the epoch and
    /// counting in, so begin_epoch never misses a writer of the old epoch.
    fn enter(&self) -> EpochGuard<'_> {
        loop {
            let seq = self.seq.load(Ordering::SeqCst);
            let index = (seq & 1) as usize;
            self.active[index].fetch_add(1, Ordering::SeqCst);
            if self.seq.load(Ordering::SeqCst) == seq {
                return EpochGuard { set: self, index, seq };
            }
            self.active[index].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Flip the epoch and wait until every mark of the old one has dropped its guard. A
    /// begin whose checkpoint failed (its token never ended) does not wedge later ones: the
    /// next begin flips again, and the epoch it flips into keeps the abandoned bits until a
    /// later end clears them: bits are only ever kept too long, never cleared too early.
    /// Callers serialize checkpoints (one begin/end at a time).
    pub fn begin_epoch(&self) -> Result<EpochToken> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if *pending {
            tracing::warn!("{}: a previous checkpoint did not finish; starting a new one", self.cfg.path.display());
        }
        let old = self.seq.load(Ordering::SeqCst);
        self.seq.store(old + 1, Ordering::SeqCst);
        let old_index = (old & 1) as usize;
        // Marks are short (a few atomics, or one group-committed log sync), so poll.
        let mut spins = 0u32;
        while self.active[old_index].load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        *pending = true;
        Ok(EpochToken { old_index, new_seq: old + 1 })
    }

    /// Clear the old epoch of `token` and make the clear durable. Call only once the caller's
    /// snapshot taken after begin_epoch is durable.
    pub fn end_epoch(&self, token: EpochToken) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending = false;
        super::fail_point("bitset-end-epoch-before-clear")?;
        // Only the pages that may hold bits (no mark reaches the old epoch any more).
        for page in self.dirty_pages(token.old_index, true) {
            for w in page {
                // Skip zero words so clean pages stay clean.
                if w.load(Ordering::Relaxed) != 0 {
                    w.store(0, Ordering::Relaxed);
                }
            }
        }
        let region = self.stride * 8;
        self.map.flush_range(token.old_index * region, region).map_err(|e| Error::io(self.cfg.path.display(), &e))
    }

    /// Whether no track is marked in either epoch (the pages that may hold bits are scanned).
    pub fn is_clear(&self) -> bool {
        (0..2).all(|e| self.dirty_pages(e, false).flatten().all(|w| w.load(Ordering::Relaxed) == 0))
    }

    /// The words of each page of epoch `e` its summary names (and, with `take`, the summary
    /// cleared as it is read).
    fn dirty_pages(&self, e: usize, take: bool) -> impl Iterator<Item = &[AtomicU64]> {
        let words = self.epoch(e);
        self.dirty[e].iter().enumerate().flat_map(move |(i, d)| {
            let mut pages = if take { d.swap(0, Ordering::Relaxed) } else { d.load(Ordering::Relaxed) };
            std::iter::from_fn(move || {
                if pages == 0 {
                    return None;
                }
                let page = i * 64 + pages.trailing_zeros() as usize;
                pages &= pages - 1;
                let from = (page * PAGE_WORDS).min(words.len());
                Some(&words[from..(from + PAGE_WORDS).min(words.len())])
            })
        })
    }

    /// Rebuild the dirty-page summaries from the words (at open: what the file holds).
    fn rebuild_dirty(&self) {
        for e in 0..2 {
            for (wi, w) in self.epoch(e).iter().enumerate() {
                if w.load(Ordering::Relaxed) != 0 {
                    let page = wi / PAGE_WORDS;
                    self.dirty[e][page / 64].fetch_or(1 << (page % 64), Ordering::Relaxed);
                }
            }
        }
    }

    /// The union of both epochs: every track marked since the last completed end_epoch.
    pub fn recover(&self) -> TrackBitmap {
        let mut out = TrackBitmap::new();
        let (a, b) = (self.epoch(0), self.epoch(1));
        for (i, (wa, wb)) in a.iter().zip(b).enumerate() {
            let mut bits = u64::from_le(wa.load(Ordering::Relaxed) | wb.load(Ordering::Relaxed));
            while bits != 0 {
                out.insert(TrackNo(i as u32 * 64 + bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        out
    }

    /// Move the bits of the other epoch into the current one (set first, then clear, so a
    /// crash in between only duplicates). The first end_epoch after open then clears what
    /// the previous owner left, once the caller has checkpointed it.
    fn fold(&self) {
        let cur = (self.current_seq() & 1) as usize;
        let (to, from) = (self.epoch(cur), self.epoch(1 - cur));
        for (t, f) in to.iter().zip(from) {
            let bits = f.load(Ordering::Relaxed);
            if bits != 0 {
                t.fetch_or(bits, Ordering::Relaxed);
            }
        }
        for f in from {
            if f.load(Ordering::Relaxed) != 0 {
                f.store(0, Ordering::Relaxed);
            }
        }
    }

    /// msync both epochs (MS_SYNC): the bits set so far survive a power loss. The
    /// copied-target bitset calls this at FLUSH; the write-intent bitset does not need to
    /// (the activity log covers power loss).
    pub fn sync(&self) -> Result<()> {
        self.map.flush().map_err(|e| Error::io(self.cfg.path.display(), &e))
    }

    /// Make the bits durable and mark the header clean. What recovery then returns is
    /// exactly the bits still set (empty if the caller ended its last epoch with no writes
    /// since).
    /// Write the clean mark without giving the file up (shutdown of a shared owner); the
    /// next [`claim`](Self::claim) marks it in use again.
    pub fn mark_clean(&self) -> Result<()> {
        self.sync()?;
        write_header(&self.file, &self.cfg, true, &self.cfg.path.display())
    }

    pub fn close_clean(self) -> Result<()> {
        self.sync()?;
        write_header(&self.file, &self.cfg, true, &self.cfg.path.display())
    }

    /// Remove a bitset file (a half-made object, or a volume being deleted).
    pub fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path.display(), &e)),
            _ => Ok(()),
        }
    }
}

fn check_config(cfg: &BitsetConfig) -> Result<()> {
    let bad = |why: String| Err(Error::new(ErrorKind::InvalidArgument, cfg.path.display(), why));
    if cfg.tracks == 0 {
        return bad("a bitset needs at least one track".into());
    }
    if cfg.tag.len() > TAG_MAX {
        return bad(format!("tag longer than {TAG_MAX} bytes"));
    }
    if cfg.boot_id.len() != BOOT_ID_LEN {
        return bad(format!("boot id {:?} is not {BOOT_ID_LEN} bytes", cfg.boot_id));
    }
    Ok(())
}

fn write_header(file: &File, cfg: &BitsetConfig, clean: bool, what: &dyn std::fmt::Display) -> Result<()> {
    let mut h = [0u8; HEADER_USED + 4];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&BITSET_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(cfg.role as u32).to_le_bytes());
    h[16..20].copy_from_slice(&cfg.tracks.to_le_bytes());
    h[20..24].copy_from_slice(&u32::from(clean).to_le_bytes());
    h[24..60].copy_from_slice(cfg.boot_id.as_bytes());
    h[60..64].copy_from_slice(&(cfg.tag.len() as u32).to_le_bytes());
    h[64..64 + cfg.tag.len()].copy_from_slice(cfg.tag.as_bytes());
    let crc = crc32c::crc32c(&h[..HEADER_USED]);
    h[HEADER_USED..].copy_from_slice(&crc.to_le_bytes());
    // One sector: written whole or not at all on the devices we support.
    file.write_all_at(&h, 0).and_then(|()| file.sync_data()).map_err(|e| Error::io(what, &e))
}

fn read_header(file: &File, cfg: &BitsetConfig, what: &str) -> Result<PreviousOwner> {
    let mut h = [0u8; HEADER_USED + 4];
    file.read_exact_at(&mut h, 0).map_err(|e| Error::io(what, &e))?;
    let corrupt = |why: String| Error::new(ErrorKind::Corrupt, what, why);
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    if h[0..8] != MAGIC {
        return Err(corrupt("not a flashtrack bitset".into()));
    }
    let version = u32_at(8);
    if version != BITSET_VERSION {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            what,
            format!("bitset format {version}, this build reads format {BITSET_VERSION}"),
        ));
    }
    if crc32c::crc32c(&h[..HEADER_USED]) != u32_at(HEADER_USED) {
        return Err(corrupt("header checksum mismatch".into()));
    }
    if u32_at(12) != cfg.role as u32 {
        return Err(corrupt(format!("bitset role {} where {:?} was expected", u32_at(12), cfg.role)));
    }
    if u32_at(16) != cfg.tracks {
        return Err(corrupt(format!("bitset covers {} tracks, the volume has {}", u32_at(16), cfg.tracks)));
    }
    let tag_len = (u32_at(60) as usize).min(TAG_MAX);
    if h[64..64 + tag_len] != *cfg.tag.as_bytes() {
        let found = String::from_utf8_lossy(&h[64..64 + tag_len]);
        return Err(corrupt(format!("bitset belongs to {found:?}, not {:?}", cfg.tag)));
    }
    let boot_id = String::from_utf8_lossy(&h[24..60]).into_owned();
    Ok(PreviousOwner { boot_id, clean: u32_at(20) == 1 })
}
