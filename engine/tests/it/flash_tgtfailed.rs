//! ENOSPC on a FlashCopy target (an ese pool filling up): the relationship goes
//! `Tgt Failed`, target I/O gets EIO, source writes never fail for lack of target space, and
//! the next resync is a full copy that makes the pair valid again.

use crate::fixture::{items_ok, site_ok as ok};
use flashtrack::control::{Capacity, Reply, Request, VolumeSpec};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::geometry::{CapType, TRACK_BYTES};
use flashtrack::id::{ImageId, PoolId, VolumeId, VolumeKey};
use flashtrack::image::record::Sam;
use flashtrack::io::{FaultEngine, FaultOp, FaultRule, IoEngine, SyncEngine};
use flashtrack::site::{Site, SiteOptions};
use std::sync::Arc;

#[test]
fn target_out_of_space_fails_the_target_not_the_source() {
    let home = tempfile::tempdir().unwrap();
    let fault = Arc::new(FaultEngine::new(Arc::new(SyncEngine)));
    let io: Arc<dyn IoEngine> = fault.clone();
    let site = Site::open_opts(home.path(), io, SiteOptions::default()).unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    ok(&site, Request::ImageCreate { id: img.clone() });
    let spec = VolumeSpec {
        pool: PoolId(0),
        capacity: Capacity::Fb { cap: 32 * 128, captype: CapType::Blocks },
        sam: Sam::Ese,
    };
    items_ok(ok(
        &site,
        Request::VolumeCreate {
            image: img.clone(),
            spec,
            volumes: vec![(VolumeId(0x1000), String::new()), (VolumeId(0x1001), String::new())],
        },
    ));
    let key = |v| VolumeKey { image: img.clone(), volume: VolumeId(v) };
    let (src, flash) = site.open_host(&key(0x1000)).unwrap();
    let (tgt, _) = site.open_host(&key(0x1001)).unwrap();
    flash.write(&src, 0, &vec![0x11; 32 * TRACK_BYTES as usize], true).unwrap();
    let options = FlashOptions { record: true, persist: true, nocopy: true, ..FlashOptions::default() };
    let pair = vec![(VolumeId(0x1000), VolumeId(0x1001))];
    items_ok(ok(&site, Request::FlashCreate { image: img.clone(), pairs: pair.clone(), options: options.clone() }));

    // The target's pool is full.
    let tfd = tgt.backing().file_fd().unwrap();
    fault.inject(FaultRule::on_fd(FaultOp::Write, tfd, libc::ENOSPC));
    flash
        .write(&src, 2 * TRACK_BYTES, &[0x22; 4096], false)
        .expect("a source write must not fail for lack of target space");
    let mut buf = vec![0u8; 4096];
    assert_eq!(flash.read(&tgt, 0, &mut buf).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(flash.write(&tgt, 0, &buf, false).unwrap_err().raw_os_error(), Some(libc::EIO));
    let Reply::Flash(v) = ok(&site, Request::FlashList { image: img.clone() }) else { panic!() };
    assert_eq!(v[0].record.state, FlashState::TgtFailed);
    // Source I/O goes on.
    flash.write(&src, 5 * TRACK_BYTES, &[0x33; 4096], false).unwrap();

    // Space again: the next resync is a full copy and the pair is valid.
    fault.clear_faults();
    items_ok(ok(&site, Request::FlashResync { image: img.clone(), pairs: pair.clone(), options, seqnum: None }));
    let Reply::Flash(v) = ok(&site, Request::FlashList { image: img.clone() }) else { panic!() };
    assert_eq!(v[0].record.state, FlashState::Valid);
    assert_eq!(v[0].out_of_sync, 32, "a full copy after Tgt Failed");
    let rel = flash.relationships().into_iter().next().unwrap();
    flash.copy_all(&rel).unwrap();
    let (mut a, mut b) = (vec![0u8; 32 * TRACK_BYTES as usize], vec![0u8; 32 * TRACK_BYTES as usize]);
    flash.read(&src, 0, &mut a).unwrap();
    flash.read(&tgt, 0, &mut b).unwrap();
    assert!(a == b);
}

#[test]
fn an_8_tib_sparse_pair_establishes_with_every_track_uncopied() {
    // Establish is O(bitmap containers), not O(tracks): all 2^27 tracks of 8 TiB borrowed.
    let home = tempfile::tempdir().unwrap();
    let site = Site::open(home.path(), Arc::new(SyncEngine)).unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    ok(&site, Request::ImageCreate { id: img.clone() });
    let spec =
        VolumeSpec { pool: PoolId(0), capacity: Capacity::Fb { cap: 8192, captype: CapType::Ds }, sam: Sam::Ese };
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
    let Reply::Flash(v) = ok(&site, Request::FlashList { image: img.clone() }) else { panic!() };
    assert_eq!(v[0].out_of_sync, 1 << 27);
}
