//! The FUSE view's filesystem: the root holds a directory per storage image, each holding a
//! file per FB volume (`IBM.2107-75FA120/1000`) whose size is the volume's size.
//!
//! Every byte goes through the image's intercept (`ImageFlash`), exactly as on the NBD path:
//! an open takes a host session (so `rmfbvol` refuses and `-tgtoffline` sees it), release
//! drops it. Files are opened in direct I/O mode, so the page cache never holds a volume's
//! bytes: a resync or a copy-on-write is never read stale, and no host write can sit in a
//! cache the intercept has not seen.
//!
//! Threads: fuser runs `READERS` threads, each reading requests from its own /dev/fuse fd.
//! Reads are served on the thread that received them. Writes (and fsync, fallocate) are too
//! while fewer than `INLINE_WRITES` run that way; past that they go to a worker pool with
//! their reply and the handler returns (DESIGN.md "Requests"), so writes parked at a freeze
//! never hold the threads that reads need. Handing every write to a worker measured about a
//! quarter fewer IOPS (fio through a loop device; scripts/bench/fuse.sh).

use super::{Gate, Slots, Workers};
use flashtrack::flash::ImageFlash;
use flashtrack::geometry::Geometry;
use flashtrack::id::{ImageId, VolumeKey};
use flashtrack::site::Site;
use flashtrack::volume::{SessionGuard, Volume};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Entries and attributes are never cached: volumes appear, disappear and grow under dscli,
/// and a lookup costs one map probe here.
const TTL: Duration = Duration::ZERO;

/// Largest read or write the kernel sends in one request (a loop device sends up to 1 MiB).
const MAX_IO: u32 = 1 << 20;

/// fuser threads (see the module comment). A loop device keeps its queue (128 by default)
/// in flight with async direct I/O; each thread does one synchronous intercept call at a
/// time, so this is about the queue depth a volume file sees.
pub const READERS: usize = 16;

/// Writes run on fuser threads up to this many at once; the rest of the threads stay free
/// for reads.
const INLINE_WRITES: usize = READERS - 4;

/// Workers for writes beyond `INLINE_WRITES` (parked at a freeze, or a burst).
const WRITE_WORKERS: usize = 16;

/// Asynchronous requests (direct I/O from a loop device counts) the kernel keeps in flight
/// before it throttles: a little more than all threads together.
const MAX_BACKGROUND: u16 = 40;

// fallocate modes (linux/falloc.h); what each does here is in `fallocate` below.
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// What an inode number stands for. Numbers are handed out on first sight and never reused,
/// so a volume removed and made again keeps its number (its size is read anew each time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Root,
    Image(ImageId),
    Volume(VolumeKey),
}

#[derive(Debug, Default)]
struct Nodes {
    by_node: HashMap<Node, u64>,
    /// Index = inode number - 1.
    by_ino: Vec<Node>,
}

impl Nodes {
    fn ino(&mut self, node: Node) -> INodeNo {
        if let Some(&ino) = self.by_node.get(&node) {
            return INodeNo(ino);
        }
        self.by_ino.push(node.clone());
        let ino = self.by_ino.len() as u64;
        self.by_node.insert(node, ino);
        INodeNo(ino)
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        self.by_ino.get((ino.0 as usize).checked_sub(1)?).cloned()
    }
}

/// One open of a volume file: a host session on the volume, with its image's intercept.
#[derive(Debug)]
struct OpenVolume {
    vol: Arc<Volume>,
    flash: Arc<ImageFlash>,
    _session: SessionGuard,
}

/// The part of the view the daemon keeps to shut it down after fuser took the filesystem.
#[derive(Debug)]
pub struct Shared {
    pub(super) gate: Gate,
    handles: RwLock<HashMap<u64, Arc<OpenVolume>>>,
}

#[derive(Debug)]
pub struct VolumeFs {
    site: Arc<Site>,
    shared: Arc<Shared>,
    nodes: Mutex<Nodes>,
    next_fh: AtomicU64,
    /// Writes running on fuser threads now.
    inline_writes: Slots,
    writes: Workers,
    /// Files and directories show flashd's start as their times, and flashd's owner.
    started: SystemTime,
    uid: u32,
    gid: u32,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl VolumeFs {
    pub fn new(site: Arc<Site>) -> std::io::Result<VolumeFs> {
        let mut nodes = Nodes::default();
        nodes.ino(Node::Root); // inode 1, as FUSE requires
        Ok(VolumeFs {
            site,
            shared: Arc::new(Shared { gate: Gate::default(), handles: RwLock::new(HashMap::new()) }),
            nodes: Mutex::new(nodes),
            next_fh: AtomicU64::new(1),
            inline_writes: Slots::new(INLINE_WRITES),
            writes: Workers::start("fuse-write", WRITE_WORKERS)?,
            started: SystemTime::now(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        self.nodes().node(ino)
    }

    /// The FB volume behind `key`, if it exists now (CKD volumes are not shown).
    fn fb_volume(&self, key: &VolumeKey) -> Option<Arc<Volume>> {
        self.site.volume(key).filter(|v| matches!(v.geometry(), Geometry::Fb { .. }))
    }

    fn image_exists(&self, id: &ImageId) -> bool {
        self.site.flash_of(id).is_some()
    }

    fn dir_attr(&self, ino: INodeNo) -> FileAttr {
        self.attr(ino, FileType::Directory, 0o700, 0, 0, 4096)
    }

    fn file_attr(&self, ino: INodeNo, vol: &Volume) -> FileAttr {
        // `du` on a volume file shows what its backing holds (sparse volumes stay small).
        let blocks = vol.allocated_bytes().map(|b| b.div_ceil(512)).unwrap_or(0);
        self.attr(ino, FileType::RegularFile, 0o600, vol.size(), blocks, vol.block_size())
    }

    fn attr(&self, ino: INodeNo, kind: FileType, perm: u16, size: u64, blocks: u64, blksize: u32) -> FileAttr {
        let t = self.started;
        FileAttr {
            ino,
            size,
            blocks,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize,
            flags: 0,
        }
    }

    /// Attributes of `ino` as the site is now; None when its object is gone.
    fn attr_of(&self, ino: INodeNo) -> Option<FileAttr> {
        match self.node(ino)? {
            Node::Root => Some(self.dir_attr(ino)),
            Node::Image(id) => self.image_exists(&id).then(|| self.dir_attr(ino)),
            Node::Volume(key) => self.fb_volume(&key).map(|v| self.file_attr(ino, &v)),
        }
    }

    /// The children of a directory, sorted: image IDs under the root, FB volume IDs
    /// (four hex digits) under an image.
    fn children(&self, node: &Node) -> Vec<(String, Node, FileType)> {
        match node {
            Node::Root => self
                .site
                .image_ids()
                .into_iter()
                .map(|id| (id.to_string(), Node::Image(id), FileType::Directory))
                .collect(),
            Node::Image(id) => {
                let mut keys: Vec<VolumeKey> = self.site.volume_keys().into_iter().filter(|k| &k.image == id).collect();
                keys.sort();
                keys.into_iter()
                    .filter(|k| self.fb_volume(k).is_some())
                    .map(|k| (k.volume.to_string(), Node::Volume(k), FileType::RegularFile))
                    .collect()
            }
            Node::Volume(_) => Vec::new(),
        }
    }

    fn open_volume(&self, fh: FileHandle) -> Option<Arc<OpenVolume>> {
        self.shared.handles.read().unwrap_or_else(|p| p.into_inner()).get(&fh.0).cloned()
    }

    /// Run a change here when fewer than `INLINE_WRITES` do (true), else leave it to the
    /// caller to hand it to the write pool (false).
    fn inline_write(&self, job: impl FnOnce()) -> bool {
        self.inline_writes.try_run(job)
    }

    /// A change (write, fsync, fallocate) that owns what it needs: here or on the pool.
    fn change(&self, job: impl FnOnce() + Send + 'static) {
        let mut job = Some(job);
        if !self.inline_write(|| (job.take().expect("job"))()) {
            self.writes.run(job.take().expect("job"));
        }
    }
}

fn read(shared: &Shared, open: &OpenVolume, offset: u64, size: u32, reply: ReplyData) {
    let Some(_pass) = shared.gate.enter() else { return reply.error(Errno::EIO) };
    let end = offset.saturating_add(u64::from(size)).min(open.vol.size());
    if offset >= end {
        return reply.data(&[]);
    }
    let mut buf = vec![0u8; (end - offset) as usize];
    match open.flash.read(&open.vol, offset, &mut buf) {
        Ok(()) => reply.data(&buf),
        Err(e) => reply.error(errno(e)),
    }
}

fn write(shared: &Shared, open: &OpenVolume, offset: u64, data: &[u8], fua: bool, reply: ReplyWrite) {
    let Some(_pass) = shared.gate.enter() else { return reply.error(Errno::EIO) };
    if data.is_empty() {
        return reply.written(0);
    }
    let size = open.vol.size();
    if offset >= size {
        return reply.error(Errno::from_i32(libc::ENOSPC));
    }
    let n = (data.len() as u64).min(size - offset) as usize;
    match open.flash.write(&open.vol, offset, &data[..n], fua) {
        Ok(()) => reply.written(n as u32),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each of these only makes the view faster; an older kernel without one still works.
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        // Async direct I/O: a loop device's requests reach us in parallel, not one by one.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        // No FUSE_WRITEBACK_CACHE, ever: the kernel would acknowledge writes the intercept
        // has not seen.
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else { return reply.error(Errno::ENOENT) };
        let child = match self.node(parent) {
            Some(Node::Root) => name.parse::<ImageId>().ok().filter(|id| id.to_string() == name).map(Node::Image),
            Some(Node::Image(id)) => format!("{id}/{name}")
                .parse::<VolumeKey>()
                .ok()
                .filter(|k| k.volume.to_string() == name)
                .map(Node::Volume),
            Some(Node::Volume(_)) => return reply.error(Errno::ENOTDIR),
            None => None,
        };
        let Some(child) = child else { return reply.error(Errno::ENOENT) };
        // Only names of objects that exist get an inode number.
        let exists = match &child {
            Node::Root => true,
            Node::Image(id) => self.image_exists(id),
            Node::Volume(key) => self.fb_volume(key).is_some(),
        };
        if !exists {
            return reply.error(Errno::ENOENT);
        }
        let ino = self.nodes().ino(child);
        match self.attr_of(ino) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// A volume's size is set by `mkfbvol`/`chfbvol`, never through the file: truncate and
    /// O_TRUNC get EPERM, as do owner and mode changes. Time changes are accepted and
    /// ignored (touch works; the times always show flashd's start).
    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(attr) = self.attr_of(ino) else { return reply.error(Errno::ENOENT) };
        let resize = size.is_some_and(|s| s != attr.size);
        if resize || mode.is_some() || uid.is_some_and(|u| u != attr.uid) || gid.is_some_and(|g| g != attr.gid) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &attr);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(node) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        if matches!(node, Node::Volume(_)) {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries =
            vec![(".".to_string(), ino, FileType::Directory), ("..".to_string(), INodeNo::ROOT, FileType::Directory)];
        for (name, child, kind) in self.children(&node) {
            entries.push((name, self.nodes().ino(child), kind));
        }
        for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
            // The offset handed back is where the next readdir starts.
            if reply.add(child, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(node) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        let Node::Volume(key) = node else { return reply.error(Errno::EISDIR) };
        if self.shared.gate.is_closed() {
            return reply.error(Errno::EIO); // flashd is stopping
        }
        // The host session is taken under the site lock: a concurrent rmfbvol either sees it
        // or has already removed the volume (then the open fails here).
        let Some((session, flash)) = self.site.open_host(&key) else { return reply.error(Errno::ENOENT) };
        let vol = Arc::clone(session.volume());
        if !matches!(vol.geometry(), Geometry::Fb { .. }) {
            return reply.error(Errno::ENOENT);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(OpenVolume { vol, flash, _session: session });
        self.shared.handles.write().unwrap_or_else(|p| p.into_inner()).insert(fh, open);
        tracing::info!("FUSE: {key} opened (host session)");
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let open = self.shared.handles.write().unwrap_or_else(|p| p.into_inner()).remove(&fh.0);
        if let Some(open) = open {
            tracing::info!("FUSE: {} closed", open.vol.key());
        }
        reply.ok();
    }

    /// Reads past the end return nothing and a read across it stops there, as on a block
    /// device file.
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(open) = self.open_volume(fh) else { return reply.error(Errno::EBADF) };
        // Reads never park, so they run here.
        read(&self.shared, &open, offset, size, reply);
    }

    /// A write at or past the end gets ENOSPC and one across it is cut short there, as on a
    /// block device file. O_DSYNC/O_SYNC opens write with FUA.
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(open) = self.open_volume(fh) else { return reply.error(Errno::EBADF) };
        let fua = flags.0 & libc::O_DSYNC != 0;
        let mut reply = Some(reply);
        if self.inline_write(|| write(&self.shared, &open, offset, data, fua, reply.take().expect("reply"))) {
            return;
        }
        // The kernel's buffer is only lent for this call; the worker needs its own.
        let (data, shared, reply) = (data.to_vec(), self.shared.clone(), reply.take().expect("reply"));
        self.writes.run(move || write(&shared, &open, offset, &data, fua, reply));
    }

    /// close(2): nothing to do (durability is fsync's job, as for a block device).
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    /// fsync/fdatasync (and a loop device's FLUSH) are the durability point: the volume's
    /// data and its FlashCopy journal are made durable, as an NBD FLUSH does. Never ENOSYS:
    /// the kernel would then take every later fsync as done without asking.
    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let Some(open) = self.open_volume(fh) else { return reply.error(Errno::EBADF) };
        let shared = self.shared.clone();
        self.change(move || {
            let Some(_pass) = shared.gate.enter() else { return reply.error(Errno::EIO) };
            match open.flash.flush(&open.vol) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// As on a block device: PUNCH_HOLE|KEEP_SIZE is a TRIM and ZERO_RANGE a WRITE_ZEROES,
    /// both through the intercept (zero writes to it); a plain allocation gets EOPNOTSUPP
    /// (a volume's space is chosen at mkfbvol by `-sam`), and so does every other mode. A
    /// range past the end is EINVAL, except with KEEP_SIZE, where it stops at the end.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(open) = self.open_volume(fh) else { return reply.error(Errno::EBADF) };
        let punch = mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        let zero = mode & !FALLOC_FL_KEEP_SIZE == FALLOC_FL_ZERO_RANGE;
        if !punch && !zero {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let size = open.vol.size();
        let end = offset.saturating_add(length);
        if offset >= size || (end > size && mode & FALLOC_FL_KEEP_SIZE == 0) {
            return reply.error(Errno::EINVAL);
        }
        let len = end.min(size) - offset;
        let shared = self.shared.clone();
        self.change(move || {
            let Some(_pass) = shared.gate.enter() else { return reply.error(Errno::EIO) };
            let done = if punch {
                open.flash.trim(&open.vol, offset, len)
            } else {
                open.flash.write_zeroes(&open.vol, offset, len, false)
            };
            match done {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// Volumes are made and removed with dscli (mkfbvol, rmfbvol), never through the view.
    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    /// `df` on the mount shows the FB volumes' total size and what their backings hold.
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (mut size, mut used) = (0u64, 0u64);
        for key in self.site.volume_keys() {
            if let Some(v) = self.fb_volume(&key) {
                size += v.size();
                used += v.allocated_bytes().unwrap_or(0);
            }
        }
        let blocks = size / 4096;
        let free = blocks.saturating_sub(used / 4096);
        reply.statfs(blocks, free, free, 0, 0, 4096, 255, 4096);
    }
}

impl Shared {
    /// Refuse new I/O (EIO) and wait up to `deadline` for I/O in flight; false if some is
    /// still running then (a write parked at a freeze).
    pub fn close(&self, deadline: Duration) -> bool {
        self.gate.close(deadline)
    }

    /// Open volume files (each holds a host session).
    pub fn open_files(&self) -> usize {
        self.handles.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}
