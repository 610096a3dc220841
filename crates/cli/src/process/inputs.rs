//! The image files an `imgpipe process` run takes from the paths it is given, and the names
//! their renditions will have under `--out`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use imaging::{Format, OutputFormat};
use pipeline::Rendition;

use super::naming::{Template, Vars};

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

/// One file to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Its folder relative to the folder argument it was found in; empty for a file named on
    /// the command line.
    pub dir: PathBuf,
    /// `path` with links and `..` resolved (`path` itself when that fails, as for `-`): what
    /// tells two names of one file apart from two files.
    pub canonical: PathBuf,
}

/// What the folders held besides inputs.
#[derive(Debug, Default)]
pub struct Found {
    pub inputs: Vec<Input>,
    /// Files under `--out` named like this recipe's outputs: an earlier run's renditions.
    pub own_outputs: usize,
}

/// Folders a walk does not enter or take files from.
pub struct Exclude<'a> {
    /// The data directory: its objects are the pipeline's copies.
    pub data: &'a Path,
    /// `--out`, with the names its outputs have.
    pub out: &'a Path,
    pub template: &'a Template,
    pub renditions: &'a [Rendition],
}

pub fn collect_inputs(inputs: &[PathBuf], exclude: &Exclude<'_>) -> Result<Found> {
    let data = std::fs::canonicalize(exclude.data).ok();
    let out = std::fs::canonicalize(exclude.out).ok();
    let names: Vec<String> = exclude.renditions.iter().map(|r| r.name.clone()).collect();
    let exts = output_extensions(exclude.renditions);
    // Of a canonical path.
    let is_own_output = |full: &Path| -> bool {
        out.as_ref().is_some_and(|out| {
            full.strip_prefix(out)
                .is_ok_and(|rel| exclude.template.is_output(rel, &names, &exts))
        })
    };
    struct Walk<'a> {
        data: Option<PathBuf>,
        is_own_output: &'a dyn Fn(&Path) -> bool,
        found: Found,
    }
    impl Walk<'_> {
        /// Takes a file as an input unless it is in the data directory or an earlier output.
        fn take(&mut self, path: PathBuf, dir: PathBuf) {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if self.data.as_ref().is_some_and(|d| canonical.starts_with(d)) {
                return;
            }
            if (self.is_own_output)(&canonical) {
                self.found.own_outputs += 1;
                return;
            }
            self.found.inputs.push(Input {
                path,
                dir,
                canonical,
            });
        }

        /// Whether `path` is in the data directory: its objects are the pipeline's own.
        fn in_data(&self, path: &Path) -> bool {
            self.data
                .as_ref()
                .is_some_and(|d| std::fs::canonicalize(path).is_ok_and(|c| c.starts_with(d)))
        }

        fn walk(&mut self, root: &Path, dir: &Path, depth: usize) -> Result<()> {
            if depth > 64 || self.in_data(dir) {
                return Ok(());
            }
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("reading folder {}", dir.display()))?
                .collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    self.walk(root, &path, depth + 1)?;
                } else if path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                {
                    let dir = path
                        .parent()
                        .and_then(|p| p.strip_prefix(root).ok())
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    self.take(path, dir);
                }
            }
            Ok(())
        }
    }
    let mut walk = Walk {
        data,
        is_own_output: &is_own_output,
        found: Found::default(),
    };
    if inputs.iter().any(|i| i.as_os_str() == "-") {
        if inputs.len() > 1 {
            bail!("- (standard input) must be the only input");
        }
        walk.found.inputs.push(Input {
            path: PathBuf::from("-"),
            dir: PathBuf::new(),
            canonical: PathBuf::from("-"),
        });
        return Ok(walk.found);
    }
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        if meta.is_dir() {
            walk.walk(input, input, 0)?;
        } else {
            // Named on the command line, the same exclusions hold (a shell glob over a folder
            // that is also --out).
            walk.take(input.clone(), PathBuf::new());
        }
    }
    // A file given twice (`a.jpg a.jpg`, a folder and its subfolder, a link) is one input.
    let mut seen = HashSet::new();
    walk.found
        .inputs
        .retain(|i| seen.insert(i.canonical.clone()));
    Ok(walk.found)
}

/// Every extension the renditions can be written with.
fn output_extensions(renditions: &[Rendition]) -> Vec<&'static str> {
    let mut exts = Vec::new();
    for r in renditions {
        let these: &[&'static str] = match r.format {
            OutputFormat::Jpeg => &["jpg"],
            OutputFormat::Png => &["png"],
            OutputFormat::Webp => &["webp"],
            OutputFormat::Avif => &["avif"],
            OutputFormat::Same => &["jpg", "png", "webp"],
        };
        for e in these {
            if !exts.contains(e) {
                exts.push(*e);
            }
        }
    }
    exts
}

/// The extensions a rendition of `input` may get: one for a fixed format; for `same`, the
/// source's own when its first bytes say it is JPEG, PNG or WebP, else JPEG or PNG (which one
/// depends on alpha, known once decoded).
fn extensions_for(input: &Path, format: OutputFormat) -> Vec<&'static str> {
    let fixed = match format {
        OutputFormat::Jpeg => Some(Format::Jpeg),
        OutputFormat::Png => Some(Format::Png),
        OutputFormat::Webp => Some(Format::Webp),
        OutputFormat::Avif => Some(Format::Avif),
        OutputFormat::Same if input.as_os_str() == "-" => None,
        OutputFormat::Same => {
            let mut head = Vec::new();
            if let Ok(file) = std::fs::File::open(input) {
                use std::io::Read;
                let _ = file.take(64).read_to_end(&mut head);
            }
            match imaging::sniff(&head) {
                Ok(f @ (Format::Jpeg | Format::Png | Format::Webp)) => Some(f),
                _ => None,
            }
        }
    };
    match fixed {
        Some(f) => vec![f.extension()],
        None => vec!["jpg", "png"],
    }
}

/// One input's name in the run and the paths (under `--out`) its renditions may take.
#[derive(Debug)]
pub struct Planned {
    pub stem: String,
    /// For each rendition, the paths it may be written to (one, or two when its format
    /// depends on the decoded image), relative to `--out`; empty when names depend on sizes
    /// not known yet.
    pub paths: Vec<Vec<PathBuf>>,
}

/// Names each input's outputs: the file stem, made unique (`a`, `a-2`) where two inputs would
/// otherwise get the same output names.
pub fn plan_outputs(
    inputs: &[Input],
    template: &Template,
    renditions: &[Rendition],
) -> Result<Vec<Planned>> {
    if renditions.len() > 1 && !template.tells_renditions_apart() {
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "--name {}: the recipe has {} renditions ({}) and the name has no {{rendition}}: they would overwrite each other",
            template.text(),
            names.len(),
            names.join(", ")
        );
    }
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut planned = Vec::with_capacity(inputs.len());
    for input in inputs {
        let stem = if input.path.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            pipeline::keys::sanitise_name(
                &input
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        };
        let exts: Vec<Vec<&str>> = renditions
            .iter()
            .map(|r| extensions_for(&input.path, r.format))
            .collect();
        // With sizes in the name, names are compared without them: two inputs apart only by
        // their sizes are told apart by stem too, as sizes may well be equal.
        let paths_for = |stem: &str| -> Vec<Vec<PathBuf>> {
            renditions
                .iter()
                .zip(&exts)
                .map(|(r, exts)| {
                    exts.iter()
                        .map(|ext| {
                            template.render(&Vars {
                                dir: &input.dir,
                                stem,
                                rendition: &r.name,
                                ext,
                                dims: None,
                            })
                        })
                        .collect()
                })
                .collect()
        };
        let mut candidate = stem.clone();
        let mut n = 2;
        let mut paths = paths_for(&candidate);
        while let Some(clash) = paths.iter().flatten().find(|p| taken.contains(*p)) {
            if !template.uses_stem() {
                bail!(
                    "--name {}: {} would get the same name as another input ({}); add {{stem}}",
                    template.text(),
                    input.path.display(),
                    clash.display()
                );
            }
            candidate = format!("{stem}-{n}");
            n += 1;
            paths = paths_for(&candidate);
        }
        taken.extend(paths.iter().flatten().cloned());
        planned.push(Planned {
            stem: candidate,
            paths: if template.uses_dims() {
                Vec::new()
            } else {
                paths
            },
        });
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::naming::DEFAULT_TEMPLATE;

    fn rendition(name: &str, format: OutputFormat) -> Rendition {
        Rendition {
            name: name.to_string(),
            format,
            ..serde_json::from_str(r#"{"name": "x"}"#).unwrap()
        }
    }

    fn input(path: &str, dir: &str) -> Input {
        Input {
            path: PathBuf::from(path),
            dir: PathBuf::from(dir),
            canonical: PathBuf::from(path),
        }
    }

    #[test]
    fn stems_are_unique_where_names_would_clash() {
        let t = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let r = [rendition("thumb", OutputFormat::Webp)];
        let inputs = [
            input("a.jpg", ""),
            input("x/a.png", ""),
            input("b c.jpg", ""),
            input("in/2024/a.jpg", "2024"),
        ];
        let p = plan_outputs(&inputs, &t, &r).unwrap();
        let stems: Vec<_> = p.iter().map(|p| p.stem.as_str()).collect();
        assert_eq!(
            stems,
            ["a", "a-2", "b_c", "a"],
            "another folder is no clash"
        );
        assert_eq!(p[3].paths, [[PathBuf::from("2024/a-thumb.webp")]]);

        // Flattened by the template, the folder no longer keeps them apart.
        let flat = Template::parse("{stem}-{rendition}.{ext}").unwrap();
        let p = plan_outputs(&inputs, &flat, &r).unwrap();
        assert_eq!(p[3].stem, "a-3");

        // Several renditions need {rendition} in the name.
        let two = [
            rendition("thumb", OutputFormat::Webp),
            rendition("large", OutputFormat::Webp),
        ];
        let stem_only = Template::parse("{stem}.{ext}").unwrap();
        let e = plan_outputs(&inputs, &stem_only, &two).unwrap_err();
        assert!(e.to_string().contains("no {rendition}"), "{e}");
    }
}
