//! The site's volumes as NBD exports: the seam between the NBD server and the engine.
//! Every host byte goes through the image's intercept (`ImageFlash`).
//!
//! Block status: `base:allocation` is `ImageFlash::allocation` (holes of a sparse file, the
//! source's allocation for a target's uncopied tracks; a device region is all data). Each
//! recording relationship (`mkflash -record`) the volume takes part in is offered as two
//! dirty bitmaps, `qemu:dirty-bitmap:<source>-<target>.src` and `.tgt` (volume ids in the
//! DS CLI's four hex digits, e.g. `1000-1001.src`), 64 KiB granule (one track), dirty = 1.
//! The name is looked up at every query: after `resyncflash` the bitmaps restart empty, and
//! once the relationship is withdrawn a query fails (EINVAL with a message).
//! `NBD_CMD_CACHE` is readahead on a file backing, a validated no-op on a device region.

use flashtrack::flash::ImageFlash;
use flashtrack::flash::status::{Side, Span};
use flashtrack::id::{VolumeId, VolumeKey};
use flashtrack::nbd::proto::{STATE_DIRTY, STATE_HOLE, STATE_ZERO};
use flashtrack::nbd::{Export, ExportCatalog, Extent};
use flashtrack::site::Site;
use flashtrack::volume::{SessionGuard, Volume};
use std::io;
use std::sync::Arc;

#[derive(Debug)]
pub struct SiteExports {
    site: Arc<Site>,
}

impl SiteExports {
    pub fn new(site: Arc<Site>) -> Self {
        SiteExports { site }
    }
}

impl ExportCatalog for SiteExports {
    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        let key: VolumeKey = name.parse().ok()?;
        let (session, flash) = self.site.open_host(&key)?;
        Some(Arc::new(VolumeExport::new(session, flash)))
    }

    fn list(&self) -> Vec<String> {
        self.site.volume_keys().iter().map(ToString::to_string).collect()
    }
}

/// One host session on one volume; the session count drops with it.
#[derive(Debug)]
pub(super) struct VolumeExport {
    vol: Arc<Volume>,
    /// The image's intercept: every host byte passes it (COW, recording, target reads).
    flash: Arc<ImageFlash>,
    _session: SessionGuard,
}

impl VolumeExport {
    pub(super) fn new(session: SessionGuard, flash: Arc<ImageFlash>) -> Self {
        VolumeExport { vol: Arc::clone(session.volume()), flash, _session: session }
    }
}

impl Export for VolumeExport {
    fn size(&self) -> u64 {
        self.vol.size()
    }
    fn block_size(&self) -> u32 {
        self.vol.block_size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.flash.read(&self.vol, offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.flash.write(&self.vol, offset, data, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.flash.flush(&self.vol)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.flash.trim(&self.vol, offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> io::Result<()> {
        self.flash.write_zeroes(&self.vol, offset, len, may_trim)
    }
    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        self.cache_range(offset, len)
    }
    fn allocation(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let spans = self.flash.allocation(&self.vol, offset, len)?;
        Ok(extents(spans, 0, STATE_HOLE | STATE_ZERO))
    }
    fn dirty_bitmaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (s, t) in self.flash.recordings(&self.vol) {
            out.push(format!("{s}-{t}.src"));
            out.push(format!("{s}-{t}.tgt"));
        }
        out
    }
    fn dirty_extents(&self, leaf: &str, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let gone = || io::Error::new(io::ErrorKind::InvalidInput, format!("no recording relationship for {leaf}"));
        let (s, t, side) = Self::parse_leaf(leaf).ok_or_else(gone)?;
        let spans = self.flash.changes(s, t, side, offset, len).ok_or_else(gone)??;
        Ok(extents(spans, STATE_DIRTY, 0))
    }
}

impl VolumeExport {
    /// Parses a dirty-bitmap leaf `SSSS-TTTT.src|.tgt` (the name this export offers).
    fn parse_leaf(leaf: &str) -> Option<(VolumeId, VolumeId, Side)> {
        let (pair, side) = leaf.rsplit_once('.')?;
        let side = match side {
            "src" => Side::Source,
            "tgt" => Side::Target,
            _ => return None,
        };
        let (s, t) = pair.split_once('-')?;
        let id = |x: &str| (x.len() == 4).then(|| u16::from_str_radix(x, 16).ok()).flatten().map(VolumeId);
        Some((id(s)?, id(t)?, side))
    }

    fn cache_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.vol.readahead(offset, len)?;
        // A target's uncopied tracks are read from the source: warm that too.
        if let Some(rel) = self.flash.roles(self.vol.handle()).as_target {
            rel.source.readahead(offset, len)?;
        }
        Ok(())
    }
}

/// Spans as NBD extents: `set` flags where the span is set, `clear` where not.
fn extents(spans: Vec<Span>, set: u32, clear: u32) -> Vec<Extent> {
    spans.into_iter().map(|s| Extent { len: s.len, flags: if s.set { set } else { clear } }).collect()
}
