//! PPRC pairs at run time: the primary's out-of-sync set, its Metro Mirror write path and
//! its copier; the secondary's host-access rule. Both are [`PairHook`]s on their volume.
//!
//! # The primary's out-of-sync set
//!
//! Three sets, under one mutex, make "what the secondary may lack":
//! * `oos`: tracks to send (the lspprc count);
//! * `copying`: tracks the copier took out of `oos` and has in flight; a host write to one
//!   meanwhile marks it *rewritten*, and it goes back into `oos` when the copy lands (the
//!   old copy may arrive after the new write: links and workers do not keep order);
//! * `writing`: tracks of Metro Mirror host writes in flight; on the secondary's answer
//!   they leave, on failure they go into `oos`.
//!
//! A checkpoint stores the union, so nothing in flight is ever lost from it (`record` runs
//! with the volume's journal marked, DESIGN.md step 7). The copier follows DESIGN.md "PPRC
//! copy": clear the bit, read the track (under the track's lock, through the redirecting read
//! path), send it without the lock; on failure set the bit again.
//!
//! # Suspension
//!
//! A failed mirrored write or copy suspends the pair (reason `UpdateTarget` when the
//! secondary refused or failed it, `InternalSource` when the link was down or silent);
//! host writes go on and are recorded. With `-critmode` the failed write also fails (EIO);
//! on a `-consistgrp` path the source LSS holds writes (queue full) until `unfreezepprc` or
//! its timer. The secondary learns of phase changes by best-effort notices the pair's driver
//! thread sends (`Notice`), as a DS8000 secondary keeps its last known state when the link
//! is gone.

use super::inband::InBand;
use crate::bitmap::{TrackBitmap, checkpoint};
use crate::error::{Error, ErrorKind, Result};
use crate::flash::ImageFlash;
use crate::flash::freeze::FreezeGate;
use crate::flash::pprc::{InFlight, Mirrored, PairHook};
use crate::geometry::{TRACK_BYTES, TrackNo};
use crate::id::{ImageId, LssId, VolumeId};
use crate::image::record::{PprcPairRecord, PprcPhase, PprcType, SuspendReason};
use crate::link::{Link, LinkAddr, Message, Reply, RequestId};
use crate::volume::Volume;
use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How long a mirrored write or copied track waits for the secondary's answer.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Tracks a primary's copier keeps in flight.
pub const COPY_WINDOW: usize = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a primary reaches its secondary: the port pairs of its path, and the site's links.
#[derive(Debug)]
pub struct Route {
    paths: Arc<Mutex<super::PathLinks>>,
    ports: Mutex<Vec<(LinkAddr, LinkAddr)>>,
    cached: Mutex<Option<Link>>,
}

impl Route {
    pub fn new(paths: Arc<Mutex<super::PathLinks>>, ports: Vec<(LinkAddr, LinkAddr)>) -> Route {
        Route { paths, ports: Mutex::new(ports), cached: Mutex::new(None) }
    }

    /// The port pairs changed (`mkpprcpath`, `rmpprcpath`, `freezepprc`).
    pub fn set_ports(&self, ports: Vec<(LinkAddr, LinkAddr)>) {
        *lock(&self.ports) = ports;
        *lock(&self.cached) = None;
    }

    /// An open link of the path, if any (the first port pair with one).
    pub fn link(&self) -> Option<Link> {
        if let Some(l) = lock(&self.cached).as_ref().filter(|l| !l.is_closed()) {
            return Some(l.clone());
        }
        let ports = lock(&self.ports).clone();
        let found = {
            let paths = lock(&self.paths);
            ports.iter().find_map(|(a, b)| paths.link(a, b))
        };
        *lock(&self.cached) = found.clone();
        found
    }

    /// An open link, dialling the path's port pairs to another flashd first if none is up
    /// (commands and the driver; never the host write path, which must not wait for a dial).
    pub fn link_or_dial(&self) -> Option<Link> {
        if let Some(l) = self.link() {
            return Some(l);
        }
        let ports = lock(&self.ports).clone();
        lock(&self.paths).redial_ports(&ports);
        self.link()
    }

    /// Send `msg` and wait for the answer: `Ok(data)`, or the error with whether it was the
    /// secondary's refusal (`true`) or the link's (`false`).
    pub fn request(&self, msg: &Message) -> std::result::Result<Vec<u8>, (Error, bool)> {
        let link = self.link_or_dial().ok_or_else(|| {
            (Error::new(ErrorKind::LinkDown, "PPRC path", "no link of the path is up (check lspprcpath)"), false)
        })?;
        match link.submit(msg).and_then(|p| p.wait(MIRROR_TIMEOUT)) {
            Ok(Reply::Failed(e)) => Err((e, true)),
            Ok(r) => r.into_result().map_err(|e| (e, true)),
            Err(e) => Err((e, false)),
        }
    }
}

/// A primary pair's mutable state.
#[derive(Debug)]
pub struct PrimaryState {
    pub record: PprcPairRecord,
    pub oos: TrackBitmap,
    copying: HashMap<u32, bool>,
    writing: HashSet<u32>,
    generation: u64,
    cursor: u32,
    /// The secondary should hear of the current phase.
    notice_due: bool,
    /// Came up suspended at start (`PowerSource`): resume when the secondary answers.
    pub auto_resume: bool,
}

impl PrimaryState {
    fn mirrors_now(&self) -> bool {
        self.record.kind == PprcType::MetroMirror && self.record.phase != PprcPhase::Suspended
    }

    /// Everything the secondary may lack: what a checkpoint stores.
    pub fn pending(&self) -> TrackBitmap {
        let mut b = self.oos.clone();
        for t in self.copying.keys().chain(self.writing.iter()) {
            b.insert(TrackNo(*t));
        }
        b
    }
}

/// The primary end of a pair.
#[derive(Debug)]
pub struct Primary {
    pub image: ImageId,
    pub source: VolumeId,
    pub remote: ImageId,
    pub target: VolumeId,
    pub vol: Arc<Volume>,
    flash: Weak<ImageFlash>,
    st: Mutex<PrimaryState>,
    work: Condvar,
    pub route: Route,
    gate: Arc<FreezeGate>,
    /// The pair's path has `-consistgrp`.
    pub cg: AtomicBool,
    /// Queue-full timeout of the source LSS.
    pub timeout: Duration,
    /// `<image>/flash` (None without durable storage: tests).
    dir: Option<PathBuf>,
    stopped: AtomicBool,
    /// Bytes of tracks the copier sent (tests and benchmarks count them).
    pub copied_bytes: AtomicU64,
    /// One store of the set at a time (the driver's and a checkpoint's).
    store_lock: Mutex<()>,
    /// Requests whose outcome is unknown (no answer in time): they may still be applied at
    /// the secondary, after newer data. [`Primary::resolve`] settles them before a resume.
    unresolved: Mutex<Vec<(RequestId, Message)>>,
}

/// How long [`Primary::resolve`] waits for each unresolved request.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checkpoint name of a pair's out-of-sync set.
pub fn oos_name(source: VolumeId, remote_wwnn: &str, target: VolumeId) -> String {
    format!("pprc_{source}_{remote_wwnn}_{target}")
}

impl Primary {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        record: PprcPairRecord,
        image: ImageId,
        vol: Arc<Volume>,
        flash: &Arc<ImageFlash>,
        oos: TrackBitmap,
        generation: u64,
        route: Route,
        gate: Arc<FreezeGate>,
        cg: bool,
        timeout: Duration,
    ) -> Primary {
        let dir = flash.store().map(|s| s.dir.clone());
        Primary {
            image,
            source: record.local,
            remote: record.remote.clone(),
            target: record.remote_volume,
            vol,
            flash: Arc::downgrade(flash),
            st: Mutex::new(PrimaryState {
                record,
                oos,
                copying: HashMap::new(),
                writing: HashSet::new(),
                generation,
                cursor: 0,
                notice_due: false,
                auto_resume: false,
            }),
            work: Condvar::new(),
            route,
            gate,
            cg: AtomicBool::new(cg),
            timeout,
            dir,
            stopped: AtomicBool::new(false),
            copied_bytes: AtomicU64::new(0),
            store_lock: Mutex::new(()),
            unresolved: Mutex::new(Vec::new()),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, PrimaryState> {
        lock(&self.st)
    }

    pub fn lss(&self) -> LssId {
        self.source.lss()
    }

    fn name(&self) -> String {
        oos_name(self.source, &self.state().record.remote_wwnn, self.target)
    }

    /// Store the out-of-sync set now, outside a journal checkpoint. Safe at any time: the
    /// tracks it leaves out reached the secondary, and the journal still holds every write
    /// since its last checkpoint (recovery adds them back).
    pub fn store_now(&self) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let _one = lock(&self.store_lock);
        if self.stopped() {
            return Ok(()); // its files are gone or going
        }
        let name = self.name();
        let (g, bits) = {
            let mut st = self.state();
            st.generation += 1;
            (st.generation, st.pending())
        };
        checkpoint::store(dir, &name, g, &[bits])
    }

    /// Failback at the old primary: stop, and store the set one last time (its file stays,
    /// so a failback whose answer was lost is answered again from it); returns the set.
    /// Called with the volume's barrier held, its hooks being swapped.
    pub fn hand_over(&self) -> Result<TrackBitmap> {
        let set = self.state().pending();
        self.store_now()?;
        self.stop();
        Ok(set)
    }

    /// Remember a request whose answer did not come (`LinkOutcomeUnknown`).
    fn unknown(&self, id: RequestId, msg: Message) {
        lock(&self.unresolved).push((id, msg));
    }

    /// Before a resume: ask again, under the same request IDs, for every request whose
    /// outcome was unknown. The secondary applies each at most once and answers when it is
    /// done, so once this returns none of them can land after the copies that follow. One
    /// still not answered fails the resume (`PprcStateInvalid`); the pair stays suspended.
    pub fn resolve(&self) -> Result<()> {
        let todo = std::mem::take(&mut *lock(&self.unresolved));
        if todo.is_empty() {
            return Ok(());
        }
        let Some(link) = self.route.link_or_dial() else {
            *lock(&self.unresolved) = todo;
            return Err(Error::new(ErrorKind::LinkDown, "PPRC path", "no link of the path is up"));
        };
        for (i, (id, msg)) in todo.iter().enumerate() {
            match link.submit_as(*id, msg).and_then(|p| p.wait(RESOLVE_TIMEOUT)) {
                Ok(_) => {}
                Err(e) => {
                    lock(&self.unresolved).extend(todo[i..].iter().cloned());
                    return Err(Error::new(
                        ErrorKind::PprcStateInvalid,
                        format!("{}:{}", self.source, self.target),
                        format!(
                            "a mirrored write sent before the suspension is still not applied at the \
                             secondary ({e}); try again when it is (the pair stays suspended)"
                        ),
                    ));
                }
            }
        }
        tracing::info!("PPRC pair {}:{}: {} requests of unknown outcome settled", self.source, self.target, todo.len());
        Ok(())
    }

    /// Remove the pair's files (the pair ended at this end).
    pub fn remove_files(&self) {
        let _one = lock(&self.store_lock);
        if let Some(dir) = &self.dir {
            let _ = checkpoint::remove_all(dir, &self.name());
        }
    }

    /// Wake the driver thread (work or a notice).
    pub fn kick(&self) {
        self.work.notify_all();
    }

    /// Stop the driver (the pair ended here, or the site shuts down).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.kick();
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Change phase (and reason) and have the driver tell the secondary.
    pub fn set_phase(&self, phase: PprcPhase, reason: Option<SuspendReason>, now: i64) {
        let mut st = self.state();
        st.record.phase = phase;
        st.record.reason = reason;
        st.record.suspended_at = (phase == PprcPhase::Suspended).then_some(now);
        st.notice_due = true;
        drop(st);
        self.kick();
    }

    /// Suspend because mirroring failed (`reason`), unless already suspended; a `-consistgrp`
    /// path freezes the source LSS.
    pub fn suspend_on_error(&self, reason: SuspendReason, why: &Error) {
        {
            let st = self.state();
            if st.record.phase == PprcPhase::Suspended {
                return;
            }
        }
        tracing::warn!("PPRC pair {}:{} suspended ({reason:?}): {why}", self.source, self.target);
        self.set_phase(PprcPhase::Suspended, Some(reason), now());
        if self.cg.load(Ordering::SeqCst) {
            self.gate.freeze(self.lss(), self.timeout);
        }
    }

    /// Add tracks to the out-of-sync set (a FlashCopy onto this primary changed them).
    pub fn mark(&self, bits: &TrackBitmap) {
        let mut st = self.state();
        st.oos.union_with(bits);
        if st.record.phase == PprcPhase::FullDuplex && !bits.is_empty() {
            st.record.phase = PprcPhase::CopyPending; // copies them, then full duplex again
            st.notice_due = true;
        }
        drop(st);
        self.kick();
    }

    fn flash(&self) -> Option<Arc<ImageFlash>> {
        self.flash.upgrade()
    }

    /// What the driver should do next, waiting up to `max` for something.
    fn next_job(&self, max: Duration) -> Job {
        let mut st = self.state();
        loop {
            if self.stopped() {
                return Job::Stop;
            }
            if st.notice_due {
                st.notice_due = false;
                return Job::Notice(st.record.phase, st.record.reason, st.record.kind, st.record.first_pass);
            }
            if st.record.phase == PprcPhase::CopyPending {
                if !st.oos.is_empty() {
                    return Job::Copy;
                }
                if st.copying.is_empty() {
                    if st.record.kind == PprcType::MetroMirror {
                        st.record.phase = PprcPhase::FullDuplex;
                        st.notice_due = true;
                        tracing::info!("PPRC pair {}:{} is full duplex", self.source, self.target);
                        continue;
                    }
                    if !st.record.first_pass {
                        st.record.first_pass = true;
                        st.notice_due = true; // the secondary shows it; the set is stored
                        continue;
                    }
                }
            }
            if st.auto_resume && st.record.phase == PprcPhase::Suspended {
                return Job::AutoResume;
            }
            let (g, timeout) = self.work.wait_timeout(st, max).unwrap_or_else(|p| p.into_inner());
            st = g;
            if timeout.timed_out() {
                return Job::Idle;
            }
        }
    }

    /// Take up to `n` out-of-sync tracks from the cursor on (DESIGN.md: clear the bit
    /// first; they are `copying` until their copy lands).
    fn take(&self, n: usize) -> Vec<u32> {
        let mut st = self.state();
        if st.record.phase != PprcPhase::CopyPending {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n);
        let mut from = st.cursor;
        let mut wrapped = false;
        while out.len() < n {
            let next = st.oos.next_run(from, 1).map(|r| r.start);
            match next {
                // A track whose earlier copy is still in flight waits for it (its bit stays).
                Some(t) if st.copying.contains_key(&t) => from = t + 1,
                Some(t) => {
                    st.oos.remove(TrackNo(t));
                    st.copying.insert(t, false);
                    out.push(t);
                    from = t + 1;
                }
                None if !wrapped && from > 0 => {
                    wrapped = true;
                    from = 0;
                }
                None => break,
            }
        }
        st.cursor = from;
        out
    }

    /// A copied track's answer came.
    fn landed(&self, t: u32, ok: bool) {
        let mut st = self.state();
        let rewritten = st.copying.remove(&t).unwrap_or(true);
        if rewritten || !ok {
            st.oos.insert(TrackNo(t));
        }
    }

    /// The driver's copy round: keep [`COPY_WINDOW`] tracks in flight until the set is
    /// empty, the pair leaves Copy Pending, or a copy fails (the pair suspends).
    fn copy_round(&self) {
        let Some(flash) = self.flash() else { return };
        let Some(link) = self.route.link() else {
            let e = Error::new(ErrorKind::LinkDown, "PPRC path", "no link of the path is up");
            self.suspend_on_error(SuspendReason::InternalSource, &e);
            return;
        };
        let g = self.vol.geometry();
        let mut window: std::collections::VecDeque<(u32, usize, crate::link::Pending, Message)> = Default::default();
        let mut failed: Option<(Error, bool)> = None;
        loop {
            if failed.is_none() && !self.stopped() && window.len() < COPY_WINDOW {
                let want = COPY_WINDOW - window.len();
                let tracks = self.take(want);
                for (i, t) in tracks.iter().enumerate() {
                    if failed.is_some() {
                        self.landed(*t, false);
                        continue;
                    }
                    let len = g.track_data_len(TrackNo(*t)) as usize;
                    let mut buf = vec![0u8; len];
                    let off = *t as u64 * TRACK_BYTES;
                    if let Err(e) = flash.read_for_copy(&self.vol, off, &mut buf) {
                        // A local read error: keep the bit, retry later; the pair goes on.
                        tracing::error!("PPRC {}:{} track {t}: read failed: {e}", self.source, self.target);
                        for rest in &tracks[i..] {
                            self.landed(*rest, false);
                        }
                        failed = Some((Error::io(self.vol.key(), &e), false));
                        break;
                    }
                    // A track of zeros (a hole of a sparse volume) crosses as a Zero message.
                    let msg = if is_zero(&buf) {
                        Message::Zero { volume: self.target, offset: off, len: len as u64 }
                    } else {
                        Message::Track { volume: self.target, track: *t, data: buf }
                    };
                    match link.submit(&msg) {
                        Ok(p) => window.push_back((*t, len, p, msg)),
                        Err(e) => {
                            self.landed(*t, false);
                            failed = Some((e, false));
                        }
                    }
                }
                if window.is_empty() {
                    break;
                }
            }
            let Some((t, len, p, msg)) = window.pop_front() else { break };
            let id = p.id();
            match p.wait(MIRROR_TIMEOUT) {
                Ok(Reply::Failed(e)) => {
                    self.landed(t, false);
                    failed.get_or_insert((e, true));
                }
                Ok(_) => {
                    self.landed(t, true);
                    self.copied_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if e.kind == ErrorKind::LinkOutcomeUnknown {
                        self.unknown(id, msg);
                    }
                    self.landed(t, false);
                    failed.get_or_insert((e, false));
                }
            }
        }
        match failed {
            // A local read error: the bits stay set, the copy is tried again a little later.
            Some((e, false)) if e.kind == ErrorKind::Io => std::thread::sleep(Duration::from_millis(500)),
            Some((e, refused)) => {
                let reason = if refused { SuspendReason::UpdateTarget } else { SuspendReason::InternalSource };
                self.suspend_on_error(reason, &e);
            }
            None => {}
        }
        self.kick();
    }

    /// Tell the secondary the pair's phase now, on the caller's thread (commands: so the
    /// secondary shows it when the command returns, while the path is still there).
    pub fn notify_now(&self) {
        let (phase, reason, kind, fp) = {
            let mut st = self.state();
            st.notice_due = false;
            (st.record.phase, st.record.reason, st.record.kind, st.record.first_pass)
        };
        self.notice(phase, reason, kind, fp);
    }

    /// Tell the secondary the pair's phase (best effort).
    fn notice(&self, phase: PprcPhase, reason: Option<SuspendReason>, kind: PprcType, first_pass: bool) {
        let cmd = InBand::Notice {
            source: self.source,
            target: self.target,
            primary: self.image.clone(),
            phase,
            reason,
            kind,
            first_pass,
        };
        if let Err((e, _)) = self.route.request(&Message::Command(cmd.encode())) {
            tracing::debug!("PPRC pair {}:{}: notice not delivered: {e}", self.source, self.target);
        }
    }

    /// The driver: copies while Copy Pending, tells the secondary of phase changes, resumes
    /// a pair that came up suspended once its secondary answers. One thread per primary.
    pub fn drive(self: Arc<Self>) {
        loop {
            match self.next_job(Duration::from_millis(500)) {
                Job::Stop => return,
                Job::Notice(phase, reason, kind, fp) => {
                    // A phase change (Full Duplex, a first pass, a suspension): store the set
                    // now, so a restart does not copy again what already crossed.
                    if let Err(e) = self.store_now() {
                        tracing::warn!("PPRC pair {}:{}: storing the out-of-sync set: {e}", self.source, self.target);
                    }
                    self.notice(phase, reason, kind, fp)
                }
                Job::Copy => self.copy_round(),
                Job::AutoResume => {
                    let (kind, tgtread) = {
                        let st = self.state();
                        (st.record.kind, st.record.tgtread)
                    };
                    let cmd = InBand::Resume {
                        source: self.source,
                        target: self.target,
                        primary: self.image.clone(),
                        kind,
                        tgtread,
                    };
                    let answered = self.resolve().map_err(|e| (e, false));
                    match answered.and_then(|()| self.route.request(&Message::Command(cmd.encode()))) {
                        Ok(_) => {
                            tracing::info!("PPRC pair {}:{}: secondary answers; resuming", self.source, self.target);
                            self.state().auto_resume = false;
                            self.set_phase(PprcPhase::CopyPending, None, now());
                        }
                        Err((e, true)) => {
                            tracing::warn!("PPRC pair {}:{}: not resumed at start: {e}", self.source, self.target);
                            self.state().auto_resume = false;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(500)),
                    }
                }
                Job::Idle => {}
            }
        }
    }
}

enum Job {
    Stop,
    Notice(PprcPhase, Option<SuspendReason>, PprcType, bool),
    Copy,
    AutoResume,
    Idle,
}

/// Whether a buffer holds only zeros (16 bytes at a time).
fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(16);
    chunks.all(|c| c.iter().fold(0u8, |a, b| a | b) == 0) && chunks.remainder().iter().all(|b| *b == 0)
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A Metro Mirror write's tracks that did not reach the secondary: out of sync.
fn back_to_oos(p: &Primary, mine: &[u32]) {
    let mut st = p.state();
    for t in mine {
        st.writing.remove(t);
        st.oos.insert(TrackNo(*t));
    }
}

impl PairHook for Primary {
    fn gate(&self) {
        self.gate.pass(self.lss());
    }

    fn records(&self) -> bool {
        true
    }

    fn record(&self, tracks: &Range<u32>) {
        let mut st = self.state();
        let sync = st.mirrors_now();
        for t in tracks.clone() {
            if let Some(rewritten) = st.copying.get_mut(&t) {
                *rewritten = true;
            }
            if sync && !st.oos.contains(TrackNo(t)) {
                st.writing.insert(t);
            } else {
                st.oos.insert(TrackNo(t));
            }
        }
        if !sync && st.record.phase == PprcPhase::CopyPending {
            drop(st);
            self.kick(); // Global Copy: the driver sends it
        }
    }

    fn send(self: Arc<Self>, tracks: &Range<u32>, offset: u64, m: Mirrored<'_>) -> Option<InFlight> {
        let mine: Vec<u32> = {
            let st = self.state();
            tracks.clone().filter(|t| st.writing.contains(t)).collect()
        };
        if mine.is_empty() {
            return None;
        }
        if !self.state().mirrors_now() {
            back_to_oos(&self, &mine);
            return None;
        }
        let msg = match m {
            Mirrored::Write { data, fua } => Message::Write { volume: self.target, offset, data: data.to_vec(), fua },
            Mirrored::Zero { len } => Message::Zero { volume: self.target, offset, len },
        };
        let link = self.route.link();
        let pending = link.ok_or_else(|| Error::new(ErrorKind::LinkDown, "PPRC path", "no link of the path is up"));
        let pending = pending.and_then(|l| l.submit(&msg));
        let me = self;
        Some(Box::new(move || {
            let id = pending.as_ref().map(|p| p.id()).ok();
            let answer = pending.and_then(|p| p.wait(MIRROR_TIMEOUT));
            if let (Err(e), Some(id)) = (&answer, id)
                && e.kind == ErrorKind::LinkOutcomeUnknown
            {
                me.unknown(id, msg);
            }
            let failure = match answer {
                Ok(Reply::Failed(e)) => Some((e, SuspendReason::UpdateTarget)),
                Ok(_) => None,
                Err(e) => Some((e, SuspendReason::InternalSource)),
            };
            match failure {
                None => {
                    let mut st = me.state();
                    for t in &mine {
                        st.writing.remove(t);
                    }
                    Ok(())
                }
                Some((e, reason)) => {
                    back_to_oos(&me, &mine);
                    me.suspend_on_error(reason, &e);
                    if me.state().record.critmode { Err(io::Error::from_raw_os_error(libc::EIO)) } else { Ok(()) }
                }
            }
        }))
    }

    fn local_failed(&self, tracks: &Range<u32>) {
        let mut bits = TrackBitmap::new();
        bits.insert_range(tracks.clone());
        self.mark(&bits); // copied again from here (Copy Pending until then)
    }

    fn changed(&self, tracks: &TrackBitmap) -> Result<()> {
        self.mark(tracks);
        self.store_now()
    }

    fn flush(&self) -> io::Result<()> {
        if !self.state().mirrors_now() {
            return Ok(());
        }
        match self.route.request(&Message::Flush { volume: self.target }) {
            Ok(_) => Ok(()),
            Err((e, refused)) => {
                let reason = if refused { SuspendReason::UpdateTarget } else { SuspendReason::InternalSource };
                self.suspend_on_error(reason, &e);
                if self.state().record.critmode { Err(io::Error::from_raw_os_error(libc::EIO)) } else { Ok(()) }
            }
        }
    }

    fn checkpoint(&self) -> Result<()> {
        self.store_now()
    }
}

/// The secondary end of a pair: hosts may not write it (nor read it, without `-tgtread`);
/// its phase is what the primary last told.
#[derive(Debug)]
pub struct Secondary {
    pub st: Mutex<PprcPairRecord>,
    /// The primary image's WWNN (only it may apply here).
    pub primary_wwnn: u64,
}

impl Secondary {
    pub fn record(&self) -> MutexGuard<'_, PprcPairRecord> {
        lock(&self.st)
    }
}

impl PairHook for Secondary {
    fn accepts_remote(&self) -> bool {
        true
    }

    fn host_access(&self, write: bool) -> io::Result<()> {
        if write || !self.record().tgtread { Err(io::Error::from_raw_os_error(libc::EPERM)) } else { Ok(()) }
    }
}
