//! The cloud stack's parts as the end-to-end tests run them: its resources in moto, and the
//! five real step bootstraps polling `cargo lambda watch`'s runtime API, which also serves
//! the Lambda Invoke API that a state machine engine calls.
// Each test binary that includes this module uses its own subset of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline::StepName;
use serde_json::Value;

use crate::support;

/// Children killed with their whole process group when the test ends, even by a panic.
pub struct Group(Vec<Child>);

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

pub fn free_port() -> u16 {
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

/// Where scripts/setup installs tools: `$IMGPIPE_CACHE`, by default ~/.cache/imgpipe.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("IMGPIPE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/imgpipe"),
    }
}

/// A tool scripts/setup installs: on PATH, or in the venv.
pub fn tool(name: &str) -> PathBuf {
    let venv = cache_dir().join("venv/bin").join(name);
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

/// The stack's resources, as template.yaml declares them, each test its own.
pub struct Resources {
    pub sdk: aws_config::SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub uploads: String,
    pub renditions: String,
    pub table: String,
    pub alerts: String,
    pub events: String,
    pub alerts_queue: String,
    pub events_queue: String,
}

impl Resources {
    pub async fn new() -> Resources {
        let sdk = support::sdk().await;
        let s3 = aws::S3Store::client_for(&sdk);
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let uploads = support::unique("ingest");
        let renditions = support::unique("renditions");
        for bucket in [&uploads, &renditions] {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
        let table = support::unique("images");
        aws::DynamoMetadata::create_table(&dynamo, &table)
            .await
            .unwrap();
        let mut topics = Vec::new();
        for name in ["alerts", "events"] {
            let out = sns
                .create_topic()
                .name(support::unique(name))
                .send()
                .await
                .unwrap();
            topics.push(out.topic_arn().unwrap().to_string());
        }
        let alerts_queue = support::subscribed_queue(&sqs, &sns, &topics[0]).await;
        let events_queue = support::subscribed_queue(&sqs, &sns, &topics[1]).await;
        let [alerts, events] = [topics[0].clone(), topics[1].clone()];
        Resources {
            sdk,
            s3,
            dynamo,
            sqs,
            uploads,
            renditions,
            table,
            alerts,
            events,
            alerts_queue,
            events_queue,
        }
    }

    pub fn metadata(&self) -> aws::DynamoMetadata {
        aws::DynamoMetadata::new(self.dynamo.clone(), self.table.clone())
    }

    /// Puts an object in the ingest bucket; returns its ETag.
    pub async fn put(&self, key: &str, body: &[u8]) -> String {
        let put = self
            .s3
            .put_object()
            .bucket(&self.uploads)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap();
        put.e_tag().unwrap_or("").to_string()
    }

    /// The keys under `prefix` in `bucket`.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Every message that arrives on a subscribed queue within a quiet second or two, as
    /// (kind, imageId) pairs; each is deleted once read.
    pub async fn messages(&self, queue: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut empty_since = Instant::now();
        while empty_since.elapsed() < Duration::from_secs(2) {
            let got = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in got.messages() {
                empty_since = Instant::now();
                let envelope: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap();
                let message: Value =
                    serde_json::from_str(envelope["Message"].as_str().unwrap_or("{}")).unwrap();
                out.push((
                    message["kind"].as_str().unwrap_or("").to_string(),
                    message["imageId"].as_str().unwrap_or("").to_string(),
                ));
                self.sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(m.receipt_handle().unwrap_or(""))
                    .send()
                    .await
                    .unwrap();
            }
        }
        out
    }
}

/// Validate's large-image pixel count in these tests: sources over it go to resize-large.
pub const LARGE_IMAGE_PIXELS: u64 = 1_000_000;

/// `cargo lambda watch` serving the Invoke API on `port`, and the five step bootstraps polling
/// it as their runtime API, configured through the environment as template.yaml configures
/// them. The emulator serves functions by binary name, so the stack's ResizeLarge (a second
/// function of the resize binary) is this resize.
pub struct Lambdas {
    pub port: u16,
    _processes: Group,
}

impl Lambdas {
    pub fn start(r: &Resources) -> Lambdas {
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
            let mut command = Command::new(bootstrap(step));
            command.env_clear();
            if step == StepName::Validate {
                // As template.yaml sets Validate up: sources over 1 MP here go to
                // resize-large (the stack's default is 24 MP; test photos are smaller).
                command
                    .env("IMGPIPE_LARGE_IMAGE_PIXELS", LARGE_IMAGE_PIXELS.to_string())
                    .env("IMGPIPE_LARGE_MAX_PIXELS", "200000000")
                    .env("IMGPIPE_LARGE_JOB_PIXELS", "400000000");
            }
            let child = command
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
                .env("IMGPIPE_UPLOADS_BUCKET", &r.uploads)
                .env("IMGPIPE_RENDITIONS_BUCKET", &r.renditions)
                .env("IMGPIPE_TABLE", &r.table)
                .env("IMGPIPE_ALERTS_TOPIC_ARN", &r.alerts)
                .env("IMGPIPE_EVENTS_TOPIC_ARN", &r.events)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap();
            children.push(child);
        }
        Lambdas {
            port,
            _processes: Group(children),
        }
    }
}
