//! The site's volumes as NBD exports: the seam between the NBD server and the engine.
//! Every host byte goes through `Volume`'s methods (the intercept's front door).

use flashtrack::flash::ImageFlash;
use flashtrack::id::VolumeKey;
use flashtrack::nbd::{Export, ExportCatalog};
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
}
