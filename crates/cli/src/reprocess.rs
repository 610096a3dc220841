//! `imgpipe reprocess`: re-render the COMPLETE images of the data directory whose preset has
//! changed since they were made, from their kept originals, through the same state machine
//! as an upload. Each image's renditions get new keys (renditions are served as immutable),
//! the record takes them all at once, and the old files go; an image whose re-render fails
//! keeps what it had.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use local::{LocalPipeline, RerenderEnd};
use pipeline::model::ImageRecord;
use pipeline::reprocess::{self, Filter};
use serde::Serialize;

use crate::CommonArgs;

#[derive(Args)]
pub struct ReprocessArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only images made with this preset (default: every preset whose definition changed).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Only this owner's images (`local` for those `imgpipe process` made).
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Only images created at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// Only images created before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<DateTime<Utc>>,
    /// List what would be re-rendered, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Images re-rendered at once (default: the number of CPU cores).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageResult {
    image_id: String,
    owner: String,
    preset: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    renditions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(args: ReprocessArgs) -> Result<bool> {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        bail!("--since {since} is not before --until {until}: no image can match");
    }
    let mut config = args.common.config()?;
    if let Some(name) = &args.preset {
        config
            .presets
            .get(name)
            .map_err(|e| anyhow::anyhow!("--preset: {}", e.message))?;
    }
    let jobs = crate::workers(args.jobs);
    config.compute = pipeline::ComputeSlots::new(jobs);
    let pipeline = Arc::new(
        LocalPipeline::open(&args.common.data.dir, config).with_context(|| {
            format!("opening data directory {}", args.common.data.dir.display())
        })?,
    );
    let filter = Filter {
        preset: args.preset.clone(),
        since: args.since,
        until: args.until,
    };
    let selection = reprocess::select(
        pipeline.steps.metadata.as_ref(),
        args.owner.as_deref(),
        &filter,
        &pipeline.steps.config.presets,
    )
    .await
    .context("listing the images to re-render")?;
    let skipped: Vec<String> = selection
        .skipped
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    let skipped_note = if skipped.is_empty() {
        String::new()
    } else {
        format!("; left as they are: {}", skipped.join(", "))
    };

    if args.dry_run || selection.due.is_empty() {
        if args.json {
            let due: Vec<ImageResult> = selection
                .due
                .iter()
                .map(|r| result_of(r, "DUE", None))
                .collect();
            let doc = serde_json::json!({
                "dryRun": args.dry_run,
                "due": due,
                "summary": {
                    "due": selection.due.len(),
                    "upToDate": selection.up_to_date,
                    "skipped": selection.skipped,
                },
            });
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            for r in &selection.due {
                outln!(
                    "would re-render {}  owner {}  preset {}  created {}",
                    r.id,
                    r.owner,
                    r.preset.as_deref().unwrap_or("-"),
                    r.created_at.to_rfc3339()
                );
            }
            if selection.due.is_empty() {
                outln!(
                    "nothing to do: {} image{} up to date{skipped_note}",
                    selection.up_to_date,
                    plural(selection.up_to_date)
                );
            } else {
                outln!(
                    "{} image{} to re-render, {} up to date{skipped_note} (dry run: nothing changed)",
                    selection.due.len(),
                    plural(selection.due.len()),
                    selection.up_to_date
                );
            }
        }
        return Ok(true);
    }

    let bar = if !args.json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(selection.due.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} re-rendered {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let results: Vec<ImageResult> = futures::stream::iter(selection.due.iter().cloned())
        .map(|record| {
            let pipeline = pipeline.clone();
            let filter = filter.clone();
            let bar = bar.clone();
            async move {
                let result = rerender_one(&pipeline, &record, &filter).await;
                bar.inc(1);
                if let Some(e) = &result.error {
                    bar.println(format!("{}: {} {e}", record.id, result.status));
                }
                result
            }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let done = count("REPROCESSED");
    let unchanged = count("UNCHANGED");
    let failed = results.len() - done - unchanged;
    if args.json {
        let doc = serde_json::json!({
            "results": results,
            "summary": {
                "reprocessed": done,
                "unchanged": unchanged,
                "failed": failed,
                "upToDate": selection.up_to_date,
                "skipped": selection.skipped,
                "seconds": elapsed,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &results {
            if r.status == "REPROCESSED" {
                outln!("{}  {}", r.image_id, r.renditions.join(", "));
            }
        }
        outln!(
            "{done} image{} re-rendered, {failed} failed, {} up to date{skipped_note} in {elapsed:.2} s",
            plural(done),
            selection.up_to_date + unchanged
        );
    }
    Ok(failed == 0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn result_of(record: &ImageRecord, status: &'static str, error: Option<String>) -> ImageResult {
    ImageResult {
        image_id: record.id.clone(),
        owner: record.owner.clone(),
        preset: record.preset.clone(),
        status,
        renditions: record
            .renditions
            .iter()
            .map(|r| format!("{} {}x{} {}", r.name, r.width, r.height, r.key))
            .collect(),
        error,
    }
}

async fn rerender_one(
    pipeline: &LocalPipeline,
    record: &ImageRecord,
    filter: &Filter,
) -> ImageResult {
    match pipeline.rerender(record, filter).await {
        Err(e) => result_of(record, "FAILED", Some(format!("{e:#}"))),
        Ok(outcome) => {
            let now = outcome.record.clone().unwrap_or_else(|| record.clone());
            match outcome.rerender_end(record) {
                RerenderEnd::Reprocessed => result_of(&now, "REPROCESSED", None),
                RerenderEnd::Unchanged => result_of(&now, "UNCHANGED", None),
                RerenderEnd::Failed(error) => result_of(
                    &now,
                    "FAILED",
                    Some(format!(
                        "{error}: the image keeps its renditions; the alert in {} says why",
                        pipeline.data.join("events.jsonl").display()
                    )),
                ),
            }
        }
    }
}
