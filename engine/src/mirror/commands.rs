//! The PPRC pair commands (`mkpprc` ... `unfreezepprc`) at the image they are issued to, and
//! the in-band commands they send to the other end's image.
//!
//! A command checks its rules under the images lock, lets it go, asks the other end over
//! the link (which, in this same site, takes the images lock on a link worker), then takes
//! the lock again to store its end. Each pair succeeds or fails alone; a failure after the
//! other end agreed undoes that end (best effort, logged).
//!
//! Ordering for durability: a primary's out-of-sync set is stored before the catalog names
//! the pair; a failback stores the merged set (the new primary's changes plus the old
//! primary's writes that never crossed) as soon as the old primary answered. The window
//! between the old primary dropping its set and the new primary storing the merge is one
//! link round trip; a crash of the new primary inside it loses those bits (logged by the
//! old primary's flashd with their count).

use super::hub::{Hub, wwnn_of};
use super::inband::InBand;
use super::pair::{Primary, Route, now, oos_name};
use crate::bitmap::TrackBitmap;
use crate::control::{ItemOutcome, PprcSelect, PprcSide, PprcSpec, Reply, Request};
use crate::error::{Error, ErrorKind, Result};
use crate::flash::pprc::PairHook;
use crate::id::{ImageId, LssId, VolumeId};
use crate::image::Image;
use crate::image::record::{PprcPairRecord, PprcPhase, PprcRole, PprcType, SuspendReason};
use crate::link::{LinkAddr, Message};
use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

fn pair_name(s: VolumeId, t: VolumeId) -> String {
    format!("{s}:{t}")
}

fn not_found(s: VolumeId, t: VolumeId, detail: &str) -> Error {
    Error::new(ErrorKind::PprcPairNotFound, pair_name(s, t), detail.to_string())
}

fn get<'a>(images: &'a BTreeMap<ImageId, Image>, id: &ImageId) -> Result<&'a Image> {
    images.get(id).ok_or_else(|| Error::new(ErrorKind::ImageNotFound, id, "no such storage image"))
}

fn get_mut<'a>(images: &'a mut BTreeMap<ImageId, Image>, id: &ImageId) -> Result<&'a mut Image> {
    images.get_mut(id).ok_or_else(|| Error::new(ErrorKind::ImageNotFound, id, "no such storage image"))
}

fn items(pairs: impl Iterator<Item = (String, Result<()>)>) -> Reply {
    Reply::Items(pairs.map(|(object, result)| ItemOutcome { object, result }).collect())
}

impl Hub {
    fn images(&self) -> MutexGuard<'_, BTreeMap<ImageId, Image>> {
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve a PPRC pair request (the site routes every `Pprc*` pair request here, without
    /// holding the images lock).
    pub fn handle(&self, req: Request) -> Result<Reply> {
        if let Request::PprcList { image } = &req {
            return Ok(Reply::Pprc(self.views(image)?));
        }
        if let Request::PprcWait { image, pairs, timeout_ms } = req {
            return self.wait(&image, &pairs, timeout_ms);
        }
        let _cmd = self.cmd.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match req {
            Request::PprcCreate { image, remote, pairs, spec } => {
                items(pairs.iter().map(|&(s, t)| (pair_name(s, t), self.create(&image, &remote, s, t, spec))))
            }
            Request::PprcRemove { image, remote, pairs, at } => {
                items(pairs.iter().map(|sel| (sel_name(sel), self.remove(&image, &remote, sel, at))))
            }
            Request::PprcPause { image, remote, pairs, at } => {
                items(pairs.iter().map(|sel| (sel_name(sel), self.pause(&image, &remote, sel, at))))
            }
            Request::PprcResume { image, remote, pairs, spec } => {
                items(pairs.iter().map(|&(s, t)| (pair_name(s, t), self.resume(&image, &remote, s, t, spec))))
            }
            Request::PprcFailover { image, remote, pairs, kind } => {
                items(pairs.iter().map(|&(s, t)| (pair_name(s, t), self.failover(&image, &remote, s, t, kind))))
            }
            Request::PprcFailback { image, remote, pairs, spec } => {
                items(pairs.iter().map(|&(s, t)| (pair_name(s, t), self.failback(&image, &remote, s, t, spec))))
            }
            Request::PprcFreeze { image, remote, lss } => {
                items(lss.iter().map(|&(a, b)| (format!("{a}:{b}"), self.freeze(&image, &remote, a, b))))
            }
            Request::PprcUnfreeze { image, remote, lss } => {
                items(lss.iter().map(|&(a, b)| (format!("{a}:{b}"), self.unfreeze(&image, &remote, a, b))))
            }
            other => {
                return Err(Error::new(ErrorKind::InvalidArgument, "PPRC", format!("not a pair request: {other:?}")));
            }
        })
    }

    /// The primary of `s` at `image` paired with `t` at `remote`.
    fn primary_of(&self, image: &ImageId, remote: &ImageId, s: VolumeId, t: VolumeId) -> Result<Arc<Primary>> {
        let p = self.primary(image, s).ok_or_else(|| not_found(s, t, "no PPRC pair with this source here"))?;
        if p.remote != *remote || p.target != t {
            return Err(not_found(s, t, &format!("{s} is paired with {}:{}", p.remote, p.target)));
        }
        Ok(p)
    }

    /// Store a primary's record as it is in memory now.
    fn persist(&self, image: &ImageId, p: &Primary) -> Result<()> {
        let rec = p.state().record.clone();
        get_mut(&mut self.images(), image)?.put_pprc_pair(rec)
    }

    fn create(&self, image: &ImageId, remote: &ImageId, s: VolumeId, t: VolumeId, spec: PprcSpec) -> Result<()> {
        let name = pair_name(s, t);
        let (rec, ports, size, stgtype) = {
            let images = self.images();
            let img = get(&images, image)?;
            let vrec = img.record().volumes.get(&s).ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, s, ""))?;
            if let Some(p) = img.pprc_pair(s) {
                let (a, b) = p.ids();
                return Err(Error::new(ErrorKind::PprcPairExists, &name, format!("{s} is in pair {a}:{b}")));
            }
            let vol = img.volume(s).ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, s, ""))?;
            if let Some(rel) = img.flash().roles(vol.handle()).as_target
                && !rel.state().record.options.tgtpprc
            {
                return Err(Error::new(
                    ErrorKind::PprcTgtpprcRequired,
                    &name,
                    format!("{s} is a FlashCopy target established without -tgtpprc"),
                ));
            }
            let path = img.pprc_path(s.lss(), remote, t.lss()).ok_or_else(|| {
                Error::new(ErrorKind::PprcPathNotFound, &name, format!("no path {}:{} to {remote}", s.lss(), t.lss()))
            })?;
            let gcp = spec.kind == PprcType::GlobalCopy;
            let rec = PprcPairRecord {
                local: s,
                remote: remote.clone(),
                remote_wwnn: path.remote_wwnn.clone(),
                remote_volume: t,
                role: PprcRole::Primary,
                kind: spec.kind,
                phase: if spec.nocopy && !gcp { PprcPhase::FullDuplex } else { PprcPhase::CopyPending },
                reason: None,
                suspended_at: None,
                tgtread: spec.tgtread,
                critmode: spec.critmode,
                first_pass: spec.nocopy,
                created: now(),
            };
            let (ports, _) = Hub::ports(img, &rec);
            (rec, ports, vol.size(), vrec.stgtype())
        };
        let route = Route::new(self.paths.clone(), ports);
        let est = InBand::Establish {
            primary: image.clone(),
            primary_wwnn: image.wwnn(),
            source: s,
            target: t,
            kind: spec.kind,
            phase: rec.phase,
            tgtread: spec.tgtread,
            size,
            stgtype,
        };
        route.request(&Message::Command(est.encode())).map_err(|(e, _)| e)?;
        let undo = |why: &Error| {
            tracing::error!("mkpprc {name}: the secondary agreed but the primary failed ({why}); removing it there");
            let rm = InBand::Remove { primary: image.clone(), source: s, target: t };
            let _ = route.request(&Message::Command(rm.encode()));
        };
        let mut images = self.images();
        let done = (|| {
            let img = get_mut(&mut images, image)?;
            if img.in_pprc_pair(s) {
                return Err(Error::new(ErrorKind::PprcPairExists, &name, "made meanwhile"));
            }
            let tracks = img.volume(s).map(|v| v.geometry().tracks()).unwrap_or(0);
            let mut oos = if spec.nocopy { TrackBitmap::new() } else { TrackBitmap::full(tracks) };
            if let Some(v) = img.volume(s)
                && let Some(rel) = img.flash().roles(v.handle()).as_target
            {
                oos.union_with(&rel.state().target_bits);
            }
            // Anything out of sync is copied first, whatever -mode said (a FlashCopy target).
            let mut rec = rec.clone();
            if !oos.is_empty() && rec.phase == PprcPhase::FullDuplex {
                rec.phase = PprcPhase::CopyPending;
            }
            let p = self.make_primary(img, rec.clone(), oos, 0)?;
            p.remove_files();
            p.store_now()?;
            if let Err(e) = img.put_pprc_pair(rec.clone()) {
                p.remove_files();
                return Err(e);
            }
            self.start_primary(img, p.clone());
            p.kick();
            tracing::info!("{image}: PPRC pair {name} ({:?}) established with {remote}", spec.kind);
            Ok(())
        })();
        if let Err(e) = &done {
            undo(e);
        }
        done
    }

    fn wait(&self, image: &ImageId, pairs: &[(VolumeId, VolumeId)], timeout_ms: u64) -> Result<Reply> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let views: Vec<_> = self.views(image)?.into_iter().filter(|v| pairs.contains(&v.record.ids())).collect();
            let settled = views.iter().all(|v| {
                let r = &v.record;
                r.role == PprcRole::Secondary
                    || r.phase == PprcPhase::Suspended
                    || r.phase == PprcPhase::FullDuplex
                    || (r.kind == PprcType::GlobalCopy && r.first_pass)
            });
            if settled || Instant::now() >= deadline {
                return Ok(Reply::Pprc(views));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn remove(&self, image: &ImageId, remote: &ImageId, sel: &PprcSelect, at: Option<PprcSide>) -> Result<()> {
        match (at, sel.target) {
            (None, None) => Err(Error::new(ErrorKind::InvalidArgument, sel.source, "a pair is SOURCE:TARGET")),
            (None, Some(t)) => {
                let p = self.primary_of(image, remote, sel.source, t)?;
                let rm = InBand::Remove { primary: image.clone(), source: sel.source, target: t };
                p.route.request(&Message::Command(rm.encode())).map_err(|(e, _)| e)?;
                self.remove_local(image, sel.source)
            }
            // One volume with -at: it is this image's (the source's or the target's end).
            (Some(_), None) | (Some(PprcSide::Source), _) => self.remove_local(image, sel.source),
            (Some(PprcSide::Target), Some(t)) => {
                // The target end: here if this image holds it, else at the remote image.
                if self.images().get(image).is_some_and(|i| i.in_pprc_pair(t)) {
                    return self.remove_local(image, t);
                }
                let p = self.primary_of(image, remote, sel.source, t)?;
                let rm = InBand::Remove { primary: image.clone(), source: sel.source, target: t };
                p.route.request(&Message::Command(rm.encode())).map_err(|(e, _)| e)?;
                p.set_phase(PprcPhase::Suspended, Some(SuspendReason::SimplexTarget), now());
                self.persist(image, &p)
            }
        }
    }

    /// End the pair of `vol` at `image` (whatever its role).
    pub(super) fn remove_local(&self, image: &ImageId, vol: VolumeId) -> Result<()> {
        let mut images = self.images();
        let img = get_mut(&mut images, image)?;
        let rec = img.pprc_pair(vol).cloned().ok_or_else(|| not_found(vol, vol, "the volume is in no PPRC pair"))?;
        img.remove_pprc_pair(vol)?;
        let flash = img.flash().clone();
        // Taking the hook off waits for the volume's writes in flight: not under the lock.
        drop(images);
        match rec.role {
            PprcRole::Primary => {
                self.stop_primary(&flash, image, vol, true);
            }
            PprcRole::Secondary => {
                self.stop_secondary(&flash, image, vol);
                // A set a failback handed over from here, if any, goes with the pair.
                if let Some(store) = flash.store() {
                    let name = oos_name(vol, &rec.remote_wwnn, rec.remote_volume);
                    let _ = crate::bitmap::checkpoint::remove_all(&store.dir, &name);
                }
            }
        }
        let (s, t) = rec.ids();
        tracing::info!("{image}: PPRC pair {s}:{t} removed at this end");
        Ok(())
    }

    fn pause(&self, image: &ImageId, remote: &ImageId, sel: &PprcSelect, at: Option<PprcSide>) -> Result<()> {
        if at == Some(PprcSide::Target) && sel.target.is_none() {
            // `-at tgt` with one volume: this image's secondary stops taking updates.
            let e =
                self.secondary(image, sel.source).ok_or_else(|| not_found(sel.source, sel.source, "no secondary"))?;
            let rec = {
                let mut r = e.sec.record();
                r.phase = PprcPhase::Suspended;
                r.reason = Some(SuspendReason::HostTarget);
                r.suspended_at = Some(now());
                r.clone()
            };
            return get_mut(&mut self.images(), image)?.put_pprc_pair(rec);
        }
        let t = match sel.target {
            Some(t) => t,
            None => self
                .primary(image, sel.source)
                .map(|p| p.target)
                .ok_or_else(|| not_found(sel.source, sel.source, ""))?,
        };
        let p = self.primary_of(image, remote, sel.source, t)?;
        let reason = if at == Some(PprcSide::Target) {
            let cmd = InBand::Suspend { primary: image.clone(), source: sel.source, target: t };
            p.route.request(&Message::Command(cmd.encode())).map_err(|(e, _)| e)?;
            SuspendReason::HostTarget
        } else {
            SuspendReason::HostSource
        };
        p.set_phase(PprcPhase::Suspended, Some(reason), now());
        p.notify_now();
        self.persist(image, &p)
    }

    fn resume(&self, image: &ImageId, remote: &ImageId, s: VolumeId, t: VolumeId, spec: PprcSpec) -> Result<()> {
        let p = self.primary_of(image, remote, s, t)?;
        if p.state().record.phase != PprcPhase::Suspended {
            let kind = p.state().record.kind;
            let detail = if kind != spec.kind {
                "a pair changes type (Metro Mirror, Global Copy) only when suspended"
            } else {
                "the pair is not suspended"
            };
            return Err(Error::new(ErrorKind::PprcStateInvalid, pair_name(s, t), detail));
        }
        p.resolve()?; // nothing sent before the suspension may land after the copies
        let cmd =
            InBand::Resume { primary: image.clone(), source: s, target: t, kind: spec.kind, tgtread: spec.tgtread };
        p.route.request(&Message::Command(cmd.encode())).map_err(|(e, _)| e)?;
        {
            let mut st = p.state();
            st.record.kind = spec.kind;
            st.record.tgtread = spec.tgtread;
            st.record.critmode = spec.critmode;
            st.record.first_pass = false;
            st.auto_resume = false;
        }
        p.set_phase(PprcPhase::CopyPending, None, now());
        self.persist(image, &p)
    }

    /// `failoverpprc` at the secondary's image: pairs are written `secondary:primary`.
    fn failover(&self, image: &ImageId, remote: &ImageId, b: VolumeId, a: VolumeId, kind: PprcType) -> Result<()> {
        let name = pair_name(b, a);
        let mut images = self.images();
        let img = get_mut(&mut images, image)?;
        let rec = img.pprc_pair(b).cloned().ok_or_else(|| not_found(b, a, "the volume is in no PPRC pair"))?;
        if rec.remote != *remote || rec.remote_volume != a {
            return Err(not_found(b, a, &format!("{b} is paired with {}:{}", rec.remote, rec.remote_volume)));
        }
        if rec.role != PprcRole::Secondary {
            return Err(Error::new(ErrorKind::PprcStateInvalid, &name, format!("{b} is already a primary")));
        }
        let next = PprcPairRecord {
            role: PprcRole::Primary,
            kind,
            phase: PprcPhase::Suspended,
            reason: Some(SuspendReason::HostSource),
            suspended_at: Some(now()),
            first_pass: false,
            ..rec
        };
        let p = self.make_primary(img, next.clone(), TrackBitmap::new(), 0)?;
        p.remove_files();
        p.store_now()?;
        if let Err(e) = img.put_pprc_pair(next) {
            p.remove_files();
            return Err(e);
        }
        // One barrier: the volume is never without a hook (a write unrecorded) in between.
        let old = self.secondaries.write().unwrap_or_else(|e| e.into_inner()).remove(&(wwnn_of(image), b));
        let old: Option<Arc<dyn PairHook>> = old.map(|e| e.sec as Arc<dyn PairHook>);
        img.flash().swap_hook(&p.vol.clone(), old.as_ref(), Some(p.clone()), || ());
        self.run_primary(image, p);
        tracing::info!("{image}: PPRC pair {name} failed over: {b} is a suspended primary");
        Ok(())
    }

    /// `failbackpprc` at the image whose volume is a suspended primary.
    fn failback(&self, image: &ImageId, remote: &ImageId, s: VolumeId, t: VolumeId, spec: PprcSpec) -> Result<()> {
        let name = pair_name(s, t);
        let p = self.primary_of(image, remote, s, t)?;
        if p.state().record.phase != PprcPhase::Suspended {
            return Err(Error::new(ErrorKind::PprcStateInvalid, &name, "failback needs a suspended primary"));
        }
        if p.route.link().is_none() {
            let images = self.images();
            let img = get(&images, image)?;
            if img.pprc_path(s.lss(), remote, t.lss()).is_none() {
                return Err(Error::new(ErrorKind::PprcPathNotFound, &name, format!("no path {}:{}", s.lss(), t.lss())));
            }
        }
        p.resolve()?;
        let cmd = InBand::Failback {
            primary: image.clone(),
            primary_wwnn: image.wwnn(),
            source: s,
            target: t,
            kind: spec.kind,
            tgtread: spec.tgtread,
            size: p.vol.size(),
        };
        let theirs = p.route.request(&Message::Command(cmd.encode())).map_err(|(e, _)| e)?;
        let bits = TrackBitmap::from_bytes(&theirs).map_err(|e| Error::io("failback answer", &e))?;
        p.mark(&bits);
        p.store_now()?;
        {
            let mut st = p.state();
            st.record.kind = spec.kind;
            st.record.tgtread = spec.tgtread;
            st.record.first_pass = false;
            st.auto_resume = false;
        }
        p.set_phase(PprcPhase::CopyPending, None, now());
        tracing::info!("{image}: PPRC pair {name} failing back: {} tracks of the other end join", bits.len());
        self.persist(image, &p)
    }

    fn freeze(&self, image: &ImageId, remote: &ImageId, src: LssId, tgt: LssId) -> Result<()> {
        let name = format!("{src}:{tgt}");
        let stgtype = {
            let images = self.images();
            let img = get(&images, image)?;
            if img.pprc_path(src, remote, tgt).is_none() {
                return Err(Error::new(ErrorKind::PprcPathNotFound, &name, format!("no path to {remote}")));
            }
            img.record().lss_type(src).unwrap_or(crate::image::record::StorageType::Fb)
        };
        let prims: Vec<Arc<Primary>> = self
            .primaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((i, v), p)| i == image && v.lss() == src && p.remote == *remote && p.target.lss() == tgt)
            .map(|(_, p)| p.clone())
            .collect();
        // Writes are held first, so no write reaches a primary between its suspension and
        // the freeze: the secondaries are one consistent image.
        self.gate(image).freeze(src, super::hub::lss_timeout(stgtype));
        for p in &prims {
            p.set_phase(PprcPhase::Suspended, Some(SuspendReason::Freeze), now());
            p.notify_now(); // before the path goes
            self.persist(image, p)?;
        }
        let mut images = self.images();
        get_mut(&mut images, image)?.remove_pprc_path(remote, None, src, tgt, true)?;
        self.refresh_routes(&images);
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).insert((image.clone(), src, remote.clone(), tgt));
        tracing::info!("{image}: PPRC consistency group {name} frozen ({} pairs)", prims.len());
        Ok(())
    }

    /// `unfreezepprc SS:TT`: release the writes held at the source LSS (queue full); pairs
    /// stay suspended, paths stay removed (dscli-spec.md §3.4 [C]). The LSS pair must exist as
    /// a PPRC object of `image`: a path `SS:TT` to `remote`, pairs from SS to TT (a freeze
    /// removes the path, not the pairs), or a group frozen by `freezepprc` and not thawed
    /// yet. Anything else is refused with nothing changed, most specific reason first: no
    /// such image, remote image, source LSS or target LSS, else no path. An existing LSS
    /// pair that is not frozen (never, thawed already, or its timer fired) thaws with
    /// success: there is nothing to release, as `unfreezeflash` of an LSS not frozen.
    fn unfreeze(&self, image: &ImageId, remote: &ImageId, src: LssId, tgt: LssId) -> Result<()> {
        let name = format!("{src}:{tgt}");
        let key = (image.clone(), src, remote.clone(), tgt);
        {
            let images = self.images();
            let img = get(&images, image)?;
            let group = self.frozen.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
            let known =
                group || img.pprc_path(src, remote, tgt).is_some() || !img.pprc_pairs_on(src, remote, tgt).is_empty();
            if !known {
                let peer = || {
                    let home = self.paths.lock().unwrap_or_else(|p| p.into_inner()).home();
                    home.and_then(|h| super::load_peers(&h).ok()).is_some_and(|p| p.contains_key(&remote.wwnn()))
                };
                let rimg = images.get(remote);
                if rimg.is_none() && !peer() {
                    return Err(Error::new(
                        ErrorKind::PprcRemoteNotFound,
                        remote,
                        "the remote storage image is not in this site nor a peer (flashd peer add)",
                    ));
                }
                if img.record().lss_type(src).is_none() {
                    return Err(Error::new(ErrorKind::LssNotFound, format!("{image}/{src}"), "no volumes and no LCU"));
                }
                if let Some(r) = rimg
                    && r.record().lss_type(tgt).is_none()
                {
                    return Err(Error::new(ErrorKind::LssNotFound, format!("{remote}/{tgt}"), "no volumes and no LCU"));
                }
                return Err(Error::new(
                    ErrorKind::PprcPathNotFound,
                    &name,
                    format!("no path, pair or frozen consistency group {name} to {remote}"),
                ));
            }
        }
        let was = self.gate(image).thaw(src);
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        tracing::info!("{image}: PPRC consistency group {name} thawed{}", if was { "" } else { " (was not frozen)" });
        Ok(())
    }

    /// An in-band command arriving at port `local` from the port `from`.
    pub(super) fn inband(&self, local: LinkAddr, from: LinkAddr, cmd: InBand) -> Result<Vec<u8>> {
        if let InBand::Flash { primary, conduit, srcss, request } = &cmd {
            if wwnn_of(primary) != from.wwnn {
                return Err(Error::new(ErrorKind::LinkProtocol, from, format!("the sender is not {primary}")));
            }
            return self.inband_flash(local.wwnn, primary, *conduit, *srcss, request);
        }
        let Some((primary, source, target)) = cmd.pair().map(|(p, s, t)| (p.clone(), s, t)) else {
            return Err(Error::new(ErrorKind::LinkProtocol, from, "an in-band command without a pair"));
        };
        if wwnn_of(&primary) != from.wwnn {
            return Err(Error::new(ErrorKind::LinkProtocol, from, format!("the sender is not {primary}")));
        }
        let name = pair_name(source, target);
        if let InBand::Notice { phase, reason, kind, first_pass, .. } = cmd {
            // Frequent and harmless: no images lock (link workers stay free for data).
            let e = self
                .secondaries
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(local.wwnn, target))
                .cloned()
                .ok_or_else(|| not_found(source, target, "no secondary here"))?;
            let mut r = e.sec.record();
            if r.remote == primary && r.reason != Some(SuspendReason::HostTarget) {
                r.phase = phase;
                r.reason = reason;
                r.kind = kind;
                r.first_pass = first_pass;
                r.suspended_at = (phase == PprcPhase::Suspended).then_some(now());
            }
            // In sync once: a set handed over by a failback here is no longer needed.
            if (phase == PprcPhase::FullDuplex || first_pass)
                && let Some(store) = e.flash.store()
            {
                let _ = crate::bitmap::checkpoint::remove_all(&store.dir, &oos_name(target, &r.remote_wwnn, source));
            }
            return Ok(Vec::new());
        }
        let mut images = self.images();
        let image = images
            .values()
            .find(|i| wwnn_of(i.id()) == local.wwnn)
            .map(|i| i.id().clone())
            .ok_or_else(|| Error::new(ErrorKind::ImageNotFound, local, "no image with this WWNN here"))?;
        let img = get_mut(&mut images, &image)?;
        let mine = img.pprc_pair(target).cloned().filter(|r| r.remote == primary && r.remote_volume == source);
        match cmd {
            InBand::Establish { primary_wwnn, kind, phase, tgtread, size, stgtype, .. } => {
                let vrec = img
                    .record()
                    .volumes
                    .get(&target)
                    .ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, target, ""))?;
                let vol = img.volume(target).ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, target, ""))?;
                if vrec.stgtype() != stgtype || vol.size() != size {
                    return Err(Error::new(ErrorKind::PprcIncompatible, &name, "the volumes differ in size or type"));
                }
                if let Some(p) = img.pprc_pair(target) {
                    let (a, b) = p.ids();
                    return Err(Error::new(ErrorKind::PprcPairExists, &name, format!("{target} is in pair {a}:{b}")));
                }
                if img.flash().roles(vol.handle()).as_target.is_some() {
                    return Err(Error::new(
                        ErrorKind::PprcTargetInFlash,
                        &name,
                        format!("{target} is a FlashCopy target"),
                    ));
                }
                let rec = PprcPairRecord {
                    local: target,
                    remote: primary.clone(),
                    remote_wwnn: primary_wwnn.to_ascii_uppercase(),
                    remote_volume: source,
                    role: PprcRole::Secondary,
                    kind,
                    phase,
                    reason: None,
                    suspended_at: None,
                    tgtread,
                    critmode: false,
                    first_pass: false,
                    created: now(),
                };
                img.put_pprc_pair(rec.clone())?;
                self.start_secondary(img, rec)?;
                tracing::info!("{image}: PPRC pair {name}: {target} is the secondary of {primary}");
                Ok(Vec::new())
            }
            InBand::Notice { .. } => Ok(Vec::new()),
            InBand::Resume { .. } | InBand::Suspend { .. } if mine.is_none() => {
                Err(not_found(source, target, "the secondary is simplex"))
            }
            InBand::Resume { kind, tgtread, .. } => {
                let e = self.secondary(&image, target).ok_or_else(|| not_found(source, target, "not a secondary"))?;
                let rec = {
                    let mut r = e.sec.record();
                    r.phase = PprcPhase::CopyPending;
                    r.reason = None;
                    r.suspended_at = None;
                    r.kind = kind;
                    r.tgtread = tgtread;
                    r.clone()
                };
                img.put_pprc_pair(rec).map(|()| Vec::new())
            }
            InBand::Suspend { .. } => {
                let e = self.secondary(&image, target).ok_or_else(|| not_found(source, target, "not a secondary"))?;
                let rec = {
                    let mut r = e.sec.record();
                    r.phase = PprcPhase::Suspended;
                    r.reason = Some(SuspendReason::HostTarget);
                    r.suspended_at = Some(now());
                    r.clone()
                };
                img.put_pprc_pair(rec).map(|()| Vec::new())
            }
            InBand::Remove { .. } => {
                if mine.is_some() {
                    drop(images);
                    self.remove_local(&image, target)?;
                }
                Ok(Vec::new())
            }
            InBand::Flash { .. } => unreachable!("served above"),
            InBand::Failback { kind, tgtread, size, primary_wwnn, .. } => {
                let rec = mine.ok_or_else(|| not_found(source, target, "no end of this pair here"))?;
                if img.volume(target).is_none_or(|v| v.size() != size) {
                    return Err(Error::new(ErrorKind::PprcIncompatible, &name, "the volumes differ in size"));
                }
                let next = PprcPairRecord {
                    role: PprcRole::Secondary,
                    remote_wwnn: primary_wwnn.to_ascii_uppercase(),
                    kind,
                    tgtread,
                    phase: PprcPhase::CopyPending,
                    reason: None,
                    suspended_at: None,
                    first_pass: false,
                    ..rec.clone()
                };
                let kept = oos_name(target, &rec.remote_wwnn, source);
                img.put_pprc_pair(next.clone())?;
                let theirs = match (rec.role, self.primary(&image, target)) {
                    (PprcRole::Primary, Some(p)) => {
                        // One barrier: no write of the volume runs between the primary's last
                        // set and the secondary's refusal of hosts (none is lost or unhooked).
                        let vol = p.vol.clone();
                        let sec = Hub::secondary_of(&next);
                        let old: Arc<dyn PairHook> = p.clone();
                        let theirs = img.flash().swap_hook(&vol, Some(&old), Some(sec.clone()), || p.hand_over())?;
                        self.primaries.lock().unwrap_or_else(|e| e.into_inner()).remove(&(image.clone(), target));
                        self.register_secondary(img, sec)?;
                        tracing::warn!(
                            "{image}: PPRC pair {name} failed back from {primary}: {target} is its secondary; \
                             {} tracks written here that never crossed go back with the answer",
                            theirs.len()
                        );
                        theirs
                    }
                    _ => {
                        if let Some(e) = self.secondary(&image, target) {
                            *e.sec.record() = next;
                        }
                        // A failback asked again (its answer was lost): the set handed over then.
                        match img.flash().store() {
                            Some(store) => crate::bitmap::checkpoint::load(&store.dir, &kept)?
                                .and_then(|cp| cp.bitmaps.into_iter().next())
                                .unwrap_or_default(),
                            None => TrackBitmap::new(),
                        }
                    }
                };
                Ok(theirs.to_bytes())
            }
        }
    }
}

fn sel_name(sel: &PprcSelect) -> String {
    match sel.target {
        Some(t) => pair_name(sel.source, t),
        None => sel.source.to_string(),
    }
}
