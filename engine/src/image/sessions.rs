//! Host sessions opened through host connections, kept so a change of access can end them.
//!
//! A session reached through a host connection's endpoint registers here (under the site
//! lock, with its volume's session count). When the catalog stops letting that host reach
//! that volume (`chvolgrp -action remove|replace`, `rmvolgrp`, `chhostconnect -volgrp`,
//! `rmhostconnect`, `rmfbvol`), the session is *revoked*:
//! 1. its flag is set: every request that has not started yet fails with `ESHUTDOWN`
//!    (NBD_ESHUTDOWN: the client should disconnect), requests already running finish;
//! 2. after [`REVOKE_GRACE`] the server stops reading the connection (the NBD hook
//!    `Export::attach_disconnect`): what was read is answered, then the socket closes.
//!
//! `rmfbvol` additionally waits for the running requests to drain ([`HostSession::drained`])
//! before the volume's backing goes, so no late write can land in a reused device region.

use crate::id::{HostId, VolumeId};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a revoked session keeps answering `ESHUTDOWN` before its connection is closed:
/// time for a polite client to send `NBD_CMD_DISC` itself.
pub const REVOKE_GRACE: Duration = Duration::from_secs(1);

type Disconnect = Box<dyn Fn() + Send + Sync>;

/// One host session through a host connection.
pub struct HostSession {
    host: HostId,
    volume: VolumeId,
    revoked: AtomicBool,
    /// Requests between `enter` and the guard's drop.
    inflight: AtomicUsize,
    disconnect: Mutex<Option<Disconnect>>,
}

impl std::fmt::Debug for HostSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSession")
            .field("host", &self.host)
            .field("volume", &self.volume)
            .field("revoked", &self.revoked.load(Ordering::SeqCst))
            .finish()
    }
}

/// A request running on a session; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight<'a>(&'a HostSession);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn eshutdown() -> io::Error {
    io::Error::from_raw_os_error(libc::ESHUTDOWN)
}

impl HostSession {
    pub fn host(&self) -> HostId {
        self.host
    }

    pub fn volume(&self) -> VolumeId {
        self.volume
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Start a request: `ESHUTDOWN` once the session is revoked. The count goes up before
    /// the flag is read and the flag is set before the count is read (both SeqCst), so a
    /// revoker that sees no request in flight knows none can start any more.
    pub fn enter(&self) -> io::Result<InFlight<'_>> {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        if self.is_revoked() {
            return Err(eshutdown());
        }
        Ok(guard)
    }

    /// The server's way to close this session's connection (kept until revoked). The
    /// server attaches it after the client already has its GO reply, so a revoke may come
    /// first: then the close is scheduled from here, with the same grace (stored before the
    /// flag is read, so one of the two always closes; closing twice is harmless).
    pub fn attach_disconnect(self: &Arc<Self>, f: Disconnect) {
        *self.disconnect.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        if self.is_revoked() {
            self.close_after_grace();
        }
    }

    fn revoke(self: &Arc<Self>) {
        if self.revoked.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!("host connection {}: session on volume {} revoked", self.host, self.volume);
        self.close_after_grace();
    }

    fn close_after_grace(self: &Arc<Self>) {
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("nbd-revoke".into()).spawn(move || {
            std::thread::sleep(REVOKE_GRACE);
            me.close_now();
        });
        if spawned.is_err() {
            self.close_now();
        }
    }

    fn close_now(&self) {
        let f = self.disconnect.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f();
        }
    }

    /// Wait until no request runs on the session (or `timeout` passes; false then).
    pub fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.inflight.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

/// The live host sessions of one image.
#[derive(Debug, Default)]
pub struct HostSessions {
    list: Mutex<Vec<Weak<HostSession>>>,
}

impl HostSessions {
    fn live(&self) -> Vec<Arc<HostSession>> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Register a new session of `host` on `volume`.
    pub fn register(&self, host: HostId, volume: VolumeId) -> Arc<HostSession> {
        let s = Arc::new(HostSession {
            host,
            volume,
            revoked: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            disconnect: Mutex::new(None),
        });
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&s));
        s
    }

    /// Revoke every live session `ends(host, volume)` picks; returns them.
    pub fn revoke_where(&self, ends: impl Fn(HostId, VolumeId) -> bool) -> Vec<Arc<HostSession>> {
        let doomed: Vec<Arc<HostSession>> =
            self.live().into_iter().filter(|s| !s.is_revoked() && ends(s.host, s.volume)).collect();
        for s in &doomed {
            s.revoke();
        }
        doomed
    }

    /// Live sessions (revoked ones included until their connection ends) on `volume`.
    pub fn on_volume(&self, volume: VolumeId) -> usize {
        self.live().iter().filter(|s| s.volume == volume).count()
    }

    /// Revoke every session on `volume` and wait for their running requests (false if one
    /// is still running after `timeout`).
    pub fn end_volume(&self, volume: VolumeId, timeout: Duration) -> bool {
        self.revoke_where(|_, v| v == volume);
        let deadline = Instant::now() + timeout;
        self.live()
            .iter()
            .filter(|s| s.volume == volume)
            .all(|s| s.drained(deadline.saturating_duration_since(Instant::now())))
    }

    /// Live sessions through `host`.
    pub fn of_host(&self, host: HostId) -> usize {
        self.live().iter().filter(|s| s.host == host && !s.is_revoked()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_fails_new_requests_then_disconnects() {
        let all = HostSessions::default();
        let s = all.register(HostId(0), VolumeId(0x1000));
        let other = all.register(HostId(1), VolumeId(0x1000));
        let closed = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        s.attach_disconnect(Box::new(move || c.store(true, Ordering::SeqCst)));
        let running = s.enter().expect("not revoked yet");
        assert_eq!(all.on_volume(VolumeId(0x1000)), 2);
        let t0 = Instant::now();
        assert_eq!(all.revoke_where(|h, _| h == HostId(0)).len(), 1);
        assert_eq!(s.enter().unwrap_err().raw_os_error(), Some(libc::ESHUTDOWN));
        assert!(other.enter().is_ok(), "another host's session goes on");
        assert!(!s.drained(Duration::from_millis(20)), "a request still runs");
        drop(running);
        assert!(s.drained(Duration::from_millis(20)));
        while !closed.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < REVOKE_GRACE * 3, "disconnect never came");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t0.elapsed() >= REVOKE_GRACE);
        assert_eq!(all.of_host(HostId(0)), 0);
        drop(other);
        assert_eq!(all.on_volume(VolumeId(0x1000)), 1);
    }

    #[test]
    fn a_revoke_before_the_server_attaches_still_waits_the_grace() {
        let all = HostSessions::default();
        let s = all.register(HostId(0), VolumeId(0x1000));
        all.revoke_where(|_, _| true);
        let closed = Arc::new(AtomicBool::new(false));
        let c = closed.clone();
        let t0 = Instant::now();
        s.attach_disconnect(Box::new(move || c.store(true, Ordering::SeqCst)));
        assert!(!closed.load(Ordering::SeqCst), "closed before the client could hear ESHUTDOWN");
        while !closed.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < REVOKE_GRACE * 3, "disconnect never came");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
