//! The routes over in-memory ports: status codes, bodies, headers and what each route leaves
//! in the stores. Callers carry local tokens verified by the real `JwtAuth`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::{JwtAuth, issue_local_token};
use api::{ApiState, Presigner, UploadForm, UploadRequest, router};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use chrono::{TimeZone, Utc};
use http::{HeaderMap, Method, Request, StatusCode, header};
use imaging::Format;
use pipeline::PortError;
use pipeline::memory::{Fault, Flaky, MemoryMetadata, MemoryObjectStore};
use pipeline::model::{
    ErrorInfo, ImageRecord, ListQuery, Page, RenditionRecord, SourceInfo, Status,
};
use pipeline::ports::{Begin, IfAbsent, MetadataStore, ObjectStore};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"route-test-secret";

/// Records what it was asked for and hands out recognisable URLs.
#[derive(Default)]
struct FakePresigner {
    uploads: Mutex<Vec<UploadRequest>>,
    fail: bool,
}

#[async_trait]
impl Presigner for FakePresigner {
    async fn upload(&self, request: &UploadRequest) -> Result<UploadForm, PortError> {
        if self.fail {
            return Err(PortError::Transient("signer offline".into()));
        }
        self.uploads.lock().unwrap().push(request.clone());
        Ok(UploadForm {
            url: "https://uploads.example.test/".into(),
            fields: BTreeMap::from([
                ("key".to_string(), request.key.clone()),
                ("Content-Type".to_string(), request.content_type.clone()),
            ]),
            expires_at: request.expires_at,
        })
    }

    async fn download(&self, key: &str, expires_in: Duration) -> Result<String, PortError> {
        Ok(format!(
            "https://downloads.example.test/{key}?expires={}",
            expires_in.as_secs()
        ))
    }
}

struct Harness {
    app: Router,
    metadata: Arc<MemoryMetadata>,
    uploads: Arc<MemoryObjectStore>,
    renditions: Arc<MemoryObjectStore>,
    presigner: Arc<FakePresigner>,
}

struct Options {
    max_bytes: u64,
    presigner_fails: bool,
    /// Wraps the stores, e.g. to inject faults.
    metadata: Option<Arc<dyn MetadataStore>>,
    uploads: Option<Arc<dyn ObjectStore>>,
    forms: api::FormLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: 10 * 1024 * 1024,
            presigner_fails: false,
            metadata: None,
            uploads: None,
            forms: api::FormLimits::default(),
        }
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Options::default())
    }

    fn with(options: Options) -> Harness {
        let metadata = Arc::new(MemoryMetadata::new());
        let uploads = Arc::new(MemoryObjectStore::new());
        let renditions = Arc::new(MemoryObjectStore::new());
        let presigner = Arc::new(FakePresigner {
            fail: options.presigner_fails,
            ..FakePresigner::default()
        });
        let mut config = pipeline::Config::default();
        config.limits.max_bytes = options.max_bytes;
        let state = ApiState {
            metadata: options.metadata.unwrap_or_else(|| metadata.clone()),
            uploads: options.uploads.unwrap_or_else(|| uploads.clone()),
            renditions: renditions.clone(),
            presigner: presigner.clone(),
            auth: Arc::new(JwtAuth::new().with_local(SECRET)),
            config: Arc::new(config),
            forms: Arc::new(api::FormThrottle::new(options.forms)),
            reprocessor: Arc::new(api::reprocess::NotConfigured),
            transforms: Default::default(),
        };
        Harness {
            app: router(state),
            metadata,
            uploads,
            renditions,
            presigner,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        if status.is_client_error() || status.is_server_error() {
            assert_error_shape(status, &headers, &body);
        }
        (status, headers, body)
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(user) = user {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token(user)));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    async fn get(&self, uri: &str, user: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::GET, uri, Some(user), None).await
    }

    async fn upload(&self, user: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::POST, "/v1/uploads", Some(user), Some(body))
            .await
    }

    /// A processed image of `owner`, with its original, a quarantine copy and renditions in
    /// the stores.
    async fn seed(&self, owner: &str, id: &str, minute: u32, status: Status, tags: &[&str]) {
        let source_key = format!("uploads/{owner}/{id}/photo.jpg");
        self.uploads
            .insert(&source_key, b"jpeg bytes".to_vec(), BTreeMap::new());
        let renditions: Vec<RenditionRecord> = ["thumb", "large"]
            .iter()
            .map(|name| {
                let key = format!("renditions/{owner}/{id}/{name}.webp");
                self.renditions
                    .insert(&key, b"webp bytes".to_vec(), BTreeMap::new());
                RenditionRecord {
                    name: name.to_string(),
                    key,
                    format: Format::Webp,
                    width: 256,
                    height: 256,
                    bytes: 10,
                    ms: 3,
                    quality: None,
                    score: None,
                    placeholder: None,
                    dominant_color: None,
                }
            })
            .collect();
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, minute, 0).unwrap();
        let record = ImageRecord {
            derived: Vec::new(),
            id: id.to_string(),
            owner: owner.to_string(),
            status,
            source: SourceInfo {
                focal_point: None,
                alpha: None,
                key: source_key,
                etag: None,
                bytes: 10,
                format: Some(Format::Jpeg),
                width: Some(800),
                height: Some(600),
                sha256: None,
                color_profile: None,
                original: None,
            },
            recipe: None,
            renditions,
            error: None,
            created_at: at,
            updated_at: at,
            execution_id: Some(format!("exec-{id}")),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            preset: None,
            reprocessed_at: None,
        };
        assert!(matches!(
            self.metadata.begin(&record).await.unwrap(),
            Begin::Started(_)
        ));
    }

    async fn record(&self, id: &str) -> Option<ImageRecord> {
        self.metadata.get(id).await.unwrap()
    }
}

/// `admin:name` is an admin, anything else a plain user.
fn token(user: &str) -> String {
    let (sub, admin) = match user.strip_prefix("admin:") {
        Some(sub) => (sub, true),
        None => (user, false),
    };
    issue_local_token(SECRET, sub, admin, Duration::from_secs(300))
}

fn assert_error_shape(status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json",
        "{status}: {body}"
    );
    let object = body.as_object().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(object.len(), 2, "only error and message: {body}");
    assert!(object["error"].is_string() && object["message"].is_string());
}

fn upload_body() -> Value {
    json!({"filename": "photo.jpg", "contentType": "image/jpeg", "bytes": 12345})
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn health_and_presets_need_no_token() {
    let h = Harness::new();
    let (status, _, body) = h.call(Method::GET, "/health", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    // The body limit is the upload route's; a body elsewhere is ignored.
    let request = Request::get("/health")
        .body(Body::from(vec![b'x'; 100 * 1024]))
        .unwrap();
    let (status, _, _) = h.send(request).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body) = h.call(Method::GET, "/v1/presets", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["default"], "web");
    let web = &body["presets"]["web"]["renditions"];
    assert_eq!(web[0]["name"], "thumb");
    assert_eq!(web[0]["resize"]["width"], 256);
    assert!(body["presets"]["archive"].is_object());
}

#[tokio::test]
async fn upload_creates_an_awaiting_record_and_asks_for_a_form() {
    let h = Harness::new();
    let mut body = upload_body();
    body["tags"] = json!([" Beach", "summer:2024", "beach", "no spaces"]);
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let id = body["imageId"].as_str().unwrap();
    let key = format!("uploads/alice/{id}/photo.jpg");
    assert_eq!(body["key"], key.as_str());
    assert_eq!(body["status"], "AWAITING_UPLOAD");
    assert_eq!(body["upload"]["url"], "https://uploads.example.test/");
    assert_eq!(body["upload"]["fields"]["key"], key.as_str());
    assert!(body["upload"]["expiresAt"].is_string());

    let record = h.record(id).await.unwrap();
    assert_eq!(record.status, Status::AwaitingUpload);
    assert_eq!(record.owner, "alice");
    assert_eq!(record.source.key, key);
    assert_eq!(record.source.bytes, 12345);
    assert_eq!(record.tags, ["beach", "summer:2024"]);
    let web = pipeline::Presets::builtin().get("web").unwrap().clone();
    assert_eq!(record.recipe, Some(web));

    let asked = h.presigner.uploads.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let form = &asked[0];
    assert_eq!(form.key, key);
    assert_eq!(form.content_type, "image/jpeg");
    assert_eq!(
        form.max_bytes, 12345,
        "the declared size, not the global limit"
    );
    assert_eq!(
        form.metadata,
        BTreeMap::from([
            ("form".to_string(), id.to_string()),
            ("preset".to_string(), "web".to_string()),
            ("tags".to_string(), "beach,summer:2024".to_string()),
        ])
    );
    let ttl = form.expires_at - Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(14) && ttl <= chrono::Duration::minutes(15),
        "{ttl}"
    );
}

#[tokio::test]
async fn upload_forms_are_limited_per_user_with_retry_after() {
    // The rate: three a minute, then 429 until the bucket refills.
    let h = Harness::with(Options {
        forms: api::FormLimits {
            per_minute: 3,
            open: 0,
        },
        ..Options::default()
    });
    for _ in 0..3 {
        let (status, _, body) = h.upload("alice", upload_body()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = h.upload("alice", upload_body()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "TooManyRequests");
    let after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&after), "{after}");
    // Refused requests create nothing, and other users are not affected.
    assert_eq!(h.presigner.uploads.lock().unwrap().len(), 3);
    let (status, _, _) = h.upload("bob", upload_body()).await;
    assert_eq!(status, StatusCode::CREATED);
    // A request the API refuses anyway does not use up the rate.
    let mut bad = upload_body();
    bad["contentType"] = json!("text/html");
    let (status, _, _) = h.upload("bob", bad).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Open forms: counted in the store, so they hold across processes; a form whose file
    // has arrived no longer counts.
    let h = Harness::with(Options {
        forms: api::FormLimits {
            per_minute: 0,
            open: 2,
        },
        ..Options::default()
    });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = h.upload("alice", upload_body()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["imageId"].as_str().unwrap().to_string());
    }
    let (status, headers, body) = h.upload("alice", upload_body()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("2 upload forms are open"),
        "{body}"
    );
    let after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((14 * 60..=15 * 60).contains(&after), "{after}");
    let mut record = h.record(&ids[0]).await.unwrap();
    record.execution_id = Some("e1".into());
    record.status = Status::Processing;
    h.metadata.begin(&record).await.unwrap();
    let (status, _, body) = h.upload("alice", upload_body()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn upload_with_a_preset_or_a_recipe_carries_it_as_metadata() {
    let h = Harness::new();
    let mut body = upload_body();
    body["preset"] = json!("thumbnail");
    let (status, _, created) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let recipe =
        json!({"renditions": [{"name": "small", "resize": {"width": 100}, "format": "png"}]});
    let mut body = upload_body();
    body["recipe"] = recipe.clone();
    let (status, _, created2) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created2}");

    let asked = h.presigner.uploads.lock().unwrap().clone();
    assert_eq!(asked[0].metadata["preset"], "thumbnail");
    assert!(!asked[0].metadata.contains_key("tags"));
    let carried: pipeline::Recipe = serde_json::from_str(&asked[1].metadata["recipe"]).unwrap();
    let sent: pipeline::Recipe = serde_json::from_value(recipe).unwrap();
    assert_eq!(carried, sent);
    assert!(!asked[1].metadata["recipe"].contains(' '), "compact JSON");
    let record = h
        .record(created2["imageId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(record.recipe, Some(sent));
}

#[tokio::test]
async fn upload_file_names_are_sanitised_into_the_key() {
    let h = Harness::new();
    let mut body = upload_body();
    body["filename"] = json!("../../etc/pass wd.jpg");
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["imageId"].as_str().unwrap();
    assert_eq!(
        body["key"],
        format!("uploads/alice/{id}/pass_wd.jpg").as_str()
    );
}

#[tokio::test]
async fn upload_refuses_content_types_that_are_not_images() {
    let h = Harness::new();
    let mut body = upload_body();
    body["contentType"] = json!("image/svg+xml");
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"], "UnsupportedMediaType");
    assert!(body["message"].as_str().unwrap().contains("image/svg+xml"));
    assert!(
        h.metadata
            .list(&ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn upload_refuses_more_bytes_than_the_limit() {
    let h = Harness::with(Options {
        max_bytes: 1000,
        ..Options::default()
    });
    let mut body = upload_body();
    body["bytes"] = json!(1001);
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "PayloadTooLarge");
    assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");

    let mut zero = upload_body();
    zero["bytes"] = json!(0);
    let (status, _, body) = h.upload("alice", zero).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("bytes:"));
    assert!(h.presigner.uploads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upload_refuses_unknown_fields_by_name() {
    let h = Harness::new();
    let mut body = upload_body();
    body["colour"] = json!("red");
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRequest");
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );

    let (status, _, body) = h.upload("alice", json!({"filename": "a.jpg"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("contentType"),
        "{body}"
    );

    let mut null_recipe = upload_body();
    null_recipe["recipe"] = Value::Null;
    let (status, _, _) = h.upload("alice", null_recipe).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upload_refuses_bad_recipes_naming_the_field() {
    let h = Harness::new();
    let mut body = upload_body();
    body["recipe"] = json!({"renditions": [
        {"name": "a", "resize": {"width": 10}},
        {"name": "b", "resize": {"width": 0}}
    ]});
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRecipe");
    assert_eq!(
        body["message"],
        "renditions[1].resize.width: must be 1..=16384"
    );

    let mut body = upload_body();
    body["recipe"] = json!({"renditions": [{"name": "a", "colour": "red"}]});
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidRecipe"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );

    let mut body = upload_body();
    body["recipe"] = json!({"renditions": [{"name": "a", "quality": null}]});
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRecipe");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("renditions[0].quality: must not be null"),
        "{body}"
    );

    let mut body = upload_body();
    body["preset"] = json!("nope");
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRecipe");
    assert!(
        body["message"].as_str().unwrap().starts_with("preset:"),
        "{body}"
    );

    let mut body = upload_body();
    body["preset"] = json!("web");
    body["recipe"] = json!({"renditions": [{"name": "a"}]});
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRequest");

    // A valid recipe too large to travel as S3 object metadata (over 2 KiB even as compact
    // JSON: 16 renditions of about 140 bytes).
    let renditions: Vec<Value> = (0..16)
        .map(|i| json!({"name": format!("rendition-with-a-long-name-{i:02}"), "resize": {"width": 100 + i}, "operations": [{"op": "blur", "sigma": 1.5}, {"op": "sharpen", "sigma": 1.0}]}))
        .collect();
    let mut body = upload_body();
    body["recipe"] = json!({"renditions": renditions});
    let (status, _, body) = h.upload("alice", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("recipe:"),
        "{body}"
    );
    assert!(
        h.metadata
            .list(&ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn upload_bodies_that_are_not_json_are_json_errors() {
    let h = Harness::new();
    let request = |content_type: Option<&str>, body: Body| {
        let mut r = Request::post("/v1/uploads")
            .header(header::AUTHORIZATION, format!("Bearer {}", token("alice")));
        if let Some(ct) = content_type {
            r = r.header(header::CONTENT_TYPE, ct);
        }
        r.body(body).unwrap()
    };
    let (status, _, body) = h
        .send(request(None, Body::from(upload_body().to_string())))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let (status, _, _) = h
        .send(request(Some("text/plain"), Body::from("hello")))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, body) = h
        .send(request(
            Some("application/json"),
            Body::from("{\"filename\":"),
        ))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidRequest"))
    );
    let (status, _, _) = h
        .send(request(
            Some("application/json; charset=utf-8"),
            Body::from("[1,2]"),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Over the body limit, with and without a Content-Length up front.
    let huge = format!("{{\"filename\":\"{}\"}}", "a".repeat(70 * 1024));
    let (status, _, body) = h
        .send(request(Some("application/json"), Body::from(huge.clone())))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let stream = futures_stream(huge.into_bytes());
    let (status, _, body) = h.send(request(Some("application/json"), stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

/// A body of unknown length, as a chunked upload would be.
fn futures_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn a_failing_presigner_leaves_no_record_behind() {
    let h = Harness::with(Options {
        presigner_fails: true,
        ..Options::default()
    });
    let (status, headers, body) = h.upload("alice", upload_body()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        h.metadata
            .list(&ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn get_returns_the_record_with_rendition_urls() {
    let h = Harness::new();
    h.seed("alice", "img1", 0, Status::Complete, &["beach"])
        .await;
    let (status, _, body) = h.get("/v1/images/img1", "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "img1");
    assert_eq!(body["owner"], "alice");
    assert_eq!(body["status"], "COMPLETE");
    assert_eq!(body["source"]["key"], "uploads/alice/img1/photo.jpg");
    assert_eq!(body["createdAt"], "2024-05-01T12:00:00Z");
    assert_eq!(body["tags"], json!(["beach"]));
    let renditions = body["renditions"].as_array().unwrap();
    assert_eq!(renditions.len(), 2);
    for r in renditions {
        let key = r["key"].as_str().unwrap();
        assert_eq!(
            r["url"],
            format!("https://downloads.example.test/{key}?expires=900").as_str()
        );
    }
}

#[tokio::test]
async fn another_users_image_is_not_found_but_admins_see_it() {
    let h = Harness::new();
    h.seed("alice", "img1", 0, Status::Complete, &[]).await;
    for (method, uri) in [
        (Method::GET, "/v1/images/img1"),
        (Method::GET, "/v1/images/img1/renditions/thumb"),
        (Method::DELETE, "/v1/images/img1"),
    ] {
        let (status, _, body) = h.call(method.clone(), uri, Some("bob"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(body["error"], "NotFound");
    }
    assert!(h.record("img1").await.is_some(), "bob deleted nothing");
    let (status, _, body) = h.get("/v1/images/img1", "admin:root").await;
    assert_eq!(
        (status, body["owner"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    let (status, _, _) = h
        .get("/v1/images/img1/renditions/large", "admin:root")
        .await;
    assert_eq!(status, StatusCode::FOUND);
}

#[tokio::test]
async fn listing_is_newest_first_and_pages_with_a_cursor() {
    let h = Harness::new();
    for (i, id) in ["a1", "a2", "a3", "a4", "a5"].iter().enumerate() {
        h.seed("alice", id, i as u32, Status::Complete, &[]).await;
    }
    h.seed("bob", "b1", 10, Status::Complete, &[]).await;

    let (status, _, page1) = h.get("/v1/images?limit=2", "alice").await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(ids(&page1), ["a5", "a4"]);
    let cursor = page1["cursor"].as_str().unwrap();
    let (_, _, page2) = h
        .get(&format!("/v1/images?limit=2&cursor={cursor}"), "alice")
        .await;
    assert_eq!(ids(&page2), ["a3", "a2"]);
    let cursor = page2["cursor"].as_str().unwrap();
    let (_, _, page3) = h
        .get(&format!("/v1/images?limit=2&cursor={cursor}"), "alice")
        .await;
    assert_eq!(ids(&page3), ["a1"]);
    assert_eq!(page3["cursor"], Value::Null, "last page: cursor is null");

    let (_, _, all) = h.get("/v1/images", "alice").await;
    assert_eq!(ids(&all), ["a5", "a4", "a3", "a2", "a1"]);
    assert_eq!(all["cursor"], Value::Null);
}

#[tokio::test]
async fn listing_filters_by_status_tag_and_time() {
    let h = Harness::new();
    h.seed("alice", "c1", 1, Status::Complete, &["beach"]).await;
    h.seed("alice", "f1", 2, Status::Failed, &["beach", "night"])
        .await;
    h.seed("alice", "c2", 3, Status::Complete, &["night"]).await;

    let (_, _, body) = h.get("/v1/images?status=COMPLETE", "alice").await;
    assert_eq!(ids(&body), ["c2", "c1"]);
    let (_, _, body) = h.get("/v1/images?tag=beach", "alice").await;
    assert_eq!(ids(&body), ["f1", "c1"]);
    let (_, _, body) = h.get("/v1/images?tag=Night&status=FAILED", "alice").await;
    assert_eq!(ids(&body), ["f1"]);
    let (_, _, body) = h
        .get(
            "/v1/images?since=2024-05-01T12:02:00Z&until=2024-05-01T14:03:00%2B02:00",
            "alice",
        )
        .await;
    assert_eq!(ids(&body), ["f1"], "since inclusive, until exclusive");
}

#[tokio::test]
async fn admins_list_everyone_and_may_narrow_to_an_owner() {
    let h = Harness::new();
    h.seed("alice", "a1", 1, Status::Complete, &[]).await;
    h.seed("bob", "b1", 2, Status::Complete, &[]).await;
    let (_, _, body) = h.get("/v1/images", "admin:root").await;
    assert_eq!(ids(&body), ["b1", "a1"]);
    let (_, _, body) = h.get("/v1/images?owner=alice", "admin:root").await;
    assert_eq!(ids(&body), ["a1"]);
    // For everyone else `owner` only narrows their own images.
    let (status, _, body) = h.get("/v1/images?owner=alice", "bob").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"items": [], "cursor": null}));
    let (_, _, body) = h.get("/v1/images?owner=bob", "bob").await;
    assert_eq!(ids(&body), ["b1"]);
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_them() {
    let h = Harness::new();
    for (query, name) in [
        ("status=DONE", "status"),
        ("status=complete", "status"),
        ("since=yesterday", "since"),
        ("until=2024-05-01", "until"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("owner=..", "owner"),
        ("colour=red", "colour"),
        ("tag=", "tag"),
    ] {
        let (status, _, body) = h.get(&format!("/v1/images?{query}"), "alice").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "InvalidRequest", "{query}");
        assert!(
            body["message"].as_str().unwrap().contains(name),
            "{query}: {body}"
        );
    }
}

/// The in-memory store with the cursor check of the SQLite and DynamoDB stores.
struct StrictCursors(MemoryMetadata);

#[async_trait]
impl MetadataStore for StrictCursors {
    async fn create_awaiting(
        &self,
        record: &ImageRecord,
        expires_at: chrono::DateTime<Utc>,
    ) -> Result<bool, PortError> {
        self.0.create_awaiting(record, expires_at).await
    }
    async fn begin(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.0.begin(record).await
    }
    async fn claim(&self, record: &ImageRecord) -> Result<Begin, PortError> {
        self.0.claim(record).await
    }
    async fn get(&self, id: &str) -> Result<Option<ImageRecord>, PortError> {
        self.0.get(id).await
    }
    async fn check(&self) -> Result<(), PortError> {
        self.0.check().await
    }
    async fn put_rendition(&self, id: &str, r: &RenditionRecord) -> Result<(), PortError> {
        self.0.put_rendition(id, r).await
    }
    async fn complete(&self, id: &str, sha256: Option<&str>) -> Result<(), PortError> {
        self.0.complete(id, sha256).await
    }
    async fn fail(
        &self,
        id: &str,
        status: Status,
        error: &ErrorInfo,
        fallback: &ImageRecord,
        if_absent: IfAbsent,
    ) -> Result<(), PortError> {
        self.0.fail(id, status, error, fallback, if_absent).await
    }
    async fn mark_announced(&self, id: &str, execution_id: &str) -> Result<bool, PortError> {
        self.0.mark_announced(id, execution_id).await
    }
    async fn unmark_announced(&self, id: &str, execution_id: &str) -> Result<(), PortError> {
        self.0.unmark_announced(id, execution_id).await
    }
    async fn begin_reprocess(&self, id: &str, execution_id: &str) -> Result<Begin, PortError> {
        self.0.begin_reprocess(id, execution_id).await
    }
    async fn end_reprocess(
        &self,
        id: &str,
        execution_id: &str,
        done: Option<&pipeline::ports::Rerendered>,
    ) -> Result<bool, PortError> {
        self.0.end_reprocess(id, execution_id, done).await
    }
    async fn put_derived(
        &self,
        id: &str,
        derived: &pipeline::model::DerivedRendition,
        max: usize,
    ) -> Result<pipeline::ports::PutDerived, PortError> {
        self.0.put_derived(id, derived, max).await
    }
    async fn hit_derived(&self, id: &str, params: &str) -> Result<(), PortError> {
        self.0.hit_derived(id, params).await
    }
    async fn set_focal_point(
        &self,
        id: &str,
        point: Option<imaging::FocalPoint>,
    ) -> Result<bool, PortError> {
        self.0.set_focal_point(id, point).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, PortError> {
        if query
            .cursor
            .as_deref()
            .is_some_and(|c| c.starts_with("bogus"))
        {
            return Err(PortError::Permanent(
                "cursor: not a cursor this server issued".into(),
            ));
        }
        self.0.list(query).await
    }
    async fn delete(&self, id: &str) -> Result<bool, PortError> {
        self.0.delete(id).await
    }
}

#[tokio::test]
async fn a_cursor_the_store_refuses_is_400_invalid_cursor() {
    let h = Harness::with(Options {
        metadata: Some(Arc::new(StrictCursors(MemoryMetadata::new()))),
        ..Options::default()
    });
    let (status, _, body) = h.get("/v1/images?cursor=bogus123", "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidCursor");
    let long = "x".repeat(5000);
    let (status, _, body) = h.get(&format!("/v1/images?cursor={long}"), "alice").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidCursor"))
    );
}

#[tokio::test]
async fn renditions_redirect_to_a_presigned_url() {
    let h = Harness::new();
    h.seed("alice", "img1", 0, Status::Complete, &[]).await;
    let (status, headers, body) = h.get("/v1/images/img1/renditions/thumb", "alice").await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        "https://downloads.example.test/renditions/alice/img1/thumb.webp?expires=900"
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(body, Value::Null);

    for uri in [
        "/v1/images/img1/renditions/medium",
        "/v1/images/img1/renditions/Thumb",
        "/v1/images/nope/renditions/thumb",
        "/v1/images/.hidden/renditions/thumb",
    ] {
        let (status, _, body) = h.get(uri, "alice").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["error"], "NotFound");
    }
}

#[tokio::test]
async fn delete_removes_original_quarantine_renditions_and_record() {
    let h = Harness::new();
    h.seed("alice", "img1", 0, Status::Complete, &[]).await;
    h.uploads.insert(
        "quarantine/alice/img1/photo.jpg",
        b"bad".to_vec(),
        BTreeMap::new(),
    );
    h.uploads.insert(
        "quarantine/alice/img1/photo.jpg.reason.json",
        b"{}".to_vec(),
        BTreeMap::new(),
    );
    // A rendition stored without reaching the record.
    h.renditions.insert(
        "renditions/alice/img1/orphan.jpg",
        b"x".to_vec(),
        BTreeMap::new(),
    );
    // Someone else's image with a similar prefix stays.
    h.seed("alice", "img10", 1, Status::Complete, &[]).await;

    let (status, _, body) = h
        .call(Method::DELETE, "/v1/images/img1", Some("alice"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null);
    assert!(h.record("img1").await.is_none());
    assert_eq!(h.uploads.keys(), ["uploads/alice/img10/photo.jpg"]);
    assert_eq!(
        h.renditions.keys(),
        [
            "renditions/alice/img10/large.webp",
            "renditions/alice/img10/thumb.webp"
        ]
    );

    let (status, _, body) = h
        .call(Method::DELETE, "/v1/images/img1", Some("alice"), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );

    // An admin may delete anyone's image; afterwards the stores are empty.
    let (status, _, _) = h
        .call(Method::DELETE, "/v1/images/img10", Some("admin:root"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(h.uploads.keys().is_empty());
    assert!(h.renditions.keys().is_empty());
    assert!(
        h.metadata
            .list(&ListQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn store_failures_are_503_or_500_without_details() {
    let inner = Arc::new(MemoryObjectStore::new());
    let h = Harness::with(Options {
        uploads: Some(Arc::new(Flaky::new(
            inner.clone(),
            &["delete"],
            Fault::Transient(1),
        ))),
        ..Options::default()
    });
    h.seed("alice", "img1", 0, Status::Complete, &[]).await;
    let (status, headers, body) = h
        .call(Method::DELETE, "/v1/images/img1", Some("alice"), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("Unavailable"))
    );
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert!(
        h.record("img1").await.is_some(),
        "the record outlives a failed delete"
    );
    let (status, _, _) = h
        .call(Method::DELETE, "/v1/images/img1", Some("alice"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a repeated DELETE finishes the job"
    );

    let h = Harness::with(Options {
        uploads: Some(Arc::new(Flaky::new(inner, &["delete"], Fault::Permanent))),
        ..Options::default()
    });
    h.seed("alice", "img2", 0, Status::Complete, &[]).await;
    let (status, _, body) = h
        .call(Method::DELETE, "/v1/images/img2", Some("alice"), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("Internal"))
    );
    assert!(
        !body["message"].as_str().unwrap().contains("injected"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_routes_and_ids_are_404_json() {
    let h = Harness::new();
    for uri in [
        "/",
        "/v2/images",
        "/v1/images/img1/extra/x/y",
        "/v1/uploads/",
        "/health/",
    ] {
        let (status, _, body) = h.call(Method::GET, uri, Some("alice"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["error"], "NotFound");
    }
    for uri in [
        "/v1/images/nope",
        "/v1/images/.x",
        "/v1/images/a%20b",
        "/v1/images/%FF",
    ] {
        let (status, _, body) = h.get(uri, "alice").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_json_with_allow() {
    let h = Harness::new();
    for (method, uri) in [
        (Method::GET, "/v1/uploads"),
        (Method::POST, "/v1/images/img1"),
        (Method::PUT, "/v1/images"),
        (Method::DELETE, "/health"),
        (Method::POST, "/v1/presets"),
    ] {
        let (status, headers, body) = h.call(method.clone(), uri, Some("alice"), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(body["error"], "MethodNotAllowed");
        assert!(headers.contains_key(header::ALLOW), "{method} {uri}");
    }
}

#[tokio::test]
async fn routes_need_a_valid_token() {
    let h = Harness::new();
    for (method, uri) in [
        (Method::GET, "/v1/images"),
        (Method::GET, "/v1/images/img1"),
        (Method::GET, "/v1/images/img1/renditions/thumb"),
        (Method::DELETE, "/v1/images/img1"),
        (Method::POST, "/v1/uploads"),
    ] {
        let (status, headers, body) = h.call(method.clone(), uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(body["error"], "Unauthorized");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let forged = issue_local_token(b"wrong", "alice", true, Duration::from_secs(60));
    let request = Request::get("/v1/images")
        .header(header::AUTHORIZATION, format!("Bearer {forged}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = h.send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn reprocess_is_for_admins_checks_its_request_and_says_when_it_is_not_configured() {
    let h = Harness::new();
    let post = |user: &'static str, body: Value| {
        let h = &h;
        async move {
            h.call(Method::POST, "/v1/reprocess", Some(user), Some(body))
                .await
        }
    };
    let (status, _, body) = post("alice", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "Forbidden");
    let (status, _, _) = h.get("/v1/reprocess/01ABC", "alice").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (bad, field) in [
        (json!([null, null]), "object"),
        (json!({"preset": "nosuch"}), "nosuch"),
        (json!({"owner": "../x"}), "owner"),
        (
            json!({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
            "since",
        ),
        (json!({"color": "red"}), "color"),
    ] {
        let (status, _, body) = post("admin:root", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{bad}: {body}"
        );
    }
    // A valid request on a deployment without a Reprocess state machine: named, not faked.
    let (status, _, body) = post("admin:root", json!({"preset": "web"})).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert_eq!(body["error"], "NotImplemented");
}
