//! Remote FlashCopy through a conduit LSS (the `*remoteflash` family): the FlashCopy request
//! travels in band over the PPRC path from the primaries' LSS and runs at the secondaries'
//! image; the conduit rules refuse per pair.

use crate::fixture::{TestSite, items_ok};
use flashtrack::control::{PprcSpec, Reply, Request};
use flashtrack::error::ErrorKind;
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::id::{ImageId, LssId, VolumeId, VolumeKey};
use flashtrack::image::record::{PprcPhase, PprcType};
use flashtrack::link::LinkProps;
use std::time::{Duration, Instant};

const TRACK: u64 = 65_536;

fn vol(image: &ImageId, pool: u16, v: u16) -> Request {
    crate::pprc_pairs::vol(image, pool, crate::pprc_pairs::BLOCKS, v)
}

/// A (1000, primary, LSS 10) -> B (1100, secondary, LSS 11), Metro Mirror in sync; B also has
/// 1101 (FlashCopy target) and 1102 (not in a pair).
fn setup() -> (TestSite, ImageId, ImageId) {
    let t = TestSite::new();
    let a = t.image("IBM.1750-68FA150");
    let b = t.image("IBM.1750-68FA120");
    items_ok(t.ok(vol(&a, 0, 0x1000)));
    for v in [0x1100, 0x1101, 0x1102] {
        items_ok(t.ok(vol(&b, 1, v)));
    }
    items_ok(t.ok(Request::PprcPathCreate {
        image: a.clone(),
        remote: b.clone(),
        remote_wwnn: b.wwnn(),
        src_lss: LssId(0x10),
        tgt_lss: LssId(0x11),
        consistgrp: false,
        ports: vec![("I0000".into(), "I0001".into())],
    }));
    let spec = PprcSpec { kind: PprcType::MetroMirror, nocopy: false, tgtread: false, critmode: false };
    items_ok(t.ok(Request::PprcCreate {
        image: a.clone(),
        remote: b.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1100))],
        spec,
    }));
    t.ok(Request::PprcWait { image: a.clone(), pairs: vec![(VolumeId(0x1000), VolumeId(0x1100))], timeout_ms: 30_000 });
    let Reply::Pprc(v) = t.ok(Request::PprcList { image: a.clone() }) else { panic!() };
    assert_eq!(v[0].record.phase, PprcPhase::FullDuplex);
    (t, a, b)
}

fn remote(a: &ImageId, srcss: Option<u16>, req: Request) -> Request {
    Request::RemoteFlash { image: a.clone(), conduit: LssId(0x10), srcss, request: Box::new(req) }
}

fn rec() -> FlashOptions {
    FlashOptions { record: true, persist: true, ..Default::default() }
}

fn write(t: &TestSite, img: &ImageId, v: u16, off: u64, data: &[u8]) {
    let vol = t.site().volume(&VolumeKey { image: img.clone(), volume: VolumeId(v) }).unwrap();
    t.site().flash_of(img).unwrap().write(&vol, off, data, false).unwrap();
}

/// What a host reading `v` (through the intercept: a target's uncopied tracks from its source) sees.
fn read(t: &TestSite, img: &ImageId, v: u16) -> Vec<u8> {
    let vol = t.site().volume(&VolumeKey { image: img.clone(), volume: VolumeId(v) }).unwrap();
    let mut buf = vec![0u8; vol.size() as usize];
    vol.read(0, &mut buf).unwrap();
    buf
}

fn views(t: &TestSite, a: &ImageId, b: &ImageId) -> Vec<flashtrack::control::FlashView> {
    let Reply::Flash(v) = t.ok(remote(a, None, Request::FlashList { image: b.clone() })) else { panic!() };
    v
}

/// Run the remote image's background copy (flashd's copier threads do it; tests call it).
fn copy_all(t: &TestSite, a: &ImageId, b: &ImageId) {
    let mut w = flashtrack::flash::copier::CopyWorker::new(8);
    let deadline = Instant::now() + Duration::from_secs(30);
    while views(t, a, b)[0].out_of_sync > 0 {
        assert!(Instant::now() < deadline, "the remote copy never ended");
        t.site().copy_pass(&mut w, 1024);
    }
}

#[test]
fn mkremoteflash_then_resyncremoteflash_copies_only_the_changes_at_the_remote() {
    let (t, a, b) = setup();
    write(&t, &a, 0x1000, 0, &[7; 4096]);
    let pair = vec![(VolumeId(0x1100), VolumeId(0x1101))];
    items_ok(t.ok(remote(&a, None, Request::FlashCreate { image: b.clone(), pairs: pair.clone(), options: rec() })));
    let v = views(&t, &a, &b);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].record.source, v[0].record.target), (VolumeId(0x1100), VolumeId(0x1101)));
    // Wait for the background copy at B, then write at A (mirrored to B): the target keeps T0.
    copy_all(&t, &a, &b);
    for tr in [3u64, 4, 100] {
        write(&t, &a, 0x1000, tr * TRACK, &[9; 512]);
    }
    let vol_t = t.site().volume(&VolumeKey { image: b.clone(), volume: VolumeId(0x1101) }).unwrap();
    let mut got = vec![0u8; 512];
    t.site().flash_of(&b).unwrap().read(&vol_t, 3 * TRACK, &mut got).unwrap();
    assert_eq!(got, vec![0u8; 512], "the remote target keeps T0");
    let before = t.site().path_link(&a, "I0000", &b, "I0001").unwrap().stats();
    items_ok(t.ok(remote(
        &a,
        None,
        Request::FlashResync { image: b.clone(), pairs: pair.clone(), options: rec(), seqnum: None },
    )));
    let after = t.site().path_link(&a, "I0000", &b, "I0001").unwrap().stats();
    assert!(after.tx_bytes - before.tx_bytes < 8192, "the resync's data never crosses the link");
    let v = &views(&t, &a, &b)[0];
    assert_eq!(v.copied + v.out_of_sync, 3, "exactly the tracks written since the last increment");
    copy_all(&t, &a, &b);
    assert_eq!(read(&t, &b, 0x1101), read(&t, &a, 0x1000));
    assert_eq!(read(&t, &b, 0x1100), read(&t, &a, 0x1000));
}

#[test]
fn conduit_rules_refuse_per_pair_and_change_nothing() {
    let (t, a, b) = setup();
    t.unchanged(&a, |t| {
        t.unchanged(&b, |t| {
            // 1102 is no secondary of the conduit's pairs.
            let mk = |s: u16, tg: u16| Request::FlashCreate {
                image: b.clone(),
                pairs: vec![(VolumeId(s), VolumeId(tg))],
                options: rec(),
            };
            assert_eq!(t.item_err(remote(&a, None, mk(0x1102, 0x1101))), ErrorKind::ConduitNoPair);
            // The SSID of B's LSS 11 is FF11.
            assert_eq!(t.item_err(remote(&a, Some(0x1234), mk(0x1100, 0x1101))), ErrorKind::ConduitSsidMismatch);
            // Another LSS is no conduit.
            let other = Request::RemoteFlash {
                image: a.clone(),
                conduit: LssId(0x12),
                srcss: None,
                request: Box::new(mk(0x1100, 0x1101)),
            };
            assert_eq!(t.item_err(other), ErrorKind::ConduitNoPair);
        })
    });
    // A path whose link is down.
    let link = t.site().path_link(&a, "I0000", &b, "I0001").unwrap();
    link.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    let mk =
        Request::FlashCreate { image: b.clone(), pairs: vec![(VolumeId(0x1100), VolumeId(0x1101))], options: rec() };
    let kind = t.item_err(remote(&a, Some(0xFF11), mk));
    assert!(matches!(kind, ErrorKind::ConduitSuspended | ErrorKind::LinkDown), "{kind:?}");
}
