//! The site's PPRC pairs at run time: which volume is whose primary or secondary, what
//! arrives over the paths' links (remote apply and in-band commands), and bringing pairs
//! back when the site opens.
//!
//! # Locks
//!
//! The site's images mutex, then `paths`, then a pair's state: never the other way. No lock
//! of the hub or the images is held across a link request: a secondary in the same site
//! answers on another thread that takes the images lock itself (`commands.rs`). Remote apply
//! takes no site-wide lock at all (the `secondaries` map is read-mostly).

use super::PathLinks;
use super::pair::{Primary, Route, Secondary, oos_name};
use crate::bitmap::{TrackBitmap, checkpoint};
use crate::control::PprcView;
use crate::error::{Error, ErrorKind, Result};
use crate::flash::ImageFlash;
use crate::flash::freeze::FreezeGate;
use crate::flash::pprc::PairHook;
use crate::geometry::TRACK_BYTES;
use crate::id::{ImageId, LssId, VolumeId};
use crate::image::Image;
use crate::image::flash::{FREEZE_TIMEOUT_CKD, FREEZE_TIMEOUT_FB};
use crate::image::record::{PprcPairRecord, PprcPhase, PprcRole, StorageType, SuspendReason};
use crate::link::{Handler, LinkAddr, Message, Reply};
use crate::volume::Volume;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

pub type Images = Arc<Mutex<BTreeMap<ImageId, Image>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A secondary volume and what applying to it needs.
#[derive(Debug, Clone)]
pub struct SecEntry {
    pub sec: Arc<Secondary>,
    pub vol: Arc<Volume>,
    pub flash: Arc<ImageFlash>,
}

/// The site's pairs; see the module docs.
#[derive(Debug)]
pub struct Hub {
    pub(super) images: Images,
    pub(super) paths: Arc<Mutex<PathLinks>>,
    pub(super) primaries: Mutex<BTreeMap<(ImageId, VolumeId), Arc<Primary>>>,
    /// By (local image WWNN, local volume).
    pub(super) secondaries: RwLock<HashMap<(u64, VolumeId), SecEntry>>,
    gates: Mutex<HashMap<ImageId, Arc<FreezeGate>>>,
    /// Consistency groups `freezepprc` made and no `unfreezepprc` has thawed yet, as (image,
    /// source LSS, remote image, target LSS): the freeze removed their paths, so this is how
    /// `unfreezepprc` knows such an LSS pair (with no pairs on it) exists. In memory only: a
    /// restart thaws every gate too.
    pub(super) frozen: Mutex<BTreeSet<(ImageId, LssId, ImageId, LssId)>>,
    /// Serializes the site's PPRC commands (never taken by what arrives over a link).
    pub(super) cmd: Mutex<()>,
}

/// The queue-full timeout of a volume's LSS.
pub fn lss_timeout(stgtype: StorageType) -> Duration {
    Duration::from_secs(match stgtype {
        StorageType::Ckd => FREEZE_TIMEOUT_CKD,
        StorageType::Fb => FREEZE_TIMEOUT_FB,
    } as u64)
}

pub fn wwnn_of(image: &ImageId) -> u64 {
    u64::from_str_radix(&image.wwnn(), 16).unwrap_or(0)
}

impl Hub {
    pub fn new(images: Images, paths: Arc<Mutex<PathLinks>>) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            images,
            paths,
            primaries: Mutex::default(),
            secondaries: RwLock::default(),
            gates: Mutex::default(),
            frozen: Mutex::default(),
            cmd: Mutex::default(),
        });
        let weak = Arc::downgrade(&hub);
        lock(&hub.paths).set_handlers(Arc::new(move |local: LinkAddr| {
            Arc::new(MirrorHandler { hub: weak.clone(), local }) as Arc<dyn Handler>
        }));
        hub
    }

    /// The queue-full gate of an image's primaries.
    pub fn gate(&self, image: &ImageId) -> Arc<FreezeGate> {
        lock(&self.gates).entry(image.clone()).or_default().clone()
    }

    pub fn primary(&self, image: &ImageId, vol: VolumeId) -> Option<Arc<Primary>> {
        lock(&self.primaries).get(&(image.clone(), vol)).cloned()
    }

    pub fn secondary(&self, image: &ImageId, vol: VolumeId) -> Option<SecEntry> {
        self.secondaries.read().unwrap_or_else(|p| p.into_inner()).get(&(wwnn_of(image), vol)).cloned()
    }

    /// The port pairs of the path a primary at `img` uses, as link addresses.
    pub(super) fn ports(img: &Image, rec: &PprcPairRecord) -> (Vec<(LinkAddr, LinkAddr)>, bool) {
        let Some(path) = img.pprc_path(rec.local.lss(), &rec.remote, rec.remote_volume.lss()) else {
            return (Vec::new(), false);
        };
        let ports = path
            .ports
            .iter()
            .filter_map(|(a, b)| Some((super::addr(img.id(), a)?, super::addr(&rec.remote, b)?)))
            .collect();
        (ports, path.consistgrp)
    }

    /// Paths changed: every primary finds its port pairs (and `-consistgrp`) again.
    pub fn refresh_routes(&self, images: &BTreeMap<ImageId, Image>) {
        for ((image, _), p) in lock(&self.primaries).iter() {
            let Some(img) = images.get(image) else { continue };
            let (ports, cg) = Hub::ports(img, &p.state().record);
            p.route.set_ports(ports);
            p.cg.store(cg, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Start a primary: register it, put its hook on the volume, run its driver.
    pub(super) fn start_primary(&self, img: &Image, p: Arc<Primary>) {
        img.flash().install_hook(&p.vol, p.clone() as Arc<dyn PairHook>);
        self.run_primary(img.id(), p);
    }

    /// Register a primary whose hook is on its volume already, and run its driver.
    pub(super) fn run_primary(&self, image: &ImageId, p: Arc<Primary>) {
        lock(&self.primaries).insert((image.clone(), p.source), p.clone());
        let name = format!("pprc-{}", p.source);
        let run = p.clone();
        if let Err(e) = std::thread::Builder::new().name(name).spawn(move || run.drive()) {
            tracing::error!("PPRC pair {}:{}: no driver thread: {e}", p.source, p.target);
        }
    }

    /// Stop a primary at `img` and take its hook off (its files stay unless `files`).
    pub(super) fn stop_primary(
        &self,
        flash: &ImageFlash,
        image: &ImageId,
        vol: VolumeId,
        files: bool,
    ) -> Option<Arc<Primary>> {
        let p = lock(&self.primaries).remove(&(image.clone(), vol))?;
        p.stop();
        flash.remove_hook(&p.vol, &(p.clone() as Arc<dyn PairHook>));
        if files {
            p.remove_files();
        }
        Some(p)
    }

    pub(super) fn start_secondary(&self, img: &Image, rec: PprcPairRecord) -> Result<()> {
        let sec = Hub::secondary_of(&rec);
        let vol = img.volume(rec.local).cloned().ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, rec.local, ""))?;
        img.flash().install_hook(&vol, sec.clone() as Arc<dyn PairHook>);
        self.register_secondary(img, sec)
    }

    pub(super) fn secondary_of(rec: &PprcPairRecord) -> Arc<Secondary> {
        Arc::new(Secondary { primary_wwnn: wwnn_of(&rec.remote), st: Mutex::new(rec.clone()) })
    }

    /// Make a secondary whose hook is on its volume already findable by remote apply.
    pub(super) fn register_secondary(&self, img: &Image, sec: Arc<Secondary>) -> Result<()> {
        let local = sec.record().local;
        let vol = img.volume(local).cloned().ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, local, ""))?;
        let entry = SecEntry { sec, vol, flash: img.flash().clone() };
        self.secondaries.write().unwrap_or_else(|p| p.into_inner()).insert((wwnn_of(img.id()), local), entry);
        Ok(())
    }

    pub(super) fn stop_secondary(&self, flash: &ImageFlash, image: &ImageId, vol: VolumeId) {
        let e = self.secondaries.write().unwrap_or_else(|p| p.into_inner()).remove(&(wwnn_of(image), vol));
        if let Some(e) = e {
            flash.remove_hook(&e.vol, &(e.sec.clone() as Arc<dyn PairHook>));
        }
    }

    /// A new primary's runtime: the out-of-sync set `oos` and generation `generation`.
    pub(super) fn make_primary(
        &self,
        img: &Image,
        rec: PprcPairRecord,
        oos: TrackBitmap,
        generation: u64,
    ) -> Result<Arc<Primary>> {
        let vol = img.volume(rec.local).cloned().ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, rec.local, ""))?;
        img.flash().ensure_journal(&vol)?;
        let (ports, cg) = Hub::ports(img, &rec);
        let stgtype = img.record().volumes.get(&rec.local).map(|v| v.stgtype()).unwrap_or(StorageType::Fb);
        let route = Route::new(self.paths.clone(), ports);
        Ok(Arc::new(Primary::new(
            rec,
            img.id().clone(),
            vol,
            img.flash(),
            oos,
            generation,
            route,
            self.gate(img.id()),
            cg,
            lss_timeout(stgtype),
        )))
    }

    /// Bring every pair back (site open, before control and hosts are served). Secondaries
    /// refuse hosts again; primaries load their out-of-sync set (newest checkpoint, plus
    /// what the volume's journal recovered, plus a FlashCopy target's uncopied tracks) and
    /// come up suspended: a pair that was mirroring resumes by itself when its secondary
    /// answers (DESIGN.md "Recovery"); one suspended by a command stays suspended.
    pub fn restore(&self, images: &BTreeMap<ImageId, Image>) -> Result<()> {
        for img in images.values() {
            for rec in img.pprc_pairs().to_vec() {
                match rec.role {
                    PprcRole::Secondary => self.start_secondary(img, rec)?,
                    PprcRole::Primary => {
                        let vol = img.volume(rec.local).cloned().ok_or_else(|| {
                            Error::new(ErrorKind::Corrupt, img.id(), format!("pair of missing volume {}", rec.local))
                        })?;
                        img.flash().ensure_journal(&vol)?;
                        let name = oos_name(rec.local, &rec.remote_wwnn, rec.remote_volume);
                        let (generation, mut oos) = match img.flash().store() {
                            Some(store) => match checkpoint::load(&store.dir, &name)? {
                                Some(cp) if cp.bitmaps.len() == 1 => {
                                    (cp.generation, cp.bitmaps.into_iter().next().unwrap_or_default())
                                }
                                Some(_) => return Err(Error::new(ErrorKind::Corrupt, &name, "not one bitmap")),
                                None => (0, TrackBitmap::full(vol.geometry().tracks())),
                            },
                            None => (0, TrackBitmap::full(vol.geometry().tracks())),
                        };
                        if let Some(c) = img.flash().recovered_changes(vol.handle()) {
                            tracing::info!(
                                "PPRC {}: {} tracks written before the crash join out of sync",
                                name,
                                c.len()
                            );
                            oos.union_with(&c);
                        }
                        if let Some(rel) = img.flash().roles(vol.handle()).as_target {
                            oos.union_with(&rel.state().target_bits);
                        }
                        let mut rec = rec.clone();
                        let was_active = rec.phase != PprcPhase::Suspended;
                        if was_active {
                            rec.phase = PprcPhase::Suspended;
                            rec.reason = Some(SuspendReason::PowerSource);
                            rec.suspended_at = Some(super::pair::now());
                        }
                        let p = self.make_primary(img, rec, oos, generation)?;
                        p.state().auto_resume = was_active;
                        self.start_primary(img, p);
                    }
                }
            }
        }
        Ok(())
    }

    /// `lspprc`: the pairs of `image` as they are now.
    pub fn views(&self, image: &ImageId) -> Result<Vec<PprcView>> {
        let images = lock(&self.images);
        let img = images.get(image).ok_or_else(|| Error::new(ErrorKind::ImageNotFound, image, "no such image"))?;
        let mut out = Vec::new();
        for rec in img.pprc_pairs() {
            let (record, out_of_sync, cg) = match rec.role {
                PprcRole::Primary => match self.primary(image, rec.local) {
                    Some(p) => {
                        let st = p.state();
                        (st.record.clone(), st.pending().len(), p.cg.load(std::sync::atomic::Ordering::SeqCst))
                    }
                    None => (rec.clone(), 0, false),
                },
                PprcRole::Secondary => {
                    let mut r = match self.secondary(image, rec.local) {
                        Some(e) => e.sec.record().clone(),
                        None => rec.clone(),
                    };
                    // A primary in this site is asked directly (the notices it sends are
                    // for secondaries of other flashd, and lag).
                    if let Some(p) = self.primary(&rec.remote, rec.remote_volume).filter(|p| p.target == rec.local)
                        && r.reason != Some(SuspendReason::HostTarget)
                    {
                        let st = p.state();
                        r.phase = st.record.phase;
                        r.reason = st.record.reason;
                        r.suspended_at = st.record.suspended_at;
                        r.kind = st.record.kind;
                        r.first_pass = st.record.first_pass;
                    }
                    (r, 0, false)
                }
            };
            let stgtype = img.record().volumes.get(&rec.local).map(|v| v.stgtype()).unwrap_or(StorageType::Fb);
            out.push(PprcView {
                source_lss: record.ids().0.lss(),
                record,
                out_of_sync,
                timeout_secs: lss_timeout(stgtype).as_secs() as u32,
                pprc_cg: cg,
            });
        }
        Ok(out)
    }

    /// Stop every driver (site shutdown).
    pub fn shutdown(&self) {
        for p in lock(&self.primaries).values() {
            p.stop();
        }
    }

    /// Remote apply of a data message at the secondary `local` (this site's port).
    fn apply(&self, local: LinkAddr, from: LinkAddr, msg: Message) -> Reply {
        let volume = match &msg {
            Message::Write { volume, .. }
            | Message::Track { volume, .. }
            | Message::Flush { volume }
            | Message::Zero { volume, .. } => *volume,
            _ => return Reply::Failed(Error::new(ErrorKind::Unsupported, from, "not a data message")),
        };
        let entry = self.secondaries.read().unwrap_or_else(|p| p.into_inner()).get(&(local.wwnn, volume)).cloned();
        let Some(e) = entry.filter(|e| e.sec.primary_wwnn == from.wwnn) else {
            return Reply::Failed(Error::new(
                ErrorKind::PprcPairNotFound,
                volume,
                format!("{volume} is not a PPRC secondary of {:016X}", from.wwnn),
            ));
        };
        if e.sec.record().reason == Some(SuspendReason::HostTarget) {
            return Reply::Failed(Error::new(ErrorKind::PprcStateInvalid, volume, "the secondary is suspended"));
        }
        let r = match msg {
            Message::Write { offset, data, fua, .. } => e.flash.apply_write(&e.vol, offset, &data, fua),
            Message::Track { track, data, .. } => e.flash.apply_write(&e.vol, track as u64 * TRACK_BYTES, &data, false),
            Message::Zero { offset, len, .. } => e.flash.apply_zero(&e.vol, offset, len),
            Message::Flush { .. } => e.flash.flush(&e.vol),
            _ => Ok(()),
        };
        match r {
            Ok(()) => Reply::Done,
            Err(err) => Reply::Failed(Error::io(e.vol.key(), &err)),
        }
    }
}

/// What arrives at one port of this site.
struct MirrorHandler {
    hub: Weak<Hub>,
    local: LinkAddr,
}

impl Handler for MirrorHandler {
    fn handle(&self, from: LinkAddr, msg: Message) -> Reply {
        let Some(hub) = self.hub.upgrade() else {
            return Reply::Failed(Error::new(ErrorKind::ShuttingDown, self.local, "the site is closing"));
        };
        match msg {
            Message::Command(body) => match super::inband::InBand::decode(&body) {
                Ok(cmd) => match hub.inband(self.local, from, cmd) {
                    Ok(data) => Reply::Data(data),
                    Err(e) => Reply::Failed(e),
                },
                Err(e) => Reply::Failed(e),
            },
            other => hub.apply(self.local, from, other),
        }
    }
}
