//! Local FlashCopy actions: `mkflash`, `resyncflash`, `reverseflash`, `setflashrevertible`,
//! `rmflash`, `commitflash`, `revertflash`, `unfreezeflash`, and `-wait` with its progress
//! bar. `lsflash` is in [`super::flash_list`]. The same code serves their remote forms
//! (`mkremoteflash` ...): a [`Route`] says whether a request goes to the image's own
//! FlashCopy or in band through a conduit LSS ([`super::remote_flash`]).
//!
//! Each pair succeeds or fails alone (flashd answers one outcome per pair; a `-freeze`
//! group is all or nothing there); one line per pair in input order, the exit code of the
//! last failure. Lines name the pair as typed, normalised (`0100:0200`).
//!
//! `-wait` (dscli-spec.md §1.2 [C]): after the request, `FlashWait` is sent in slices of
//! [`WAIT_SLICE_MS`] until every pair that succeeded has no out-of-sync tracks (or is gone);
//! then the usual lines are printed. Pairs without background copy (`-nocp`, unless being
//! withdrawn with `rmflash -cp`) or not `Valid` never get there and are not waited for. While waiting, a progress bar is drawn on stderr
//! only when stderr is a terminal: scripts and automation see nothing there.

use super::remote_flash::Conduit;
use super::{bad_id, check_lss, confirmed, ids, image_of};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::messages::{self, Message, exit};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{FlashView, ItemOutcome, Reply, Request, Response, Withdraw};
use flashtrack::flash::relationship::{FlashOptions, FlashState};
use flashtrack::id::{ImageId, LssId, VolumeId};
use std::io::{IsTerminal, Write};

/// One `FlashWait` slice: short enough for a lively progress bar.
pub const WAIT_SLICE_MS: u64 = 500;
/// How often and how long to poll for a copied relationship to end (at most 5 s).
const LINGER_POLL_MS: u64 = 10;
const LINGER_POLLS: u32 = 500;
/// Width of the progress bar in characters.
const BAR_WIDTH: usize = 40;

pub type Pair = (VolumeId, VolumeId);

/// `0100:0200`.
pub fn pair_name(p: &Pair) -> String {
    format!("{}:{}", p.0, p.1)
}

/// `-seqnum`: 1-8 hex digits (`0010`), dscli-spec.md §2.6.
pub fn seqnum(s: &mut Session, inv: &Invocation) -> Res<Option<u32>> {
    let Some(v) = inv.flag("-seqnum") else {
        return Ok(None);
    };
    let ok = !v.is_empty() && v.len() <= 8 && v.chars().all(|c| c.is_ascii_hexdigit());
    match u32::from_str_radix(v, 16) {
        Ok(n) if ok => Ok(Some(n)),
        _ => {
            s.fail(messages::BAD_VALUE.line(inv.verb.name, &["-seqnum", v, "1 to 8 hex digits expected"]), exit::SYNTAX)
        }
    }
}

/// Where a FlashCopy request goes: the image's own FlashCopy (the local verbs), or in band
/// through a conduit LSS of another image (the `*remoteflash` verbs).
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    Local,
    Conduit(&'a Conduit),
}

impl Route<'_> {
    /// The request as sent.
    pub(super) fn wrap(self, req: Request) -> Request {
        match self {
            Route::Local => req,
            Route::Conduit(c) => c.wrap(req),
        }
    }

    /// The route's own rules about the sources, checked before anything is sent.
    fn check(self, s: &mut Session, inv: &Invocation, objects: &[(String, VolumeId)]) -> Res<()> {
        match self {
            Route::Local => Ok(()),
            Route::Conduit(c) => c.check_sources(s, inv, objects),
        }
    }

    /// The source LSSs a listing keeps (`lsremoteflash -srcss`); None: all.
    pub(super) fn source_lss(self, s: &mut Session, inv: &Invocation, image: &ImageId) -> Res<Option<Vec<LssId>>> {
        match self {
            Route::Local => Ok(None),
            Route::Conduit(c) => c.source_lss(s, inv, image),
        }
    }

    /// Warnings about the sources, printed after the banner.
    fn warn(self, s: &mut Session, inv: &Invocation, image: &ImageId, objects: &[(String, VolumeId)]) -> Res<()> {
        match self {
            Route::Local => Ok(()),
            Route::Conduit(c) => c.warn(s, inv, image, objects),
        }
    }
}

/// Each pair's name and source, for the route's checks.
fn sources_of(pairs: &[Pair]) -> Vec<(String, VolumeId)> {
    pairs.iter().map(|p| (pair_name(p), p.0)).collect()
}

/// Refuses flags that contradict each other.
fn exclusive(s: &mut Session, inv: &Invocation, rules: &[(&str, &str)]) -> Res<()> {
    for (a, b) in rules {
        if inv.has(a) && inv.has(b) {
            return s.fail(messages::EXCLUSIVE.line(inv.verb.name, &[a, b]), exit::SYNTAX);
        }
    }
    Ok(())
}

/// Pair IDs, the image they live on (LSS range checked).
fn pair_ids(s: &mut Session, inv: &Invocation) -> Res<(ImageId, Vec<Pair>)> {
    let parsed = match idp::pairs(&inv.ids) {
        Ok(p) => p,
        Err(e) => return bad_id(s, inv, e),
    };
    let sides: Vec<Scoped<()>> =
        parsed.iter().flat_map(|(a, b)| [a, b]).map(|v| Scoped { image: v.image.clone(), id: () }).collect();
    let image = image_of(s, inv, &sides)?;
    let pairs: Vec<Pair> = parsed.into_iter().map(|(a, b)| (a.id, b.id)).collect();
    check_lss(s, inv, &image, pairs.iter().flat_map(|(a, b)| [a.lss(), b.lss()]))?;
    Ok((image, pairs))
}

/// The relationship options the flags ask for. `-record` implies `-persist` (DS CLI needs
/// both for an incremental pair; [R] that it implies rather than refuses).
pub fn options(inv: &Invocation, seq: Option<u32>) -> FlashOptions {
    let record = inv.has("-record");
    FlashOptions {
        record,
        persist: record || inv.has("-persist"),
        nocopy: inv.has("-nocp"),
        tgtinhibit: inv.has("-tgtinhibit"),
        freeze: inv.has("-freeze"),
        tgtpprc: inv.has("-tgtpprc"),
        tgtoffline: inv.has("-tgtoffline"),
        tgtse: inv.has("-tgtse"),
        seqnum: seq.unwrap_or(0),
    }
}

/// Sends a multi-object request; outcomes named by `objects` (the pair as typed) unless the
/// engine names a pair itself and `keep_pairs` is set (commit/revert take source volumes).
pub(super) fn send(
    s: &mut Session,
    verb: &str,
    req: Request,
    objects: &[String],
    keep_pairs: bool,
) -> Res<Vec<ItemOutcome>> {
    let resp = match s.request(verb, req)? {
        // The request failed as a whole (e.g. Unsupported): every object failed alike.
        Response::Err(e) => Response::Ok(Reply::Items(
            objects.iter().map(|o| ItemOutcome { object: o.clone(), result: Err(e.clone()) }).collect(),
        )),
        other => other,
    };
    let mut items = match super::as_items(resp, objects) {
        Ok(items) => items,
        Err(what) => return s.fail(messages::PROTOCOL.line(verb, &[&what]), exit::CONNECTION),
    };
    if items.len() == objects.len() || items.len() == 1 {
        for (item, ours) in items.iter_mut().zip(objects) {
            let name = if keep_pairs && item.object.contains(':') { item.object.clone() } else { ours.clone() };
            if let Err(e) = &mut item.result {
                e.object = name.clone();
            }
            item.object = name;
        }
    }
    Ok(items)
}

/// One line per outcome; the code of the last failure.
pub(super) fn print(s: &mut Session, verb: &str, items: &[ItemOutcome], ok: Message) -> Res {
    let mut last = exit::OK;
    for item in items {
        match &item.result {
            Ok(()) => s.out.line(&ok.line(verb, &[&item.object]))?,
            Err(e) => {
                let (line, code) = messages::engine_line(verb, e);
                s.out.line(&line)?;
                last = code;
            }
        }
    }
    Ok(last)
}

/// The pairs whose outcome is a success (same order as `pairs`).
pub(super) fn succeeded(pairs: &[Pair], items: &[ItemOutcome]) -> Vec<Pair> {
    if items.len() != pairs.len() {
        return Vec::new();
    }
    pairs.iter().zip(items).filter(|(_, i)| i.result.is_ok()).map(|(p, _)| *p).collect()
}

/// `mkflash`, `resyncflash`, `reverseflash`, `setflashrevertible`.
pub fn establish(s: &mut Session, inv: &Invocation) -> Res {
    establish_via(s, inv, Route::Local)
}

/// The establish verbs, local or remote (`mkremoteflash` ...; those have no `-wait`).
pub(super) fn establish_via(s: &mut Session, inv: &Invocation, route: Route) -> Res {
    let verb = inv.verb.name;
    exclusive(s, inv, &[("-cp", "-nocp"), ("-wait", "-nocp")])?;
    let seq = seqnum(s, inv)?;
    let (image, pairs) = pair_ids(s, inv)?;
    let sources = sources_of(&pairs);
    route.check(s, inv, &sources)?;
    s.banner(inv, Some(&image))?;
    route.warn(s, inv, &image, &sources)?;
    let opts = options(inv, seq);
    let (img, list) = (image.clone(), pairs.clone());
    let reverse = matches!(verb, "reverseflash" | "reverseremoteflash");
    let req = match verb {
        "mkflash" | "mkremoteflash" => Request::FlashCreate { image: img, pairs: list, options: opts },
        "resyncflash" | "resyncremoteflash" => {
            Request::FlashResync { image: img, pairs: list, options: opts, seqnum: seq }
        }
        _ if reverse => {
            Request::FlashReverse { image: img, pairs: list, options: opts, fast: inv.has("-fast"), seqnum: seq }
        }
        _ => Request::FlashSetRevertible { image: img, pairs: list, seqnum: seq },
    };
    let objects: Vec<String> = pairs.iter().map(pair_name).collect();
    let items = send(s, verb, route.wrap(req), &objects, false)?;
    if inv.has("-wait") {
        let mut done = succeeded(&pairs, &items);
        if reverse {
            // The relationship is now named the other way round.
            done = done.into_iter().map(|(a, b)| (b, a)).collect();
        }
        wait(s, verb, &image, done, false)?;
    }
    print(s, verb, &items, messages::success(verb))
}

/// `rmflash`: per pair, ask (unless `-quiet`), withdraw, print.
pub fn remove(s: &mut Session, inv: &Invocation) -> Res {
    remove_via(s, inv, Route::Local)
}

/// `rmflash` or `rmremoteflash` (which has no `-wait`).
pub(super) fn remove_via(s: &mut Session, inv: &Invocation, route: Route) -> Res {
    let verb = inv.verb.name;
    let seq = seqnum(s, inv)?;
    let (image, pairs) = pair_ids(s, inv)?;
    route.check(s, inv, &sources_of(&pairs))?;
    s.banner(inv, Some(&image))?;
    let cp = inv.has("-cp");
    let withdraw =
        Withdraw { tgtonly: inv.has("-tgtonly"), cp, resettgtinhibit: inv.has("-resettgtinhibit"), seqnum: seq };
    let ok = if cp { messages::withdraw_cp(verb) } else { messages::success(verb) };
    let mut last = exit::OK;
    for pair in pairs {
        let name = pair_name(&pair);
        if confirmed(s, inv, vec![name.clone()])?.is_empty() {
            continue;
        }
        let req = Request::FlashRemove { image: image.clone(), pairs: vec![pair], withdraw };
        let items = send(s, verb, route.wrap(req), &[name], false)?;
        if inv.has("-wait") && cp {
            let done = succeeded(&[pair], &items);
            wait(s, verb, &image, done, true)?;
        }
        let code = print(s, verb, &items, ok)?;
        if code != exit::OK {
            last = code;
        }
    }
    Ok(last)
}

/// `commitflash`, `revertflash`: source volume IDs.
pub fn commit_revert(s: &mut Session, inv: &Invocation) -> Res {
    commit_revert_via(s, inv, Route::Local)
}

/// `commitflash`, `revertflash` or their remote forms.
pub(super) fn commit_revert_via(s: &mut Session, inv: &Invocation, route: Route) -> Res {
    let verb = inv.verb.name;
    let seq = seqnum(s, inv)?;
    let vols = ids(s, inv, idp::volumes(&inv.ids))?;
    let image = image_of(s, inv, &vols)?;
    let sources: Vec<VolumeId> = vols.into_iter().map(|v| v.id).collect();
    check_lss(s, inv, &image, sources.iter().map(|v| v.lss()))?;
    let objects: Vec<String> = sources.iter().map(VolumeId::to_string).collect();
    let named: Vec<(String, VolumeId)> = objects.iter().cloned().zip(sources.iter().copied()).collect();
    route.check(s, inv, &named)?;
    s.banner(inv, Some(&image))?;
    let req = if matches!(verb, "commitflash" | "commitremoteflash") {
        Request::FlashCommit { image, sources, seqnum: seq }
    } else {
        Request::FlashRevert { image, sources, seqnum: seq }
    };
    let items = send(s, verb, route.wrap(req), &objects, true)?;
    print(s, verb, &items, messages::success(verb))
}

/// `unfreezeflash`: source LSS IDs.
pub fn unfreeze(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let lss = ids(s, inv, idp::lss(&inv.ids, "LSS"))?;
    let image = image_of(s, inv, &lss)?;
    let lss: Vec<_> = lss.into_iter().map(|l| l.id).collect();
    check_lss(s, inv, &image, lss.iter().copied())?;
    s.banner(inv, Some(&image))?;
    let objects: Vec<String> = lss.iter().map(ToString::to_string).collect();
    let items = send(s, verb, Request::FlashUnfreeze { image, lss }, &objects, false)?;
    print(s, verb, &items, messages::success(verb))
}

/// Tracks copied and still pending over the pairs that will finish on their own.
pub fn progress(pairs: &[Pair], views: &[FlashView]) -> (u64, u64) {
    views
        .iter()
        .filter(|v| pairs.contains(&(v.record.source, v.record.target)))
        .filter(|v| v.record.state == FlashState::Valid && (!v.record.options.nocopy || v.active_copy))
        .fold((0, 0), |(c, p), v| (c + v.copied, p + v.out_of_sync))
}

/// Copied relationships that are about to end on their own (not persistent and copying, or
/// withdrawn with `-cp`): the wait goes on until flashd has removed them, so a `lsflash`
/// right after `-wait` never sees them.
pub fn lingering(pairs: &[Pair], views: &[FlashView], until_gone: bool) -> bool {
    views.iter().filter(|v| pairs.contains(&(v.record.source, v.record.target))).any(|v| {
        let o = &v.record.options;
        v.out_of_sync == 0 && v.record.state == FlashState::Valid && (until_gone || (!o.persist && !o.nocopy))
    })
}

/// Waits until `pairs` have copied everything (or are gone); `until_gone`: until they are
/// gone (`rmflash -cp`).
fn wait(s: &mut Session, verb: &str, image: &ImageId, pairs: Vec<Pair>, until_gone: bool) -> Res<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    s.out.flush()?;
    let mut bar = Bar::new(std::io::stderr().is_terminal());
    let mut linger = LINGER_POLLS;
    loop {
        let req = Request::FlashWait { image: image.clone(), pairs: pairs.clone(), timeout_ms: WAIT_SLICE_MS };
        let views = match s.query(verb, req) {
            Ok(Reply::Flash(v)) => v,
            Ok(other) => {
                bar.finish();
                return s.protocol(verb, &other);
            }
            Err(stop) => {
                bar.finish();
                return Err(stop);
            }
        };
        let (copied, pending) = progress(&pairs, &views);
        bar.show(copied, pending);
        if pending == 0 {
            // FlashWait answers at once when nothing copies: poll briefly for the removal.
            if linger > 0 && lingering(&pairs, &views, until_gone) {
                linger -= 1;
                std::thread::sleep(std::time::Duration::from_millis(LINGER_POLL_MS));
                continue;
            }
            bar.finish();
            return Ok(());
        }
    }
}

/// `[#########...............]  37% 1234/3333 tracks`: the bar line for a terminal.
pub fn bar_line(copied: u64, pending: u64) -> String {
    let total = copied + pending;
    let pct = (copied * 100).checked_div(total).unwrap_or(100) as usize;
    let filled = pct * BAR_WIDTH / 100;
    format!("[{}{}] {pct:3}% {copied}/{total} tracks copied", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled))
}

/// The progress bar on stderr; silent unless stderr is a terminal (also `mkpprc -wait`).
pub(super) struct Bar {
    tty: bool,
    drawn: bool,
    /// The largest total seen: a relationship that ends takes its tracks out of the sums,
    /// and they count as copied.
    total: u64,
}

impl Bar {
    pub(super) fn new(tty: bool) -> Bar {
        Bar { tty, drawn: false, total: 0 }
    }

    pub(super) fn show(&mut self, copied: u64, pending: u64) {
        self.total = self.total.max(copied + pending);
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}", bar_line(self.total - pending, pending));
            let _ = err.flush();
            self.drawn = true;
        }
    }

    /// Clears the bar so the message lines follow on a clean line.
    pub(super) fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::verb;
    use flashtrack::flash::relationship::FlashRecord;

    fn inv(line: &str) -> Invocation {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        verb::parse(verb::find(&words[0]).unwrap(), &words[1..], false).unwrap()
    }

    #[test]
    fn record_implies_persist() {
        let o = options(&inv("mkflash -record -nocp -tgtinhibit 0100:0200"), Some(0x10));
        assert!(o.record && o.persist && o.nocopy && o.tgtinhibit && !o.freeze);
        assert_eq!(o.seqnum, 0x10);
        let o = options(&inv("mkflash -persist -tgtse -freeze -tgtpprc -tgtoffline 0100:0200"), None);
        assert!(!o.record && o.persist && o.tgtse && o.freeze && o.tgtpprc && o.tgtoffline);
    }

    fn view(src: u16, tgt: u16, copied: u64, oos: u64, nocopy: bool) -> FlashView {
        FlashView {
            record: FlashRecord {
                source: VolumeId(src),
                target: VolumeId(tgt),
                options: FlashOptions { nocopy, ..FlashOptions::default() },
                state: FlashState::Valid,
                revertible: false,
                created: 0,
                synced: 0,
                increment: 0,
            },
            out_of_sync: oos,
            active_copy: oos > 0 && !nocopy,
            target_ese: false,
            timeout_secs: 60,
            copied,
        }
    }

    #[test]
    fn progress_counts_only_waited_copying_pairs() {
        let pairs = [(VolumeId(0x100), VolumeId(0x200)), (VolumeId(0x101), VolumeId(0x201))];
        let views = [view(0x100, 0x200, 3, 1, false), view(0x101, 0x201, 0, 9, true), view(0x102, 0x202, 5, 5, false)];
        assert_eq!(progress(&pairs, &views), (3, 1));
        assert_eq!(progress(&pairs, &[]), (0, 0), "gone pairs are done");
    }

    #[test]
    fn lingering_relationships() {
        let pairs = [(VolumeId(0x100), VolumeId(0x200))];
        let copy = view(0x100, 0x200, 8, 0, false);
        assert!(lingering(&pairs, std::slice::from_ref(&copy), false), "a copied non-persistent pair is about to go");
        let mut persistent = copy.clone();
        persistent.record.options.persist = true;
        assert!(!lingering(&pairs, &[persistent.clone()], false));
        assert!(lingering(&pairs, &[persistent], true), "rmflash -cp waits until it is gone");
        assert!(!lingering(&pairs, &[], true));
    }

    #[test]
    fn bar_text() {
        assert_eq!(bar_line(0, 0), format!("[{}] 100% 0/0 tracks copied", "#".repeat(BAR_WIDTH)));
        let half = bar_line(8, 8);
        assert!(half.starts_with(&format!("[{}{}]", "#".repeat(20), ".".repeat(20))));
        assert!(half.ends_with(" 50% 8/16 tracks copied"));
    }

    #[test]
    fn pair_names() {
        assert_eq!(pair_name(&(VolumeId(0x100), VolumeId(0xA))), "0100:000A");
    }
}
