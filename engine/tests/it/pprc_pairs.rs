//! PPRC pairs between two images of one site over in-process links: Metro Mirror and
//! Global Copy, the secondary's host rules, suspend and resume (only changed tracks cross),
//! failover and failback, freeze, restart, and every rule refusing without a change.

use crate::fixture::{TestSite, items_ok};
use flashtrack::control::Capacity;
use flashtrack::control::{PprcSelect, PprcSide, PprcSpec, PprcView, Reply, Request, VolumeSpec};
use flashtrack::error::ErrorKind;
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId, PoolId, VolumeId, VolumeKey};
use flashtrack::image::record::{PprcPhase, PprcRole, PprcType, Sam, SuspendReason};
use flashtrack::link::LinkProps;
use std::time::{Duration, Instant};

pub(crate) const TRACK: u64 = 65_536;
/// 32 MiB volumes: 512 tracks.
pub(crate) const BLOCKS: u64 = 65_536;

pub(crate) fn vol(image: &ImageId, pool: u16, blocks: u64, v: u16) -> Request {
    let spec = VolumeSpec {
        pool: PoolId(pool),
        capacity: Capacity::Fb { cap: blocks, captype: CapType::Blocks },
        sam: Sam::Ese,
    };
    Request::VolumeCreate { image: image.clone(), spec, volumes: vec![(VolumeId(v), String::new())] }
}

/// Images A (volume 1000, LSS 10) and B (volume 1100, LSS 11) with a path 10 -> 11.
pub(crate) fn setup() -> (TestSite, ImageId, ImageId) {
    let t = TestSite::new();
    let a = t.image("IBM.2107-75FA120");
    let b = t.image("IBM.2107-75FA150");
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1000)));
    items_ok(t.ok(vol(&b, 1, BLOCKS, 0x1100)));
    path(&t, &a, &b, 0x10, 0x11);
    (t, a, b)
}

pub(crate) fn path(t: &TestSite, a: &ImageId, b: &ImageId, src: u8, tgt: u8) {
    items_ok(t.ok(Request::PprcPathCreate {
        image: a.clone(),
        remote: b.clone(),
        remote_wwnn: b.wwnn(),
        src_lss: LssId(src),
        tgt_lss: LssId(tgt),
        consistgrp: false,
        ports: vec![("I0000".into(), "I0001".into())],
    }));
}

pub(crate) fn spec(kind: PprcType, nocopy: bool) -> PprcSpec {
    PprcSpec { kind, nocopy, tgtread: false, critmode: false }
}

pub(crate) fn mkpprc(a: &ImageId, b: &ImageId, s: u16, t: u16, spec: PprcSpec) -> Request {
    Request::PprcCreate { image: a.clone(), remote: b.clone(), pairs: vec![(VolumeId(s), VolumeId(t))], spec }
}

pub(crate) fn views(t: &TestSite, img: &ImageId) -> Vec<PprcView> {
    let Reply::Pprc(v) = t.ok(Request::PprcList { image: img.clone() }) else { panic!() };
    v
}

pub(crate) fn view(t: &TestSite, img: &ImageId) -> PprcView {
    views(t, img).into_iter().next().expect("a pair")
}

/// Wait until `f` holds for the first pair of `img`.
pub(crate) fn until(t: &TestSite, img: &ImageId, what: &str, f: impl Fn(&PprcView) -> bool) -> PprcView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = view(t, img);
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn key(img: &ImageId, v: u16) -> VolumeKey {
    VolumeKey { image: img.clone(), volume: VolumeId(v) }
}

/// Host write through the intercept.
pub(crate) fn write(t: &TestSite, img: &ImageId, v: u16, off: u64, data: &[u8]) -> std::io::Result<()> {
    let vol = t.site().volume(&key(img, v)).unwrap();
    t.site().flash_of(img).unwrap().write(&vol, off, data, false)
}

fn host_read(t: &TestSite, img: &ImageId, v: u16, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let vol = t.site().volume(&key(img, v)).unwrap();
    let mut buf = vec![0u8; len];
    t.site().flash_of(img).unwrap().read(&vol, off, &mut buf).map(|()| buf)
}

/// The volume's bytes as stored (not through the host rules).
fn raw(t: &TestSite, img: &ImageId, v: u16) -> Vec<u8> {
    let vol = t.site().volume(&key(img, v)).unwrap();
    let mut buf = vec![0u8; vol.size() as usize];
    vol.read(0, &mut buf).unwrap();
    buf
}

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i / 512) as u8).wrapping_mul(31)).collect()
}

fn link_bytes(t: &TestSite, a: &ImageId, b: &ImageId) -> u64 {
    let l = t.site().path_link(a, "I0000", b, "I0001").expect("link");
    let s = l.stats();
    s.tx_bytes + s.rx_bytes
}

#[test]
fn metro_mirror_copies_then_mirrors_every_write() {
    let (t, a, b) = setup();
    write(&t, &a, 0x1000, 5 * TRACK, &pattern(1, 3 * TRACK as usize)).unwrap();
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, false))));
    let v = until(&t, &a, "full duplex", |v| v.record.phase == PprcPhase::FullDuplex);
    assert_eq!(v.out_of_sync, 0);
    assert_eq!(v.record.role, PprcRole::Primary);
    let vb = until(&t, &b, "target full duplex", |v| v.record.phase == PprcPhase::FullDuplex);
    assert_eq!(vb.record.role, PprcRole::Secondary);
    assert_eq!(vb.record.ids(), (VolumeId(0x1000), VolumeId(0x1100)));
    // Synchronous: each write is at the secondary when it completes.
    for i in 0..20u64 {
        let off = (i * 7919 * 512) % (BLOCKS * 512 - 8192);
        write(&t, &a, 0x1000, off, &pattern(i as u8, 8192)).unwrap();
        let vol_b = t.site().volume(&key(&b, 0x1100)).unwrap();
        let mut got = vec![0u8; 8192];
        vol_b.read(off, &mut got).unwrap();
        assert_eq!(got, pattern(i as u8, 8192), "write {i} not at the secondary on completion");
    }
    let vol_a = t.site().volume(&key(&a, 0x1000)).unwrap();
    let fa = t.site().flash_of(&a).unwrap();
    fa.write_zeroes(&vol_a, 6 * TRACK, TRACK, true).unwrap();
    fa.flush(&vol_a).unwrap();
    assert_eq!(raw(&t, &a, 0x1000), raw(&t, &b, 0x1100));
    // The secondary refuses hosts: writes always, reads without -tgtread.
    assert_eq!(write(&t, &b, 0x1100, 0, &[1; 512]).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(host_read(&t, &b, 0x1100, 0, 512).unwrap_err().raw_os_error(), Some(libc::EPERM));
    // A volume in a pair cannot be removed.
    let rm = Request::VolumeRemove { image: b.clone(), volumes: vec![VolumeId(0x1100)], safe: false, stgtype: None };
    assert_eq!(t.item_err(rm), ErrorKind::VolumeInRelationship);
    // rmpprc ends both sides; the secondary is writable again.
    let sel = PprcSelect { source: VolumeId(0x1000), target: Some(VolumeId(0x1100)) };
    items_ok(t.ok(Request::PprcRemove { image: a.clone(), remote: b.clone(), pairs: vec![sel], at: None }));
    assert!(views(&t, &a).is_empty() && views(&t, &b).is_empty());
    write(&t, &b, 0x1100, 0, &[1; 512]).unwrap();
}

#[test]
fn global_copy_outage_then_resume_sends_only_the_changed_tracks() {
    let (t, a, b) = setup();
    let mut s = spec(PprcType::GlobalCopy, true);
    s.tgtread = true;
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, s)));
    let v = until(&t, &a, "first pass", |v| v.record.first_pass);
    assert_eq!((v.record.phase, v.record.kind), (PprcPhase::CopyPending, PprcType::GlobalCopy));
    // Changes drain in the background.
    write(&t, &a, 0x1000, 3 * TRACK, &pattern(3, 4096)).unwrap();
    until(&t, &a, "drained", |v| v.out_of_sync == 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_read(&t, &b, 0x1100, 3 * TRACK, 4096).unwrap() != pattern(3, 4096) {
        assert!(Instant::now() < deadline, "the drain never reached the secondary");
        std::thread::sleep(Duration::from_millis(10));
    }
    // An outage: the next drain fails and the pair suspends; host writes go on, recorded.
    let link = t.site().path_link(&a, "I0000", &b, "I0001").unwrap();
    link.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    let changed = [10u64, 11, 200, 201, 202, 511];
    for (i, tr) in changed.iter().enumerate() {
        write(&t, &a, 0x1000, tr * TRACK + 512, &pattern(i as u8 + 40, 1024)).unwrap();
    }
    let v = until(&t, &a, "suspended", |v| v.record.phase == PprcPhase::Suspended);
    assert_eq!(v.record.reason, Some(SuspendReason::InternalSource));
    assert_eq!(v.out_of_sync, changed.len() as u64);
    link.set_props(LinkProps::default()).unwrap();
    let before = link_bytes(&t, &a, &b);
    let resume = Request::PprcResume {
        image: a.clone(),
        remote: b.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1100))],
        spec: spec(PprcType::GlobalCopy, false),
    };
    items_ok(t.ok(resume.clone()));
    until(&t, &a, "drained after resume", |v| v.out_of_sync == 0 && v.record.first_pass);
    let crossed = link_bytes(&t, &a, &b) - before;
    let data = changed.len() as u64 * TRACK;
    assert!(crossed >= data && crossed <= data + data / 50, "{crossed} bytes crossed for {data} bytes of tracks");
    assert_eq!(raw(&t, &a, 0x1000), raw(&t, &b, 0x1100));
    // Resume of a pair that is not suspended is refused, and changes nothing.
    t.unchanged(&a, |t| assert_eq!(t.item_err(resume.clone()), ErrorKind::PprcStateInvalid));
}

#[test]
fn failover_then_failback_brings_both_sides_together() {
    let (t, a, b) = setup();
    path(&t, &b, &a, 0x11, 0x10);
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    write(&t, &a, 0x1000, 0, &pattern(1, 2 * TRACK as usize)).unwrap();
    // Site A is lost: fail over to B (pairs written B:A), production runs there.
    let fo = Request::PprcFailover {
        image: b.clone(),
        remote: a.clone(),
        pairs: vec![(VolumeId(0x1100), VolumeId(0x1000))],
        kind: PprcType::MetroMirror,
    };
    items_ok(t.ok(fo.clone()));
    let vb = view(&t, &b);
    assert_eq!((vb.record.role, vb.record.phase), (PprcRole::Primary, PprcPhase::Suspended));
    assert_eq!(vb.record.reason, Some(SuspendReason::HostSource));
    assert_eq!(vb.record.ids(), (VolumeId(0x1100), VolumeId(0x1000)));
    assert_eq!(t.item_err(fo), ErrorKind::PprcStateInvalid, "a primary cannot fail over");
    write(&t, &b, 0x1100, 100 * TRACK, &pattern(7, 4096)).unwrap();
    // A write at A that never crossed (B refuses it: A's pair suspends).
    write(&t, &a, 0x1000, 300 * TRACK, &pattern(9, 4096)).unwrap();
    let va = until(&t, &a, "A suspended", |v| v.record.phase == PprcPhase::Suspended);
    assert_eq!(va.record.reason, Some(SuspendReason::UpdateTarget));
    // Failback from B: A becomes B's secondary; B's changes and A's stray write go over.
    let fb = Request::PprcFailback {
        image: b.clone(),
        remote: a.clone(),
        pairs: vec![(VolumeId(0x1100), VolumeId(0x1000))],
        spec: spec(PprcType::MetroMirror, false),
    };
    items_ok(t.ok(fb));
    until(&t, &b, "B full duplex", |v| v.record.phase == PprcPhase::FullDuplex);
    let va = view(&t, &a);
    assert_eq!(va.record.role, PprcRole::Secondary);
    assert_eq!(raw(&t, &a, 0x1000), raw(&t, &b, 0x1100));
    assert_eq!(write(&t, &a, 0x1000, 0, &[1; 512]).unwrap_err().raw_os_error(), Some(libc::EPERM));
}

#[test]
fn rules_refuse_and_change_nothing() {
    let (t, a, b) = setup();
    items_ok(t.ok(vol(&b, 1, BLOCKS * 2, 0x1101)));
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1001)));
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1002)));
    items_ok(t.ok(vol(&b, 1, BLOCKS, 0x1102)));
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    let both = |t: &TestSite, f: &dyn Fn(&TestSite)| t.unchanged(&a, |t| t.unchanged(&b, f));
    both(&t, &|t| {
        let mm = spec(PprcType::MetroMirror, true);
        assert_eq!(t.item_err(mkpprc(&a, &b, 0x1001, 0x1101, mm)), ErrorKind::PprcIncompatible);
        assert_eq!(t.item_err(mkpprc(&a, &b, 0x1000, 0x1102, mm)), ErrorKind::PprcPairExists);
        assert_eq!(t.item_err(mkpprc(&a, &b, 0x1001, 0x1100, mm)), ErrorKind::PprcPairExists);
        assert_eq!(t.item_err(mkpprc(&a, &b, 0x1001, 0x2100, mm)), ErrorKind::PprcPathNotFound);
        assert_eq!(t.item_err(mkpprc(&a, &b, 0x1009, 0x1102, mm)), ErrorKind::VolumeNotFound);
        let sel = PprcSelect { source: VolumeId(0x1001), target: Some(VolumeId(0x1102)) };
        let pause = Request::PprcPause { image: a.clone(), remote: b.clone(), pairs: vec![sel], at: None };
        assert_eq!(t.item_err(pause), ErrorKind::PprcPairNotFound);
        let fb = Request::PprcFailback {
            image: a.clone(),
            remote: b.clone(),
            pairs: vec![(VolumeId(0x1000), VolumeId(0x1100))],
            spec: mm,
        };
        assert_eq!(t.item_err(fb), ErrorKind::PprcStateInvalid, "failback of a primary that is not suspended");
        // FlashCopy meets PPRC.
        let flash = |s: u16, tg: u16, tgtpprc: bool, img: &ImageId| Request::FlashCreate {
            image: img.clone(),
            pairs: vec![(VolumeId(s), VolumeId(tg))],
            options: flashtrack::flash::relationship::FlashOptions { tgtpprc, ..Default::default() },
        };
        assert_eq!(t.item_err(flash(0x1102, 0x1100, true, &b)), ErrorKind::PprcSecondary);
        assert_eq!(t.item_err(flash(0x1001, 0x1000, false, &a)), ErrorKind::PprcTgtpprcRequired);
    });
    // With -tgtpprc the FlashCopy is allowed and its target's tracks go over to the secondary.
    write(&t, &a, 0x1001, 40 * TRACK, &pattern(5, 4096)).unwrap();
    let flash = Request::FlashCreate {
        image: a.clone(),
        pairs: vec![(VolumeId(0x1001), VolumeId(0x1000))],
        options: flashtrack::flash::relationship::FlashOptions { tgtpprc: true, ..Default::default() },
    };
    items_ok(t.ok(flash));
    until(&t, &a, "the FlashCopy's tracks crossed", |v| v.record.phase == PprcPhase::FullDuplex && v.out_of_sync == 0);
    let got = raw(&t, &b, 0x1100);
    assert_eq!(&got[40 * TRACK as usize..40 * TRACK as usize + 4096], &pattern(5, 4096)[..]);
}

#[test]
fn freeze_suspends_removes_the_path_and_holds_writes_until_unfreeze() {
    let (t, a, b) = setup();
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    let fr = Request::PprcFreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(0x10), LssId(0x11))] };
    items_ok(t.ok(fr.clone()));
    let v = view(&t, &a);
    assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::Freeze)));
    let Reply::PprcPaths(p) = t.ok(Request::PprcPathList { image: a.clone() }) else { panic!() };
    assert!(p.is_empty(), "freezepprc removes the paths");
    let site = t.site();
    std::thread::scope(|s| {
        let h = s.spawn(|| write(&t, &a, 0x1000, 0, &pattern(2, 4096)));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!h.is_finished(), "a write to a frozen primary went through");
        let un = Request::PprcUnfreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(0x10), LssId(0x11))] };
        let _ = site;
        items_ok(t.ok(un));
        h.join().unwrap().unwrap();
    });
    let v = view(&t, &a);
    assert_eq!(v.record.phase, PprcPhase::Suspended, "pairs stay suspended after unfreeze");
    assert_eq!(v.out_of_sync, 1);
    assert_eq!(t.item_err(fr), ErrorKind::PprcPathNotFound, "the path is gone");
}

fn rmpath(a: &ImageId, b: &ImageId, src: u8, tgt: u8, force: bool) -> Request {
    Request::PprcPathRemove {
        image: a.clone(),
        remote: b.clone(),
        remote_wwnn: None,
        src_lss: LssId(src),
        tgt_lss: LssId(tgt),
        force,
    }
}

fn unfreeze(a: &ImageId, b: &ImageId, src: u8, tgt: u8) -> Request {
    Request::PprcUnfreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(src), LssId(tgt))] }
}

fn path_count(t: &TestSite, img: &ImageId) -> usize {
    let Reply::PprcPaths(p) = t.ok(Request::PprcPathList { image: img.clone() }) else { panic!() };
    p.len()
}

/// dscli-spec.md §3.3: without -force, removing a path that still carries pairs is rejected;
/// the path and the pair are left exactly as they were. A path carries the pairs whose
/// primary is in its source LSS and secondary in its target LSS (its direction only); -force
/// removes it and the pair suspends when it next needs the path.
#[test]
fn rmpprcpath_refuses_a_path_that_carries_pairs_unless_force() {
    let (t, a, b) = setup();
    path(&t, &b, &a, 0x11, 0x10); // the other direction: carries nothing
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    until(&t, &a, "full duplex", |v| v.record.phase == PprcPhase::FullDuplex);
    let both = |t: &TestSite, f: &dyn Fn(&TestSite)| t.unchanged(&a, |t| t.unchanged(&b, f));
    both(&t, &|t| {
        assert_eq!(t.err(rmpath(&a, &b, 0x10, 0x11, false)), ErrorKind::PprcPathInUse);
    });
    assert_eq!(path_count(&t, &a), 1, "the refused path stays");
    assert!(t.site().path_link(&a, "I0000", &b, "I0001").is_some(), "and so does its link");
    write(&t, &a, 0x1000, 3 * TRACK, &pattern(6, 4096)).unwrap();
    let v = view(&t, &a);
    assert_eq!((v.record.phase, v.out_of_sync), (PprcPhase::FullDuplex, 0), "the pair still mirrors: {v:?}");
    assert_eq!(raw(&t, &a, 0x1000), raw(&t, &b, 0x1100));
    // A suspended pair is still carried (a resume needs the path).
    let sel = PprcSelect { source: VolumeId(0x1000), target: Some(VolumeId(0x1100)) };
    items_ok(t.ok(Request::PprcPause { image: a.clone(), remote: b.clone(), pairs: vec![sel], at: None }));
    both(&t, &|t| {
        assert_eq!(t.err(rmpath(&a, &b, 0x10, 0x11, false)), ErrorKind::PprcPathInUse);
    });
    // The reverse path B 11 -> A 10 carries no pair (B holds the secondary): it goes.
    items_ok(t.ok(rmpath(&b, &a, 0x11, 0x10, false)));
    assert_eq!(path_count(&t, &b), 0);
    // -force: the path goes; the pair stays (suspended) and a resume has no path.
    items_ok(t.ok(Request::PprcResume {
        image: a.clone(),
        remote: b.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1100))],
        spec: spec(PprcType::MetroMirror, false),
    }));
    until(&t, &a, "full duplex again", |v| v.record.phase == PprcPhase::FullDuplex);
    items_ok(t.ok(rmpath(&a, &b, 0x10, 0x11, true)));
    assert_eq!(path_count(&t, &a), 0);
    write(&t, &a, 0x1000, 4 * TRACK, &pattern(7, 4096)).unwrap();
    let v = until(&t, &a, "suspended without its path", |v| v.record.phase == PprcPhase::Suspended);
    assert!(v.out_of_sync >= 1, "the write is recorded for a resume: {v:?}");
    assert_eq!(views(&t, &a).len(), 1, "-force removes the path, not the pair");
}

/// unfreezepprc of an LSS pair that does not exist (no such image, remote image or LSS, or
/// no path, pair or frozen group between the LSSs) is refused, changes no catalog and
/// releases no held write; an existing LSS pair that is not frozen thaws with success.
#[test]
fn unfreezepprc_of_what_does_not_exist_is_refused_and_releases_nothing() {
    let (t, a, b) = setup();
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1200)));
    items_ok(t.ok(vol(&b, 1, BLOCKS, 0x1300)));
    let c = t.id("IBM.2107-75FA999");
    let both = |t: &TestSite, f: &dyn Fn(&TestSite)| t.unchanged(&a, |t| t.unchanged(&b, f));
    both(&t, &|t| {
        assert_eq!(t.item_err(unfreeze(&a, &b, 0x30, 0x31)), ErrorKind::LssNotFound, "no such LSSs");
        assert_eq!(t.item_err(unfreeze(&a, &b, 0x10, 0x31)), ErrorKind::LssNotFound, "no such target LSS");
        assert_eq!(t.item_err(unfreeze(&a, &b, 0x12, 0x13)), ErrorKind::PprcPathNotFound, "LSSs without a path");
        assert_eq!(t.item_err(unfreeze(&b, &a, 0x11, 0x10)), ErrorKind::PprcPathNotFound, "the other direction");
        assert_eq!(t.item_err(unfreeze(&a, &c, 0x10, 0x11)), ErrorKind::PprcRemoteNotFound);
        assert_eq!(t.item_err(unfreeze(&c, &b, 0x10, 0x11)), ErrorKind::ImageNotFound);
    });
    // An existing path that is not frozen: nothing to release, success, nothing changes.
    both(&t, &|t| {
        items_ok(t.ok(unfreeze(&a, &b, 0x10, 0x11)));
    });
    // Frozen with a pair: a wrong remote image (or LSS pair) must not thaw the source LSS.
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    let fr = Request::PprcFreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(0x10), LssId(0x11))] };
    items_ok(t.ok(fr));
    std::thread::scope(|s| {
        let h = s.spawn(|| write(&t, &a, 0x1000, 0, &pattern(2, 4096)));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(t.item_err(unfreeze(&a, &c, 0x10, 0x11)), ErrorKind::PprcRemoteNotFound);
        assert_eq!(t.item_err(unfreeze(&a, &b, 0x10, 0x13)), ErrorKind::PprcPathNotFound);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!h.is_finished(), "a refused unfreezepprc released the held write");
        // The path is gone but the pair is there: the LSS pair exists.
        items_ok(t.ok(unfreeze(&a, &b, 0x10, 0x11)));
        h.join().unwrap().unwrap();
    });
    items_ok(t.ok(unfreeze(&a, &b, 0x10, 0x11))); // again: the pair still makes it exist
    // Frozen without pairs: the frozen group makes the LSS pair exist until it is thawed.
    path(&t, &a, &b, 0x12, 0x13);
    let fr = Request::PprcFreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(0x12), LssId(0x13))] };
    items_ok(t.ok(fr));
    assert_eq!(path_count(&t, &a), 0);
    items_ok(t.ok(unfreeze(&a, &b, 0x12, 0x13)));
    both(&t, &|t| {
        assert_eq!(t.item_err(unfreeze(&a, &b, 0x12, 0x13)), ErrorKind::PprcPathNotFound, "thawed: nothing left");
    });
}

#[test]
fn restart_brings_pairs_up_suspended_then_resumes_them_with_what_was_written() {
    let (mut t, a, b) = setup();
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::GlobalCopy, true))));
    until(&t, &a, "first pass", |v| v.record.first_pass);
    let link = t.site().path_link(&a, "I0000", &b, "I0001").unwrap();
    link.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    write(&t, &a, 0x1000, 77 * TRACK, &pattern(8, 4096)).unwrap();
    // kill -9 equivalent: the site is dropped without a clean close.
    t.restart();
    let v = view(&t, &a);
    assert!(v.out_of_sync >= 1, "the write made before the crash is out of sync: {v:?}");
    until(&t, &a, "resumed and drained", |v| v.record.phase == PprcPhase::CopyPending && v.out_of_sync == 0);
    assert_eq!(raw(&t, &a, 0x1000), raw(&t, &b, 0x1100));
    // -at src removes only this end; the secondary keeps its end until it is removed too.
    let sel = PprcSelect { source: VolumeId(0x1000), target: Some(VolumeId(0x1100)) };
    let rm = |at| Request::PprcRemove { image: a.clone(), remote: b.clone(), pairs: vec![sel], at: Some(at) };
    items_ok(t.ok(rm(PprcSide::Source)));
    assert!(views(&t, &a).is_empty());
    assert_eq!(views(&t, &b).len(), 1);
    let rm_b = Request::PprcRemove {
        image: b.clone(),
        remote: a.clone(),
        pairs: vec![PprcSelect { source: VolumeId(0x1100), target: None }],
        at: Some(PprcSide::Source),
    };
    items_ok(t.ok(rm_b));
    assert!(views(&t, &b).is_empty());
}

#[test]
fn consistgrp_holds_writes_after_a_link_failure_and_critmode_fails_them() {
    let t = TestSite::new();
    let a = t.image("IBM.2107-75FA120");
    let b = t.image("IBM.2107-75FA150");
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1000)));
    items_ok(t.ok(vol(&b, 1, BLOCKS, 0x1100)));
    items_ok(t.ok(vol(&a, 0, BLOCKS, 0x1200)));
    items_ok(t.ok(vol(&b, 1, BLOCKS, 0x1300)));
    // 10 -> 11 with -consistgrp; 12 -> 13 without.
    items_ok(t.ok(Request::PprcPathCreate {
        image: a.clone(),
        remote: b.clone(),
        remote_wwnn: b.wwnn(),
        src_lss: LssId(0x10),
        tgt_lss: LssId(0x11),
        consistgrp: true,
        ports: vec![("I0000".into(), "I0001".into())],
    }));
    path(&t, &a, &b, 0x12, 0x13);
    items_ok(t.ok(mkpprc(&a, &b, 0x1000, 0x1100, spec(PprcType::MetroMirror, true))));
    let mut crit = spec(PprcType::MetroMirror, true);
    crit.critmode = true;
    items_ok(t.ok(mkpprc(&a, &b, 0x1200, 0x1300, crit)));
    assert!(view(&t, &a).pprc_cg);
    let link = t.site().path_link(&a, "I0000", &b, "I0001").unwrap();
    link.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    // -critmode: the write that cannot be mirrored fails; the pair suspends.
    assert_eq!(write(&t, &a, 0x1200, 0, &[3; 4096]).unwrap_err().raw_os_error(), Some(libc::EIO));
    // -consistgrp: the failing write and the ones after it wait (queue full) until unfreezepprc.
    std::thread::scope(|s| {
        let h = s.spawn(|| write(&t, &a, 0x1000, 0, &pattern(4, 4096)));
        std::thread::sleep(Duration::from_millis(400));
        assert!(!h.is_finished(), "a -consistgrp primary let a write complete after its pair suspended");
        let v = views(&t, &a).into_iter().find(|v| v.record.local == VolumeId(0x1000)).unwrap();
        assert_eq!((v.record.phase, v.record.reason), (PprcPhase::Suspended, Some(SuspendReason::InternalSource)));
        let un = Request::PprcUnfreeze { image: a.clone(), remote: b.clone(), lss: vec![(LssId(0x10), LssId(0x11))] };
        items_ok(t.ok(un));
        h.join().unwrap().unwrap();
    });
    write(&t, &a, 0x1000, TRACK, &pattern(5, 4096)).unwrap();
    let v = views(&t, &a).into_iter().find(|v| v.record.local == VolumeId(0x1000)).unwrap();
    assert_eq!(v.out_of_sync, 2, "both writes are recorded for the resume");
}
