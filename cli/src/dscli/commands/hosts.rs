//! Host attachment: volume groups (`mkvolgrp`, `lsvolgrp`, `showvolgrp`, `chvolgrp`,
//! `rmvolgrp`) and host connections (`mkhostconnect`, `lshostconnect`, `showhostconnect`,
//! `chhostconnect`, `rmhostconnect`).
//!
//! Columns: `lsvolgrp` `Name ID Type` [R; types as bond-huang shows them, C], `-l` adds
//! `numvols` (ours); `showvolgrp` adds `Vols`, the member IDs [R]. `lshostconnect` `Name ID
//! WWPN HostType Profile portgrp volgrpID ESSIOport` [C, bond-huang], `-l` adds `LBS
//! addrDiscovery endpoint`; `showhostconnect` also shows `sessions`. `endpoint` and
//! `sessions` are extensions: where the connection's NBD endpoint listens
//! (`unix:HOME/hosts/IMAGE-ID.sock` or `tcp:127.0.0.1:PORT`) and how many NBD sessions are
//! open through it.
//!
//! `-profile` names the host type by its `Profile` column (one of `-hosttype`/`-profile`).
//! Every volume is served in 512-byte blocks (FB, or CKD in its slot layout), so `LBS` is
//! always 512 and `-lbs 520` (OS/400's 520-byte sectors) is refused as not supported.
//! `-addrdiscovery lunpolling` limits the host to LUNs 00-FF, the first 256 volumes of its
//! group (engine `image::hosts`); `reportlun` (the default here [D]) reaches all of them.

use super::{act, bad_id, ids, image_of, print_report, remove_each};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::messages::{self, exit};
use crate::dscli::report::{Report, dash};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{Assign, HostChange, HostSpec, HostView, Reply, Request, VolGrpAction};
use flashtrack::id::{ImageId, VolGrpId, VolumeId};
use flashtrack::image::record::{AddrDiscovery, VolGrpRecord, VolGrpType};

/// Host types: the name IBM spells and the `Profile` column [R, except iSeries: C].
pub const HOST_TYPE_TABLE: &[(&str, &str)] = &[
    ("pSeries", "IBM pSeries - AIX"),
    ("iSeries", "IBM iSeries - OS/400"),
    ("VMware", "VMWare - VMWare"),
    ("Win2008", "Intel - Windows 2008"),
    ("Win2012", "Intel - Windows 2012"),
    ("LinuxRHEL", "Intel - Linux RHEL"),
    ("LinuxSuse", "Intel - Linux Suse"),
    ("zLinux", "IBM zSeries - zLinux"),
    ("SUN", "SUN - Solaris"),
    ("HpUx", "HP - HP/UX"),
];

fn host_type(word: &str) -> String {
    HOST_TYPE_TABLE.iter().find(|t| t.0.eq_ignore_ascii_case(word)).map(|t| t.0).unwrap_or(word).to_string()
}

fn profile(hosttype: &str) -> &'static str {
    HOST_TYPE_TABLE.iter().find(|t| t.0 == hosttype).map(|t| t.1).unwrap_or("-")
}

/// `-hosttype`, or the host type whose `Profile` `-profile` names; not both.
fn hosttype_flag(s: &mut Session, inv: &Invocation) -> Res<Option<String>> {
    let verb = inv.verb.name;
    match (inv.flag("-hosttype"), inv.flag("-profile")) {
        (Some(_), Some(_)) => s.fail(messages::EXCLUSIVE.line(verb, &["-hosttype", "-profile"]), exit::SYNTAX),
        (Some(t), None) => Ok(Some(host_type(t))),
        (None, Some(p)) => match HOST_TYPE_TABLE.iter().find(|t| t.1.eq_ignore_ascii_case(p.trim())) {
            Some(t) => Ok(Some(t.0.to_string())),
            None => s.fail(
                messages::BAD_VALUE
                    .line(verb, &["-profile", p, "a Profile as lshostconnect shows it, e.g. \"IBM pSeries - AIX\""]),
                exit::SYNTAX,
            ),
        },
        (None, None) => Ok(None),
    }
}

/// `-lbs 512` is what every volume is served in; 520 cannot be.
fn lbs_flag(s: &mut Session, inv: &Invocation) -> Res<()> {
    match inv.flag("-lbs") {
        Some("520") => s.fail(
            messages::NOT_SUPPORTED.line(inv.verb.name, &["-lbs 520", "volumes are served in 512-byte blocks"]),
            exit::SYNTAX,
        ),
        _ => Ok(()),
    }
}

fn addrdiscovery_flag(inv: &Invocation) -> Option<AddrDiscovery> {
    inv.flag("-addrdiscovery").map(|v| {
        if v.eq_ignore_ascii_case("lunpolling") { AddrDiscovery::LunPolling } else { AddrDiscovery::ReportLun }
    })
}

/// The `addrDiscovery` column.
fn addrdiscovery_name(a: AddrDiscovery) -> &'static str {
    match a {
        AddrDiscovery::ReportLun => "reportLUN",
        AddrDiscovery::LunPolling => "LUNPolling",
    }
}

fn vgtype(word: Option<&str>) -> VolGrpType {
    match word {
        Some("scsimap256") => VolGrpType::ScsiMap256,
        Some("os400mask") => VolGrpType::Os400Mask,
        Some("os400map256") => VolGrpType::Os400Map256,
        _ => VolGrpType::ScsiMask,
    }
}

/// The `Type` column [C for the mask types' spelling style, bond-huang].
pub fn vgtype_name(t: VolGrpType) -> &'static str {
    match t {
        VolGrpType::ScsiMask => "SCSI Mask",
        VolGrpType::ScsiMap256 => "SCSI Map 256",
        VolGrpType::Os400Mask => "OS400 Mask",
        VolGrpType::Os400Map256 => "OS400 Map 256",
    }
}

fn qualify(image: &ImageId, id: impl ToString, full: bool) -> String {
    if full { format!("{image}/{}", id.to_string()) } else { id.to_string() }
}

/// The one name or ID a verb takes.
fn one<'a>(s: &mut Session, inv: &'a Invocation, what: &str) -> Res<&'a str> {
    match inv.ids.as_slice() {
        [one] => Ok(one.as_str()),
        [_, extra, ..] => s.fail(messages::ONE_OBJECT.line(inv.verb.name, &[what, extra]), exit::SYNTAX),
        [] => s.fail(messages::MISSING_IDS.line(inv.verb.name, &[]), exit::SYNTAX),
    }
}

fn check_name(s: &mut Session, inv: &Invocation, name: &str) -> Res<()> {
    if name.chars().count() > flashtrack::image::hosts::MAX_NAME {
        return s.fail(messages::NAME_TOO_LONG.line(inv.verb.name, &[name]), exit::SYNTAX);
    }
    Ok(())
}

/// `-volume` as volume IDs (with the image they name, if qualified).
fn volume_flag(s: &mut Session, inv: &Invocation) -> Res<Option<Vec<Scoped<VolumeId>>>> {
    match inv.flag("-volume") {
        Some(v) => Ok(Some(idp::volume_list(v).or_else(|e| bad_id(s, inv, e))?)),
        None => Ok(None),
    }
}

/// A `-volgrp` value (`none` where `allow_none`).
fn volgrp_flag(s: &mut Session, inv: &Invocation, allow_none: bool) -> Res<Option<Option<Scoped<VolGrpId>>>> {
    match inv.flag("-volgrp") {
        None => Ok(None),
        Some(v) if allow_none && v.eq_ignore_ascii_case("none") => Ok(Some(None)),
        Some(v) => Ok(Some(ids(s, inv, idp::volgrps(&[v.to_string()]))?.pop())),
    }
}

fn number<T: std::str::FromStr>(s: &mut Session, inv: &Invocation, flag: &str, why: &str) -> Res<Option<T>> {
    match inv.flag(flag) {
        None => Ok(None),
        Some(v) => match v.parse::<T>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, why]), exit::SYNTAX),
        },
    }
}

/// `-nbdport N` (1-65535), or `none` where `allow_none`.
fn port_flag(s: &mut Session, inv: &Invocation, allow_none: bool) -> Res<Option<Option<u16>>> {
    if allow_none && inv.flag("-nbdport").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return Ok(Some(None));
    }
    match number::<u16>(s, inv, "-nbdport", "a TCP port 1-65535 expected")? {
        Some(0) => s.fail(
            messages::BAD_VALUE.line(inv.verb.name, &["-nbdport", "0", "a TCP port 1-65535 expected"]),
            exit::SYNTAX,
        ),
        other => Ok(other.map(Some)),
    }
}

fn wwpn_flag(s: &mut Session, inv: &Invocation) -> Res<Option<String>> {
    match inv.flag("-wwname") {
        None => Ok(None),
        Some(w) if w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()) => Ok(Some(w.to_ascii_uppercase())),
        Some(w) => s.fail(messages::MALFORMED_ID.line(inv.verb.name, &[w, "WWPN"]), exit::SYNTAX),
    }
}

/// `-ioport all|I0000,I0001` (empty = all).
fn ioport_flag(s: &mut Session, inv: &Invocation) -> Res<Option<Vec<String>>> {
    let Some(v) = inv.flag("-ioport") else { return Ok(None) };
    if v.eq_ignore_ascii_case("all") {
        return Ok(Some(Vec::new()));
    }
    idp::ioports(v.split(',')).map(Some).or_else(|e| bad_id(s, inv, e))
}

fn all_images<T>(a: &[Scoped<T>]) -> Vec<Scoped<()>> {
    a.iter().map(|x| Scoped { image: x.image.clone(), id: () }).collect()
}

pub fn fetch_volgrps(s: &mut Session, verb: &str, image: &ImageId) -> Res<Vec<VolGrpRecord>> {
    match s.query(verb, Request::VolGrpList { image: image.clone() })? {
        Reply::VolGrps(v) => Ok(v),
        other => s.protocol(verb, &other),
    }
}

fn fetch_hosts(s: &mut Session, verb: &str, image: &ImageId) -> Res<Vec<HostView>> {
    match s.query(verb, Request::HostList { image: image.clone() })? {
        Reply::Hosts(v) => Ok(v),
        other => s.protocol(verb, &other),
    }
}

pub fn mkvolgrp(s: &mut Session, inv: &Invocation) -> Res {
    let name = one(s, inv, "volume group name")?.to_string();
    check_name(s, inv, &name)?;
    let vols = volume_flag(s, inv)?.unwrap_or_default();
    let image = image_of(s, inv, &all_images(&vols))?;
    super::check_lss(s, inv, &image, vols.iter().map(|v| v.id.lss()))?;
    s.banner(inv, Some(&image))?;
    let volumes = vols.into_iter().map(|v| v.id).collect();
    // -hosttype only chooses the type on a DS8000 (iSeries: os400); -type wins here.
    let word = inv.flag("-type").or(if inv.flag("-hosttype") == Some("iseries") { Some("os400mask") } else { None });
    let req = Request::VolGrpCreate { image, name: name.clone(), vgtype: vgtype(word), volumes };
    act(s, inv, req, &[name])
}

pub fn list_volgrps(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let show = verb == "showvolgrp";
    let wanted = ids(s, inv, idp::volgrps(&inv.ids))?;
    if show {
        one(s, inv, "volume group")?;
    }
    let image = image_of(s, inv, &wanted)?;
    s.banner(inv, Some(&image))?;
    let all = fetch_volgrps(s, verb, &image)?;
    let t = inv.flag("-type").map(|w| vgtype(Some(w)));
    let groups: Vec<&VolGrpRecord> = all
        .iter()
        .filter(|g| wanted.is_empty() || wanted.iter().any(|w| w.id == g.id))
        .filter(|g| t.is_none_or(|t| t == g.vgtype))
        .collect();
    if show && groups.is_empty() {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::VolGrpNotFound, wanted[0].id, "");
        let (line, code) = messages::engine_line(verb, &err);
        s.out.line(&line)?;
        return Ok(code);
    }
    let full = s.effective(inv).fullid;
    let mut cols = vec!["Name", "ID", "Type"];
    if show {
        cols.push("Vols");
    } else if inv.has("-l") {
        cols.push("numvols");
    }
    let mut r = Report::new("VolumeGroup", &cols);
    for g in groups {
        let mut row = vec![g.name.clone(), qualify(&image, g.id, full), vgtype_name(g.vgtype).into()];
        if show {
            row.push(dash(g.volumes.iter().map(|v| qualify(&image, v, full)).collect::<Vec<_>>().join(" ")));
        } else if inv.has("-l") {
            row.push(g.volumes.len().to_string());
        }
        r.push(row);
    }
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, show)
}

pub fn chvolgrp(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    if inv.has("-action") != inv.has("-volume") {
        return s.fail(messages::ACTION_VOLUME.line(verb, &[]), exit::SYNTAX);
    }
    if !inv.has("-name") && !inv.has("-action") {
        return s.fail(messages::MISSING_FLAG.line(verb, &["-name or -action"]), exit::SYNTAX);
    }
    one(s, inv, "volume group")?;
    let group = ids(s, inv, idp::volgrps(&inv.ids))?.remove(0);
    let name = inv.flag("-name").map(str::to_string);
    if let Some(n) = &name {
        check_name(s, inv, n)?;
    }
    let vols = volume_flag(s, inv)?;
    let mut scoped = all_images(std::slice::from_ref(&group));
    scoped.extend(all_images(vols.as_deref().unwrap_or_default()));
    let image = image_of(s, inv, &scoped)?;
    if let Some(v) = &vols {
        super::check_lss(s, inv, &image, v.iter().map(|v| v.id.lss()))?;
    }
    s.banner(inv, Some(&image))?;
    let action = match inv.flag("-action") {
        Some("add") => VolGrpAction::Add,
        Some("remove") => VolGrpAction::Remove,
        _ => VolGrpAction::Replace,
    };
    let members = vols.map(|v| (action, v.into_iter().map(|v| v.id).collect()));
    let req = Request::VolGrpChange { image, volgrp: group.id, name, members };
    act(s, inv, req, &[group.id.to_string()])
}

pub fn rmvolgrp(s: &mut Session, inv: &Invocation) -> Res {
    let wanted = ids(s, inv, idp::volgrps(&inv.ids))?;
    let image = image_of(s, inv, &wanted)?;
    s.banner(inv, Some(&image))?;
    let each = wanted
        .iter()
        .map(|w| (w.id.to_string(), Request::VolGrpRemove { image: image.clone(), volgrp: w.id }))
        .collect();
    remove_each(s, inv, each)
}

pub fn mkhostconnect(s: &mut Session, inv: &Invocation) -> Res {
    let name = one(s, inv, "host name")?.to_string();
    check_name(s, inv, &name)?;
    let wwpn = wwpn_flag(s, inv)?.expect("-wwname is required");
    let Some(hosttype) = hosttype_flag(s, inv)? else {
        return s.fail(messages::MISSING_FLAG.line(inv.verb.name, &["-hosttype or -profile"]), exit::SYNTAX);
    };
    lbs_flag(s, inv)?;
    let portgrp = number::<u8>(s, inv, "-portgrp", "a number 0-255 expected")?.unwrap_or(0);
    let volgrp = volgrp_flag(s, inv, false)?.flatten();
    let ioports = ioport_flag(s, inv)?.unwrap_or_default();
    let nbdport = port_flag(s, inv, false)?.flatten();
    let image = image_of(s, inv, &all_images(volgrp.as_slice()))?;
    s.banner(inv, Some(&image))?;
    let spec = HostSpec {
        name,
        wwpn,
        hosttype,
        portgrp,
        volgrp: volgrp.map(|g| g.id),
        ioports,
        nbdport,
        addrdiscovery: addrdiscovery_flag(inv).unwrap_or_default(),
    };
    // The new ID is the engine's to choose: the outcome names it.
    let resp = s.request(inv.verb.name, Request::HostCreate { image, spec })?;
    match super::as_items(resp, &[String::new()]) {
        Ok(items) => super::outcomes(s, inv.verb.name, &items),
        Err(what) => s.fail(messages::PROTOCOL.line(inv.verb.name, &[&what]), exit::CONNECTION),
    }
}

fn ports(h: &HostView) -> String {
    if h.record.ioports.is_empty() { "all".into() } else { h.record.ioports.join(",") }
}

pub fn list_hosts(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let show = verb == "showhostconnect";
    let wanted = ids(s, inv, idp::hosts(&inv.ids))?;
    if show {
        one(s, inv, "host connection")?;
    }
    let portgrp = number::<u8>(s, inv, "-portgrp", "a number 0-255 expected")?;
    let volgrp = volgrp_flag(s, inv, false)?.flatten();
    let mut scoped = all_images(&wanted);
    scoped.extend(all_images(volgrp.as_slice()));
    let image = image_of(s, inv, &scoped)?;
    s.banner(inv, Some(&image))?;
    let all = fetch_hosts(s, verb, &image)?;
    let hosts: Vec<&HostView> = all
        .iter()
        .filter(|h| wanted.is_empty() || wanted.iter().any(|w| w.id == h.record.id))
        .filter(|h| portgrp.is_none_or(|p| p == h.record.portgrp))
        .filter(|h| volgrp.as_ref().is_none_or(|g| Some(g.id) == h.record.volgrp))
        .collect();
    if show && hosts.is_empty() {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::HostNotFound, wanted[0].id, "");
        let (line, code) = messages::engine_line(verb, &err);
        s.out.line(&line)?;
        return Ok(code);
    }
    let full = s.effective(inv).fullid;
    let long = inv.has("-l") || show;
    let mut cols = vec!["Name", "ID", "WWPN", "HostType", "Profile", "portgrp", "volgrpID", "ESSIOport"];
    if long {
        cols.extend(["LBS", "addrDiscovery", "endpoint"]);
    }
    if show {
        cols.push("sessions");
    }
    let mut r = Report::new("HostConnection", &cols);
    for h in hosts {
        let rec = &h.record;
        let mut row = vec![
            rec.name.clone(),
            qualify(&image, rec.id, full),
            rec.wwpn.clone(),
            rec.hosttype.clone(),
            profile(&rec.hosttype).into(),
            rec.portgrp.to_string(),
            rec.volgrp.map(|g| qualify(&image, g, full)).unwrap_or_else(|| "-".into()),
            ports(h),
        ];
        if long {
            row.extend(["512".into(), addrdiscovery_name(rec.addrdiscovery).into(), h.endpoint.to_string()]);
        }
        if show {
            row.push(h.sessions.to_string());
        }
        r.push(row);
    }
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, show)
}

pub fn chhostconnect(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let changes = [
        "-name",
        "-wwname",
        "-hosttype",
        "-profile",
        "-portgrp",
        "-volgrp",
        "-ioport",
        "-lbs",
        "-addrdiscovery",
        "-nbdport",
    ];
    if !changes.iter().any(|f| inv.has(f)) {
        let all = "-name, -wwname, -hosttype, -profile, -portgrp, -volgrp, -ioport, -lbs, -addrdiscovery or -nbdport";
        return s.fail(messages::MISSING_FLAG.line(verb, &[all]), exit::SYNTAX);
    }
    let hosttype = hosttype_flag(s, inv)?;
    lbs_flag(s, inv)?;
    let wanted = ids(s, inv, idp::hosts(&inv.ids))?;
    let name = inv.flag("-name").map(str::to_string);
    if let Some(n) = &name {
        check_name(s, inv, n)?;
    }
    let volgrp = volgrp_flag(s, inv, true)?;
    let change = HostChange {
        name,
        wwpn: wwpn_flag(s, inv)?,
        hosttype,
        portgrp: number::<u8>(s, inv, "-portgrp", "a number 0-255 expected")?,
        volgrp: volgrp.as_ref().map(|g| g.as_ref().map_or(Assign::Clear, |g| Assign::Set(g.id))),
        ioports: ioport_flag(s, inv)?,
        nbdport: port_flag(s, inv, true)?.map(|p| p.map_or(Assign::Clear, Assign::Set)),
        addrdiscovery: addrdiscovery_flag(inv),
    };
    let mut scoped = all_images(&wanted);
    if let Some(Some(g)) = &volgrp {
        scoped.extend(all_images(std::slice::from_ref(g)));
    }
    let image = image_of(s, inv, &scoped)?;
    s.banner(inv, Some(&image))?;
    let mut last = exit::OK;
    for host in wanted.iter().map(|w| w.id) {
        let req = Request::HostChange { image: image.clone(), host, change: change.clone() };
        let code = act(s, inv, req, &[host.to_string()])?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

pub fn rmhostconnect(s: &mut Session, inv: &Invocation) -> Res {
    let wanted = ids(s, inv, idp::hosts(&inv.ids))?;
    let image = image_of(s, inv, &wanted)?;
    s.banner(inv, Some(&image))?;
    let each: Vec<(String, Request)> =
        wanted.iter().map(|w| (w.id.to_string(), Request::HostRemove { image: image.clone(), host: w.id })).collect();
    remove_each(s, inv, each)
}

/// The groups `vol` is in, for `showfbvol`'s `volgrp` column (`-` when none).
pub fn groups_of(groups: &[VolGrpRecord], vol: VolumeId) -> String {
    dash(groups.iter().filter(|g| g.volumes.contains(&vol)).map(|g| g.id.to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types() {
        assert_eq!(host_type("vmware"), "VMware");
        assert_eq!(profile("iSeries"), "IBM iSeries - OS/400");
        assert_eq!(profile("unknown"), "-");
        assert_eq!(vgtype_name(vgtype(None)), "SCSI Mask");
        assert_eq!(vgtype_name(vgtype(Some("os400map256"))), "OS400 Map 256");
        let g = |id, v: &[u16]| VolGrpRecord {
            id: VolGrpId(id),
            name: "g".into(),
            vgtype: VolGrpType::ScsiMask,
            volumes: v.iter().map(|&v| VolumeId(v)).collect(),
        };
        let groups = [g(0, &[0x1000]), g(2, &[0x1000, 0x1001])];
        assert_eq!(groups_of(&groups, VolumeId(0x1000)), "V0,V2");
        assert_eq!(groups_of(&groups, VolumeId(0x1002)), "-");
        // Every verb-table host type has a row here.
        for t in crate::dscli::verb::HOST_TYPES {
            assert!(HOST_TYPE_TABLE.iter().any(|r| r.0.eq_ignore_ascii_case(t)), "{t}");
        }
    }
}
