//! Crash-safe catalog of one storage image.
//!
//! File `catalog` in the image directory: a header line
//! `flashtrack-catalog <version> <crc32c hex> <body length>` and a JSON body.
//! Writes go to `catalog.tmp`, are fsynced, renamed over `catalog`, and the directory is
//! fsynced, so a crash leaves either the old or the new catalog, never a mix. A catalog
//! that fails its checksum or has another version is reported, never reset: the user's data
//! may depend on it.

use crate::error::{Error, ErrorKind, Result};
use crate::image::record::ImageRecord;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

/// On-disk format version of the catalog.
pub const CATALOG_VERSION: u32 = 1;
/// File name of the catalog inside an image directory.
pub const CATALOG_FILE: &str = "catalog";
const MAGIC: &str = "flashtrack-catalog";

/// Serialize `record` and make it the image's catalog, durably.
pub fn store(dir: &Path, record: &ImageRecord) -> Result<()> {
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::new(ErrorKind::Io, &record.id, format!("cannot encode catalog: {e}")))?;
    let header = format!("{MAGIC} {CATALOG_VERSION} {:08x} {}\n", crc32c::crc32c(&body), body.len());
    let tmp = dir.join("catalog.tmp");
    let io = |e: std::io::Error| Error::io(tmp.display(), &e);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
        f.write_all(header.as_bytes()).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    crate::bitmap::fail_point("catalog-before-rename")?;
    fs::rename(&tmp, dir.join(CATALOG_FILE)).map_err(io)?;
    sync_dir(dir)
}

/// Load and validate an image's catalog.
pub fn load(dir: &Path) -> Result<ImageRecord> {
    let path = dir.join(CATALOG_FILE);
    let data = fs::read(&path).map_err(|e| Error::io(path.display(), &e))?;
    let corrupt = |why: &str| Error::new(ErrorKind::Corrupt, path.display(), why.to_string());
    let nl = data.iter().position(|&b| b == b'\n').ok_or_else(|| corrupt("no header line"))?;
    let header = std::str::from_utf8(&data[..nl]).map_err(|_| corrupt("header is not text"))?;
    let fields: Vec<&str> = header.split(' ').collect();
    if fields.len() != 4 || fields[0] != MAGIC {
        return Err(corrupt("not a flashtrack catalog"));
    }
    let version: u32 = fields[1].parse().map_err(|_| corrupt("bad version field"))?;
    if version != CATALOG_VERSION {
        return Err(Error::new(
            ErrorKind::VersionMismatch,
            path.display(),
            format!("catalog format {version}, this build reads format {CATALOG_VERSION}"),
        ));
    }
    let crc = u32::from_str_radix(fields[2], 16).map_err(|_| corrupt("bad checksum field"))?;
    let len: usize = fields[3].parse().map_err(|_| corrupt("bad length field"))?;
    let body = &data[nl + 1..];
    if body.len() != len {
        return Err(corrupt("truncated body"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(&format!("undecodable body: {e}")))
}

/// fsync a directory so a rename or create in it is durable (one implementation, in bitmap).
pub(crate) use crate::bitmap::sync_dir;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record() -> ImageRecord {
        ImageRecord {
            id: "IBM.2107-75FA120".parse().unwrap(),
            name: "test".into(),
            created: 1,
            pools: BTreeMap::new(),
            lcus: BTreeMap::new(),
            volumes: BTreeMap::new(),
            flash: Vec::new(),
            volgrps: BTreeMap::new(),
            hosts: BTreeMap::new(),
            pprc_paths: Vec::new(),
            pprc_pairs: Vec::new(),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &record()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), record());
        assert!(!dir.path().join("catalog.tmp").exists());
    }

    #[test]
    fn damage_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &record()).unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let mut data = fs::read(&path).unwrap();
        let n = data.len();
        data[n - 3] ^= 0x20;
        fs::write(&path, &data).unwrap();
        assert_eq!(load(dir.path()).unwrap_err().kind, ErrorKind::Corrupt);
        // The damaged file is left as it was for the user.
        assert_eq!(fs::read(&path).unwrap(), data);
        fs::write(&path, &data[..n - 10]).unwrap();
        assert_eq!(load(dir.path()).unwrap_err().kind, ErrorKind::Corrupt);
    }

    #[test]
    fn other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &record()).unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let text = fs::read_to_string(&path).unwrap().replacen("flashtrack-catalog 1 ", "flashtrack-catalog 9 ", 1);
        fs::write(&path, text).unwrap();
        assert_eq!(load(dir.path()).unwrap_err().kind, ErrorKind::VersionMismatch);
    }
}
