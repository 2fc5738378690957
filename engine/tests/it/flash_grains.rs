//! Sub-track copy-on-write through the whole site: a 4 KiB source write preserves only its
//! grain on the target, the target keeps T0 through kill -9 (with and without a checkpoint
//! in between), the copier finishes a partly preserved track without overwriting its
//! grains, `setflashrevertible` finishes them first, and a resync starts afresh.

use crate::fixture::{TestSite, items_ok, site_ok};
use flashtrack::control::{Reply, Request};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::TRACK_BYTES;
use flashtrack::id::{ImageId, VolumeId, VolumeKey};
use flashtrack::site::Site;

const T: u64 = 16;
const GRAIN: u64 = 4096;

fn image(t: &TestSite) -> ImageId {
    crate::fixture::fb_pair(t, T)
}

fn key(img: &ImageId, vol: u16) -> VolumeKey {
    VolumeKey { image: img.clone(), volume: VolumeId(vol) }
}

fn write(site: &Site, img: &ImageId, vol: u16, offset: u64, data: &[u8]) {
    let (v, f) = site.open_host(&key(img, vol)).unwrap();
    f.write(&v, offset, data, false).unwrap();
}

fn read_all(site: &Site, img: &ImageId, vol: u16) -> Vec<u8> {
    let (v, f) = site.open_host(&key(img, vol)).unwrap();
    let mut buf = vec![0u8; (T * TRACK_BYTES) as usize];
    f.read(&v, 0, &mut buf).unwrap();
    buf
}

fn out_of_sync(site: &Site, img: &ImageId) -> u64 {
    let Reply::Flash(v) = site_ok(site, Request::FlashList { image: img.clone() }) else { panic!() };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].record.state, FlashState::Valid, "a process crash must not invalidate the pair");
    v[0].out_of_sync
}

fn pair() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(0x1000), VolumeId(0x1001))]
}

/// A host write of `len` bytes of `seed` to the source, noted in `source`.
fn host(site: &Site, img: &ImageId, source: &mut [u8], offset: u64, len: u64, seed: u8) {
    let d = vec![seed; len as usize];
    write(site, img, 0x1000, offset, &d);
    source[offset as usize..(offset + len) as usize].copy_from_slice(&d);
}

/// Distinct bytes per grain, so a grain read from the wrong place or offset shows.
fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i / GRAIN) as u8).wrapping_mul(3) | 1).collect()
}

#[test]
fn grains_keep_t0_through_kill9_copy_and_resync() {
    let mut t = TestSite::new();
    let img = image(&t);
    write(t.site(), &img, 0x1000, 0, &pattern(7, T * TRACK_BYTES));
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options: options.clone() }));
    let t0 = read_all(t.site(), &img, 0x1000);
    let mut source = t0.clone();

    // One grain of track 2, two 512-byte pieces of track 5 (one grain each), grain 15 of 9.
    host(t.site(), &img, &mut source, 2 * TRACK_BYTES + 3 * GRAIN, GRAIN, 0xa1);
    host(t.site(), &img, &mut source, 5 * TRACK_BYTES + 512, 512, 0xa2);
    host(t.site(), &img, &mut source, 5 * TRACK_BYTES + 7 * GRAIN + 1024, 512, 0xa3);
    host(t.site(), &img, &mut source, 10 * TRACK_BYTES - GRAIN, GRAIN, 0xa4);
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "target != T0 after grain copies");
    assert_eq!(out_of_sync(t.site(), &img), T, "a track with only some grains on the target is still borrowed");
    let f = t.site().flash_of(&img).unwrap();
    let rel = f.relationships().pop().unwrap();
    assert_eq!(rel.state().grains.len(), 3, "grains preserved on tracks 2, 5 and 9");
    drop((rel, f));

    t.restart(); // kill -9: the grain log alone brings the grains back
    assert_eq!(read_all(t.site(), &img, 0x1000), source, "source after kill -9");
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "target != T0 after kill -9 (grain log lost?)");
    assert_eq!(out_of_sync(t.site(), &img), T);

    // A checkpoint folds the grains into the stored bitmaps; more grains after it.
    t.site().flash_of(&img).unwrap().checkpoint().unwrap();
    host(t.site(), &img, &mut source, 2 * TRACK_BYTES + 4 * GRAIN, 2 * GRAIN, 0xb1);
    t.restart();
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "target != T0 after checkpoint + kill -9");

    // A write over the whole of track 2 preserves its remaining grains: the track is done.
    host(t.site(), &img, &mut source, 2 * TRACK_BYTES, TRACK_BYTES, 0xc1);
    assert_eq!(out_of_sync(t.site(), &img), T - 1);
    assert_eq!(read_all(t.site(), &img, 0x1001), t0);

    // The copier finishes tracks 5 and 9 around their preserved grains.
    let f = t.site().flash_of(&img).unwrap();
    let rel = f.relationships().pop().unwrap();
    f.copy_all(&rel).unwrap();
    assert!(rel.state().grains.is_empty());
    drop((rel, f));
    assert_eq!(out_of_sync(t.site(), &img), 0);
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "the copier overwrote preserved grains");
    t.restart();
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "after the copy and kill -9");

    // A resync is a new point in time: grains of the old one do not come back, even after
    // kill -9 (the grain log is folded before the new bitmaps are stored).
    host(t.site(), &img, &mut source, 12 * TRACK_BYTES + GRAIN, GRAIN, 0xd1);
    items_ok(t.ok(Request::FlashResync { image: img.clone(), pairs: pair(), options: options.clone(), seqnum: None }));
    let t1 = source.clone();
    assert_eq!(read_all(t.site(), &img, 0x1001), t1, "target != source right after the resync");
    t.restart();
    assert_eq!(read_all(t.site(), &img, 0x1001), t1, "resync + kill -9: a grain of the old point in time came back");
    host(t.site(), &img, &mut source, 12 * TRACK_BYTES + 2 * GRAIN, GRAIN, 0xd2);
    assert_eq!(read_all(t.site(), &img, 0x1001), t1);
    t.restart();
    assert_eq!(read_all(t.site(), &img, 0x1001), t1);
}

#[test]
fn setflashrevertible_finishes_partly_preserved_tracks() {
    let t = TestSite::new();
    let img = image(&t);
    write(t.site(), &img, 0x1000, 0, &pattern(9, T * TRACK_BYTES));
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options }));
    let t0 = read_all(t.site(), &img, 0x1000);
    write(t.site(), &img, 0x1000, 4 * TRACK_BYTES + 5 * GRAIN, &[0xee; GRAIN as usize]);
    assert_eq!(out_of_sync(t.site(), &img), T);
    items_ok(t.ok(Request::FlashSetRevertible { image: img.clone(), pairs: pair(), seqnum: None }));
    let f = t.site().flash_of(&img).unwrap();
    let rel = f.relationships().pop().unwrap();
    assert!(rel.state().grains.is_empty(), "setflashrevertible left preserved grains");
    drop((rel, f));
    assert_eq!(out_of_sync(t.site(), &img), T - 1, "track 4 was finished");
    assert_eq!(read_all(t.site(), &img, 0x1001), t0);
    items_ok(t.ok(Request::FlashRevert { image: img.clone(), sources: vec![VolumeId(0x1000)], seqnum: None }));
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "revert: target != T0");
}

/// Block status (`base:allocation`) of a target answers a preserved grain from the target:
/// after the source's grain is trimmed, the target still holds (and reports) T0 data there.
#[test]
fn block_status_of_a_target_sees_preserved_grains() {
    let t = TestSite::new();
    let img = image(&t);
    write(t.site(), &img, 0x1000, 0, &pattern(3, T * TRACK_BYTES));
    let options = FlashOptions { nocopy: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair(), options }));
    let t0 = read_all(t.site(), &img, 0x1000);
    let (src, f) = t.site().open_host(&key(&img, 0x1000)).unwrap();
    // Trim a whole track (copied whole) and one grain of the next (its grain preserved):
    // the source has holes where the target holds T0 data.
    f.trim(&src, 6 * TRACK_BYTES, TRACK_BYTES).unwrap();
    f.trim(&src, 7 * TRACK_BYTES + GRAIN, GRAIN).unwrap();
    let (tgt, f) = t.site().open_host(&key(&img, 0x1001)).unwrap();
    assert_eq!(read_all(t.site(), &img, 0x1001), t0, "target != T0 after source trims");
    let spans = f.allocation(&tgt, 0, T * TRACK_BYTES).unwrap();
    let mut at = 0;
    for s in &spans {
        // A span reported unallocated must read as zeros (clients skip reading it).
        if !s.set {
            let r = &t0[at as usize..(at + s.len) as usize];
            assert!(r.iter().all(|&b| b == 0), "target reported a hole at {at}+{} over T0 data", s.len);
        }
        at += s.len;
    }
    assert!(at > 0);
}
