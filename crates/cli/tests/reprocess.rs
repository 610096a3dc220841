//! `imgpipe reprocess` from the outside: images processed with `web`, then the presets file
//! changed (a rendition added, a size changed), then re-rendered. Every record must list the
//! new set with versioned keys, the files must be exactly those (the old ones gone, each the
//! size its record says), and a second run must find nothing to do. `imgpipe serve` offers
//! the same as `POST /v1/reprocess`, for admins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use imaging::{EncodeOptions, Format, Image, image};
use serde_json::Value;

#[path = "support/serve.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_imgpipe");
const IMAGES: u32 = 8;

fn imgpipe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IMGPIPE_DATA")
        .env_remove("IMGPIPE_PRESETS")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = imgpipe(args);
    assert!(
        out.status.success(),
        "imgpipe {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y ^ seed) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &Image::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 85,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Every COMPLETE record, through `imgpipe history --json`.
fn records(data: &Path) -> Vec<Value> {
    let doc = json(&[
        "history",
        "--data",
        s(data),
        "--status",
        "COMPLETE",
        "--limit",
        "1000",
        "--json",
    ]);
    doc.as_array()
        .or_else(|| doc["items"].as_array())
        .unwrap_or_else(|| panic!("history --json: {doc}"))
        .clone()
}

/// The rendition files of one image, by key.
fn files_of(data: &Path, owner: &str, id: &str) -> BTreeSet<String> {
    let dir = data.join("objects/renditions").join(owner).join(id);
    fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            format!(
                "renditions/{owner}/{id}/{}",
                e.unwrap().file_name().to_str().unwrap()
            )
        })
        .filter(|k| !k.ends_with(".meta.json"))
        .collect()
}

#[test]
fn a_changed_preset_is_rerendered_once_and_the_old_files_go() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (data, presets_file) = processed_then_changed(root, IMAGES);
    let before = records(&data);
    assert_eq!(before.len(), IMAGES as usize);
    assert!(before.iter().all(|r| r["preset"] == "web"), "{before:?}");

    // With the built-in presets, unchanged: nothing is due.
    let same = ok(&["reprocess", "--data", s(&data)]);
    assert!(
        same.contains("nothing to do: 8 images up to date"),
        "{same}"
    );

    let p = s(&presets_file);

    let dry = json(&[
        "reprocess",
        "--data",
        s(&data),
        "--presets",
        p,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["summary"]["due"], IMAGES, "{dry}");
    assert_eq!(records(&data), before, "a dry run changed records");

    // Another preset's images only: none of these.
    let other = ok(&[
        "reprocess",
        "--data",
        s(&data),
        "--presets",
        p,
        "--preset",
        "archive",
    ]);
    assert!(other.contains("nothing to do"), "{other}");

    let run = json(&["reprocess", "--data", s(&data), "--presets", p, "--json"]);
    assert_eq!(run["summary"]["reprocessed"], IMAGES, "{run}");
    assert_eq!(run["summary"]["failed"], 0, "{run}");

    let after = records(&data);
    assert_eq!(after.len(), IMAGES as usize);
    for r in &after {
        let (id, owner) = (r["id"].as_str().unwrap(), r["owner"].as_str().unwrap());
        let renditions = r["renditions"].as_array().unwrap();
        let names: BTreeSet<&str> = renditions
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["large", "medium", "thumb", "tiny"]),
            "{r}"
        );
        for x in renditions {
            let key = x["key"].as_str().unwrap();
            // name.<10 hex>.ext: new content, new key.
            let file = key.rsplit('/').next().unwrap();
            let parts: Vec<&str> = file.split('.').collect();
            assert_eq!(parts.len(), 3, "{key}");
            assert_eq!(parts[1].len(), 10, "{key}");
            let bytes = fs::metadata(data.join("objects").join(key)).unwrap().len();
            assert_eq!(bytes, x["bytes"].as_u64().unwrap(), "{key}");
            match x["name"].as_str().unwrap() {
                "medium" => assert_eq!(x["width"], 800, "{x}"),
                "tiny" => assert_eq!(
                    (x["width"].clone(), x["height"].clone()),
                    (64.into(), 64.into())
                ),
                _ => {}
            }
        }
        let listed: BTreeSet<String> = renditions
            .iter()
            .map(|x| x["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            files_of(&data, owner, id),
            listed,
            "old files left for {id}"
        );
        assert!(r["reprocessedAt"].is_string(), "{r}");
        assert_eq!(r["reprocessedAt"], r["updatedAt"], "{r}");
        let old = before.iter().find(|b| b["id"] == r["id"]).unwrap();
        assert_eq!(r["createdAt"], old["createdAt"]);
        assert_eq!(r["source"], old["source"]);
    }
    // Announced on the events channel, once per image.
    let events = fs::read_to_string(data.join("events.jsonl")).unwrap();
    assert_eq!(
        events
            .lines()
            .filter(|l| l.contains("\"reprocessed\""))
            .count(),
        IMAGES as usize
    );

    // The second run finds nothing to do and changes nothing.
    let again = ok(&["reprocess", "--data", s(&data), "--presets", p]);
    assert!(
        again.contains("nothing to do: 8 images up to date"),
        "{again}"
    );
    assert_eq!(records(&data), after);
}

#[test]
fn bad_arguments_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = imgpipe(&["reprocess", "--data", s(&data), "--preset", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--preset") && err.contains("nosuch"), "{err}");
    let out = imgpipe(&[
        "reprocess",
        "--data",
        s(&data),
        "--since",
        "2026-02-01T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--since"), "{err}");
    let out = imgpipe(&["reprocess", "--data", s(&data), "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

/// `images` photos processed with `web` into a new data directory, and beside it a presets
/// file with `web` changed: `medium` 800 wide instead of 1024, and a `tiny` rendition added.
fn processed_then_changed(root: &Path, images: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let inputs = root.join("in");
    fs::create_dir_all(&inputs).unwrap();
    for i in 0..images {
        fs::write(inputs.join(format!("p{i}.jpg")), jpeg(1400 + i * 8, 900, i)).unwrap();
    }
    let data = root.join("data");
    ok(&[
        "process",
        s(&inputs),
        "--preset",
        "web",
        "--out",
        s(&root.join("out")),
        "--data",
        s(&data),
    ]);
    let mut presets: Value = serde_json::from_str(pipeline::BUILTIN_PRESETS).unwrap();
    let web = presets["web"]["renditions"].as_array_mut().unwrap();
    let medium = web.iter_mut().find(|r| r["name"] == "medium").unwrap();
    medium["resize"]["width"] = 800.into();
    medium["resize"]["height"] = 800.into();
    web.push(serde_json::json!({
        "name": "tiny",
        "resize": {"width": 64, "height": 64, "fit": "cover"},
        "format": "webp"
    }));
    let presets_file = root.join("presets.json");
    fs::write(&presets_file, presets.to_string()).unwrap();
    (data, presets_file)
}

#[tokio::test]
async fn serve_reprocesses_for_admins_and_reports_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, presets) = processed_then_changed(tmp.path(), 4);
    let serve = support::Serve::start(&data, &["--no-inbox", "--presets", s(&presets)]);
    let admin = support::Api::new(&support::token(&data, "root", true));
    let user = support::Api::new(&support::token(&data, "local", false));

    let res = user
        .http
        .post(serve.url("/v1/reprocess"))
        .bearer_auth(&user.token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    support::assert_error(res, reqwest::StatusCode::FORBIDDEN, "Forbidden").await;
    let res = admin
        .http
        .post(serve.url("/v1/reprocess"))
        .bearer_auth(&admin.token)
        .json(&serde_json::json!({"preset": "nosuch"}))
        .send()
        .await
        .unwrap();
    support::assert_error(res, reqwest::StatusCode::BAD_REQUEST, "InvalidRequest").await;

    let run_to_end = |body: Value| {
        let admin = &admin;
        let serve = &serve;
        async move {
            let res = admin
                .http
                .post(serve.url("/v1/reprocess"))
                .bearer_auth(&admin.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
            let location = res.headers()["location"].to_str().unwrap().to_string();
            let run: Value = res.json().await.unwrap();
            assert_eq!(
                location,
                format!("/v1/reprocess/{}", run["id"].as_str().unwrap())
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let (status, run) = admin.get(&serve.url(&location)).await;
                assert_eq!(status, reqwest::StatusCode::OK, "{run}");
                if run["status"] != "RUNNING" {
                    return run;
                }
                assert!(std::time::Instant::now() < deadline, "still running: {run}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let first = run_to_end(serde_json::json!({"owner": "local"})).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    assert_eq!(
        (
            first["total"].clone(),
            first["reprocessed"].clone(),
            first["failed"].clone()
        ),
        (4.into(), 4.into(), 0.into()),
        "{first}"
    );
    let (_, page) = user.get(&serve.url("/v1/images?limit=100")).await;
    for image in page["items"].as_array().unwrap() {
        assert_eq!(image["renditions"].as_array().unwrap().len(), 4, "{image}");
        assert!(image["reprocessedAt"].is_string(), "{image}");
    }
    let second = run_to_end(serde_json::json!({})).await;
    assert_eq!(
        (second["reprocessed"].clone(), second["unchanged"].clone()),
        (0.into(), 4.into()),
        "{second}"
    );
    let (status, _) = admin
        .get(&serve.url("/v1/reprocess/01ZZZZZZZZZZZZZZZZZZZZZZZZ"))
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert!(!serve.log().contains("panicked"));
}
