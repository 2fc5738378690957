//! FlashCopy consistency groups: `mkflash -freeze` freezes the source LSSs after the group
//! is established; host writes to a source of a `-freeze` relationship in a frozen LSS are
//! parked (queue full / long busy), never failed, until `unfreezeflash` or the LSS's timer
//! (60 s FB, 120 s CKD by default). Reads go on. A parked writer holds no track lock.

use super::ImageFlash;
use crate::id::LssId;
use crate::volume::Volume;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Environment override of every freeze timer, in seconds (tests use a short one).
pub const TIMEOUT_ENV: &str = "FLASHTRACK_FREEZE_TIMEOUT";

#[derive(Debug, Default)]
pub struct FreezeGate {
    frozen: Mutex<HashMap<LssId, Instant>>,
    thawed: Condvar,
}

impl FreezeGate {
    /// Freeze `lss` for `timeout` (or the environment's override).
    pub fn freeze(&self, lss: LssId, timeout: Duration) {
        let timeout =
            std::env::var(TIMEOUT_ENV).ok().and_then(|v| v.parse().ok()).map(Duration::from_secs).unwrap_or(timeout);
        self.frozen.lock().unwrap_or_else(|p| p.into_inner()).insert(lss, Instant::now() + timeout);
        tracing::info!("FlashCopy consistency group: LSS {lss} frozen for {} s", timeout.as_secs());
    }

    /// Thaw `lss`. False when it was not frozen (never, or its timer already fired).
    pub fn thaw(&self, lss: LssId) -> bool {
        let mut f = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        let was = f.remove(&lss).is_some_and(|deadline| deadline > Instant::now());
        drop(f);
        self.thawed.notify_all();
        was
    }

    /// Park until `lss` is thawed or its timer fires.
    pub fn pass(&self, lss: LssId) {
        let mut f = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Some(&deadline) = f.get(&lss) else { return };
            let now = Instant::now();
            if now >= deadline {
                f.remove(&lss);
                tracing::info!("FlashCopy consistency group: LSS {lss} timer fired, writes resume");
                self.thawed.notify_all();
                return;
            }
            f = self.thawed.wait_timeout(f, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl ImageFlash {
    /// The freeze gate of a host write to `vol` (step 2 of the intercept).
    pub(crate) fn freeze_gate(&self, vol: &Volume) {
        // Nearly always nothing is frozen: skip the relationship scan on the hot path.
        if self.freeze.frozen.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return;
        }
        let lss = vol.key().volume.lss();
        let frozen_source = self.roles(vol.handle()).as_source.iter().any(|r| r.state().record.options.freeze);
        if frozen_source {
            self.freeze.pass(lss);
        }
    }

    pub fn freeze_gate_state(&self) -> &FreezeGate {
        &self.freeze
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parks_until_thaw_or_timer() {
        let g = Arc::new(FreezeGate::default());
        g.freeze(LssId(0x10), Duration::from_secs(30));
        let g2 = g.clone();
        let t0 = Instant::now();
        let h = std::thread::spawn(move || g2.pass(LssId(0x10)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "a frozen LSS let a write through");
        g.pass(LssId(0x11)); // another LSS is not frozen
        assert!(g.thaw(LssId(0x10)));
        h.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!g.thaw(LssId(0x10)), "thaw of a thawed LSS says so");
        g.freeze(LssId(0x12), Duration::from_millis(200));
        let t0 = Instant::now();
        g.pass(LssId(0x12));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(!g.thaw(LssId(0x12)), "the timer had fired");
    }
}
