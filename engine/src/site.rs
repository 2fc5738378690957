//! A site: one home directory owned by one flashd, holding storage images.
//!
//! [`Site::open`] takes the home's exclusive lock (invariant 5: one writer), recovers (removes
//! half-made images, opens every image, which removes orphaned volume files), and then serves
//! typed [`Request`]s through [`Site::handle`]. Metadata operations are serialized by one
//! mutex; host I/O never takes it (it holds `Arc<Volume>`s).

use crate::control::{ItemOutcome, PROTOCOL_VERSION, Reply, Request, Response};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{HostId, ImageId, VolumeKey};
use crate::image::Image;
use crate::image::hosts::Endpoint;
use crate::image::record::StorageType;
use crate::image::sessions::HostSession;
use crate::io::IoEngine;
use crate::volume::Volume;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How to open a site.
#[derive(Debug, Clone, Default)]
pub struct SiteOptions {
    /// Own journal files as this boot ID instead of the kernel's (a simulated reboot).
    pub boot_id: Option<String>,
}

/// Lock file of a site home.
pub const LOCK_FILE: &str = "flashd.lock";

#[derive(Debug)]
pub struct Site {
    home: PathBuf,
    io: Arc<dyn IoEngine>,
    images: crate::mirror::hub::Images,
    opts: SiteOptions,
    /// The links of the PPRC paths (taken after `images`, never before).
    paths: Arc<Mutex<crate::mirror::PathLinks>>,
    /// The PPRC pairs at run time (shares `images` and `paths`).
    hub: Arc<crate::mirror::hub::Hub>,
    /// Held for the site's lifetime: the exclusive lock on `LOCK_FILE`.
    _lock: File,
}

impl Site {
    /// Lock and open the home (creating it if needed). Fails with `HomeLocked` when another
    /// process owns it.
    pub fn open(home: &Path, io: Arc<dyn IoEngine>) -> Result<Site> {
        Site::open_opts(home, io, SiteOptions::default())
    }

    /// `open` with options (tests simulate a reboot with another boot ID).
    pub fn open_opts(home: &Path, io: Arc<dyn IoEngine>, opts: SiteOptions) -> Result<Site> {
        // Private when we make it: the home's sockets give full control of the site.
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(home)
            .map_err(|e| Error::io(home.display(), &e))?;
        let lock_path = home.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(lock_path.display(), &e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(ErrorKind::HomeLocked, home.display(), "another flashd owns this site home"));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(lock_path.display(), &e)),
        }
        let mut images = BTreeMap::new();
        let entries = fs::read_dir(home).map_err(|e| Error::io(home.display(), &e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".removing")) && path.is_dir() {
                // An image whose creation or removal did not finish.
                tracing::warn!("removing half-made image {}", path.display());
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            let Ok(id) = name.parse::<ImageId>() else { continue };
            if !path.is_dir() {
                continue;
            }
            let image = Image::open(&path, io.clone(), opts.boot_id.clone())?;
            tracing::info!("opened storage image {id} ({} volumes)", image.record().volumes.len());
            images.insert(id, image);
        }
        let images = Arc::new(Mutex::new(images));
        let paths = Arc::new(Mutex::new(crate::mirror::PathLinks::default()));
        let hub = crate::mirror::hub::Hub::new(images.clone(), paths.clone());
        let site = Site { home: home.to_path_buf(), io, images, opts, paths, hub, _lock: lock };
        {
            let images = site.images();
            site.reconcile_paths(&images);
            // Pairs come back before anything is served (DESIGN.md "Recovery").
            site.hub.restore(&images)?;
        }
        Ok(site)
    }

    fn paths(&self) -> MutexGuard<'_, crate::mirror::PathLinks> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bring the PPRC path links in line with the catalogs: every port pair of a path whose
    /// remote image is in this site gets an in-process link; one whose remote image is a
    /// peer (`HOME/peers`) is dialled over TCP; every port of the site is served when
    /// listening.
    fn reconcile_paths(&self, images: &BTreeMap<ImageId, Image>) {
        let peers = crate::mirror::load_peers(&self.home).unwrap_or_else(|e| {
            tracing::warn!("PPRC paths: {e}");
            BTreeMap::new()
        });
        let mut wanted = crate::mirror::Wanted::default();
        for img in images.values() {
            for port in crate::image::IO_PORTS {
                wanted.ports.extend(crate::mirror::addr(img.id(), port));
            }
            for p in img.pprc_paths() {
                let peer = if images.contains_key(&p.remote) {
                    None
                } else if let Some(at) = peers.get(&p.remote_wwnn.to_ascii_uppercase()) {
                    Some(*at)
                } else {
                    continue;
                };
                for (a, b) in &p.ports {
                    if let (Some(a), Some(b)) = (crate::mirror::addr(img.id(), a), crate::mirror::addr(&p.remote, b)) {
                        match peer {
                            None => drop(wanted.local.insert((a, b))),
                            Some(at) => drop(wanted.remote.insert((a, b), at)),
                        }
                    }
                }
            }
        }
        self.paths().reconcile(&self.home, &wanted);
        self.hub.refresh_routes(images);
    }

    /// Listen for other flashd's PPRC path links on `addr` (loopback only, `--link-listen`):
    /// every I/O port of every image here is served there from now on. Returns the address
    /// bound.
    pub fn listen_links(&self, addr: std::net::SocketAddr) -> Result<std::net::SocketAddr> {
        let bound = self.paths().listen(addr)?;
        self.reconcile_paths(&self.images());
        tracing::info!("PPRC path links: listening on tcp {bound} for other flashd");
        Ok(bound)
    }

    /// The address flashd listens on for other flashd's links, if it does.
    pub fn link_listening(&self) -> Option<std::net::SocketAddr> {
        self.paths().listening()
    }

    /// The link of a PPRC path's port pair (`port` of `image` to `attached` of `remote`), if up.
    pub fn path_link(
        &self,
        image: &ImageId,
        port: &str,
        remote: &ImageId,
        attached: &str,
    ) -> Option<crate::link::Link> {
        let (a, b) = (crate::mirror::addr(image, port)?, crate::mirror::addr(remote, attached)?);
        self.paths().link(&a, &b)
    }

    /// `lspprcpath`: the views are made under the site lock, the links pinged without it.
    fn pprc_path_list(&self, image: &ImageId) -> Result<Reply> {
        let mut views = Vec::new();
        {
            let images = self.images();
            let img = images
                .get(image)
                .ok_or_else(|| Error::new(ErrorKind::ImageNotFound, image, "no such storage image"))?;
            for p in img.pprc_paths() {
                let tgt_ssid = images
                    .get(&p.remote)
                    .map(|r| r.record().lss_ssid(p.tgt_lss))
                    .unwrap_or(0xFF00 | u16::from(p.tgt_lss.0));
                let ports = p
                    .ports
                    .iter()
                    .map(|(a, b)| crate::control::PortPathView {
                        port: a.clone(),
                        attached: b.clone(),
                        state: crate::control::PathState::FailedDown,
                    })
                    .collect();
                views.push(crate::control::PprcPathView { record: p.clone(), tgt_ssid, ports });
            }
        }
        // Paths to another flashd whose link dropped are dialled again (without the site lock).
        self.paths().redial(&self.home);
        for v in &mut views {
            for pv in &mut v.ports {
                let link = self.path_link(image, &pv.port, &v.record.remote, &pv.attached);
                pv.state = crate::mirror::probe(link.as_ref());
            }
        }
        Ok(Reply::PprcPaths(views))
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn io(&self) -> &Arc<dyn IoEngine> {
        &self.io
    }

    fn images(&self) -> MutexGuard<'_, BTreeMap<ImageId, Image>> {
        // A panic while holding the lock leaves the in-memory state as the last committed
        // catalog (commits adopt only after the disk write), so the data is still sound.
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open volume behind an NBD export name such as `IBM.2107-75FA120/1000`.
    pub fn volume(&self, key: &VolumeKey) -> Option<Arc<Volume>> {
        self.images().get(&key.image).and_then(|i| i.volume(key.volume).cloned())
    }

    /// Open a host session on a volume, with its image's FlashCopy intercept: the host
    /// path. The session is taken under the site lock, so a remove (which checks sessions
    /// under the same lock) can never delete a volume a host is about to use.
    pub fn open_host(&self, key: &VolumeKey) -> Option<(crate::volume::SessionGuard, Arc<crate::flash::ImageFlash>)> {
        let images = self.images();
        let image = images.get(&key.image)?;
        let vol = image.volume(key.volume)?;
        Some((vol.open_session(), image.flash().clone()))
    }

    /// Open a host session on a volume through host connection `host` of `image`: only a
    /// volume of the connection's volume group, else `None` (the NBD client gets
    /// NBD_REP_ERR_UNKNOWN, as for a volume that does not exist). Taken under the site lock
    /// like [`Site::open_host`]; the returned [`HostSession`] is revoked when the catalog
    /// stops allowing the access.
    pub fn open_host_via(
        &self,
        image: &ImageId,
        host: HostId,
        key: &VolumeKey,
    ) -> Option<(crate::volume::SessionGuard, Arc<crate::flash::ImageFlash>, Arc<HostSession>)> {
        let images = self.images();
        let img = images.get(image).filter(|_| key.image == *image)?;
        if !img.reaches(host, key.volume) {
            return None;
        }
        let vol = img.volume(key.volume)?;
        let session = img.host_sessions().register(host, key.volume);
        Some((vol.open_session(), img.flash().clone(), session))
    }

    /// The volumes host connection `host` of `image` reaches (its NBD export list).
    pub fn host_volume_keys(&self, image: &ImageId, host: HostId) -> Vec<VolumeKey> {
        let images = self.images();
        let Some(img) = images.get(image) else { return Vec::new() };
        img.host_volumes(host).into_iter().map(|volume| VolumeKey { image: image.clone(), volume }).collect()
    }

    /// Every host connection of the site and where its endpoint listens (the daemon serves
    /// exactly these).
    pub fn host_endpoints(&self) -> Vec<(ImageId, HostId, Endpoint)> {
        let images = self.images();
        images
            .values()
            .flat_map(|img| {
                img.record().hosts.values().map(|h| (img.id().clone(), h.id, img.endpoint(h))).collect::<Vec<_>>()
            })
            .collect()
    }

    /// An image's FlashCopy side (tests and tools that look at bitmaps).
    pub fn flash_of(&self, image: &ImageId) -> Option<Arc<crate::flash::ImageFlash>> {
        self.images().get(image).map(|i| i.flash().clone())
    }

    /// One pass of background copying over every image: up to `budget` tracks of each
    /// relationship that has copying to do, through `worker` (one per copier thread);
    /// finished relationships (non-persistent COPY, `rmflash -cp`) are withdrawn. Returns
    /// how many tracks it reserved for copying (0: no work). The site lock is not held
    /// while copying, so control requests and host I/O go on.
    pub fn copy_pass(&self, worker: &mut crate::flash::copier::CopyWorker, budget: u32) -> u64 {
        let flashes: Vec<(ImageId, Arc<crate::flash::ImageFlash>)> =
            self.images().iter().map(|(id, i)| (id.clone(), i.flash().clone())).collect();
        let mut copied = 0u64;
        for (id, flash) in flashes {
            for rel in flash.relationships() {
                if rel.state().copy_active() {
                    match flash.copy_some(&rel, worker, crate::flash::copier::FROM_CURSOR, budget) {
                        Ok((n, _)) => {
                            copied += u64::from(n);
                            if n > 0 && rel.state().target_bits.is_empty() {
                                flash.kick(); // waiters (-wait) see the copy finish at once
                                if let Err(e) = flash.settle(&rel) {
                                    tracing::warn!("{id}: checkpoint of {}:{} failed: {e}", rel.ids().0, rel.ids().1);
                                }
                            }
                        }
                        Err(e) => tracing::error!("{id}: copy {}:{} failed: {e}", rel.ids().0, rel.ids().1),
                    }
                }
                if rel.state().finished() {
                    let mut images = self.images();
                    if let Some(image) = images.get_mut(&id) {
                        match image.flash_finish(&rel) {
                            Ok(()) => {
                                tracing::info!("{id}: FlashCopy {}:{} copied and ended", rel.ids().0, rel.ids().1)
                            }
                            Err(e) => tracing::error!("{id}: ending {}:{} failed: {e}", rel.ids().0, rel.ids().1),
                        }
                    }
                }
            }
        }
        copied
    }

    /// Block until some image reports new copy work or `timeout` passes.
    pub fn wait_copy_work(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        crate::flash::wait_work(seen, timeout)
    }

    /// Every storage image's ID (the FUSE view's directories).
    pub fn image_ids(&self) -> Vec<ImageId> {
        self.images().keys().cloned().collect()
    }

    /// Every volume's key (NBD export list).
    pub fn volume_keys(&self) -> Vec<VolumeKey> {
        self.images().values().flat_map(|i| i.volumes().map(|v| v.key().clone()).collect::<Vec<_>>()).collect()
    }

    /// Shutdown: every volume's data durable, then each image's FlashCopy state
    /// checkpointed and its journals closed clean (host I/O and copier have stopped).
    pub fn flush_all(&self) {
        self.hub.shutdown();
        let images = self.images();
        for image in images.values() {
            for v in image.volumes() {
                if let Err(e) = v.flush() {
                    tracing::error!("flush of {} failed: {e}", v.key());
                }
            }
            if let Err(e) = image.flash().close_clean() {
                tracing::error!("{}: closing the FlashCopy journals failed: {e}", image.id());
            }
        }
    }

    /// Checkpoint the FlashCopy bitmaps of every image (periodically, off the I/O path), so
    /// journals and activity logs stay small and recovery short.
    pub fn checkpoint(&self) {
        let flashes: Vec<(ImageId, Arc<crate::flash::ImageFlash>)> =
            self.images().iter().map(|(id, i)| (id.clone(), i.flash().clone())).collect();
        for (id, f) in flashes {
            if let Err(e) = f.checkpoint() {
                tracing::error!("{id}: FlashCopy checkpoint failed: {e}");
            }
        }
    }

    /// Serve one control request.
    pub fn handle(&self, req: Request) -> Response {
        match self.dispatch(req) {
            Ok(reply) => Response::Ok(reply),
            Err(e) => Response::Err(e),
        }
    }

    fn dispatch(&self, req: Request) -> Result<Reply> {
        let now = now();
        // Waiting must not hold the site lock: the copier and every other request need it.
        if let Request::FlashWait { image, pairs, timeout_ms } = req {
            return self.flash_wait(&image, &pairs, timeout_ms);
        }
        if let Request::PprcPathList { image } = &req {
            return self.pprc_path_list(image);
        }
        // PPRC pair commands cross the link: never under the site lock (a secondary in this
        // site answers on a link worker that takes it).
        if is_pair_request(&req) {
            let freeze = matches!(req, Request::PprcFreeze { .. });
            let reply = self.hub.handle(req);
            if freeze {
                self.reconcile_paths(&self.images()); // its paths were removed
            }
            return reply;
        }
        // Remote FlashCopy crosses the link too: never under the site lock.
        if let Request::RemoteFlash { image, conduit, srcss, request } = &req {
            return self.hub.remote_flash(image, *conduit, *srcss, request);
        }
        // `lslink`/`chlink`: the paths are read under the site lock, the links used without it.
        if let Request::LinkList { image } | Request::LinkSet { image, .. } = &req {
            let paths = self.images().get(image).map(|i| i.pprc_paths().to_vec());
            return self.paths().link_request(paths.as_deref(), &req);
        }
        if let Request::FlashReverse { image, pairs, fast: true, seqnum, .. } = &req {
            self.reverse_precopy(image, pairs, *seqnum);
        }
        let mut images = self.images();
        macro_rules! img {
            ($id:expr) => {
                images.get_mut($id).ok_or_else(|| Error::new(ErrorKind::ImageNotFound, $id, "no such storage image"))?
            };
        }
        Ok(match req {
            Request::Hello => Reply::Hello {
                protocol: PROTOCOL_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                home: self.home.clone(),
                io_backend: self.io.kind().to_string(),
            },
            Request::ImageCreate { id } => {
                if images.contains_key(&id) {
                    return Err(Error::new(ErrorKind::ImageExists, &id, "storage image already exists"));
                }
                let image = Image::create(&self.home, &id, self.io.clone(), now, self.opts.boot_id.clone())?;
                tracing::info!("created storage image {id}");
                images.insert(id, image);
                // Its ports are served to other flashd when listening.
                self.reconcile_paths(&images);
                Reply::Done
            }
            Request::ImageList => Reply::Images(images.values().map(Image::view).collect()),
            Request::ImageRemove { id } => {
                let image = images
                    .get(&id)
                    .ok_or_else(|| Error::new(ErrorKind::ImageNotFound, &id, "no such storage image"))?;
                if let Some(e) = image.removal_blocker() {
                    return Err(e);
                }
                let image = images
                    .remove(&id)
                    .ok_or_else(|| Error::new(ErrorKind::ImageNotFound, &id, "no such storage image"))?;
                image.destroy(&self.home)?;
                tracing::info!("removed storage image {id}");
                self.reconcile_paths(&images);
                Reply::Done
            }
            Request::PoolCreate { image, name, rankgrp, stgtype, path } => {
                let id = img!(&image).create_pool(&name, rankgrp, stgtype, path)?;
                tracing::info!("{image}: created extent pool {id} ({name})");
                Reply::Items(vec![ItemOutcome { object: id.to_string(), result: Ok(()) }])
            }
            Request::PoolList { image } => Reply::Pools(img!(&image).pool_views()?),
            Request::PoolRemove { image, pool } => {
                img!(&image).remove_pool(pool)?;
                tracing::info!("{image}: removed extent pool {pool}");
                Reply::Done
            }
            Request::LcuCreate { image, first, qty, ssid, lcutype } => {
                let out = img!(&image).create_lcus(first, qty, ssid, lcutype);
                log_items(&image, "created LCU", &out);
                Reply::Items(out)
            }
            Request::LcuRemove { image, lcus } => {
                let out = img!(&image).remove_lcus(&lcus);
                log_items(&image, "removed LCU", &out);
                Reply::Items(out)
            }
            Request::LssList { image } => Reply::Lss(img!(&image).lss_views()),
            Request::VolumeCreate { image, spec, volumes } => {
                let img = img!(&image);
                let out: Vec<ItemOutcome> = volumes
                    .iter()
                    .map(|(id, name)| ItemOutcome {
                        object: id.to_string(),
                        result: img.create_volume(&spec, *id, name, now),
                    })
                    .collect();
                log_items(&image, "created volume", &out);
                Reply::Items(out)
            }
            Request::VolumeList { image } => Reply::Volumes(img!(&image).volume_views()),
            Request::VolumeChange { image, volume, name, grow, stgtype } => {
                let img = img!(&image);
                if stgtype.is_some_and(|t| img.record().volumes.get(&volume).is_some_and(|v| v.stgtype() != t)) {
                    return Err(Error::new(ErrorKind::VolumeNotFound, volume, "no such volume of this type"));
                }
                img.change_volume(volume, name.as_deref(), grow)?;
                tracing::info!("{image}: changed volume {volume}");
                Reply::Items(vec![ItemOutcome { object: volume.to_string(), result: Ok(()) }])
            }
            // `-safe` also refuses volumes in a volume group. Volumes in a copy relationship
            // or open by hosts (other than through host connections) are refused with or
            // without it; see `Image::remove_volume`.
            Request::VolumeRemove { image, volumes, safe, stgtype } => {
                let img = img!(&image);
                let out: Vec<ItemOutcome> = volumes
                    .iter()
                    .map(|id| {
                        let own = img.record().volumes.get(id).map(|v| v.stgtype()).unwrap_or(StorageType::Fb);
                        let t = stgtype.unwrap_or(own);
                        ItemOutcome { object: id.to_string(), result: img.remove_volume(*id, t, safe) }
                    })
                    .collect();
                log_items(&image, "removed volume", &out);
                Reply::Items(out)
            }
            Request::IoPortList { image } => Reply::IoPorts(img!(&image).io_ports()),
            Request::Shutdown => Reply::Done,
            Request::LinkList { .. } | Request::LinkSet { .. } => unreachable!("served without the site lock"),
            Request::PprcPathCreate { image, remote, remote_wwnn, src_lss, tgt_lss, consistgrp, ports } => {
                img!(&image);
                let facts = match images.get(&remote) {
                    Some(r) => crate::image::pprc::RemoteFacts {
                        id: remote.clone(),
                        wwnn: r.id().wwnn(),
                        tgt_type: Some(r.record().lss_type(tgt_lss)),
                    },
                    // Another site's image: its LSS cannot be checked from here.
                    None if crate::mirror::load_peers(&self.home)?.contains_key(&remote.wwnn()) => {
                        crate::image::pprc::RemoteFacts { id: remote.clone(), wwnn: remote.wwnn(), tgt_type: None }
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::PprcRemoteNotFound,
                            &remote,
                            "the remote storage image is not in this site nor a peer (flashd peer add)",
                        ));
                    }
                };
                let name = img!(&image).create_pprc_path(&facts, &remote_wwnn, src_lss, tgt_lss, consistgrp, &ports)?;
                tracing::info!("{image}: PPRC path {name} to {remote} over {ports:?}");
                self.reconcile_paths(&images);
                Reply::Items(vec![ItemOutcome { object: name, result: Ok(()) }])
            }
            Request::PprcPathRemove { image, remote, remote_wwnn, src_lss, tgt_lss, force } => {
                let name = img!(&image).remove_pprc_path(&remote, remote_wwnn.as_deref(), src_lss, tgt_lss, force)?;
                tracing::info!("{image}: removed PPRC path {name} to {remote}");
                self.reconcile_paths(&images);
                Reply::Items(vec![ItemOutcome { object: name, result: Ok(()) }])
            }
            Request::PprcPathList { .. } => unreachable!("served without the site lock"),
            pair if is_pair_request(&pair) => unreachable!("served by the hub"),
            Request::RemoteFlash { .. } => unreachable!("served by the hub"),
            Request::VolGrpCreate { ref image, .. }
            | Request::VolGrpList { ref image }
            | Request::VolGrpChange { ref image, .. }
            | Request::VolGrpRemove { ref image, .. }
            | Request::HostCreate { ref image, .. }
            | Request::HostList { ref image }
            | Request::HostChange { ref image, .. }
            | Request::HostRemove { ref image, .. } => {
                let image = image.clone();
                let logged = host_log(&req);
                let reply = img!(&image).host_request(req)?;
                if let (Some(what), Reply::Items(items)) = (logged, &reply) {
                    log_items(&image, what, items);
                }
                reply
            }
            flash => {
                // A target that is a PPRC primary learns its changed tracks under the
                // FlashCopy's barrier (`flash::pprc::PairHook::changed`).
                img!(&flash_image(&flash)).flash_request(flash, now)?
            }
        })
    }
}

fn is_pair_request(req: &Request) -> bool {
    matches!(
        req,
        Request::PprcCreate { .. }
            | Request::PprcList { .. }
            | Request::PprcWait { .. }
            | Request::PprcRemove { .. }
            | Request::PprcPause { .. }
            | Request::PprcResume { .. }
            | Request::PprcFailover { .. }
            | Request::PprcFailback { .. }
            | Request::PprcFreeze { .. }
            | Request::PprcUnfreeze { .. }
    )
}

fn log_items(image: &ImageId, what: &str, items: &[ItemOutcome]) {
    for item in items.iter().filter(|i| i.result.is_ok()) {
        tracing::info!("{image}: {what} {}", item.object);
    }
}

/// What the log says of a host attachment change.
fn host_log(req: &Request) -> Option<&'static str> {
    Some(match req {
        Request::VolGrpCreate { .. } => "created volume group",
        Request::VolGrpChange { .. } => "changed volume group",
        Request::VolGrpRemove { .. } => "removed volume group",
        Request::HostCreate { .. } => "created host connection",
        Request::HostChange { .. } => "changed host connection",
        Request::HostRemove { .. } => "removed host connection",
        _ => return None,
    })
}

/// Wall clock in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Site {
    /// `reverseflash -fast` before the background copy finished: the reversed pair needs
    /// the old target to hold its own data, so the rest of the copy is done first, here,
    /// without the site lock (control requests and the copier go on). The locked reverse
    /// then re-checks everything and copies only what host writes left uncopied meanwhile.
    /// Only relationships the reverse would accept now (recording, Valid, the sequence
    /// number matching, no other relationship on the source) are copied, so a refused
    /// reverse changes nothing.
    fn reverse_precopy(
        &self,
        image: &ImageId,
        pairs: &[(crate::id::VolumeId, crate::id::VolumeId)],
        seqnum: Option<u32>,
    ) {
        let Some(flash) = self.flash_of(image) else { return };
        let rels = flash.relationships();
        for rel in &rels {
            let eligible = {
                let st = rel.state();
                st.record.options.record
                    && st.record.state == crate::flash::relationship::FlashState::Valid
                    && seqnum.is_none_or(|n| n == st.record.options.seqnum)
            } && rels.iter().filter(|r| r.source.key().volume == rel.ids().0).count() == 1;
            if eligible
                && pairs.contains(&rel.ids())
                && let Err(e) = flash.copy_all(rel)
            {
                tracing::warn!("{image}: copy before reversing {}:{} failed: {e}", rel.ids().0, rel.ids().1);
            }
        }
    }

    /// `-wait`: poll the pairs' state (briefly under the site lock) until none copies any
    /// more or the timeout passes, sleeping on the copier's progress signal in between.
    fn flash_wait(
        &self,
        image: &ImageId,
        pairs: &[(crate::id::VolumeId, crate::id::VolumeId)],
        timeout_ms: u64,
    ) -> Result<Reply> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        loop {
            let seen = crate::flash::work_count();
            let views: Vec<crate::control::FlashView> = {
                let images = self.images();
                let img = images
                    .get(image)
                    .ok_or_else(|| Error::new(ErrorKind::ImageNotFound, image, "no such storage image"))?;
                img.flash_views().into_iter().filter(|v| pairs.contains(&(v.record.source, v.record.target))).collect()
            };
            let now = std::time::Instant::now();
            if !views.iter().any(|v| v.active_copy) || now >= deadline {
                return Ok(Reply::Flash(views));
            }
            crate::flash::wait_work(seen, (deadline - now).min(std::time::Duration::from_millis(100)));
        }
    }
}

/// The image a FlashCopy request is addressed to.
fn flash_image(req: &Request) -> ImageId {
    match req {
        Request::FlashCreate { image, .. }
        | Request::FlashList { image }
        | Request::FlashRemove { image, .. }
        | Request::FlashResync { image, .. }
        | Request::FlashReverse { image, .. }
        | Request::FlashSetRevertible { image, .. }
        | Request::FlashCommit { image, .. }
        | Request::FlashRevert { image, .. }
        | Request::FlashUnfreeze { image, .. }
        | Request::FlashWait { image, .. } => image.clone(),
        _ => unreachable!("flash_image called with a non-FlashCopy request"),
    }
}

impl Drop for Site {
    /// The pairs' driver threads stop with the site (they hold its volumes).
    fn drop(&mut self) {
        self.hub.shutdown();
    }
}
