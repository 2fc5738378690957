//! Interoperability: real NBD clients (qemu-io, qemu-img, nbdinfo) against our server.
//! Each test skips, with a printed reason, when its tool is not installed.
//!
//! Export names contain a slash (`IBM.2107-75FA120/1000`); the URI form that works is
//! `nbd+unix:///IBM.2107-75FA120/1000?socket=PATH` (the export is the URI path minus its
//! first slash) and `nbd://127.0.0.1:PORT/IBM.2107-75FA120/1000` for TCP.

use super::client::Endpoint;
use super::tests::{MemCatalog, RO, VOL, start};
use super::{ListenAddr, Server};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if !found {
        println!("SKIP: {tool} is not installed");
    }
    found
}

/// Runs `tool args...` under `timeout` so a protocol bug fails the test instead of hanging it.
fn run(tool: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout").arg("60").arg(tool).args(args).output().expect("spawn timeout");
    println!(
        "$ {tool} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn uri(ep: &Endpoint, name: &str) -> String {
    let Endpoint::Unix(p) = ep else { panic!("unix endpoint") };
    format!("nbd+unix:///{name}?socket={}", p.display())
}

#[test]
fn qemu_io_round_trip() {
    if !have("qemu-io") {
        return;
    }
    let (_d, cat, h, ep) = start();
    let u = uri(&ep, VOL);
    let out = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &u,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -z 1M 64k",
            "-c",
            "discard 2M 1M",
            "-c",
            "flush",
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("failed") && !text.contains("error"), "{text}");
    let e = &cat.exports[VOL];
    {
        let data = e.data.lock().unwrap();
        assert!(data[..1 << 20].iter().all(|&b| b == 0xab));
    }
    assert!(e.flushes.load(Ordering::Relaxed) >= 1);
    assert!(e.zeroes.lock().unwrap().iter().any(|&(o, l, _)| o == 1 << 20 && l == 64 << 10));
    assert!(e.trims.load(Ordering::Relaxed) >= 1);
    // Pattern checking is real: a wrong pattern is reported.
    let out = run("qemu-io", &["-f", "raw", &u, "-c", "read -P 0xcd 0 64k"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Pattern verification failed"), "{text}");
    // Read-only export: writes are refused with EPERM, reads work.
    let ro = uri(&ep, RO);
    let out = run("qemu-io", &["-r", "-f", "raw", &ro, "-c", "read -P 0 0 64k"]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"));
    h.shutdown();
}

#[test]
fn qemu_io_over_tcp() {
    if !have("qemu-io") {
        return;
    }
    let cat = MemCatalog::with(&[(VOL, 8 << 20, false)]);
    let h = Server::default().serve_tcp("127.0.0.1:0".parse().unwrap(), cat.clone()).unwrap();
    let ListenAddr::Tcp(addr) = h.addr().clone() else { panic!() };
    let u = format!("nbd://{addr}/{VOL}");
    let out = run("qemu-io", &["-f", "raw", &u, "-c", "write -P 0x11 4k 8k", "-c", "read -P 0x11 4k 8k"]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"));
    assert_eq!(cat.exports[VOL].data.lock().unwrap()[4096], 0x11);
    h.shutdown();
}

#[test]
fn qemu_img_info_and_convert() {
    if !have("qemu-img") {
        return;
    }
    let (d, cat, h, ep) = start();
    {
        let mut data = cat.exports[VOL].data.lock().unwrap();
        for (i, b) in data.iter_mut().enumerate().step_by(4093) {
            *b = (i % 251) as u8 + 1;
        }
    }
    let u = uri(&ep, VOL);
    let out = run("qemu-img", &["info", &u]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("virtual size: 64 MiB"));
    let img = d.path().join("out.img");
    let out = run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &u, img.to_str().unwrap()]);
    assert!(out.status.success());
    let copied = std::fs::read(&img).unwrap();
    assert!(copied == *cat.exports[VOL].data.lock().unwrap(), "converted image differs from the export");
    // And the other way: write an image into the export.
    std::fs::write(&img, vec![0x42u8; 1 << 20]).unwrap();
    let small = MemCatalog::with(&[(VOL, 1 << 20, false)]);
    let sock = d.path().join("small.sock");
    let h2 = Server::default().serve_unix(&sock, small.clone()).unwrap();
    let dst = uri(&Endpoint::Unix(sock), VOL);
    let out = run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", img.to_str().unwrap(), &dst]);
    assert!(out.status.success());
    assert!(small.exports[VOL].data.lock().unwrap().iter().all(|&b| b == 0x42));
    h2.shutdown();
    h.shutdown();
}

#[test]
fn nbdinfo_list_and_details() {
    if !have("nbdinfo") {
        return;
    }
    let (_d, _cat, h, ep) = start();
    let Endpoint::Unix(p) = &ep else { panic!() };
    let out = run("nbdinfo", &["--list", &format!("nbd+unix:///?socket={}", p.display())]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(VOL) && text.contains(RO), "{text}");
    let out = run("nbdinfo", &[&uri(&ep, VOL)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("67108864"), "{text}");
    assert!(text.contains("can_multi_conn: true") && text.contains("can_fua: true"), "{text}");
    let out = run("nbdinfo", &[&uri(&ep, RO)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("is_read_only: true"));
    let out = run("nbdinfo", &["--size", &uri(&ep, "IBM.2107-75FA120/9999")]);
    assert!(!out.status.success(), "unknown export must fail");
    h.shutdown();
}
