//! PPRC paths to an image served by another flashd over loopback TCP (issue 5): two flashd
//! processes in two homes sharing a site key (`flashd key show|set`), the remote image named
//! in the peers file (`flashd peer add`), `--link-listen` on the remote side. The path shows
//! Success while the remote flashd answers, Failed once it stops, and Failed with a log line
//! when the remote site's key differs.

use crate::site_proc::{Daemon, all_ok, fb_request, flashd, flashd_bin, free_port, remote_site};
use flashtrack::control::{PathState, Reply, Request, Response};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId};
use flashtrack::image::record::Sam;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn states(d: &Daemon, img: &ImageId, remote: &ImageId) -> Vec<PathState> {
    let Reply::PprcPaths(paths) = d.ok(Request::PprcPathList { image: img.clone() }) else { panic!("paths") };
    paths.iter().filter(|p| p.record.remote == *remote).flat_map(|p| p.ports.iter().map(|pv| pv.state)).collect()
}

/// Poll `lspprcpath` until every port pair to `remote` is `want` (5 s deadline).
fn wait_state(d: &Daemon, img: &ImageId, remote: &ImageId, want: PathState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = states(d, img, remote);
        if !s.is_empty() && s.iter().all(|st| *st == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "path to {remote}: {s:?}, want {want:?}; see {}/flashd.log",
            d.home.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll until `home`'s flashd.log holds `text` (5 s deadline).
fn wait_log(home: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if std::fs::read_to_string(home.join("flashd.log")).is_ok_and(|l| l.contains(text)) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{text}` in {}/flashd.log", home.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkpath(img: &ImageId, remote: &ImageId) -> Request {
    Request::PprcPathCreate {
        image: img.clone(),
        remote: remote.clone(),
        remote_wwnn: remote.wwnn(),
        src_lss: LssId(0x10),
        tgt_lss: LssId(0x11),
        consistgrp: false,
        ports: vec![("I0000".into(), "I0001".into()), ("I0001".into(), "I0002".into())],
    }
}

#[test]
fn pprc_path_to_another_flashd_over_tcp() {
    let (ha, hb, hc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b, c): (ImageId, ImageId, ImageId) =
        ("IBM.2107-75FA120".parse().unwrap(), "IBM.2107-75FB150".parse().unwrap(), "IBM.2107-75FC190".parse().unwrap());

    // --link-listen is loopback only, as --nbd-tcp.
    let out = Command::new(flashd_bin())
        .args(["run", "--link-listen", "0.0.0.0:7800", "--home"])
        .arg(hc.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));

    // A and B share A's key; C keeps a key of its own.
    let key = flashd(ha.path(), &["key", "show"]).trim().to_string();
    assert_eq!(key.len(), 64);
    flashd(hb.path(), &["key", "set", &key]);
    assert_eq!(flashd(hb.path(), &["key", "show"]).trim(), key);
    assert_ne!(flashd(hc.path(), &["key", "show"]).trim(), key);

    let (pb, pc) = (free_port(), free_port());
    let db = remote_site(hb.path(), &pb, &b);
    let dc = remote_site(hc.path(), &pc, &c);
    flashd(ha.path(), &["peer", "add", "--wwnn", &b.wwnn(), "--addr", &pb]);
    flashd(ha.path(), &["peer", "add", "--wwnn", &c.wwnn(), "--addr", &pc]);
    let listed = flashd(ha.path(), &["peer", "list"]);
    assert!(listed.contains(&format!("{} {pb}", b.wwnn())), "{listed}");

    let da = Daemon::start(ha.path());
    da.ok(Request::ImageCreate { id: a.clone() });
    all_ok(da.ok(fb_request(&a, 0, 1, CapType::Ds, Sam::Ese, &[0x1000])));

    // Not a peer: refused as before.
    let stranger: ImageId = "IBM.2107-75FD110".parse().unwrap();
    match da.client().call(mkpath(&a, &stranger)).unwrap() {
        Response::Err(e) => assert_eq!(e.kind, flashtrack::error::ErrorKind::PprcRemoteNotFound),
        r => panic!("accepted: {r:?}"),
    }

    // Same key: the remote flashd answers the ping.
    all_ok(da.ok(mkpath(&a, &b)));
    wait_state(&da, &a, &b, PathState::Success);

    // B stops: Failed (Down). The path stays in A's catalog.
    assert_eq!(db.stop(), Some(0));
    wait_state(&da, &a, &b, PathState::FailedDown);

    // B back (same home, same port): lspprcpath dials again.
    let db = Daemon::start_with(hb.path(), &[OsStr::new("--link-listen"), OsStr::new(&pb)], &[]);
    wait_state(&da, &a, &b, PathState::Success);

    // C's key differs: refused at both ends, logged at both, Failed.
    all_ok(da.ok(mkpath(&a, &c)));
    wait_state(&da, &a, &c, PathState::FailedDown);
    wait_log(ha.path(), "does not match the site key");
    wait_log(hc.path(), "refused the handshake");
    wait_state(&da, &a, &b, PathState::Success);
    drop((db, dc));
}
