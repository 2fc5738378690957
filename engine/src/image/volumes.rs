//! Volumes of an image: create, change, remove, open.

use super::pools::stg_name;
use super::record::{BackingRecord, PoolLocation, Sam, StorageType, VolumeRecord};
use super::{Image, VOLUME_FILE_SUFFIX};
use crate::control::{Capacity, VolumeSpec, VolumeView};
use crate::error::{Error, ErrorKind, Result};
use crate::geometry::{CKD_MAX_CYLINDERS, Geometry, MAX_TRACKS};
use crate::id::{PoolId, VolumeId, VolumeKey};
use crate::volume::Volume;
use crate::volume::backing::Backing;
use std::sync::Arc;

/// Volumes on a device pool start on 1 MiB boundaries (O_DIRECT- and 4K-friendly).
const DEVICE_ALIGN: u64 = 1 << 20;
/// How long a remove waits for host sessions that are closing.
const SESSION_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a remove waits for the running requests of host connection sessions it ends.
const SESSION_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest volume nickname.
pub const MAX_NAME: usize = 16;

impl Image {
    /// `mkfbvol` / `mkckdvol` for one volume. Either the volume exists afterwards, in the
    /// catalog and on disk, or nothing changed.
    pub fn create_volume(&mut self, spec: &VolumeSpec, id: VolumeId, name: &str, now: i64) -> Result<()> {
        let (geometry, captype, stgtype) = geometry_of(spec.capacity, id)?;
        if name.len() > MAX_NAME {
            return Err(Error::new(ErrorKind::InvalidArgument, id, format!("name longer than {MAX_NAME} characters")));
        }
        self.check_lss(id.lss(), stgtype)?;
        if stgtype == StorageType::Ckd && !self.record.lcus.contains_key(&id.lss()) {
            return Err(Error::new(ErrorKind::LcuNotFound, id, format!("LCU {} does not exist", id.lss())));
        }
        if self.record.volumes.contains_key(&id) {
            return Err(Error::new(ErrorKind::VolumeExists, id, "volume already exists"));
        }
        let pool = self.pool(spec.pool)?.clone();
        if pool.stgtype != stgtype {
            return Err(Error::new(
                ErrorKind::PoolTypeMismatch,
                pool.id,
                format!("extent pool {} holds {} volumes", pool.id, stg_name(pool.stgtype)),
            ));
        }
        if pool.rankgrp != id.lss().rankgrp() {
            return Err(Error::new(
                ErrorKind::PoolRankGroupMismatch,
                id,
                format!(
                    "LSS {} belongs to rank group {}, extent pool {} to {}",
                    id.lss(),
                    id.lss().rankgrp(),
                    pool.id,
                    pool.rankgrp
                ),
            ));
        }
        let len = geometry.size_bytes();
        let (backing, backing_record) = match &pool.location {
            PoolLocation::Directory { path, .. } => {
                let (_, avail) = self.pool_space(&pool)?;
                if spec.sam == Sam::Standard && len > avail {
                    return Err(Error::new(
                        ErrorKind::CapacityTooLarge,
                        id,
                        format!("{len} bytes do not fit the {avail} bytes free in extent pool {}", pool.id),
                    ));
                }
                let file = path.join(format!("{}_{id}{VOLUME_FILE_SUFFIX}", self.record.id));
                let b = Backing::create_file(self.resolve(&file), len, spec.sam == Sam::Standard)?;
                (b, BackingRecord::File { path: file })
            }
            PoolLocation::Device { path } => {
                let offset = self.device_gap(pool.id, len)?;
                let dev = self
                    .device(pool.id)
                    .cloned()
                    .ok_or_else(|| Error::new(ErrorKind::Io, pool.id, "device pool is not open"))?;
                let b = Backing::device_region(dev, offset, len)?;
                // A device region may hold a deleted volume's data: a new volume reads zero.
                b.punch(&*self.io, 0, len).map_err(|e| Error::io(id, &e))?;
                (b, BackingRecord::Device { path: path.clone(), offset })
            }
        };
        let record = VolumeRecord {
            id,
            name: name.to_string(),
            pool: pool.id,
            geometry,
            captype,
            sam: spec.sam,
            backing: backing_record,
            created: now,
        };
        let mut next = self.record.clone();
        next.volumes.insert(id, record);
        let key = VolumeKey { image: self.record.id.clone(), volume: id };
        // Build the runtime volume before the commit so nothing can fail after it; on any
        // failure the new backing file goes again (device regions need no undo).
        let undo_path = match &next.volumes[&id].backing {
            BackingRecord::File { path } => Some(self.resolve(path)),
            BackingRecord::Device { .. } => None,
        };
        let undo = || {
            if let Some(p) = &undo_path {
                let _ = std::fs::remove_file(p);
            }
        };
        let vol = match Volume::new(key, geometry, backing, self.io.clone()) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        if let Err(e) = self.commit(next.clone()) {
            undo();
            return Err(e);
        }
        self.volumes.insert(id, vol);
        Ok(())
    }

    /// First gap of `len` bytes in a device pool.
    fn device_gap(&self, pool: PoolId, len: u64) -> Result<u64> {
        let size = self.device(pool).map(|d| d.size()).unwrap_or(0);
        let mut used: Vec<(u64, u64)> = self
            .record
            .volumes_in_pool(pool)
            .filter_map(|v| match v.backing {
                BackingRecord::Device { offset, .. } => Some((offset, v.geometry.size_bytes())),
                BackingRecord::File { .. } => None,
            })
            .collect();
        used.sort_unstable();
        let mut at = 0;
        for (off, l) in used {
            if off >= at + len {
                break;
            }
            at = (off + l).next_multiple_of(DEVICE_ALIGN);
        }
        if at + len > size {
            return Err(Error::new(
                ErrorKind::CapacityTooLarge,
                pool,
                format!("no free region of {len} bytes on the device of extent pool {pool}"),
            ));
        }
        Ok(at)
    }

    /// `chfbvol` / `chckdvol`: rename and/or grow (never shrink). Growing is refused while
    /// hosts have the volume open: their idea of its size would be stale.
    pub fn change_volume(&mut self, id: VolumeId, name: Option<&str>, grow: Option<Capacity>) -> Result<()> {
        let cur = self
            .record
            .volumes
            .get(&id)
            .ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, id, "no such volume"))?
            .clone();
        if grow.is_some() && self.in_relationship(id) {
            return Err(Error::new(ErrorKind::VolumeInRelationship, id, "the volume is in a FlashCopy relationship"));
        }
        if grow.is_some() && self.in_pprc_pair(id) {
            return Err(Error::new(ErrorKind::VolumeInRelationship, id, "the volume is in a PPRC pair"));
        }
        let mut rec = cur.clone();
        if let Some(n) = name {
            if n.len() > MAX_NAME {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    id,
                    format!("name longer than {MAX_NAME} characters"),
                ));
            }
            rec.name = n.to_string();
        }
        let mut new_volume = None;
        if let Some(cap) = grow {
            let (geometry, captype, stgtype) = geometry_of(cap, id)?;
            if stgtype != cur.stgtype() {
                return Err(Error::new(ErrorKind::InvalidArgument, id, "capacity of the wrong volume type"));
            }
            let (old, new) = (cur.geometry.size_bytes(), geometry.size_bytes());
            if new < old {
                return Err(Error::new(ErrorKind::ShrinkNotAllowed, id, "a volume can only grow"));
            }
            if new > old {
                let vol = self
                    .volumes
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Error::new(ErrorKind::Io, id, "volume is not open"))?;
                if vol.sessions() > 0 {
                    return Err(Error::new(ErrorKind::VolumeInUse, id, "hosts have the volume open"));
                }
                let backing = match &cur.backing {
                    BackingRecord::File { path } => {
                        let (_, avail) = self.pool_space(self.pool(cur.pool)?)?;
                        if cur.sam == Sam::Standard && new - old > avail {
                            return Err(Error::new(
                                ErrorKind::CapacityTooLarge,
                                id,
                                "the growth does not fit the pool",
                            ));
                        }
                        let b = Backing::open_file(self.resolve(path), old)?;
                        b.grow(new, cur.sam == Sam::Standard)?;
                        b
                    }
                    BackingRecord::Device { offset, .. } => {
                        let pool = cur.pool;
                        let blocked = self.record.volumes_in_pool(pool).any(|v| {
                            matches!(v.backing, BackingRecord::Device { offset: o, .. } if o > *offset && o < offset + new)
                        });
                        let dev = self
                            .device(pool)
                            .cloned()
                            .ok_or_else(|| Error::new(ErrorKind::Io, pool, "device pool is not open"))?;
                        if blocked || offset + new > dev.size() {
                            return Err(Error::new(ErrorKind::CapacityTooLarge, id, "no room to grow on the device"));
                        }
                        let b = Backing::device_region(dev, *offset, new)?;
                        // The grown range may hold old data: it reads zero.
                        b.punch(&*self.io, old, new - old).map_err(|e| Error::io(id, &e))?;
                        b
                    }
                };
                rec.geometry = geometry;
                rec.captype = captype;
                let key = VolumeKey { image: self.record.id.clone(), volume: id };
                new_volume = Some(Arc::new(Volume::new(key, geometry, backing, self.io.clone())?));
            }
        }
        let mut next = self.record.clone();
        next.volumes.insert(id, rec);
        if let Err(e) = self.commit(next) {
            // The catalog still has the old size: take the file back to it.
            if let BackingRecord::File { path } = &cur.backing {
                let _ = undo_uncommitted_grow(&self.resolve(path), cur.geometry.size_bytes());
            }
            return Err(e);
        }
        if let Some(v) = new_volume {
            self.volumes.insert(id, v);
        }
        Ok(())
    }

    /// `rmfbvol` / `rmckdvol`: refused while hosts have it open. The catalog forgets the
    /// volume first; then its file (only a file flashtrack created) is deleted.
    ///
    /// Sessions through host connections do not block it: the volume leaves every volume
    /// group with it and those sessions end with NBD_ESHUTDOWN (their running requests
    /// drain first), as a DS8000 takes a deleted LUN away from its hosts. Sessions that
    /// are not a host connection's (the administrator's `nbd.sock`, FUSE opens) still
    /// refuse it. `safe` (`-safe`) also refuses a volume that is in a volume group.
    pub fn remove_volume(&mut self, id: VolumeId, stgtype: StorageType, safe: bool) -> Result<()> {
        let rec = self.record.volumes.get(&id).filter(|v| v.stgtype() == stgtype);
        let rec = rec.ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, id, "no such volume"))?.clone();
        if self.in_relationship(id) {
            return Err(Error::new(ErrorKind::VolumeInRelationship, id, "the volume is in a FlashCopy relationship"));
        }
        if self.in_pprc_pair(id) {
            return Err(Error::new(ErrorKind::VolumeInRelationship, id, "the volume is in a PPRC pair"));
        }
        if safe && let Some(g) = self.record.volgrps.values().find(|g| g.volumes.contains(&id)) {
            return Err(Error::new(ErrorKind::VolumeInVolGrp, id, format!("the volume is in volume group {}", g.id)));
        }
        if let Some(vol) = self.volumes.get(&id) {
            // A host that just hung up may still be tearing its session down: a short grace.
            let others = || vol.sessions().saturating_sub(self.host_sessions.on_volume(id));
            let deadline = std::time::Instant::now() + SESSION_GRACE;
            while others() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if others() > 0 {
                return Err(Error::new(ErrorKind::VolumeInUse, id, "hosts have the volume open"));
            }
            if !self.host_sessions.end_volume(id, SESSION_DRAIN) {
                return Err(Error::new(ErrorKind::VolumeInUse, id, "a host request on the volume does not finish"));
            }
        }
        let mut next = self.record.clone();
        next.volumes.remove(&id);
        for g in next.volgrps.values_mut() {
            g.volumes.retain(|v| *v != id);
        }
        self.commit(next)?;
        if let Some(vol) = self.volumes.remove(&id) {
            if let Some(store) = self.flash.store() {
                store.remove_journal(&vol);
            }
            if let BackingRecord::File { path } = &rec.backing
                && let Err(e) = std::fs::remove_file(self.resolve(path))
            {
                // The catalog no longer names it; the next start removes the orphan.
                tracing::warn!("cannot delete {}: {e}", path.display());
            }
            drop(vol);
        }
        Ok(())
    }

    pub(super) fn open_volume(&self, rec: &VolumeRecord) -> Result<Arc<Volume>> {
        let len = rec.geometry.size_bytes();
        let backing = match &rec.backing {
            BackingRecord::File { path } => {
                let path = self.resolve(path);
                undo_uncommitted_grow(&path, len)?;
                let b = Backing::open_file(path, len)?;
                // Discards of a standard file keep its blocks (volume::backing). One thinned
                // by an earlier version is allocated again; failing that (a full pool) is
                // logged, not fatal: the volume works, as thin as it was.
                if let Err(e) = b.set_standard(rec.sam == Sam::Standard) {
                    tracing::warn!("{}: cannot allocate the standard volume fully again: {e}", rec.id);
                }
                b
            }
            BackingRecord::Device { offset, .. } => {
                let dev = self
                    .device(rec.pool)
                    .cloned()
                    .ok_or_else(|| Error::new(ErrorKind::Io, rec.pool, "device pool is not open"))?;
                Backing::device_region(dev, *offset, len)?
            }
        };
        let key = VolumeKey { image: self.record.id.clone(), volume: rec.id };
        Ok(Arc::new(Volume::new(key, rec.geometry, backing, self.io.clone())?))
    }

    pub fn volume_views(&self) -> Vec<VolumeView> {
        self.record
            .volumes
            .values()
            .map(|rec| {
                let vol = self.volumes.get(&rec.id);
                VolumeView {
                    record: rec.clone(),
                    pool_name: self.record.pools.get(&rec.pool).map(|p| p.name.clone()).unwrap_or_default(),
                    allocated_bytes: vol.and_then(|v| v.allocated_bytes().ok()).unwrap_or(0),
                    sessions: vol.map(|v| v.sessions()).unwrap_or(0),
                }
            })
            .collect()
    }
}

/// Geometry for a requested capacity, with the architectural limits.
fn geometry_of(cap: Capacity, id: VolumeId) -> Result<(Geometry, Option<crate::geometry::CapType>, StorageType)> {
    let zero = || Error::new(ErrorKind::CapacityZero, id, "capacity must be greater than 0");
    let big = || Error::new(ErrorKind::CapacityTooLarge, id, "capacity beyond the largest volume");
    match cap {
        Capacity::Fb { cap, captype } => {
            if cap == 0 {
                return Err(zero());
            }
            let blocks = captype.blocks(cap).ok_or_else(big)?;
            let g = Geometry::Fb { blocks };
            if g.tracks() > MAX_TRACKS {
                return Err(big());
            }
            Ok((g, Some(captype), StorageType::Fb))
        }
        Capacity::Ckd { cylinders } => {
            if cylinders == 0 {
                return Err(zero());
            }
            if cylinders > CKD_MAX_CYLINDERS {
                return Err(big());
            }
            Ok((Geometry::Ckd { cylinders }, None, StorageType::Ckd))
        }
    }
}

/// A file longer than its catalog size was grown by a `chfbvol -cap` whose commit never
/// happened (a crash, or a failed catalog write): the catalog is the truth, cut it back.
fn undo_uncommitted_grow(path: &std::path::Path, len: u64) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if meta.len() > len {
        tracing::warn!(
            "{} is {} bytes, the catalog says {len}: undoing an uncommitted grow",
            path.display(),
            meta.len()
        );
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path.display(), &e))?;
        f.set_len(len).and_then(|()| f.sync_all()).map_err(|e| Error::io(path.display(), &e))?;
    }
    Ok(())
}
