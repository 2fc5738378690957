//! FB and CKD volumes: `mkfbvol`/`mkckdvol`, `lsfbvol`/`lsckdvol`, `showfbvol`/`showckdvol`,
//! `chfbvol`/`chckdvol`, `rmfbvol`/`rmckdvol`. One family of code, the storage type taken
//! from the verb.

use super::{act, check_lss, confirmed, ids, image_of, one_decimal, outcomes, print_report};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::messages::{self, exit};
use crate::dscli::report::{Report, dash};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{Capacity, ItemOutcome, Reply, Request, VolumeSpec, VolumeView};
use flashtrack::geometry::{CKD_3390_MAX_CYLINDERS, CKD_MAX_CYLINDERS, CapType, Geometry};
use flashtrack::id::{ImageId, MachineType, PoolId, VolumeId};
use flashtrack::image::record::{Sam, StorageType, VolGrpRecord};

const GIB: f64 = (1u64 << 30) as f64;
const GB: f64 = 1e9;
/// Cylinders per CKD extent (a 3390 mod 1).
const CKD_EXTENT_CYL: u64 = 1113;
/// Longest volume name DS CLI accepts.
const NAME_MAX: usize = 16;

fn stgtype(inv: &Invocation) -> StorageType {
    if inv.verb.name.contains("ckd") { StorageType::Ckd } else { StorageType::Fb }
}

/// `#h` / `#d` replaced by the volume ID in hex / decimal.
pub fn volume_name(pattern: &str, id: VolumeId) -> String {
    pattern.replace("#h", &id.to_string()).replace("#d", &id.0.to_string())
}

fn number(s: &mut Session, inv: &Invocation, flag: &str) -> Res<Option<u64>> {
    let Some(v) = inv.flag(flag) else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) => Ok(Some(n)),
        Err(_) => s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, "a whole number expected"]), exit::SYNTAX),
    }
}

/// Names for each volume, checked for length before anything is sent.
fn names(s: &mut Session, inv: &Invocation, vols: &[VolumeId]) -> Res<Option<Vec<String>>> {
    let Some(pattern) = inv.flag("-name") else {
        return Ok(None);
    };
    let names: Vec<String> = vols.iter().map(|v| volume_name(pattern, *v)).collect();
    if let Some(long) = names.iter().find(|n| n.chars().count() > NAME_MAX) {
        return s.fail(messages::NAME_TOO_LONG.line(inv.verb.name, &[long]), exit::SYNTAX);
    }
    Ok(Some(names))
}

/// Volume IDs plus the image they live on, LSS range checked.
fn targets(s: &mut Session, inv: &Invocation, extra: Option<Scoped<()>>) -> Res<(ImageId, Vec<VolumeId>)> {
    targets_with(s, inv, extra.into_iter().collect())
}

/// `targets` with any number of other IDs that name the image.
fn targets_with(s: &mut Session, inv: &Invocation, extra: Vec<Scoped<()>>) -> Res<(ImageId, Vec<VolumeId>)> {
    let vols = ids(s, inv, idp::volumes(&inv.ids))?;
    let mut scoped: Vec<Scoped<()>> = vols.iter().map(|v| Scoped { image: v.image.clone(), id: () }).collect();
    scoped.extend(extra);
    let image = image_of(s, inv, &scoped)?;
    let list: Vec<VolumeId> = vols.into_iter().map(|v| v.id).collect();
    check_lss(s, inv, &image, list.iter().map(|v| v.lss()))?;
    Ok((image, list))
}

fn pool_flag(s: &mut Session, inv: &Invocation, flag: &str) -> Res<Option<Scoped<PoolId>>> {
    let Some(v) = inv.flag(flag) else {
        return Ok(None);
    };
    Ok(ids(s, inv, idp::pools(&[v.to_string()]))?.pop())
}

pub fn make(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let pool = pool_flag(s, inv, "-extpool")?.expect("-extpool is required");
    let cap = number(s, inv, "-cap")?.expect("-cap is required");
    let capacity = match stgtype(inv) {
        StorageType::Fb => {
            let captype = match inv.flag("-type") {
                Some("ess") => CapType::Ess,
                Some("blocks") => CapType::Blocks,
                _ => CapType::Ds,
            };
            Capacity::Fb { cap, captype }
        }
        StorageType::Ckd => {
            let max = if inv.flag("-datatype") == Some("3390-a") { CKD_MAX_CYLINDERS } else { CKD_3390_MAX_CYLINDERS };
            if cap > max {
                let why = format!("at most {max} cylinders for this -datatype");
                return s.fail(messages::BAD_VALUE.line(verb, &["-cap", &cap.to_string(), &why]), exit::SYNTAX);
            }
            Capacity::Ckd { cylinders: cap }
        }
    };
    let sam = if inv.flag("-sam") == Some("ese") { Sam::Ese } else { Sam::Standard };
    let extra = Scoped { image: pool.image.clone(), id: () };
    let volgrp = match inv.flag("-volgrp") {
        Some(v) => Some(ids(s, inv, idp::volgrps(&[v.to_string()]))?.remove(0)),
        None => None,
    };
    let mut extras = vec![extra];
    extras.extend(volgrp.iter().map(|g| Scoped { image: g.image.clone(), id: () }));
    let vols = ids(s, inv, idp::volumes(&inv.ids))?;
    let mut scoped: Vec<Scoped<()>> = vols.iter().map(|v| Scoped { image: v.image.clone(), id: () }).collect();
    scoped.extend(extras);
    let image = image_of(s, inv, &scoped)?;
    let vols: Vec<VolumeId> = vols.into_iter().map(|v| v.id).collect();
    check_lss(s, inv, &image, vols.iter().map(|v| v.lss()))?;
    let names = names(s, inv, &vols)?;
    s.banner(inv, Some(&image))?;
    // -volgrp: the group must exist before any volume is made; the volumes made join it.
    if let Some(g) = &volgrp
        && !super::hosts::fetch_volgrps(s, verb, &image)?.iter().any(|r| r.id == g.id)
    {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::VolGrpNotFound, g.id, "");
        let (line, code) = messages::engine_line(verb, &err);
        return s.fail(line, code);
    }
    let volumes: Vec<(VolumeId, String)> =
        vols.iter().enumerate().map(|(i, v)| (*v, names.as_ref().map(|n| n[i].clone()).unwrap_or_default())).collect();
    let objects: Vec<String> = vols.iter().map(VolumeId::to_string).collect();
    let spec = VolumeSpec { pool: pool.id, capacity, sam };
    let Some(g) = volgrp else {
        return act(s, inv, Request::VolumeCreate { image, spec, volumes }, &objects);
    };
    let resp = s.request(verb, Request::VolumeCreate { image: image.clone(), spec, volumes })?;
    let items = match super::as_items(resp, &objects) {
        Ok(items) => items,
        Err(what) => return s.fail(messages::PROTOCOL.line(verb, &[&what]), exit::CONNECTION),
    };
    let mut last = outcomes(s, verb, &items)?;
    let made: Vec<VolumeId> = vols.iter().zip(&items).filter(|(_, i)| i.result.is_ok()).map(|(v, _)| *v).collect();
    if !made.is_empty() {
        let req = Request::VolGrpChange {
            image,
            volgrp: g.id,
            name: None,
            members: Some((flashtrack::control::VolGrpAction::Add, made)),
        };
        if let flashtrack::control::Response::Err(e) = s.request(verb, req)? {
            let (line, code) = messages::engine_line(verb, &e);
            s.out.line(&line)?;
            last = code;
        }
    }
    Ok(last)
}

fn fetch(s: &mut Session, verb: &str, image: &ImageId) -> Res<Vec<VolumeView>> {
    match s.query(verb, Request::VolumeList { image: image.clone() })? {
        Reply::Volumes(v) => Ok(v),
        other => s.protocol(verb, &other),
    }
}

pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let show = verb.starts_with("show");
    let kind = stgtype(inv);
    let pool = pool_flag(s, inv, "-extpool")?;
    let lss_flag = inv.flag("-lss").or(inv.flag("-lcu")).map(|l| vec![l.to_string()]);
    let lss_filter = match &lss_flag {
        Some(t) => Some(ids(s, inv, idp::lss(t, "LSS"))?),
        None => None,
    };
    let extra = pool.as_ref().map(|p| Scoped { image: p.image.clone(), id: () });
    let volgrp = match inv.flag("-volgrp") {
        Some(v) => Some(ids(s, inv, idp::volgrps(&[v.to_string()]))?.remove(0)),
        None => None,
    };
    let mut extras: Vec<Scoped<()>> = extra.into_iter().collect();
    extras.extend(volgrp.iter().map(|g| Scoped { image: g.image.clone(), id: () }));
    let (image, wanted) = targets_with(s, inv, extras)?;
    if let Some(l) = &lss_filter {
        check_lss(s, inv, &image, l.iter().map(|x| x.id))?;
    }
    s.banner(inv, Some(&image))?;
    let all = fetch(s, verb, &image)?;
    // Volume groups: for the -volgrp filter and showfbvol's volgrp column.
    let groups = if volgrp.is_some() || (show && kind == StorageType::Fb) {
        super::hosts::fetch_volgrps(s, verb, &image)?
    } else {
        Vec::new()
    };
    let members: Option<Vec<VolumeId>> =
        volgrp.as_ref().map(|g| groups.iter().find(|r| r.id == g.id).map(|r| r.volumes.clone()).unwrap_or_default());
    let mut views: Vec<&VolumeView> = all
        .iter()
        .filter(|v| v.record.stgtype() == kind)
        .filter(|v| wanted.is_empty() || wanted.contains(&v.record.id))
        .filter(|v| pool.as_ref().is_none_or(|p| p.id == v.record.pool))
        .filter(|v| lss_filter.as_ref().is_none_or(|l| l.iter().any(|x| x.id == v.record.id.lss())))
        .filter(|v| members.as_ref().is_none_or(|m| m.contains(&v.record.id)))
        .collect();
    views.sort_by_key(|v| v.record.id);
    if show && let Some(missing) = wanted.iter().find(|w| !views.iter().any(|v| v.record.id == **w)) {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::VolumeNotFound, missing, "");
        let (line, code) = messages::engine_line(verb, &err);
        s.out.line(&line)?;
        return Ok(code);
    }
    let fullid = s.effective(inv).fullid;
    let report = match (kind, show) {
        (StorageType::Fb, false) => fb_report(&image, &views, inv.has("-l"), fullid),
        (StorageType::Fb, true) => fb_show(&image, &views, fullid, &groups),
        (StorageType::Ckd, false) => ckd_report(&image, &views, inv.has("-l"), fullid),
        (StorageType::Ckd, true) => ckd_show(&image, &views, fullid),
    };
    let report = if inv.has("-s") { report.short("ID") } else { report };
    print_report(s, inv, &report, show)
}

fn qualify(image: &ImageId, id: impl ToString, full: bool) -> String {
    if full { format!("{image}/{}", id.to_string()) } else { id.to_string() }
}

fn fb_mtm(image: &ImageId) -> &'static str {
    match image.machine {
        MachineType::Ds6000 => "1750-500",
        MachineType::Ds8000 => "2107-900",
    }
}

fn blocks(v: &VolumeView) -> u64 {
    match v.record.geometry {
        Geometry::Fb { blocks } => blocks,
        Geometry::Ckd { .. } => 0,
    }
}

fn cylinders(v: &VolumeView) -> u64 {
    match v.record.geometry {
        Geometry::Ckd { cylinders } => cylinders,
        Geometry::Fb { .. } => 0,
    }
}

/// `cap (2^30B)` and `cap (10^9B)` by how the capacity was given.
fn fb_caps(v: &VolumeView) -> (String, String) {
    let bytes = v.record.geometry.size_bytes();
    match v.record.captype {
        Some(CapType::Ess) => ("-".into(), one_decimal(bytes, GB)),
        Some(CapType::Blocks) => ("-".into(), "-".into()),
        _ => (one_decimal(bytes, GIB), "-".into()),
    }
}

fn captype_name(c: Option<CapType>) -> &'static str {
    match c {
        Some(CapType::Ds) | None => "DS",
        Some(CapType::Ess) => "ESS",
        Some(CapType::Blocks) => "Blocks", // [R]
    }
}

fn sam_name(s: Sam) -> &'static str {
    match s {
        Sam::Standard => "standard",
        Sam::Ese => "ese",
    }
}

pub fn fb_report(image: &ImageId, views: &[&VolumeView], long: bool, full: bool) -> Report {
    let mut cols = vec![
        "Name",
        "ID",
        "accstate",
        "datastate",
        "configstate",
        "deviceMTM",
        "datatype",
        "extpool",
        "cap (2^30B)",
        "cap (10^9B)",
        "cap (blocks)",
    ];
    if long {
        cols.extend(["sam", "captype", "reqcap (blocks)", "usedcap (2^30B)"]);
    }
    let mut r = Report::new("FBVolume", &cols);
    for v in views {
        let (gib, gb) = fb_caps(v);
        let mut row = vec![
            dash(v.record.name.clone()),
            qualify(image, v.record.id, full),
            "Online".into(),
            "Normal".into(),
            "Normal".into(),
            fb_mtm(image).into(),
            "FB 512".into(),
            qualify(image, v.record.pool, full),
            gib,
            gb,
            blocks(v).to_string(),
        ];
        if long {
            row.extend([
                sam_name(v.record.sam).into(),
                captype_name(v.record.captype).into(),
                blocks(v).to_string(),
                one_decimal(v.allocated_bytes, GIB),
            ]);
        }
        r.push(row);
    }
    r
}

pub fn fb_show(image: &ImageId, views: &[&VolumeView], full: bool, groups: &[VolGrpRecord]) -> Report {
    let cols = [
        "Name",
        "ID",
        "accstate",
        "datastate",
        "configstate",
        "deviceMTM",
        "datatype",
        "addrgrp",
        "extpool",
        "exts",
        "captype",
        "cap (2^30B)",
        "cap (10^9B)",
        "cap (blocks)",
        "volgrp",
        "sam",
        "usedcap",
    ];
    let mut r = Report::new("FBVolume", &cols);
    for v in views {
        let (gib, gb) = fb_caps(v);
        let bytes = v.record.geometry.size_bytes();
        r.push(vec![
            dash(v.record.name.clone()),
            qualify(image, v.record.id, full),
            "Online".into(),
            "Normal".into(),
            "Normal".into(),
            fb_mtm(image).into(),
            "FB 512".into(),
            format!("{:X}", v.record.id.lss().addrgrp()),
            qualify(image, v.record.pool, full),
            bytes.div_ceil(1 << 30).to_string(),
            captype_name(v.record.captype).into(),
            gib,
            gb,
            blocks(v).to_string(),
            super::hosts::groups_of(groups, v.record.id),
            sam_name(v.record.sam).into(),
            one_decimal(v.allocated_bytes, GIB),
        ]);
    }
    r
}

/// 3390 model by size.
pub fn ckd_mtm(cyl: u64) -> &'static str {
    match cyl {
        0..=3339 => "3390-3",
        3340..=10017 => "3390-9",
        10018..=32760 => "3390-27",
        32761..=65520 => "3390-54",
        _ => "3390-A",
    }
}

pub fn ckd_report(image: &ImageId, views: &[&VolumeView], long: bool, full: bool) -> Report {
    let mut cols = vec![
        "Name",
        "ID",
        "accstate",
        "datastate",
        "configstate",
        "deviceMTM",
        "voltype",
        "orgbvols",
        "extpool",
        "cap (cyl)",
    ];
    if long {
        cols.extend(["sam", "cap (2^30B)", "usedcap (2^30B)"]);
    }
    let mut r = Report::new("CKDVolume", &cols);
    for v in views {
        let mut row = vec![
            dash(v.record.name.clone()),
            qualify(image, v.record.id, full),
            "Online".into(),
            "Normal".into(),
            "Normal".into(),
            ckd_mtm(cylinders(v)).into(),
            "CKD Base".into(),
            "-".into(),
            qualify(image, v.record.pool, full),
            cylinders(v).to_string(),
        ];
        if long {
            row.extend([
                sam_name(v.record.sam).into(),
                one_decimal(v.record.geometry.size_bytes(), GIB),
                one_decimal(v.allocated_bytes, GIB),
            ]);
        }
        r.push(row);
    }
    r
}

pub fn ckd_show(image: &ImageId, views: &[&VolumeView], full: bool) -> Report {
    let cols = [
        "Name",
        "ID",
        "accstate",
        "datastate",
        "configstate",
        "deviceMTM",
        "volser",
        "datatype",
        "voltype",
        "orgbvols",
        "addrgrp",
        "extpool",
        "exts",
        "cap (cyl)",
        "cap (2^30B)",
        "sam",
        "usedcap",
    ];
    let mut r = Report::new("CKDVolume", &cols);
    for v in views {
        let cyl = cylinders(v);
        r.push(vec![
            dash(v.record.name.clone()),
            qualify(image, v.record.id, full),
            "Online".into(),
            "Normal".into(),
            "Normal".into(),
            ckd_mtm(cyl).into(),
            "-".into(),
            if cyl > CKD_3390_MAX_CYLINDERS { "3390-A".into() } else { "3390".into() },
            "CKD Base".into(),
            "-".into(),
            format!("{:X}", v.record.id.lss().addrgrp()),
            qualify(image, v.record.pool, full),
            cyl.div_ceil(CKD_EXTENT_CYL).to_string(),
            cyl.to_string(),
            one_decimal(v.record.geometry.size_bytes(), GIB),
            sam_name(v.record.sam).into(),
            one_decimal(v.allocated_bytes, GIB),
        ]);
    }
    r
}

pub fn change(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    if !inv.has("-name") && !inv.has("-cap") {
        return s.fail(messages::MISSING_FLAG.line(verb, &["-name or -cap"]), exit::SYNTAX);
    }
    let cap = number(s, inv, "-cap")?;
    let (image, vols) = targets(s, inv, None)?;
    let names = names(s, inv, &vols)?;
    s.banner(inv, Some(&image))?;
    // FB growth is in the volume's own units: take them from -type or the volume.
    let current = fetch(s, verb, &image)?;
    let kind = stgtype(inv);
    let other: Vec<VolumeId> = current.iter().filter(|v| v.record.stgtype() != kind).map(|v| v.record.id).collect();
    if let (Some(c), StorageType::Ckd) = (cap, kind) {
        // Past 65,520 cylinders a 3390 becomes a 3390-A only when asked (-datatype 3390-A),
        // as with mkckdvol; one that already is grows freely. Checked for every volume
        // before any changes.
        for vol in &vols {
            let now = current.iter().find(|v| v.record.id == *vol).map_or(0, cylinders);
            let extended = inv.has("-datatype") || now > CKD_3390_MAX_CYLINDERS;
            let max = if extended { CKD_MAX_CYLINDERS } else { CKD_3390_MAX_CYLINDERS };
            if c > max {
                let why = format!("at most {max} cylinders for this -datatype");
                return s.fail(messages::BAD_VALUE.line(verb, &["-cap", &c.to_string(), &why]), exit::SYNTAX);
            }
        }
    }
    let mut last = exit::OK;
    for (i, vol) in vols.iter().enumerate() {
        if other.contains(vol) {
            last = not_this_family(s, inv, *vol)?;
            continue;
        }
        let grow = cap.map(|c| match stgtype(inv) {
            StorageType::Ckd => Capacity::Ckd { cylinders: c },
            StorageType::Fb => {
                let captype = match inv.flag("-type") {
                    Some("ess") => CapType::Ess,
                    Some("blocks") => CapType::Blocks,
                    Some(_) => CapType::Ds,
                    None => current
                        .iter()
                        .find(|v| v.record.id == *vol)
                        .and_then(|v| v.record.captype)
                        .unwrap_or(CapType::Ds),
                };
                Capacity::Fb { cap: c, captype }
            }
        });
        let name = names.as_ref().map(|n| n[i].clone());
        let req = Request::VolumeChange { image: image.clone(), volume: *vol, name, grow, stgtype: Some(family(inv)) };
        let resp = s.request(verb, req)?;
        let items = super::as_items(resp, &[vol.to_string()])
            .unwrap_or_else(|what| vec![ItemOutcome { object: vol.to_string(), result: Err(protocol_error(&what)) }]);
        let code = outcomes(s, verb, &items)?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

fn protocol_error(what: &str) -> flashtrack::Error {
    flashtrack::Error::new(flashtrack::ErrorKind::Unsupported, "", format!("unexpected reply {what}"))
}

/// Volumes that exist with the other storage type: flashd removes or changes whatever the
/// ID names, so the verb's family is checked here (rmfbvol must not delete a CKD volume).
fn other_family(s: &mut Session, inv: &Invocation, image: &ImageId) -> Res<Vec<VolumeId>> {
    let kind = stgtype(inv);
    let all = fetch(s, inv.verb.name, image)?;
    Ok(all.iter().filter(|v| v.record.stgtype() != kind).map(|v| v.record.id).collect())
}

fn not_this_family(s: &mut Session, inv: &Invocation, vol: VolumeId) -> Res {
    let err = flashtrack::Error::new(flashtrack::ErrorKind::VolumeNotFound, vol, "");
    let (line, code) = messages::engine_line(inv.verb.name, &err);
    s.out.line(&line)?;
    Ok(code)
}

pub fn remove(s: &mut Session, inv: &Invocation) -> Res {
    let (image, vols) = targets(s, inv, None)?;
    s.banner(inv, Some(&image))?;
    let safe = inv.has("-safe");
    let other = other_family(s, inv, &image)?;
    // Object by object, in input order: ask (unless -quiet), then act.
    let mut last = exit::OK;
    for vol in vols {
        let code = if other.contains(&vol) {
            not_this_family(s, inv, vol)?
        } else if confirmed(s, inv, vec![vol.to_string()])?.is_empty() {
            continue;
        } else {
            let req =
                Request::VolumeRemove { image: image.clone(), volumes: vec![vol], safe, stgtype: Some(family(inv)) };
            act(s, inv, req, &[vol.to_string()])?
        };
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

/// The family a verb works on (`rmckdvol`, `chckdvol` = CKD), checked again by the engine.
fn family(inv: &Invocation) -> flashtrack::image::record::StorageType {
    if inv.verb.name.contains("ckd") {
        flashtrack::image::record::StorageType::Ckd
    } else {
        flashtrack::image::record::StorageType::Fb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::image::record::{BackingRecord, VolumeRecord};

    fn view(id: u16, name: &str, geometry: Geometry, captype: Option<CapType>) -> VolumeView {
        VolumeView {
            record: VolumeRecord {
                id: VolumeId(id),
                name: name.into(),
                pool: PoolId(0),
                geometry,
                captype,
                sam: Sam::Standard,
                backing: BackingRecord::File { path: "/x".into() },
                created: 0,
            },
            pool_name: "P0".into(),
            allocated_bytes: 1 << 29,
            sessions: 0,
        }
    }

    #[test]
    fn names_substitute() {
        assert_eq!(volume_name("db_#h", VolumeId(0x100A)), "db_100A");
        assert_eq!(volume_name("v#d", VolumeId(0x1000)), "v4096");
    }

    #[test]
    fn lsfbvol_columns_exact() {
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let a = view(0x1000, "vol_1000", Geometry::Fb { blocks: CapType::Ds.blocks(10).unwrap() }, Some(CapType::Ds));
        let b = view(0x1001, "", Geometry::Fb { blocks: CapType::Ess.blocks(2).unwrap() }, Some(CapType::Ess));
        let c = view(0x1002, "b", Geometry::Fb { blocks: 200 }, Some(CapType::Blocks));
        let r = fb_report(&img, &[&a, &b, &c], false, false);
        let text = r.render(Style { format: Format::Default, delim: ',', header: true });
        assert_eq!(
            text,
            "Name     ID   accstate datastate configstate deviceMTM datatype extpool cap (2^30B) cap (10^9B) cap (blocks)\n\
             ============================================================================================================\n\
             vol_1000 1000 Online   Normal    Normal      2107-900  FB 512   P0      10.0        -           20971520\n\
             -        1001 Online   Normal    Normal      2107-900  FB 512   P0      -           2.0         3906250\n\
             b        1002 Online   Normal    Normal      2107-900  FB 512   P0      -           -           200\n"
        );
        let long = fb_report(&img, &[&a], true, true);
        assert_eq!(long.rows[0][1], "IBM.2107-75FA120/1000");
        assert_eq!(&long.rows[0][11..], ["standard", "DS", "20971520", "0.5"]);
    }

    #[test]
    fn ckd_models() {
        assert_eq!(ckd_mtm(3339), "3390-3");
        assert_eq!(ckd_mtm(3340), "3390-9");
        assert_eq!(ckd_mtm(10017), "3390-9");
        assert_eq!(ckd_mtm(32760), "3390-27");
        assert_eq!(ckd_mtm(65520), "3390-54");
        assert_eq!(ckd_mtm(65521), "3390-A");
        let img: ImageId = "IBM.1750-68FA120".parse().unwrap();
        let v = view(0x0100, "ckd", Geometry::Ckd { cylinders: 10017 }, None);
        let r = ckd_report(&img, &[&v], false, false);
        assert_eq!(r.rows[0], ["ckd", "0100", "Online", "Normal", "Normal", "3390-9", "CKD Base", "-", "P0", "10017"]);
        assert_eq!(fb_mtm(&img), "1750-500");
        let show = ckd_show(&img, &[&v], false);
        assert_eq!(show.rows[0][12], "9"); // 10017 cylinders = 9 extents of 1113
    }
}
