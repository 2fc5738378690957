//! flashtrack: a FlashCopy engine for files and block devices.
//!
//! The library holds all behaviour; the binaries in the `flashtrack-cli` package are thin
//! clients of it. See ARCHITECTURE.md at the top of the repository for the map.

pub mod bitmap;
pub mod control;
pub mod error;
pub mod flash;
pub mod geometry;
pub mod id;
pub mod image;
pub mod io;
pub mod link;
pub mod mirror;
pub mod nbd;
pub mod site;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
