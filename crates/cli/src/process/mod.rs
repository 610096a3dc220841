//! `imgpipe process`: every input through the local pipeline, in parallel, renditions exported
//! to the output folder.

mod args;
mod inputs;
mod ops;
mod plan;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use local::{ExecutionStatus, LocalPipeline};
use pipeline::io::Upload;
use pipeline::model::{ImageRecord, Status};
use serde::Serialize;

pub use args::ProcessArgs;
use inputs::{collect_inputs, unique_stems};
pub use plan::describe_rendition;
use plan::{Plan, recipe_of};

/// What one input became.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileResult {
    input: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
    status: String,
    outputs: Vec<Output>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
    ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    rendition: String,
    path: PathBuf,
    width: u32,
    height: u32,
    bytes: u64,
}

pub async fn run(args: ProcessArgs) -> Result<bool> {
    let mut config = args.common.config()?;
    let jobs = crate::workers(args.jobs);
    config.compute = pipeline::ComputeSlots::new(jobs);
    let Plan {
        preset,
        recipe,
        changed,
    } = recipe_of(&args, &config)?;
    let files = collect_inputs(&args.inputs)?;
    if files.is_empty() {
        bail!("no image files found in the inputs given");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    let pipeline = Arc::new(
        LocalPipeline::open(&args.common.data, config)
            .with_context(|| format!("opening data directory {}", args.common.data.display()))?,
    );
    let stems = unique_stems(&files);
    let bar = if !args.json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let recipe_json = recipe.as_ref().map(serde_json::to_value).transpose()?;
    let results: Vec<FileResult> = futures::stream::iter(files.into_iter().zip(stems))
        .map(|(file, stem)| {
            let pipeline = pipeline.clone();
            let preset = preset.clone();
            let recipe = recipe_json.clone();
            let out = args.out.clone();
            let bar = bar.clone();
            async move {
                let result = process_one(&pipeline, &file, &stem, &out, preset, recipe).await;
                bar.inc(1);
                // Every file that did not make it is named with its reason on stderr, whether
                // or not a bar is drawn there (piped, under cron or CI) and with --json too.
                if let Some(line) = failure_line(&result) {
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
                result
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let ok = count(Status::Complete.as_str());
    let rejected = count(Status::Rejected.as_str());
    let failed = results.len() - ok - rejected;
    if args.json {
        let doc = serde_json::json!({
            "results": results,
            "summary": { "images": results.len(), "ok": ok, "rejected": rejected, "failed": failed, "seconds": elapsed.as_secs_f64() },
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &results {
            for o in &r.outputs {
                outln!(
                    "{}  {}x{}  {} bytes",
                    o.path.display(),
                    o.width,
                    o.height,
                    o.bytes
                );
            }
        }
        if let Some((source, changed)) = &changed {
            outln!(
                "{source}, in every rendition it fits: {}",
                changed.join(", ")
            );
        }
        outln!(
            "{} image{}: {ok} ok, {rejected} rejected, {failed} failed in {:.2} s",
            results.len(),
            if results.len() == 1 { "" } else { "s" },
            elapsed.as_secs_f64()
        );
    }
    Ok(ok == results.len())
}

/// `INPUT: rejected (KIND): MESSAGE` for a file that was not processed; `None` for one that
/// was.
fn failure_line(r: &FileResult) -> Option<String> {
    if r.status == Status::Complete.as_str() {
        return None;
    }
    let field = |name: &str| {
        r.error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
    };
    Some(format!(
        "{}: {} ({}): {}",
        r.input.display(),
        r.status.to_lowercase(),
        field("type").unwrap_or("Error"),
        field("message").unwrap_or("no reason was recorded")
    ))
}

async fn process_one(
    pipeline: &LocalPipeline,
    file: &Path,
    stem: &str,
    out: &Path,
    preset: Option<String>,
    recipe: Option<serde_json::Value>,
) -> FileResult {
    let started = Instant::now();
    let mut result = FileResult {
        input: file.to_path_buf(),
        image_id: None,
        status: Status::Failed.as_str().to_string(),
        outputs: Vec::new(),
        error: None,
        ms: 0,
    };
    let outcome = async {
        let upload = pipeline.ingest(file, "local")?;
        let upload = Upload {
            preset,
            recipe,
            ..upload
        };
        pipeline.run(&upload).await.map_err(anyhow::Error::from)
    }
    .await;
    match outcome {
        Err(e) => {
            result.error =
                Some(serde_json::json!({"type": "Internal", "message": format!("{e:#}")}))
        }
        Ok(outcome) => {
            if let ExecutionStatus::Failed { error, cause } = &outcome.execution.status
                && outcome.record.as_ref().is_none_or(|r| r.error.is_none())
            {
                result.error = Some(serde_json::json!({"type": error, "message": cause}));
            }
            if let Some(record) = outcome.record {
                result.image_id = Some(record.id.clone());
                result.status = record.status.as_str().to_string();
                if let Some(e) = &record.error {
                    result.error = Some(serde_json::json!({"type": e.kind, "message": e.message}));
                }
                if record.status == Status::Complete {
                    match export(pipeline, &record, stem, out) {
                        Ok(outputs) => result.outputs = outputs,
                        Err(e) => {
                            result.status = Status::Failed.as_str().to_string();
                            result.error = Some(
                                serde_json::json!({"type": "Export", "message": format!("{e:#}")}),
                            );
                        }
                    }
                }
            }
        }
    }
    result.ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
}

fn export(
    pipeline: &LocalPipeline,
    record: &ImageRecord,
    stem: &str,
    out: &Path,
) -> Result<Vec<Output>> {
    record
        .renditions
        .iter()
        .map(|r| {
            let ext = r.format.extension();
            let path = out.join(format!("{stem}-{}.{ext}", r.name));
            pipeline
                .store
                .export(&r.key, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(Output {
                rendition: r.name.clone(),
                path,
                width: r.width,
                height: r.height,
                bytes: r.bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_with_their_reason() {
        let mut r = FileResult {
            input: PathBuf::from("shoot/a.cr2"),
            image_id: None,
            status: "REJECTED".into(),
            outputs: Vec::new(),
            error: Some(
                serde_json::json!({"type": "UnsupportedFormat", "message": "raw: Canon CR2"}),
            ),
            ms: 1,
        };
        assert_eq!(
            failure_line(&r).unwrap(),
            "shoot/a.cr2: rejected (UnsupportedFormat): raw: Canon CR2"
        );
        r.status = "FAILED".into();
        r.error = None;
        assert_eq!(
            failure_line(&r).unwrap(),
            "shoot/a.cr2: failed (Error): no reason was recorded"
        );
        r.status = "COMPLETE".into();
        assert_eq!(failure_line(&r), None);
    }
}
