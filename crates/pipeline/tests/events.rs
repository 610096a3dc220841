//! The sample events under events/ (used with `sam local invoke -e` and `sam remote invoke`)
//! are exactly what each step accepts: every step has one, each deserializes into its step's
//! input type, and none carries a field the type would silently drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use pipeline::StepName;
use pipeline::io::{Job, NotifyInput, Upload, ValidateInput, WorkItem};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Deserializes `value` as `T` and checks that serializing it gives the same JSON back, so a
/// misspelt optional field (which serde would ignore where unknown fields are allowed) fails.
fn typed<T: DeserializeOwned + Serialize>(name: &str, value: &Value) -> T {
    let parsed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("events/{name} is not a {}: {e}", std::any::type_name::<T>()));
    // Through text, so f32 fields compare as written rather than widened to f64.
    let again: Value = serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
    assert_eq!(
        &again,
        value,
        "events/{name} does not round-trip through {}: a field is misspelt, unknown or redundant",
        std::any::type_name::<T>()
    );
    parsed
}

fn events() -> Vec<(String, Value)> {
    let dir = root().join("events");
    let mut out: Vec<(String, Value)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, read(&p))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_step_has_a_sample_event() {
    let names: Vec<String> = events().into_iter().map(|(n, _)| n).collect();
    for step in StepName::ALL {
        let file = format!("{}.json", step.as_str());
        assert!(names.contains(&file), "events/{file} is missing");
    }
    assert!(names.iter().any(|n| n == "notify-failure.json"));
    assert!(names.iter().any(|n| n == "s3-object-created.json"));
}

#[test]
fn every_event_is_its_steps_input() {
    for (name, value) in events() {
        let stem = name.trim_end_matches(".json");
        match stem {
            "validate" => {
                typed::<ValidateInput>(&name, &value);
            }
            "resize" => {
                typed::<Job>(&name, &value);
            }
            "filter" | "store" => {
                typed::<WorkItem>(&name, &value);
            }
            "notify" => {
                let input = typed::<NotifyInput>(&name, &value);
                assert!(matches!(input, NotifyInput::Success { .. }), "{name}");
            }
            "notify-failure" => {
                let input = typed::<NotifyInput>(&name, &value);
                assert!(matches!(input, NotifyInput::Failure { .. }), "{name}");
            }
            "s3-object-created" => {
                for field in ["key", "etag", "size"] {
                    assert!(
                        value["detail"]["object"].get(field).is_some(),
                        "{name}: detail.object.{field} is missing"
                    );
                }
                assert!(value["detail"]["object"]["size"].is_u64(), "{name}");
            }
            // API Gateway events for the api function, driven through its router by
            // crates/aws/tests/api_lambda.rs.
            api if api.starts_with("api-") => {}
            other => panic!("events/{other}.json belongs to no step; name it after one"),
        }
    }
}

/// Resolves a plain `$.a.b` path, the only form the reshaping states use.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    let rest = path
        .strip_prefix("$.")
        .unwrap_or_else(|| panic!("unsupported path {path}"));
    rest.split('.').fold(value, |v, k| {
        v.get(k).unwrap_or_else(|| panic!("{path}: no `{k}`"))
    })
}

/// The drop-in event, reshaped by the state machine's own `FromS3Event` parameters, is an
/// upload Validate accepts.
#[test]
fn s3_event_reshapes_into_validate_input() {
    let asl = read(&root().join("statemachine/image_pipeline.asl.json"));
    let params = asl["States"]["FromS3Event"]["Parameters"]
        .as_object()
        .expect("FromS3Event has Parameters");
    let event = read(&root().join("events/s3-object-created.json"));
    let mut upload = Map::new();
    for (field, value) in params {
        match field.strip_suffix(".$") {
            Some(field) => upload.insert(
                field.to_string(),
                at(&event, value.as_str().unwrap()).clone(),
            ),
            None => upload.insert(field.clone(), value.clone()),
        };
    }
    let upload: Upload = serde_json::from_value(Value::Object(upload)).unwrap();
    // S3 sends the key form-encoded; the reshaped input says so, and decoding gives the name.
    assert_eq!(
        upload.key,
        at(&event, "$.detail.object.key").as_str().unwrap()
    );
    assert!(upload.key_encoded);
    let upload = upload.decoded();
    assert_eq!(
        upload.key,
        "uploads/alice/01JD8X3Q7V4M2N6P9R5T0WZ8KB/my photo (1).jpg"
    );
    assert!(!upload.key_encoded);
    assert!(upload.etag.is_some() && upload.size.is_some());

    let input: ValidateInput = serde_json::from_value(serde_json::json!({
        "upload": upload,
        "executionId": "arn:aws:states:us-east-1:123456789012:execution:ImagePipeline:drop",
    }))
    .unwrap();
    assert_eq!(
        input.upload.bucket.as_deref(),
        Some("imgpipe-dev-uploadsbucket-1x2y3z4w5v6u")
    );
}
