//! Host connections end to end through flashd: each is an NBD endpoint of its own that
//! lists and opens only its volume group's volumes; taking a volume away ends a live
//! session with NBD_ESHUTDOWN; `-tgtoffline` is refused while a host has the target open;
//! `-tgtinhibit` target writes get EPERM; a `-freeze` parks writes (reads go on) until its
//! 2 s timer; a restart keeps hosts, groups and endpoints.

use crate::site_proc::{Daemon, all_ok, fb_request, have};
use flashtrack::control::{Assign, HostChange, HostSpec, Reply, Request, Response, VolGrpAction, Withdraw};
use flashtrack::error::ErrorKind;
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::geometry::CapType;
use flashtrack::id::{HostId, ImageId, VolGrpId, VolumeId};
use flashtrack::image::record::{Sam, VolGrpType};
use flashtrack::nbd::client::{self, Client, Endpoint};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const IMG: &str = "IBM.2107-75FA120";

fn img() -> ImageId {
    IMG.parse().unwrap()
}

fn eshutdown() -> i32 {
    rustix::io::Errno::SHUTDOWN.raw_os_error()
}

fn vols(v: &[u16]) -> Vec<VolumeId> {
    v.iter().map(|&v| VolumeId(v)).collect()
}

fn export(v: u16) -> String {
    format!("{IMG}/{v:04X}")
}

fn host_sock(d: &Daemon, host: u16) -> PathBuf {
    d.home.join(format!("hosts/{IMG}-{host:04X}.sock"))
}

/// A daemon with an image, 4 MiB volumes 1000-1003, group V0 = {1000, 1001} and host
/// connection 0000 on it (Unix socket).
fn site(env: &[(&str, &str)]) -> (tempfile::TempDir, Daemon) {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start_env(home.path(), env);
    d.ok(Request::ImageCreate { id: img() });
    all_ok(d.ok(fb_request(&img(), 0, 8192, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001, 0x1002, 0x1003])));
    let vg = Request::VolGrpCreate {
        image: img(),
        name: "g0".into(),
        vgtype: VolGrpType::ScsiMask,
        volumes: vols(&[0x1000, 0x1001]),
    };
    all_ok(d.ok(vg));
    all_ok(d.ok(host(0x10, Some(0), None)));
    (home, d)
}

fn host(n: u8, volgrp: Option<u32>, nbdport: Option<u16>) -> Request {
    Request::HostCreate {
        image: img(),
        spec: HostSpec {
            name: format!("h{n}"),
            wwpn: format!("10000090FAF6D5{n:02X}"),
            hosttype: "LinuxRHEL".into(),
            portgrp: 0,
            volgrp: volgrp.map(VolGrpId),
            ioports: Vec::new(),
            nbdport,
            addrdiscovery: Default::default(),
        },
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_host_connection_lists_and_opens_only_its_group() {
    let (_home, d) = site(&[]);
    let sock = host_sock(&d, 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    let ep = Endpoint::Unix(sock.clone());
    assert_eq!(sorted(client::list(&ep).unwrap()), [export(0x1000), export(0x1001)]);
    let err = Client::connect(&ep, &export(0x1002)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    let mut c = Client::connect(&ep, &export(0x1000)).unwrap();
    c.write(0, &[0x5a; 4096], true).unwrap();
    c.disconnect().unwrap();
    // The site socket stays the administrator's path to every volume.
    let all = client::list(&Endpoint::Unix(d.nbd_sock())).unwrap();
    assert_eq!(all.len(), 4);
    if have("nbdinfo", "a_host_connection_lists_and_opens_only_its_group") {
        let out = Command::new("nbdinfo")
            .args(["--list", &format!("nbd+unix://?socket={}", sock.display())])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nbdinfo: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&export(0x1000)) && text.contains(&export(0x1001)), "{text}");
        assert!(!text.contains(&export(0x1002)) && !text.contains(&export(0x1003)), "{text}");
        // Block status works through a host connection too: the 4 KiB written above is
        // data, the rest of the (sparse) volume a hole.
        let uri = format!("nbd+unix:///{}?socket={}", export(0x1000), sock.display());
        let out = Command::new("nbdinfo").args(["--map", &uri]).output().unwrap();
        let map = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nbdinfo --map: {map}{}", String::from_utf8_lossy(&out.stderr));
        let first = map.lines().next().unwrap_or_default();
        assert!(first.split_whitespace().nth(2) == Some("0"), "the first extent is data: {map}");
        assert!(map.contains("hole"), "the unwritten rest is a hole: {map}");
    }
    // A loopback TCP endpoint (-nbdport) serves the same way; a taken port is refused.
    let port = free_port();
    all_ok(d.ok(host(0x11, Some(0), Some(port))));
    let tcp = Endpoint::Tcp(([127, 0, 0, 1], port).into());
    assert_eq!(sorted(client::list(&tcp).unwrap()), [export(0x1000), export(0x1001)]);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let Response::Err(e) = d.client().call(host(0x12, None, Some(taken))).unwrap() else { panic!() };
    assert_eq!(e.kind, ErrorKind::HostPortInUse);
    // Moving the endpoint back to its socket (chhostconnect -nbdport none) closes the port
    // and ends the sessions it had.
    let mut on_tcp = Client::connect(&tcp, &export(0x1000)).unwrap();
    let change = HostChange { nbdport: Some(Assign::Clear), ..Default::default() };
    all_ok(d.ok(Request::HostChange { image: img(), host: HostId(1), change }));
    let still = client::list(&tcp);
    assert!(
        still.is_err(),
        "the port still answers: {still:?}; {}",
        std::fs::read_to_string(d.home.join("flashd.log")).unwrap_or_default()
    );
    assert!(host_sock(&d, 1).exists());
    let mut buf = [0u8; 512];
    let err = on_tcp.read(0, &mut buf).unwrap_err();
    let ended = [
        Some(eshutdown()),
        Some(rustix::io::Errno::PIPE.raw_os_error()),
        Some(rustix::io::Errno::CONNRESET.raw_os_error()),
        None,
    ];
    assert!(ended.contains(&err.raw_os_error()), "{err}");
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn taking_a_volume_away_ends_the_live_session() {
    let (_home, d) = site(&[]);
    let ep = Endpoint::Unix(host_sock(&d, 0));
    let mut c = Client::connect(&ep, &export(0x1000)).unwrap();
    c.write(0, &[1; 4096], false).unwrap();
    let mut other = Client::connect(&ep, &export(0x1001)).unwrap();
    all_ok(d.ok(Request::VolGrpChange {
        image: img(),
        volgrp: VolGrpId(0),
        name: None,
        members: Some((VolGrpAction::Remove, vols(&[0x1000]))),
    }));
    // At once: requests fail with NBD_ESHUTDOWN; after the grace the server closes.
    let mut buf = [0u8; 512];
    let err = c.read(0, &mut buf).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(eshutdown()), "{err}");
    let t0 = Instant::now();
    let closed = loop {
        match c.read(0, &mut buf) {
            Err(e) if e.raw_os_error() == Some(eshutdown()) => {}
            Err(e) => break e,
            Ok(()) => panic!("a revoked session read data"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the server never closed the session");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(t0.elapsed() < Duration::from_secs(5), "closed after {:?}: {closed}", t0.elapsed());
    assert!(Client::connect(&ep, &export(0x1000)).is_err(), "the volume is still open to the host");
    // The session on a volume that stayed in the group goes on.
    other.read(0, &mut buf).unwrap();
    // rmhostconnect ends the rest and removes the endpoint.
    all_ok(d.ok(Request::HostRemove { image: img(), host: HostId(0) }));
    // The endpoint stops once the session closed (the grace), so an idle client sees the
    // close itself: ESHUTDOWN, a broken pipe or end of file.
    let err = other.read(0, &mut buf).unwrap_err();
    let ended = [Some(eshutdown()), Some(rustix::io::Errno::PIPE.raw_os_error()), None];
    assert!(ended.contains(&err.raw_os_error()), "{err}");
    assert!(!host_sock(&d, 0).exists(), "the endpoint's socket is still there");
    // rmfbvol of a volume open through a host connection ends that session and proceeds.
    all_ok(d.ok(host(0x13, Some(0), None)));
    let mut s = Client::connect(&Endpoint::Unix(host_sock(&d, 0)), &export(0x1001)).unwrap();
    let rm = Request::VolumeRemove { image: img(), volumes: vols(&[0x1001]), safe: false, stgtype: None };
    all_ok(d.ok(rm));
    assert_eq!(s.read(0, &mut buf).unwrap_err().raw_os_error(), Some(eshutdown()));
    assert_eq!(d.stop(), Some(0));
}

fn dscli(d: &Daemon, args: &[&str]) -> (String, Option<i32>) {
    let out = d.dscli(args);
    assert!(out.stderr.is_empty(), "dscli wrote to stderr: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code())
}

#[test]
fn tgtoffline_is_refused_while_a_host_has_the_target_open() {
    let (_home, d) = site(&[]);
    let ep = Endpoint::Unix(host_sock(&d, 0));
    let c = Client::connect(&ep, &export(0x1001)).unwrap();
    let (out, code) = dscli(&d, &["-bnr", "off", "mkflash", "-tgtoffline", "-record", "-nocp", "1000:1001"]);
    assert_eq!(
        out.trim_end(),
        "CMUN90060E mkflash: 1000:1001: The target volume is online to a host; -tgtoffline does not allow the operation."
    );
    assert_eq!(code, Some(4));
    let Reply::Flash(f) = d.ok(Request::FlashList { image: img() }) else { panic!() };
    assert!(f.is_empty(), "the refused pair exists");
    // Without the session (or without -tgtoffline) it is established; resync likewise.
    let (out, code) = dscli(&d, &["-bnr", "off", "mkflash", "-record", "-nocp", "1000:1001"]);
    assert_eq!(code, Some(0), "{out}");
    let (out, code) = dscli(&d, &["-bnr", "off", "resyncflash", "-tgtoffline", "-record", "1000:1001"]);
    assert!(out.starts_with("CMUN90060E resyncflash: 1000:1001:"), "{out}");
    assert_eq!(code, Some(4));
    c.disconnect().unwrap();
    // The server notices the hang-up a moment later.
    let t0 = Instant::now();
    loop {
        let (out, code) = dscli(&d, &["-bnr", "off", "resyncflash", "-tgtoffline", "-record", "1000:1001"]);
        if code == Some(0) {
            assert!(out.starts_with("CMUC00168I"), "{out}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "still refused after the session ended: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn tgtinhibit_target_writes_get_eperm_over_nbd() {
    let (_home, d) = site(&[]);
    let options = FlashOptions { tgtinhibit: true, nocopy: true, ..Default::default() };
    all_ok(d.ok(Request::FlashCreate { image: img(), pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))], options }));
    let ep = Endpoint::Unix(host_sock(&d, 0));
    let mut c = Client::connect(&ep, &export(0x1001)).unwrap();
    let err = c.write(0, &[7; 4096], false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::PERM.raw_os_error()), "{err}");
    let mut buf = [0u8; 4096];
    c.read(0, &mut buf).unwrap();
    c.disconnect().unwrap();
    if have("qemu-io", "tgtinhibit_target_writes_get_eperm_over_nbd") {
        let uri = format!("nbd+unix:///{}?socket={}", export(0x1001), host_sock(&d, 0).display());
        let out = Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "write -P 0x11 0 64k"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("Operation not permitted"), "qemu-io: {text}");
        let out = Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "read -P 0 0 64k"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    all_ok(d.ok(Request::FlashRemove {
        image: img(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))],
        withdraw: Withdraw::default(),
    }));
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn a_freeze_parks_writes_while_reads_go_on() {
    let (_home, d) = site(&[(flashtrack::flash::freeze::TIMEOUT_ENV, "2")]);
    let ep = Endpoint::Unix(host_sock(&d, 0));
    let mut c = Client::connect(&ep, &export(0x1000)).unwrap();
    c.write(0, &[3; 4096], true).unwrap();
    let options = FlashOptions { freeze: true, nocopy: true, ..Default::default() };
    let frozen = Instant::now();
    all_ok(d.ok(Request::FlashCreate { image: img(), pairs: vec![(VolumeId(0x1000), VolumeId(0x1002))], options }));
    let data = [9u8; 4096];
    let w = c.submit(client::Request::Write { offset: 8192, data: &data, fua: false }).unwrap();
    let r = c.submit(client::Request::Read { offset: 0, len: 4096 }).unwrap();
    let first = c.wait().unwrap();
    assert_eq!(first.cookie, r, "the read waited for the parked write");
    assert_eq!(first.result.unwrap(), vec![3u8; 4096]);
    assert!(frozen.elapsed() < Duration::from_millis(1500), "the read took {:?}", frozen.elapsed());
    let second = c.wait().unwrap();
    assert_eq!(second.cookie, w);
    second.result.unwrap();
    let waited = frozen.elapsed();
    assert!(waited >= Duration::from_millis(1800), "the write was not parked: {waited:?}");
    assert!(waited < Duration::from_secs(10), "the 2 s timer did not release it: {waited:?}");
    let mut back = [0u8; 4096];
    c.read(8192, &mut back).unwrap();
    assert_eq!(back, data);
    c.disconnect().unwrap();
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn a_restart_keeps_hosts_groups_and_endpoints() {
    let (home, d) = site(&[]);
    let port = free_port();
    all_ok(d.ok(host(0x11, Some(0), Some(port))));
    assert_eq!(d.stop(), Some(0));
    assert!(!host_sock_at(home.path(), 0).exists(), "shutdown left the socket");
    // A socket no host connection owns (left by a crash) goes at start.
    let stale = host_sock_at(home.path(), 7);
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let d = Daemon::start(home.path());
    assert!(!stale.exists(), "a stale host socket survived the start");
    let Reply::Hosts(h) = d.ok(Request::HostList { image: img() }) else { panic!() };
    assert_eq!(h.len(), 2);
    let want = [export(0x1000), export(0x1001)];
    assert_eq!(sorted(client::list(&Endpoint::Unix(host_sock(&d, 0))).unwrap()), want);
    assert_eq!(sorted(client::list(&Endpoint::Tcp(([127, 0, 0, 1], port).into())).unwrap()), want);
    assert_eq!(d.stop(), Some(0));
}

fn host_sock_at(home: &std::path::Path, host: u16) -> PathBuf {
    home.join(format!("hosts/{IMG}-{host:04X}.sock"))
}
