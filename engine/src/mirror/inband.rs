//! In-band PPRC commands: what a primary asks of its secondary's storage image over the
//! pair's path, as JSON in a link `Command` message (the link deduplicates: each is applied
//! at most once). Every command names the pair as `source:target` and the primary image, so
//! the receiver finds its end and checks that the sender is the pair's primary.

use crate::error::{Error, ErrorKind, Result};
use crate::id::{ImageId, VolumeId};
use crate::image::record::{PprcPhase, PprcType, StorageType, SuspendReason};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InBand {
    /// `mkpprc`: make `target` the secondary of `source` at `primary`. The receiver checks
    /// the size and type, that the target is in no pair and no FlashCopy relationship as
    /// target, and records the pair.
    Establish {
        primary: ImageId,
        primary_wwnn: String,
        source: VolumeId,
        target: VolumeId,
        kind: PprcType,
        phase: PprcPhase,
        tgtread: bool,
        size: u64,
        stgtype: StorageType,
    },
    /// The pair's phase changed at the primary (best effort; the secondary shows it).
    Notice {
        primary: ImageId,
        source: VolumeId,
        target: VolumeId,
        phase: PprcPhase,
        reason: Option<SuspendReason>,
        kind: PprcType,
        first_pass: bool,
    },
    /// `resumepprc` (or a pair that came up suspended): the secondary takes updates again.
    Resume { primary: ImageId, source: VolumeId, target: VolumeId, kind: PprcType, tgtread: bool },
    /// `pausepprc -at tgt`: the secondary refuses updates until resumed.
    Suspend { primary: ImageId, source: VolumeId, target: VolumeId },
    /// `rmpprc`: end the pair at the receiver.
    Remove { primary: ImageId, source: VolumeId, target: VolumeId },
    /// `failbackpprc` at `primary`: the receiver's volume `target` becomes the secondary of
    /// `source`; if it was a primary (the old production volume), its out-of-sync set — the
    /// writes that never crossed — is the answer (TrackBitmap bytes).
    Failback {
        primary: ImageId,
        primary_wwnn: String,
        source: VolumeId,
        target: VolumeId,
        kind: PprcType,
        tgtread: bool,
        size: u64,
    },
    /// A FlashCopy request (`control::Request` as JSON) for the receiver's image, from the
    /// conduit LSS `conduit` of `primary` (`*remoteflash`, `conduit.rs`); the answer is the
    /// `control::Reply` as JSON.
    Flash { primary: ImageId, conduit: crate::id::LssId, srcss: Option<u16>, request: Vec<u8> },
}

impl InBand {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(body: &[u8]) -> Result<InBand> {
        serde_json::from_slice(body)
            .map_err(|e| Error::new(ErrorKind::LinkProtocol, "in-band command", format!("not a PPRC command: {e}")))
    }

    /// The pair it concerns and its primary image (`Flash` names no pair: none).
    pub fn pair(&self) -> Option<(&ImageId, VolumeId, VolumeId)> {
        Some(match self {
            InBand::Flash { .. } => return None,
            InBand::Establish { primary, source, target, .. }
            | InBand::Notice { primary, source, target, .. }
            | InBand::Resume { primary, source, target, .. }
            | InBand::Suspend { primary, source, target }
            | InBand::Remove { primary, source, target }
            | InBand::Failback { primary, source, target, .. } => (primary, *source, *target),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = InBand::Failback {
            primary: "IBM.2107-75FA150".parse().unwrap(),
            primary_wwnn: "5005076303FFC150".into(),
            source: VolumeId(0x0100),
            target: VolumeId(0x0200),
            kind: PprcType::GlobalCopy,
            tgtread: true,
            size: 1 << 30,
        };
        assert_eq!(InBand::decode(&c.encode()).unwrap(), c);
        assert_eq!(InBand::decode(b"{}").unwrap_err().kind, ErrorKind::LinkProtocol);
    }
}
