//! The simulated line of each port pair of the site's PPRC paths, shown and set while flashd
//! runs: `lslink` and `chlink` (dscli extensions; control requests `LinkList` and `LinkSet`),
//! served by [`PathLinks::link_request`].
//!
//! `chlink` sets [`LinkProps`] (bandwidth, one-way latency, jitter, loss as retransmission
//! delay, rto, outage) on a port pair's link with [`Link::set_props`], which tells the other
//! end, so both ends shape with the same line. [`PathLinks`] also remembers the setting per
//! port pair (the pair unordered: a path and a path back over the same two ports share one
//! link and one setting):
//!
//! * a link that [`PathLinks`] makes again for the pair (an in-process link remade when the
//!   paths are reconciled, a TCP link redialled at `mkpprcpath` or by `lspprcpath`) gets the
//!   setting as soon as it is up;
//! * a port pair without a link takes a setting too; `lslink` shows it, and the link gets it
//!   when it comes up;
//! * the setting is forgotten when no path uses the port pair any more.
//!
//! What does **not** survive:
//! * **a flashd restart**: settings live in memory only. After a restart every link starts
//!   with the defaults ([`LinkProps::default`]: unlimited bandwidth, no latency, jitter, loss
//!   or outage, rto 200 ms); set them again with `chlink`;
//! * **counters** ([`LinkStats`]) belong to one connection: a remade link counts from zero;
//! * a link another flashd dialled to this one (its own path back) is set up by that flashd
//!   when it redials; a setting made at either end reaches both ends while they are connected.
//!
//! `lslink` sends nothing over the links (no ping, no redial): a link is `up` when it is
//! connected and not in an outage. The counters are those of this image's end of the link.

use super::{PathLinks, addr};
use crate::control::{ItemOutcome, LinkChange, LinkView, Reply, Request};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{ImageId, LssId};
use crate::image::record::PprcPathRecord;
use crate::link::{Link, LinkAddr, LinkProps};

/// The key of a port pair's remembered setting: the two ports in order, whichever end asks.
fn key(a: LinkAddr, b: LinkAddr) -> (LinkAddr, LinkAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl PathLinks {
    /// Serve `LinkList` or `LinkSet` for the image the request names, whose PPRC paths are
    /// `paths` (`None`: no such image). The caller holds no image lock.
    pub fn link_request(&mut self, paths: Option<&[PprcPathRecord]>, req: &Request) -> Result<Reply> {
        let (Request::LinkList { image } | Request::LinkSet { image, .. }) = req else {
            return Err(Error::new(ErrorKind::InvalidArgument, "link request", "not a link request"));
        };
        let paths = paths.ok_or_else(|| Error::new(ErrorKind::ImageNotFound, image, "no such storage image"))?;
        match req {
            Request::LinkSet { remote, lss, ports, change, .. } => {
                self.set_link_props(image, paths, remote.as_ref(), *lss, ports, change)
            }
            _ => Ok(Reply::Links(self.link_views(image, paths))),
        }
    }

    /// What a port pair's link shapes with now, or (no link) what it will get.
    fn props_of(&self, a: &LinkAddr, b: &LinkAddr) -> LinkProps {
        match self.link(a, b) {
            Some(l) => l.props(),
            None => self.props.get(&key(*a, *b)).copied().unwrap_or_default(),
        }
    }

    fn link_views(&self, image: &ImageId, paths: &[PprcPathRecord]) -> Vec<LinkView> {
        let mut views = Vec::new();
        for p in paths {
            for (port, attached) in &p.ports {
                let pair = addr(image, port).zip(addr(&p.remote, attached));
                let link = pair.and_then(|(a, b)| self.link(&a, &b));
                views.push(LinkView {
                    src_lss: p.src_lss,
                    tgt_lss: p.tgt_lss,
                    remote: p.remote.clone(),
                    port: port.clone(),
                    attached: attached.clone(),
                    up: link.as_ref().is_some_and(Link::is_up),
                    props: pair.map(|(a, b)| self.props_of(&a, &b)).unwrap_or_default(),
                    stats: link.as_ref().map(Link::stats),
                });
            }
        }
        views
    }

    /// `chlink`: select, check every new value, then set and remember them.
    fn set_link_props(
        &mut self,
        image: &ImageId,
        paths: &[PprcPathRecord],
        remote: Option<&ImageId>,
        lss: Option<(LssId, LssId)>,
        ports: &[(String, String)],
        change: &LinkChange,
    ) -> Result<Reply> {
        if change.is_empty() {
            return Err(Error::new(ErrorKind::InvalidArgument, image, "no link property to change"));
        }
        let chosen: Vec<&PprcPathRecord> = paths
            .iter()
            .filter(|p| remote.is_none_or(|r| p.remote == *r))
            .filter(|p| lss.is_none_or(|(s, t)| p.src_lss == s && p.tgt_lss == t))
            .collect();
        if chosen.is_empty() {
            let object = match (lss, remote) {
                (Some((s, t)), _) => format!("{s}:{t}"),
                (None, Some(r)) => r.to_string(),
                (None, None) => image.to_string(),
            };
            return Err(Error::new(ErrorKind::PprcPathNotFound, object, "no PPRC path is selected"));
        }
        let wanted: Vec<(String, String)> =
            ports.iter().map(|(a, b)| (a.to_ascii_uppercase(), b.to_ascii_uppercase())).collect();
        if let Some((a, b)) = wanted.iter().find(|w| !chosen.iter().any(|p| p.ports.contains(w))) {
            let why = "no selected PPRC path uses this port pair";
            return Err(Error::new(ErrorKind::PprcPathNotFound, format!("{a}:{b}"), why));
        }
        // Every value is checked before any is set.
        let mut plan = Vec::new();
        for p in chosen {
            for (port, attached) in &p.ports {
                if !wanted.is_empty() && !wanted.iter().any(|(a, b)| a == port && b == attached) {
                    continue;
                }
                let object = format!("{}:{} {port}:{attached}", p.src_lss, p.tgt_lss);
                let (Some(a), Some(b)) = (addr(image, port), addr(&p.remote, attached)) else {
                    return Err(Error::new(ErrorKind::Corrupt, &object, "the path names a port that is not Ixxxx"));
                };
                let new = change.apply(self.props_of(&a, &b));
                new.validate().map_err(|e| Error::new(ErrorKind::InvalidArgument, &object, e.detail))?;
                plan.push((object, a, b, new));
            }
        }
        let mut items = Vec::new();
        for (object, a, b, new) in plan {
            self.props.insert(key(a, b), new);
            let result = match self.link(&a, &b) {
                Some(l) => l.set_props(new),
                None => Ok(()),
            };
            tracing::info!("{image}: link {object} ({a} - {b}) set to {new:?}");
            items.push(ItemOutcome { object, result });
        }
        Ok(Reply::Items(items))
    }

    /// Give a link PathLinks has just made the setting remembered for its port pair.
    pub(super) fn restore_props(&self, link: &Link) {
        let Some(p) = self.props.get(&key(link.local(), link.peer())) else { return };
        if link.props() != *p
            && let Err(e) = link.set_props(*p)
        {
            tracing::warn!("PPRC path link {} -> {}: keeping its settings failed: {e}", link.local(), link.peer());
        }
    }

    /// Forget the settings of port pairs no path wants any more.
    pub(super) fn keep_props(&mut self, wanted: &super::Wanted) {
        self.props.retain(|(a, b), _| {
            [(*a, *b), (*b, *a)].iter().any(|k| wanted.local.contains(k) || wanted.remote.contains_key(k))
        });
    }
}
