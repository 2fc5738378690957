//! flashd end to end with real NBD clients: images of both machine types, pools, FB and CKD
//! volumes (pools on loop devices when root, 512-byte and 4K sectors), qemu-io / qemu-img /
//! nbdinfo over nbd.sock, sparse usage, malformed NBD requests, clean shutdown. The I/O backend is the
//! one `FLASHTRACK_IO` selects (scripts/test.sh runs this on both).

use crate::site_proc::{Daemon, all_ok, fb_request, have, is_root};
use flashtrack::control::{Capacity, Reply, Request, VolumeSpec};
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId, PoolId, VolumeId};
use flashtrack::image::record::{LcuType, Sam, StorageType};
use flashtrack::nbd::client::{Client, Endpoint};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

fn uri(d: &Daemon, export: &str) -> String {
    format!("nbd+unix:///{export}?socket={}", d.nbd_sock().display())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hosts_read_and_write_fb_and_ckd_volumes_over_nbd() {
    if !have("qemu-io", "hosts_read_and_write_fb_and_ckd_volumes_over_nbd") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path());
    let ds8k: ImageId = "IBM.2107-75FA120".parse().unwrap();
    let ds6k: ImageId = "IBM.1750-68FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: ds8k.clone() });
    d.ok(Request::ImageCreate { id: ds6k.clone() });
    all_ok(d.ok(fb_request(&ds8k, 0, 1, CapType::Ds, Sam::Ese, &[0x1000])));
    // A partial last track: 1 GB (10^9 bytes).
    all_ok(d.ok(fb_request(&ds6k, 1, 1, CapType::Ess, Sam::Ese, &[0x0101])));
    all_ok(d.ok(Request::LcuCreate {
        image: ds8k.clone(),
        first: LssId(0x20),
        qty: 1,
        ssid: 0x2000,
        lcutype: LcuType::T3990_6,
    }));
    let spec = VolumeSpec { pool: PoolId(2), capacity: Capacity::Ckd { cylinders: 100 }, sam: Sam::Ese };
    all_ok(d.ok(Request::VolumeCreate { image: ds8k.clone(), spec, volumes: vec![(VolumeId(0x2000), "ckd".into())] }));

    // FB: patterns written and read back by qemu-io, including FUA, zeroes, discard, flush.
    let fb = uri(&d, "IBM.2107-75FA120/1000");
    run(Command::new("qemu-io").args(["-f", "raw", &fb]).args([
        "-c",
        "write -P 0xab 0 1M",
        "-c",
        "write -f -P 0xcd 100M 64k",
        "-c",
        "write -z 512k 64k",
        "-c",
        "discard 768k 128k",
        "-c",
        "flush",
        "-c",
        "read -P 0xab 0 512k",
        "-c",
        "read -P 0 512k 64k",
        "-c",
        "read -P 0 768k 128k",
        "-c",
        "read -P 0xcd 100M 64k",
        "-c",
        "read -P 0 200M 1M",
    ]));
    // qemu-img sees the size; qemu-img convert copies the export to a file, which must match.
    let info = run(Command::new("qemu-img").args(["info", "--output=json", &fb]));
    assert!(info.contains("\"virtual-size\": 1073741824"), "{info}");
    let copy = home.path().join("copy.raw");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &fb]).arg(&copy));
    let data = std::fs::read(&copy).unwrap();
    assert!(data[..512 * 1024].iter().all(|&b| b == 0xab));
    assert!(data[100 << 20..(100 << 20) + 65536].iter().all(|&b| b == 0xcd));

    // The 10^9-byte volume: the last partial track is writable up to the end and no further.
    let ess = uri(&d, "IBM.1750-68FA120/0101");
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        &ess,
        "-c",
        "write -P 0x11 999999488 512",
        "-c",
        "read -P 0x11 999999488 512",
    ]));
    let out = Command::new("qemu-io").args(["-f", "raw", &ess, "-c", "write -P 0x11 1000000000 512"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrote 512/512"), "write past the end succeeded");

    // CKD: slot layout; data in the first 56,664 bytes of a slot, tails read zero and refuse writes.
    let ckd = uri(&d, "IBM.2107-75FA120/2000");
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        &ckd,
        "-c",
        "write -P 0x3c 65536 56664",
        "-c",
        "read -P 0x3c 65536 56664",
        "-c",
        "read -P 0 122200 8872",
    ]));
    let out = Command::new("qemu-io").args(["-f", "raw", &ckd, "-c", "write -P 0x3c 60000 4096"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Invalid argument"), "write into a slot tail: {text}");

    // nbdinfo lists every volume.
    if have("nbdinfo", "hosts_read_and_write_fb_and_ckd_volumes_over_nbd (nbdinfo part)") {
        let list =
            run(Command::new("nbdinfo").arg("--list").arg(format!("nbd+unix://?socket={}", d.nbd_sock().display())));
        for name in ["IBM.2107-75FA120/1000", "IBM.2107-75FA120/2000", "IBM.1750-68FA120/0101"] {
            assert!(list.contains(name), "{name} missing from {list}");
        }
    }

    // Sparse usage: a 1 GiB ese volume with ~1.2 MiB written occupies a few MiB at most.
    let Reply::Volumes(vols) = d.ok(Request::VolumeList { image: ds8k.clone() }) else { panic!() };
    let v = vols.iter().find(|v| v.record.id == VolumeId(0x1000)).unwrap();
    assert!(v.allocated_bytes >= 512 << 10 && v.allocated_bytes < 8 << 20, "allocated {}", v.allocated_bytes);
    let file = home.path().join("IBM.2107-75FA120/pools/P0/IBM.2107-75FA120_1000.vol");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(meta.blocks() * 512 < 8 << 20);

    // The daemon survives malformed requests and still serves.
    malformed_requests(&d);
    run(Command::new("qemu-io").args(["-f", "raw", &fb, "-c", "read -P 0xab 0 64k"]));

    assert_eq!(d.stop(), Some(0));
    assert!(home.path().join("clean").exists());
}

/// Raw NBD: handshake by hand, then bad requests. Each must get an errno reply or a
/// disconnect, never a crash.
fn malformed_requests(d: &Daemon) {
    let name = b"IBM.2107-75FA120/1000";
    let connect = || {
        let mut s = UnixStream::connect(d.nbd_sock()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        s.write_all(&3u32.to_be_bytes()).unwrap(); // FIXED_NEWSTYLE | NO_ZEROES
        // NBD_OPT_EXPORT_NAME: the reply is size (8) + flags (2), no zeroes.
        s.write_all(&0x49484156454F5054u64.to_be_bytes()).unwrap();
        s.write_all(&1u32.to_be_bytes()).unwrap();
        s.write_all(&(name.len() as u32).to_be_bytes()).unwrap();
        s.write_all(name).unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 1 << 30);
        s
    };
    let request = |cmd: u16, handle: u64, offset: u64, len: u32| {
        let mut r = Vec::with_capacity(28);
        r.extend_from_slice(&0x25609513u32.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&cmd.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r
    };
    let errno_of = |s: &mut UnixStream, handle: u64| -> u32 {
        let mut rep = [0u8; 16];
        s.read_exact(&mut rep).unwrap();
        assert_eq!(u32::from_be_bytes(rep[..4].try_into().unwrap()), 0x67446698);
        assert_eq!(u64::from_be_bytes(rep[8..].try_into().unwrap()), handle);
        u32::from_be_bytes(rep[4..8].try_into().unwrap())
    };
    // A read past the end: EINVAL (22), connection stays usable.
    let mut s = connect();
    s.write_all(&request(0, 7, (1 << 30) - 512, 4096)).unwrap();
    assert_eq!(errno_of(&mut s, 7), 22);
    // An unknown command: EINVAL.
    s.write_all(&request(0x55, 8, 0, 512)).unwrap();
    assert_eq!(errno_of(&mut s, 8), 22);
    // Still serving on this connection.
    s.write_all(&request(0, 9, 0, 512)).unwrap();
    assert_eq!(errno_of(&mut s, 9), 0);
    let mut data = [0u8; 512];
    s.read_exact(&mut data).unwrap();
    assert!(data.iter().all(|&b| b == 0xab));
    // Bad magic: the server disconnects.
    let mut s = connect();
    let mut bad = request(0, 1, 0, 512);
    bad[0] = 0;
    s.write_all(&bad).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "server answered a request with a bad magic");
    // A short header, then hang up.
    let mut s = connect();
    s.write_all(&request(0, 1, 0, 512)[..10]).unwrap();
    drop(s);
}

/// A loop device, detached on drop.
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_pool_on_a_loop_device() {
    if !is_root() {
        eprintln!("SKIP a_pool_on_a_loop_device: needs root for losetup");
        return;
    }
    if !have("losetup", "a_pool_on_a_loop_device") || !have("qemu-io", "a_pool_on_a_loop_device") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let backing = home.path().join("loop.img");
    std::fs::File::create(&backing).unwrap().set_len(256 << 20).unwrap();
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&backing).output().unwrap();
    if !out.status.success() {
        eprintln!("SKIP a_pool_on_a_loop_device: losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _detach = Detach(dev.clone());
    let d = Daemon::start(home.path());
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    let Reply::Items(items) = d.ok(Request::PoolCreate {
        image: img.clone(),
        name: "loop".into(),
        rankgrp: 0,
        stgtype: StorageType::Fb,
        path: Some(dev.clone().into()),
    }) else {
        panic!()
    };
    assert_eq!(items[0].object, "P4");
    // Two 64 MiB volumes carved from the device, written and read by qemu-io.
    all_ok(d.ok(fb_request(&img, 4, 131072, CapType::Blocks, Sam::Standard, &[0x1000, 0x1002])));
    for (vol, pat) in [("1000", "0x5a"), ("1002", "0xa5")] {
        let u = uri(&d, &format!("IBM.2107-75FA120/{vol}"));
        run(Command::new("qemu-io").args([
            "-f",
            "raw",
            &u,
            "-c",
            &format!("write -P {pat} 0 64M"),
            "-c",
            &format!("read -P {pat} 0 64M"),
        ]));
    }
    // Unaligned I/O through the O_DIRECT device path.
    let u = uri(&d, "IBM.2107-75FA120/1000");
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        &u,
        "-c",
        "write -P 0x77 1000 3000",
        "-c",
        "read -P 0x77 1000 3000",
        "-c",
        "read -P 0x5a 4000 96",
    ]));
    // The second volume is untouched by the first's writes: regions do not overlap.
    let u2 = uri(&d, "IBM.2107-75FA120/1002");
    run(Command::new("qemu-io").args(["-f", "raw", &u2, "-c", "read -P 0xa5 0 64M"]));
    // A removed volume's data never shows in a new volume on the same region.
    all_ok(d.ok(Request::VolumeRemove {
        image: img.clone(),
        volumes: vec![VolumeId(0x1002)],
        safe: false,
        stgtype: None,
    }));
    all_ok(d.ok(fb_request(&img, 4, 131072, CapType::Blocks, Sam::Standard, &[0x1004])));
    let u4 = uri(&d, "IBM.2107-75FA120/1004");
    run(Command::new("qemu-io").args(["-f", "raw", &u4, "-c", "read -P 0 0 64M"]));
    // FlashCopy between two device regions (the copier's O_DIRECT device path).
    all_ok(d.ok(Request::FlashCreate {
        image: img.clone(),
        pairs: vec![(VolumeId(0x1000), VolumeId(0x1004))],
        options: flashtrack::flash::relationship::FlashOptions::default(),
    }));
    for _ in 0..200 {
        let Reply::Flash(v) = d.ok(Request::FlashWait {
            image: img.clone(),
            pairs: vec![(VolumeId(0x1000), VolumeId(0x1004))],
            timeout_ms: 500,
        }) else {
            panic!()
        };
        if v.is_empty() {
            break; // a COPY relationship without -persist ends when copied
        }
    }
    if have("qemu-img", "a_pool_on_a_loop_device (compare)") {
        run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw", &u, &u4]));
    }
    // A second pool on the same device is refused.
    let again =
        flashtrack::control::Client::connect(&home.path().join("control.sock")).unwrap().call(Request::PoolCreate {
            image: img.clone(),
            name: "again".into(),
            rankgrp: 1,
            stgtype: StorageType::Fb,
            path: Some(dev.clone().into()),
        });
    assert!(matches!(again, Ok(flashtrack::control::Response::Err(_))), "{again:?}");
    // A device with a mounted file system is refused, and the catalog stays as it was.
    let catalog = std::fs::read(home.path().join("IBM.2107-75FA120/catalog")).unwrap();
    let fs_img = home.path().join("fs.img");
    std::fs::File::create(&fs_img).unwrap().set_len(64 << 20).unwrap();
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&fs_img).output().unwrap();
    let dev2 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _detach2 = Detach(dev2.clone());
    let mnt = home.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mkfs = Command::new("mkfs.ext4").args(["-q", "-F", &dev2]).status().is_ok_and(|s| s.success());
    let mounted = mkfs && Command::new("mount").arg(&dev2).arg(&mnt).status().is_ok_and(|s| s.success());
    if mounted {
        let r = flashtrack::control::Client::connect(&home.path().join("control.sock")).unwrap().call(
            Request::PoolCreate {
                image: img.clone(),
                name: "mounted".into(),
                rankgrp: 1,
                stgtype: StorageType::Fb,
                path: Some(dev2.clone().into()),
            },
        );
        let _ = Command::new("umount").arg(&mnt).status();
        match r {
            Ok(flashtrack::control::Response::Err(e)) => {
                assert_eq!(e.kind, flashtrack::error::ErrorKind::DeviceMounted)
            }
            other => panic!("a mounted device was accepted: {other:?}"),
        }
        assert_eq!(
            std::fs::read(home.path().join("IBM.2107-75FA120/catalog")).unwrap(),
            catalog,
            "a refused pool changed the catalog"
        );
    } else {
        eprintln!("SKIP (part of a_pool_on_a_loop_device): could not mkfs and mount a loop device");
    }
    assert_eq!(d.stop(), Some(0));
}

/// NBD advertises the pool device's logical block size as the minimum block size: 4096 on a
/// 4K-sector device, 512 on a 512-byte one and on a file pool. Requests smaller than a 4K
/// sector are still served (read-modify-write of the sector, volume/backing.rs).
#[test]
fn nbd_block_size_follows_the_pool_device_sector_size() {
    let test = "nbd_block_size_follows_the_pool_device_sector_size";
    if !is_root() {
        eprintln!("SKIP {test}: needs root for losetup");
        return;
    }
    if !have("losetup", test) || !have("nbdinfo", test) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut devs = Vec::new();
    for sector in [4096, 512] {
        let backing = home.path().join(format!("loop{sector}.img"));
        std::fs::File::create(&backing).unwrap().set_len(128 << 20).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector.to_string()])
            .arg(&backing)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("SKIP {test}: losetup --sector-size {sector} failed: {}", String::from_utf8_lossy(&out.stderr));
            return;
        }
        devs.push(Detach(String::from_utf8_lossy(&out.stdout).trim().to_string()));
    }
    let d = Daemon::start(home.path());
    let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    // P4 (rank group 0) on the 4K device, P5 (rank group 1) on the 512-byte one.
    for (rankgrp, dev) in [(0, &devs[0]), (1, &devs[1])] {
        all_ok(d.ok(Request::PoolCreate {
            image: img.clone(),
            name: format!("loop{rankgrp}"),
            rankgrp,
            stgtype: StorageType::Fb,
            path: Some(dev.0.clone().into()),
        }));
    }
    all_ok(d.ok(fb_request(&img, 4, 131072, CapType::Blocks, Sam::Standard, &[0x1000])));
    all_ok(d.ok(fb_request(&img, 5, 131072, CapType::Blocks, Sam::Standard, &[0x1101])));
    all_ok(d.ok(fb_request(&img, 0, 131072, CapType::Blocks, Sam::Ese, &[0x1002])));
    for (vol, want) in [("1000", 4096), ("1101", 512), ("1002", 512)] {
        let out = run(Command::new("nbdinfo").args(["--json", &uri(&d, &format!("IBM.2107-75FA120/{vol}"))]));
        let info: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(info["exports"][0]["block_size_minimum"], want, "volume {vol}: {out}");
    }

    // A 512-byte write inside a 4K sector, and one across two sectors, change only their
    // bytes; sub-sector reads return them.
    let mut c = Client::connect(&Endpoint::Unix(d.nbd_sock()), "IBM.2107-75FA120/1000").unwrap();
    assert_eq!(c.block_sizes().min, 4096);
    c.write(0, &[0x11; 8192], false).unwrap();
    c.write(512, &[0x22; 512], false).expect("a 512-byte write inside a 4K sector");
    c.write(4000, &[0x33; 1000], true).expect("an unaligned write across two 4K sectors");
    let mut want = vec![0x11u8; 8192];
    want[512..1024].fill(0x22);
    want[4000..5000].fill(0x33);
    let mut got = vec![0u8; 8192];
    c.read(0, &mut got).unwrap();
    assert!(
        got == want,
        "4K volume after unaligned writes: first difference at byte {:?}",
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
    let mut part = [0u8; 512];
    c.read(512, &mut part).unwrap();
    assert!(part.iter().all(|&b| b == 0x22), "a 512-byte read inside a 4K sector");
    c.disconnect().unwrap();
    assert_eq!(d.stop(), Some(0));
}
