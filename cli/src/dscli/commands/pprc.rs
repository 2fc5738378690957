//! Remote Mirror and Copy paths: `mkpprcpath`, `lspprcpath`, `rmpprcpath` (between storage
//! images of this flashd over in-process links, or to a peer flashd over loopback TCP).
//! `rmpprcpath` refuses a path that still carries pairs unless `-force` (dscli-spec.md §3.3;
//! the engine decides, `Image::remove_pprc_path`).
//!
//! `lspprcpath` columns `Src Tgt State SS Port Attached Port Tgt WWNN` [R, dscli-spec.md §4.4]:
//! one row per port pair, so the 5th and 6th fields of a row are the local and remote ports
//! (drp-scripts rebuild `mkpprcpath` from them). `SS` is the target LSS's SSID (its LCU's, or
//! `FFxx` for an FB LSS [D]). `State` is `Success` when the port pair's link answers a ping,
//! else `Failed` [C for the word]; `-l` (extension) adds `tgtdev`, `consistgrp` (Enabled or
//! Disabled) and `reason`: `-`, `Down` (no link: the remote image is gone or connecting
//! failed) or `Secondary Unavailable` (the link does not answer: an outage) [C for the reason
//! words, DS8K10-mirroring-paths; which one we show is our choice].

use super::{act, check_lss, ids, image_of, print_report, remove_each};
use crate::dscli::ids as idp;
use crate::dscli::messages::{self, exit};
use crate::dscli::report::Report;
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{PathState, PprcPathView, Reply, Request};
use flashtrack::id::{ImageId, LssId};

/// Most port pairs per path (dscli-spec.md §3.3).
const MAX_PORT_PAIRS: usize = 8;

fn lss_flag(s: &mut Session, inv: &Invocation, flag: &str) -> Res<LssId> {
    let v = inv.flag(flag).expect("required flag checked by the parser");
    match parse_lss(v) {
        Some(l) => Ok(l),
        None => s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, "2 hex digits expected"]), exit::SYNTAX),
    }
}

pub(super) fn parse_lss(v: &str) -> Option<LssId> {
    (v.len() == 2 && v.chars().all(|c| c.is_ascii_hexdigit())).then(|| LssId(u8::from_str_radix(v, 16).expect("hex")))
}

fn parse_port(p: &str) -> Option<String> {
    let ok = p.len() == 5 && p.starts_with(['I', 'i']) && p[1..].chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| p.to_ascii_uppercase())
}

/// `-remotewwnn`: 16 hex digits.
fn wwnn_flag(s: &mut Session, inv: &Invocation) -> Res<Option<String>> {
    match inv.flag("-remotewwnn") {
        None => Ok(None),
        Some(w) if w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()) => Ok(Some(w.to_ascii_uppercase())),
        Some(w) => s.fail(messages::MALFORMED_ID.line(inv.verb.name, &[w, "WWNN"]), exit::SYNTAX),
    }
}

/// `-remotedev`, else the profile's or `setenv`'s remotedevid.
fn remote_dev(s: &mut Session, inv: &Invocation) -> Res<ImageId> {
    if let Some(d) = inv.flag("-remotedev") {
        return idp::image(d).or_else(|e| super::bad_id(s, inv, e));
    }
    match s.effective(inv).remotedevid {
        Some(d) => Ok(d),
        None => s.fail(messages::MISSING_FLAG.line(inv.verb.name, &["-remotedev"]), exit::SYNTAX),
    }
}

pub fn mkpprcpath(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let remote = remote_dev(s, inv)?;
    let wwnn = wwnn_flag(s, inv)?.expect("-remotewwnn is required");
    let src_lss = lss_flag(s, inv, "-srclss")?;
    let tgt_lss = lss_flag(s, inv, "-tgtlss")?;
    let mut ports = Vec::new();
    for tok in &inv.ids {
        let pair = tok.split_once(':').and_then(|(a, b)| Some((parse_port(a)?, parse_port(b)?)));
        match pair {
            Some(p) => ports.push(p),
            None => return s.fail(messages::MALFORMED_ID.line(verb, &[tok, "I/O port pair"]), exit::SYNTAX),
        }
    }
    if ports.len() > MAX_PORT_PAIRS {
        let n = ports.len().to_string();
        return s.fail(messages::BAD_VALUE.line(verb, &["port pairs", &n, "1 to 8 expected"]), exit::SYNTAX);
    }
    let none: [idp::Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    check_lss(s, inv, &image, [src_lss])?;
    check_lss(s, inv, &remote, [tgt_lss])?;
    s.banner(inv, Some(&image))?;
    let name = format!("{src_lss}:{tgt_lss}");
    let consistgrp = inv.has("-consistgrp");
    let req = Request::PprcPathCreate { image, remote, remote_wwnn: wwnn, src_lss, tgt_lss, consistgrp, ports };
    act(s, inv, req, &[name])
}

fn state_words(st: PathState) -> (&'static str, &'static str) {
    match st {
        PathState::Success => ("Success", "-"),
        PathState::FailedDown => ("Failed", "Down"),
        PathState::FailedSecondaryUnavailable => ("Failed", "Secondary Unavailable"),
    }
}

pub fn path_report(image: &ImageId, views: &[&PprcPathView], long: bool, full: bool) -> Report {
    let mut cols = vec!["Src", "Tgt", "State", "SS", "Port", "Attached Port", "Tgt WWNN"];
    if long {
        cols.extend(["tgtdev", "consistgrp", "reason"]);
    }
    let mut r = Report::new("PPRCPath", &cols);
    for v in views {
        let rec = &v.record;
        let (src, tgt) = if full {
            (format!("{image}/{}", rec.src_lss), format!("{}/{}", rec.remote, rec.tgt_lss))
        } else {
            (rec.src_lss.to_string(), rec.tgt_lss.to_string())
        };
        for p in &v.ports {
            let (state, reason) = state_words(p.state);
            let mut row = vec![
                src.clone(),
                tgt.clone(),
                state.into(),
                format!("{:04X}", v.tgt_ssid),
                p.port.clone(),
                p.attached.clone(),
                rec.remote_wwnn.clone(),
            ];
            if long {
                let cg = if rec.consistgrp { "Enabled" } else { "Disabled" };
                row.extend([rec.remote.to_string(), cg.into(), reason.into()]);
            }
            r.push(row);
        }
    }
    r
}

pub fn lspprcpath(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let wanted = ids(s, inv, idp::lss(&inv.ids, "LSS"))?;
    let image = image_of(s, inv, &wanted)?;
    check_lss(s, inv, &image, wanted.iter().map(|w| w.id))?;
    s.banner(inv, Some(&image))?;
    let all = match s.query(verb, Request::PprcPathList { image: image.clone() })? {
        Reply::PprcPaths(p) => p,
        other => return s.protocol(verb, &other),
    };
    let views: Vec<&PprcPathView> =
        all.iter().filter(|v| wanted.is_empty() || wanted.iter().any(|w| w.id == v.record.src_lss)).collect();
    let full = s.effective(inv).fullid;
    let r = path_report(&image, &views, inv.has("-l"), full);
    print_report(s, inv, &r, false)
}

pub fn rmpprcpath(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let remote = remote_dev(s, inv)?;
    let wwnn = wwnn_flag(s, inv)?;
    let mut pairs = Vec::new();
    for tok in &inv.ids {
        match tok.split_once(':').and_then(|(a, b)| Some((parse_lss(a)?, parse_lss(b)?))) {
            Some(p) => pairs.push(p),
            None => return s.fail(messages::MALFORMED_ID.line(verb, &[tok, "LSS pair"]), exit::SYNTAX),
        }
    }
    let none: [idp::Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    check_lss(s, inv, &image, pairs.iter().map(|p| p.0))?;
    check_lss(s, inv, &remote, pairs.iter().map(|p| p.1))?;
    s.banner(inv, Some(&image))?;
    let each = pairs
        .iter()
        .map(|&(src_lss, tgt_lss)| {
            let req = Request::PprcPathRemove {
                image: image.clone(),
                remote: remote.clone(),
                remote_wwnn: wwnn.clone(),
                src_lss,
                tgt_lss,
                force: inv.has("-force"),
            };
            (format!("{src_lss}:{tgt_lss}"), req)
        })
        .collect();
    remove_each(s, inv, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::control::PortPathView;
    use flashtrack::image::record::PprcPathRecord;

    #[test]
    fn one_row_per_port_pair_ports_in_fields_5_and_6() {
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let remote: ImageId = "IBM.2107-75FA150".parse().unwrap();
        let v = PprcPathView {
            record: PprcPathRecord {
                src_lss: LssId(1),
                remote: remote.clone(),
                remote_wwnn: "5005076303FFC663".into(),
                tgt_lss: LssId(1),
                consistgrp: false,
                ports: vec![],
            },
            tgt_ssid: 0xFF01,
            ports: vec![
                PortPathView { port: "I0000".into(), attached: "I0001".into(), state: PathState::Success },
                PortPathView { port: "I0002".into(), attached: "I0003".into(), state: PathState::FailedDown },
            ],
        };
        let text =
            path_report(&img, &[&v], false, false).render(Style { format: Format::Default, delim: ',', header: true });
        let rows: Vec<&str> = text.lines().skip(2).collect();
        let fields: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(fields, ["01", "01", "Failed", "FF01", "I0002", "I0003", "5005076303FFC663"]);
        assert!(rows[0].contains("Success"));
        assert_eq!(parse_lss("1f"), Some(LssId(0x1F)));
        assert_eq!(parse_lss("100"), None);
        assert_eq!(parse_port("i0a10").as_deref(), Some("I0A10"));
        assert_eq!(parse_port("I001"), None);
    }
}
