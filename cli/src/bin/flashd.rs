//! `flashd`: the daemon that owns a flashtrack site home, and its image tool.
#![forbid(unsafe_code)]

#[path = "../daemon/mod.rs"]
mod daemon;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use flashtrack::control::{Client, Reply, Request, Response};
use flashtrack::error::ErrorKind;
use flashtrack::id::ImageId;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "flashd", version, about = "flashtrack daemon: owns a site home, serves dscli and NBD hosts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon on a site home (foreground; dscli starts it detached when needed).
    Run {
        /// Site home (default: $FLASHTRACK_HOME, else ~/.local/share/flashtrack).
        #[arg(long)]
        home: Option<PathBuf>,
        /// Also serve NBD on TCP at this loopback address, e.g. 127.0.0.1:10809.
        /// Any local user can reach a TCP port: see the README's threat model.
        #[arg(long, value_name = "ADDR")]
        nbd_tcp: Option<std::net::SocketAddr>,
        /// Limit the background copy to this many MiB/s (an extension; default unlimited).
        #[arg(long, value_name = "MIB", env = "FLASHTRACK_COPY_RATE")]
        copy_rate: Option<u64>,
        /// Copy between file-backed volumes with O_DIRECT (an extension): the background
        /// copy reads and writes the disk, not the page cache. Host I/O stays buffered.
        #[arg(long, env = "FLASHTRACK_COPY_DIRECT", value_parser = clap::builder::FalseyValueParser::new())]
        copy_direct: bool,
        /// Show each FB volume as the file DIR/IBM.2107-75FA120/1000 (FUSE; needs root and
        /// /dev/fuse), e.g. for a loop device. An extension; see the README.
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
        /// Take PPRC path links from other flashd on this loopback address, e.g.
        /// 127.0.0.1:7800, for every I/O port of every image here (an extension).
        #[arg(long, value_name = "ADDR")]
        link_listen: Option<std::net::SocketAddr>,
        /// Start a new session (setsid): no controlling terminal, no terminal signals.
        /// dscli uses this when it starts flashd in the background.
        #[arg(long)]
        detach: bool,
    },
    /// Other flashd whose images PPRC paths may reach (HOME/peers; an extension).
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
    },
    /// The site key two flashd must share to link (HOME/site.key; an extension).
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Storage images of the site (an extension: DS CLI cannot create images).
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    /// Name where the remote image WWNN is served: its flashd's --link-listen address.
    Add {
        #[arg(long)]
        home: Option<PathBuf>,
        #[arg(long)]
        wwnn: String,
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
    /// List the peers (WWNN and address).
    List {
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// Forget a peer.
    Remove {
        #[arg(long)]
        home: Option<PathBuf>,
        #[arg(long)]
        wwnn: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Print the site key (made if the home has none).
    Show {
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// Replace the site key with HEX (another site's); restart flashd to use it.
    Set {
        #[arg(long)]
        home: Option<PathBuf>,
        hex: String,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Create a storage image, e.g. IBM.2107-75FA120 (DS8000) or IBM.1750-68FA120 (DS6000).
    Create {
        #[arg(long)]
        home: Option<PathBuf>,
        id: String,
    },
    /// List the storage images.
    List {
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// Remove a storage image (refused while it has volumes).
    Remove {
        #[arg(long)]
        home: Option<PathBuf>,
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<flashtrack::Error>() {
                Some(err) if err.object.is_empty() => eprintln!("flashd: {}", err.detail),
                Some(err) => eprintln!("flashd: {}: {}", err.object, err.detail),
                None => eprintln!("flashd: {e:#}"),
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// DS CLI's codes: 2 for a malformed argument, 3 when no daemon can be reached or the home
/// is owned by a silent one, 4 for a refusal.
fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<flashtrack::Error>().map(|e| e.kind) {
        Some(ErrorKind::InvalidArgument) => 2,
        Some(ErrorKind::HomeLocked | ErrorKind::VersionMismatch) => 3,
        Some(_) => 4,
        None => 1,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run { home, nbd_tcp, copy_rate, copy_direct, mount, link_listen, detach } => {
            if detach {
                // Fails only if we already lead a process group; then we are detached enough.
                let _ = rustix::process::setsid();
            }
            if let Some(addr) = nbd_tcp
                && !addr.ip().is_loopback()
            {
                bail!("--nbd-tcp must be a loopback address (127.0.0.1 or ::1), not {addr}");
            }
            if let Some(addr) = link_listen
                && !addr.ip().is_loopback()
            {
                bail!("--link-listen must be a loopback address (127.0.0.1 or ::1), not {addr}");
            }
            let home = home.unwrap_or_else(daemon::default_home);
            // Relative to where flashd was started, whatever directory it runs in later.
            let mount = mount.map(std::path::absolute).transpose().context("--mount")?;
            daemon::run(&daemon::RunOptions {
                home,
                nbd_tcp,
                copy_rate_mib: copy_rate.filter(|&r| r > 0),
                copy_direct,
                mount,
                link_listen,
            })
        }
        Cmd::Peer { cmd } => match cmd {
            PeerCmd::Add { home, wwnn, addr } => {
                let home = home_dir(home)?;
                flashtrack::mirror::peer_add(&home, &wwnn, addr)?;
                println!("peer {} at {addr}", wwnn.to_ascii_uppercase());
                Ok(())
            }
            PeerCmd::List { home } => {
                for (w, a) in flashtrack::mirror::load_peers(&home_of(home))? {
                    println!("{w} {a}");
                }
                Ok(())
            }
            PeerCmd::Remove { home, wwnn } => {
                flashtrack::mirror::peer_remove(&home_of(home), &wwnn)?;
                println!("peer {} removed", wwnn.to_ascii_uppercase());
                Ok(())
            }
        },
        Cmd::Key { cmd } => match cmd {
            KeyCmd::Show { home } => {
                let key = flashtrack::mirror::site_key(&home_dir(home)?)?;
                println!("{}", flashtrack::mirror::key_hex(&key));
                Ok(())
            }
            KeyCmd::Set { home, hex } => {
                flashtrack::mirror::set_site_key(&home_dir(home)?, &hex)?;
                println!("site key set; restart flashd to use it");
                Ok(())
            }
        },
        Cmd::Image { cmd } => match cmd {
            ImageCmd::Create { home, id } => {
                let id: ImageId = id.parse()?;
                request(&home_of(home), Request::ImageCreate { id: id.clone() })?;
                println!("storage image {id} created");
                Ok(())
            }
            ImageCmd::List { home } => {
                if let Reply::Images(images) = request(&home_of(home), Request::ImageList)? {
                    for i in images {
                        println!("{} {} {} volumes={}", i.id, i.wwnn, i.state, i.volumes);
                    }
                }
                Ok(())
            }
            ImageCmd::Remove { home, id } => {
                let id: ImageId = id.parse()?;
                request(&home_of(home), Request::ImageRemove { id: id.clone() })?;
                println!("storage image {id} removed");
                Ok(())
            }
        },
    }
}

/// The home, made (private) if it does not exist yet.
fn home_dir(home: Option<PathBuf>) -> Result<PathBuf> {
    let home = home_of(home);
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&home)
        .with_context(|| format!("creating {}", home.display()))?;
    Ok(home)
}

fn home_of(home: Option<PathBuf>) -> PathBuf {
    home.unwrap_or_else(daemon::default_home)
}

/// Through the running daemon's socket when one answers; otherwise open the site directly
/// (which takes the home lock, so it is refused while a daemon owns the home).
fn request(home: &Path, req: Request) -> Result<Reply> {
    let sock = home.join(daemon::CONTROL_SOCK);
    let resp = match Client::connect(&sock) {
        Ok(mut c) => c.call(req).context("talking to flashd")?,
        Err(_) => {
            // No daemon answers: do it here, logged to the site's flashd.log like the daemon.
            std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
            daemon::log::init(home)?;
            let io = flashtrack::io::probe::select().map_err(|e| anyhow::anyhow!(e))?;
            let site = flashtrack::site::Site::open(home, io).map_err(|e| {
                if e.kind == ErrorKind::HomeLocked {
                    flashtrack::Error::new(
                        ErrorKind::HomeLocked,
                        home.display(),
                        "a flashd owns this home but does not answer on control.sock",
                    )
                } else {
                    e
                }
            })?;
            let resp = site.handle(req);
            // The site closes cleanly here: the next daemon start has nothing to recover.
            site.flush_all();
            drop(site);
            std::fs::write(home.join(daemon::CLEAN_MARK), b"")
                .with_context(|| format!("writing the clean mark in {}", home.display()))?;
            resp
        }
    };
    match resp {
        Response::Ok(r) => Ok(r),
        Response::Err(e) => Err(e.into()),
    }
}
