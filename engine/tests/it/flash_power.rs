//! Power loss through the fault-injecting IoEngine: writes not made durable are dropped
//! (data files and the activity log), the intent bitsets are wiped (worst case), and the
//! site restarts under another boot ID. Invariant 3 after a power loss: every track written
//! by an acknowledged FUA write is marked changed, and nothing is marked outside the
//! activity log's extents of the written tracks; the relationship is `Validation Required`
//! (COW ordering cannot be proven after a power loss), never silently wrong.

use crate::fixture::{items_ok, site_ok as ok};
use flashtrack::bitmap::TrackBitmap;
use flashtrack::bitmap::activity::EXTENT_TRACKS;
use flashtrack::bitmap::journal::check_marked;
use flashtrack::control::{Reply, Request};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::TRACK_BYTES;
use flashtrack::id::{ImageId, VolumeId, VolumeKey};
use flashtrack::io::{FaultEngine, IoEngine, SyncEngine};
use flashtrack::site::{Site, SiteOptions};
use std::sync::Arc;

#[test]
fn power_loss_keeps_flushed_changes_and_invalidates_the_pair() {
    let home = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultEngine::with_power_loss(Arc::new(SyncEngine)));
    let io: Arc<dyn IoEngine> = fault.clone();
    let site = Site::open_opts(
        home.path(),
        io.clone(),
        SiteOptions { boot_id: Some("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa".into()) },
    )
    .unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    ok(&site, Request::ImageCreate { id: img.clone() });
    // 4096 tracks = 4 activity-log extents.
    let spec = flashtrack::control::VolumeSpec {
        pool: flashtrack::id::PoolId(0),
        capacity: flashtrack::control::Capacity::Fb { cap: 4096 * 128, captype: flashtrack::geometry::CapType::Blocks },
        sam: flashtrack::image::record::Sam::Ese,
    };
    items_ok(ok(
        &site,
        Request::VolumeCreate {
            image: img.clone(),
            spec,
            volumes: vec![(VolumeId(0x1000), String::new()), (VolumeId(0x1001), String::new())],
        },
    ));
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    items_ok(ok(
        &site,
        Request::FlashCreate { image: img.clone(), pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))], options },
    ));
    let (vol, flash) = site.open_host(&VolumeKey { image: img.clone(), volume: VolumeId(0x1000) }).unwrap();
    let mut written = TrackBitmap::new();
    let mut durable = TrackBitmap::new();
    for (n, t) in [5u32, 6, 900, 1500, 1501, 3000].into_iter().enumerate() {
        let fua = n % 2 == 0;
        flash.write(&vol, t as u64 * TRACK_BYTES, &[0x5a; 4096], fua).unwrap();
        written.insert_range(t..t + 1);
        if fua {
            durable.insert_range(t..t + 1);
        }
    }
    // The lights go out: unsynced writes vanish, the mapped intent bits too (worst case).
    fault.power_loss().unwrap();
    drop(vol);
    drop(flash);
    drop(site);
    for e in std::fs::read_dir(home.path().join("IBM.2107-75FA120/flash")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "intent") {
            let len = std::fs::metadata(e.path()).unwrap().len();
            let mut data = std::fs::read(e.path()).unwrap();
            data[4096..].fill(0);
            assert_eq!(data.len() as u64, len);
            std::fs::write(e.path(), data).unwrap();
        }
    }
    fault.power_on();

    let site =
        Site::open_opts(home.path(), io, SiteOptions { boot_id: Some("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb".into()) })
            .unwrap();
    let flash = site.flash_of(&img).unwrap();
    let rels = flash.relationships();
    assert_eq!(rels.len(), 1);
    let st = rels[0].state();
    assert_eq!(st.record.state, FlashState::ValidationRequired);
    // Allowed extra: whole activity-log extents of written tracks.
    let mut allowed = TrackBitmap::new();
    for t in written.iter() {
        let e = t.0 / EXTENT_TRACKS * EXTENT_TRACKS;
        allowed.insert_range(e..e + EXTENT_TRACKS);
    }
    check_marked(&st.src_changes, &durable, &allowed).unwrap_or_else(|v| panic!("invariant 3 after power loss: {v}"));
}

/// The same for a PPRC primary's out-of-sync set: writes made while the pair was suspended
/// and flushed (FUA) are out of sync after the power comes back, and nothing is in it beyond
/// the activity-log extents of written tracks and what was out of sync before.
#[test]
fn power_loss_keeps_a_pprc_primarys_flushed_writes_out_of_sync() {
    let home = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultEngine::with_power_loss(Arc::new(SyncEngine)));
    let io: Arc<dyn IoEngine> = fault.clone();
    let boot = |b: &str| SiteOptions { boot_id: Some(b.repeat(8) + "-aaaa-aaaa-aaaa-aaaaaaaaaaaa") };
    let site = Site::open_opts(home.path(), io.clone(), boot("a")).unwrap();
    let a: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let b: ImageId = "IBM.2107-75FA150".parse().unwrap();
    ok(&site, Request::ImageCreate { id: a.clone() });
    ok(&site, Request::ImageCreate { id: b.clone() });
    let spec = |pool| flashtrack::control::VolumeSpec {
        pool: flashtrack::id::PoolId(pool),
        capacity: flashtrack::control::Capacity::Fb { cap: 4096 * 128, captype: flashtrack::geometry::CapType::Blocks },
        sam: flashtrack::image::record::Sam::Ese,
    };
    let mk = |img: &ImageId, pool, v| Request::VolumeCreate {
        image: img.clone(),
        spec: spec(pool),
        volumes: vec![(VolumeId(v), String::new())],
    };
    items_ok(ok(&site, mk(&a, 0, 0x1000)));
    items_ok(ok(&site, mk(&b, 1, 0x1100)));
    items_ok(ok(
        &site,
        Request::PprcPathCreate {
            image: a.clone(),
            remote: b.clone(),
            remote_wwnn: b.wwnn(),
            src_lss: flashtrack::id::LssId(0x10),
            tgt_lss: flashtrack::id::LssId(0x11),
            consistgrp: false,
            ports: vec![("I0000".into(), "I0001".into())],
        },
    ));
    let pairs = vec![(VolumeId(0x1000), VolumeId(0x1100))];
    let spec = flashtrack::control::PprcSpec {
        kind: flashtrack::image::record::PprcType::GlobalCopy,
        nocopy: true,
        tgtread: false,
        critmode: false,
    };
    items_ok(ok(&site, Request::PprcCreate { image: a.clone(), remote: b.clone(), pairs: pairs.clone(), spec }));
    let sel = flashtrack::control::PprcSelect { source: VolumeId(0x1000), target: Some(VolumeId(0x1100)) };
    items_ok(ok(&site, Request::PprcPause { image: a.clone(), remote: b.clone(), pairs: vec![sel], at: None }));
    site.checkpoint(); // the set is stored empty; what follows lives in the journal only
    let (vol, flash) = site.open_host(&VolumeKey { image: a.clone(), volume: VolumeId(0x1000) }).unwrap();
    let mut written = TrackBitmap::new();
    let mut durable = TrackBitmap::new();
    for (n, t) in [7u32, 8, 1000, 2500, 4000].into_iter().enumerate() {
        let fua = n % 2 == 0;
        flash.write(&vol, t as u64 * TRACK_BYTES, &[0x6b; 4096], fua).unwrap();
        written.insert_range(t..t + 1);
        if fua {
            durable.insert_range(t..t + 1);
        }
    }
    fault.power_loss().unwrap();
    drop(vol);
    drop(flash);
    drop(site);
    for e in std::fs::read_dir(home.path().join("IBM.2107-75FA120/flash")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "intent") {
            let mut data = std::fs::read(e.path()).unwrap();
            data[4096..].fill(0); // the mapped intent bits are lost with the page cache
            std::fs::write(e.path(), data).unwrap();
        }
    }
    fault.power_on();
    let site = Site::open_opts(home.path(), io, boot("b")).unwrap();
    let Reply::Pprc(v) = ok(&site, Request::PprcList { image: a.clone() }) else { panic!() };
    let mut allowed = TrackBitmap::new();
    for t in written.iter() {
        let e = t.0 / EXTENT_TRACKS * EXTENT_TRACKS;
        allowed.insert_range(e..e + EXTENT_TRACKS);
    }
    assert!(v[0].out_of_sync >= durable.len(), "{} out of sync, {} flushed writes", v[0].out_of_sync, durable.len());
    assert!(v[0].out_of_sync <= allowed.len(), "{} out of sync, at most {} allowed", v[0].out_of_sync, allowed.len());
}
