//! Remote (in-band) FlashCopy: `mkremoteflash`, `resyncremoteflash`, `lsremoteflash`,
//! `rmremoteflash`, `reverseremoteflash`, `setremoteflashrevertible`, `commitremoteflash`,
//! `revertremoteflash` (dscli-spec.md §3.2). Each is its local verb (same parsing, options,
//! rules, reports and lines, [`super::flash`], [`super::flash_list`]) sent through a
//! [`Conduit`]: flashd carries the FlashCopy request over the conduit pair's path and runs it
//! at the image that holds the PPRC secondaries.
//!
//! Images: `-conduit IMAGE/LSS` (required, fully qualified [C]) names the LOCAL image and the
//! LSS that holds the PPRC primaries; the FlashCopy volumes are on the REMOTE image, named as
//! for the local verbs: fully qualified IDs, else `-dev`, else devid (so `-dev` is the remote
//! image [C]). The banner shows the remote image.
//!
//! Rules, all checked before anything is sent (exit 2): `-conduit` fully qualified
//! ([`messages::CONDUIT_SHORT`]), two hex digits in the machine type's LSS range; `-srcss` a
//! subsystem ID (0001-FFFF), and then every source in one LSS ([`messages::SRCSS_ONE_LSS`]).
//! flashd checks per pair that each source is the secondary of a pair whose primary is in the
//! conduit LSS, that its path has a link up, and that `-srcss` is the source LSS's SSID.
//!
//! Global Copy (a warning, [`messages::GLOBAL_COPY_SOURCE`]): before `mkremoteflash` and
//! `resyncremoteflash`, the pairs of the conduit image are asked (`PprcList`); a source that is
//! the secondary of a Global Copy pair of the conduit LSS holds fuzzy data (writes reach it in
//! the background, in no order), so its point-in-time copy is not consistent. The line is
//! printed after the banner, once per pair named; the command still runs. Verbs that take no
//! new point-in-time copy of the source (rm, reverse, set revertible, commit, revert) do not
//! warn: Global Mirror recovery runs them on purpose over Global Copy secondaries.
//!
//! No `-wait`: the spec gives none to the remote verbs ([C] for mkremoteflash); the success
//! lines say to follow the copy with `lsremoteflash`. `lsremoteflash -srcss` keeps the
//! relationships whose source LSS has that SSID, as the conduit's paths show it (`lspprcpath`'s
//! `SS`).

use super::flash::{self, Route, pair_name};
use super::pprc::parse_lss;
use super::pprc_pairs::{off_lss_pair, ssid};
use super::{check_lss, flash_list};
use crate::dscli::ids as idp;
use crate::dscli::messages::{self, exit};
use crate::dscli::session::{Res, Session};
use crate::dscli::verb::Invocation;
use flashtrack::control::{PprcView, Reply, Request, Response};
use flashtrack::id::{ImageId, LssId, VolumeId};
use flashtrack::image::record::{PprcRole, PprcType};

/// The local image and LSS a remote FlashCopy request goes through, and `-srcss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conduit {
    pub image: ImageId,
    pub lss: LssId,
    pub srcss: Option<u16>,
}

/// Why a `-conduit` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConduitError {
    /// No storage image: `10` instead of `IBM.1750-68FA150/10`.
    Short,
    /// Not `IMAGE/XX` with a valid image ID and two hex digits.
    Malformed,
}

/// `IBM.1750-68FA150/10`: a fully qualified LSS ID, one LSS (no range).
pub fn parse_conduit(value: &str) -> Result<(ImageId, LssId), ConduitError> {
    let Some((image, lss)) = value.rsplit_once('/') else {
        return Err(if parse_lss(value).is_some() { ConduitError::Short } else { ConduitError::Malformed });
    };
    let image = idp::image(image).map_err(|_| ConduitError::Malformed)?;
    Ok((image, parse_lss(lss).ok_or(ConduitError::Malformed)?))
}

/// `-conduit` and `-srcss`, checked (exit 2 when wrong).
fn conduit(s: &mut Session, inv: &Invocation) -> Res<Conduit> {
    let verb = inv.verb.name;
    let value = inv.flag("-conduit").expect("required flag checked by the parser");
    let (image, lss) = match parse_conduit(value) {
        Ok(c) => c,
        Err(ConduitError::Short) => return s.fail(messages::CONDUIT_SHORT.line(verb, &[value]), exit::SYNTAX),
        Err(ConduitError::Malformed) => {
            return s.fail(messages::MALFORMED_ID.line(verb, &[value, "conduit LSS"]), exit::SYNTAX);
        }
    };
    check_lss(s, inv, &image, [lss])?;
    let srcss = ssid(s, inv, "-srcss")?;
    Ok(Conduit { image, lss, srcss })
}

impl Conduit {
    /// The FlashCopy request, to be run at the image of the conduit's secondaries.
    pub fn wrap(&self, req: Request) -> Request {
        Request::RemoteFlash { image: self.image.clone(), conduit: self.lss, srcss: self.srcss, request: Box::new(req) }
    }

    /// With `-srcss`, every source in one LSS (the one that subsystem ID names).
    pub(super) fn check_sources(&self, s: &mut Session, inv: &Invocation, objects: &[(String, VolumeId)]) -> Res<()> {
        if self.srcss.is_none() {
            return Ok(());
        }
        let lss: Vec<_> = objects.iter().map(|(name, v)| (name.clone(), v.lss(), None)).collect();
        if let Some((bad, want)) = off_lss_pair(&lss) {
            return s.fail(messages::SRCSS_ONE_LSS.line(inv.verb.name, &[&bad, &want]), exit::SYNTAX);
        }
        Ok(())
    }

    /// The Global Copy warning of `mkremoteflash` and `resyncremoteflash` (module docs).
    /// Nothing is said when the conduit image cannot list its pairs: the command itself will.
    pub(super) fn warn(
        &self,
        s: &mut Session,
        inv: &Invocation,
        remote: &ImageId,
        objects: &[(String, VolumeId)],
    ) -> Res<()> {
        let verb = inv.verb.name;
        if !matches!(verb, "mkremoteflash" | "resyncremoteflash") {
            return Ok(());
        }
        let Response::Ok(Reply::Pprc(views)) = s.request(verb, Request::PprcList { image: self.image.clone() })? else {
            return Ok(());
        };
        for (name, source) in objects {
            if let Some(primary) = global_copy_primary(&views, self.lss, remote, *source) {
                let pair = pair_name(&(primary, *source));
                s.out.line(&messages::GLOBAL_COPY_SOURCE.line(verb, &[name, &source.to_string(), &pair]))?;
            }
        }
        Ok(())
    }

    /// `lsremoteflash -srcss`: the LSSs of `remote` with that subsystem ID that the conduit
    /// LSS has paths to (None without `-srcss`).
    pub(super) fn source_lss(&self, s: &mut Session, inv: &Invocation, remote: &ImageId) -> Res<Option<Vec<LssId>>> {
        let Some(ss) = self.srcss else {
            return Ok(None);
        };
        let paths = match s.query(inv.verb.name, Request::PprcPathList { image: self.image.clone() })? {
            Reply::PprcPaths(p) => p,
            other => return s.protocol(inv.verb.name, &other),
        };
        Ok(Some(
            paths
                .iter()
                .filter(|p| p.record.src_lss == self.lss && p.record.remote == *remote && p.tgt_ssid == ss)
                .map(|p| p.record.tgt_lss)
                .collect(),
        ))
    }
}

/// The primary volume of the Global Copy pair from `conduit` (pairs as the conduit image lists
/// them) whose secondary is `source` on `remote`, if there is one.
pub fn global_copy_primary(views: &[PprcView], conduit: LssId, remote: &ImageId, source: VolumeId) -> Option<VolumeId> {
    views
        .iter()
        .map(|v| &v.record)
        .find(|r| {
            r.role == PprcRole::Primary
                && r.kind == PprcType::GlobalCopy
                && r.local.lss() == conduit
                && r.remote == *remote
                && r.remote_volume == source
        })
        .map(|r| r.local)
}

/// `mkremoteflash`, `resyncremoteflash`, `reverseremoteflash`, `setremoteflashrevertible`.
pub fn establish(s: &mut Session, inv: &Invocation) -> Res {
    let c = conduit(s, inv)?;
    flash::establish_via(s, inv, Route::Conduit(&c))
}

/// `rmremoteflash`: asks per pair unless `-quiet`, as `rmflash`.
pub fn remove(s: &mut Session, inv: &Invocation) -> Res {
    let c = conduit(s, inv)?;
    flash::remove_via(s, inv, Route::Conduit(&c))
}

/// `commitremoteflash`, `revertremoteflash`: source volume IDs.
pub fn commit_revert(s: &mut Session, inv: &Invocation) -> Res {
    let c = conduit(s, inv)?;
    flash::commit_revert_via(s, inv, Route::Conduit(&c))
}

/// `lsremoteflash`: the lsflash report of the remote image's relationships whose sources are
/// secondaries of the conduit LSS's pairs.
pub fn list(s: &mut Session, inv: &Invocation) -> Res {
    let c = conduit(s, inv)?;
    flash_list::list_via(s, inv, Route::Conduit(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::verb;

    fn p(line: &str) -> Result<Invocation, &'static str> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        verb::parse(verb::find(&words[0]).unwrap(), &words[1..], false).map_err(|e| e.msg.id)
    }

    #[test]
    fn conduit_must_be_fully_qualified() {
        let (img, lss) = parse_conduit("IBM.1750-68FA150/10").unwrap();
        assert_eq!((img.to_string(), lss), ("IBM.1750-68FA150".to_string(), LssId(0x10)));
        assert_eq!(parse_conduit("ibm.1750-68fa150/1f").unwrap().1, LssId(0x1F));
        assert_eq!(parse_conduit("10"), Err(ConduitError::Short));
        assert_eq!(parse_conduit("1F"), Err(ConduitError::Short));
        for bad in ["IBM.1750-68FA150/1", "IBM.1750-68FA150/100", "IBM.1750-68FA150/10-11", "IBM.1750/10", "/10"] {
            assert_eq!(parse_conduit(bad), Err(ConduitError::Malformed), "{bad}");
        }
        for bad in ["1", "100", "IBM.1750-68FA150", "x"] {
            assert_eq!(parse_conduit(bad), Err(ConduitError::Malformed), "{bad}");
        }
    }

    #[test]
    fn wraps_the_local_request() {
        let c = Conduit { image: "IBM.1750-68FA150".parse().unwrap(), lss: LssId(0x10), srcss: Some(0xFF01) };
        let inner = Request::FlashList { image: "IBM.1750-68FA120".parse().unwrap() };
        match c.wrap(inner) {
            Request::RemoteFlash { image, conduit, srcss, request } => {
                assert_eq!(image, c.image);
                assert_eq!((conduit, srcss), (LssId(0x10), Some(0xFF01)));
                assert!(matches!(*request, Request::FlashList { .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verbs_and_their_flags() {
        let c = "-conduit IBM.1750-68FA150/10";
        // The seed's example: no -dev, fully qualified pair IDs.
        let inv = p(&format!("resyncremoteflash {c} IBM.1750-68FA120/0100:IBM.1750-68FA120/0200")).unwrap();
        assert_eq!(inv.flag("-conduit"), Some("IBM.1750-68FA150/10"));
        assert_eq!(inv.ids, ["IBM.1750-68FA120/0100:IBM.1750-68FA120/0200"]);
        let inv = p(&format!("mkremoteflash -dev IBM.1750-68FA120 {c} -record -persist -nocp -tgtinhibit -tgtpprc -tgtoffline -freeze -seqnum 10 -srcss FF01 0100:0200")).unwrap();
        assert!(inv.has("-record") && inv.has("-nocp") && inv.has("-freeze"));
        assert_eq!(inv.flag("-srcss"), Some("FF01"));
        let o = flash::options(&inv, Some(0x10));
        assert!(o.record && o.persist && o.nocopy && o.tgtinhibit && o.tgtpprc && o.tgtoffline && o.freeze);
        // -conduit is required everywhere; no -wait on any remote verb (spec §3.2).
        for v in [
            "mkremoteflash",
            "resyncremoteflash",
            "lsremoteflash",
            "rmremoteflash",
            "reverseremoteflash",
            "setremoteflashrevertible",
            "commitremoteflash",
            "revertremoteflash",
        ] {
            assert_eq!(p(&format!("{v} 0100:0200")).unwrap_err(), "CMUC90006E", "{v} needs -conduit");
            assert_eq!(p(&format!("{v} {c} -wait 0100:0200")).unwrap_err(), "CMUC90002E", "{v} has no -wait");
            assert!(p(&format!("{v} {c} -srcss FF01 -seqnum 1 0100")).is_ok(), "{v}");
        }
        assert!(p(&format!("lsremoteflash {c}")).is_ok(), "lsremoteflash lists all without IDs");
        assert_eq!(p(&format!("mkremoteflash {c}")).unwrap_err(), "CMUC90011E");
        assert_eq!(p(&format!("lsremoteflash {c} -s -l")).unwrap_err(), "CMUC90007E");
        assert_eq!(p(&format!("lsremoteflash {c} -state gone")).unwrap_err(), "CMUC90004E");
        assert!(p(&format!("lsremoteflash {c} -l -activecp -record -persist -revertible -cp -state valid")).is_ok());
        assert!(p(&format!("rmremoteflash {c} -quiet -cp -tgtonly 0100:0200")).is_ok());
        assert!(p(&format!("reverseremoteflash {c} -fast -record -persist -tgtinhibit 0100:0200")).is_ok());
        assert_eq!(p(&format!("commitremoteflash {c} -record 0100")).unwrap_err(), "CMUC90002E");
        assert_eq!(p(&format!("rmremoteflash {c} -fast 0100:0200")).unwrap_err(), "CMUC90002E");
        assert_eq!(p(&format!("mkremoteflash {c} -conduit")).unwrap_err(), "CMUC90003E");
    }

    #[test]
    fn global_copy_sources_are_found_at_the_conduit() {
        use super::super::pprc_list::tests::view;
        use flashtrack::image::record::PprcPhase;
        // As the conduit image (75FA120) lists them; the remote image is 75FA150.
        let remote: ImageId = "IBM.2107-75FA150".parse().unwrap();
        let gc = view(0x1002, 0x0102, PprcRole::Primary, PprcType::GlobalCopy, PprcPhase::Suspended);
        let mm = view(0x1000, 0x0100, PprcRole::Primary, PprcType::MetroMirror, PprcPhase::FullDuplex);
        let other_lss = view(0x1203, 0x0103, PprcRole::Primary, PprcType::GlobalCopy, PprcPhase::CopyPending);
        let secondary = view(0x1004, 0x0104, PprcRole::Secondary, PprcType::GlobalCopy, PprcPhase::CopyPending);
        let views = [gc, mm, other_lss, secondary];
        let find = |v: u16| global_copy_primary(&views, LssId(0x10), &remote, VolumeId(v));
        assert_eq!(find(0x0102), Some(VolumeId(0x1002)), "suspended or not, a Global Copy secondary is fuzzy");
        assert_eq!(find(0x0100), None, "Metro Mirror");
        assert_eq!(find(0x0103), None, "the pair of another LSS");
        assert_eq!(find(0x0104), None, "a pair in which the conduit image is the secondary");
        let elsewhere: ImageId = "IBM.2107-75FA190".parse().unwrap();
        assert_eq!(global_copy_primary(&views, LssId(0x10), &elsewhere, VolumeId(0x0102)), None);
    }

    #[test]
    fn every_remote_verb_has_its_message() {
        for v in [
            "mkremoteflash",
            "resyncremoteflash",
            "rmremoteflash",
            "reverseremoteflash",
            "setremoteflashrevertible",
            "commitremoteflash",
            "revertremoteflash",
        ] {
            let ok = messages::success(v);
            assert!(
                ok.id.starts_with("CMUC001")
                    && ok.text.starts_with(if v == "rmremoteflash" {
                        "Removal of the remote FlashCopy"
                    } else {
                        "Remote FlashCopy volume pair {0} successfully"
                    })
            );
        }
        assert_eq!(
            messages::success("resyncremoteflash").line("resyncremoteflash", &["0100:0200"]),
            "CMUC00175I resyncremoteflash: Remote FlashCopy volume pair 0100:0200 successfully resynchronized. \
             Use the lsremoteflash command to determine copy completion."
        );
        assert_eq!(messages::confirm("rmremoteflash").unwrap().id, "CMUC00180W");
        assert_eq!(messages::withdraw_cp("rmremoteflash").id, "CMUC00181I");
        assert_eq!(messages::withdraw_cp("rmflash").id, "CMUC00143I");
        assert_eq!(messages::object_name("lsremoteflash"), "Flash Copy");
    }
}
