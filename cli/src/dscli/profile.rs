//! The DS CLI profile: `key: value` lines, `#` comments, unknown keys ignored (DS CLI
//! profiles carry many we do not use). A malformed line is an application error (exit 6).
//! Location: `-cfg FILE`, else `$FLASHTRACK_DSCLI_PROFILE`, else
//! `~/.dscli/profile/dscli.profile` if it exists.

use super::settings::{Format, Layer, on_off};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub layer: Layer,
    pub hmc1: Option<String>,
}

/// A malformed line: its number (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    pub line: usize,
    pub reason: String,
}

/// The profile to read when no `-cfg` is given, if any.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLASHTRACK_DSCLI_PROFILE") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".dscli/profile/dscli.profile");
    p.exists().then_some(p)
}

pub fn parse(text: &str) -> Result<Profile, ProfileError> {
    let mut p = Profile::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| ProfileError { line: n + 1, reason };
        let Some((key, value)) = line.split_once(':') else {
            return Err(bad("expected key: value".into()));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        let onoff = || on_off(value).ok_or_else(|| bad(format!("{key} must be on or off, not {value}")));
        let image = || value.parse().map(Some).map_err(|_| bad(format!("{key}: {value} is not a storage image ID")));
        match key.as_str() {
            "devid" => p.layer.devid = image()?,
            "remotedevid" => p.layer.remotedevid = image()?,
            "hmc1" => p.hmc1 = Some(value.to_string()),
            "format" => {
                p.layer.format = Some(Format::parse(value).ok_or_else(|| bad(format!("unknown format {value}")))?)
            }
            "banner" => p.layer.banner = Some(onoff()?),
            "header" => p.layer.header = Some(onoff()?),
            "verbose" => p.layer.verbose = Some(onoff()?),
            "paging" => p.layer.paging = Some(onoff()?),
            "fullid" => p.layer.fullid = Some(onoff()?),
            "delim" => {
                let mut c = value.chars();
                match (c.next(), c.next()) {
                    (Some(d), None) => p.layer.delim = Some(d),
                    _ => return Err(bad(format!("delim must be one character, not {value}"))),
                }
            }
            "rows" => match value.parse::<u8>() {
                Ok(r @ 1..=100) => p.layer.rows = Some(r),
                _ => return Err(bad(format!("rows must be 1-100, not {value}"))),
            },
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_comments_unknowns() {
        let p = parse("# site profile\n\ndevid: IBM.2107-75FA120\nhmc1:unix:/tmp/x.sock\nformat: delim\ndelim: |\nbanner: off\nlocale: en\nrows: 40\n").unwrap();
        assert_eq!(p.layer.devid.unwrap().to_string(), "IBM.2107-75FA120");
        assert_eq!(p.hmc1.as_deref(), Some("unix:/tmp/x.sock"));
        assert_eq!(p.layer.format, Some(Format::Delim));
        assert_eq!(p.layer.delim, Some('|'));
        assert_eq!(p.layer.banner, Some(false));
        assert_eq!(p.layer.rows, Some(40));
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse("devid IBM.2107-75FA120").unwrap_err().line, 1);
        assert_eq!(parse("\nbanner: maybe").unwrap_err().line, 2);
        assert!(parse("devid: IBM.9999-1").is_err());
        assert!(parse("delim: ab").is_err());
        assert!(parse("format: yaml").is_err());
    }
}
