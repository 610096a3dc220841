//! The colour-managed test photos (`make_photos.py`): made once per test binary with the
//! Python tools `scripts/setup` installs (Pillow's ImageCms for the profiles and libavif for
//! AVIF, pillow-heif for HEIC), never committed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn cache_dir() -> PathBuf {
    match std::env::var_os("IMGPIPE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/imgpipe"),
    }
}

/// The venv's Python, which has Pillow and pillow-heif (scripts/setup).
pub fn python() -> PathBuf {
    let venv = cache_dir().join("venv/bin/python");
    assert!(
        venv.is_file(),
        "{} is missing: run `bash scripts/setup` first (it installs Pillow and pillow-heif)",
        venv.display()
    );
    venv
}

/// The folder with the generated photos: truth.png, p3.jpg, adobe.jpg, p3.png, p3.webp,
/// p3-untagged.jpg, p3.heic, srgb.heic, p3-rot6.heic, p3-grid.heic, p3-10bit.heic,
/// p3.avif, srgb.avif, p3-rot6.avif, p3-grid.avif, srgb-422.avif, gray.avif with gray.png,
/// soft.avif with soft.png, cmyk.jpg with cmyk-truth.png and test-cmyk.icc, transparent.png
/// and display-p3.icc.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../imaging/tests/support/make_photos.py");
        let text = std::fs::read(&script).expect("reading make_photos.py");
        // Made once per version of the script, in the build's own temporary directory, and
        // shared by every test process (nextest runs each test in its own): not once per
        // process in /tmp, where nothing removed them.
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&text, &mut hash);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join(format!("photos-{:016x}", std::hash::Hasher::finish(&hash)));
        if dir.is_dir() {
            return dir;
        }
        // Made beside it under a name of this process, then renamed into place whole: a
        // process that finds the folder finds every file in it.
        let partial = root.join(format!("photos-partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        let status = Command::new(python())
            .arg(&script)
            .arg(&partial)
            .status()
            .expect("running make_photos.py");
        assert!(status.success(), "make_photos.py failed");
        if std::fs::rename(&partial, &dir).is_err() {
            // Another process got there first; its folder is as good.
            let _ = std::fs::remove_dir_all(&partial);
            assert!(dir.is_dir(), "{} was not made", dir.display());
        }
        dir
    })
}

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}
