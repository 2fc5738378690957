//! Remote (in-band) FlashCopy end to end with real processes: qemu-io writes at the PPRC
//! primary (image A), the `*remoteflash` verbs run by dscli at A through the conduit LSS 10,
//! and the FlashCopy itself at the image of the secondaries (B), read back over NBD.
//!
//! * one flashd (A and B two images of it): `mkremoteflash -record -persist` 1100:1101, the
//!   remote target keeps T0 under writes at the primary, `resyncremoteflash` copies at B
//!   exactly the tracks written since the last increment and none of that data crosses the
//!   link; then target == secondary == primary;
//! * the same across two flashd over loopback TCP, then a `-nocp` remote target that keeps T0
//!   while the PPRC pair is paused and resumed under writes;
//! * kill -9 of B's flashd right after a (rate-capped, so still copying) remote resync: after
//!   the restart and the pair's resume, the remote copy converges to the secondary as it was
//!   at the resync, while the secondary itself moves on with the writes made meanwhile.

use crate::pprc_e2e::{Lcg, first_diff, qemu_img_compare, qemu_io_ok, read_all, uri, view_at};
use crate::site_proc::{Daemon, all_ok, fb_request, flashd, free_port, have};
use flashtrack::control::{FlashView, PprcSpec, PprcView, Reply, Request};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId, VolumeId};
use flashtrack::image::record::{PprcPhase, PprcType, Sam, SuspendReason};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TRACK: u64 = 65_536;
/// 16 MiB volumes: 256 tracks.
const BLOCKS: u64 = 32_768;
/// The PPRC pair: primary A:1000 (LSS 10, the conduit), secondary B:1100.
const PAIR: (u16, u16) = (0x1000, 0x1100);

/// A (1000) -> B (1100) Metro Mirror with `-tgtread`, B also holding 1101 and 1102, the
/// remote FlashCopy targets. B is an image of A's flashd or served by its own flashd.
struct Rig {
    homes: Vec<TempDir>,
    da: Option<Daemon>,
    db: Option<Daemon>,
    /// B's `flashd run` options (`--link-listen ADDR`, ...), to restart it alike.
    b_args: Vec<String>,
    a: ImageId,
    b: ImageId,
}

impl Rig {
    fn one() -> Rig {
        let home = tempfile::tempdir().unwrap();
        let da = Daemon::start(home.path());
        let (a, b): (ImageId, ImageId) = ("IBM.2107-75FA120".parse().unwrap(), "IBM.2107-75FA150".parse().unwrap());
        da.ok(Request::ImageCreate { id: a.clone() });
        da.ok(Request::ImageCreate { id: b.clone() });
        let r = Rig { homes: vec![home], da: Some(da), db: None, b_args: Vec::new(), a, b };
        r.setup();
        r
    }

    /// Two flashd sharing a site key; B listens for links on loopback (`b_extra`: more of
    /// its `flashd run` options) and is A's peer.
    fn two(b_extra: &[&str]) -> Rig {
        let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b): (ImageId, ImageId) = ("IBM.2107-75FA120".parse().unwrap(), "IBM.2107-75FB150".parse().unwrap());
        let key = flashd(ha.path(), &["key", "show"]).trim().to_string();
        flashd(hb.path(), &["key", "set", &key]);
        let listen = free_port();
        let mut b_args = vec!["--link-listen".to_string(), listen.clone()];
        b_args.extend(b_extra.iter().map(|s| s.to_string()));
        let db = start_b(hb.path(), &b_args);
        db.ok(Request::ImageCreate { id: b.clone() });
        flashd(ha.path(), &["peer", "add", "--wwnn", &b.wwnn(), "--addr", &listen]);
        let da = Daemon::start(ha.path());
        da.ok(Request::ImageCreate { id: a.clone() });
        let r = Rig { homes: vec![ha, hb], da: Some(da), db: Some(db), b_args, a, b };
        r.setup();
        r
    }

    fn setup(&self) {
        all_ok(self.da().ok(fb_request(&self.a, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[PAIR.0])));
        all_ok(self.db().ok(fb_request(&self.b, 1, BLOCKS, CapType::Blocks, Sam::Ese, &[PAIR.1, 0x1101, 0x1102])));
        all_ok(self.da().ok(Request::PprcPathCreate {
            image: self.a.clone(),
            remote: self.b.clone(),
            remote_wwnn: self.b.wwnn(),
            src_lss: LssId(0x10),
            tgt_lss: LssId(0x11),
            consistgrp: false,
            ports: vec![("I0000".into(), "I0001".into())],
        }));
        self.wait_path();
        let spec = PprcSpec { kind: PprcType::MetroMirror, nocopy: false, tgtread: true, critmode: false };
        all_ok(self.da().ok(Request::PprcCreate {
            image: self.a.clone(),
            remote: self.b.clone(),
            pairs: vec![(VolumeId(PAIR.0), VolumeId(PAIR.1))],
            spec,
        }));
        self.full_duplex(15);
    }

    fn da(&self) -> &Daemon {
        self.da.as_ref().expect("A's flashd runs")
    }

    fn db(&self) -> &Daemon {
        self.db.as_ref().or(self.da.as_ref()).expect("B's flashd runs")
    }

    fn size(&self) -> u64 {
        BLOCKS * 512
    }

    fn tracks(&self) -> u64 {
        self.size() / TRACK
    }

    /// Poll `lspprcpath` at A (which redials a missing link) until the path is Success.
    fn wait_path(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let Reply::PprcPaths(p) = self.da().ok(Request::PprcPathList { image: self.a.clone() }) else { panic!() };
            let states: Vec<_> = p.iter().flat_map(|p| p.ports.iter().map(|pv| pv.state)).collect();
            if !states.is_empty() && states.iter().all(|s| *s == flashtrack::control::PathState::Success) {
                return;
            }
            assert!(Instant::now() < deadline, "path 10:11 is {states:?}; see {}/flashd.log", self.da().home.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PPRC pair as `lspprc` at A shows it.
    fn pprc(&self) -> PprcView {
        view_at(self.da(), &self.a, (VolumeId(PAIR.0), VolumeId(PAIR.1)))
    }

    fn until_pprc(&self, what: &str, secs: u64, f: impl Fn(&PprcView) -> bool) -> PprcView {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.pprc();
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "1000:1100 {what}: still {:?} {:?}, {} out of sync; see {}/flashd.log",
                v.record.phase,
                v.record.reason,
                v.out_of_sync,
                self.da().home.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn full_duplex(&self, secs: u64) -> PprcView {
        self.until_pprc("full duplex", secs, |v| v.record.phase == PprcPhase::FullDuplex && v.out_of_sync == 0)
    }

    /// dscli at A's home (the conduit's flashd), no banner: (exit code, stdout + stderr).
    fn dscli(&self, args: &[&str]) -> (i32, String) {
        dscli(&self.da().home, args)
    }

    fn dscli_ok(&self, args: &[&str]) -> String {
        let (rc, out) = self.dscli(args);
        assert_eq!(rc, 0, "dscli {args:?}: {out}");
        out
    }

    /// `dscli VERB -dev B -conduit A/10 ARGS...` (a `*remoteflash` verb).
    fn remote(&self, verb: &str, args: &[&str]) -> String {
        let (b, conduit) = (self.b.to_string(), format!("{}/10", self.a));
        let mut all = vec![verb, "-dev", &b, "-conduit", &conduit];
        all.extend_from_slice(args);
        self.dscli_ok(&all)
    }

    /// `lsremoteflash -l` (JSON) row of `id` (`1100:1101`), if listed.
    fn lsremoteflash(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.remote("lsremoteflash", &["-l", "-fmt", "json"]);
        if out.contains("CMUC00234I") {
            return None;
        }
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("lsremoteflash -l -fmt json: {e}: {out}"));
        rows.into_iter().find(|r| r["ID"] == id)
    }

    fn column(&self, id: &str, col: &str) -> String {
        let row = self.lsremoteflash(id).unwrap_or_else(|| panic!("lsremoteflash lists no {id}"));
        row[col].as_str().unwrap_or_else(|| panic!("{id}: no column {col}: {row}")).to_string()
    }

    fn out_of_sync(&self, id: &str) -> u64 {
        self.column(id, "OutOfSyncTracks").parse().unwrap()
    }

    /// Poll `lsremoteflash -l` until `id`'s OutOfSyncTracks is 0 (the remote copy is done).
    fn wait_copied(&self, id: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let n = self.out_of_sync(id);
            if n == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: still {n} tracks out of sync after {secs} s; see {}/flashd.log",
                self.db().home.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The relationship `source:target` at B as the control API's remote FlashList shows it
    /// (`copied`: tracks copied in the current increment).
    fn flash_view(&self, source: u16, target: u16) -> FlashView {
        let req = Request::RemoteFlash {
            image: self.a.clone(),
            conduit: LssId(0x10),
            srcss: None,
            request: Box::new(Request::FlashList { image: self.b.clone() }),
        };
        let Reply::Flash(views) = self.da().ok(req) else { panic!("FlashList") };
        views
            .into_iter()
            .find(|v| v.record.source == VolumeId(source) && v.record.target == VolumeId(target))
            .unwrap_or_else(|| panic!("no relationship {}:{}", VolumeId(source), VolumeId(target)))
    }

    fn uri_a(&self, vol: u16) -> String {
        uri(self.da(), &self.a, vol)
    }

    fn uri_b(&self, vol: u16) -> String {
        uri(self.db(), &self.b, vol)
    }

    fn read_a(&self, vol: u16) -> Vec<u8> {
        read_all(self.da(), &self.a, vol, self.size()).expect("read at A")
    }

    fn read_b(&self, vol: u16) -> Vec<u8> {
        read_all(self.db(), &self.b, vol, self.size()).expect("read at B")
    }

    /// Bytes sent and received at A's end of the path's links since they connected.
    fn link_bytes(&self) -> u64 {
        let Reply::Links(l) = self.da().ok(Request::LinkList { image: self.a.clone() }) else { panic!() };
        l.iter().map(|v| v.stats.map_or(0, |s| s.tx_bytes + s.rx_bytes)).sum()
    }

    /// Over NBD: the primary and the secondary hold `primary`, the remote FlashCopy target
    /// `target.0` (1101 or 1102) holds `target.1`.
    fn assert_bytes(&self, what: &str, primary: &[u8], target: (u16, &[u8])) {
        assert_eq!(first_diff(&self.read_a(PAIR.0), primary), None, "{what}: primary 1000 != model");
        assert_eq!(first_diff(&self.read_b(PAIR.1), primary), None, "{what}: secondary 1100 != primary's model");
        let t = self.read_b(target.0);
        assert_eq!(first_diff(&t, target.1), None, "{what}: remote target {} changed", VolumeId(target.0));
    }
}

fn start_b(home: &Path, args: &[String]) -> Daemon {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    Daemon::start_with(home, &args, &[])
}

fn dscli(home: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dscli"))
        .args(["-bnr", "off"])
        .args(args)
        .env("FLASHTRACK_HOME", home)
        .env("HOME", home)
        .env_remove("FLASHTRACK_DSCLI_PROFILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Random qemu-io writes inside `span` (512-byte units, up to `max` bytes each, so some cross
/// a track boundary; every 7th with FUA, every 5th a write of zeroes, a flush every 10),
/// applied to `model`; and the 64 KiB tracks they touch.
fn random_writes(seed: u64, n: usize, span: Range<u64>, max: u64, model: &mut [u8]) -> (Vec<String>, BTreeSet<u64>) {
    let mut g = Lcg(seed);
    let (mut cmds, mut tracks) = (Vec::new(), BTreeSet::new());
    for i in 0..n {
        let len = 512 * (1 + g.below(max / 512));
        let off = span.start + 512 * g.below((span.end - span.start - len) / 512);
        let pat = 1 + g.below(254) as u8;
        if i % 5 == 4 {
            cmds.push(format!("write -z {off} {len}"));
            model[off as usize..(off + len) as usize].fill(0);
        } else {
            let fua = if i % 7 == 3 { "-f " } else { "" };
            cmds.push(format!("write {fua}-P {pat:#04x} {off} {len}"));
            model[off as usize..(off + len) as usize].fill(pat);
        }
        tracks.extend(off / TRACK..=(off + len - 1) / TRACK);
        if i % 10 == 9 {
            cmds.push("flush".into());
        }
    }
    (cmds, tracks)
}

/// Tracks whose every 4 KiB grain the qemu-io `write` commands of `cmds` cover.
fn full_tracks<'a>(cmds: impl IntoIterator<Item = &'a String>, tracks: u64) -> BTreeSet<u64> {
    const GRAIN: u64 = 4096;
    let mut grains = BTreeSet::new();
    for c in cmds {
        let w: Vec<&str> = c.split_whitespace().collect();
        if w.first() != Some(&"write") || w.len() < 3 {
            continue;
        }
        let (off, len): (u64, u64) = (w[w.len() - 2].parse().unwrap(), w[w.len() - 1].parse().unwrap());
        grains.extend(off / GRAIN..(off + len).div_ceil(GRAIN));
    }
    let per = TRACK / GRAIN;
    (0..tracks).filter(|t| (t * per..(t + 1) * per).all(|g| grains.contains(&g))).collect()
}

/// One qemu-io write inside each of `tracks` (4-36 KiB at a random 512-byte offset).
fn track_writes(seed: u64, tracks: impl IntoIterator<Item = u64>, model: &mut [u8]) -> (Vec<String>, BTreeSet<u64>) {
    let mut g = Lcg(seed);
    let (mut cmds, mut set) = (Vec::new(), BTreeSet::new());
    for t in tracks {
        let len = 4096 + 512 * g.below(64);
        let off = t * TRACK + 512 * g.below((TRACK - len) / 512);
        let pat = 1 + g.below(254) as u8;
        cmds.push(format!("write -P {pat:#04x} {off} {len}"));
        model[off as usize..(off + len) as usize].fill(pat);
        set.insert(t);
    }
    cmds.push("flush".into());
    (cmds, set)
}

/// qemu-io in the background, its output drained as it goes (a full pipe would stall it).
struct Writer {
    child: Child,
    out: std::thread::JoinHandle<String>,
}

impl Writer {
    fn spawn(uri: &str, cmds: &[String]) -> Writer {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw", uri]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn qemu-io");
        let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let out = std::thread::spawn(move || {
            let err = std::thread::spawn(move || {
                let mut t = String::new();
                let _ = se.read_to_string(&mut t);
                t
            });
            let mut t = String::new();
            let _ = so.read_to_string(&mut t);
            t + &err.join().unwrap()
        });
        Writer { child, out }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn finish(mut self, what: &str) {
        let status = self.child.wait().unwrap();
        let text = self.out.join().unwrap();
        assert!(status.success() && !text.contains("failed"), "qemu-io ({what}): {text}");
    }
}

fn skip(test: &str) -> bool {
    !(have("qemu-io", test) && have("qemu-img", test))
}

/// Tasks 1 and 2: the incremental remote FlashCopy 1100:1101 through the conduit with qemu-io
/// at the primary. Returns the model of the primary (== secondary == 1101) at the end.
fn incremental_story(r: &Rig, test: &str) -> Vec<u8> {
    let seed: u64 = std::env::var("RFLASH_E2E_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x4f1a_5e01);
    println!("{test}: seed {seed:#x} (RFLASH_E2E_SEED)");
    let size = r.size();
    let mut model = vec![0u8; size as usize];
    // Data before the remote FlashCopy, mirrored to 1100.
    let (pre, _) = random_writes(seed, 40, 0..size, 256 << 10, &mut model);
    qemu_io_ok(&r.uri_a(PAIR.0), &pre);
    assert_eq!(r.pprc().record.phase, PprcPhase::FullDuplex, "a write suspended the pair");

    let out = r.remote("mkremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00173I") && out.contains("1100:1101"), "mkremoteflash: {out}");
    let row = r.lsremoteflash("1100:1101").expect("lsremoteflash lists 1100:1101");
    for (col, want) in [("Recording", "Enabled"), ("Persistent", "Enabled"), ("BackgroundCopy", "Enabled")] {
        assert_eq!(row[col], want, "lsremoteflash -l {col}: {row}");
    }
    r.wait_copied("1100:1101", 15);
    let t0 = model.clone();
    assert_eq!(first_diff(&r.read_b(0x1101), &t0), None, "1101 after the remote copy != the data at T0");

    // Writes at the primary reach the secondary (Metro Mirror); the remote target keeps T0.
    let (cmds, tracks) = random_writes(seed + 1, 60, 0..size, 160 << 10, &mut model);
    qemu_io_ok(&r.uri_a(PAIR.0), &cmds);
    assert_eq!(r.pprc().record.phase, PprcPhase::FullDuplex, "a write suspended the pair");
    r.assert_bytes("after the writes", &model, (0x1101, &t0));
    assert_eq!(qemu_img_compare(&r.uri_b(0x1101), &r.uri_a(PAIR.0)), Some(1), "1101 and 1000 differ after writes");

    // resyncremoteflash: a new increment of exactly the tracks written; copied at B.
    let sent = r.link_bytes();
    let out = r.remote("resyncremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00175I") && out.contains("1100:1101"), "resyncremoteflash: {out}");
    let v = r.flash_view(0x1100, 0x1101);
    assert_eq!(
        v.copied + v.out_of_sync,
        tracks.len() as u64,
        "the resync's increment (copied {} + out of sync {}) != the {} tracks written",
        v.copied,
        v.out_of_sync,
        tracks.len()
    );
    r.wait_copied("1100:1101", 15);
    let v = r.flash_view(0x1100, 0x1101);
    let crossed = r.link_bytes() - sent;
    let changed = tracks.len() as u64 * TRACK;
    println!(
        "{test}: resync copied {} tracks at B (written: {}); {crossed} link bytes for {changed} changed bytes",
        v.copied,
        tracks.len()
    );
    assert_eq!(v.copied, tracks.len() as u64, "tracks copied at the remote != tracks written since T0");
    assert!(crossed * 20 < changed, "{crossed} bytes crossed the link for {changed} bytes of changed tracks");
    assert!(v.record.options.record && v.record.options.persist, "-record -persist kept: {:?}", v.record.options);

    // target == secondary == primary.
    r.assert_bytes("after resyncremoteflash", &model, (0x1101, &model));
    assert_eq!(qemu_img_compare(&r.uri_b(0x1101), &r.uri_a(PAIR.0)), Some(0), "qemu-img compare 1101 1000");
    assert_eq!(qemu_img_compare(&r.uri_b(PAIR.1), &r.uri_a(PAIR.0)), Some(0), "qemu-img compare 1100 1000");
    model
}

/// Task 1: one flashd, images A and B.
#[test]
fn remote_flash_incremental_one_flashd_qemu_io() {
    let test = "remote_flash_incremental_one_flashd_qemu_io";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    incremental_story(&Rig::one(), test);
    println!("{test}: {:.1} s", started.elapsed().as_secs_f64());
}

/// Task 2: the same with B served by a second flashd over loopback TCP; then a `-nocp`
/// remote target 1100:1102 keeps T0 while the PPRC pair is paused and resumed under writes
/// (the resume's copy reaches 1100 through B's FlashCopy intercept: copy-on-write to 1102),
/// and a second resyncremoteflash of 1100:1101 copies exactly the tracks those writes touched.
#[test]
fn remote_flash_two_flashd_tcp_nocp_target_keeps_t0_across_pause_resume() {
    let test = "remote_flash_two_flashd_tcp_nocp_target_keeps_t0_across_pause_resume";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let r = Rig::two(&[]);
    let mut model = incremental_story(&r, test);
    let size = r.size();

    let out = r.remote("mkremoteflash", &["-nocp", "1100:1102"]);
    assert!(out.contains("CMUC00173I") && out.contains("1100:1102"), "mkremoteflash -nocp: {out}");
    let row = r.lsremoteflash("1100:1102").expect("lsremoteflash lists 1100:1102");
    assert_eq!(row["BackgroundCopy"], "Disabled", "{row}");
    assert_eq!(row["OutOfSyncTracks"], r.tracks().to_string(), "nothing copied to a -nocp target yet: {row}");
    let t0 = model.clone();
    assert_eq!(first_diff(&r.read_b(0x1102), &t0), None, "1102 at T0");

    let (a, b) = (r.a.to_string(), r.b.to_string());
    // pausepprc while qemu-io writes.
    let (w1a, mut written) = random_writes(0x51, 400, 0..4 << 20, 8 << 10, &mut model);
    let mut writer = Writer::spawn(&r.uri_a(PAIR.0), &w1a);
    std::thread::sleep(Duration::from_millis(100));
    let busy = writer.running();
    let out = r.dscli_ok(&["pausepprc", "-dev", &a, "-remotedev", &b, "1000:1100"]);
    println!("{test}: qemu-io still writing before/after pausepprc: {busy}/{}", writer.running());
    assert!(out.contains("1000:1100"), "pausepprc: {out}");
    writer.finish("writes around pausepprc");
    let v = r.pprc();
    assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::HostSource)));
    // Writes while suspended stay at the primary.
    let at_pause = r.read_b(PAIR.1);
    let (w1b, tracks) = track_writes(0x52, (3..r.tracks()).step_by(9), &mut model);
    written.extend(&tracks);
    let paused = tracks.clone();
    qemu_io_ok(&r.uri_a(PAIR.0), &w1b);
    assert!(r.pprc().out_of_sync >= tracks.len() as u64, "the writes while paused are out of sync");
    assert_eq!(first_diff(&r.read_b(PAIR.1), &at_pause), None, "a write crossed a paused pair");
    assert_eq!(first_diff(&r.read_b(0x1102), &t0), None, "paused: the -nocp target moved");

    // resumepprc while qemu-io writes; the resume's copy must not reach 1102.
    let (w1c, tracks) = random_writes(0x53, 400, 8 << 20..10 << 20, 8 << 10, &mut model);
    written.extend(&tracks);
    let mut writer = Writer::spawn(&r.uri_a(PAIR.0), &w1c);
    std::thread::sleep(Duration::from_millis(50));
    println!("{test}: qemu-io still writing when resumepprc ran: {}", writer.running());
    let out =
        r.dscli_ok(&["resumepprc", "-dev", &a, "-remotedev", &b, "-type", "mmir", "-tgtread", "-wait", "1000:1100"]);
    assert!(out.contains("1000:1100"), "resumepprc: {out}");
    writer.finish("writes around resumepprc");
    r.full_duplex(15);
    r.assert_bytes("resumed", &model, (0x1102, &t0));

    // More writes in Full Duplex.
    let (w2, tracks) = random_writes(0x54, 40, 12 << 20..size, 128 << 10, &mut model);
    written.extend(&tracks);
    qemu_io_ok(&r.uri_a(PAIR.0), &w2);
    r.assert_bytes("more writes", &model, (0x1102, &t0));
    assert_eq!(qemu_img_compare(&r.uri_b(0x1102), &r.uri_a(PAIR.0)), Some(1), "1102 keeps T0, 1000 moved on");
    // Each track written since T0 was preserved at 1102 before its first change at 1100
    // (the bytes above), and left the out-of-sync count once all of it was on 1102: a
    // mirrored write preserves only the 4 KiB grains it covers, a track the resume copied
    // crossed whole (every track written while paused; a track written around pause or
    // resume may have crossed either way).
    let whole: BTreeSet<u64> =
        full_tracks([&w1a, &w1b, &w1c, &w2].into_iter().flatten(), r.tracks()).union(&paused).copied().collect();
    let left = r.out_of_sync("1100:1102");
    println!(
        "{test}: -nocp 1100:1102: {left} tracks out of sync; {} written, {} of them whole",
        written.len(),
        whole.len()
    );
    assert!(
        (r.tracks() - written.len() as u64..=r.tracks() - whole.len() as u64).contains(&left),
        "-nocp 1100:1102: {left} tracks out of sync; {} written, at least {} of them whole",
        written.len(),
        whole.len()
    );

    // The incremental pair: exactly the tracks written since its last increment.
    let out = r.remote("resyncremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00175I"), "resyncremoteflash: {out}");
    r.wait_copied("1100:1101", 15);
    let v = r.flash_view(0x1100, 0x1101);
    assert_eq!(v.copied, written.len() as u64, "second increment: copied != tracks written across pause/resume");
    r.assert_bytes("second resync", &model, (0x1101, &model));
    assert_eq!(first_diff(&r.read_b(0x1102), &t0), None, "-nocp 1102 after the second resync of 1101");
    println!("{test}: {} tracks written across pause/resume; {:.1} s", written.len(), started.elapsed().as_secs_f64());
}

/// Task 3: kill -9 of B's flashd right after `resyncremoteflash` returns while B copies at
/// 4 MiB/s (`--copy-rate 4`: about 3 s for the ~200 changed tracks). Meanwhile writes at the
/// primary suspend the pair. B restarts on the same `--link-listen` port, the pair is resumed
/// (its copy to 1100 goes through B's FlashCopy intercept while the remote copy still runs),
/// and the remote relationship converges: 1101 == 1100 as of the resync, 1100 == 1000 now.
#[test]
fn remote_flash_kill9_remote_flashd_mid_resync() {
    let test = "remote_flash_kill9_remote_flashd_mid_resync";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    // 2 MiB/s: the ~200-track increment takes ~6 s to copy, so the poll below catches it
    // mid-copy even when the suite loads both CPUs (at 4 MiB/s it once saw it finished).
    let mut r = Rig::two(&["--copy-rate", "2"]);
    let size = r.size();
    let mut model = vec![0u8; size as usize];
    let (pre, _) = random_writes(0x61, 30, 0..size, 256 << 10, &mut model);
    qemu_io_ok(&r.uri_a(PAIR.0), &pre);
    let out = r.remote("mkremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00173I"), "mkremoteflash: {out}");
    r.wait_copied("1100:1101", 20);
    let t0 = model.clone();

    // ~200 changed tracks, then the resync.
    let (w, tracks) = track_writes(0x62, (0..r.tracks()).filter(|t| t % 5 != 0), &mut model);
    qemu_io_ok(&r.uri_a(PAIR.0), &w);
    assert_eq!(first_diff(&r.read_b(0x1101), &t0), None, "1101 keeps T0 before the resync");
    let at_resync = model.clone();
    let out = r.remote("resyncremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00175I"), "resyncremoteflash: {out}");
    // Kill once B's copier has taken some of the increment, and not all.
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let v = r.flash_view(0x1100, 0x1101);
        assert_eq!(v.copied + v.out_of_sync, tracks.len() as u64, "the resync's increment != the tracks written");
        if v.copied > 0 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("{test}: killing B with {} of {} tracks copied", v.copied, tracks.len());
    assert!(v.copied > 0, "B's copier took nothing of the increment in 5 s");
    assert!(v.out_of_sync > 0, "the remote copy ended before the kill: lower --copy-rate or write more tracks");
    // A host reading the target sees the new point in time at once (uncopied tracks come
    // from the source).
    assert_eq!(first_diff(&r.read_b(0x1101), &at_resync), None, "1101 right after the resync");
    r.db.take().unwrap().kill9();

    // Writes at the primary while B is down: the pair suspends, they are recorded.
    let (down, down_tracks) = random_writes(0x63, 30, 0..size, 64 << 10, &mut model);
    qemu_io_ok(&r.uri_a(PAIR.0), &down);
    let v = r.until_pprc("suspended (B down)", 15, |v| v.record.phase == PprcPhase::Suspended);
    println!("{test}: B down: {:?} {:?}, {} out of sync", v.record.phase, v.record.reason, v.out_of_sync);
    assert!(v.out_of_sync > 0, "the writes while B is down are out of sync");

    // B comes back on the same port; the pair resumes (by itself or resumepprc).
    r.db = Some(start_b(r.homes[1].path(), &r.b_args));
    r.wait_path();
    let suspended = r.pprc().record.phase == PprcPhase::Suspended;
    println!(
        "{test}: B restarted; the pair {}",
        if suspended { "is suspended: resumepprc" } else { "resumed by itself" }
    );
    if suspended {
        let (a, b) = (r.a.to_string(), r.b.to_string());
        let (rc, out) =
            r.dscli(&["resumepprc", "-dev", &a, "-remotedev", &b, "-type", "mmir", "-tgtread", "1000:1100"]);
        // The pair may have resumed by itself in between.
        assert!(rc == 0 || r.pprc().record.phase != PprcPhase::Suspended, "resumepprc: {out}");
    }
    r.full_duplex(20);
    let left = r.out_of_sync("1100:1101");
    println!("{test}: after the restart and resume: {left} tracks of the remote copy left");
    // Mid-copy, with the resume's tracks copied on write: still the resync's point in time.
    assert_eq!(first_diff(&r.read_b(0x1101), &at_resync), None, "1101 after the restart, mid-copy");
    r.wait_copied("1100:1101", 20);
    r.assert_bytes("converged after the kill", &model, (0x1101, &at_resync));
    assert_eq!(qemu_img_compare(&r.uri_b(PAIR.1), &r.uri_a(PAIR.0)), Some(0), "qemu-img compare 1100 1000");
    let v = r.flash_view(0x1100, 0x1101);
    assert!(v.record.options.record && v.record.options.persist, "-record -persist kept: {:?}", v.record.options);
    println!("{test}: after convergence: copied {} (the increment had {})", v.copied, tracks.len());

    // The changes the pair's resume brought to 1100 after B's restart were recorded: the next
    // increment holds every track written while B was down. A crash may mark more (B's
    // journal keeps the marks of the writes before the resync until a checkpoint covers
    // them, flash_restart_model.rs), never more than those.
    let out = r.remote("resyncremoteflash", &["-record", "-persist", "1100:1101"]);
    assert!(out.contains("CMUC00175I"), "resyncremoteflash: {out}");
    let v = r.flash_view(0x1100, 0x1101);
    let (n, most) = (v.copied + v.out_of_sync, down_tracks.union(&tracks).count() as u64);
    println!("{test}: increment after the restart: {n} tracks ({} written while B was down)", down_tracks.len());
    assert!(
        (down_tracks.len() as u64..=most).contains(&n),
        "the increment after the restart has {n} tracks: {} were written while B was down, {most} at most",
        down_tracks.len()
    );
    r.wait_copied("1100:1101", 20);
    r.assert_bytes("second resync after the kill", &model, (0x1101, &model));
    println!("{test}: {:.1} s", started.elapsed().as_secs_f64());
}

/// `FlashView.copied` ("tracks copied in the current increment") survives a restart in the
/// middle of a background copy (found by the kill -9 test: it once restarted at 0; now the
/// catalog keeps the increment's size). Local FlashCopy, one flashd.
#[test]
fn flash_copied_count_survives_a_restart_mid_copy() {
    let home = tempfile::tempdir().unwrap();
    let args = [OsStr::new("--copy-rate"), OsStr::new("4")];
    let d = Daemon::start_with(home.path(), &args, &[]);
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
    let opts = flashtrack::flash::relationship::FlashOptions { record: true, persist: true, ..Default::default() };
    let pair = vec![(VolumeId(0x1000), VolumeId(0x1001))];
    all_ok(d.ok(Request::FlashCreate { image: img.clone(), pairs: pair, options: opts }));
    let view = |d: &Daemon| {
        let Reply::Flash(v) = d.ok(Request::FlashList { image: img.clone() }) else { panic!("FlashList") };
        v.into_iter().next().expect("1000:1001")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while view(&d).copied == 0 {
        assert!(Instant::now() < deadline, "no copy in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill9();
    let d = Daemon::start_with(home.path(), &args, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = view(&d);
        if v.out_of_sync == 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "copy not done in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v.copied, BLOCKS * 512 / TRACK, "tracks copied in the increment, counted across the restart");
}
