//! The control protocol between `dscli` (or any client) and `flashd`: JSON lines over the
//! site's `control.sock`, one [`Envelope`] per request line and one [`Response`] per reply
//! line. Every message carries [`PROTOCOL_VERSION`]; a mismatch is refused, never guessed.
//!
//! Requests are typed engine operations: no DS CLI text crosses the socket. Multi-object
//! requests return one [`ItemOutcome`] per object in input order, each succeeding or failing
//! as a unit.

use crate::error::Error;
use crate::flash::relationship::{FlashOptions, FlashRecord};
use crate::geometry::CapType;
use crate::id::{HostId, ImageId, LssId, MachineType, PoolId, VolGrpId, VolumeId};
use crate::image::hosts::Endpoint;
use crate::image::record::{
    AddrDiscovery, HostRecord, LcuType, PoolRecord, PprcPairRecord, PprcPathRecord, PprcType, Sam, StorageType,
    VolGrpRecord, VolGrpType, VolumeRecord,
};
use crate::link::{LinkProps, LinkStats};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Bumped on any incompatible change of [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Version handshake and site facts.
    Hello,
    ImageCreate {
        id: ImageId,
    },
    ImageList,
    ImageRemove {
        id: ImageId,
    },
    PoolCreate {
        image: ImageId,
        name: String,
        rankgrp: u8,
        stgtype: StorageType,
        path: Option<PathBuf>,
    },
    PoolList {
        image: ImageId,
    },
    PoolRemove {
        image: ImageId,
        pool: PoolId,
    },
    /// `qty` consecutive LCUs from `first`, SSIDs from `ssid` upwards.
    LcuCreate {
        image: ImageId,
        first: LssId,
        qty: u16,
        ssid: u16,
        lcutype: LcuType,
    },
    LcuRemove {
        image: ImageId,
        lcus: Vec<LssId>,
    },
    /// LSSs (FB, implicit) and LCUs (CKD) of an image.
    LssList {
        image: ImageId,
    },
    VolumeCreate {
        image: ImageId,
        spec: VolumeSpec,
        volumes: Vec<(VolumeId, String)>,
    },
    VolumeList {
        image: ImageId,
    },
    /// Rename and/or grow. `grow` is the new capacity in the volume's own units.
    VolumeChange {
        image: ImageId,
        volume: VolumeId,
        name: Option<String>,
        grow: Option<Capacity>,
        /// The verb's family (`chfbvol` = FB): a volume of the other family is not found.
        #[serde(default)]
        stgtype: Option<StorageType>,
    },
    VolumeRemove {
        image: ImageId,
        volumes: Vec<VolumeId>,
        safe: bool,
        /// The verb's family (`rmfbvol` = FB): a volume of the other family is not found.
        #[serde(default)]
        stgtype: Option<StorageType>,
    },
    IoPortList {
        image: ImageId,
    },
    /// `mkflash`: one outcome per pair, each all or nothing. With `options.freeze`, the
    /// whole command is one consistency group: every pair is established or none.
    FlashCreate {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        options: FlashOptions,
    },
    /// `lsflash` (the cli filters).
    FlashList {
        image: ImageId,
    },
    /// `rmflash`.
    FlashRemove {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        withdraw: Withdraw,
    },
    /// `resyncflash`: the given options replace the relationship's (`-record` alone keeps
    /// persistence). `seqnum` = the relationship must carry this sequence number.
    FlashResync {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        options: FlashOptions,
        seqnum: Option<u32>,
    },
    /// `reverseflash`: pairs as the existing relationship names them (source:target).
    FlashReverse {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        options: FlashOptions,
        fast: bool,
        seqnum: Option<u32>,
    },
    /// `setflashrevertible`.
    FlashSetRevertible {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        seqnum: Option<u32>,
    },
    /// `commitflash` (pairs named by source volume).
    FlashCommit {
        image: ImageId,
        sources: Vec<VolumeId>,
        seqnum: Option<u32>,
    },
    /// `revertflash` (pairs named by source volume).
    FlashRevert {
        image: ImageId,
        sources: Vec<VolumeId>,
        seqnum: Option<u32>,
    },
    /// `unfreezeflash`: thaw the FlashCopy consistency group of each LSS.
    FlashUnfreeze {
        image: ImageId,
        lss: Vec<LssId>,
    },
    /// Wait until each pair has no out-of-sync tracks (or is gone), or `timeout_ms` passes;
    /// answers `Flash` with the pairs' state either way (`-wait` and its progress bar).
    FlashWait {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        timeout_ms: u64,
    },
    /// `mkvolgrp`: answers one item named by the new group's ID.
    VolGrpCreate {
        image: ImageId,
        name: String,
        vgtype: VolGrpType,
        volumes: Vec<VolumeId>,
    },
    VolGrpList {
        image: ImageId,
    },
    /// `chvolgrp`: rename and/or change the members; sessions of host connections that
    /// lose a volume end (NBD_ESHUTDOWN).
    VolGrpChange {
        image: ImageId,
        volgrp: VolGrpId,
        name: Option<String>,
        members: Option<(VolGrpAction, Vec<VolumeId>)>,
    },
    VolGrpRemove {
        image: ImageId,
        volgrp: VolGrpId,
    },
    /// `mkhostconnect`: answers one item named by the new connection's ID.
    HostCreate {
        image: ImageId,
        spec: HostSpec,
    },
    HostList {
        image: ImageId,
    },
    HostChange {
        image: ImageId,
        host: HostId,
        change: HostChange,
    },
    HostRemove {
        image: ImageId,
        host: HostId,
    },
    /// Orderly shutdown of the daemon (as SIGTERM).
    Shutdown,
    /// `mkpprcpath`: the paths from `src_lss` of `image` to `tgt_lss` of `remote` (an image of
    /// this site), over `ports` (local, remote); replaces the port set of an existing path.
    /// Answers one item named `SS:TT`.
    PprcPathCreate {
        image: ImageId,
        remote: ImageId,
        remote_wwnn: String,
        src_lss: LssId,
        tgt_lss: LssId,
        consistgrp: bool,
        ports: Vec<(String, String)>,
    },
    /// `lspprcpath`: every path of `image`, each port pair with its link's state (the link
    /// is pinged; the cli filters).
    PprcPathList {
        image: ImageId,
    },
    /// `rmpprcpath`: `remote_wwnn`, when given, must be the path's. Without `force` a path
    /// that still carries pairs is refused (`PprcPathInUse`); with it the path goes and its
    /// pairs suspend when they next need it.
    PprcPathRemove {
        image: ImageId,
        remote: ImageId,
        remote_wwnn: Option<String>,
        src_lss: LssId,
        tgt_lss: LssId,
        #[serde(default)]
        force: bool,
    },
    /// `mkpprc`: pairs `source:target`, sources of `image`, targets of `remote`. Answers one
    /// item per pair named `SSSS:TTTT`; each pair succeeds or fails alone.
    PprcCreate {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        spec: PprcSpec,
    },
    /// `lspprc`: every pair a volume of `image` takes part in, at either end (the cli
    /// filters by IDs, `-state` and `-remotedev`).
    PprcList {
        image: ImageId,
    },
    /// Wait until each pair (`source:target`, at `image`'s end) reached full duplex (Metro
    /// Mirror) or finished its first pass (Global Copy), is suspended or gone, or
    /// `timeout_ms` passes; answers `Pprc` with the pairs' views either way (`-wait`).
    PprcWait {
        image: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        timeout_ms: u64,
    },
    /// `rmpprc`: ends the pairs at both ends (`at: None`), or at one end only.
    PprcRemove {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<PprcSelect>,
        at: Option<PprcSide>,
    },
    /// `pausepprc`: suspends the pairs (reason Host Source; `-at tgt`: Host Target).
    PprcPause {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<PprcSelect>,
        at: Option<PprcSide>,
    },
    /// `resumepprc`: a suspended pair copies its out-of-sync tracks and mirrors again, as
    /// `spec.kind` (which may change the pair's type). `spec.mode` is ignored.
    PprcResume {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        spec: PprcSpec,
    },
    /// `failoverpprc`, issued at the secondary's image (`image`) with pairs written
    /// `secondary:primary`: the secondary becomes a suspended primary and records its writes.
    /// Works with the link down.
    PprcFailover {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        kind: PprcType,
    },
    /// `failbackpprc`, issued at the image whose volume is a suspended primary, pairs
    /// `source:target`: the other end becomes the secondary and the changes of both ends
    /// since they parted are copied from `image` to `remote`.
    PprcFailback {
        image: ImageId,
        remote: ImageId,
        pairs: Vec<(VolumeId, VolumeId)>,
        spec: PprcSpec,
    },
    /// `freezepprc SS:TT`: suspend (reason Freeze) every pair from LSS SS of `image` to LSS
    /// TT of `remote`, remove the paths between them, and hold host writes to those primaries
    /// (queue full) until `unfreezepprc` or the LSS's timer. Answers one item per LSS pair.
    PprcFreeze {
        image: ImageId,
        remote: ImageId,
        lss: Vec<(LssId, LssId)>,
    },
    /// `unfreezepprc SS:TT`: release held writes; pairs stay suspended, paths stay removed.
    PprcUnfreeze {
        image: ImageId,
        remote: ImageId,
        lss: Vec<(LssId, LssId)>,
    },
    /// The `*remoteflash` family: `request` (a FlashCopy request: `FlashCreate`, `FlashList`,
    /// `FlashRemove`, `FlashResync`, `FlashReverse`, `FlashSetRevertible`, `FlashCommit`,
    /// `FlashRevert`) addressed to the image that holds the PPRC secondaries (`-dev`), sent
    /// in band from the conduit LSS `conduit` of `image` (the local image holding their
    /// primaries) over its PPRC path and run there; the copy never crosses the link. Every
    /// FlashCopy source named must be the secondary of a pair whose primary is in the conduit
    /// LSS. `srcss`, when given, must be the source LSS's subsystem ID at the remote image.
    /// Answers what the remote image answered (`Items`, or `Flash` for `FlashList`).
    RemoteFlash {
        image: ImageId,
        conduit: LssId,
        srcss: Option<u16>,
        request: Box<Request>,
    },
    /// `lslink` (extension): one [`LinkView`] per port pair of every PPRC path of `image`, in
    /// path and port order. Nothing is sent over the links (no ping, no redial): the state is
    /// what the link knows now. Answers `Links`.
    LinkList {
        image: ImageId,
    },
    /// `chlink` (extension): change the simulated line of port pairs of `image`'s PPRC paths,
    /// selected by `remote` and the LSS pair `lss` (source, target; `None`: every path), and
    /// `ports` (local, remote; empty: every port pair of the selected paths). Every new value
    /// is checked before any is set: a bad value or a selection that names nothing is refused
    /// and nothing changes. A port pair without a link keeps the setting for when its link
    /// comes up. Answers one item per port pair changed, named `SS:TT Ixxxx:Ixxxx`.
    LinkSet {
        image: ImageId,
        remote: Option<ImageId>,
        lss: Option<(LssId, LssId)>,
        ports: Vec<(String, String)>,
        change: LinkChange,
    },
}

/// What `chlink` changes of a link's [`LinkProps`] (`None` = keep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkChange {
    /// Bytes per second each way; 0 = unlimited.
    pub bandwidth: Option<u64>,
    /// One-way latency.
    pub latency: Option<Duration>,
    /// Extra one-way delay, uniform in [0, jitter].
    pub jitter: Option<Duration>,
    /// Probability that a frame is lost and retransmitted one `rto` later, 0 to 0.99.
    pub loss: Option<f64>,
    /// Retransmission timeout.
    pub rto: Option<Duration>,
    /// The line is down (both directions).
    pub outage: Option<bool>,
}

impl LinkChange {
    /// Changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == LinkChange::default()
    }

    /// `props` with the change applied (not validated: see [`LinkProps::validate`]).
    pub fn apply(&self, props: LinkProps) -> LinkProps {
        LinkProps {
            bandwidth: self.bandwidth.unwrap_or(props.bandwidth),
            latency: self.latency.unwrap_or(props.latency),
            jitter: self.jitter.unwrap_or(props.jitter),
            loss: self.loss.unwrap_or(props.loss),
            rto: self.rto.unwrap_or(props.rto),
            outage: self.outage.unwrap_or(props.outage),
        }
    }
}

/// One port pair of a PPRC path and its link, as `lslink` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkView {
    /// The path's source LSS (of the image asked about) and target LSS (of `remote`).
    pub src_lss: LssId,
    pub tgt_lss: LssId,
    pub remote: ImageId,
    /// Local port, remote (attached) port.
    pub port: String,
    pub attached: String,
    /// A link is connected and not in an outage.
    pub up: bool,
    /// The link's properties; without a link, those it will get when it comes up.
    pub props: LinkProps,
    /// The link's counters at this end, since it connected (`None`: no link).
    pub stats: Option<LinkStats>,
}

/// What `mkpprc` (and `resumepprc`, `failbackpprc`) asks of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PprcSpec {
    pub kind: PprcType,
    /// `-mode nocp`: the volumes are already identical; nothing is copied.
    pub nocopy: bool,
    /// `-tgtread`: hosts may read the secondary.
    pub tgtread: bool,
    /// `-critmode`: a write that cannot be mirrored fails (EIO) instead of suspending.
    pub critmode: bool,
}

/// A pair named on a command line: `source:target`, or one volume with `-at` (then
/// `target` is `None` and the volume is this end's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PprcSelect {
    pub source: VolumeId,
    pub target: Option<VolumeId>,
}

/// `-at src | tgt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PprcSide {
    Source,
    Target,
}

/// One PPRC pair as `lspprc` shows it from one end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PprcView {
    pub record: PprcPairRecord,
    /// Tracks not yet on the secondary (the primary's out-of-sync set; 0 at a secondary).
    pub out_of_sync: u64,
    /// LSS of the pair's source volume.
    pub source_lss: LssId,
    /// Consistency-group (queue full) timeout of the source LSS, seconds (60 FB, 120 CKD).
    pub timeout_secs: u32,
    /// The path of the pair's LSSs has `-consistgrp`.
    pub pprc_cg: bool,
}

/// One PPRC path (an LSS pair) as `lspprcpath` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PprcPathView {
    pub record: PprcPathRecord,
    /// The target LSS's subsystem ID (`SS` column).
    pub tgt_ssid: u16,
    /// One per port pair, in the record's order.
    pub ports: Vec<PortPathView>,
}

/// One port pair of a path and its link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortPathView {
    pub port: String,
    pub attached: String,
    pub state: PathState,
}

/// A port pair's state: `Success` when the link to the remote port answers a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathState {
    Success,
    /// No link to the remote port (the remote image is gone, or connecting failed).
    FailedDown,
    /// The link exists but the remote port did not answer in time (outage, dead peer).
    FailedSecondaryUnavailable,
}

/// `chvolgrp -action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolGrpAction {
    Add,
    Remove,
    Replace,
}

/// A new host connection (`mkhostconnect`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSpec {
    pub name: String,
    pub wwpn: String,
    pub hosttype: String,
    pub portgrp: u8,
    pub volgrp: Option<VolGrpId>,
    /// Empty = all ports.
    pub ioports: Vec<String>,
    pub nbdport: Option<u16>,
    #[serde(default)]
    pub addrdiscovery: AddrDiscovery,
}

/// A value a change can set or clear (`Option<Option<T>>` would not survive JSON: its
/// `Some(None)` comes back as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Assign<T> {
    Set(T),
    Clear,
}

impl<T> Assign<T> {
    pub fn into_option(self) -> Option<T> {
        match self {
            Assign::Set(v) => Some(v),
            Assign::Clear => None,
        }
    }
}

/// `chhostconnect`: what to change (None = keep). `volgrp: Some(Clear)` unassigns the
/// group, `nbdport: Some(Clear)` moves the endpoint back to its Unix socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostChange {
    pub name: Option<String>,
    pub wwpn: Option<String>,
    pub hosttype: Option<String>,
    pub portgrp: Option<u8>,
    pub volgrp: Option<Assign<VolGrpId>>,
    pub ioports: Option<Vec<String>>,
    pub nbdport: Option<Assign<u16>>,
    #[serde(default)]
    pub addrdiscovery: Option<AddrDiscovery>,
}

/// One host connection as `lshostconnect` / `showhostconnect` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostView {
    pub record: HostRecord,
    /// Where its NBD endpoint listens.
    pub endpoint: Endpoint,
    /// Open NBD sessions through it.
    pub sessions: usize,
}

/// What kind of volume to make, and how big.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub pool: PoolId,
    pub capacity: Capacity,
    pub sam: Sam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capacity {
    Fb {
        cap: u64,
        captype: CapType,
    },
    /// 3390 cylinders.
    Ckd {
        cylinders: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ok(Reply),
    Err(Error),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Hello {
        protocol: u32,
        daemon_version: String,
        home: PathBuf,
        io_backend: String,
    },
    Done,
    /// One outcome per object, in input order.
    Items(Vec<ItemOutcome>),
    Images(Vec<ImageView>),
    Pools(Vec<PoolView>),
    Lss(Vec<LssView>),
    Volumes(Vec<VolumeView>),
    IoPorts(Vec<IoPortView>),
    Flash(Vec<FlashView>),
    VolGrps(Vec<VolGrpRecord>),
    Hosts(Vec<HostView>),
    PprcPaths(Vec<PprcPathView>),
    Pprc(Vec<PprcView>),
    Links(Vec<LinkView>),
}

/// How `rmflash` withdraws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// `-tgtonly`: end the target side only (the relationship ends; target keeps what it has).
    pub tgtonly: bool,
    /// `-cp`: run the background copy to the end, then remove the relationship.
    pub cp: bool,
    /// `-resettgtinhibit`: lift the target write inhibit.
    pub resettgtinhibit: bool,
    /// Must match the relationship's sequence number when given.
    pub seqnum: Option<u32>,
}

/// One FlashCopy relationship as `lsflash` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlashView {
    pub record: FlashRecord,
    /// Tracks still to copy (the target bitmap's count).
    pub out_of_sync: u64,
    /// A background copy is running now.
    pub active_copy: bool,
    /// The target is an ese (space efficient) volume.
    pub target_ese: bool,
    /// Consistency-group timeout of the source LSS, seconds (120 CKD, 60 FB by default).
    pub timeout_secs: u32,
    /// Tracks copied in the current increment (establish or last resync).
    pub copied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemOutcome {
    /// The object as the engine prints it (`1000`, `P4`, `10`).
    pub object: String,
    pub result: Result<(), Error>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageView {
    pub id: ImageId,
    pub machine: MachineType,
    pub name: String,
    pub unit: String,
    pub model: String,
    pub wwnn: String,
    pub state: String,
    pub created: i64,
    pub volumes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolView {
    pub record: PoolRecord,
    /// Bytes the pool's filesystem or device holds in all.
    pub capacity_bytes: u64,
    /// Bytes still free there (statvfs, or unallocated device regions).
    pub available_bytes: u64,
    /// Sum of the pool's volume sizes (may exceed capacity with ese overcommit).
    pub provisioned_bytes: u64,
    /// Bytes the pool's volumes really occupy.
    pub allocated_bytes: u64,
    pub numvols: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LssView {
    pub id: LssId,
    pub stgtype: StorageType,
    pub confgvols: usize,
    /// CKD only.
    pub ssid: Option<u16>,
    pub lcutype: Option<LcuType>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeView {
    pub record: VolumeRecord,
    pub pool_name: String,
    /// Bytes really allocated in the backing (sparse usage).
    pub allocated_bytes: u64,
    /// Open host sessions (NBD).
    pub sessions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IoPortView {
    pub id: String,
    pub wwpn: String,
    pub state: String,
}

/// A blocking client of the control socket: one request line out, one response line back.
#[derive(Debug)]
pub struct Client {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Client {
    pub fn connect(path: &std::path::Path) -> std::io::Result<Client> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        Ok(Client { reader: std::io::BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Send `request` and wait for its response. A closed or garbled connection is an
    /// `io::Error`; an engine refusal is `Ok(Response::Err(..))`.
    pub fn call(&mut self, request: Request) -> std::io::Result<Response> {
        use std::io::{BufRead, Write};
        let mut line = serde_json::to_vec(&Envelope { version: PROTOCOL_VERSION, request })?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "flashd closed the control connection"));
        }
        serde_json::from_str(&reply).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
