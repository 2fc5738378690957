//! Test bodies every [`IoEngine`] must pass; each backend's test module calls them, so the
//! sync and io_uring engines are held to exactly the same behaviour.

use super::{IoEngine, Op};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

/// A deterministic byte pattern that differs per (seed, position).
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn temp_file() -> File {
    tempfile::tempfile().expect("temp file")
}

pub(crate) fn round_trip(e: &dyn IoEngine) {
    let f = temp_file();
    let data = pattern(1, 3 * 65_536 + 123);
    e.write_at(f.as_fd(), &data, 4096 + 7).expect("write");
    e.sync_data(f.as_fd()).expect("sync");
    let mut back = vec![0xAA; data.len()];
    e.read_at(f.as_fd(), &mut back, 4096 + 7).expect("read");
    assert_eq!(back, data);
    // Bytes before the write are a hole and read as zero.
    let mut head = vec![0xAA; 4096];
    e.read_at(f.as_fd(), &mut head, 0).expect("read head");
    assert!(head.iter().all(|&b| b == 0));
    // Empty requests are fine.
    e.read_at(f.as_fd(), &mut [], 0).expect("empty read");
    e.write_at(f.as_fd(), &[], 0).expect("empty write");
    // The data really is in the file (checked with plain std I/O).
    let mut direct = vec![0; data.len()];
    f.read_exact_at(&mut direct, 4096 + 7).expect("std read");
    assert_eq!(direct, data);
}

pub(crate) fn eof_zero_fill(e: &dyn IoEngine) {
    let f = temp_file();
    f.write_all_at(&[5u8; 1000], 0).expect("seed");
    let mut buf = vec![0xFF; 3000];
    e.read_at(f.as_fd(), &mut buf, 500).expect("read across EOF");
    assert!(buf[..500].iter().all(|&b| b == 5));
    assert!(buf[500..].iter().all(|&b| b == 0));
    let mut far = vec![0xFF; 100];
    e.read_at(f.as_fd(), &mut far, 1 << 30).expect("read past EOF");
    assert!(far.iter().all(|&b| b == 0));
}

pub(crate) fn punch_and_zero(e: &dyn IoEngine) {
    let f = temp_file();
    let mib = 1 << 20;
    e.write_at(f.as_fd(), &pattern(2, 4 * mib), 0).expect("fill");
    e.sync_data(f.as_fd()).expect("sync");
    let before = f.metadata().expect("stat").blocks();
    e.punch_hole(f.as_fd(), mib as u64, 2 * mib as u64).expect("punch");
    let after = f.metadata().expect("stat").blocks();
    // 2 MiB = 4096 sectors fewer (the file system's block size divides 1 MiB).
    assert_eq!(before - after, 4096, "punch must deallocate");
    assert_eq!(f.metadata().expect("stat").len(), 4 * mib as u64, "KEEP_SIZE");
    let mut buf = vec![0xFF; 2 * mib];
    e.read_at(f.as_fd(), &mut buf, mib as u64).expect("read hole");
    assert!(buf.iter().all(|&b| b == 0));

    e.zero_range(f.as_fd(), 3 * mib as u64 + 10, 1000).expect("zero range");
    let mut buf = vec![0xFF; mib];
    e.read_at(f.as_fd(), &mut buf, 3 * mib as u64).expect("read");
    let orig = pattern(2, 4 * mib);
    assert_eq!(&buf[..10], &orig[3 * mib..3 * mib + 10]);
    assert!(buf[10..1010].iter().all(|&b| b == 0));
    assert_eq!(&buf[1010..], &orig[3 * mib + 1010..]);
    // Zero-range beyond EOF must not grow the file (KEEP_SIZE); len 0 is a no-op.
    e.zero_range(f.as_fd(), 8 * mib as u64, 4096).expect("zero past EOF");
    e.punch_hole(f.as_fd(), 0, 0).expect("empty punch");
    assert_eq!(f.metadata().expect("stat").len(), 4 * mib as u64);
}

/// 8 threads write their own interleaved 64 KiB tracks, then read and verify them all.
pub(crate) fn concurrent(e: Arc<dyn IoEngine>) {
    let f = Arc::new(temp_file());
    const TRACK: usize = 65_536;
    const PER_THREAD: usize = 24;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (e, f) = (Arc::clone(&e), Arc::clone(&f));
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let track = (i * 8) as u64 + t;
                    let data = pattern(track + 100, TRACK);
                    e.write_at(f.as_fd(), &data, track * TRACK as u64).expect("write");
                    let mut back = vec![0; TRACK];
                    e.read_at(f.as_fd(), &mut back, track * TRACK as u64).expect("read");
                    assert_eq!(back, data, "track {track}");
                }
                e.sync_data(f.as_fd()).expect("sync");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    for track in 0..(8 * PER_THREAD) as u64 {
        let mut back = vec![0; TRACK];
        e.read_at(f.as_fd(), &mut back, track * TRACK as u64).expect("read");
        assert_eq!(back, pattern(track + 100, TRACK), "track {track}");
    }
}

pub(crate) fn batch(e: &dyn IoEngine) {
    let src = temp_file();
    let dst = temp_file();
    let tracks = 40usize;
    let t = 65_536usize;
    let data = pattern(3, tracks * t);
    // Batch of writes.
    let mut ops: Vec<Op<'_>> = (0..tracks)
        .map(|i| Op::Write { fd: src.as_fd(), offset: (i * t) as u64, buf: &data[i * t..(i + 1) * t] })
        .collect();
    let res = e.submit_batch(&mut ops);
    assert!(res.iter().all(|r| matches!(r, Ok(n) if *n == t)), "{res:?}");
    // Batch of copies, the last one reaching past EOF (its tail must read as zero).
    let mut bufs: Vec<Vec<u8>> = (0..=tracks).map(|_| vec![0xEE; t]).collect();
    let mut ops: Vec<Op<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| {
            let dst_offset = (i * t) as u64;
            // The extra last copy starts 100 bytes before src's EOF.
            let src_offset = if i == tracks { dst_offset - 100 } else { dst_offset };
            Op::Copy { src: src.as_fd(), src_offset, dst: dst.as_fd(), dst_offset, buf }
        })
        .collect();
    let res = e.submit_batch(&mut ops);
    drop(ops);
    assert!(res.iter().all(|r| matches!(r, Ok(n) if *n == t)), "{res:?}");
    // Batch of reads to verify.
    let mut back: Vec<Vec<u8>> = (0..=tracks).map(|_| vec![0x11; t]).collect();
    let mut ops: Vec<Op<'_>> =
        back.iter_mut().enumerate().map(|(i, buf)| Op::Read { fd: dst.as_fd(), offset: (i * t) as u64, buf }).collect();
    let res = e.submit_batch(&mut ops);
    drop(ops);
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    for (i, b) in back.iter().enumerate().take(tracks) {
        assert_eq!(b[..], data[i * t..(i + 1) * t], "track {i}");
    }
    // The last copy read the final 100 bytes of src, then zeros past its EOF.
    let last = &back[tracks];
    assert_eq!(last[..100], data[data.len() - 100..]);
    assert!(last[100..].iter().all(|&b| b == 0));
}

pub(crate) fn errors(e: &dyn IoEngine) {
    // Writing through a read-only descriptor fails with EBADF and does not hang.
    let path = tempfile::NamedTempFile::new().expect("temp");
    let ro = File::open(path.path()).expect("open ro");
    let err = e.write_at(ro.as_fd(), b"x", 0).expect_err("write to O_RDONLY");
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    let mut ops = [Op::Write { fd: ro.as_fd(), offset: 0, buf: b"abc" }];
    let res = e.submit_batch(&mut ops);
    assert_eq!(res[0].as_ref().map_err(|e| e.raw_os_error()).expect_err("batch write"), Some(libc::EBADF));
    // A failing read half of a copy fails the copy (reading a directory gives EISDIR).
    let dir = File::open(std::env::temp_dir()).expect("open dir");
    let dst = temp_file();
    let mut buf = vec![0; 512];
    let mut ops = [Op::Copy { src: dir.as_fd(), src_offset: 0, dst: dst.as_fd(), dst_offset: 0, buf: &mut buf }];
    let res = e.submit_batch(&mut ops);
    assert!(res[0].is_err());
    assert_eq!(dst.metadata().expect("stat").len(), 0, "the write half must not run");
}

/// tmpfs has no FALLOC_FL_ZERO_RANGE (EOPNOTSUPP): zero_range must fall back to writing zeros.
pub(crate) fn fallocate_fallback(e: &dyn IoEngine) {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skip: /dev/shm (tmpfs) not available");
        return;
    }
    let f = tempfile::tempfile_in(shm).expect("tmpfs file");
    let data = pattern(9, 3 << 20);
    e.write_at(f.as_fd(), &data, 0).expect("fill");
    e.zero_range(f.as_fd(), 4096, (2 << 20) + 5).expect("zero range with fallback");
    let mut back = vec![0xFF; data.len()];
    e.read_at(f.as_fd(), &mut back, 0).expect("read");
    assert_eq!(back[..4096], data[..4096]);
    assert!(back[4096..4096 + (2 << 20) + 5].iter().all(|&b| b == 0));
    assert_eq!(back[4096 + (2 << 20) + 5..], data[4096 + (2 << 20) + 5..]);
}
