//! What `imgpipe serve` shows its operators: the steps' metrics and HTTP request counts at
//! `GET /metrics` (Prometheus text, rendered from the exporter's handle; no listener of its
//! own), and `GET /health` checking the store and the database for real.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use api::{HealthCheck, MetricsRenderer, Ops};
use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use local::FsStore;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pipeline::ports::MetadataStore;
use pipeline::telemetry;

pub const HTTP_REQUESTS: &str = "imgpipe_http_requests_total";
pub const HTTP_DURATION: &str = "imgpipe_http_request_duration_ms";

/// Step durations span a 1 ms notify to a many-second resize of a 50 MP photo.
const STEP_BUCKETS_MS: [f64; 13] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];
const HTTP_BUCKETS_MS: [f64; 10] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];
/// Histogram samples wait in the exporter until drained; this keeps them bounded between
/// scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process's metrics recorder and returns what renders it. Histograms rather
/// than the exporter's default summaries: buckets add up across processes, quantiles do not.
pub fn install_metrics() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(telemetry::STEP_DURATION.to_string()),
            &STEP_BUCKETS_MS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_string()), &HTTP_BUCKETS_MS)
        })
        .context("configuring the metrics exporter")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        telemetry::STEP_DURATION,
        Unit::Milliseconds,
        "How long one step invocation took, by step."
    );
    describe_counter!(
        telemetry::IMAGES_PROCESSED,
        Unit::Count,
        "Images processed to COMPLETE, by source format."
    );
    describe_counter!(
        telemetry::IMAGES_REJECTED,
        Unit::Count,
        "Images REJECTED as invalid input, by source format (unknown when never read)."
    );
    describe_counter!(
        telemetry::IMAGES_FAILED,
        Unit::Count,
        "Images that FAILED, by source format (unknown when never read)."
    );
    describe_gauge!(
        telemetry::MEGAPIXELS_IN,
        "Megapixels of accepted sources, by source format; only ever increases."
    );
    describe_counter!(
        telemetry::BYTES_OUT,
        Unit::Bytes,
        "Bytes of renditions written, by output format."
    );
    describe_counter!(
        telemetry::TRANSFORMS_RENDERED,
        Unit::Count,
        "Renditions rendered on demand by the transform route, by output format."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by method, route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Milliseconds,
        "How long HTTP requests took to answer (headers; streamed bodies not included), by route."
    );
}

/// Counts every routed request by its route template (`/v1/images/{id}`, never the path
/// itself, so image ids do not become series) and status. Requests no route matched are not
/// counted for the same reason.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(route) = route {
        let status = response.status().as_u16().to_string();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!(HTTP_DURATION, "route" => route).record(ms);
    }
    response
}

/// The store can take a write and give it back.
struct StoreCheck(Arc<FsStore>);

#[async_trait]
impl HealthCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn check(&self) -> Result<(), String> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.probe())
            .await
            .map_err(|e| format!("probe stopped: {e}"))?
            .map_err(|e| e.to_string())
    }
}

/// The metadata table answers.
struct DatabaseCheck(Arc<dyn MetadataStore>);

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        self.0.check().await.map_err(|e| e.to_string())
    }
}

/// `/health` over the data directory's store and database, `/metrics` from `metrics`.
pub fn ops(
    store: Arc<FsStore>,
    metadata: Arc<dyn MetadataStore>,
    metrics: PrometheusHandle,
) -> Ops {
    let render: MetricsRenderer = Arc::new(move || metrics.render());
    Ops {
        checks: vec![
            Arc::new(StoreCheck(store)),
            Arc::new(DatabaseCheck(metadata)),
        ],
        metrics: Some(render),
    }
}
