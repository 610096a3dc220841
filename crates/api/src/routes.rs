//! The routes of DESIGN.md over the ports.
//!
//! Every answer that is not a success is an [`ApiError`] as JSON, including what axum or a
//! tower layer would otherwise answer as plain text (unknown routes, wrong methods, bodies over
//! the limit, malformed paths or queries): api/openapi.yaml promises that shape everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use pipeline::keys;
use pipeline::model::{ImageRecord, ListQuery, SourceInfo, Status};
use pipeline::ports::{MetadataStore, ObjectStore};
use pipeline::{PortError, Recipe};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tower_http::limit::RequestBodyLimitLayer;

use crate::{
    ApiError, Caller, CallerSource, FormThrottle, Ops, Presigner, UploadForm, UploadRequest,
};

/// Largest request body: an upload request is a few hundred bytes, a long recipe a few KiB.
pub const BODY_LIMIT: usize = 64 * 1024;
/// What `contentType` may declare: the formats Validate accepts as input (QOI is an
/// intermediate format only). `image/heif` is HEIC's container name, which some clients send
/// for iPhone photos.
pub const UPLOAD_CONTENT_TYPES: [&str; 9] = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/tiff",
    "image/bmp",
    "image/heic",
    "image/heif",
    "image/avif",
];
/// How long an upload form stays usable; the record waits longer (a day) for slow clients
/// that asked early.
pub const UPLOAD_FORM_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a download URL (image record `url`s, rendition redirects) stays usable.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
/// S3 caps user metadata (keys plus values, in UTF-8) at 2 KiB, and the recipe travels as
/// upload metadata: a recipe over this would be refused by the bucket only at upload time.
pub const MAX_UPLOAD_METADATA_BYTES: usize = 2048;
/// The bound the pipeline keeps tags to (steps.rs), so the API records what Validate would.
const MAX_TAGS: usize = 20;
const MAX_FILENAME_CHARS: usize = 1024;
/// Cursors are opaque store positions; the DynamoDB store's are the longest, under 4 KiB.
const MAX_CURSOR_BYTES: usize = 4096;

/// Everything the routes need; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub metadata: Arc<dyn MetadataStore>,
    /// Originals (`uploads/`) and quarantine copies, deleted with their image.
    pub uploads: Arc<dyn ObjectStore>,
    /// Renditions (`renditions/`), deleted with their image.
    pub renditions: Arc<dyn ObjectStore>,
    pub presigner: Arc<dyn Presigner>,
    pub auth: Arc<dyn CallerSource>,
    /// Presets, limits (max bytes for uploads) and the default preset.
    pub config: Arc<pipeline::Config>,
    /// Per-user limits on creating upload forms.
    pub forms: Arc<FormThrottle>,
    /// Where `POST /v1/reprocess` runs re-renders.
    pub reprocessor: Arc<dyn crate::reprocess::Reprocessor>,
    /// On-demand renditions: the size policy, link keys, renders in flight.
    pub transforms: Arc<crate::transform::Transforms>,
}

/// GET /health, GET /v1/presets (no auth); POST /v1/uploads, GET /v1/images,
/// GET /v1/images/{id}, GET /v1/images/{id}/renditions/{name}, DELETE /v1/images/{id};
/// transforms and signed links (transform.rs); reprocess runs (reprocess.rs).
/// `/health` says only that the process answers; see [`router_with`].
pub fn router(state: ApiState) -> Router {
    router_with(state, Ops::default())
}

/// [`router`] with the operators' additions: checks behind `/health`, `GET /metrics`.
pub fn router_with(state: ApiState, ops: Ops) -> Router {
    Router::new()
        .merge(ops.routes())
        .route("/v1/presets", get(presets))
        // Only this route reads a body; elsewhere a body is ignored, not refused.
        .route(
            "/v1/uploads",
            post(create_upload).layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        )
        .route("/v1/images", get(list_images))
        .route(
            "/v1/images/{id}",
            get(get_image)
                .delete(delete_image)
                .merge(patch(patch_image).layer(RequestBodyLimitLayer::new(BODY_LIMIT))),
        )
        .route("/v1/images/{id}/renditions/{name}", get(rendition))
        .merge(crate::reprocess::routes().layer(RequestBodyLimitLayer::new(BODY_LIMIT)))
        .merge(crate::transform::routes().layer(RequestBodyLimitLayer::new(BODY_LIMIT)))
        .fallback(no_route)
        // After the routes: it applies to those registered before it.
        .method_not_allowed_fallback(wrong_method)
        // Outermost, so it also sees what the body limit answers by itself.
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// The caller of an authenticated route.
pub struct Authenticated(pub Caller);

impl FromRequestParts<ApiState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let caller = state.auth.caller(parts).await?;
        // The subject becomes the owner segment of object keys.
        if !keys::valid_segment(&caller.sub) {
            return Err(ApiError::unauthorized(
                "the token's subject cannot own images (1-128 of A-Z a-z 0-9 - _ .)",
            ));
        }
        Ok(Authenticated(caller))
    }
}

#[derive(Serialize)]
struct PresetsView<'a> {
    presets: BTreeMap<&'a str, &'a Recipe>,
    default: &'a str,
}

async fn presets(State(state): State<ApiState>) -> Response {
    let config = &state.config;
    Json(PresetsView {
        presets: config.presets.iter().collect(),
        default: &config.default_preset,
    })
    .into_response()
}

/// The body of POST /v1/uploads. Explicit nulls are refused rather than read as absent: the
/// schema does not allow them, and `recipe: null` is more likely a client bug than a wish
/// for the default preset.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UploadBody {
    filename: String,
    content_type: String,
    bytes: u64,
    #[serde(default, deserialize_with = "present")]
    preset: Option<String>,
    /// Kept raw so the recipe's own errors name its fields.
    #[serde(default, deserialize_with = "present")]
    recipe: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    tags: Option<Vec<String>>,
}

pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadCreated {
    image_id: String,
    key: String,
    status: Status,
    upload: UploadForm,
}

async fn create_upload(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: UploadBody = json_body(&headers, body)?;
    // Malformed fields first (400), then what the server refuses to store (415, 413): a
    // request with several problems hears about the one that is the client's mistake.
    let filename_chars = req.filename.chars().count();
    if filename_chars == 0 || filename_chars > MAX_FILENAME_CHARS {
        return Err(ApiError::invalid_request(format!(
            "filename: must be 1-{MAX_FILENAME_CHARS} characters"
        )));
    }
    if req.bytes == 0 {
        return Err(ApiError::invalid_request("bytes: must be at least 1"));
    }
    // The schema's int64: a size no file can have is malformed, not merely over the limit.
    if req.bytes > i64::MAX as u64 {
        return Err(ApiError::invalid_request(format!(
            "bytes: must be at most {}",
            i64::MAX
        )));
    }
    let (recipe, mut metadata) = resolve_recipe(&state.config, req.preset, req.recipe)?;
    let tags = clean_tags(req.tags.as_deref().unwrap_or_default());
    if !tags.is_empty() {
        metadata.insert("tags".to_string(), tags.join(","));
    }
    // With the form marker Validate looks for (the image id, added once there is one).
    let marker_bytes = pipeline::FORM_METADATA.len() + keys::IMAGE_ID_LEN;
    let metadata_bytes: usize = metadata
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + marker_bytes;
    if metadata_bytes > MAX_UPLOAD_METADATA_BYTES {
        return Err(ApiError::invalid_recipe(format!(
            "recipe: too large to travel with the upload ({metadata_bytes} bytes of object \
             metadata with the tags; at most {MAX_UPLOAD_METADATA_BYTES}); use a preset or a \
             shorter recipe"
        )));
    }
    if !UPLOAD_CONTENT_TYPES.contains(&req.content_type.as_str()) {
        return Err(ApiError::unsupported_media_type(format!(
            "contentType: `{}` is not accepted; use one of {}",
            echo(&req.content_type),
            UPLOAD_CONTENT_TYPES.join(", ")
        )));
    }
    let max_bytes = state.config.limits.max_bytes;
    if req.bytes > max_bytes {
        return Err(ApiError::payload_too_large(format!(
            "bytes: {} is over the limit of {max_bytes} bytes",
            req.bytes
        )));
    }

    // Only a request that would otherwise succeed counts against the caller's limits.
    state
        .forms
        .check_open(state.metadata.as_ref(), &caller.sub)
        .await?;
    state.forms.take(&caller.sub)?;

    let now = Utc::now();
    let expires = now + chrono::Duration::hours(pipeline::AWAITING_UPLOAD_TTL_HOURS);
    let mut created = None;
    // ULIDs do not collide in practice; the retry only keeps a freak collision from
    // becoming an error.
    for _ in 0..3 {
        let id = keys::new_image_id();
        let record = ImageRecord {
            derived: Vec::new(),
            id: id.clone(),
            owner: caller.sub.clone(),
            status: Status::AwaitingUpload,
            source: SourceInfo {
                focal_point: None,
                alpha: None,
                key: keys::upload_key(&caller.sub, &id, &req.filename),
                etag: None,
                bytes: req.bytes,
                format: None,
                width: None,
                height: None,
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe: Some(recipe.clone()),
            renditions: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
            execution_id: None,
            tags: tags.clone(),
            preset: metadata.get("preset").cloned(),
            reprocessed_at: None,
        };
        if state.metadata.create_awaiting(&record, expires).await? {
            created = Some(record);
            break;
        }
    }
    let Some(record) = created else {
        return Err(ApiError::internal("three new image ids already existed"));
    };

    // Tells Validate a record awaits this upload: it claims that record and never makes a
    // new one, so once the image is deleted its form cannot bring it back.
    metadata.insert(pipeline::FORM_METADATA.to_string(), record.id.clone());
    let request = UploadRequest {
        key: record.source.key.clone(),
        content_type: req.content_type,
        // The declared size, not the global limit: the form must refuse anything bigger
        // than what the record says is coming.
        max_bytes: req.bytes,
        expires_at: now + chrono::Duration::seconds(UPLOAD_FORM_TTL.as_secs() as i64),
        metadata,
    };
    let form = match state.presigner.upload(&request).await {
        Ok(form) => form,
        Err(e) => {
            // Nobody can upload to a record without a form; drop it rather than leave it
            // waiting a day.
            if let Err(cleanup) = state.metadata.delete(&record.id).await {
                tracing::warn!(image_id = %record.id, error = %cleanup, "cannot drop the record of a failed upload form");
            }
            return Err(e.into());
        }
    };
    // No Location header: behind API Gateway the path the router sees lacks the stage
    // prefix, so a path built here would point at the wrong place.
    Ok((
        StatusCode::CREATED,
        Json(UploadCreated {
            image_id: record.id,
            key: record.source.key,
            status: Status::AwaitingUpload,
            upload: form,
        }),
    )
        .into_response())
}

/// The recipe an upload will get and the object metadata that tells Validate so.
fn resolve_recipe(
    config: &pipeline::Config,
    preset: Option<String>,
    recipe: Option<Value>,
) -> Result<(Recipe, BTreeMap<String, String>), ApiError> {
    let mut metadata = BTreeMap::new();
    let recipe = match (preset, recipe) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_request(
                "preset, recipe: give one or the other, not both",
            ));
        }
        (Some(name), None) => {
            if !pipeline::valid_name(&name) {
                return Err(ApiError::invalid_recipe(format!(
                    "preset: `{}` is not a preset name (1-64 of a-z, 0-9, '-' or '_')",
                    echo(&name)
                )));
            }
            let recipe = config
                .presets
                .get(&name)
                .map_err(|e| ApiError::invalid_recipe(e.message))?
                .clone();
            metadata.insert("preset".to_string(), name);
            recipe
        }
        (None, Some(value)) => {
            // serde reads a null optional field as absent; the API refuses it instead, so
            // that what it accepts is exactly what its schema says.
            if let Some(path) = first_null(&value, String::new()) {
                let field = if path.is_empty() { "recipe" } else { &path };
                return Err(ApiError::invalid_recipe(format!(
                    "{field}: must not be null; leave the field out instead"
                )));
            }
            let value_of_recipe = value.clone();
            let recipe: Recipe = serde_json::from_value(value)
                .map_err(|e| ApiError::invalid_recipe(format!("recipe: {e}")))?;
            recipe
                .validate()
                .map_err(|e| ApiError::invalid_recipe(e.message))?;
            check_operations(&value_of_recipe)?;
            // The client's recipe as compact JSON rather than the parsed one, which spells out
            // every default and so fits the metadata limit less often; both parse the same.
            let text = serde_json::to_string(&value_of_recipe).map_err(ApiError::internal)?;
            metadata.insert("recipe".to_string(), ascii_json(&text));
            recipe
        }
        (None, None) => {
            let name = &config.default_preset;
            let recipe = config
                .presets
                .get(name)
                .map_err(|e| ApiError::internal(format!("default preset: {}", e.message)))?
                .clone();
            metadata.insert("preset".to_string(), name.clone());
            recipe
        }
    };
    Ok((recipe, metadata))
}

/// Angles have no range of their own, only f32's; the bound stops short of f32::MAX because
/// a value stored near it prints back (shortest f32 form, 3.4028235e38) above it.
const ANY_ANGLE: f64 = 3.4e38;

/// The ranges of the operations' number parameters, as imaging's `Operation::validate` has
/// them, checked here on the JSON numbers themselves: serde reads them as f32, which rounds a
/// value just outside a range onto its edge, so the recipe check alone would accept numbers
/// the schema refuses. A test keeps the two in step.
const OPERATION_RANGES: &[(&str, &str, f64, f64)] = &[
    ("rotate", "angle", -ANY_ANGLE, ANY_ANGLE),
    ("hue", "degrees", -ANY_ANGLE, ANY_ANGLE),
    ("blur", "sigma", 0.3, 100.0),
    ("sharpen", "sigma", 0.3, 10.0),
    ("sharpen", "amount", 0.0, 10.0),
    ("brightness", "factor", 0.0, 10.0),
    ("contrast", "factor", 0.0, 10.0),
    ("saturation", "factor", 0.0, 10.0),
    ("gamma", "gamma", 0.1, 10.0),
];

/// Operations without parameters. serde lets these unit variants of the internally tagged
/// `Operation` through with any extra fields, despite `deny_unknown_fields`.
const PLAIN_OPERATIONS: [&str; 5] = ["flip", "flop", "grayscale", "sepia", "invert"];

/// What the recipe check misses about operations: number ranges (see [`OPERATION_RANGES`])
/// and parameters given to operations that take none.
fn check_operations(recipe: &Value) -> Result<(), ApiError> {
    let renditions = recipe.get("renditions").and_then(Value::as_array);
    for (i, rendition) in renditions.into_iter().flatten().enumerate() {
        let operations = rendition.get("operations").and_then(Value::as_array);
        for (j, op) in operations.into_iter().flatten().enumerate() {
            let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
            if PLAIN_OPERATIONS.contains(&name)
                && let Some(extra) = op
                    .as_object()
                    .and_then(|o| o.keys().find(|k| k.as_str() != "op"))
            {
                return Err(ApiError::invalid_recipe(format!(
                    "renditions[{i}].operations[{j}].{}: unknown field; `{name}` takes no \
                     parameters",
                    echo(extra)
                )));
            }
            for &(_, field, lo, hi) in OPERATION_RANGES.iter().filter(|r| r.0 == name) {
                if let Some(v) = op.get(field).and_then(Value::as_f64)
                    && !(lo..=hi).contains(&v)
                {
                    let range = if hi == ANY_ANGLE {
                        format!("a finite number within ±{ANY_ANGLE:e}")
                    } else {
                        format!("{lo}..={hi}")
                    };
                    return Err(ApiError::invalid_recipe(format!(
                        "renditions[{i}].operations[{j}].{field}: must be {range}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// JSON with every non-ASCII character escaped (`\u00e9`): the same value, safe as an S3
/// metadata value, which S3 would otherwise hand back RFC 2047-encoded. Outside strings JSON
/// is ASCII already, so escaping character by character is enough.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Where the first null in `value` is, as a recipe error names fields
/// (`renditions[0].quality`).
fn first_null(value: &Value, path: String) -> Option<String> {
    match value {
        Value::Null => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_null(v, format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            first_null(v, at)
        }),
        _ => None,
    }
}

/// Tags cleaned as the pipeline cleans them (steps.rs `tags_of`): trimmed, lower-cased,
/// only `letters digits - _ : .`, at most 64 bytes each, sorted, deduplicated, at most 20.
/// Anything else is dropped rather than refused, as an S3 drop-in's tags are.
pub fn clean_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = tags
        .iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| {
            !t.is_empty()
                && t.len() <= 64
                && t.chars().all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        })
        .collect();
    out.sort();
    out.dedup();
    out.truncate(MAX_TAGS);
    out
}

async fn get_image(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let record = visible_record(&state, &caller, &id).await?;
    detail(&state, record).await
}

/// `PATCH /v1/images/{id}`: what the owner may change after the upload, today the focal point.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBody {
    /// `{"x": 0..1, "y": 0..1}` from the top left, or null to remove it.
    #[serde(deserialize_with = "nullable")]
    focal_point: Option<FocalPointBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FocalPointBody {
    x: f64,
    y: f64,
}

/// Required, and null stands for "remove".
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

async fn patch_image(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let record = visible_record(&state, &caller, &id).await?;
    let body: PatchBody = json_body(&headers, body)?;
    let point = match body.focal_point {
        None => None,
        Some(p) => Some(imaging::FocalPoint::new(p.x, p.y).ok_or_else(|| {
            ApiError::invalid_request(
                "body: focalPoint: x and y are fractions of the width and height, 0 to 1",
            )
        })?),
    };
    if !state.metadata.set_focal_point(&record.id, point).await? {
        return Err(ApiError::not_found(format!("no image {id}")));
    }
    let record = visible_record(&state, &caller, &id).await?;
    tracing::info!(image_id = %record.id, by = %caller.sub, focal_point = ?point, "focal point set");
    detail(&state, record).await
}

/// A record as `GET /v1/images/{id}` answers it: with a download URL on every rendition.
async fn detail(state: &ApiState, record: ImageRecord) -> Result<Response, ApiError> {
    let mut json =
        serde_json::to_value(RecordView::from(record.clone())).map_err(ApiError::internal)?;
    if let Some(items) = json.get_mut("renditions").and_then(Value::as_array_mut) {
        for (rendition, item) in record.renditions.iter().zip(items.iter_mut()) {
            let url = state
                .presigner
                .download(&rendition.key, DOWNLOAD_URL_TTL)
                .await?;
            if let Some(object) = item.as_object_mut() {
                object.insert("url".to_string(), Value::String(url));
            }
        }
    }
    Ok(Json(json).into_response())
}

/// The query of GET /v1/images, as text so each problem can be reported with its parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    tag: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    owner: Option<String>,
}

#[derive(Serialize)]
struct PageView {
    items: Vec<RecordView>,
    cursor: Option<String>,
}

/// A record as the API answers it: with the placeholder and dominant colour of its smallest
/// rendition at the top, for a page to paint before any rendition loads.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordView {
    #[serde(flatten)]
    record: ImageRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    placeholder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dominant_color: Option<String>,
}

impl From<ImageRecord> for RecordView {
    fn from(record: ImageRecord) -> RecordView {
        let (placeholder, dominant_color) =
            match pipeline::model::placeholder_of(&record.renditions) {
                Some((p, c)) => (Some(p.to_string()), Some(c.to_string())),
                None => (None, None),
            };
        RecordView {
            record,
            placeholder,
            dominant_color,
        }
    }
}

async fn list_images(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let Some(query) = list_query(&caller, params)? else {
        return Ok(Json(PageView {
            items: Vec::new(),
            cursor: None,
        })
        .into_response());
    };
    let page = match state.metadata.list(&query).await {
        Ok(page) => page,
        Err(PortError::Permanent(m)) if m.contains("cursor") => {
            return Err(ApiError::invalid_cursor(
                "cursor: not a cursor this server issued for this listing",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(PageView {
        items: page.items.into_iter().map(RecordView::from).collect(),
        cursor: page.cursor,
    })
    .into_response())
}

/// The store query for a listing, or `None` when the answer is known to be empty: a user
/// asking for another owner's images (`owner` narrows what the caller may see; only admins
/// may see other owners at all).
fn list_query(caller: &Caller, params: ListParams) -> Result<Option<ListQuery>, ApiError> {
    let status = params
        .status
        .map(|s| match s.parse::<Status>() {
            // Exactly as documented: the schema's enum is upper case.
            Ok(status) if status.as_str() == s => Ok(status),
            _ => Err(ApiError::invalid_request(format!(
                "status: `{}` is not one of AWAITING_UPLOAD, PROCESSING, COMPLETE, REJECTED, FAILED",
                echo(&s)
            ))),
        })
        .transpose()?;
    let since = params.since.map(|s| timestamp("since", &s)).transpose()?;
    let until = params.until.map(|s| timestamp("until", &s)).transpose()?;
    let tag = params
        .tag
        .map(|t| {
            let n = t.chars().count();
            if n == 0 || n > 64 {
                return Err(ApiError::invalid_request("tag: must be 1-64 characters"));
            }
            // Stored tags are lower case.
            Ok(t.to_lowercase())
        })
        .transpose()?;
    let limit = match params.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid_request(format!(
                    "limit: must be an integer 1..={MAX_PAGE_SIZE}"
                )));
            }
        },
    };
    // An empty cursor is the first page, for clients that always send the parameter.
    let cursor = params.cursor.filter(|c| !c.is_empty());
    if cursor.as_ref().is_some_and(|c| c.len() > MAX_CURSOR_BYTES) {
        return Err(ApiError::invalid_cursor(
            "cursor: not a cursor this server issued for this listing",
        ));
    }
    let owner = match params.owner {
        Some(o) if !keys::valid_segment(&o) => {
            return Err(ApiError::invalid_request(
                "owner: must be 1-128 of A-Z a-z 0-9 - _ . not starting with a dot",
            ));
        }
        Some(o) if caller.admin => Some(o),
        Some(o) if o != caller.sub => return Ok(None),
        _ if caller.admin => None,
        _ => Some(caller.sub.clone()),
    };
    Ok(Some(ListQuery {
        owner,
        status,
        since,
        until,
        tag,
        limit,
        cursor,
    }))
}

fn timestamp(param: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid_request(format!(
                "{param}: `{}` is not an RFC 3339 date-time such as 2024-05-01T12:00:00Z",
                echo(s)
            ))
        })
}

async fn rendition(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path((id, name))) = path else {
        return Err(ApiError::not_found("no such image"));
    };
    if !keys::valid_segment(&id) {
        return Err(ApiError::not_found("no such image"));
    }
    let record = visible_record(&state, &caller, &id).await?;
    let found = pipeline::valid_name(&name)
        .then(|| record.renditions.iter().find(|r| r.name == name))
        .flatten();
    let Some(found) = found else {
        return Err(ApiError::not_found(format!(
            "image {id} has no rendition `{}`",
            echo(&name)
        )));
    };
    let url = state
        .presigner
        .download(&found.key, DOWNLOAD_URL_TTL)
        .await?;
    let location = HeaderValue::try_from(url).map_err(ApiError::internal)?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            // The URL expires; a cached redirect would outlive it.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

async fn delete_image(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let record = visible_record(&state, &caller, &id).await?;
    // Objects first, the record last: if anything fails the record is still there and the
    // DELETE can simply be repeated.
    state.uploads.delete(&record.source.key).await?;
    if keys::valid_segment(&record.owner) {
        let quarantine = format!("quarantine/{}/{}/", record.owner, record.id);
        for key in state.uploads.list(&quarantine).await? {
            state.uploads.delete(&key).await?;
        }
    }
    let mut outputs: BTreeSet<String> = record.renditions.iter().map(|r| r.key.clone()).collect();
    if keys::valid_segment(&record.owner) {
        // Also what a Store wrote without reaching the record (a failed or racing run).
        let prefix = format!("renditions/{}/{}/", record.owner, record.id);
        outputs.extend(state.renditions.list(&prefix).await?);
    }
    for key in &outputs {
        state.renditions.delete(key).await?;
    }
    if !state.metadata.delete(&record.id).await? {
        return Err(ApiError::not_found(format!("no image {id}")));
    }
    tracing::info!(image_id = %record.id, owner = %record.owner, by = %caller.sub, "image deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The id in the path, if it could be an id at all; anything else is a route that leads
/// nowhere.
pub(crate) fn image_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(id)) if keys::valid_segment(&id) => Ok(id),
        _ => Err(ApiError::not_found("no such image")),
    }
}

/// The record if the caller may see it. Another owner's image is "not found", never
/// "forbidden", so ids cannot be probed.
pub(crate) async fn visible_record(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<ImageRecord, ApiError> {
    match state.metadata.get(id).await? {
        Some(record) if caller.admin || record.owner == caller.sub => Ok(record),
        _ => Err(ApiError::not_found(format!("no image {id}"))),
    }
}

/// The JSON body of a request: declared as JSON, within the size limit, and parsed into `T`
/// with serde's message (which names unknown and missing fields).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::unsupported_media_type(
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(format!("the request body is over {BODY_LIMIT} bytes"))
        } else {
            ApiError::invalid_request(format!("body: {}", e.body_text()))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid_request(format!("body: {e}")))
}

/// User text quoted back in a message, bounded so an error cannot be made arbitrarily large.
fn echo(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", echo(uri.path())))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", echo(uri.path())))
}

/// The last word on error bodies: any 4xx or 5xx that is not already JSON (axum's own
/// answers, the body limit's 413) becomes `{error, message}`, keeping the headers that
/// explain it.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let mut replaced = ApiError::for_status(status).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(sub: &str, admin: bool) -> Caller {
        Caller {
            sub: sub.to_string(),
            admin,
        }
    }

    #[test]
    fn tags_are_cleaned_like_the_pipeline_does() {
        let tags: Vec<String> = [
            " Beach ",
            "beach",
            "a,b",
            "",
            "summer:2024",
            &"x".repeat(65),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(clean_tags(&tags), ["beach", "summer:2024"]);
        let many: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        assert_eq!(clean_tags(&many).len(), MAX_TAGS);
    }

    #[test]
    fn listing_scopes_follow_the_caller() {
        let q = list_query(&caller("u1", false), ListParams::default())
            .unwrap()
            .unwrap();
        assert_eq!(q.owner.as_deref(), Some("u1"));
        assert_eq!(q.limit, DEFAULT_PAGE_SIZE);
        let q = list_query(&caller("root", true), ListParams::default())
            .unwrap()
            .unwrap();
        assert_eq!(q.owner, None);
        let other = ListParams {
            owner: Some("u2".into()),
            ..ListParams::default()
        };
        assert_eq!(list_query(&caller("u1", false), other).unwrap(), None);
        let other = ListParams {
            owner: Some("u2".into()),
            ..ListParams::default()
        };
        let q = list_query(&caller("root", true), other).unwrap().unwrap();
        assert_eq!(q.owner.as_deref(), Some("u2"));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (params, name) in [
            (
                ListParams {
                    status: Some("complete".into()),
                    ..ListParams::default()
                },
                "status:",
            ),
            (
                ListParams {
                    since: Some("yesterday".into()),
                    ..ListParams::default()
                },
                "since:",
            ),
            (
                ListParams {
                    limit: Some("0".into()),
                    ..ListParams::default()
                },
                "limit:",
            ),
            (
                ListParams {
                    limit: Some("101".into()),
                    ..ListParams::default()
                },
                "limit:",
            ),
            (
                ListParams {
                    owner: Some("../x".into()),
                    ..ListParams::default()
                },
                "owner:",
            ),
        ] {
            let e = list_query(&caller("u1", false), params).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.starts_with(name), "{}", e.message);
        }
    }

    #[test]
    fn operation_ranges_agree_with_imaging() {
        for &(op, field, lo, hi) in OPERATION_RANGES {
            let with = |v: f64| {
                let mut json = serde_json::json!({"op": op});
                // Other required parameters of the operation, at a valid value.
                for &(_, other, olo, _) in OPERATION_RANGES.iter().filter(|r| r.0 == op) {
                    json[other] = olo.into();
                }
                json[field] = v.into();
                json
            };
            let recipe = |v: f64| serde_json::json!({"renditions": [{"name": "a", "operations": [with(v)]}]});
            for v in [lo, hi] {
                let parsed: imaging::Operation = serde_json::from_value(with(v)).unwrap();
                assert!(parsed.validate().is_ok(), "{op}.{field} = {v}");
                assert!(check_operations(&recipe(v)).is_ok(), "{op}.{field} = {v}");
            }
            if hi < ANY_ANGLE {
                // Clearly outside: imaging refuses it too.
                for v in [lo - 0.01, hi + 0.01] {
                    let parsed: imaging::Operation = serde_json::from_value(with(v)).unwrap();
                    assert!(parsed.validate().is_err(), "{op}.{field} = {v}");
                    assert!(check_operations(&recipe(v)).is_err());
                }
            }
            // Just outside, where f32 rounding would let it through.
            let edge = hi + hi.abs() * 1e-12 + 1e-12;
            let e = check_operations(&recipe(edge)).unwrap_err();
            assert!(
                e.message
                    .starts_with(&format!("renditions[0].operations[0].{field}: must be")),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn plain_operations_take_no_parameters() {
        let recipe = serde_json::json!({"renditions": [{"name": "a", "operations": [
            {"op": "grayscale"}, {"op": "flip", "angle": 90}
        ]}]});
        let e = check_operations(&recipe).unwrap_err();
        assert_eq!(e.error, "InvalidRecipe");
        assert!(
            e.message
                .starts_with("renditions[0].operations[1].angle: unknown field"),
            "{}",
            e.message
        );
        // Every plain operation is one imaging knows.
        for op in PLAIN_OPERATIONS {
            let parsed: Result<imaging::Operation, _> =
                serde_json::from_value(serde_json::json!({"op": op}));
            assert!(parsed.is_ok(), "{op}");
        }
    }

    #[test]
    fn recipe_metadata_is_ascii_json_of_the_same_value() {
        let value = serde_json::json!({"description": "café 📷", "renditions": [{"name": "a"}]});
        let text = ascii_json(&value.to_string());
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains("caf\\u00e9 \\ud83d\\udcf7"), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn echo_bounds_quoted_text() {
        assert_eq!(echo("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(echo(&long).chars().count(), 67);
    }
}
