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

use common::{jpeg, object_created};

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// Children killed with their whole process group when the test ends, even by a panic.
struct Group(Vec<Child>);

impl Drop for Group {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // The whole group: cargo-lambda runs its server as a child of its own.
            let _ = Command::new("kill")
                .arg("--")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tool(name: &str) -> PathBuf {
    let venv = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/imgpipe/venv/bin")
        .join(name);
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| venv.is_file().then_some(venv))
        .unwrap_or_else(|| panic!("{name} is needed: scripts/setup installs it"))
}

/// The function binaries this workspace build produced (each function's own tests make cargo
/// build it, in the same build as this test).
fn bootstrap(step: StepName) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(step.as_str());
    assert!(
        path.is_file(),
        "{} is not built: run the whole workspace's tests (scripts/test), which build every function",
        path.display()
    );
    path
}

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
    let sdk = support::sdk().await;
    let s3 = aws::S3Store::client_for(&sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    // The stack's resources, as template.yaml declares them.
    let uploads = support::unique("ingest");
    let renditions = support::unique("renditions");
    for bucket in [&uploads, &renditions] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let table = support::unique("images");
    aws::DynamoMetadata::create_table(&dynamo, &table)
        .await
        .unwrap();
    let topic = |name: String| {
        let sns = sns.clone();
        async move {
            let out = sns.create_topic().name(name).send().await.unwrap();
            out.topic_arn().unwrap().to_string()
        }
    };
    let alerts = topic(support::unique("alerts")).await;
    let events = topic(support::unique("events")).await;
    let alerts_queue = support::subscribed_queue(&sqs, &sns, &alerts).await;
    let events_queue = support::subscribed_queue(&sqs, &sns, &events).await;

    // The Lambda emulator, then the five bootstraps polling it as their runtime API.
    let port = free_port();
    let mut emulator = Command::new(tool("cargo-lambda"))
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("cargo lambda watch starts");
    wait_for_port(port, "cargo lambda watch", &mut emulator);
    let mut children = vec![emulator];
    let moto = support::endpoint();
    for step in StepName::ALL {
        let name = step.as_str();
        let child = Command::new(bootstrap(step))
            .env_clear()
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt/{name}"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_ENDPOINT_URL", moto)
            .env("IMGPIPE_UPLOADS_BUCKET", &uploads)
            .env("IMGPIPE_RENDITIONS_BUCKET", &renditions)
            .env("IMGPIPE_TABLE", &table)
            .env("IMGPIPE_ALERTS_TOPIC_ARN", &alerts)
            .env("IMGPIPE_EVENTS_TOPIC_ARN", &events)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        children.push(child);
    }
    let _processes = Group(children);

    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&sdk)
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
    let metadata = aws::DynamoMetadata::new(dynamo.clone(), table.clone());

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
    let (envelope, message) = receive(&sqs, &events_queue, |m| m["imageId"] == id.as_str()).await;
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
        receive(&sqs, &alerts_queue, |m| m["imageId"] == bad_id.as_str()).await;
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
