//! Remote Mirror and Copy (PPRC) volume pairs: `mkpprc`, `resumepprc`, `failoverpprc`,
//! `failbackpprc`, `pausepprc`, `rmpprc`, `freezepprc`, `unfreezepprc`, and `-wait` with its
//! progress bar. `lspprc` is in [`super::pprc_list`], the path verbs in [`super::pprc`].
//!
//! Images (dscli-spec.md §2.4, §3.4 [C]): a pair is `source:target`, the source a volume of
//! the `-dev` image and the target a volume of the `-remotedev` image; either side may be
//! fully qualified instead (`IBM.2107-75FA120/0100:IBM.2107-75FA150/0100`). `-remotedev` (or
//! the profile's or `setenv`'s remotedevid) is required whenever `-dev` is given, and whenever
//! the targets are not fully qualified. flashtrack needs it for the single-volume forms of
//! `pausepprc`/`rmpprc` (`-at src|tgt -unconditional 0100`) too: the engine finds a pair by
//! its remote image. `failoverpprc` is issued at the secondary's image, pairs written
//! `secondary:primary` (dscli-spec.md §3.4 [C]).
//!
//! Parameters accepted without effect, and parameters refused:
//! * `-tgtonline` and `-resetreserve` override a host holding the target online (CKD) or a
//!   SCSI reserve on it (FB). flashtrack's hosts reach volumes over NBD (or the FUSE view),
//!   which has neither, so there is nothing to override: accepted, no effect.
//! * `-cascade` (the source may be another pair's secondary): flashtrack has no cascaded
//!   pairs, so it is refused ([`messages::NOT_SUPPORTED`]) rather than ignored.
//! * `-suspend` (`resumepprc`, `failbackpprc`: suspend when the copy is done): refused the
//!   same way; wait for the copy (`resumepprc -wait`, or `lspprc`), then `pausepprc`.
//! * `-srcss`/`-tgtss`: checked for form (1-4 hex digits, not 0) and for the rule that comes
//!   with them, every ID in one source LSS and one target LSS [C]; the value is not compared
//!   with the LSS's SSID.
//!
//! Each pair succeeds or fails alone: one line per pair in input order, the exit code of the
//! last failure, as FlashCopy. `rmpprc` asks per pair unless `-quiet`. All syntax (IDs,
//! values, the rules above) is checked before anything is sent to flashd.
//!
//! `-wait` (`mkpprc`, `resumepprc`): after the request, `PprcWait` is sent in slices of
//! [`WAIT_SLICE_MS`] until every pair that succeeded is full duplex (Metro Mirror), has
//! finished its first pass (Global Copy), is suspended or gone; then the usual lines are
//! printed. The progress bar (out-of-sync tracks sent) is drawn on stderr only when stderr is
//! a terminal, as for FlashCopy.

use super::flash::{Bar, Pair, WAIT_SLICE_MS, pair_name, print, send, succeeded};
use super::pprc::parse_lss;
use super::{bad_id, check_lss, confirmed, image_of};
use crate::dscli::ids::{self as idp, IdError, Scoped};
use crate::dscli::messages::{self, exit};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{PprcSelect, PprcSide, PprcSpec, PprcView, Reply, Request};
use flashtrack::id::{ImageId, LssId};
use flashtrack::image::record::{PprcPhase, PprcRole, PprcType};
use std::io::IsTerminal;

/// Why `-cascade` is refused.
const CASCADE_WHY: &str = "flashtrack has no cascaded pairs (a secondary cannot be the source of another pair)";
/// Why `-suspend` is refused.
const SUSPEND_WHY: &str = "a pair cannot be set to suspend when its copy is done; wait for the copy (resumepprc -wait, lspprc), then run pausepprc";

/// `-type mmir|gcp` (the verb table makes it required where DS CLI does).
pub fn pprc_type(inv: &Invocation) -> PprcType {
    match inv.flag("-type") {
        Some("gcp") => PprcType::GlobalCopy,
        _ => PprcType::MetroMirror,
    }
}

/// Refuses `-cascade` and `-suspend` (see the module docs).
fn refuse_unsupported(s: &mut Session, inv: &Invocation) -> Res<()> {
    for (flag, why) in [("-cascade", CASCADE_WHY), ("-suspend", SUSPEND_WHY)] {
        if inv.has(flag) {
            return s.fail(messages::NOT_SUPPORTED.line(inv.verb.name, &[flag, why]), exit::SYNTAX);
        }
    }
    Ok(())
}

/// `-srcss`/`-tgtss`: a subsystem ID, 1-4 hex digits, 0001-FFFF (dscli-spec.md §2.2).
pub(super) fn ssid(s: &mut Session, inv: &Invocation, flag: &str) -> Res<Option<u16>> {
    let Some(v) = inv.flag(flag) else {
        return Ok(None);
    };
    let hex = !v.is_empty() && v.len() <= 4 && v.chars().all(|c| c.is_ascii_hexdigit());
    match u16::from_str_radix(v, 16) {
        Ok(n) if hex && n != 0 => Ok(Some(n)),
        _ => s.fail(messages::BAD_VALUE.line(inv.verb.name, &[flag, v, "0001-FFFF expected"]), exit::SYNTAX),
    }
}

/// One object of a command for the `-srcss`/`-tgtss` rule: its name, source LSS and target
/// LSS (unknown for a single volume).
type LssOf = (String, LssId, Option<LssId>);

/// The first object that breaks "one source LSS and one target LSS", and the LSS pair it
/// breaks it against (`10:11`, or `10` when no target LSS is known).
pub fn off_lss_pair(objects: &[LssOf]) -> Option<(String, String)> {
    let (_, src, _) = objects.first()?;
    let tgt = objects.iter().find_map(|o| o.2);
    let bad = objects.iter().find(|(_, s, t)| s != src || t.zip(tgt).is_some_and(|(t, first)| t != first))?;
    let want = match tgt {
        Some(t) => format!("{src}:{t}"),
        None => src.to_string(),
    };
    Some((bad.0.clone(), want))
}

/// Checks the subsystem ID flags and, when one is given, their one-LSS-pair rule.
fn ss_rule(s: &mut Session, inv: &Invocation, objects: &[LssOf]) -> Res<()> {
    let src = ssid(s, inv, "-srcss")?;
    let tgt = ssid(s, inv, "-tgtss")?;
    if (src.is_some() || tgt.is_some())
        && let Some((bad, want)) = off_lss_pair(objects)
    {
        return s.fail(messages::ONE_LSS_PAIR.line(inv.verb.name, &[&bad, &want]), exit::SYNTAX);
    }
    Ok(())
}

/// The remote image: from fully qualified target IDs, `-remotedev`, or remotedevid. Required
/// when `-dev` is given (dscli-spec.md §3.4 [C]) and when nothing else names it. Sends nothing.
pub fn remote_image<T>(s: &mut Session, inv: &Invocation, targets: &[Scoped<T>]) -> Res<ImageId> {
    let verb = inv.verb.name;
    let from_ids = match idp::common_image(targets) {
        Ok(i) => i,
        Err((a, b)) => {
            return s.fail(messages::IMAGE_CONFLICT.line(verb, &[&a.to_string(), &b.to_string()]), exit::SYNTAX);
        }
    };
    let named = match inv.flag("-remotedev") {
        Some(d) => Some(idp::image(d).or_else(|e| bad_id(s, inv, e))?),
        None => s.effective(inv).remotedevid,
    };
    match (from_ids, named) {
        (Some(a), Some(b)) if a != b => {
            s.fail(messages::IMAGE_CONFLICT.line(verb, &[&b.to_string(), &a.to_string()]), exit::SYNTAX)
        }
        (_, None) if inv.has("-dev") => s.fail(messages::MISSING_FLAG.line(verb, &["-remotedev"]), exit::SYNTAX),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => s.fail(messages::MISSING_FLAG.line(verb, &["-remotedev"]), exit::SYNTAX),
    }
}

fn unscoped<T>(s: &Scoped<T>) -> Scoped<()> {
    Scoped { image: s.image.clone(), id: () }
}

/// Both images and the pairs, all checked: IDs, subsystem IDs, LSS ranges.
fn pair_ids(s: &mut Session, inv: &Invocation) -> Res<(ImageId, ImageId, Vec<Pair>)> {
    let parsed = idp::pprc_pairs(&inv.ids).or_else(|e| bad_id(s, inv, e))?;
    let pairs: Vec<Pair> = parsed.iter().map(|(a, b)| (a.id, b.id)).collect();
    let lss: Vec<LssOf> = pairs.iter().map(|p| (pair_name(p), p.0.lss(), Some(p.1.lss()))).collect();
    ss_rule(s, inv, &lss)?;
    let sources: Vec<Scoped<()>> = parsed.iter().map(|(a, _)| unscoped(a)).collect();
    let targets: Vec<Scoped<()>> = parsed.iter().map(|(_, b)| unscoped(b)).collect();
    let remote = remote_image(s, inv, &targets)?;
    let image = image_of(s, inv, &sources)?;
    check_lss(s, inv, &image, pairs.iter().map(|p| p.0.lss()))?;
    check_lss(s, inv, &remote, pairs.iter().map(|p| p.1.lss()))?;
    Ok((image, remote, pairs))
}

/// `0100:0200`, or `0100` for a single volume.
pub fn select_name(p: &PprcSelect) -> String {
    match p.target {
        Some(t) => pair_name(&(p.source, t)),
        None => p.source.to_string(),
    }
}

/// `-at src|tgt`.
fn side(inv: &Invocation) -> Option<PprcSide> {
    match inv.flag("-at") {
        Some("src") => Some(PprcSide::Source),
        Some("tgt") => Some(PprcSide::Target),
        _ => None,
    }
}

/// `pausepprc`/`rmpprc` IDs in input order: pairs, or single volumes (this end's) with `-at`
/// and `-unconditional`; both images, all checked.
fn selects(s: &mut Session, inv: &Invocation) -> Res<(ImageId, ImageId, Vec<PprcSelect>)> {
    let verb = inv.verb.name;
    if inv.has("-unconditional") && !inv.has("-at") {
        return s.fail(messages::NEEDS_PARAM.line(verb, &["-unconditional", "-at"]), exit::SYNTAX);
    }
    let single_ok = inv.has("-at") && inv.has("-unconditional");
    let mut sources = Vec::new();
    let mut targets = Vec::new();
    let mut out = Vec::new();
    for t in &inv.ids {
        let one = std::slice::from_ref(t);
        if t.contains(':') {
            for (a, b) in idp::pprc_pairs(one).or_else(|e| bad_id(s, inv, e))? {
                out.push(PprcSelect { source: a.id, target: Some(b.id) });
                sources.push(unscoped(&a));
                targets.push(unscoped(&b));
            }
            continue;
        }
        let vols = idp::volumes(one).or_else(|e| bad_id(s, inv, e))?;
        if !single_ok {
            return s.fail(messages::SINGLE_VOLUME.line(verb, &[t]), exit::SYNTAX);
        }
        for v in vols {
            out.push(PprcSelect { source: v.id, target: None });
            sources.push(unscoped(&v));
        }
    }
    let lss: Vec<LssOf> = out.iter().map(|p| (select_name(p), p.source.lss(), p.target.map(|t| t.lss()))).collect();
    ss_rule(s, inv, &lss)?;
    let remote = remote_image(s, inv, &targets)?;
    let image = image_of(s, inv, &sources)?;
    check_lss(s, inv, &image, out.iter().map(|p| p.source.lss()))?;
    check_lss(s, inv, &remote, out.iter().filter_map(|p| p.target.map(|t| t.lss())))?;
    Ok((image, remote, out))
}

/// `mkpprc`, `resumepprc`, `failoverpprc`, `failbackpprc`: pairs, `-type`, one request.
pub fn establish(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    refuse_unsupported(s, inv)?;
    let (image, remote, pairs) = pair_ids(s, inv)?;
    s.banner(inv, Some(&image))?;
    let kind = pprc_type(inv);
    let spec = PprcSpec {
        kind,
        nocopy: inv.flag("-mode") == Some("nocp"),
        tgtread: inv.has("-tgtread"),
        critmode: inv.has("-critmode"),
    };
    let (img, list) = (image.clone(), pairs.clone());
    let req = match verb {
        "mkpprc" => Request::PprcCreate { image: img, remote, pairs: list, spec },
        "resumepprc" => Request::PprcResume { image: img, remote, pairs: list, spec },
        "failoverpprc" => Request::PprcFailover { image: img, remote, pairs: list, kind },
        _ => Request::PprcFailback { image: img, remote, pairs: list, spec },
    };
    let objects: Vec<String> = pairs.iter().map(pair_name).collect();
    let items = send(s, verb, req, &objects, false)?;
    let waited = inv.has("-wait");
    if waited {
        wait(s, verb, &image, succeeded(&pairs, &items))?;
    }
    let ok = if waited && verb == "resumepprc" { messages::RESUMEPPRC_WAITED } else { messages::success(verb) };
    print(s, verb, &items, ok)
}

/// `pausepprc`: one request for all pairs.
pub fn pause(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let (image, remote, pairs) = selects(s, inv)?;
    s.banner(inv, Some(&image))?;
    let objects: Vec<String> = pairs.iter().map(select_name).collect();
    let req = Request::PprcPause { image, remote, pairs, at: side(inv) };
    let items = send(s, verb, req, &objects, true)?;
    print(s, verb, &items, messages::success(verb))
}

/// `rmpprc`: per pair, ask (unless `-quiet`), remove, print.
pub fn remove(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let (image, remote, pairs) = selects(s, inv)?;
    s.banner(inv, Some(&image))?;
    let at = side(inv);
    let mut last = exit::OK;
    for pair in pairs {
        let name = select_name(&pair);
        if confirmed(s, inv, vec![name.clone()])?.is_empty() {
            continue;
        }
        let req = Request::PprcRemove { image: image.clone(), remote: remote.clone(), pairs: vec![pair], at };
        let items = send(s, verb, req, &[name], true)?;
        let code = print(s, verb, &items, messages::success(verb))?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

/// A source and a target LSS, each with the image it named.
pub type LssPair = (Scoped<LssId>, Scoped<LssId>);

/// LSS pairs `SS:TT`, either side fully qualified (`IBM.2107-75FA120/10:11`).
pub fn lss_pairs(tokens: &[String]) -> Result<Vec<LssPair>, IdError> {
    tokens
        .iter()
        .map(|t| {
            let err = || IdError { token: t.clone(), what: "LSS pair" };
            let (a, b) = t.split_once(':').ok_or_else(err)?;
            let one = |side: &str| -> Result<Scoped<LssId>, IdError> {
                // One LSS, not a range: `parse_lss` wants exactly two digits, as -srclss does.
                let (img, local) = match side.rsplit_once('/') {
                    Some((i, l)) => (Some(idp::image(i).map_err(|_| err())?), l),
                    None => (None, side),
                };
                Ok(Scoped { image: img, id: parse_lss(local).ok_or_else(err)? })
            };
            Ok((one(a)?, one(b)?))
        })
        .collect()
}

/// `freezepprc`, `unfreezepprc`: LSS pairs, one request, one line per LSS pair.
pub fn freeze(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let parsed = lss_pairs(&inv.ids).or_else(|e| bad_id(s, inv, e))?;
    let lss: Vec<(LssId, LssId)> = parsed.iter().map(|(a, b)| (a.id, b.id)).collect();
    let objects: Vec<String> = lss.iter().map(|(a, b)| format!("{a}:{b}")).collect();
    let rule: Vec<LssOf> = objects.iter().zip(&lss).map(|(o, (a, b))| (o.clone(), *a, Some(*b))).collect();
    ss_rule(s, inv, &rule)?;
    let sources: Vec<Scoped<()>> = parsed.iter().map(|(a, _)| unscoped(a)).collect();
    let targets: Vec<Scoped<()>> = parsed.iter().map(|(_, b)| unscoped(b)).collect();
    let remote = remote_image(s, inv, &targets)?;
    let image = image_of(s, inv, &sources)?;
    check_lss(s, inv, &image, lss.iter().map(|l| l.0))?;
    check_lss(s, inv, &remote, lss.iter().map(|l| l.1))?;
    s.banner(inv, Some(&image))?;
    let (req, ok) = if verb == "freezepprc" {
        (Request::PprcFreeze { image, remote, lss }, messages::FREEZEPPRC)
    } else {
        (Request::PprcUnfreeze { image, remote, lss }, messages::success(verb))
    };
    let items = send(s, verb, req, &objects, false)?;
    print(s, verb, &items, ok)
}

/// The view of `pair` at this end (the pair's ID is `source:target` at either end).
fn view_of<'a>(pair: &Pair, views: &'a [PprcView]) -> Option<&'a PprcView> {
    views.iter().find(|v| v.record.ids() == *pair)
}

/// Whether every pair has got where `-wait` waits for: full duplex (Metro Mirror), first pass
/// done (Global Copy), suspended, or gone (as `PprcWait` in the engine).
pub fn settled(pairs: &[Pair], views: &[PprcView]) -> bool {
    pairs.iter().all(|p| match view_of(p, views) {
        None => true,
        Some(v) => match v.record.phase {
            PprcPhase::FullDuplex | PprcPhase::Suspended => true,
            PprcPhase::CopyPending => v.record.kind == PprcType::GlobalCopy && v.record.first_pass,
        },
    })
}

/// Tracks still to send over the pairs that are copying (a suspended pair sends nothing).
pub fn pending(pairs: &[Pair], views: &[PprcView]) -> u64 {
    pairs
        .iter()
        .filter_map(|p| view_of(p, views))
        .filter(|v| v.record.role == PprcRole::Primary && v.record.phase == PprcPhase::CopyPending)
        .map(|v| v.out_of_sync)
        .sum()
}

/// Waits until `pairs` (at `image`, their primary) are settled, drawing the progress bar.
fn wait(s: &mut Session, verb: &str, image: &ImageId, pairs: Vec<Pair>) -> Res<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    s.out.flush()?;
    let mut bar = Bar::new(std::io::stderr().is_terminal());
    loop {
        let req = Request::PprcWait { image: image.clone(), pairs: pairs.clone(), timeout_ms: WAIT_SLICE_MS };
        let views = match s.query(verb, req) {
            Ok(Reply::Pprc(v)) => v,
            Ok(other) => {
                bar.finish();
                return s.protocol(verb, &other);
            }
            Err(stop) => {
                bar.finish();
                return Err(stop);
            }
        };
        // The bar counts sent tracks against the most ever pending.
        bar.show(0, pending(&pairs, &views));
        if settled(&pairs, &views) {
            bar.finish();
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pprc_list::tests::view;
    use super::*;
    use flashtrack::id::VolumeId;

    fn p(a: u16, b: u16) -> Pair {
        (VolumeId(a), VolumeId(b))
    }

    #[test]
    fn one_lss_pair_rule() {
        let o = |n: &str, s: u8, t: Option<u8>| (n.to_string(), LssId(s), t.map(LssId));
        assert_eq!(off_lss_pair(&[]), None);
        assert_eq!(off_lss_pair(&[o("0100:0200", 1, Some(2)), o("0101:0201", 1, Some(2))]), None);
        assert_eq!(
            off_lss_pair(&[o("0100:0200", 1, Some(2)), o("0101:0301", 1, Some(3))]),
            Some(("0101:0301".into(), "01:02".into()))
        );
        assert_eq!(
            off_lss_pair(&[o("0100", 1, None), o("0200", 2, None)]),
            Some(("0200".into(), "01".into())),
            "single volumes: the source LSS only"
        );
        assert_eq!(off_lss_pair(&[o("0100", 1, None), o("0101:0201", 1, Some(2))]), None);
    }

    #[test]
    fn lss_pair_ids() {
        let t = |s: &str| vec![s.to_string()];
        let l = lss_pairs(&t("1a:0F")).unwrap();
        assert_eq!((l[0].0.id, l[0].1.id), (LssId(0x1A), LssId(0x0F)));
        let l = lss_pairs(&t("IBM.2107-75FA120/10:IBM.2107-75FA150/11")).unwrap();
        assert_eq!(l[0].1.image.as_ref().unwrap().to_string(), "IBM.2107-75FA150");
        for bad in ["10", "1:2", "10:11:12", "10-11:12-13", "100:11", "IBM.2107-75FA1/10:11", ":11"] {
            assert_eq!(lss_pairs(&t(bad)).unwrap_err().token, bad);
        }
    }

    #[test]
    fn names() {
        assert_eq!(select_name(&PprcSelect { source: VolumeId(0x100), target: Some(VolumeId(0x200)) }), "0100:0200");
        assert_eq!(select_name(&PprcSelect { source: VolumeId(0x100), target: None }), "0100");
    }

    #[test]
    fn wait_settles_like_the_engine() {
        use PprcPhase::*;
        let mm = |phase| view(0x100, 0x200, PprcRole::Primary, PprcType::MetroMirror, phase);
        let gc = |phase| view(0x101, 0x201, PprcRole::Primary, PprcType::GlobalCopy, phase);
        let pairs = [p(0x100, 0x200), p(0x101, 0x201)];
        assert!(settled(&pairs, &[]), "gone pairs are done");
        assert!(!settled(&pairs, &[mm(CopyPending)]));
        assert!(settled(&pairs, &[mm(FullDuplex)]));
        assert!(settled(&pairs, &[mm(Suspended)]));
        assert!(!settled(&pairs, &[mm(FullDuplex), gc(CopyPending)]), "Global Copy waits for its first pass");
        let mut first = gc(CopyPending);
        first.record.first_pass = true;
        assert!(settled(&pairs, &[mm(FullDuplex), first]));

        let mut a = mm(CopyPending);
        a.out_of_sync = 10;
        let mut b = gc(Suspended);
        b.out_of_sync = 7;
        let mut other = view(0x102, 0x202, PprcRole::Primary, PprcType::GlobalCopy, CopyPending);
        other.out_of_sync = 100;
        assert_eq!(pending(&pairs, &[a, b, other]), 10, "suspended and unwaited pairs do not count");
    }

    #[test]
    fn types() {
        use crate::dscli::verb;
        let inv = |line: &str| {
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            verb::parse(verb::find(&words[0]).unwrap(), &words[1..], false).unwrap()
        };
        assert_eq!(pprc_type(&inv("mkpprc -type GCP 0100:0200")), PprcType::GlobalCopy);
        assert_eq!(pprc_type(&inv("resumepprc -type mmir 0100:0200")), PprcType::MetroMirror);
    }
}
