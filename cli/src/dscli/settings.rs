//! Output and context settings, layered. Precedence (highest first): command flag > `setenv`
//! in the session > option before the verb on the dscli line > profile > built-in default.

use super::verb::Invocation;
use flashtrack::id::ImageId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Default,
    Delim,
    Stanza,
    Xml,
    /// Extension: an array of objects.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.to_ascii_lowercase().as_str() {
            "default" => Format::Default,
            "delim" => Format::Delim,
            "stanza" => Format::Stanza,
            "xml" => Format::Xml,
            "json" => Format::Json,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Default => "default",
            Format::Delim => "delim",
            Format::Stanza => "stanza",
            Format::Xml => "xml",
            Format::Json => "json",
        }
    }
}

/// One layer: each setting it fixes, or None to defer to the layer below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub format: Option<Format>,
    pub delim: Option<char>,
    pub header: Option<bool>,
    pub banner: Option<bool>,
    pub verbose: Option<bool>,
    pub paging: Option<bool>,
    pub rows: Option<u8>,
    pub fullid: Option<bool>,
    pub devid: Option<ImageId>,
    pub remotedevid: Option<ImageId>,
}

/// Settings after layering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub format: Format,
    pub delim: char,
    pub header: bool,
    pub banner: bool,
    pub verbose: bool,
    pub paging: bool,
    pub rows: u8,
    pub fullid: bool,
    pub devid: Option<ImageId>,
    pub remotedevid: Option<ImageId>,
}

pub fn on_off(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

impl Layer {
    /// `self` wins where it has a value.
    pub fn over(&self, below: &Layer) -> Layer {
        Layer {
            format: self.format.or(below.format),
            delim: self.delim.or(below.delim),
            header: self.header.or(below.header),
            banner: self.banner.or(below.banner),
            verbose: self.verbose.or(below.verbose),
            paging: self.paging.or(below.paging),
            rows: self.rows.or(below.rows),
            fullid: self.fullid.or(below.fullid),
            devid: self.devid.clone().or_else(|| below.devid.clone()),
            remotedevid: self.remotedevid.clone().or_else(|| below.remotedevid.clone()),
        }
    }

    /// The output flags of a command (values already checked by the verb parser).
    pub fn from_flags(inv: &Invocation) -> Layer {
        Layer {
            format: inv.flag("-fmt").and_then(Format::parse),
            delim: inv.flag("-delim").and_then(|d| d.chars().next()),
            header: inv.flag("-hdr").and_then(on_off),
            banner: inv.flag("-bnr").and_then(on_off),
            verbose: inv.flag("-v").and_then(on_off),
            paging: inv.flag("-p").and_then(on_off),
            rows: inv.flag("-r").and_then(|r| r.parse().ok()),
            fullid: inv.has("-fullid").then_some(true),
            devid: inv.flag("-dev").and_then(|d| d.parse().ok()),
            remotedevid: None,
        }
    }

    /// `setenv` flags.
    pub fn from_setenv(inv: &Invocation) -> Layer {
        Layer {
            format: inv.flag("-format").and_then(Format::parse),
            delim: inv.flag("-delim").and_then(|d| d.chars().next()),
            header: inv.flag("-header").and_then(on_off),
            banner: inv.flag("-banner").and_then(on_off),
            verbose: inv.flag("-verbose").and_then(on_off),
            paging: inv.flag("-paging").and_then(on_off),
            rows: inv.flag("-rows").and_then(|r| r.parse().ok()),
            fullid: inv.flag("-fullid").and_then(on_off),
            devid: inv.flag("-dev").and_then(|d| d.parse().ok()),
            remotedevid: inv.flag("-remotedev").and_then(|d| d.parse().ok()),
        }
    }

    pub fn resolve(&self) -> Effective {
        Effective {
            format: self.format.unwrap_or(Format::Default),
            delim: self.delim.unwrap_or(','),
            header: self.header.unwrap_or(true),
            banner: self.banner.unwrap_or(true),
            verbose: self.verbose.unwrap_or(false),
            paging: self.paging.unwrap_or(false),
            rows: self.rows.unwrap_or(24),
            fullid: self.fullid.unwrap_or(false),
            devid: self.devid.clone(),
            remotedevid: self.remotedevid.clone(),
        }
    }
}

/// The session's layers below the command's own flags.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub profile: Layer,
    pub global: Layer,
    pub setenv: Layer,
}

impl Settings {
    /// Settings for one command.
    pub fn effective(&self, inv: Option<&Invocation>) -> Effective {
        let cmd = inv.map(Layer::from_flags).unwrap_or_default();
        cmd.over(&self.setenv.over(&self.global.over(&self.profile))).resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dscli::verb;

    fn inv(line: &str) -> Invocation {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        verb::parse(verb::find(&words[0]).unwrap(), &words[1..], false).unwrap()
    }

    #[test]
    fn defaults() {
        let e = Settings::default().effective(None);
        assert_eq!((e.format, e.delim, e.header, e.banner, e.rows), (Format::Default, ',', true, true, 24));
    }

    #[test]
    fn precedence_command_setenv_global_profile() {
        let profile = Layer {
            format: Some(Format::Xml),
            delim: Some(';'),
            banner: Some(false),
            header: Some(false),
            ..Layer::default()
        };
        let mut s = Settings { profile, ..Settings::default() };
        assert_eq!(s.effective(None).format, Format::Xml);
        s.global = Layer { format: Some(Format::Stanza), delim: Some(':'), ..Layer::default() };
        assert_eq!(s.effective(None).format, Format::Stanza);
        s.setenv = Layer::from_setenv(&inv("setenv -format delim -banner on"));
        let e = s.effective(None);
        assert_eq!((e.format, e.delim, e.banner, e.header), (Format::Delim, ':', true, false));
        let e = s.effective(Some(&inv("lsfbvol -fmt default -delim | -hdr on")));
        assert_eq!((e.format, e.delim, e.banner, e.header), (Format::Default, '|', true, true));
    }

    #[test]
    fn dev_precedence() {
        let profile = Layer { devid: "IBM.2107-75FA120".parse().ok(), ..Layer::default() };
        let setenv = Layer::from_setenv(&inv("setenv -dev IBM.1750-68FA120"));
        let s = Settings { profile, setenv, ..Settings::default() };
        assert_eq!(s.effective(None).devid.unwrap().to_string(), "IBM.1750-68FA120");
        let e = s.effective(Some(&inv("lsfbvol -dev IBM.2107-75FA150")));
        assert_eq!(e.devid.unwrap().to_string(), "IBM.2107-75FA150");
    }
}
