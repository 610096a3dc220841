//! The state machine definition on an ASL engine written apart from ours
//! (aws-local-stepfunctions, driven by tests/asl_engine/run.js), with its Task states invoking
//! the five real step bootstraps through `cargo lambda watch`'s Invoke API, and the functions
//! talking to S3, DynamoDB and SNS as moto serves them. What the local runner proves for our
//! own interpreter, this proves for the definition as another engine reads it: EventBridge's
//! events reshaped (keys encoded as S3 encodes them), error names reaching Retry and Catch,
//! a duplicate pair making one image, a console folder ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../crates/aws/tests/support/mod.rs"]
mod support;

mod common;
#[path = "common/lambdas.rs"]
mod lambdas;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{jpeg, object_created};
use lambdas::{Lambdas, Resources, cache_dir};
use pipeline::model::Status;
use pipeline::ports::MetadataStore;
use serde_json::{Value, json};

/// Runs every execution at once on the independent engine; their outcomes by name.
fn run_on_engine(lambdas: &Lambdas, executions: &Value) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("node")
        .arg(root.join("tests/asl_engine/run.js"))
        .arg(root.join("statemachine/image_pipeline.asl.json"))
        .arg(format!("http://127.0.0.1:{}", lambdas.port))
        .env("NODE_PATH", cache_dir().join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup installs it and aws-local-stepfunctions)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(executions.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "run.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn outcome<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no outcome for {name}: {results:?}"))
}

fn states(outcome: &Value) -> Vec<&str> {
    outcome["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_definition_runs_on_an_independent_engine_against_the_real_functions() {
    let r = Resources::new().await;
    let lambdas = Lambdas::start(&r);
    let metadata = r.metadata();

    // An API upload whose file name S3's event encodes (`my+photo+%281%29.jpg`).
    let id = ulid::Ulid::new().to_string();
    let good = format!("uploads/alice/{id}/my photo (1).jpg");
    let photo = jpeg(1200, 800);
    let etag = r.put(&good, &photo).await;
    // A corrupt one: Validate's InvalidImage must reach the Catch by name.
    let bad_id = ulid::Ulid::new().to_string();
    let bad = format!("uploads/bob/{bad_id}/broken.jpg");
    let broken = jpeg(600, 400)[..150].to_vec();
    let bad_etag = r.put(&bad, &broken).await;
    // A drop delivered twice at once (EventBridge and Express are at-least-once).
    let twice = format!("uploads/batch-{}/my shoot/a+b (2).jpg", ulid::Ulid::new());
    let twice_etag = r.put(&twice, &photo).await;
    // A source over the large-image pixel count: ResizeLarge's function resizes it.
    let large_id = ulid::Ulid::new().to_string();
    let large = format!("uploads/carol/{large_id}/pano.jpg");
    let pano = jpeg(1600, 700);
    const { assert!(1600 * 700 > lambdas::LARGE_IMAGE_PIXELS) };
    let large_etag = r.put(&large, &pano).await;
    // A folder made in the S3 console.
    let folder = format!("uploads/{}/", ulid::Ulid::new());
    let folder_etag = r.put(&folder, b"").await;

    let results = run_on_engine(
        &lambdas,
        &json!([
            {"name": "good", "input": object_created(&r.uploads, &good, photo.len(), &etag)},
            {"name": "bad", "input": object_created(&r.uploads, &bad, broken.len(), &bad_etag)},
            {"name": "twice-1", "input": object_created(&r.uploads, &twice, photo.len(), &twice_etag)},
            {"name": "twice-2", "input": object_created(&r.uploads, &twice, photo.len(), &twice_etag)},
            {"name": "folder", "input": object_created(&r.uploads, &folder, 0, &folder_etag)},
            {"name": "large", "input": object_created(&r.uploads, &large, pano.len(), &large_etag)},
        ]),
    );

    // The happy path, with the key decoded: a COMPLETE record, three renditions.
    let ok = outcome(&results, "good");
    assert_eq!(ok["status"], "SUCCEEDED", "{ok}");
    let path = states(ok);
    for state in [
        "Route",
        "FromS3Event",
        "Validate",
        "Resize",
        "Renditions",
        "NotifySuccess",
    ] {
        assert!(path.contains(&state), "{state} not in {path:?}");
    }
    assert!(
        path.contains(&"BySize") && !path.contains(&"ResizeLarge"),
        "{path:?}"
    );
    let record = metadata.get(&id).await.unwrap().expect("a record");
    assert_eq!(record.status, Status::Complete);
    assert_eq!(record.source.key, good);
    assert_eq!(record.renditions.len(), 3);
    let stored = r
        .keys(&r.renditions, &format!("renditions/alice/{id}/"))
        .await;
    assert_eq!(stored.len(), 3, "{stored:?}");

    // The rejection: its error name went through the proxy to Catch and NotifyFailure.
    let no = outcome(&results, "bad");
    assert_eq!(no["status"], "FAILED", "{no}");
    assert_eq!(no["error"], "ImageNotProcessed", "{no}");
    assert_eq!(
        states(no)[states(no).len() - 3..],
        ["NotifyFailure", "AfterFailure", "Failed"]
    );
    let rejected = metadata.get(&bad_id).await.unwrap().expect("a record");
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(rejected.error.as_ref().unwrap().kind, "InvalidImage");

    // The duplicate pair: both succeed, one does the work.
    let pair = [outcome(&results, "twice-1"), outcome(&results, "twice-2")];
    for x in pair {
        assert_eq!(x["status"], "SUCCEEDED", "{x}");
    }
    let worked = pair
        .iter()
        .filter(|x| states(x).contains(&"Resize"))
        .count();
    assert_eq!(worked, 1, "{pair:?}");
    let other = pair
        .iter()
        .find(|x| !states(x).contains(&"Resize"))
        .unwrap();
    assert_eq!(states(other).last(), Some(&"AlreadyProcessing"));
    let drop_id = pipeline::keys::identify(&twice, Some(&twice_etag))
        .unwrap()
        .id;
    let dropped = metadata.get(&drop_id).await.unwrap().expect("a record");
    assert_eq!(dropped.status, Status::Complete);
    assert_eq!(dropped.source.key, twice);

    // The large source: routed to ResizeLarge, finished like any other.
    let l = outcome(&results, "large");
    let why = metadata.get(&large_id).await.unwrap().and_then(|r| r.error);
    assert_eq!(l["status"], "SUCCEEDED", "{l} {why:?}");
    let path = states(l);
    assert!(
        path.contains(&"ResizeLarge") && !path.contains(&"Resize"),
        "{path:?}"
    );
    let record = metadata.get(&large_id).await.unwrap().expect("a record");
    assert_eq!(record.status, Status::Complete);
    assert_eq!(record.renditions.len(), 3);

    // The folder: nothing to do, nothing said.
    let f = outcome(&results, "folder");
    assert_eq!(f["status"], "SUCCEEDED", "{f}");
    assert_eq!(states(f), ["Route", "FolderObject"]);

    // One message per image and outcome.
    let mut events = r.messages(&r.events_queue).await;
    events.sort();
    let mut want = vec![
        ("completed".to_string(), id.clone()),
        ("completed".to_string(), drop_id.clone()),
        ("completed".to_string(), large_id.clone()),
    ];
    want.sort();
    assert_eq!(events, want);
    let alerts = r.messages(&r.alerts_queue).await;
    assert_eq!(alerts, [("rejected".to_string(), bad_id.clone())]);
    // Four records: the folder made none.
    let items = r.dynamo.scan().table_name(&r.table).send().await.unwrap();
    assert_eq!(items.items().len(), 4);

    // A deploy changed `web` since the drop-in was made: its record holds the older recipe.
    // The Reprocess state machine's Map gives each child what ListObjectsV2 lists (the key
    // as stored, the ETag quoted) and the filter; the child is this very definition.
    let mut older = pipeline::Presets::builtin().get("web").unwrap().clone();
    older.renditions[0].quality = Some(pipeline::Quality::Fixed(41));
    r.dynamo
        .update_item()
        .table_name(&r.table)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S(drop_id.clone()),
        )
        .update_expression("SET #r = :r")
        .expression_attribute_names("#r", "recipe")
        .expression_attribute_values(
            ":r",
            aws_sdk_dynamodb::types::AttributeValue::S(serde_json::to_string(&older).unwrap()),
        )
        .send()
        .await
        .unwrap();
    let child = |key: &str, etag: &str, size: usize| {
        json!({
            "key": key,
            "etag": format!("\"{}\"", etag.trim_matches('"')),
            "size": size,
            "reprocess": {"preset": "web"},
            "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": "arn:aws:states:us-east-1:123456789012:execution:reprocess:run",
        })
    };
    let before = metadata.get(&drop_id).await.unwrap().unwrap();
    let results = run_on_engine(
        &lambdas,
        &json!([
            {"name": "changed", "input": child(&twice, &twice_etag, photo.len())},
            {"name": "current", "input": child(&good, &etag, photo.len())},
        ]),
    );
    let changed = outcome(&results, "changed");
    assert_eq!(changed["status"], "SUCCEEDED", "{changed}");
    assert!(states(changed).contains(&"Resize"), "{changed}");
    let after = metadata.get(&drop_id).await.unwrap().unwrap();
    assert_eq!(
        after.recipe.as_ref(),
        Some(pipeline::Presets::builtin().get("web").unwrap())
    );
    assert!(after.reprocessed_at.is_some());
    assert_eq!(after.status, Status::Complete);
    let mut listed: Vec<String> = after.renditions.iter().map(|x| x.key.clone()).collect();
    listed.sort();
    let prefix = format!("renditions/{}/{drop_id}/", after.owner);
    assert_eq!(r.keys(&r.renditions, &prefix).await, listed);
    for old in &before.renditions {
        assert!(!listed.contains(&old.key), "{} kept its key", old.name);
    }
    // Up to date: the child ends at once, writing nothing.
    let current = outcome(&results, "current");
    assert_eq!(current["status"], "SUCCEEDED", "{current}");
    assert_eq!(states(current).last(), Some(&"AlreadyProcessing"));
    assert!(
        metadata
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .reprocessed_at
            .is_none()
    );
    assert_eq!(
        r.messages(&r.events_queue).await,
        [("reprocessed".to_string(), drop_id.clone())]
    );
}

/// The Reprocess definition as the independent engine reads it. The engine validates a
/// Distributed Map (ItemReader, ItemSelector, ResultWriter, the concurrency paths) but cannot
/// run one, so what each child does is run above, on the image pipeline, from the input the
/// Map gives it.
#[test]
fn the_reprocess_definition_is_valid_for_the_independent_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let definition = std::fs::read_to_string(root.join("statemachine/reprocess.asl.json"))
        .unwrap()
        .replace("${UploadsBucketName}", "uploads")
        .replace(
            "${ImagePipelineArn}",
            "arn:aws:states:us-east-1:123456789012:stateMachine:pipeline",
        )
        .replace(
            "${AlertsTopicArn}",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        );
    assert!(
        !definition.contains("${"),
        "a placeholder left: {definition}"
    );
    let check = "const { StateMachine } = require('aws-local-stepfunctions');\n\
                 let text = '';\n\
                 process.stdin.on('data', (c) => (text += c));\n\
                 process.stdin.on('end', () => {\n\
                   new StateMachine(JSON.parse(text), { validationOptions: { checkPaths: true, checkArn: true } });\n\
                   process.stdout.write('valid');\n\
                 });";
    if let Err(why) = validate_on_engine(check, &definition) {
        panic!("the engine refused the definition: {why}");
    }
    // A broken one is refused, so the check above can fail.
    let broken = definition.replace("\"StartAt\": \"Images\"", "\"StartAt\": \"Nowhere\"");
    assert!(validate_on_engine(check, &broken).is_err());
}

/// Runs the node `script` with `definition` on its standard input: Ok when it prints `valid`.
fn validate_on_engine(script: &str, definition: &str) -> Result<(), String> {
    let mut child = Command::new("node")
        .arg("-e")
        .arg(script)
        .env("NODE_PATH", cache_dir().join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup installs it and aws-local-stepfunctions)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(definition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.success() && out.stdout == b"valid" {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}
