//! Revertible relationships: while revertible the source refuses writes, a resync's
//! increment overwrites the target, and revertflash brings the target back to the last
//! consistent point (also across a restart); commitflash keeps the new data.

use crate::fixture::{TestSite, items_ok};
use flashtrack::control::{Reply, Request};
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::geometry::TRACK_BYTES;
use flashtrack::id::{ImageId, VolumeId, VolumeKey};

const T: usize = 16;

fn image(t: &TestSite) -> ImageId {
    crate::fixture::fb_pair(t, T as u64)
}

fn write(t: &TestSite, img: &ImageId, vol: u16, track: usize, byte: u8) -> std::io::Result<()> {
    let (v, f) = t.site().open_host(&VolumeKey { image: img.clone(), volume: VolumeId(vol) }).unwrap();
    f.write(&v, (track as u64) * TRACK_BYTES, &vec![byte; TRACK_BYTES as usize], false)
}

fn read(t: &TestSite, img: &ImageId, vol: u16) -> Vec<u8> {
    let (v, f) = t.site().open_host(&VolumeKey { image: img.clone(), volume: VolumeId(vol) }).unwrap();
    let mut buf = vec![0u8; T * TRACK_BYTES as usize];
    f.read(&v, 0, &mut buf).unwrap();
    buf
}

fn copy_all(t: &TestSite, img: &ImageId) {
    let f = t.site().flash_of(img).unwrap();
    for r in f.relationships() {
        f.copy_all(&r).unwrap();
    }
}

#[test]
fn revert_restores_the_last_consistent_point() {
    let mut t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(&t, &img, 0x1000, tr, 1).unwrap();
    }
    let pair = vec![(VolumeId(0x1000), VolumeId(0x1001))];
    let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair.clone(), options: options.clone() }));
    copy_all(&t, &img);
    // A change, then the increment that brings it to the target: consistent point = all 1s
    // except track 3 = 2.
    write(&t, &img, 0x1000, 3, 2).unwrap();
    items_ok(t.ok(Request::FlashResync {
        image: img.clone(),
        pairs: pair.clone(),
        options: options.clone(),
        seqnum: None,
    }));
    copy_all(&t, &img);
    let consistent = read(&t, &img, 0x1001);
    // More changes on the source, then revertible, then the next increment starts.
    write(&t, &img, 0x1000, 5, 3).unwrap();
    write(&t, &img, 0x1000, 9, 3).unwrap();
    items_ok(t.ok(Request::FlashSetRevertible { image: img.clone(), pairs: pair.clone(), seqnum: None }));
    let e = write(&t, &img, 0x1000, 1, 9).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "the source of a revertible pair refuses writes");
    items_ok(t.ok(Request::FlashResync {
        image: img.clone(),
        pairs: pair.clone(),
        options: options.clone(),
        seqnum: None,
    }));
    copy_all(&t, &img);
    assert_ne!(read(&t, &img, 0x1001), consistent, "the increment changed the target");
    // A host write on the target while revertible is undone too.
    write(&t, &img, 0x1001, 12, 7).unwrap();
    // A restart in the middle keeps the pre-images.
    t.restart();
    items_ok(t.ok(Request::FlashRevert { image: img.clone(), sources: vec![VolumeId(0x1000)], seqnum: None }));
    assert!(read(&t, &img, 0x1001) == consistent, "revert did not restore the last consistent point");
    let Reply::Flash(v) = t.ok(Request::FlashList { image: img.clone() }) else { panic!() };
    assert!(!v[0].record.revertible);
    // Writes to the source are allowed again, and the next increment brings everything.
    write(&t, &img, 0x1000, 1, 4).unwrap();
    items_ok(t.ok(Request::FlashResync {
        image: img.clone(),
        pairs: pair.clone(),
        options: options.clone(),
        seqnum: None,
    }));
    copy_all(&t, &img);
    assert!(read(&t, &img, 0x1001) == read(&t, &img, 0x1000));
}

#[test]
fn commit_keeps_the_new_data() {
    let t = TestSite::new();
    let img = image(&t);
    let pair = vec![(VolumeId(0x1000), VolumeId(0x1001))];
    let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair.clone(), options: options.clone() }));
    copy_all(&t, &img);
    write(&t, &img, 0x1000, 2, 5).unwrap();
    items_ok(t.ok(Request::FlashSetRevertible { image: img.clone(), pairs: pair.clone(), seqnum: None }));
    items_ok(t.ok(Request::FlashResync { image: img.clone(), pairs: pair.clone(), options, seqnum: None }));
    copy_all(&t, &img);
    items_ok(t.ok(Request::FlashCommit { image: img.clone(), sources: vec![VolumeId(0x1000)], seqnum: None }));
    assert!(read(&t, &img, 0x1001) == read(&t, &img, 0x1000));
    write(&t, &img, 0x1000, 2, 6).unwrap();
}

/// `reverseflash -fast` before the background copy finished: the source gets back exactly
/// the target's image (T0 plus the target's own writes), and both volumes stay readable.
#[test]
fn fast_reverse_before_the_copy_finished_restores_the_target_image() {
    let t = TestSite::new();
    let img = image(&t);
    for tr in 0..T {
        write(&t, &img, 0x1000, tr, 1).unwrap();
    }
    let pair = vec![(VolumeId(0x1000), VolumeId(0x1001))];
    let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pair.clone(), options: options.clone() }));
    // No copier runs here: every track but the ones below stays uncopied.
    write(&t, &img, 0x1000, 2, 7).unwrap(); // copy-on-write of track 2
    write(&t, &img, 0x1001, 6, 8).unwrap(); // a target write (fills track 6 first)
    let mut image_t = read(&t, &img, 0x1001);
    assert!(image_t[..2 * TRACK_BYTES as usize].iter().all(|&b| b == 1));
    assert!(image_t[6 * TRACK_BYTES as usize..7 * TRACK_BYTES as usize].iter().all(|&b| b == 8));
    items_ok(t.ok(Request::FlashReverse {
        image: img.clone(),
        pairs: pair.clone(),
        options: options.clone(),
        fast: true,
        seqnum: None,
    }));
    copy_all(&t, &img);
    assert!(read(&t, &img, 0x1000) == image_t, "the source now holds the target's image");
    image_t = read(&t, &img, 0x1001);
    assert!(read(&t, &img, 0x1000) == image_t, "and the old target still reads it too");
    let f = t.site().flash_of(&img).unwrap();
    let ids: Vec<_> = f.relationships().iter().map(|r| r.ids()).collect();
    assert_eq!(ids, vec![(VolumeId(0x1001), VolumeId(0x1000))], "the pair now runs target -> source");
}
