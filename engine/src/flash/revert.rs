//! Revertible relationships (`setflashrevertible`, `commitflash`, `revertflash`), as Global
//! Mirror uses them: while a relationship is revertible its source is write-inhibited, and
//! before any track of the target is overwritten for the first time, the target's own data
//! of that track (its pre-image) is saved durably. `revertflash` writes the pre-images back
//! and restores the bitmaps saved at `setflashrevertible`: the target is again the last
//! consistent point. `commitflash` keeps the new data and drops the pre-images.
//!
//! Tracks still borrowed from the source when the relationship became revertible need no
//! pre-image: the source cannot change while revertible, so restoring their bit restores
//! their content. Pre-images live in `<pair>.preimage` (append-only records of track number,
//! length, crc32c and data, each fsynced before the target overwrite it protects) with the
//! saved bitmaps in the checkpoint `<pair>.revert`; both survive a restart.

use super::relationship::Relationship;
use crate::bitmap::{TrackBitmap, checkpoint};
use crate::error::{Error, ErrorKind, Result};
use crate::geometry::{TRACK_BYTES, TrackNo};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

/// State kept while a relationship is revertible.
#[derive(Debug)]
pub struct RevertState {
    /// Bitmaps at `setflashrevertible`: target, source changes, target changes.
    pub saved: [TrackBitmap; 3],
    /// Offset of each saved pre-image in the file, by track.
    index: BTreeMap<u32, (u64, u32)>,
    file: File,
    path: PathBuf,
    end: u64,
}

const REC_HEADER: u64 = 12;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display(), &e)
}

impl RevertState {
    /// Start being revertible: save the bitmaps, open an empty pre-image file.
    pub fn begin(dir: &Path, name: &str, saved: [TrackBitmap; 3]) -> Result<RevertState> {
        checkpoint::store(dir, &format!("{name}.revert"), 1, &saved)?;
        let path = dir.join(format!("{name}.preimage"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        Ok(RevertState { saved, index: BTreeMap::new(), file, path, end: 0 })
    }

    /// Reopen after a restart: the saved bitmaps and every whole, checksummed pre-image (a
    /// torn last record is dropped: its overwrite never happened).
    pub fn open(dir: &Path, name: &str) -> Result<Option<RevertState>> {
        let Some(cp) = checkpoint::load(dir, &format!("{name}.revert"))? else { return Ok(None) };
        let [a, b, c]: [TrackBitmap; 3] = cp
            .bitmaps
            .try_into()
            .map_err(|_| Error::new(ErrorKind::Corrupt, name, "revert checkpoint holds the wrong number of bitmaps"))?;
        let path = dir.join(format!("{name}.preimage"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| io_err(&path, e))?;
        let mut index = BTreeMap::new();
        let mut at = 0usize;
        while at + REC_HEADER as usize <= data.len() {
            let t = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap_or_default());
            let body = at + REC_HEADER as usize;
            if body + len > data.len() || crc32c::crc32c(&data[body..body + len]) != crc {
                break;
            }
            index.insert(t, (body as u64, len as u32));
            at = body + len;
        }
        file.set_len(at as u64).map_err(|e| io_err(&path, e))?;
        Ok(Some(RevertState { saved: [a, b, c], index, file, path, end: at as u64 }))
    }

    /// Remove the files (commit, revert done, withdraw).
    pub fn remove(dir: &Path, name: &str) {
        let _ = std::fs::remove_file(dir.join(format!("{name}.preimage")));
        let _ = checkpoint::remove_all(dir, &format!("{name}.revert"));
    }

    pub fn saved_tracks(&self) -> usize {
        self.index.len()
    }

    fn append(&mut self, t: u32, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut rec = Vec::with_capacity(REC_HEADER as usize + data.len());
        rec.extend_from_slice(&t.to_le_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        rec.extend_from_slice(data);
        self.file.write_all_at(&rec, self.end).map_err(|e| io_err(&self.path, e))?;
        // The pre-image is durable before the overwrite it protects is submitted.
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        self.index.insert(t, (self.end + REC_HEADER, data.len() as u32));
        self.end += rec.len() as u64;
        Ok(())
    }

    fn read(&self, at: u64, len: u32) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, at).map_err(|e| io_err(&self.path, e))?;
        Ok(buf)
    }
}

impl Relationship {
    /// Before the target's tracks `r` are overwritten: save the pre-image of each track the
    /// target held on its own when the relationship became revertible. The caller holds the
    /// tracks' locks. A no-op unless revertible.
    pub fn preserve(&self, r: std::ops::Range<u32>) -> std::io::Result<()> {
        let mut guard = self.revert();
        let Some(rs) = guard.as_mut() else { return Ok(()) };
        let g = self.target.geometry();
        for t in r {
            if rs.index.contains_key(&t) || rs.saved[0].contains(TrackNo(t)) {
                continue;
            }
            let len = g.track_data_len(TrackNo(t)) as usize;
            let mut buf = vec![0u8; len];
            self.target.read(t as u64 * TRACK_BYTES, &mut buf)?;
            rs.append(t, &buf).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// Write every pre-image back and return the saved bitmaps (the caller holds the
    /// barrier and installs them).
    pub fn revert_data(&self) -> Result<Option<[TrackBitmap; 3]>> {
        let guard = self.revert();
        let Some(rs) = guard.as_ref() else { return Ok(None) };
        let name = format!("{}:{}", self.ids().0, self.ids().1);
        for (&t, &(at, len)) in &rs.index {
            let data = rs.read(at, len)?;
            self.target.write(t as u64 * TRACK_BYTES, &data, false).map_err(|e| Error::io(&name, &e))?;
        }
        self.target.flush().map_err(|e| Error::io(&name, &e))?;
        Ok(Some(rs.saved.clone()))
    }
}

impl super::ImageFlash {
    /// `setflashrevertible`: under the barrier, save the bitmaps and start the pre-image
    /// journal; `persist` (the catalog with `revertible` set) runs before memory changes.
    pub fn set_revertible(&self, rel: &Relationship, persist: impl FnOnce() -> Result<()>) -> Result<()> {
        let _barrier = self.lock_pair(rel);
        // Saved bitmaps and pre-images know whole tracks only (`grain.rs`).
        self.finish_grains(rel)?;
        let store = self.store().cloned();
        let saved = {
            let st = rel.state();
            [st.target_bits.clone(), st.src_changes.clone(), st.tgt_changes.clone()]
        };
        let (s, t) = rel.ids();
        let name = super::persist::pair_name(s, t);
        let dir = store.as_ref().map(|s| s.dir.clone()).unwrap_or_else(std::env::temp_dir);
        let rs = RevertState::begin(&dir, &name, saved)?;
        if let Err(e) = persist() {
            RevertState::remove(&dir, &name);
            return Err(e);
        }
        *rel.revert() = Some(rs);
        rel.state().record.revertible = true;
        self.bump();
        Ok(())
    }

    /// `commitflash`: keep the new data; the pair is no longer revertible. The pre-image
    /// files go first, then the catalog: a catalog that still says revertible with no files
    /// behind it is a finished commit (`restore_revert`).
    pub fn commit_revertible(&self, rel: &Relationship, persist: impl FnOnce() -> Result<()>) -> Result<()> {
        let _barrier = self.lock_pair(rel);
        *rel.revert() = None;
        self.remove_revert_files(rel);
        rel.state().record.revertible = false;
        if let Err(e) = persist() {
            tracing::error!(
                "commit {}:{}: catalog write failed ({e}); the commit completes at the next start",
                rel.ids().0,
                rel.ids().1
            );
            return Err(e);
        }
        self.bump();
        Ok(())
    }

    /// `revertflash`: the target goes back to the last consistent point. The catalog
    /// (revertible off) is written first, so a failure changes nothing; then the pre-images
    /// go back, the saved bitmaps become the checkpoint (after one that clears the copied
    /// set's stale epoch), and the files go. A crash after the catalog write leaves revert
    /// files next to a catalog that says "not revertible": the next start finishes the
    /// revert (`restore_revert`).
    pub fn revert_revertible(&self, rel: &Relationship, persist: impl FnOnce() -> Result<()>) -> Result<()> {
        let _barrier = self.lock_pair(rel);
        let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
        if rel.revert().is_none() {
            let (s, t) = rel.ids();
            return Err(Error::new(
                ErrorKind::FlashRevertibleState,
                format!("{s}:{t}"),
                "the relationship is not revertible",
            ));
        }
        // The target goes back to its pre-images: for a PPRC primary target, all of it may
        // change (out of sync before the catalog says reverted).
        self.target_changed(&rel.target, &TrackBitmap::full(rel.target.geometry().tracks()))?;
        persist()?;
        self.finish_revert(rel)
    }

    /// Pre-images back, saved bitmaps installed and checkpointed, revert files removed. The
    /// caller holds the barrier and the checkpoint lock. Idempotent until the files go.
    fn finish_revert(&self, rel: &Relationship) -> Result<()> {
        let Some(saved) = rel.revert_data()? else { return Ok(()) };
        if let (Some(store), Some(_)) = (self.store(), &rel.copied) {
            let (s, t) = rel.ids();
            let name = super::persist::pair_name(s, t);
            // The logs' bits are relative to the current checkpoint: checkpoint the current
            // bitmaps and clear them before the saved ones become the checkpoint.
            self.checkpoint_one(rel, &name)?;
            let g = rel.state().generation;
            checkpoint::store(&store.dir, &name, g + 1, &saved)?;
            rel.state().generation = g + 1;
        }
        {
            let mut st = rel.state();
            let [a, b, c] = saved;
            st.target_bits = a;
            st.src_changes = b;
            st.tgt_changes = c;
            // Saved after `finish_grains`, and no source write since: no grains then or now.
            st.grains.clear();
            st.cursor = 0;
            st.record.revertible = false;
        }
        *rel.revert() = None;
        self.remove_revert_files(rel);
        self.bump();
        Ok(())
    }

    /// At open: finish a revert or commit that a crash cut short (see their docs), or bring
    /// back the pre-image journal of a relationship that is still revertible.
    pub fn restore_revert(&self, rel: &Relationship) -> Result<()> {
        let Some(store) = self.store() else { return Ok(()) };
        let (s, t) = rel.ids();
        let rs = RevertState::open(&store.dir, &super::persist::pair_name(s, t))?;
        let revertible = rel.state().record.revertible;
        match (revertible, rs) {
            (true, Some(rs)) => *rel.revert() = Some(rs),
            (true, None) => {
                tracing::warn!("{s}:{t}: a commitflash was cut short; finishing it");
                rel.state().record.revertible = false;
            }
            (false, Some(rs)) => {
                tracing::warn!("{s}:{t}: a revertflash was cut short; finishing it");
                *rel.revert() = Some(rs);
                let _ckpt = self.ckpt_lock.lock().unwrap_or_else(|p| p.into_inner());
                self.finish_revert(rel)?;
            }
            (false, None) => {}
        }
        Ok(())
    }

    pub fn remove_revert_files(&self, rel: &Relationship) {
        if let Some(store) = self.store() {
            let (s, t) = rel.ids();
            RevertState::remove(&store.dir, &super::persist::pair_name(s, t));
        }
    }
}
