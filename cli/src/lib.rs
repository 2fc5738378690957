//! The `flashtrack-cli` package: binaries are thin wrappers over these modules.
#![forbid(unsafe_code)]

pub mod dscli;
