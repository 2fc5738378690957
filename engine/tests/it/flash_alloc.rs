//! Allocation of FlashCopy targets: a `-sam standard` (thick) volume stays fully allocated
//! whatever is copied onto it (a source's holes included) and whatever a host discards on
//! it; an `-sam ese` (thin) volume stays sparse. Was: the copier copied a source hole by
//! punching the target, so a standard target turned thin after mkflash, resyncflash and
//! reverseflash (lsfbvol showed usedcap 0.0; a later host write could hit ENOSPC).

use crate::fixture::{TestSite, items_ok};
use flashtrack::control::{Capacity, Request, VolumeSpec};
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::geometry::{CapType, TRACK_BYTES};
use flashtrack::id::{ImageId, PoolId, VolumeId, VolumeKey};
use flashtrack::image::record::Sam;
use std::os::unix::fs::MetadataExt;

/// Three copier runs of 16 tracks.
const TRACKS: u64 = 48;
const SIZE: u64 = TRACKS * TRACK_BYTES;
const SRC: u16 = 0x1000;
const TGT: u16 = 0x1001;

/// Image with FB volumes 1000 (`src`) and 1001 (`tgt`) of [`TRACKS`] tracks.
fn pair_of(t: &TestSite, src: Sam, tgt: Sam) -> ImageId {
    let img = t.image("IBM.2107-75FA120");
    for (vol, sam) in [(SRC, src), (TGT, tgt)] {
        let spec =
            VolumeSpec { pool: PoolId(0), capacity: Capacity::Fb { cap: TRACKS * 128, captype: CapType::Blocks }, sam };
        items_ok(t.ok(Request::VolumeCreate {
            image: img.clone(),
            spec,
            volumes: vec![(VolumeId(vol), String::new())],
        }));
    }
    img
}

fn key(img: &ImageId, vol: u16) -> VolumeKey {
    VolumeKey { image: img.clone(), volume: VolumeId(vol) }
}

/// Bytes the volume's file holds on disk (st_blocks x 512).
fn allocated(t: &TestSite, img: &ImageId, vol: u16) -> u64 {
    std::fs::metadata(t.volume_path(img, vol)).unwrap().blocks() * 512
}

fn write_track(t: &TestSite, img: &ImageId, vol: u16, track: u64, byte: u8) {
    let (v, f) = t.site().open_host(&key(img, vol)).unwrap();
    f.write(&v, track * TRACK_BYTES, &vec![byte; TRACK_BYTES as usize], false).unwrap();
}

fn trim_tracks(t: &TestSite, img: &ImageId, vol: u16, tracks: std::ops::Range<u64>) {
    let (v, f) = t.site().open_host(&key(img, vol)).unwrap();
    f.trim(&v, tracks.start * TRACK_BYTES, (tracks.end - tracks.start) * TRACK_BYTES).unwrap();
}

/// The volume as a host reads it (through the intercept).
fn read(t: &TestSite, img: &ImageId, vol: u16) -> Vec<u8> {
    let (v, f) = t.site().open_host(&key(img, vol)).unwrap();
    let mut buf = vec![0u8; SIZE as usize];
    f.read(&v, 0, &mut buf).unwrap();
    buf
}

/// The volume's file as it is on disk (what the target holds once every track is copied).
fn file(t: &TestSite, img: &ImageId, vol: u16) -> Vec<u8> {
    std::fs::read(t.volume_path(img, vol)).unwrap()
}

fn copy_all(t: &TestSite, img: &ImageId) {
    let f = t.site().flash_of(img).unwrap();
    for r in f.relationships() {
        f.copy_all(&r).unwrap();
    }
}

fn options() -> FlashOptions {
    FlashOptions { record: true, persist: true, ..FlashOptions::default() }
}

fn pairs() -> Vec<(VolumeId, VolumeId)> {
    vec![(VolumeId(SRC), VolumeId(TGT))]
}

/// Target `vol` is fully allocated and holds exactly what its source `from` reads.
fn assert_thick_copy(t: &TestSite, img: &ImageId, vol: u16, from: u16, step: &str) {
    let alloc = allocated(t, img, vol);
    assert!(alloc >= SIZE, "{step}: standard volume {vol:04X} holds {alloc} of {SIZE} bytes (it turned thin)");
    let want = read(t, img, from);
    assert!(file(t, img, vol) == want, "{step}: {vol:04X}'s file differs from {from:04X}");
    assert!(read(t, img, vol) == want, "{step}: {vol:04X} reads differ from {from:04X}");
}

#[test]
fn standard_target_stays_allocated_through_mkflash_resync_and_reverse() {
    for src_sam in [Sam::Standard, Sam::Ese] {
        let t = TestSite::new();
        let img = pair_of(&t, src_sam, Sam::Standard);
        assert!(allocated(&t, &img, TGT) >= SIZE, "a new standard volume is allocated up front");
        // Data on a few tracks; the rest of the source reads zero (holes on disk: never
        // written, or fallocated but unwritten on a standard volume). Tracks 16..32, one
        // copier run, hold no data at all.
        for (track, byte) in [(0, 1), (5, 2), (6, 3), (40, 4)] {
            write_track(&t, &img, SRC, track, byte);
        }
        // Old data on the target where the source has holes: the copy must zero it.
        for track in [1, 2, 20] {
            write_track(&t, &img, TGT, track, 0xEE);
        }

        items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pairs(), options: options() }));
        copy_all(&t, &img);
        assert_thick_copy(&t, &img, TGT, SRC, &format!("mkflash ({src_sam:?} source)"));

        // A host discard on a standard volume reads back zero and keeps the space.
        trim_tracks(&t, &img, TGT, 8..12);
        assert!(read(&t, &img, TGT)[(8 * TRACK_BYTES) as usize..(12 * TRACK_BYTES) as usize].iter().all(|&b| b == 0));
        assert!(allocated(&t, &img, TGT) >= SIZE, "a TRIM on a standard target deallocated it");

        // Increment: source tracks emptied (tracks 32..48 a hole again), a new one written,
        // a target track in the empty run written over.
        trim_tracks(&t, &img, SRC, 5..6);
        trim_tracks(&t, &img, SRC, 40..41);
        write_track(&t, &img, SRC, 9, 5);
        write_track(&t, &img, TGT, 31, 6);
        items_ok(t.ok(Request::FlashResync { image: img.clone(), pairs: pairs(), options: options(), seqnum: None }));
        copy_all(&t, &img);
        assert_thick_copy(&t, &img, TGT, SRC, &format!("resyncflash ({src_sam:?} source)"));

        // Reverse: the target's image goes back to the source, with holes where the target
        // reads zero. A standard source stays allocated too.
        trim_tracks(&t, &img, TGT, 0..1);
        trim_tracks(&t, &img, TGT, 32..TRACKS);
        write_track(&t, &img, TGT, 3, 7);
        items_ok(t.ok(Request::FlashReverse {
            image: img.clone(),
            pairs: pairs(),
            options: options(),
            fast: false,
            seqnum: None,
        }));
        copy_all(&t, &img);
        assert!(read(&t, &img, SRC) == read(&t, &img, TGT), "reverseflash: the source holds the target's image");
        assert!(allocated(&t, &img, TGT) >= SIZE, "reverseflash: standard volume 1001 turned thin");
        if src_sam == Sam::Standard {
            assert_thick_copy(&t, &img, SRC, TGT, "reverseflash");
        }
    }
}

#[test]
fn standard_volume_stays_allocated_after_a_restart() {
    // The runtime volume learns its allocation method from the catalog at open, not only
    // at mkfbvol.
    let mut t = TestSite::new();
    let img = pair_of(&t, Sam::Standard, Sam::Standard);
    write_track(&t, &img, SRC, 4, 9);
    write_track(&t, &img, TGT, 4, 9);
    t.close();
    // A standard target thinned by an earlier version (holes punched around its data) is
    // allocated again at open, its data untouched.
    let thinned = std::fs::OpenOptions::new().write(true).open(t.volume_path(&img, TGT)).unwrap();
    let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&thinned, punch, 8 * TRACK_BYTES, SIZE - 8 * TRACK_BYTES).unwrap();
    drop(thinned);
    assert!(allocated(&t, &img, TGT) < SIZE);
    t.restart();
    assert_thick_copy(&t, &img, TGT, SRC, "open after a thinning");
    items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pairs(), options: options() }));
    copy_all(&t, &img);
    assert_thick_copy(&t, &img, TGT, SRC, "mkflash after a restart");
    trim_tracks(&t, &img, SRC, 0..TRACKS);
    assert!(allocated(&t, &img, SRC) >= SIZE, "a TRIM after a restart deallocated a standard volume");
}

#[test]
fn ese_target_stays_sparse() {
    for src_sam in [Sam::Standard, Sam::Ese] {
        let t = TestSite::new();
        let img = pair_of(&t, src_sam, Sam::Ese);
        assert_eq!(allocated(&t, &img, TGT), 0, "a new ese volume holds no blocks");
        for (track, byte) in [(0, 1), (7, 2)] {
            write_track(&t, &img, SRC, track, byte);
        }
        write_track(&t, &img, TGT, 20, 0xEE);
        items_ok(t.ok(Request::FlashCreate { image: img.clone(), pairs: pairs(), options: options() }));
        copy_all(&t, &img);
        assert!(file(&t, &img, TGT) == read(&t, &img, SRC), "mkflash: the ese target differs from its source");
        // The copier copies runs of 16 tracks: the run with data is copied whole, the two
        // runs without stay holes.
        let alloc = allocated(&t, &img, TGT);
        assert!(alloc <= 16 * TRACK_BYTES, "mkflash: ese target holds {alloc} bytes for one run of data");

        // The copy of a source hole (track 7, alone in the increment) and a host TRIM
        // (track 0) each free a track of an ese target.
        trim_tracks(&t, &img, SRC, 7..8);
        items_ok(t.ok(Request::FlashResync { image: img.clone(), pairs: pairs(), options: options(), seqnum: None }));
        copy_all(&t, &img);
        assert!(file(&t, &img, TGT) == read(&t, &img, SRC), "resyncflash: the ese target differs from its source");
        assert_eq!(allocated(&t, &img, TGT), alloc - TRACK_BYTES, "resyncflash: a source hole filled an ese target");
        trim_tracks(&t, &img, TGT, 0..1);
        assert_eq!(allocated(&t, &img, TGT), alloc - 2 * TRACK_BYTES, "a TRIM kept an ese target's blocks");
    }
}
