//! The server secret, DIR/auth.key: 32 random bytes, readable by its owner only, made on
//! first use. It signs local tokens (`imgpipe token`) and, through a derived key, the upload
//! forms and download URLs of `imgpipe serve`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub const FILE_NAME: &str = "auth.key";
const LEN: usize = 32;

pub fn path(data: &Path) -> PathBuf {
    data.join(FILE_NAME)
}

/// Reads DIR/auth.key, creating it (and DIR) if missing. Creation is atomic and never
/// replaces a key another process made first: tokens already handed out stay valid.
pub fn load_or_create(data: &Path) -> Result<Vec<u8>> {
    let path = path(data);
    match fs::read(&path) {
        Ok(key) => return checked(&path, key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    local::create_private_dir(data).with_context(|| format!("creating {}", data.display()))?;
    let mut key = vec![0u8; LEN];
    random_bytes(&mut key)?;
    // tempfile creates owner-only (0600) files; written whole, then linked into place only
    // if no key is there yet, so a reader never sees a partial key.
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth.key")
        .tempfile_in(data)
        .with_context(|| format!("creating a key file in {}", data.display()))?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => {
            eprintln!("imgpipe: created a new server key {}", path.display());
            Ok(key)
        }
        // Another process won the race: use its key.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            checked(&path, key)
        }
        Err(e) => Err(e.error).with_context(|| format!("writing {}", path.display())),
    }
}

fn checked(path: &Path, key: Vec<u8>) -> Result<Vec<u8>> {
    if key.len() < LEN {
        bail!(
            "{} holds {} bytes, fewer than the {LEN} a key needs; delete it to make a new one \
             (tokens signed with it stop working)",
            path.display(),
            key.len()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the server key is readable by others; chmod 600 it");
        }
    }
    Ok(key)
}

fn random_bytes(buf: &mut [u8]) -> Result<()> {
    // The kernel's CSPRNG; std has no public interface to it.
    let mut f = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    f.read_exact(buf).context("reading /dev/urandom")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_owner_only_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = load_or_create(&data).unwrap();
        assert_eq!(a.len(), LEN);
        assert_ne!(a, vec![0u8; LEN]);
        assert_eq!(load_or_create(&data).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path(&data)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(path(&data), b"short").unwrap();
        assert!(load_or_create(&data).is_err());
    }
}
