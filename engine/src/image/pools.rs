//! Extent pools and LSS/LCU of an image.

use super::Image;
use super::record::{LcuRecord, LcuType, PoolLocation, PoolRecord, StorageType};
use crate::control::{ItemOutcome, LssView, PoolView};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{LssId, PoolId};
use crate::volume::backing::DeviceHandle;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Highest pool number accepted.
const MAX_POOL: u16 = 255;

impl Image {
    /// `mkextpool`: a new pool on a directory (made inside the image when `path` is None) or
    /// on a block device. The ID is the lowest free one whose parity is the rank group.
    pub fn create_pool(
        &mut self,
        name: &str,
        rankgrp: u8,
        stgtype: StorageType,
        path: Option<PathBuf>,
    ) -> Result<PoolId> {
        if rankgrp > 1 {
            return Err(Error::new(ErrorKind::InvalidArgument, rankgrp, "rank group must be 0 or 1"));
        }
        if name.is_empty() || name.len() > 16 {
            return Err(Error::new(ErrorKind::InvalidArgument, name, "pool name must have 1 to 16 characters"));
        }
        let id = (0..=MAX_POOL)
            .map(PoolId)
            .find(|p| p.rankgrp() == rankgrp && !self.record.pools.contains_key(p))
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, name, "no free extent pool ID"))?;
        let mut device = None;
        let location = match path {
            None => {
                let rel = PathBuf::from("pools").join(id.to_string());
                let dir = self.resolve(&rel);
                fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), &e))?;
                PoolLocation::Directory { path: rel, created: true }
            }
            Some(p) => {
                let p =
                    p.canonicalize().map_err(|e| Error::new(ErrorKind::PoolPathInvalid, p.display(), e.to_string()))?;
                let same = |q: &PoolRecord| self.resolve(q.location.path()).canonicalize().is_ok_and(|c| c == p);
                if self.record.pools.values().any(same) {
                    return Err(Error::new(ErrorKind::PoolPathInvalid, p.display(), "another pool already uses it"));
                }
                let meta =
                    fs::metadata(&p).map_err(|e| Error::new(ErrorKind::PoolPathInvalid, p.display(), e.to_string()))?;
                if meta.is_dir() {
                    PoolLocation::Directory { path: p, created: false }
                } else if meta.file_type().is_block_device() {
                    device = Some(Arc::new(DeviceHandle::open(&p)?));
                    PoolLocation::Device { path: p }
                } else {
                    return Err(Error::new(
                        ErrorKind::PoolPathInvalid,
                        p.display(),
                        "neither a directory nor a block device",
                    ));
                }
            }
        };
        let mut next = self.record.clone();
        next.pools.insert(id, PoolRecord { id, name: name.to_string(), rankgrp, stgtype, location: location.clone() });
        if let Err(e) = self.commit(next) {
            if let PoolLocation::Directory { path, created: true } = &location {
                let _ = fs::remove_dir(self.resolve(path));
            }
            return Err(e);
        }
        if let Some(dev) = device {
            self.devices.insert(id, dev);
        }
        Ok(id)
    }

    /// `rmextpool`: refused while the pool holds volumes.
    pub fn remove_pool(&mut self, id: PoolId) -> Result<()> {
        let pool = self.pool(id)?.clone();
        if self.record.volumes_in_pool(id).next().is_some() {
            return Err(Error::new(ErrorKind::PoolHasVolumes, id, "extent pool still holds volumes"));
        }
        let mut next = self.record.clone();
        next.pools.remove(&id);
        self.commit(next)?;
        self.devices.remove(&id);
        if let PoolLocation::Directory { path, created: true } = &pool.location {
            let _ = fs::remove_dir(self.resolve(path));
        }
        Ok(())
    }

    pub fn pool(&self, id: PoolId) -> Result<&PoolRecord> {
        self.record.pools.get(&id).ok_or_else(|| Error::new(ErrorKind::PoolNotFound, id, "no such extent pool"))
    }

    pub(super) fn device(&self, id: PoolId) -> Option<&Arc<DeviceHandle>> {
        self.devices.get(&id)
    }

    /// Total and free bytes of a pool's medium.
    pub(super) fn pool_space(&self, pool: &PoolRecord) -> Result<(u64, u64)> {
        match &pool.location {
            PoolLocation::Directory { path, .. } => {
                let path = self.resolve(path);
                let st = rustix::fs::statvfs(&path).map_err(|e| Error::io(path.display(), &e.into()))?;
                Ok((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
            }
            PoolLocation::Device { path } => {
                let dev = self
                    .devices
                    .get(&pool.id)
                    .ok_or_else(|| Error::new(ErrorKind::Io, path.display(), "device pool is not open"))?;
                let used: u64 = self.record.volumes_in_pool(pool.id).map(|v| v.geometry.size_bytes()).sum();
                Ok((dev.size(), dev.size().saturating_sub(used)))
            }
        }
    }

    pub fn pool_views(&self) -> Result<Vec<PoolView>> {
        let mut out = Vec::new();
        for pool in self.record.pools.values() {
            let (capacity_bytes, available_bytes) = self.pool_space(pool)?;
            let vols: Vec<_> = self.record.volumes_in_pool(pool.id).collect();
            let allocated_bytes =
                vols.iter().filter_map(|v| self.volumes.get(&v.id)).map(|v| v.allocated_bytes().unwrap_or(0)).sum();
            out.push(PoolView {
                record: pool.clone(),
                capacity_bytes,
                available_bytes,
                provisioned_bytes: vols.iter().map(|v| v.geometry.size_bytes()).sum(),
                allocated_bytes,
                numvols: vols.len(),
            });
        }
        Ok(out)
    }

    /// Checks shared by LCUs and volumes: the LSS exists on this machine type, and its
    /// address group holds `stgtype` (or nothing yet).
    pub(super) fn check_lss(&self, lss: LssId, stgtype: StorageType) -> Result<()> {
        let max = self.record.id.machine.max_lss();
        if lss.0 > max {
            return Err(Error::new(
                ErrorKind::LssOutOfRange,
                lss,
                format!("LSS must be in the range 00-{max:02X} on a {} storage image", self.record.id.machine.code()),
            ));
        }
        match self.record.addrgrp_type(lss.addrgrp()) {
            Some(t) if t != stgtype => Err(Error::new(
                ErrorKind::AddressGroupType,
                lss,
                format!("address group {:X} already holds {} volumes", lss.addrgrp(), stg_name(t)),
            )),
            _ => Ok(()),
        }
    }

    /// `mklcu`: `qty` consecutive LCUs from `first`, SSIDs counting up from `ssid`.
    pub fn create_lcus(&mut self, first: LssId, qty: u16, ssid: u16, lcutype: LcuType) -> Vec<ItemOutcome> {
        (0..qty)
            .map(|n| {
                let id = first.0 as u16 + n;
                let object = format!("{id:02X}");
                let result = self.create_lcu(id, ssid.wrapping_add(n), lcutype);
                ItemOutcome { object, result }
            })
            .collect()
    }

    fn create_lcu(&mut self, id: u16, ssid: u16, lcutype: LcuType) -> Result<()> {
        let lss = u8::try_from(id)
            .map(LssId)
            .map_err(|_| Error::new(ErrorKind::LssOutOfRange, format!("{id:X}"), "LCU number beyond FF"))?;
        self.check_lss(lss, StorageType::Ckd)?;
        if self.record.lcus.contains_key(&lss) {
            return Err(Error::new(ErrorKind::LcuExists, lss, "LCU already exists"));
        }
        if ssid == 0 {
            return Err(Error::new(ErrorKind::InvalidArgument, lss, "subsystem ID must be 0001-FFFF"));
        }
        if let Some(other) = self.record.lcus.values().find(|l| l.ssid == ssid) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                lss,
                format!("subsystem ID {ssid:04X} is already used by LCU {}", other.id),
            ));
        }
        let mut next = self.record.clone();
        next.lcus.insert(lss, LcuRecord { id: lss, ssid, lcutype });
        self.commit(next)
    }

    /// `rmlcu`: refused while the LCU holds volumes.
    pub fn remove_lcus(&mut self, lcus: &[LssId]) -> Vec<ItemOutcome> {
        lcus.iter()
            .map(|&lss| {
                let result = if !self.record.lcus.contains_key(&lss) {
                    Err(Error::new(ErrorKind::LcuNotFound, lss, "no such LCU"))
                } else if self.record.volumes.keys().any(|v| v.lss() == lss) {
                    Err(Error::new(ErrorKind::LcuHasVolumes, lss, "LCU still holds volumes"))
                } else {
                    let mut next = self.record.clone();
                    next.lcus.remove(&lss);
                    self.commit(next)
                };
                ItemOutcome { object: lss.to_string(), result }
            })
            .collect()
    }

    /// FB LSSs (they exist while they hold volumes) and CKD LCUs.
    pub fn lss_views(&self) -> Vec<LssView> {
        let mut out: BTreeMap<LssId, LssView> = BTreeMap::new();
        for lcu in self.record.lcus.values() {
            out.insert(
                lcu.id,
                LssView {
                    id: lcu.id,
                    stgtype: StorageType::Ckd,
                    confgvols: 0,
                    ssid: Some(lcu.ssid),
                    lcutype: Some(lcu.lcutype),
                },
            );
        }
        for vol in self.record.volumes.values() {
            let view = out.entry(vol.id.lss()).or_insert(LssView {
                id: vol.id.lss(),
                stgtype: vol.stgtype(),
                confgvols: 0,
                ssid: None,
                lcutype: None,
            });
            view.confgvols += 1;
        }
        out.into_values().collect()
    }
}

pub(super) fn stg_name(t: StorageType) -> &'static str {
    match t {
        StorageType::Fb => "FB",
        StorageType::Ckd => "CKD",
    }
}
