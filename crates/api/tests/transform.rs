//! On-demand transforms and signed links over in-memory ports, with real images: what is
//! rendered, stored, recorded and redirected to, and what is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::auth::{JwtAuth, issue_local_token};
use api::{ApiState, LinkKeys, Presigner, Transforms, UploadForm, UploadRequest, router};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use chrono::Utc;
use http::{HeaderMap, Method, Request, StatusCode, header};
use imaging::image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use imaging::{EncodeOptions, Format};
use pipeline::PortError;
use pipeline::memory::{MemoryMetadata, MemoryObjectStore};
use pipeline::model::{ImageRecord, SourceInfo, Status};
use pipeline::ports::{MetadataStore, ObjectStore};
use pipeline::transform::Policy;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"transform-test-secret";
const KEY_A: &str = "first-link-secret-of-thirty-two-bytes+";
const KEY_B: &str = "second-link-secret-of-thirty-two-bytes";

struct FakePresigner;

#[async_trait]
impl Presigner for FakePresigner {
    async fn upload(&self, _: &UploadRequest) -> Result<UploadForm, PortError> {
        Err(PortError::Permanent("not in these tests".into()))
    }
    async fn download(&self, key: &str, _: Duration) -> Result<String, PortError> {
        Ok(format!("https://downloads.example.test/{key}"))
    }
}

struct Harness {
    app: Router,
    metadata: Arc<MemoryMetadata>,
    uploads: Arc<MemoryObjectStore>,
    renditions: Arc<MemoryObjectStore>,
    transforms: Arc<Transforms>,
}

struct Options {
    policy: Policy,
    links: Option<&'static str>,
    max_pixels: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: Policy::default(),
            links: Some("k1"),
            max_pixels: 50_000_000,
        }
    }
}

fn link_keys(spec: &str) -> LinkKeys {
    let spec = spec
        .split(',')
        .map(|id| match id {
            "k1" => format!("k1={KEY_A}"),
            _ => format!("{id}={KEY_B}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    LinkKeys::parse(&spec).unwrap()
}

impl Harness {
    fn with(options: Options) -> Harness {
        let metadata = Arc::new(MemoryMetadata::new());
        let uploads = Arc::new(MemoryObjectStore::new());
        let renditions = Arc::new(MemoryObjectStore::new());
        let transforms = Arc::new(Transforms::new(
            options.policy,
            options.links.map(link_keys),
            Some("https://img.example.test".into()),
        ));
        let mut config = pipeline::Config::default();
        config.limits.max_pixels = options.max_pixels;
        let state = ApiState {
            metadata: metadata.clone(),
            uploads: uploads.clone(),
            renditions: renditions.clone(),
            presigner: Arc::new(FakePresigner),
            auth: Arc::new(JwtAuth::new().with_local(SECRET)),
            config: Arc::new(config),
            forms: Arc::new(api::FormThrottle::new(api::FormLimits::default())),
            reprocessor: Arc::new(api::reprocess::NotConfigured),
            transforms: transforms.clone(),
        };
        Harness {
            app: router(state),
            metadata,
            uploads,
            renditions,
            transforms,
        }
    }

    fn new() -> Harness {
        Harness::with(Options::default())
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn get(
        &self,
        uri: &str,
        user: Option<&str>,
        accept: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(Method::GET).uri(uri);
        if let Some(user) = user {
            request = request.header(header::AUTHORIZATION, format!("Bearer {}", token(user)));
        }
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, uri: &str, user: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", token(user)))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// A COMPLETE image of `owner` whose original is `bytes`.
    async fn seed(&self, owner: &str, id: &str, bytes: Vec<u8>, format: Format, status: Status) {
        let header = imaging::probe(&bytes, &imaging::Limits::default()).unwrap();
        let key = format!("uploads/{owner}/{id}/photo.{}", format.extension());
        let size = bytes.len() as u64;
        self.uploads.insert(&key, bytes, BTreeMap::new());
        let now = Utc::now();
        let record = ImageRecord {
            id: id.into(),
            owner: owner.into(),
            status,
            source: SourceInfo {
                focal_point: None,
                key,
                etag: None,
                bytes: size,
                format: Some(format),
                width: Some(header.width),
                height: Some(header.height),
                sha256: None,
                color_profile: None,
                original: None,
                alpha: Some(header.has_alpha),
            },
            recipe: None,
            renditions: Vec::new(),
            derived: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
            execution_id: Some("exec".into()),
            tags: Vec::new(),
            preset: None,
            reprocessed_at: None,
        };
        assert!(matches!(
            self.metadata.begin(&record).await.unwrap(),
            pipeline::ports::Begin::Started(_)
        ));
    }

    async fn record(&self, id: &str) -> ImageRecord {
        self.metadata.get(id).await.unwrap().unwrap()
    }

    /// The stored object a redirect points at, decoded.
    async fn followed(&self, headers: &HeaderMap) -> (String, DynamicImage, Format) {
        let location = headers[header::LOCATION].to_str().unwrap();
        let key = location
            .strip_prefix("https://downloads.example.test/")
            .unwrap()
            .to_string();
        let bytes = self.renditions.get(&key).await.unwrap();
        let format = imaging::sniff(&bytes).unwrap();
        let image = imaging::decode(&bytes, &imaging::Limits::default(), None).unwrap();
        (key, image, format)
    }
}

fn token(user: &str) -> String {
    let (sub, admin) = match user.strip_prefix("admin:") {
        Some(sub) => (sub, true),
        None => (user, false),
    };
    issue_local_token(SECRET, sub, admin, Duration::from_secs(300))
}

/// A 640x480 photo-like JPEG.
fn jpeg() -> Vec<u8> {
    let img = RgbImage::from_fn(640, 480, |x, y| {
        Rgb([
            (x * 255 / 639) as u8,
            (y * 255 / 479) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &DynamicImage::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..EncodeOptions::default()
        },
    )
    .unwrap()
}

/// A 200x100 PNG, transparent on its right half.
fn png_with_alpha() -> Vec<u8> {
    let img = RgbaImage::from_fn(200, 100, |x, _| {
        Rgba([200, 30, 30, if x < 100 { 255 } else { 0 }])
    });
    imaging::encode(
        &DynamicImage::ImageRgba8(img),
        &EncodeOptions {
            format: Format::Png,
            ..EncodeOptions::default()
        },
    )
    .unwrap()
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, error: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], error, "{body}");
}

#[tokio::test]
async fn a_transform_is_rendered_stored_and_recorded_once_then_redirected_to() {
    let h = Harness::new();
    h.seed("alice", "img1", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let uri = "/v1/images/img1/transform?w=320&fmt=webp";
    let (status, headers, body) = h.get(uri, Some("alice"), None).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(
        headers.get(header::VARY).is_none(),
        "a fixed format does not vary"
    );
    let (key, image, format) = h.followed(&headers).await;
    assert!(
        key.starts_with("renditions/alice/img1/t/") && key.ends_with(".webp"),
        "{key}"
    );
    assert_eq!(format, Format::Webp);
    assert_eq!((image.width(), image.height()), (320, 240));
    let record = h.record("img1").await;
    assert_eq!(record.derived.len(), 1);
    let d = &record.derived[0];
    assert_eq!(d.params, "w=320&fit=cover&gravity=center&fmt=webp");
    assert_eq!(
        (d.key.as_str(), d.width, d.height, d.hits),
        (key.as_str(), 320, 240, 1)
    );
    assert_eq!(
        d.bytes,
        h.renditions.object(&key).unwrap().body.len() as u64
    );
    assert_eq!(h.transforms.renders(), 1);

    // Asked again, and another way that normalises alike: found, not rendered.
    for uri in [uri, "/v1/images/img1/transform?fmt=WEBP&fit=cover&w=320"] {
        let (status, headers, _) = h.get(uri, Some("alice"), None).await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(h.followed(&headers).await.0, key);
    }
    assert_eq!(h.transforms.renders(), 1);
    // Hits are counted after the answer.
    for _ in 0..100 {
        if h.record("img1").await.derived[0].hits == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.record("img1").await.derived[0].hits, 3);
    // The image's GET lists it.
    let (_, _, body) = h.get("/v1/images/img1", Some("alice"), None).await;
    assert_eq!(body["derived"][0]["key"], key.as_str());

    // Deleting the image deletes what transforms made.
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/v1/images/img1")
        .header(header::AUTHORIZATION, format!("Bearer {}", token("alice")))
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(request).await.0, StatusCode::NO_CONTENT);
    assert!(h.renditions.object(&key).is_none());
}

#[tokio::test]
async fn fmt_auto_follows_accept_and_says_it_varies() {
    let h = Harness::new();
    h.seed("alice", "photo", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    h.seed(
        "alice",
        "logo",
        png_with_alpha(),
        Format::Png,
        Status::Complete,
    )
    .await;
    let best = if imaging::writes(Format::Avif) {
        Format::Avif
    } else {
        Format::Webp
    };
    let cases = [
        (
            "photo",
            Some("image/avif,image/webp,image/apng,*/*;q=0.8"),
            best,
        ),
        ("photo", Some("image/webp,*/*"), Format::Webp),
        ("photo", Some("*/*"), Format::Jpeg),
        ("photo", None, Format::Jpeg),
        ("logo", Some("*/*"), Format::Png),
        ("logo", Some("image/webp,*/*"), Format::Webp),
    ];
    for (id, accept, want) in cases {
        let uri = format!("/v1/images/{id}/transform?w=100&fmt=auto");
        let (status, headers, body) = h.get(&uri, Some("alice"), accept).await;
        assert_eq!(status, StatusCode::FOUND, "{id} {accept:?}: {body}");
        assert_eq!(headers[header::VARY], "Accept", "{id} {accept:?}");
        let (key, image, format) = h.followed(&headers).await;
        assert_eq!(format, want, "{id} {accept:?}");
        assert!(key.ends_with(want.extension()), "{key}");
        assert_eq!(image.width(), 100);
    }
    // Each format is its own stored rendition.
    let photo = h.record("photo").await;
    assert_eq!(
        photo.derived.len(),
        if best == Format::Webp { 2 } else { 3 }
    );
    // The transparent half stays transparent in PNG and WebP.
    let (status, headers, _) = h
        .get(
            "/v1/images/logo/transform?w=100&fmt=auto",
            Some("alice"),
            Some("*/*"),
        )
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let (_, image, _) = h.followed(&headers).await;
    let rgba = image.to_rgba8();
    assert_eq!(rgba.get_pixel(10, 25)[3], 255);
    assert_eq!(rgba.get_pixel(90, 25)[3], 0);
}

#[tokio::test]
async fn dpr_multiplies_and_the_allow_list_snaps_or_refuses() {
    let policy = Policy {
        widths: vec![120, 320, 640],
        strict: false,
    };
    let h = Harness::with(Options {
        policy: policy.clone(),
        ..Options::default()
    });
    h.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    // 100 x 2 = 200, snapped up to 320; the box keeps its shape (h 50 x 2 x 320/200 = 160).
    let (status, headers, body) = h
        .get(
            "/v1/images/img/transform?w=100&h=50&dpr=2&fmt=png",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    let (_, image, _) = h.followed(&headers).await;
    assert_eq!((image.width(), image.height()), (320, 160));
    // Larger than the source: never enlarged.
    let (_, headers, _) = h
        .get("/v1/images/img/transform?w=640&dpr=3", Some("alice"), None)
        .await;
    let (_, image, _) = h.followed(&headers).await;
    assert_eq!(image.width(), 640);

    let strict = Harness::with(Options {
        policy: Policy {
            strict: true,
            ..policy
        },
        ..Options::default()
    });
    strict
        .seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let (status, _, body) = strict
        .get("/v1/images/img/transform?w=300", Some("alice"), None)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "InvalidTransform");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("w: 300 pixels"), "{message}");
    assert!(message.contains("120, 320, 640"), "{message}");
    let (status, _, _) = strict
        .get("/v1/images/img/transform?w=160&dpr=2", Some("alice"), None)
        .await;
    assert_eq!(status, StatusCode::FOUND, "160 x 2 is on the list");
}

#[tokio::test]
async fn refusals_are_named() {
    let h = Harness::with(Options {
        max_pixels: 100_000,
        ..Options::default()
    });
    h.seed("alice", "big", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    h.seed("alice", "busy", jpeg(), Format::Jpeg, Status::Processing)
        .await;
    let cases = [
        (
            "/v1/images/big/transform?width=10",
            StatusCode::BAD_REQUEST,
            "InvalidTransform",
        ),
        (
            "/v1/images/big/transform?w=10&q=0",
            StatusCode::BAD_REQUEST,
            "InvalidTransform",
        ),
        (
            "/v1/images/big/transform?w=10&fit=squash",
            StatusCode::BAD_REQUEST,
            "InvalidTransform",
        ),
        // 640x480 is over this server's 100 000 pixels.
        (
            "/v1/images/big/transform?w=10",
            StatusCode::BAD_REQUEST,
            "ImageTooLarge",
        ),
        (
            "/v1/images/busy/transform?w=10",
            StatusCode::CONFLICT,
            "NotReady",
        ),
        (
            "/v1/images/nope/transform?w=10",
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
    ];
    for (uri, want, error) in cases {
        let (status, _, body) = h.get(uri, Some("alice"), None).await;
        assert_error(status, &body, want, error);
    }
    let (_, _, body) = h
        .get("/v1/images/big/transform?width=10", Some("alice"), None)
        .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `w`"),
        "{body}"
    );
    let (_, _, body) = h
        .get("/v1/images/big/transform?w=10", Some("alice"), None)
        .await;
    assert!(
        body["message"].as_str().unwrap().contains("100000"),
        "{body}"
    );
    // Another user's image is not found, for transforms and links alike; no token is 401.
    let (status, _, body) = h
        .get("/v1/images/big/transform?w=10", Some("bob"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");
    let (status, _, body) = h
        .post("/v1/images/big/links", "bob", json!({"params": "w=10"}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");
    let (status, _, _) = h.get("/v1/images/big/transform?w=10", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.transforms.renders(), 0);
    assert!(h.renditions.keys().is_empty());
}

#[tokio::test]
async fn identical_concurrent_requests_render_once() {
    let h = Arc::new(Harness::new());
    h.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let h = h.clone();
        tasks.spawn(async move {
            let (status, headers, _) = h
                .get(
                    "/v1/images/img/transform?w=200&fmt=avif",
                    Some("alice"),
                    None,
                )
                .await;
            (
                status,
                headers[header::LOCATION].to_str().unwrap().to_string(),
            )
        });
    }
    let mut locations = std::collections::BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (status, location) = done.unwrap();
        assert_eq!(status, StatusCode::FOUND);
        locations.insert(location);
    }
    assert_eq!(locations.len(), 1);
    assert_eq!(h.transforms.renders(), 1, "one render for 24 requests");
    assert_eq!(h.record("img").await.derived.len(), 1);
    assert_eq!(h.renditions.keys().len(), 1);
}

#[tokio::test]
async fn signed_links_work_without_a_token_until_changed_or_expired() {
    let h = Harness::new();
    h.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let (status, _, body) = h
        .post(
            "/v1/images/img/links",
            "alice",
            json!({"params": {"w": 300, "fmt": "auto"}, "expiresIn": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = body["path"].as_str().unwrap().to_string();
    assert_eq!(body["params"], "w=300&fmt=auto");
    assert_eq!(body["url"], format!("https://img.example.test{path}"));
    assert!(path.starts_with("/t/img/w=300&fmt=auto?exp="), "{path}");
    let expires: chrono::DateTime<Utc> = body["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!((expires - Utc::now()).num_seconds() > 3500);

    // No token needed; Accept still chooses.
    let (status, headers, body) = h.get(&path, None, Some("image/webp")).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert_eq!(headers[header::VARY], "Accept");
    let (_, image, format) = h.followed(&headers).await;
    assert_eq!((format, image.width()), (Format::Webp, 300));

    // Any change is refused.
    let tampered = [
        path.replace("w=300", "w=301"),
        path.replace("/t/img/", "/t/other/"),
        path.replace("exp=", "exp=9"),
        format!("{}x", &path[..path.len() - 1]),
        path.split("&sig=").next().unwrap().to_string(),
    ];
    for uri in &tampered {
        let (status, _, body) = h.get(uri, None, None).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "Forbidden");
    }

    // Expired: signed with the server's key for a time already past.
    let past = Utc::now().timestamp() - 1;
    let sig = link_keys("k1").sign("img", "w=300", past);
    let (status, _, body) = h
        .get(&format!("/t/img/w=300?exp={past}&sig={sig}"), None, None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "LinkExpired");

    // After a rotation (k2 signs, k1 still accepted) the old link still works, and new links
    // are signed with k2; once k1 is dropped, its links stop.
    let rotated = Harness::with(Options {
        links: Some("k2,k1"),
        ..Options::default()
    });
    rotated
        .seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let (status, _, _) = rotated.get(&path, None, Some("image/webp")).await;
    assert_eq!(status, StatusCode::FOUND);
    let (_, _, body) = rotated
        .post("/v1/images/img/links", "alice", json!({"params": "w=300"}))
        .await;
    assert!(
        body["path"].as_str().unwrap().contains("&sig=k2."),
        "{body}"
    );
    let retired = Harness::with(Options {
        links: Some("k2"),
        ..Options::default()
    });
    retired
        .seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let (status, _, body) = retired.get(&path, None, None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "Forbidden");
}

#[tokio::test]
async fn links_are_checked_when_made() {
    let h = Harness::with(Options {
        policy: Policy {
            widths: vec![320],
            strict: true,
        },
        ..Options::default()
    });
    h.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let cases = [
        (json!({"params": "w=100"}), "InvalidTransform"),
        (json!({"params": "size=3"}), "InvalidTransform"),
        (json!({"params": 3}), "InvalidRequest"),
        (json!({"params": ""}), "InvalidTransform"),
        (
            json!({"params": "w=320", "expiresIn": null}),
            "InvalidRequest",
        ),
        (json!({"params": "w=320", "expiresIn": 0}), "InvalidRequest"),
        (
            json!({"params": "w=320", "expiresIn": 40_000_000}),
            "InvalidRequest",
        ),
        (json!({"params": "w=320", "extra": 1}), "InvalidRequest"),
    ];
    for (body, error) in cases {
        let (status, _, answer) = h.post("/v1/images/img/links", "alice", body.clone()).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, error);
    }
    let off = Harness::with(Options {
        links: None,
        ..Options::default()
    });
    off.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let (status, _, body) = off
        .post("/v1/images/img/links", "alice", json!({"params": "w=320"}))
        .await;
    assert_error(status, &body, StatusCode::NOT_IMPLEMENTED, "NotImplemented");
}

/// An 800x400 grey JPEG with a red 80 px square centred at (680, 200): x 0.85, y 0.5.
fn jpeg_with_subject_on_the_right() -> Vec<u8> {
    let img = RgbImage::from_fn(800, 400, |x, y| {
        if (640..720).contains(&x) && (160..240).contains(&y) {
            Rgb([220, 20, 20])
        } else {
            Rgb([128, 128, 128])
        }
    });
    imaging::encode(
        &DynamicImage::ImageRgb8(img),
        &EncodeOptions {
            format: Format::Jpeg,
            quality: 95,
            ..EncodeOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn the_focal_point_is_set_by_patch_and_steers_focal_crops() {
    let h = Harness::new();
    h.seed(
        "alice",
        "img",
        jpeg_with_subject_on_the_right(),
        Format::Jpeg,
        Status::Complete,
    )
    .await;
    let patch = |user: &'static str, body: Value| {
        let request = Request::builder()
            .method(Method::PATCH)
            .uri("/v1/images/img")
            .header(header::AUTHORIZATION, format!("Bearer {}", token(user)))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        h.send(request)
    };
    for bad in [
        json!({"focalPoint": {"x": 1.5, "y": 0.5}}),
        json!({"focalPoint": {"x": 0.5}}),
        json!({"focalPoint": {"x": 0.5, "y": 0.5, "z": 1}}),
        json!({}),
        json!({"focalPoint": {"x": 0.5, "y": 0.5}, "tags": []}),
    ] {
        let (status, _, body) = patch("alice", bad.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "InvalidRequest");
    }
    let (status, _, body) = patch("bob", json!({"focalPoint": {"x": 0.85, "y": 0.5}})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");
    let (status, _, body) = patch("alice", json!({"focalPoint": {"x": 0.85, "y": 0.5}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"]["focalPoint"], json!({"x": 0.85, "y": 0.5}));

    // 800x400 covered into 200x200: scaled to 400x200, the window moved right to the
    // subject (the centre window misses it).
    let red_at_140 = |image: &DynamicImage| {
        let p = image.to_rgb8().get_pixel(140, 100).0;
        p[0] > 180 && p[1] < 80
    };
    let (status, headers, body) = h
        .get(
            "/v1/images/img/transform?w=200&h=200&gravity=focal&fmt=png",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    let (_, focal, _) = h.followed(&headers).await;
    assert_eq!((focal.width(), focal.height()), (200, 200));
    assert!(red_at_140(&focal), "the focal crop keeps the subject");
    let (_, headers, _) = h
        .get(
            "/v1/images/img/transform?w=200&h=200&fmt=png",
            Some("alice"),
            None,
        )
        .await;
    let (_, centre, _) = h.followed(&headers).await;
    assert!(!red_at_140(&centre), "the centre crop does not");
    let derived = h.record("img").await.derived;
    assert!(
        derived.iter().any(|d| d
            .params
            .ends_with("gravity=focal&fmt=png&focal=0.8500,0.5000")),
        "{derived:?}"
    );

    // Cleared: a focal crop is the centre one again, under other parameters.
    let (status, _, body) = patch("alice", json!({"focalPoint": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["source"].get("focalPoint").is_none(), "{body}");
    let (_, headers, _) = h
        .get(
            "/v1/images/img/transform?w=200&h=200&gravity=focal&fmt=png",
            Some("alice"),
            None,
        )
        .await;
    assert!(!red_at_140(&h.followed(&headers).await.1));
    assert_eq!(h.record("img").await.derived.len(), 3);
}

#[tokio::test]
async fn a_transform_can_put_another_of_the_owners_images_over_it() {
    let h = Harness::new();
    h.seed("alice", "img", jpeg(), Format::Jpeg, Status::Complete)
        .await;
    let logo = imaging::encode(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(40, 20, Rgba([255, 255, 255, 255]))),
        &EncodeOptions {
            format: Format::Png,
            ..EncodeOptions::default()
        },
    )
    .unwrap();
    h.seed("alice", "logo", logo.clone(), Format::Png, Status::Complete)
        .await;
    h.seed("bob", "theirs", logo, Format::Png, Status::Complete)
        .await;
    let (status, headers, body) = h
        .get(
            "/v1/images/img/transform?w=400&fmt=png&overlay=logo",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    let (_, image, _) = h.followed(&headers).await;
    let rgb = image.to_rgb8();
    // 400x300; the mark 80x40, 16 px from the bottom right: x 304..384, y 244..284.
    assert_eq!(rgb.get_pixel(340, 260).0, [255, 255, 255]);
    assert_ne!(rgb.get_pixel(200, 150).0, [255, 255, 255]);
    assert!(
        h.record("img").await.derived[0]
            .params
            .ends_with("&overlay=logo")
    );
    let (status, _, body) = h
        .get(
            "/v1/images/img/transform?w=400&overlay=theirs",
            Some("alice"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "InvalidRecipe");
    assert!(
        body["message"].as_str().unwrap().contains("theirs"),
        "{body}"
    );
    let (status, _, body) = h
        .get(
            "/v1/images/img/transform?w=400&overlay=..%2Fx",
            Some("alice"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "InvalidTransform");
}
