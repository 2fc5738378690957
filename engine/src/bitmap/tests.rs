//! Journal tests: epochs under concurrent writers, kill -9 (simulated and real), power loss
//! through the fault-injecting engine, torn log tails, group commit, header checks, and the
//! invariant-3 checker failing on a toy that over-marks.

use super::activity::{ActivityLog, EXTENT_TRACKS, LogConfig, extent_tracks};
use super::checkpoint;
use super::journal::{JournalConfig, MarkViolation, RecoveryKind, Shutdown, VolumeJournal, check_marked};
use super::{ErrorKind, TrackBitmap, arm_fail_point};
use crate::io::{FaultEngine, IoEngine, IoKind, SyncEngine};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

const BOOT_A: &str = "11111111-1111-1111-1111-111111111111";
const BOOT_B: &str = "22222222-2222-2222-2222-222222222222";

fn cfg(dir: &Path, tracks: u32, boot: &str) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        name: "vol1000".into(),
        tag: "IBM.2107-75FA120/1000".into(),
        tracks,
        boot_id: Some(boot.into()),
    }
}

fn sync_io() -> Arc<dyn IoEngine> {
    Arc::new(SyncEngine)
}

fn one(r: std::ops::Range<u32>) -> TrackBitmap {
    set(&[r])
}

fn set(ranges: &[std::ops::Range<u32>]) -> TrackBitmap {
    let mut b = TrackBitmap::new();
    for r in ranges {
        b.insert_range(r.clone());
    }
    b
}

/// Mark as a caller does: journal, then in-memory bits, then drop the guard.
fn write(j: &VolumeJournal, mem: &Mutex<TrackBitmap>, r: std::ops::Range<u32>) {
    let g = j.mark(r.clone()).unwrap();
    mem.lock().unwrap().insert_range(r);
    drop(g);
}

/// Tiny deterministic generator (no rand dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

#[test]
fn checker_fails_on_over_and_under_marking() {
    let written = set(&[10..20, 5000..5001]);
    let in_flight = one(30..31);
    assert_eq!(check_marked(&written, &written, &TrackBitmap::new()), Ok(()));
    let mut with_flight = written.clone();
    with_flight.union_with(&in_flight);
    assert_eq!(check_marked(&with_flight, &written, &in_flight), Ok(()));
    // A toy journal that marks everything "never loses a change" and must still fail.
    let everything = TrackBitmap::full(10_000);
    assert!(
        matches!(check_marked(&everything, &written, &in_flight), Err(MarkViolation::Extra(x)) if x.len() == 10_000 - 12)
    );
    // One that marks nothing fails the other way.
    assert!(
        matches!(check_marked(&TrackBitmap::new(), &written, &in_flight), Err(MarkViolation::Lost(x)) if x == written)
    );
    // And the real recovery, replaced by the toy, fails on a real run.
    let dir = tempfile::tempdir().unwrap();
    let j = VolumeJournal::create(&cfg(dir.path(), 4096, BOOT_A), sync_io()).unwrap();
    drop(j.mark(100..110).unwrap());
    drop(j);
    let rec = VolumeJournal::open(&cfg(dir.path(), 4096, BOOT_A), sync_io(), RecoveryKind::Detect).unwrap();
    assert_eq!(check_marked(&rec.changed, &one(100..110), &TrackBitmap::new()), Ok(()));
    assert!(check_marked(&TrackBitmap::full(4096), &one(100..110), &TrackBitmap::new()).is_err());
}

#[test]
fn epochs_flip_under_concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tracks = 64 * EXTENT_TRACKS;
    let j = Arc::new(VolumeJournal::create(&cfg(dir.path(), tracks, BOOT_A), sync_io()).unwrap());
    let mem = Arc::new(Mutex::new(TrackBitmap::new()));
    let done = Arc::new(Mutex::new(TrackBitmap::new()));
    let stop = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8u64)
        .map(|t| {
            let (j, mem, done, stop) = (j.clone(), mem.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Lcg(t + 1);
                while stop.load(Ordering::SeqCst) == 0 {
                    let start = rng.next(tracks - 8);
                    let r = start..start + 1 + rng.next(7);
                    let g = j.mark(r.clone()).unwrap();
                    // Widen the window between mark and in-memory bits, where a flip that
                    // did not wait for the guard would lose the mark.
                    std::thread::yield_now();
                    mem.lock().unwrap().insert_range(r.clone());
                    drop(g);
                    done.lock().unwrap().insert_range(r);
                }
            })
        })
        .collect();
    let mut persisted = TrackBitmap::new();
    for round in 0..60 {
        // At any instant, what a crash would recover covers every completed mark.
        let before = done.lock().unwrap().clone();
        let mut view = persisted.clone();
        view.union_with(&j.intent().recover());
        assert!(before.is_subset(&view), "round {round}: a completed mark is in neither checkpoint nor intent");
        let token = j.begin_checkpoint().unwrap();
        let snapshot = mem.lock().unwrap().clone();
        checkpoint::store(dir.path(), "rel", round + 1, std::slice::from_ref(&snapshot)).unwrap();
        persisted = snapshot;
        j.end_checkpoint(token).unwrap();
        let mut view = persisted.clone();
        view.union_with(&j.intent().recover());
        assert!(before.is_subset(&view), "round {round}: lost across the flip");
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(1, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let all = done.lock().unwrap().clone();
    let mut view = checkpoint::load(dir.path(), "rel").unwrap().unwrap().bitmaps.remove(0);
    view.union_with(&j.intent().recover());
    assert_eq!(check_marked(&view, &all, &TrackBitmap::new()), Ok(()));
    assert!(j.log_stats().generation > 1, "retire ran");
}

#[test]
fn process_crash_recovers_exactly_the_marks() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 100_000, BOOT_A);
    let mem = Mutex::new(TrackBitmap::new());
    let j = VolumeJournal::create(&c, sync_io()).unwrap();
    for r in [0..1, 63..65, 1000..1200, 99_999..100_000] {
        write(&j, &mem, r);
    }
    let t = j.begin_checkpoint().unwrap();
    let ckpt = mem.lock().unwrap().clone();
    checkpoint::store(dir.path(), "rel", 1, std::slice::from_ref(&ckpt)).unwrap();
    j.end_checkpoint(t).unwrap();
    let after = set(&[5..6, 64..130, 70_000..70_010]);
    for r in [5..6, 64..130, 70_000..70_010] {
        write(&j, &mem, r);
    }
    // In flight at the crash: marked, data write maybe not submitted.
    let in_flight = one(90_000..90_004);
    let g = j.mark(90_000..90_004).unwrap();
    drop(g);
    drop(j); // kill -9: no close

    let rec = VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap();
    assert_eq!(rec.previous, Shutdown::ProcessCrash);
    let mut expect = after.clone();
    expect.union_with(&in_flight);
    assert_eq!(rec.changed, expect, "exactly the marks since the checkpoint, not more");
    assert_eq!(check_marked(&rec.changed, &after, &in_flight), Ok(()));
    // The recovered tracks stay journaled until the next checkpoint: a second crash now
    // recovers them again.
    drop(rec);
    let rec = VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap();
    assert_eq!(rec.changed, expect);
    // After a checkpoint that holds them, they are gone.
    let mut mem2 = ckpt.clone();
    mem2.union_with(&rec.changed);
    let t = rec.journal.begin_checkpoint().unwrap();
    checkpoint::store(dir.path(), "rel", 2, &[mem2]).unwrap();
    rec.journal.end_checkpoint(t).unwrap();
    drop(rec);
    let rec = VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap();
    assert!(rec.changed.is_empty());
}

/// A real kill -9: a child process (this test binary, re-run on one test) marks and
/// aborts; the parent recovers from the page cache.
#[test]
fn kill_9_child_process() {
    const VAR: &str = "FLASHTRACK_JOURNAL_CHILD";
    if let Ok(dir) = std::env::var(VAR) {
        let c = cfg(Path::new(&dir), 50_000, BOOT_A);
        let j = VolumeJournal::create(&c, sync_io()).unwrap();
        for r in [7..8, 2000..2100, 49_000..49_990] {
            std::mem::forget(j.mark(r).unwrap());
        }
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args(["bitmap::tests::kill_9_child_process", "--exact", "--test-threads=1"])
        .env(VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "child must die");
    let rec = VolumeJournal::open(&cfg(dir.path(), 50_000, BOOT_A), sync_io(), RecoveryKind::Detect).unwrap();
    assert_eq!(rec.previous, Shutdown::ProcessCrash);
    assert_eq!(rec.changed, set(&[7..8, 2000..2100, 49_000..49_990]));
}

fn zero_intent_bits(c: &JournalConfig) {
    let f = std::fs::OpenOptions::new().write(true).open(c.intent_path()).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&vec![0u8; (len - 4096) as usize], 4096).unwrap();
}

fn extents(list: &[u32], tracks: u32) -> TrackBitmap {
    let mut b = TrackBitmap::new();
    for &e in list {
        b.insert_range(extent_tracks(e, tracks));
    }
    b
}

#[test]
fn power_loss_keeps_flushed_writes_and_drops_unsynced_log() {
    for zero_intent in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let tracks = 20 * EXTENT_TRACKS + 10;
        let c = cfg(dir.path(), tracks, BOOT_A);
        let fault = Arc::new(FaultEngine::with_power_loss(sync_io()));
        let j = VolumeJournal::create(&c, fault.clone()).unwrap();
        let mem = Mutex::new(TrackBitmap::new());
        let written = set(&[0..3, 3 * EXTENT_TRACKS + 5..3 * EXTENT_TRACKS + 9, 20 * EXTENT_TRACKS..tracks]);
        for r in [0..3, 3 * EXTENT_TRACKS + 5..3 * EXTENT_TRACKS + 9, 20 * EXTENT_TRACKS..tracks] {
            write(&j, &mem, r);
        }
        j.flush_point().unwrap();
        // A cold extent whose log record is written but never synced: the mark fails, so
        // the caller never submits the data write.
        arm_fail_point("alog-before-sync");
        assert!(j.mark(9 * EXTENT_TRACKS..9 * EXTENT_TRACKS + 1).is_err());
        assert!(j.flush_point().is_err(), "a broken log is reported at FLUSH");
        // The record of extent 9 is in the file but not durable.
        let log_file = std::fs::File::open(c.log_path()).unwrap();
        assert_eq!(fault.unsynced(std::os::fd::AsFd::as_fd(&log_file)).unwrap().len(), 1);
        drop(log_file);
        fault.power_loss().unwrap();
        fault.power_on();
        drop(j);
        if zero_intent {
            zero_intent_bits(&c);
        }
        let c2 = cfg(dir.path(), tracks, BOOT_B);
        let rec = VolumeJournal::open(&c2, fault.clone(), RecoveryKind::Detect).unwrap();
        assert_eq!(rec.previous, Shutdown::PowerLoss);
        let logged = extents(&[0, 3, 20], tracks);
        assert_eq!(rec.changed, logged, "every logged extent, no extent never logged (zeroed intent: {zero_intent})");
        assert_eq!(check_marked(&rec.changed, &written, &logged), Ok(()));
        // A process crash before the next checkpoint still recovers the power-loss set.
        drop(rec);
        let rec = VolumeJournal::open(&c2, fault.clone(), RecoveryKind::Detect).unwrap();
        assert_eq!(rec.previous, Shutdown::ProcessCrash);
        assert!(logged.is_subset(&rec.changed));
    }
}

#[test]
fn power_loss_after_checkpoint_covers_only_new_extents() {
    let dir = tempfile::tempdir().unwrap();
    let tracks = 10 * EXTENT_TRACKS;
    let c = cfg(dir.path(), tracks, BOOT_A);
    let fault = Arc::new(FaultEngine::with_power_loss(sync_io()));
    let j = VolumeJournal::create(&c, fault.clone()).unwrap();
    let mem = Mutex::new(TrackBitmap::new());
    write(&j, &mem, 10..20);
    write(&j, &mem, EXTENT_TRACKS + 1..EXTENT_TRACKS + 2);
    let t = j.begin_checkpoint().unwrap();
    let ckpt = mem.lock().unwrap().clone();
    checkpoint::store(dir.path(), "rel", 1, std::slice::from_ref(&ckpt)).unwrap();
    j.end_checkpoint(t).unwrap();
    // Extent 0 is written again after the flip: it stays logged; extent 1 is retired.
    write(&j, &mem, 30..31);
    write(&j, &mem, 5 * EXTENT_TRACKS..5 * EXTENT_TRACKS + 2);
    let t = j.begin_checkpoint().unwrap();
    // Crash in the middle of retire: old log generation stays, which is also correct.
    let snap = mem.lock().unwrap().clone();
    checkpoint::store(dir.path(), "rel", 2, &[snap]).unwrap();
    arm_fail_point("alog-retire-before-rename");
    assert!(j.end_checkpoint(t).is_err());
    write(&j, &mem, 7 * EXTENT_TRACKS..7 * EXTENT_TRACKS + 1);
    fault.power_loss().unwrap();
    fault.power_on();
    drop(j);
    let rec = VolumeJournal::open(&cfg(dir.path(), tracks, BOOT_B), fault, RecoveryKind::Detect).unwrap();
    assert_eq!(rec.changed, extents(&[0, 5, 7], tracks));
    let mut view = checkpoint::load(dir.path(), "rel").unwrap().unwrap().bitmaps.remove(0);
    view.union_with(&rec.changed);
    assert!(mem.lock().unwrap().is_subset(&view));
}

#[test]
fn clean_close_recovers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 5000, BOOT_A);
    let j = VolumeJournal::create(&c, sync_io()).unwrap();
    drop(j.mark(1..4000).unwrap());
    let t = j.begin_checkpoint().unwrap();
    checkpoint::store(dir.path(), "rel", 1, &[one(1..4000)]).unwrap();
    j.close_clean(t).unwrap();
    for (boot, kind) in
        [(BOOT_A, RecoveryKind::Detect), (BOOT_B, RecoveryKind::Detect), (BOOT_B, RecoveryKind::PowerLoss)]
    {
        let rec = VolumeJournal::open(&cfg(dir.path(), 5000, boot), sync_io(), kind).unwrap();
        assert!(rec.changed.is_empty(), "{boot} {kind:?}");
        let t = rec.journal.begin_checkpoint().unwrap();
        rec.journal.close_clean(t).unwrap();
    }
    let rec = VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap();
    assert_eq!(rec.previous, Shutdown::Clean);
}

#[test]
fn header_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 5000, BOOT_A);
    let j = VolumeJournal::create(&c, sync_io()).unwrap();
    // One owner at a time.
    let err = VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap_err();
    assert_eq!(err.kind, ErrorKind::VolumeInUse);
    // create_new on an existing file: EEXIST, an I/O error at this layer.
    assert_eq!(VolumeJournal::create(&c, sync_io()).unwrap_err().kind, ErrorKind::Io);
    drop(j);
    let kind = |c: &JournalConfig| VolumeJournal::open(c, sync_io(), RecoveryKind::Detect).unwrap_err().kind;
    assert_eq!(kind(&cfg(dir.path(), 5001, BOOT_A)), ErrorKind::Corrupt);
    assert_eq!(kind(&JournalConfig { tag: "IBM.2107-75FA120/1001".into(), ..c.clone() }), ErrorKind::Corrupt);
    // Another format version of the intent bitset, then of the log.
    let bump = |p: &Path| {
        let mut d = std::fs::read(p).unwrap();
        d[8] = 9;
        std::fs::write(p, d).unwrap();
    };
    let intent = std::fs::read(c.intent_path()).unwrap();
    bump(&c.intent_path());
    assert_eq!(kind(&c), ErrorKind::VersionMismatch);
    std::fs::write(c.intent_path(), &intent).unwrap();
    let log = std::fs::read(c.log_path()).unwrap();
    bump(&c.log_path());
    assert_eq!(kind(&c), ErrorKind::VersionMismatch);
    let mut bad = log.clone();
    bad[30] ^= 1;
    std::fs::write(c.log_path(), &bad).unwrap();
    assert_eq!(kind(&c), ErrorKind::Corrupt);
    std::fs::write(c.log_path(), &log).unwrap();
    // Intact again: opens.
    VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).unwrap();
    // A missing file is an error, not a fresh journal.
    VolumeJournal::remove(&c).unwrap();
    assert!(VolumeJournal::open(&c, sync_io(), RecoveryKind::Detect).is_err());
}

fn log_cfg(dir: &Path, tracks: u32) -> LogConfig {
    LogConfig { path: dir.join("v.alog"), tag: "v".into(), tracks }
}

#[test]
fn torn_log_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let lc = log_cfg(dir.path(), 10 * EXTENT_TRACKS);
    let log = ActivityLog::create(lc.clone(), sync_io()).unwrap();
    for e in [2, 5, 7] {
        log.note(e * EXTENT_TRACKS..e * EXTENT_TRACKS + 1, 2).unwrap();
    }
    drop(log);
    let f = std::fs::OpenOptions::new().write(true).open(&lc.path).unwrap();
    // A torn record after the three valid ones.
    f.write_all_at(&[0xAB; 20], 4096 + 3 * 32).unwrap();
    let log = ActivityLog::open(lc.clone(), sync_io(), 2).unwrap();
    assert_eq!(log.logged(), vec![2, 5, 7]);
    drop(log);
    // Damage in the middle: everything from there on is untrusted.
    f.write_all_at(&[0xFF], 4096 + 32 + 17).unwrap();
    let log = ActivityLog::open(lc.clone(), sync_io(), 2).unwrap();
    assert_eq!(log.logged(), vec![2]);
    // New appends go after the last valid record; the stale record behind was cleared
    // at open and does not come back.
    log.note(9 * EXTENT_TRACKS..9 * EXTENT_TRACKS + 1, 2).unwrap();
    drop(log);
    let log = ActivityLog::open(lc, sync_io(), 2).unwrap();
    assert_eq!(log.logged(), vec![2, 9]);
}

/// Counts calls and makes fdatasync slow, so concurrent writers pile up behind a leader.
#[derive(Debug, Default)]
struct SlowSync {
    syncs: AtomicU64,
    other: AtomicU64,
}

impl IoEngine for SlowSync {
    fn kind(&self) -> IoKind {
        IoKind::Sync
    }
    fn read_at(&self, fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        SyncEngine.read_at(fd, buf, offset)
    }
    fn write_at(&self, fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        SyncEngine.write_at(fd, buf, offset)
    }
    fn sync_data(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        SyncEngine.sync_data(fd)
    }
    fn punch_hole(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        SyncEngine.punch_hole(fd, offset, len)
    }
    fn zero_range(&self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        SyncEngine.zero_range(fd, offset, len)
    }
}

#[test]
fn group_commit_shares_syncs_and_hot_path_does_no_io() {
    const N: u32 = 32;
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(SlowSync::default());
    let j = Arc::new(VolumeJournal::create(&cfg(dir.path(), N * EXTENT_TRACKS, BOOT_A), io.clone()).unwrap());
    let base = io.syncs.load(Ordering::SeqCst);
    let barrier = Arc::new(Barrier::new(N as usize));
    let threads: Vec<_> = (0..N)
        .map(|e| {
            let (j, barrier) = (j.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                drop(j.mark(e * EXTENT_TRACKS + 3..e * EXTENT_TRACKS + 4).unwrap());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = io.syncs.load(Ordering::SeqCst) - base;
    assert!(syncs <= u64::from(N) / 4, "{N} cold extents took {syncs} syncs");
    assert_eq!(j.log().logged().len(), N as usize);
    assert_eq!(j.log_stats().appended, u64::from(N));
    // Hot path: extent logged, bit set: no I/O at all (and no lock or allocation by
    // construction: atomics on the map and the stamps).
    let (s, o) = (io.syncs.load(Ordering::SeqCst), io.other.load(Ordering::SeqCst));
    for _ in 0..10_000 {
        drop(j.mark(3..4).unwrap());
        j.flush_point().unwrap();
    }
    assert_eq!((io.syncs.load(Ordering::SeqCst), io.other.load(Ordering::SeqCst)), (s, o));
}

#[test]
fn marks_out_of_range_are_refused() {
    let flashtrack_track = crate::geometry::TrackNo;
    let dir = tempfile::tempdir().unwrap();
    let j = VolumeJournal::create(&cfg(dir.path(), 100, BOOT_A), sync_io()).unwrap();
    for r in [5..5, 99..101, 100..101] {
        assert_eq!(j.mark(r).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
    drop(j.mark(99..100).unwrap());
    // A checkpoint that failed (its token never ended) does not wedge the next one, and the
    // bits it would have cleared are kept (too long, never too short).
    let abandoned = j.begin_checkpoint().unwrap();
    drop(abandoned);
    let t = j.begin_checkpoint().expect("a new checkpoint after an abandoned one");
    j.end_checkpoint(t).unwrap();
    assert!(j.intent().recover().contains(flashtrack_track(99)), "a mark was lost by an abandoned checkpoint");
}

/// The dirty-page summaries: `is_clear` and `end_epoch` visit only marked pages, and a
/// reopened file rebuilds them (marks far apart, in both epochs, across an open).
#[test]
fn dirty_page_summaries_track_marks_across_epochs_and_open() {
    use super::intent::{BitsetConfig, BitsetRole, PersistentBitset};
    let dir = tempfile::tempdir().unwrap();
    let bc = BitsetConfig {
        path: dir.path().join("g.grains"),
        role: BitsetRole::Grains,
        tag: "IBM.2107-75FA120/1000:1001".into(),
        tracks: 4_000_000, // 61 pages per epoch
        boot_id: BOOT_A.into(),
    };
    let b = PersistentBitset::create(bc.clone()).unwrap();
    assert!(b.is_clear());
    drop(b.mark(3_999_999..4_000_000).unwrap());
    drop(b.mark(40_000..40_001).unwrap());
    assert!(!b.is_clear());
    let t = b.begin_epoch().unwrap();
    drop(b.mark(1_000_000..1_000_002).unwrap()); // the new epoch
    b.end_epoch(t).unwrap();
    assert!(!b.is_clear(), "a mark of the new epoch was cleared with the old one");
    assert_eq!(b.recover(), one(1_000_000..1_000_002));
    drop(b);
    let b = PersistentBitset::open(bc).unwrap();
    assert!(!b.is_clear(), "the summaries were not rebuilt at open");
    let t = b.begin_epoch().unwrap();
    b.end_epoch(t).unwrap();
    assert!(b.is_clear(), "end_epoch missed a page that held bits at open");
    assert!(b.recover().is_empty());
}
