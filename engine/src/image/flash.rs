//! FlashCopy requests of one image: the rules of each command, the catalog, and the
//! engine's relationships (`crate::flash`).
//!
//! Every pair succeeds or fails as a unit, and a failure leaves catalog, bitmaps and data as
//! they were: the rules are checked before anything changes, the catalog is written under
//! the volumes' barrier before the relationship is installed (or after it is removed, with
//! a put-back if the write fails).

use super::Image;
use crate::control::{FlashView, ItemOutcome, Reply, Request, Withdraw};
use crate::error::{Error, ErrorKind, Result};
use crate::flash::relationship::{FlashOptions, FlashRecord, FlashState, Relationship};
use crate::id::VolumeId;
use crate::image::record::{Sam, StorageType};
use std::sync::Arc;

/// Targets one source may have.
pub const MAX_TARGETS: usize = 12;
/// Consistency-group (freeze) timeout by storage type, seconds (DS8000 defaults).
pub const FREEZE_TIMEOUT_FB: u32 = 60;
pub const FREEZE_TIMEOUT_CKD: u32 = 120;

fn pair_name(s: VolumeId, t: VolumeId) -> String {
    format!("{s}:{t}")
}

impl Image {
    pub fn flash_request(&mut self, req: Request, now: i64) -> Result<Reply> {
        Ok(match req {
            Request::FlashCreate { pairs, options, .. } => Reply::Items(self.flash_create(&pairs, options, now)),
            Request::FlashList { .. } => Reply::Flash(self.flash_views()),
            Request::FlashRemove { pairs, withdraw, .. } => {
                Reply::Items(self.per_pair(&pairs, |img, rel| img.flash_remove(rel, withdraw)))
            }
            Request::FlashResync { pairs, options, seqnum, .. } => {
                Reply::Items(self.per_pair(&pairs, |img, rel| img.flash_resync(rel, options.clone(), seqnum, now)))
            }
            Request::FlashReverse { pairs, options, fast, seqnum, .. } => Reply::Items(
                self.per_pair(&pairs, |img, rel| img.flash_reverse(rel, options.clone(), fast, seqnum, now)),
            ),
            Request::FlashUnfreeze { lss, .. } => Reply::Items(
                lss.iter()
                    .map(|&l| ItemOutcome {
                        object: l.to_string(),
                        result: if self.flash.freeze_gate_state().thaw(l) {
                            Ok(())
                        } else {
                            Err(Error::new(
                                ErrorKind::FlashNotFrozen,
                                l,
                                "no frozen FlashCopy consistency group (never frozen, or its timer already fired)",
                            ))
                        },
                    })
                    .collect(),
            ),
            Request::FlashSetRevertible { pairs, seqnum, .. } => {
                Reply::Items(self.per_pair(&pairs, |img, rel| img.flash_set_revertible(rel, seqnum)))
            }
            Request::FlashCommit { sources, seqnum, .. } => Reply::Items(self.per_source(&sources, seqnum, true)),
            Request::FlashRevert { sources, seqnum, .. } => Reply::Items(self.per_source(&sources, seqnum, false)),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    self.id(),
                    format!("not a FlashCopy request: {other:?}"),
                ));
            }
        })
    }

    fn relationship(&self, s: VolumeId, t: VolumeId) -> Result<Arc<Relationship>> {
        self.flash.relationships().into_iter().find(|r| r.ids() == (s, t)).ok_or_else(|| {
            Error::new(ErrorKind::FlashNotFound, pair_name(s, t), "no FlashCopy relationship for this pair")
        })
    }

    fn per_pair(
        &mut self,
        pairs: &[(VolumeId, VolumeId)],
        mut f: impl FnMut(&mut Image, &Arc<Relationship>) -> Result<()>,
    ) -> Vec<ItemOutcome> {
        pairs
            .iter()
            .map(|&(s, t)| {
                let result = self.relationship(s, t).and_then(|rel| f(self, &rel));
                ItemOutcome { object: pair_name(s, t), result }
            })
            .collect()
    }

    /// The catalog as memory will be after `f` changes a relationship's record.
    fn catalog_with(&self, rel: &Relationship, f: impl FnOnce(&mut FlashRecord)) -> super::record::ImageRecord {
        let mut next = self.flash_catalog(&[], &[]);
        if let Some(r) = next.flash.iter_mut().find(|r| (r.source, r.target) == rel.ids()) {
            f(r);
        }
        next
    }

    /// `setflashrevertible`: only a valid incremental relationship, once.
    fn flash_set_revertible(&mut self, rel: &Arc<Relationship>, seqnum: Option<u32>) -> Result<()> {
        Self::check_seqnum(rel, seqnum)?;
        let (s, t) = rel.ids();
        let rec = rel.state().record.clone();
        require_record(&rec, "only an incremental (-record -persist) relationship can be made revertible")?;
        if rec.revertible {
            return Err(Error::new(
                ErrorKind::FlashRevertibleState,
                pair_name(s, t),
                "the relationship is already revertible",
            ));
        }
        if rec.state != FlashState::Valid {
            return Err(Error::new(ErrorKind::FlashStateInvalid, pair_name(s, t), "the relationship is not valid"));
        }
        let next = self.catalog_with(rel, |r| r.revertible = true);
        let dir = self.dir.clone();
        self.flash.set_revertible(rel, || super::catalog::store(&dir, &next))?;
        self.record = next;
        Ok(())
    }

    /// `commitflash` / `revertflash`, addressed by source volume: every revertible
    /// relationship of each source.
    fn per_source(&mut self, sources: &[VolumeId], seqnum: Option<u32>, commit: bool) -> Vec<ItemOutcome> {
        sources
            .iter()
            .map(|&src| {
                let of_src: Vec<Arc<Relationship>> =
                    self.flash.relationships().into_iter().filter(|r| r.source.key().volume == src).collect();
                let rels: Vec<Arc<Relationship>> =
                    of_src.iter().filter(|r| r.state().record.revertible).cloned().collect();
                // The most specific reason: no volume, no relationship, none revertible.
                let result = if !self.record.volumes.contains_key(&src) {
                    Err(Error::new(ErrorKind::VolumeNotFound, src, "no such volume"))
                } else if of_src.is_empty() {
                    Err(Error::new(ErrorKind::FlashNotFound, src, "no FlashCopy relationship has this source"))
                } else if rels.is_empty() {
                    Err(Error::new(
                        ErrorKind::FlashRevertibleState,
                        src,
                        "no revertible FlashCopy relationship has this source",
                    ))
                } else {
                    rels.iter().try_for_each(|rel| {
                        Self::check_seqnum(rel, seqnum)?;
                        let next = self.catalog_with(rel, |r| r.revertible = false);
                        let dir = self.dir.clone();
                        let store = || super::catalog::store(&dir, &next);
                        if commit {
                            self.flash.commit_revertible(rel, store)?
                        } else {
                            self.flash.revert_revertible(rel, store)?
                        }
                        self.record = next;
                        Ok(())
                    })
                };
                ItemOutcome { object: src.to_string(), result }
            })
            .collect()
    }

    /// The catalog with the relationships as they are in memory, plus/minus changes.
    fn flash_catalog(&self, add: &[FlashRecord], drop: &[(VolumeId, VolumeId)]) -> super::record::ImageRecord {
        let mut next = self.record.clone();
        next.flash = self.flash.records();
        next.flash.retain(|r| !drop.contains(&(r.source, r.target)));
        next.flash.extend(add.iter().cloned());
        next
    }

    /// FlashCopy meets PPRC: a PPRC secondary (not failed over) is never a FlashCopy
    /// target; a PPRC primary is one only with `-tgtpprc`.
    fn check_pprc_target(&self, name: &str, t: VolumeId, options: &FlashOptions) -> Result<()> {
        match self.pprc_pair(t).map(|p| p.role) {
            Some(crate::image::record::PprcRole::Secondary) => Err(Error::new(
                ErrorKind::PprcSecondary,
                name,
                format!("{t} is a PPRC secondary; fail the pair over first"),
            )),
            Some(crate::image::record::PprcRole::Primary) if !options.tgtpprc => {
                Err(Error::new(ErrorKind::PprcTgtpprcRequired, name, format!("{t} is a PPRC primary; give -tgtpprc")))
            }
            _ => Ok(()),
        }
    }

    /// The rules of one new pair, given what exists and what this command already made.
    fn check_new_pair(&self, s: VolumeId, t: VolumeId, options: &FlashOptions, made: &[FlashRecord]) -> Result<()> {
        let name = pair_name(s, t);
        let src =
            self.record.volumes.get(&s).ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, s, "no such volume"))?;
        let tgt =
            self.record.volumes.get(&t).ok_or_else(|| Error::new(ErrorKind::VolumeNotFound, t, "no such volume"))?;
        if s == t || src.geometry != tgt.geometry {
            return Err(Error::new(
                ErrorKind::FlashIncompatible,
                &name,
                "source and target must be distinct volumes of the same size and type",
            ));
        }
        let mut all: Vec<FlashRecord> = self.flash.records();
        all.extend(made.iter().cloned());
        if all.iter().any(|r| (r.source, r.target) == (s, t)) {
            return Err(Error::new(ErrorKind::FlashExists, &name, "the FlashCopy pair already exists"));
        }
        if all.iter().any(|r| r.target == t) {
            return Err(Error::new(ErrorKind::FlashTargetInUse, &name, format!("{t} is already a FlashCopy target")));
        }
        if all.iter().any(|r| r.target == s) || all.iter().any(|r| r.source == t) {
            return Err(Error::new(
                ErrorKind::FlashCascade,
                &name,
                "a volume cannot be a FlashCopy source and target at once",
            ));
        }
        if all.iter().filter(|r| r.source == s).count() >= MAX_TARGETS {
            return Err(Error::new(
                ErrorKind::FlashTooManyTargets,
                &name,
                format!("{s} already has {MAX_TARGETS} targets"),
            ));
        }
        if options.record && all.iter().any(|r| r.source == s && r.options.record) {
            return Err(Error::new(
                ErrorKind::FlashIncrementalExists,
                &name,
                format!("{s} already has an incremental relationship"),
            ));
        }
        self.check_pprc_target(&name, t, options)?;
        if options.tgtse && tgt.sam != Sam::Ese {
            return Err(Error::new(ErrorKind::FlashTargetNotSe, &name, format!("{t} is not space efficient")));
        }
        if options.tgtoffline {
            check_offline(&name, self.volumes.get(&t))?;
        }
        Ok(())
    }

    /// `mkflash`. With `-freeze` the command is one consistency group: all pairs or none.
    fn flash_create(
        &mut self,
        pairs: &[(VolumeId, VolumeId)],
        mut options: FlashOptions,
        now: i64,
    ) -> Vec<ItemOutcome> {
        if options.record {
            options.persist = true;
        }
        let mut outcomes = Vec::new();
        let mut made: Vec<FlashRecord> = Vec::new();
        for &(s, t) in pairs {
            let result = self.check_new_pair(s, t, &options, &made);
            if result.is_ok() {
                made.push(FlashRecord {
                    source: s,
                    target: t,
                    options: options.clone(),
                    state: FlashState::Valid,
                    revertible: false,
                    created: now,
                    synced: now,
                    increment: self.volumes.get(&t).map_or(0, |v| v.geometry().tracks()),
                });
            }
            outcomes.push(ItemOutcome { object: pair_name(s, t), result });
        }
        if options.freeze && outcomes.iter().any(|o| o.result.is_err()) {
            let failed = outcomes.iter().find(|o| o.result.is_err()).map(|o| o.object.clone()).unwrap_or_default();
            for o in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                o.result = Err(Error::new(
                    ErrorKind::FlashGroupFailed,
                    &o.object,
                    format!("not established: pair {failed} of the -freeze consistency group failed"),
                ));
            }
            return outcomes;
        }
        if made.is_empty() {
            return outcomes;
        }
        // One barrier, one catalog write, one install: the group shares T0.
        let rels = match self.new_relationships(&made) {
            Ok(r) => r,
            Err(e) => {
                for o in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                    o.result = Err(e.clone());
                }
                return outcomes;
            }
        };
        let next = self.flash_catalog(&made, &[]);
        let dir = self.dir.clone();
        match self.flash.install_group(rels, || super::catalog::store(&dir, &next)) {
            Ok(()) => {
                self.record = next;
                if options.freeze {
                    for rec in &made {
                        let lss = rec.source.lss();
                        let ckd = self.record.volumes.get(&rec.source).is_some_and(|v| v.stgtype() == StorageType::Ckd);
                        let secs = if ckd { FREEZE_TIMEOUT_CKD } else { FREEZE_TIMEOUT_FB };
                        self.flash.freeze_gate_state().freeze(lss, std::time::Duration::from_secs(secs as u64));
                    }
                }
            }
            Err(e) => {
                if let Some(store) = self.flash.store() {
                    for rec in &made {
                        self.flash.with_ckpt_lock(|| store.remove_relationship(rec.source, rec.target));
                    }
                }
                for o in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                    o.result = Err(e.clone());
                }
            }
        }
        outcomes
    }

    /// Runtime relationships for new records: journals for their volumes, a fresh copied
    /// set each (stale files of an earlier relationship of the pair removed).
    fn new_relationships(&self, made: &[FlashRecord]) -> Result<Vec<Arc<Relationship>>> {
        let mut rels = Vec::new();
        for rec in made {
            let (s, t) = (self.volumes[&rec.source].clone(), self.volumes[&rec.target].clone());
            self.flash.ensure_journal(&s)?;
            self.flash.ensure_journal(&t)?;
            let (copied, grains) = match self.flash.store() {
                Some(store) => {
                    let logs = self.flash.with_ckpt_lock(|| store.new_relationship(&s, rec.source, rec.target))?;
                    (Some(logs.copied), logs.grains)
                }
                None => (None, None),
            };
            let bits = crate::bitmap::TrackBitmap::full(s.geometry().tracks());
            let rel = Relationship::with_copied(s, t, rec.clone(), bits, copied).with_grain_log(grains);
            if let Some(store) = self.flash.store() {
                let _ = rel.state_file.set(store.state_path(rec.source, rec.target));
            }
            rels.push(Arc::new(rel));
        }
        Ok(rels)
    }

    fn check_seqnum(rel: &Relationship, seqnum: Option<u32>) -> Result<()> {
        let (s, t) = rel.ids();
        match seqnum {
            Some(n) if n != rel.state().record.options.seqnum => Err(Error::new(
                ErrorKind::FlashSeqnumMismatch,
                pair_name(s, t),
                format!("sequence number {n:08X} does not match the relationship's"),
            )),
            _ => Ok(()),
        }
    }

    /// `rmflash`: withdraw now, or (`-cp`) when the background copy is done.
    fn flash_remove(&mut self, rel: &Arc<Relationship>, w: Withdraw) -> Result<()> {
        Self::check_seqnum(rel, w.seqnum)?;
        let (s, t) = rel.ids();
        if w.cp && !rel.state().target_bits.is_empty() {
            let mut st = rel.state();
            if st.record.state != FlashState::Valid {
                return Err(Error::new(ErrorKind::FlashStateInvalid, pair_name(s, t), "the relationship cannot copy"));
            }
            if w.resettgtinhibit {
                st.record.options.tgtinhibit = false;
            }
            st.remove_when_copied = true;
            drop(st);
            self.flash.kick();
            return Ok(());
        }
        let next = self.flash_catalog(&[], &[(s, t)]);
        let dir = self.dir.clone();
        self.flash.remove_with(rel, || super::catalog::store(&dir, &next))?;
        self.record = next;
        if let Some(store) = self.flash.store() {
            self.flash.with_ckpt_lock(|| store.remove_relationship(s, t));
        }
        self.flash.remove_revert_files(rel);
        Ok(())
    }

    /// `resyncflash`: a new point in time, copying only what changed.
    fn flash_resync(
        &mut self,
        rel: &Arc<Relationship>,
        mut options: FlashOptions,
        seqnum: Option<u32>,
        now: i64,
    ) -> Result<()> {
        Self::check_seqnum(rel, seqnum)?;
        let (s, t) = rel.ids();
        let current = rel.state().record.clone();
        require_record(&current, "the relationship does not record changes (-record -persist)")?;
        if options.tgtoffline {
            check_offline(&pair_name(s, t), Some(&rel.target))?;
        }
        // After `Tgt Failed` or `Validation Required` the change recording cannot be trusted:
        // the resync is a full copy, which makes the pair valid again.
        let full = current.state != FlashState::Valid;
        // `-record` alone keeps persistence; the given parameters replace the others.
        if options.record {
            options.persist = true;
        }
        if seqnum.is_none() {
            options.seqnum = current.options.seqnum;
        }
        let mut rec = current.clone();
        rec.options = options.clone();
        rec.synced = now;
        rec.state = FlashState::Valid;
        let mut next = self.flash_catalog(&[], &[]);
        if let Some(r) = next.flash.iter_mut().find(|r| (r.source, r.target) == (s, t)) {
            *r = rec;
        }
        let dir = self.dir.clone();
        self.flash.resync(rel, options, now, full, |bits| {
            if let Some(r) = next.flash.iter_mut().find(|r| (r.source, r.target) == (s, t)) {
                r.increment = bits.len();
            }
            super::catalog::store(&dir, &next)
        })?;
        self.record = next;
        if full && let Some(store) = self.flash.store() {
            store.clear_state(s, t);
        }
        Ok(())
    }

    /// `reverseflash`: the target's point-in-time image flows back to the source; the
    /// relationship now runs target -> source. Without `-fast`, refused until the
    /// background copy is done; with it, uncopied tracks are materialized first (the
    /// reversed copy needs the old target to hold its own data).
    fn flash_reverse(
        &mut self,
        rel: &Arc<Relationship>,
        mut options: FlashOptions,
        fast: bool,
        seqnum: Option<u32>,
        now: i64,
    ) -> Result<()> {
        Self::check_seqnum(rel, seqnum)?;
        let (s, t) = rel.ids();
        let name = pair_name(s, t);
        let current = rel.state().record.clone();
        if !current.options.record {
            return Err(Error::new(
                ErrorKind::FlashNotRecording,
                &name,
                "only an incremental (-record -persist) relationship can be reversed",
            ));
        }
        if current.state != FlashState::Valid {
            return Err(Error::new(ErrorKind::FlashStateInvalid, &name, "the relationship is not valid"));
        }
        // The reversed relationship's target is today's source.
        self.check_pprc_target(&name, s, &options)?;
        if self.flash.relationships().iter().filter(|r| r.source.key().volume == s).count() > 1 {
            return Err(Error::new(
                ErrorKind::FlashTooManyTargets,
                &name,
                format!("{s} has other FlashCopy relationships"),
            ));
        }
        if !fast && !rel.state().target_bits.is_empty() {
            return Err(Error::new(
                ErrorKind::FlashCopyActive,
                &name,
                "the background copy has not finished (use -fast)",
            ));
        }
        self.flash.copy_all(rel).map_err(|e| Error::io(&name, &e))?;
        // The copy stops early if the target failed meanwhile: reverse only a complete,
        // valid image.
        if rel.state().record.state != FlashState::Valid || !rel.state().target_bits.is_empty() {
            return Err(Error::new(ErrorKind::FlashStateInvalid, &name, "the background copy did not complete"));
        }
        if seqnum.is_none() {
            options.seqnum = current.options.seqnum;
        }
        if options.record {
            options.persist = true;
        }
        let reversed = FlashRecord {
            source: t,
            target: s,
            options,
            state: FlashState::Valid,
            revertible: false,
            created: current.created,
            synced: now,
            increment: 0, // set by `ImageFlash::reverse`
        };
        let next = self.flash_catalog(std::slice::from_ref(&reversed), &[(s, t)]);
        let dir = self.dir.clone();
        let logs = match self.flash.store() {
            Some(store) => Some(self.flash.with_ckpt_lock(|| store.new_relationship(&rel.target, t, s))?),
            None => None,
        };
        self.flash.reverse(rel, reversed, logs, || super::catalog::store(&dir, &next))?;
        self.record = next;
        if let Some(store) = self.flash.store() {
            self.flash.with_ckpt_lock(|| store.remove_relationship(s, t));
        }
        Ok(())
    }

    pub fn flash_views(&self) -> Vec<FlashView> {
        self.flash
            .relationships()
            .iter()
            .map(|r| {
                let st = r.state();
                let src = &self.record.volumes[&st.record.source];
                let tgt = self.record.volumes.get(&st.record.target);
                FlashView {
                    record: st.record.clone(),
                    out_of_sync: st.target_bits.len(),
                    active_copy: st.copy_active(),
                    target_ese: tgt.is_some_and(|v| v.sam == Sam::Ese),
                    timeout_secs: if src.stgtype() == StorageType::Ckd {
                        FREEZE_TIMEOUT_CKD
                    } else {
                        FREEZE_TIMEOUT_FB
                    },
                    copied: st.copied,
                }
            })
            .collect()
    }

    /// End a relationship whose job is done (copier).
    pub fn flash_finish(&mut self, rel: &Arc<Relationship>) -> Result<()> {
        let (s, t) = rel.ids();
        let next = self.flash_catalog(&[], &[(s, t)]);
        let dir = self.dir.clone();
        self.flash.remove_with(rel, || super::catalog::store(&dir, &next))?;
        self.record = next;
        if let Some(store) = self.flash.store() {
            self.flash.with_ckpt_lock(|| store.remove_relationship(s, t));
        }
        Ok(())
    }

    /// Whether a volume takes part in any FlashCopy relationship.
    pub fn in_relationship(&self, v: VolumeId) -> bool {
        self.record.flash.iter().any(|r| r.source == v || r.target == v)
    }

    /// Bring relationships back at open (DESIGN.md recovery): open the journal of every
    /// volume in a relationship (what it returns was changed), load each relationship's
    /// newest checkpoint minus the tracks whose copy landed since, fold the changes into the
    /// change recording, then checkpoint so the recovered state is durable. After a power
    /// loss a relationship is `Validation Required`: the order of a COW's target write and
    /// its source write cannot be proven after power loss.
    pub(super) fn restore_flash(&mut self) -> Result<()> {
        let Some(store) = self.flash.store().cloned() else { return Ok(()) };
        let mut changed: std::collections::HashMap<VolumeId, (crate::bitmap::TrackBitmap, bool)> = Default::default();
        let mut rels = Vec::new();
        for rec in self.record.flash.clone() {
            let (Some(s), Some(t)) = (self.volumes.get(&rec.source).cloned(), self.volumes.get(&rec.target).cloned())
            else {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    self.id(),
                    format!("relationship {}:{} names a missing volume", rec.source, rec.target),
                ));
            };
            for v in [&s, &t] {
                if let Some((c, prev)) = self.flash.ensure_journal(v)? {
                    let lost = prev == crate::bitmap::journal::Shutdown::PowerLoss;
                    if !c.is_empty() {
                        tracing::info!("{}: journal recovered {} changed tracks", v.key(), c.len());
                    }
                    changed.insert(v.key().volume, (c, lost));
                }
            }
            let opened = store.open_relationship(&s, rec.source, rec.target)?;
            let lost = opened.power_lost
                || changed.get(&rec.source).is_some_and(|c| c.1)
                || changed.get(&rec.target).is_some_and(|c| c.1);
            let state_file = store.state_path(rec.source, rec.target);
            let mut rec = rec.clone();
            if let Some(st) = crate::flash::persist::read_state(&state_file) {
                rec.state = st;
            }
            rec.state = crate::flash::persist::recovered_state(rec.state, lost);
            if lost {
                // Durable before the copied set names this boot as its owner: the next start
                // must not forget it (it would no longer see a power loss).
                crate::flash::persist::write_state(&state_file, rec.state)?;
            }
            opened.copied.claim()?;
            if let Some(g) = &opened.grain_log {
                g.claim()?;
            }
            if lost {
                tracing::warn!(
                    "{}:{}: power loss before this start; relationship is Validation Required",
                    rec.source,
                    rec.target
                );
            }
            let rel = Relationship::with_copied(s, t, rec.clone(), opened.target_bits, Some(opened.copied))
                .with_grain_log(opened.grain_log);
            let _ = rel.state_file.set(state_file);
            {
                let mut st = rel.state();
                st.src_changes = opened.src_changes;
                st.tgt_changes = opened.tgt_changes;
                st.grains = opened.grains;
                st.generation = opened.generation;
                st.copied = rec.increment.saturating_sub(st.target_bits.len());
            }
            self.flash.restore_revert(&rel)?;
            crate::flash::persist::fold_changes(
                &rel,
                changed.get(&rec.source).map(|c| &c.0),
                changed.get(&rec.target).map(|c| &c.0),
            );
            rels.push(Arc::new(rel));
        }
        let _ = self.flash.install_group(rels, || Ok::<(), Error>(()));
        self.record.flash = self.flash.records();
        // Volumes in PPRC pairs keep their journals' recovered tracks until their pairs are
        // back (`mirror::hub::Hub::restore`): this checkpoint must not end their epochs.
        let held: Vec<u64> =
            self.record.pprc_pairs.iter().filter_map(|p| self.volumes.get(&p.local).map(|v| v.handle())).collect();
        self.flash.hold_journals(&held);
        self.flash.checkpoint()
    }
}

/// `-tgtoffline`: the target must not be online to a host. DS8000 checks it for CKD
/// targets; flashtrack hosts reach FB and CKD volumes the same way (NBD, FUSE), so it holds
/// for both. "Online" = any open host session: NBD (site socket or a host connection) or
/// a FUSE open (`Volume::sessions`).
fn check_offline(pair: &str, target: Option<&Arc<crate::volume::Volume>>) -> Result<()> {
    match target.map(|v| v.sessions()) {
        Some(n) if n > 0 => Err(Error::new(
            ErrorKind::FlashTargetOnline,
            pair,
            format!("the target is open to hosts ({n} sessions) and -tgtoffline was given"),
        )),
        _ => Ok(()),
    }
}

/// The commands that need change recording refuse a relationship without it.
fn require_record(rec: &FlashRecord, why: &str) -> Result<()> {
    if rec.options.record {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::FlashNotRecording, pair_name(rec.source, rec.target), why.to_string()))
    }
}
