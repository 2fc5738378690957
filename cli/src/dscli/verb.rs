//! The verb table: every DS CLI command dscli knows, its flags, whether it takes IDs, and
//! its help text; and the parser that checks a command's words against it. All syntax is
//! validated here (or in the ID parser) before anything is sent to flashd.

use super::messages::{self, Message};
use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No value (`-quiet`).
    Bool,
    /// Free value with a placeholder for help (`-name volume_name`).
    Value(&'static str),
    /// One of these lower-case words.
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// Whether a verb takes object IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    None,
    Optional,
    Required,
}

#[derive(Debug)]
pub struct Verb {
    pub name: &'static str,
    pub summary: &'static str,
    pub flags: &'static [Flag],
    pub ids: Ids,
    /// Placeholder for the IDs in the usage line.
    pub ids_help: &'static str,
    /// Takes `-dev` and the output flags, prints the banner.
    pub reports: bool,
}

const fn f(name: &'static str, kind: Kind) -> Flag {
    Flag { name, kind, required: false }
}
const fn req(name: &'static str, kind: Kind) -> Flag {
    Flag { name, kind, required: true }
}
const B: Kind = Kind::Bool;
const ON_OFF: Kind = Kind::Enum(&["on", "off"]);
pub const FORMATS: &[&str] = &["default", "delim", "stanza", "xml", "json"];

/// Output flags every reporting verb accepts (IBM's common command flags) plus `-dev`.
pub const COMMON: &[Flag] = &[
    f("-dev", Kind::Value("storage_image_ID")),
    f("-fmt", Kind::Enum(FORMATS)),
    f("-delim", Kind::Value("char")),
    f("-hdr", ON_OFF),
    f("-bnr", ON_OFF),
    f("-v", ON_OFF),
    f("-p", ON_OFF),
    f("-r", Kind::Value("rows")),
    f("-fullid", B),
];

const SL: [Flag; 2] = [f("-s", B), f("-l", B)];

const PAIRS_HELP: &str = "source_volume_ID:target_volume_ID ... | range:range | -";

/// `lsflash -state` values [R]: lower-case, words joined by `-` as in PPRC's `-state
/// copy-pending`. `invalid` and `volume-inaccessible` are DS8000 states flashtrack never
/// reaches; they are accepted and select nothing.
pub const FLASH_STATES: &[&str] = &["valid", "tgt-failed", "validation-required", "invalid", "volume-inaccessible"];

/// `lspprc -state` values (dscli-spec.md §3.4 [C]). `not-remote-copy-pair`, `invalid-state`
/// and `volume-inaccessible` are states flashtrack never shows: accepted, they select nothing.
pub const PPRC_STATES: &[&str] = &[
    "copy-pending",
    "full-duplex",
    "suspended",
    "target-copy-pending",
    "target-full-duplex",
    "target-suspended",
    "not-remote-copy-pair",
    "invalid-state",
    "volume-inaccessible",
];

/// Remote FlashCopy (`*remoteflash`, dscli-spec.md §3.2): the required, fully qualified
/// conduit LSS, `-srcss`, `-seqnum`; no `-wait` (the spec gives the remote verbs none).
const CONDUIT: Flag = req("-conduit", Kind::Value("LSS_ID"));
const SRCSS: Flag = f("-srcss", Kind::Value("SS_ID"));
const SEQNUM: Flag = f("-seqnum", Kind::Value("flash_sequence_num"));

/// PPRC pair verbs: `-type`, `-at`, subsystem IDs.
const PPRC_TYPE: Kind = Kind::Enum(&["mmir", "gcp"]);
const PPRC_AT: Kind = Kind::Enum(&["src", "tgt"]);
const SSID: Kind = Kind::Value("ss_ID");
const REMOTEDEV: Flag = f("-remotedev", Kind::Value("storage_image_ID"));
const PPRC_PAIRS_HELP: &str = "source_volume_ID:target_volume_ID ... | range:range | -";

/// `mkvolgrp -type` values [R].
pub const VOLGRP_TYPES: &[&str] = &["scsimask", "scsimap256", "os400mask", "os400map256"];

/// `-hosttype` values, lower-case (the cli's host type table shows them in IBM's case).
pub const HOST_TYPES: &[&str] =
    &["pseries", "iseries", "vmware", "win2008", "win2012", "linuxrhel", "linuxsuse", "zlinux", "sun", "hpux"];

pub static VERBS: &[Verb] = &[
    Verb {
        name: "mkextpool",
        summary: "Creates an extent pool. -path (extension) is the directory or block device it lives on.",
        flags: &[
            req("-rankgrp", Kind::Enum(&["0", "1"])),
            req("-stgtype", Kind::Enum(&["fb", "ckd"])),
            f("-path", Kind::Value("directory|device")),
        ],
        ids: Ids::Required,
        ids_help: "Extent_Pool_Name",
        reports: true,
    },
    Verb {
        name: "lsextpool",
        summary: "Lists extent pools. -l adds provisioned capacity and path (extensions).",
        flags: &[SL[0], SL[1], f("-stgtype", Kind::Enum(&["fb", "ckd"])), f("-rankgrp", Kind::Enum(&["0", "1"]))],
        ids: Ids::Optional,
        ids_help: "[Extent_Pool_ID ...]",
        reports: true,
    },
    Verb {
        name: "showextpool",
        summary: "Shows one extent pool.",
        flags: &[],
        ids: Ids::Required,
        ids_help: "Extent_Pool_ID",
        reports: true,
    },
    Verb {
        name: "rmextpool",
        summary: "Deletes extent pools.",
        flags: &[f("-quiet", B)],
        ids: Ids::Required,
        ids_help: "Extent_Pool_ID ... | -",
        reports: true,
    },
    Verb {
        name: "mkfbvol",
        summary: "Creates fixed-block volumes. #h / #d in -name become the volume ID in hex / decimal; -volgrp adds them to a volume group.",
        flags: &[
            req("-extpool", Kind::Value("extentpool_ID")),
            req("-cap", Kind::Value("capacity")),
            f("-type", Kind::Enum(&["ds", "ess", "blocks"])),
            f("-name", Kind::Value("volume_name")),
            f("-sam", Kind::Enum(&["standard", "ese"])),
            f("-volgrp", Kind::Value("volume_group_ID")),
        ],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "lsfbvol",
        summary: "Lists fixed-block volumes. -l adds sam, captype, reqcap and usedcap (sparse usage, extension).",
        flags: &[
            SL[0],
            SL[1],
            f("-extpool", Kind::Value("extentpool_ID")),
            f("-lss", Kind::Value("LSS_ID")),
            f("-datatype", Kind::Enum(&["512"])),
            f("-volgrp", Kind::Value("volume_group_ID")),
        ],
        ids: Ids::Optional,
        ids_help: "[Volume_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "showfbvol",
        summary: "Shows one fixed-block volume.",
        flags: &[],
        ids: Ids::Required,
        ids_help: "Volume_ID",
        reports: true,
    },
    Verb {
        name: "chfbvol",
        summary: "Renames or grows fixed-block volumes (capacity may only grow).",
        flags: &[
            f("-name", Kind::Value("volume_name")),
            f("-cap", Kind::Value("capacity")),
            f("-type", Kind::Enum(&["ds", "ess", "blocks"])),
            f("-quiet", B),
        ],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "rmfbvol",
        summary: "Deletes fixed-block volumes. -safe refuses volumes in use.",
        flags: &[f("-quiet", B), f("-safe", B)],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "mklcu",
        summary: "Creates logical control units for CKD volumes.",
        flags: &[
            req("-qty", Kind::Value("quantity")),
            req("-id", Kind::Value("lcu_ID")),
            req("-ss", Kind::Value("ss_ID")),
            f("-lcutype", Kind::Enum(&["3990-3", "3990-tpf", "3990-6", "bs2000"])),
        ],
        ids: Ids::None,
        ids_help: "",
        reports: true,
    },
    Verb {
        name: "lslcu",
        summary: "Lists logical control units.",
        flags: &[SL[0], SL[1]],
        ids: Ids::Optional,
        ids_help: "[LCU_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "rmlcu",
        summary: "Deletes logical control units.",
        flags: &[f("-quiet", B)],
        ids: Ids::Required,
        ids_help: "LCU_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "mkckdvol",
        summary: "Creates CKD (3390) volumes; the LCU must exist.",
        flags: &[
            req("-extpool", Kind::Value("extentpool_ID")),
            req("-cap", Kind::Value("cylinders")),
            f("-datatype", Kind::Enum(&["3390", "3390-a"])),
            f("-name", Kind::Value("volume_name")),
            f("-sam", Kind::Enum(&["standard", "ese"])),
        ],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "lsckdvol",
        summary: "Lists CKD volumes.",
        flags: &[SL[0], SL[1], f("-extpool", Kind::Value("extentpool_ID")), f("-lcu", Kind::Value("LCU_ID"))],
        ids: Ids::Optional,
        ids_help: "[Volume_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "showckdvol",
        summary: "Shows one CKD volume.",
        flags: &[],
        ids: Ids::Required,
        ids_help: "Volume_ID",
        reports: true,
    },
    Verb {
        name: "chckdvol",
        summary: "Renames or grows CKD volumes (capacity may only grow).",
        flags: &[f("-name", Kind::Value("volume_name")), f("-cap", Kind::Value("cylinders")), f("-quiet", B)],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "rmckdvol",
        summary: "Deletes CKD volumes. -safe refuses volumes in use.",
        flags: &[f("-quiet", B), f("-safe", B)],
        ids: Ids::Required,
        ids_help: "Volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "lslss",
        summary: "Lists logical subsystems (FB) and LCUs (CKD).",
        flags: &[SL[0], SL[1], f("-stgtype", Kind::Enum(&["fb", "ckd"]))],
        ids: Ids::Optional,
        ids_help: "[LSS_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "lssi",
        summary: "Lists storage images.",
        flags: &[SL[0], SL[1]],
        ids: Ids::Optional,
        ids_help: "[Storage_Image_ID ...]",
        reports: true,
    },
    Verb {
        name: "showsi",
        summary: "Shows one storage image.",
        flags: &[],
        ids: Ids::Optional,
        ids_help: "[Storage_Image_ID]",
        reports: true,
    },
    Verb {
        name: "lsioport",
        summary: "Lists I/O ports.",
        flags: &[SL[0], SL[1]],
        ids: Ids::Optional,
        ids_help: "[Port_ID ...]",
        reports: true,
    },
    Verb {
        name: "mkflash",
        summary: "Establishes FlashCopy pairs (source:target). -record implies -persist; -wait returns when the copy ends.",
        flags: &[
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtinhibit", B),
            f("-freeze", B),
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtse", B),
            f("-seqnum", Kind::Value("flash_sequence_num")),
            f("-wait", B),
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "lsflash",
        summary: "Lists FlashCopy relationships, selected by pair, volume or volume range (all when none).",
        flags: &[
            SL[0],
            SL[1],
            f("-activecp", B),
            f("-record", B),
            f("-persist", B),
            f("-revertible", B),
            f("-cp", B),
            f("-state", Kind::Enum(FLASH_STATES)),
            f("-seqnum", Kind::Value("flash_sequence_num")),
        ],
        ids: Ids::Optional,
        ids_help: "[source:target ... | Volume_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "rmflash",
        summary: "Withdraws FlashCopy pairs. -cp copies the rest first; -tgtonly ends the target side.",
        flags: &[
            f("-quiet", B),
            f("-tgtonly", B),
            f("-cp", B),
            f("-resettgtinhibit", B),
            f("-seqnum", Kind::Value("flash_sequence_num")),
            f("-wait", B),
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "resyncflash",
        summary: "Refreshes -record -persist pairs incrementally; the options given replace the pair's.",
        flags: &[
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtinhibit", B),
            f("-freeze", B),
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtse", B),
            f("-seqnum", Kind::Value("flash_sequence_num")),
            f("-wait", B),
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "reverseflash",
        summary: "Reverses pairs (name them as source:target today); -fast before the copy has ended.",
        flags: &[
            f("-fast", B),
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtinhibit", B),
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtse", B),
            f("-seqnum", Kind::Value("flash_sequence_num")),
            f("-wait", B),
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "setflashrevertible",
        summary: "Makes -record -persist pairs revertible (source write inhibited until commit or revert).",
        flags: &[
            f("-tgtoffline", B),
            f("-tgtinhibit", B),
            f("-tgtpprc", B),
            f("-nocp", B),
            f("-record", B),
            f("-persist", B),
            f("-seqnum", Kind::Value("flash_sequence_num")),
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "commitflash",
        summary: "Commits revertible pairs, named by source volume: the target keeps its new data.",
        flags: &[f("-seqnum", Kind::Value("flash_sequence_num"))],
        ids: Ids::Required,
        ids_help: "source_volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "revertflash",
        summary: "Reverts revertible pairs, named by source volume, to the last consistency point.",
        flags: &[f("-seqnum", Kind::Value("flash_sequence_num"))],
        ids: Ids::Required,
        ids_help: "source_volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "unfreezeflash",
        summary: "Resets the FlashCopy consistency group (-freeze) of source LSSs: parked writes resume.",
        flags: &[],
        ids: Ids::Required,
        ids_help: "source_LSS_ID ... | range | -",
        reports: true,
    },
    // ---- Remote (in-band) FlashCopy through a conduit LSS (dscli-spec.md §3.2): the local
    // verbs' flags less -wait, plus -conduit and -srcss; -dev names the image of the
    // FlashCopy volumes (the PPRC secondaries).
    Verb {
        name: "mkremoteflash",
        summary: "Establishes FlashCopy pairs at the image of the PPRC secondaries, sent through the conduit LSS holding their primaries (fully qualified). -record implies -persist.",
        flags: &[
            CONDUIT,
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtinhibit", B),
            f("-freeze", B),
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtse", B),
            SEQNUM,
            SRCSS,
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "lsremoteflash",
        summary: "Lists the FlashCopy relationships whose sources are secondaries of the conduit LSS's PPRC pairs, as lsflash.",
        flags: &[
            CONDUIT,
            SL[0],
            SL[1],
            f("-activecp", B),
            f("-record", B),
            f("-persist", B),
            f("-revertible", B),
            f("-cp", B),
            f("-state", Kind::Enum(FLASH_STATES)),
            SEQNUM,
            SRCSS,
        ],
        ids: Ids::Optional,
        ids_help: "[source:target ... | Volume_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "rmremoteflash",
        summary: "Withdraws remote FlashCopy pairs through the conduit LSS. -cp copies the rest first; -tgtonly ends the target side.",
        flags: &[CONDUIT, f("-quiet", B), f("-tgtonly", B), f("-cp", B), SEQNUM, SRCSS],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "resyncremoteflash",
        summary: "Refreshes remote -record -persist pairs incrementally through the conduit LSS; the options given replace the pair's.",
        flags: &[
            CONDUIT,
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtinhibit", B),
            f("-freeze", B),
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtse", B),
            SEQNUM,
            SRCSS,
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "reverseremoteflash",
        summary: "Reverses remote pairs through the conduit LSS (name them as source:target today); -fast before the copy has ended.",
        flags: &[
            CONDUIT,
            f("-fast", B),
            f("-record", B),
            f("-persist", B),
            f("-nocp", B),
            f("-cp", B),
            f("-tgtinhibit", B),
            f("-tgtpprc", B),
            f("-tgtoffline", B),
            f("-tgtse", B),
            SEQNUM,
            SRCSS,
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "setremoteflashrevertible",
        summary: "Makes remote -record -persist pairs revertible through the conduit LSS.",
        flags: &[
            CONDUIT,
            f("-tgtoffline", B),
            f("-tgtinhibit", B),
            f("-tgtpprc", B),
            f("-nocp", B),
            f("-record", B),
            f("-persist", B),
            SEQNUM,
            SRCSS,
        ],
        ids: Ids::Required,
        ids_help: PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "commitremoteflash",
        summary: "Commits remote revertible pairs, named by source volume, through the conduit LSS.",
        flags: &[CONDUIT, SEQNUM, SRCSS],
        ids: Ids::Required,
        ids_help: "source_volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "revertremoteflash",
        summary: "Reverts remote revertible pairs, named by source volume, through the conduit LSS.",
        flags: &[CONDUIT, SEQNUM, SRCSS],
        ids: Ids::Required,
        ids_help: "source_volume_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "mkvolgrp",
        summary: "Creates a volume group: the volumes its host connections may reach.",
        flags: &[
            f("-type", Kind::Enum(VOLGRP_TYPES)),
            f("-hosttype", Kind::Enum(HOST_TYPES)),
            f("-volume", Kind::Value("Volume_ID,...")),
        ],
        ids: Ids::Required,
        ids_help: "Volume_Group_Name",
        reports: true,
    },
    Verb {
        name: "lsvolgrp",
        summary: "Lists volume groups. -l adds the number of volumes.",
        flags: &[SL[0], SL[1], f("-type", Kind::Enum(VOLGRP_TYPES))],
        ids: Ids::Optional,
        ids_help: "[Volume_Group_ID ... | -]",
        reports: true,
    },
    Verb {
        name: "showvolgrp",
        summary: "Shows one volume group and its volumes.",
        flags: &[],
        ids: Ids::Required,
        ids_help: "Volume_Group_ID",
        reports: true,
    },
    Verb {
        name: "chvolgrp",
        summary: "Renames a volume group or adds, removes or replaces its volumes; hosts that lose a volume lose their sessions on it.",
        flags: &[
            f("-name", Kind::Value("new_Volume_Group_name")),
            f("-action", Kind::Enum(&["add", "remove", "replace"])),
            f("-volume", Kind::Value("Volume_ID,...")),
        ],
        ids: Ids::Required,
        ids_help: "Volume_Group_ID",
        reports: true,
    },
    Verb {
        name: "rmvolgrp",
        summary: "Deletes volume groups; their host connections reach nothing until given another.",
        flags: &[f("-quiet", B)],
        ids: Ids::Required,
        ids_help: "Volume_Group_ID ... | -",
        reports: true,
    },
    Verb {
        name: "mkhostconnect",
        summary: "Creates a host connection: its own NBD endpoint (a socket in the home, or -nbdport, an extension) serving its volume group.",
        flags: &[
            req("-wwname", Kind::Value("wwpn")),
            req("-hosttype", Kind::Enum(HOST_TYPES)),
            f("-portgrp", Kind::Value("port_grp_number")),
            f("-volgrp", Kind::Value("volume_group_ID")),
            f("-ioport", Kind::Value("port_ID,...|all")),
            f("-nbdport", Kind::Value("tcp_port")),
        ],
        ids: Ids::Required,
        ids_help: "Host_Name",
        reports: true,
    },
    Verb {
        name: "lshostconnect",
        summary: "Lists host connections. -l adds LBS, addrDiscovery and the NBD endpoint (extension).",
        flags: &[
            SL[0],
            SL[1],
            f("-portgrp", Kind::Value("port_grp_number")),
            f("-volgrp", Kind::Value("volume_group_ID")),
        ],
        ids: Ids::Optional,
        ids_help: "[Host_Connection_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "showhostconnect",
        summary: "Shows one host connection, with its NBD endpoint and open sessions (extensions).",
        flags: &[],
        ids: Ids::Required,
        ids_help: "Host_Connection_ID",
        reports: true,
    },
    Verb {
        name: "chhostconnect",
        summary: "Changes host connections. -volgrp none and -nbdport none (back to the socket) are extensions.",
        flags: &[
            f("-name", Kind::Value("new_host_name")),
            f("-wwname", Kind::Value("wwpn")),
            f("-hosttype", Kind::Enum(HOST_TYPES)),
            f("-portgrp", Kind::Value("port_grp_number")),
            f("-volgrp", Kind::Value("volume_group_ID|none")),
            f("-ioport", Kind::Value("port_ID,...|all")),
            f("-nbdport", Kind::Value("tcp_port|none")),
        ],
        ids: Ids::Required,
        ids_help: "Host_Connection_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "rmhostconnect",
        summary: "Deletes host connections: their NBD endpoints close, their sessions end.",
        flags: &[f("-quiet", B)],
        ids: Ids::Required,
        ids_help: "Host_Connection_ID ... | range | -",
        reports: true,
    },
    Verb {
        name: "mkpprcpath",
        summary: "Establishes Remote Mirror and Copy paths from a source LSS to a target LSS of another storage image of this site over I/O port pairs; replaces the port set of an existing path.",
        flags: &[
            f("-remotedev", Kind::Value("storage_image_ID")),
            req("-remotewwnn", Kind::Value("wwnn")),
            req("-srclss", Kind::Value("source_LSS_ID")),
            req("-tgtlss", Kind::Value("target_LSS_ID")),
            f("-consistgrp", B),
        ],
        ids: Ids::Required,
        ids_help: "source_port:target_port ... | -",
        reports: true,
    },
    Verb {
        name: "lspprcpath",
        summary: "Lists Remote Mirror and Copy paths, one row per port pair with its link state. -l adds tgtdev, consistgrp and reason (extensions).",
        flags: &[f("-l", B)],
        ids: Ids::Optional,
        ids_help: "[Source_LSS_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "rmpprcpath",
        summary: "Removes Remote Mirror and Copy paths. -force is accepted (no pairs exist yet).",
        flags: &[
            f("-remotedev", Kind::Value("storage_image_ID")),
            f("-remotewwnn", Kind::Value("wwnn")),
            f("-force", B),
            f("-quiet", B),
        ],
        ids: Ids::Required,
        ids_help: "Source_LSS_ID:Target_LSS_ID ... | -",
        reports: true,
    },
    Verb {
        name: "mkpprc",
        summary: "Establishes Remote Mirror and Copy pairs: sources of -dev, targets of -remotedev (a path must join their LSSs). -wait returns at full duplex (mmir) or the end of the first pass (gcp). -tgtonline and -resetreserve have no effect (NBD volumes); -cascade is refused.",
        flags: &[
            REMOTEDEV,
            req("-type", PPRC_TYPE),
            f("-mode", Kind::Enum(&["full", "nocp"])),
            f("-tgtread", B),
            f("-critmode", B),
            f("-wait", B),
            f("-cascade", B),
            f("-tgtonline", B),
            f("-resetreserve", B),
            f("-srcss", SSID),
            f("-tgtss", SSID),
        ],
        ids: Ids::Required,
        ids_help: PPRC_PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "lspprc",
        summary: "Lists Remote Mirror and Copy pairs that volumes of the image take part in (either end), selected by pair, volume or range (all when none).",
        flags: &[REMOTEDEV, f("-state", Kind::Enum(PPRC_STATES)), SL[0], SL[1]],
        ids: Ids::Optional,
        ids_help: "[source:target ... | Volume_ID ... | range | -]",
        reports: true,
    },
    Verb {
        name: "rmpprc",
        summary: "Removes Remote Mirror and Copy pairs at both ends, or with -at src|tgt at one end; -at with -unconditional takes a single volume ID.",
        flags: &[
            REMOTEDEV,
            f("-at", PPRC_AT),
            f("-unconditional", B),
            f("-quiet", B),
            f("-srcss", SSID),
            f("-tgtss", SSID),
        ],
        ids: Ids::Required,
        ids_help: "source:target ... | Volume_ID ... (with -at -unconditional) | -",
        reports: true,
    },
    Verb {
        name: "pausepprc",
        summary: "Suspends Remote Mirror and Copy pairs (from the source, or -at tgt from the target); the primary records what changes until resumepprc.",
        flags: &[REMOTEDEV, f("-at", PPRC_AT), f("-unconditional", B), f("-srcss", SSID), f("-tgtss", SSID)],
        ids: Ids::Required,
        ids_help: "source:target ... | Volume_ID ... (with -at -unconditional) | -",
        reports: true,
    },
    Verb {
        name: "resumepprc",
        summary: "Resumes suspended Remote Mirror and Copy pairs as -type (which may change the type), copying what changed. -tgtonline and -resetreserve have no effect; -suspend and -cascade are refused.",
        flags: &[
            REMOTEDEV,
            req("-type", PPRC_TYPE),
            f("-tgtread", B),
            f("-critmode", B),
            f("-wait", B),
            f("-suspend", B),
            f("-cascade", B),
            f("-tgtonline", B),
            f("-resetreserve", B),
            f("-srcss", SSID),
            f("-tgtss", SSID),
        ],
        ids: Ids::Required,
        ids_help: PPRC_PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "failoverpprc",
        summary: "Fails over to the secondary: issued at its image (-dev) with pairs written secondary:primary, it becomes a suspended primary; works with the link down. -tgtonline has no effect; -cascade is refused.",
        flags: &[
            REMOTEDEV,
            req("-type", PPRC_TYPE),
            f("-tgtonline", B),
            f("-cascade", B),
            f("-srcss", SSID),
            f("-tgtss", SSID),
        ],
        ids: Ids::Required,
        ids_help: PPRC_PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "failbackpprc",
        summary: "Fails back from a suspended primary (-dev) to the other end, copying what changed at either end since they parted. -tgtonline and -resetreserve have no effect; -suspend and -cascade are refused.",
        flags: &[
            REMOTEDEV,
            req("-type", PPRC_TYPE),
            f("-tgtread", B),
            f("-suspend", B),
            f("-cascade", B),
            f("-tgtonline", B),
            f("-resetreserve", B),
            f("-srcss", SSID),
            f("-tgtss", SSID),
        ],
        ids: Ids::Required,
        ids_help: PPRC_PAIRS_HELP,
        reports: true,
    },
    Verb {
        name: "freezepprc",
        summary: "Freezes LSS pairs: suspends their pairs (reason Freeze), removes their paths and holds host writes to the primaries until unfreezepprc or the LSS timer.",
        flags: &[REMOTEDEV, f("-srcss", SSID), f("-tgtss", SSID)],
        ids: Ids::Required,
        ids_help: "Source_LSS_ID:Target_LSS_ID ... | -",
        reports: true,
    },
    Verb {
        name: "unfreezepprc",
        summary: "Thaws frozen LSS pairs: held host writes go on; pairs stay suspended and paths stay removed.",
        flags: &[REMOTEDEV, f("-srcss", SSID), f("-tgtss", SSID)],
        ids: Ids::Required,
        ids_help: "Source_LSS_ID:Target_LSS_ID ... | -",
        reports: true,
    },
    Verb {
        name: "setenv",
        summary: "Changes session settings (banner, header, format, delimiter, verbose, default images, paging).",
        flags: &[
            f("-banner", ON_OFF),
            f("-header", ON_OFF),
            f("-format", Kind::Enum(FORMATS)),
            f("-delim", Kind::Value("char")),
            f("-verbose", ON_OFF),
            f("-dev", Kind::Value("storage_image_ID")),
            f("-remotedev", Kind::Value("storage_image_ID")),
            f("-paging", ON_OFF),
            f("-rows", Kind::Value("rows")),
            f("-fullid", ON_OFF),
        ],
        ids: Ids::None,
        ids_help: "",
        reports: false,
    },
    Verb {
        name: "showenv",
        summary: "Shows session settings.",
        flags: &[],
        ids: Ids::None,
        ids_help: "",
        reports: false,
    },
    Verb {
        name: "ver",
        summary: "Shows the dscli version; -l adds flashd's.",
        flags: &[f("-l", B), f("-s", B)],
        ids: Ids::None,
        ids_help: "",
        reports: false,
    },
    Verb {
        name: "help",
        summary: "Lists commands, or shows the usage of one.",
        flags: &[f("-s", B), f("-l", B)],
        ids: Ids::Optional,
        ids_help: "[command]",
        reports: false,
    }, // ---- Extensions: the mirror links of PPRC paths (DS CLI has no `*link` verbs).
    Verb {
        name: "lslink",
        summary: "Lists the mirror links of Remote Mirror and Copy paths, one row per port pair, up or down (extension). -l adds the simulated line and the link's counters.",
        flags: &[SL[0], SL[1], f("-remotedev", Kind::Value("storage_image_ID"))],
        ids: Ids::Optional,
        ids_help: "[Source_LSS_ID:Target_LSS_ID ... | -]",
        reports: true,
    },
    Verb {
        name: "chlink",
        summary: "Changes the simulated line of the mirror links of Remote Mirror and Copy paths while flashd runs (extension): bandwidth in MiB/s or unlimited, one-way latency, jitter and retransmission timeout in ms, loss in percent, outage. Not kept across a flashd restart.",
        flags: &[
            f("-remotedev", Kind::Value("storage_image_ID")),
            f("-bw", Kind::Value("MiB_per_s|unlimited")),
            f("-latency", Kind::Value("ms")),
            f("-jitter", Kind::Value("ms")),
            f("-loss", Kind::Value("percent")),
            f("-rto", Kind::Value("ms")),
            f("-outage", ON_OFF),
        ],
        ids: Ids::Required,
        ids_help: "Source_LSS_ID:Target_LSS_ID ... | -",
        reports: true,
    },
];

pub fn find(name: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|v| v.name == name)
}

impl Verb {
    /// The verb's own flags, then the common ones.
    pub fn all_flags(&self) -> impl Iterator<Item = &'static Flag> + '_ {
        let common: &'static [Flag] = if self.reports { COMMON } else { &[] };
        self.flags.iter().chain(common.iter())
    }

    fn flag(&self, name: &str) -> Option<&'static Flag> {
        self.all_flags().find(|f| f.name == name)
    }

    /// Usage text generated from the table.
    pub fn usage(&self) -> String {
        let mut line = self.name.to_string();
        for fl in self.all_flags() {
            let body = match fl.kind {
                Kind::Bool => fl.name.to_string(),
                Kind::Value(p) => format!("{} {p}", fl.name),
                Kind::Enum(v) => format!("{} {}", fl.name, v.join("|")),
            };
            if fl.required {
                line.push_str(&format!(" {body}"));
            } else {
                line.push_str(&format!(" [{body}]"));
            }
        }
        if !self.ids_help.is_empty() {
            line.push(' ');
            line.push_str(self.ids_help);
        }
        format!("{line}\n  {}\n", self.summary)
    }
}

/// A command checked against the table.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub verb: &'static Verb,
    /// Flag name -> value (empty for bool flags).
    pub flags: BTreeMap<&'static str, String>,
    pub ids: Vec<String>,
    /// A lone `-` asked for IDs from standard input.
    pub stdin_ids: bool,
    /// `-help`/`-h`/`-?` was given: print usage, do nothing.
    pub help: bool,
}

impl Invocation {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }
    pub fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }
}

/// A syntax error: the message and its arguments (the verb is added when printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub msg: Message,
    pub args: Vec<String>,
}

impl SyntaxError {
    pub fn new(msg: Message, args: &[&str]) -> Self {
        SyntaxError { msg, args: args.iter().map(|s| s.to_string()).collect() }
    }
    pub fn line(&self, verb: &str) -> String {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.msg.line(verb, &args)
    }
}

/// Checks the words after the verb. `interactive` refuses the `-` ID form.
pub fn parse(verb: &'static Verb, words: &[String], interactive: bool) -> Result<Invocation, SyntaxError> {
    let mut inv = Invocation { verb, flags: BTreeMap::new(), ids: Vec::new(), stdin_ids: false, help: false };
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if w == "-" {
            if interactive {
                return Err(SyntaxError::new(messages::STDIN_INTERACTIVE, &[]));
            }
            inv.stdin_ids = true;
            continue;
        }
        if !w.starts_with('-') || w.len() < 2 {
            inv.ids.push(w.clone());
            continue;
        }
        if matches!(w.as_str(), "-help" | "-h" | "-?") {
            inv.help = true;
            continue;
        }
        let Some(fl) = verb.flag(w) else {
            return Err(SyntaxError::new(messages::UNKNOWN_FLAG, &[w]));
        };
        let value = match fl.kind {
            Kind::Bool => String::new(),
            Kind::Value(_) | Kind::Enum(_) => {
                // A known flag where the value should be means the value is missing (but
                // `-delim -` is a legal delimiter).
                let next = words.get(i).filter(|n| fl.name == "-delim" || verb.flag(n).is_none());
                let Some(v) = next else {
                    return Err(SyntaxError::new(messages::FLAG_NO_VALUE, &[fl.name]));
                };
                i += 1;
                v.clone()
            }
        };
        let value = match fl.kind {
            Kind::Enum(allowed) => {
                let lower = value.to_ascii_lowercase();
                if !allowed.contains(&lower.as_str()) {
                    return Err(SyntaxError::new(messages::BAD_ENUM, &[fl.name, &value, &allowed.join("|")]));
                }
                lower
            }
            _ => value,
        };
        inv.flags.insert(fl.name, value);
    }
    if inv.help {
        return Ok(inv);
    }
    check(&inv)?;
    Ok(inv)
}

/// Rules across flags: required ones, `-s` with `-l`, IDs, common value checks.
fn check(inv: &Invocation) -> Result<(), SyntaxError> {
    let verb = inv.verb;
    if inv.has("-s") && inv.has("-l") && verb.name != "help" {
        return Err(SyntaxError::new(messages::SHORT_AND_LONG, &[]));
    }
    if let Some(fl) = verb.flags.iter().find(|f| f.required && !inv.has(f.name)) {
        return Err(SyntaxError::new(messages::MISSING_FLAG, &[fl.name]));
    }
    let has_ids = !inv.ids.is_empty() || inv.stdin_ids;
    match verb.ids {
        Ids::Required if !has_ids => return Err(SyntaxError::new(messages::MISSING_IDS, &[])),
        Ids::None if has_ids => {
            let shown = inv.ids.first().map(String::as_str).unwrap_or("-");
            return Err(SyntaxError::new(messages::UNEXPECTED_IDS, &[shown]));
        }
        _ => {}
    }
    for name in ["-delim"] {
        if let Some(d) = inv.flag(name)
            && d.chars().count() != 1
        {
            return Err(SyntaxError::new(messages::BAD_VALUE, &[name, d, "one character expected"]));
        }
    }
    for name in ["-r", "-rows"] {
        if let Some(r) = inv.flag(name)
            && !matches!(r.parse::<u8>(), Ok(1..=100))
        {
            return Err(SyntaxError::new(messages::BAD_VALUE, &[name, r, "1-100 expected"]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Invocation, SyntaxError> {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(find(&words[0]).unwrap(), &words[1..], false)
    }

    fn err_id(line: &str) -> &'static str {
        p(line).unwrap_err().msg.id
    }

    #[test]
    fn flags_values_and_ids() {
        let inv = p("mkfbvol -extpool P0 -cap 10 -type ESS -name a#h 1000-1001 1005").unwrap();
        assert_eq!(inv.flag("-extpool"), Some("P0"));
        assert_eq!(inv.flag("-type"), Some("ess"));
        assert_eq!(inv.ids, ["1000-1001", "1005"]);
        let inv = p("lsfbvol -l -bnr off -fmt delim -delim | -dev IBM.2107-75FA120").unwrap();
        assert_eq!(inv.flag("-delim"), Some("|"));
        assert!(inv.ids.is_empty());
        assert!(p("lsfbvol -fmt delim -delim -").unwrap().flag("-delim") == Some("-"));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err_id("lsfbvol -bogus"), "CMUC90002E");
        assert_eq!(err_id("mkfbvol -extpool P0 -cap"), "CMUC90003E");
        assert_eq!(err_id("mkfbvol -extpool -cap 10 1000"), "CMUC90003E");
        assert_eq!(err_id("lsfbvol -fmt yaml"), "CMUC90004E");
        assert_eq!(err_id("lsfbvol -s -l"), "CMUC90007E");
        assert_eq!(err_id("mkfbvol -cap 10 1000"), "CMUC90006E");
        assert_eq!(err_id("mkfbvol -extpool P0 -cap 10"), "CMUC90011E");
        assert_eq!(err_id("showenv 1000"), "CMUC90012E");
        assert_eq!(err_id("lsfbvol -delim ab"), "CMUC90005E");
        assert_eq!(err_id("lsfbvol -r 0"), "CMUC90005E");
        let words = vec!["-".to_string()];
        assert_eq!(parse(find("rmfbvol").unwrap(), &words, true).unwrap_err().msg.id, "CMUC90010E");
        assert!(parse(find("rmfbvol").unwrap(), &words, false).unwrap().stdin_ids);
    }

    #[test]
    fn flash_verbs() {
        let inv = p("mkflash -record -nocp -seqnum 0010 -dev IBM.2107-75FA120 0100:0200 0101-0102:0201-0202").unwrap();
        assert!(inv.has("-record") && inv.has("-nocp"));
        assert_eq!(inv.flag("-seqnum"), Some("0010"));
        assert_eq!(inv.ids.len(), 2);
        assert_eq!(p("lsflash -state Tgt-Failed").unwrap().flag("-state"), Some("tgt-failed"));
        assert_eq!(err_id("lsflash -state broken"), "CMUC90004E");
        assert_eq!(err_id("mkflash -record"), "CMUC90011E");
        assert_eq!(err_id("rmflash -fast 0100:0200"), "CMUC90002E");
        assert_eq!(err_id("unfreezeflash"), "CMUC90011E");
        assert!(p("lsflash").unwrap().ids.is_empty());
        assert!(p("commitflash -seqnum 1 0100-0101").is_ok());
    }

    #[test]
    fn pprc_pair_verbs() {
        let inv =
            p("mkpprc -dev IBM.2107-75FA120 -remotedev IBM.2107-75FA150 -type GCP -mode nocp 0100-0101:0200-0201")
                .unwrap();
        assert_eq!(inv.flag("-type"), Some("gcp"));
        assert_eq!(inv.flag("-mode"), Some("nocp"));
        assert_eq!(err_id("mkpprc 0100:0200"), "CMUC90006E");
        assert_eq!(err_id("mkpprc -type mmir"), "CMUC90011E");
        assert_eq!(err_id("mkpprc -type sync 0100:0200"), "CMUC90004E");
        assert_eq!(err_id("lspprc -s -l"), "CMUC90007E");
        assert_eq!(err_id("lspprc -state broken"), "CMUC90004E");
        assert_eq!(p("lspprc -state Target-Full-Duplex").unwrap().flag("-state"), Some("target-full-duplex"));
        assert_eq!(err_id("rmpprc -at both 0100:0200"), "CMUC90004E");
        assert_eq!(err_id("resumepprc 0100:0200"), "CMUC90006E");
        assert_eq!(err_id("failoverpprc 0100:0200"), "CMUC90006E");
        assert_eq!(err_id("failbackpprc -type mmir -critmode 0100:0200"), "CMUC90002E");
        assert_eq!(err_id("freezepprc"), "CMUC90011E");
        assert!(p("pausepprc -at tgt -unconditional 0200").is_ok());
        assert!(p("unfreezepprc -srcss FF01 -tgtss FF02 01:02").is_ok());
    }

    #[test]
    fn help_flag_skips_checks() {
        assert!(p("mkfbvol -h").unwrap().help);
        assert!(
            find("mkfbvol")
                .unwrap()
                .usage()
                .starts_with("mkfbvol -extpool extentpool_ID -cap capacity [-type ds|ess|blocks]")
        );
    }
}
