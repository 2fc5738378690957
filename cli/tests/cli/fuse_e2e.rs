//! The FUSE view (`flashd run --mount DIR`) end to end, as the README tells it: a loop device
//! on a volume file, ext4 on it, a FlashCopy of the frozen filesystem, the target mounted
//! read-only showing exactly the T0 files, a resync showing the new ones. Also the file
//! rules (size, fresh zeros, fsync, truncate refused, rmfbvol refused while open, volumes
//! appearing and going, CKD not shown) and the life cycle (kill -9 leaves a dead mount that
//! the next start cleans; shutdown with a loop device still on a file unmounts lazily).
//! Needs root, /dev/fuse, losetup, mkfs.ext4 and fsfreeze; prints why it skips otherwise.
//! Every loop device and mount is undone by a Drop guard, also when an assertion fails.

use crate::site_proc::{Daemon, all_ok, fb_request, have, is_root};
use flashtrack::control::{Capacity, ItemOutcome, Reply, Request, VolumeSpec};
use flashtrack::error::ErrorKind;
use flashtrack::geometry::CapType;
use flashtrack::id::{ImageId, LssId, PoolId, VolumeId};
use flashtrack::image::record::{LcuType, Sam};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const IMAGE: &str = "IBM.2107-75FA120";

/// 64 MiB volumes (in 512-byte blocks): room for ext4, quick to make.
pub(crate) const BLOCKS: u64 = 131072;

/// Can `flashd run --mount` work here (root and /dev/fuse)? Prints why `test` skips when not.
pub(crate) fn fuse_available(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root (loop devices, mount, /dev/fuse)");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP {test}: /dev/fuse is missing (kernel without FUSE)");
        return false;
    }
    true
}

fn usable(test: &str) -> bool {
    fuse_available(test) && ["losetup", "mkfs.ext4", "fsfreeze", "blockdev"].iter().all(|t| have(t, test))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_mount_point(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m.replace("\\040", " ") == dir))
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, read_only: bool) -> Loop {
        let mut c = Command::new("losetup");
        c.args(["-f", "--show", "--direct-io=on"]);
        if read_only {
            c.arg("-r");
        }
        Loop(sh(c.arg(file)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Something mounted on a directory; unmounted on drop (lazily if it must be).
struct Mount(PathBuf);

impl Mount {
    fn new(dev: &str, dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        sh(Command::new("mount").args(["-o", opts, dev]).arg(dir));
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount_dir(&self.0);
    }
}

fn unmount_dir(dir: &Path) {
    let _ = Command::new("fsfreeze").arg("-u").arg(dir).stderr(std::process::Stdio::null()).status();
    for _ in 0..4 {
        if !is_mount_point(dir) {
            return;
        }
        if !Command::new("umount").arg(dir).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

/// The FUSE mount point: whatever flashd left there (a dead mount after kill -9, or a live
/// one when a test fails) is lazily unmounted on drop. Declared before the Daemon, so it
/// drops after it.
pub(crate) struct FuseDir(pub(crate) PathBuf);

impl Drop for FuseDir {
    fn drop(&mut self) {
        while is_mount_point(&self.0) {
            if !Command::new("umount").arg("-l").arg(&self.0).status().is_ok_and(|s| s.success()) {
                break;
            }
        }
    }
}

pub(crate) fn start(home: &Path, mnt: &Path) -> Daemon {
    Daemon::start_with(home, &[OsStr::new("--mount"), mnt.as_os_str()], &[])
}

fn dscli(home: &Path, args: &[&str]) -> String {
    sh(Command::new(env!("CARGO_BIN_EXE_dscli"))
        .args(args)
        .env("FLASHTRACK_HOME", home)
        .env("HOME", home)
        .env_remove("FLASHTRACK_DSCLI_PROFILE")
        .env_remove("XDG_DATA_HOME"))
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn write_file(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn fuse_view_mkfs_flashcopy_and_mount_the_t0_copy() {
    let test = "fuse_view_mkfs_flashcopy_and_mount_the_t0_copy";
    if !usable(test) {
        return;
    }
    let mounts = tempfile::tempdir().unwrap(); // dropped last: nothing is mounted in it by then
    let home = tempfile::tempdir().unwrap();
    let mnt = mounts.path().join("volumes");
    let _fuse = FuseDir(mnt.clone());
    let d = start(home.path(), &mnt);
    let img: ImageId = IMAGE.parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
    let dir = mnt.join(IMAGE);
    let (src, tgt) = (dir.join("1000"), dir.join("1001"));

    // The file: the volume's size; a fresh ese volume reads zero.
    assert_eq!(names(&mnt), set(&[IMAGE]));
    assert_eq!(names(&dir), set(&["1000", "1001"]));
    assert_eq!(std::fs::metadata(&src).unwrap().len(), BLOCKS * 512);
    let mut head = vec![0xffu8; 1 << 20];
    std::fs::File::open(&src).unwrap().read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&b| b == 0), "a fresh ese volume must read zero");

    // fsync works; truncate is refused; rmfbvol is refused while the file is open.
    {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&src).unwrap();
        f.write_all(&[0x5a; 4096]).unwrap();
        f.sync_all().expect("fsync of a volume file");
        let e = f.set_len(1 << 20).expect_err("truncate of a volume file must be refused");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        let Reply::Items(items) = d.ok(Request::VolumeRemove {
            image: img.clone(),
            volumes: vec![VolumeId(0x1000)],
            safe: false,
            stgtype: None,
        }) else {
            panic!("expected items")
        };
        let ItemOutcome { result, .. } = &items[0];
        assert_eq!(result.as_ref().expect_err("rmfbvol while open").kind, ErrorKind::VolumeInUse);
    }
    assert_eq!(std::fs::metadata(&src).unwrap().len(), BLOCKS * 512, "size unchanged");

    // Volumes made and removed while mounted appear and go; CKD volumes are never shown.
    all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1002])));
    all_ok(d.ok(Request::LcuCreate {
        image: img.clone(),
        first: LssId(0x20),
        qty: 1,
        ssid: 0x2000,
        lcutype: LcuType::T3990_6,
    }));
    let spec = VolumeSpec { pool: PoolId(2), capacity: Capacity::Ckd { cylinders: 10 }, sam: Sam::Ese };
    all_ok(d.ok(Request::VolumeCreate { image: img.clone(), spec, volumes: vec![(VolumeId(0x2000), String::new())] }));
    assert_eq!(names(&dir), set(&["1000", "1001", "1002"]));
    assert!(!dir.join("2000").exists(), "a CKD volume is shown");
    all_ok(d.ok(Request::VolumeRemove {
        image: img.clone(),
        volumes: vec![VolumeId(0x1002)],
        safe: false,
        stgtype: None,
    }));
    assert_eq!(names(&dir), set(&["1000", "1001"]));
    assert!(!dir.join("1002").exists());

    // The README's story.
    let lsrc = Loop::attach(&src, false);
    sh(Command::new("mkfs.ext4").args(["-q", "-F", &lsrc.0]));
    let fs_src = mounts.path().join("src");
    let m_src = Mount::new(&lsrc.0, &fs_src, "rw");
    for i in 1..=3 {
        write_file(&fs_src.join(format!("t0-{i}")), &format!("before the copy {i}\n"));
    }
    sh(Command::new("fsfreeze").arg("-f").arg(&fs_src));
    let out = dscli(home.path(), &["mkflash", "-record", "-persist", "1000:1001"]);
    sh(Command::new("fsfreeze").arg("-u").arg(&fs_src));
    assert!(out.contains("CMUC00137I"), "{out}");
    write_file(&fs_src.join("after-1"), "after the copy\n");
    write_file(&fs_src.join("t0-1"), "changed after the copy\n");

    let ltgt = Loop::attach(&tgt, true);
    let fs_tgt = mounts.path().join("tgt");
    {
        let _m = Mount::new(&ltgt.0, &fs_tgt, "ro,noload");
        assert_eq!(names(&fs_tgt), set(&["lost+found", "t0-1", "t0-2", "t0-3"]), "the target shows T0");
        assert_eq!(std::fs::read_to_string(fs_tgt.join("t0-1")).unwrap(), "before the copy 1\n");
    }

    sh(Command::new("fsfreeze").arg("-f").arg(&fs_src));
    let out = dscli(home.path(), &["resyncflash", "-record", "-persist", "1000:1001"]);
    sh(Command::new("fsfreeze").arg("-u").arg(&fs_src));
    assert!(out.contains("CMUC00168I"), "{out}");
    // The ext4 mount's cached blocks of the target device go with the unmount; drop any
    // buffers left so the remount reads the volume.
    sh(Command::new("blockdev").args(["--flushbufs", &ltgt.0]));
    {
        let _m = Mount::new(&ltgt.0, &fs_tgt, "ro,noload");
        assert_eq!(names(&fs_tgt), set(&["after-1", "lost+found", "t0-1", "t0-2", "t0-3"]), "after resync");
        assert_eq!(std::fs::read_to_string(fs_tgt.join("t0-1")).unwrap(), "changed after the copy\n");
    }
    drop(m_src);
    drop(ltgt);
    drop(lsrc);
    assert_eq!(d.stop(), Some(0));
    assert!(!is_mount_point(&mnt), "clean shutdown leaves the view mounted");
}

#[test]
fn fuse_view_comes_back_after_kill9_and_unmounts_lazily_when_busy() {
    let test = "fuse_view_comes_back_after_kill9_and_unmounts_lazily_when_busy";
    if !usable(test) {
        return;
    }
    let mounts = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mnt = mounts.path().join("volumes");
    let _fuse = FuseDir(mnt.clone());
    let img: ImageId = IMAGE.parse().unwrap();
    let file = mnt.join(IMAGE).join("1000");
    {
        let d = start(home.path(), &mnt);
        d.ok(Request::ImageCreate { id: img.clone() });
        all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1000])));
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(&[0x7e; 65536]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        d.kill9();
    }
    let e = std::fs::metadata(&mnt).expect_err("a killed flashd leaves a dead mount");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");

    // The next start cleans the dead mount and mounts again; the data is there.
    let d = start(home.path(), &mnt);
    let mut back = vec![0u8; 65536];
    std::fs::File::open(&file).unwrap().read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x7e), "data written before kill -9 reads back");
    let log = std::fs::read_to_string(home.path().join("flashd.log")).unwrap();
    assert!(log.contains("was a dead mount"), "flashd.log does not say it cleaned the dead mount");

    // Shutdown while a loop device holds the file: lazy unmount, said in flashd.log.
    let l = Loop::attach(&file, false);
    assert_eq!(d.stop(), Some(0));
    assert!(!is_mount_point(&mnt), "the view is still in the namespace after shutdown");
    let log = std::fs::read_to_string(home.path().join("flashd.log")).unwrap();
    assert!(log.contains("unmounted lazily (MNT_DETACH)"), "flashd.log: {log}");
    drop(l);
}

/// Writes parked at a freeze must not take the threads reads need: with more writers parked
/// than flashd has FUSE threads (16), a read still answers, and every write lands after
/// `unfreezeflash`.
#[test]
fn fuse_reads_go_on_while_writes_park_at_a_freeze() {
    let test = "fuse_reads_go_on_while_writes_park_at_a_freeze";
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP {test}: needs root and /dev/fuse");
        return;
    }
    const WRITERS: u64 = 20;
    let mounts = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mnt = mounts.path().join("volumes");
    let _fuse = FuseDir(mnt.clone());
    let d = start(home.path(), &mnt);
    let img: ImageId = IMAGE.parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1000, 0x1001])));
    let file = mnt.join(IMAGE).join("1000");
    let out = dscli(home.path(), &["mkflash", "-freeze", "-nocp", "1000:1001"]);
    assert!(out.contains("CMUC00137I"), "{out}");

    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let file = file.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                f.write_all_at(&[i as u8 + 1; 4096], i * 65536).unwrap();
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(writers.iter().all(|w| !w.is_finished()), "writes were not parked by the freeze");
    // A read on another thread, so a hang fails the test instead of stopping it.
    let reader = {
        let file = file.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            std::fs::File::open(&file).unwrap().read_exact(&mut buf).unwrap();
        })
    };
    let t = std::time::Instant::now();
    while !reader.is_finished() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let read_done = reader.is_finished();
    dscli(home.path(), &["unfreezeflash", "10"]);
    for w in writers {
        w.join().unwrap();
    }
    assert!(read_done, "a read waited behind {WRITERS} writes parked at a freeze");
    reader.join().unwrap();
    let mut f = std::fs::File::open(&file).unwrap();
    for i in 0..WRITERS {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, i * 65536).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8 + 1), "write {i} did not land after the thaw");
    }
    let _ = f.read(&mut [0u8; 1]);
    assert_eq!(d.stop(), Some(0));
}
