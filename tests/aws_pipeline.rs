//! The cloud pipeline end to end, with nothing of ours mocked: the five real Lambda bootstrap
//! binaries run against `cargo lambda watch`'s Lambda runtime and Invoke APIs, the state
//! machine definition is executed by the local ASL runner whose Task states call those
//! functions through the Lambda Invoke API, and the functions talk to S3, DynamoDB and SNS
//! as served by moto. A photo dropped into the ingest bucket (as the EventBridge event the
//! stack receives) ends with renditions in the bucket, a COMPLETE record and a completion
//! message on the events topic; a corrupt one ends REJECTED with an alert, its original kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/aws/tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/lambdas.rs"]
mod lambdas;

use common::{jpeg, object_created};
use lambdas::{Lambdas, Resources};

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_s3::primitives::ByteStream;
use local::asl::{ExecutionStatus, RunOptions, Runner, StateMachine, TaskExecutor, TaskFailure};
use pipeline::StepName;
use pipeline::model::Status;
use pipeline::ports::MetadataStore;
use serde_json::Value;

/// Step Functions' view of a Lambda Task: invoke, and turn a function error into the state
/// error `errorType` with the payload as its cause.
struct InvokeLambda {
    client: aws_sdk_lambda::Client,
}

#[async_trait]
impl TaskExecutor for InvokeLambda {
    async fn invoke(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
        let step = StepName::from_resource(resource)
            .ok_or_else(|| TaskFailure::new("States.Runtime", format!("unknown {resource}")))?;
        let result = self
            .client
            .invoke()
            .function_name(step.as_str())
            .payload(Blob::new(serde_json::to_vec(&input).unwrap()))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                // Lambda answers a function error with 200 and X-Amz-Function-Error; the
                // emulator answers 500 with the same {errorType, errorMessage} body. Both
                // are the function's own error, which Step Functions names by errorType.
                let body = e
                    .raw_response()
                    .and_then(|r| r.body().bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                return Err(match value["errorType"].as_str() {
                    Some(error) => TaskFailure::new(error, body.clone()),
                    None => TaskFailure::new("Lambda.ServiceException", format!("{e:?}")),
                });
            }
        };
        let payload = out
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&payload).into_owned();
        let value: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        if out.function_error().is_some() {
            let error = value["errorType"]
                .as_str()
                .unwrap_or("Lambda.Unknown")
                .to_string();
            return Err(TaskFailure::new(error, text));
        }
        Ok(value)
    }
}

/// Waits for an SNS notification on a subscribed queue whose message matches.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    want: impl Fn(&Value) -> bool,
) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let envelope: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap();
            let message: Value =
                serde_json::from_str(envelope["Message"].as_str().unwrap_or("{}")).unwrap();
            if want(&message) {
                return (envelope, message);
            }
        }
    }
    panic!("no matching message arrived on {queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lambda_binaries_run_the_state_machine_against_moto() {
    let r = Resources::new().await;
    let lambdas = Lambdas::start(&r);
    let port = lambdas.port;
    let (sdk, s3, sqs) = (&r.sdk, &r.s3, &r.sqs);
    let (uploads, renditions) = (r.uploads.clone(), r.renditions.clone());
    let (alerts_queue, events_queue) = (r.alerts_queue.clone(), r.events_queue.clone());

    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(sdk)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .build(),
    );
    let machine = Arc::new(StateMachine::from_json(local::DEFINITION).unwrap());
    let runner = Runner::new(
        machine,
        Arc::new(InvokeLambda { client: lambda }),
        RunOptions {
            retry_delay_scale: 0.2,
            ..RunOptions::default()
        },
    );
    let metadata = r.metadata();

    // A good photo dropped under uploads/{owner}/{id}/.
    let id = ulid::Ulid::new().to_string();
    let key = format!("uploads/alice/{id}/beach.jpg");
    let photo = jpeg(1600, 1200);
    let put = s3
        .put_object()
        .bucket(&uploads)
        .key(&key)
        .body(ByteStream::from(photo.clone()))
        .send()
        .await
        .unwrap();
    let event = object_created(&uploads, &key, photo.len(), put.e_tag().unwrap_or(""));
    let execution = runner.run(&format!("arn:exec:{id}"), event).await.unwrap();
    assert_eq!(
        execution.status,
        ExecutionStatus::Succeeded,
        "{execution:?}"
    );

    let record = metadata.get(&id).await.unwrap().expect("a record");
    assert_eq!(record.status, Status::Complete);
    assert_eq!(record.owner, "alice");
    assert_eq!(record.source.sha256.as_deref().map(str::len), Some(64));
    let mut dims: Vec<_> = record
        .renditions
        .iter()
        .map(|r| (r.name.as_str(), r.width, r.height))
        .collect();
    dims.sort();
    assert_eq!(
        dims,
        [
            ("large", 1600, 1200),
            ("medium", 1024, 768),
            ("thumb", 256, 256)
        ]
    );
    for r in &record.renditions {
        let obj = s3
            .get_object()
            .bucket(&renditions)
            .key(&r.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} missing: {e:?}", r.key));
        assert_eq!(obj.content_type(), Some(r.format.mime()));
        let bytes = obj.body.collect().await.unwrap().into_bytes();
        assert_eq!(bytes.len() as u64, r.bytes);
        let header = imaging::probe(&bytes, &imaging::Limits::default()).unwrap();
        assert_eq!((header.width, header.height), (r.width, r.height));
    }
    let (envelope, message) = receive(sqs, &events_queue, |m| m["imageId"] == id.as_str()).await;
    assert_eq!(message["kind"], "completed");
    assert_eq!(envelope["MessageAttributes"]["kind"]["Value"], "completed");
    let work = s3
        .list_objects_v2()
        .bucket(&uploads)
        .prefix(format!("work/{id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(work.key_count(), Some(0), "intermediates are cleared");

    // A corrupt one: rejected, quarantined with its reason, alerted, original kept.
    let bad_id = ulid::Ulid::new().to_string();
    let bad_key = format!("uploads/alice/{bad_id}/broken.jpg");
    let mut broken = jpeg(800, 600);
    broken.truncate(broken.len() / 2);
    s3.put_object()
        .bucket(&uploads)
        .key(&bad_key)
        .body(ByteStream::from(broken.clone()))
        .send()
        .await
        .unwrap();
    let event = object_created(&uploads, &bad_key, broken.len(), "\"e\"");
    let execution = runner
        .run(&format!("arn:exec:{bad_id}"), event)
        .await
        .unwrap();
    match &execution.status {
        ExecutionStatus::Failed { error, .. } => assert_eq!(error, "ImageNotProcessed"),
        other => panic!("a corrupt upload must fail the execution, got {other:?}"),
    }
    let record = metadata.get(&bad_id).await.unwrap().expect("a record");
    assert_eq!(record.status, Status::Rejected, "{:?}", record.error);
    assert_eq!(record.error.as_ref().unwrap().kind, "InvalidImage");
    let (envelope, message) =
        receive(sqs, &alerts_queue, |m| m["imageId"] == bad_id.as_str()).await;
    assert_eq!(message["kind"], "rejected");
    assert_eq!(
        envelope["MessageAttributes"]["errorType"]["Value"],
        "InvalidImage"
    );
    let kept = s3
        .get_object()
        .bucket(&uploads)
        .key(&bad_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(
        kept.as_ref(),
        broken.as_slice(),
        "the original stays where it was"
    );
    let quarantined = s3
        .list_objects_v2()
        .bucket(&uploads)
        .prefix(format!("quarantine/alice/{bad_id}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        quarantined.key_count(),
        Some(2),
        "the copy and its .reason.json"
    );
}
