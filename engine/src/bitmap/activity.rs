//! The activity log: what survives a power loss. A volume is cut into extents of
//! [`EXTENT_TRACKS`] tracks; before the first write into an extent that is not in the log
//! (a cold extent), the extent is appended to an append-only file and made durable. After a
//! power loss, every extent in the log is treated as changed, so the log bounds the
//! over-marking of recovery to whole extents while the hot path costs one atomic load.
//!
//! Group commit: writers that need cold extents at the same time share one fdatasync. The
//! first to find no sync running becomes the leader, writes every queued extent and syncs;
//! the others wait on a condvar for the batch that carries theirs, and one of them leads the
//! next batch with whatever queued up meanwhile.
//!
//! Each extent carries a stamp: the newest epoch (see [`super::intent`]) whose writes went
//! into it while it was logged. After a checkpoint covering every epoch below `keep_from`,
//! [`ActivityLog::retire`] rewrites the log (a new generation file, temp + fsync + rename)
//! with only the extents stamped `keep_from` or later; the others turn cold. The file holds
//! each extent at most once, so it is preallocated at its largest size and never grows.
//!
//! All file I/O goes through `&dyn IoEngine`, so the fault-injecting engine's power loss
//! applies. Records carry the file generation, their index and a crc32c; the scan at open
//! stops at the first record that fails any of them (a torn tail is ignored, not trusted).

use super::{Error, ErrorKind, Result, TrackBitmap, lock_exclusive, preallocate, sync_dir};
use crate::io::IoEngine;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Tracks per extent: 1024 x 64 KiB = 64 MiB. A power loss re-copies at most this much per
/// extent written since the last checkpoint; smaller extents mean more log syncs.
pub const EXTENT_TRACKS: u32 = 1024;
/// On-disk format version of the activity log.
pub const LOG_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"FTACTLOG";
const HEADER_LEN: u64 = 4096;
const RECORD_LEN: usize = 32;
const TAG_MAX: usize = super::intent::TAG_MAX;
/// Records read per call when scanning at open.
const SCAN_CHUNK: usize = 1 << 20;

/// Identity of a log file; must match its header on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub path: PathBuf,
    pub tag: String,
    pub tracks: u32,
}

/// Counters for status output and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// fdatasyncs of appended extents (one per group commit).
    pub syncs: u64,
    /// Extent records appended since open.
    pub appended: u64,
    /// Extents in the current log file.
    pub logged: u64,
    pub generation: u64,
}

#[derive(Debug)]
struct LogState {
    file: Arc<File>,
    generation: u64,
    /// Records in the file (valid ones, then the slots batches reserved).
    tail: u64,
    /// Extents waiting for the next batch, with the newest epoch that needs each.
    queue: Vec<(u32, u64)>,
    /// The batch a leader is writing.
    inflight: Vec<(u32, u64)>,
    next_batch: u64,
    durable_batch: u64,
    leader: bool,
    /// A failed append or sync: the log's durable state is unknown until a retire rewrites it.
    broken: Option<Error>,
    appended: u64,
}

/// The activity log of one volume. See the module docs.
#[derive(Debug)]
pub struct ActivityLog {
    cfg: LogConfig,
    io: Arc<dyn IoEngine>,
    /// Per extent: newest epoch logged for it; 0 = not in the current file (cold).
    stamps: Box<[AtomicU64]>,
    state: Mutex<LogState>,
    cond: Condvar,
    syncs: AtomicU64,
    /// A batch is written but not yet synced.
    unsynced: AtomicBool,
    /// Mirrors `LogState::broken.is_some()` for the lock-free flush_point.
    broken: AtomicBool,
}

fn extents_of(tracks: u32) -> u32 {
    tracks.div_ceil(EXTENT_TRACKS)
}

fn file_len(tracks: u32) -> u64 {
    HEADER_LEN + (u64::from(extents_of(tracks)) * RECORD_LEN as u64).next_multiple_of(4096)
}

fn record(generation: u64, index: u64, extent: u32) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[0..8].copy_from_slice(&generation.to_le_bytes());
    r[8..16].copy_from_slice(&index.to_le_bytes());
    r[16..20].copy_from_slice(&extent.to_le_bytes());
    let crc = crc32c::crc32c(&r[..24]);
    r[24..28].copy_from_slice(&crc.to_le_bytes());
    r
}

fn lock(m: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ActivityLog {
    /// Create an empty log (the file must not exist), allocated in full.
    pub fn create(cfg: LogConfig, io: Arc<dyn IoEngine>) -> Result<ActivityLog> {
        check_config(&cfg)?;
        let file = new_file(&cfg, &cfg.path, &*io, 1, &[])?;
        if let Some(dir) = cfg.path.parent() {
            sync_dir(dir)?;
        }
        Ok(ActivityLog::assemble(cfg, io, file, 1, 0))
    }

    /// Open an existing log. Every extent it holds gets stamp `seq` (the journal's current
    /// epoch), so it stays logged until a checkpoint covering the recovery is durable. The
    /// log is synced before this returns: records a killed leader wrote but never synced are
    /// durable before any writer relies on them.
    pub fn open(cfg: LogConfig, io: Arc<dyn IoEngine>, seq: u64) -> Result<ActivityLog> {
        check_config(&cfg)?;
        let what = cfg.path.display().to_string();
        let file = OpenOptions::new().read(true).write(true).open(&cfg.path).map_err(|e| Error::io(&what, &e))?;
        lock_exclusive(&file, &what)?;
        let generation = read_header(&file, &cfg, &*io)?;
        let extents = scan(&file, &cfg, &*io, generation)?;
        let tail = extents.len() as u64;
        // Clear whatever follows the valid records (a torn batch), so a later append cannot
        // make stale records behind it look valid again.
        let from = HEADER_LEN + tail * RECORD_LEN as u64;
        let end = file_len(cfg.tracks);
        let io_err = |e: std::io::Error| Error::io(&what, &e);
        if from < end {
            io.zero_range(file.as_fd(), from, end - from).map_err(io_err)?;
        }
        io.sync_data(file.as_fd()).map_err(io_err)?;
        let log = ActivityLog::assemble(cfg, io, file, generation, tail);
        for e in extents {
            log.stamps[e as usize].fetch_max(seq, Ordering::SeqCst);
        }
        Ok(log)
    }

    fn assemble(cfg: LogConfig, io: Arc<dyn IoEngine>, file: File, generation: u64, tail: u64) -> ActivityLog {
        let stamps = (0..extents_of(cfg.tracks)).map(|_| AtomicU64::new(0)).collect();
        let state = LogState {
            file: Arc::new(file),
            generation,
            tail,
            queue: Vec::new(),
            inflight: Vec::new(),
            next_batch: 1,
            durable_batch: 0,
            leader: false,
            broken: None,
            appended: 0,
        };
        ActivityLog {
            cfg,
            io,
            stamps,
            state: Mutex::new(state),
            cond: Condvar::new(),
            syncs: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        }
    }

    /// Make sure every extent of `tracks` is durably logged for epoch `seq` before the
    /// caller submits a write into them. Hot path (all extents logged for `seq` or later):
    /// atomic loads only, no lock, no allocation, no system call.
    pub fn note(&self, tracks: Range<u32>, seq: u64) -> Result<()> {
        if tracks.start >= tracks.end || tracks.end > self.cfg.tracks {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                self.cfg.path.display(),
                format!("track range {tracks:?} outside 0..{}", self.cfg.tracks),
            ));
        }
        let extents = tracks.start / EXTENT_TRACKS..(tracks.end - 1) / EXTENT_TRACKS + 1;
        // Acquire pairs with the leader's store after its sync: seeing the stamp means the
        // record is durable.
        if extents.clone().all(|e| self.stamps[e as usize].load(Ordering::Acquire) >= seq) {
            return Ok(());
        }
        self.note_slow(extents, seq)
    }

    fn note_slow(&self, extents: Range<u32>, seq: u64) -> Result<()> {
        // In a journal: after the intent mark, before the extent is logged.
        super::fail_point("alog-before-append")?;
        let mut st = lock(&self.state);
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        let (mut queued, mut inflight) = (false, false);
        for e in extents {
            let stamp = &self.stamps[e as usize];
            let cur = stamp.load(Ordering::SeqCst);
            if cur >= seq {
                continue;
            }
            if cur != 0 {
                // Already in the file for an older epoch: the record is durable, only the
                // retention changes (under the lock, so retire sees it).
                stamp.fetch_max(seq, Ordering::SeqCst);
            } else if let Some(q) = st.inflight.iter_mut().find(|q| q.0 == e) {
                q.1 = q.1.max(seq);
                inflight = true;
            } else if let Some(q) = st.queue.iter_mut().find(|q| q.0 == e) {
                q.1 = q.1.max(seq);
                queued = true;
            } else {
                st.queue.push((e, seq));
                queued = true;
            }
        }
        if !queued && !inflight {
            return Ok(());
        }
        // The batch that carries this writer's extents: the next one if any is queued.
        let ticket = if queued { st.next_batch } else { st.next_batch - 1 };
        loop {
            if let Some(e) = &st.broken {
                return Err(e.clone());
            }
            if st.durable_batch >= ticket {
                return Ok(());
            }
            if st.leader {
                st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st = self.lead(st);
        }
    }

    /// Write and sync everything queued as one batch; the lock is released during the I/O.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, LogState>) -> MutexGuard<'a, LogState> {
        st.leader = true;
        st.inflight = std::mem::take(&mut st.queue);
        let batch = st.next_batch;
        st.next_batch += 1;
        let (file, generation, first) = (Arc::clone(&st.file), st.generation, st.tail);
        let n = st.inflight.len() as u64;
        let mut buf = Vec::with_capacity(st.inflight.len() * RECORD_LEN);
        for (i, (e, _)) in st.inflight.iter().enumerate() {
            buf.extend_from_slice(&record(generation, first + i as u64, *e));
        }
        let fits = HEADER_LEN + (first + n) * RECORD_LEN as u64 <= file_len(self.cfg.tracks);
        st.tail += n;
        drop(st);

        let what = self.cfg.path.display();
        let res = if !fits {
            // Each extent is in the file at most once, so this means a broken invariant.
            Err(Error::new(ErrorKind::Corrupt, &what, "activity log full"))
        } else {
            self.unsynced.store(true, Ordering::SeqCst);
            let offset = HEADER_LEN + first * RECORD_LEN as u64;
            self.io
                .write_at(file.as_fd(), &buf, offset)
                .map_err(|e| Error::io(&what, &e))
                .and_then(|()| super::fail_point("alog-before-sync"))
                .and_then(|()| self.io.sync_data(file.as_fd()).map_err(|e| Error::io(&what, &e)))
        };
        self.syncs.fetch_add(1, Ordering::Relaxed);

        let mut st = lock(&self.state);
        st.leader = false;
        let done = std::mem::take(&mut st.inflight);
        match res {
            Ok(()) => {
                for (e, seq) in done {
                    // Release pairs with the hot path's Acquire.
                    self.stamps[e as usize].fetch_max(seq, Ordering::Release);
                }
                st.durable_batch = batch;
                st.appended += n;
                self.unsynced.store(false, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(log = %what, error = %e, "activity log append failed; cold writes fail until retire");
                st.broken = Some(e);
                self.broken.store(true, Ordering::SeqCst);
            }
        }
        self.cond.notify_all();
        st
    }

    /// What FLUSH and FUA need from the log: every extent a writer was told is logged is
    /// durable already (appends are synced before `note` returns), so this only waits for a
    /// batch being synced and reports a broken log. Lock-free when nothing is in flight.
    pub fn flush_point(&self) -> Result<()> {
        if !self.unsynced.load(Ordering::SeqCst) && !self.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut st = lock(&self.state);
        while st.leader {
            st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.broken.clone().map_or(Ok(()), Err)
    }

    /// After a checkpoint that covers every epoch below `keep_from` is durable: rewrite the
    /// log with only the extents stamped `keep_from` or later (new generation, temp file,
    /// fsync, rename, fsync of the directory). A crash at any point leaves the old or the new
    /// log, both correct. Writes into dropped extents log them again. A successful retire
    /// also clears a broken log.
    pub fn retire(&self, keep_from: u64) -> Result<()> {
        let mut st = lock(&self.state);
        while st.leader {
            st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        let kept: Vec<u32> = (0..self.stamps.len() as u32)
            .filter(|&e| self.stamps[e as usize].load(Ordering::SeqCst) >= keep_from)
            .collect();
        let generation = st.generation + 1;
        let tmp = self.cfg.path.with_extension("alog.tmp");
        let _ = std::fs::remove_file(&tmp);
        let file = new_file(&self.cfg, &tmp, &*self.io, generation, &kept)?;
        super::fail_point("alog-retire-before-rename")?;
        std::fs::rename(&tmp, &self.cfg.path).map_err(|e| Error::io(tmp.display(), &e))?;
        if let Some(dir) = self.cfg.path.parent() {
            sync_dir(dir)?;
        }
        for s in self.stamps.iter() {
            if s.load(Ordering::SeqCst) < keep_from {
                s.store(0, Ordering::SeqCst);
            }
        }
        st.file = Arc::new(file);
        st.generation = generation;
        st.tail = kept.len() as u64;
        st.broken = None;
        self.broken.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Extents in the log now (logged and durable).
    pub fn logged(&self) -> Vec<u32> {
        (0..self.stamps.len() as u32).filter(|&e| self.stamps[e as usize].load(Ordering::SeqCst) != 0).collect()
    }

    /// Every track of every logged extent: what a power loss must treat as changed.
    pub fn logged_tracks(&self) -> TrackBitmap {
        let mut out = TrackBitmap::new();
        for e in self.logged() {
            out.insert_range(extent_tracks(e, self.cfg.tracks));
        }
        out
    }

    pub fn stats(&self) -> LogStats {
        let st = lock(&self.state);
        LogStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            appended: st.appended,
            logged: self.stamps.iter().filter(|s| s.load(Ordering::Relaxed) != 0).count() as u64,
            generation: st.generation,
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }
}

/// The tracks of extent `e` in a volume of `tracks` tracks.
pub fn extent_tracks(e: u32, tracks: u32) -> Range<u32> {
    e * EXTENT_TRACKS..((e + 1) * EXTENT_TRACKS).min(tracks)
}

fn check_config(cfg: &LogConfig) -> Result<()> {
    if cfg.tracks == 0 || cfg.tag.len() > TAG_MAX {
        return Err(Error::new(ErrorKind::InvalidArgument, cfg.path.display(), "bad track count or tag"));
    }
    Ok(())
}

fn header(cfg: &LogConfig, generation: u64) -> [u8; 104] {
    let mut h = [0u8; 104];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&EXTENT_TRACKS.to_le_bytes());
    h[16..20].copy_from_slice(&cfg.tracks.to_le_bytes());
    h[20..24].copy_from_slice(&(cfg.tag.len() as u32).to_le_bytes());
    h[24..24 + cfg.tag.len()].copy_from_slice(cfg.tag.as_bytes());
    h[88..96].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&h[..96]);
    h[96..100].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Write a complete log file at `path` (created or truncated): header and `extents`, synced.
fn new_file(
    cfg: &LogConfig,
    path: &std::path::Path,
    io: &dyn IoEngine,
    generation: u64,
    extents: &[u32],
) -> Result<File> {
    let what = path.display().to_string();
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| Error::io(&what, &e))?;
    lock_exclusive(&file, &what)?;
    preallocate(&file, file_len(cfg.tracks), &what)?;
    let mut buf = header(cfg, generation).to_vec();
    buf.resize(HEADER_LEN as usize, 0);
    for (i, e) in extents.iter().enumerate() {
        buf.extend_from_slice(&record(generation, i as u64, *e));
    }
    io.write_at(file.as_fd(), &buf, 0).and_then(|()| io.sync_data(file.as_fd())).map_err(|e| Error::io(&what, &e))?;
    Ok(file)
}

fn read_header(file: &File, cfg: &LogConfig, io: &dyn IoEngine) -> Result<u64> {
    let what = cfg.path.display();
    let mut h = [0u8; 104];
    io.read_at(file.as_fd(), &mut h, 0).map_err(|e| Error::io(&what, &e))?;
    let corrupt = |why: String| Error::new(ErrorKind::Corrupt, &what, why);
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    if h[0..8] != MAGIC {
        return Err(corrupt("not a flashtrack activity log".into()));
    }
    if u32_at(8) != LOG_VERSION {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            &what,
            format!("activity log format {}, this build reads format {LOG_VERSION}", u32_at(8)),
        ));
    }
    if crc32c::crc32c(&h[..96]) != u32_at(96) {
        return Err(corrupt("header checksum mismatch".into()));
    }
    if u32_at(12) != EXTENT_TRACKS {
        return Err(corrupt(format!("log extents of {} tracks, this build uses {EXTENT_TRACKS}", u32_at(12))));
    }
    if u32_at(16) != cfg.tracks {
        return Err(corrupt(format!("log covers {} tracks, the volume has {}", u32_at(16), cfg.tracks)));
    }
    let tag_len = (u32_at(20) as usize).min(TAG_MAX);
    if h[24..24 + tag_len] != *cfg.tag.as_bytes() {
        let found = String::from_utf8_lossy(&h[24..24 + tag_len]);
        return Err(corrupt(format!("log belongs to {found:?}, not {:?}", cfg.tag)));
    }
    Ok(u64::from_le_bytes(h[88..96].try_into().unwrap_or_default()))
}

/// The valid records, in order, up to the first invalid one.
fn scan(file: &File, cfg: &LogConfig, io: &dyn IoEngine, generation: u64) -> Result<Vec<u32>> {
    let limit = u64::from(extents_of(cfg.tracks));
    let mut out = Vec::new();
    let mut buf = vec![0u8; SCAN_CHUNK];
    let mut index = 0u64;
    while index < limit {
        let n = ((limit - index) as usize * RECORD_LEN).min(SCAN_CHUNK);
        io.read_at(file.as_fd(), &mut buf[..n], HEADER_LEN + index * RECORD_LEN as u64)
            .map_err(|e| Error::io(cfg.path.display(), &e))?;
        for r in buf[..n].chunks_exact(RECORD_LEN) {
            let word = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or_default());
            let extent = u32::from_le_bytes(r[16..20].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(r[24..28].try_into().unwrap_or_default());
            let valid = crc32c::crc32c(&r[..24]) == crc
                && word(0) == generation
                && word(8) == index
                && u64::from(extent) < limit;
            if !valid {
                return Ok(out);
            }
            out.push(extent);
            index += 1;
        }
    }
    Ok(out)
}
