//! What the local runner tells operators: every log line of a step names the step, the image
//! and the execution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use imaging::{EncodeOptions, Format, Image, image};
use local::{ExecutionStatus, LocalPipeline};
use pipeline::Config;
use serde_json::Value;

fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    imaging::encode(
        &Image::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..Default::default()
        },
    )
    .unwrap()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_step_logs_inside_a_span_naming_step_image_and_execution() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: the runner's tasks all see this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let tmp = tempfile::tempdir().unwrap();
    let p = LocalPipeline::open(&tmp.path().join("data"), Config::default()).unwrap();
    let src = tmp.path().join("sea.jpg");
    std::fs::write(&src, photo(600, 400)).unwrap();
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Succeeded);
    let id = outcome.record.unwrap().id;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let mut steps = BTreeSet::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let Some(span) = event.get("span").filter(|s| s["name"] == "step") else {
            continue;
        };
        assert_eq!(span["image_id"], id.as_str(), "{line}");
        assert!(
            span["execution_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("local:")),
            "{line}"
        );
        steps.insert(span["step"].as_str().unwrap().to_string());
    }
    // Filter logs only when a rendition has operations, which `web` has none of.
    assert_eq!(
        steps,
        ["notify", "resize", "store", "validate"]
            .map(String::from)
            .into(),
        "{text}"
    );
}

#[tokio::test]
async fn the_database_check_fails_once_the_file_is_removed_or_replaced() {
    use pipeline::ports::MetadataStore;

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("imgpipe.db");
    let db = local::SqliteMetadata::open(&path).unwrap();
    db.check().await.unwrap();
    let moved = tmp.path().join("moved.db");
    std::fs::rename(&path, &moved).unwrap();
    let err = db.check().await.unwrap_err();
    assert!(err.to_string().contains("imgpipe.db"), "{err}");
    // Another file at the path is not the database this process writes to either.
    std::fs::copy(&moved, &path).unwrap();
    let err = db.check().await.unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
    std::fs::rename(&moved, &path).unwrap();
    db.check().await.unwrap();
}
