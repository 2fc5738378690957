//! PPRC pairs end to end with real processes and real NBD clients: Metro Mirror between two
//! images of one flashd and between two flashd over loopback TCP (qemu-io writes with FUA and
//! flushes at the primary, the secondary refusing hosts until failover, byte-for-byte
//! comparison by qemu-img and by reading both volumes), a link outage in the middle of writes
//! then resumepprc sending only the changed tracks, kill -9 of the primary's flashd while
//! qemu-io writes (every completed write is on both ends, before and after the restart), and
//! kill -9 of the secondary's flashd in the middle of a rate-capped initial copy.

use crate::site_proc::{Daemon, all_ok, fb_request, flashd, free_port, have, remote_site};
use flashtrack::control::{LinkChange, PathState, PprcSelect, PprcSpec, PprcView, Reply, Request};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId, VolumeId};
use flashtrack::image::record::{PprcPhase, PprcRole, PprcType, Sam, SuspendReason};
use flashtrack::nbd::client::{Client, Endpoint};
use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TRACK: u64 = 65_536;
/// 16 MiB volumes (256 tracks) where the content matters little.
const SMALL: u64 = 32_768;
/// 32 MiB volumes (512 tracks).
const MEDIUM: u64 = 65_536;

/// The primary image A (volumes in LSS 10) and the secondary image B (LSS 11): two images of
/// one flashd, or B served by a second flashd that A reaches over loopback TCP.
struct Sites {
    homes: Vec<TempDir>,
    da: Option<Daemon>,
    /// B's own flashd (`None`: B is an image of A's flashd).
    db: Option<Daemon>,
    /// `--link-listen` of B's flashd.
    b_listen: Option<String>,
    a: ImageId,
    b: ImageId,
    blocks: u64,
}

impl Sites {
    /// One flashd, images A and B, volumes `pairs` of `blocks` 512-byte blocks, a path 10 -> 11.
    fn one(blocks: u64, pairs: &[(u16, u16)]) -> Sites {
        let home = tempfile::tempdir().unwrap();
        let da = Daemon::start(home.path());
        let (a, b): (ImageId, ImageId) = ("IBM.2107-75FA120".parse().unwrap(), "IBM.2107-75FA150".parse().unwrap());
        da.ok(Request::ImageCreate { id: a.clone() });
        da.ok(Request::ImageCreate { id: b.clone() });
        let s = Sites { homes: vec![home], da: Some(da), db: None, b_listen: None, a, b, blocks };
        s.volumes(pairs);
        s
    }

    /// Two flashd sharing a site key; B listens for links on loopback and is A's peer.
    fn two(blocks: u64, pairs: &[(u16, u16)]) -> Sites {
        let (ha, hb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b): (ImageId, ImageId) = ("IBM.2107-75FA120".parse().unwrap(), "IBM.2107-75FB150".parse().unwrap());
        let key = flashd(ha.path(), &["key", "show"]).trim().to_string();
        flashd(hb.path(), &["key", "set", &key]);
        let listen = free_port();
        let db = remote_site(hb.path(), &listen, &b);
        flashd(ha.path(), &["peer", "add", "--wwnn", &b.wwnn(), "--addr", &listen]);
        let da = Daemon::start(ha.path());
        da.ok(Request::ImageCreate { id: a.clone() });
        let s = Sites { homes: vec![ha, hb], da: Some(da), db: Some(db), b_listen: Some(listen), a, b, blocks };
        s.volumes(pairs);
        s
    }

    fn volumes(&self, pairs: &[(u16, u16)]) {
        for &(p, q) in pairs {
            all_ok(self.da().ok(fb_request(&self.a, 0, self.blocks, CapType::Blocks, Sam::Ese, &[p])));
            all_ok(self.db().ok(fb_request(&self.b, 1, self.blocks, CapType::Blocks, Sam::Ese, &[q])));
        }
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
    }

    fn da(&self) -> &Daemon {
        self.da.as_ref().expect("A's flashd runs")
    }

    fn db(&self) -> &Daemon {
        self.db.as_ref().or(self.da.as_ref()).expect("B's flashd runs")
    }

    fn size(&self) -> u64 {
        self.blocks * 512
    }

    /// Poll `lspprcpath` at A (which redials a missing link) until the path is Success.
    fn wait_path(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Reply::PprcPaths(p) = self.da().ok(Request::PprcPathList { image: self.a.clone() }) else { panic!() };
            let states: Vec<PathState> = p.iter().flat_map(|p| p.ports.iter().map(|pv| pv.state)).collect();
            if !states.is_empty() && states.iter().all(|s| *s == PathState::Success) {
                return;
            }
            assert!(Instant::now() < deadline, "path 10:11 is {states:?}; see {}/flashd.log", self.da().home.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn mkpprc(&self, pairs: &[(u16, u16)], kind: PprcType, tgtread: bool) {
        let spec = PprcSpec { kind, nocopy: false, tgtread, critmode: false };
        all_ok(self.da().ok(Request::PprcCreate {
            image: self.a.clone(),
            remote: self.b.clone(),
            pairs: ids(pairs),
            spec,
        }));
    }

    fn resume(&self, pair: (u16, u16), kind: PprcType, tgtread: bool) {
        let spec = PprcSpec { kind, nocopy: false, tgtread, critmode: false };
        all_ok(self.da().ok(Request::PprcResume {
            image: self.a.clone(),
            remote: self.b.clone(),
            pairs: ids(&[pair]),
            spec,
        }));
    }

    fn pause(&self, pair: (u16, u16)) {
        let sel = PprcSelect { source: VolumeId(pair.0), target: Some(VolumeId(pair.1)) };
        all_ok(self.da().ok(Request::PprcPause {
            image: self.a.clone(),
            remote: self.b.clone(),
            pairs: vec![sel],
            at: None,
        }));
    }

    /// `failoverpprc` at B, the pair written `secondary:primary`.
    fn failover(&self, pair: (u16, u16)) {
        all_ok(self.db().ok(Request::PprcFailover {
            image: self.b.clone(),
            remote: self.a.clone(),
            pairs: vec![(VolumeId(pair.1), VolumeId(pair.0))],
            kind: PprcType::MetroMirror,
        }));
    }

    /// The pair `(source, target)` as `lspprc` at A shows it.
    fn view(&self, pair: (u16, u16)) -> PprcView {
        view_at(self.da(), &self.a, (VolumeId(pair.0), VolumeId(pair.1)))
    }

    /// Wait (up to `secs`) until `f` holds for the pair at A.
    fn until(&self, pair: (u16, u16), what: &str, secs: u64, f: impl Fn(&PprcView) -> bool) -> PprcView {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.view(pair);
            if f(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}:{} {what}: still {:?} {:?} out of sync {}; see {}/flashd.log",
                VolumeId(pair.0),
                VolumeId(pair.1),
                v.record.phase,
                v.record.reason,
                v.out_of_sync,
                self.da().home.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (up to 10 s) until `lspprc` at B shows the pair as a secondary in `phase`
    /// (the primary tells it by notices, best effort: it may lag).
    fn until_b(&self, pair: (u16, u16), phase: PprcPhase) -> PprcView {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = view_at(self.db(), &self.b, (VolumeId(pair.0), VolumeId(pair.1)));
            if v.record.role == PprcRole::Secondary && v.record.phase == phase && v.record.reason.is_none() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "secondary {}: still {:?} {:?} {:?}, want {phase:?}; see {}/flashd.log",
                VolumeId(pair.1),
                v.record.role,
                v.record.phase,
                v.record.reason,
                self.db().home.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn full_duplex(&self, pair: (u16, u16), secs: u64) -> PprcView {
        self.until(pair, "full duplex", secs, |v| v.record.phase == PprcPhase::FullDuplex && v.out_of_sync == 0)
    }

    fn uri_a(&self, vol: u16) -> String {
        uri(self.da(), &self.a, vol)
    }

    fn uri_b(&self, vol: u16) -> String {
        uri(self.db(), &self.b, vol)
    }

    fn read_a(&self, vol: u16) -> Vec<u8> {
        read_all(self.da(), &self.a, vol, self.size()).expect("read the primary")
    }

    fn read_b(&self, vol: u16) -> Vec<u8> {
        read_all(self.db(), &self.b, vol, self.size()).expect("read the secondary (tgtread)")
    }

    /// Both ends' bytes of a pair, over NBD, byte for byte.
    fn assert_same(&self, pair: (u16, u16), what: &str) -> Vec<u8> {
        let (pa, sb) = (self.read_a(pair.0), self.read_b(pair.1));
        assert_eq!(first_diff(&pa, &sb), None, "{what}: primary and secondary differ at that byte");
        pa
    }

    /// Bytes sent and received at A's end of the path's links since they connected.
    fn link_bytes(&self) -> u64 {
        let Reply::Links(l) = self.da().ok(Request::LinkList { image: self.a.clone() }) else { panic!() };
        l.iter().map(|v| v.stats.map_or(0, |s| s.tx_bytes + s.rx_bytes)).sum()
    }

    fn link_set(&self, change: LinkChange) {
        all_ok(self.da().ok(Request::LinkSet {
            image: self.a.clone(),
            remote: Some(self.b.clone()),
            lss: Some((LssId(0x10), LssId(0x11))),
            ports: Vec::new(),
            change,
        }));
    }
}

fn ids(pairs: &[(u16, u16)]) -> Vec<(VolumeId, VolumeId)> {
    pairs.iter().map(|&(s, t)| (VolumeId(s), VolumeId(t))).collect()
}

pub(crate) fn view_at(d: &Daemon, img: &ImageId, pair: (VolumeId, VolumeId)) -> PprcView {
    let Reply::Pprc(v) = d.ok(Request::PprcList { image: img.clone() }) else { panic!("PprcList") };
    v.into_iter().find(|v| v.record.ids() == pair).unwrap_or_else(|| panic!("no pair {}:{} at {img}", pair.0, pair.1))
}

pub(crate) fn export(img: &ImageId, vol: u16) -> String {
    format!("{img}/{}", VolumeId(vol))
}

pub(crate) fn uri(d: &Daemon, img: &ImageId, vol: u16) -> String {
    format!("nbd+unix:///{}?socket={}", export(img, vol), d.nbd_sock().display())
}

pub(crate) fn read_all(d: &Daemon, img: &ImageId, vol: u16, size: u64) -> std::io::Result<Vec<u8>> {
    let mut c = Client::connect(&Endpoint::Unix(d.nbd_sock()), &export(img, vol))?;
    let mut out = vec![0u8; size as usize];
    for (i, chunk) in out.chunks_mut(4 << 20).enumerate() {
        c.read(i as u64 * (4 << 20), chunk)?;
    }
    c.disconnect()?;
    Ok(out)
}

/// Write through NBD (the engine's client) and flush.
fn nbd_write(d: &Daemon, img: &ImageId, vol: u16, writes: &[(u64, Vec<u8>)]) {
    let mut c = Client::connect(&Endpoint::Unix(d.nbd_sock()), &export(img, vol)).expect("connect");
    for (off, data) in writes {
        c.write(*off, data, false).expect("write acknowledged");
    }
    c.flush().unwrap();
    c.disconnect().unwrap();
}

/// First differing byte; the comparison is a memcmp, the search runs only on failure.
pub(crate) fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len())))
}

/// qemu-io on `uri` with commands `cmds`: (exit status 0 and no "failed", stdout + stderr).
fn qemu_io(uri: &str, cmds: &[String]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().expect("run qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && !text.contains("failed"), text)
}

pub(crate) fn qemu_io_ok(uri: &str, cmds: &[String]) {
    let (ok, text) = qemu_io(uri, cmds);
    assert!(ok, "qemu-io {uri} {cmds:?}: {text}");
}

/// qemu-io fails the one command `cmd` with EPERM.
fn qemu_io_eperm(uri: &str, cmd: &str) {
    let (ok, text) = qemu_io(uri, &[cmd.to_string()]);
    assert!(!ok && text.contains("Operation not permitted"), "qemu-io {uri} `{cmd}` should get EPERM: {text}");
}

/// `qemu-img compare` exit code: 0 same, 1 different.
pub(crate) fn qemu_img_compare(a: &str, b: &str) -> Option<i32> {
    let out = Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw", a, b]).output().unwrap();
    out.status.code()
}

/// A tiny deterministic generator, so a failure names its seed.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seeded(seed: u64, len: usize) -> Vec<u8> {
    let mut g = Lcg(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&g.next().wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// qemu-io commands of random writes over a `size`-byte volume (offsets and lengths in
/// 512-byte units, one-byte patterns; some with FUA, some zeroes, flushes between), and the
/// model of the bytes they leave.
fn random_writes(seed: u64, n: usize, size: u64, model: &mut [u8]) -> Vec<String> {
    let mut g = Lcg(seed);
    let mut cmds = Vec::new();
    for i in 0..n {
        let len = 512 * (1 + g.below(256));
        let off = 512 * g.below((size - len) / 512);
        let pat = 1 + g.below(254) as u8;
        let (flag, fill) = match i % 7 {
            3 => ("-f ", pat), // FUA
            5 => ("-z ", 0),   // write zeroes
            _ => ("", pat),
        };
        if flag == "-z " {
            cmds.push(format!("write -z {off} {len}"));
        } else {
            cmds.push(format!("write {flag}-P {pat:#04x} {off} {len}"));
        }
        model[off as usize..(off + len) as usize].fill(fill);
        if i % 10 == 9 {
            cmds.push("flush".into());
        }
    }
    cmds
}

/// Tasks 1 and 2: Metro Mirror with qemu-io at the primary, the secondary's host rules over
/// NBD, pausepprc and failoverpprc, comparisons with the primary.
fn metro_mirror_over_nbd(s: Sites, test: &str) {
    let seed: u64 = std::env::var("PPRC_E2E_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e2e_0001);
    println!("{test}: seed {seed:#x} (PPRC_E2E_SEED)");
    let (p0, p1) = ((0x1000, 0x1100), (0x1001, 0x1101));
    let size = s.size();
    let mut model = vec![0u8; size as usize];
    // Data before the pairs: the initial copy takes it over.
    qemu_io_ok(&s.uri_a(0x1000), &["write -P 0x5a 1M 256k".into()]);
    qemu_io_ok(&s.uri_a(0x1001), &["write -P 0x5a 1M 256k".into()]);
    model[1 << 20..(1 << 20) + (256 << 10)].fill(0x5a);
    s.mkpprc(&[p0], PprcType::MetroMirror, false);
    s.mkpprc(&[p1], PprcType::MetroMirror, true);
    s.full_duplex(p0, 15);
    s.full_duplex(p1, 15);
    let vb = view_at(s.db(), &s.b, ids(&[p0])[0]);
    assert_eq!(vb.record.role, PprcRole::Secondary);

    // Random writes at both primaries: FUA, zeroes, flushes; each completes at both ends.
    let cmds = random_writes(seed, 60, size, &mut model);
    qemu_io_ok(&s.uri_a(0x1000), &cmds);
    qemu_io_ok(&s.uri_a(0x1001), &cmds);
    assert_eq!(s.view(p0).record.phase, PprcPhase::FullDuplex, "a write suspended the pair");

    // The secondary refuses host writes, and host reads without -tgtread.
    qemu_io_eperm(&s.uri_b(0x1100), "write -P 0x11 0 64k");
    qemu_io_eperm(&s.uri_b(0x1100), "read 0 64k");
    qemu_io_eperm(&s.uri_b(0x1101), "write -P 0x11 0 4k");
    qemu_io_ok(&s.uri_b(0x1101), &["read 1M 64k".into()]);
    let mut c = Client::connect(&Endpoint::Unix(s.db().nbd_sock()), &export(&s.b, 0x1100)).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(c.read(0, &mut buf).unwrap_err().raw_os_error(), Some(libc::EPERM), "read without -tgtread");
    assert_eq!(c.write(0, &buf, true).unwrap_err().raw_os_error(), Some(libc::EPERM), "write to a secondary");
    drop(c);

    // -tgtread: the secondary reads as the primary, and as the model.
    assert_eq!(qemu_img_compare(&s.uri_a(0x1001), &s.uri_b(0x1101)), Some(0), "qemu-img compare 1001 1101");
    assert_eq!(first_diff(&s.read_b(0x1101), &model), None, "secondary 1101 != model (seed {seed:#x})");
    assert_eq!(first_diff(&s.read_a(0x1000), &model), None, "primary 1000 != model (seed {seed:#x})");

    // pausepprc: writes stay at the primary; the secondary keeps the pause point.
    s.pause(p1);
    let v = s.view(p1);
    assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::HostSource)));
    qemu_io_ok(&s.uri_a(0x1001), &["write -P 0x77 3M 128k".into(), "flush".into()]);
    assert_eq!(s.view(p1).out_of_sync, 2, "two tracks written while paused");
    assert_eq!(first_diff(&s.read_b(0x1101), &model), None, "a write crossed a paused pair");
    assert_eq!(qemu_img_compare(&s.uri_a(0x1001), &s.uri_b(0x1101)), Some(1), "paused: 1001 and 1101 differ");
    s.resume(p1, PprcType::MetroMirror, true);
    s.full_duplex(p1, 15);
    assert_eq!(qemu_img_compare(&s.uri_a(0x1001), &s.uri_b(0x1101)), Some(0), "resumed: 1001 == 1101");

    // failoverpprc at B: 1100 is a suspended primary, readable and writable, equal to 1000.
    s.failover(p0);
    let vb = view_at(s.db(), &s.b, (VolumeId(0x1100), VolumeId(0x1000)));
    assert_eq!((vb.record.role, vb.record.phase), (PprcRole::Primary, PprcPhase::Suspended));
    assert_eq!(vb.record.reason, Some(SuspendReason::HostSource));
    assert_eq!(qemu_img_compare(&s.uri_a(0x1000), &s.uri_b(0x1100)), Some(0), "failed over: 1000 == 1100");
    assert_eq!(first_diff(&s.read_b(0x1100), &model), None, "failed-over 1100 != model (seed {seed:#x})");
    qemu_io_ok(&s.uri_b(0x1100), &["write -P 0x42 0 64k".into(), "read -P 0x42 0 64k".into()]);
    // A still mirrors to 1100, which is no secondary now: B refuses, A's pair suspends.
    qemu_io_ok(&s.uri_a(0x1000), &["write -P 0x43 5M 4k".into()]);
    let v = s.until(p0, "suspended by the refusal", 15, |v| v.record.phase == PprcPhase::Suspended);
    assert_eq!(v.record.reason, Some(SuspendReason::UpdateTarget));
    assert_eq!(v.out_of_sync, 1);
}

#[test]
fn pprc_metro_mirror_one_flashd_qemu_io() {
    let test = "pprc_metro_mirror_one_flashd_qemu_io";
    if !have("qemu-io", test) || !have("qemu-img", test) {
        return;
    }
    metro_mirror_over_nbd(Sites::one(SMALL, &[(0x1000, 0x1100), (0x1001, 0x1101)]), test);
}

#[test]
fn pprc_metro_mirror_two_flashd_tcp_qemu_io() {
    let test = "pprc_metro_mirror_two_flashd_tcp_qemu_io";
    if !have("qemu-io", test) || !have("qemu-img", test) {
        return;
    }
    metro_mirror_over_nbd(Sites::two(SMALL, &[(0x1000, 0x1100), (0x1001, 0x1101)]), test);
}

/// Task 3: an outage (`chlink -outage on`) in the middle of writes over a Metro Mirror pair
/// between two flashd: the pair suspends, writes go on and are recorded; after the outage,
/// resumepprc sends exactly the changed tracks (within 2%) and the volumes are equal.
#[test]
fn pprc_outage_mid_writes_then_resume_sends_only_changed_tracks() {
    let s = Sites::two(SMALL, &[(0x1000, 0x1100)]);
    let p = (0x1000, 0x1100);
    s.mkpprc(&[p], PprcType::MetroMirror, true);
    s.full_duplex(p, 15);
    let mut model = vec![0u8; s.size() as usize];
    // Writes before the outage are mirrored.
    let before: Vec<(u64, Vec<u8>)> = (0..8u64).map(|i| (i * 3 * TRACK + 512, seeded(100 + i, 4096))).collect();
    nbd_write(s.da(), &s.a, 0x1000, &before);
    for (off, data) in &before {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let out = s.da().dscli_ok(&[
        "-bnr",
        "off",
        "chlink",
        "-dev",
        &s.a.to_string(),
        "-remotedev",
        &s.b.to_string(),
        "-outage",
        "on",
        "10:11",
    ]);
    assert!(out.contains("CMUC90062I"), "chlink: {out}");
    // N distinct tracks written during the outage (partial tracks: whole tracks cross later).
    let tracks: Vec<u64> = (0..48u64).map(|i| i * 5 + 1).collect();
    let during: Vec<(u64, Vec<u8>)> =
        tracks.iter().map(|t| (t * TRACK + 4096, seeded(1000 + t, 8192 + (*t as usize % 7) * 512))).collect();
    nbd_write(s.da(), &s.a, 0x1000, &during);
    let v = s.view(p);
    assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::InternalSource)));
    assert_eq!(v.out_of_sync, tracks.len() as u64, "the tracks written in the outage are out of sync");
    // The secondary holds what crossed before the outage, and nothing of what came after.
    assert_eq!(first_diff(&s.read_b(0x1100), &model), None, "secondary != the writes before the outage");
    for (off, data) in &during {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }

    s.link_set(LinkChange { outage: Some(false), ..LinkChange::default() });
    s.wait_path();
    let sent = s.link_bytes();
    s.resume(p, PprcType::MetroMirror, true);
    s.full_duplex(p, 15);
    let crossed = s.link_bytes() - sent;
    let data = tracks.len() as u64 * TRACK;
    println!("resume after the outage: {crossed} bytes crossed for {} tracks ({data} bytes)", tracks.len());
    assert!(crossed >= data && crossed <= data + data / 50, "{crossed} bytes crossed for {data} bytes of tracks");
    s.until_b(p, PprcPhase::FullDuplex);
    let got = s.assert_same(p, "after resume");
    assert_eq!(first_diff(&got, &model), None, "the volumes are not what was written");
}

/// Completed writes in qemu-io's output: the offsets of `wrote N/N bytes at offset X`.
fn completed(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("wrote ")?.split(" bytes at offset ").nth(1)?.trim().parse().ok())
        .collect()
}

/// Task 4: kill -9 of the primary's flashd while qemu-io writes over a Metro Mirror pair to
/// another flashd. Every write qemu-io saw complete is on the secondary at once, the pair
/// comes back (Suspended PowerSource, then Copy Pending, then Full Duplex) and both ends are
/// equal.
#[test]
fn pprc_kill9_primary_flashd_mid_write() {
    let test = "pprc_kill9_primary_flashd_mid_write";
    if !have("qemu-io", test) {
        return;
    }
    let mut s = Sites::two(MEDIUM, &[(0x1000, 0x1100)]);
    let p = (0x1000, 0x1100);
    s.mkpprc(&[p], PprcType::MetroMirror, true);
    s.full_duplex(p, 15);
    // Write k: 4 KiB at k * 8 KiB, pattern k % 250 + 1; every 8th with FUA, a flush every 64.
    const N: u64 = 4096;
    const WATCH: u64 = 200;
    let pat = |k: u64| (k % 250 + 1) as u8;
    let mut cmds = Vec::new();
    for k in 0..N {
        let fua = if k % 8 == 7 { "-f " } else { "" };
        cmds.push(format!("write {fua}-P {:#04x} {} 4096", pat(k), k * 8192));
        if k % 64 == 63 {
            cmds.push("flush".into());
        }
    }
    let mut writer = Command::new("qemu-io");
    writer.args(["-f", "raw", &s.uri_a(0x1000)]);
    for c in &cmds {
        writer.args(["-c", c]);
    }
    let mut writer = writer.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn qemu-io");
    // Drained as it goes: a full pipe would stall the writer.
    let mut out = writer.stdout.take().unwrap();
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).map(|_| text)
    });
    // Kill once write WATCH is on the primary: the writer is well under way.
    let started = Instant::now();
    let mut c = Client::connect(&Endpoint::Unix(s.da().nbd_sock()), &export(&s.a, 0x1000)).unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        c.read(WATCH * 8192, &mut buf).unwrap();
        if buf.iter().all(|b| *b == pat(WATCH)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "qemu-io made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    s.da.take().unwrap().kill9();
    let deadline = Instant::now() + Duration::from_secs(15);
    while writer.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = writer.kill();
            panic!("qemu-io still runs 15 s after flashd died");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = output.join().unwrap().expect("qemu-io output");
    let done = completed(&text);
    println!("{test}: {} of {N} writes completed before the kill", done.len());
    assert!(done.len() as u64 >= WATCH, "fewer completions than seen on the volume: {}", done.len());
    assert!((done.len() as u64) < N, "every write completed before the kill: raise N");
    let check = |what: &str, vol: &[u8]| {
        for off in &done {
            let k = off / 8192;
            let got = &vol[*off as usize..*off as usize + 4096];
            assert!(got.iter().all(|b| *b == pat(k)), "{what}: completed write {k} at {off} is not there");
        }
    };
    // Metro Mirror: a completed write is on the secondary, even with the primary gone.
    check("secondary while the primary is down", &s.read_b(0x1100));

    // Restart: the pair comes back by itself.
    s.da = Some(Daemon::start(s.homes[0].path()));
    let v = s.view(p);
    println!(
        "{test}: right after the restart: {:?} {:?}, {} out of sync",
        v.record.phase, v.record.reason, v.out_of_sync
    );
    assert!(
        matches!(
            (v.record.phase, v.record.reason),
            (PprcPhase::Suspended, Some(SuspendReason::PowerSource))
                | (PprcPhase::CopyPending, None)
                | (PprcPhase::FullDuplex, None)
        ),
        "after the restart: {:?} {:?}",
        v.record.phase,
        v.record.reason
    );
    s.full_duplex(p, 15);
    s.until_b(p, PprcPhase::FullDuplex);
    let a = s.assert_same(p, "after the restart");
    check("primary after the restart", &a);
    // Mirroring again: a new write reaches the secondary.
    qemu_io_ok(&s.uri_a(0x1000), &["write -f -P 0xee 31M 64k".into()]);
    qemu_io_ok(&s.uri_b(0x1100), &["read -P 0xee 31M 64k".into()]);
}

/// Task 5: kill -9 of the secondary's flashd in the middle of a rate-capped initial copy
/// (Global Copy): the primary's pair suspends, writes there go on; the secondary's flashd
/// restarts, resumepprc copies what is missing, and both ends are equal.
#[test]
fn pprc_kill9_secondary_flashd_mid_copy() {
    let mut s = Sites::two(MEDIUM, &[(0x1000, 0x1100)]);
    let p = (0x1000, 0x1100);
    let tracks = s.size() / TRACK;
    let mut model = vec![0u8; s.size() as usize];
    let data: Vec<(u64, Vec<u8>)> = (0..64u64).map(|i| (i * 7 * TRACK + 1024, seeded(500 + i, 60_000))).collect();
    nbd_write(s.da(), &s.a, 0x1000, &data);
    // 4 MiB/s: the initial copy of 512 tracks would take 8 s.
    s.link_set(LinkChange { bandwidth: Some(4 << 20), ..LinkChange::default() });
    s.mkpprc(&[p], PprcType::GlobalCopy, true);
    s.until(p, "copying", 15, |v| v.out_of_sync + 32 <= tracks);
    s.db.take().unwrap().kill9();
    let v = s.until(p, "suspended by the dead secondary", 15, |v| v.record.phase == PprcPhase::Suspended);
    println!("secondary killed: {:?} {:?}, {} of {tracks} out of sync", v.record.phase, v.record.reason, v.out_of_sync);
    assert!(
        matches!(v.record.reason, Some(SuspendReason::InternalSource | SuspendReason::UpdateTarget)),
        "reason {:?}",
        v.record.reason
    );
    assert!(v.out_of_sync > 0 && v.out_of_sync < tracks, "out of sync {}", v.out_of_sync);
    // Writes at the primary go on meanwhile, recorded.
    let more: Vec<(u64, Vec<u8>)> = (0..6u64).map(|i| (i * 50 * TRACK + 333, seeded(900 + i, 10_000))).collect();
    nbd_write(s.da(), &s.a, 0x1000, &more);
    for (off, d) in data.iter().chain(&more) {
        model[*off as usize..*off as usize + d.len()].copy_from_slice(d);
    }

    // The secondary's flashd comes back on the same address; lspprcpath redials it.
    let listen = s.b_listen.clone().unwrap();
    s.db = Some(Daemon::start_with(s.homes[1].path(), &[OsStr::new("--link-listen"), OsStr::new(&listen)], &[]));
    s.wait_path();
    s.link_set(LinkChange { bandwidth: Some(0), ..LinkChange::default() });
    s.resume(p, PprcType::GlobalCopy, true);
    s.until(p, "drained after resume", 15, |v| {
        v.record.phase == PprcPhase::CopyPending && v.record.first_pass && v.out_of_sync == 0
    });
    s.until_b(p, PprcPhase::CopyPending);
    let got = s.assert_same(p, "after resume");
    assert_eq!(first_diff(&got, &model), None, "the volumes are not what was written");
}

/// A pair that comes up Suspended (PowerSource) while its secondary's flashd is down resumes
/// by itself when that flashd comes back: the driver's resume dials the path's port pairs
/// again (found by this test: it once waited for someone to run lspprcpath).
#[test]
fn pprc_auto_resume_redials_a_secondary_that_comes_back_later() {
    let mut s = Sites::two(SMALL, &[(0x1000, 0x1100)]);
    let p = (0x1000, 0x1100);
    s.mkpprc(&[p], PprcType::MetroMirror, true);
    s.full_duplex(p, 15);
    s.db.take().unwrap().kill9();
    s.da.take().unwrap().kill9();
    s.da = Some(Daemon::start(s.homes[0].path()));
    let v = s.view(p);
    assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::PowerSource)));
    let listen = s.b_listen.clone().unwrap();
    s.db = Some(Daemon::start_with(s.homes[1].path(), &[OsStr::new("--link-listen"), OsStr::new(&listen)], &[]));
    // No lspprcpath here: "resume by themselves when the secondary answers".
    s.until(p, "resumed by itself", 10, |v| v.record.phase != PprcPhase::Suspended);
    s.full_duplex(p, 15);
}
