//! Notifications on one machine: every event is logged and appended as a JSON line to
//! `<data>/events.jsonl`, which people and scripts can tail.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use pipeline::PortError;
use pipeline::model::Event;
use pipeline::ports::Notifier;

pub struct JsonlNotifier {
    path: PathBuf,
    file: Mutex<File>,
}

impl JsonlNotifier {
    pub fn open(path: &Path) -> Result<JsonlNotifier, PortError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PortError::Permanent(format!("{}: {e}", path.display())))?;
        Ok(JsonlNotifier {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Notifier for JsonlNotifier {
    async fn publish(&self, event: &Event) -> Result<(), PortError> {
        let mut line =
            serde_json::to_vec(event).map_err(|e| PortError::Permanent(e.to_string()))?;
        line.push(b'\n');
        // The image id comes with the notify step's span.
        if event.kind.is_alert() {
            // The kind as plain text (`error=UnsupportedFormat`), left out when there is none.
            match &event.error {
                Some(e) => tracing::warn!(status = %event.status, error = %e.kind, "alert"),
                None => tracing::warn!(status = %event.status, "alert"),
            }
        } else {
            tracing::info!(status = %event.status, "event");
        }
        // One write per line under the lock keeps lines whole when executions run in parallel.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
            .map_err(|e| PortError::Transient(format!("{}: {e}", self.path.display())))
    }
}
