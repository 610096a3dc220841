//! `imgpipe serve` for operators, from the outside: `/metrics` after an image went through,
//! JSON logs naming each step's image and execution, and a `/health` that fails when the
//! data directory does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

#[path = "support/serve.rs"]
mod support;

use support::*;

async fn get(serve: &Serve, path: &str) -> (StatusCode, String) {
    let res = client().get(serve.url(path)).send().await.unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
}

async fn health_of(serve: &Serve) -> (StatusCode, Value) {
    let (status, body) = get(serve, "/health").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// The value of one sample line (`name{labels} value`) of a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn an_image_through_the_inbox_shows_in_metrics_and_in_json_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &tmp.path().join("data"),
        &["--jobs", "1", "--log-format", "json"],
    );
    let inbox = serve.data.join("inbox");
    // Written under a dot name and renamed, as the inbox asks.
    std::fs::write(inbox.join(".photo.jpg"), jpeg(800, 500)).unwrap();
    std::fs::rename(inbox.join(".photo.jpg"), inbox.join("photo.jpg")).unwrap();

    let processed = "imgpipe_images_processed_total{format=\"jpeg\"}";
    let started = Instant::now();
    let page = loop {
        let (status, page) = get(&serve, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        if sample(&page, processed).is_some() {
            break page;
        }
        assert!(
            started.elapsed() < PROCESSING,
            "the image was not processed; log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(sample(&page, processed), Some(1.0), "{page}");
    // The web preset: one validate, resize and notify, a filter and a store per rendition.
    for (step, count) in [
        ("validate", 1.0),
        ("resize", 1.0),
        ("filter", 3.0),
        ("store", 3.0),
        ("notify", 1.0),
    ] {
        let series = format!("imgpipe_step_duration_ms_count{{step=\"{step}\"}}");
        assert_eq!(sample(&page, &series), Some(count), "{series} in\n{page}");
        let inf = format!("imgpipe_step_duration_ms_bucket{{step=\"{step}\",le=\"+Inf\"}}");
        assert_eq!(sample(&page, &inf), Some(count), "{inf} in\n{page}");
    }
    assert_eq!(
        sample(&page, "imgpipe_megapixels_in_total{format=\"jpeg\"}"),
        Some(0.4),
        "{page}"
    );
    assert!(
        sample(&page, "imgpipe_bytes_out_total{format=\"webp\"}").is_some_and(|b| b > 0.0),
        "{page}"
    );
    assert!(
        sample(&page, "imgpipe_bytes_out_total{format=\"jpeg\"}").is_some_and(|b| b > 0.0),
        "{page}"
    );
    assert!(
        page.contains("# TYPE imgpipe_step_duration_ms histogram"),
        "{page}"
    );
    assert!(
        page.contains("# HELP imgpipe_images_processed_total"),
        "{page}"
    );
    let (_, page) = get(&serve, "/metrics").await;
    assert!(
        sample(
            &page,
            "imgpipe_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{page}"
    );

    // Every line is JSON, and what a step logs names the step, the image and the execution.
    let log = serve.log();
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let validated = events
        .iter()
        .find(|e| e["message"] == "validated")
        .unwrap_or_else(|| panic!("no `validated` line in\n{log}"));
    assert_eq!(validated["step"], "validate", "{validated}");
    let image_id = validated["image_id"].as_str().unwrap();
    let execution_id = validated["execution_id"].as_str().unwrap();
    assert!(execution_id.starts_with("local:"), "{validated}");
    let stored: Vec<&Value> = events.iter().filter(|e| e["message"] == "stored").collect();
    assert_eq!(stored.len(), 3, "{log}");
    for e in stored {
        assert_eq!(
            (&e["step"], &e["image_id"], &e["execution_id"]),
            (&json!("store"), &json!(image_id), &json!(execution_id)),
            "{e}"
        );
    }

    let (status, health) = health_of(&serve).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(
        health,
        json!({"status": "ok", "checks": {"store": {"status": "ok"}, "database": {"status": "ok"}}})
    );
}

#[tokio::test]
async fn health_answers_503_naming_the_store_or_database_that_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("data"), &["--jobs", "1", "--no-inbox"]);
    let (status, _) = health_of(&serve).await;
    assert_eq!(status, StatusCode::OK);

    let objects = serve.data.join("objects");
    let aside = serve.data.join("objects.aside");
    std::fs::rename(&objects, &aside).unwrap();
    let (status, health) = health_of(&serve).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["checks"]["store"]["status"], "failed", "{health}");
    assert!(
        health["checks"]["store"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("objects")),
        "{health}"
    );
    assert_eq!(health["checks"]["database"], json!({"status": "ok"}));
    std::fs::rename(&aside, &objects).unwrap();
    assert_eq!(health_of(&serve).await.0, StatusCode::OK);

    // A database file removed under the server: it would go on writing to a file no restart
    // will find.
    std::fs::remove_file(serve.data.join("imgpipe.db")).unwrap();
    let (status, health) = health_of(&serve).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["checks"]["database"]["status"], "failed", "{health}");
    assert!(
        health["checks"]["database"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("imgpipe.db")),
        "{health}"
    );
    assert_eq!(health["checks"]["store"], json!({"status": "ok"}));
    assert!(
        serve.log().contains("health check failed"),
        "{}",
        serve.log()
    );
}
