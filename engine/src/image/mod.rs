//! Storage images: pools, LSS/LCU, volumes, and the crash-safe catalog.

pub mod catalog;
pub mod record;
