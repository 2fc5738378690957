//! `lsflash`: FlashCopy relationships of an image, selected by pair, by volume (source or
//! target) or volume range, filtered by the flags, in the columns of dscli-spec.md §4.1.
//!
//! Value choices (the spec marks them [R]; each lives in one function or constant here):
//! * `SequenceNum`: see [`SEQNUM_HEX`];
//! * dates: UTC, `Thu Sep 18 23:04:04 UTC 2014` (opensvc parses them with
//!   `%a %b %d %H:%M:%S %Z %Y`), see [`date`];
//! * `State`: `Valid`, `Tgt Failed`, `Validation Required`; `isTgtSE`: `ESE` or `No`;
//!   `Pmir`: always `No` (no Remote Pair FlashCopy);
//! * `SourceWriteEnabled` is `Disabled` while revertible, `TargetWriteEnabled` with
//!   `-tgtinhibit`, `BackgroundCopy` with `-nocp`;
//! * `-state` values: `valid`, `tgt-failed`, `validation-required` (and `invalid`,
//!   `volume-inaccessible`, which select nothing), see `verb::FLASH_STATES`.

use super::flash::{Route, pair_name, seqnum};
use super::{bad_id, image_of, print_report};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::report::Report;
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{FlashView, Reply, Request};
use flashtrack::flash::relationship::FlashState;
use flashtrack::id::{ImageId, VolumeId};
use std::collections::BTreeSet;

/// `SequenceNum` in hex [R]: sequence numbers are typed in hex (`-seqnum 0010`, spec §2.6),
/// so the column shows the same digits, upper-case, without leading zeros (`0` when none,
/// as the spec's example shows; `-seqnum 0010` shows `10`). Set to false for decimal.
pub const SEQNUM_HEX: bool = true;

pub const COLUMNS: &[&str] = &[
    "ID",
    "SrcLSS",
    "SequenceNum",
    "Timeout",
    "ActiveCopy",
    "Recording",
    "Persistent",
    "Revertible",
    "SourceWriteEnabled",
    "TargetWriteEnabled",
    "BackgroundCopy",
];
pub const LONG_COLUMNS: &[&str] = &["OutOfSyncTracks", "DateCreated", "DateSynced", "State", "isTgtSE", "Pmir"];

pub fn seqnum_text(n: u32) -> String {
    if SEQNUM_HEX { format!("{n:X}") } else { n.to_string() }
}

/// Unix seconds as DS CLI prints FlashCopy dates, in UTC; `-` for none.
pub fn date(secs: i64) -> String {
    if secs <= 0 {
        return "-".into();
    }
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.strftime("%a %b %d %H:%M:%S UTC %Y").to_string(),
        Err(_) => "-".into(),
    }
}

pub fn state_text(s: FlashState) -> &'static str {
    match s {
        FlashState::Valid => "Valid",
        FlashState::TgtFailed => "Tgt Failed",
        FlashState::ValidationRequired => "Validation Required",
    }
}

/// The `-state` value that selects `s`.
fn state_flag(s: FlashState) -> &'static str {
    match s {
        FlashState::Valid => "valid",
        FlashState::TgtFailed => "tgt-failed",
        FlashState::ValidationRequired => "validation-required",
    }
}

fn enabled(b: bool) -> String {
    if b { "Enabled".into() } else { "Disabled".into() }
}

/// The report rows for `views` (already selected and sorted).
pub fn report(image: &ImageId, views: &[&FlashView], long: bool, full: bool) -> Report {
    let mut cols = COLUMNS.to_vec();
    if long {
        cols.extend_from_slice(LONG_COLUMNS);
    }
    let mut r = Report::new("FlashCopy", &cols);
    for v in views {
        let rec = &v.record;
        let o = &rec.options;
        let id = if full {
            format!("{image}/{}:{image}/{}", rec.source, rec.target)
        } else {
            pair_name(&(rec.source, rec.target))
        };
        let mut row = vec![
            id,
            rec.source.lss().to_string(),
            seqnum_text(o.seqnum),
            v.timeout_secs.to_string(),
            enabled(v.active_copy),
            enabled(o.record),
            enabled(o.persist),
            enabled(rec.revertible),
            enabled(!rec.revertible),
            enabled(!o.tgtinhibit),
            enabled(!o.nocopy),
        ];
        if long {
            row.extend([
                v.out_of_sync.to_string(),
                date(rec.created),
                date(rec.synced),
                state_text(rec.state).into(),
                if v.target_ese { "ESE".into() } else { "No".into() },
                "No".into(),
            ]);
        }
        r.push(row);
    }
    r
}

/// What the command line selects and filters.
#[derive(Debug, Default)]
pub struct Selection {
    pub pairs: Vec<(VolumeId, VolumeId)>,
    pub volumes: BTreeSet<VolumeId>,
    pub activecp: bool,
    pub record: bool,
    pub persist: bool,
    pub revertible: bool,
    pub cp: bool,
    pub state: Option<String>,
    pub seqnum: Option<u32>,
}

impl Selection {
    pub fn keeps(&self, v: &FlashView) -> bool {
        let rec = &v.record;
        let o = &rec.options;
        let named = (self.pairs.is_empty() && self.volumes.is_empty())
            || self.pairs.contains(&(rec.source, rec.target))
            || self.volumes.contains(&rec.source)
            || self.volumes.contains(&rec.target);
        named
            && (!self.activecp || v.active_copy)
            && (!self.record || o.record)
            && (!self.persist || o.persist)
            && (!self.revertible || rec.revertible)
            && (!self.cp || !o.nocopy)
            && self.state.as_deref().is_none_or(|s| s == state_flag(rec.state))
            && self.seqnum.is_none_or(|n| n == o.seqnum)
    }
}

pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    list_via(s, inv, Route::Local)
}

/// `lsflash`, or `lsremoteflash` (the relationships of the image that holds the conduit's
/// secondaries, whose sources are those secondaries; `-srcss` keeps the sources of the LSS
/// with that subsystem ID).
pub(super) fn list_via(s: &mut Session, inv: &Invocation, route: Route) -> Res {
    let verb = inv.verb.name;
    let seq = seqnum(s, inv)?;
    let (pairs, vols) = match idp::pairs_or_volumes(&inv.ids) {
        Ok(x) => x,
        Err(e) => return bad_id(s, inv, e),
    };
    let scoped: Vec<Scoped<()>> = pairs
        .iter()
        .flat_map(|(a, b)| [a, b])
        .chain(&vols)
        .map(|v| Scoped { image: v.image.clone(), id: () })
        .collect();
    let image = image_of(s, inv, &scoped)?;
    let sel = Selection {
        pairs: pairs.into_iter().map(|(a, b)| (a.id, b.id)).collect(),
        volumes: vols.into_iter().map(|v| v.id).collect(),
        activecp: inv.has("-activecp"),
        record: inv.has("-record"),
        persist: inv.has("-persist"),
        revertible: inv.has("-revertible"),
        cp: inv.has("-cp"),
        state: inv.flag("-state").map(String::from),
        seqnum: seq,
    };
    // A selection only filters: `0000-FFFF` (all volumes, as scripts write it) is fine on
    // any machine type, so no LSS range check here.
    s.banner(inv, Some(&image))?;
    let all = match s.query(verb, route.wrap(Request::FlashList { image: image.clone() }))? {
        Reply::Flash(v) => v,
        other => return s.protocol(verb, &other),
    };
    let lss = route.source_lss(s, inv, &image)?;
    let mut views: Vec<&FlashView> = all
        .iter()
        .filter(|v| sel.keeps(v) && lss.as_ref().is_none_or(|l| l.contains(&v.record.source.lss())))
        .collect();
    views.sort_by_key(|v| (v.record.source, v.record.target));
    let full = s.effective(inv).fullid;
    let report = report(&image, &views, inv.has("-l"), full);
    let report = if inv.has("-s") { report.short("ID") } else { report };
    print_report(s, inv, &report, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::flash::relationship::{FlashOptions, FlashRecord};

    fn view(src: u16, tgt: u16, options: FlashOptions) -> FlashView {
        FlashView {
            record: FlashRecord {
                source: VolumeId(src),
                target: VolumeId(tgt),
                options,
                state: FlashState::Valid,
                revertible: false,
                created: 1_411_081_444,
                synced: 1_411_081_444,
                increment: 0,
            },
            out_of_sync: 0,
            active_copy: false,
            target_ese: false,
            timeout_secs: 60,
            copied: 16,
        }
    }

    #[test]
    fn columns_exact() {
        let img: ImageId = "IBM.2107-75FA120".parse().unwrap();
        let a = view(0x100, 0x200, FlashOptions { record: true, persist: true, ..FlashOptions::default() });
        let mut b = view(
            0x101,
            0x201,
            FlashOptions { nocopy: true, tgtinhibit: true, seqnum: 0x10, ..FlashOptions::default() },
        );
        b.record.revertible = true;
        b.record.state = FlashState::ValidationRequired;
        b.target_ese = true;
        b.out_of_sync = 16;
        let text =
            report(&img, &[&a, &b], false, false).render(Style { format: Format::Default, delim: ',', header: true });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID        SrcLSS SequenceNum Timeout ActiveCopy Recording Persistent Revertible SourceWriteEnabled \
             TargetWriteEnabled BackgroundCopy"
        );
        assert_eq!(
            lines[3],
            "0101:0201 01     10          60      Disabled   Disabled  Disabled   Enabled    Disabled           \
             Disabled           Disabled"
        );
        let long = report(&img, &[&a, &b], true, true);
        assert_eq!(long.rows[0][0], "IBM.2107-75FA120/0100:IBM.2107-75FA120/0200");
        assert_eq!(
            &long.rows[0][11..],
            ["0", "Thu Sep 18 23:04:04 UTC 2014", "Thu Sep 18 23:04:04 UTC 2014", "Valid", "No", "No"]
        );
        assert_eq!(
            &long.rows[1][11..],
            ["16", "Thu Sep 18 23:04:04 UTC 2014", "Thu Sep 18 23:04:04 UTC 2014", "Validation Required", "ESE", "No"]
        );
        assert_eq!(date(0), "-");
    }

    #[test]
    fn selection_and_filters() {
        let a = view(0x100, 0x200, FlashOptions { record: true, persist: true, seqnum: 1, ..FlashOptions::default() });
        let b = view(0x101, 0x201, FlashOptions { nocopy: true, ..FlashOptions::default() });
        let all = Selection::default();
        assert!(all.keeps(&a) && all.keeps(&b));
        let by_target = Selection { volumes: BTreeSet::from([VolumeId(0x201)]), ..Selection::default() };
        assert!(!by_target.keeps(&a) && by_target.keeps(&b));
        let by_pair = Selection { pairs: vec![(VolumeId(0x100), VolumeId(0x200))], ..Selection::default() };
        assert!(by_pair.keeps(&a) && !by_pair.keeps(&b));
        let rec = Selection { record: true, persist: true, ..Selection::default() };
        assert!(rec.keeps(&a) && !rec.keeps(&b));
        let cp = Selection { cp: true, ..Selection::default() };
        assert!(cp.keeps(&a) && !cp.keeps(&b));
        let seq = Selection { seqnum: Some(1), ..Selection::default() };
        assert!(seq.keeps(&a) && !seq.keeps(&b));
        let st = Selection { state: Some("tgt-failed".into()), ..Selection::default() };
        assert!(!st.keeps(&a));
        let act = Selection { activecp: true, ..Selection::default() };
        assert!(!act.keeps(&a));
        assert_eq!(seqnum_text(0), "0");
        assert_eq!(seqnum_text(0xFFFF_FFFF), "FFFFFFFF");
    }
}
