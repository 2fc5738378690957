//! The mirror links of PPRC paths (extensions; DS CLI has no `*link` verbs): `lslink` shows
//! each port pair's link, `chlink` changes its simulated line while flashd runs.
//!
//! `lslink` columns `Path Port Attached Port State` (ours): one row per port pair of each
//! path, as `lspprcpath` lists them; `Path` is `SS:TT` (`-fullid`: `IMAGE/SS:REMOTE/TT`);
//! `State` is `up` (connected, no outage) or `down`. Nothing is sent over the links, so the
//! counters are not disturbed by looking (`lspprcpath` pings). `-l` adds `tgtdev`, the line
//! (`bandwidth (MiB/s)` or `unlimited`, `latency (ms)`, `jitter (ms)`, `loss (%)`, `rto (ms)`,
//! `outage` on/off) and the counters of this image's end since the link connected (`bytes
//! out`, `bytes in`, `msgs out`, `msgs in`, `retransmissions`, `outcome unknown`; `-` without
//! a link). `-s` lists each path once.
//!
//! `chlink` takes at least one setting and the paths `SS:TT`; every value is checked here
//! before anything is sent (and again by flashd). It changes every port pair of each path
//! (`-remotedev` narrows the paths to one remote image) and prints one line per port pair.
//! Settings reach both ends of a link and are kept for a link flashd makes again, but not
//! across a flashd restart (see engine/src/mirror/linkprops.rs).

use super::{act, bad_id, check_lss, image_of, print_report};
use crate::dscli::ids as idp;
use crate::dscli::messages::{self, exit};
use crate::dscli::report::Report;
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{LinkChange, LinkView, Reply, Request};
use flashtrack::id::{ImageId, LssId};
use flashtrack::link::LinkProps;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// Highest `-bw`: 1 TiB/s in MiB/s.
const MAX_BW_MIB: u64 = 1 << 20;
/// Highest `-latency`, `-jitter`, `-rto` in ms (the engine's `MAX_DELAY`).
const MAX_DELAY_MS: u64 = 10_000;
/// Highest `-loss` in percent (the engine's `MAX_LOSS`).
const MAX_LOSS_PCT: u64 = 99;

/// A non-negative decimal with at most `decimals` digits after the point, scaled by
/// 10^decimals (`fixed("12.5", 3)` = 12500). No sign, no exponent.
fn fixed(v: &str, decimals: u32) -> Option<u64> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > decimals as usize {
        return None;
    }
    let scale = 10u64.pow(decimals);
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u64 =
        if frac.is_empty() { 0 } else { format!("{frac:0<width$}", width = decimals as usize).parse().ok()? };
    int.checked_mul(scale)?.checked_add(frac)
}

/// `SS:TT`, two hex digits each.
fn lss_pair(tok: &str) -> Option<(LssId, LssId)> {
    let one = |v: &str| {
        (v.len() == 2 && v.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| LssId(u8::from_str_radix(v, 16).expect("hex")))
    };
    let (a, b) = tok.split_once(':')?;
    Some((one(a)?, one(b)?))
}

fn lss_pairs(s: &mut Session, inv: &Invocation) -> Res<Vec<(LssId, LssId)>> {
    let mut pairs = Vec::new();
    for tok in &inv.ids {
        match lss_pair(tok) {
            Some(p) => pairs.push(p),
            None => return s.fail(messages::MALFORMED_ID.line(inv.verb.name, &[tok, "LSS pair"]), exit::SYNTAX),
        }
    }
    Ok(pairs)
}

/// `-remotedev`: selects paths to one remote image (a filter: no profile default).
fn remote_filter(s: &mut Session, inv: &Invocation) -> Res<Option<ImageId>> {
    match inv.flag("-remotedev") {
        None => Ok(None),
        Some(d) => idp::image(d).map(Some).or_else(|e| bad_id(s, inv, e)),
    }
}

/// The image, after the LSS range checks of both ends.
fn target(s: &mut Session, inv: &Invocation, pairs: &[(LssId, LssId)], remote: Option<&ImageId>) -> Res<ImageId> {
    let none: [idp::Scoped<()>; 0] = [];
    let image = image_of(s, inv, &none)?;
    check_lss(s, inv, &image, pairs.iter().map(|p| p.0))?;
    if let Some(r) = remote {
        check_lss(s, inv, r, pairs.iter().map(|p| p.1))?;
    }
    Ok(image)
}

/// `n` with at most `decimals` decimals, trailing zeros dropped.
fn trim(n: f64, decimals: usize) -> String {
    let t = format!("{n:.decimals$}");
    if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t }
}

fn ms(d: Duration) -> String {
    trim(d.as_secs_f64() * 1000.0, 3)
}

/// The line's columns of `lslink -l`.
fn line_cells(p: &LinkProps) -> [String; 6] {
    let bw = if p.bandwidth == 0 { "unlimited".to_string() } else { trim(p.bandwidth as f64 / MIB as f64, 3) };
    let outage = if p.outage { "on" } else { "off" };
    [bw, ms(p.latency), ms(p.jitter), trim(p.loss * 100.0, 4), ms(p.rto), outage.into()]
}

pub fn link_report(image: &ImageId, views: &[&LinkView], long: bool, full: bool) -> Report {
    let mut cols = vec!["Path", "Port", "Attached Port", "State"];
    if long {
        cols.extend(["tgtdev", "bandwidth (MiB/s)", "latency (ms)", "jitter (ms)", "loss (%)", "rto (ms)", "outage"]);
        cols.extend(["bytes out", "bytes in", "msgs out", "msgs in", "retransmissions", "outcome unknown"]);
    }
    let mut r = Report::new("MirrorLink", &cols);
    for v in views {
        let path = if full {
            format!("{image}/{}:{}/{}", v.src_lss, v.remote, v.tgt_lss)
        } else {
            format!("{}:{}", v.src_lss, v.tgt_lss)
        };
        let state = if v.up { "up" } else { "down" };
        let mut row = vec![path, v.port.clone(), v.attached.clone(), state.into()];
        if long {
            row.push(v.remote.to_string());
            row.extend(line_cells(&v.props));
            let counters = match &v.stats {
                Some(s) => [s.tx_bytes, s.rx_bytes, s.tx_messages, s.rx_messages, s.retransmissions, s.outcome_unknown]
                    .map(|n| n.to_string()),
                None => std::array::from_fn(|_| "-".to_string()),
            };
            row.extend(counters);
        }
        r.push(row);
    }
    r
}

pub fn lslink(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let pairs = lss_pairs(s, inv)?;
    let remote = remote_filter(s, inv)?;
    let image = target(s, inv, &pairs, remote.as_ref())?;
    s.banner(inv, Some(&image))?;
    let all = match s.query(verb, Request::LinkList { image: image.clone() })? {
        Reply::Links(l) => l,
        other => return s.protocol(verb, &other),
    };
    let views: Vec<&LinkView> = all
        .iter()
        .filter(|v| remote.as_ref().is_none_or(|r| v.remote == *r))
        .filter(|v| pairs.is_empty() || pairs.contains(&(v.src_lss, v.tgt_lss)))
        .collect();
    let full = s.effective(inv).fullid;
    let mut r = link_report(&image, &views, inv.has("-l"), full);
    if inv.has("-s") {
        r = r.short("Path");
        r.rows.dedup();
    }
    print_report(s, inv, &r, false)
}

/// A setting's value, or the range message (exit 2).
fn setting<T>(
    s: &mut Session,
    inv: &Invocation,
    flag: &str,
    why: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Res<Option<T>> {
    let Some(v) = inv.flag(flag) else { return Ok(None) };
    match parse(v) {
        Some(x) => Ok(Some(x)),
        None => s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, why]), exit::SYNTAX),
    }
}

/// A delay in ms (at most 3 decimals) within `min_us..=MAX_DELAY_MS`.
fn delay(min_us: u64) -> impl Fn(&str) -> Option<Duration> {
    move |v| fixed(v, 3).filter(|us| (min_us..=MAX_DELAY_MS * 1000).contains(us)).map(Duration::from_micros)
}

/// The settings of `chlink`, range-checked.
fn change(s: &mut Session, inv: &Invocation) -> Res<LinkChange> {
    let bandwidth = setting(s, inv, "-bw", "more than 0 and at most 1048576 MiB/s, or unlimited, expected", |v| {
        if v.eq_ignore_ascii_case("unlimited") {
            return Some(0);
        }
        let milli = fixed(v, 3).filter(|m| (1..=MAX_BW_MIB * 1000).contains(m))?;
        Some((u128::from(milli) * u128::from(MIB) / 1000) as u64)
    })?;
    let latency = setting(s, inv, "-latency", "0 to 10000 ms expected", delay(0))?;
    let jitter = setting(s, inv, "-jitter", "0 to 10000 ms expected", delay(0))?;
    let loss = setting(s, inv, "-loss", "0 to 99 percent expected", |v| {
        // Percent with 4 decimals = parts per million of probability.
        fixed(v, 4).filter(|ppm| *ppm <= MAX_LOSS_PCT * 10_000).map(|ppm| ppm as f64 / 1e6)
    })?;
    let rto = setting(s, inv, "-rto", "more than 0 and at most 10000 ms expected", delay(1))?;
    let outage = inv.flag("-outage").map(|v| v == "on");
    let c = LinkChange { bandwidth, latency, jitter, loss, rto, outage };
    if c.is_empty() {
        return s.fail(messages::NO_LINK_SETTING.line(inv.verb.name, &[]), exit::SYNTAX);
    }
    Ok(c)
}

pub fn chlink(s: &mut Session, inv: &Invocation) -> Res {
    let change = change(s, inv)?;
    let pairs = lss_pairs(s, inv)?;
    let remote = remote_filter(s, inv)?;
    let image = target(s, inv, &pairs, remote.as_ref())?;
    s.banner(inv, Some(&image))?;
    let mut last = exit::OK;
    for (src, tgt) in pairs {
        let req = Request::LinkSet {
            image: image.clone(),
            remote: remote.clone(),
            lss: Some((src, tgt)),
            ports: Vec::new(),
            change,
        };
        let code = act(s, inv, req, &[format!("{src}:{tgt}")])?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::link::LinkStats;

    #[test]
    fn fixed_point_values() {
        assert_eq!(fixed("12.5", 3), Some(12_500));
        assert_eq!(fixed("0.001", 3), Some(1));
        assert_eq!(fixed(".5", 3), Some(500));
        assert_eq!(fixed("7.", 3), Some(7_000));
        assert_eq!(fixed("10000", 3), Some(10_000_000));
        for bad in ["", ".", "-1", "1e3", "0.0001", "1.2.3", "inf", "NaN", " 1", "99999999999999999999"] {
            assert_eq!(fixed(bad, 3), None, "{bad}");
        }
        assert_eq!(lss_pair("1a:FE"), Some((LssId(0x1A), LssId(0xFE))));
        assert_eq!(lss_pair("10"), None);
        assert_eq!(lss_pair("100:11"), None);
        assert_eq!(delay(1)("0"), None);
        assert_eq!(delay(0)("0"), Some(Duration::ZERO));
        assert_eq!(delay(0)("10000.001"), None);
        assert_eq!(delay(1)("0.25"), Some(Duration::from_micros(250)));
    }

    #[test]
    fn long_rows_show_the_line_and_counters() {
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let remote: ImageId = "IBM.2107-75FA150".parse().unwrap();
        let props = LinkProps {
            bandwidth: MIB / 2,
            latency: Duration::from_micros(2_500),
            jitter: Duration::ZERO,
            loss: 0.125,
            rto: Duration::from_millis(200),
            outage: true,
        };
        let up = LinkView {
            src_lss: LssId(0x10),
            tgt_lss: LssId(0x11),
            remote: remote.clone(),
            port: "I0000".into(),
            attached: "I0001".into(),
            up: false,
            props,
            stats: Some(LinkStats {
                tx_bytes: 120,
                rx_bytes: 60,
                tx_messages: 2,
                rx_messages: 1,
                ..LinkStats::default()
            }),
        };
        let down = LinkView { up: false, props: LinkProps::default(), stats: None, port: "I0002".into(), ..up.clone() };
        let style = Style { format: Format::Delim, delim: ',', header: false };
        let text = link_report(&img, &[&up, &down], true, false).render(style);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "10:11,I0000,I0001,down,IBM.2107-75FA150,0.5,2.5,0,12.5,200,on,120,60,2,1,0,0");
        assert_eq!(rows[1], "10:11,I0002,I0001,down,IBM.2107-75FA150,unlimited,0,0,0,200,off,-,-,-,-,-,-");
        let text = link_report(&img, &[&up], false, true).render(style);
        assert_eq!(text, "IBM.2107-75FA120/10:IBM.2107-75FA150/11,I0000,I0001,down\n");
    }
}
