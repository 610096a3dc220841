//! Writing renditions under `--out`, and what happens to files already there: by default a
//! file this run did not write is never replaced; `--overwrite` replaces it, `--skip-existing`
//! keeps it (and skips inputs whose outputs are all there).

use std::collections::HashMap;
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
    /// Every file this run wrote, and the input it came from.
    written: Mutex<HashMap<PathBuf, PathBuf>>,
}

const HOW: &str = "--overwrite replaces files that are there, --skip-existing keeps them";

impl Exporter {
    pub fn new(out: Destination, template: Template, policy: Existing) -> Exporter {
        Exporter {
            out,
            template,
            policy,
            written: Mutex::new(HashMap::new()),
        }
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
        let mut outputs = Vec::with_capacity(record.renditions.len());
        for r in &record.renditions {
            let rel = self.template.render(&Vars {
                dir: &input.dir,
                stem,
                rendition: &r.name,
                ext: r.format.extension(),
                dims: Some((r.width, r.height)),
            });
            let path = out.join(&rel);
            self.claim(&path, &input.path)?;
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
        Ok(outputs)
    }

    /// Takes `path` for `input`: two inputs of one run never write the same file.
    fn claim(&self, path: &Path, input: &Path) -> Result<()> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(other) = written.get(path)
            && other != input
        {
            bail!(
                "{} was written for {} in this run; --name {} gives both the same name (add {{stem}})",
                path.display(),
                other.display(),
                self.template.text()
            );
        }
        written.insert(path.to_path_buf(), input.to_path_buf());
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
