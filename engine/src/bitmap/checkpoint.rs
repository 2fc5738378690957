//! Bitmap checkpoints: a set of [`TrackBitmap`]s (say, a relationship's target and two
//! change-recording bitmaps) written off the I/O path with a generation number.
//!
//! File `<name>.<generation as 16 hex digits>.ckpt`: a 32-byte header (magic, format version,
//! crc32c, generation, bitmap count), one u64 length per bitmap, then the portable roaring
//! payloads. The crc32c covers everything after the crc field. [`store`] writes a temp file,
//! fsyncs it, renames it into place and fsyncs the directory; only then is the generation
//! before the previous one removed. So a crash at any point leaves the previous generation
//! loadable, and [`load`] returns the newest complete one.
//!
//! A newest file that fails validation is reported (`Corrupt`), not skipped: once a
//! checkpoint is durable the journal forgets what it covers, so silently loading the older
//! generation would lose changes. The older file stays for an operator
//! ([`load_generation`]).

use super::{Error, ErrorKind, Result, TrackBitmap, fail_point, sync_dir};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// On-disk format version of checkpoints.
pub const CHECKPOINT_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"FTCKPT\0\0";
const FIXED: usize = 32;
/// Refuse absurd counts before allocating for them.
const MAX_BITMAPS: u32 = 1 << 16;

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub generation: u64,
    pub bitmaps: Vec<TrackBitmap>,
}

/// Path of generation `generation` of checkpoint `name` in `dir`.
pub fn path(dir: &Path, name: &str, generation: u64) -> PathBuf {
    dir.join(format!("{name}.{generation:016x}.ckpt"))
}

/// Durably store `bitmaps` as generation `generation` of `name`. Generations must increase:
/// storing one not above the newest on disk is refused. Keeps the previous generation and
/// removes older ones once the new file is durable.
pub fn store(dir: &Path, name: &str, generation: u64, bitmaps: &[TrackBitmap]) -> Result<()> {
    let gens = generations(dir, name)?;
    if let Some(&newest) = gens.last()
        && generation <= newest
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            path(dir, name, generation).display(),
            format!("checkpoint generation {generation} is not above the stored {newest}"),
        ));
    }
    let payloads: Vec<Vec<u8>> = bitmaps.iter().map(TrackBitmap::to_bytes).collect();
    let mut body = Vec::with_capacity(FIXED + payloads.iter().map(|p| p.len() + 8).sum::<usize>());
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    body.extend_from_slice(&[0; 4]); // crc, filled below
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&(bitmaps.len() as u32).to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    for p in &payloads {
        body.extend_from_slice(&(p.len() as u64).to_le_bytes());
    }
    for p in &payloads {
        body.extend_from_slice(p);
    }
    let crc = crc32c::crc32c(&body[16..]);
    body[12..16].copy_from_slice(&crc.to_le_bytes());

    let target = path(dir, name, generation);
    let tmp = target.with_extension("ckpt.tmp");
    let io = |e: std::io::Error| Error::io(tmp.display(), &e);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fail_point("checkpoint-before-rename")?;
    fs::rename(&tmp, &target).map_err(io)?;
    sync_dir(dir)?;
    fail_point("checkpoint-before-prune")?;
    // Older than the previous generation: no longer needed by anyone.
    for &g in gens.iter().rev().skip(1) {
        let old = path(dir, name, g);
        fs::remove_file(&old).map_err(|e| Error::io(old.display(), &e))?;
    }
    Ok(())
}

/// The newest generation of `name`, or None if there is none. A damaged newest file is an
/// error (see the module docs), never an empty or older result.
pub fn load(dir: &Path, name: &str) -> Result<Option<Checkpoint>> {
    let gens = generations(dir, name)?;
    let Some(&newest) = gens.last() else {
        return Ok(None);
    };
    load_generation(dir, name, newest).map(Some).map_err(|mut e| {
        if let Some(&prev) = gens.iter().rev().nth(1) {
            e.detail.push_str(&format!(
                " (generation {prev} is still stored; it is not used automatically because changes recorded after it would be lost)"
            ));
        }
        e
    })
}

/// Load one generation, validating everything.
pub fn load_generation(dir: &Path, name: &str, generation: u64) -> Result<Checkpoint> {
    let p = path(dir, name, generation);
    let data = fs::read(&p).map_err(|e| Error::io(p.display(), &e))?;
    let corrupt = |why: &str| Error::new(ErrorKind::Corrupt, p.display(), why.to_string());
    if data.len() < FIXED || data[..8] != MAGIC {
        return Err(corrupt("not a flashtrack checkpoint"));
    }
    let u32_at = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
    let version = u32_at(8);
    if version != CHECKPOINT_VERSION {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            p.display(),
            format!("checkpoint format {version}, this build reads format {CHECKPOINT_VERSION}"),
        ));
    }
    if crc32c::crc32c(&data[16..]) != u32_at(12) {
        return Err(corrupt("checksum mismatch"));
    }
    if u64_at(16) != generation {
        return Err(corrupt("generation in the header differs from the file name"));
    }
    let count = u32_at(24);
    let table_end = FIXED + count as usize * 8;
    if count > MAX_BITMAPS || data.len() < table_end {
        return Err(corrupt("bad bitmap count"));
    }
    let mut bitmaps = Vec::with_capacity(count as usize);
    let mut at = table_end;
    for i in 0..count as usize {
        let len = u64_at(FIXED + i * 8);
        let end = usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(corrupt("bitmap length past the end of the file"));
        };
        bitmaps.push(TrackBitmap::from_bytes(&data[at..end]).map_err(|e| corrupt(&format!("bitmap {i}: {e}")))?);
        at = end;
    }
    if at != data.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Checkpoint { generation, bitmaps })
}

/// Stored generations of `name`, ascending (temp files are not generations).
pub fn generations(dir: &Path, name: &str) -> Result<Vec<u64>> {
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir.display(), &e))? {
        let entry = entry.map_err(|e| Error::io(dir.display(), &e))?;
        let file = entry.file_name();
        let Some(mid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|f| f.strip_suffix(".ckpt"))
        else {
            continue;
        };
        if mid.len() == 16
            && let Ok(g) = u64::from_str_radix(mid, 16)
        {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Remove every generation and temp file of `name` (a withdrawn relationship).
pub fn remove_all(dir: &Path, name: &str) -> Result<()> {
    for g in generations(dir, name)? {
        let p = path(dir, name, g);
        fs::remove_file(&p).map_err(|e| Error::io(p.display(), &e))?;
        let _ = fs::remove_file(p.with_extension("ckpt.tmp"));
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::arm_fail_point;

    fn sample(seed: u32) -> Vec<TrackBitmap> {
        let mut a = TrackBitmap::full(5000);
        a.remove_range(seed..seed + 100);
        let mut b = TrackBitmap::new();
        b.insert_range(seed * 3..seed * 3 + 7);
        vec![a, b, TrackBitmap::new()]
    }

    #[test]
    fn round_trip_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap(), None);
        for g in 1..=4 {
            store(dir.path(), "rel", g, &sample(g as u32)).unwrap();
        }
        let c = load(dir.path(), "rel").unwrap().unwrap();
        assert_eq!(c, Checkpoint { generation: 4, bitmaps: sample(4) });
        // The previous generation is kept, older ones are gone.
        assert_eq!(generations(dir.path(), "rel").unwrap(), vec![3, 4]);
        assert_eq!(load_generation(dir.path(), "rel", 3).unwrap().bitmaps, sample(3));
        // Another name in the same directory is separate.
        store(dir.path(), "rel.b", 1, &[]).unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap().unwrap().generation, 4);
        assert_eq!(load(dir.path(), "rel.b").unwrap().unwrap().bitmaps, vec![]);
        assert_eq!(store(dir.path(), "rel", 4, &[]).unwrap_err().kind, ErrorKind::InvalidArgument);
        remove_all(dir.path(), "rel").unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap(), None);
    }

    #[test]
    fn crash_before_rename_loads_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "rel", 1, &sample(1)).unwrap();
        arm_fail_point("checkpoint-before-rename");
        assert!(store(dir.path(), "rel", 2, &sample(2)).is_err());
        assert!(path(dir.path(), "rel", 2).with_extension("ckpt.tmp").exists());
        assert_eq!(load(dir.path(), "rel").unwrap().unwrap(), Checkpoint { generation: 1, bitmaps: sample(1) });
        // The next store goes through, over the leftover temp file.
        store(dir.path(), "rel", 2, &sample(2)).unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap().unwrap().generation, 2);
        // A crash after the rename but before pruning leaves more files, all valid.
        arm_fail_point("checkpoint-before-prune");
        assert!(store(dir.path(), "rel", 3, &sample(3)).is_err());
        assert_eq!(load(dir.path(), "rel").unwrap().unwrap().generation, 3);
    }

    #[test]
    fn corrupt_newest_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "rel", 1, &sample(1)).unwrap();
        store(dir.path(), "rel", 2, &sample(2)).unwrap();
        let p = path(dir.path(), "rel", 2);
        let good = fs::read(&p).unwrap();
        for damage in [
            |d: &mut Vec<u8>| d[40] ^= 1,
            |d: &mut Vec<u8>| d.truncate(d.len() - 3),
            |d: &mut Vec<u8>| d.truncate(10),
            |d: &mut Vec<u8>| d.clear(),
        ] {
            let mut d = good.clone();
            damage(&mut d);
            fs::write(&p, &d).unwrap();
            let err = load(dir.path(), "rel").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
            assert!(err.detail.contains("generation 1 is still stored"), "{err}");
        }
        let mut d = good.clone();
        d[8] = 9;
        fs::write(&p, &d).unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap_err().kind, ErrorKind::VersionMismatch);
        // A file renamed to another generation is caught too.
        fs::write(&p, &good).unwrap();
        fs::rename(&p, path(dir.path(), "rel", 7)).unwrap();
        assert_eq!(load(dir.path(), "rel").unwrap_err().kind, ErrorKind::Corrupt);
    }
}
