//! The inbox, DIR/inbox/: every file that appears there is taken into the store as an upload
//! of the inbox owner (`--inbox-owner`, `inbox` by default) and processed like an S3 drop (default preset, or none of the API's
//! metadata). Also the startup sweep that requeues uploads a crash left unprocessed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use local::LocalPipeline;
use pipeline::io::Upload;
use pipeline::keys;
use pipeline::model::Status;
use pipeline::ports::ObjectStore;
use tokio::sync::watch;

use super::queue::Queue;

pub const DIR_NAME: &str = "inbox";
/// The owner of inbox uploads unless `--inbox-owner` names a user: `uploads/inbox/{id}/{name}`,
/// seen by admins only.
pub const OWNER: &str = pipeline::keys::INBOX_OWNER;

/// What a file looked like at the last poll; unchanged across two polls means complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
}

/// Polls `dir` every `every` until `stop` turns true. Polling rather than file events: it
/// needs no extra crate, works on every filesystem (network mounts included), and a second
/// of latency does not matter next to processing.
pub async fn watch(
    pipeline: Arc<LocalPipeline>,
    queue: Queue,
    dir: PathBuf,
    every: Duration,
    owner: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    // Files taken in whose removal failed: not taken again while they stay the same.
    let mut taken: HashMap<PathBuf, Seen> = HashMap::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let dir2 = dir.clone();
        let now = match tokio::task::spawn_blocking(move || scan(&dir2)).await {
            Ok(Ok(now)) => now,
            Ok(Err(e)) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the inbox");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbox scan stopped");
                continue;
            }
        };
        taken.retain(|path, was| now.get(path) == Some(was));
        for (path, state) in &now {
            if seen.get(path) != Some(state) || taken.contains_key(path) {
                continue;
            }
            if *stop.borrow() {
                return;
            }
            // Full queue: the file stays where it is and is tried again at the next poll.
            let Some(slot) = queue.try_reserve() else {
                tracing::debug!("processing queue full; inbox files wait");
                break;
            };
            match take_in(&pipeline, path, &owner).await {
                Ok((upload, removed)) => {
                    tracing::info!(file = %path.display(), key = %upload.key, "inbox file taken in");
                    if !removed {
                        taken.insert(path.clone(), *state);
                    }
                    slot.send(upload);
                }
                Err(e @ (NotTaken::NotRegular | NotTaken::TooLarge { .. })) => {
                    // Not tried again while it stays as it is.
                    tracing::warn!(file = %path.display(), reason = %e, "inbox file left where it is");
                    taken.insert(path.clone(), *state);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot take in an inbox file; it stays there");
                }
            }
        }
        seen = now;
    }
}

/// Regular, visible files directly in the inbox (dot files are usually still being written
/// by the tool that makes them, and folders are not uploads).
fn scan(dir: &Path) -> std::io::Result<HashMap<PathBuf, Seen>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.insert(
            entry.path(),
            Seen {
                len: meta.len(),
                modified: meta.modified().ok(),
            },
        );
    }
    Ok(out)
}

/// Why an inbox file is left where it is.
#[derive(Debug, thiserror::Error)]
enum NotTaken {
    #[error("it is not a regular file (a link, pipe or device put there since the last look)")]
    NotRegular,
    #[error("it is {size} bytes or more, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Opens an inbox file as it is now, never following a symbolic link and never waiting on a
/// pipe, and checks the open descriptor: a regular file within `max_bytes`. Whatever is
/// swapped in under the name after the scan is refused here, and what is copied is what was
/// checked.
fn open_checked(path: &Path, max_bytes: u64) -> Result<std::fs::File, NotTaken> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits());
    }
    let file = match options.open(path) {
        Ok(f) => f,
        // O_NOFOLLOW on a link.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(NotTaken::NotRegular);
        }
        Err(e) => return Err(NotTaken::Failed(e.into())),
    };
    let meta = file.metadata().map_err(anyhow::Error::from)?;
    if !meta.is_file() {
        return Err(NotTaken::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(NotTaken::TooLarge {
            size: meta.len(),
            limit: max_bytes,
        });
    }
    Ok(file)
}

/// Copies the file into the store, makes sure the copy is on disk, and only then removes the
/// inbox file. Returns the upload and whether the removal worked.
async fn take_in(
    pipeline: &Arc<LocalPipeline>,
    path: &Path,
    owner: &str,
) -> Result<(Upload, bool), NotTaken> {
    let pipeline = pipeline.clone();
    let path = path.to_path_buf();
    let owner = owner.to_string();
    let joined = tokio::task::spawn_blocking(move || -> Result<(Upload, bool), NotTaken> {
        let max_bytes = pipeline.steps.config.limits.max_bytes;
        let file = open_checked(&path, max_bytes)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("upload");
        let upload = pipeline
            .ingest_open(file, name, &owner)
            .map_err(anyhow::Error::from)?
            // It grew past the limit after the check.
            .ok_or(NotTaken::TooLarge {
                size: max_bytes.saturating_add(1),
                limit: max_bytes,
            })?;
        Ok(finish_take_in(&pipeline, &path, upload)?)
    })
    .await;
    joined.map_err(|e| NotTaken::Failed(e.into()))?
}

/// Makes sure the copy is on disk, then removes the inbox file; whether that worked.
fn finish_take_in(
    pipeline: &LocalPipeline,
    path: &Path,
    upload: Upload,
) -> anyhow::Result<(Upload, bool)> {
    let stored = pipeline.store.path_of(&upload.key)?;
    std::fs::File::open(&stored)?.sync_all()?;
    if let Some(parent) = stored.parent() {
        // The new directory entry too, where the platform allows opening a directory.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    let removed = match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "taken in but cannot remove the inbox file");
            false
        }
    };
    Ok((upload, removed))
}

/// Requeues uploads a crash or kill left unprocessed: objects under `uploads/` whose record
/// is missing or still AWAITING_UPLOAD. (A graceful stop drains the queue and leaves none.)
pub async fn recover(pipeline: Arc<LocalPipeline>, queue: Queue, mut stop: watch::Receiver<bool>) {
    let keys = match pipeline.store.list("uploads/").await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list uploads to recover");
            return;
        }
    };
    let mut done = HashSet::new();
    let mut requeued = 0usize;
    for key in keys {
        if *stop.borrow() {
            break;
        }
        let Ok(ident) = keys::identify(&key, None) else {
            continue;
        };
        // Batch drops get their id from key and etag; only API and inbox keys are ours.
        if ident.owner == keys::DROP_OWNER || !done.insert(ident.id.clone()) {
            continue;
        }
        match pipeline.steps.metadata.get(&ident.id).await {
            Ok(None) => {}
            Ok(Some(r)) if r.status == Status::AwaitingUpload => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot check an upload's record");
                continue;
            }
        }
        let slot = tokio::select! {
            slot = queue.reserve() => slot,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(slot) = slot else { break };
        let size = pipeline.store.head(&key).await.ok().map(|i| i.size);
        slot.send(Upload {
            key,
            size,
            ..Upload::default()
        });
        requeued += 1;
    }
    if requeued > 0 {
        eprintln!(
            "imgpipe serve: requeued {requeued} upload(s) left unprocessed by an earlier run"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a swap between the scan and the copy presents to the open: each is refused at
    /// once, without following the link or waiting for a writer on the pipe.
    #[test]
    fn only_regular_files_within_the_limit_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("auth.key");
        std::fs::write(&secret, b"secret").unwrap();
        let link = dir.path().join("link.jpg");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(matches!(
            open_checked(&link, 1000),
            Err(NotTaken::NotRegular)
        ));
        let fifo = dir.path().join("pipe.jpg");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            open_checked(&fifo, 1000),
            Err(NotTaken::NotRegular)
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        let huge = dir.path().join("huge.jpg");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        assert!(matches!(
            open_checked(&huge, 1000),
            Err(NotTaken::TooLarge { size, limit: 1000 }) if size == 1 << 30
        ));
        assert!(open_checked(&secret, 1000).is_ok());
    }
}
