//! Duplicate delivery against the AWS adapters, with nothing of ours mocked: S3, DynamoDB and
//! SNS as moto serves them, the steps over the real adapters (`aws::lambda::steps_for`, as
//! each Lambda builds them), and the state machine definition run by the local ASL runner.
//! EventBridge delivers at least once, so the same Object Created event arriving ten times at
//! once must still make one record (DynamoDB conditional writes in Validate's claim), one set
//! of renditions and one message on the topics, counted through SQS queues subscribed to them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/aws/tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/lambdas.rs"]
mod lambdas;

use common::{jpeg, object_created};
use lambdas::Resources;

use std::sync::Arc;

use local::StepExecutor;
use local::asl::{ExecutionStatus, RunOptions, Runner, StateMachine};
use pipeline::model::Status;
use pipeline::ports::MetadataStore;
use serde_json::Value;

const DELIVERIES: usize = 10;

/// The stack's resources in moto, each test its own, and the steps over them run by the local
/// ASL runner in this process.
struct Stack {
    r: Resources,
    runner: Arc<Runner<StepExecutor>>,
    metadata: aws::DynamoMetadata,
}

impl Stack {
    async fn new() -> Stack {
        let r = Resources::new().await;
        let config = aws::Config {
            uploads_bucket: r.uploads.clone(),
            renditions_bucket: r.renditions.clone(),
            table: r.table.clone(),
            alerts_topic_arn: r.alerts.clone(),
            events_topic_arn: r.events.clone(),
            steps: pipeline::Config::default(),
            forms: api::FormLimits::default(),
            reprocess: None,
            transforms: Default::default(),
        };
        let steps = aws::lambda::steps_for(&config, &r.sdk);
        let runner = Arc::new(Runner::new(
            Arc::new(StateMachine::from_json(local::DEFINITION).unwrap()),
            Arc::new(StepExecutor { steps }),
            RunOptions {
                retry_delay_scale: 0.0,
                ..RunOptions::default()
            },
        ));
        Stack {
            metadata: r.metadata(),
            r,
            runner,
        }
    }

    /// Puts an object in the ingest bucket; returns the event announcing it.
    async fn put(&self, key: &str, body: &[u8]) -> Value {
        let etag = self.r.put(key, body).await;
        object_created(&self.r.uploads, key, body.len(), &etag)
    }

    /// The same event, `n` times at once, each its own execution.
    async fn deliver(&self, event: &Value, n: usize) -> Vec<local::asl::Execution> {
        let runs = (0..n).map(|i| {
            let runner = self.runner.clone();
            let event = event.clone();
            let id = format!(
                "arn:aws:states:us-east-1:123456789012:execution:imgpipe:{}-{i}",
                ulid::Ulid::new()
            );
            tokio::spawn(async move { runner.run(&id, event).await.unwrap() })
        });
        futures_join(runs).await
    }

    async fn items_in_table(&self) -> usize {
        let out = self
            .r
            .dynamo
            .scan()
            .table_name(&self.r.table)
            .send()
            .await
            .unwrap();
        out.items().len()
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        self.r
            .s3
            .get_object()
            .bucket(&self.r.uploads)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    }
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

/// Every notification that has reached a queue, as (kind, imageId): read until the queue has
/// stayed empty for two seconds (moto delivers from SNS to SQS within the publish call).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deliveries_of_one_s3_event_make_one_record_one_set_of_renditions_one_message() {
    let stack = Stack::new().await;
    let photo = jpeg(900, 600);
    // An API upload's key names its id; a batch drop's id comes from its key and ETag.
    let id = ulid::Ulid::new().to_string();
    let api_key = format!("uploads/alice/{id}/beach.jpg");
    // A drop named as people name files: the event carries it as
    // `my+shoot/my+photo+%281%29%2Bfinal.jpg`, and Validate must find the object by its name.
    let drop_key = format!(
        "uploads/batch-{}/my shoot/my photo (1)+final.jpg",
        ulid::Ulid::new()
    );
    let api_event = stack.put(&api_key, &photo).await;
    let drop_event = stack.put(&drop_key, &photo).await;

    let (api_runs, drop_runs) = tokio::join!(
        stack.deliver(&api_event, DELIVERIES),
        stack.deliver(&drop_event, DELIVERIES)
    );

    for (what, runs) in [("api", &api_runs), ("drop", &drop_runs)] {
        let mut processed = 0;
        for x in runs {
            assert_eq!(x.status, ExecutionStatus::Succeeded, "{what}: {x:?}");
            if x.path().contains(&"Resize") {
                processed += 1;
            } else {
                assert_eq!(
                    x.path(),
                    [
                        "Route",
                        "FromS3Event",
                        "Validate",
                        "IsDuplicate",
                        "AlreadyProcessing"
                    ],
                    "{what}"
                );
            }
        }
        assert_eq!(processed, 1, "{what}: exactly one delivery did the work");
    }
    assert_eq!(stack.items_in_table().await, 2, "one record per image");
    let drop_id =
        pipeline::keys::identify(&drop_key, drop_event["detail"]["object"]["etag"].as_str())
            .unwrap()
            .id;
    for image in [&id, &drop_id] {
        let record = stack.metadata.get(image).await.unwrap().expect("a record");
        assert_eq!(record.status, Status::Complete);
        assert_eq!(record.renditions.len(), 3);
        let made = stack
            .r
            .keys(
                &stack.r.renditions,
                &format!("renditions/{}/{image}/", record.owner),
            )
            .await;
        assert_eq!(made.len(), 3, "{made:?}");
        assert!(
            stack
                .r
                .keys(&stack.r.uploads, &format!("work/{image}/"))
                .await
                .is_empty()
        );
    }
    let mut events = stack.r.messages(&stack.r.events_queue).await;
    events.sort();
    let mut want = vec![
        ("completed".to_string(), id.clone()),
        ("completed".to_string(), drop_id.clone()),
    ];
    want.sort();
    assert_eq!(events, want, "one completion message per image");
    assert!(stack.r.messages(&stack.r.alerts_queue).await.is_empty());
    assert_eq!(stack.get(&api_key).await, photo, "original unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_deliveries_of_a_corrupt_upload_make_one_rejection_and_one_alert() {
    let stack = Stack::new().await;
    let id = ulid::Ulid::new().to_string();
    let key = format!("uploads/bob/{id}/broken photo (2).jpg");
    // Cut inside its header: every delivery's Validate refuses it.
    let broken = jpeg(600, 400)[..120].to_vec();
    let event = stack.put(&key, &broken).await;

    let runs = stack.deliver(&event, DELIVERIES).await;

    for x in &runs {
        assert!(
            matches!(&x.status, ExecutionStatus::Failed { error, .. } if error == "ImageNotProcessed"),
            "{x:?}"
        );
    }
    assert_eq!(stack.items_in_table().await, 1);
    let record = stack.metadata.get(&id).await.unwrap().expect("a record");
    assert_eq!(record.status, Status::Rejected);
    assert_eq!(record.error.as_ref().unwrap().kind, "InvalidImage");
    let alerts = stack.r.messages(&stack.r.alerts_queue).await;
    assert_eq!(alerts, [("rejected".to_string(), id.clone())], "one alert");
    assert!(stack.r.messages(&stack.r.events_queue).await.is_empty());
    let quarantined = stack
        .r
        .keys(&stack.r.uploads, &format!("quarantine/bob/{id}/"))
        .await;
    assert_eq!(
        quarantined,
        [
            format!("quarantine/bob/{id}/broken_photo__2_.jpg"),
            format!("quarantine/bob/{id}/broken_photo__2_.jpg.reason.json")
        ],
        "the copy and its reason, under the decoded name made safe"
    );
    assert_eq!(stack.get(&key).await, broken, "original kept as uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_made_in_the_s3_console_is_ignored_without_an_alert() {
    let stack = Stack::new().await;
    let key = format!("uploads/{}/", ulid::Ulid::new());
    let event = stack.put(&key, b"").await;

    let runs = stack.deliver(&event, 1).await;

    assert_eq!(runs[0].status, ExecutionStatus::Succeeded, "{:?}", runs[0]);
    assert_eq!(runs[0].path(), ["Route", "FolderObject"]);
    assert_eq!(stack.items_in_table().await, 0, "no record");
    assert!(stack.r.messages(&stack.r.alerts_queue).await.is_empty());
    assert!(stack.r.messages(&stack.r.events_queue).await.is_empty());
    // An empty file that is not a folder is still an upload, rejected with its reason.
    let empty = format!("uploads/carol/{}/empty.jpg", ulid::Ulid::new());
    let event = stack.put(&empty, b"").await;
    let runs = stack.deliver(&event, 1).await;
    assert!(runs[0].path().contains(&"NotifyFailure"), "{:?}", runs[0]);
    let alerts = stack.r.messages(&stack.r.alerts_queue).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
}
