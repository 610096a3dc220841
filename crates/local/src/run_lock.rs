//! Which processes use a data directory: each holds a shared lock on `run.lock` for as long
//! as it has the directory open. A process that can take the lock exclusively is the only
//! one, so any job still PROCESSING in the records belongs to a process that stopped (Ctrl-C,
//! a crash, a power cut) and will never finish.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::LocalError;

pub struct RunLock {
    // Held, never read: the lock lives as long as the descriptor.
    _file: File,
}

impl RunLock {
    /// Takes the shared lock. When no other process holds it, `alone` runs first, under the
    /// exclusive lock, so no other process starts jobs while it does.
    pub fn take(
        data: &Path,
        alone: impl FnOnce() -> Result<(), LocalError>,
    ) -> Result<RunLock, LocalError> {
        let path = data.join("run.lock");
        let io = |e| LocalError::Io(path.clone(), e);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                let outcome = alone();
                file.unlock().map_err(io)?;
                outcome?;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            // A filesystem without locks (some network mounts): nothing can tell whether
            // another process runs jobs here, so nothing is swept; the directory still works.
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "no file locks here: jobs a stopped process left unfinished stay PROCESSING");
                return Ok(RunLock { _file: file });
            }
        }
        // Blocks only while another process is doing the above, which is quick.
        if let Err(e) = file.lock_shared() {
            tracing::warn!(path = %path.display(), error = %e, "cannot hold the data directory's run lock");
        }
        Ok(RunLock { _file: file })
    }
}
