//! The engine's one integration test binary (ripgrep style): modules by subject.

mod fixture;
mod flash_alloc;
mod flash_grains;
mod flash_power;
mod flash_recovery;
mod flash_restart_model;
mod flash_revert;
mod flash_tgtfailed;
mod hosts;
mod links;
mod pprc;
mod pprc_pairs;
mod pprc_review;
mod remote_flash;
mod site;
