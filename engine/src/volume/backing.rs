//! TEMPORARY STUB (replaced by the io branch).
use crate::error::Result;
use std::path::Path;
use std::sync::Arc;
#[derive(Debug)]
pub struct DeviceHandle;
impl DeviceHandle {
    pub fn open(_p: &Path) -> Result<DeviceHandle> { Ok(DeviceHandle) }
    pub fn size(&self) -> u64 { 0 }
}
#[derive(Debug)]
pub struct Backing;
impl Backing {
    pub fn create_file(_p: &Path, _len: u64, _standard: bool) -> Result<Backing> { Ok(Backing) }
    pub fn open_file(_p: &Path, _len: u64) -> Result<Backing> { Ok(Backing) }
    pub fn device_region(_d: Arc<DeviceHandle>, _b: u64, _l: u64) -> Result<Backing> { Ok(Backing) }
    pub fn grow(&mut self, _n: u64, _s: bool) -> Result<()> { Ok(()) }
    pub fn remove(&self) -> Result<()> { Ok(()) }
}
