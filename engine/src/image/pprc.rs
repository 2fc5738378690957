//! PPRC paths of an image (`mkpprcpath`, `rmpprcpath`): the rules and the catalog records.
//! The links the paths stand on are the site's (`crate::mirror`); this file only decides
//! what a path is and keeps it in the source image's catalog.
//!
//! Rules, each with its own error kind, checked before anything changes:
//! * the remote image is another image of this site (`PprcPathToSelf`, `PprcRemoteNotFound`)
//!   or one listed in `HOME/peers` (another flashd, `crate::mirror`), and `-remotewwnn` is its
//!   WWNN (`PprcWwnnMismatch`);
//! * 1 to 8 port pairs, each port an I/O port of its image, I0000-I0003 (`PprcPortInvalid`);
//! * the source LSS exists on this image and the target LSS on the remote one: an LSS exists
//!   when it has an LCU or volumes, as `lslss` shows (`LssNotFound`), and both hold the same
//!   volume type (`PprcLssTypeMismatch`); a peer's target LSS is not checked (it lives in
//!   the other flashd; nothing asks it in band yet);
//! * a new path for an existing LSS pair replaces its port set (as the DS8000 does);
//! * removing a path that does not exist is refused (`PprcPathNotFound`);
//! * removing a path that still carries pairs is refused without `-force` (`PprcPathInUse`,
//!   dscli-spec.md §3.3 [R]). A path carries the pairs whose primary is a volume of its source
//!   LSS on this image and whose secondary is in its target LSS of its remote image (the path
//!   a primary uses, `crate::mirror::hub::Hub::ports`), whatever their state: a suspended
//!   pair resumes over it. With `-force` the path goes and its pairs suspend when they next
//!   need it (a Metro Mirror write, a copy).

use super::{IO_PORTS, Image};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ImageId, LssId, VolumeId};
use crate::image::record::{PprcPairRecord, PprcPathRecord, PprcRole, StorageType};

/// Most port pairs of one path (DS8000: one to eight FCP paths per LSS pair).
pub const MAX_PORT_PAIRS: usize = 8;

/// What the source side needs to know of the remote image.
#[derive(Debug, Clone)]
pub struct RemoteFacts {
    pub id: ImageId,
    pub wwnn: String,
    /// The target LSS's type (`Some(None)` when it does not exist), or `None` when the remote
    /// image is another site's (a peer): its LSS cannot be checked from here.
    pub tgt_type: Option<Option<StorageType>>,
}

/// A port as the catalog keeps it (`I0001`), if it is one of every image's I/O ports.
fn port(p: &str, image: &ImageId) -> Result<String> {
    let up = p.to_ascii_uppercase();
    if IO_PORTS.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(Error::new(ErrorKind::PprcPortInvalid, p, format!("not an I/O port of {image} (I0000-I0003)")))
    }
}

impl Image {
    /// `mkpprcpath`: check every rule, then commit the path (replacing the port set of an
    /// existing one). Returns the path as `SS:TT`.
    pub fn create_pprc_path(
        &mut self,
        remote: &RemoteFacts,
        remote_wwnn: &str,
        src_lss: LssId,
        tgt_lss: LssId,
        consistgrp: bool,
        ports: &[(String, String)],
    ) -> Result<String> {
        let name = format!("{src_lss}:{tgt_lss}");
        if remote.id == *self.id() {
            return Err(Error::new(ErrorKind::PprcPathToSelf, &remote.id, "a path joins two storage images"));
        }
        if !remote_wwnn.eq_ignore_ascii_case(&remote.wwnn) {
            return Err(Error::new(
                ErrorKind::PprcWwnnMismatch,
                remote_wwnn,
                format!("{} has WWNN {}", remote.id, remote.wwnn),
            ));
        }
        if ports.is_empty() || ports.len() > MAX_PORT_PAIRS {
            return Err(Error::new(
                ErrorKind::PprcPortInvalid,
                &name,
                format!("a path has 1 to {MAX_PORT_PAIRS} port pairs, got {}", ports.len()),
            ));
        }
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(ports.len());
        for (a, b) in ports {
            let pair = (port(a, self.id())?, port(b, &remote.id)?);
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
        let src_type = self.record.lss_type(src_lss).ok_or_else(|| {
            Error::new(ErrorKind::LssNotFound, format!("{}/{src_lss}", self.id()), "no volumes and no LCU")
        })?;
        let tgt_type = match remote.tgt_type {
            Some(t) => Some(t.ok_or_else(|| {
                Error::new(ErrorKind::LssNotFound, format!("{}/{tgt_lss}", remote.id), "no volumes and no LCU")
            })?),
            None => None,
        };
        if let Some(tgt_type) = tgt_type
            && src_type != tgt_type
        {
            return Err(Error::new(
                ErrorKind::PprcLssTypeMismatch,
                &name,
                format!("{src_lss} is {src_type:?}, {tgt_lss} is {tgt_type:?}"),
            ));
        }
        let rec = PprcPathRecord {
            src_lss,
            remote: remote.id.clone(),
            remote_wwnn: remote.wwnn.to_ascii_uppercase(),
            tgt_lss,
            consistgrp,
            ports: pairs,
        };
        let mut next = self.record.clone();
        next.pprc_paths.retain(|p| !p.is(src_lss, &remote.id, tgt_lss));
        next.pprc_paths.push(rec);
        next.pprc_paths.sort_by(|a, b| (a.src_lss, &a.remote, a.tgt_lss).cmp(&(b.src_lss, &b.remote, b.tgt_lss)));
        self.commit(next)?;
        Ok(name)
    }

    /// `rmpprcpath`: the path `src_lss`:`tgt_lss` to `remote` must exist (and have
    /// `remote_wwnn`, when given) and, unless `force`, carry no pairs. The remote image need
    /// not exist any more.
    pub fn remove_pprc_path(
        &mut self,
        remote: &ImageId,
        remote_wwnn: Option<&str>,
        src_lss: LssId,
        tgt_lss: LssId,
        force: bool,
    ) -> Result<String> {
        let name = format!("{src_lss}:{tgt_lss}");
        let path = self
            .record
            .pprc_paths
            .iter()
            .find(|p| p.is(src_lss, remote, tgt_lss))
            .ok_or_else(|| Error::new(ErrorKind::PprcPathNotFound, &name, format!("no path to {remote}")))?;
        if let Some(w) = remote_wwnn
            && !w.eq_ignore_ascii_case(&path.remote_wwnn)
        {
            return Err(Error::new(ErrorKind::PprcWwnnMismatch, w, format!("the path's WWNN is {}", path.remote_wwnn)));
        }
        let carried = self.pprc_pairs_on(src_lss, remote, tgt_lss);
        if !force && !carried.is_empty() {
            let names: Vec<String> = carried
                .iter()
                .map(|p| {
                    let (a, b) = p.ids();
                    format!("{a}:{b}")
                })
                .collect();
            return Err(Error::new(ErrorKind::PprcPathInUse, &name, format!("pairs {}", names.join(" "))));
        }
        let mut next = self.record.clone();
        next.pprc_paths.retain(|p| !p.is(src_lss, remote, tgt_lss));
        self.commit(next)?;
        Ok(name)
    }

    /// The image's paths.
    pub fn pprc_paths(&self) -> &[PprcPathRecord] {
        &self.record.pprc_paths
    }
}

/// PPRC pair records (the pairs' rules and run time are `crate::mirror`'s).
impl Image {
    /// The pair record of a volume of this image, if it is in one.
    pub fn pprc_pair(&self, local: VolumeId) -> Option<&PprcPairRecord> {
        self.record.pprc_pairs.iter().find(|p| p.local == local)
    }

    pub fn in_pprc_pair(&self, local: VolumeId) -> bool {
        self.pprc_pair(local).is_some()
    }

    pub fn pprc_pairs(&self) -> &[PprcPairRecord] {
        &self.record.pprc_pairs
    }

    /// Add or replace the pair record of `rec.local`, durably.
    pub fn put_pprc_pair(&mut self, rec: PprcPairRecord) -> Result<()> {
        let mut next = self.record.clone();
        next.pprc_pairs.retain(|p| p.local != rec.local);
        next.pprc_pairs.push(rec);
        next.pprc_pairs.sort_by_key(|p| p.local);
        self.commit(next)
    }

    /// Remove the pair record of `local`, durably (nothing if it has none).
    pub fn remove_pprc_pair(&mut self, local: VolumeId) -> Result<()> {
        if !self.in_pprc_pair(local) {
            return Ok(());
        }
        let mut next = self.record.clone();
        next.pprc_pairs.retain(|p| p.local != local);
        self.commit(next)
    }

    /// The pairs a path `src_lss`:`tgt_lss` to `remote` carries (or would): this image's
    /// primaries in `src_lss` whose secondaries are in `tgt_lss` of `remote`.
    pub fn pprc_pairs_on(&self, src_lss: LssId, remote: &ImageId, tgt_lss: LssId) -> Vec<&PprcPairRecord> {
        self.record
            .pprc_pairs
            .iter()
            .filter(|p| {
                p.role == PprcRole::Primary
                    && p.local.lss() == src_lss
                    && p.remote == *remote
                    && p.remote_volume.lss() == tgt_lss
            })
            .collect()
    }

    /// The path from `src_lss` to `tgt_lss` of `remote`, if there is one.
    pub fn pprc_path(&self, src_lss: LssId, remote: &ImageId, tgt_lss: LssId) -> Option<&PprcPathRecord> {
        self.record.pprc_paths.iter().find(|p| p.is(src_lss, remote, tgt_lss))
    }
}
