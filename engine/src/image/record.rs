//! Catalog records: the persistent description of a storage image, its pools, LCUs and
//! volumes. Plain serde data; the catalog module makes them crash safe.

use crate::flash::relationship::FlashRecord;
use crate::geometry::{CapType, Geometry};
use crate::id::{HostId, ImageId, LssId, PoolId, VolGrpId, VolumeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Fixed block (open systems) or count-key-data (System z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageType {
    Fb,
    Ckd,
}

/// Storage allocation method: `standard` is fully allocated (fallocate), `ese` stays sparse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sam {
    Standard,
    Ese,
}

/// LCU emulation type (`mklcu -lcutype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LcuType {
    T3990_3,
    T3990Tpf,
    T3990_6,
    Bs2000,
}

/// Where a pool's volumes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolLocation {
    /// A directory (relative paths are inside the image directory): one sparse file per volume. `created` = flashtrack made the directory
    /// (and may remove it with the pool).
    Directory { path: PathBuf, created: bool },
    /// A block device, opened O_EXCL by flashd; volumes are contiguous regions of it.
    Device { path: PathBuf },
}

impl PoolLocation {
    pub fn path(&self) -> &PathBuf {
        match self {
            PoolLocation::Directory { path, .. } | PoolLocation::Device { path } => path,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub id: PoolId,
    pub name: String,
    pub rankgrp: u8,
    pub stgtype: StorageType,
    pub location: PoolLocation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LcuRecord {
    pub id: LssId,
    /// Subsystem ID, 0x0001-0xFFFF.
    pub ssid: u16,
    pub lcutype: LcuType,
}

/// Where a volume's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackingRecord {
    /// A file flashtrack created in a directory pool (relative to the image directory when the pool is).
    File { path: PathBuf },
    /// A region `[offset, offset + geometry.size_bytes())` of a device pool.
    Device { path: PathBuf, offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub id: VolumeId,
    pub name: String,
    pub pool: PoolId,
    pub geometry: Geometry,
    /// How the FB capacity was given; None for CKD.
    pub captype: Option<CapType>,
    pub sam: Sam,
    pub backing: BackingRecord,
    /// Unix seconds.
    pub created: i64,
}

impl VolumeRecord {
    pub fn stgtype(&self) -> StorageType {
        match self.geometry {
            Geometry::Fb { .. } => StorageType::Fb,
            Geometry::Ckd { .. } => StorageType::Ckd,
        }
    }
}

/// Volume group type (`mkvolgrp -type`). flashtrack's only host attachment is NBD, so the
/// type is stored and shown; the map types hold at most 256 volumes (LUNs 00-FF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolGrpType {
    ScsiMask,
    ScsiMap256,
    Os400Mask,
    Os400Map256,
}

impl VolGrpType {
    /// Most volumes a group of this type holds (`None`: no limit but the image's).
    pub fn max_volumes(self) -> Option<usize> {
        match self {
            VolGrpType::ScsiMap256 | VolGrpType::Os400Map256 => Some(256),
            VolGrpType::ScsiMask | VolGrpType::Os400Mask => None,
        }
    }
}

/// A volume group: the volumes the host connections assigned to it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolGrpRecord {
    pub id: VolGrpId,
    pub name: String,
    pub vgtype: VolGrpType,
    /// Members in ascending order, each once.
    pub volumes: Vec<VolumeId>,
}

/// How a host connection's host finds its LUNs (`-addrdiscovery`). With LUN polling a host
/// probes LUNs 0-255 one by one, so it reaches at most the first 256 volumes of its group
/// (by ascending volume ID, the group's LUN order); REPORT LUNS has no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddrDiscovery {
    #[default]
    ReportLun,
    LunPolling,
}

impl AddrDiscovery {
    /// LUNs LUN polling reaches (00-FF).
    pub const POLLED_LUNS: usize = 256;

    /// Most volumes of its group a host reaches (`None`: all of them).
    pub fn max_luns(self) -> Option<usize> {
        match self {
            AddrDiscovery::ReportLun => None,
            AddrDiscovery::LunPolling => Some(Self::POLLED_LUNS),
        }
    }
}

/// A host connection: a host (named by its WWPN) and its own NBD endpoint, through which it
/// reaches the volumes of its volume group and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: HostId,
    pub name: String,
    /// 16 upper-case hex digits, unique on the image.
    pub wwpn: String,
    /// As the cli names it (`pSeries`, `VMware`, ...); the engine only stores it.
    pub hosttype: String,
    pub portgrp: u8,
    pub volgrp: Option<VolGrpId>,
    /// I/O ports the host may log in through; empty = all.
    pub ioports: Vec<String>,
    /// Loopback TCP port of the endpoint (extension `-nbdport`); None = a Unix socket in the
    /// site home (see `image::hosts::socket_path`).
    pub nbdport: Option<u16>,
    /// Catalogs written before `-addrdiscovery` existed load as REPORT LUNS.
    #[serde(default)]
    pub addrdiscovery: AddrDiscovery,
}

/// One storage image: everything its catalog file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: ImageId,
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    pub pools: BTreeMap<PoolId, PoolRecord>,
    pub lcus: BTreeMap<LssId, LcuRecord>,
    pub volumes: BTreeMap<VolumeId, VolumeRecord>,
    /// FlashCopy relationships (their bitmaps are checkpointed apart). Absent in catalogs
    /// written before FlashCopy existed: same format, empty list.
    #[serde(default)]
    pub flash: Vec<FlashRecord>,
    /// Volume groups and host connections. Absent in catalogs written before host
    /// attachment: same format (version 1), none of either.
    #[serde(default)]
    pub volgrps: BTreeMap<VolGrpId, VolGrpRecord>,
    #[serde(default)]
    pub hosts: BTreeMap<HostId, HostRecord>,
    /// PPRC paths from this image's LSSs (`mkpprcpath`), ordered by source LSS, remote image
    /// and target LSS. Absent in catalogs written before PPRC paths: same format (version 1),
    /// none; not written while empty, so such catalogs keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pprc_paths: Vec<PprcPathRecord>,
    /// PPRC pairs a volume of this image takes part in (either end), ordered by local
    /// volume. Absent before PPRC pairs: same format, none; not written while empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pprc_pairs: Vec<PprcPairRecord>,
}

/// The logical paths from a source LSS of this image to a target LSS of a remote image
/// (`mkpprcpath`): one to eight I/O port pairs. A new `mkpprcpath` for the same LSS pair
/// replaces the port set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PprcPathRecord {
    pub src_lss: LssId,
    pub remote: ImageId,
    /// 16 upper-case hex digits: the remote image's WWNN when the path was made.
    pub remote_wwnn: String,
    pub tgt_lss: LssId,
    /// `-consistgrp`: a suspending primary of this LSS pair holds host writes (later, with pairs).
    pub consistgrp: bool,
    /// (local port, remote port), `I0000`..`I0003`, in the order given, each pair once.
    pub ports: Vec<(String, String)>,
}

impl PprcPathRecord {
    /// Whether this is the path of the LSS pair `src`:`tgt` to `remote`.
    pub fn is(&self, src: LssId, remote: &ImageId, tgt: LssId) -> bool {
        self.src_lss == src && self.remote == *remote && self.tgt_lss == tgt
    }
}

impl ImageRecord {
    /// The storage type an address group holds, decided by its first volume or LCU.
    pub fn addrgrp_type(&self, addrgrp: u8) -> Option<StorageType> {
        if self.lcus.keys().any(|l| l.addrgrp() == addrgrp) {
            return Some(StorageType::Ckd);
        }
        self.volumes.values().find(|v| v.id.lss().addrgrp() == addrgrp).map(|v| v.stgtype())
    }

    /// The storage type of an LSS that exists (it has an LCU or volumes), else `None`.
    pub fn lss_type(&self, lss: LssId) -> Option<StorageType> {
        if self.lcus.contains_key(&lss) {
            return Some(StorageType::Ckd);
        }
        self.volumes.values().find(|v| v.id.lss() == lss).map(|v| v.stgtype())
    }

    /// An LSS's subsystem ID: its LCU's, or `FFxx` for an FB LSS (the DS8000's default).
    pub fn lss_ssid(&self, lss: LssId) -> u16 {
        self.lcus.get(&lss).map(|l| l.ssid).unwrap_or(0xFF00 | u16::from(lss.0))
    }

    pub fn volumes_in_pool(&self, pool: PoolId) -> impl Iterator<Item = &VolumeRecord> {
        self.volumes.values().filter(move |v| v.pool == pool)
    }
}

/// PPRC pair type (`mkpprc -type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PprcType {
    /// `mmir`: synchronous; a host write completes when the secondary has it.
    MetroMirror,
    /// `gcp`: changes are recorded and sent in the background.
    GlobalCopy,
}

/// Which end of a pair a catalog's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PprcRole {
    Primary,
    Secondary,
}

/// A pair's phase; a secondary shows it with a `Target` prefix (`Target Full Duplex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PprcPhase {
    /// Copying out-of-sync tracks (initial copy, resume, failback; always for Global Copy).
    CopyPending,
    /// Metro Mirror with nothing out of sync: every host write reaches both sides.
    FullDuplex,
    Suspended,
}

/// Why a pair is suspended (`lspprc` Reason column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuspendReason {
    /// `pausepprc` at the primary, or `failoverpprc` (the new primary).
    HostSource,
    /// `pausepprc -at tgt`.
    HostTarget,
    /// `freezepprc`.
    Freeze,
    /// A mirrored write or track failed at the secondary (it refused or failed it).
    UpdateTarget,
    /// The link went down or gave no answer (outage, dead peer).
    InternalSource,
    /// The secondary went simplex (its pair was removed there).
    SimplexTarget,
    /// flashd stopped or crashed; the pair came up suspended.
    PowerSource,
}

/// A PPRC pair as one end's catalog keeps it. The pair's ID is always `source:target`
/// (primary volume : secondary volume), whichever end shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PprcPairRecord {
    /// This image's volume.
    pub local: VolumeId,
    pub remote: ImageId,
    /// 16 upper-case hex digits: the remote image's WWNN.
    pub remote_wwnn: String,
    /// The other end's volume.
    pub remote_volume: VolumeId,
    pub role: PprcRole,
    pub kind: PprcType,
    pub phase: PprcPhase,
    pub reason: Option<SuspendReason>,
    /// Unix seconds of the suspension, while suspended.
    pub suspended_at: Option<i64>,
    /// `-tgtread`: hosts may read the secondary.
    pub tgtread: bool,
    /// `-critmode`: a write that cannot be mirrored fails instead of suspending the pair.
    pub critmode: bool,
    /// Global Copy: the first pass over the out-of-sync set finished.
    pub first_pass: bool,
    /// Unix seconds.
    pub created: i64,
}

impl PprcPairRecord {
    /// (source, target) of the pair.
    pub fn ids(&self) -> (VolumeId, VolumeId) {
        match self.role {
            PprcRole::Primary => (self.local, self.remote_volume),
            PprcRole::Secondary => (self.remote_volume, self.local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_connection_from_before_addrdiscovery_loads_as_report_luns() {
        let old = r#"{"id":0,"name":"h","wwpn":"10000090FAF6D5A4","hosttype":"pSeries","portgrp":0,
            "volgrp":null,"ioports":[],"nbdport":null}"#;
        let h: HostRecord = serde_json::from_str(old).unwrap();
        assert_eq!(h.addrdiscovery, AddrDiscovery::ReportLun);
        assert_eq!(AddrDiscovery::LunPolling.max_luns(), Some(256));
    }
}
