//! The intercept: every byte-changing host operation, and every target read.
//!
//! Host write to volume V, bytes [o, o+n) (DESIGN.md "How data flows"):
//! 1. map bytes to tracks; 2. the freeze gate (`freeze.rs`) parks writes to a frozen source;
//! 3. inhibit: a `-tgtinhibit` target refuses with EPERM;
//! 4. take the range locks of the tracks on V, on each target of V, and on V's source;
//! 5. copy-on-write: for each relationship where V is the source and the track's target bit
//!    is 1, copy the T0 data to the target first: the 4 KiB grains the write overwrites
//!    (`grain.rs`; the bit stays 1 until every grain is on the target), or the whole track,
//!    then clear the bit;
//! 6. where V is a target with bit 1, fill the track from the source first, clear the bit
//!    (so a partial write never leaves a track half T0, half garbage);
//! 7. set the change-recording bits of every recording relationship touching V, and the
//!    out-of-sync bits of every PPRC pair where V is primary (`pprc.rs`);
//! 8. write the data (a Metro Mirror pair sends it to the secondary in parallel); 9. release
//!    the locks.
//!
//! A PPRC secondary refuses host I/O at step 3 (`pprc.rs`); remote apply from its primary
//! comes through here too, without that check.
//!
//! TRIM and WRITE_ZEROES are zero writes here. Reads of a target track whose bit is 1 come
//! from the source, but for its preserved grains; nothing is copied on read.

use super::grain::{self, GrainMask};
use super::locks::{Claim, LockGuard};
use super::relationship::{FlashState, Relationship};
use super::{ImageFlash, Roles};
use crate::geometry::{Geometry, TRACK_BYTES, TrackNo};
use crate::volume::Volume;
use std::io;
use std::ops::Range;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// What the data step of a modification does.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    Write { data: &'a [u8], fua: bool },
    Trim { len: u64 },
    Zero { len: u64, may_trim: bool },
}

impl Change<'_> {
    fn len(&self) -> u64 {
        match self {
            Change::Write { data, .. } => data.len() as u64,
            Change::Trim { len } | Change::Zero { len, .. } => *len,
        }
    }
}

/// Tracks touched by `[offset, offset+len)` on `vol`, clamped to the volume.
pub(super) fn tracks(vol: &Volume, offset: u64, len: u64) -> Range<u32> {
    let r = Geometry::tracks_of(offset, len);
    let max = vol.geometry().tracks().min(u32::MAX as u64) as u32;
    r.start.min(max)..r.end.min(max)
}

impl ImageFlash {
    pub fn write(&self, vol: &Volume, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.modify(vol, offset, Change::Write { data, fua })
    }

    pub fn trim(&self, vol: &Volume, offset: u64, len: u64) -> io::Result<()> {
        self.modify(vol, offset, Change::Trim { len })
    }

    pub fn write_zeroes(&self, vol: &Volume, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.modify(vol, offset, Change::Zero { len, may_trim })
    }

    /// Lock what an I/O on `vol`'s `tracks` needs, given the relationships at that moment;
    /// retry if they changed while we waited.
    pub(super) fn lock_for(&self, vol: &Volume, tracks: &Range<u32>) -> (LockGuard<'_>, Roles) {
        loop {
            let generation = self.generation();
            let roles = self.roles(vol.handle());
            let mut claims = vec![Claim::new(vol.handle(), tracks.clone())];
            claims.extend(roles.as_source.iter().map(|r| Claim::new(r.target.handle(), tracks.clone())));
            if let Some(r) = &roles.as_target {
                claims.push(Claim::new(r.source.handle(), tracks.clone()));
            }
            let guard = self.locks.lock(claims);
            if self.generation() == generation {
                return (guard, roles);
            }
        }
    }

    fn modify(&self, vol: &Volume, offset: u64, change: Change<'_>) -> io::Result<()> {
        self.modify_as(vol, offset, change, false)
    }

    /// A modification by a host (`remote` false) or by remote apply from a PPRC primary.
    pub(super) fn modify_as(&self, vol: &Volume, offset: u64, change: Change<'_>, remote: bool) -> io::Result<()> {
        let result = self.modify_inner(vol, offset, change, remote);
        // A write whose mirroring just failed on a `-consistgrp` pair froze its LSS: it
        // waits here, holding no lock, until `unfreezepprc` or the timer (queue full).
        for h in self.hooks(vol.handle()) {
            h.gate();
        }
        result
    }

    fn modify_inner(&self, vol: &Volume, offset: u64, change: Change<'_>, remote: bool) -> io::Result<()> {
        self.host_io();
        let len = change.len();
        if offset.checked_add(len).is_none_or(|end| end > vol.size()) {
            return Err(errno(libc::EINVAL));
        }
        let hooks = self.hooks(vol.handle());
        if !remote {
            for h in &hooks {
                h.host_access(true)?; // a PPRC secondary
            }
        }
        // 2. freeze gates, before any lock is taken: a parked write holds nothing.
        self.freeze_gate(vol);
        for h in &hooks {
            h.gate();
        }
        let r = tracks(vol, offset, len);
        let (_guard, roles) = self.lock_for(vol, &r);
        // The hooks may have changed while we waited for the locks (a pair came or went
        // under the barrier); what holds now is what this write obeys.
        let hooks = self.hooks(vol.handle());
        if remote {
            // Remote apply changes only a PPRC secondary (not one failed over meanwhile).
            if !hooks.iter().any(|h| h.accepts_remote()) {
                return Err(errno(libc::EPERM));
            }
        } else {
            for h in &hooks {
                h.host_access(true)?;
            }
        }
        if roles.as_source.iter().any(|r| r.state().record.revertible) {
            return Err(errno(libc::EPERM)); // the source of a revertible relationship
        }
        if let Some(rel) = &roles.as_target {
            let st = rel.state();
            if st.record.options.tgtinhibit {
                return Err(errno(libc::EPERM));
            }
            if st.record.state == FlashState::TgtFailed {
                return Err(errno(libc::EIO));
            }
        }
        let cow_after = super::mutant::is(super::mutant::Mutant::CowAfterWrite);
        if cow_after {
            self.data(vol, offset, change)?;
        }
        // 5. copy-on-write to every target that still borrows these tracks: the grains
        // this change overwrites (`grain.rs`), or the whole track.
        for rel in &roles.as_source {
            for t in pending(rel, &r) {
                let copied = if rel.grained() {
                    let track_len = rel.source.geometry().track_data_len(t);
                    cow_grains(rel, t, grain::touched(t, offset, len, track_len))
                } else {
                    copy_track(rel, t)
                };
                if let Err(e) = copied {
                    if rel.state().record.state == FlashState::TgtFailed {
                        continue; // the target is lost; the source write goes on
                    }
                    return Err(e);
                }
            }
        }
        if !roles.as_source.is_empty() {
            crate::bitmap::fail_point("cow-before-source-write").map_err(|e| io::Error::other(e.to_string()))?;
        }
        // 6. fill target tracks that a partial write would otherwise leave half T0.
        if let Some(rel) = &roles.as_target {
            for t in pending(rel, &r) {
                if super::mutant::is(super::mutant::Mutant::NoPartialMerge) {
                    rel.state().target_bits.remove(t);
                    continue;
                }
                copy_track(rel, t)?;
            }
        }
        // 7. journal, then change recording: the intent bits are set before the in-memory
        // bits and before the data write is submitted (kill -9 safe).
        let recording = roles.as_source.iter().chain(roles.as_target.iter()).any(|r| r.state().record.options.record)
            || hooks.iter().any(|h| h.records());
        let journal = if recording { self.journal(vol.handle()) } else { None };
        let mark = match &journal {
            Some(j) => Some(j.mark(r.clone()).map_err(|e| io::Error::other(e.to_string()))?),
            None => None,
        };
        for rel in &roles.as_source {
            let mut st = rel.state();
            if st.record.options.record {
                st.src_changes.insert_range(r.clone());
            }
        }
        if let Some(rel) = &roles.as_target {
            let mut st = rel.state();
            if st.record.options.record && !super::mutant::is(super::mutant::Mutant::NoTargetRecording) {
                st.tgt_changes.insert_range(r.clone());
            }
        }
        for h in &hooks {
            h.record(&r); // PPRC out-of-sync bits
        }
        drop(mark);
        if let Some(rel) = &roles.as_target {
            rel.preserve(r.clone())?;
        }
        crate::bitmap::fail_point("intercept-intent-set").map_err(|e| io::Error::other(e.to_string()))?;
        // 8. the data, and for a Metro Mirror pair the same change at the secondary, in
        // parallel; FUA also makes the journal's log durable.
        let mirrored = match change {
            Change::Write { data, fua } => super::pprc::Mirrored::Write { data, fua },
            Change::Trim { len } | Change::Zero { len, .. } => super::pprc::Mirrored::Zero { len },
        };
        let sends: Vec<super::pprc::InFlight> =
            hooks.iter().filter_map(|h| h.clone().send(&r, offset, mirrored)).collect();
        let local = if cow_after { Ok(()) } else { self.data(vol, offset, change) };
        if local.is_err() {
            for h in &hooks {
                h.local_failed(&r);
            }
        }
        let mut result = local;
        for s in sends {
            let sent = s();
            if result.is_ok() {
                result = sent;
            }
        }
        result?;
        if let (Change::Write { fua: true, .. }, Some(j)) = (change, &journal) {
            j.flush_point().map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// FLUSH: the volume's data and its journal's log durable.
    pub fn flush(&self, vol: &Volume) -> io::Result<()> {
        vol.flush()?;
        if let Some(j) = self.journal(vol.handle()) {
            j.flush_point().map_err(|e| io::Error::other(e.to_string()))?;
        }
        for h in self.hooks(vol.handle()) {
            h.flush()?; // a Metro Mirror secondary's data durable too
        }
        Ok(())
    }

    fn data(&self, vol: &Volume, offset: u64, change: Change<'_>) -> io::Result<()> {
        match change {
            Change::Write { data, fua } => vol.write(offset, data, fua),
            Change::Trim { len } => vol.trim(offset, len),
            Change::Zero { len, may_trim } => vol.write_zeroes(offset, len, may_trim),
        }
    }

    /// Host read: a target's uncopied tracks come from the source.
    pub fn read(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.host_io();
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > vol.size()) {
            return Err(errno(libc::EINVAL));
        }
        for h in self.hooks(vol.handle()) {
            h.host_access(false)?; // a PPRC secondary without -tgtread
        }
        self.read_inner(vol, offset, buf, false)
    }

    /// The PPRC copier's read of a primary's track: under the tracks' locks (so it never
    /// sees half a host write) and through the redirecting read path (a FlashCopy target's
    /// uncopied tracks come from its source); not counted as host I/O.
    pub fn read_for_copy(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > vol.size()) {
            return Err(errno(libc::EINVAL));
        }
        self.read_inner(vol, offset, buf, true)
    }

    fn read_inner(&self, vol: &Volume, offset: u64, buf: &mut [u8], always_lock: bool) -> io::Result<()> {
        let len = buf.len() as u64;
        if !always_lock && self.roles(vol.handle()).as_target.is_none() {
            return vol.read(offset, buf);
        }
        let r = tracks(vol, offset, len);
        let (_guard, roles) = self.lock_for(vol, &r);
        let Some(rel) = roles.as_target else { return vol.read(offset, buf) };
        let sides = Sides::of(&rel, &r)?;
        // Serve runs from one side at a time.
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let (from_source, stop) = sides.run_end(at, end);
            let chunk = &mut buf[(at - offset) as usize..(stop - offset) as usize];
            if from_source {
                rel.source.read(at, chunk)?
            } else {
                vol.read(at, chunk)?
            }
            at = stop;
        }
        Ok(())
    }
}

/// Which side answers each byte of a target's tracks `r`: the source where the track is
/// borrowed and the grain not preserved, the target otherwise (reads and block status).
pub(super) struct Sides {
    start: u32,
    /// Per track: borrowed, and which of its grains already sit on the target.
    tracks: Vec<(bool, GrainMask)>,
}

impl Sides {
    /// Under the tracks' locks. EIO for a `Tgt Failed` relationship.
    pub(super) fn of(rel: &Relationship, r: &Range<u32>) -> io::Result<Sides> {
        let st = rel.state();
        if st.record.state == FlashState::TgtFailed {
            return Err(errno(libc::EIO));
        }
        let tracks = r
            .clone()
            .map(|t| {
                let b = st.target_bits.contains(TrackNo(t));
                (b, if b { st.grains.get(TrackNo(t)) } else { 0 })
            })
            .collect();
        Ok(Sides { start: r.start, tracks })
    }

    /// Whether the byte at `at` comes from the source, and a position up to which that holds
    /// at least (the end of its track or grain).
    fn at(&self, at: u64) -> (bool, u64) {
        let t = (at / TRACK_BYTES) as u32;
        let (b, mask) = self.tracks[(t - self.start) as usize];
        let track_end = (t as u64 + 1) * TRACK_BYTES;
        if !b || mask == 0 || super::mutant::is(super::mutant::Mutant::ReadIgnoresGrains) {
            return (b, track_end);
        }
        let g = ((at % TRACK_BYTES) / grain::GRAIN_BYTES) as u32;
        (mask & (1 << g) == 0, (at / grain::GRAIN_BYTES + 1) * grain::GRAIN_BYTES)
    }

    /// The end of the run of bytes from `at` (before `end`) that one side answers.
    pub(super) fn run_end(&self, at: u64, end: u64) -> (bool, u64) {
        let (from_source, mut stop) = self.at(at);
        while stop < end {
            let (s, next) = self.at(stop);
            if s != from_source {
                break;
            }
            stop = next;
        }
        (from_source, stop.min(end))
    }
}

/// Tracks of `r` whose target bit is still 1.
fn pending(rel: &Relationship, r: &Range<u32>) -> Vec<TrackNo> {
    let st = rel.state();
    r.clone().map(TrackNo).filter(|t| st.target_bits.contains(*t)).collect()
}

/// Copy track `t` from source to target and clear its bit: the grains not yet preserved
/// (all of them unless a sub-track copy-on-write preserved some). The caller holds the
/// track's locks on both volumes. A target failure marks the relationship `Tgt Failed`.
pub(crate) fn copy_track(rel: &Relationship, t: TrackNo) -> io::Result<()> {
    let track_len = rel.source.geometry().track_data_len(t);
    let have = rel.state().grains.get(t);
    copy_grains(rel, t, grain::full_mask(track_len) & !have, track_len)?;
    crate::bitmap::fail_point("cow-target-written").map_err(|e| io::Error::other(e.to_string()))?;
    rel.mark_copied(t.0..t.0 + 1)?;
    Ok(())
}

/// Sub-track copy-on-write: preserve grains `want` of borrowed track `t` on the target
/// before the source write over them; the whole track once every grain would be preserved.
fn cow_grains(rel: &Relationship, t: TrackNo, want: GrainMask) -> io::Result<()> {
    let track_len = rel.source.geometry().track_data_len(t);
    let full = grain::full_mask(track_len);
    let have = rel.state().grains.get(t);
    let need = want & !have;
    if need == 0 {
        return Ok(());
    }
    if have | need == full {
        return copy_track(rel, t);
    }
    copy_grains(rel, t, need, track_len)?;
    crate::bitmap::fail_point("cow-target-written").map_err(|e| io::Error::other(e.to_string()))?;
    rel.mark_grains(t, need)
}

/// Copy grains `mask` of track `t` from source to target (one read and one write per run).
fn copy_grains(rel: &Relationship, t: TrackNo, mask: GrainMask, track_len: u64) -> io::Result<()> {
    let mut buf = Vec::new();
    rel.preserve(t.0..t.0 + 1)?;
    for g in grain::runs(mask) {
        let b = grain::bytes(t, &g, track_len);
        if b.is_empty() {
            continue;
        }
        buf.resize((b.end - b.start) as usize, 0);
        rel.source.read(b.start, &mut buf)?;
        if let Err(e) = rel.target.write(b.start, &buf, false) {
            // Durable before the source write that needed this copy goes on: a restart must
            // not find the pair Valid with a target whose T0 was overwritten on the source.
            rel.fail(FlashState::TgtFailed)?;
            tracing::error!(
                "{}:{} target write failed at track {}: {e}; relationship is Tgt Failed",
                rel.ids().0,
                rel.ids().1,
                t.0
            );
            return Err(e);
        }
    }
    Ok(())
}
