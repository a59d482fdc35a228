//! Optional file watch: reload the policy when its file changes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::Supervisor;
use crate::config::{ConfigError, Kind};

/// Editors write a file in several steps; wait this long after an event before reading.
const SETTLE: Duration = Duration::from_millis(50);

impl Supervisor {
    /// Watches the policy file at `path` and [`reload`](Supervisor::reload)s it whenever it
    /// changes. A bad version is logged and ignored (the policy in force stays); the
    /// watch keeps going and picks up the next good version. Replaces any earlier watch;
    /// stops at shutdown.
    pub fn watch(self: &Arc<Self>, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref().to_path_buf();
        let io_error = |e: notify::Error| {
            ConfigError::new(
                Kind::Io,
                &path,
                format!("cannot watch the policy file: {e}"),
            )
            .with_source(Arc::new(e))
        };
        let Some(file_name) = path.file_name().map(|f| f.to_os_string()) else {
            return Err(ConfigError::new(
                Kind::Io,
                &path,
                "cannot watch a path without a file name",
            ));
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let weak = Arc::downgrade(self);
        let target = path.clone();
        let last_text: Mutex<Option<String>> = Mutex::new(std::fs::read_to_string(&path).ok());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
                return;
            }
            if !event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file_name.as_os_str()))
            {
                return;
            }
            std::thread::sleep(SETTLE);
            let Ok(text) = std::fs::read_to_string(&target) else {
                return;
            };
            let mut last = last_text.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(text.as_str()) {
                return;
            }
            let Some(sup) = weak.upgrade() else { return };
            tracing::info!(policy = %target.display(), "policy file changed; reloading");
            if sup.reload_str(&text, &target).is_ok() {
                *last = Some(text);
            }
        })
        .map_err(io_error)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(io_error)?;
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        Ok(())
    }
}
