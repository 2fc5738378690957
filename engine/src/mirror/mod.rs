//! Remote Mirror and Copy (PPRC) at run time. This file: the links PPRC paths stand on,
//! between images of this site over in-process links and to an image served by another
//! flashd over loopback TCP. Pairs: `hub.rs`, `pair.rs`, `commands.rs`, `inband.rs`; remote
//! FlashCopy: `conduit.rs`; link settings: `linkprops.rs`.
//!
//! [`PathLinks`] owns one [`LinkEndpoint`] per image I/O port that a path uses (at either
//! end) and connects each path's port pair in-process ([`LinkEndpoint::connect_local`]). It is
//! reconciled with the catalogs when the site opens (flashd start) and after each request that
//! adds or removes paths or images. Endpoints authenticate with the site key, made once and
//! kept in `HOME/site.key` (mode 0600, 64 hex digits). A port pair's state is `Success` when
//! its link answers a ping within [`PING_TIMEOUT`].
//!
//! # Another flashd (loopback TCP)
//!
//! * `flashd run --link-listen 127.0.0.1:PORT` makes a [`LinkListener`] ([`PathLinks::listen`]):
//!   every I/O port of every image of the site then has an endpoint, served on that one
//!   address (the listener routes each connection by the port its Hello asks for).
//! * Where another site's image is reached is the file `HOME/peers` ([`PEERS_FILE`]): one line
//!   `WWNN ADDR` per remote image (`flashd peer add|list|remove`, written crash-safely:
//!   temp file, fsync, rename, fsync of the home). Read when paths are reconciled and each
//!   time `lspprcpath` redials a missing link, so a changed address needs no restart.
//! * Both sites must hold the same site key: `flashd key show` on one, `flashd key set HEX`
//!   on the other (or copy `HOME/site.key`, mode 0600), then restart that flashd (endpoints
//!   keep the key they were made with). A wrong key is refused by the link handshake at both
//!   ends and logged there; the path shows `Failed`.
//! * A path's remote port pair is dialled ([`LinkEndpoint::connect_tcp`]) when paths are
//!   reconciled (flashd start, `mkpprcpath`) and again by `lspprcpath` when it has no link
//!   ([`PathLinks::redial`]); no link is `Failed` (Down), a link whose ping gets no answer is
//!   `Failed` (secondary unavailable).

pub mod commands;
pub mod conduit;
pub mod hub;
pub mod inband;
pub mod pair;

use crate::control::PathState;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ImageId;
use crate::link::{Handler, Link, LinkAddr, LinkEndpoint, LinkListener, Message, Reply, SiteKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod linkprops;

/// The site key file in the home.
pub const SITE_KEY_FILE: &str = "site.key";
/// How long `lspprcpath` waits for a link's ping.
pub const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The port `I0001` as a number.
fn port_no(p: &str) -> Option<u16> {
    u16::from_str_radix(p.strip_prefix('I')?, 16).ok()
}

/// The link address of port `port` of `image`.
pub fn addr(image: &ImageId, port: &str) -> Option<LinkAddr> {
    Some(LinkAddr { wwnn: u64::from_str_radix(&image.wwnn(), 16).ok()?, port: port_no(port)? })
}

/// The peers file in the home: where other sites' images are served (`WWNN ADDR` lines).
pub const PEERS_FILE: &str = "peers";

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    text.len()
        .is_multiple_of(2)
        .then(|| (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect())
        .flatten()
}

/// A key as the site key file holds it: lowercase hexadecimal.
pub fn key_hex(key: &SiteKey) -> String {
    key.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `HOME/name` crash-safely (temp file, fsync, rename, fsync of the home) with `mode`.
fn write_home_file(home: &Path, name: &str, text: &str, mode: u32) -> Result<()> {
    let io = |p: &PathBuf, e: std::io::Error| Error::io(p.display(), &e);
    let path = home.join(name);
    let tmp = home.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    crate::image::catalog::sync_dir(home)
}

/// Load the site key, or make it (32 random bytes) if the home has none.
pub fn site_key(home: &Path) -> Result<SiteKey> {
    let path = home.join(SITE_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = parse_hex(text.trim())
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, path.display(), "not hexadecimal"))?;
            SiteKey::new(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SiteKey::generate()?;
            write_home_file(home, SITE_KEY_FILE, &format!("{}\n", key_hex(&key)), 0o600)?;
            tracing::info!("made the site key {}", path.display());
            Ok(key)
        }
        Err(e) => Err(Error::io(path.display(), &e)),
    }
}

/// Replace the site key with `hex` (another site's, so the two can link). Takes effect when
/// flashd next starts.
pub fn set_site_key(home: &Path, hex: &str) -> Result<SiteKey> {
    let bytes = parse_hex(hex.trim())
        .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "site key", "not hexadecimal digits"))?;
    let key = SiteKey::new(bytes)?;
    write_home_file(home, SITE_KEY_FILE, &format!("{}\n", key_hex(&key)), 0o600)?;
    Ok(key)
}

/// A WWNN as the peers file keeps it: 16 uppercase hex digits.
fn peer_wwnn(wwnn: &str) -> Result<String> {
    if wwnn.len() == 16 && wwnn.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(wwnn.to_ascii_uppercase())
    } else {
        Err(Error::new(ErrorKind::InvalidArgument, wwnn, "a WWNN is 16 hexadecimal digits"))
    }
}

/// The peers file: remote image WWNN -> the loopback address its flashd listens on. No file
/// is no peers; blank lines and `#` comments are skipped; a bad line is `Corrupt`.
pub fn load_peers(home: &Path) -> Result<BTreeMap<String, SocketAddr>> {
    let path = home.join(PEERS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(path.display(), &e)),
    };
    let mut peers = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || Error::new(ErrorKind::Corrupt, format!("{}:{}", path.display(), n + 1), "expected `WWNN ADDR`");
        let mut words = line.split_whitespace();
        let (Some(w), Some(a), None) = (words.next(), words.next(), words.next()) else { return Err(bad()) };
        let addr: SocketAddr = a.parse().map_err(|_| bad())?;
        peers.insert(peer_wwnn(w).map_err(|_| bad())?, addr);
    }
    Ok(peers)
}

fn save_peers(home: &Path, peers: &BTreeMap<String, SocketAddr>) -> Result<()> {
    let mut text = String::from("# flashtrack peers: remote image WWNN, loopback address of its flashd\n");
    for (w, a) in peers {
        text.push_str(&format!("{w} {a}\n"));
    }
    write_home_file(home, PEERS_FILE, &text, 0o600)
}

/// Add or change a peer (loopback addresses only). Last writer wins between racing edits.
pub fn peer_add(home: &Path, wwnn: &str, addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(Error::new(ErrorKind::InvalidArgument, addr, "a peer is on loopback (127.0.0.1 or ::1)"));
    }
    let mut peers = load_peers(home)?;
    peers.insert(peer_wwnn(wwnn)?, addr);
    save_peers(home, &peers)
}

/// Remove a peer (`InvalidArgument` when it is not listed).
pub fn peer_remove(home: &Path, wwnn: &str) -> Result<()> {
    let mut peers = load_peers(home)?;
    if peers.remove(&peer_wwnn(wwnn)?).is_none() {
        return Err(Error::new(ErrorKind::InvalidArgument, wwnn, "not a peer"));
    }
    save_peers(home, &peers)
}

/// What arrives at a port before the site's pairs are up (`Ping` is answered by the link).
struct NotYet;

impl Handler for NotYet {
    fn handle(&self, from: LinkAddr, _msg: Message) -> Reply {
        Reply::Failed(Error::new(ErrorKind::ShuttingDown, from, "the site is not serving PPRC yet"))
    }
}

/// Makes the handler of a port (the PPRC layer's remote apply and in-band commands).
pub type HandlerFactory = Arc<dyn Fn(LinkAddr) -> Arc<dyn Handler> + Send + Sync>;

/// The endpoints and links of the site's PPRC paths.
#[derive(Default)]
pub struct PathLinks {
    key: Option<SiteKey>,
    endpoints: BTreeMap<LinkAddr, LinkEndpoint>,
    /// `--link-listen`: serves every endpoint to other flashd.
    listener: Option<LinkListener>,
    /// Port pairs (local -> another site's port) and where that port's flashd listens.
    remote: BTreeMap<(LinkAddr, LinkAddr), SocketAddr>,
    /// The last dial error of each remote pair, logged once until it changes.
    dial_errors: BTreeMap<(LinkAddr, LinkAddr), String>,
    /// The handler of each new endpoint (`hub::Hub` sets it).
    handlers: Option<HandlerFactory>,
    /// The site home (where the peers file is), known from the first `reconcile`.
    home: Option<PathBuf>,
    /// `chlink` settings per port pair, given to links made again (`linkprops.rs`).
    props: BTreeMap<(LinkAddr, LinkAddr), crate::link::LinkProps>,
}

impl std::fmt::Debug for PathLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathLinks({} endpoints)", self.endpoints.len())
    }
}

/// What the site's catalogs ask of [`PathLinks`].
#[derive(Debug, Default)]
pub struct Wanted {
    /// Port pairs between two images of this site.
    pub local: BTreeSet<(LinkAddr, LinkAddr)>,
    /// Port pairs from a port of this site to a peer's port, with the peer's address.
    pub remote: BTreeMap<(LinkAddr, LinkAddr), SocketAddr>,
    /// Every I/O port of every image here (served when listening).
    pub ports: BTreeSet<LinkAddr>,
}

impl PathLinks {
    /// What handles messages arriving at the endpoints made from now on.
    pub fn set_handlers(&mut self, f: HandlerFactory) {
        self.handlers = Some(f);
    }

    /// Listen for other flashd on `addr` (loopback only); the next `reconcile` serves every
    /// port of the site there. Returns the address bound.
    pub fn listen(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        let l = LinkListener::bind(addr)?;
        let bound = l.local_addr();
        for ep in self.endpoints.values() {
            l.serve(ep);
        }
        self.listener = Some(l);
        Ok(bound)
    }

    /// The site home, once the first `reconcile` told it.
    pub(super) fn home(&self) -> Option<PathBuf> {
        self.home.clone()
    }

    /// The address listened on, if any.
    pub fn listening(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(LinkListener::local_addr)
    }

    /// Make the endpoints and links `wanted` needs (port pairs, local -> remote), close the
    /// links and endpoints no path uses any more. Failures are logged: the path then shows
    /// a failed state. Links other flashd made to us are left alone.
    pub fn reconcile(&mut self, home: &Path, wanted: &Wanted) {
        self.home = Some(home.to_path_buf());
        let mut used: BTreeSet<LinkAddr> = wanted.local.iter().flat_map(|(a, b)| [*a, *b]).collect();
        used.extend(wanted.remote.keys().map(|(a, _)| *a));
        if self.listener.is_some() {
            used.extend(wanted.ports.iter().copied());
        }
        let was_remote = std::mem::replace(&mut self.remote, wanted.remote.clone());
        self.dial_errors.retain(|k, _| wanted.remote.contains_key(k));
        self.keep_props(wanted);
        // Links no path needs (in either direction) close; endpoints no path uses go.
        for (addr, ep) in &self.endpoints {
            for l in ep.links() {
                let peer = l.peer();
                let ours = self.endpoints.contains_key(&peer);
                let unwanted = if ours {
                    !wanted.local.contains(&(*addr, peer)) && !wanted.local.contains(&(peer, *addr))
                } else {
                    was_remote.contains_key(&(*addr, peer)) && !wanted.remote.contains_key(&(*addr, peer))
                };
                if unwanted {
                    l.close();
                }
            }
        }
        let gone: Vec<LinkAddr> = self.endpoints.keys().filter(|a| !used.contains(a)).copied().collect();
        for a in gone {
            if let Some(l) = &self.listener {
                l.unserve(&a);
            }
            if let Some(ep) = self.endpoints.remove(&a) {
                ep.shutdown();
            }
        }
        if used.is_empty() {
            return;
        }
        let key = match &self.key {
            Some(k) => k.clone(),
            None => match site_key(home) {
                Ok(k) => self.key.insert(k).clone(),
                Err(e) => {
                    tracing::error!("PPRC paths: no site key: {e}");
                    return;
                }
            },
        };
        for a in &used {
            if !self.endpoints.contains_key(a) {
                let handler: Arc<dyn Handler> = match &self.handlers {
                    Some(f) => f(*a),
                    None => Arc::new(NotYet),
                };
                match LinkEndpoint::new(*a, key.clone(), handler) {
                    Ok(ep) => {
                        if let Some(l) = &self.listener {
                            l.serve(&ep);
                        }
                        self.endpoints.insert(*a, ep);
                    }
                    Err(e) => tracing::error!("PPRC paths: endpoint {a}: {e}"),
                }
            }
        }
        for (a, b) in &wanted.local {
            if self.link(a, b).is_some() {
                continue;
            }
            let (Some(ours), Some(theirs)) = (self.endpoints.get(a), self.endpoints.get(b)) else { continue };
            match ours.connect_local(theirs) {
                Ok(link) => {
                    self.restore_props(&link);
                    tracing::info!("PPRC path link {a} -> {b} up");
                }
                Err(e) => tracing::error!("PPRC path link {a} -> {b}: {e}"),
            }
        }
        self.dial();
    }

    /// Dial every remote pair that has no open link, at the addresses the peers file gives
    /// now (`lspprcpath` calls it, so a restarted or moved peer is found again).
    pub fn redial(&mut self, home: &Path) {
        if self.remote.is_empty() {
            return;
        }
        match load_peers(home) {
            Ok(peers) => {
                for ((_, b), addr) in self.remote.iter_mut() {
                    if let Some(a) = peers.get(&format!("{:016X}", b.wwnn)) {
                        *addr = *a;
                    }
                }
            }
            Err(e) => tracing::warn!("PPRC paths: {e}"),
        }
        self.dial();
    }

    /// Dial the remote port pairs among `ports` that have no open link (a PPRC pair needs
    /// its path: after a restart of either flashd, before `lspprcpath` was run).
    pub fn redial_ports(&mut self, ports: &[(LinkAddr, LinkAddr)]) {
        let Some(home) = self.home.clone() else { return };
        if ports.iter().any(|p| self.remote.contains_key(p) && self.link(&p.0, &p.1).is_none()) {
            self.redial(&home);
        }
    }

    fn dial(&mut self) {
        for ((a, b), addr) in &self.remote {
            if self.link(a, b).is_some() {
                continue;
            }
            let Some(ours) = self.endpoints.get(a) else { continue };
            match ours.connect_tcp(*addr, *b) {
                Ok(link) => {
                    self.restore_props(&link);
                    self.dial_errors.remove(&(*a, *b));
                    tracing::info!("PPRC path link {a} -> {b} at {addr} up");
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.dial_errors.get(&(*a, *b)) != Some(&text) {
                        tracing::warn!("PPRC path link {a} -> {b} at {addr}: {text}");
                        self.dial_errors.insert((*a, *b), text);
                    }
                }
            }
        }
    }

    /// The open link between two ports, from either end.
    pub fn link(&self, a: &LinkAddr, b: &LinkAddr) -> Option<Link> {
        let from =
            |x: &LinkAddr, y: &LinkAddr| self.endpoints.get(x).and_then(|ep| ep.link(y)).filter(|l| !l.is_closed());
        from(a, b).or_else(|| from(b, a))
    }

    /// Every endpoint's address (tests).
    pub fn endpoints(&self) -> Vec<LinkAddr> {
        self.endpoints.keys().copied().collect()
    }

    /// Close everything (site shutdown).
    pub fn shutdown(&mut self) {
        if let Some(l) = self.listener.take() {
            l.shutdown();
        }
        for (_, ep) in std::mem::take(&mut self.endpoints) {
            ep.shutdown();
        }
    }
}

/// The state of a port pair whose link is `link` (`None`: no link).
pub fn probe(link: Option<&Link>) -> PathState {
    match link {
        None => PathState::FailedDown,
        Some(l) => match l.ping(PING_TIMEOUT) {
            Ok(_) => PathState::Success,
            Err(_) => PathState::FailedSecondaryUnavailable,
        },
    }
}
