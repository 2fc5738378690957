//! PPRC paths between two images of one site (issue 5, first slice): the rules (each refusal
//! leaves both catalogs' bytes as they were), replace semantics, restart, and the in-process
//! links the paths stand on (they answer a ping; the site key is made once, mode 0600).

use crate::fixture::{TestSite, ckd, fb, items_ok};
use flashtrack::control::{PathState, Reply, Request};
use flashtrack::error::ErrorKind;
use flashtrack::id::{ImageId, LssId};
use flashtrack::link::LinkProps;
use std::os::unix::fs::PermissionsExt;

fn ports(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn mkpath(img: &ImageId, remote: &ImageId, wwnn: &str, src: u8, tgt: u8, p: &[(&str, &str)]) -> Request {
    Request::PprcPathCreate {
        image: img.clone(),
        remote: remote.clone(),
        remote_wwnn: wwnn.into(),
        src_lss: LssId(src),
        tgt_lss: LssId(tgt),
        consistgrp: false,
        ports: ports(p),
    }
}

fn rmpath(img: &ImageId, remote: &ImageId, src: u8, tgt: u8) -> Request {
    Request::PprcPathRemove {
        image: img.clone(),
        remote: remote.clone(),
        remote_wwnn: None,
        src_lss: LssId(src),
        tgt_lss: LssId(tgt),
        force: false,
    }
}

fn paths(t: &TestSite, img: &ImageId) -> Vec<flashtrack::control::PprcPathView> {
    let Reply::PprcPaths(p) = t.ok(Request::PprcPathList { image: img.clone() }) else { panic!() };
    p
}

/// Images A (FB LSS 10, CKD LCU 20) and B (FB LSS 11, CKD LCU 21).
fn setup() -> (TestSite, ImageId, ImageId) {
    let t = TestSite::new();
    let a = t.image("IBM.2107-75FA120");
    let b = t.image("IBM.2107-75FA150");
    items_ok(t.ok(fb(&a, 0, 1, &[0x1000])));
    items_ok(t.ok(fb(&b, 1, 1, &[0x1100])));
    for (img, lcu) in [(&a, 0x20), (&b, 0x21)] {
        let req = Request::LcuCreate {
            image: img.clone(),
            first: LssId(lcu),
            qty: 1,
            ssid: 0x2000 + u16::from(lcu),
            lcutype: flashtrack::image::record::LcuType::T3990_6,
        };
        items_ok(t.ok(req));
    }
    items_ok(t.ok(ckd(&b, 3, 1, &[0x2100])));
    (t, a, b)
}

#[test]
fn rules_refuse_and_change_nothing() {
    let (t, a, b) = setup();
    let wb = b.wwnn();
    let c = t.id("IBM.2107-75FA190");
    let both = |t: &TestSite, f: &dyn Fn(&TestSite)| t.unchanged(&a, |t| t.unchanged(&b, f));
    both(&t, &|t| {
        let p = [("I0000", "I0001")];
        assert_eq!(t.err(mkpath(&a, &a, &a.wwnn(), 0x10, 0x10, &p)), ErrorKind::PprcPathToSelf);
        assert_eq!(t.err(mkpath(&a, &c, &c.wwnn(), 0x10, 0x11, &p)), ErrorKind::PprcRemoteNotFound);
        assert_eq!(t.err(mkpath(&c, &b, &wb, 0x10, 0x11, &p)), ErrorKind::ImageNotFound);
        assert_eq!(t.err(mkpath(&a, &b, &a.wwnn(), 0x10, 0x11, &p)), ErrorKind::PprcWwnnMismatch);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x11, &[("I0004", "I0001")])), ErrorKind::PprcPortInvalid);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x11, &[("I0000", "I0100")])), ErrorKind::PprcPortInvalid);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x11, &[])), ErrorKind::PprcPortInvalid);
        let nine: Vec<(&str, &str)> = (0..9).map(|_| ("I0000", "I0001")).collect();
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x11, &nine)), ErrorKind::PprcPortInvalid);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x12, 0x11, &p)), ErrorKind::LssNotFound);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x13, &p)), ErrorKind::LssNotFound);
        assert_eq!(t.err(mkpath(&a, &b, &wb, 0x10, 0x21, &p)), ErrorKind::PprcLssTypeMismatch);
        assert_eq!(t.err(rmpath(&a, &b, 0x10, 0x11)), ErrorKind::PprcPathNotFound);
    });
    assert!(!t.home().join("site.key").exists(), "no key before the first path");
    // An LCU without volumes is an LSS: the CKD path 20:21 is accepted.
    items_ok(t.ok(mkpath(&a, &b, &wb.to_ascii_lowercase(), 0x20, 0x21, &[("I0000", "I0000")])));
    items_ok(t.ok(mkpath(&a, &b, &wb, 0x10, 0x11, &[("I0000", "I0001"), ("i0002", "I0003"), ("I0000", "I0001")])));
    let p = paths(&t, &a);
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].record.src_lss, p[0].record.tgt_lss), (LssId(0x10), LssId(0x11)));
    assert_eq!(p[0].record.ports, ports(&[("I0000", "I0001"), ("I0002", "I0003")]), "upper case, each pair once");
    assert_eq!(p[0].tgt_ssid, 0xFF11, "FB LSS: FFxx");
    assert_eq!(p[1].tgt_ssid, 0x2021, "CKD: the LCU's SSID");
    assert_eq!(p[1].record.remote_wwnn, wb);
    assert!(paths(&t, &b).is_empty(), "paths belong to the source image");
    both(&t, &|t| {
        let r = Request::PprcPathRemove {
            image: a.clone(),
            remote: b.clone(),
            remote_wwnn: Some(a.wwnn()),
            src_lss: LssId(0x10),
            tgt_lss: LssId(0x11),
            force: false,
        };
        assert_eq!(t.err(r), ErrorKind::PprcWwnnMismatch);
        assert_eq!(t.err(rmpath(&b, &a, 0x11, 0x10)), ErrorKind::PprcPathNotFound);
    });
}

#[test]
fn reissue_replaces_the_port_set_and_remove_ends_the_links() {
    let (t, a, b) = setup();
    let wb = b.wwnn();
    items_ok(t.ok(mkpath(&a, &b, &wb, 0x10, 0x11, &[("I0000", "I0001"), ("I0002", "I0003")])));
    assert!(t.site().path_link(&a, "I0002", &b, "I0003").is_some());
    let mut req = mkpath(&a, &b, &wb, 0x10, 0x11, &[("I0001", "I0001")]);
    if let Request::PprcPathCreate { consistgrp, .. } = &mut req {
        *consistgrp = true;
    }
    items_ok(t.ok(req));
    let p = paths(&t, &a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].record.ports, ports(&[("I0001", "I0001")]));
    assert!(p[0].record.consistgrp);
    assert_eq!(p[0].ports[0].state, PathState::Success);
    assert!(t.site().path_link(&a, "I0002", &b, "I0003").is_none(), "the replaced port pair's link closed");
    let r = items_ok(t.ok(rmpath(&a, &b, 0x10, 0x11)));
    assert_eq!(r[0].object, "10:11");
    assert!(paths(&t, &a).is_empty());
    assert!(t.site().path_link(&a, "I0001", &b, "I0001").is_none());
    assert_eq!(t.err(rmpath(&a, &b, 0x10, 0x11)), ErrorKind::PprcPathNotFound);
}

#[test]
fn a_paths_link_pings_and_an_outage_fails_it() {
    let (t, a, b) = setup();
    items_ok(t.ok(mkpath(&a, &b, &b.wwnn(), 0x10, 0x11, &[("I0000", "I0001")])));
    // The other direction over the same ports shares the link.
    items_ok(t.ok(mkpath(&b, &a, &a.wwnn(), 0x11, 0x10, &[("I0001", "I0000")])));
    let link = t.site().path_link(&a, "I0000", &b, "I0001").expect("a link");
    link.ping(std::time::Duration::from_secs(2)).expect("the link answers");
    assert_eq!(paths(&t, &a)[0].ports[0].state, PathState::Success);
    assert_eq!(paths(&t, &b)[0].ports[0].state, PathState::Success);
    link.set_props(LinkProps { outage: true, ..LinkProps::default() }).unwrap();
    assert_eq!(paths(&t, &a)[0].ports[0].state, PathState::FailedSecondaryUnavailable);
    link.set_props(LinkProps::default()).unwrap();
    assert_eq!(paths(&t, &a)[0].ports[0].state, PathState::Success);
    let key = t.home().join("site.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the site key is private");
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
}

#[test]
fn restart_keeps_paths_key_and_links() {
    let (mut t, a, b) = setup();
    items_ok(t.ok(mkpath(&a, &b, &b.wwnn(), 0x10, 0x11, &[("I0003", "I0002")])));
    let key = std::fs::read(t.home().join("site.key")).unwrap();
    t.restart();
    assert_eq!(std::fs::read(t.home().join("site.key")).unwrap(), key, "the key is made once");
    let p = paths(&t, &a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].record.ports, ports(&[("I0003", "I0002")]));
    assert_eq!(p[0].ports[0].state, PathState::Success, "links come up at start");
    let link = t.site().path_link(&a, "I0003", &b, "I0002").expect("a link after restart");
    link.ping(std::time::Duration::from_secs(2)).unwrap();
    // The remote image gone (its volumes and LCU removed first): the path stays, Failed.
    items_ok(t.ok(Request::VolumeRemove {
        image: b.clone(),
        volumes: vec![flashtrack::id::VolumeId(0x1100), flashtrack::id::VolumeId(0x2100)],
        safe: false,
        stgtype: None,
    }));
    items_ok(t.ok(Request::LcuRemove { image: b.clone(), lcus: vec![LssId(0x21)] }));
    t.ok(Request::ImageRemove { id: b.clone() });
    let p = paths(&t, &a);
    assert_eq!(p[0].ports[0].state, PathState::FailedDown);
    items_ok(t.ok(rmpath(&a, &b, 0x10, 0x11)));
}

#[test]
fn catalogs_without_paths_keep_their_bytes() {
    let (t, a, b) = setup();
    let cat = t.home().join(a.to_string()).join("catalog");
    let text = String::from_utf8_lossy(&std::fs::read(&cat).unwrap()).into_owned();
    assert!(!text.contains("pprc_paths"), "an image without paths writes no pprc_paths field");
    items_ok(t.ok(mkpath(&a, &b, &b.wwnn(), 0x10, 0x11, &[("I0000", "I0000")])));
    let text = String::from_utf8_lossy(&std::fs::read(&cat).unwrap()).into_owned();
    assert!(text.contains("pprc_paths"));
}

#[test]
fn peers_file_and_site_key_file() {
    use flashtrack::mirror::{PEERS_FILE, key_hex, load_peers, peer_add, peer_remove, set_site_key, site_key};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert!(load_peers(h).unwrap().is_empty(), "no file, no peers");
    let at: std::net::SocketAddr = "127.0.0.1:7800".parse().unwrap();
    peer_add(h, "5005076a12345678", at).unwrap();
    peer_add(h, "5005076B00000001", "127.0.0.1:7801".parse().unwrap()).unwrap();
    peer_add(h, "5005076A12345678", "127.0.0.1:7802".parse().unwrap()).unwrap();
    let peers = load_peers(h).unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers["5005076A12345678"].to_string(), "127.0.0.1:7802", "add replaces; WWNNs uppercase");
    let file = h.join(PEERS_FILE);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // Refusals change nothing.
    let before = std::fs::read(&file).unwrap();
    assert_eq!(peer_add(h, "5005076A1234567", at).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(peer_add(h, "5005076A1234567Z", at).unwrap_err().kind, ErrorKind::InvalidArgument);
    let lan = "192.0.2.1:7800".parse().unwrap();
    assert_eq!(peer_add(h, "5005076A12345678", lan).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(peer_remove(h, "5005076C00000000").unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    peer_remove(h, "5005076b00000001").unwrap();
    assert_eq!(load_peers(h).unwrap().keys().collect::<Vec<_>>(), ["5005076A12345678"]);
    // Hand-edited: comments and blank lines are fine, a bad line is Corrupt.
    std::fs::write(&file, "# x\n\n5005076A12345678   127.0.0.1:9\n").unwrap();
    assert_eq!(load_peers(h).unwrap()["5005076A12345678"].port(), 9);
    std::fs::write(&file, "5005076A12345678\n").unwrap();
    assert_eq!(load_peers(h).unwrap_err().kind, ErrorKind::Corrupt);
    // No temp files left behind.
    let left: Vec<_> =
        std::fs::read_dir(h).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(left.is_empty(), "{left:?}");

    // The site key: made once, set from another site's hex, 0600; bad hex or a short key refused.
    let made = key_hex(&site_key(h).unwrap());
    assert_eq!(key_hex(&site_key(h).unwrap()), made);
    let other = "ab".repeat(32);
    set_site_key(h, &other.to_uppercase()).unwrap();
    assert_eq!(key_hex(&site_key(h).unwrap()), other);
    let key = h.join("site.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(set_site_key(h, "xyz1").unwrap_err().kind, ErrorKind::InvalidArgument);
    assert!(set_site_key(h, "abcd").is_err(), "shorter than the minimum key length");
    assert_eq!(key_hex(&site_key(h).unwrap()), other, "refusals keep the key");
}

/// Two sites in one process, linked over loopback TCP as two flashd would be.
#[test]
fn path_to_a_peer_site_over_tcp() {
    let (ta, a, _) = setup();
    let tb = TestSite::new();
    let b = tb.image("IBM.2107-75FB150");
    // The two sites share A's key (flashd key show / key set).
    let ka = flashtrack::mirror::key_hex(&flashtrack::mirror::site_key(ta.home()).unwrap());
    flashtrack::mirror::set_site_key(tb.home(), &ka).unwrap();
    let at = tb.site().listen_links("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(tb.site().link_listening(), Some(at));
    assert!(tb.site().listen_links("0.0.0.0:0".parse().unwrap()).is_err(), "loopback only, and once");

    // Not a peer yet: refused, nothing written.
    let p = [("I0000", "I0001")];
    ta.unchanged(&a, |t| assert_eq!(t.err(mkpath(&a, &b, &b.wwnn(), 0x10, 0x11, &p)), ErrorKind::PprcRemoteNotFound));
    flashtrack::mirror::peer_add(ta.home(), &b.wwnn(), at).unwrap();
    // The WWNN still has to be the remote image's; the remote LSS is not checked from here.
    ta.unchanged(&a, |t| assert_eq!(t.err(mkpath(&a, &b, &a.wwnn(), 0x10, 0x11, &p)), ErrorKind::PprcWwnnMismatch));
    items_ok(ta.ok(mkpath(&a, &b, &b.wwnn(), 0x10, 0x7F, &p)));
    let v = paths(&ta, &a);
    assert_eq!(v[0].ports[0].state, PathState::Success);
    ta.site().path_link(&a, "I0000", &b, "I0001").expect("a TCP link").ping(std::time::Duration::from_secs(2)).unwrap();

    // B gone: Down; path kept.
    drop(tb);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while paths(&ta, &a)[0].ports[0].state != PathState::FailedDown {
        assert!(std::time::Instant::now() < deadline, "the path did not go down");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    items_ok(ta.ok(rmpath(&a, &b, 0x10, 0x7F)));
}
