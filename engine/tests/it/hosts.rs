//! Volume groups and host connections through the typed control API: the rules (every
//! refusal leaves the catalog bytes as they were), which host reaches which volume, sessions
//! ended when access goes, `-tgtoffline`, restarts, and catalogs older than host attachment.

use crate::fixture::{TestSite, fb, items_ok};
use flashtrack::control::{Assign, HostChange, HostSpec, Reply, Request, VolGrpAction, Withdraw};
use flashtrack::error::ErrorKind;
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::id::{HostId, ImageId, VolGrpId, VolumeId, VolumeKey};
use flashtrack::image::hosts::Endpoint;
use flashtrack::image::record::{AddrDiscovery, VolGrpType};

fn vols(v: &[u16]) -> Vec<VolumeId> {
    v.iter().map(|&v| VolumeId(v)).collect()
}

fn mkvolgrp(img: &ImageId, name: &str, v: &[u16]) -> Request {
    Request::VolGrpCreate { image: img.clone(), name: name.into(), vgtype: VolGrpType::ScsiMask, volumes: vols(v) }
}

fn chvolgrp(img: &ImageId, g: u32, action: VolGrpAction, v: &[u16]) -> Request {
    Request::VolGrpChange { image: img.clone(), volgrp: VolGrpId(g), name: None, members: Some((action, vols(v))) }
}

fn spec(name: &str, wwpn: &str, volgrp: Option<u32>) -> HostSpec {
    HostSpec {
        name: name.into(),
        wwpn: wwpn.into(),
        hosttype: "pSeries".into(),
        portgrp: 0,
        volgrp: volgrp.map(VolGrpId),
        ioports: Vec::new(),
        nbdport: None,
        addrdiscovery: AddrDiscovery::ReportLun,
    }
}

fn mkhost(img: &ImageId, s: HostSpec) -> Request {
    Request::HostCreate { image: img.clone(), spec: s }
}

fn key(img: &ImageId, v: u16) -> VolumeKey {
    VolumeKey { image: img.clone(), volume: VolumeId(v) }
}

/// A site with volumes 1000-1003, group V0 = {1000, 1001}, host 0000 on V0.
fn setup() -> (TestSite, ImageId) {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    items_ok(t.ok(fb(&img, 0, 1, &[0x1000, 0x1001, 0x1002, 0x1003])));
    let r = items_ok(t.ok(mkvolgrp(&img, "g0", &[0x1001, 0x1000, 0x1001])));
    assert_eq!(r[0].object, "V0");
    let r = items_ok(t.ok(mkhost(&img, spec("h0", "10000090faf6d5a4", Some(0)))));
    assert_eq!(r[0].object, "0000");
    (t, img)
}

#[test]
fn rules_refuse_and_change_nothing() {
    let (t, img) = setup();
    let Reply::VolGrps(g) = t.ok(Request::VolGrpList { image: img.clone() }) else { panic!() };
    assert_eq!(g[0].volumes, vols(&[0x1000, 0x1001]), "members sorted, each once");
    let Reply::Hosts(h) = t.ok(Request::HostList { image: img.clone() }) else { panic!() };
    assert_eq!(h[0].record.wwpn, "10000090FAF6D5A4");
    let sock = t.home().join("hosts/IBM.2107-75FA120-0000.sock");
    assert_eq!(h[0].endpoint, Endpoint::Unix(sock));
    t.unchanged(&img, |t| {
        assert_eq!(t.err(mkvolgrp(&img, "g1", &[0x1000, 0x1F00])), ErrorKind::VolumeNotFound);
        assert_eq!(t.err(mkvolgrp(&img, "", &[])), ErrorKind::InvalidArgument);
        assert_eq!(t.err(mkvolgrp(&img, "a_name_of_17_char", &[])), ErrorKind::InvalidArgument);
        assert_eq!(t.err(chvolgrp(&img, 0, VolGrpAction::Add, &[0x1001])), ErrorKind::VolumeInVolGrp);
        assert_eq!(t.err(chvolgrp(&img, 0, VolGrpAction::Remove, &[0x1002])), ErrorKind::VolumeNotInVolGrp);
        assert_eq!(t.err(chvolgrp(&img, 0, VolGrpAction::Replace, &[0x1F00])), ErrorKind::VolumeNotFound);
        assert_eq!(t.err(chvolgrp(&img, 5, VolGrpAction::Add, &[0x1002])), ErrorKind::VolGrpNotFound);
        assert_eq!(t.err(Request::VolGrpRemove { image: img.clone(), volgrp: VolGrpId(5) }), ErrorKind::VolGrpNotFound);
        assert_eq!(t.err(mkhost(&img, spec("dup", "10000090FAF6D5A4", None))), ErrorKind::HostWwpnExists);
        assert_eq!(t.err(mkhost(&img, spec("bad", "10000090FAF6D5", None))), ErrorKind::InvalidArgument);
        assert_eq!(t.err(mkhost(&img, spec("nog", "10000090FAF6D5A5", Some(7)))), ErrorKind::VolGrpNotFound);
        let mut s = spec("port", "10000090FAF6D5A5", None);
        s.ioports = vec!["I0007".into()];
        assert_eq!(t.err(mkhost(&img, s)), ErrorKind::InvalidArgument);
        let change = |c: HostChange| Request::HostChange { image: img.clone(), host: HostId(0), change: c };
        assert_eq!(
            t.err(change(HostChange { volgrp: Some(Assign::Set(VolGrpId(9))), ..Default::default() })),
            ErrorKind::VolGrpNotFound
        );
        assert_eq!(
            t.err(change(HostChange { name: Some(String::new()), ..Default::default() })),
            ErrorKind::InvalidArgument
        );
        let other = Request::HostChange { image: img.clone(), host: HostId(4), change: HostChange::default() };
        assert_eq!(t.err(other), ErrorKind::HostNotFound);
        assert_eq!(t.err(Request::HostRemove { image: img.clone(), host: HostId(4) }), ErrorKind::HostNotFound);
        // -safe refuses a volume in a group.
        let rm = Request::VolumeRemove { image: img.clone(), volumes: vols(&[0x1000]), safe: true, stgtype: None };
        assert_eq!(t.item_err(rm), ErrorKind::VolumeInVolGrp);
    });
    // Two hosts cannot share a TCP port.
    let mut a = spec("a", "10000090FAF6D5A5", None);
    a.nbdport = Some(40123);
    items_ok(t.ok(mkhost(&img, a)));
    t.unchanged(&img, |t| {
        let mut b = spec("b", "10000090FAF6D5A6", None);
        b.nbdport = Some(40123);
        assert_eq!(t.err(mkhost(&img, b)), ErrorKind::HostPortInUse);
    });
}

/// 257 volumes: a whole LSS (1000-10FF, LUNs 00-FF) and 1200, the 257th.
fn volumes_257() -> (TestSite, ImageId, Vec<u16>) {
    let t = TestSite::new();
    let img = t.image("IBM.2107-75FA120");
    let mut ids: Vec<u16> = (0..256).map(|v| 0x1000 + v).collect();
    ids.push(0x1200);
    items_ok(t.ok(fb(&img, 0, 1, &ids)));
    (t, img, ids)
}

#[test]
fn map256_groups_hold_256_volumes() {
    let (t, img, ids) = volumes_257();
    let group = |n: usize| Request::VolGrpCreate {
        image: img.clone(),
        name: "m".into(),
        vgtype: VolGrpType::ScsiMap256,
        volumes: vols(&ids[..n]),
    };
    t.unchanged(&img, |t| assert_eq!(t.err(group(257)), ErrorKind::VolGrpFull));
    items_ok(t.ok(group(256)));
    t.unchanged(&img, |t| assert_eq!(t.err(chvolgrp(&img, 0, VolGrpAction::Add, &[0x1200])), ErrorKind::VolGrpFull));
}

#[test]
fn lun_polling_reaches_the_first_256_volumes_of_the_group() {
    let (t, img, ids) = volumes_257();
    items_ok(t.ok(mkvolgrp(&img, "all", &ids)));
    let polling = HostSpec { addrdiscovery: AddrDiscovery::LunPolling, ..spec("p", "10000090faf6d5a4", Some(0)) };
    items_ok(t.ok(mkhost(&img, polling)));
    items_ok(t.ok(mkhost(&img, spec("r", "10000090faf6d5a5", Some(0)))));
    let site = t.site();
    let count = |h| site.host_volume_keys(&img, HostId(h)).len();
    assert_eq!((count(0), count(1)), (256, 257), "LUN polling sees LUNs 00-FF, REPORT LUNS all");
    assert!(site.open_host_via(&img, HostId(0), &key(&img, 0x1200)).is_none(), "the 257th is out of reach");
    assert!(site.open_host_via(&img, HostId(1), &key(&img, 0x1200)).is_some());
    let (_g, _f, s10ff) = site.open_host_via(&img, HostId(0), &key(&img, 0x10FF)).unwrap();
    // A volume before it leaves: 1200 becomes LUN FF and comes into reach.
    items_ok(t.ok(chvolgrp(&img, 0, VolGrpAction::Remove, &[0x1000])));
    assert!(site.open_host_via(&img, HostId(0), &key(&img, 0x1200)).is_some());
    assert!(!s10ff.is_revoked());
    // It comes back: 10FF is LUN FF again, 1200 the 257th. Sessions on 1200 would end; the
    // switch to REPORT LUNS and back shows the change takes effect on a live connection.
    let (_g2, _f2, s1200) = site.open_host_via(&img, HostId(0), &key(&img, 0x1200)).unwrap();
    items_ok(t.ok(chvolgrp(&img, 0, VolGrpAction::Add, &[0x1000])));
    assert!(s1200.is_revoked(), "pushed past LUN FF: its session ends");
    assert_eq!(s1200.enter().unwrap_err().raw_os_error(), Some(libc::ESHUTDOWN));
    assert!(!s10ff.is_revoked());
    let report = HostChange { addrdiscovery: Some(AddrDiscovery::ReportLun), ..Default::default() };
    items_ok(t.ok(Request::HostChange { image: img.clone(), host: HostId(0), change: report }));
    assert_eq!(count(0), 257);
    let (_g3, _f3, s1200) = site.open_host_via(&img, HostId(0), &key(&img, 0x1200)).unwrap();
    let poll = HostChange { addrdiscovery: Some(AddrDiscovery::LunPolling), ..Default::default() };
    items_ok(t.ok(Request::HostChange { image: img.clone(), host: HostId(0), change: poll }));
    assert!(s1200.is_revoked());
    let Reply::Hosts(h) = t.ok(Request::HostList { image: img.clone() }) else { panic!() };
    assert_eq!(h[0].record.addrdiscovery, AddrDiscovery::LunPolling);
}

#[test]
fn a_host_reaches_only_its_group_and_loses_what_leaves_it() {
    let (t, img) = setup();
    let site = t.site();
    let names = |h| site.host_volume_keys(&img, HostId(h)).iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(names(0), ["IBM.2107-75FA120/1000", "IBM.2107-75FA120/1001"]);
    assert!(site.open_host_via(&img, HostId(0), &key(&img, 0x1002)).is_none(), "not in the group");
    assert!(site.open_host_via(&img, HostId(1), &key(&img, 0x1000)).is_none(), "no such host");
    let (guard, _flash, s1000) = site.open_host_via(&img, HostId(0), &key(&img, 0x1000)).unwrap();
    let (_g2, _f2, s1001) = site.open_host_via(&img, HostId(0), &key(&img, 0x1001)).unwrap();
    assert!(s1000.enter().is_ok());
    let Reply::Hosts(h) = t.ok(Request::HostList { image: img.clone() }) else { panic!() };
    assert_eq!(h[0].sessions, 2);
    // chvolgrp remove ends the session on 1000 (ESHUTDOWN), not the one on 1001.
    items_ok(t.ok(chvolgrp(&img, 0, VolGrpAction::Remove, &[0x1000])));
    assert_eq!(s1000.enter().unwrap_err().raw_os_error(), Some(libc::ESHUTDOWN));
    assert!(s1001.enter().is_ok());
    assert_eq!(names(0), ["IBM.2107-75FA120/1001"]);
    drop(guard);
    // replace: 1001 leaves, 1002 joins.
    items_ok(t.ok(chvolgrp(&img, 0, VolGrpAction::Replace, &[0x1002])));
    assert!(s1001.is_revoked());
    let (_g3, _f3, s1002) = site.open_host_via(&img, HostId(0), &key(&img, 0x1002)).unwrap();
    // chhostconnect -volgrp none ends it; so would rmvolgrp and rmhostconnect.
    let none = HostChange { volgrp: Some(Assign::Clear), ..Default::default() };
    items_ok(t.ok(Request::HostChange { image: img.clone(), host: HostId(0), change: none }));
    assert!(s1002.is_revoked());
    assert!(names(0).is_empty());
    let back = HostChange { volgrp: Some(Assign::Set(VolGrpId(0))), ..Default::default() };
    items_ok(t.ok(Request::HostChange { image: img.clone(), host: HostId(0), change: back }));
    let (_g4, _f4, s) = site.open_host_via(&img, HostId(0), &key(&img, 0x1002)).unwrap();
    items_ok(t.ok(Request::VolGrpRemove { image: img.clone(), volgrp: VolGrpId(0) }));
    assert!(s.is_revoked());
    let Reply::Hosts(h) = t.ok(Request::HostList { image: img.clone() }) else { panic!() };
    assert_eq!(h[0].record.volgrp, None, "the host connection stays, without a group");
    items_ok(t.ok(mkvolgrp(&img, "g", &[0x1003])));
    let again = HostChange { volgrp: Some(Assign::Set(VolGrpId(0))), ..Default::default() };
    items_ok(t.ok(Request::HostChange { image: img.clone(), host: HostId(0), change: again }));
    let (_g5, _f5, s) = site.open_host_via(&img, HostId(0), &key(&img, 0x1003)).unwrap();
    items_ok(t.ok(Request::HostRemove { image: img.clone(), host: HostId(0) }));
    assert!(s.is_revoked());
}

#[test]
fn removing_a_volume_ends_host_connection_sessions_but_not_admin_ones() {
    let (t, img) = setup();
    let site = t.site();
    let rm = |v: u16| Request::VolumeRemove { image: img.clone(), volumes: vols(&[v]), safe: false, stgtype: None };
    // A session on the administrator's socket (or a FUSE open) still refuses the remove.
    let admin = site.open_host(&key(&img, 0x1001)).unwrap();
    t.unchanged(&img, |t| assert_eq!(t.item_err(rm(0x1001)), ErrorKind::VolumeInUse));
    drop(admin);
    // A host connection's session does not: it is ended and the volume leaves the group.
    let (guard, _flash, s) = site.open_host_via(&img, HostId(0), &key(&img, 0x1000)).unwrap();
    items_ok(t.ok(rm(0x1000)));
    assert!(s.is_revoked());
    assert_eq!(s.enter().unwrap_err().raw_os_error(), Some(libc::ESHUTDOWN));
    drop(guard);
    let Reply::VolGrps(g) = t.ok(Request::VolGrpList { image: img.clone() }) else { panic!() };
    assert_eq!(g[0].volumes, vols(&[0x1001]));
}

#[test]
fn tgtoffline_refuses_while_the_target_is_open() {
    let (t, img) = setup();
    let pair = vec![(VolumeId(0x1002), VolumeId(0x1003))];
    let offline = FlashOptions { tgtoffline: true, record: true, persist: true, nocopy: true, ..Default::default() };
    let create =
        |o: &FlashOptions| Request::FlashCreate { image: img.clone(), pairs: pair.clone(), options: o.clone() };
    let session = t.site().open_host(&key(&img, 0x1003)).unwrap();
    t.unchanged(&img, |t| assert_eq!(t.item_err(create(&offline)), ErrorKind::FlashTargetOnline));
    // Without -tgtoffline the same pair is fine; a session on the source does not matter.
    let online = FlashOptions { tgtoffline: false, ..offline.clone() };
    items_ok(t.ok(create(&online)));
    let resync = |o: &FlashOptions| Request::FlashResync {
        image: img.clone(),
        pairs: pair.clone(),
        options: o.clone(),
        seqnum: None,
    };
    t.unchanged(&img, |t| assert_eq!(t.item_err(resync(&offline)), ErrorKind::FlashTargetOnline));
    drop(session);
    items_ok(t.ok(resync(&offline)));
    items_ok(t.ok(Request::FlashRemove { image: img.clone(), pairs: pair.clone(), withdraw: Withdraw::default() }));
    let _src = t.site().open_host(&key(&img, 0x1002)).unwrap();
    items_ok(t.ok(create(&offline)));
}

#[test]
fn hosts_and_groups_survive_a_restart() {
    let (mut t, img) = setup();
    let mut s = spec("tcp", "10000090FAF6D5A7", Some(0));
    s.nbdport = Some(40124);
    items_ok(t.ok(mkhost(&img, s)));
    let list = |t: &TestSite| {
        let Reply::VolGrps(g) = t.ok(Request::VolGrpList { image: img.clone() }) else { panic!() };
        let Reply::Hosts(h) = t.ok(Request::HostList { image: img.clone() }) else { panic!() };
        (format!("{g:?}"), h.iter().map(|h| (format!("{:?}", h.record), h.endpoint.clone())).collect::<Vec<_>>())
    };
    let before = list(&t);
    t.restart();
    assert_eq!(list(&t), before);
    let ends = t.site().host_endpoints();
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1].2, Endpoint::Tcp("127.0.0.1:40124".parse().unwrap()));
}

#[test]
fn a_catalog_from_before_host_attachment_opens_without_any() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/formats/site-v1");
    let home = tempfile::tempdir().unwrap();
    crate::fixture::copy_dir(&src, home.path());
    let site = flashtrack::site::Site::open(home.path(), crate::fixture::io()).unwrap();
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let catalog = std::fs::read_to_string(home.path().join("IBM.2107-75FA120/catalog")).unwrap();
    assert!(!catalog.contains("volgrps"), "the fixture predates host attachment");
    assert!(site.host_endpoints().is_empty());
    let Some(flashtrack::control::Response::Ok(Reply::VolGrps(g))) =
        Some(site.handle(Request::VolGrpList { image: img.clone() }))
    else {
        panic!()
    };
    assert!(g.is_empty());
    // And takes new ones in the same format.
    let r = site.handle(Request::VolGrpCreate {
        image: img,
        name: "g".into(),
        vgtype: VolGrpType::ScsiMask,
        volumes: vols(&[0x1000]),
    });
    assert!(matches!(r, flashtrack::control::Response::Ok(_)));
    let catalog = std::fs::read_to_string(home.path().join("IBM.2107-75FA120/catalog")).unwrap();
    assert!(catalog.starts_with("flashtrack-catalog 1 "));
}
