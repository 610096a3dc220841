//! The local runner executing statemachine/image_pipeline.asl.json over a real directory store,
//! SQLite and the events file: success, rejection, retried and permanent faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use imaging::{EncodeOptions, Format, Image, image};
use local::{ExecutionStatus, FsStore, JsonlNotifier, LocalPipeline, SqliteMetadata};
use pipeline::memory::{Fault, Flaky};
use pipeline::model::Status;
use pipeline::ports::{MetadataStore, ObjectStore};
use pipeline::{Config, StepName};

fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
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

fn write(dir: &Path, name: &str, body: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn events(data: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A pipeline whose object store fails as told.
fn faulty(data: &Path, ops: &[&'static str], fault: Fault) -> (LocalPipeline, Arc<Flaky>) {
    std::fs::create_dir_all(data).unwrap();
    let store = Arc::new(FsStore::open(data.join("objects")).unwrap());
    let flaky = Arc::new(Flaky::new(store.clone(), ops, fault));
    let mut p = LocalPipeline::with_ports(
        data,
        Config::default(),
        store,
        flaky.clone(),
        Arc::new(SqliteMetadata::open(&data.join("imgpipe.db")).unwrap()),
        Arc::new(JsonlNotifier::open(&data.join("events.jsonl")).unwrap()),
    )
    .unwrap();
    p.set_retry_delay_scale(0.0);
    (p, flaky)
}

#[test]
fn every_state_in_the_definition_is_one_the_runner_executes() {
    let machine =
        local::asl::StateMachine::from_json(local::DEFINITION).expect("definition loads strictly");
    let resources = machine.task_resources();
    assert!(!resources.is_empty());
    for r in &resources {
        assert!(
            StepName::from_resource(r).is_some(),
            "no step for resource {r}"
        );
    }
    for step in StepName::ALL {
        assert!(
            resources.iter().any(|r| r == step.resource()),
            "{step:?} is never called"
        );
    }
}

#[tokio::test]
async fn web_preset_completes_with_renditions_record_and_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let p = LocalPipeline::open(&data, Config::default()).unwrap();
    let src = write(tmp.path(), "beach.jpg", &photo(2600, 1400));
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Succeeded);
    let record = outcome.record.unwrap();
    assert_eq!(record.status, Status::Complete);
    let mut dims: Vec<_> = record
        .renditions
        .iter()
        .map(|r| (r.name.clone(), r.width, r.height))
        .collect();
    dims.sort();
    assert_eq!(
        dims,
        [
            ("large".into(), 2048, 1103),
            ("medium".into(), 1024, 551),
            ("thumb".into(), 256, 256)
        ]
    );
    for r in &record.renditions {
        let bytes = p.store.get(&r.key).await.unwrap();
        assert_eq!(bytes.len() as u64, r.bytes);
    }
    let ev = events(&data);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["kind"], "completed");
    assert_eq!(ev[0]["imageId"], record.id.as_str());
    // The record survives a reopen: it is in the SQLite file, not in memory.
    let db = SqliteMetadata::open(&data.join("imgpipe.db")).unwrap();
    assert_eq!(
        db.get(&record.id).await.unwrap().unwrap().status,
        Status::Complete
    );
}

#[tokio::test]
async fn an_automatic_quality_is_chosen_per_rendition_and_kept_in_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let p = LocalPipeline::open(&data, Config::default()).unwrap();
    let src = write(tmp.path(), "field.jpg", &photo(1200, 800));
    let upload = p.ingest(&src, "local").unwrap();
    let upload = pipeline::io::Upload {
        recipe: Some(serde_json::json!({"renditions": [
            {"name": "auto", "resize": {"width": 600}, "format": "jpeg", "quality": "auto",
             "autoQualityTarget": 75},
            {"name": "fixed", "resize": {"width": 600}, "format": "jpeg", "quality": 80}
        ]})),
        ..upload
    };
    let outcome = p.run(&upload).await.unwrap();
    let record = outcome.record.unwrap();
    assert_eq!(record.status, Status::Complete, "{:?}", record.error);
    let auto = record.renditions.iter().find(|r| r.name == "auto").unwrap();
    let fixed = record
        .renditions
        .iter()
        .find(|r| r.name == "fixed")
        .unwrap();
    let (quality, score) = (auto.quality.unwrap(), auto.score.unwrap());
    assert!((1..=100).contains(&quality));
    assert!((75.0..=78.0).contains(&score), "score {score}");
    assert_eq!((fixed.quality, fixed.score), (None, None));
    let stored = p.store.get(&auto.key).await.unwrap();
    let decoded = imaging::decode(&stored, &imaging::Limits::default(), None).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (600, 400));
    // Kept in SQLite, not only in the outcome.
    let db = SqliteMetadata::open(&data.join("imgpipe.db")).unwrap();
    let again = db.get(&record.id).await.unwrap().unwrap();
    let kept = again.renditions.iter().find(|r| r.name == "auto").unwrap();
    assert_eq!((kept.quality, kept.score), (Some(quality), Some(score)));
}

#[tokio::test]
async fn a_corrupt_upload_is_rejected_quarantined_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let p = LocalPipeline::open(&data, Config::default()).unwrap();
    let mut body = photo(600, 400);
    body.truncate(body.len() * 2 / 3);
    let src = write(tmp.path(), "cut.jpg", &body);
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    assert!(matches!(
        outcome.execution.status,
        ExecutionStatus::Failed { .. }
    ));
    let record = outcome.record.unwrap();
    assert_eq!(record.status, Status::Rejected);
    assert_eq!(record.error.as_ref().unwrap().kind, "InvalidImage");
    assert_eq!(
        p.store.get(&upload.key).await.unwrap(),
        body,
        "original kept as it was"
    );
    let quarantined = p.store.list("quarantine/").await.unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    let ev = events(&data);
    assert_eq!(ev[0]["kind"], "rejected");
}

#[tokio::test]
async fn transient_store_faults_are_retried_and_the_job_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (p, flaky) = faulty(&data, &["get", "put"], Fault::Transient(2));
    let src = write(tmp.path(), "a.jpg", &photo(800, 600));
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Succeeded);
    assert_eq!(outcome.record.unwrap().status, Status::Complete);
    assert_eq!(
        flaky.failures(),
        2,
        "both injected faults happened and were retried past"
    );
}

#[tokio::test]
async fn a_permanent_fault_ends_failed_with_an_alert_and_the_original_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (p, flaky) = faulty(&data, &["put"], Fault::Permanent);
    let original = photo(800, 600);
    let src = write(tmp.path(), "a.jpg", &original);
    let upload = p.ingest(&src, "local").unwrap();
    let outcome = p.run(&upload).await.unwrap();
    assert!(flaky.failures() >= 1);
    assert!(matches!(
        outcome.execution.status,
        ExecutionStatus::Failed { .. }
    ));
    let record = outcome.record.unwrap();
    assert_eq!(record.status, Status::Failed);
    assert_eq!(record.error.unwrap().kind, "Internal");
    assert_eq!(p.store.get(&upload.key).await.unwrap(), original);
    let ev = events(&data);
    assert_eq!(ev.last().unwrap()["kind"], "failed");
}

/// A PROCESSING record of owner `o`, claimed by `exec`.
fn processing(id: &str, exec: &str) -> pipeline::model::ImageRecord {
    let now = chrono::Utc::now();
    pipeline::model::ImageRecord {
        derived: Vec::new(),
        id: id.into(),
        owner: "o".into(),
        status: Status::Processing,
        source: pipeline::model::SourceInfo {
            focal_point: None,
            alpha: None,
            key: format!("uploads/o/{id}/a.jpg"),
            etag: None,
            bytes: 1,
            format: None,
            width: None,
            height: None,
            sha256: None,
            color_profile: None,
            original: None,
        },
        recipe: None,
        renditions: vec![],
        error: None,
        created_at: now,
        updated_at: now,
        execution_id: Some(exec.into()),
        tags: vec![],
        preset: None,
        reprocessed_at: None,
    }
}

#[tokio::test]
async fn concurrent_duplicate_claims_make_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(SqliteMetadata::open(&tmp.path().join("t.db")).unwrap());
    let mut tasks = Vec::new();
    for i in 0..10 {
        let db = db.clone();
        let r = processing("01SAME", &format!("exec-{i}"));
        tasks.push(tokio::spawn(async move { db.begin(&r).await.unwrap() }));
    }
    let mut started = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), pipeline::ports::Begin::Started(_)) {
            started += 1;
        }
    }
    assert_eq!(started, 1);
    assert_eq!(db.list(&Default::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn sqlite_lists_newest_first_with_filters_and_cursor() {
    let db = SqliteMetadata::in_memory().unwrap();
    let base = chrono::Utc::now();
    for i in 0..5 {
        let t = base + chrono::Duration::seconds(i);
        let r = pipeline::model::ImageRecord {
            derived: Vec::new(),
            id: format!("id{i}"),
            owner: if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            },
            status: Status::Processing,
            source: pipeline::model::SourceInfo {
                focal_point: None,
                alpha: None,
                key: format!("uploads/x/id{i}/a.jpg"),
                etag: None,
                bytes: 1,
                format: None,
                width: None,
                height: None,
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe: None,
            renditions: vec![],
            error: None,
            created_at: t,
            updated_at: t,
            execution_id: Some(format!("e{i}")),
            tags: if i == 4 { vec!["cats".into()] } else { vec![] },
            preset: None,
            reprocessed_at: None,
        };
        db.begin(&r).await.unwrap();
    }
    let q = |owner: Option<&str>, limit, cursor: Option<String>| pipeline::model::ListQuery {
        owner: owner.map(str::to_string),
        limit,
        cursor,
        ..Default::default()
    };
    let page = db.list(&q(Some("even"), 2, None)).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["id4", "id2"]);
    let page2 = db.list(&q(Some("even"), 2, page.cursor)).await.unwrap();
    assert_eq!(
        page2
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["id0"]
    );
    assert!(page2.cursor.is_none());
    let tagged = db
        .list(&pipeline::model::ListQuery {
            tag: Some("cats".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tagged.items.len(), 1);
    assert!(
        db.list(&q(None, 2, Some("zz".into()))).await.is_err(),
        "a forged cursor is refused"
    );
}

#[tokio::test]
async fn sqlite_marks_each_executions_announcement_once_and_failures_drop_renditions() {
    let tmp = tempfile::tempdir().unwrap();
    let db = SqliteMetadata::open(&tmp.path().join("t.db")).unwrap();
    let e = db.mark_announced("01ANN", "exec-a").await.unwrap_err();
    assert!(matches!(e, pipeline::PortError::NotFound(_)), "{e:?}");
    let record = processing("01ANN", "exec-a");
    db.begin(&record).await.unwrap();
    assert!(db.mark_announced("01ANN", "exec-a").await.unwrap());
    assert!(
        !db.mark_announced("01ANN", "exec-a").await.unwrap(),
        "a retry"
    );
    // Taken back after a failed publish: the retry marks (and publishes) again.
    db.unmark_announced("01ANN", "exec-a").await.unwrap();
    assert!(db.mark_announced("01ANN", "exec-a").await.unwrap());
    // Another execution's mark is not undone by this one, and its own is new.
    assert!(db.mark_announced("01ANN", "exec-b").await.unwrap());
    db.unmark_announced("01ANN", "exec-a").await.unwrap();
    assert!(!db.mark_announced("01ANN", "exec-b").await.unwrap());

    let rendition = pipeline::model::RenditionRecord {
        name: "thumb".into(),
        key: "renditions/o/01ANN/thumb.webp".into(),
        format: imaging::Format::Webp,
        width: 10,
        height: 10,
        bytes: 10,
        ms: 1,
        quality: None,
        score: None,
        placeholder: None,
        dominant_color: None,
    };
    db.put_rendition("01ANN", &rendition).await.unwrap();
    let error = pipeline::model::ErrorInfo {
        kind: "Internal".into(),
        message: "medium failed".into(),
    };
    db.fail(
        "01ANN",
        Status::Failed,
        &error,
        &record,
        pipeline::ports::IfAbsent::Skip,
    )
    .await
    .unwrap();
    let failed = db.get("01ANN").await.unwrap().unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.renditions.is_empty(), "{:?}", failed.renditions);

    // The mark goes with the record.
    assert!(db.delete("01ANN").await.unwrap());
    let e = db.mark_announced("01ANN", "exec-b").await.unwrap_err();
    assert!(matches!(e, pipeline::PortError::NotFound(_)), "{e:?}");
}

/// The built-in presets with `web` changed: a `tiny` rendition added.
fn changed_web() -> Config {
    let mut presets: serde_json::Value = serde_json::from_str(pipeline::BUILTIN_PRESETS).unwrap();
    presets["web"]["renditions"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "tiny", "resize": {"width": 64, "height": 64}}));
    Config {
        presets: pipeline::Presets::from_json(&presets.to_string()).unwrap(),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_failed_rerender_keeps_the_old_renditions_and_alerts_and_a_later_one_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let p = LocalPipeline::open(&data, Config::default()).unwrap();
    let src = write(tmp.path(), "a.jpg", &photo(900, 600));
    let upload = p.ingest(&src, "local").unwrap();
    let before = p.run(&upload).await.unwrap().record.unwrap();
    assert_eq!(before.preset.as_deref(), Some("web"));
    drop(p);

    // The new `tiny` rendition cannot be written: the three others are, under new keys,
    // before the Map fails.
    std::fs::create_dir_all(&data).unwrap();
    let store = Arc::new(FsStore::open(data.join("objects")).unwrap());
    let flaky = Arc::new(Flaky {
        inner: store.clone(),
        faults: pipeline::memory::Faults::new(&["put"], Fault::Permanent).only("/tiny."),
    });
    let mut broken = LocalPipeline::with_ports(
        &data,
        changed_web(),
        store.clone(),
        flaky.clone(),
        Arc::new(SqliteMetadata::open(&data.join("imgpipe.db")).unwrap()),
        Arc::new(JsonlNotifier::open(&data.join("events.jsonl")).unwrap()),
    )
    .unwrap();
    broken.set_retry_delay_scale(0.0);
    let filter = pipeline::reprocess::Filter::default();
    let outcome = broken.rerender(&before, &filter).await.unwrap();
    assert!(flaky.failures() >= 1);
    assert!(matches!(
        outcome.execution.status,
        ExecutionStatus::Failed { .. }
    ));
    let kept = outcome.record.unwrap();
    assert_eq!(kept, before, "a failed re-render changed the record");
    let mut files = store
        .list(&format!("renditions/local/{}/", before.id))
        .await
        .unwrap();
    files.sort();
    let mut listed: Vec<String> = before.renditions.iter().map(|r| r.key.clone()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "what the failed re-render wrote is still there"
    );
    let alert = events(&data).pop().unwrap();
    assert_eq!(alert["kind"], "notReprocessed", "{alert}");
    assert_eq!(alert["status"], "COMPLETE");
    assert!(
        alert["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected"),
        "{alert}"
    );
    drop(broken);

    // The failure released the image: a healthy run re-renders it.
    let p = LocalPipeline::open(&data, changed_web()).unwrap();
    let outcome = p.rerender(&before, &filter).await.unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Succeeded);
    let after = outcome.record.unwrap();
    assert_eq!(after.renditions.len(), 4);
    assert!(after.reprocessed_at.is_some());
    for r in &before.renditions {
        assert!(p.store.get(&r.key).await.is_err(), "{} left behind", r.key);
    }
    // Up to date now: another execution writes nothing.
    let again = p.rerender(&after, &filter).await.unwrap();
    assert_eq!(again.execution.status, ExecutionStatus::Succeeded);
    assert!(again.execution.path().contains(&"AlreadyProcessing"));
    assert_eq!(again.record.unwrap(), after);
}

#[tokio::test]
async fn a_rerender_leaves_an_image_another_rerender_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let p = LocalPipeline::open(&data, Config::default()).unwrap();
    let src = write(tmp.path(), "a.jpg", &photo(700, 500));
    let upload = p.ingest(&src, "local").unwrap();
    let before = p.run(&upload).await.unwrap().record.unwrap();
    drop(p);
    let p = LocalPipeline::open(&data, changed_web()).unwrap();
    // Another execution holds it (running elsewhere, or crashed less than the lease ago).
    assert!(matches!(
        p.steps
            .metadata
            .begin_reprocess(&before.id, "exec-elsewhere")
            .await
            .unwrap(),
        pipeline::ports::Begin::Started(_)
    ));
    let outcome = p
        .rerender(&before, &pipeline::reprocess::Filter::default())
        .await
        .unwrap();
    assert_eq!(outcome.execution.status, ExecutionStatus::Succeeded);
    assert!(outcome.execution.path().contains(&"AlreadyProcessing"));
    assert_eq!(outcome.record.unwrap(), before);
}
