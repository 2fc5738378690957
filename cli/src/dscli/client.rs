//! The connection to flashd: JSON lines over a control socket, `Hello` first.
//!
//! Where: `-hmc1 unix:PATH` (or the profile's `hmc1`) names a socket, and failing to reach it
//! is a connection error (exit 3) with no autostart. Otherwise the site home
//! (`$FLASHTRACK_HOME`, else `$XDG_DATA_HOME/flashtrack`, else `~/.local/share/flashtrack`):
//! if no flashd answers on `HOME/control.sock`, one is started fully detached
//! (`flashd run --home HOME`, own process group, output appended to `HOME/flashd.log`) and the
//! socket is polled for up to 10 s. Two racing dscli both poll the same socket; flashd's
//! home lock lets only one of the spawned daemons live.

use flashtrack::control::{Envelope, PROTOCOL_VERSION, Reply, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for an autostarted flashd's socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An explicit socket (`-hmc1 unix:PATH`): no autostart.
    Socket(PathBuf),
    /// A site home: autostart flashd there if needed.
    Home(PathBuf),
}

impl Target {
    /// From an `-hmc1`/profile value. Only `unix:PATH` (or a plain path) can be served.
    pub fn from_hmc(value: &str) -> Result<Target, String> {
        let path = value.strip_prefix("unix:").unwrap_or(value);
        if path.contains('/') || value.starts_with("unix:") {
            Ok(Target::Socket(PathBuf::from(path)))
        } else {
            Err(format!("{value} is not a unix:PATH address (only local flashd sockets are supported)"))
        }
    }

    /// The site home from the environment.
    pub fn home() -> Target {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = env("FLASHTRACK_HOME")
            .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("flashtrack")))
            .or_else(|| env("HOME").map(|h| h.join(".local/share/flashtrack")))
            .unwrap_or_else(|| PathBuf::from(".flashtrack"));
        Target::Home(home)
    }

    pub fn socket(&self) -> PathBuf {
        match self {
            Target::Socket(p) => p.clone(),
            Target::Home(h) => h.join("control.sock"),
        }
    }

    /// How the target is named in messages.
    pub fn display(&self) -> String {
        format!("unix:{}", self.socket().display())
    }
}

/// Facts from the daemon's `Hello`.
#[derive(Debug, Clone)]
pub struct Hello {
    pub daemon_version: String,
    pub protocol: u32,
    pub io_backend: String,
}

/// A connection failure: the reason, and whether it was a version refusal.
#[derive(Debug, Clone)]
pub struct ConnError(pub String);

#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub hello: Hello,
}

impl Client {
    /// Connects (autostarting for a home) and shakes hands.
    pub fn connect(target: &Target) -> Result<Client, ConnError> {
        let sock = target.socket();
        let stream = match UnixStream::connect(&sock) {
            Ok(s) => s,
            Err(e) => match target {
                Target::Socket(_) => return Err(ConnError(e.to_string())),
                Target::Home(home) => start_and_wait(home, &sock)?,
            },
        };
        let writer = stream.try_clone().map_err(|e| ConnError(e.to_string()))?;
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
            hello: Hello { daemon_version: String::new(), protocol: 0, io_backend: String::new() },
        };
        match c.call(Request::Hello)? {
            Response::Ok(Reply::Hello { protocol, daemon_version, io_backend, .. }) => {
                if protocol != PROTOCOL_VERSION {
                    return Err(ConnError(format!(
                        "flashd speaks protocol version {protocol}, this dscli {PROTOCOL_VERSION}"
                    )));
                }
                c.hello = Hello { daemon_version, protocol, io_backend };
                Ok(c)
            }
            Response::Err(e) => Err(ConnError(format!("flashd refused the connection: {}", e.detail))),
            Response::Ok(other) => Err(ConnError(format!("unexpected reply to Hello: {other:?}"))),
        }
    }

    /// One request, one response.
    pub fn call(&mut self, request: Request) -> Result<Response, ConnError> {
        let env = Envelope { version: PROTOCOL_VERSION, request };
        let mut line = serde_json::to_string(&env).map_err(|e| ConnError(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|e| ConnError(format!("lost flashd: {e}")))?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(0) => Err(ConnError("flashd closed the connection".into())),
            Ok(_) => serde_json::from_str(&reply).map_err(|e| ConnError(format!("bad reply from flashd: {e}"))),
            Err(e) => Err(ConnError(format!("lost flashd: {e}"))),
        }
    }
}

/// The flashd binary: `$FLASHTRACK_FLASHD`, else next to this executable.
fn flashd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FLASHTRACK_FLASHD") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("flashd")))
        .unwrap_or_else(|| PathBuf::from("flashd"))
}

/// Starts flashd on `home`, detached, and polls its socket.
fn start_and_wait(home: &Path, sock: &Path) -> Result<UnixStream, ConnError> {
    use std::os::unix::fs::DirBuilderExt;
    // Private: the home's sockets give full control of the site.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| ConnError(format!("cannot create {}: {e}", home.display())))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("flashd.log"))
        .map_err(|e| ConnError(format!("cannot open {}: {e}", home.join("flashd.log").display())))?;
    let log2 = log.try_clone().map_err(|e| ConnError(e.to_string()))?;
    let bin = flashd_binary();
    // `--detach` makes flashd call setsid(2) itself: a new session without a controlling
    // terminal, so Ctrl-C or a hangup on dscli's terminal never reaches the daemon.
    let spawned = Command::new(&bin)
        .arg("run")
        .arg("--detach")
        .arg("--home")
        .arg(home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn();
    let mut child = spawned.map_err(|e| ConnError(format!("cannot start {}: {e}", bin.display())))?;
    // A running child is never waited for: it outlives dscli and is reparented to init. One
    // that exits at once either lost the race to another starter (which then answers) or
    // failed: retry briefly, then say why from its log instead of waiting out the timeout.
    let deadline = Instant::now() + START_TIMEOUT;
    let mut exited_at: Option<Instant> = None;
    loop {
        if let Ok(s) = UnixStream::connect(sock) {
            return Ok(s);
        }
        if exited_at.is_none() && matches!(child.try_wait(), Ok(Some(_))) {
            exited_at = Some(Instant::now());
        }
        if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            let log = std::fs::read_to_string(home.join("flashd.log")).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            return Err(ConnError(format!("flashd exited at start: {last}")));
        }
        if Instant::now() >= deadline {
            return Err(ConnError(format!(
                "flashd did not answer within {} s (see {})",
                START_TIMEOUT.as_secs(),
                home.join("flashd.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmc_values() {
        assert_eq!(Target::from_hmc("unix:/run/x.sock").unwrap(), Target::Socket("/run/x.sock".into()));
        assert_eq!(Target::from_hmc("/run/x.sock").unwrap(), Target::Socket("/run/x.sock".into()));
        assert!(Target::from_hmc("9.155.1.1").is_err());
        assert_eq!(Target::Home("/h".into()).socket(), PathBuf::from("/h/control.sock"));
    }

    #[test]
    fn explicit_socket_does_not_autostart() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::Socket(dir.path().join("control.sock"));
        assert!(Client::connect(&t).is_err());
        assert!(!dir.path().join("flashd.log").exists());
    }
}
