//! flashd: the daemon that owns a site home (the HMC of this world).
//!
//! Start order (DESIGN.md "Recovery and shutdown"): lock and recover the site (catalogs,
//! orphans) and listen for other flashd's PPRC path links (`--link-listen`), then open NBD and
//! the FUSE view (`--mount`), then the control socket last, so a
//! client that sees `control.sock` finds everything ready. Host connections' NBD endpoints
//! start with the site NBD socket and follow the catalogs (`hosts.rs`). Shutdown on SIGTERM/SIGINT or a `Shutdown`
//! request: stop accepting, end host sessions, flush volumes, write the clean mark, exit 0;
//! a second signal exits at once.

mod control;
mod export;
mod fuse;
mod hosts;
pub mod log;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded};
use flashtrack::flash::copier::{CopyWorker, RUN_TRACKS, STREAM_DEPTH};
use flashtrack::site::Site;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Control socket inside a site home.
pub const CONTROL_SOCK: &str = "control.sock";
/// NBD socket inside a site home.
pub const NBD_SOCK: &str = "nbd.sock";
/// The running daemon's process ID (for scripts; the lock is what guarantees one owner).
pub const PID_FILE: &str = "flashd.pid";
/// Present while the last shutdown was clean.
pub const CLEAN_MARK: &str = "clean";

/// Options of `flashd run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub home: PathBuf,
    /// Also serve NBD on this loopback TCP address.
    pub nbd_tcp: Option<std::net::SocketAddr>,
    /// Background copy limit in MiB/s (extension), None = as fast as the device allows.
    pub copy_rate_mib: Option<u64>,
    /// Background copies between file backings use O_DIRECT descriptors (extension).
    pub copy_direct: bool,
    /// Show FB volumes as files under this directory (FUSE, an extension).
    pub mount: Option<PathBuf>,
    /// Listen for other flashd's PPRC path links on this loopback address (extension).
    pub link_listen: Option<std::net::SocketAddr>,
}

/// Why the daemon stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Signal,
    Request,
}

/// Run the daemon until it is told to stop.
pub fn run(opts: &RunOptions) -> Result<()> {
    create_home(&opts.home)?;
    log::init(&opts.home)?;
    if opts.mount.is_some() {
        // A loop device on a volume file writes back through us: under memory pressure the
        // kernel must not make this process wait for that same writeback (PR_SET_IO_FLUSHER,
        // inherited by every thread started after this).
        if let Err(e) = rustix::process::configure_io_flusher_behavior(true) {
            tracing::warn!("cannot mark flashd an I/O flusher (PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE): {e}");
        }
    }
    let io = flashtrack::io::probe::select().map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(
        "flashd {} starting on {} (io backend {})",
        env!("CARGO_PKG_VERSION"),
        opts.home.display(),
        io.kind()
    );
    // A home never opened before has nothing to recover.
    let fresh = !opts.home.join(flashtrack::site::LOCK_FILE).exists();
    let site = match Site::open(&opts.home, io) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("cannot open site: {e}");
            return Err(anyhow::anyhow!("{e}"));
        }
    };
    if let Some(addr) = opts.link_listen {
        site.listen_links(addr).with_context(|| format!("listening for links on {addr}"))?;
    }
    let pid_file = opts.home.join(PID_FILE);
    fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let clean = opts.home.join(CLEAN_MARK);
    if clean.exists() {
        fs::remove_file(&clean).with_context(|| format!("removing {}", clean.display()))?;
    } else if !fresh {
        tracing::warn!("previous shutdown was not clean: recovered from catalogs");
    }

    let (stop_tx, stop_rx) = bounded::<Stop>(4);
    install_signals(stop_tx.clone())?;

    let catalog = Arc::new(export::SiteExports::new(site.clone()));
    let nbd_path = opts.home.join(NBD_SOCK);
    let nbd = flashtrack::nbd::Server::default()
        .serve_unix(&nbd_path, catalog.clone())
        .with_context(|| format!("serving NBD on {}", nbd_path.display()))?;
    tracing::info!("serving NBD on {}", nbd_path.display());
    let nbd_tcp = match opts.nbd_tcp {
        Some(addr) => {
            let h = flashtrack::nbd::Server::default()
                .serve_tcp(addr, catalog)
                .with_context(|| format!("serving NBD on {addr}"))?;
            tracing::info!("serving NBD on tcp {addr} (any local user can connect)");
            Some(h)
        }
        None => None,
    };
    flashtrack::volume::set_copy_direct(opts.copy_direct);
    if opts.copy_direct {
        tracing::info!("background copies between file backings use O_DIRECT");
    }
    // Host connections' own endpoints, as the catalogs say.
    let hosts = Arc::new(hosts::HostEndpoints::new(site.clone(), opts.home.clone()));
    hosts.remove_stale_sockets();
    hosts.reconcile();
    let copier = Copier::start(site.clone(), opts.copy_rate_mib.map(|m| m << 20))?;
    if let Some(m) = opts.copy_rate_mib {
        tracing::info!("background copy limited to {m} MiB/s");
    }
    let view = match &opts.mount {
        Some(dir) => {
            let v = fuse::FuseView::mount(dir, site.clone())?;
            tracing::info!("FUSE view of FB volumes mounted on {}", v.dir().display());
            Some(v)
        }
        None => None,
    };
    let ctl_path = opts.home.join(CONTROL_SOCK);
    let ctl = control::Server::start(&ctl_path, site.clone(), hosts.clone(), stop_tx)?;
    tracing::info!("ready: control on {}", ctl_path.display());

    let why = wait(&stop_rx);
    tracing::info!("stopping ({why:?})");
    ctl.shutdown();
    if let Some(v) = view {
        v.shutdown();
    }
    nbd.shutdown();
    hosts.stop_all();
    copier.stop();
    if let Some(h) = nbd_tcp {
        h.shutdown();
    }
    site.flush_all();
    fs::write(&clean, b"").with_context(|| format!("writing {}", clean.display()))?;
    let _ = fs::remove_file(&pid_file);
    tracing::info!("stopped cleanly");
    Ok(())
}

fn wait(rx: &Receiver<Stop>) -> Stop {
    rx.recv().unwrap_or(Stop::Signal)
}

/// The home holds sockets that give full control: keep it private when we make it.
fn create_home(home: &Path) -> Result<()> {
    if !home.exists() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .with_context(|| format!("creating {}", home.display()))?;
    }
    Ok(())
}

/// First SIGTERM/SIGINT asks for an orderly stop; a second one exits at once.
fn install_signals(stop: Sender<Stop>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = false;
        for sig in signals.forever() {
            if seen {
                tracing::warn!("second signal {sig}: exiting at once");
                std::process::exit(128 + sig);
            }
            seen = true;
            let _ = stop.try_send(Stop::Signal);
        }
    })?;
    Ok(())
}

/// The site home: `--home`, else `$FLASHTRACK_HOME`, else the user's data directory.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("FLASHTRACK_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(d).join("flashtrack");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/flashtrack")
}

/// How often FlashCopy bitmaps are checkpointed while running.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Copier threads: one per CPU (at least two), each with its own io_uring copy stream of
/// `STREAM_DEPTH` runs in flight, reserving runs through the relationship's shared cursor.
/// The pread/pwrite backend gets its parallelism from threads alone, so it runs four.
fn copiers(site: &Site) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    if site.io().kind() == flashtrack::io::IoKind::Uring { cpus.clamp(2, 8) } else { 16 }
}

/// Tracks one copier pass takes per relationship before looking at the others again (and
/// at the rate limit): 64 MiB.
const PASS_TRACKS: u32 = 1024;

/// The background copier threads: copy passes while there is work, then sleep until kicked.
struct Copier {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Copier {
    fn start(site: Arc<Site>, rate: Option<u64>) -> Result<Copier> {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        // The rate limit is shared out between the threads. A pass copies at least one run
        // (16 tracks, 1 MiB) before a thread looks at the limit, so each thread gets at
        // least 10 MiB/s of it: more threads would start with a burst of a run each (16 of
        // them on the pread/pwrite backend: 16 MiB at once under `--copy-rate 2`).
        let run_bytes = u64::from(RUN_TRACKS) * flashtrack::geometry::TRACK_BYTES;
        let n_threads = match rate {
            Some(r) => copiers(&site).min((r / (10 * run_bytes)).max(1) as usize),
            None => copiers(&site),
        };
        let rate = rate.map(|r| (r / n_threads as u64).max(1));
        // A rate-limited pass takes about a tenth of a second's worth.
        let budget = rate.map_or(PASS_TRACKS, |r| {
            (r / 10 / flashtrack::geometry::TRACK_BYTES).clamp(u64::from(RUN_TRACKS), u64::from(PASS_TRACKS)) as u32
        });
        for n in 0..n_threads {
            let flag = stop.clone();
            let site = site.clone();
            let thread = std::thread::Builder::new().name(format!("copier-{n}")).spawn(move || {
                let mut last_checkpoint = std::time::Instant::now();
                let mut worker = CopyWorker::new(STREAM_DEPTH);
                // Copy rate limit (extension): bytes copied since `window` began may not run
                // ahead of rate x elapsed; the copier sleeps off any lead.
                let mut window = (std::time::Instant::now(), 0u64);
                while !flag.load(Ordering::SeqCst) {
                    let seen = flashtrack::flash::work_count();
                    let tracks = site.copy_pass(&mut worker, budget);
                    if tracks == 0 {
                        site.wait_copy_work(seen, std::time::Duration::from_millis(500));
                        window = (std::time::Instant::now(), 0);
                    } else if let Some(bytes_per_sec) = rate {
                        window.1 += tracks * flashtrack::geometry::TRACK_BYTES;
                        let due = std::time::Duration::from_secs_f64(window.1 as f64 / bytes_per_sec as f64);
                        if let Some(lead) = due.checked_sub(window.0.elapsed()) {
                            std::thread::sleep(lead.min(std::time::Duration::from_millis(500)));
                        }
                    }
                    if n == 0 && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                        site.checkpoint();
                        last_checkpoint = std::time::Instant::now();
                    }
                }
            })?;
            threads.push(thread);
        }
        Ok(Copier { stop, threads })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        flashtrack::flash::kick_all();
        for t in self.threads {
            let _ = t.join();
        }
    }
}
