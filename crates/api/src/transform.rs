//! On-demand renditions: `GET /v1/images/{id}/transform?w=&h=&fit=&gravity=&fmt=&q=&dpr=&bg=`
//! (owner or admin), signed public links to them (`POST /v1/images/{id}/links`, then
//! `GET /t/{id}/{params}?exp=&sig=` without a token).
//!
//! The first request for a transform renders it from the original, stores it under
//! `renditions/{owner}/{id}/t/{hash}.{ext}` and lists it on the record (`derived`); that and
//! every later request answers 302 to a short-lived download URL, so bytes never pass through
//! this process's response (no response size cap in a Lambda function). Concurrent requests
//! for one transform wait for one render (single flight), which runs on the image workers'
//! compute slots with the pipeline's pixel and job budgets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use pipeline::model::{DerivedRendition, ImageRecord, Status};
use pipeline::ports::{PutDerived, PutOptions};
use pipeline::transform::{Normalised, Policy, Request};
use pipeline::{ErrorKind, RENDITION_CACHE_CONTROL, StepError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::cdn::{self, CdnSigner};
use crate::links::{LinkKeys, LinkRefusal};
use crate::routes::{Authenticated, DOWNLOAD_URL_TTL, image_id, json_body, visible_record};
use crate::{ApiError, ApiState};

/// How many on-demand renditions one image may have: each is an entry in its record (a
/// DynamoDB item holds 400 KB), and a bound on what one image can cost in storage.
pub const MAX_DERIVED_PER_IMAGE: usize = 200;
/// A signed link's life when the request names none.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest life a signed link may be given.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// The header the CloudFront distribution adds to the requests it forwards (an origin custom
/// header, template.yaml): with [`CDN_HOST_HEADER`], a signed link that came through it is
/// answered with a redirect to the distribution, cacheable there. A client sending them
/// directly gets a URL that works only on the distribution, for an object its link opens
/// anyway.
pub const CDN_HEADER: &str = "x-imgpipe-cdn";
/// The host the viewer asked the distribution for (its domain or an alias), which its
/// viewer-request function copies here (overwriting any the viewer sent): the redirect is
/// signed for that host.
pub const CDN_HOST_HEADER: &str = "x-imgpipe-host";
/// How long the distribution (and the browser) may keep a signed link's redirect: short, so
/// a transform deleted or re-rendered is not pointed at for long.
pub const CDN_REDIRECT_MAX_AGE_SECS: i64 = 300;

type Outcome = Option<Result<DerivedRendition, ApiError>>;

/// The server's transform settings and the renders in flight.
pub struct Transforms {
    policy: Policy,
    links: Option<LinkKeys>,
    /// Where signed links point (`https://images.example.com`); without it, the request's
    /// own host.
    public_url: Option<String>,
    /// Signs redirects to the CloudFront distribution in front of the renditions bucket.
    cdn: Option<std::sync::Arc<CdnSigner>>,
    /// Renders under way, by the key they will write: later requests wait on the first.
    inflight: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
    renders: AtomicU64,
}

impl Default for Transforms {
    fn default() -> Self {
        Transforms::new(Policy::default(), None, None)
    }
}

impl Transforms {
    pub fn new(policy: Policy, links: Option<LinkKeys>, public_url: Option<String>) -> Self {
        Transforms {
            policy,
            links,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            cdn: None,
            inflight: Mutex::new(HashMap::new()),
            renders: AtomicU64::new(0),
        }
    }

    /// Signed links followed through the CloudFront distribution redirect to it.
    pub fn with_cdn(mut self, signer: std::sync::Arc<CdnSigner>) -> Self {
        self.cdn = Some(signer);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Renders this process has made (each stored once), for metrics and tests.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Outcome>>> {
        // A panic while holding the lock leaves the map as it was: still usable.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/images/{id}/transform", get(transform))
        .route("/v1/images/{id}/links", post(create_link))
        .route("/t/{id}/{params}", get(follow_link))
}

fn invalid_param(e: pipeline::transform::ParamError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidTransform", e.to_string())
}

/// The query as pairs, each problem named.
fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Request, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::invalid_request(format!("query: {}", e.body_text())))?;
    Request::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(invalid_param)
}

async fn transform(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let record = visible_record(&state, &caller, &id).await?;
    let request = query_pairs(query)?;
    // An authenticated answer is the caller's own: never sent to the shared cache.
    answer(&state, record, &request, &headers, None).await
}

/// A signed link followed through the CloudFront distribution: its redirect goes to the
/// distribution and may be kept there for a while, never past the link's expiry.
struct ViaCdn<'a> {
    signer: &'a CdnSigner,
    host: &'a str,
    link_expires: i64,
}

/// Finds or renders the transform, then redirects to it.
async fn answer(
    state: &ApiState,
    record: ImageRecord,
    request: &Request,
    headers: &HeaderMap,
    via_cdn: Option<ViaCdn<'_>>,
) -> Result<Response, ApiError> {
    if record.status != Status::Complete {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NotReady",
            format!(
                "image {} is {}; transforms are made from COMPLETE images",
                record.id, record.status
            ),
        ));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let normalised = request
        .normalise(&record.source, accept, state.transforms.policy())
        .map_err(invalid_param)?;
    let params = normalised.canonical();
    let derived = match record.derived.iter().find(|d| d.params == params) {
        Some(found) => {
            // Counting is bookkeeping: the answer does not wait for it.
            let (metadata, id, params) = (state.metadata.clone(), record.id.clone(), params);
            tokio::spawn(async move {
                if let Err(e) = metadata.hit_derived(&id, &params).await {
                    tracing::warn!(image_id = %id, error = %e, "transform hit not counted");
                }
            });
            found.clone()
        }
        None => render_once(state, &record, normalised).await?,
    };
    let signed_by_cdn = via_cdn.and_then(
        |ViaCdn {
             signer,
             host,
             link_expires,
         }| {
            let now = Utc::now().timestamp();
            let max_age = (link_expires - now).clamp(0, CDN_REDIRECT_MAX_AGE_SECS);
            // Valid for as long as a fresh URL would be, counted from the end of the time the
            // redirect may be kept, rounded up so that requests meanwhile get the same URL;
            // but not longer after the link's own expiry than a URL made at that moment.
            let ttl = i64::try_from(DOWNLOAD_URL_TTL.as_secs()).unwrap_or(i64::MAX);
            let expires =
                cdn::expiry(now, max_age.saturating_add(ttl)).min(link_expires.saturating_add(ttl));
            let url = signer.sign(host, &derived.key, expires)?;
            Some((url, format!("public, max-age={max_age}")))
        },
    );
    let (url, cache_control) = match signed_by_cdn {
        Some(signed) => signed,
        None => (
            state
                .presigner
                .download(&derived.key, DOWNLOAD_URL_TTL)
                .await?,
            // The URL expires; a cached redirect would outlive it.
            "no-store".to_string(),
        ),
    };
    let mut response = (
        StatusCode::FOUND,
        [
            (
                header::LOCATION,
                HeaderValue::try_from(url).map_err(ApiError::internal)?,
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::try_from(cache_control).map_err(ApiError::internal)?,
            ),
        ],
    )
        .into_response();
    if request.varies_with_accept() {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    Ok(response)
}

/// Takes a render's entry out of the in-flight map when dropped.
struct Leave {
    transforms: std::sync::Arc<Transforms>,
    key: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.transforms.inflight().remove(&self.key);
    }
}

/// Renders and stores `n` for `record` once however many requests ask at the same time: the
/// first starts the render on a task of its own (a client that goes away does not waste it),
/// the others wait for its outcome.
async fn render_once(
    state: &ApiState,
    record: &ImageRecord,
    n: Normalised,
) -> Result<DerivedRendition, ApiError> {
    if record.derived.len() >= MAX_DERIVED_PER_IMAGE {
        return Err(too_many(&record.id));
    }
    let key = n.key(&record.owner, &record.id);
    let mut rx = {
        let mut inflight = state.transforms.inflight();
        match inflight.get(&key) {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                inflight.insert(key.clone(), rx.clone());
                let (state, record, key) = (state.clone(), record.clone(), key.clone());
                tokio::spawn(async move {
                    // Out of the map however the task ends, a panic included: else every
                    // later request for this transform would wait on a render that is gone.
                    let _leave = Leave {
                        transforms: state.transforms.clone(),
                        key: key.clone(),
                    };
                    let outcome = render_and_store(&state, &record, &n, &key).await;
                    if outcome.is_ok() {
                        state.transforms.renders.fetch_add(1, Ordering::Relaxed);
                    }
                    // Out of the map first: a request arriving now reads the record, which
                    // lists the new rendition already.
                    drop(_leave);
                    let _ = tx.send(Some(outcome));
                });
                rx
            }
        }
    };
    let outcome = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| ApiError::internal("the render stopped without an outcome"))?;
    match &*outcome {
        Some(result) => result.clone(),
        None => Err(ApiError::internal("the render stopped without an outcome")),
    }
}

fn too_many(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "TooManyTransforms",
        format!(
            "image {id} has {MAX_DERIVED_PER_IMAGE} on-demand renditions, the most one image may \
             have; use one of them (GET /v1/images/{{id}} lists them under `derived`)"
        ),
    )
}

async fn render_and_store(
    state: &ApiState,
    record: &ImageRecord,
    n: &Normalised,
    key: &str,
) -> Result<DerivedRendition, ApiError> {
    let config = state.config.clone();
    let source = match (record.source.width, record.source.height) {
        (Some(w), Some(h)) => (w, h),
        _ => {
            return Err(ApiError::internal(format!(
                "image {}: no dimensions",
                record.id
            )));
        }
    };
    let rendition = n.rendition().map_err(step_error)?;
    let recipe = pipeline::Recipe {
        description: None,
        renditions: vec![rendition.clone()],
    };
    // The budgets an upload with this recipe would meet, before anything is read: a source
    // over the ordinary pixel limit (a large job's) is not decoded here either.
    let pixels = u64::from(source.0) * u64::from(source.1);
    if pixels > config.limits.max_pixels {
        return Err(step_error(
            imaging::Error::TooManyPixels {
                width: source.0,
                height: source.1,
                pixels,
                limit: config.limits.max_pixels,
            }
            .into(),
        ));
    }
    recipe
        .check_outputs(source, config.limits.max_pixels, config.job_pixel_budget())
        .map_err(step_error)?;
    if record.source.bytes > config.limits.max_bytes {
        return Err(step_error(
            imaging::Error::TooManyBytes {
                size: record.source.bytes,
                limit: config.limits.max_bytes,
            }
            .into(),
        ));
    }
    let limits = config.limits;
    // The owner's image an `overlay` names, refused by name when it is not theirs.
    let overlays = pipeline::operations::load_overlays(
        &rendition.operations,
        &record.owner,
        state.metadata.as_ref(),
        state.uploads.as_ref(),
        &limits,
    )
    .await
    .map_err(step_error)?;
    let bytes = state.uploads.get(&record.source.key).await?;
    let (encoded, format, (width, height)) = config
        .compute
        .run(move || pipeline::transform::render(&bytes, source, &rendition, &limits, &overlays))
        .await
        .map_err(step_error)?;
    let size = encoded.bytes.len() as u64;
    state
        .renditions
        .put(
            key,
            encoded.bytes,
            PutOptions {
                content_type: Some(format.mime().to_string()),
                cache_control: Some(RENDITION_CACHE_CONTROL.to_string()),
                metadata: Default::default(),
            },
        )
        .await?;
    let derived = DerivedRendition {
        params: n.canonical(),
        key: key.to_string(),
        format,
        width,
        height,
        bytes: size,
        created_at: Utc::now(),
        hits: 1,
    };
    let outcome = state
        .metadata
        .put_derived(&record.id, &derived, MAX_DERIVED_PER_IMAGE)
        .await?;
    if outcome != PutDerived::Listed {
        // Deleted (or failed) while rendering, or full: the object goes too.
        if let Err(e) = state.renditions.delete(key).await {
            tracing::warn!(%key, error = %e, "unlisted transform not removed");
        }
        return Err(match outcome {
            PutDerived::Full => too_many(&record.id),
            _ => ApiError::not_found(format!("no image {}", record.id)),
        });
    }
    pipeline::telemetry::record_transform_rendered(format, size);
    tracing::info!(image_id = %record.id, params = %derived.params, bytes = size, "transform rendered");
    Ok(derived)
}

/// A pipeline error as the API answers it: the image or the request's size is the client's
/// problem (400 with the kind's name), anything else the server's.
fn step_error(e: StepError) -> ApiError {
    match e.kind {
        ErrorKind::ImageTooLarge | ErrorKind::InvalidRecipe => {
            ApiError::new(StatusCode::BAD_REQUEST, e.name(), e.message)
        }
        ErrorKind::InvalidImage | ErrorKind::UnsupportedFormat => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.name(), e.message)
        }
        ErrorKind::Transient => ApiError::unavailable(e),
        _ => ApiError::internal(e),
    }
}

/// `POST /v1/images/{id}/links`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LinkBody {
    /// `w=800&fmt=auto`, or the same as an object (`{"w": 800, "fmt": "auto"}`).
    params: Value,
    /// Seconds; [`DEFAULT_LINK_TTL`] when absent (not null).
    #[serde(default, deserialize_with = "crate::routes::present")]
    expires_in: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkView {
    url: String,
    path: String,
    params: String,
    expires_at: DateTime<Utc>,
}

fn body_pairs(params: &Value) -> Result<Vec<(String, String)>, ApiError> {
    match params {
        Value::String(q) => Ok(q
            .trim_start_matches('?')
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                _ => Err(ApiError::invalid_request(format!(
                    "body: params.{k}: a string or a number"
                ))),
            })
            .collect(),
        _ => Err(ApiError::invalid_request(
            "body: params: a query string (`w=800&fmt=auto`) or an object of them",
        )),
    }
}

async fn create_link(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let record = visible_record(&state, &caller, &id).await?;
    let body: LinkBody = json_body(&headers, body)?;
    let Some(keys) = &state.transforms.links else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "signed links are not configured on this server (no link key)",
        ));
    };
    let pairs = body_pairs(&body.params)?;
    let request = Request::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(invalid_param)?;
    // Checked now against the policy, so a link that could never work is not handed out.
    request
        .normalise(&record.source, None, state.transforms.policy())
        .map_err(invalid_param)?;
    let ttl = match body.expires_in {
        None => DEFAULT_LINK_TTL,
        Some(s) if (1..=MAX_LINK_TTL.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::invalid_request(format!(
                "body: expiresIn: 1 to {} seconds",
                MAX_LINK_TTL.as_secs()
            )));
        }
    };
    let expires_at = Utc::now()
        + chrono::Duration::from_std(ttl).map_err(|e| ApiError::internal(e.to_string()))?;
    let params = request.canonical();
    let exp = expires_at.timestamp();
    let sig = keys.sign(&record.id, &params, exp);
    let link_path = format!("/t/{}/{params}?exp={exp}&sig={sig}", record.id);
    let base = match &state.transforms.public_url {
        Some(base) => base.clone(),
        None => base_of_request(&headers)?,
    };
    let view = LinkView {
        url: format!("{base}{link_path}"),
        path: link_path,
        params,
        expires_at,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The path prefix a gateway serves this API under (a REST API's stage, `/dev`), which the
/// router never sees but links must carry; the Lambda adapter sets it from the request context.
pub const FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// `scheme://host[/prefix]` of the request, for links when no public URL is configured.
fn base_of_request(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::invalid_request("no Host header to build the link from"))?;
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let prefix = headers
        .get(FORWARDED_PREFIX)
        .and_then(|v| v.to_str().ok())
        .filter(|p| {
            p.starts_with('/')
                && p.len() <= 129
                && p[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or("");
    Ok(format!("{scheme}://{host}{prefix}"))
}

#[derive(Debug, Deserialize)]
struct LinkQuery {
    exp: Option<String>,
    sig: Option<String>,
}

/// `GET /t/{id}/{params}?exp=&sig=`: no token, the signature is the permission.
async fn follow_link(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<LinkQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "Forbidden", m);
    let Ok(Path((id, params))) = path else {
        return Err(forbidden("not a signed link"));
    };
    let Ok(Query(q)) = query else {
        return Err(forbidden("not a signed link"));
    };
    let (Some(exp), Some(sig)) = (q.exp, q.sig) else {
        return Err(forbidden("a signed link carries exp and sig"));
    };
    let Some(keys) = &state.transforms.links else {
        return Err(forbidden("signed links are not configured on this server"));
    };
    let exp: i64 = exp
        .parse()
        .map_err(|_| forbidden("the link's exp is not a time"))?;
    match keys.verify(&id, &params, exp, &sig, Utc::now().timestamp()) {
        Ok(()) => {}
        Err(LinkRefusal::BadSignature) => {
            return Err(forbidden("the link's signature does not match it"));
        }
        Err(LinkRefusal::Expired) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "LinkExpired",
                "the link has expired; ask for a new one",
            ));
        }
    }
    // Signed by this server, so the parameters are ones it wrote; parsed again all the same.
    let pairs: Vec<(&str, &str)> = params
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let request = Request::parse(pairs).map_err(invalid_param)?;
    let record = match state.metadata.get(&id).await? {
        Some(r) => r,
        None => return Err(ApiError::not_found(format!("no image {id}"))),
    };
    let host = headers.get(CDN_HOST_HEADER).and_then(|h| h.to_str().ok());
    let via_cdn = match (&state.transforms.cdn, host) {
        (Some(signer), Some(host)) if headers.contains_key(CDN_HEADER) => Some(ViaCdn {
            signer,
            host,
            link_expires: exp,
        }),
        _ => None,
    };
    answer(&state, record, &request, &headers, via_cdn).await
}
