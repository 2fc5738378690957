//! Site, images, pools, LCUs and volumes through the typed control API: the rules, and
//! "bad input changes nothing" (invariant 4) checked on the catalog bytes.

use crate::fixture::{TestSite, ckd, fb, items_ok};
use flashtrack::control::{Capacity, Reply, Request, Response, VolumeSpec};
use flashtrack::error::ErrorKind;
use flashtrack::geometry::CapType;
use flashtrack::id::{LssId, PoolId, VolumeId};
use flashtrack::image::record::{LcuType, Sam, StorageType};

#[test]
fn images_of_both_machine_types_with_default_pools() {
    let t = TestSite::new();
    t.image("IBM.2107-75FA120");
    t.image("IBM.1750-68FA120");
    let Reply::Images(images) = t.ok(Request::ImageList) else { panic!() };
    assert_eq!(images.len(), 2);
    for i in &images {
        assert_eq!(i.wwnn.len(), 16);
    }
    let Reply::Pools(pools) = t.ok(Request::PoolList { image: t.id("IBM.2107-75FA120") }) else { panic!() };
    let ids: Vec<_> = pools.iter().map(|p| (p.record.id, p.record.stgtype, p.record.rankgrp)).collect();
    assert_eq!(
        ids,
        vec![
            (PoolId(0), StorageType::Fb, 0),
            (PoolId(1), StorageType::Fb, 1),
            (PoolId(2), StorageType::Ckd, 0),
            (PoolId(3), StorageType::Ckd, 1)
        ]
    );
    assert_eq!(t.err(Request::ImageCreate { id: t.id("IBM.2107-75FA120") }), ErrorKind::ImageExists);
}

#[test]
fn fb_and_ckd_volumes_and_their_rules() {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 1, &[0x1000, 0x1001])));
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    assert_eq!(vols.len(), 2);
    assert_eq!(vols[0].record.geometry.tracks(), 16_384);
    // ese stays sparse.
    assert!(vols[0].allocated_bytes < 1 << 20, "ese volume allocated {}", vols[0].allocated_bytes);

    t.unchanged(&img, |t| {
        // Duplicate, capacity 0, wrong pool type, odd LSS in an even pool, unknown pool.
        assert_eq!(t.item_err(fb(&img, 0, 1, &[0x1000])), ErrorKind::VolumeExists);
        assert_eq!(t.item_err(fb(&img, 0, 0, &[0x1002])), ErrorKind::CapacityZero);
        assert_eq!(t.item_err(fb(&img, 2, 1, &[0x1002])), ErrorKind::PoolTypeMismatch);
        assert_eq!(t.item_err(fb(&img, 0, 1, &[0x1102])), ErrorKind::PoolRankGroupMismatch);
        assert_eq!(t.item_err(fb(&img, 8, 1, &[0x1002])), ErrorKind::PoolNotFound);
        // Standard volume larger than the pool's free space.
        let spec = VolumeSpec {
            pool: PoolId(0),
            capacity: Capacity::Fb { cap: 1 << 20, captype: CapType::Ds },
            sam: Sam::Standard,
        };
        let req = Request::VolumeCreate { image: img.clone(), spec, volumes: vec![(VolumeId(0x1002), String::new())] };
        assert_eq!(t.item_err(req), ErrorKind::CapacityTooLarge);
        // CKD needs its LCU; FB and CKD never share an address group.
        assert_eq!(t.item_err(ckd(&img, 2, 10017, &[0x2000])), ErrorKind::LcuNotFound);
        let lcu = Request::LcuCreate {
            image: img.clone(),
            first: LssId(0x10),
            qty: 1,
            ssid: 0x1010,
            lcutype: LcuType::T3990_6,
        };
        assert_eq!(t.item_err(lcu), ErrorKind::AddressGroupType);
        assert_eq!(
            t.item_err(Request::VolumeRemove {
                image: img.clone(),
                volumes: vec![VolumeId(0x1500)],
                safe: false,
                stgtype: None
            }),
            ErrorKind::VolumeNotFound
        );
    });

    let lcu =
        Request::LcuCreate { image: img.clone(), first: LssId(0x20), qty: 2, ssid: 0x2000, lcutype: LcuType::T3990_6 };
    items_ok(t.ok(lcu));
    items_ok(t.ok(ckd(&img, 2, 10017, &[0x2000])));
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    let v = vols.iter().find(|v| v.record.id == VolumeId(0x2000)).unwrap();
    assert_eq!(v.record.geometry.tracks(), 150_255);
    t.unchanged(&img, |t| {
        assert_eq!(t.item_err(fb(&img, 0, 1, &[0x2100])), ErrorKind::AddressGroupType);
        assert_eq!(
            t.item_err(Request::LcuRemove { image: img.clone(), lcus: vec![LssId(0x20)] }),
            ErrorKind::LcuHasVolumes
        );
    });
    let Reply::Lss(lss) = t.ok(Request::LssList { image: img.clone() }) else { panic!() };
    assert_eq!(lss.iter().map(|l| (l.id.0, l.confgvols)).collect::<Vec<_>>(), vec![(0x10, 2), (0x20, 1), (0x21, 0)]);

    items_ok(t.ok(Request::VolumeRemove {
        image: img.clone(),
        volumes: vec![VolumeId(0x1000), VolumeId(0x2000)],
        safe: false,
        stgtype: None,
    }));
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    assert_eq!(vols.len(), 1);
    // Only the remaining volume's file is left in the pools.
    assert_eq!(t.volume_files(&img), 1);
}

#[test]
fn lss_ranges_follow_the_machine_type() {
    let t = TestSite::new();
    let ds6k = t.image("IBM.1750-68FA120");
    t.unchanged(&ds6k, |t| {
        assert_eq!(t.item_err(fb(&ds6k, 0, 1, &[0x2000])), ErrorKind::LssOutOfRange);
        let lcu = Request::LcuCreate {
            image: ds6k.clone(),
            first: LssId(0x1F),
            qty: 2,
            ssid: 0x1F00,
            lcutype: LcuType::T3990_6,
        };
        let Reply::Items(items) = t.ok(lcu.clone()) else { panic!() };
        // 1F is fine, 20 is out of range: each item on its own.
        assert!(items[0].result.is_ok());
        assert_eq!(items[1].result.as_ref().unwrap_err().kind, ErrorKind::LssOutOfRange);
        let Reply::Items(_) = t.ok(Request::LcuRemove { image: ds6k.clone(), lcus: vec![LssId(0x1F)] }) else {
            panic!()
        };
    });
    items_ok(t.ok(fb(&ds6k, 0, 1, &[0x1E00])));
    let ds8k = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&ds8k, 0, 1, &[0xFE00])));
    assert_eq!(t.item_err(fb(&ds8k, 1, 1, &[0xFF01])), ErrorKind::LssOutOfRange);
}

#[test]
fn grow_only_and_rename() {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 2, &[0x1000])));
    let change = |cap| Request::VolumeChange {
        image: img.clone(),
        volume: VolumeId(0x1000),
        name: Some("renamed".into()),
        grow: Some(Capacity::Fb { cap, captype: CapType::Ds }),
        stgtype: None,
    };
    t.unchanged(&img, |t| assert_eq!(t.err(change(1)), ErrorKind::ShrinkNotAllowed));
    t.ok(change(3));
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    assert_eq!(vols[0].record.name, "renamed");
    assert_eq!(vols[0].record.geometry.tracks(), 3 * 16_384);
    assert_eq!(std::fs::metadata(t.volume_path(&img, 0x1000)).unwrap().len(), 3 << 30);
}

#[test]
fn pools_create_list_remove() {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    let dir = tempfile::tempdir().unwrap();
    let req = |rg| Request::PoolCreate {
        image: img.clone(),
        name: "user".into(),
        rankgrp: rg,
        stgtype: StorageType::Fb,
        path: Some(dir.path().into()),
    };
    let Reply::Items(items) = t.ok(req(0)) else { panic!() };
    assert_eq!(items[0].object, "P4");
    t.unchanged(&img, |t| {
        assert_eq!(t.err(req(1)), ErrorKind::PoolPathInvalid);
        let missing = Request::PoolCreate {
            image: img.clone(),
            name: "x".into(),
            rankgrp: 1,
            stgtype: StorageType::Fb,
            path: Some("/nonexistent/dir".into()),
        };
        assert_eq!(t.err(missing), ErrorKind::PoolPathInvalid);
    });
    items_ok(t.ok(fb(&img, 4, 1, &[0x1000])));
    assert_eq!(t.err(Request::PoolRemove { image: img.clone(), pool: PoolId(4) }), ErrorKind::PoolHasVolumes);
    assert_eq!(t.err(Request::ImageRemove { id: img.clone() }), ErrorKind::ImageHasVolumes);
    items_ok(t.ok(Request::VolumeRemove {
        image: img.clone(),
        volumes: vec![VolumeId(0x1000)],
        safe: false,
        stgtype: None,
    }));
    t.ok(Request::PoolRemove { image: img.clone(), pool: PoolId(4) });
    // A user's directory is never removed.
    assert!(dir.path().exists());
    t.ok(Request::ImageRemove { id: img.clone() });
    assert!(!t.home().join("IBM.2107-75FA120").exists());
}

#[test]
fn restart_keeps_everything_and_removes_orphans() {
    let mut t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 1, &[0x1000])));
    // A crash between creating a backing file and committing the catalog leaves an orphan.
    let orphan = t.home().join("IBM.2107-75FA120/pools/P0/IBM.2107-75FA120_1001.vol");
    std::fs::write(&orphan, b"x").unwrap();
    // And a half-made image.
    std::fs::create_dir_all(t.home().join(".IBM.2107-75FA150.tmp/pools")).unwrap();
    t.restart();
    assert!(!orphan.exists());
    assert!(!t.home().join(".IBM.2107-75FA150.tmp").exists());
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    assert_eq!(vols.len(), 1);
}

#[test]
fn one_writer_per_home() {
    let t = TestSite::new();
    let second = flashtrack::site::Site::open(t.home(), t.io());
    assert_eq!(second.unwrap_err().kind, ErrorKind::HomeLocked);
}

#[test]
fn a_damaged_catalog_is_reported_and_left_alone() {
    let mut t = TestSite::new();
    t.image("IBM.2107-75FA120");
    let home = t.home().to_path_buf();
    let io = t.io();
    t.close();
    let cat = home.join("IBM.2107-75FA120/catalog");
    let mut bytes = std::fs::read(&cat).unwrap();
    let n = bytes.len() - 5;
    bytes[n] ^= 1;
    std::fs::write(&cat, &bytes).unwrap();
    let err = flashtrack::site::Site::open(&home, io).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Corrupt);
    assert_eq!(std::fs::read(&cat).unwrap(), bytes);
}

#[test]
fn format_fixture_from_testdata_opens() {
    // testdata/formats/site-v1 was written by this build's format 1 and committed; it must
    // keep opening (copied, since opening takes a lock and may clean orphans).
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/formats/site-v1");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        write_fixture(&src);
    }
    let home = tempfile::tempdir().unwrap();
    crate::fixture::copy_dir(&src, home.path());
    let site = flashtrack::site::Site::open(home.path(), crate::fixture::io()).unwrap();
    let Response::Ok(Reply::Volumes(vols)) =
        site.handle(Request::VolumeList { image: "IBM.2107-75FA120".parse().unwrap() })
    else {
        panic!()
    };
    assert_eq!(vols.iter().map(|v| v.record.id.to_string()).collect::<Vec<_>>(), vec!["1000", "2000"]);
    let vol = site.volume(&"IBM.2107-75FA120/1000".parse().unwrap()).unwrap();
    let mut buf = [0u8; 4096];
    vol.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
}

/// Writes the committed format-1 fixture (`UPDATE_FIXTURES=1`): a DS8000 image with a
/// 64 KiB FB volume and a one-cylinder CKD volume, each with a little data.
fn write_fixture(dst: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst).unwrap();
    let site = flashtrack::site::Site::open(dst, crate::fixture::io()).unwrap();
    let img: flashtrack::id::ImageId = "IBM.2107-75FA120".parse().unwrap();
    assert!(matches!(site.handle(Request::ImageCreate { id: img.clone() }), Response::Ok(_)));
    let spec =
        VolumeSpec { pool: PoolId(0), capacity: Capacity::Fb { cap: 128, captype: CapType::Blocks }, sam: Sam::Ese };
    let r = site.handle(Request::VolumeCreate {
        image: img.clone(),
        spec,
        volumes: vec![(VolumeId(0x1000), "fixture_fb".into())],
    });
    items_ok(match r {
        Response::Ok(r) => r,
        Response::Err(e) => panic!("{e}"),
    });
    let lcu =
        Request::LcuCreate { image: img.clone(), first: LssId(0x20), qty: 1, ssid: 0x2000, lcutype: LcuType::T3990_6 };
    assert!(matches!(site.handle(lcu), Response::Ok(_)));
    let r = site.handle(ckd(&img, 2, 1, &[0x2000]));
    items_ok(match r {
        Response::Ok(r) => r,
        Response::Err(e) => panic!("{e}"),
    });
    let key = |v: u16| flashtrack::id::VolumeKey { image: img.clone(), volume: VolumeId(v) };
    site.volume(&key(0x1000)).unwrap().write(0, &[0x5a; 4096], true).unwrap();
    site.volume(&key(0x2000)).unwrap().write(65536, &[0xc3; 4096], true).unwrap();
    drop(site);
    let _ = std::fs::remove_file(dst.join(flashtrack::site::LOCK_FILE));
}

#[test]
fn an_uncommitted_grow_is_undone_at_open() {
    let mut t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 1, &[0x1000])));
    // A crash after growing the file and before the catalog commit.
    let path = t.volume_path(&img, 0x1000);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(2 << 30).unwrap();
    t.restart();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 30);
    let Reply::Volumes(vols) = t.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
    assert_eq!(vols[0].record.geometry.tracks(), 16_384);
}

#[test]
fn a_pool_cannot_alias_another_pools_directory() {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 1, &[0x1000])));
    let p0 = t.home().join("IBM.2107-75FA120/pools/P0");
    t.unchanged(&img, |t| {
        let req = Request::PoolCreate {
            image: img.clone(),
            name: "alias".into(),
            rankgrp: 0,
            stgtype: StorageType::Fb,
            path: Some(p0.clone()),
        };
        assert_eq!(t.err(req), ErrorKind::PoolPathInvalid);
    });
}

#[test]
fn image_remove_refuses_strangers_and_changes_nothing() {
    let mut t = TestSite::new();
    let img = t.image("IBM.1750-68FA120");
    let stray = t.home().join("IBM.1750-68FA120/pools/P0/notes.txt");
    std::fs::write(&stray, b"mine").unwrap();
    t.unchanged(&img, |t| assert_eq!(t.err(Request::ImageRemove { id: img.clone() }), ErrorKind::InvalidArgument));
    t.restart();
    assert!(stray.exists());
    std::fs::remove_file(&stray).unwrap();
    t.ok(Request::ImageRemove { id: img.clone() });
    assert!(!t.home().join("IBM.1750-68FA120").exists());
    // A removal cut short by a crash is finished at the next start.
    let img2 = t.image("IBM.2107-75FA150");
    std::fs::rename(t.home().join("IBM.2107-75FA150"), t.home().join(".IBM.2107-75FA150.removing")).unwrap();
    t.restart();
    assert!(!t.home().join(".IBM.2107-75FA150.removing").exists());
    assert_eq!(t.err(Request::PoolList { image: img2 }), ErrorKind::ImageNotFound);
}
