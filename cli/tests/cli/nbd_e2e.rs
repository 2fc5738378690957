//! The complete NBD server end to end through flashd with real clients: `nbdinfo --map` of
//! `base:allocation` and of a relationship's dirty bitmaps, `qemu-img map` / `compare`,
//! `nbdinfo --list`, structured reads by qemu-io, and eight writers racing a resync copy
//! with every acknowledged byte checked against a model.

use crate::site_proc::{Daemon, all_ok, fb_request, have};
use flashtrack::control::{Reply, Request};
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::Sam;
use flashtrack::nbd::client::{Client, Endpoint};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

const IMG: &str = "IBM.2107-75FA120";
const TRACK: u64 = 64 << 10;

fn uri(d: &Daemon, vol: &str) -> String {
    format!("nbd+unix:///{IMG}/{vol}?socket={}", d.nbd_sock().display())
}

/// Runs a tool; panics with its output unless it exits 0.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("failed"), "{cmd:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_io(d: &Daemon, vol: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", &uri(d, vol)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(&mut c);
}

/// `nbdinfo --map[=context]` as (offset, length, flags).
fn map(d: &Daemon, vol: &str, context: Option<&str>) -> Vec<(u64, u64, u32)> {
    let arg = context.map_or("--map".to_owned(), |c| format!("--map={c}"));
    let out = run(Command::new("nbdinfo").arg(arg).arg(uri(d, vol)));
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// Tracks flagged dirty in a dirty-bitmap map.
fn dirty_tracks(m: &[(u64, u64, u32)]) -> BTreeSet<u64> {
    m.iter().filter(|e| e.2 & 1 != 0).flat_map(|&(o, l, _)| o / TRACK..(o + l).div_ceil(TRACK)).collect()
}

/// Byte ranges reported as data (flags without HOLE) by a base:allocation map, merged.
fn data_ranges(m: &[(u64, u64, u32)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(o, l, f) in m.iter().filter(|e| e.2 & 1 == 0) {
        assert_eq!(f & 2, 0, "data reported as zero");
        match out.last_mut() {
            Some(last) if last.1 == o => last.1 = o + l,
            _ => out.push((o, o + l)),
        }
    }
    out
}

fn setup(d: &Daemon, blocks: u64) -> ImageId {
    let img: ImageId = IMG.parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    all_ok(d.ok(fb_request(&img, 0, blocks, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
    img
}

fn pair() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(0x1000), VolumeId(0x1001))]
}

fn record(nocopy: bool) -> FlashOptions {
    FlashOptions { record: true, persist: true, nocopy, ..FlashOptions::default() }
}

fn wait_copied(d: &Daemon, img: &ImageId) {
    for _ in 0..400 {
        let Reply::Flash(v) = d.ok(Request::FlashWait { image: img.clone(), pairs: pair(), timeout_ms: 500 }) else {
            panic!("FlashWait")
        };
        if v.iter().all(|v| v.out_of_sync == 0) {
            return;
        }
    }
    panic!("copy did not finish");
}

fn out_of_sync(d: &Daemon, img: &ImageId) -> u64 {
    let Reply::Flash(v) = d.ok(Request::FlashWait { image: img.clone(), pairs: pair(), timeout_ms: 0 }) else {
        panic!("FlashWait")
    };
    v.iter().map(|v| v.out_of_sync).sum()
}

#[test]
fn block_status_maps_allocation_and_dirty_bitmaps() {
    if !have("nbdinfo", "block_status_maps_allocation_and_dirty_bitmaps") {
        return;
    }
    if !have("qemu-io", "block_status_maps_allocation_and_dirty_bitmaps") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path());
    let img = setup(&d, 131072); // 64 MiB
    qemu_io(&d, "1000", &["write -P 0xab 4M 1M", "write -P 0xcd 40M 64k"]);
    let src_data = vec![(4 << 20, 5 << 20), (40 << 20, (40 << 20) + TRACK)];
    assert_eq!(data_ranges(&map(&d, "1000", None)), src_data, "sparse source");
    assert!(data_ranges(&map(&d, "1001", None)).is_empty(), "untouched volume is one hole");

    // No background copy: the target's tracks are all borrowed, so its allocation is the
    // source's (a hole reported there would claim zeros where a read returns T0 data).
    all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: record(true) }));
    assert_eq!(data_ranges(&map(&d, "1001", None)), src_data, "target borrows the source's layout");
    qemu_io(&d, "1001", &["read -P 0xab 4M 1M", "read -P 0 5M 1M"]);

    // Tracks written after establish: exactly these in `.src` (source) and `.tgt` (target),
    // on both volumes of the pair. Unaligned writes mark every track they touch.
    qemu_io(&d, "1000", &["write -P 1 196708 4096", "write -P 2 640k 128k", "write -P 3 1048064 1024"]);
    qemu_io(&d, "1001", &["write -P 4 20M 512"]);
    let src: BTreeSet<u64> = [3, 10, 11, 15, 16].into();
    let tgt: BTreeSet<u64> = [320].into();
    for vol in ["1000", "1001"] {
        assert_eq!(dirty_tracks(&map(&d, vol, Some("qemu:dirty-bitmap:1000-1001.src"))), src, "{vol} .src");
        assert_eq!(dirty_tracks(&map(&d, vol, Some("qemu:dirty-bitmap:1000-1001.tgt"))), tgt, "{vol} .tgt");
    }
    // COW moved T0 of track 3 etc. to the target; the target still reads T0 everywhere else.
    qemu_io(&d, "1001", &["read -P 0xab 4M 1M", "read -P 0 196708 4096", "read -P 4 20M 512"]);

    // qemu-img map reads base:allocation too.
    let m = run(Command::new("qemu-img").args(["map", "-f", "raw", "--output=json", &uri(&d, "1000")]));
    let v: serde_json::Value = serde_json::from_str(&m).unwrap();
    let data: Vec<(u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    assert!(data.contains(&(4 << 20, 1 << 20)), "qemu-img map: {m}");
    assert!(v.as_array().unwrap().iter().any(|e| e["zero"] == true && e["start"] == 0), "{m}");

    // nbdinfo --list: every volume, with its contexts.
    let list = run(Command::new("nbdinfo").args(["--list", &format!("nbd+unix://?socket={}", d.nbd_sock().display())]));
    for want in [
        "IBM.2107-75FA120/1000",
        "IBM.2107-75FA120/1001",
        "base:allocation",
        "qemu:dirty-bitmap:1000-1001.src",
        "qemu:dirty-bitmap:1000-1001.tgt",
        "block_size_preferred: 65536",
        "can_cache: true",
    ] {
        assert!(list.contains(want), "nbdinfo --list lacks {want}: {list}");
    }

    // After a resync the recording restarts: a client that re-queries sees a clean bitmap.
    all_ok(d.ok(Request::FlashResync { image: img.clone(), pairs: pair(), options: record(false), seqnum: None }));
    assert!(dirty_tracks(&map(&d, "1000", Some("qemu:dirty-bitmap:1000-1001.src"))).is_empty());
    qemu_io(&d, "1000", &["write -P 5 30M 4k"]);
    assert_eq!(dirty_tracks(&map(&d, "1000", Some("qemu:dirty-bitmap:1000-1001.src"))), [480].into());
    wait_copied(&d, &img);
    // Withdrawn: the context is no longer offered.
    all_ok(d.ok(Request::FlashRemove { image: img, pairs: pair(), withdraw: Default::default() }));
    let out = Command::new("nbdinfo").arg("--map=qemu:dirty-bitmap:1000-1001.src").arg(uri(&d, "1000")).output();
    assert!(!out.unwrap().status.success(), "a withdrawn relationship's bitmap is still offered");
}

#[test]
fn compare_target_with_t0_and_source_across_a_resync() {
    if !have("qemu-img", "compare_target_with_t0_and_source_across_a_resync") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path());
    let img = setup(&d, 65536); // 32 MiB
    qemu_io(&d, "1000", &["write -P 0x11 0 8M", "write -P 0x12 20M 3M"]);
    let t0 = home.path().join("t0.raw");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &uri(&d, "1000")]).arg(&t0));
    all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: record(false) }));
    qemu_io(&d, "1000", &["write -P 0x21 1M 100k", "write -P 0x22 30M 64k", "write -z 21M 512k"]);
    let compare = |a: &str, fa: &str, b: &str| {
        Command::new("qemu-img").args(["compare", "-f", fa, "-F", "raw", a, b]).status().unwrap().code()
    };
    let t0s = t0.to_str().unwrap();
    // Before the resync: the target is the T0 image, during the copy and after it.
    assert_eq!(compare(t0s, "raw", &uri(&d, "1001")), Some(0), "target != T0 during the copy");
    wait_copied(&d, &img);
    assert_eq!(compare(t0s, "raw", &uri(&d, "1001")), Some(0), "target != T0");
    assert_eq!(compare(&uri(&d, "1000"), "raw", &uri(&d, "1001")), Some(1), "source and target should differ");
    all_ok(d.ok(Request::FlashResync { image: img.clone(), pairs: pair(), options: record(false), seqnum: None }));
    wait_copied(&d, &img);
    assert_eq!(compare(&uri(&d, "1000"), "raw", &uri(&d, "1001")), Some(0), "target != source after resync");
    // Structured reads by qemu-io (it negotiates them): patterns, zeros, an unaligned read.
    qemu_io(&d, "1001", &["read -P 0x21 1M 100k", "read -P 0 21M 512k", "read -P 0x12 23068672 1000"]);
}

/// A tiny deterministic generator, so a failure names its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Seeded bytes, eight per generator step (debug builds generate tens of MiB here).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut g = Lcg(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&g.next().wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One acknowledged write: where, and the seed of its bytes.
#[derive(Debug, Clone, Copy)]
struct Ack {
    offset: u64,
    len: usize,
    seed: u64,
    /// Acknowledged before the copy was seen to finish.
    during_copy: bool,
}

const CLIENTS: u64 = 8;

/// Eight connections write seeded patterns into their own region (`size / 8` bytes each):
/// at least `writes` each, and on until `until` is set (at most 50 x `writes`). Returns the
/// acks, in order per client.
fn write_phase(ep: &Endpoint, size: u64, base_seed: u64, writes: usize, until: Option<Arc<AtomicBool>>) -> Vec<Ack> {
    let region = size / CLIENTS;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let ep = ep.clone();
            let until = until.clone();
            std::thread::spawn(move || {
                let mut cl = Client::connect(&ep, &format!("{IMG}/1000")).expect("connect");
                let mut g = Lcg(base_seed ^ (c << 32));
                let mut acks = Vec::new();
                let more =
                    |i: usize| i < writes || (i < 50 * writes && until.as_ref().is_some_and(|u| !u.load(SeqCst)));
                for i in (0..).take_while(|&i| more(i)) {
                    // Unaligned offsets and lengths: partial tracks exercise the COW fill.
                    let len = 512 * (1 + g.below(256)) as usize - g.below(2) as usize * 100;
                    let offset = c * region + g.below(region - len as u64);
                    let seed = base_seed + c * 1_000_000 + i as u64;
                    cl.write(offset, &pattern(seed, len), false).expect("write acked");
                    let during_copy = until.as_ref().is_some_and(|u| !u.load(SeqCst));
                    acks.push(Ack { offset, len, seed, during_copy });
                }
                cl.flush().unwrap();
                cl.disconnect().unwrap();
                acks
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

fn apply(model: &mut [u8], acks: &[Ack]) {
    for a in acks {
        model[a.offset as usize..a.offset as usize + a.len].copy_from_slice(&pattern(a.seed, a.len));
    }
}

fn read_all(ep: &Endpoint, vol: &str, size: u64) -> Vec<u8> {
    let mut c = Client::connect(ep, &format!("{IMG}/{vol}")).unwrap();
    let mut out = vec![0u8; size as usize];
    for (i, chunk) in out.chunks_mut(4 << 20).enumerate() {
        c.read(i as u64 * (4 << 20), chunk).unwrap();
    }
    c.disconnect().unwrap();
    out
}

/// First differing byte; the slice comparison is a memcmp, the search only runs on failure.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len())))
}

/// Writes every ack, in order per client, to `CARGO_TARGET_TMPDIR/<test>-acks.log` (one line
/// each: phase, offset, length, seed, whether the copy still ran), so a failure can be traced
/// to the write that should have landed; returns the path.
fn log_acks(phases: &[(&str, &[Ack])]) -> std::path::PathBuf {
    use std::fmt::Write as _;
    let mut text = String::from("# phase offset len seed during_copy\n");
    for (name, acks) in phases {
        for a in *acks {
            let _ = writeln!(text, "{name} {} {} {:#x} {}", a.offset, a.len, a.seed, a.during_copy);
        }
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("eight_writers-acks.log");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn eight_writers_race_the_copies_and_every_ack_lands() {
    let seed: u64 = std::env::var("NBD_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0004);
    println!("eight_writers_race_the_copies_and_every_ack_lands: seed {seed:#x} (NBD_E2E_SEED)");
    let home = tempfile::tempdir().unwrap();
    // A slow copy, so the writers really race it: the rate limit makes each copier pass of
    // a 256-track batch sleep 0.5 s, so 2048 tracks (8 batches, 4 copier threads) take at least half a second.
    let d = Daemon::start_env(home.path(), &[("FLASHTRACK_COPY_RATE", "4")]);
    let size: u64 = 128 << 20;
    let img = setup(&d, size / 512);
    let ep = Endpoint::Unix(d.nbd_sock());
    let mut model = vec![0u8; size as usize];
    let fill = write_phase(&ep, size, seed, 20, None);
    apply(&mut model, &fill);
    let t0 = model.clone();

    // Writers go on until the copy is done (a monitor watches it), so they overlap it.
    let copy_done = |img: ImageId| {
        let flag = Arc::new(AtomicBool::new(false));
        let (f, sock) = (flag.clone(), d.home.join("control.sock"));
        let monitor = std::thread::spawn(move || {
            let mut c = flashtrack::control::Client::connect(&sock).unwrap();
            loop {
                let r = c.call(Request::FlashWait { image: img.clone(), pairs: pair(), timeout_ms: 100 }).unwrap();
                let flashtrack::control::Response::Ok(Reply::Flash(v)) = r else { panic!("FlashWait: {r:?}") };
                if v.iter().all(|v| v.out_of_sync == 0) {
                    f.store(true, SeqCst);
                    return;
                }
            }
        });
        (flag, monitor)
    };
    all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: record(false) }));
    assert!(out_of_sync(&d, &img) > 0);
    let (done, monitor) = copy_done(img.clone());
    let phase1 = write_phase(&ep, size, seed + 1, 20, Some(done.clone()));
    monitor.join().unwrap();
    let raced1 = phase1.iter().filter(|a| a.during_copy).count();
    assert!(raced1 > 0, "no write was acknowledged while the copy ran");
    apply(&mut model, &phase1);
    println!("ack log: {}", log_acks(&[("fill", &fill), ("copy", &phase1)]).display());
    assert_eq!(first_diff(&read_all(&ep, "1001", size), &t0), None, "target != T0 model (seed {seed:#x})");
    assert_eq!(first_diff(&read_all(&ep, "1000", size), &model), None, "source != model (seed {seed:#x})");
    let p1 = model.clone();

    all_ok(d.ok(Request::FlashResync { image: img.clone(), pairs: pair(), options: record(false), seqnum: None }));
    assert!(out_of_sync(&d, &img) > 0, "the resync has tracks to copy");
    let (done, monitor) = copy_done(img.clone());
    let phase2 = write_phase(&ep, size, seed + 2, 20, Some(done.clone()));
    monitor.join().unwrap();
    let raced2 = phase2.iter().filter(|a| a.during_copy).count();
    assert!(raced2 > 0, "no write was acknowledged while the resync copy ran");
    apply(&mut model, &phase2);
    log_acks(&[("fill", &fill), ("copy", &phase1), ("resync", &phase2)]);
    assert_eq!(first_diff(&read_all(&ep, "1001", size), &p1), None, "target != resync point (seed {seed:#x})");
    assert_eq!(first_diff(&read_all(&ep, "1000", size), &model), None, "source != model (seed {seed:#x})");
    println!(
        "acks: fill {}, phase 1 {} ({raced1} while the copy ran), phase 2 {} ({raced2} while the resync copy ran)",
        fill.len(),
        phase1.len(),
        phase2.len()
    );
}
