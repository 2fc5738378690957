//! A FUSE volume file behaves as the README's "FUSE view" says, as a block device file would,
//! driven with plain file I/O (no loop device): fallocate punch-hole and zero-range read back
//! zero (also over NBD), plain fallocate, truncate and O_TRUNC are refused, reads at the end
//! return nothing and writes there fail with ENOSPC, O_DSYNC writes and fsync work, and a
//! buffered read never shows bytes older than an NBD write. Also: flashd with `--mount` marks
//! itself an I/O flusher (PR_SET_IO_FLUSHER). Needs root and /dev/fuse; prints why it skips.

use crate::fuse_e2e::{BLOCKS, FuseDir, IMAGE, fuse_available, start};
use crate::site_proc::{Daemon, all_ok, fb_request, have};
use flashtrack::control::Request;
use flashtrack::geometry::CapType;
use flashtrack::id::ImageId;
use flashtrack::image::record::Sam;
use flashtrack::nbd::client::{Client, Endpoint};
use rustix::fs::FallocateFlags;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: u64 = BLOCKS * 512;
const KIB: u64 = 1024;

/// A flashd with the view mounted under `dir` and one ese FB volume, 1000; returns the mount
/// guard first, so that bound as `let (_fuse, d, file)` it drops after the daemon.
fn view_with_a_volume(home: &Path, dir: &Path) -> (FuseDir, Daemon, PathBuf) {
    let mnt = dir.join("volumes");
    let fuse = FuseDir(mnt.clone());
    let d = start(home, &mnt);
    let img: ImageId = IMAGE.parse().unwrap();
    d.ok(Request::ImageCreate { id: img.clone() });
    all_ok(d.ok(fb_request(&img, 0, BLOCKS, CapType::Blocks, Sam::Ese, &[0x1000])));
    (fuse, d, mnt.join(IMAGE).join("1000"))
}

/// The first MiB after the fallocate calls below: 0xab but for the zeroed ranges.
fn expected_first_mib() -> Vec<u8> {
    let mut want = vec![0xabu8; 1 << 20];
    for (off, len) in [(64 * KIB, 64 * KIB), (256 * KIB, 64 * KIB), (516 * KIB, 8 * KIB)] {
        want[off as usize..(off + len) as usize].fill(0);
    }
    want
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {i} is {:#04x}, expected {:#04x}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: length");
}

#[test]
fn fuse_file_fallocate_size_and_sync_rules() {
    let test = "fuse_file_fallocate_size_and_sync_rules";
    if !fuse_available(test) {
        return;
    }
    let mounts = tempfile::tempdir().unwrap(); // dropped last: nothing is mounted in it by then
    let home = tempfile::tempdir().unwrap();
    let (_fuse, d, file) = view_with_a_volume(home.path(), mounts.path());
    let f = OpenOptions::new().read(true).write(true).open(&file).unwrap();
    assert_eq!(f.metadata().unwrap().len(), SIZE);

    // Punch-hole is a TRIM, zero-range (with or without KEEP_SIZE) a WRITE_ZEROES: both read
    // back zero, through the file and over NBD, and nothing around them changes.
    f.write_all_at(&[0xab; 1 << 20], 0).unwrap();
    rustix::fs::fallocate(&f, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, 64 * KIB, 64 * KIB)
        .expect("fallocate PUNCH_HOLE|KEEP_SIZE");
    rustix::fs::fallocate(&f, FallocateFlags::ZERO_RANGE, 256 * KIB, 64 * KIB).expect("fallocate ZERO_RANGE");
    rustix::fs::fallocate(&f, FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE, 516 * KIB, 8 * KIB)
        .expect("fallocate ZERO_RANGE|KEEP_SIZE");
    let want = expected_first_mib();
    let mut got = vec![0u8; 1 << 20];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_same(&got, &want, "file after punch-hole and zero-range");
    let mut nbd = Client::connect(&Endpoint::Unix(d.nbd_sock()), &format!("{IMAGE}/1000")).unwrap();
    got.fill(0x55);
    nbd.read(0, &mut got).unwrap();
    assert_same(&got, &want, "NBD read after punch-hole and zero-range");

    // A plain allocation is not supported, as on a block device, and changes nothing.
    let e = rustix::fs::fallocate(&f, FallocateFlags::empty(), 0, 4096).expect_err("plain fallocate");
    assert_eq!(e, rustix::io::Errno::OPNOTSUPP, "plain fallocate: {e}");
    let mut head = [0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0xab), "a refused fallocate changed the data");

    // The size is the volume's: truncate and O_TRUNC are refused, and neither zeroes anything.
    for len in [SIZE / 2, 0, SIZE * 2] {
        let e = f.set_len(len).expect_err("truncate of a volume file");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "set_len({len}): {e}");
    }
    let e = OpenOptions::new().write(true).truncate(true).open(&file).expect_err("open with O_TRUNC");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "O_TRUNC: {e}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), SIZE, "size changed");
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0xab), "a refused truncate changed the data");

    // The end, as on a block device file: a read there returns nothing, one across it stops
    // at it, a write there gets ENOSPC.
    let mut buf = vec![0u8; 8192];
    assert_eq!(f.read_at(&mut buf, SIZE).unwrap(), 0, "read at the end");
    assert_eq!(f.read_at(&mut buf, SIZE + 65536).unwrap(), 0, "read past the end");
    assert_eq!(f.read_at(&mut buf, SIZE - 4096).unwrap(), 4096, "read across the end");
    let e = f.write_at(&[1; 4096], SIZE).expect_err("write at the end");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "write at the end: {e}");

    // An O_DSYNC write (FUA) succeeds and reads back, through the file and over NBD.
    let sync = OpenOptions::new().write(true).custom_flags(libc::O_DSYNC).open(&file).unwrap();
    sync.write_all_at(&[0x5d; 65536], 2 << 20).expect("O_DSYNC write");
    drop(sync);
    let mut back = vec![0u8; 65536];
    f.read_exact_at(&mut back, 2 << 20).unwrap();
    assert!(back.iter().all(|&b| b == 0x5d), "O_DSYNC write does not read back");
    back.fill(0);
    nbd.read(2 << 20, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x5d), "O_DSYNC write does not read back over NBD");

    // fsync and fdatasync are answered (an ENOSYS would make the kernel skip every later one).
    f.write_all_at(&[0x6e; 4096], 3 << 20).unwrap();
    f.sync_all().expect("fsync of a volume file");
    f.sync_data().expect("fdatasync of a volume file");
    nbd.disconnect().unwrap();
    drop(f);
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn fuse_file_reads_never_show_stale_bytes_after_nbd_writes() {
    let test = "fuse_file_reads_never_show_stale_bytes_after_nbd_writes";
    if !fuse_available(test) || !have("qemu-io", test) {
        return;
    }
    let mounts = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_fuse, d, file) = view_with_a_volume(home.path(), mounts.path());
    let uri = format!("nbd+unix:///{IMAGE}/1000?socket={}", d.nbd_sock().display());
    let qemu_io = |cmd: &str| {
        let out = Command::new("qemu-io").args(["-f", "raw", &uri, "-c", cmd]).output().unwrap();
        assert!(out.status.success(), "qemu-io {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };

    // A plain buffered open, read before the NBD write: a page cache would now hold zeros.
    let f = File::open(&file).unwrap();
    let mut buf = vec![0xffu8; 65536];
    f.read_exact_at(&mut buf, 4 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a fresh ese volume must read zero");
    qemu_io("write -P 0x3c 4M 64k");
    f.read_exact_at(&mut buf, 4 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0x3c), "the file shows bytes older than an NBD write");
    // And back: an NBD discard is seen too.
    qemu_io("discard 4M 64k");
    f.read_exact_at(&mut buf, 4 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "the file shows bytes older than an NBD discard");
    drop(f);
    assert_eq!(d.stop(), Some(0));
}

/// Bits of `CapEff` and of a task's flags (include/linux/sched.h, unchanged through 6.x;
/// PR_SET_IO_FLUSHER sets both flags on the calling thread, kernel/sys.c `PR_IO_FLUSHER`).
const CAP_SYS_RESOURCE: u32 = 24;
const PF_MEMALLOC_NOIO: u64 = 0x0008_0000;
const PF_LOCAL_THROTTLE: u64 = 0x0010_0000;

/// Field 9 (flags) of a /proc `stat` file, None if the task is gone (an io_uring worker may
/// exit when idle). The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its closing one.
fn task_flags(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let rest = &text[text.rfind(')').expect("stat has (comm)") + 1..];
    Some(rest.split_whitespace().nth(6).expect("stat field 9").parse().unwrap())
}

#[test]
fn flashd_with_a_mount_is_an_io_flusher() {
    let test = "flashd_with_a_mount_is_an_io_flusher";
    if !fuse_available(test) {
        return;
    }
    let mounts = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_fuse, d, _file) = view_with_a_volume(home.path(), mounts.path());
    let pid: u32 = std::fs::read_to_string(home.path().join("flashd.pid")).unwrap().trim().parse().unwrap();
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(proc.join("status")).unwrap();
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff in status");
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    let log = std::fs::read_to_string(home.path().join("flashd.log")).unwrap();
    let warning = "cannot mark flashd an I/O flusher";

    if cap_eff & (1 << CAP_SYS_RESOURCE) == 0 {
        assert!(log.contains(warning), "flashd without CAP_SYS_RESOURCE does not say so; flashd.log: {log}");
        eprintln!("SKIP {test}: no CAP_SYS_RESOURCE here, checked the warning instead");
        assert_eq!(d.stop(), Some(0));
        return;
    }
    assert!(!log.contains(warning), "flashd has CAP_SYS_RESOURCE yet warns: {log}");
    let flusher = PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE;
    let leader = task_flags(&proc.join("stat")).expect("flashd is running");
    assert_eq!(leader & flusher, flusher, "flashd's flags {leader:#x} lack PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE");
    // The mark comes before any thread starts (NBD, FUSE, copier), and threads inherit it.
    let mut threads = 0;
    for task in std::fs::read_dir(proc.join("task")).unwrap() {
        let task = task.unwrap();
        if task.file_name().to_string_lossy() == pid.to_string() {
            continue;
        }
        let Some(flags) = task_flags(&task.path().join("stat")) else { continue };
        assert_eq!(flags & flusher, flusher, "thread {:?} flags {flags:#x} lack the mark", task.file_name());
        threads += 1;
    }
    assert!(threads > 0, "flashd runs no thread besides its main one");
    assert_eq!(d.stop(), Some(0));
}
