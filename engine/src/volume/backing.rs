//! Where one volume's bytes live: a file flashtrack creates in a pool directory (sparse or
//! fully allocated), or a region `[base, base+len)` of a block device shared by a pool.
//!
//! Allocation (`-sam`): a `standard` file is allocated up front and stays so. Every discard
//! of a standard file's range ([`Backing::punch`]: a host TRIM, a WRITE_ZEROES that may trim,
//! the copier's copy of a source hole) zeroes it with `FALLOC_FL_ZERO_RANGE` (or writes
//! zeros where the file system has no zero-range), which keeps its blocks allocated, as a
//! fully provisioned DS8000 volume keeps its extents whatever a host unmaps. Only an `ese`
//! file gets holes punched (that is what keeps it thin). Either way the range reads back
//! zero, and SEEK_DATA (block status) reports it as a hole on ext4 and XFS, as it reports a
//! fresh standard volume's fallocated but unwritten extents. Device regions have no
//! allocation: a discard there is the device's punch (discard that reads back zero) as
//! before.
//!
//! Block devices are opened `O_EXCL | O_DIRECT`: exclusive so nobody else (a mount, another
//! flashd, mkfs) writes under us, direct so the page cache neither doubles memory nor hides
//! I/O errors. O_DIRECT needs block-aligned buffers, offsets and lengths, so device I/O goes
//! through aligned bounce buffers, and a request that only partly covers a block does a
//! read-modify-write of that block under a per-device mutex (two unaligned writes sharing a
//! block would otherwise lose one of them).

use crate::error::{Error, ErrorKind, Result};
use crate::io::IoEngine;
use crate::io::buffer::{self, AlignedBuf, DIRECT_ALIGN};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes moved per bounce-buffer round trip on a device.
const BOUNCE: usize = 1 << 20;
/// Bounce buffers kept for reuse per device (fresh pages are slow to touch, machine.md).
const BOUNCE_POOL: usize = 8;

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// An exclusively opened block device holding the regions of one pool.
#[derive(Debug)]
pub struct DeviceHandle {
    path: PathBuf,
    file: File,
    size: u64,
    block_size: u32,
    /// Serializes read-modify-write of partially covered blocks.
    rmw: Mutex<()>,
    bounce: Mutex<Vec<AlignedBuf>>,
}

impl DeviceHandle {
    /// Open `path` for exclusive direct I/O. Refuses anything but a block device
    /// (PoolPathInvalid), a device with a mounted file system or active swap on it or on one
    /// of its partitions (DeviceMounted), and one another program holds open exclusively
    /// (DeviceInUse).
    pub fn open(path: impl AsRef<Path>) -> Result<DeviceHandle> {
        let path = path.as_ref();
        let shown = path.display();
        let meta =
            std::fs::metadata(path).map_err(|e| Error::new(ErrorKind::PoolPathInvalid, &shown, e.to_string()))?;
        if !meta.file_type().is_block_device() {
            return Err(Error::new(ErrorKind::PoolPathInvalid, &shown, "not a block device"));
        }
        if let Some(why) = in_use_by_system(meta.rdev()) {
            return Err(Error::new(ErrorKind::DeviceMounted, &shown, why));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // O_EXCL without O_CREAT on a block device: fail with EBUSY if anyone holds it.
            .custom_flags(libc::O_EXCL | libc::O_DIRECT)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => Error::new(ErrorKind::DeviceInUse, &shown, "in use by another program"),
                _ => Error::io(&shown, &e),
            })?;
        // The path could have been swapped between stat and open.
        let opened = file.metadata().map_err(|e| Error::io(&shown, &e))?;
        if opened.rdev() != meta.rdev() || !opened.file_type().is_block_device() {
            return Err(Error::new(ErrorKind::PoolPathInvalid, &shown, "device changed while opening"));
        }
        let size = (&file).seek(SeekFrom::End(0)).map_err(|e| Error::io(&shown, &e))?;
        let block_size = rustix::fs::ioctl_blksszget(&file).map_err(|e| Error::io(&shown, &e.into()))?.max(512);
        Ok(DeviceHandle {
            path: path.to_path_buf(),
            file,
            size,
            block_size,
            rmw: Mutex::new(()),
            bounce: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Device size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical block size (at least 512).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    fn bs(&self) -> u64 {
        u64::from(self.block_size)
    }

    fn take_bounce(&self) -> AlignedBuf {
        let reused = self.bounce.lock().unwrap_or_else(PoisonError::into_inner).pop();
        reused.unwrap_or_else(|| AlignedBuf::new(BOUNCE.max(self.block_size as usize), self.alignment()))
    }

    fn give_back(&self, buf: AlignedBuf) {
        let mut pool = self.bounce.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < BOUNCE_POOL {
            pool.push(buf);
        }
    }

    fn alignment(&self) -> usize {
        (self.block_size as usize).max(DIRECT_ALIGN)
    }

    /// The aligned span `[a0, a1)` (at most one bounce buffer) starting with the block that
    /// holds `pos`, for a request ending at `end`.
    fn span(&self, pos: u64, end: u64, bounce: usize) -> (u64, usize) {
        let a0 = pos - pos % self.bs();
        let a1 = end.next_multiple_of(self.bs()).min(a0 + bounce as u64);
        (a0, (a1 - a0) as usize)
    }

    /// Read `buf.len()` bytes at absolute `offset` (any alignment).
    pub fn read_at(&self, io: &dyn IoEngine, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.size).ok_or_else(einval)?;
        let mut bounce = self.take_bounce();
        let mut done = 0;
        let result = (|| {
            while done < buf.len() {
                let pos = offset + done as u64;
                let (a0, n) = self.span(pos, end, bounce.len());
                io.read_at(self.file.as_fd(), &mut bounce[..n], a0)?;
                let skip = (pos - a0) as usize;
                let take = (n - skip).min(buf.len() - done);
                buf[done..done + take].copy_from_slice(&bounce[skip..skip + take]);
                done += take;
            }
            Ok(())
        })();
        self.give_back(bounce);
        result
    }

    /// Write `data` at absolute `offset` (any alignment; partial blocks are read-modify-written).
    pub fn write_at(&self, io: &dyn IoEngine, data: &[u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= self.size).ok_or_else(einval)?;
        let bs = self.bs();
        let aligned = offset.is_multiple_of(bs) && end.is_multiple_of(bs);
        // Aligned writes replace whole blocks and need no lock.
        let _rmw = (!aligned).then(|| self.rmw.lock().unwrap_or_else(PoisonError::into_inner));
        let mut bounce = self.take_bounce();
        let mut done = 0;
        let result = (|| {
            while done < data.len() {
                let pos = offset + done as u64;
                let (a0, n) = self.span(pos, end, bounce.len());
                let skip = (pos - a0) as usize;
                let take = (n - skip).min(data.len() - done);
                let b = bs as usize;
                let head_partial = !skip.is_multiple_of(b);
                let tail_partial = !(skip + take).is_multiple_of(b);
                if head_partial {
                    io.read_at(self.file.as_fd(), &mut bounce[..b], a0)?;
                }
                // The last block, unless it is the first one and was just read.
                if tail_partial && (n > b || !head_partial) {
                    io.read_at(self.file.as_fd(), &mut bounce[n - b..n], a0 + (n - b) as u64)?;
                }
                bounce[skip..skip + take].copy_from_slice(&data[done..done + take]);
                io.write_at(self.file.as_fd(), &bounce[..n], a0)?;
                done += take;
            }
            Ok(())
        })();
        self.give_back(bounce);
        result
    }

    /// Zero `[offset, offset+len)`: whole blocks by punch (discard that reads back zero) or
    /// zero-range, partial edge blocks by writing zeros.
    pub fn zero_at(&self, io: &dyn IoEngine, offset: u64, len: u64, punch: bool) -> io::Result<()> {
        let end = offset.checked_add(len).filter(|&e| e <= self.size).ok_or_else(einval)?;
        let bs = self.bs();
        let mid0 = offset.next_multiple_of(bs).min(end);
        let mid1 = (end - end % bs).max(mid0);
        let zeroes = buffer::zeroes();
        if mid0 > offset {
            self.write_at(io, &zeroes[..(mid0 - offset) as usize], offset)?;
        }
        if end > mid1 {
            self.write_at(io, &zeroes[..(end - mid1) as usize], mid1)?;
        }
        if mid1 > mid0 {
            let fd = self.file.as_fd();
            if punch { io.punch_hole(fd, mid0, mid1 - mid0)? } else { io.zero_range(fd, mid0, mid1 - mid0)? }
        }
        Ok(())
    }

    pub fn sync(&self, io: &dyn IoEngine) -> io::Result<()> {
        io.sync_data(self.file.as_fd())
    }
}

/// Why the device `rdev` (or one of its partitions) is busy at system level: a mounted file
/// system (by /proc/self/mountinfo) or active swap (by /proc/swaps). None if neither.
fn in_use_by_system(rdev: u64) -> Option<String> {
    let mut devs = HashSet::from([rdev]);
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    // Partitions of a whole disk are subdirectories with a `partition` file.
    if let Ok(dir) = std::fs::read_dir(format!("/sys/dev/block/{major}:{minor}")) {
        for entry in dir.flatten() {
            if entry.path().join("partition").exists()
                && let Ok(dev) = std::fs::read_to_string(entry.path().join("dev"))
                && let Some(d) = parse_dev(dev.trim())
            {
                devs.insert(d);
            }
        }
    }
    let is_ours = |path: &str| {
        std::fs::metadata(unescape(path)).is_ok_and(|m| m.file_type().is_block_device() && devs.contains(&m.rdev()))
    };
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            // Fields: id parent major:minor root mountpoint ... - fstype source options.
            let source = fields.iter().position(|&f| f == "-").and_then(|i| fields.get(i + 2));
            let by_number = fields.get(2).and_then(|d| parse_dev(d)).is_some_and(|d| devs.contains(&d));
            if by_number || source.is_some_and(|s| s.starts_with('/') && is_ours(s)) {
                let at = fields.get(4).map(|m| unescape(m)).unwrap_or_default();
                return Some(format!("has a file system mounted at {at}"));
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            if let Some(name) = line.split_whitespace().next()
                && is_ours(name)
            {
                return Some("is in use as swap".to_string());
            }
        }
    }
    None
}

/// "major:minor" -> dev_t.
fn parse_dev(s: &str) -> Option<u64> {
    let (ma, mi) = s.split_once(':')?;
    Some(rustix::fs::makedev(ma.parse().ok()?, mi.parse().ok()?))
}

/// Undo the octal escapes (`\040` for space) of /proc/self/mountinfo and /proc/swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(o) => {
                out.push(o.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
enum Place {
    /// `direct`: a second descriptor opened `O_DIRECT` on first use by the copier when
    /// [`set_copy_direct`] is on (None if the file system refuses O_DIRECT).
    File {
        path: PathBuf,
        file: File,
        direct: OnceLock<Option<File>>,
    },
    Device {
        dev: Arc<DeviceHandle>,
        base: u64,
    },
}

/// One volume's storage. Offsets on the data path are volume-relative and bounds-checked.
#[derive(Debug)]
pub struct Backing {
    place: Place,
    /// Atomic so `grow` works on a backing shared by running sessions.
    len: AtomicU64,
    /// A `standard` (fully allocated) file: discards keep its blocks (module docs).
    /// Meaningless for a device region.
    standard: AtomicBool,
}

impl Backing {
    /// Create the file for a new volume. Never replaces an existing file (VolumeExists).
    /// `standard` = fully allocated now (fallocate), else sparse. The file and its directory
    /// entry are synced; on any error the partial file is removed.
    pub fn create_file(path: impl AsRef<Path>, len: u64, standard: bool) -> Result<Backing> {
        let path = path.as_ref();
        let shown = path.display();
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(Error::new(ErrorKind::PoolPathInvalid, parent.display(), "not a directory"));
        }
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::new(ErrorKind::VolumeExists, &shown, "backing file already exists")
            } else {
                Error::io(&shown, &e)
            }
        })?;
        let prepared = (|| {
            if standard {
                allocate(&file, len)?
            } else {
                file.set_len(len)?
            }
            file.sync_all()?;
            File::open(parent)?.sync_all()
        })();
        if let Err(e) = prepared {
            drop(file);
            if let Err(rm) = std::fs::remove_file(path) {
                tracing::warn!("could not remove partial volume file {shown}: {rm}");
            }
            return Err(Error::io(&shown, &e));
        }
        Ok(Backing {
            place: Place::File { path: path.to_path_buf(), file, direct: OnceLock::new() },
            len: AtomicU64::new(len),
            standard: AtomicBool::new(standard),
        })
    }

    /// Open an existing volume file; its length must be `len` (else Corrupt). It is taken
    /// as sparse (`ese`) until [`Backing::set_standard`] says otherwise (the catalog knows).
    pub fn open_file(path: impl AsRef<Path>, len: u64) -> Result<Backing> {
        let path = path.as_ref();
        let shown = path.display();
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::io(&shown, &e))?;
        let meta = file.metadata().map_err(|e| Error::io(&shown, &e))?;
        if !meta.is_file() {
            return Err(Error::new(ErrorKind::PoolPathInvalid, &shown, "not a regular file"));
        }
        if meta.len() != len {
            return Err(Error::new(
                ErrorKind::Corrupt,
                &shown,
                format!("file is {} bytes, expected {len}", meta.len()),
            ));
        }
        Ok(Backing {
            place: Place::File { path: path.to_path_buf(), file, direct: OnceLock::new() },
            len: AtomicU64::new(len),
            standard: AtomicBool::new(false),
        })
    }

    /// Declare the file `standard` (fully allocated; discards keep its blocks) or `ese`
    /// (sparse). A standard file that is not fully allocated (one a discard thinned before
    /// discards kept the space) is allocated again, without touching its data; a file system
    /// without fallocate leaves it as it is. Nothing for a device region.
    pub fn set_standard(&self, standard: bool) -> io::Result<()> {
        let Place::File { file, .. } = &self.place else { return Ok(()) };
        self.standard.store(standard, Ordering::SeqCst);
        let len = self.len();
        if !standard || len == 0 {
            return Ok(());
        }
        // A fallocate that meets ENOSPC keeps what it allocated: it would take the pool's
        // last free bytes (ese volumes there would then fail) and still leave holes. So it
        // runs only when the missing bytes fit. st_blocks also counts extent-tree blocks and
        // can hide small holes, so it only estimates what is missing, and the fallocate
        // always runs (over allocated extents it only walks them).
        let missing = len.saturating_sub(file.metadata()?.blocks() * 512);
        let fs = rustix::fs::fstatvfs(file)?;
        if missing > fs.f_bavail.saturating_mul(fs.f_frsize) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        // Mode 0 allocates only the holes (they keep reading zero); data stays as it is.
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
            Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
            other => other.map_err(io::Error::from),
        }
    }

    /// Whether this is a `standard` (fully allocated) file.
    pub fn is_standard(&self) -> bool {
        matches!(self.place, Place::File { .. }) && self.standard.load(Ordering::SeqCst)
    }

    /// The region `[base, base+len)` of an opened device; `base` must be block-aligned.
    pub fn device_region(dev: Arc<DeviceHandle>, base: u64, len: u64) -> Result<Backing> {
        let shown = dev.path().display().to_string();
        if !base.is_multiple_of(dev.bs()) {
            return Err(Error::new(ErrorKind::InvalidArgument, shown, format!("region base {base} not block-aligned")));
        }
        if base.checked_add(len).is_none_or(|end| end > dev.size()) {
            let detail = format!("region {base}+{len} exceeds device size {}", dev.size());
            return Err(Error::new(ErrorKind::CapacityTooLarge, shown, detail));
        }
        Ok(Backing { place: Place::Device { dev, base }, len: AtomicU64::new(len), standard: AtomicBool::new(false) })
    }

    /// Grow to `new_len` (the new range is zero). Files: sparse, or allocated when
    /// `standard` (which also decides how later discards treat the file, see
    /// [`Backing::set_standard`]). Device regions: only the bound moves; the caller owns the
    /// layout.
    pub fn grow(&self, new_len: u64, standard: bool) -> Result<()> {
        let len = self.len();
        if new_len < len {
            return Err(Error::new(ErrorKind::ShrinkNotAllowed, self.describe(), format!("{new_len} < {len}")));
        }
        match &self.place {
            Place::File { path, file, .. } => {
                let grown = (|| {
                    if standard {
                        allocate(file, new_len)?;
                    }
                    file.set_len(new_len)?;
                    file.sync_all()
                })();
                grown.map_err(|e| Error::io(path.display(), &e))?;
                self.standard.store(standard, Ordering::SeqCst);
            }
            Place::Device { dev, base } => {
                if base.checked_add(new_len).is_none_or(|end| end > dev.size()) {
                    let detail = format!("region {base}+{new_len} exceeds device size {}", dev.size());
                    return Err(Error::new(ErrorKind::CapacityTooLarge, self.describe(), detail));
                }
            }
        }
        self.len.store(new_len, Ordering::SeqCst);
        Ok(())
    }

    /// Delete the volume's storage: unlink the file; nothing for a device region (its space
    /// returns to the pool's allocator). Removing an already missing file is not an error.
    pub fn remove(&self) -> Result<()> {
        match &self.place {
            Place::File { path, .. } => match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path.display(), &e)),
                _ => Ok(()),
            },
            Place::Device { .. } => Ok(()),
        }
    }

    /// Bytes allocated on disk: st_blocks x 512 for a file, the region length on a device.
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        match &self.place {
            Place::File { file, .. } => Ok(file.metadata()?.blocks() * 512),
            Place::Device { .. } => Ok(self.len()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_device(&self) -> bool {
        matches!(self.place, Place::Device { .. })
    }

    /// Smallest I/O unit the backing handles without read-modify-write.
    pub fn block_size(&self) -> u32 {
        match &self.place {
            Place::File { .. } => 512,
            Place::Device { dev, .. } => dev.block_size(),
        }
    }

    /// Path of the file, or of the device with the region, for messages.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::File { path, .. } => path.display().to_string(),
            Place::Device { dev, base } => format!("{}@{base}", dev.path().display()),
        }
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(einval()),
        }
    }

    pub fn read(&self, io: &dyn IoEngine, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        match &self.place {
            Place::File { file, .. } => io.read_at(file.as_fd(), buf, offset),
            Place::Device { dev, base } => dev.read_at(io, buf, base + offset),
        }
    }

    pub fn write(&self, io: &dyn IoEngine, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len() as u64)?;
        match &self.place {
            Place::File { file, .. } => io.write_at(file.as_fd(), data, offset),
            Place::Device { dev, base } => dev.write_at(io, data, base + offset),
        }
    }

    /// The file descriptor of a file backing (offsets are volume offsets); None for a
    /// device region, whose I/O needs alignment handling.
    pub fn file_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.place {
            Place::File { file, .. } => Some(file.as_fd()),
            Place::Device { .. } => None,
        }
    }

    /// The descriptor and absolute offset a copy stream may use for `[offset, offset+len)`
    /// with a 4 KiB-aligned buffer, or None when the range needs [`Backing::read`] /
    /// [`Backing::write`] (a device range that is not block-aligned). File backings give the
    /// `O_DIRECT` descriptor for aligned ranges when [`set_copy_direct`] is on.
    pub fn stream_fd(&self, offset: u64, len: u64) -> Option<(RawFd, u64)> {
        self.check(offset, len).ok()?;
        match &self.place {
            Place::File { path, file, direct } => {
                let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN as u64);
                if aligned && COPY_DIRECT.load(Ordering::Relaxed) {
                    let d = direct.get_or_init(|| {
                        match OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                tracing::warn!("{}: no O_DIRECT copies ({e}); copying buffered", path.display());
                                None
                            }
                        }
                    });
                    if let Some(d) = d {
                        return Some((d.as_raw_fd(), offset));
                    }
                }
                Some((file.as_raw_fd(), offset))
            }
            Place::Device { dev, base } => {
                let abs = base + offset;
                (abs.is_multiple_of(dev.bs()) && len.is_multiple_of(dev.bs())).then(|| (dev.file.as_raw_fd(), abs))
            }
        }
    }

    /// Whether `[offset, offset+len)` of a file backing is one hole (reads zero, holds no
    /// blocks). Devices and errors say no: the caller then copies, which is always right.
    pub fn is_hole(&self, offset: u64, len: u64) -> bool {
        let Place::File { file, .. } = &self.place else { return false };
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(data) => data >= offset + len,
            // ENXIO: no data at or after offset.
            Err(rustix::io::Errno::NXIO) => true,
            Err(_) => false,
        }
    }

    /// Allocation of `[offset, offset+len)` as runs of (bytes, allocated), in order: holes
    /// found with SEEK_DATA / SEEK_HOLE on a file (a hole reads zero); a device region is
    /// all allocated (it has no holes to ask about). Stops after `max_runs` runs, leaving
    /// the rest of the range out (callers ask again from where the answer ends).
    pub fn allocation(&self, offset: u64, len: u64, max_runs: usize) -> io::Result<Vec<(u64, bool)>> {
        self.check(offset, len)?;
        let Place::File { file, .. } = &self.place else { return Ok(vec![(len, true)]) };
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end && out.len() < max_runs {
            let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
                Ok(d) => d.clamp(at, end),
                // ENXIO: no data at or after `at`.
                Err(rustix::io::Errno::NXIO) => end,
                Err(e) => return Err(e.into()),
            };
            if data > at {
                out.push((data - at, false));
                at = data;
                continue;
            }
            let hole = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(at)) {
                Ok(h) => h.min(end),
                Err(rustix::io::Errno::NXIO) => end,
                Err(e) => return Err(e.into()),
            };
            // `hole == at` only if the data was punched between the two calls: look again.
            if hole > at {
                out.push((hole - at, true));
                at = hole;
            }
        }
        Ok(out)
    }

    /// Make written data durable (fdatasync of the file or device).
    pub fn sync(&self, io: &dyn IoEngine) -> io::Result<()> {
        match &self.place {
            Place::File { file, .. } => io.sync_data(file.as_fd()),
            Place::Device { dev, .. } => dev.sync(io),
        }
    }

    /// Discard: reads return zero afterwards. An `ese` file's range becomes a hole; a
    /// `standard` file's is zeroed in place and keeps its blocks (module docs); a device
    /// region's is discarded (punch on the device).
    pub fn punch(&self, io: &dyn IoEngine, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        match &self.place {
            Place::File { file, .. } if self.standard.load(Ordering::SeqCst) => {
                match io.zero_range(file.as_fd(), offset, len) {
                    // A standard file left thin (its pool was full at open) may need blocks
                    // to zero in place; a discard must not fail for that: punch instead,
                    // the range reads zero either way.
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => io.punch_hole(file.as_fd(), offset, len),
                    other => other,
                }
            }
            Place::File { file, .. } => io.punch_hole(file.as_fd(), offset, len),
            Place::Device { dev, base } => dev.zero_at(io, base + offset, len, true),
        }
    }

    /// Zero, keeping the space allocated.
    pub fn zero(&self, io: &dyn IoEngine, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        match &self.place {
            Place::File { file, .. } => io.zero_range(file.as_fd(), offset, len),
            Place::Device { dev, base } => dev.zero_at(io, base + offset, len, false),
        }
    }
}

/// Copies between file backings go through `O_DIRECT` descriptors (`flashd run
/// --copy-direct`, an extension): the copier then reads and writes the device, not the page
/// cache. Host I/O stays buffered; Linux keeps the two coherent (a direct read writes back
/// dirty cached pages of its range first, a direct write invalidates them).
static COPY_DIRECT: AtomicBool = AtomicBool::new(false);

/// Turn `O_DIRECT` copies between file backings on or off (process-wide).
pub fn set_copy_direct(on: bool) {
    COPY_DIRECT.store(on, Ordering::Relaxed);
}

/// Allocate `[0, len)` of `file` (and extend it to `len`), writing zeros where the file
/// system has no fallocate.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let zeroes = buffer::zeroes();
            let mut at = 0;
            while at < len {
                let n = (len - at).min(zeroes.len() as u64) as usize;
                file.write_all_at(&zeroes[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[path = "backing_tests.rs"]
pub(crate) mod tests;
