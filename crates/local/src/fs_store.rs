//! A directory as the object store. Keys map to paths below the root and can never leave it;
//! writes go to a temporary file in the same directory and are renamed into place, so a
//! reader never sees half an object.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use pipeline::PortError;
use pipeline::model::OriginalFile;
use pipeline::ports::{ObjectInfo, ObjectStore, PutOptions};

/// User metadata lives beside the objects, under this folder of the root, so listing the
/// object keys never shows it.
const META_DIR: &str = ".meta";
/// Objects kept by reference ([`FsStore::put_reference`]): a JSON file per key naming the
/// file outside the store that holds the bytes.
const REFS_DIR: &str = ".refs";

pub struct FsStore {
    root: PathBuf,
}

fn port_err(key: &str, e: io::Error) -> PortError {
    match e.kind() {
        io::ErrorKind::NotFound => PortError::NotFound(key.to_string()),
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            PortError::Transient(format!("{key}: {e}"))
        }
        _ => PortError::Permanent(format!("{key}: {e}")),
    }
}

/// Runs blocking file work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PortError> + Send + 'static,
) -> Result<T, PortError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PortError::Permanent(format!("file worker stopped: {e}")))?
}

/// Checks a key segment by segment: no empty, `.` or `..` segments, no backslashes or NULs,
/// nothing absolute.
pub fn check_key(key: &str) -> Result<(), PortError> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.contains(['\\', '\0'])
        || key.split('/').any(|seg| {
            seg.is_empty() || seg == "." || seg == ".." || seg == META_DIR || seg == REFS_DIR
        });
    if bad {
        return Err(PortError::Permanent(format!(
            "`{key}` is not a valid object key"
        )));
    }
    Ok(())
}

impl FsStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore, PortError> {
        let root = root.into();
        create_private_dir(&root).map_err(|e| port_err(&root.display().to_string(), e))?;
        Ok(FsStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind a key (which need not exist).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, PortError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.root.join(META_DIR).join(format!("{key}.json"))
    }

    fn ref_path(&self, key: &str) -> PathBuf {
        self.root.join(REFS_DIR).join(format!("{key}.json"))
    }

    /// Makes `key` an object whose bytes are the file `src` where it lies, not a copy: the
    /// store records its absolute path, size and modification time, and reads it only while
    /// those are unchanged. Deleting the object never touches the file.
    pub fn put_reference(&self, key: &str, src: &Path) -> Result<OriginalFile, PortError> {
        check_key(key)?;
        let path = fs::canonicalize(src).map_err(|e| port_err(key, e))?;
        let meta = fs::metadata(&path).map_err(|e| port_err(key, e))?;
        if !meta.is_file() {
            return Err(PortError::Permanent(format!(
                "{}: not a regular file",
                path.display()
            )));
        }
        let original = OriginalFile {
            path: path
                .to_str()
                .ok_or_else(|| {
                    PortError::Permanent(format!("{}: the path is not UTF-8", path.display()))
                })?
                .to_string(),
            size: meta.len(),
            modified_ns: modified_ns(&meta),
        };
        let json =
            serde_json::to_vec(&original).map_err(|e| PortError::Permanent(e.to_string()))?;
        write_atomic(&self.ref_path(key), &json).map_err(|e| port_err(key, e))?;
        Ok(original)
    }

    /// The file `key` is kept by reference as, if it is.
    pub fn reference_of(&self, key: &str) -> Option<OriginalFile> {
        check_key(key).ok()?;
        let body = fs::read(self.ref_path(key)).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// The file holding `key`'s bytes: its own file in the store, or the file it refers to,
    /// checked to be as it was recorded.
    pub fn file_of(&self, key: &str) -> Result<PathBuf, PortError> {
        self.resolve(key).map(|(path, _)| path)
    }

    fn resolve(&self, key: &str) -> Result<(PathBuf, fs::Metadata), PortError> {
        let own = self.path_of(key)?;
        match fs::metadata(&own) {
            Ok(meta) if meta.is_file() => return Ok((own, meta)),
            Ok(_) => return Err(PortError::NotFound(key.to_string())),
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(port_err(key, e)),
            Err(_) => {}
        }
        let body = match fs::read(self.ref_path(key)) {
            Ok(b) => b,
            Err(e) => return Err(port_err(key, e)),
        };
        let original: OriginalFile = serde_json::from_slice(&body)
            .map_err(|e| PortError::Permanent(format!("{key}: unreadable reference: {e}")))?;
        let path = PathBuf::from(&original.path);
        let meta = fs::metadata(&path).map_err(|e| {
            PortError::Permanent(format!(
                "the original {} is gone ({e}); imgpipe kept it by reference, not a copy",
                original.path
            ))
        })?;
        if meta.len() != original.size || modified_ns(&meta) != original.modified_ns {
            return Err(PortError::Permanent(format!(
                "the original {} has changed since it was processed (size or modification time); imgpipe kept it by reference, not a copy",
                original.path
            )));
        }
        Ok((path, meta))
    }

    /// Copies an object to a path outside the store, atomically, creating the folders it
    /// goes in. A copy, not a hard link: an editor that saves the exported file in place must
    /// not change the stored rendition. With `replace` false a file already at `dest` is left
    /// as it is and `Ok(false)` is returned; the check and the write are one step (a link
    /// that fails if the name exists), so a file made meanwhile is not overwritten either.
    pub fn export(&self, key: &str, dest: &Path, replace: bool) -> Result<bool, PortError> {
        let src = self.path_of(key)?;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(|e| port_err(key, e))?;
        let tmp = temp_in(dir).map_err(|e| port_err(key, e))?;
        fs::copy(&src, tmp.path()).map_err(|e| port_err(key, e))?;
        // An exported rendition is the user's ordinary file, not the store's private one.
        set_mode(tmp.path(), 0o644).map_err(|e| port_err(key, e))?;
        if replace {
            tmp.persist(dest).map_err(|e| port_err(key, e.error))?;
            return Ok(true);
        }
        match tmp.persist_noclobber(dest) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(port_err(key, e.error)),
        }
    }

    /// Removes every object under `folder` (a key prefix ending in `/`), blocking: for
    /// tidying up while the data directory is opened, before any job runs.
    pub fn remove_folder(&self, folder: &str) -> Result<(), PortError> {
        let folder = folder.trim_end_matches('/');
        let dir = self.path_of(folder)?;
        for path in [
            dir,
            self.root.join(META_DIR).join(folder),
            self.root.join(REFS_DIR).join(folder),
        ] {
            match fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(port_err(folder, e)),
            }
        }
        Ok(())
    }

    /// Puts a local file into the store (copied, never moved: the user's file stays theirs).
    pub fn put_file(&self, key: &str, src: &Path) -> Result<u64, PortError> {
        let dest = self.path_of(key)?;
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| port_err(key, e))?;
        let tmp = temp_in(dir).map_err(|e| port_err(key, e))?;
        let size = fs::copy(src, tmp.path()).map_err(|e| port_err(key, e))?;
        // fs::copy carries the source's mode over; the store's copy is private whatever it was.
        set_mode(tmp.path(), 0o600).map_err(|e| port_err(key, e))?;
        tmp.persist(&dest).map_err(|e| port_err(key, e.error))?;
        Ok(size)
    }

    /// Puts what `reader` yields into the store as `key`, through a temporary file, and
    /// returns its size; `None`, and nothing stored, when it yields more than `max_bytes`.
    /// For a file the caller opened and checked itself: copying from the open descriptor, not
    /// from a path, means what was checked is what is copied.
    pub fn put_reader(
        &self,
        key: &str,
        reader: impl io::Read,
        max_bytes: u64,
    ) -> Result<Option<u64>, PortError> {
        let dest = self.path_of(key)?;
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| port_err(key, e))?;
        let mut tmp = temp_in(dir).map_err(|e| port_err(key, e))?;
        // One byte past the limit is enough to know the source is over it.
        let mut limited = reader.take(max_bytes.saturating_add(1));
        let size = io::copy(&mut limited, &mut tmp).map_err(|e| port_err(key, e))?;
        if size > max_bytes {
            return Ok(None);
        }
        tmp.persist(&dest).map_err(|e| port_err(key, e.error))?;
        Ok(Some(size))
    }

    /// An empty temporary file inside the store (hidden from listings), for streaming a large
    /// object in without holding it in memory; [`FsStore::persist`] puts it in place, and
    /// dropping it instead removes it.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, PortError> {
        temp_in(&self.root).map_err(|e| port_err(&self.root.display().to_string(), e))
    }

    /// Writes, reads back and removes a small file in the store's root (a temporary one,
    /// which listings never show), for health checks: a missing, read-only or full directory
    /// fails here rather than on the next upload.
    pub fn probe(&self) -> Result<(), PortError> {
        const PROBE: &[u8] = b"imgpipe health probe\n";
        // The I/O error itself, which is what an operator reading `/health` needs.
        let what = |e: io::Error| PortError::Permanent(format!("{}: {e}", self.root.display()));
        let mut tmp = temp_in(&self.root).map_err(what)?;
        tmp.write_all(PROBE).map_err(what)?;
        tmp.as_file().sync_data().map_err(what)?;
        let mut back = Vec::with_capacity(PROBE.len());
        tmp.reopen()
            .and_then(|mut f| f.read_to_end(&mut back))
            .map_err(what)?;
        if back != PROBE {
            return Err(PortError::Permanent(format!(
                "{}: a probe file read back differently",
                self.root.display()
            )));
        }
        tmp.close().map_err(what)
    }

    /// Moves a file made by [`FsStore::temp_file`] into place as `key`, with user metadata,
    /// once its data is on disk; returns the etag. The rename is atomic, so readers see the
    /// old object or the whole new one.
    pub fn persist(
        &self,
        key: &str,
        tmp: tempfile::NamedTempFile,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, PortError> {
        self.put_in_place(key, tmp, metadata, false)
            .map(|etag| etag.unwrap_or_default())
    }

    /// [`FsStore::persist`], but only when `key` does not exist yet: `None` (and the temporary
    /// file removed) when it does. The check and the move are one atomic step, so of several
    /// writers racing for one key exactly one wins: an upload form's single use rests on it.
    pub fn persist_new(
        &self,
        key: &str,
        tmp: tempfile::NamedTempFile,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<String>, PortError> {
        self.put_in_place(key, tmp, metadata, true)
    }

    fn put_in_place(
        &self,
        key: &str,
        tmp: tempfile::NamedTempFile,
        metadata: &BTreeMap<String, String>,
        only_new: bool,
    ) -> Result<Option<String>, PortError> {
        let dest = self.path_of(key)?;
        let dir = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| port_err(key, e))?;
        tmp.as_file().sync_all().map_err(|e| port_err(key, e))?;
        if only_new && fs::symlink_metadata(&dest).is_ok() {
            return Ok(None);
        }
        // Metadata first: whoever sees the object must see what it says about its recipe.
        // (Racing writers of one key hold one signed form, so they write the same metadata.)
        let meta_path = self.meta_path(key);
        if metadata.is_empty() {
            let _ = fs::remove_file(&meta_path);
        } else {
            let json =
                serde_json::to_vec(metadata).map_err(|e| PortError::Permanent(e.to_string()))?;
            write_atomic(&meta_path, &json).map_err(|e| port_err(key, e))?;
        }
        if only_new {
            match tmp.persist_noclobber(&dest) {
                Ok(_) => {}
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
                Err(e) => return Err(port_err(key, e.error)),
            }
        } else {
            tmp.persist(&dest).map_err(|e| port_err(key, e.error))?;
        }
        let meta = fs::metadata(&dest).map_err(|e| port_err(key, e))?;
        Ok(Some(etag_of(&meta)))
    }
}

/// A temporary file beside its destination, owner-only (0600, tempfile's default): the
/// store's objects are private to whoever runs imgpipe; exports are made 0644 after.
fn temp_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new().tempfile_in(dir)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Creates `dir` and its missing parents owner-only (0700): what a data directory holds
/// (originals, records, the server key) is nobody else's to read. An existing directory keeps
/// the mode its owner gave it.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn write_atomic(dest: &Path, body: &[u8]) -> io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    fs::create_dir_all(dir)?;
    let mut tmp = temp_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_data()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

fn modified_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Size and modification time identify a version well enough locally, without hashing.
fn etag_of(meta: &fs::Metadata) -> String {
    format!("\"{:x}-{:x}\"", meta.len(), modified_ns(meta))
}

fn content_type_of(key: &str) -> Option<String> {
    let ext = key.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(
        match ext.as_str() {
            "jpg" | "jpeg" => "image/jpeg",
            "png" => "image/png",
            "webp" => "image/webp",
            "avif" => "image/avif",
            "heic" | "hif" => "image/heic",
            "heif" => "image/heif",
            "gif" => "image/gif",
            "json" => "application/json",
            _ => return None,
        }
        .to_string(),
    )
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>, depth: usize) -> io::Result<()> {
    // Keys have at most a handful of segments; the bound stops a symlink loop.
    if depth > 32 {
        return Ok(());
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if depth == 0 && (entry.file_name() == META_DIR || entry.file_name() == REFS_DIR) {
                continue;
            }
            walk(&path, root, out, depth + 1)?;
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
            && let Some(key) = rel.to_str()
            && !key.split('/').any(|s| s.starts_with(".tmp"))
        {
            out.push(key.to_string());
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, PortError> {
        let (_, meta) = self.resolve(key)?;
        let meta_path = self.meta_path(key);
        let key = key.to_string();
        blocking(move || {
            let metadata: BTreeMap<String, String> = fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            Ok(ObjectInfo {
                size: meta.len(),
                etag: Some(etag_of(&meta)),
                content_type: content_type_of(&key),
                metadata,
            })
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        let (path, _) = self.resolve(key)?;
        let key = key.to_string();
        blocking(move || fs::read(&path).map_err(|e| port_err(&key, e))).await
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, PortError> {
        let (path, _) = self.resolve(key)?;
        let key = key.to_string();
        blocking(move || {
            let mut f = fs::File::open(&path).map_err(|e| port_err(&key, e))?;
            f.seek(SeekFrom::Start(start))
                .map_err(|e| port_err(&key, e))?;
            let mut buf = Vec::new();
            f.take(len)
                .read_to_end(&mut buf)
                .map_err(|e| port_err(&key, e))?;
            Ok(buf)
        })
        .await
    }

    async fn put(&self, key: &str, body: Vec<u8>, opts: PutOptions) -> Result<String, PortError> {
        let path = self.path_of(key)?;
        let meta_path = self.meta_path(key);
        let key = key.to_string();
        blocking(move || {
            write_atomic(&path, &body).map_err(|e| port_err(&key, e))?;
            if !opts.metadata.is_empty() {
                let json = serde_json::to_vec(&opts.metadata)
                    .map_err(|e| PortError::Permanent(e.to_string()))?;
                write_atomic(&meta_path, &json).map_err(|e| port_err(&key, e))?;
            }
            let meta = fs::metadata(&path).map_err(|e| port_err(&key, e))?;
            Ok(etag_of(&meta))
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        let (src, _) = self.resolve(from)?;
        let dest = self.path_of(to)?;
        let from = from.to_string();
        blocking(move || {
            if !src.is_file() {
                return Err(PortError::NotFound(from));
            }
            let dir = dest
                .parent()
                .ok_or_else(|| PortError::Permanent("no parent directory".into()))?;
            fs::create_dir_all(dir).map_err(|e| port_err(&from, e))?;
            let tmp = temp_in(dir).map_err(|e| port_err(&from, e))?;
            fs::copy(&src, tmp.path()).map_err(|e| port_err(&from, e))?;
            set_mode(tmp.path(), 0o600).map_err(|e| port_err(&from, e))?;
            tmp.persist(&dest).map_err(|e| port_err(&from, e.error))?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        let path = self.path_of(key)?;
        let meta_path = self.meta_path(key);
        // A reference goes, never the file it names: that is the user's own.
        let ref_path = self.ref_path(key);
        let root = self.root.clone();
        let key = key.to_string();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(port_err(&key, e)),
            }
            let _ = fs::remove_file(meta_path);
            if fs::remove_file(&ref_path).is_ok() {
                // Its folders too, as for objects below.
                let refs_root = root.join(REFS_DIR);
                let mut dir = ref_path.parent().map(Path::to_path_buf);
                while let Some(d) = dir {
                    if d == refs_root || fs::remove_dir(&d).is_err() {
                        break;
                    }
                    dir = d.parent().map(Path::to_path_buf);
                }
            }
            // Tidy now-empty folders so a deleted image leaves nothing behind.
            let mut dir = path.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == root || fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let root = self.root.clone();
        // Walk only the folder the prefix names, not the whole store.
        let dir = match prefix.rfind('/') {
            Some(i) => {
                check_key(&prefix[..i])?;
                root.join(&prefix[..i])
            }
            None => root.clone(),
        };
        let prefix = prefix.to_string();
        blocking(move || {
            let mut keys = Vec::new();
            let depth = dir
                .strip_prefix(&root)
                .map(|p| p.components().count())
                .unwrap_or(0);
            walk(&dir, &root, &mut keys, depth).map_err(|e| port_err(&prefix, e))?;
            // Objects kept by reference are objects too.
            let refs_root = root.join(REFS_DIR);
            if let Ok(rel) = dir.strip_prefix(&root) {
                let mut refs = Vec::new();
                walk(&refs_root.join(rel), &refs_root, &mut refs, depth)
                    .map_err(|e| port_err(&prefix, e))?;
                keys.extend(
                    refs.into_iter()
                        .filter_map(|k| k.strip_suffix(".json").map(str::to_string)),
                );
            }
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_leaves_nothing_behind_and_fails_without_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("objects")).unwrap();
        store.probe().unwrap();
        assert_eq!(fs::read_dir(store.root()).unwrap().count(), 0);
        fs::remove_dir(store.root()).unwrap();
        let err = store.probe().unwrap_err();
        assert!(err.to_string().contains("objects"), "{err}");
    }

    #[tokio::test]
    async fn put_get_range_list_copy_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let mut meta = BTreeMap::new();
        meta.insert("preset".to_string(), "web".to_string());
        store
            .put(
                "uploads/u/1/a.jpg",
                b"0123456789".to_vec(),
                PutOptions {
                    metadata: meta,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(store.get("uploads/u/1/a.jpg").await.unwrap(), b"0123456789");
        assert_eq!(
            store.get_range("uploads/u/1/a.jpg", 2, 3).await.unwrap(),
            b"234"
        );
        assert_eq!(
            store.get_range("uploads/u/1/a.jpg", 8, 100).await.unwrap(),
            b"89"
        );
        let info = store.head("uploads/u/1/a.jpg").await.unwrap();
        assert_eq!(info.size, 10);
        assert_eq!(info.metadata.get("preset").map(String::as_str), Some("web"));
        assert_eq!(info.content_type.as_deref(), Some("image/jpeg"));

        store
            .copy("uploads/u/1/a.jpg", "quarantine/u/1/a.jpg")
            .await
            .unwrap();
        store
            .put("uploads/u/2/b.png", vec![1], PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            store.list("uploads/").await.unwrap(),
            ["uploads/u/1/a.jpg", "uploads/u/2/b.png"]
        );
        assert_eq!(
            store.list("uploads/u/1").await.unwrap(),
            ["uploads/u/1/a.jpg"]
        );
        assert_eq!(
            store.list("").await.unwrap().len(),
            3,
            "metadata files are not objects"
        );

        store.delete("uploads/u/1/a.jpg").await.unwrap();
        store.delete("uploads/u/1/a.jpg").await.unwrap();
        assert!(matches!(
            store.get("uploads/u/1/a.jpg").await,
            Err(PortError::NotFound(_))
        ));
        assert!(
            !dir.path().join("uploads/u/1").exists(),
            "empty folders are tidied"
        );
        assert_eq!(
            store.get("quarantine/u/1/a.jpg").await.unwrap(),
            b"0123456789"
        );
    }

    #[tokio::test]
    async fn exports_are_independent_readable_copies() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).unwrap();
        store
            .put(
                "renditions/u/1/thumb.webp",
                b"pixels".to_vec(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let dest = dir.path().join("thumb.webp");
        assert!(
            store
                .export("renditions/u/1/thumb.webp", &dest, true)
                .unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = fs::metadata(&dest).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o644);
            assert_eq!(meta.nlink(), 1, "a copy, not a hard link");
            // The store's own copy and the store itself are private.
            let stored = store.path_of("renditions/u/1/thumb.webp").unwrap();
            assert_eq!(
                fs::metadata(stored).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                fs::metadata(store.root()).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        fs::write(&dest, b"edited").unwrap();
        assert_eq!(
            store.get("renditions/u/1/thumb.webp").await.unwrap(),
            b"pixels"
        );
        // Without `replace` the file there stays, and no temporary file is left beside it.
        assert!(
            !store
                .export("renditions/u/1/thumb.webp", &dest, false)
                .unwrap()
        );
        assert_eq!(fs::read(&dest).unwrap(), b"edited");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "store and thumb.webp"
        );
        // Into a folder that is not there yet.
        let nested = dir.path().join("a/b/thumb.webp");
        assert!(
            store
                .export("renditions/u/1/thumb.webp", &nested, false)
                .unwrap()
        );
        assert_eq!(fs::read(&nested).unwrap(), b"pixels");
    }

    #[tokio::test]
    async fn an_object_kept_by_reference_reads_the_file_while_it_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).unwrap();
        let photo = dir.path().join("photo.jpg");
        fs::write(&photo, b"0123456789").unwrap();
        let key = "uploads/u/1/photo.jpg";
        let original = store.put_reference(key, &photo).unwrap();
        assert_eq!(original.size, 10);
        assert_eq!(Path::new(&original.path), fs::canonicalize(&photo).unwrap());
        assert!(
            !store.path_of(key).unwrap().exists(),
            "no copy in the store"
        );
        assert_eq!(store.get(key).await.unwrap(), b"0123456789");
        assert_eq!(store.get_range(key, 2, 3).await.unwrap(), b"234");
        assert_eq!(store.head(key).await.unwrap().size, 10);
        assert_eq!(store.list("uploads/u/").await.unwrap(), [key]);
        store.copy(key, "quarantine/u/1/photo.jpg").await.unwrap();
        assert_eq!(
            fs::read(store.path_of("quarantine/u/1/photo.jpg").unwrap()).unwrap(),
            b"0123456789",
            "a copy out of a reference holds the bytes"
        );

        // Changed under it: refused by name, not read as the same original.
        fs::write(&photo, b"edited!").unwrap();
        let e = store.get(key).await.unwrap_err().to_string();
        assert!(e.contains("has changed since it was processed"), "{e}");
        fs::remove_file(&photo).unwrap();
        let e = store.get(key).await.unwrap_err().to_string();
        assert!(e.contains("is gone"), "{e}");

        // Deleting the object removes the reference, never the file it names.
        fs::write(&photo, b"0123456789").unwrap();
        let key2 = "uploads/u/2/photo.jpg";
        store.put_reference(key2, &photo).unwrap();
        store.delete(key2).await.unwrap();
        assert!(photo.exists());
        assert!(
            !dir.path().join("store/.refs/uploads/u/2").exists(),
            "no empty folder left"
        );
        assert!(matches!(
            store.get(key2).await.unwrap_err(),
            PortError::NotFound(_)
        ));
    }

    #[tokio::test]
    async fn streamed_objects_are_persisted_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let mut tmp = store.temp_file().unwrap();
        tmp.write_all(b"streamed").unwrap();
        assert!(
            store.list("").await.unwrap().is_empty(),
            "temp files are hidden"
        );
        let mut meta = BTreeMap::new();
        meta.insert("preset".to_string(), "web".to_string());
        let etag = store.persist("uploads/u/1/a.jpg", tmp, &meta).unwrap();
        let info = store.head("uploads/u/1/a.jpg").await.unwrap();
        assert_eq!(info.etag.as_deref(), Some(etag.as_str()));
        assert_eq!(info.metadata, meta);
        assert_eq!(store.get("uploads/u/1/a.jpg").await.unwrap(), b"streamed");
        assert_eq!(store.list("").await.unwrap(), ["uploads/u/1/a.jpg"]);
        assert!(
            store
                .persist("../x", store.temp_file().unwrap(), &meta)
                .is_err()
        );
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).unwrap();
        for key in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a\\..\\b",
            "",
            "./a",
            ".meta/x",
            "a/\0",
        ] {
            assert!(
                store
                    .put(key, vec![1], PutOptions::default())
                    .await
                    .is_err(),
                "{key:?}"
            );
            assert!(store.get(key).await.is_err(), "{key:?}");
        }
        assert!(!dir.path().join("x").exists());
    }
}
