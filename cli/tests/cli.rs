//! The cli crate's one integration test binary.

#[path = "cli/daemon_e2e.rs"]
mod daemon_e2e;
#[path = "cli/killnine.rs"]
mod killnine;
#[path = "cli/site_proc.rs"]
mod site_proc;
