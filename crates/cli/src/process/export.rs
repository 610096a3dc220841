//! Writing renditions under `--out`, and what happens to files already there: by default a
//! file this run did not write is never replaced; `--overwrite` replaces it, `--skip-existing`
//! keeps it (and skips inputs whose outputs are all there).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use local::LocalPipeline;
use pipeline::model::ImageRecord;
use serde::Serialize;

use super::inputs::{Input, Planned};
use super::naming::{Template, Vars};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Refuse,
    Overwrite,
    Skip,
}

/// One rendition written (or left as it was) under `--out`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    pub rendition: String,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// A file was there already and `--skip-existing` kept it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

/// Where renditions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Folder(PathBuf),
    /// `--out -`: the one rendition of the one input, to standard output.
    Stdout,
}

pub struct Exporter {
    pub out: Destination,
    pub template: Template,
    pub policy: Existing,
    /// Every file this run wrote, and the input and rendition it came from.
    written: Mutex<HashMap<PathBuf, (PathBuf, String)>>,
    /// The inputs, as canonical paths: no output may be written over one, whatever the policy.
    inputs: HashSet<PathBuf>,
}

const HOW: &str = "--overwrite replaces files that are there, --skip-existing keeps them";

impl Exporter {
    pub fn new(
        out: Destination,
        template: Template,
        policy: Existing,
        inputs: &[Input],
    ) -> Exporter {
        Exporter {
            out,
            template,
            policy,
            written: Mutex::new(HashMap::new()),
            inputs: inputs.iter().map(|i| i.canonical.clone()).collect(),
        }
    }

    /// Refuses `path` when it is one of the run's inputs.
    fn not_an_input(&self, path: &Path) -> Result<()> {
        if let Ok(full) = std::fs::canonicalize(path)
            && self.inputs.contains(&full)
        {
            bail!(
                "{} is one of this run's inputs: --name {} would write a rendition over it, which no option allows",
                path.display(),
                self.template.text()
            );
        }
        Ok(())
    }

    /// Before any job runs: refuses the run when outputs are there already (unless a policy
    /// was given), and with `--skip-existing` says which inputs have all their outputs.
    /// Names that depend on sizes are checked as each is written instead.
    pub fn precheck(&self, inputs: &[Input], planned: &[Planned]) -> Result<Vec<bool>> {
        let Destination::Folder(out) = &self.out else {
            return Ok(vec![false; inputs.len()]);
        };
        let there =
            |candidates: &Vec<PathBuf>| candidates.iter().map(|p| out.join(p)).find(|p| p.exists());
        for candidates in planned.iter().flat_map(|p| &p.paths) {
            for p in candidates {
                self.not_an_input(&out.join(p))?;
            }
        }
        match self.policy {
            Existing::Overwrite => Ok(vec![false; inputs.len()]),
            Existing::Skip => Ok(planned
                .iter()
                .map(|p| !p.paths.is_empty() && p.paths.iter().all(|c| there(c).is_some()))
                .collect()),
            Existing::Refuse => {
                let clashes: Vec<PathBuf> = planned
                    .iter()
                    .flat_map(|p| p.paths.iter().filter_map(there))
                    .collect();
                if clashes.is_empty() {
                    return Ok(vec![false; inputs.len()]);
                }
                let mut list: Vec<String> = clashes
                    .iter()
                    .take(5)
                    .map(|p| format!("  {}", p.display()))
                    .collect();
                if clashes.len() > 5 {
                    list.push(format!("  and {} more", clashes.len() - 5));
                }
                bail!(
                    "{} output file{} {} there already, from an earlier run or another program:\n{}\nNothing was processed. {HOW}.",
                    clashes.len(),
                    if clashes.len() == 1 { "" } else { "s" },
                    if clashes.len() == 1 { "is" } else { "are" },
                    list.join("\n")
                )
            }
        }
    }

    /// Writes every rendition of `record`, made from `input` under the name `stem`.
    pub fn export(
        &self,
        pipeline: &LocalPipeline,
        record: &ImageRecord,
        input: &Input,
        stem: &str,
    ) -> Result<Vec<Output>> {
        let out = match &self.out {
            Destination::Folder(out) => out,
            Destination::Stdout => return to_stdout(pipeline, record),
        };
        let mut outputs: Vec<Output> = Vec::with_capacity(record.renditions.len());
        let result = self.export_each(pipeline, record, input, stem, out, &mut outputs);
        if result.is_err() {
            // All or nothing: a failed job leaves no part of its outputs behind (files that
            // were there already and kept stay, of course).
            for o in outputs.iter().filter(|o| !o.kept) {
                let _ = std::fs::remove_file(&o.path);
            }
        }
        result.map(|()| outputs)
    }

    fn export_each(
        &self,
        pipeline: &LocalPipeline,
        record: &ImageRecord,
        input: &Input,
        stem: &str,
        out: &Path,
        outputs: &mut Vec<Output>,
    ) -> Result<()> {
        for r in &record.renditions {
            let rel = self.template.render(&Vars {
                dir: &input.dir,
                stem,
                rendition: &r.name,
                ext: r.format.extension(),
                dims: Some((r.width, r.height)),
            });
            let path = out.join(&rel);
            self.not_an_input(&path)?;
            self.claim(&path, &input.path, &r.name)?;
            let written = pipeline
                .store
                .export(&r.key, &path, self.policy == Existing::Overwrite)
                .with_context(|| format!("writing {}", path.display()))?;
            if !written && self.policy == Existing::Refuse {
                bail!(
                    "{} is there already and this run did not write it; {HOW}",
                    path.display()
                );
            }
            outputs.push(Output {
                rendition: r.name.clone(),
                path,
                width: r.width,
                height: r.height,
                bytes: r.bytes,
                kept: !written,
            });
        }
        Ok(())
    }

    /// Takes `path` for `rendition` of `input`: no two outputs of one run write the same
    /// file.
    fn claim(&self, path: &Path, input: &Path, rendition: &str) -> Result<()> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((other, other_rendition)) = written.get(path) {
            let add = if other == input {
                "{rendition}"
            } else {
                "{stem}"
            };
            bail!(
                "{} was written for {} ({}) in this run; --name {} gives {} the same name (add {add})",
                path.display(),
                other.display(),
                other_rendition,
                self.template.text(),
                if other == input {
                    format!("rendition {rendition} too")
                } else {
                    format!("{} too", input.display())
                }
            );
        }
        written.insert(
            path.to_path_buf(),
            (input.to_path_buf(), rendition.to_string()),
        );
        Ok(())
    }
}

/// The one rendition of `record`, its bytes to standard output.
fn to_stdout(pipeline: &LocalPipeline, record: &ImageRecord) -> Result<Vec<Output>> {
    use std::io::Write;
    let [r] = record.renditions.as_slice() else {
        bail!(
            "--out - writes one rendition; this job made {}",
            record.renditions.len()
        );
    };
    let path = pipeline.store.path_of(&r.key)?;
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)
        .and_then(|_| stdout.flush())
        .context("writing to standard output")?;
    Ok(vec![Output {
        rendition: r.name.clone(),
        path: PathBuf::from("-"),
        width: r.width,
        height: r.height,
        bytes: r.bytes,
        kept: false,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::naming::Template;

    #[test]
    fn no_policy_lets_an_output_replace_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        std::fs::write(&a, b"original").unwrap();
        let inputs = [Input {
            path: a.clone(),
            dir: PathBuf::new(),
            canonical: std::fs::canonicalize(&a).unwrap(),
        }];
        let planned = [Planned {
            stem: "a".into(),
            paths: vec![vec![PathBuf::from("a.png")]],
        }];
        for policy in [Existing::Refuse, Existing::Overwrite, Existing::Skip] {
            let exporter = Exporter::new(
                Destination::Folder(dir.path().to_path_buf()),
                Template::parse("{stem}.{ext}").unwrap(),
                policy,
                &inputs,
            );
            let e = exporter
                .precheck(&inputs, &planned)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is one of this run's inputs"), "{policy:?}: {e}");
        }
        assert_eq!(std::fs::read(&a).unwrap(), b"original");
    }
}
