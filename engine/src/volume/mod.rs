//! TEMPORARY STUB (replaced by the io branch).
pub mod backing;
use crate::geometry::Geometry;
use crate::id::VolumeKey;
use crate::io::IoEngine;
use std::sync::Arc;
#[derive(Debug)]
pub struct Volume { key: VolumeKey }
impl Volume {
    pub fn new(key: VolumeKey, _g: Geometry, _b: backing::Backing, _io: Arc<dyn IoEngine>) -> Volume { Volume { key } }
    pub fn key(&self) -> &VolumeKey { &self.key }
    pub fn sessions(&self) -> usize { 0 }
    pub fn allocated_bytes(&self) -> std::io::Result<u64> { Ok(0) }
    pub fn flush(&self) -> std::io::Result<()> { Ok(()) }
}
