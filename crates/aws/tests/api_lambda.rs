//! The api Lambda against moto, fed the API Gateway events under events/api-*.json exactly as
//! `lambda_http::run` feeds it: each event is deserialized into lambda_http's `LambdaRequest`
//! and passed, as a `LambdaEvent`, through lambda_http's own adapter around the service the
//! function runs (`aws::apigw::app` over `aws::api_state`), and the API Gateway proxy
//! response it serializes is what is checked. The upload form it hands out is then posted to
//! moto's S3 as a browser would post it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws::{Config, DynamoMetadata, S3Store};
use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use imaging::Format;
use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent, Service};
use pipeline::model::{RenditionRecord, Status};
use pipeline::ports::{Begin, MetadataStore, ObjectStore, PutOptions};
use serde_json::{Value, json};

/// lambda_http reads it on every request: set, REST API paths arrive without the stage.
const IGNORE_STAGE: &str = "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH";
/// The caller and image every sample event names.
const SAMPLE_SUB: &str = "4f1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const SAMPLE_ID: &str = "01JD8X3Q7V4M2N6P9R5T0WZ8KB";
const OTHER_SUB: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

/// A 640x480 photo-like JPEG, the original transforms are made from.
fn photo_jpeg() -> Vec<u8> {
    let img = imaging::image::RgbImage::from_fn(640, 480, |x, y| {
        imaging::image::Rgb([
            (x * 255 / 639) as u8,
            (y * 255 / 479) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    imaging::encode(
        &imaging::Image::ImageRgb8(img),
        &imaging::EncodeOptions {
            format: Format::Jpeg,
            quality: 90,
            ..imaging::EncodeOptions::default()
        },
    )
    .unwrap()
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// The sample event `name`, its sample caller and image replaced.
fn event(name: &str, sub: &str, image_id: &str) -> Value {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .replace(SAMPLE_SUB, sub)
        .replace(SAMPLE_ID, image_id);
    serde_json::from_str(&text).unwrap()
}

/// The same event with the caller in the `admin` group, as a REST API authorizer passes one
/// group.
fn as_admin(mut event: Value) -> Value {
    event["requestContext"]["authorizer"]["claims"]["cognito:groups"] = json!("admin");
    event
}

/// The API Gateway proxy response the function returns, as API Gateway reads it.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(self.body.as_deref().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One invocation, through lambda_http's adapter: `lambda_http::run` wraps the service in
/// the same `Adapter`, which converts the event into an `http::Request` (stage handling,
/// request context extension and all) and the response back into a proxy response. The
/// adapter is public but hidden from lambda_http's docs; Cargo.lock pins the version, and an
/// upgrade that changes it fails here rather than in the deployed function.
async fn invoke(app: &Router, event: &Value) -> Reply {
    let request: LambdaRequest = serde_json::from_str(&event.to_string()).unwrap();
    let mut adapter = lambda_http::Adapter::from(app.clone());
    std::future::poll_fn(|cx| adapter.poll_ready(cx))
        .await
        .unwrap();
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    let proxy = serde_json::to_value(&response).unwrap();
    let mut headers = BTreeMap::new();
    for (name, values) in proxy["multiValueHeaders"].as_object().unwrap() {
        headers.insert(
            name.to_ascii_lowercase(),
            values[0].as_str().unwrap().to_string(),
        );
    }
    for (name, value) in proxy["headers"].as_object().into_iter().flatten() {
        headers.insert(
            name.to_ascii_lowercase(),
            value.as_str().unwrap().to_string(),
        );
    }
    assert_eq!(proxy["isBase64Encoded"], false, "{proxy}");
    Reply {
        status: u16::try_from(proxy["statusCode"].as_u64().unwrap()).unwrap(),
        headers,
        body: proxy["body"].as_str().map(str::to_string),
    }
}

fn policy_of(form: &Value) -> Value {
    let policy = form["fields"]["policy"].as_str().unwrap();
    serde_json::from_slice(&BASE64.decode(policy).unwrap()).unwrap()
}

/// The condition on `field` in a decoded policy, if any.
fn condition<'a>(policy: &'a Value, field: &str) -> Option<&'a Value> {
    policy["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c.get(field))
}

/// lambda_http reads the stage setting from the environment on every request, and tests may
/// not set variables in their own (multi-threaded) process; so this test shows what happens
/// without it, then runs itself again in a child process that has it, as the deployed
/// function has it from the template.
#[test]
fn api_gateway_events_drive_the_lambdas_router_against_moto() {
    if std::env::var_os(IGNORE_STAGE).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(routes_against_moto());
        return;
    }

    let request = lambda_http::request::from_str(
        &event("api-list-images.json", SAMPLE_SUB, SAMPLE_ID).to_string(),
    )
    .unwrap();
    assert_eq!(
        request.uri().path(),
        "/dev/v1/images",
        "without {IGNORE_STAGE}, lambda_http puts the stage in front of a REST API path"
    );

    let name = "api_gateway_events_drive_the_lambdas_router_against_moto";
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IGNORE_STAGE, "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the run with {IGNORE_STAGE} failed:\n{stdout}\n{stderr}"
    );
}

async fn routes_against_moto() {
    let sdk = support::sdk().await;
    let s3 = S3Store::client_for(&sdk);
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let uploads_bucket = support::unique("api-up");
    let renditions_bucket = support::unique("api-out");
    let table = support::unique("api-images");
    for bucket in [&uploads_bucket, &renditions_bucket] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    DynamoMetadata::create_table(&dynamo, &table).await.unwrap();
    let env = BTreeMap::from([
        (aws::config::UPLOADS_BUCKET, uploads_bucket.clone()),
        (aws::config::RENDITIONS_BUCKET, renditions_bucket.clone()),
        (aws::config::TABLE, table.clone()),
        (
            aws::config::ALERTS_TOPIC_ARN,
            "arn:aws:sns:us-east-1:123456789012:alerts".to_string(),
        ),
        (
            aws::config::EVENTS_TOPIC_ARN,
            "arn:aws:sns:us-east-1:123456789012:events".to_string(),
        ),
    ]);
    let config = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
    // As functions/api/src/main.rs builds it, with the template's default origin.
    let app = aws::apigw::app(aws::api_state(&config, &sdk), Some("*")).unwrap();
    let uploads = S3Store::new(s3.clone(), uploads_bucket.clone());
    let renditions = S3Store::new(s3.clone(), renditions_bucket.clone());
    let metadata = DynamoMetadata::new(dynamo.clone(), table.clone());

    // The public routes carry no claims.
    let health = invoke(&app, &event("api-health.json", SAMPLE_SUB, SAMPLE_ID)).await;
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(health.header("access-control-allow-origin"), Some("*"));
    let presets = invoke(&app, &event("api-presets.json", SAMPLE_SUB, SAMPLE_ID)).await;
    assert_eq!(presets.status, 200, "{:?}", presets.body);
    assert!(
        presets.json()["presets"]["web"].is_object(),
        "{:?}",
        presets.body
    );

    // A protected route reached without the authorizer's claims.
    let anonymous = invoke(
        &app,
        &event("api-list-images-no-claims.json", SAMPLE_SUB, SAMPLE_ID),
    )
    .await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    assert_eq!(anonymous.json()["error"], "Unauthorized");

    // POST /v1/uploads: a record waiting for the upload and a form for exactly that upload.
    let sub = format!(
        "{SAMPLE_SUB}-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let create_event = event("api-create-upload.json", &sub, SAMPLE_ID);
    let declared: Value = serde_json::from_str(create_event["body"].as_str().unwrap()).unwrap();
    let declared_bytes = declared["bytes"].as_u64().unwrap();
    let created = invoke(&app, &create_event).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let created_json = created.json();
    let id = created_json["imageId"].as_str().unwrap().to_string();
    let key = created_json["key"].as_str().unwrap().to_string();
    // No Location: the router cannot know the stage prefix the client's URL has.
    assert_eq!(created.header("location"), None);
    assert_eq!(created_json["status"], "AWAITING_UPLOAD");
    assert!(
        key.starts_with(&format!("uploads/{sub}/{id}/")),
        "{key} is not under the caller's sub"
    );
    let form = &created_json["upload"];
    assert_eq!(
        form["url"].as_str().unwrap(),
        format!("{}/{uploads_bucket}/", support::endpoint())
    );
    let policy = policy_of(form);
    assert!(
        policy["conditions"].as_array().unwrap().contains(&json!([
            "content-length-range",
            1,
            declared_bytes
        ])),
        "{policy}"
    );
    assert_eq!(
        condition(&policy, "Content-Type"),
        Some(&json!("image/jpeg"))
    );
    assert_eq!(condition(&policy, "key"), Some(&json!(key)));
    assert_eq!(condition(&policy, "bucket"), Some(&json!(uploads_bucket)));
    assert_eq!(condition(&policy, "x-amz-meta-preset"), Some(&json!("web")));
    // The mark that makes Validate claim this record and never make a new one.
    assert_eq!(condition(&policy, "x-amz-meta-form"), Some(&json!(id)));
    assert_eq!(
        condition(&policy, "x-amz-server-side-encryption"),
        Some(&json!("AES256"))
    );
    let fields = form["fields"].as_object().unwrap();
    for (name, value) in fields {
        if name != "policy" && name != "x-amz-signature" {
            assert_eq!(condition(&policy, name), Some(value), "field {name}");
        }
    }
    assert!(
        fields["x-amz-credential"]
            .as_str()
            .unwrap()
            .starts_with("testing/"),
        "{fields:?}"
    );

    // The browser's part: the form's fields, then the file.
    let photo = b"\xff\xd8\xff\xe0 not really a JPEG, moto stores any bytes".to_vec();
    let mut multipart = reqwest::multipart::Form::new();
    for (name, value) in fields {
        multipart = multipart.text(name.clone(), value.as_str().unwrap().to_string());
    }
    multipart = multipart.part(
        "file",
        reqwest::multipart::Part::bytes(photo.clone())
            .file_name("beach day.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().build().unwrap();
    let posted = http
        .post(form["url"].as_str().unwrap())
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    assert!(
        posted.status().is_success(),
        "{}: {}",
        posted.status(),
        posted.text().await.unwrap_or_default()
    );
    let stored = uploads.head(&key).await.unwrap();
    assert_eq!(stored.size, photo.len() as u64);
    assert_eq!(stored.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        stored.metadata.get("preset").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        stored.metadata.get("tags").map(String::as_str),
        Some("2024,holiday")
    );
    assert_eq!(uploads.get(&key).await.unwrap(), photo);

    // GET /v1/images/{id}: the owner sees it, another user does not, an admin does.
    let got = invoke(&app, &event("api-get-image.json", &sub, &id)).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let record = got.json();
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["owner"], sub.as_str());
    assert_eq!(record["status"], "AWAITING_UPLOAD");
    let stranger = invoke(&app, &event("api-get-image.json", OTHER_SUB, &id)).await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);
    assert_eq!(stranger.json()["error"], "NotFound");
    let admin = invoke(&app, &as_admin(event("api-get-image.json", OTHER_SUB, &id))).await;
    assert_eq!(admin.status, 200, "{:?}", admin.body);

    // GET /v1/images: the caller's own images only.
    let listed = invoke(&app, &event("api-list-images.json", &sub, &id)).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let items = listed.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], id.as_str());
    let others = invoke(&app, &event("api-list-images.json", OTHER_SUB, &id)).await;
    assert_eq!(others.status, 200, "{:?}", others.body);
    assert!(
        others.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["id"] != id.as_str()),
        "{:?}",
        others.body
    );

    // The pipeline's part, through the same ports the steps use: claim, one rendition, done.
    let mut processing = metadata.get(&id).await.unwrap().unwrap();
    processing.status = Status::Processing;
    processing.execution_id = Some("arn:aws:states:us-east-1:123456789012:execution:test".into());
    assert!(matches!(
        metadata.begin(&processing).await.unwrap(),
        Begin::Started(_)
    ));
    let thumb_key = format!("renditions/{sub}/{id}/thumb.webp");
    let thumb = b"RIFF\x10\x00\x00\x00WEBPVP8 thumb".to_vec();
    renditions
        .put(
            &thumb_key,
            thumb.clone(),
            PutOptions {
                content_type: Some("image/webp".into()),
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    metadata
        .put_rendition(
            &id,
            &RenditionRecord {
                name: "thumb".into(),
                key: thumb_key.clone(),
                format: Format::Webp,
                width: 256,
                height: 256,
                bytes: thumb.len() as u64,
                ms: 12,
                quality: None,
                score: None,
                placeholder: None,
                dominant_color: None,
            },
        )
        .await
        .unwrap();
    metadata.complete(&id, None).await.unwrap();

    // GET /v1/images/{id}/renditions/{name}: a redirect to a presigned GET that works.
    let redirect = invoke(&app, &event("api-get-rendition.json", &sub, &id)).await;
    assert_eq!(redirect.status, 302, "{:?}", redirect.body);
    assert_eq!(redirect.header("cache-control"), Some("no-store"));
    let location = redirect.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "{}/{renditions_bucket}/{thumb_key}?",
            support::endpoint()
        )),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let downloaded = http.get(&location).send().await.unwrap();
    assert!(downloaded.status().is_success(), "{}", downloaded.status());
    assert_eq!(downloaded.bytes().await.unwrap().to_vec(), thumb);
    let stranger = invoke(&app, &event("api-get-rendition.json", OTHER_SUB, &id)).await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);

    // On-demand transforms and signed links, configured as the template configures the
    // transform function: a public URL, and the link keys' secret in Secrets Manager, which
    // the function reads when it starts.
    let link_secret = "k1=a-link-secret-of-thirty-two-bytes-or-more";
    let link_keys_arn = support::put_secret(&sdk, link_secret).await;
    let mut transform_env = env.clone();
    transform_env.insert(aws::config::LINK_KEYS_SECRET_ARN, link_keys_arn);
    transform_env.insert(
        aws::config::PUBLIC_URL,
        "https://img.example.test/".to_string(),
    );
    let configured = |env: &BTreeMap<&str, String>| {
        let config = Config::from_lookup(|name| env.get(name).cloned());
        let sdk = sdk.clone();
        async move {
            let mut config = config.unwrap();
            config.read_secrets(&sdk).await.unwrap();
            config
        }
    };
    let transform_config = configured(&transform_env).await;
    assert!(transform_config.transforms.link_keys.is_some());
    let transformer = aws::apigw::app(aws::api_state(&transform_config, &sdk), Some("*")).unwrap();
    let photo_id = format!("{id}p");
    let original = photo_jpeg();
    let original_key = format!("uploads/{sub}/{photo_id}/photo.jpg");
    uploads
        .put(&original_key, original.clone(), PutOptions::default())
        .await
        .unwrap();
    let mut photo = processing.clone();
    photo.id = photo_id.clone();
    photo.renditions.clear();
    photo.source = pipeline::model::SourceInfo {
        key: original_key,
        bytes: original.len() as u64,
        format: Some(Format::Jpeg),
        width: Some(640),
        height: Some(480),
        alpha: Some(false),
        ..photo.source.clone()
    };
    assert!(matches!(
        metadata.begin(&photo).await.unwrap(),
        Begin::Started(_)
    ));
    metadata.complete(&photo_id, None).await.unwrap();

    // GET /v1/images/{id}/transform: rendered, stored in the renditions bucket, listed in the
    // record's `derived` map, redirected to; asked again, found.
    let ask = event("api-transform.json", &sub, &photo_id);
    let first = invoke(&transformer, &ask).await;
    assert_eq!(first.status, 302, "{:?}", first.body);
    assert_eq!(first.header("vary"), Some("Accept"));
    let location = first.header("location").unwrap().to_string();
    let t_prefix = format!(
        "{}/{renditions_bucket}/renditions/{sub}/{photo_id}/t/",
        support::endpoint()
    );
    assert!(location.starts_with(&t_prefix), "{location}");
    let fetched = http.get(&location).send().await.unwrap();
    assert!(fetched.status().is_success(), "{}", fetched.status());
    let bytes = fetched.bytes().await.unwrap().to_vec();
    let expected = if imaging::writes(Format::Avif) {
        Format::Avif
    } else {
        Format::Webp
    };
    assert_eq!(imaging::sniff(&bytes).unwrap(), expected);
    let decoded = imaging::decode(&bytes, &imaging::Limits::default(), None).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (200, 150));
    let derived = metadata.get(&photo_id).await.unwrap().unwrap().derived;
    assert_eq!(derived.len(), 1, "{derived:?}");
    assert_eq!(
        derived[0].params,
        format!(
            "w=200&fit=cover&gravity=center&fmt={}",
            expected.extension()
        )
    );
    assert_eq!(
        (derived[0].width, derived[0].bytes),
        (200, bytes.len() as u64)
    );
    let again = invoke(&transformer, &ask).await;
    assert_eq!(again.status, 302, "{:?}", again.body);
    let key_of = |l: &str| l.split('?').next().unwrap().to_string();
    assert_eq!(key_of(again.header("location").unwrap()), key_of(&location));
    // A second transform of the same image adds to the map instead of replacing it.
    let mut webp = ask.clone();
    webp["queryStringParameters"] = json!({"w": "120", "fmt": "webp"});
    webp["multiValueQueryStringParameters"] = json!({"w": ["120"], "fmt": ["webp"]});
    assert_eq!(invoke(&transformer, &webp).await.status, 302);
    let mut hits = 0;
    for _ in 0..50 {
        let record = metadata.get(&photo_id).await.unwrap().unwrap();
        assert_eq!(record.derived.len(), 2, "{:?}", record.derived);
        hits = record.derived.iter().map(|d| d.hits).sum();
        if hits == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(hits, 3, "two renders and one repeat");
    let stranger = invoke(
        &transformer,
        &event("api-transform.json", OTHER_SUB, &photo_id),
    )
    .await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);

    // POST /v1/images/{id}/links, then the link without a token.
    let made = invoke(
        &transformer,
        &event("api-create-link.json", &sub, &photo_id),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let link = made.json();
    let link_path = link["path"].as_str().unwrap().to_string();
    assert_eq!(link["url"], format!("https://img.example.test{link_path}"));
    let query: BTreeMap<String, String> = link_path
        .split_once('?')
        .unwrap()
        .1
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let follow = |exp: &str, sig: &str| {
        let mut e = event("api-follow-link.json", &sub, &photo_id);
        e["queryStringParameters"] = json!({"exp": exp, "sig": sig});
        e["multiValueQueryStringParameters"] = json!({"exp": [exp], "sig": [sig]});
        e
    };
    let followed = invoke(&transformer, &follow(&query["exp"], &query["sig"])).await;
    assert_eq!(followed.status, 302, "{:?}", followed.body);
    assert!(followed.header("location").unwrap().starts_with(&t_prefix));
    let tampered = invoke(&transformer, &follow("2000000000", &query["sig"])).await;
    assert_eq!(tampered.status, 403, "{:?}", tampered.body);
    assert_eq!(tampered.json()["error"], "Forbidden");

    // With the CloudFront key pair (CdnKeySecretArn), a link that came through the
    // distribution (its origin header, and the host its function passes on) redirects to the
    // distribution's signed URL of the same object on that host, and may be kept there; one
    // that came straight to the API still gets the S3 presigned URL and no-store.
    // The key pair's secret is the JSON whose publicKey the template gives CloudFront.
    let cdn_keys = support::rsa_key_pems(2048);
    let cdn_key_arn = support::put_secret(
        &sdk,
        json!({"publicKey": cdn_keys["public"], "privateKey": cdn_keys["pkcs8"]}).to_string(),
    )
    .await;
    let mut cdn_env = transform_env.clone();
    cdn_env.insert(aws::config::CDN_KEY_PAIR_ID, "K2JCJMDEHXQW5F".to_string());
    cdn_env.insert(aws::config::CDN_KEY_SECRET_ARN, cdn_key_arn);
    let cdn_config = configured(&cdn_env).await;
    let fronted = aws::apigw::app(aws::api_state(&cdn_config, &sdk), Some("*")).unwrap();
    let mut through_cdn = follow(&query["exp"], &query["sig"]);
    for (name, value) in [
        ("X-Imgpipe-Cdn", "1"),
        ("X-Imgpipe-Host", "img.example.test"),
    ] {
        through_cdn["headers"][name] = json!(value);
        through_cdn["multiValueHeaders"][name] = json!([value]);
    }
    let edge = invoke(&fronted, &through_cdn).await;
    assert_eq!(edge.status, 302, "{:?}", edge.body);
    let edge_location = edge.header("location").unwrap();
    let object_url = format!("https://img.example.test/renditions/{sub}/{photo_id}/t/");
    assert!(edge_location.starts_with(&object_url), "{edge_location}");
    assert!(
        edge_location.contains("&Key-Pair-Id=K2JCJMDEHXQW5F&Hash-Algorithm=SHA256"),
        "{edge_location}"
    );
    assert_eq!(
        key_of(edge_location),
        key_of(followed.header("location").unwrap()).replace(
            &format!("{}/{renditions_bucket}", support::endpoint()),
            "https://img.example.test"
        )
    );
    assert_eq!(edge.header("cache-control"), Some("public, max-age=300"));
    let direct = invoke(&fronted, &follow(&query["exp"], &query["sig"])).await;
    assert!(direct.header("location").unwrap().starts_with(&t_prefix));
    assert_eq!(direct.header("cache-control"), Some("no-store"));
    // A host that is no host name is not signed for: the presigned URL instead.
    through_cdn["headers"]["X-Imgpipe-Host"] = json!("evil.example/x");
    through_cdn["multiValueHeaders"]["X-Imgpipe-Host"] = json!(["evil.example/x"]);
    let odd = invoke(&fronted, &through_cdn).await;
    assert!(odd.header("location").unwrap().starts_with(&t_prefix));
    assert_eq!(odd.header("cache-control"), Some("no-store"));
    // Without a public URL, links point at the API itself, stage included: API Gateway
    // serves it under /dev, which the router never sees.
    let mut staged_env = transform_env.clone();
    staged_env.remove(aws::config::PUBLIC_URL);
    let staged_config = configured(&staged_env).await;
    let staged = aws::apigw::app(aws::api_state(&staged_config, &sdk), Some("*")).unwrap();
    let mut spoofed = event("api-create-link.json", &sub, &photo_id);
    spoofed["headers"]["X-Forwarded-Prefix"] = json!("/evil");
    let made = invoke(&staged, &spoofed).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let url = made.json()["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/dev/t/"),
        "{url}"
    );

    // Without link keys the function refuses to make links.
    let no_keys = invoke(&app, &event("api-create-link.json", &sub, &photo_id)).await;
    assert_eq!(no_keys.status, 501, "{:?}", no_keys.body);

    // PATCH /v1/images/{id}: the focal point, into the record's source map and out again.
    let patched = invoke(&app, &event("api-patch-image.json", &sub, &photo_id)).await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(
        patched.json()["source"]["focalPoint"],
        json!({"x": 0.3, "y": 0.6})
    );
    let stored = metadata.get(&photo_id).await.unwrap().unwrap();
    assert_eq!(
        stored.source.focal_point,
        imaging::FocalPoint::new(0.3, 0.6)
    );
    assert_eq!(
        stored.derived.len(),
        3,
        "the rest of the record is untouched"
    );
    let mut clear = event("api-patch-image.json", &sub, &photo_id);
    clear["body"] = json!(json!({"focalPoint": null}).to_string());
    assert_eq!(invoke(&app, &clear).await.status, 200);
    assert_eq!(
        metadata
            .get(&photo_id)
            .await
            .unwrap()
            .unwrap()
            .source
            .focal_point,
        None
    );
    let stranger = invoke(&app, &event("api-patch-image.json", OTHER_SUB, &photo_id)).await;
    assert_eq!(stranger.status, 404, "{:?}", stranger.body);

    // Deleting the image takes its transforms with it.
    let gone_photo = invoke(&app, &event("api-delete-image.json", &sub, &photo_id)).await;
    assert_eq!(gone_photo.status, 204, "{:?}", gone_photo.body);
    assert!(
        renditions
            .list(&format!("renditions/{sub}/{photo_id}/"))
            .await
            .unwrap()
            .is_empty()
    );

    // DELETE /v1/images/{id}: not another user's; the owner's takes the objects with it.
    let refused = invoke(&app, &event("api-delete-image.json", OTHER_SUB, &id)).await;
    assert_eq!(refused.status, 404, "{:?}", refused.body);
    assert!(uploads.head(&key).await.is_ok());
    let deleted = invoke(&app, &event("api-delete-image.json", &sub, &id)).await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    assert!(
        uploads
            .list(&format!("uploads/{sub}/"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        renditions
            .list(&format!("renditions/{sub}/"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(metadata.get(&id).await.unwrap().is_none());
    let gone = invoke(&app, &event("api-get-image.json", &sub, &id)).await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);

    // Open forms are counted in the table, so the limit holds across function instances:
    // two apps stand for two instances, each with its own rate limiter.
    let mut limited_env = env.clone();
    limited_env.insert(aws::config::MAX_OPEN_FORMS, "2".to_string());
    let limited = Config::from_lookup(|name| limited_env.get(name).cloned()).unwrap();
    let instances = [
        aws::apigw::app(aws::api_state(&limited, &sdk), Some("*")).unwrap(),
        aws::apigw::app(aws::api_state(&limited, &sdk), Some("*")).unwrap(),
    ];
    let busy = format!("{sub}-busy");
    for instance in &instances {
        let created = invoke(instance, &event("api-create-upload.json", &busy, SAMPLE_ID)).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
    for instance in &instances {
        let refused = invoke(instance, &event("api-create-upload.json", &busy, SAMPLE_ID)).await;
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(refused.json()["error"], "TooManyRequests");
        let after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((14 * 60..=15 * 60).contains(&after), "{after}");
    }
    let other = invoke(
        &instances[0],
        &event("api-create-upload.json", &sub, SAMPLE_ID),
    )
    .await;
    assert_eq!(
        other.status, 201,
        "another user is not limited: {:?}",
        other.body
    );
}
