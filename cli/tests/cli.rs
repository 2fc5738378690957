//! The cli package's one integration test binary; each module is one area.

#[path = "cli/daemon_e2e.rs"]
mod daemon_e2e;
#[path = "cli/flash_crash.rs"]
mod flash_crash;
#[path = "cli/flash_e2e.rs"]
mod flash_e2e;
#[path = "cli/flash_failpoints.rs"]
mod flash_failpoints;
#[path = "cli/fuse_e2e.rs"]
mod fuse_e2e;
#[path = "cli/fuse_props.rs"]
mod fuse_props;
#[path = "cli/golden.rs"]
mod golden;
#[path = "cli/hosts_e2e.rs"]
mod hosts_e2e;
#[path = "cli/killnine.rs"]
mod killnine;
#[path = "cli/nbd_e2e.rs"]
mod nbd_e2e;
#[path = "cli/pprc_e2e.rs"]
mod pprc_e2e;
#[path = "cli/pprc_tcp_e2e.rs"]
mod pprc_tcp_e2e;
#[path = "cli/remote_flash_e2e.rs"]
mod remote_flash_e2e;
#[path = "cli/site_proc.rs"]
mod site_proc;
