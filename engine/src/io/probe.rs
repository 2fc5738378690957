//! Pick the I/O engine at start-up: `FLASHTRACK_IO=uring|sync` forces one, otherwise io_uring
//! is tried and the sync engine is the fallback (with a warning saying why).

use super::uring::{DEFAULT_ENTRIES, UringEngine};
use super::{IoEngine, SyncEngine};
use std::sync::Arc;

/// Environment variable that forces a backend.
pub const ENV: &str = "FLASHTRACK_IO";

/// Choose the engine from the environment and the running kernel.
///
/// An unknown `FLASHTRACK_IO` value, or `FLASHTRACK_IO=uring` on a system where io_uring
/// cannot be set up, is an error for the caller (flashd refuses to start) rather than a
/// silent fallback: the user asked for something specific.
pub fn select() -> Result<Arc<dyn IoEngine>, String> {
    let forced = std::env::var(ENV).ok();
    select_with(forced.as_deref())
}

/// [`select`] with the override given explicitly (`None` = not set); testable without
/// touching the process environment.
pub fn select_with(forced: Option<&str>) -> Result<Arc<dyn IoEngine>, String> {
    let engine: Arc<dyn IoEngine> = match forced.map(str::trim) {
        None | Some("") => match UringEngine::new(DEFAULT_ENTRIES) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                tracing::warn!("io_uring unavailable ({e}); using the sync (pread/pwrite) engine");
                Arc::new(SyncEngine)
            }
        },
        Some("uring") => Arc::new(
            UringEngine::new(DEFAULT_ENTRIES).map_err(|e| format!("{ENV}=uring but io_uring is unavailable: {e}"))?,
        ),
        Some("sync") => Arc::new(SyncEngine),
        Some(other) => {
            return Err(format!("{ENV}={other:?} is not valid; use \"uring\" or \"sync\""));
        }
    };
    let how = if forced.is_some_and(|f| !f.trim().is_empty()) { "forced by FLASHTRACK_IO" } else { "probed" };
    tracing::info!("I/O engine: {} ({how})", engine.kind());
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::IoKind;

    #[test]
    fn forced_choices() {
        assert_eq!(select_with(Some("sync")).expect("sync").kind(), IoKind::Sync);
        assert_eq!(select_with(Some("uring")).expect("uring works here").kind(), IoKind::Uring);
        let err = select_with(Some("aio")).expect_err("unknown value");
        assert!(err.contains("FLASHTRACK_IO") && err.contains("aio"), "{err}");
    }

    #[test]
    fn probe_prefers_uring() {
        // machine.md §1: io_uring works on this machine, so the probe must pick it.
        assert_eq!(select_with(None).expect("probe").kind(), IoKind::Uring);
        assert_eq!(select_with(Some("")).expect("empty = unset").kind(), IoKind::Uring);
    }
}
