//! The cli package's one integration test binary; each module is one area.

mod daemon_e2e;
mod golden;
mod killnine;
mod site_proc;
