//! Remote (in-band) FlashCopy: the `*remoteflash` family. A FlashCopy request for the image
//! that holds PPRC secondaries travels from a conduit LSS of the local image (holding their
//! primaries) over the pair's path as an in-band command, and runs at the remote image through
//! its own FlashCopy code: the copy never crosses the link (flashcopy-semantics.md §3).
//!
//! Rules, each with its own error and checked per pair before anything is sent (a pair that
//! fails them is answered here; the rest travel):
//! * every FlashCopy source is the secondary of a pair whose primary is in the conduit LSS
//!   (`ConduitNoPair`), checked at both ends (the remote end checks the sender is that
//!   primary's image);
//! * the path of that pair exists (`PprcPathNotFound`) and has a link up (`ConduitSuspended`);
//! * `-srcss`, when given, is the remote source LSS's subsystem ID (`ConduitSsidMismatch`,
//!   checked at the remote image, which knows it).
//!
//! One request ID, one try: a lost answer is `LinkOutcomeUnknown` (exit 4), never resent
//! blindly (a resync sent twice would be two increments).

use super::hub::{Hub, wwnn_of};
use super::inband::InBand;
use super::pair::Primary;
use crate::control::{ItemOutcome, Reply, Request};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ImageId, LssId, VolumeId};
use crate::link::Message;
use std::sync::Arc;

/// The remote image a FlashCopy request is for, and the sources it names (in input order,
/// one per item of the answer; `None` for `FlashList`).
fn target_of(req: &Request) -> Result<(ImageId, Option<Vec<VolumeId>>)> {
    Ok(match req {
        Request::FlashList { image } => (image.clone(), None),
        Request::FlashCreate { image, pairs, .. }
        | Request::FlashRemove { image, pairs, .. }
        | Request::FlashResync { image, pairs, .. }
        | Request::FlashReverse { image, pairs, .. }
        | Request::FlashSetRevertible { image, pairs, .. } => {
            (image.clone(), Some(pairs.iter().map(|p| p.0).collect()))
        }
        Request::FlashCommit { image, sources, .. } | Request::FlashRevert { image, sources, .. } => {
            (image.clone(), Some(sources.clone()))
        }
        other => {
            return Err(Error::new(ErrorKind::InvalidArgument, "remote FlashCopy", format!("not one: {other:?}")));
        }
    })
}

/// The same request, keeping only the items at `keep` (by index).
fn only(req: &Request, keep: &[usize]) -> Request {
    let pick = |v: &Vec<(VolumeId, VolumeId)>| keep.iter().map(|&i| v[i]).collect();
    let mut r = req.clone();
    match &mut r {
        Request::FlashCreate { pairs, .. }
        | Request::FlashRemove { pairs, .. }
        | Request::FlashResync { pairs, .. }
        | Request::FlashReverse { pairs, .. }
        | Request::FlashSetRevertible { pairs, .. } => *pairs = pick(pairs),
        Request::FlashCommit { sources, .. } | Request::FlashRevert { sources, .. } => {
            *sources = keep.iter().map(|&i| sources[i]).collect()
        }
        _ => {}
    }
    r
}

impl Hub {
    /// The primaries of the conduit LSS paired with volumes of `remote`.
    fn conduit_pairs(&self, image: &ImageId, conduit: LssId, remote: &ImageId) -> Vec<Arc<Primary>> {
        self.primaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((i, v), p)| i == image && v.lss() == conduit && p.remote == *remote)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Serve `Request::RemoteFlash` at the local (conduit) image.
    pub fn remote_flash(&self, image: &ImageId, conduit: LssId, srcss: Option<u16>, req: &Request) -> Result<Reply> {
        let (remote, sources) = target_of(req)?;
        if !self.images.lock().unwrap_or_else(|p| p.into_inner()).contains_key(image) {
            return Err(Error::new(ErrorKind::ImageNotFound, image, "no such storage image"));
        }
        let pairs = self.conduit_pairs(image, conduit, &remote);
        let name = format!("{image}/{conduit}");
        let Some(sources) = sources else {
            // lsremoteflash: the relationships whose source is a secondary of the conduit.
            let p = pairs.first().ok_or_else(|| {
                Error::new(ErrorKind::ConduitNoPair, &name, format!("no PPRC pair from this LSS to {remote}"))
            })?;
            let p = pairs.iter().find(|p| p.route.link().is_some_and(|l| l.is_up())).unwrap_or(p);
            if p.route.link().is_none_or(|l| !l.is_up()) {
                return Err(self.path_problem(image, p));
            }
            let reply = self.send_flash(p, image, conduit, srcss, req)?;
            let Reply::Flash(views) = reply else { return Ok(reply) };
            // Relationships of the conduit's secondaries, either way round (a reverse).
            let ours: Vec<VolumeId> = pairs.iter().map(|p| p.target).collect();
            return Ok(Reply::Flash(
                views
                    .into_iter()
                    .filter(|v| ours.contains(&v.record.source) || ours.contains(&v.record.target))
                    .collect(),
            ));
        };
        // Per pair: the conduit's primary of its source, or the refusal.
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; sources.len()];
        let mut keep = Vec::new();
        let mut via: Option<Arc<Primary>> = None;
        for (i, src) in sources.iter().enumerate() {
            let object = item_name(req, i);
            let check = match pairs.iter().find(|p| p.target == *src) {
                None => Err(Error::new(
                    ErrorKind::ConduitNoPair,
                    &object,
                    format!("{src} is not the secondary of a PPRC pair whose primary is in {name}"),
                )),
                Some(p) if p.route.link().is_none_or(|l| !l.is_up()) => Err(self.path_problem(image, p)),
                Some(p) => Ok(p.clone()),
            };
            match check {
                Ok(p) => {
                    via.get_or_insert(p);
                    keep.push(i);
                }
                Err(e) => outcomes[i] = Some(ItemOutcome { object, result: Err(e) }),
            }
        }
        if let Some(p) = via {
            let reply = self.send_flash(&p, image, conduit, srcss, &only(req, &keep))?;
            let Reply::Items(items) = reply else {
                return Err(Error::new(ErrorKind::LinkProtocol, &name, "the remote image answered no items"));
            };
            if items.len() != keep.len() {
                return Err(Error::new(ErrorKind::LinkProtocol, &name, "the remote image answered other items"));
            }
            for (i, item) in keep.into_iter().zip(items) {
                outcomes[i] = Some(item);
            }
        }
        Ok(Reply::Items(outcomes.into_iter().flatten().collect()))
    }

    /// Why a conduit pair's path cannot carry the command.
    fn path_problem(&self, image: &ImageId, p: &Primary) -> Error {
        let images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let has_path =
            images.get(image).is_some_and(|i| i.pprc_path(p.source.lss(), &p.remote, p.target.lss()).is_some());
        let path = format!("{}:{}", p.source.lss(), p.target.lss());
        if has_path {
            Error::new(ErrorKind::ConduitSuspended, &path, format!("no link of the path to {} is up", p.remote))
        } else {
            Error::new(ErrorKind::PprcPathNotFound, &path, format!("no path to {}", p.remote))
        }
    }

    fn send_flash(
        &self,
        p: &Primary,
        image: &ImageId,
        conduit: LssId,
        srcss: Option<u16>,
        req: &Request,
    ) -> Result<Reply> {
        let body =
            serde_json::to_vec(req).map_err(|e| Error::new(ErrorKind::InvalidArgument, "request", e.to_string()))?;
        let cmd = InBand::Flash { primary: image.clone(), conduit, srcss, request: body };
        let answer = p.route.request(&Message::Command(cmd.encode())).map_err(|(e, _)| e)?;
        serde_json::from_slice(&answer)
            .map_err(|e| Error::new(ErrorKind::LinkProtocol, &p.remote, format!("not a FlashCopy answer: {e}")))
    }

    /// At the remote image: run a FlashCopy request that came in band from `primary`'s conduit.
    pub(super) fn inband_flash(
        &self,
        local_wwnn: u64,
        primary: &ImageId,
        conduit: LssId,
        srcss: Option<u16>,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let req: Request = serde_json::from_slice(body)
            .map_err(|e| Error::new(ErrorKind::LinkProtocol, primary, format!("not a FlashCopy request: {e}")))?;
        let (image, sources) = target_of(&req)?;
        if wwnn_of(&image) != local_wwnn {
            return Err(Error::new(ErrorKind::ImageNotFound, &image, "not the image at this port"));
        }
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let img = images.get_mut(&image).ok_or_else(|| Error::new(ErrorKind::ImageNotFound, &image, ""))?;
        // The remote end checks the conduit too: each source is a secondary of `primary`
        // whose primary volume is in the conduit LSS; and -srcss.
        let refusal = |i: usize, src: VolumeId, img: &crate::image::Image| -> Option<Error> {
            let object = item_name(&req, i);
            // A secondary of the conduit's primary, or one failed over from it (a reverse
            // onto a secondary needs the failover first: flashcopy-semantics.md §2).
            let ok = img.pprc_pair(src).is_some_and(|p| p.remote == *primary && p.remote_volume.lss() == conduit);
            if !ok {
                return Some(Error::new(
                    ErrorKind::ConduitNoPair,
                    object,
                    format!("{src} is not the secondary of a pair whose primary is in {primary}/{conduit}"),
                ));
            }
            match srcss {
                Some(ss) if img.record().lss_ssid(src.lss()) != ss => Some(Error::new(
                    ErrorKind::ConduitSsidMismatch,
                    object,
                    format!("the SSID of LSS {} is {:04X}", src.lss(), img.record().lss_ssid(src.lss())),
                )),
                _ => None,
            }
        };
        let now = super::pair::now();
        let reply = match &sources {
            None => img.flash_request(req.clone(), now)?,
            Some(sources) => {
                let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; sources.len()];
                let mut keep = Vec::new();
                for (i, src) in sources.iter().enumerate() {
                    match refusal(i, *src, img) {
                        Some(e) => outcomes[i] = Some(ItemOutcome { object: item_name(&req, i), result: Err(e) }),
                        None => keep.push(i),
                    }
                }
                if !keep.is_empty() {
                    let Reply::Items(items) = img.flash_request(only(&req, &keep), now)? else {
                        return Err(Error::new(ErrorKind::Io, &image, "FlashCopy answered no items"));
                    };
                    for (i, item) in keep.into_iter().zip(items) {
                        outcomes[i] = Some(item);
                    }
                }
                Reply::Items(outcomes.into_iter().flatten().collect())
            }
        };
        tracing::info!("{image}: remote FlashCopy request from {primary}/{conduit} served");
        serde_json::to_vec(&reply).map_err(|e| Error::new(ErrorKind::Io, &image, e.to_string()))
    }
}

/// How the answer names item `i` (the pair `SSSS:TTTT`, or the source).
fn item_name(req: &Request, i: usize) -> String {
    match req {
        Request::FlashCreate { pairs, .. }
        | Request::FlashRemove { pairs, .. }
        | Request::FlashResync { pairs, .. }
        | Request::FlashReverse { pairs, .. }
        | Request::FlashSetRevertible { pairs, .. } => {
            pairs.get(i).map(|(s, t)| format!("{s}:{t}")).unwrap_or_default()
        }
        Request::FlashCommit { sources, .. } | Request::FlashRevert { sources, .. } => {
            sources.get(i).map(|s| s.to_string()).unwrap_or_default()
        }
        _ => String::new(),
    }
}
