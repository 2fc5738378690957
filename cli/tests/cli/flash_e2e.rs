//! FlashCopy end to end through flashd with qemu-io as the host: T0 holds while the source
//! changes, resync copies only the changed tracks, and target == source afterwards.

use crate::site_proc::{Daemon, all_ok, fb_request, have};
use flashtrack::control::{Reply, Request, Response, Withdraw};
use flashtrack::flash::relationship::FlashOptions;
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::Sam;
use std::process::Command;

fn qemu_io(d: &Daemon, vol: &str, cmds: &[&str]) -> String {
    let uri = format!("nbd+unix:///IBM.2107-75FA120/{vol}?socket={}", d.nbd_sock().display());
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", &uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().expect("qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("failed"), "qemu-io {cmds:?}: {text}");
    text
}

fn wait_copied(d: &Daemon, img: &ImageId, pair: (u16, u16)) -> flashtrack::control::FlashView {
    for _ in 0..200 {
        let Reply::Flash(views) = d.ok(Request::FlashWait {
            image: img.clone(),
            pairs: vec![(VolumeId(pair.0), VolumeId(pair.1))],
            timeout_ms: 500,
        }) else {
            panic!()
        };
        if views.iter().all(|v| v.out_of_sync == 0) {
            return views.into_iter().next().expect("pair");
        }
    }
    panic!("copy did not finish");
}

#[test]
fn point_in_time_and_incremental_resync_over_nbd() {
    if !have("qemu-io", "point_in_time_and_incremental_resync_over_nbd") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    scenario(Daemon::start(home.path()));
}

/// The same with `flashd run --copy-direct`: the copier reads and writes the backing files
/// through O_DIRECT descriptors while host I/O stays buffered.
#[test]
fn point_in_time_and_incremental_resync_with_direct_copies() {
    if !have("qemu-io", "point_in_time_and_incremental_resync_with_direct_copies") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    scenario(Daemon::start_env(home.path(), &[("FLASHTRACK_COPY_DIRECT", "1")]));
    let log = std::fs::read_to_string(home.path().join("flashd.log")).unwrap();
    assert!(log.contains("use O_DIRECT"), "flashd did not turn O_DIRECT copies on: {log}");
    if log.contains("no O_DIRECT copies") {
        eprintln!("note: this file system refused O_DIRECT; the copies above ran buffered");
    }
}

fn scenario(d: Daemon) {
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    // 64 MiB volumes = 1024 tracks.
    all_ok(d.ok(fb_request(&img, 0, 131072, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
    qemu_io(&d, "1000", &["write -P 0x11 0 64M"]);
    let options = FlashOptions { record: true, persist: true, ..FlashOptions::default() };
    all_ok(d.ok(Request::FlashCreate {
        image: img.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))],
        options: options.clone(),
    }));
    // The source changes at once; the target still reads T0, during and after the copy.
    qemu_io(&d, "1000", &["write -P 0x22 0 1M", "write -P 0x23 32M 64k"]);
    qemu_io(&d, "1001", &["read -P 0x11 0 64M"]);
    let v = wait_copied(&d, &img, (0x1000, 0x1001));
    assert_eq!(v.out_of_sync, 0);
    qemu_io(&d, "1001", &["read -P 0x11 0 64M"]);
    // A host write on the target is recorded too; then a resync copies source changes (16 +
    // 1 tracks) plus the target's (1 track) and nothing else.
    qemu_io(&d, "1001", &["write -P 0x33 48M 4k"]);
    qemu_io(&d, "1000", &["write -P 0x44 16M 128k"]);
    all_ok(d.ok(Request::FlashResync {
        image: img.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))],
        options,
        seqnum: None,
    }));
    let v = wait_copied(&d, &img, (0x1000, 0x1001));
    assert_eq!(v.copied, 16 + 1 + 1 + 2, "tracks copied by the increment");
    qemu_io(
        &d,
        "1001",
        &[
            "read -P 0x22 0 1M",
            "read -P 0x11 1M 15M",
            "read -P 0x44 16M 128k",
            "read -P 0x23 32M 64k",
            "read -P 0x11 48M 4k",
        ],
    );
    if have("qemu-img", "point_in_time_and_incremental_resync_over_nbd (compare)") {
        let uri = |v: &str| format!("nbd+unix:///IBM.2107-75FA120/{v}?socket={}", d.nbd_sock().display());
        let out = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw", &uri("1000"), &uri("1001")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    // A volume in a relationship cannot be removed; after rmflash it can.
    let rm = Request::VolumeRemove { image: img.clone(), volumes: vec![VolumeId(0x1001)], safe: false, stgtype: None };
    let Reply::Items(items) = d.ok(rm.clone()) else { panic!() };
    assert_eq!(items[0].result.as_ref().unwrap_err().kind, flashtrack::error::ErrorKind::VolumeInRelationship);
    all_ok(d.ok(Request::FlashRemove {
        image: img.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1001))],
        withdraw: Withdraw::default(),
    }));
    all_ok(d.ok(rm));
    let Reply::Flash(v) = d.ok(Request::FlashList { image: img.clone() }) else { panic!() };
    assert!(v.is_empty());
    let _ = Response::Ok(Reply::Done);
    assert_eq!(d.stop(), Some(0));
}

/// Was: a `-sam standard` FlashCopy target lost its allocation (the copier copied each
/// source hole by punching the target): after `mkflash -wait` lsfbvol showed usedcap 0.0
/// for the target, and a thick volume could later meet ENOSPC. The repro of the report, with
/// resyncflash and reverseflash after it; an ese pair beside it stays thin.
#[test]
fn standard_target_stays_allocated_through_dscli_flashcopies() {
    if !have("qemu-io", "standard_target_stays_allocated_through_dscli_flashcopies") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path());
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    let dscli = |args: &[&str]| d.dscli_ok(args);
    const GIB: u64 = 1 << 30;
    let used = |vol: u16| {
        let Reply::Volumes(views) = d.ok(Request::VolumeList { image: img.clone() }) else { panic!() };
        let v = views.iter().find(|v| v.record.id == VolumeId(vol)).expect("volume listed");
        let path = d.home.join(format!("{img}/pools/P0/{img}_{vol:04X}.vol"));
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap());
        assert_eq!(v.allocated_bytes, blocks * 512, "lsfbvol's usedcap is the file's allocation");
        v.allocated_bytes
    };
    // `standard` is mkfbvol's default -sam.
    dscli(&["mkfbvol", "-extpool", "P0", "-cap", "1", "1009-100A"]);
    dscli(&["mkfbvol", "-extpool", "P0", "-cap", "1", "-sam", "ese", "100B-100C"]);
    assert!(used(0x100A) >= GIB, "a new standard volume is allocated up front");
    let long = dscli(&["lsfbvol", "-l", "-fmt", "delim", "-hdr", "off", "100A"]);
    assert!(long.contains("standard"), "{long}");
    // Data at the start, in the middle and at the end; holes everywhere else.
    for src in ["1009", "100B"] {
        qemu_io(&d, src, &["write -P 0x51 0 1M", "write -P 0x52 500M 64k", "write -P 0x53 1023M 1M"]);
    }
    // Old data on the targets where the sources have holes.
    for tgt in ["100A", "100C"] {
        qemu_io(&d, tgt, &["write -P 0xEE 100M 1M"]);
    }
    let check = |step: &str| {
        assert!(used(0x100A) >= GIB, "{step}: the standard target holds {} bytes of 1 GiB", used(0x100A));
        assert!(used(0x1009) >= GIB, "{step}: the standard source holds {} bytes of 1 GiB", used(0x1009));
        assert!(used(0x100C) < GIB / 8, "{step}: the ese target holds {} bytes of 1 GiB", used(0x100C));
    };
    let options = ["-record", "-persist", "-wait"];
    let mk = dscli(&[&["mkflash"][..], &options, &["1009:100A", "100B:100C"]].concat());
    assert!(mk.contains("CMUC00137I"), "{mk}");
    check("mkflash -wait");
    for tgt in ["100A", "100C"] {
        qemu_io(&d, tgt, &["read -P 0x51 0 1M", "read -P 0 100M 1M", "read -P 0x52 500M 64k", "read -P 0x53 1023M 1M"]);
    }
    // A host TRIM of a standard volume reads back zero and keeps its space.
    qemu_io(&d, "100A", &["discard 0 1M", "read -P 0 0 1M"]);
    check("discard on the target");
    // An increment with a source track emptied again.
    for src in ["1009", "100B"] {
        qemu_io(&d, src, &["discard 500M 64k", "write -P 0x54 700M 64k"]);
    }
    dscli(&[&["resyncflash"][..], &options, &["1009:100A", "100B:100C"]].concat());
    check("resyncflash -wait");
    for tgt in ["100A", "100C"] {
        qemu_io(&d, tgt, &["read -P 0x51 0 1M", "read -P 0 500M 64k", "read -P 0x54 700M 64k"]);
    }
    // The target's image goes back to the source, holes included.
    for tgt in ["100A", "100C"] {
        qemu_io(&d, tgt, &["discard 1023M 1M", "write -P 0x55 800M 64k"]);
    }
    dscli(&[&["reverseflash"][..], &options, &["1009:100A", "100B:100C"]].concat());
    check("reverseflash -wait");
    for src in ["1009", "100B"] {
        qemu_io(&d, src, &["read -P 0x51 0 1M", "read -P 0x55 800M 64k", "read -P 0 1023M 1M"]);
    }
}
