//! Extent pools: `mkextpool` (with the `-path` extension), `lsextpool`, `showextpool`,
//! `rmextpool`.
//!
//! Columns from PoolView: `availstor (2^30B)` and `available` = free bytes of the pool's
//! filesystem or device in GiB; `%allocated` = provisioned / capacity, rounded (can exceed
//! 100 with ese overcommit); `reserved` 0; `status` `below` (below the warning threshold).

use super::{act, ids, image_of, print_report, remove_each};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::report::Report;
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{PoolView, Reply, Request};
use flashtrack::id::ImageId;
use flashtrack::image::record::StorageType;
use std::path::PathBuf;

pub fn mkextpool(s: &mut Session, inv: &Invocation) -> Res {
    let name = inv.ids.join(" ");
    let rankgrp: u8 = if inv.flag("-rankgrp") == Some("1") { 1 } else { 0 };
    let stgtype = if inv.flag("-stgtype") == Some("ckd") { StorageType::Ckd } else { StorageType::Fb };
    // A relative path means relative to where dscli runs, not to flashd's directory.
    let path = inv.flag("-path").map(|p| {
        let p = PathBuf::from(p);
        if p.is_relative() { std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p) } else { p }
    });
    let none: [Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    s.banner(inv, Some(&image))?;
    act(s, inv, Request::PoolCreate { image, name: name.clone(), rankgrp, stgtype, path }, &[name])
}

fn fetch(s: &mut Session, verb: &str, image: &ImageId) -> Res<Vec<PoolView>> {
    match s.query(verb, Request::PoolList { image: image.clone() })? {
        Reply::Pools(p) => Ok(p),
        other => s.protocol(verb, &other),
    }
}

fn stg_name(t: StorageType) -> &'static str {
    match t {
        StorageType::Fb => "fb",
        StorageType::Ckd => "ckd",
    }
}

fn gib(b: u64) -> String {
    (b >> 30).to_string()
}

/// Rounded percentage of provisioned over capacity.
pub fn percent(provisioned: u64, capacity: u64) -> String {
    if capacity == 0 {
        return "0".into();
    }
    ((provisioned as u128 * 100 + capacity as u128 / 2) / capacity as u128).to_string()
}

pub fn report(image: &ImageId, pools: &[&PoolView], long: bool, show: bool, full: bool) -> Report {
    let mut cols = vec![
        "Name",
        "ID",
        "stgtype",
        "rankgrp",
        "status",
        "availstor (2^30B)",
        "%allocated",
        "available",
        "reserved",
        "numvols",
    ];
    if long || show {
        cols.extend(["provisioned (2^30B)", "path"]);
    }
    let mut r = Report::new("ExtentPool", &cols);
    for p in pools {
        let id = if full { format!("{image}/{}", p.record.id) } else { p.record.id.to_string() };
        let mut row = vec![
            p.record.name.clone(),
            id,
            stg_name(p.record.stgtype).into(),
            p.record.rankgrp.to_string(),
            "below".into(),
            gib(p.available_bytes),
            percent(p.provisioned_bytes, p.capacity_bytes),
            gib(p.available_bytes),
            "0".into(),
            p.numvols.to_string(),
        ];
        if long || show {
            row.push(gib(p.provisioned_bytes));
            row.push(p.record.location.path().display().to_string());
        }
        r.push(row);
    }
    r
}

pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let show = verb == "showextpool";
    let wanted = ids(s, inv, idp::pools(&inv.ids))?;
    let image = image_of(s, inv, &wanted)?;
    s.banner(inv, Some(&image))?;
    let all = fetch(s, verb, &image)?;
    let stg = inv.flag("-stgtype");
    let rg = inv.flag("-rankgrp");
    let mut pools: Vec<&PoolView> = all
        .iter()
        .filter(|p| wanted.is_empty() || wanted.iter().any(|w| w.id == p.record.id))
        .filter(|p| stg.is_none_or(|t| t == stg_name(p.record.stgtype)))
        .filter(|p| rg.is_none_or(|g| g == p.record.rankgrp.to_string()))
        .collect();
    pools.sort_by_key(|p| p.record.id);
    if show && let Some(missing) = wanted.iter().find(|w| !pools.iter().any(|p| p.record.id == w.id)) {
        let err = flashtrack::Error::new(flashtrack::ErrorKind::PoolNotFound, missing.id, "");
        let (line, code) = crate::dscli::messages::engine_line(verb, &err);
        s.out.line(&line)?;
        return Ok(code);
    }
    let r = report(&image, &pools, inv.has("-l"), show, s.effective(inv).fullid);
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, show)
}

pub fn rmextpool(s: &mut Session, inv: &Invocation) -> Res {
    let wanted = ids(s, inv, idp::pools(&inv.ids))?;
    let image = image_of(s, inv, &wanted)?;
    s.banner(inv, Some(&image))?;
    let each =
        wanted.iter().map(|w| (w.id.to_string(), Request::PoolRemove { image: image.clone(), pool: w.id })).collect();
    remove_each(s, inv, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::id::PoolId;
    use flashtrack::image::record::{PoolLocation, PoolRecord};

    #[test]
    fn lsextpool_row() {
        assert_eq!(percent(150, 100), "150");
        assert_eq!(percent(1, 3), "33");
        assert_eq!(percent(5, 0), "0");
        let p = PoolView {
            record: PoolRecord {
                id: PoolId(0),
                name: "P0".into(),
                rankgrp: 0,
                stgtype: StorageType::Fb,
                location: PoolLocation::Directory { path: "/pools/p0".into(), created: true },
            },
            capacity_bytes: 100 << 30,
            available_bytes: 60 << 30,
            provisioned_bytes: 50 << 30,
            allocated_bytes: 1 << 30,
            numvols: 3,
        };
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let text = report(&img, &[&p], false, false, false).render(Style {
            format: Format::Default,
            delim: ',',
            header: true,
        });
        let header = "Name ID stgtype rankgrp status availstor (2^30B) %allocated available reserved numvols";
        let row = "P0   P0 fb      0       below  60                50         60        0        3";
        assert_eq!(text, format!("{header}\n{}\n{row}\n", "=".repeat(header.len())));
        let long = report(&img, &[&p], true, false, false);
        assert_eq!(&long.rows[0][10..], ["50", "/pools/p0"]);
    }
}
