//! The image files an `imgpipe process` run takes from the paths it is given.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Extensions picked up when a folder is given; files named explicitly are always tried, and
/// their magic bytes decide what they are.
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff", "bmp", "avif", "heic", "heif",
    "hif",
    // Camera RAW files are picked up too, so a folder's RAWs are reported as rejected (by
    // name, from their magic bytes) rather than passed over without a word.
    "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "dng", "raf", "orf", "rw2", "pef",
    "srw", "3fr", "iiq", "dcr", "kdc", "erf", "mef", "mrw", "x3f", "rwl",
];

pub(super) fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
        if depth > 64 {
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                walk(&path, out, depth + 1)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            walk(input, &mut files, 0)?;
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// Output stems, unique within the run: `a.jpg` and `x/a.png` become `a` and `a-2`.
pub(super) fn unique_stems(files: &[PathBuf]) -> Vec<String> {
    let mut seen = HashSet::new();
    files
        .iter()
        .map(|f| {
            let stem = pipeline::keys::sanitise_name(
                &f.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            let mut candidate = stem.clone();
            let mut n = 2;
            while !seen.insert(candidate.clone()) {
                candidate = format!("{stem}-{n}");
                n += 1;
            }
            candidate
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_unique() {
        let files = [
            PathBuf::from("a.jpg"),
            PathBuf::from("x/a.png"),
            PathBuf::from("b c.jpg"),
        ];
        assert_eq!(unique_stems(&files), ["a", "a-2", "b_c"]);
    }
}
