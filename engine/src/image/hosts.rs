//! Volume groups and host connections of an image (DS8000 host attachment): the rules of
//! `mkvolgrp`/`chvolgrp`/`rmvolgrp` and `mkhostconnect`/`chhostconnect`/`rmhostconnect`,
//! and which host reaches which volume.
//!
//! A host connection is an NBD endpoint of its own (a Unix socket in the site home, or a
//! loopback TCP port with the `-nbdport` extension) that the daemon serves; through it a
//! host lists and opens only the volumes of the connection's volume group. Every change is
//! committed to the catalog first; then every session that the new catalog no longer
//! allows is revoked (`sessions.rs`: NBD_ESHUTDOWN, then the connection closes).
//!
//! Decisions where the DS CLI reference is silent (dscli-spec.md marks these [R]):
//! * IDs are the lowest free ones: `V0`, `V1`, ... and `0000`, `0001`, ...;
//! * a volume group holds FB and CKD volumes alike (NBD exports both; a DS8000 attaches CKD
//!   over FICON without groups); the `map256` types hold at most 256 volumes;
//! * a volume may be in several groups; `chvolgrp -action add` of a member and `remove` of
//!   a non-member are refused (nothing changes), `replace` sets the members;
//! * removing a group leaves its host connections without a group (they reach nothing);
//! * a WWPN is unique among the image's host connections, and so is an `-nbdport`;
//! * `-addrdiscovery lunpolling` limits a host to the first 256 existing volumes of its
//!   group (LUNs 00-FF in ascending volume ID order): a 257th is not listed and cannot be
//!   opened, and it comes into reach when a volume before it goes.

use super::Image;
use super::sessions::HostSessions;
use crate::control::{HostChange, HostSpec, HostView, ItemOutcome, Reply, Request, VolGrpAction};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{HostId, ImageId, VolGrpId, VolumeId};
use crate::image::record::{HostRecord, ImageRecord, VolGrpRecord, VolGrpType};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Longest volume group or host connection name.
pub const MAX_NAME: usize = 16;
/// Directory of the host connections' Unix sockets inside the site home.
pub const HOSTS_DIR: &str = "hosts";

/// Where a host connection's NBD endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// The Unix socket of host connection `host` of `image`: `HOME/hosts/<image>-<host>.sock`.
pub fn socket_path(home: &Path, image: &ImageId, host: HostId) -> PathBuf {
    home.join(HOSTS_DIR).join(format!("{image}-{host}.sock"))
}

fn check_name(object: impl std::fmt::Display, name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(Error::new(ErrorKind::InvalidArgument, object, format!("a name has 1 to {MAX_NAME} characters")));
    }
    Ok(())
}

fn not_found_volgrp(g: VolGrpId) -> Error {
    Error::new(ErrorKind::VolGrpNotFound, g, "no such volume group")
}

fn not_found_host(h: HostId) -> Error {
    Error::new(ErrorKind::HostNotFound, h, "no such host connection")
}

impl Image {
    /// Serve a volume group or host connection request.
    pub fn host_request(&mut self, req: Request) -> Result<Reply> {
        let one = |object: String| Reply::Items(vec![ItemOutcome { object, result: Ok(()) }]);
        Ok(match req {
            Request::VolGrpCreate { name, vgtype, volumes, .. } => {
                one(self.create_volgrp(&name, vgtype, &volumes)?.to_string())
            }
            Request::VolGrpList { .. } => Reply::VolGrps(self.record.volgrps.values().cloned().collect()),
            Request::VolGrpChange { volgrp, name, members, .. } => {
                self.change_volgrp(volgrp, name, members)?;
                one(volgrp.to_string())
            }
            Request::VolGrpRemove { volgrp, .. } => {
                self.remove_volgrp(volgrp)?;
                one(volgrp.to_string())
            }
            Request::HostCreate { spec, .. } => one(self.create_host(spec)?.to_string()),
            Request::HostList { .. } => Reply::Hosts(self.host_views()),
            Request::HostChange { host, change, .. } => {
                self.change_host(host, change)?;
                one(host.to_string())
            }
            Request::HostRemove { host, .. } => {
                self.remove_host(host)?;
                one(host.to_string())
            }
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    self.id(),
                    format!("not a host attachment request: {other:?}"),
                ));
            }
        })
    }

    /// The live sessions through this image's host connections.
    pub fn host_sessions(&self) -> &HostSessions {
        &self.host_sessions
    }

    /// Whether host connection `host` may reach `volume` now.
    pub fn reaches(&self, host: HostId, volume: VolumeId) -> bool {
        reaches(&self.record, host, volume)
    }

    /// The volumes `host` reaches, ascending.
    pub fn host_volumes(&self, host: HostId) -> Vec<VolumeId> {
        host_volumes(&self.record, host)
    }

    /// Where host connection `rec` listens (the site home is the image directory's parent).
    pub fn endpoint(&self, rec: &HostRecord) -> Endpoint {
        match rec.nbdport {
            Some(port) => Endpoint::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            None => Endpoint::Unix(socket_path(self.dir.parent().unwrap_or(&self.dir), self.id(), rec.id)),
        }
    }

    pub fn host_views(&self) -> Vec<HostView> {
        self.record
            .hosts
            .values()
            .map(|h| HostView {
                record: h.clone(),
                endpoint: self.endpoint(h),
                sessions: self.host_sessions.of_host(h.id),
            })
            .collect()
    }

    /// Commit `next`, then end every session it no longer allows.
    fn commit_access(&mut self, next: ImageRecord) -> Result<()> {
        self.commit(next)?;
        let record = &self.record;
        self.host_sessions.revoke_where(|h, v| !reaches(record, h, v));
        Ok(())
    }

    /// The volumes, each existing, ascending, once.
    fn members(&self, volumes: &[VolumeId]) -> Result<Vec<VolumeId>> {
        if let Some(v) = volumes.iter().find(|v| !self.record.volumes.contains_key(v)) {
            return Err(Error::new(ErrorKind::VolumeNotFound, v, "no such volume"));
        }
        let mut out = volumes.to_vec();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn check_size(g: &VolGrpRecord) -> Result<()> {
        match g.vgtype.max_volumes() {
            Some(max) if g.volumes.len() > max => Err(Error::new(
                ErrorKind::VolGrpFull,
                g.id,
                format!("a volume group of this type holds at most {max} volumes"),
            )),
            _ => Ok(()),
        }
    }

    fn create_volgrp(&mut self, name: &str, vgtype: VolGrpType, volumes: &[VolumeId]) -> Result<VolGrpId> {
        let id = (0..).map(VolGrpId).find(|g| !self.record.volgrps.contains_key(g)).unwrap_or(VolGrpId(0));
        check_name(id, name)?;
        let g = VolGrpRecord { id, name: name.to_string(), vgtype, volumes: self.members(volumes)? };
        Self::check_size(&g)?;
        let mut next = self.record.clone();
        next.volgrps.insert(id, g);
        self.commit(next)?;
        Ok(id)
    }

    fn change_volgrp(
        &mut self,
        id: VolGrpId,
        name: Option<String>,
        members: Option<(VolGrpAction, Vec<VolumeId>)>,
    ) -> Result<()> {
        let mut g = self.record.volgrps.get(&id).cloned().ok_or_else(|| not_found_volgrp(id))?;
        if let Some(n) = name {
            check_name(id, &n)?;
            g.name = n;
        }
        if let Some((action, volumes)) = members {
            let given = self.members(&volumes)?;
            match action {
                VolGrpAction::Add => {
                    if let Some(v) = given.iter().find(|v| g.volumes.contains(v)) {
                        return Err(Error::new(ErrorKind::VolumeInVolGrp, v, format!("already in {id}")));
                    }
                    g.volumes.extend(given);
                    g.volumes.sort_unstable();
                }
                VolGrpAction::Remove => {
                    if let Some(v) = given.iter().find(|v| !g.volumes.contains(v)) {
                        return Err(Error::new(ErrorKind::VolumeNotInVolGrp, v, format!("not in {id}")));
                    }
                    g.volumes.retain(|v| !given.contains(v));
                }
                VolGrpAction::Replace => g.volumes = given,
            }
        }
        Self::check_size(&g)?;
        let mut next = self.record.clone();
        next.volgrps.insert(id, g);
        self.commit_access(next)
    }

    fn remove_volgrp(&mut self, id: VolGrpId) -> Result<()> {
        if !self.record.volgrps.contains_key(&id) {
            return Err(not_found_volgrp(id));
        }
        let mut next = self.record.clone();
        next.volgrps.remove(&id);
        for h in next.hosts.values_mut().filter(|h| h.volgrp == Some(id)) {
            h.volgrp = None;
        }
        self.commit_access(next)
    }

    /// The rules a host connection must satisfy among the others of `next`.
    fn check_host(next: &ImageRecord, h: &HostRecord) -> Result<()> {
        check_name(h.id, &h.name)?;
        if h.wwpn.len() != 16 || !h.wwpn.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::new(ErrorKind::InvalidArgument, h.id, "a WWPN has 16 hex digits"));
        }
        if let Some(g) = h.volgrp
            && !next.volgrps.contains_key(&g)
        {
            return Err(not_found_volgrp(g));
        }
        if let Some(p) = h.ioports.iter().find(|p| !super::IO_PORTS.contains(&p.as_str())) {
            return Err(Error::new(ErrorKind::InvalidArgument, h.id, format!("no I/O port {p}")));
        }
        let others = || next.hosts.values().filter(|o| o.id != h.id);
        if let Some(o) = others().find(|o| o.wwpn == h.wwpn) {
            return Err(Error::new(ErrorKind::HostWwpnExists, h.id, format!("host connection {} has it", o.id)));
        }
        if let Some(port) = h.nbdport {
            if port == 0 {
                return Err(Error::new(ErrorKind::InvalidArgument, h.id, "NBD port 0"));
            }
            if let Some(o) = others().find(|o| o.nbdport == Some(port)) {
                return Err(Error::new(ErrorKind::HostPortInUse, h.id, format!("host connection {} has it", o.id)));
            }
        }
        Ok(())
    }

    fn create_host(&mut self, spec: HostSpec) -> Result<HostId> {
        let id = (0..=u16::MAX)
            .map(HostId)
            .find(|h| !self.record.hosts.contains_key(h))
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, self.id(), "every host connection ID is in use"))?;
        let mut ioports = spec.ioports;
        ioports.sort();
        ioports.dedup();
        let rec = HostRecord {
            id,
            name: spec.name,
            wwpn: spec.wwpn.to_ascii_uppercase(),
            hosttype: spec.hosttype,
            portgrp: spec.portgrp,
            volgrp: spec.volgrp,
            ioports,
            nbdport: spec.nbdport,
            addrdiscovery: spec.addrdiscovery,
        };
        let mut next = self.record.clone();
        // The ID does not exist until this succeeds: a refusal names the host by its name.
        Self::check_host(&next, &rec).map_err(|mut e| {
            if e.object == id.to_string() {
                e.object = rec.name.clone();
            }
            e
        })?;
        next.hosts.insert(id, rec);
        self.commit(next)?;
        Ok(id)
    }

    fn change_host(&mut self, id: HostId, c: HostChange) -> Result<()> {
        let mut h = self.record.hosts.get(&id).cloned().ok_or_else(|| not_found_host(id))?;
        if let Some(n) = c.name {
            h.name = n;
        }
        if let Some(w) = c.wwpn {
            h.wwpn = w.to_ascii_uppercase();
        }
        if let Some(t) = c.hosttype {
            h.hosttype = t;
        }
        if let Some(p) = c.portgrp {
            h.portgrp = p;
        }
        if let Some(g) = c.volgrp {
            h.volgrp = g.into_option();
        }
        if let Some(mut p) = c.ioports {
            p.sort();
            p.dedup();
            h.ioports = p;
        }
        if let Some(p) = c.nbdport {
            h.nbdport = p.into_option();
        }
        if let Some(a) = c.addrdiscovery {
            h.addrdiscovery = a;
        }
        let moved = self.record.hosts.get(&id).is_some_and(|old| old.nbdport != h.nbdport);
        let mut next = self.record.clone();
        Self::check_host(&next, &h)?;
        next.hosts.insert(id, h);
        self.commit_access(next)?;
        if moved {
            // The old endpoint stops: its sessions hear ESHUTDOWN first, then the close.
            self.host_sessions.revoke_where(|h, _| h == id);
        }
        Ok(())
    }

    fn remove_host(&mut self, id: HostId) -> Result<()> {
        if !self.record.hosts.contains_key(&id) {
            return Err(not_found_host(id));
        }
        let mut next = self.record.clone();
        next.hosts.remove(&id);
        self.commit_access(next)
    }
}

/// The volumes `host` reaches by `record`, ascending: its group's existing members, the
/// first 256 of them only when the host polls LUNs.
fn host_volumes(record: &ImageRecord, host: HostId) -> Vec<VolumeId> {
    let Some(h) = record.hosts.get(&host) else { return Vec::new() };
    let Some(g) = h.volgrp.and_then(|g| record.volgrps.get(&g)) else { return Vec::new() };
    let existing = g.volumes.iter().copied().filter(|v| record.volumes.contains_key(v));
    existing.take(h.addrdiscovery.max_luns().unwrap_or(usize::MAX)).collect()
}

/// Whether `host` reaches `volume` by `record` (open time and catalog changes only).
fn reaches(record: &ImageRecord, host: HostId, volume: VolumeId) -> bool {
    host_volumes(record, host).binary_search(&volume).is_ok()
}
