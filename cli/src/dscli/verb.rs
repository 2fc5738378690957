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

pub(super) const fn f(name: &'static str, kind: Kind) -> Flag {
    Flag { name, kind, required: false }
}
pub(super) const fn req(name: &'static str, kind: Kind) -> Flag {
    Flag { name, kind, required: true }
}
pub(super) const B: Kind = Kind::Bool;
pub(super) const ON_OFF: Kind = Kind::Enum(&["on", "off"]);
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

pub(super) const SL: [Flag; 2] = [f("-s", B), f("-l", B)];

pub(super) const PAIRS_HELP: &str = "source_volume_ID:target_volume_ID ... | range:range | -";

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
pub(super) const CONDUIT: Flag = req("-conduit", Kind::Value("LSS_ID"));
pub(super) const SRCSS: Flag = f("-srcss", Kind::Value("SS_ID"));
pub(super) const SEQNUM: Flag = f("-seqnum", Kind::Value("flash_sequence_num"));

/// PPRC pair verbs: `-type`, `-at`, subsystem IDs.
pub(super) const PPRC_TYPE: Kind = Kind::Enum(&["mmir", "gcp"]);
pub(super) const PPRC_AT: Kind = Kind::Enum(&["src", "tgt"]);
pub(super) const SSID: Kind = Kind::Value("ss_ID");
pub(super) const REMOTEDEV: Flag = f("-remotedev", Kind::Value("storage_image_ID"));
pub(super) const PPRC_PAIRS_HELP: &str = "source_volume_ID:target_volume_ID ... | range:range | -";

/// `mkvolgrp -type` values [R].
pub const VOLGRP_TYPES: &[&str] = &["scsimask", "scsimap256", "os400mask", "os400map256"];

/// `-hosttype` values, lower-case (the cli's host type table shows them in IBM's case).
pub const HOST_TYPES: &[&str] =
    &["pseries", "iseries", "vmware", "win2008", "win2012", "linuxrhel", "linuxsuse", "zlinux", "sun", "hpux"];

/// The verb table, in `help` order, in groups (`verbs_storage.rs`, `verbs_copy.rs`).
static GROUPS: &[&[Verb]] = &[
    super::verbs_storage::STORAGE,
    super::verbs_copy::COPY,
    super::verbs_storage::HOSTS,
    super::verbs_copy::MIRROR,
    super::verbs_storage::ENV,
    super::verbs_copy::LINK,
];

/// Every verb dscli knows, in `help` order.
pub fn verbs() -> impl Iterator<Item = &'static Verb> {
    GROUPS.iter().flat_map(|g| g.iter())
}

pub fn find(name: &str) -> Option<&'static Verb> {
    verbs().find(|v| v.name == name)
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
