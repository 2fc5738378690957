//! The FUSE view (`flashd run --mount DIR`, an extension): each FB volume of each storage
//! image as the file `DIR/IBM.2107-75FA120/1000`, a file a loop device can sit on, so a host
//! can mkfs and mount a volume on this kernel, which has no NBD client (view.rs has the
//! filesystem). This file has its life cycle: a dead mount left by a killed flashd is found
//! and lazily unmounted before mounting again; shutdown drains I/O in flight and unmounts,
//! lazily when a loop device still holds a volume file.

mod view;

use anyhow::{Context, Result, bail};
use crossbeam_channel::{Sender, unbounded};
use flashtrack::site::Site;
use rustix::mount::{UnmountFlags, unmount};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long shutdown waits for I/O in flight (a write parked at a freeze waits longer).
const DRAIN: Duration = Duration::from_secs(10);

/// How long shutdown waits for fuser's threads after a clean unmount.
const JOIN: Duration = Duration::from_secs(5);

/// The mounted view.
#[derive(Debug)]
pub struct FuseView {
    dir: PathBuf,
    shared: Arc<view::Shared>,
    session: Option<JoinHandle<std::io::Result<()>>>,
}

impl FuseView {
    /// Mount the view of `site` on `dir` (made if missing). A dead mount there (its flashd
    /// was killed: "Transport endpoint is not connected") is unmounted lazily first; a live
    /// mount is refused.
    pub fn mount(dir: &Path, site: Arc<Site>) -> Result<FuseView> {
        prepare(dir)?;
        let fs = view::VolumeFs::new(site).context("starting the FUSE workers")?;
        let shared = fs.shared();
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("flashtrack".into()),
            fuser::MountOption::Subtype("flashtrack".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoExec,
            fuser::MountOption::NoAtime,
        ];
        config.n_threads = Some(view::READERS);
        config.clone_fd = true;
        let session = fuser::Session::new(fs, dir, &config)
            .with_context(|| format!("mounting the FUSE view on {} (needs /dev/fuse and root)", dir.display()))?;
        let thread = std::thread::Builder::new().name("fuse".into()).spawn(move || session.run())?;
        Ok(FuseView { dir: dir.to_path_buf(), shared, session: Some(thread) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop serving: new I/O gets EIO, I/O in flight finishes (up to a deadline), then
    /// unmount. While a loop device (or any process) still holds a volume file the unmount
    /// is lazy (MNT_DETACH): the view leaves the namespace at once and that holder's I/O
    /// fails once flashd has exited; flashd.log says so.
    pub fn shutdown(mut self) {
        if !self.shared.close(DRAIN) {
            tracing::warn!("FUSE: I/O still in flight after {DRAIN:?} (parked at a freeze?); unmounting anyway");
        }
        let open = self.shared.open_files();
        match unmount(&self.dir, UnmountFlags::empty()) {
            Ok(()) => {
                self.join();
                tracing::info!("FUSE view unmounted from {}", self.dir.display());
            }
            Err(rustix::io::Errno::BUSY) => match unmount(&self.dir, UnmountFlags::DETACH) {
                Ok(()) => tracing::warn!(
                    "FUSE view on {} is busy ({open} volume file(s) open, e.g. by a loop device): unmounted \
                     lazily (MNT_DETACH); their I/O fails from now on; detach them with `losetup -d`",
                    self.dir.display()
                ),
                Err(e) => tracing::error!("FUSE: lazy unmount of {} failed: {e}", self.dir.display()),
            },
            Err(e) => tracing::error!("FUSE: unmount of {} failed: {e}", self.dir.display()),
        }
    }

    /// After a clean unmount the kernel ends the connection and fuser's threads return.
    fn join(&mut self) {
        let Some(thread) = self.session.take() else { return };
        let deadline = Instant::now() + JOIN;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            if let Ok(Err(e)) = thread.join() {
                tracing::warn!("FUSE session ended with {e}");
            }
        } else {
            tracing::warn!("FUSE threads did not end within {JOIN:?} of the unmount");
        }
    }
}

/// Make `dir` ready to mount on: create it, clean dead mounts, refuse a live one.
fn prepare(dir: &Path) -> Result<()> {
    // Stacked dead mounts (several crashes without a clean start between) each need one
    // lazy unmount; a few rounds are plenty.
    for _ in 0..8 {
        match std::fs::metadata(dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                unmount(dir, UnmountFlags::DETACH)
                    .with_context(|| format!("lazily unmounting the dead FUSE mount on {}", dir.display()))?;
                tracing::warn!(
                    "FUSE: {} was a dead mount (Transport endpoint is not connected: the flashd that \
                     served it died); unmounted it lazily (a loop device still on it must be detached \
                     with `losetup -d`)",
                    dir.display()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("--mount {}", dir.display())),
            Ok(m) if !m.is_dir() => bail!("--mount {}: not a directory", dir.display()),
            Ok(_) => {
                if let Some(fstype) = mounted_on(dir)? {
                    bail!(
                        "--mount {}: already a mount point ({fstype}); unmount it first (another flashd may serve it)",
                        dir.display()
                    );
                }
                return Ok(());
            }
        }
    }
    bail!("--mount {}: still a dead mount after repeated lazy unmounts", dir.display())
}

/// The filesystem type mounted on `dir`, if `dir` is a mount point (from mountinfo).
fn mounted_on(dir: &Path) -> Result<Option<String>> {
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mount_type(&info, &dir.to_string_lossy()))
}

/// The type of the last mount on `point` in a mountinfo text: fields are
/// `id parent major:minor root mountpoint options [optional...] - fstype source superopts`,
/// with spaces and backslashes in paths written as octal escapes (`\040`).
fn mount_type(mountinfo: &str, point: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let mnt = fields.nth(4)?;
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        (unescape(mnt) == point).then(|| fstype.to_string())
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads that run jobs in order of arrival (the writes fuser threads hand
/// over). The queue is unbounded: the kernel bounds what is in flight (max_background, and
/// one request per blocked caller), and a fuser thread must never block on a full queue while
/// reads wait behind it.
#[derive(Debug)]
struct Workers {
    tx: Sender<Job>,
}

impl Workers {
    fn start(name: &str, n: usize) -> std::io::Result<Workers> {
        let (tx, rx) = unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                // Ends when the view (the only sender) is dropped.
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        }
        Ok(Workers { tx })
    }

    fn run(&self, job: impl FnOnce() + Send + 'static) {
        // The receivers live as long as the sender, so this cannot fail while we exist.
        let _ = self.tx.send(Box::new(job));
    }
}

/// At most `max` jobs at once run through `try_run` (the writes fuser threads do themselves).
#[derive(Debug)]
struct Slots {
    busy: AtomicUsize,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Slots {
        Slots { busy: AtomicUsize::new(0), max }
    }

    /// Run `job` now if a slot is free (true); false, without running it, if all are taken.
    fn try_run(&self, job: impl FnOnce()) -> bool {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        // Released also if the job panics, so a panic cannot leak a slot.
        struct Release<'a>(&'a AtomicUsize);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _release = Release(&self.busy);
        job();
        true
    }
}

/// Counts I/O in flight so shutdown can stop new I/O and wait for the rest.
#[derive(Debug, Default)]
struct Gate {
    /// (closed, in flight)
    state: Mutex<(bool, usize)>,
    idle: Condvar,
}

/// One I/O in flight; dropping it lets a waiting shutdown go on.
struct Pass<'a>(&'a Gate);

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// None once the gate is closed.
    fn enter(&self) -> Option<Pass<'_>> {
        let mut st = self.lock();
        if st.0 {
            return None;
        }
        st.1 += 1;
        Some(Pass(self))
    }

    fn is_closed(&self) -> bool {
        self.lock().0
    }

    fn close(&self, deadline: Duration) -> bool {
        let mut st = self.lock();
        st.0 = true;
        let until = Instant::now() + deadline;
        while st.1 > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.idle.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.1 -= 1;
        if st.1 == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_the_last_mount_on_a_point_with_escapes() {
        let info = "22 1 0:21 / /proc rw,relatime shared:5 - proc proc rw\n\
                    40 22 0:35 / /srv/my\\040vols rw,nosuid - ext4 /dev/vda rw\n\
                    41 40 0:36 / /srv/my\\040vols rw,nosuid,nodev shared:9 - fuse.flashtrack flashtrack rw,user_id=0\n";
        assert_eq!(mount_type(info, "/srv/my vols").as_deref(), Some("fuse.flashtrack"));
        assert_eq!(mount_type(info, "/proc").as_deref(), Some("proc"));
        assert_eq!(mount_type(info, "/srv"), None);
    }

    #[test]
    fn slots_run_at_most_max_jobs_at_once_and_free_them_after() {
        let slots = Slots::new(2);
        let mut ran = Vec::new();
        assert!(slots.try_run(|| {
            ran.push(1);
            assert!(slots.try_run(|| {
                ran.push(2);
                assert!(!slots.try_run(|| panic!("a third job ran while two slots were taken")));
            }));
        }));
        assert_eq!(ran, [1, 2]);
        assert!(slots.try_run(|| ran.push(3)), "slots were not freed");
        assert_eq!(slots.busy.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn gate_refuses_after_close_and_waits_for_io_in_flight() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().expect("open gate");
        // In flight: close cannot drain within a short deadline.
        assert!(!gate.close(Duration::from_millis(20)));
        assert!(gate.enter().is_none(), "closed gate let new I/O in");
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.close(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        drop(pass);
        assert!(waiter.join().unwrap(), "close did not see the last I/O end");
    }
}
