//! `POST /v1/reprocess` and `GET /v1/reprocess/{id}` (admins only): start a re-render of the
//! COMPLETE images whose preset changed, and follow it. Where it runs is a port: `imgpipe
//! serve` runs it in the process through the local state machine; the api Lambda starts the
//! Reprocess state machine.

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use pipeline::keys;
use serde::{Deserialize, Serialize};

use crate::routes::{Authenticated, json_body};
use crate::{ApiError, ApiState, Caller};

/// What to re-render: the COMPLETE images matching every field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReprocessRequest {
    /// Only images made with this preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Only this owner's images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only images created at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only images created before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl ReprocessRequest {
    pub fn filter(&self) -> pipeline::reprocess::Filter {
        pipeline::reprocess::Filter {
            preset: self.preset.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// One reprocess run as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessRun {
    pub id: String,
    pub status: RunStatus,
    pub request: ReprocessRequest,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Images the run looks at (in the cloud: every upload under the owner's prefix, each
    /// checked against its record); unknown until it is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Of those, how many have been re-rendered, found up to date or outside the request,
    /// and how many failed (those keep their renditions).
    pub reprocessed: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Why the run itself stopped, when it failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where reprocess runs happen.
#[async_trait]
pub trait Reprocessor: Send + Sync {
    /// Starts a run of `request` for `by` (an admin); the request is valid already.
    async fn start(
        &self,
        request: &ReprocessRequest,
        by: &Caller,
    ) -> Result<ReprocessRun, ApiError>;
    /// The run `id`, if there is one.
    async fn run(&self, id: &str) -> Result<Option<ReprocessRun>, ApiError>;
}

/// For a deployment that has no Reprocess state machine configured: says so.
pub struct NotConfigured;

#[async_trait]
impl Reprocessor for NotConfigured {
    async fn start(&self, _: &ReprocessRequest, _: &Caller) -> Result<ReprocessRun, ApiError> {
        Err(not_configured())
    }
    async fn run(&self, _: &str) -> Result<Option<ReprocessRun>, ApiError> {
        Err(not_configured())
    }
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "re-rendering is not configured on this server (no Reprocess state machine)",
    )
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/reprocess", post(start))
        .route("/v1/reprocess/{id}", get(status))
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "re-rendering is for admins (the `admin` group)",
        ))
    }
}

async fn start(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&caller)?;
    // An object, not any JSON serde would map onto the fields (an array of nulls, say).
    let value: serde_json::Value = json_body(&headers, body)?;
    if !value.is_object() {
        return Err(ApiError::invalid_request(
            "body: must be a JSON object such as {\"preset\": \"web\"} ({} for everything)",
        ));
    }
    let request: ReprocessRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_request(format!("body: {e}")))?;
    if let Some(name) = &request.preset {
        state
            .config
            .presets
            .get(name)
            .map_err(|e| ApiError::invalid_request(e.message))?;
    }
    if let Some(owner) = &request.owner
        && !keys::valid_segment(owner)
    {
        return Err(ApiError::invalid_request(
            "owner: not a user id this server issues",
        ));
    }
    if let (Some(since), Some(until)) = (request.since, request.until)
        && since >= until
    {
        return Err(ApiError::invalid_request(
            "since: must be before until, or no image can match",
        ));
    }
    let run = state.reprocessor.start(&request, &caller).await?;
    tracing::info!(run = %run.id, by = %caller.sub, request = ?request, "reprocess started");
    let mut response = (StatusCode::ACCEPTED, Json(&run)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/reprocess/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn status(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ReprocessRun>, ApiError> {
    admin(&caller)?;
    let id = match path {
        Ok(Path(id)) if keys::valid_segment(&id) => id,
        _ => return Err(ApiError::not_found("no such reprocess run")),
    };
    state
        .reprocessor
        .run(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no reprocess run {id}")))
}
