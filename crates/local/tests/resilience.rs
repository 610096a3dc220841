//! Resilience on one machine, through the local runner and the very state machine the cloud
//! runs: the same upload delivered many times at once is processed once; faults of the store,
//! the table and the notifier are retried past or end FAILED with an alert; and the original
//! is never lost or changed, whatever happens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use imaging::{EncodeOptions, Format, Image, image};
use local::{ExecutionStatus, FsStore, JsonlNotifier, LocalPipeline, SqliteMetadata};
use pipeline::Config;
use pipeline::io::Upload;
use pipeline::memory::{Fault, Flaky, FlakyMetadata, FlakyNotifier};
use pipeline::model::Status;
use pipeline::ports::{MetadataStore, Notifier, ObjectStore};
use sha2::{Digest, Sha256};

const DELIVERIES: usize = 10;

fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
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

fn events(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The ports of one data directory, each of which a test may wrap in a fault injector.
struct Ports {
    store: Arc<FsStore>,
    metadata: Arc<SqliteMetadata>,
    notifier: Arc<JsonlNotifier>,
}

impl Ports {
    fn open(data: &Path) -> Ports {
        std::fs::create_dir_all(data).unwrap();
        Ports {
            store: Arc::new(FsStore::open(data.join("objects")).unwrap()),
            metadata: Arc::new(SqliteMetadata::open(&data.join("imgpipe.db")).unwrap()),
            notifier: Arc::new(JsonlNotifier::open(&data.join("events.jsonl")).unwrap()),
        }
    }

    fn pipeline(
        &self,
        data: &Path,
        objects: Option<Arc<dyn ObjectStore>>,
        metadata: Option<Arc<dyn MetadataStore>>,
        notifier: Option<Arc<dyn Notifier>>,
    ) -> LocalPipeline {
        let mut p = LocalPipeline::with_ports(
            data,
            Config::default(),
            self.store.clone(),
            objects.unwrap_or_else(|| self.store.clone()),
            metadata.unwrap_or_else(|| self.metadata.clone()),
            notifier.unwrap_or_else(|| self.notifier.clone()),
        )
        .unwrap();
        p.set_retry_delay_scale(0.0);
        p
    }
}

/// Runs the same upload `n` times at once, as an event bus delivering it `n` times would.
async fn deliver(p: &Arc<LocalPipeline>, upload: &Upload, n: usize) -> Vec<local::Outcome> {
    let runs = (0..n).map(|_| {
        let p = p.clone();
        let upload = upload.clone();
        tokio::spawn(async move { p.run(&upload).await.unwrap() })
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Every object under a prefix, read straight from the directory store.
async fn objects_under(store: &FsStore, prefix: &str) -> Vec<String> {
    store.list(prefix).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deliveries_of_one_upload_make_one_record_one_set_of_renditions_one_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ports = Ports::open(&data);
    let p = Arc::new(ports.pipeline(&data, None, None, None));
    let original = photo(1200, 800);
    let src = tmp.path().join("beach.jpg");
    std::fs::write(&src, &original).unwrap();
    let upload = p.ingest(&src, "local").unwrap();

    let outcomes = deliver(&p, &upload, DELIVERIES).await;

    let mut processed = 0;
    for o in &outcomes {
        assert_eq!(
            o.execution.status,
            ExecutionStatus::Succeeded,
            "{:?}",
            o.execution
        );
        let path = o.execution.path();
        if path.contains(&"Resize") {
            processed += 1;
        } else {
            assert_eq!(
                path,
                ["Route", "Validate", "IsDuplicate", "AlreadyProcessing"]
            );
        }
    }
    assert_eq!(processed, 1, "exactly one delivery did the work");
    let records = ports
        .metadata
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Complete);
    assert_eq!(records[0].renditions.len(), 3);
    let renditions = objects_under(&ports.store, "renditions/").await;
    assert_eq!(renditions.len(), 3, "{renditions:?}");
    let ev = events(&data);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["kind"], "completed");
    assert_eq!(
        sha256(&ports.store.get(&upload.key).await.unwrap()),
        sha256(&original)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deliveries_of_a_corrupt_upload_make_one_rejection_and_one_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = photo(600, 400);
    // Cut inside the header, every delivery's Validate refuses it and each goes on to record
    // the rejection; cut inside the scan, Validate passes, one delivery claims the image and
    // its Resize refuses it while the others end as duplicates.
    for (what, len, failed_runs) in [
        ("cut in the header", 100, DELIVERIES),
        ("cut in the scan", whole.len() / 2, 1),
    ] {
        let data = tmp.path().join(format!("data-{len}"));
        let ports = Ports::open(&data);
        let p = Arc::new(ports.pipeline(&data, None, None, None));
        let broken = whole[..len].to_vec();
        let src = tmp.path().join("broken.jpg");
        std::fs::write(&src, &broken).unwrap();
        let upload = p.ingest(&src, "local").unwrap();

        let outcomes = deliver(&p, &upload, DELIVERIES).await;

        let failed = outcomes
            .iter()
            .filter(|o| {
                matches!(&o.execution.status, ExecutionStatus::Failed { error, .. } if error == "ImageNotProcessed")
            })
            .count();
        assert_eq!(failed, failed_runs, "{what}");
        let records = ports
            .metadata
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        assert_eq!(records.len(), 1, "{what}");
        assert_eq!(records[0].status, Status::Rejected, "{what}");
        assert_eq!(
            records[0].error.as_ref().unwrap().kind,
            "InvalidImage",
            "{what}"
        );
        let ev = events(&data);
        assert_eq!(
            ev.len(),
            1,
            "{what}: one alert, not one per delivery: {ev:#?}"
        );
        assert_eq!(ev[0]["kind"], "rejected", "{what}");
        assert_eq!(
            ev[0]["executionId"].as_str(),
            records[0].execution_id.as_deref(),
            "{what}: the alert comes from the execution the record names"
        );
        let quarantined = objects_under(&ports.store, "quarantine/").await;
        assert_eq!(
            quarantined.len(),
            2,
            "{what}: the copy and its reason: {quarantined:?}"
        );
        assert_eq!(
            ports.store.get(&upload.key).await.unwrap(),
            broken,
            "{what}: original kept"
        );
    }
}

#[tokio::test]
async fn a_late_duplicate_that_fails_leaves_the_finished_image_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ports = Ports::open(&data);
    let p = ports.pipeline(&data, None, None, None);
    let src = tmp.path().join("a.jpg");
    std::fs::write(&src, photo(800, 600)).unwrap();
    let upload = p.ingest(&src, "local").unwrap();
    let done = p.run(&upload).await.unwrap();
    assert_eq!(done.execution.status, ExecutionStatus::Succeeded);

    // The same event again, now meeting a store that refuses to answer: its Validate fails
    // and its failure handler runs for an image another execution finished.
    let broken: Arc<dyn ObjectStore> =
        Arc::new(Flaky::new(ports.store.clone(), &["head"], Fault::Permanent));
    let late = ports.pipeline(&data, Some(broken), None, None);
    let outcome = late.run(&upload).await.unwrap();
    assert!(matches!(
        outcome.execution.status,
        ExecutionStatus::Failed { .. }
    ));
    let record = outcome.record.unwrap();
    assert_eq!(record.status, Status::Complete, "{:?}", record.error);
    assert_eq!(record.execution_id, done.record.unwrap().execution_id);
    let kinds: Vec<_> = events(&data).iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, ["completed"], "no false alarm for a finished image");
}

/// Runs one upload through a pipeline with the given fault injectors and checks the original
/// is byte for byte what was uploaded afterwards.
async fn run_with(
    data: &Path,
    ports: &Ports,
    objects: Option<Arc<dyn ObjectStore>>,
    metadata: Option<Arc<dyn MetadataStore>>,
    notifier: Option<Arc<dyn Notifier>>,
) -> (local::Outcome, Upload) {
    let p = ports.pipeline(data, objects, metadata, notifier);
    let original = photo(900, 700);
    let src = data.with_extension("src.jpg");
    std::fs::write(&src, &original).unwrap();
    let before = sha256(&original);
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    let after = sha256(&ports.store.get(&upload.key).await.unwrap());
    assert_eq!(after, before, "the original changed");
    (outcome, upload)
}

#[tokio::test]
async fn transient_faults_mid_run_in_store_table_and_notifier_are_retried_to_completion() {
    let tmp = tempfile::tempdir().unwrap();
    // (what fails, how): each run must still complete, with exactly the injected failures.
    type Case = (&'static str, Fault, usize);
    let cases: [Case; 5] = [
        ("store put (renditions) x2", Fault::Transient(2), 2),
        ("store every 2nd put", Fault::Every(2), 1),
        (
            "table put_rendition and complete x3",
            Fault::Transient(3),
            3,
        ),
        ("table every 3rd write", Fault::Every(3), 1),
        ("notifier publish x2", Fault::Transient(2), 2),
    ];
    for (i, (what, fault, at_least)) in cases.into_iter().enumerate() {
        let data = tmp.path().join(format!("data{i}"));
        let ports = Ports::open(&data);
        let mut objects: Option<Arc<dyn ObjectStore>> = None;
        let mut metadata: Option<Arc<dyn MetadataStore>> = None;
        let mut notifier: Option<Arc<dyn Notifier>> = None;
        let failures: Box<dyn Fn() -> usize> = match i {
            0 | 1 => {
                let f = Arc::new(Flaky::new(ports.store.clone(), &["put"], fault));
                objects = Some(f.clone());
                Box::new(move || f.failures())
            }
            2 | 3 => {
                let f = Arc::new(FlakyMetadata::new(
                    ports.metadata.clone(),
                    &["begin", "put_rendition", "complete"],
                    fault,
                ));
                metadata = Some(f.clone());
                Box::new(move || f.faults.failures())
            }
            _ => {
                let f = Arc::new(FlakyNotifier::new(ports.notifier.clone(), fault));
                notifier = Some(f.clone());
                Box::new(move || f.faults.failures())
            }
        };
        let (outcome, _) = run_with(&data, &ports, objects, metadata, notifier).await;
        assert_eq!(
            outcome.execution.status,
            ExecutionStatus::Succeeded,
            "{what}: {:?}",
            outcome.execution
        );
        let record = outcome.record.unwrap();
        assert_eq!(record.status, Status::Complete, "{what}");
        assert_eq!(record.renditions.len(), 3, "{what}");
        assert!(
            failures() >= at_least,
            "{what}: only {} faults happened",
            failures()
        );
        let retried: u32 = outcome
            .execution
            .history
            .iter()
            .map(|v| v.attempts - 1)
            .sum();
        assert_eq!(
            retried as usize,
            failures(),
            "{what}: each fault cost one retry"
        );
        let ev = events(&data);
        assert_eq!(ev.len(), 1, "{what}: {ev:?}");
        assert_eq!(ev[0]["kind"], "completed", "{what}");
    }
}

#[tokio::test]
async fn permanent_faults_end_failed_with_an_alert_and_the_original_kept() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, what) in ["store put", "table put_rendition", "store get (Resize)"]
        .into_iter()
        .enumerate()
    {
        let data = tmp.path().join(format!("data{i}"));
        let ports = Ports::open(&data);
        let mut objects: Option<Arc<dyn ObjectStore>> = None;
        let mut metadata: Option<Arc<dyn MetadataStore>> = None;
        match i {
            0 => {
                objects = Some(Arc::new(Flaky::new(
                    ports.store.clone(),
                    &["put"],
                    Fault::Permanent,
                )))
            }
            1 => {
                metadata = Some(Arc::new(FlakyMetadata::new(
                    ports.metadata.clone(),
                    &["put_rendition"],
                    Fault::Permanent,
                )))
            }
            _ => {
                objects = Some(Arc::new(Flaky::new(
                    ports.store.clone(),
                    &["get"],
                    Fault::Permanent,
                )))
            }
        }
        let (outcome, upload) = run_with(&data, &ports, objects, metadata, None).await;
        assert!(
            matches!(&outcome.execution.status, ExecutionStatus::Failed { error, .. } if error == "ImageNotProcessed"),
            "{what}: {:?}",
            outcome.execution
        );
        assert!(
            outcome.execution.path().contains(&"NotifyFailure"),
            "{what}"
        );
        let record = outcome.record.unwrap();
        assert_eq!(record.status, Status::Failed, "{what}");
        assert_eq!(record.error.as_ref().unwrap().kind, "Internal", "{what}");
        assert!(
            record.error.as_ref().unwrap().message.contains("injected"),
            "{what}: the record says why: {:?}",
            record.error
        );
        let ev = events(&data);
        assert_eq!(ev.len(), 1, "{what}: {ev:?}");
        assert_eq!(ev[0]["kind"], "failed", "{what}: an alert");
        assert_eq!(ev[0]["imageId"], record.id.as_str());
        // A failure of ours is not the upload's fault: nothing is quarantined, and the
        // original stays where it was (checked byte for byte by run_with).
        assert!(
            objects_under(&ports.store, "quarantine/").await.is_empty(),
            "{what}"
        );
        assert!(ports.store.head(&upload.key).await.is_ok(), "{what}");
    }
}
