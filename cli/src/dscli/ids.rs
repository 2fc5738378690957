//! DS CLI object IDs as typed on the command line: short (`1000`, 1-4 hex digits, normalised
//! to 4 upper-case digits) or fully qualified (`IBM.2107-75FA120/1000`), inclusive ranges
//! (`1000-100F`, both ends of the same form), LSS IDs (`10`, `10-1F`), pools (`P1`) and
//! FlashCopy pairs (`0100:0200`, either side fully qualified, ranges `0100-0103:0200-0203`
//! matched positionally).
//! The machine type's LSS range is checked later, once the image is known.

use flashtrack::id::{HostId, ImageId, LssId, PoolId, VolGrpId, VolumeId};

/// An ID and the image it named, if fully qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoped<T> {
    pub image: Option<ImageId>,
    pub id: T,
}

/// The token that is not a valid ID, and what kind of ID was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub token: String,
    pub what: &'static str,
}

fn hex(s: &str, max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A storage image ID.
pub fn image(token: &str) -> Result<ImageId, IdError> {
    token.parse().map_err(|_| IdError { token: token.to_string(), what: "storage image" })
}

/// One ID without range: optional `IMAGE/` prefix, then `local`.
fn single<T>(token: &str, local: impl Fn(&str) -> Option<T>) -> Option<Scoped<T>> {
    match token.rsplit_once('/') {
        Some((img, rest)) => Some(Scoped { image: Some(img.parse().ok()?), id: local(rest)? }),
        None => Some(Scoped { image: None, id: local(token)? }),
    }
}

/// Expands tokens with hex ranges. `digits` = max digits of the local part.
fn expand(tokens: &[String], digits: usize, what: &'static str) -> Result<Vec<Scoped<u32>>, IdError> {
    let err = |t: &str| IdError { token: t.to_string(), what };
    let local = |s: &str| hex(s, digits);
    let mut out = Vec::new();
    for t in tokens {
        if let Some(one) = single(t, local) {
            out.push(one);
            continue;
        }
        // A range: some `-` splits it into two IDs of the same form (image IDs contain `-`
        // too, so try every position).
        let mut found = None;
        for (i, _) in t.match_indices('-') {
            let (a, b) = (&t[..i], &t[i + 1..]);
            let Some(lo) = single(a, local) else { continue };
            // `IBM.2107-75FA120/1000-100F`: the end may omit the image.
            let hi = single(b, local).map(|mut h| {
                if h.image.is_none() && lo.image.is_some() && !b.contains('/') {
                    h.image = lo.image.clone();
                }
                h
            });
            let Some(hi) = hi else { continue };
            if lo.image != hi.image || hi.id < lo.id {
                return Err(err(t));
            }
            found = Some((lo, hi));
            break;
        }
        let (lo, hi) = found.ok_or_else(|| err(t))?;
        out.extend((lo.id..=hi.id).map(|id| Scoped { image: lo.image.clone(), id }));
    }
    Ok(out)
}

/// Volume IDs, lists and ranges.
pub fn volumes(tokens: &[String]) -> Result<Vec<Scoped<VolumeId>>, IdError> {
    Ok(expand(tokens, 4, "volume")?.into_iter().map(|s| Scoped { image: s.image, id: VolumeId(s.id as u16) }).collect())
}

/// LSS or LCU IDs, lists and ranges.
pub fn lss(tokens: &[String], what: &'static str) -> Result<Vec<Scoped<LssId>>, IdError> {
    Ok(expand(tokens, 2, what)?.into_iter().map(|s| Scoped { image: s.image, id: LssId(s.id as u8) }).collect())
}

/// Extent pool IDs (`P1`, `IBM.2107-75FA120/P1`).
pub fn pools(tokens: &[String]) -> Result<Vec<Scoped<PoolId>>, IdError> {
    tokens
        .iter()
        .map(|t| single(t, |s| s.parse::<PoolId>().ok()).ok_or(IdError { token: t.clone(), what: "extent pool" }))
        .collect()
}

/// Volume group IDs (`V0`, `IBM.2107-75FA120/V0`).
pub fn volgrps(tokens: &[String]) -> Result<Vec<Scoped<VolGrpId>>, IdError> {
    tokens
        .iter()
        .map(|t| single(t, |s| s.parse::<VolGrpId>().ok()).ok_or(IdError { token: t.clone(), what: "volume group" }))
        .collect()
}

/// I/O port IDs (`I0000`: `I` and 4 hex digits), upper-cased.
pub fn ioports<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, IdError> {
    tokens
        .into_iter()
        .map(|p| {
            let ok = p.len() == 5 && p.starts_with(['I', 'i']) && p[1..].chars().all(|c| c.is_ascii_hexdigit());
            if ok { Ok(p.to_ascii_uppercase()) } else { Err(IdError { token: p.to_string(), what: "I/O port" }) }
        })
        .collect()
}

/// Host connection IDs: 1-4 hex digits, lists and ranges, like volume IDs.
pub fn hosts(tokens: &[String]) -> Result<Vec<Scoped<HostId>>, IdError> {
    Ok(expand(tokens, 4, "host connection")?
        .into_iter()
        .map(|s| Scoped { image: s.image, id: HostId(s.id as u16) })
        .collect())
}

/// A comma-separated volume list with ranges (`-volume 1000-100F,1100`).
pub fn volume_list(value: &str) -> Result<Vec<Scoped<VolumeId>>, IdError> {
    let parts: Vec<String> = value.split(',').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(IdError { token: value.to_string(), what: "volume" });
    }
    volumes(&parts)
}

/// `IdError::what` of a pair whose two ranges differ in length (its own message).
pub const RANGE_LENGTHS: &str = "FlashCopy pair range";

/// A source:target pair, each side with the image it named (if fully qualified).
pub type Pair = (Scoped<VolumeId>, Scoped<VolumeId>);

/// FlashCopy pair IDs: `SRC:TGT`, each side a volume ID or a range; two ranges must be
/// equally long and are paired in order (`0100-0101:0200-0201` = `0100:0200`, `0101:0201`).
pub fn pairs(tokens: &[String]) -> Result<Vec<Pair>, IdError> {
    pairs_of(tokens, "FlashCopy pair")
}

/// PPRC pair IDs: the same forms as [`pairs`]; a malformed one is named as a Remote Mirror
/// and Copy pair.
pub fn pprc_pairs(tokens: &[String]) -> Result<Vec<Pair>, IdError> {
    pairs_of(tokens, "Remote Mirror and Copy pair")
}

fn pairs_of(tokens: &[String], what: &'static str) -> Result<Vec<Pair>, IdError> {
    let mut out = Vec::new();
    for t in tokens {
        let err = || IdError { token: t.clone(), what };
        let (a, b) = t.split_once(':').ok_or_else(err)?;
        if b.contains(':') {
            return Err(err());
        }
        let src = volumes(&[a.to_string()]).map_err(|_| err())?;
        let tgt = volumes(&[b.to_string()]).map_err(|_| err())?;
        if src.len() != tgt.len() {
            return Err(IdError { token: t.clone(), what: RANGE_LENGTHS });
        }
        out.extend(src.into_iter().zip(tgt));
    }
    Ok(out)
}

/// `lsflash` selection: pairs (with `:`) and volume IDs or ranges, kept apart.
pub fn pairs_or_volumes(tokens: &[String]) -> Result<(Vec<Pair>, Vec<Scoped<VolumeId>>), IdError> {
    let (p, v): (Vec<String>, Vec<String>) = tokens.iter().cloned().partition(|t| t.contains(':'));
    Ok((pairs(&p)?, volumes(&v)?))
}

/// The one image the IDs name, if any; an error names two different ones.
pub fn common_image<T>(ids: &[Scoped<T>]) -> Result<Option<ImageId>, (ImageId, ImageId)> {
    let mut found: Option<&ImageId> = None;
    for img in ids.iter().filter_map(|s| s.image.as_ref()) {
        match found {
            Some(f) if f != img => return Err((f.clone(), img.clone())),
            _ => found = Some(img),
        }
    }
    Ok(found.cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(tokens: &[&str]) -> Result<Vec<String>, IdError> {
        let t: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
        volumes(&t).map(|v| {
            v.iter()
                .map(|s| match &s.image {
                    Some(i) => format!("{i}/{}", s.id),
                    None => s.id.to_string(),
                })
                .collect()
        })
    }

    #[test]
    fn short_ids_normalise() {
        assert_eq!(v(&["1000", "a", "1a5", "ffFF"]).unwrap(), ["1000", "000A", "01A5", "FFFF"]);
    }

    #[test]
    fn ranges_are_inclusive_and_cross_lss() {
        assert_eq!(v(&["1000-1002"]).unwrap(), ["1000", "1001", "1002"]);
        assert_eq!(v(&["10FF-1101"]).unwrap(), ["10FF", "1100", "1101"]);
        assert_eq!(v(&["5-5"]).unwrap(), ["0005"]);
    }

    #[test]
    fn fully_qualified() {
        assert_eq!(v(&["IBM.2107-75fa120/1000"]).unwrap(), ["IBM.2107-75FA120/1000"]);
        assert_eq!(v(&["IBM.2107-75FA120/1000-1001"]).unwrap(), ["IBM.2107-75FA120/1000", "IBM.2107-75FA120/1001"]);
        assert_eq!(v(&["IBM.2107-75FA120/1000-IBM.2107-75FA120/1001"]).unwrap().len(), 2);
    }

    #[test]
    fn malformed() {
        for bad in [
            "10000",
            "G000",
            "",
            "1000-",
            "-1000",
            "1002-1000",
            "1000-IBM.2107-75FA120/1001",
            "IBM.2105-75FA120/1000",
            "1000--1001",
            "1 000",
        ] {
            let err = v(&[bad]).unwrap_err();
            assert_eq!(err.token, bad);
            assert_eq!(err.what, "volume");
        }
    }

    #[test]
    fn lss_and_pools() {
        let t = vec!["10-12".to_string(), "a".to_string()];
        let l: Vec<String> = lss(&t, "LSS").unwrap().iter().map(|s| s.id.to_string()).collect();
        assert_eq!(l, ["10", "11", "12", "0A"]);
        assert!(lss(&["100".to_string()], "LSS").is_err());
        let p = pools(&["P1".to_string(), "IBM.2107-75FA120/p12".to_string()]).unwrap();
        assert_eq!(p[1].id, PoolId(12));
        assert!(p[1].image.is_some());
        assert!(pools(&["X1".to_string()]).is_err());
    }

    fn pr(tokens: &[&str]) -> Result<Vec<String>, IdError> {
        let t: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
        pairs(&t).map(|v| {
            v.iter()
                .map(|(a, b)| {
                    let side = |s: &Scoped<VolumeId>| match &s.image {
                        Some(i) => format!("{i}/{}", s.id),
                        None => s.id.to_string(),
                    };
                    format!("{}:{}", side(a), side(b))
                })
                .collect()
        })
    }

    #[test]
    fn flash_pairs() {
        assert_eq!(pr(&["100:200", "a:B"]).unwrap(), ["0100:0200", "000A:000B"]);
        assert_eq!(pr(&["0100-0102:0200-0202"]).unwrap(), ["0100:0200", "0101:0201", "0102:0202"]);
        assert_eq!(
            pr(&["IBM.2107-75FA120/0100:0200"]).unwrap(),
            ["IBM.2107-75FA120/0100:0200"],
            "either side may be fully qualified"
        );
        assert_eq!(pr(&["0100:IBM.2107-75FA120/0200-0201"]).unwrap_err().what, RANGE_LENGTHS);
        for bad in ["0100", "0100:", ":0200", "0100:0200:0300", "0100:G200", "0100-0101:0200"] {
            assert_eq!(pr(&[bad]).unwrap_err().token, bad);
        }
        let t: Vec<String> = ["0100:0200", "0300-0301", "0400"].iter().map(|s| s.to_string()).collect();
        let (p, v) = pairs_or_volumes(&t).unwrap();
        assert_eq!((p.len(), v.len()), (1, 3));
    }

    #[test]
    fn one_image_only() {
        let t: Vec<String> = ["IBM.2107-75FA120/1000", "1001"].iter().map(|s| s.to_string()).collect();
        assert_eq!(common_image(&volumes(&t).unwrap()).unwrap().unwrap().to_string(), "IBM.2107-75FA120");
        let t: Vec<String> = ["IBM.2107-75FA120/1000", "IBM.2107-75FA150/1000"].iter().map(|s| s.to_string()).collect();
        assert!(common_image(&volumes(&t).unwrap()).is_err());
    }
}
