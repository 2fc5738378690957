//! Remote Mirror and Copy (PPRC) at run time: the links PPRC paths stand on. First slice of
//! issue 5: paths between images of this site only, over in-process links; no PPRC pairs, no
//! mirroring, no TCP peers yet.
//!
//! [`PathLinks`] owns one [`LinkEndpoint`] per image I/O port that a path uses (at either
//! end) and connects each path's port pair in-process ([`LinkEndpoint::connect_local`]). It is
//! reconciled with the catalogs when the site opens (flashd start) and after each request that
//! adds or removes paths or images. Endpoints authenticate with the site key, made once and
//! kept in `HOME/site.key` (mode 0600, 64 hex digits). A port pair's state is `Success` when
//! its link answers a ping within [`PING_TIMEOUT`].

use crate::control::PathState;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ImageId;
use crate::link::{Handler, Link, LinkAddr, LinkEndpoint, Message, Reply, SiteKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

/// Load the site key, or make it (32 random bytes) if the home has none.
pub fn site_key(home: &Path) -> Result<SiteKey> {
    let path = home.join(SITE_KEY_FILE);
    let io = |p: &PathBuf, e: std::io::Error| Error::io(p.display(), &e);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let bytes: Option<Vec<u8>> = (text.len() % 2 == 0)
                .then(|| (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect())
                .flatten();
            let bytes = bytes.ok_or_else(|| Error::new(ErrorKind::Corrupt, path.display(), "not hexadecimal"))?;
            SiteKey::new(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SiteKey::generate()?;
            let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let tmp = home.join(format!(".{SITE_KEY_FILE}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut f =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(format!("{hex}\n").as_bytes()).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            crate::image::catalog::sync_dir(home)?;
            tracing::info!("made the site key {}", path.display());
            Ok(key)
        }
        Err(e) => Err(io(&path, e)),
    }
}

/// What arrives over a path's link: nothing is applied yet (no PPRC pairs); `Ping` is
/// answered by the link itself.
struct NoPairs;

impl Handler for NoPairs {
    fn handle(&self, from: LinkAddr, _msg: Message) -> Reply {
        Reply::Failed(Error::new(ErrorKind::Unsupported, from, "no PPRC pairs exist yet"))
    }
}

/// The endpoints and links of the site's PPRC paths.
#[derive(Default)]
pub struct PathLinks {
    key: Option<SiteKey>,
    endpoints: BTreeMap<LinkAddr, LinkEndpoint>,
}

impl std::fmt::Debug for PathLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathLinks({} endpoints)", self.endpoints.len())
    }
}

impl PathLinks {
    /// Make the endpoints and links `wanted` needs (port pairs, local -> remote), close the
    /// links and endpoints no path uses any more. Failures are logged: the path then shows
    /// a failed state.
    pub fn reconcile(&mut self, home: &Path, wanted: &BTreeSet<(LinkAddr, LinkAddr)>) {
        let used: BTreeSet<LinkAddr> = wanted.iter().flat_map(|(a, b)| [*a, *b]).collect();
        // Links no path needs (in either direction) close; endpoints no path uses go.
        for (addr, ep) in &self.endpoints {
            for l in ep.links() {
                let peer = l.peer();
                if !wanted.contains(&(*addr, peer)) && !wanted.contains(&(peer, *addr)) {
                    l.close();
                }
            }
        }
        let gone: Vec<LinkAddr> = self.endpoints.keys().filter(|a| !used.contains(a)).copied().collect();
        for a in gone {
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
        let handler: Arc<dyn Handler> = Arc::new(NoPairs);
        for a in &used {
            if !self.endpoints.contains_key(a) {
                match LinkEndpoint::new(*a, key.clone(), handler.clone()) {
                    Ok(ep) => {
                        self.endpoints.insert(*a, ep);
                    }
                    Err(e) => tracing::error!("PPRC paths: endpoint {a}: {e}"),
                }
            }
        }
        for (a, b) in wanted {
            if self.link(a, b).is_some() {
                continue;
            }
            let (Some(ours), Some(theirs)) = (self.endpoints.get(a), self.endpoints.get(b)) else { continue };
            match ours.connect_local(theirs) {
                Ok(_) => tracing::info!("PPRC path link {a} -> {b} up"),
                Err(e) => tracing::error!("PPRC path link {a} -> {b}: {e}"),
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
