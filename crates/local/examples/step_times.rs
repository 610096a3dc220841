//! Times each pipeline step the way a Lambda runs it, for sizing memory and estimating cost:
//! intermediates go through the cloud's work store (QOI objects), originals and renditions
//! through a directory store, records through SQLite. Network time to S3 and DynamoDB is not
//! included; everything the step computes is.
//!
//! cargo run --release -p local --example step_times -- PHOTO [--preset web] [--runs 5]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use local::{FsStore, JsonlNotifier, SqliteMetadata};
use pipeline::io::{NotifyInput, Upload, ValidateInput};
use pipeline::memory::ObjectWorkStore;
use pipeline::{Config, Steps, keys};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut photo: Option<PathBuf> = None;
    let mut preset = "web".to_string();
    let mut runs = 5usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--preset" => preset = args.next().ok_or("--preset needs a name")?,
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            _ => photo = Some(PathBuf::from(a)),
        }
    }
    let photo = photo.ok_or("usage: step_times PHOTO [--preset NAME] [--runs N]")?;
    let name = photo
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("photo")
        .to_string();

    let mut times: [Vec<f64>; 5] = Default::default();
    let mut items = 0;
    for run in 0..=runs {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(FsStore::open(dir.path().join("objects"))?);
        let steps = Steps {
            config: Arc::new(Config::default()),
            uploads: store.clone(),
            renditions: store.clone(),
            work: Arc::new(ObjectWorkStore {
                store: store.clone(),
            }),
            metadata: Arc::new(SqliteMetadata::open(&dir.path().join("db"))?),
            notifier: Arc::new(JsonlNotifier::open(&dir.path().join("events.jsonl"))?),
        };
        let key = keys::upload_key("bench", &keys::new_image_id(), &name);
        store.put_file(&key, &photo)?;
        let upload = Upload {
            key,
            preset: Some(preset.clone()),
            ..Upload::default()
        };

        let t = Instant::now();
        let job = steps
            .validate(ValidateInput {
                upload,
                execution_id: format!("bench-{run}"),
            })
            .await?;
        let validate = t.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        let resized = steps.resize(job.clone()).await?;
        let resize = t.elapsed().as_secs_f64() * 1e3;

        // The Map runs each rendition's Filter and Store as separate invocations: their
        // times add up in the bill, so they are summed here.
        let (mut filter, mut store_ms, mut stored) = (0.0, 0.0, Vec::new());
        items = resized.items.len();
        for item in resized.items {
            let t = Instant::now();
            let item = steps.filter(item).await?;
            filter += t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            stored.push(steps.store(item).await?);
            store_ms += t.elapsed().as_secs_f64() * 1e3;
        }

        let t = Instant::now();
        steps
            .notify(NotifyInput::Success {
                job: Box::new(job),
                sha256: Some(resized.sha256),
                renditions: stored,
            })
            .await?;
        let notify = t.elapsed().as_secs_f64() * 1e3;

        // The first run warms the page cache and the allocator; it is not counted.
        if run > 0 {
            for (slot, ms) in times
                .iter_mut()
                .zip([validate, resize, filter, store_ms, notify])
            {
                slot.push(ms);
            }
        }
    }
    println!(
        "{} ({preset}, {items} renditions), median of {runs} runs, ms:",
        photo.display()
    );
    let names = [
        "validate",
        "resize",
        "filter (all renditions)",
        "store (all renditions)",
        "notify",
    ];
    let mut total = 0.0;
    for (label, samples) in names.iter().zip(times) {
        let m = median(samples);
        total += m;
        println!("  {label:<24} {m:>8.1}");
    }
    println!("  {:<24} {total:>8.1}", "total");
    Ok(())
}
