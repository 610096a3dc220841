//! The operators' routes: `GET /health` and, where the process keeps metrics, `GET /metrics`.
//!
//! Without checks `/health` only says the process answers: behind API Gateway that is what it
//! is for (the route is public and unthrottled per caller, so it must not cost a DynamoDB or
//! S3 request each time). `imgpipe serve` adds checks of its store and database, and `/health`
//! then answers 503 naming the check that failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// A check taking longer than this has failed: a health answer that hangs helps nobody.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// What Prometheus expects of the text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One thing `/health` looks at.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// The key in the answer's `checks`.
    fn name(&self) -> &'static str;
    /// `Err` says what is wrong, for the operator reading the answer.
    async fn check(&self) -> Result<(), String>;
}

/// Renders the process's metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What a process adds to the routes for its operators.
#[derive(Clone, Default)]
pub struct Ops {
    pub checks: Vec<Arc<dyn HealthCheck>>,
    pub metrics: Option<MetricsRenderer>,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<&'static str, Check>,
}

#[derive(Serialize)]
struct Check {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Ops {
    pub(crate) fn routes<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let checks: Arc<[Arc<dyn HealthCheck>]> = self.checks.into();
        let mut routes = Router::new().route("/health", get(move || health(checks.clone())));
        if let Some(render) = self.metrics {
            routes = routes.route(
                "/metrics",
                get(move || {
                    let render = render.clone();
                    async move { metrics(render) }
                }),
            );
        }
        routes
    }
}

async fn health(checks: Arc<[Arc<dyn HealthCheck>]>) -> Response {
    let results = futures::future::join_all(checks.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        (c.name(), outcome)
    }))
    .await;
    let healthy = results.iter().all(|(_, r)| r.is_ok());
    let checks = results
        .into_iter()
        .map(|(name, outcome)| {
            let check = match outcome {
                Ok(()) => Check {
                    status: "ok",
                    message: None,
                },
                Err(message) => {
                    tracing::warn!(check = name, %message, "health check failed");
                    Check {
                        status: "failed",
                        message: Some(message),
                    }
                }
            };
            (name, check)
        })
        .collect();
    let (code, status) = match healthy {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let mut response = (code, axum::Json(Health { status, checks })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn metrics(render: MetricsRenderer) -> Response {
    (
        [
            (header::CONTENT_TYPE, METRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;
    use http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    struct Fixed(&'static str, Result<(), &'static str>);

    #[async_trait]
    impl HealthCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn check(&self) -> Result<(), String> {
            self.1.map_err(str::to_string)
        }
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String, Value) {
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        (status, content_type, json)
    }

    #[tokio::test]
    async fn without_checks_health_only_says_it_answers() {
        let (status, _, body) = get(Ops::default().routes(), "/health").await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
        let (status, _, _) = get(Ops::default().routes(), "/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no metrics, no route");
    }

    #[tokio::test]
    async fn a_failed_check_makes_health_503_and_names_it() {
        let ops = Ops {
            checks: vec![
                Arc::new(Fixed("store", Ok(()))),
                Arc::new(Fixed("database", Err("disk I/O error"))),
            ],
            metrics: None,
        };
        let (status, _, body) = get(ops.clone().routes(), "/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({
                "status": "unavailable",
                "checks": {
                    "store": {"status": "ok"},
                    "database": {"status": "failed", "message": "disk I/O error"}
                }
            })
        );
        let healthy = Ops {
            checks: vec![Arc::new(Fixed("store", Ok(())))],
            metrics: None,
        };
        let (status, _, body) = get(healthy.routes(), "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "ok", "checks": {"store": {"status": "ok"}}})
        );
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let ops = Ops {
            checks: Vec::new(),
            metrics: Some(Arc::new(|| "imgpipe_up 1\n".to_string())),
        };
        let (status, content_type, body) = get(ops.routes(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, METRICS_CONTENT_TYPE);
        assert_eq!(body, json!("imgpipe_up 1\n"));
    }
}
