//! Backups of a data directory as one tar archive, and their restore.
//!
//! The archive mirrors the directory: `imgpipe.db` (a consistent snapshot made with SQLite's
//! online backup API, so a running `imgpipe serve` need not stop), `objects/...` (every object
//! and its user metadata), `events.jsonl`, `auth.key`, and last `manifest.json`, which lists
//! each entry's path, size and sha256 and the number of records. The manifest comes last so a
//! backup is one streaming pass; a restore finds it first by seeking over the headers, then
//! checks every entry against it while extracting into a directory beside the target, which
//! is renamed into place only once everything matched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What `manifest.json` says it is, so another tar is not mistaken for a backup.
pub const FORMAT: &str = "imgpipe-backup";
/// Bumped when a reader of an older version could restore an archive wrongly.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

const DATABASE: &str = "imgpipe.db";
const OBJECTS: &str = "objects";
const EVENTS: &str = "events.jsonl";
/// The server secret of `imgpipe serve`. Backed up because tokens, upload forms and download
/// links signed with it keep working after a restore; it is the one owner-only file. A
/// restore takes it only when asked ([`AuthKey::FromArchive`]): whoever made the archive
/// holds it, and with it can sign admin tokens.
pub const AUTH_KEY: &str = "auth.key";

/// Whether a restore takes the archive's signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKey {
    /// Becomes this data directory's key: earlier tokens, forms and links keep working.
    FromArchive,
    /// Left out: `imgpipe serve` makes a new key, and tokens are issued again.
    New,
}
/// Intermediates between steps (expired after a day in the cloud); a retried job makes them
/// again, so they are not worth keeping.
const WORK_PREFIX: &str = "work";
/// tempfile's prefix: files being written by the store, not objects yet.
const TEMP_PREFIX: &str = ".tmp";
/// A manifest lists one line per entry; this bounds what a hostile archive makes us parse.
const MANIFEST_MAX_BYTES: u64 = 256 << 20;
/// How long the snapshot waits for a writer in rollback-journal mode to let go. In WAL mode
/// (what imgpipe uses) a reader never waits.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not an imgpipe data directory: it has no {DATABASE}", .0.display())]
    NotADataDirectory(PathBuf),
    #[error("database {}: {message}", path.display())]
    Database { path: PathBuf, message: String },
    #[error(
        "the archive {} would be inside the data directory {} it backs up; write it elsewhere",
        archive.display(),
        data.display()
    )]
    ArchiveInsideData { archive: PathBuf, data: PathBuf },
    #[error("{} changed while being backed up ({reason}); run the backup again", .path.display())]
    Changed { path: PathBuf, reason: String },
    #[error(
        "target not empty: {} already holds files; restore refuses to mix or replace them \
         (pass --force to replace the whole directory)",
        .0.display()
    )]
    TargetNotEmpty(PathBuf),
    #[error("unsafe archive entry `{entry}`: {reason}; nothing was restored")]
    UnsafeEntry { entry: String, reason: String },
    #[error("corrupt archive entry `{entry}`: {reason}")]
    CorruptEntry { entry: String, reason: String },
    #[error("truncated archive: {0}")]
    Truncated(String),
    #[error("not an imgpipe backup: {0}")]
    NotABackup(String),
    #[error(
        "record count mismatch: the manifest says {expected} {what}, the database holds {found}"
    )]
    RecordCountMismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn db_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |e| BackupError::Database {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub created_at: DateTime<Utc>,
    pub imgpipe_version: String,
    /// Rows of the `images` table: one per job.
    pub records: u64,
    /// Rows of the `renditions` table.
    pub renditions: u64,
    pub entries: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// Objects proper, not their user metadata under `objects/.meta/`.
    pub fn objects(&self) -> usize {
        self.entries.iter().filter(|e| is_object(&e.path)).count()
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

fn is_object(path: &str) -> bool {
    path.strip_prefix("objects/")
        .is_some_and(|rest| !rest.starts_with(".meta/"))
}

/// Reads through to a hash, counting.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hash.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(read) = buf.get(..n) {
            self.hash.update(read);
        }
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(written) = buf.get(..n) {
            self.hash.update(written);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The directory a path lives in, `.` for a bare name.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name_of(path: &Path) -> Result<String, BackupError> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "names no file or directory"),
        })
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    // A rename is durable only once its directory is; not every platform can open one.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn mtime_of(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub manifest: Manifest,
    pub archive_bytes: u64,
}

/// Writes a backup of the data directory `data` to `archive` (replaced atomically, mode 0600:
/// it holds the server key).
pub fn backup(data: &Path, archive: &Path) -> Result<BackupSummary, BackupError> {
    let db_path = data.join(DATABASE);
    if !db_path.is_file() {
        return Err(BackupError::NotADataDirectory(data.to_path_buf()));
    }
    let out_dir = parent_of(archive);
    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let data_real = fs::canonicalize(data).map_err(io_err(data))?;
    let out_real = fs::canonicalize(out_dir).map_err(io_err(out_dir))?;
    if out_real.starts_with(&data_real) {
        return Err(BackupError::ArchiveInsideData {
            archive: archive.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    let name = file_name_of(archive)?;

    // The snapshot first: every record in it then finds its objects, which are written
    // before their record and never changed in place.
    let snapshot = tempfile::Builder::new()
        .prefix(&format!(".{name}.db-"))
        .tempfile_in(out_dir)
        .map_err(io_err(out_dir))?;
    let (records, renditions) = snapshot_database(&db_path, snapshot.path())?;

    // tempfile makes the file owner-only, which the archive keeps after the rename.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(out_dir)
        .map_err(io_err(out_dir))?;
    let mut tar = tar::Builder::new(BufWriter::new(tmp.as_file()));
    let mut entries = Vec::new();
    append_file(
        &mut tar,
        snapshot.path(),
        DATABASE,
        0o644,
        &mut entries,
        archive,
    )?;
    drop(snapshot);

    let mut objects = Vec::new();
    collect_objects(&data.join(OBJECTS), OBJECTS, &mut objects, 0)?;
    for (path, rel) in &objects {
        append_file(&mut tar, path, rel, 0o644, &mut entries, archive)?;
    }
    for (name, mode) in [(EVENTS, 0o644), (AUTH_KEY, 0o600)] {
        let path = data.join(name);
        if path.is_file() {
            append_file(&mut tar, &path, name, mode, &mut entries, archive)?;
        }
    }

    let manifest = Manifest {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        created_at: Utc::now(),
        imgpipe_version: env!("CARGO_PKG_VERSION").to_string(),
        records,
        renditions,
        entries,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        path: archive.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(manifest.created_at.timestamp().try_into().unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, MANIFEST, json.as_slice())
        .map_err(io_err(archive))?;
    let mut writer = tar.into_inner().map_err(io_err(archive))?;
    writer.flush().map_err(io_err(archive))?;
    drop(writer);
    tmp.as_file().sync_all().map_err(io_err(archive))?;
    let archive_bytes = tmp.as_file().metadata().map_err(io_err(archive))?.len();
    tmp.persist(archive).map_err(|e| BackupError::Io {
        path: archive.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(out_dir)?;
    Ok(BackupSummary {
        manifest,
        archive_bytes,
    })
}

/// Copies the live database into `dest` through SQLite's online backup API, in one step so
/// the copy is one read transaction: a consistent state even while others write. Returns
/// the record and rendition counts of the copy.
fn snapshot_database(src_path: &Path, dest: &Path) -> Result<(u64, u64), BackupError> {
    // Read-write without create: a read-only connection cannot open a WAL database whose
    // shared-memory file is missing, and nothing here may create a database.
    let src = Connection::open_with_flags(
        src_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(src_path))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(db_err(src_path))?;
    let mut dst = Connection::open(dest).map_err(db_err(dest))?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(db_err(dest))?;
        let started = Instant::now();
        loop {
            match backup.step(-1).map_err(db_err(src_path))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if started.elapsed() > SNAPSHOT_PATIENCE {
                        return Err(BackupError::Database {
                            path: src_path.to_path_buf(),
                            message: format!(
                                "still locked by a writer after {}s",
                                SNAPSHOT_PATIENCE.as_secs()
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // A future rusqlite result: treat it as a reason to try again.
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    // The copy carries the source's WAL flag; a rollback-journal file stands alone in the
    // archive, and `imgpipe` switches it back to WAL when it opens it.
    let _mode: String = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(db_err(dest))?;
    let counts = count_records(&dst).map_err(db_err(dest))?;
    dst.close().map_err(|(_, e)| db_err(dest)(e))?;
    Ok(counts)
}

fn count_records(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let images: i64 = conn.query_row("SELECT count(*) FROM images", [], |r| r.get(0))?;
    let renditions: i64 = conn.query_row("SELECT count(*) FROM renditions", [], |r| r.get(0))?;
    Ok((
        u64::try_from(images).unwrap_or(0),
        u64::try_from(renditions).unwrap_or(0),
    ))
}

/// Every file of the object store below `dir`, in name order, as (path, archive path).
fn collect_objects(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(PathBuf, String)>,
    depth: usize,
) -> Result<(), BackupError> {
    // Keys have a handful of segments; the bound stops a runaway tree.
    if depth > 64 {
        return Ok(());
    }
    let mut entries = match fs::read_dir(dir) {
        Ok(rd) => rd.collect::<Result<Vec<_>, _>>().map_err(io_err(dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            // Object keys are UTF-8; anything else was not put there by the store.
            tracing::warn!(path = %path.display(), "not backed up: the name is not UTF-8");
            continue;
        };
        if name.starts_with(TEMP_PREFIX) || (depth == 0 && name == WORK_PREFIX) {
            continue;
        }
        let rel = format!("{rel}/{name}");
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            collect_objects(&path, &rel, out, depth + 1)?;
        } else if ft.is_file() {
            out.push((path, rel));
        } else {
            tracing::warn!(path = %path.display(), "not backed up: not a regular file");
        }
    }
    Ok(())
}

/// Streams one file into the archive, hashing what goes in.
fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &str,
    mode: u32,
    entries: &mut Vec<ManifestEntry>,
    archive: &Path,
) -> Result<(), BackupError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        // Deleted since the listing (an image deleted through the API): not in the backup.
        Err(e) if e.kind() == io::ErrorKind::NotFound && name != DATABASE => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    // The size of the open file: objects are replaced by rename, so this inode stays as it
    // is; events.jsonl only grows, and is cut at this length.
    let meta = file.metadata().map_err(io_err(path))?;
    let size = meta.len();
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(mtime_of(&meta));
    header.set_entry_type(tar::EntryType::Regular);
    let mut reader = Hashing::new(file.take(size));
    tar.append_data(&mut header, name, &mut reader)
        .map_err(io_err(archive))?;
    let (count, sha256) = reader.finish();
    if count != size {
        return Err(BackupError::Changed {
            path: path.to_path_buf(),
            reason: format!("{size} bytes when opened, {count} read"),
        });
    }
    entries.push(ManifestEntry {
        path: name.to_string(),
        size,
        sha256,
    });
    Ok(())
}

/// Refuses entry names that could land outside the target: absolute paths, `..`, empty or
/// `.` segments, backslashes, NULs.
fn check_entry_path(raw: &[u8]) -> Result<String, BackupError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let unsafe_entry = |reason: &str| BackupError::UnsafeEntry {
        entry: shown.clone(),
        reason: reason.to_string(),
    };
    let name = std::str::from_utf8(raw).map_err(|_| unsafe_entry("the name is not UTF-8"))?;
    if name.starts_with('/') {
        return Err(unsafe_entry("an absolute path"));
    }
    if name.split('/').any(|s| s == "..") {
        return Err(unsafe_entry(
            "a `..` segment, which would climb out of the data directory",
        ));
    }
    if name.is_empty()
        || name.contains(['\\', '\0'])
        || name.split('/').any(|s| s.is_empty() || s == ".")
    {
        return Err(unsafe_entry("not a plain relative path"));
    }
    Ok(name.to_string())
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Char | tar::EntryType::Block => "a device",
        tar::EntryType::Fifo => "a FIFO",
        _ => "not a regular file",
    }
}

fn tar_err(e: io::Error) -> BackupError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Truncated(e.to_string())
    } else {
        BackupError::NotABackup(format!("unreadable tar: {e}"))
    }
}

/// The first pass: headers only (seeking over the data), checking every entry's name and
/// kind and reading the manifest. Nothing is written.
fn scan(archive: &Path) -> Result<Manifest, BackupError> {
    let file = fs::File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    for entry in tar.entries_with_seek().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let name = check_entry_path(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(BackupError::UnsafeEntry {
                entry: name,
                reason: format!("{}; a backup holds regular files only", entry_kind(kind)),
            });
        }
        if name == MANIFEST {
            if entry.size() > MANIFEST_MAX_BYTES {
                return Err(BackupError::NotABackup(format!(
                    "{MANIFEST} is {} bytes",
                    entry.size()
                )));
            }
            let mut json = Vec::new();
            (&mut entry)
                .take(MANIFEST_MAX_BYTES)
                .read_to_end(&mut json)
                .map_err(tar_err)?;
            if (json.len() as u64) < entry.size() {
                return Err(BackupError::Truncated(format!("{MANIFEST} is cut short")));
            }
            let parsed: Manifest = serde_json::from_slice(&json)
                .map_err(|e| BackupError::NotABackup(format!("{MANIFEST}: {e}")))?;
            manifest = Some(parsed);
        } else if sizes.insert(name.clone(), entry.size()).is_some() {
            return Err(BackupError::CorruptEntry {
                entry: name,
                reason: "it appears twice".to_string(),
            });
        }
    }
    let Some(manifest) = manifest else {
        return Err(BackupError::Truncated(format!(
            "no {MANIFEST}, which a backup writes last: the archive is cut short or not an \
             imgpipe backup"
        )));
    };
    if manifest.format != FORMAT {
        return Err(BackupError::NotABackup(format!(
            "{MANIFEST} describes `{}`",
            manifest.format
        )));
    }
    if manifest.format_version > FORMAT_VERSION {
        return Err(BackupError::NotABackup(format!(
            "format version {} is newer than this imgpipe reads ({FORMAT_VERSION}); use imgpipe {} or later",
            manifest.format_version, manifest.imgpipe_version
        )));
    }
    let mut listed = BTreeSet::new();
    for e in &manifest.entries {
        let name = check_entry_path(e.path.as_bytes())?;
        if !listed.insert(name.clone()) || name == MANIFEST {
            return Err(BackupError::NotABackup(format!(
                "{MANIFEST} lists `{name}` twice"
            )));
        }
        match sizes.get(&name) {
            None => {
                return Err(BackupError::Truncated(format!(
                    "entry `{name}` is in the manifest but not in the archive"
                )));
            }
            Some(&size) if size != e.size => {
                return Err(BackupError::CorruptEntry {
                    entry: name,
                    reason: format!("{size} bytes in the archive, {} in the manifest", e.size),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = sizes.keys().find(|k| !listed.contains(*k)) {
        return Err(BackupError::CorruptEntry {
            entry: extra.clone(),
            reason: "not listed in the manifest".to_string(),
        });
    }
    if !listed.contains(DATABASE) {
        return Err(BackupError::NotABackup(format!(
            "no {DATABASE} in the manifest"
        )));
    }
    Ok(manifest)
}

/// The second pass: every entry's bytes through sha256, each written below `root` when
/// `keep` says so (to a sink otherwise), and compared with the manifest as it ends.
fn extract(
    archive: &Path,
    manifest: &Manifest,
    root: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<(), BackupError> {
    let expected: BTreeMap<&str, &ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let file = fs::File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    for entry in tar.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        // The scan checked every name; checking again costs nothing and keeps this pass
        // safe on its own (the file could have been swapped in between).
        let name = check_entry_path(&entry.path_bytes())?;
        if !entry.header().entry_type().is_file() {
            return Err(BackupError::UnsafeEntry {
                reason: entry_kind(entry.header().entry_type()).to_string(),
                entry: name,
            });
        }
        if name == MANIFEST {
            continue;
        }
        let Some(want) = expected.get(name.as_str()) else {
            return Err(BackupError::CorruptEntry {
                entry: name,
                reason: "not listed in the manifest".to_string(),
            });
        };
        let corrupt = |reason: String| BackupError::CorruptEntry {
            entry: name.clone(),
            reason,
        };
        let mtime = entry.header().mtime().ok();
        let (count, sha256) = if keep(&name) {
            let dest = root.join(&name);
            let dir = parent_of(&dest);
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            let out = options.open(&dest).map_err(io_err(&dest))?;
            // Owner-only, as the store makes its files.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                out.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(io_err(&dest))?;
            }
            let mut writer = Hashing::new(BufWriter::new(out));
            io::copy(&mut entry, &mut writer).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => corrupt(format!("cut short: {e}")),
                _ => io_err(&dest)(e),
            })?;
            let (count, sha256) = (writer.count, hex::encode(writer.hash.finalize()));
            let out = writer
                .inner
                .into_inner()
                .map_err(|e| io_err(&dest)(e.into_error()))?;
            // Kept, so the store's etags (size and time) stay what clients saw.
            if let Some(secs) = mtime {
                let _ = out.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
            }
            out.sync_data().map_err(io_err(&dest))?;
            (count, sha256)
        } else {
            let mut reader = Hashing::new(&mut entry);
            io::copy(&mut reader, &mut io::sink()).map_err(|e| corrupt(e.to_string()))?;
            reader.finish()
        };
        if count != want.size {
            return Err(BackupError::Truncated(format!(
                "entry `{name}` holds {count} of its {} bytes",
                want.size
            )));
        }
        if sha256 != want.sha256 {
            return Err(corrupt(format!(
                "sha256 {sha256}, but the manifest says {}",
                want.sha256
            )));
        }
    }
    Ok(())
}

/// Opens a restored database and checks it against the manifest.
fn check_database(path: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(db_err(path))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(db_err(path))?;
    if check != "ok" {
        return Err(BackupError::Database {
            path: path.to_path_buf(),
            message: format!("integrity check failed: {check}"),
        });
    }
    let (records, renditions) = count_records(&conn).map_err(db_err(path))?;
    for (what, expected, found) in [
        ("records", manifest.records, records),
        ("renditions", manifest.renditions, renditions),
    ] {
        if expected != found {
            return Err(BackupError::RecordCountMismatch {
                what,
                expected,
                found,
            });
        }
    }
    Ok(())
}

/// Checks an archive as a restore would, writing only its database to a temporary
/// directory (to open it and count the records).
pub fn verify(archive: &Path) -> Result<Manifest, BackupError> {
    let manifest = scan(archive)?;
    let tmp = tempfile::tempdir().map_err(io_err(&std::env::temp_dir()))?;
    extract(archive, &manifest, tmp.path(), |name| name == DATABASE)?;
    check_database(&tmp.path().join(DATABASE), &manifest)?;
    Ok(manifest)
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Restores `archive` as the data directory `data`. `data` must be missing or empty unless
/// `force`, which replaces it whole. Everything is extracted and checked beside `data` first
/// and renamed into place at the end, so a failure leaves `data` as it was.
pub fn restore(
    archive: &Path,
    data: &Path,
    force: bool,
    key: AuthKey,
) -> Result<Manifest, BackupError> {
    // Absolute, so `.` or `dir/..` still name a parent and a file name to rename.
    let data = std::path::absolute(data).map_err(io_err(data))?;
    if data.exists() && !data.is_dir() {
        return Err(BackupError::Io {
            path: data.clone(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ),
        });
    }
    let empty = is_empty_dir(&data)?;
    if !empty && !force {
        return Err(BackupError::TargetNotEmpty(data));
    }
    let manifest = scan(archive)?;

    let name = file_name_of(&data)?;
    let parent = parent_of(&data);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    // Owner-only, as `imgpipe` makes a data directory; the mode outlives the rename.
    let prefix = format!(".{name}.restore-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o700));
    }
    let staging = builder.tempdir_in(parent).map_err(io_err(parent))?;
    extract(archive, &manifest, staging.path(), |name| {
        key == AuthKey::FromArchive || name != AUTH_KEY
    })?;
    check_database(&staging.path().join(DATABASE), &manifest)?;

    if empty {
        // rename(2) replaces an empty directory.
        fs::rename(staging.path(), &data).map_err(io_err(&data))?;
    } else {
        // The old directory moves aside onto an empty one of our own, whose removal then
        // takes the old contents with it; if the new one cannot follow, it moves back.
        let aside = tempfile::Builder::new()
            .prefix(&format!(".{name}.replaced-"))
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        fs::rename(&data, aside.path()).map_err(io_err(&data))?;
        if let Err(e) = fs::rename(staging.path(), &data) {
            let _ = fs::rename(aside.path(), &data);
            let _ = aside.keep();
            return Err(io_err(&data)(e));
        }
        if let Err(e) = aside.close() {
            tracing::warn!(error = %e, "the replaced data directory could not be removed entirely");
        }
    }
    // Renamed away: nothing is left for the guard to remove.
    let _ = staging.keep();
    sync_dir(parent)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entry_names_that_could_escape_are_refused() {
        for bad in [
            &b"../evil"[..],
            b"objects/../../evil",
            b"/etc/passwd",
            b"objects//x",
            b"./x",
            b"a\\..\\b",
            b"",
            b"\xff",
        ] {
            assert!(
                matches!(check_entry_path(bad), Err(BackupError::UnsafeEntry { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_entry_path(b"objects/uploads/u/1/a.jpg").unwrap(),
            "objects/uploads/u/1/a.jpg"
        );
    }

    #[test]
    fn objects_exclude_work_and_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        for f in [
            "uploads/u/1/a.jpg",
            "renditions/u/1/thumb.webp",
            ".meta/uploads/u/1/a.jpg.json",
            "work/1/x.qoi",
            "uploads/u/1/.tmpAbc",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        let mut out = Vec::new();
        collect_objects(&root, OBJECTS, &mut out, 0).unwrap();
        let names: Vec<_> = out.into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            [
                "objects/.meta/uploads/u/1/a.jpg.json",
                "objects/renditions/u/1/thumb.webp",
                "objects/uploads/u/1/a.jpg"
            ]
        );
    }
}
