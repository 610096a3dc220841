//! The two routes that stand in for the bucket: POST /upload takes a signed form (S3's
//! presigned POST shape: fields, then `file`) and GET /download/{key} serves a rendition by a
//! signed URL. Neither needs a bearer token: the signature is the permission.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use api::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use http::{HeaderValue, Method, StatusCode, header};
use local::FsStore;
use pipeline::io::Upload;
use pipeline::model::Status;
use pipeline::ports::{MetadataStore, ObjectStore};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_http::cors::{Any, CorsLayer};

use super::meter::{BODY_IDLE, Cut, MIN_RATE, Meter};
use super::presign::{
    DOWNLOADABLE_PREFIX, LocalPresigner, Refusal, VerifiedForm, valid_field_name,
};
use super::queue::Queue;

/// Room for the form fields and multipart framing around the file.
pub const FORM_SLACK: u64 = 64 * 1024;
/// At most this many fields before the file, each at most this long: the signed fields plus
/// a few metadata entries (whose total the API keeps to 2 KiB) fit with room to spare.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 8 * 1024;
/// After refusing a body whose declared length is at most this, the rest is read and thrown
/// away so the client gets the answer instead of a reset connection; larger ones are cut.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 64 * 1024;
/// How far the multipart parser may read ahead of the file bytes the handler has taken.
const READ_AHEAD: u64 = 1024 * 1024;

#[derive(Clone)]
pub struct TransferState {
    pub presigner: Arc<LocalPresigner>,
    pub store: Arc<FsStore>,
    pub queue: Queue,
    /// The records, to refuse a form whose image is gone before its file is read.
    pub metadata: Arc<dyn MetadataStore>,
    /// The largest request body accepted at all: the pipeline's byte limit plus the slack.
    pub max_body: u64,
}

pub fn routes(state: TransferState) -> Router {
    // Browsers post forms cross-origin without a preflight but need this to read the answer;
    // as with a bucket's CORS rule, the signature and not the origin is what is checked.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .expose_headers([header::RETRY_AFTER]);
    Router::new()
        .route("/upload", post(upload))
        .route("/download/{*key}", get(download))
        .method_not_allowed_fallback(wrong_method)
        // The upload is streamed and limited by its signed size, not buffered up to a cap.
        .layer(DefaultBodyLimit::disable())
        .layer(cors)
        .with_state(state)
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed here"))
}

fn forbidden(error: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, error, message)
}

fn refused(r: Refusal) -> ApiError {
    refusal(r, "use the form exactly as POST /v1/uploads returned it")
}

fn refused_download(r: Refusal) -> ApiError {
    refusal(
        r,
        "use the URL exactly as the image record or GET /v1/images/{id}/renditions/{name} gave it",
    )
}

fn refusal(r: Refusal, how: &str) -> ApiError {
    match r {
        Refusal::Malformed(m) => ApiError::invalid_request(m),
        Refusal::BadSignature => forbidden(
            "SignatureDoesNotMatch",
            format!("the signature does not match; {how}"),
        ),
        Refusal::Expired => forbidden(
            "Expired",
            "this upload form or URL has expired; ask for a new one",
        ),
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(e.body_text())
    } else {
        ApiError::invalid_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// The media type without parameters, lower case: `image/JPEG; x=y` is `image/jpeg`.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// POST /upload: the fields, then the file, streamed to a temporary file in the store and
/// never held in memory; 204 once it is stored and queued for processing.
///
/// Until the form's signature is checked, at most [`FORM_SLACK`] bytes are read: a preamble
/// or part header that never ends is cut there, whether the body declares its length or is
/// chunked. Past the signature, the form's own size limit applies.
async fn upload(State(state): State<TransferState>, request: Request) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return ApiError::payload_too_large(format!(
            "the body is over the server's limit of {} bytes",
            state.max_body
        ))
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let meter = Meter::new(FORM_SLACK, state.max_body);
    let body = meter.wrap(body);
    let mut multipart = match Multipart::from_request(Request::from_parts(parts, body), &()).await {
        Ok(m) => m,
        Err(e) => {
            return ApiError::invalid_request(format!(
                "the body must be multipart/form-data: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    let result = receive(&state, &meter, &mut multipart).await;
    if result.is_err()
        && meter.cut().is_none()
        && let Some(n) = declared.filter(|&n| n <= DRAIN_MAX_BYTES)
    {
        meter.allow(n, n);
        let _ = tokio::time::timeout(DRAIN_TIME, drain(&mut multipart)).await;
    }
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

async fn receive(
    state: &TransferState,
    meter: &Meter,
    multipart: &mut Multipart,
) -> Result<(), ApiError> {
    let mut fields = BTreeMap::new();
    loop {
        let Some(mut field) = parse(meter, multipart.next_field()).await? else {
            return Err(ApiError::invalid_request(
                "the form has no `file` field (send the fields first, then the file)",
            ));
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let form = state
                .presigner
                .verify_form(&fields, Utc::now())
                .map_err(refused)?;
            // Now the form's own limit, with room for the framing already read.
            meter.allow(
                meter.read().saturating_add(READ_AHEAD),
                form.max_bytes.saturating_add(FORM_SLACK),
            );
            return store_file(state, meter, form, field).await;
        }
        if !valid_field_name(&name) {
            return Err(ApiError::invalid_request(
                "a form field has an empty or unexpected name",
            ));
        }
        if fields.len() >= MAX_FIELDS {
            return Err(ApiError::invalid_request("too many form fields"));
        }
        let mut value = Vec::new();
        while let Some(chunk) = parse(meter, field.chunk()).await? {
            if value.len() + chunk.len() > MAX_FIELD_BYTES {
                return Err(ApiError::invalid_request(format!(
                    "form field `{name}` is over {MAX_FIELD_BYTES} bytes"
                )));
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value).map_err(|_| {
            ApiError::invalid_request(format!("form field `{name}` is not UTF-8 text"))
        })?;
        if fields.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid_request(format!(
                "form field `{name}` is given twice"
            )));
        }
    }
}

async fn store_file(
    state: &TransferState,
    meter: &Meter,
    form: VerifiedForm,
    mut field: Field<'_>,
) -> Result<(), ApiError> {
    // The part's own type, when the client gives one (browsers do, from the file name), must
    // be the one signed: S3 checks the Content-Type field the same way.
    if let Some(part_type) = field.content_type()
        && essence(part_type) != essence(&form.content_type)
    {
        return Err(ApiError::unsupported_media_type(format!(
            "the file is sent as `{}` but the form is for `{}`",
            echo(part_type),
            form.content_type
        )));
    }
    if state.store.path_of(&form.key).is_err() || !form.key.starts_with("uploads/") {
        return Err(forbidden(
            "InvalidKey",
            "the form's key is not an upload key",
        ));
    }
    if state.store.head(&form.key).await.is_ok() {
        return Err(already_uploaded());
    }
    // Validate would discard the file of a deleted image anyway; saying so now spares the
    // client the upload.
    if let Some(id) = form.metadata.get(pipeline::FORM_METADATA) {
        match state.metadata.get(id).await.map_err(ApiError::from)? {
            None => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "ImageDeleted",
                    "the image this form was for has been deleted; ask for a new form",
                ));
            }
            Some(record) if record.status != Status::AwaitingUpload => {
                return Err(already_uploaded());
            }
            Some(_) => {}
        }
    }
    let store = state.store.clone();
    let tmp = tokio::task::spawn_blocking(move || store.temp_file())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?;
    let file = tmp.as_file().try_clone().map_err(ApiError::internal)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut size: u64 = 0;
    while let Some(chunk) = parse(meter, field.chunk()).await? {
        meter.advance(chunk.len() as u64);
        size += chunk.len() as u64;
        if size > form.max_bytes {
            return Err(ApiError::payload_too_large(format!(
                "the file is over the {} bytes this form allows",
                form.max_bytes
            )));
        }
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::invalid_request("the file is empty"));
    }
    // A place in the queue only once the whole file is here, so a client that stalls holds
    // none; without one, the temporary file goes and the client retries with the same form.
    let Some(slot) = state.queue.try_reserve() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "the processing queue is full; retry the same upload after Retry-After seconds \
             (nothing was kept)",
        ));
    };
    let store = state.store.clone();
    let key = form.key.clone();
    let metadata = form.metadata;
    // Only if no other post of this form got there first: each form takes one upload, even
    // when several posts of it run at once.
    let etag = tokio::task::spawn_blocking(move || store.persist_new(&key, tmp, &metadata))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)?
        .ok_or_else(already_uploaded)?;
    tracing::info!(key = %form.key, size, "upload stored");
    // What an S3 drop gives the state machine.
    slot.send(Upload {
        key: form.key,
        size: Some(size),
        etag: Some(etag),
        ..Upload::default()
    });
    Ok(())
}

/// A step of the multipart parser, with the meter's verdict when the body was cut or the
/// parser needs more than the meter lets it read (the fields before the file are over
/// [`FORM_SLACK`]).
async fn parse<T>(
    meter: &Meter,
    step: impl Future<Output = Result<T, MultipartError>>,
) -> Result<T, ApiError> {
    let outcome = tokio::select! {
        biased;
        outcome = step => outcome,
        () = meter.blocked() => {
            return Err(ApiError::payload_too_large(format!(
                "the form's fields and the file's part header are over {FORM_SLACK} bytes"
            )));
        }
    };
    outcome.map_err(|e| match meter.cut() {
        Some(Cut::OverLimit) => ApiError::payload_too_large(format!(
            "the body is over what its form allows: the file's declared bytes and \
             {FORM_SLACK} bytes for the fields"
        )),
        Some(Cut::Stalled) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "the upload sent nothing for {} s; send the form again",
                BODY_IDLE.as_secs()
            ),
        ),
        Some(Cut::TooSlow) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "the upload came in slower than {} KiB/s; send the form again",
                MIN_RATE / 1024
            ),
        ),
        None => multipart_error(e),
    })
}

fn already_uploaded() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "AlreadyUploaded",
        "this form has been used already: each form takes one upload",
    )
}

#[derive(Deserialize)]
struct DownloadParams {
    expires: Option<String>,
    signature: Option<String>,
}

/// GET /download/{key}?expires&signature: a rendition's bytes, streamed.
async fn download(
    State(state): State<TransferState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<DownloadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(key)) = path else {
        return Err(ApiError::not_found("no such object"));
    };
    let Ok(Query(params)) = query else {
        return Err(forbidden("SignatureDoesNotMatch", "malformed download URL"));
    };
    if !key.starts_with(DOWNLOADABLE_PREFIX) {
        return Err(forbidden(
            "AccessDenied",
            "only renditions can be downloaded",
        ));
    }
    let (Some(expires), Some(signature)) = (params.expires, params.signature) else {
        return Err(forbidden(
            "SignatureDoesNotMatch",
            "a download URL needs `expires` and `signature`",
        ));
    };
    let expires: i64 = expires
        .parse()
        .map_err(|_| forbidden("SignatureDoesNotMatch", "malformed download URL"))?;
    state
        .presigner
        .verify_download(&key, expires, &signature, Utc::now())
        .map_err(refused_download)?;
    let info = state.store.head(&key).await.map_err(|e| match e {
        pipeline::PortError::NotFound(_) => ApiError::not_found("no such object"),
        e => ApiError::from(e),
    })?;
    // An original `imgpipe process` kept by reference is read from where it lies.
    let path = state.store.file_of(&key).map_err(ApiError::from)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found("no such object"));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let stream = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let content_type = info
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::try_from(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    // Renditions never change, but the URL is only good until it expires.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=900"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// Client text quoted back in a message, bounded.
fn echo(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_essence() {
        assert_eq!(essence("image/JPEG; charset=x"), "image/jpeg");
        assert_eq!(essence(" image/png "), "image/png");
    }
}
