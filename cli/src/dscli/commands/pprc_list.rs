//! `lspprc`: the Remote Mirror and Copy pairs volumes of an image take part in, at either
//! end, selected by pair (`source:target`, as the `ID` column shows it at either end), by
//! this image's volume or volume range, filtered by `-state` and the remote image, in the
//! columns of dscli-spec.md §4.3 (default and `-l`; `-s` = `ID` only).
//!
//! Values (the spec marks most of them [R]; each lives in one function here):
//! * `ID` is always `source:target` (primary:secondary), whichever end lists it; with
//!   `-fullid` each side carries its own image;
//! * `State`: `Copy Pending`, `Full Duplex`, `Suspended` at the primary, with a `Target `
//!   prefix at the secondary; `Reason` is `-` unless suspended, see [`reason_text`];
//! * `Type`: `Metro Mirror` or `Global Copy`; `First Pass Status`: `Invalid` for Metro
//!   Mirror, `True`/`False` for Global Copy;
//! * `Date Suspended`: as lsflash's dates (UTC), `-` while not suspended;
//! * `PPRC CG`: the pair's path has `-consistgrp`;
//! * fixed, because flashtrack has none of these: `Src Cascade`/`Tgt Cascade` `Disabled` (no
//!   cascading), `Incremental Resync` `Disabled`, `GMIR CG` `Disabled` (no Global Mirror),
//!   `DisableAutoResync` `False`, `Tgt Write` `Disabled` (a secondary refuses host writes
//!   until failed over), `isTgtSE` `Unknown` (the remote volume's allocation is not asked);
//! * `-state not-remote-copy-pair`, `invalid-state` and `volume-inaccessible` select nothing.
//!
//! `-remotedev` (or remotedevid), and fully qualified target IDs, keep only the pairs with
//! that remote image; `-remotedev` is required when pairs are given with `-dev` (spec §3.4
//! [C]).

use super::flash::pair_name;
use super::flash_list::date;
use super::{bad_id, image_of, print_report};
use crate::dscli::ids::{self as idp, Scoped};
use crate::dscli::messages::{self, exit};
use crate::dscli::report::Report;
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{PprcView, Reply, Request};
use flashtrack::id::{ImageId, VolumeId};
use flashtrack::image::record::{PprcPhase, PprcRole, PprcType, SuspendReason};
use std::collections::BTreeSet;

pub const COLUMNS: &[&str] =
    &["ID", "State", "Reason", "Type", "SourceLSS", "Timeout (secs)", "Critical Mode", "First Pass Status"];
pub const LONG_COLUMNS: &[&str] = &[
    "ID",
    "State",
    "Reason",
    "Type",
    "Out Of Sync Tracks",
    "Tgt Read",
    "Src Cascade",
    "Tgt Cascade",
    "Date Suspended",
    "SourceLSS",
    "Timeout (secs)",
    "Critical Mode",
    "First Pass Status",
    "Incremental Resync",
    "Tgt Write",
    "GMIR CG",
    "PPRC CG",
    "isTgtSE",
    "DisableAutoResync",
];

/// `State` column text.
pub fn state_text(role: PprcRole, phase: PprcPhase) -> &'static str {
    match (role, phase) {
        (PprcRole::Primary, PprcPhase::CopyPending) => "Copy Pending",
        (PprcRole::Primary, PprcPhase::FullDuplex) => "Full Duplex",
        (PprcRole::Primary, PprcPhase::Suspended) => "Suspended",
        (PprcRole::Secondary, PprcPhase::CopyPending) => "Target Copy Pending",
        (PprcRole::Secondary, PprcPhase::FullDuplex) => "Target Full Duplex",
        (PprcRole::Secondary, PprcPhase::Suspended) => "Target Suspended",
    }
}

/// The `-state` value that selects a pair in this role and phase.
pub fn state_flag(role: PprcRole, phase: PprcPhase) -> &'static str {
    match (role, phase) {
        (PprcRole::Primary, PprcPhase::CopyPending) => "copy-pending",
        (PprcRole::Primary, PprcPhase::FullDuplex) => "full-duplex",
        (PprcRole::Primary, PprcPhase::Suspended) => "suspended",
        (PprcRole::Secondary, PprcPhase::CopyPending) => "target-copy-pending",
        (PprcRole::Secondary, PprcPhase::FullDuplex) => "target-full-duplex",
        (PprcRole::Secondary, PprcPhase::Suspended) => "target-suspended",
    }
}

/// `Reason` column text (dscli-spec.md §4.3 [R] list).
pub fn reason_text(r: SuspendReason) -> &'static str {
    match r {
        SuspendReason::HostSource => "Host Source",
        SuspendReason::HostTarget => "Host Target",
        SuspendReason::Freeze => "Freeze",
        SuspendReason::UpdateTarget => "Update Target",
        SuspendReason::InternalSource => "Internal Conditions Source",
        SuspendReason::SimplexTarget => "Simplex Target",
        SuspendReason::PowerSource => "Power Source",
    }
}

pub fn type_text(t: PprcType) -> &'static str {
    match t {
        PprcType::MetroMirror => "Metro Mirror",
        PprcType::GlobalCopy => "Global Copy",
    }
}

fn enabled(b: bool) -> String {
    if b { "Enabled".into() } else { "Disabled".into() }
}

/// The `ID` column: `source:target`, with `-fullid` each side with its image.
fn id_text(image: &ImageId, v: &PprcView, full: bool) -> String {
    let rec = &v.record;
    let (src, tgt) = rec.ids();
    if !full {
        return pair_name(&(src, tgt));
    }
    let (src_img, tgt_img) = match rec.role {
        PprcRole::Primary => (image, &rec.remote),
        PprcRole::Secondary => (&rec.remote, image),
    };
    format!("{src_img}/{src}:{tgt_img}/{tgt}")
}

/// One cell.
fn value(image: &ImageId, v: &PprcView, full: bool, column: &str) -> String {
    let rec = &v.record;
    let suspended = rec.phase == PprcPhase::Suspended;
    match column {
        "ID" => id_text(image, v, full),
        "State" => state_text(rec.role, rec.phase).into(),
        "Reason" => rec.reason.filter(|_| suspended).map(reason_text).unwrap_or("-").into(),
        "Type" => type_text(rec.kind).into(),
        "Out Of Sync Tracks" => v.out_of_sync.to_string(),
        "Tgt Read" => enabled(rec.tgtread),
        "Date Suspended" => rec.suspended_at.filter(|_| suspended).map(date).unwrap_or_else(|| "-".into()),
        "SourceLSS" => v.source_lss.to_string(),
        "Timeout (secs)" => v.timeout_secs.to_string(),
        "Critical Mode" => enabled(rec.critmode),
        "First Pass Status" => match rec.kind {
            PprcType::MetroMirror => "Invalid".into(),
            PprcType::GlobalCopy => if rec.first_pass { "True" } else { "False" }.into(),
        },
        "PPRC CG" => enabled(v.pprc_cg),
        "isTgtSE" => "Unknown".into(),
        "DisableAutoResync" => "False".into(),
        // Src Cascade, Tgt Cascade, Incremental Resync, Tgt Write, GMIR CG.
        _ => "Disabled".into(),
    }
}

/// The report rows for `views` (already selected and sorted).
pub fn report(image: &ImageId, views: &[&PprcView], long: bool, full: bool) -> Report {
    let cols = if long { LONG_COLUMNS } else { COLUMNS };
    let mut r = Report::new("PPRC", cols);
    for v in views {
        r.push(cols.iter().map(|c| value(image, v, full, c)).collect());
    }
    r
}

/// What the command line selects and filters.
#[derive(Debug, Default)]
pub struct Selection {
    pub pairs: Vec<(VolumeId, VolumeId)>,
    /// Volumes of the listed image.
    pub volumes: BTreeSet<VolumeId>,
    pub remote: Option<ImageId>,
    pub state: Option<String>,
}

impl Selection {
    pub fn keeps(&self, v: &PprcView) -> bool {
        let rec = &v.record;
        let named = (self.pairs.is_empty() && self.volumes.is_empty())
            || self.pairs.contains(&rec.ids())
            || self.volumes.contains(&rec.local);
        named
            && self.remote.as_ref().is_none_or(|r| *r == rec.remote)
            && self.state.as_deref().is_none_or(|s| s == state_flag(rec.role, rec.phase))
    }
}

pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    let verb = inv.verb.name;
    let (pair_tokens, vol_tokens): (Vec<String>, Vec<String>) = inv.ids.iter().cloned().partition(|t| t.contains(':'));
    let pairs = idp::pprc_pairs(&pair_tokens).or_else(|e| bad_id(s, inv, e))?;
    let vols = idp::volumes(&vol_tokens).or_else(|e| bad_id(s, inv, e))?;
    let named = match inv.flag("-remotedev") {
        Some(d) => Some(idp::image(d).or_else(|e| bad_id(s, inv, e))?),
        None => s.effective(inv).remotedevid,
    };
    if !pairs.is_empty() && inv.has("-dev") && named.is_none() {
        return s.fail(messages::MISSING_FLAG.line(verb, &["-remotedev"]), exit::SYNTAX);
    }
    let targets: Vec<Scoped<()>> = pairs.iter().map(|(_, b)| Scoped { image: b.image.clone(), id: () }).collect();
    let remote = match idp::common_image(&targets) {
        Ok(from_ids) => from_ids,
        Err((a, b)) => {
            return s.fail(messages::IMAGE_CONFLICT.line(verb, &[&a.to_string(), &b.to_string()]), exit::SYNTAX);
        }
    };
    let remote = match (remote, named) {
        (Some(a), Some(b)) if a != b => {
            return s.fail(messages::IMAGE_CONFLICT.line(verb, &[&b.to_string(), &a.to_string()]), exit::SYNTAX);
        }
        (a, b) => a.or(b),
    };
    let locals: Vec<Scoped<()>> =
        pairs.iter().map(|(a, _)| a).chain(&vols).map(|v| Scoped { image: v.image.clone(), id: () }).collect();
    let image = image_of(s, inv, &locals)?;
    let sel = Selection {
        pairs: pairs.into_iter().map(|(a, b)| (a.id, b.id)).collect(),
        volumes: vols.into_iter().map(|v| v.id).collect(),
        remote,
        state: inv.flag("-state").map(String::from),
    };
    // A selection only filters: `0000-FFFF` is fine on any machine type (as lsflash).
    s.banner(inv, Some(&image))?;
    let all = match s.query(verb, Request::PprcList { image: image.clone() })? {
        Reply::Pprc(v) => v,
        other => return s.protocol(verb, &other),
    };
    let mut views: Vec<&PprcView> = all.iter().filter(|v| sel.keeps(v)).collect();
    views.sort_by_key(|v| v.record.ids());
    let full = s.effective(inv).fullid;
    let report = report(&image, &views, inv.has("-l"), full);
    let report = if inv.has("-s") { report.short("ID") } else { report };
    print_report(s, inv, &report, false)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dscli::report::Style;
    use crate::dscli::settings::Format;
    use flashtrack::id::LssId;
    use flashtrack::image::record::PprcPairRecord;

    /// A pair as `image` (75FA120) sees it: `local` is its volume.
    pub fn view(local: u16, remote: u16, role: PprcRole, kind: PprcType, phase: PprcPhase) -> PprcView {
        PprcView {
            record: PprcPairRecord {
                local: VolumeId(local),
                remote: "IBM.2107-75FA150".parse().unwrap(),
                remote_wwnn: "5005076496A8CD20".into(),
                remote_volume: VolumeId(remote),
                role,
                kind,
                phase,
                reason: None,
                suspended_at: None,
                tgtread: false,
                critmode: false,
                first_pass: false,
                created: 1_411_081_444,
            },
            out_of_sync: 0,
            source_lss: LssId(if role == PprcRole::Primary { (local >> 8) as u8 } else { (remote >> 8) as u8 }),
            timeout_secs: 60,
            pprc_cg: false,
        }
    }

    fn img() -> ImageId {
        "IBM.2107-75FA120".parse().unwrap()
    }

    #[test]
    fn default_columns_exact() {
        let a = view(0x100, 0x200, PprcRole::Primary, PprcType::MetroMirror, PprcPhase::FullDuplex);
        let mut b = view(0x101, 0x201, PprcRole::Primary, PprcType::GlobalCopy, PprcPhase::Suspended);
        b.record.reason = Some(SuspendReason::InternalSource);
        b.record.suspended_at = Some(1_411_081_444);
        b.record.critmode = true;
        let mut c = view(0x300, 0x400, PprcRole::Secondary, PprcType::GlobalCopy, PprcPhase::CopyPending);
        c.record.first_pass = true;
        c.record.reason = Some(SuspendReason::HostSource); // stale: not shown unless suspended
        let text = report(&img(), &[&a, &b, &c], false, false).render(Style {
            format: Format::Default,
            delim: ',',
            header: true,
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID        State               Reason                     Type         SourceLSS Timeout (secs) \
             Critical Mode First Pass Status"
        );
        assert_eq!(
            lines[2],
            "0100:0200 Full Duplex         -                          Metro Mirror 01        60             Disabled      Invalid"
        );
        assert_eq!(
            lines[3],
            "0101:0201 Suspended           Internal Conditions Source Global Copy  01        60             Enabled       False"
        );
        assert_eq!(
            lines[4],
            "0400:0300 Target Copy Pending -                          Global Copy  04        60             Disabled      True"
        );
    }

    #[test]
    fn long_columns_and_full_ids() {
        let mut a = view(0x100, 0x200, PprcRole::Primary, PprcType::MetroMirror, PprcPhase::Suspended);
        a.record.reason = Some(SuspendReason::Freeze);
        a.record.suspended_at = Some(1_411_081_444);
        a.record.tgtread = true;
        a.out_of_sync = 17;
        a.pprc_cg = true;
        let b = view(0x300, 0x400, PprcRole::Secondary, PprcType::MetroMirror, PprcPhase::FullDuplex);
        let r = report(&img(), &[&a, &b], true, true);
        assert_eq!(r.columns, LONG_COLUMNS);
        assert_eq!(
            r.rows[0],
            [
                "IBM.2107-75FA120/0100:IBM.2107-75FA150/0200",
                "Suspended",
                "Freeze",
                "Metro Mirror",
                "17",
                "Enabled",
                "Disabled",
                "Disabled",
                "Thu Sep 18 23:04:04 UTC 2014",
                "01",
                "60",
                "Disabled",
                "Invalid",
                "Disabled",
                "Disabled",
                "Disabled",
                "Enabled",
                "Unknown",
                "False",
            ]
        );
        assert_eq!(r.rows[1][0], "IBM.2107-75FA150/0400:IBM.2107-75FA120/0300", "the source is the remote's");
        assert_eq!(r.rows[1][1], "Target Full Duplex");
        assert_eq!(r.rows[1][8], "-");
        assert_eq!(report(&img(), &[&a], false, false).short("ID").rows, [["0100:0200"]]);
    }

    #[test]
    fn every_state_and_reason_has_its_words() {
        use PprcPhase::*;
        use PprcRole::*;
        for (role, phase, text, flag) in [
            (Primary, CopyPending, "Copy Pending", "copy-pending"),
            (Primary, FullDuplex, "Full Duplex", "full-duplex"),
            (Primary, Suspended, "Suspended", "suspended"),
            (Secondary, CopyPending, "Target Copy Pending", "target-copy-pending"),
            (Secondary, FullDuplex, "Target Full Duplex", "target-full-duplex"),
            (Secondary, Suspended, "Target Suspended", "target-suspended"),
        ] {
            assert_eq!(state_text(role, phase), text);
            assert_eq!(state_flag(role, phase), flag);
            assert!(crate::dscli::verb::PPRC_STATES.contains(&flag));
        }
        assert_eq!(reason_text(SuspendReason::HostTarget), "Host Target");
        assert_eq!(reason_text(SuspendReason::SimplexTarget), "Simplex Target");
        assert_eq!(reason_text(SuspendReason::PowerSource), "Power Source");
        assert_eq!(reason_text(SuspendReason::UpdateTarget), "Update Target");
    }

    #[test]
    fn selection_and_filters() {
        let a = view(0x100, 0x200, PprcRole::Primary, PprcType::MetroMirror, PprcPhase::FullDuplex);
        let b = view(0x300, 0x400, PprcRole::Secondary, PprcType::GlobalCopy, PprcPhase::CopyPending);
        let all = Selection::default();
        assert!(all.keeps(&a) && all.keeps(&b));
        let by_id = Selection { pairs: vec![(VolumeId(0x400), VolumeId(0x300))], ..Selection::default() };
        assert!(!by_id.keeps(&a) && by_id.keeps(&b), "a pair is named as its ID shows it");
        let by_vol = Selection { volumes: BTreeSet::from([VolumeId(0x300)]), ..Selection::default() };
        assert!(!by_vol.keeps(&a) && by_vol.keeps(&b), "a volume is this image's");
        let not_remote_vol = Selection { volumes: BTreeSet::from([VolumeId(0x200)]), ..Selection::default() };
        assert!(!not_remote_vol.keeps(&a));
        let st = Selection { state: Some("target-copy-pending".into()), ..Selection::default() };
        assert!(!st.keeps(&a) && st.keeps(&b));
        let none = Selection { state: Some("invalid-state".into()), ..Selection::default() };
        assert!(!none.keeps(&a) && !none.keeps(&b));
        let other = Selection { remote: Some("IBM.2107-75FA190".parse().unwrap()), ..Selection::default() };
        assert!(!other.keeps(&a));
        let same = Selection { remote: Some("IBM.2107-75FA150".parse().unwrap()), ..Selection::default() };
        assert!(same.keeps(&a));
    }
}
