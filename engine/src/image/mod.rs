//! Storage images at run time: the catalog record, the open volumes and device pools.
//!
//! Every change follows one order so a crash leaves nothing half made that recovery cannot
//! see: create resources (backing files), then commit the catalog; to remove, commit the
//! catalog first, then delete resources. [`Image::open`] deletes backing files the catalog
//! does not name (left by a crash between the two steps). The catalog is the truth.

pub mod catalog;
pub mod flash;
pub mod hosts;
mod pools;
pub mod pprc;
pub mod record;
pub mod sessions;
mod volumes;

use crate::control::{ImageView, IoPortView};
use crate::error::{Error, ErrorKind, Result};
use crate::flash::ImageFlash;
use crate::id::{ImageId, PoolId, VolumeId};
use crate::io::IoEngine;
use crate::volume::Volume;
use crate::volume::backing::DeviceHandle;
use record::{ImageRecord, PoolLocation, PoolRecord, StorageType};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of volume backing files flashtrack creates (and only those are ever deleted).
pub const VOLUME_FILE_SUFFIX: &str = ".vol";

/// The I/O ports every image has.
pub const IO_PORTS: [&str; 4] = ["I0000", "I0001", "I0002", "I0003"];

#[derive(Debug)]
pub struct Image {
    record: ImageRecord,
    dir: PathBuf,
    io: Arc<dyn IoEngine>,
    volumes: BTreeMap<VolumeId, Arc<Volume>>,
    devices: BTreeMap<PoolId, Arc<DeviceHandle>>,
    flash: Arc<ImageFlash>,
    /// Sessions through host connections (so a change of access can end them).
    host_sessions: sessions::HostSessions,
}

impl Image {
    /// Make a new image directory under `home` with default pools P0/P1 (fb) and P2/P3 (ckd).
    /// Built in a hidden temporary directory and renamed into place, so a crash never leaves a
    /// half-made image (recovery removes the temporary).
    pub fn create(home: &Path, id: &ImageId, io: Arc<dyn IoEngine>, now: i64, boot: Option<String>) -> Result<Image> {
        let dir = home.join(id.to_string());
        if dir.exists() {
            return Err(Error::new(ErrorKind::ImageExists, id, "storage image already exists"));
        }
        let tmp = home.join(format!(".{id}.tmp"));
        let io_err = |p: &Path, e: std::io::Error| Error::io(p.display(), &e);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        fs::create_dir_all(tmp.join("pools")).map_err(|e| io_err(&tmp, e))?;
        let mut pools = BTreeMap::new();
        for (n, (stgtype, name)) in [
            (StorageType::Fb, "fb_0"),
            (StorageType::Fb, "fb_1"),
            (StorageType::Ckd, "ckd_0"),
            (StorageType::Ckd, "ckd_1"),
        ]
        .into_iter()
        .enumerate()
        {
            let pid = PoolId(n as u16);
            let pdir = tmp.join("pools").join(pid.to_string());
            fs::create_dir(&pdir).map_err(|e| io_err(&pdir, e))?;
            // Relative to the image directory, so a home can be moved or copied.
            let path = PathBuf::from("pools").join(pid.to_string());
            let location = PoolLocation::Directory { path, created: true };
            pools.insert(pid, PoolRecord { id: pid, name: name.into(), rankgrp: pid.rankgrp(), stgtype, location });
        }
        let record = ImageRecord {
            id: id.clone(),
            name: format!("flashtrack_{}", id.serial),
            created: now,
            pools,
            lcus: BTreeMap::new(),
            volumes: BTreeMap::new(),
            flash: Vec::new(),
            volgrps: BTreeMap::new(),
            hosts: BTreeMap::new(),
            pprc_paths: Vec::new(),
            pprc_pairs: Vec::new(),
        };
        catalog::store(&tmp, &record)?;
        fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        catalog::sync_dir(home)?;
        let flash: Arc<ImageFlash> = Arc::default();
        flash.set_store(crate::flash::persist::FlashStore::new(&dir, io.clone(), boot)?);
        Ok(Image {
            record,
            dir,
            io,
            volumes: BTreeMap::new(),
            devices: BTreeMap::new(),
            flash,
            host_sessions: Default::default(),
        })
    }

    /// Open an image directory: load the catalog, open device pools and volumes, delete
    /// orphaned backing files.
    pub fn open(dir: &Path, io: Arc<dyn IoEngine>, boot: Option<String>) -> Result<Image> {
        let record = catalog::load(dir)?;
        let mut image = Image {
            record,
            dir: dir.to_path_buf(),
            io,
            volumes: BTreeMap::new(),
            devices: BTreeMap::new(),
            flash: Arc::default(),
            host_sessions: Default::default(),
        };
        for pool in image.record.pools.values() {
            if let PoolLocation::Device { path } = &pool.location {
                let dev = DeviceHandle::open(path)?;
                image.devices.insert(pool.id, Arc::new(dev));
            }
        }
        image.remove_orphans();
        let ids: Vec<VolumeId> = image.record.volumes.keys().copied().collect();
        for id in ids {
            let vol = image.open_volume(&image.record.volumes[&id])?;
            image.volumes.insert(id, vol);
        }
        image.flash.set_store(crate::flash::persist::FlashStore::new(dir, image.io.clone(), boot)?);
        image.restore_flash()?;
        Ok(image)
    }

    pub fn id(&self) -> &ImageId {
        &self.record.id
    }

    pub fn record(&self) -> &ImageRecord {
        &self.record
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn volume(&self, id: VolumeId) -> Option<&Arc<Volume>> {
        self.volumes.get(&id)
    }

    /// The image's FlashCopy side (the host path goes through its intercept).
    pub fn flash(&self) -> &Arc<ImageFlash> {
        &self.flash
    }

    pub fn volumes(&self) -> impl Iterator<Item = &Arc<Volume>> {
        self.volumes.values()
    }

    /// A catalog path: relative ones are inside the image directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() { self.dir.join(p) } else { p.to_path_buf() }
    }

    /// Persist `next` as the catalog, then adopt it: nothing changes in memory unless the
    /// catalog reached the disk.
    fn commit(&mut self, next: ImageRecord) -> Result<()> {
        catalog::store(&self.dir, &next)?;
        self.record = next;
        Ok(())
    }

    /// Delete `*.vol` files named after this image that the catalog does not know: made by
    /// a create that crashed before its commit, or left by a remove that crashed after it.
    /// Only in pool directories flashtrack made inside the image: a user's directory may be
    /// shared with another home holding an image of the same ID, so nothing there is ever
    /// deleted on a guess (such files are logged instead).
    fn remove_orphans(&self) {
        let prefix = format!("{}_", self.record.id);
        let known: std::collections::HashSet<PathBuf> = self
            .record
            .volumes
            .values()
            .filter_map(|v| match &v.backing {
                record::BackingRecord::File { path } => Some(self.resolve(path)),
                record::BackingRecord::Device { .. } => None,
            })
            .collect();
        for pool in self.record.pools.values() {
            let PoolLocation::Directory { path, created } = &pool.location else { continue };
            let Ok(entries) = fs::read_dir(self.resolve(path)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = name.strip_prefix(&prefix).and_then(|s| s.strip_suffix(VOLUME_FILE_SUFFIX)).is_some();
                if !ours || known.contains(&entry.path()) {
                    continue;
                }
                if *created {
                    tracing::warn!("removing orphaned volume file {}", entry.path().display());
                    let _ = fs::remove_file(entry.path());
                } else {
                    tracing::warn!(
                        "{} looks like a volume file of this image that the catalog does not know; left alone",
                        entry.path().display()
                    );
                }
            }
        }
    }

    pub fn view(&self) -> ImageView {
        let id = &self.record.id;
        ImageView {
            id: id.clone(),
            machine: id.machine,
            name: self.record.name.clone(),
            unit: id.unit(),
            model: id.machine.model().to_string(),
            wwnn: id.wwnn(),
            state: "Online".into(),
            created: self.record.created,
            volumes: self.record.volumes.len(),
        }
    }

    pub fn io_ports(&self) -> Vec<IoPortView> {
        let wwnn = self.record.id.wwnn();
        IO_PORTS
            .iter()
            .enumerate()
            .map(|(n, port)| IoPortView {
                id: port.to_string(),
                // Port WWPNs share the node's prefix and differ in the last digits, as on a DS8000.
                wwpn: format!("{}{:02X}", &wwnn[..14], n),
                state: "Communication established".into(),
            })
            .collect()
    }

    /// Why the image cannot be removed now, if anything: volumes, or files in its directory
    /// that flashtrack did not make (never deleted on a guess).
    pub fn removal_blocker(&self) -> Option<Error> {
        if !self.record.volumes.is_empty() {
            return Some(Error::new(ErrorKind::ImageHasVolumes, &self.record.id, "storage image still has volumes"));
        }
        let ours_pools: Vec<PathBuf> = self
            .record
            .pools
            .values()
            .filter_map(|p| match &p.location {
                PoolLocation::Directory { path, created: true } => Some(self.resolve(path)),
                _ => None,
            })
            .collect();
        let stray = |p: &Path| {
            Error::new(
                ErrorKind::InvalidArgument,
                &self.record.id,
                format!("{} was not made by flashtrack; move it away first", p.display()),
            )
        };
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.as_str() {
                catalog::CATALOG_FILE | "flash" => {}
                "pools" => {
                    for pool in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                        if !ours_pools.contains(&pool.path()) {
                            return Some(stray(&pool.path()));
                        }
                        if let Some(f) = fs::read_dir(pool.path()).into_iter().flatten().flatten().next() {
                            return Some(stray(&f.path()));
                        }
                    }
                }
                _ => return Some(stray(&entry.path())),
            }
        }
        None
    }

    /// Remove the image's own files: the directory is first renamed to a hidden
    /// `.ID.removing` (durably), so a crash part way leaves something recovery finishes
    /// removing, never an image without its catalog.
    pub fn destroy(self, home: &Path) -> Result<()> {
        if let Some(e) = self.removal_blocker() {
            return Err(e);
        }
        let doomed = home.join(format!(".{}.removing", self.record.id));
        fs::rename(&self.dir, &doomed).map_err(|e| Error::io(self.dir.display(), &e))?;
        catalog::sync_dir(home)?;
        fs::remove_dir_all(&doomed).map_err(|e| Error::io(doomed.display(), &e))
    }
}
