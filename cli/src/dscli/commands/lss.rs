//! LSS and LCU: `mklcu`, `lslcu`, `lslss`, `rmlcu`. FB LSSs exist implicitly (with their
//! volumes); CKD LCUs are made explicitly.

use super::{act, check_lss, ids, image_of, print_report, remove_each};
use crate::dscli::ids as idp;
use crate::dscli::messages::{self, exit};
use crate::dscli::report::{Report, dash};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{LssView, Reply, Request};
use flashtrack::id::{ImageId, LssId};
use flashtrack::image::record::{LcuType, StorageType};

pub fn lcutype_name(t: LcuType) -> &'static str {
    match t {
        LcuType::T3990_3 => "3990-3",
        LcuType::T3990Tpf => "3990-tpf",
        LcuType::T3990_6 => "3990-6",
        LcuType::Bs2000 => "bs2000",
    }
}

fn hex_flag(s: &mut Session, inv: &Invocation, flag: &str, digits: usize) -> Res<u32> {
    let v = inv.flag(flag).expect("required flag checked by the parser");
    if v.is_empty() || v.len() > digits || !v.chars().all(|c| c.is_ascii_hexdigit()) {
        let why = format!("{digits} hex digits expected");
        return s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, &why]), exit::SYNTAX);
    }
    Ok(u32::from_str_radix(v, 16).expect("checked hex"))
}

pub fn mklcu(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let qty = match inv.flag("-qty").map(str::parse::<u16>) {
        Some(Ok(q @ 1..=255)) => q,
        _ => {
            let v = inv.flag("-qty").unwrap_or("");
            return s.fail(messages::BAD_VALUE.line(verb, &["-qty", v, "1-255 expected"]), exit::SYNTAX);
        }
    };
    let first = LssId(hex_flag(s, inv, "-id", 2)? as u8);
    let ssid = hex_flag(s, inv, "-ss", 4)? as u16;
    if ssid == 0 {
        return s.fail(messages::BAD_VALUE.line(verb, &["-ss", "0000", "0001-FFFF expected"]), exit::SYNTAX);
    }
    let lcutype = match inv.flag("-lcutype") {
        Some("3990-3") => LcuType::T3990_3,
        Some("3990-tpf") => LcuType::T3990Tpf,
        Some("bs2000") => LcuType::Bs2000,
        _ => LcuType::T3990_6,
    };
    let none: [idp::Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    let last = first.0 as u32 + qty as u32 - 1;
    check_lss(s, inv, &image, [LssId(last.min(255) as u8)])?;
    if last > 255 {
        let args = [
            image.to_string(),
            format!("{last:X}"),
            image.machine.code().to_string(),
            format!("{:02X}", image.machine.max_lss()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return s.fail(messages::LSS_RANGE.line(verb, &args), exit::SYNTAX);
    }
    s.banner(inv, Some(&image))?;
    let objects: Vec<String> = (first.0 as u32..=last).map(|l| format!("{l:02X}")).collect();
    act(s, inv, Request::LcuCreate { image, first, qty, ssid, lcutype }, &objects)
}

fn fetch(s: &mut Session, verb: &str, image: &ImageId) -> Res<Vec<LssView>> {
    match s.query(verb, Request::LssList { image: image.clone() })? {
        Reply::Lss(l) => Ok(l),
        other => s.protocol(verb, &other),
    }
}

fn ssid(v: &LssView) -> String {
    v.ssid.map(|s| format!("{s:04X}")).unwrap_or_else(|| "-".into())
}

pub fn lss_report(image: &ImageId, views: &[&LssView], long: bool, full: bool) -> Report {
    let mut cols = vec!["ID", "Group", "addrgrp", "stgtype", "confgvols"];
    if long {
        cols.push("subsys");
    }
    let mut r = Report::new("LSS", &cols);
    for v in views {
        let id = if full { format!("{image}/{}", v.id) } else { v.id.to_string() };
        let stg = match v.stgtype {
            StorageType::Fb => "fb",
            StorageType::Ckd => "ckd",
        };
        let mut row =
            vec![id, v.id.rankgrp().to_string(), format!("{:X}", v.id.addrgrp()), stg.into(), v.confgvols.to_string()];
        if long {
            row.push(ssid(v));
        }
        r.push(row);
    }
    r
}

pub fn lcu_report(image: &ImageId, views: &[&LssView], long: bool, full: bool) -> Report {
    let mut cols = vec!["ID", "Group", "addrgrp", "confgvols", "subsys", "conbasetype"];
    if long {
        cols.push("pprcconsistgrp");
    }
    let mut r = Report::new("LCU", &cols);
    for v in views {
        let id = if full { format!("{image}/{}", v.id) } else { v.id.to_string() };
        let mut row = vec![
            id,
            v.id.rankgrp().to_string(),
            format!("{:X}", v.id.addrgrp()),
            v.confgvols.to_string(),
            ssid(v),
            dash(v.lcutype.map(lcutype_name).unwrap_or("")),
        ];
        if long {
            row.push("Disabled".into());
        }
        r.push(row);
    }
    r
}

pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let lcu = verb == "lslcu";
    let wanted = ids(s, inv, idp::lss(&inv.ids, if lcu { "LCU" } else { "LSS" }))?;
    let image = image_of(s, inv, &wanted)?;
    check_lss(s, inv, &image, wanted.iter().map(|w| w.id))?;
    s.banner(inv, Some(&image))?;
    let all = fetch(s, verb, &image)?;
    let stg = inv.flag("-stgtype");
    let mut views: Vec<&LssView> = all
        .iter()
        .filter(|v| !lcu || v.stgtype == StorageType::Ckd)
        .filter(|v| wanted.is_empty() || wanted.iter().any(|w| w.id == v.id))
        .filter(|v| match stg {
            Some("fb") => v.stgtype == StorageType::Fb,
            Some("ckd") => v.stgtype == StorageType::Ckd,
            _ => true,
        })
        .collect();
    views.sort_by_key(|v| v.id);
    let full = s.effective(inv).fullid;
    let r = if lcu {
        lcu_report(&image, &views, inv.has("-l"), full)
    } else {
        lss_report(&image, &views, inv.has("-l"), full)
    };
    let r = if inv.has("-s") { r.short("ID") } else { r };
    print_report(s, inv, &r, false)
}

pub fn rmlcu(s: &mut Session, inv: &Invocation) -> Res {
    let wanted = ids(s, inv, idp::lss(&inv.ids, "LCU"))?;
    let image = image_of(s, inv, &wanted)?;
    check_lss(s, inv, &image, wanted.iter().map(|w| w.id))?;
    s.banner(inv, Some(&image))?;
    let objects: Vec<String> = wanted.iter().map(|w| w.id.to_string()).collect();
    if inv.has("-quiet") {
        let lcus = wanted.iter().map(|w| w.id).collect();
        return act(s, inv, Request::LcuRemove { image, lcus }, &objects);
    }
    let each = wanted
        .iter()
        .map(|w| (w.id.to_string(), Request::LcuRemove { image: image.clone(), lcus: vec![w.id] }))
        .collect();
    remove_each(s, inv, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;

    #[test]
    fn lslss_and_lslcu_rows() {
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let fb = LssView { id: LssId(0x10), stgtype: StorageType::Fb, confgvols: 2, ssid: None, lcutype: None };
        let ckd = LssView {
            id: LssId(0x21),
            stgtype: StorageType::Ckd,
            confgvols: 0,
            ssid: Some(0x2100),
            lcutype: Some(LcuType::T3990_6),
        };
        let text = lss_report(&img, &[&fb, &ckd], true, false).render(Style {
            format: Format::Default,
            delim: ',',
            header: true,
        });
        assert_eq!(
            text,
            "ID Group addrgrp stgtype confgvols subsys\n=========================================\n10 0     1       fb      2         -\n21 1     2       ckd     0         2100\n"
        );
        let r = lcu_report(&img, &[&ckd], false, true);
        assert_eq!(r.rows[0], ["IBM.2107-75FA120/21", "1", "2", "0", "2100", "3990-6"]);
    }
}
