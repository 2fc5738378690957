//! THE table of every message `dscli` prints: CMUC (client) and CMUN (server-side) IDs, texts
//! and exit codes. Nothing else in the crate spells a message ID.
//!
//! Sources: IDs and texts tagged [C] in dscli-spec.md §1.8 are IBM's; those tagged [R] are
//! recalled or chosen here and are easy to correct in this one file.
//!
//! Simulator ranges (not IBM's, documented as ours):
//! * `CMUC90001E`..`CMUC90099E`: client-side syntax and profile problems (exit 2 or 6);
//! * `CMUN90001E`..`CMUN90099E`: rejections by flashd, one per engine `ErrorKind` (exit 4,
//!   except the few connection-like kinds, exit 3).
//!
//! Every message, errors included, goes to stdout as IBM's do; the exit code tells success
//! from failure, and a successful command writes nothing to stderr.

use flashtrack::ErrorKind;

/// Exit codes of DS CLI (dscli-spec.md §1.7 [C]).
pub mod exit {
    pub const OK: u8 = 0;
    pub const SYNTAX: u8 = 2;
    pub const CONNECTION: u8 = 3;
    pub const SERVER: u8 = 4;
    pub const AUTH: u8 = 5;
    pub const APPLICATION: u8 = 6;
}

/// A message: ID and a text pattern whose `{0}`, `{1}` are filled in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub id: &'static str,
    pub text: &'static str,
}

impl Message {
    /// `ID verb: text` with the placeholders filled.
    pub fn line(&self, verb: &str, args: &[&str]) -> String {
        let mut text = self.text.to_string();
        for (i, a) in args.iter().enumerate() {
            text = text.replace(&format!("{{{i}}}"), a);
        }
        format!("{} {}: {}", self.id, verb, text)
    }
}

const fn m(id: &'static str, text: &'static str) -> Message {
    Message { id, text }
}

/// `CMUC00234I <cmd>: No <object> found.` [C for lsfbvol/lsflash/lspprc; R for the others].
pub const NOT_FOUND: Message = m("CMUC00234I", "No {0} found.");
/// Connection failure [C-low: ansible-collector quotes this ID and text].
pub const CONNECT_FAILED: Message = m("CMUN00018E", "Unable to connect to the management console server {0}: {1}");

/// What a list/show command calls its objects in the not-found line.
pub const OBJECT_NAMES: &[(&str, &str)] = &[
    ("lsfbvol", "FB Volume"),                      // [C]
    ("showfbvol", "FB Volume"),                    // [R]
    ("lsckdvol", "CKD Volume"),                    // [R]
    ("showckdvol", "CKD Volume"),                  // [R]
    ("lsextpool", "Extent Pool"),                  // [R]
    ("showextpool", "Extent Pool"),                // [R]
    ("lslss", "LSS"),                              // [R]
    ("lslcu", "LCU"),                              // [R]
    ("lssi", "Storage Image"),                     // [R]
    ("showsi", "Storage Image"),                   // [R]
    ("lsioport", "IO Port"),                       // [R]
    ("lsflash", "Flash Copy"),                     // [C] (ibm-hmcconst; opensvc tests the text)
    ("lsvolgrp", "Volume Group"),                  // [C] (ibm-hmcconst)
    ("showvolgrp", "Volume Group"),                // [R]
    ("lshostconnect", "Host Connection"),          // [R]
    ("showhostconnect", "Host Connection"),        // [R]
    ("lspprcpath", "Remote Mirror and Copy Path"), // [R]
    ("lspprc", "Remote Mirror and Copy"),          // [C] (ibm-hmcconst)
    ("lsremoteflash", "Flash Copy"),               // [R] (dscli-spec.md §4.2)
    // Mirror links (extension verbs, branch linkverbs).
    ("lslink", "Mirror Link"),
];

/// Action messages per verb: (verb, success, confirmation prompt for rm verbs).
/// `{0}` is the object ID. All [R] except where the spec says otherwise.
pub const ACTIONS: &[(&str, Message, Option<Message>)] = &[
    ("mkfbvol", m("CMUC00025I", "FB volume {0} successfully created."), None),
    ("chfbvol", m("CMUC00026I", "FB volume {0} successfully modified."), None),
    (
        "rmfbvol",
        m("CMUC00028I", "FB volume {0} successfully deleted."),
        Some(m("CMUC00027W", "Are you sure you want to delete FB volume {0}? [y/n]:")),
    ),
    ("mkckdvol", m("CMUC00021I", "CKD Volume {0} successfully created."), None),
    ("chckdvol", m("CMUC00022I", "CKD Volume {0} successfully modified."), None),
    (
        "rmckdvol",
        m("CMUC00024I", "CKD volume {0} successfully deleted."),
        Some(m("CMUC00023W", "Are you sure you want to delete CKD volume {0}? [y/n]:")),
    ),
    ("mklcu", m("CMUC00017I", "LCU {0} successfully created."), None),
    (
        "rmlcu",
        // [R] chosen next to mklcu's ID.
        m("CMUC00019I", "LCU {0} successfully deleted."),
        Some(m("CMUC00018W", "Are you sure you want to delete LCU {0}? [y/n]:")),
    ),
    ("mkextpool", m("CMUC00000I", "Extent pool {0} successfully created."), None),
    (
        "rmextpool",
        m("CMUC00002I", "Extent pool {0} successfully deleted."),
        Some(m("CMUC00001W", "Are you sure you want to delete extent pool {0}? [y/n]:")),
    ),
    // Local FlashCopy (dscli-spec.md §1.8): 137 [C-low], 168 [C], 144 [C-low], the rest [R].
    ("mkflash", m("CMUC00137I", "FlashCopy pair {0} successfully created."), None),
    (
        "rmflash",
        m("CMUC00140I", "FlashCopy pair {0} successfully removed."),
        Some(m("CMUC00144W", "Are you sure you want to remove the FlashCopy pair {0}:? [y/n]:")),
    ),
    ("resyncflash", m("CMUC00168I", "FlashCopy volume pair {0} successfully resynchronized."), None),
    ("reverseflash", m("CMUC00169I", "FlashCopy volume pair {0} successfully reversed."), None),
    ("setflashrevertible", m("CMUC00167I", "FlashCopy volume pair {0} successfully made revertible."), None),
    ("commitflash", m("CMUC00170I", "FlashCopy volume pair {0} successfully committed."), None),
    ("revertflash", m("CMUC00171I", "FlashCopy volume pair {0} successfully reverted."), None),
    (
        "unfreezeflash",
        m("CMUC00172I", "FlashCopy consistency group for logical subsystem {0}: successfully reset."),
        None,
    ),
    // Remote FlashCopy (dscli-spec.md §1.8): 173 [R, quoted in the issue]. 174-181 are IBM's
    // block for the remote family, but which number is which verb is NOT confirmed [R]; ours
    // follow the spec's (alphabetical) list of verbs: 174 commit, 175 resync, 176 reverse,
    // 177 revert, 178 setremoteflashrevertible, 179 rm (success), 180 rm (prompt), 181
    // rm -cp (success, [`RMREMOTEFLASH_CP`]). Verbs that start a copy remind to watch it
    // with lsremoteflash, as 173 does; rm's text is the spec's.
    (
        "mkremoteflash",
        m(
            "CMUC00173I",
            "Remote FlashCopy volume pair {0} successfully created. Use the lsremoteflash command to determine copy completion.",
        ),
        None,
    ),
    ("commitremoteflash", m("CMUC00174I", "Remote FlashCopy volume pair {0} successfully committed."), None),
    (
        "resyncremoteflash",
        m(
            "CMUC00175I",
            "Remote FlashCopy volume pair {0} successfully resynchronized. Use the lsremoteflash command to determine copy completion.",
        ),
        None,
    ),
    (
        "reverseremoteflash",
        m(
            "CMUC00176I",
            "Remote FlashCopy volume pair {0} successfully reversed. Use the lsremoteflash command to determine copy completion.",
        ),
        None,
    ),
    ("revertremoteflash", m("CMUC00177I", "Remote FlashCopy volume pair {0} successfully reverted."), None),
    (
        "setremoteflashrevertible",
        m("CMUC00178I", "Remote FlashCopy volume pair {0} successfully made revertible."),
        None,
    ),
    (
        "rmremoteflash",
        m(
            "CMUC00179I",
            "Removal of the remote FlashCopy volume pair {0} has been initiated successfully. Use the lsremoteflash command to determine when the relationship is deleted.",
        ),
        Some(m("CMUC00180W", "Are you sure you want to remove the remote FlashCopy volume pair {0}:? [y/n]:")),
    ),
    // Host attachment: mkvolgrp 030 and mkhostconnect 012 are the spec's [R]; the others
    // are chosen next to them [R].
    ("mkvolgrp", m("CMUC00030I", "Volume group {0} successfully created."), None),
    ("chvolgrp", m("CMUC00031I", "Volume group {0} successfully modified."), None),
    (
        "rmvolgrp",
        m("CMUC00033I", "Volume group {0} successfully deleted."),
        Some(m("CMUC00032W", "Are you sure you want to delete volume group {0}? [y/n]:")),
    ),
    ("mkhostconnect", m("CMUC00012I", "Host connection {0} successfully created."), None),
    ("chhostconnect", m("CMUC00013I", "Host connection {0} successfully modified."), None),
    (
        "rmhostconnect",
        m("CMUC00015I", "Host connection {0} successfully deleted."),
        Some(m("CMUC00014W", "Are you sure you want to delete host connection {0}? [y/n]:")),
    ),
    // PPRC paths (dscli-spec.md §1.8 [R]).
    ("mkpprcpath", m("CMUC00149I", "Remote Mirror and Copy path {0} successfully established."), None),
    (
        "rmpprcpath",
        m("CMUC00150I", "Remote Mirror and Copy path {0} successfully removed."),
        Some(m("CMUC00152W", "Are you sure you want to remove the Remote Mirror and Copy path {0}:? [y/n]:")),
    ),
    // PPRC pairs (dscli-spec.md §1.8): 153 [C-low], the rest [R]. freezepprc's success is a W
    // message ([`FREEZEPPRC`]), so it is not in this table.
    ("mkpprc", m("CMUC00153I", "Remote Mirror and Copy volume pair relationship {0} successfully created."), None),
    (
        "rmpprc",
        m("CMUC00155I", "Remote Mirror and Copy volume pair {0} relationship successfully withdrawn."),
        Some(m(
            "CMUC00160W",
            "Are you sure you want to delete the Remote Mirror and Copy volume pair relationship {0}:? [y/n]:",
        )),
    ),
    ("pausepprc", m("CMUC00157I", "Remote Mirror and Copy volume pair {0} relationship successfully paused."), None),
    (
        "resumepprc",
        m(
            "CMUC00158I",
            "Remote Mirror and Copy volume pair {0} relationship successfully resumed. This message is being returned before the copy completes.",
        ),
        None,
    ),
    ("failoverpprc", m("CMUC00196I", "Remote Mirror and Copy pair {0} successfully reversed."), None),
    ("failbackpprc", m("CMUC00197I", "Remote Mirror and Copy pair {0} successfully failed back."), None),
    ("unfreezepprc", m("CMUC00198I", "Remote Mirror and Copy pair ID {0} successfully thawed."), None),
    // ---- Mirror links (extension verbs lslink/chlink, branch linkverbs): our range, CMUC9006x.
    // `{0}` is `SS:TT Ixxxx:Ixxxx` (path and port pair).
    ("chlink", m("CMUC90062I", "Mirror link {0} successfully modified."), None),
];

/// `freezepprc` success, one per LSS pair `SS:TT` [R]: IBM gives it severity W, since host
/// writes to the frozen primaries are held until `unfreezepprc` or the LSS timer.
pub const FREEZEPPRC: Message = m("CMUC00161W", "Remote Mirror and Copy consistency group {0} successfully created.");

/// `resumepprc -wait` success [D]: the same ID without the "before the copy completes"
/// sentence, which is no longer true once the wait has ended.
pub const RESUMEPPRC_WAITED: Message =
    m("CMUC00158I", "Remote Mirror and Copy volume pair {0} relationship successfully resumed.");

/// `rmflash -cp` success [R].
pub const RMFLASH_CP: Message = m(
    "CMUC00143I",
    "Background copy process for FlashCopy pair {0} successfully started. The relationship will be removed when the copy ends.",
);

/// `rmremoteflash -cp` success [R]: the remote form of [`RMFLASH_CP`] (see the remote
/// FlashCopy rows of [`ACTIONS`] for the numbering).
pub const RMREMOTEFLASH_CP: Message = m(
    "CMUC00181I",
    "Background copy process for remote FlashCopy volume pair {0} successfully started. The relationship will be removed when the copy ends. Use the lsremoteflash command to determine when the relationship is deleted.",
);

/// The success of `rmflash -cp` / `rmremoteflash -cp`.
pub fn withdraw_cp(verb: &str) -> Message {
    if verb == "rmremoteflash" { RMREMOTEFLASH_CP } else { RMFLASH_CP }
}

/// Success message of an action verb.
pub fn success(verb: &str) -> Message {
    ACTIONS.iter().find(|a| a.0 == verb).map(|a| a.1).expect("every action verb is in ACTIONS")
}

/// Confirmation prompt of an rm verb.
pub fn confirm(verb: &str) -> Option<Message> {
    ACTIONS.iter().find(|a| a.0 == verb).and_then(|a| a.2)
}

/// Object name for the not-found line.
pub fn object_name(verb: &str) -> &'static str {
    OBJECT_NAMES.iter().find(|o| o.0 == verb).map(|o| o.1).unwrap_or("object")
}

// Client-side syntax problems (simulator range, exit 2 unless noted).
pub const UNKNOWN_COMMAND: Message = m("CMUC90001E", "Unknown command {0}. Enter help for the list of commands.");
pub const UNKNOWN_FLAG: Message = m("CMUC90002E", "Unknown flag {0}.");
pub const FLAG_NO_VALUE: Message = m("CMUC90003E", "The flag {0} needs a value.");
pub const BAD_ENUM: Message = m("CMUC90004E", "Invalid value {1} for {0}; expected {2}.");
pub const BAD_VALUE: Message = m("CMUC90005E", "Invalid value {1} for {0}: {2}.");
pub const MISSING_FLAG: Message = m("CMUC90006E", "The flag {0} is required.");
pub const SHORT_AND_LONG: Message = m("CMUC90007E", "You cannot use the -l and the -s parameters together.");
pub const MALFORMED_ID: Message = m("CMUC90008E", "{0} is not a valid {1} ID.");
pub const LSS_RANGE: Message = m("CMUC90009E", "{0}: LSS {1} is out of range for machine type {2} (00-{3}).");
pub const STDIN_INTERACTIVE: Message =
    m("CMUC90010E", "The - (read IDs from standard input) cannot be used in interactive mode.");
pub const MISSING_IDS: Message = m("CMUC90011E", "An object ID is required.");
pub const UNEXPECTED_IDS: Message = m("CMUC90012E", "This command takes no object ID: {0}.");
pub const QUOTE: Message = m("CMUC90013E", "Unterminated quote in {0}.");
pub const NO_IMAGE: Message =
    m("CMUC90014E", "No storage image given: use -dev, devid or a fully qualified ID ({0} images known).");
pub const IMAGE_CONFLICT: Message = m("CMUC90015E", "The IDs name more than one storage image: {0} and {1}.");
pub const NAME_TOO_LONG: Message = m("CMUC90016E", "The name {0} is longer than 16 characters.");
pub const BAD_GLOBAL: Message = m("CMUC90017E", "Invalid dscli option {0}.");
pub const EXCLUSIVE: Message = m("CMUC90018E", "The parameters {0} and {1} cannot be used together.");
pub const PAIR_RANGE: Message = m("CMUC90019E", "The source and target ranges of {0} differ in length.");
/// Profile problems (exit 6).
pub const PROFILE: Message = m("CMUC90020E", "Profile {0} line {1}: {2}");
/// Unreadable script or profile (exit 6).
pub const UNREADABLE: Message = m("CMUC90021E", "Cannot read {0}: {1}");
/// A verb that names one object got several (host attachment verbs; `CMUC9006x` is this
/// branch's own block of the simulator range).
pub const ONE_OBJECT: Message = m("CMUC90060E", "Only one {0} can be given: {1}.");
/// `-action` without `-volume` or the other way round.
pub const ACTION_VOLUME: Message = m("CMUC90061E", "The -action and -volume parameters must be given together.");

/// PPRC pair verbs (`CMUC9008x`, this branch's own block of the simulator range).
/// A DS CLI parameter flashtrack cannot honour: refused rather than ignored (exit 2).
pub const NOT_SUPPORTED: Message = m("CMUC90080E", "The parameter {0} is not supported: {1}.");
/// A parameter that is valid only together with another.
pub const NEEDS_PARAM: Message = m("CMUC90081E", "The parameter {0} can only be used with {1}.");
/// A volume ID where a pair is needed (`pausepprc`/`rmpprc` without `-at ... -unconditional`).
pub const SINGLE_VOLUME: Message = m(
    "CMUC90082E",
    "{0} is a single volume ID: give source:target, or -at src|tgt with -unconditional to name one volume.",
);
/// `-srcss`/`-tgtss` limit a command to one source LSS and one target LSS.
pub const ONE_LSS_PAIR: Message =
    m("CMUC90083E", "{0}: with -srcss or -tgtss all IDs must be in one source LSS and one target LSS ({1}).");
/// Remote FlashCopy (`*remoteflash`): `-conduit` must name its storage image (dscli-spec.md
/// §2.2 [C]).
pub const CONDUIT_SHORT: Message = m(
    "CMUC90084E",
    "The -conduit LSS {0} is not fully qualified: give storage_image_ID/LSS_ID, e.g. IBM.1750-68FA150/10.",
);
/// Remote FlashCopy: the source is the secondary of a Global Copy pair, whose data lags its
/// primary's and is not consistent (a warning: the command runs).
pub const GLOBAL_COPY_SOURCE: Message = m(
    "CMUC90085W",
    "{0}: The source volume {1} is the secondary of the Global Copy pair {2}: its data is not consistent (fuzzy); the command runs anyway.",
);
/// Remote FlashCopy: `-srcss` names one LSS's subsystem.
pub const SRCSS_ONE_LSS: Message = m("CMUC90086E", "{0}: with -srcss all source volumes must be in one LSS ({1}).");
// ---- Mirror links (extension verbs lslink/chlink, branch linkverbs): CMUC90062I (chlink's
// success, in ACTIONS) and CMUC90063E. Out-of-range values use BAD_VALUE (CMUC90005E).
/// `chlink` without any setting.
pub const NO_LINK_SETTING: Message =
    m("CMUC90063E", "No link setting given: use -bw, -latency, -jitter, -loss, -rto or -outage.");

/// The daemon answered something the request did not ask for (exit 3).
pub const PROTOCOL: Message = m("CMUN90098E", "Unexpected reply from flashd: {0}");

/// One row of the engine error table.
#[derive(Debug, Clone, Copy)]
pub struct EngineMessage {
    pub kind: ErrorKind,
    pub id: &'static str,
    pub text: &'static str,
    pub exit: u8,
    /// Append the engine's detail (it may name paths: keep it off for kinds the goldens hit).
    pub detail: bool,
}

const fn e(kind: ErrorKind, id: &'static str, text: &'static str, exit: u8, detail: bool) -> EngineMessage {
    EngineMessage { kind, id, text, exit, detail }
}

/// Every engine `ErrorKind`: `CMUNxxxxxE <verb>: <object>: <text>`.
pub const ENGINE: &[EngineMessage] = &[
    e(ErrorKind::InvalidArgument, "CMUN90001E", "Invalid argument.", exit::SERVER, true),
    e(ErrorKind::ImageNotFound, "CMUN90002E", "The storage image does not exist.", exit::SERVER, false),
    e(ErrorKind::ImageExists, "CMUN90003E", "The storage image already exists.", exit::SERVER, false),
    e(ErrorKind::ImageHasVolumes, "CMUN90004E", "The storage image still holds volumes.", exit::SERVER, false),
    e(ErrorKind::PoolNotFound, "CMUN90005E", "The extent pool does not exist.", exit::SERVER, false),
    e(ErrorKind::PoolExists, "CMUN90006E", "The extent pool already exists.", exit::SERVER, false),
    e(ErrorKind::PoolHasVolumes, "CMUN90007E", "The extent pool still holds volumes.", exit::SERVER, false),
    e(ErrorKind::PoolTypeMismatch, "CMUN90008E", "The extent pool has the wrong storage type.", exit::SERVER, false),
    e(
        ErrorKind::PoolRankGroupMismatch,
        "CMUN90009E",
        "The rank group of the extent pool does not match the LSS.",
        exit::SERVER,
        false,
    ),
    e(ErrorKind::PoolPathInvalid, "CMUN90010E", "The extent pool path cannot be used.", exit::SERVER, true),
    e(ErrorKind::LssOutOfRange, "CMUN90011E", "The LSS is out of range for this machine type.", exit::SERVER, false),
    e(
        ErrorKind::AddressGroupType,
        "CMUN90012E",
        "FB and CKD volumes cannot share an address group.",
        exit::SERVER,
        false,
    ),
    e(ErrorKind::LcuNotFound, "CMUN90013E", "The LCU does not exist.", exit::SERVER, false),
    e(ErrorKind::LcuExists, "CMUN90014E", "The LCU already exists.", exit::SERVER, false),
    e(ErrorKind::LcuHasVolumes, "CMUN90015E", "The LCU still holds volumes.", exit::SERVER, false),
    e(ErrorKind::VolumeNotFound, "CMUN90016E", "The volume does not exist.", exit::SERVER, false),
    e(ErrorKind::VolumeExists, "CMUN90017E", "The volume already exists.", exit::SERVER, false),
    e(ErrorKind::VolumeInUse, "CMUN90018E", "The volume is in use.", exit::SERVER, false),
    e(ErrorKind::CapacityZero, "CMUN90019E", "The capacity must be greater than 0.", exit::SERVER, false),
    e(
        ErrorKind::CapacityTooLarge,
        "CMUN90020E",
        "The capacity exceeds what the extent pool can hold.",
        exit::SERVER,
        false,
    ),
    e(ErrorKind::ShrinkNotAllowed, "CMUN90021E", "A volume cannot be made smaller.", exit::SERVER, false),
    e(ErrorKind::DeviceInUse, "CMUN90022E", "The device is in use.", exit::SERVER, true),
    e(ErrorKind::DeviceMounted, "CMUN90023E", "The device holds a mounted file system.", exit::SERVER, true),
    e(ErrorKind::HomeLocked, "CMUN90024E", "The site home is owned by another flashd.", exit::CONNECTION, true),
    e(ErrorKind::DaemonRunning, "CMUN90025E", "A flashd runs on this site home.", exit::CONNECTION, true),
    e(ErrorKind::VersionMismatch, "CMUN90026E", "Client and server versions differ.", exit::CONNECTION, true),
    e(ErrorKind::Corrupt, "CMUN90027E", "Metadata failed validation.", exit::SERVER, true),
    e(ErrorKind::Unsupported, "CMUN90028E", "The operation is not supported.", exit::SERVER, true),
    e(ErrorKind::NoSpace, "CMUN90029E", "No space left.", exit::SERVER, false),
    e(ErrorKind::Io, "CMUN90030E", "I/O error.", exit::SERVER, true),
    e(ErrorKind::ShuttingDown, "CMUN90031E", "The server is shutting down.", exit::CONNECTION, false),
    // FlashCopy (dscli-spec.md §1.8 [D]: no genuine IBM error texts are known).
    e(ErrorKind::VolumeInRelationship, "CMUN90032E", "The volume is in a copy relationship.", exit::SERVER, false),
    e(ErrorKind::FlashNotFound, "CMUN90033E", "The FlashCopy relationship does not exist.", exit::SERVER, false),
    e(ErrorKind::FlashExists, "CMUN90034E", "The FlashCopy relationship already exists.", exit::SERVER, false),
    e(
        ErrorKind::FlashIncompatible,
        "CMUN90035E",
        "Source and target differ in size or type, or are the same volume.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashTooManyTargets,
        "CMUN90036E",
        "The source volume already has the maximum of 12 FlashCopy targets.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashIncrementalExists,
        "CMUN90037E",
        "The source volume already has a change recording (incremental) relationship.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashTargetInUse,
        "CMUN90038E",
        "The target volume is already the target of a FlashCopy relationship.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashCascade,
        "CMUN90039E",
        "A volume cannot be the source of one FlashCopy relationship and the target of another.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashNotRecording,
        "CMUN90040E",
        "The relationship was not established with -record and -persist.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashRevertibleState,
        "CMUN90041E",
        "The revertible state of the relationship does not allow this operation.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashCopyActive,
        "CMUN90042E",
        "The background copy has not completed; use -fast to reverse now.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashTargetNotSe,
        "CMUN90043E",
        "-tgtse was specified but the target volume is not space efficient.",
        exit::SERVER,
        false,
    ),
    e(ErrorKind::FlashStateInvalid, "CMUN90044E", "The relationship is not in the Valid state.", exit::SERVER, false),
    e(
        ErrorKind::FlashSeqnumMismatch,
        "CMUN90045E",
        "The sequence number does not match the relationship's.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashNotFrozen,
        "CMUN90046E",
        "The logical subsystem has no frozen FlashCopy consistency group.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::FlashGroupFailed,
        "CMUN90047E",
        "The pair was not established because another pair of the -freeze consistency group failed.",
        exit::SERVER,
        false,
    ),
    // Host attachment (dscli-spec.md has no error texts; [D]).
    e(
        ErrorKind::FlashTargetOnline,
        "CMUN90060E",
        "The target volume is online to a host; -tgtoffline does not allow the operation.",
        exit::SERVER,
        false,
    ),
    e(ErrorKind::VolGrpNotFound, "CMUN90061E", "The volume group does not exist.", exit::SERVER, false),
    e(ErrorKind::HostNotFound, "CMUN90062E", "The host connection does not exist.", exit::SERVER, false),
    e(ErrorKind::HostWwpnExists, "CMUN90063E", "Another host connection already has this WWPN.", exit::SERVER, false),
    e(ErrorKind::HostPortInUse, "CMUN90064E", "The NBD port is in use.", exit::SERVER, false),
    e(ErrorKind::VolumeInVolGrp, "CMUN90065E", "The volume is in the volume group.", exit::SERVER, false),
    e(ErrorKind::VolumeNotInVolGrp, "CMUN90066E", "The volume is not in the volume group.", exit::SERVER, false),
    e(
        ErrorKind::VolGrpFull,
        "CMUN90067E",
        "The volume group holds the most volumes its type allows.",
        exit::SERVER,
        false,
    ),
    // The mirror link (engine/src/link; no DS CLI texts; [D]). Outcome unknown is exit 4 (the
    // storage side failed) and says what to look at before a retry.
    e(ErrorKind::LinkDown, "CMUN90068E", "The mirror link is down; nothing was sent.", exit::SERVER, true),
    e(
        ErrorKind::LinkOutcomeUnknown,
        "CMUN90069E",
        "No reply came over the mirror link in time; the outcome is unknown (the request may have been applied). Check the path (lspprcpath) and the pair (lspprc) at both storage images before you retry.",
        exit::SERVER,
        true,
    ),
    e(
        ErrorKind::LinkAuthFailed,
        "CMUN90070E",
        "The mirror link authentication failed; check that both sites use the same site key.",
        exit::SERVER,
        true,
    ),
    e(ErrorKind::LinkProtocol, "CMUN90071E", "The mirror link received a malformed message.", exit::SERVER, true),
    // PPRC paths (dscli-spec.md §3.3 has no error texts; [D]). Detail off: the goldens hit them.
    e(
        ErrorKind::PprcRemoteNotFound,
        "CMUN90072E",
        "The remote storage image is not in this site nor a peer (flashd peer add).",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcWwnnMismatch,
        "CMUN90073E",
        "The WWNN is not the WWNN of the remote storage image.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcPathToSelf,
        "CMUN90074E",
        "A Remote Mirror and Copy path cannot join a storage image to itself.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::LssNotFound,
        "CMUN90075E",
        "The LSS does not exist: it has no volumes and no LCU.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcLssTypeMismatch,
        "CMUN90076E",
        "The source and target LSSs hold different volume types (FB and CKD).",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcPortInvalid,
        "CMUN90077E",
        "Not a valid I/O port of the storage image (I0000-I0003), or not 1 to 8 port pairs.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcPathNotFound,
        "CMUN90078E",
        "The Remote Mirror and Copy path does not exist.",
        exit::SERVER,
        false,
    ),
    // Our decision [D]: dscli-spec.md §3.3 says rmpprcpath without -force rejects a path that
    // still carries pairs, but gives no message; the ID is from our range. Detail on: it
    // names the pairs.
    e(
        ErrorKind::PprcPathInUse,
        "CMUN90089E",
        "The Remote Mirror and Copy path still carries volume pairs; remove them (rmpprc) or use -force.",
        exit::SERVER,
        true,
    ),
    // PPRC pairs (dscli-spec.md §3.4 has no error texts; [D]). Detail off where the goldens
    // hit them; on for the state rule, whose detail says which state the pair is in.
    e(
        ErrorKind::PprcPairNotFound,
        "CMUN90079E",
        "The Remote Mirror and Copy volume pair does not exist.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcPairExists,
        "CMUN90080E",
        "The volume is already in a Remote Mirror and Copy volume pair.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcStateInvalid,
        "CMUN90081E",
        "The Remote Mirror and Copy volume pair is not in a state that allows this command.",
        exit::SERVER,
        true,
    ),
    e(
        ErrorKind::PprcIncompatible,
        "CMUN90082E",
        "The source and target volumes differ in size or type.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcSecondary,
        "CMUN90083E",
        "The volume is a Remote Mirror and Copy secondary: hosts cannot write it (nor read it without -tgtread) and it cannot be a FlashCopy target until it is failed over (failoverpprc).",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcTgtpprcRequired,
        "CMUN90084E",
        "The FlashCopy target is (or would become) a Remote Mirror and Copy primary: -tgtpprc is required.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::PprcTargetInFlash,
        "CMUN90085E",
        "The secondary volume is a FlashCopy target; it cannot be a Remote Mirror and Copy secondary.",
        exit::SERVER,
        false,
    ),
    // Remote FlashCopy through a conduit LSS (dscli-spec.md §3.2 has no error texts; [D]).
    // The details name the volume and LSS concerned (or the SSID the LSS has).
    e(
        ErrorKind::ConduitNoPair,
        "CMUN90086E",
        "No Remote Mirror and Copy pair of the conduit LSS has the FlashCopy source as its secondary.",
        exit::SERVER,
        true,
    ),
    e(
        ErrorKind::ConduitSuspended,
        "CMUN90087E",
        "No link of the conduit's Remote Mirror and Copy path is up; nothing was sent.",
        exit::SERVER,
        false,
    ),
    e(
        ErrorKind::ConduitSsidMismatch,
        "CMUN90088E",
        "-srcss is not the subsystem ID of the source volume's LSS.",
        exit::SERVER,
        true,
    ),
];

/// For kinds a newer engine adds before this table learns them.
pub const ENGINE_FALLBACK: EngineMessage =
    e(ErrorKind::InvalidArgument, "CMUN90099E", "The server rejected the request.", exit::SERVER, true);

pub fn engine(kind: ErrorKind) -> &'static EngineMessage {
    ENGINE.iter().find(|m| m.kind == kind).unwrap_or(&ENGINE_FALLBACK)
}

/// The message line and exit code for an engine error about `object`.
pub fn engine_line(verb: &str, err: &flashtrack::Error) -> (String, u8) {
    let msg = engine(err.kind);
    let mut text = msg.text.to_string();
    if msg.detail && !err.detail.is_empty() {
        text = format!("{} {}", text.trim_end_matches('.'), format_args!("({})", err.detail));
        text.push('.');
    }
    let line = if err.object.is_empty() {
        format!("{} {verb}: {text}", msg.id)
    } else {
        format!("{} {verb}: {}: {text}", msg.id, err.object)
    };
    (line, msg.exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant named in engine/src/error.rs has its own row (not the fallback).
    #[test]
    fn every_error_kind_is_mapped() {
        let src = include_str!("../../../engine/src/error.rs");
        let body = src.split("pub enum ErrorKind {").nth(1).unwrap().split('}').next().unwrap();
        let mut count = 0;
        for line in body.lines().map(str::trim) {
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let name = line.trim_end_matches(',');
            let kind: ErrorKind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert!(ENGINE.iter().any(|m| m.kind == kind), "{name} has no message");
            count += 1;
        }
        assert_eq!(count, ENGINE.len());
        let mut ids: Vec<_> = ENGINE.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ENGINE.len(), "message IDs are unique");
    }

    #[test]
    fn lines_are_ibm_shaped() {
        assert_eq!(NOT_FOUND.line("lsfbvol", &["FB Volume"]), "CMUC00234I lsfbvol: No FB Volume found.");
        assert_eq!(
            success("mkfbvol").line("mkfbvol", &["1000"]),
            "CMUC00025I mkfbvol: FB volume 1000 successfully created."
        );
        let err = flashtrack::Error::new(ErrorKind::VolumeExists, "1000", "x");
        assert_eq!(
            engine_line("mkfbvol", &err),
            ("CMUN90017E mkfbvol: 1000: The volume already exists.".to_string(), exit::SERVER)
        );
        let err = flashtrack::Error::new(ErrorKind::Io, "1000", "EIO");
        assert_eq!(engine_line("lsfbvol", &err).0, "CMUN90030E lsfbvol: 1000: I/O error (EIO).");
        for a in ACTIONS {
            assert!(a.1.id.ends_with('I'));
            assert!(a.2.is_none_or(|c| c.id.ends_with('W')));
        }
    }
}
