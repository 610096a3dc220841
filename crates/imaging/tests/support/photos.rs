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
        let dir = std::env::temp_dir().join(format!("imgpipe-photos-{}", std::process::id()));
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../imaging/tests/support/make_photos.py");
        let status = Command::new(python())
            .arg(&script)
            .arg(&dir)
            .status()
            .expect("running make_photos.py");
        assert!(status.success(), "make_photos.py failed");
        dir
    })
}

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}
