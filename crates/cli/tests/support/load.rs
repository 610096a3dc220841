//! A load client for `imgpipe serve`: `clients` users upload at once, `rounds` times each, as
//! the web page does (create the upload, post the signed form, poll the record until it is
//! final), honouring the 503 + Retry-After a full processing queue answers. Shared by the
//! load test (crates/cli/tests/load.rs, a small scale in CI) and the load example
//! (crates/cli/examples/load.rs, the full scale behind bench/load.sh).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

/// How long one image may take from upload to a final status before the run counts it lost.
const GIVE_UP: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct Load {
    /// e.g. http://127.0.0.1:8080
    pub base_url: String,
    pub token: String,
    pub clients: usize,
    pub rounds: usize,
    /// The file every client uploads (JPEG).
    pub image: Arc<Vec<u8>>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub clients: usize,
    pub rounds: usize,
    /// Uploads whose form was accepted (204).
    pub uploaded: usize,
    /// Of those, how many reached COMPLETE, and how many anything else or nothing at all.
    pub complete: usize,
    pub lost: usize,
    /// Images COMPLETE per second of wall time, first request to last completion.
    pub images_per_second: f64,
    /// Upload start (POST /v1/uploads) to COMPLETE seen by polling, in milliseconds.
    pub latency_ms_p50: u64,
    pub latency_ms_p99: u64,
    pub latency_ms_max: u64,
    /// 503 answers with Retry-After (a full queue), each retried after the time it asked.
    pub busy_retries: usize,
    /// Any other 5xx, and any other unexpected answer: both must be zero.
    pub server_errors: usize,
    pub unexpected: Vec<String>,
    pub seconds: f64,
}

#[derive(Default)]
struct Counters {
    uploaded: AtomicUsize,
    busy: AtomicUsize,
    server_errors: AtomicUsize,
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(1024)
        // The server closes a keep-alive connection left idle for 10 s (its header
        // deadline); a client that keeps one longer can send on it just as it closes and
        // see the request fail. Keep idle connections for less than the server does.
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

/// An error with its causes: reqwest's own message ("error sending request") names none.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A multipart/form-data body: the signed fields in order, then the file.
fn multipart(fields: &[(String, String)], file: &[u8], boundary: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(file.len() + 4096);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// One image, start to finish: Ok(latency) once COMPLETE, Err(why) otherwise.
async fn one(
    load: &Load,
    http: &reqwest::Client,
    counters: &Counters,
    n: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    let res = http
        .post(format!("{}/v1/uploads", load.base_url))
        .bearer_auth(&load.token)
        .json(&json!({
            "filename": format!("load-{n}.jpg"),
            "contentType": "image/jpeg",
            "bytes": load.image.len(),
            "preset": "web",
        }))
        .send()
        .await
        .map_err(|e| format!("create upload: {}", chain(&e)))?;
    if res.status() != StatusCode::CREATED {
        if res.status().is_server_error() {
            counters.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        return Err(format!(
            "create upload: {} {}",
            res.status(),
            res.text().await.unwrap_or_default()
        ));
    }
    let created: Value = res
        .json()
        .await
        .map_err(|e| format!("create upload: {}", chain(&e)))?;
    let id = created["imageId"].as_str().unwrap_or("").to_string();
    let url = created["upload"]["url"].as_str().unwrap_or("").to_string();
    let fields: Vec<(String, String)> = created["upload"]["fields"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let boundary = format!("----imgpipe-load-{n}");
    let body = multipart(&fields, &load.image, &boundary);
    loop {
        let res = http
            .post(&url)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body.clone())
            .send()
            .await
            .map_err(|e| format!("post form: {}", chain(&e)))?;
        match res.status() {
            StatusCode::NO_CONTENT => {
                counters.uploaded.fetch_add(1, Ordering::Relaxed);
                break;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let Some(wait) = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                else {
                    counters.server_errors.fetch_add(1, Ordering::Relaxed);
                    return Err("503 without Retry-After".into());
                };
                counters.busy.fetch_add(1, Ordering::Relaxed);
                if started.elapsed() > GIVE_UP {
                    return Err(format!("{id}: the queue never had room"));
                }
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => {
                if other.is_server_error() {
                    counters.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                return Err(format!(
                    "post form: {other} {}",
                    res.text().await.unwrap_or_default()
                ));
            }
        }
    }
    let record_url = format!("{}/v1/images/{id}", load.base_url);
    loop {
        tokio::time::sleep(POLL).await;
        let res = http
            .get(&record_url)
            .bearer_auth(&load.token)
            .send()
            .await
            .map_err(|e| format!("poll: {}", chain(&e)))?;
        if res.status().is_server_error() {
            counters.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if res.status() != StatusCode::OK {
            return Err(format!("{id}: poll answered {}", res.status()));
        }
        let record: Value = res
            .json()
            .await
            .map_err(|e| format!("poll: {}", chain(&e)))?;
        match record["status"].as_str() {
            Some("COMPLETE") => {
                let renditions = record["renditions"].as_array().map_or(0, Vec::len);
                if renditions != 3 {
                    return Err(format!("{id}: COMPLETE with {renditions} renditions"));
                }
                return Ok(started.elapsed());
            }
            Some("AWAITING_UPLOAD" | "PROCESSING") => {}
            other => return Err(format!("{id}: ended {other:?}: {record}")),
        }
        if started.elapsed() > GIVE_UP {
            return Err(format!("{id}: not final after {GIVE_UP:?}"));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let d = sorted[rank.clamp(1, sorted.len()) - 1];
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the load: `clients` tasks, each doing `rounds` images one after the other.
pub async fn run(load: Load) -> Report {
    let http = client();
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..load.clients {
        let (load, http, counters) = (load.clone(), http.clone(), counters.clone());
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(load.rounds);
            for r in 0..load.rounds {
                out.push(one(&load, &http, &counters, c * load.rounds + r).await);
            }
            out
        });
    }
    let mut latencies = Vec::new();
    let mut unexpected = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(latency) => latencies.push(latency),
                        Err(e) => unexpected.push(e),
                    }
                }
            }
            Err(e) => unexpected.push(format!("client task: {e}")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let total = load.clients * load.rounds;
    Report {
        clients: load.clients,
        rounds: load.rounds,
        uploaded: counters.uploaded.load(Ordering::Relaxed),
        complete: latencies.len(),
        lost: total - latencies.len(),
        images_per_second: latencies.len() as f64 / seconds.max(f64::EPSILON),
        latency_ms_p50: percentile(&latencies, 50.0),
        latency_ms_p99: percentile(&latencies, 99.0),
        latency_ms_max: percentile(&latencies, 100.0),
        busy_retries: counters.busy.load(Ordering::Relaxed),
        server_errors: counters.server_errors.load(Ordering::Relaxed),
        unexpected,
        seconds,
    }
}

/// A JPEG with some structure, so the encoders have work to do.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = imaging::image::RgbImage::from_fn(w, h, |x, y| {
        imaging::image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &imaging::Image::ImageRgb8(img),
        &imaging::EncodeOptions {
            format: imaging::Format::Jpeg,
            quality: 85,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("jpeg: {e}"))
}
