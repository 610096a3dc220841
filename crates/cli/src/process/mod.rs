//! `imgpipe process`: every input through the local pipeline, in parallel, renditions exported
//! to the output folder.

mod args;
mod export;
mod inputs;
mod naming;
mod ops;
mod plan;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use local::{ExecutionStatus, INTERRUPTED, LocalPipeline};
use pipeline::io::Upload;
use pipeline::model::{ErrorInfo, ImageRecord, Status};
use serde::Serialize;

pub use args::ProcessArgs;
use export::{Destination, Existing, Exporter, Output};
use inputs::{Exclude, Input, collect_inputs, plan_outputs};
use naming::Template;
pub use plan::describe_rendition;
use plan::{Plan, recipe_of};

/// The status of an input whose outputs were all there already (`--skip-existing`).
const SKIPPED: &str = "SKIPPED";

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

impl FileResult {
    fn new(input: PathBuf, status: &str) -> FileResult {
        FileResult {
            input,
            image_id: None,
            status: status.to_string(),
            outputs: Vec::new(),
            error: None,
            ms: 0,
        }
    }

    fn fail(&mut self, kind: &str, message: String) {
        self.status = Status::Failed.as_str().to_string();
        self.error = Some(serde_json::json!({"type": kind, "message": message}));
    }
}

/// The uploads being processed right now, by input, so that Ctrl-C can record them.
type InFlight = Arc<Mutex<HashMap<PathBuf, Upload>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub async fn run(args: ProcessArgs, verbose: u8) -> Result<bool> {
    let mut config = args.common.config()?;
    let jobs = crate::workers(args.jobs);
    config.compute = pipeline::ComputeSlots::new(jobs);
    let Plan {
        preset,
        recipe,
        changed,
    } = recipe_of(&args, &config)?;
    let renditions = match (&recipe, &preset) {
        (Some(r), _) => r.renditions.clone(),
        (None, Some(name)) => config.presets.get(name)?.renditions.clone(),
        (None, None) => bail!("no recipe to process with"),
    };
    let template = Template::parse(&args.name)?;
    let found = collect_inputs(
        &args.inputs,
        &Exclude {
            data: &args.common.data.dir,
            out: &args.out,
            template: &template,
            renditions: &renditions,
        },
    )?;
    if found.inputs.is_empty() {
        if found.own_outputs > 0 {
            bail!(
                "no image files to process: the {} found are under --out {} and named like this recipe's outputs",
                found.own_outputs,
                args.out.display()
            );
        }
        bail!("no image files found in the inputs given");
    }
    let destination = if args.out.as_os_str() == "-" {
        if found.inputs.len() != 1 || renditions.len() != 1 {
            bail!(
                "--out - writes one rendition of one input to standard output; this run has {} input{} and {} rendition{}",
                found.inputs.len(),
                if found.inputs.len() == 1 { "" } else { "s" },
                renditions.len(),
                if renditions.len() == 1 { "" } else { "s" },
            );
        }
        if args.json {
            bail!("--out - and --json both want standard output");
        }
        Destination::Stdout
    } else {
        Destination::Folder(args.out.clone())
    };
    let planned = plan_outputs(&found.inputs, &template, &renditions)?;
    let policy = match (args.overwrite, args.skip_existing) {
        (true, _) => Existing::Overwrite,
        (_, true) => Existing::Skip,
        _ => Existing::Refuse,
    };
    let to_stdout = destination == Destination::Stdout;
    let exporter = Arc::new(Exporter::new(destination, template, policy, &found.inputs));
    let skip = exporter.precheck(&found.inputs, &planned)?;
    if !to_stdout {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating output folder {}", args.out.display()))?;
    }
    let pipeline = Arc::new(
        LocalPipeline::open(&args.common.data.dir, config).with_context(|| {
            format!("opening data directory {}", args.common.data.dir.display())
        })?,
    );
    if !pipeline.interrupted.is_empty() {
        eprintln!(
            "note: {} job{} left unfinished by a stopped run {} now FAILED ({INTERRUPTED}); `imgpipe history --status FAILED` lists them",
            pipeline.interrupted.len(),
            if pipeline.interrupted.len() == 1 {
                ""
            } else {
                "s"
            },
            if pipeline.interrupted.len() == 1 {
                "is"
            } else {
                "are"
            },
        );
    }
    // Listening from here on, before any job starts, so a Ctrl-C is never missed.
    let mut interrupt = Interrupt::listen()?;
    let total = found.inputs.len();
    let bar = progress_bar(&args, total);
    crate::progress::show(&bar);
    let started = Instant::now();
    let recipe_json = recipe.as_ref().map(serde_json::to_value).transpose()?;
    let in_flight: InFlight = Arc::default();
    let current: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut results: Vec<FileResult> = Vec::with_capacity(total);
    let mut work = Vec::new();
    for ((input, planned), skip) in found.inputs.into_iter().zip(planned).zip(skip) {
        if skip {
            results.push(FileResult::new(input.path, SKIPPED));
            bar.inc(1);
        } else {
            work.push((input, planned.stem));
        }
    }
    let skipped = results.len();
    let batch = Arc::new(Batch {
        pipeline: pipeline.clone(),
        exporter,
        preset,
        recipe: recipe_json,
        in_flight: in_flight.clone(),
        keep_originals: args.keep_originals,
    });
    let mut stream = futures::stream::iter(work)
        .map(|(input, stem)| {
            let batch = batch.clone();
            let bar = bar.clone();
            let current = current.clone();
            let quiet = args.quiet;
            let path = input.path.clone();
            // Each job on a task of its own: file copies and exports block, and must not keep
            // this loop from hearing Ctrl-C.
            Job::spawn(path, async move {
                let name = input.path.display().to_string();
                lock(&current).push(name.clone());
                bar.set_message(lock(&current).join(", "));
                let result = process_one(&batch, &input, &stem).await;
                lock(&current).retain(|n| *n != name);
                bar.set_message(lock(&current).join(", "));
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
                if verbose > 0 && !quiet && !bar.is_hidden() {
                    for o in &result.outputs {
                        bar.println(format!("{}", o.path.display()));
                    }
                }
                result
            })
        })
        .buffer_unordered(jobs);
    let interrupted = loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(result) => results.push(result),
                None => break false,
            },
            _ = interrupt.recv() => break true,
        }
    };
    // Dropping the stream cancels the jobs still running: nothing more of theirs is written.
    drop(stream);
    if interrupted {
        // A second Ctrl-C while the stopped jobs are recorded quits at once.
        tokio::spawn(async move {
            interrupt.recv().await;
            std::process::exit(130);
        });
    }
    bar.finish_and_clear();
    crate::progress::clear();
    let mut stopped = 0;
    if interrupted {
        let uploads: Vec<(PathBuf, Upload)> = lock(&in_flight).drain().collect();
        stopped = uploads.len();
        for (input, upload) in uploads {
            let mut result = FileResult::new(input, Status::Failed.as_str());
            let message =
                "interrupted (Ctrl-C) before it finished; the original is kept: process it again";
            if let Err(e) = record_interrupted(&pipeline, &upload, message).await {
                eprintln!(
                    "{}: could not record the interruption: {e:#}",
                    result.input.display()
                );
            }
            result.fail(INTERRUPTED, message.to_string());
            if let Some(line) = failure_line(&result) {
                eprintln!("{line}");
            }
            results.push(result);
        }
    }
    let elapsed = started.elapsed();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let ok = count(Status::Complete.as_str());
    let rejected = count(Status::Rejected.as_str());
    let failed = count(Status::Failed.as_str());
    let not_started = total - results.len();
    if args.json {
        let doc = serde_json::json!({
            "results": results,
            "summary": {
                "images": total, "ok": ok, "rejected": rejected, "failed": failed,
                "skipped": skipped, "interrupted": interrupted, "notStarted": not_started,
                "seconds": elapsed.as_secs_f64(),
            },
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else if !(args.quiet || to_stdout && verbose == 0) {
        let mut lines = Vec::new();
        let written: Vec<&Output> = results.iter().flat_map(|r| &r.outputs).collect();
        // The list of files is for small runs, or asked for with -v; a big batch ends with
        // its summary, not pages of paths.
        if verbose > 0 || written.len() < 10 {
            for o in &written {
                let kept = if o.kept {
                    "  (there already, kept)"
                } else {
                    ""
                };
                lines.push(format!(
                    "{}  {}x{}  {} bytes{kept}",
                    o.path.display(),
                    o.width,
                    o.height,
                    o.bytes
                ));
            }
        }
        if let Some((source, changed)) = &changed {
            lines.push(format!(
                "{source}, in every rendition it fits: {}",
                changed.join(", ")
            ));
        }
        let mut line = format!(
            "{total} image{}: {ok} ok, {rejected} rejected, {failed} failed",
            if total == 1 { "" } else { "s" },
        );
        if skipped > 0 {
            line.push_str(&format!(", {skipped} skipped (outputs there already)"));
        }
        if interrupted {
            line = format!("interrupted: {line} ({stopped} stopped, {not_started} not started)");
        }
        if found.own_outputs > 0 {
            line.push_str(&format!(
                "; {} earlier output{} under {} left out",
                found.own_outputs,
                if found.own_outputs == 1 { "" } else { "s" },
                args.out.display()
            ));
        }
        lines.push(format!("{line} in {:.2} s", elapsed.as_secs_f64()));
        // With the image itself on stdout, the report goes to stderr.
        for line in lines {
            if to_stdout {
                eprintln!("{line}");
            } else {
                outln!("{line}");
            }
        }
    }
    if interrupted {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        // 128 + SIGINT, as a shell reports a command Ctrl-C stopped.
        std::process::exit(130);
    }
    Ok(ok + skipped == total)
}

/// One input's job, on a task of its own, cancelled when dropped.
struct Job {
    input: PathBuf,
    task: tokio::task::JoinHandle<FileResult>,
}

impl Job {
    fn spawn(input: PathBuf, work: impl Future<Output = FileResult> + Send + 'static) -> Job {
        Job {
            input,
            task: tokio::spawn(work),
        }
    }
}

impl Future for Job {
    type Output = FileResult;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<FileResult> {
        std::pin::Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                let mut result = FileResult::new(self.input.clone(), Status::Failed.as_str());
                result.fail("Internal", format!("the job stopped: {e}"));
                result
            })
        })
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ctrl-C (SIGINT).
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> Result<Interrupt> {
        Ok(Interrupt {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("listening for Ctrl-C")?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        self.signal.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn progress_bar(args: &ProcessArgs, total: usize) -> ProgressBar {
    if args.json || args.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} [{elapsed_precise}] {bar:25} {per_sec} ETA {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Ticks while a slow encode runs, so a live run never looks frozen.
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Records a job Ctrl-C stopped as FAILED (Interrupted), with a record made for it if it had
/// none yet, so that `history` says what became of it.
async fn record_interrupted(
    pipeline: &LocalPipeline,
    upload: &Upload,
    message: &str,
) -> Result<()> {
    let ident = pipeline::keys::identify(&upload.key, upload.etag.as_deref())
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let now = chrono::Utc::now();
    let error = ErrorInfo {
        kind: INTERRUPTED.to_string(),
        message: message.to_string(),
    };
    let fallback = ImageRecord {
        derived: Vec::new(),
        id: ident.id.clone(),
        owner: ident.owner,
        status: Status::Failed,
        source: upload.unread_source(),
        recipe: None,
        renditions: Vec::new(),
        error: Some(error.clone()),
        created_at: now,
        updated_at: now,
        execution_id: None,
        tags: upload.tags.clone(),
        preset: upload.preset.clone(),
        reprocessed_at: None,
    };
    pipeline.fail_job(&ident.id, &error, Some(fallback)).await?;
    Ok(())
}

/// `INPUT: rejected (KIND): MESSAGE` for a file that was not processed; `None` for one that
/// was.
fn failure_line(r: &FileResult) -> Option<String> {
    if r.status == Status::Complete.as_str() || r.status == SKIPPED {
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

/// What every job of a run shares.
struct Batch {
    pipeline: Arc<LocalPipeline>,
    exporter: Arc<Exporter>,
    preset: Option<String>,
    recipe: Option<serde_json::Value>,
    in_flight: InFlight,
    keep_originals: bool,
}

async fn process_one(batch: &Batch, input: &Input, stem: &str) -> FileResult {
    let Batch {
        pipeline,
        exporter,
        in_flight,
        keep_originals,
        ..
    } = batch;
    let (preset, recipe) = (batch.preset.clone(), batch.recipe.clone());
    let started = Instant::now();
    let mut result = FileResult::new(input.path.clone(), Status::Failed.as_str());
    let mut by_reference = None;
    let outcome = async {
        let upload = if input.path.as_os_str() == "-" {
            // Read from the descriptor with the byte limit checked as it goes: a stream has
            // no size to check first.
            let stdin = std::io::stdin().lock();
            pipeline
                .ingest_open(stdin, "stdin", "local")?
                .with_context(|| {
                    format!(
                        "standard input holds more than the {} byte limit (--max-bytes)",
                        pipeline.steps.config.limits.max_bytes
                    )
                })?
        } else if *keep_originals {
            pipeline.ingest(&input.path, "local")?
        } else {
            match pipeline.ingest_reference(&input.path, "local") {
                Ok((upload, original)) => {
                    by_reference = Some((upload.key.clone(), original));
                    upload
                }
                // Not a regular file (a pipe, `<(curl ...)`) or a path the record cannot
                // hold: its bytes are copied instead, as they can be read only once anyway.
                Err(e) => {
                    tracing::info!(file = %input.path.display(), error = %e, "copied, not kept by reference");
                    pipeline.ingest(&input.path, "local")?
                }
            }
        };
        let upload = Upload {
            preset,
            recipe,
            ..upload
        };
        lock(in_flight).insert(input.path.clone(), upload.clone());
        pipeline.run(&upload).await.map_err(anyhow::Error::from)
    }
    .await;
    match outcome {
        Err(e) => result.fail("Internal", format!("{e:#}")),
        Ok(outcome) => {
            if let ExecutionStatus::Failed { error, cause } = &outcome.execution.status
                && outcome.record.as_ref().is_none_or(|r| r.error.is_none())
            {
                result.error = Some(serde_json::json!({"type": error, "message": cause}));
            }
            if let Some(record) = outcome.record {
                if let Some((_, original)) = &by_reference
                    && let Err(e) = pipeline.note_original(&record.id, original).await
                {
                    tracing::warn!(image_id = %record.id, error = %e, "could not note where the original is");
                }
                result.image_id = Some(record.id.clone());
                result.status = record.status.as_str().to_string();
                if let Some(e) = &record.error {
                    result.error = Some(serde_json::json!({"type": e.kind, "message": e.message}));
                }
                if record.status == Status::Complete {
                    match exporter.export(pipeline, &record, input, stem) {
                        Ok(outputs) => result.outputs = outputs,
                        Err(e) => {
                            // The job did not deliver: its record says so, not COMPLETE.
                            let error = ErrorInfo {
                                kind: "Export".to_string(),
                                message: format!("{e:#}"),
                            };
                            if let Err(e) = pipeline.fail_job(&record.id, &error, None).await {
                                tracing::warn!(image_id = %record.id, error = %e, "could not record the export failure");
                            }
                            result.fail(&error.kind, error.message);
                        }
                    }
                }
            }
        }
    }
    lock(in_flight).remove(&input.path);
    result.ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
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
