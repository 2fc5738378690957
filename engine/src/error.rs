//! Engine errors: a small, stable set of kinds plus the object they concern.
//!
//! The engine never formats DS CLI messages; the cli crate maps each [`ErrorKind`] to a message
//! ID and text in one table. Errors cross the control socket, so they are plain data (serde).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, independent of wording. New kinds may be added; match with a wildcard.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A request or ID that is malformed (caught by the engine after the client's own checks).
    InvalidArgument,
    ImageNotFound,
    ImageExists,
    /// The storage image still holds volumes or pools with volumes.
    ImageHasVolumes,
    PoolNotFound,
    PoolExists,
    PoolHasVolumes,
    /// FB volume in a CKD pool or the other way round.
    PoolTypeMismatch,
    /// The LSS's parity (server) does not match the pool's rank group.
    PoolRankGroupMismatch,
    /// The pool path is neither a directory nor a block device, or cannot be used.
    PoolPathInvalid,
    /// LSS outside the range of the image's machine type.
    LssOutOfRange,
    /// FB and CKD in one address group.
    AddressGroupType,
    LcuNotFound,
    LcuExists,
    LcuHasVolumes,
    VolumeNotFound,
    VolumeExists,
    /// The volume is in use (open host sessions, copy relationships) and cannot be changed.
    VolumeInUse,
    CapacityZero,
    /// The capacity does not fit the pool (or exceeds the architectural maximum).
    CapacityTooLarge,
    /// A resize would shrink the volume.
    ShrinkNotAllowed,
    /// A block device already used by another program or volume.
    DeviceInUse,
    /// A block device with a mounted filesystem.
    DeviceMounted,
    /// The site home is owned by another running flashd.
    HomeLocked,
    /// A flashd runs on this home: the operation must go through its control socket.
    DaemonRunning,
    /// Client and daemon (or on-disk format) speak different versions.
    VersionMismatch,
    /// On-disk metadata failed validation; left in place for the user.
    Corrupt,
    /// The request cannot be served by this build or configuration.
    Unsupported,
    NoSpace,
    Io,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The volume is in a FlashCopy (or, later, PPRC) relationship: it cannot be removed or
    /// resized, or take this role.
    VolumeInRelationship,
    /// No FlashCopy relationship for this pair.
    FlashNotFound,
    /// The pair already exists.
    FlashExists,
    /// Source and target differ in size or type, or are the same volume.
    FlashIncompatible,
    /// The source already has 12 targets.
    FlashTooManyTargets,
    /// The source already has an incremental (`-record`) relationship.
    FlashIncrementalExists,
    /// The target is already the target of another relationship.
    FlashTargetInUse,
    /// A volume would be a source and a target at once (no cascading).
    FlashCascade,
    /// The operation needs a change-recording (`-record -persist`) relationship.
    FlashNotRecording,
    /// The operation needs a revertible relationship (or one that is not).
    FlashRevertibleState,
    /// The background copy has not finished (reverse without `-fast`).
    FlashCopyActive,
    /// `-tgtse` and the target is not space efficient.
    FlashTargetNotSe,
    /// The relationship is `Tgt Failed` or `Validation Required`.
    FlashStateInvalid,
    /// The sequence number given does not match the relationship's.
    FlashSeqnumMismatch,
    /// The LSS has no frozen FlashCopy consistency group.
    FlashNotFrozen,
    /// Not established because another pair of the same `-freeze` group failed.
    FlashGroupFailed,
    /// `-tgtoffline` and the target is open to a host (an NBD session or a FUSE open).
    FlashTargetOnline,
    VolGrpNotFound,
    HostNotFound,
    /// Another host connection of the image has this WWPN.
    HostWwpnExists,
    /// Another host connection uses this NBD port, or it cannot be bound.
    HostPortInUse,
    /// The volume is already in the volume group (`rmfbvol -safe`: in some volume group).
    VolumeInVolGrp,
    VolumeNotInVolGrp,
    /// The volume group holds as many volumes as its type allows.
    VolGrpFull,
    /// The mirror link is down (a simulated outage, or the connection is closed): the message
    /// was not sent, so it was not applied.
    LinkDown,
    /// A request crossed the link (or may have) but no reply came in time, or the link went down
    /// first: it may or may not have been applied. Resend it with the same request ID (the peer
    /// deduplicates). The CLI maps this to exit code 4.
    LinkOutcomeUnknown,
    /// Link authentication failed: the peers do not share the site key, or a challenge was
    /// replayed.
    LinkAuthFailed,
    /// A malformed link frame (bad magic, type, length, checksum or payload); the connection is
    /// dropped.
    LinkProtocol,
    /// `mkpprcpath`: the remote storage image is not in this site (only paths between images
    /// of one flashd exist yet).
    PprcRemoteNotFound,
    /// `-remotewwnn` is not the remote storage image's WWNN (or not the path's).
    PprcWwnnMismatch,
    /// A PPRC path from a storage image to itself.
    PprcPathToSelf,
    /// The LSS does not exist: it has no volumes and no LCU.
    LssNotFound,
    /// The source and target LSSs hold different volume types (FB and CKD).
    PprcLssTypeMismatch,
    /// Not an I/O port of the storage image (I0000-I0003), or not 1 to 8 port pairs.
    PprcPortInvalid,
    /// No PPRC path between these LSSs.
    PprcPathNotFound,
    /// `rmpprcpath` without `-force`: the path still carries PPRC pairs (primaries in its
    /// source LSS whose secondaries are in its target LSS of its remote image).
    PprcPathInUse,
    /// No such PPRC pair (at this end, with this remote image).
    PprcPairNotFound,
    /// The volume is already in a PPRC pair.
    PprcPairExists,
    /// The pair is not in a state that allows the command (e.g. resume of a pair that is not
    /// suspended, failback of one that is not primary suspended, a type change while not
    /// suspended).
    PprcStateInvalid,
    /// The two volumes differ in size or type.
    PprcIncompatible,
    /// The volume is a PPRC secondary: hosts cannot write it (nor read it without
    /// `-tgtread`), and it cannot be a FlashCopy target, until failed over.
    PprcSecondary,
    /// A FlashCopy target that is (or becomes) a PPRC primary needs `-tgtpprc`.
    PprcTgtpprcRequired,
    /// The secondary volume is a FlashCopy target.
    PprcTargetInFlash,
    /// Remote FlashCopy: the source is not the secondary of a pair whose primary is in the
    /// conduit LSS.
    ConduitNoPair,
    /// Remote FlashCopy: the conduit's pair or path to the remote image is suspended or down.
    ConduitSuspended,
    /// Remote FlashCopy: `-srcss` is not the remote source LSS's subsystem ID.
    ConduitSsidMismatch,
}

/// An engine error: a kind, the object it concerns (as the engine prints IDs) and a detail
/// for logs and for messages that want a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub object: String,
    pub detail: String,
}

impl Error {
    pub fn new(kind: ErrorKind, object: impl fmt::Display, detail: impl Into<String>) -> Self {
        Error { kind, object: object.to_string(), detail: detail.into() }
    }

    /// An I/O error with the path or object it happened on.
    pub fn io(object: impl fmt::Display, err: &std::io::Error) -> Self {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            // A file larger than the file system allows (a huge ese volume).
            Some(libc::EFBIG) => ErrorKind::CapacityTooLarge,
            _ => ErrorKind::Io,
        };
        Error::new(kind, object, err.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object.is_empty() {
            write!(f, "{:?}: {}", self.kind, self.detail)
        } else {
            write!(f, "{:?} {}: {}", self.kind, self.object, self.detail)
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
