//! Recovery regressions found in review: reverse + kill -9, Tgt Failed and Validation
//! Required surviving restarts, crashes inside resync, a failed checkpoint, a failed revert.
//! The `fp_` tests set FLASHTRACK_FAILPOINT and need `--features failpoints` and one test
//! thread; scripts/test.sh runs them that way.

use crate::fixture::{TestSite, items_ok, site_ok};
use flashtrack::control::{Capacity, Reply, Request, Response, VolumeSpec};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::{CapType, TRACK_BYTES};
use flashtrack::id::{ImageId, PoolId, VolumeId, VolumeKey};
use flashtrack::image::record::Sam;
use flashtrack::io::{FaultEngine, FaultOp, FaultRule, IoEngine, SyncEngine};
use flashtrack::site::{Site, SiteOptions};
use std::sync::Arc;

const T: usize = 16;

fn vols_req(img: &ImageId) -> Request {
    let spec = VolumeSpec {
        pool: PoolId(0),
        capacity: Capacity::Fb { cap: T as u64 * 128, captype: CapType::Blocks },
        sam: Sam::Ese,
    };
    Request::VolumeCreate {
        image: img.clone(),
        spec,
        volumes: vec![(VolumeId(0x1000), String::new()), (VolumeId(0x1001), String::new())],
    }
}

fn image(t: &TestSite) -> ImageId {
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(vols_req(&img)));
    img
}

fn write(site: &Site, img: &ImageId, vol: u16, track: usize, byte: u8) -> std::io::Result<()> {
    let (v, f) = site.open_host(&VolumeKey { image: img.clone(), volume: VolumeId(vol) }).unwrap();
    f.write(&v, (track as u64) * TRACK_BYTES, &vec![byte; TRACK_BYTES as usize], false)
}

fn track(site: &Site, img: &ImageId, vol: u16, track: usize) -> u8 {
    let (v, f) = site.open_host(&VolumeKey { image: img.clone(), volume: VolumeId(vol) }).unwrap();
    let mut buf = vec![0u8; TRACK_BYTES as usize];
    f.read(&v, (track as u64) * TRACK_BYTES, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == buf[0]));
    buf[0]
}

fn state(site: &Site, img: &ImageId) -> Vec<(VolumeId, VolumeId, FlashState)> {
    let Reply::Flash(v) = site_ok(site, Request::FlashList { image: img.clone() }) else { panic!() };
    v.iter().map(|v| (v.record.source, v.record.target, v.record.state)).collect()
}

fn pair() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(0x1000), VolumeId(0x1001))]
}

fn rec() -> FlashOptions {
    FlashOptions { record: true, persist: true, ..FlashOptions::default() }
}

fn copy_all(site: &Site, img: &ImageId) {
    let f = site.flash_of(img).unwrap();
    for r in f.relationships() {
        f.copy_all(&r).unwrap();
    }
}

/// Was: reverseflash stored no checkpoint for the reversed pair; a kill -9 before the next
/// periodic checkpoint brings it back with every target bit set.
#[test]
fn reverse_then_kill9_loses_a_target_write() {
    let mut t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(t.site(), &img, 0x1000, tr, 1).unwrap();
    }
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: rec() }));
    copy_all(t.site(), &img);
    write(t.site(), &img, 0x1001, 2, 5).unwrap(); // target differs at track 2
    items_ok(t.ok(Request::FlashReverse {
        image: img.clone(),
        pairs: pair(),
        options: rec(),
        fast: false,
        seqnum: None,
    }));
    copy_all(t.site(), &img);
    // Now 1001 -> 1000. A host write on the new target (1000), track 7.
    write(t.site(), &img, 0x1000, 7, 9).unwrap();
    assert_eq!(track(t.site(), &img, 0x1000, 7), 9);
    // And one on the new source (1001), track 8: the new target must keep T0 (1) there.
    write(t.site(), &img, 0x1001, 8, 8).unwrap();
    assert_eq!(track(t.site(), &img, 0x1000, 8), 1);
    t.restart(); // kill -9
    let st = state(t.site(), &img);
    eprintln!("after restart: {st:?}");
    let (w7, w8) = (track(t.site(), &img, 0x1000, 7), track(t.site(), &img, 0x1000, 8));
    eprintln!("1000 track 7 = {w7} (host wrote 9), track 8 = {w8} (T0 was 1)");
    assert_eq!(st[0].2, FlashState::Valid);
    assert_eq!(w7, 9, "host write on the reversed target lost after kill -9");
    assert_eq!(w8, 1, "reversed target shows post-T0 source data after kill -9");
}

/// Was: Tgt Failed lived only in memory; after a restart the pair is Valid and the target
/// reads the source's post-T0 data for the track whose COW failed.
#[test]
fn tgt_failed_is_forgotten_by_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultEngine::new(Arc::new(SyncEngine)));
    let io: Arc<dyn IoEngine> = fault.clone();
    let site = Site::open_opts(home.path(), io.clone(), SiteOptions::default()).unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    site_ok(&site, Request::ImageCreate { id: img.clone() });
    items_ok(site_ok(&site, vols_req(&img)));
    for tr in 0..T {
        write(&site, &img, 0x1000, tr, 0x11).unwrap();
    }
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    items_ok(site_ok(&site, Request::FlashCreate { image: img.clone(), pairs: pair(), options }));
    let (tgt, _f) = site.open_host(&VolumeKey { image: img.clone(), volume: VolumeId(0x1001) }).unwrap();
    fault.inject(FaultRule::on_fd(FaultOp::Write, tgt.backing().file_fd().unwrap(), libc::ENOSPC));
    write(&site, &img, 0x1000, 2, 0x22).unwrap();
    assert_eq!(state(&site, &img)[0].2, FlashState::TgtFailed);
    fault.clear_faults();
    drop(tgt);
    drop(_f);
    site.flush_all(); // even a clean shutdown
    drop(site);
    let site = Site::open_opts(home.path(), io, SiteOptions::default()).unwrap();
    let st = state(&site, &img);
    assert_eq!(st[0].2, FlashState::TgtFailed, "Tgt Failed forgotten by the restart");
    // And the target still refuses I/O rather than show post-T0 data.
    let (v, f) = site.open_host(&VolumeKey { image: img.clone(), volume: VolumeId(0x1001) }).unwrap();
    let mut buf = vec![0u8; TRACK_BYTES as usize];
    assert_eq!(f.read(&v, 2 * TRACK_BYTES, &mut buf).unwrap_err().raw_os_error(), Some(libc::EIO));
}

/// Was: Validation Required after power loss was not written to the catalog; the next
/// restart (same boot) makes the pair Valid again.
#[test]
fn validation_required_is_forgotten_by_the_next_restart() {
    let home = tempfile::tempdir().unwrap();
    let io: Arc<dyn IoEngine> = Arc::new(SyncEngine);
    let a = SiteOptions { boot_id: Some("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa".into()) };
    let b = SiteOptions { boot_id: Some("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb".into()) };
    let site = Site::open_opts(home.path(), io.clone(), a).unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    site_ok(&site, Request::ImageCreate { id: img.clone() });
    items_ok(site_ok(&site, vols_req(&img)));
    items_ok(site_ok(&site, Request::FlashCreate { image: img.clone(), pairs: pair(), options: rec() }));
    write(&site, &img, 0x1000, 3, 7).unwrap();
    drop(site); // power loss (new boot id next)
    let site = Site::open_opts(home.path(), io.clone(), b.clone()).unwrap();
    assert_eq!(state(&site, &img)[0].2, FlashState::ValidationRequired);
    site.flush_all(); // clean shutdown
    drop(site);
    let site = Site::open_opts(home.path(), io, b).unwrap();
    let st = state(&site, &img);
    eprintln!("after second restart: {st:?}");
    assert_eq!(st[0].2, FlashState::ValidationRequired, "Validation Required forgotten");
}

fn set_fp(v: Option<&str>) {
    // SAFETY: run these tests with --test-threads=1.
    unsafe {
        match v {
            Some(v) => std::env::set_var("FLASHTRACK_FAILPOINT", v),
            None => std::env::remove_var("FLASHTRACK_FAILPOINT"),
        }
    }
}

fn resync(site: &Site, img: &ImageId, options: FlashOptions) -> Result<(), String> {
    match site.handle(Request::FlashResync { image: img.clone(), pairs: pair(), options, seqnum: None }) {
        Response::Ok(Reply::Items(i)) => i[0].result.clone().map_err(|e| e.to_string()),
        other => Err(format!("{other:?}")),
    }
}

/// Was: a crash between resync's checkpoint store and the copied set's end_epoch:
/// recovery subtracts stale copied bits from the new target bitmap: the target mixes two
/// points in time while Valid. The failed resync also leaves the copied set `pending`.
#[test]
fn fp_resync_crash_after_checkpoint_mixes_points_in_time() {
    if !cfg!(feature = "failpoints") {
        return;
    }
    let mut t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(t.site(), &img, 0x1000, tr, 1).unwrap();
    }
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: options.clone() }));
    write(t.site(), &img, 0x1000, 3, 2).unwrap(); // COW 3
    t.site().checkpoint(); // periodic checkpoint
    write(t.site(), &img, 0x1000, 5, 3).unwrap(); // COW 5, copied set {5}
    set_fp(Some("resync-checkpointed=error")); // state on disk = kill -9 at that instant
    let r = resync(t.site(), &img, options.clone());
    set_fp(None);
    eprintln!("resync with failpoint: {r:?}");
    let r2 = resync(t.site(), &img, options.clone());
    eprintln!("next resync in the same run: {r2:?}");
    t.restart();
    let st = state(t.site(), &img);
    let (a, b) = (track(t.site(), &img, 0x1001, 3), track(t.site(), &img, 0x1001, 5));
    eprintln!("after restart: {st:?}; target track3={a} track5={b}; source 3=2, 5=3; old T0 all 1");
    assert!(r2.is_ok(), "a failed resync wedged the next one: {r2:?}");
    assert_eq!(st[0].2, FlashState::Valid);
    assert!((a, b) == (1, 1) || (a, b) == (2, 3), "target mixes points in time: track3={a} track5={b}");
}

/// Was: a checkpoint that fails once leaves every journal / copied set pending: every
/// later checkpoint and resync fails until restart.
#[test]
fn fp_one_failed_checkpoint_wedges_resync() {
    if !cfg!(feature = "failpoints") {
        return;
    }
    let t = TestSite::new();
    let img = image(&t);
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: rec() }));
    write(t.site(), &img, 0x1000, 3, 2).unwrap();
    set_fp(Some("checkpoint-before-rename=error"));
    let r = t.site().flash_of(&img).unwrap().checkpoint();
    set_fp(None);
    eprintln!("failed checkpoint: {r:?}");
    let r2 = t.site().flash_of(&img).unwrap().checkpoint();
    eprintln!("next checkpoint: {r2:?}");
    let r3 = resync(t.site(), &img, rec());
    eprintln!("resync after it: {r3:?}");
    assert!(r2.is_ok() && r3.is_ok());
}

/// Was: revertflash wrote the pre-images back before the catalog write; when that write
/// fails the command fails but the target data is already reverted, with the bitmaps and
/// the revertible state unchanged. A commitflash then "keeps" data that is neither.
#[test]
fn fp_failed_revert_changes_target_data() {
    if !cfg!(feature = "failpoints") {
        return;
    }
    let t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(t.site(), &img, 0x1000, tr, 1).unwrap();
    }
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: rec() }));
    copy_all(t.site(), &img);
    write(t.site(), &img, 0x1000, 5, 3).unwrap();
    items_ok(t.ok(Request::FlashSetRevertible { image: img.clone(), pairs: pair(), seqnum: None }));
    resync(t.site(), &img, rec()).unwrap();
    copy_all(t.site(), &img);
    assert_eq!(track(t.site(), &img, 0x1001, 5), 3);
    set_fp(Some("catalog-before-rename=error"));
    let r = t.site().handle(Request::FlashRevert { image: img.clone(), sources: vec![VolumeId(0x1000)], seqnum: None });
    set_fp(None);
    eprintln!("revert with failing catalog: {r:?}");
    let after = track(t.site(), &img, 0x1001, 5);
    eprintln!("target track 5 after the failed revert = {after} (was 3)");
    let c = t.site().handle(Request::FlashCommit { image: img.clone(), sources: vec![VolumeId(0x1000)], seqnum: None });
    eprintln!(
        "commit: {c:?}; target 5 = {}, source 5 = {}",
        track(t.site(), &img, 0x1001, 5),
        track(t.site(), &img, 0x1000, 5)
    );
    assert_eq!(after, 3, "a failed revertflash changed the target's data");
}

/// Review finding: a finished copy's fold (`settle`) whose checkpoint fails leaves its copied
/// bits in the epoch the resync's fold flips back into; one round left them there, and a
/// kill -9 after the resync subtracted them from the new increment (a changed track read
/// as copied, the target kept its stale data).
#[test]
fn fp_failed_settle_then_resync_then_kill9_keeps_the_increment() {
    if !cfg!(feature = "failpoints") {
        return;
    }
    let mut t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(t.site(), &img, 0x1000, tr, 1).unwrap();
    }
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: rec() }));
    copy_all(t.site(), &img);
    let f = t.site().flash_of(&img).unwrap();
    let rel = f.relationships().into_iter().next().unwrap();
    set_fp(Some("checkpoint-before-rename=error"));
    let r = f.settle(&rel);
    set_fp(None);
    assert!(r.is_err(), "the failpoint must fail the fold");
    // Track 4 changes after it was copied: the resync must copy it again, crash or not.
    write(t.site(), &img, 0x1000, 4, 7).unwrap();
    resync(t.site(), &img, rec()).unwrap();
    drop((f, rel));
    t.restart(); // kill -9 before any periodic checkpoint
    copy_all(t.site(), &img);
    assert_eq!(track(t.site(), &img, 0x1001, 4), 7, "the increment's track 4 reached the target");
}
