//! The control socket: JSON lines, one thread per client connection.
//!
//! A request whose envelope carries another protocol version is answered with
//! `VersionMismatch` (the client exits 3); an undecodable line with `InvalidArgument`.

use super::Stop;
use super::hosts::HostEndpoints;
use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use flashtrack::control::{Envelope, PROTOCOL_VERSION, Request, Response};
use flashtrack::error::{Error, ErrorKind};
use flashtrack::site::Site;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Longest request line accepted (a request is small; this bounds a hostile client).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    /// Requests being handled now; shutdown waits for them (with a deadline).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(path: &Path, site: Arc<Site>, hosts: Arc<HostEndpoints>, stop: Sender<Stop>) -> Result<Server> {
        // We hold the home lock, so a socket file here is stale.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", path.display()))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let busy = in_flight.clone();
        let accept = std::thread::Builder::new().name("control-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (site, hosts, stop, flag, busy) =
                    (site.clone(), hosts.clone(), stop.clone(), flag.clone(), busy.clone());
                let _ = std::thread::Builder::new()
                    .name("control".into())
                    .spawn(move || serve(conn, &site, &hosts, &stop, &flag, &busy));
            }
        })?;
        Ok(Server { path: path.to_path_buf(), stopping, in_flight, accept: Some(accept) })
    }

    /// Stop accepting: remove the socket and wake the accept loop.
    pub fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
        // Requests already inside the engine finish (or the deadline passes) before the
        // daemon checkpoints and writes its clean mark.
        let deadline = std::time::Instant::now() + SHUTDOWN_DEADLINE;
        while self.in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let left = self.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!("{left} control requests still running at the shutdown deadline");
        }
    }
}

/// How long shutdown waits for control requests in progress.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

fn serve(
    conn: UnixStream,
    site: &Site,
    hosts: &HostEndpoints,
    stop: &Sender<Stop>,
    stopping: &AtomicBool,
    busy: &std::sync::atomic::AtomicUsize,
) {
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (response, shutdown) = if stopping.load(Ordering::SeqCst) {
            (Response::Err(Error::new(ErrorKind::ShuttingDown, "", "flashd is shutting down")), false)
        } else {
            match decode(&line) {
                Ok(Request::Shutdown) => (site.handle(Request::Shutdown), true),
                Ok(req) => (handle(site, hosts, req), false),
                Err(e) => (Response::Err(e), false),
            }
        };
        busy.fetch_sub(1, Ordering::SeqCst);
        let Ok(mut out) = serde_json::to_vec(&response) else { return };
        out.push(b'\n');
        if writer.write_all(&out).is_err() {
            return;
        }
        if shutdown {
            let _ = stop.try_send(Stop::Request);
        }
    }
}

/// A request, with the host endpoints kept in step: a TCP port nobody can bind is refused
/// first, and endpoints are started or stopped before the reply goes out (so a client
/// that sees `mkhostconnect` succeed can connect at once).
fn handle(site: &Site, hosts: &HostEndpoints, req: Request) -> Response {
    if let Some(e) = hosts.precheck(&req) {
        return Response::Err(e);
    }
    let moves = HostEndpoints::moves_endpoints(&req);
    let response = site.handle(req);
    if moves {
        hosts.reconcile();
    }
    response
}

fn decode(line: &str) -> Result<Request, Error> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, "", format!("undecodable request: {e}")))?;
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(PROTOCOL_VERSION as u64) {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            "",
            format!("client speaks control protocol {version:?}, flashd speaks {PROTOCOL_VERSION}"),
        ));
    }
    let env: Envelope = serde_json::from_value(value)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, "", format!("undecodable request: {e}")))?;
    Ok(env.request)
}

use std::io::Read as _;
