//! flashd.log: one line per state change, with a UTC timestamp. The engine logs through
//! `tracing`; this installs the subscriber that appends to the site's log file.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

/// Log file inside a site home.
pub const LOG_FILE: &str = "flashd.log";

struct FileLog {
    file: Mutex<File>,
    max: Level,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for FileLog {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.level() <= &self.max
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut msg = Message(String::new());
        event.record(&mut msg);
        let ts = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
        let line = format!("{ts} {:5} {}\n", event.metadata().level(), msg.0);
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line so concurrent writers (a racing second flashd) never interleave.
        let _ = f.write_all(line.as_bytes());
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// Append the daemon's log to `home/flashd.log`. `FLASHTRACK_LOG=debug` raises the level.
pub fn init(home: &Path) -> Result<()> {
    let path = home.join(LOG_FILE);
    let file = OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
    let max = match std::env::var("FLASHTRACK_LOG").as_deref() {
        Ok("debug") => Level::DEBUG,
        Ok("trace") => Level::TRACE,
        _ => Level::INFO,
    };
    // Ignore "already set" (tests may start several daemons in one process).
    let _ = tracing::subscriber::set_global_default(FileLog { file: Mutex::new(file), max });
    Ok(())
}
