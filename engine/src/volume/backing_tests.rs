//! Tests of [`Backing`] and [`DeviceHandle`]. Device tests need root and `losetup`; without
//! them they print a skip reason and pass.

use super::*;
use crate::io::conformance::pattern;
use crate::io::{SyncEngine, UringEngine};
use std::process::Command;

fn engines() -> Vec<Arc<dyn IoEngine>> {
    vec![Arc::new(SyncEngine), Arc::new(UringEngine::new(64).expect("io_uring"))]
}

fn kind(r: Result<impl std::fmt::Debug>) -> ErrorKind {
    r.expect_err("must fail").kind
}

/// A loop device over a sparse temporary file, detached on drop.
#[derive(Debug)]
pub(crate) struct LoopDev {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDev {
    /// None (after printing why) when not root or losetup fails.
    pub(crate) fn new(size: u64, sector: u32) -> Option<LoopDev> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skip: loop device tests need root");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let img = dir.path().join("loop.img");
        File::create(&img).and_then(|f| f.set_len(size)).ok()?;
        let out =
            Command::new("losetup").args(["-f", "--show", "--sector-size", &sector.to_string()]).arg(&img).output();
        match out {
            Ok(o) if o.status.success() => {
                let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                Some(LoopDev { path, _dir: dir })
            }
            Ok(o) => {
                eprintln!("skip: losetup failed: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skip: losetup unavailable: {e}");
                None
            }
        }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.path).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("warning: losetup -d {} failed: {other:?}", self.path.display()),
        }
    }
}

#[test]
fn sparse_and_standard_files() {
    let dir = tempfile::tempdir().expect("dir");
    let sparse = Backing::create_file(dir.path().join("a"), 64 << 20, false).expect("create sparse");
    assert_eq!(sparse.len(), 64 << 20);
    assert!(!sparse.is_device());
    assert_eq!(sparse.block_size(), 512);
    assert!(sparse.allocated_bytes().expect("alloc") < 1 << 20);
    let standard = Backing::create_file(dir.path().join("b"), 8 << 20, true).expect("create standard");
    assert!(standard.allocated_bytes().expect("alloc") >= 8 << 20);
    // Never clobbers.
    assert_eq!(kind(Backing::create_file(dir.path().join("a"), 4096, false)), ErrorKind::VolumeExists);
    assert_eq!(std::fs::metadata(dir.path().join("a")).expect("stat").len(), 64 << 20);
    // Missing pool directory.
    assert_eq!(kind(Backing::create_file(dir.path().join("no/x"), 4096, false)), ErrorKind::PoolPathInvalid);
    // Reopen with the right and the wrong length.
    Backing::open_file(dir.path().join("a"), 64 << 20).expect("open");
    assert_eq!(kind(Backing::open_file(dir.path().join("a"), 4096)), ErrorKind::Corrupt);
    assert_eq!(kind(Backing::open_file(dir.path().join("zz"), 4096)), ErrorKind::Io);
    // Grow, never shrink.
    sparse.grow(128 << 20, false).expect("grow");
    assert_eq!(sparse.len(), 128 << 20);
    assert_eq!(std::fs::metadata(dir.path().join("a")).expect("stat").len(), 128 << 20);
    assert_eq!(kind(sparse.grow(1 << 20, false)), ErrorKind::ShrinkNotAllowed);
    standard.grow(16 << 20, true).expect("grow standard");
    assert!(standard.allocated_bytes().expect("alloc") >= 16 << 20);
    // Remove (twice is fine).
    sparse.remove().expect("remove");
    sparse.remove().expect("remove again");
    assert!(!dir.path().join("a").exists());
}

#[test]
fn failed_create_leaves_no_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("huge");
    // Far beyond the file system: fallocate fails (EFBIG or ENOSPC).
    let err = Backing::create_file(&path, 1 << 62, true).expect_err("too big");
    assert!(matches!(err.kind, ErrorKind::Io | ErrorKind::NoSpace | ErrorKind::CapacityTooLarge), "{err}");
    assert!(!path.exists(), "partial file must be removed");
}

#[test]
fn file_data_path_with_bounds() {
    for io in engines() {
        let dir = tempfile::tempdir().expect("dir");
        let b = Backing::create_file(dir.path().join("v"), 1 << 20, false).expect("create");
        let data = pattern(5, 100_000);
        b.write(&*io, 777, &data).expect("write");
        b.sync(&*io).expect("sync");
        let mut back = vec![0; data.len()];
        b.read(&*io, 777, &mut back).expect("read");
        assert_eq!(back, data);
        let einval = |r: io::Result<()>| r.expect_err("out of bounds").raw_os_error();
        assert_eq!(einval(b.write(&*io, (1 << 20) - 10, &[0; 11])), Some(libc::EINVAL));
        assert_eq!(einval(b.read(&*io, u64::MAX, &mut [0; 2])), Some(libc::EINVAL));
        assert_eq!(einval(b.punch(&*io, 1 << 20, 1)), Some(libc::EINVAL));
        b.write(&*io, (1 << 20) - 10, &[1; 10]).expect("last bytes");
        b.zero(&*io, 1000, 100).expect("zero");
        b.punch(&*io, 0, 1 << 20).expect("punch all");
        b.read(&*io, 0, &mut back).expect("read");
        assert!(back.iter().all(|&x| x == 0));
    }
}

#[test]
fn refuses_non_block_devices() {
    let f = tempfile::NamedTempFile::new().expect("file");
    assert_eq!(kind(DeviceHandle::open(f.path())), ErrorKind::PoolPathInvalid);
    assert_eq!(kind(DeviceHandle::open("/nonexistent/dev")), ErrorKind::PoolPathInvalid);
    assert_eq!(kind(DeviceHandle::open("/dev/null")), ErrorKind::PoolPathInvalid);
}

#[test]
fn unescape_octal() {
    assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
    assert_eq!(unescape(r"/x\134y\011"), "/x\\y\t");
    assert_eq!(unescape(r"/plain\04"), r"/plain\04");
    assert_eq!(parse_dev("7:3"), Some(rustix::fs::makedev(7, 3)));
}

/// Model-checked I/O through a device region at aligned and unaligned offsets, for both
/// engines and both logical block sizes.
#[test]
fn device_region_io() {
    for sector in [512, 4096] {
        let Some(lo) = LoopDev::new(16 << 20, sector) else { return };
        let dev = Arc::new(DeviceHandle::open(&lo.path).expect("open loop"));
        assert_eq!(dev.block_size(), sector);
        assert_eq!(dev.size(), 16 << 20);
        assert_eq!(kind(Backing::device_region(Arc::clone(&dev), 100, 4096)), ErrorKind::InvalidArgument);
        assert_eq!(kind(Backing::device_region(Arc::clone(&dev), 0, 17 << 20)), ErrorKind::CapacityTooLarge);
        for io in engines() {
            let base = 4 << 20;
            let len = 3 << 20;
            let b = Backing::device_region(Arc::clone(&dev), base, len).expect("region");
            assert!(b.is_device());
            assert_eq!(b.block_size(), sector);
            assert_eq!(b.allocated_bytes().expect("alloc"), len);
            let mut model = vec![0u8; len as usize];
            b.zero(&*io, 0, len).expect("clear region");
            let writes: [(u64, usize); 7] =
                [(0, 4096), (1, 1), (4095, 2), (10_000, 70_000), (8192, 512), (len - 5, 5), (65_536 * 3 + 7, 1 << 21)];
            for (i, &(off, n)) in writes.iter().enumerate() {
                let data = pattern(i as u64 + 40, n);
                b.write(&*io, off, &data).expect("write");
                model[off as usize..off as usize + n].copy_from_slice(&data);
            }
            b.zero(&*io, 5000, 20_000).expect("zero unaligned");
            model[5000..25_000].fill(0);
            b.punch(&*io, 1 << 20, (1 << 20) + 4097).expect("punch unaligned");
            model[1 << 20..(2 << 20) + 4097].fill(0);
            b.sync(&*io).expect("sync");
            for (off, n) in [(0u64, len as usize), (3, 100_001), (len - 1, 1)] {
                let mut back = vec![0xAB; n];
                b.read(&*io, off, &mut back).expect("read");
                assert!(back == model[off as usize..off as usize + n], "sector {sector} off {off} {:?}", io.kind());
            }
            // Outside the region: untouched (still zero from the fresh loop file).
            let mut outside = vec![0xAB; 4096];
            dev.read_at(&*io, &mut outside, base - 4096).expect("read below");
            assert!(outside.iter().all(|&x| x == 0));
            assert_eq!(b.write(&*io, len, &[1]).expect_err("bounds").raw_os_error(), Some(libc::EINVAL));
            b.grow(len + 4096, false).expect("grow region");
            assert_eq!(kind(b.grow(64 << 20, false)), ErrorKind::CapacityTooLarge);
            b.remove().expect("remove is a no-op");
        }
    }
}

/// 8 threads write disjoint 100-byte pieces that share 4 KiB blocks: without the
/// read-modify-write lock some pieces would be lost.
#[test]
fn concurrent_unaligned_device_writes() {
    let Some(lo) = LoopDev::new(4 << 20, 4096) else { return };
    let dev = Arc::new(DeviceHandle::open(&lo.path).expect("open"));
    for io in engines() {
        let b = Arc::new(Backing::device_region(Arc::clone(&dev), 0, 1 << 20).expect("region"));
        b.zero(&*io, 0, 1 << 20).expect("clear");
        let piece = |t: u64, i: u64| (i * 8 + t) * 100;
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (b, io) = (Arc::clone(&b), Arc::clone(&io));
                std::thread::spawn(move || {
                    for i in 0..200 {
                        b.write(&*io, piece(t, i), &pattern(t * 1000 + i, 100)).expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        for t in 0..8 {
            for i in 0..200 {
                let mut back = vec![0; 100];
                b.read(&*io, piece(t, i), &mut back).expect("read");
                assert_eq!(back, pattern(t * 1000 + i, 100), "thread {t} piece {i}");
            }
        }
    }
}

#[test]
fn exclusive_open() {
    let Some(lo) = LoopDev::new(1 << 20, 512) else { return };
    let first = DeviceHandle::open(&lo.path).expect("first open");
    assert_eq!(kind(DeviceHandle::open(&lo.path)), ErrorKind::DeviceInUse);
    drop(first);
    DeviceHandle::open(&lo.path).expect("free again");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success()) {
            eprintln!("warning: umount {} failed", self.0.display());
        }
    }
}

/// A fresh ext4 on a loop device, mounted on a temporary directory. Fields drop in order:
/// unmount, then the directory, then the loop device.
struct MountedExt4 {
    mount: Mount,
    dir: tempfile::TempDir,
    lo: LoopDev,
}

/// [`MountedExt4`] of `size` bytes (None, with the reason printed, without root, losetup,
/// mkfs.ext4 or mount).
fn mounted_ext4(size: u64) -> Option<MountedExt4> {
    let lo = LoopDev::new(size, 512)?;
    let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&lo.path).output();
    if !mkfs.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skip: mkfs.ext4 unavailable or failed: {mkfs:?}");
        return None;
    }
    let dir = tempfile::tempdir().expect("mount point");
    if !Command::new("mount").arg(&lo.path).arg(dir.path()).status().is_ok_and(|s| s.success()) {
        eprintln!("skip: mount failed");
        return None;
    }
    Some(MountedExt4 { mount: Mount(dir.path().to_path_buf()), dir, lo })
}

#[test]
fn mounted_device_refused() {
    let Some(m) = mounted_ext4(32 << 20) else { return };
    let err = DeviceHandle::open(&m.lo.path).expect_err("mounted");
    assert_eq!(err.kind, ErrorKind::DeviceMounted, "{err}");
    assert!(err.detail.contains("mounted at"), "{err}");
    drop(m.mount);
    DeviceHandle::open(&m.lo.path).expect("usable after umount");
}

/// Free bytes of the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).expect("statvfs");
    s.f_bavail * s.f_frsize
}

#[test]
fn set_standard_allocates_a_hole_the_block_count_hides() {
    // st_blocks counts extent-tree blocks too: a 1 GiB file (more extents than fit in the
    // inode) with one 4 KiB hole still shows blocks x 512 >= len.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("v");
    let len = 1u64 << 30;
    let b = Backing::create_file(&path, len, true).expect("backing");
    SyncEngine.punch_hole(b.file_fd().expect("file"), 512 << 20, 4096).expect("punch");
    drop(b);
    let b = Backing::open_file(&path, len).expect("open");
    b.set_standard(true).expect("standard");
    let before = b.allocated_bytes().expect("alloc");
    // Anything set_standard left unallocated, this allocates.
    let f = File::options().write(true).open(&path).expect("open");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len).expect("fallocate");
    assert_eq!(b.allocated_bytes().expect("alloc"), before, "set_standard left a hole");
}

#[test]
fn set_standard_that_does_not_fit_takes_no_space() {
    // A standard file thinned by an earlier version, in a pool whose free space ese volumes
    // have used since: allocating it again fails, and must not take the pool's last bytes.
    let Some(m) = mounted_ext4(64 << 20) else { return };
    let dir = &m.dir;
    let len = 40u64 << 20;
    let std_path = dir.path().join("std");
    let b = Backing::create_file(&std_path, len, true).expect("standard");
    SyncEngine.punch_hole(b.file_fd().expect("file"), 0, 30 << 20).expect("thinned");
    drop(b);
    let ese = Backing::create_file(dir.path().join("ese"), len, false).expect("ese");
    let free = free_bytes(dir.path());
    ese.write(&SyncEngine, 0, &vec![7u8; (free - (4 << 20)) as usize]).expect("ese data");
    ese.sync(&SyncEngine).expect("sync");
    let free = free_bytes(dir.path());
    assert!(free < 30 << 20, "the holes no longer fit ({free} bytes free)");
    let b = Backing::open_file(&std_path, len).expect("open");
    let _ = b.set_standard(true); // open_volume logs a failure and goes on
    assert!(b.is_standard());
    assert_eq!(free_bytes(dir.path()), free, "a failed set_standard took the pool's free space");
    ese.write(&SyncEngine, 36 << 20, &[1u8; 4096]).expect("ese volumes can still write");
    ese.sync(&SyncEngine).expect("sync");
}

#[test]
fn a_standard_discard_that_cannot_zero_in_place_punches() {
    // A standard file left thin (a full pool at open) may have no space to zero a range in
    // place: the discard still succeeds and reads zero, by punching.
    use crate::io::fault::{FaultEngine, FaultOp, FaultRule};
    let dir = tempfile::tempdir().expect("dir");
    let b = Backing::create_file(dir.path().join("v"), 1 << 20, true).expect("standard");
    let fault = FaultEngine::new(Arc::new(SyncEngine));
    b.write(&fault, 0, &[9u8; 65536]).expect("data");
    fault.inject(FaultRule::on_fd(FaultOp::Zero, b.file_fd().expect("file"), libc::ENOSPC));
    b.punch(&fault, 0, 65536).expect("the discard falls back to a punch");
    let mut got = vec![1u8; 65536];
    b.read(&fault, 0, &mut got).expect("read");
    assert!(got.iter().all(|&x| x == 0), "a discarded range reads zero");
    // Any other failure still fails the discard.
    fault.clear_faults();
    fault.inject(FaultRule::on_fd(FaultOp::Zero, b.file_fd().expect("file"), libc::EIO));
    assert_eq!(b.punch(&fault, 0, 4096).expect_err("EIO").raw_os_error(), Some(libc::EIO));
}
