//! `JwtAuth` against a JWKS served over HTTP by the test: what it accepts, and every refusal
//! answered by the router as a 401 JSON error (or 503 when the keys cannot be fetched).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::{JwksIssuer, JwtAuth, NoAuth, issue_local_token};
use api::{ApiState, AuthError, Caller, CallerSource, Presigner, UploadForm, UploadRequest};
use async_trait::async_trait;
use axum::body::Body;
use base64::Engine;
use http::{HeaderMap, Request, StatusCode, header};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pipeline::PortError;
use pipeline::memory::{MemoryMetadata, MemoryObjectStore};
use serde_json::{Value, json};
use tower::ServiceExt;

const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST";
const CLIENT: &str = "client-1";

/// A fixture key pair (tests/fixtures/rsa-*.pem, PKCS#1) and its public JWK under `kid`.
struct TestKey {
    kid: String,
    private: EncodingKey,
    jwk: Value,
}

fn test_key(name: &str, kid: &str) -> TestKey {
    let path = format!(
        "{}/tests/fixtures/rsa-{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let pem = std::fs::read_to_string(&path).unwrap();
    // Only the base64 between the armour lines; the file starts with a note.
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let private = EncodingKey::from_rsa_der(&der);
    let mut jwk = Jwk::from_encoding_key(&private, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    TestKey {
        kid: kid.to_string(),
        private,
        jwk: serde_json::to_value(&jwk).unwrap(),
    }
}

/// A JWKS endpoint whose key set the test can change, counting its fetches.
struct JwksServer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> JwksServer {
        let served: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (served.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let keys = s.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer {
            addr,
            keys: served,
            hits,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn issuer(&self) -> JwksIssuer {
        JwksIssuer {
            jwks_url: self.url(),
            issuer: ISSUER.to_string(),
            audiences: vec![CLIENT.to_string()],
        }
    }

    /// Refetches whenever a kid is unknown, so a test need not wait out the minute.
    fn auth(&self) -> JwtAuth {
        JwtAuth::new()
            .with_jwks(self.issuer())
            .with_jwks_timing(Duration::ZERO, Duration::from_secs(600))
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a Cognito ID token for `sub`, valid for an hour.
fn id_claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": CLIENT, "token_use": "id",
        "iat": now(), "auth_time": now(), "exp": now() + 3600,
        "cognito:username": sub,
    })
}

/// Claims of a Cognito access token for `sub` (no `aud`; the client is `client_id`).
fn access_claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "client_id": CLIENT, "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "iat": now(), "exp": now() + 3600, "username": sub,
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_as(key, &key.kid, claims)
}

fn sign_as(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key.private).unwrap()
}

struct NoPresigner;

#[async_trait]
impl Presigner for NoPresigner {
    async fn upload(&self, _: &UploadRequest) -> Result<UploadForm, PortError> {
        Err(PortError::Permanent("not in these tests".into()))
    }
    async fn download(&self, _: &str, _: Duration) -> Result<String, PortError> {
        Err(PortError::Permanent("not in these tests".into()))
    }
}

/// GET /v1/images through the router with this auth and bearer token.
async fn list_with(
    auth: Arc<dyn CallerSource>,
    token: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let app = api::router(ApiState {
        metadata: Arc::new(MemoryMetadata::new()),
        uploads: Arc::new(MemoryObjectStore::new()),
        renditions: Arc::new(MemoryObjectStore::new()),
        presigner: Arc::new(NoPresigner),
        auth,
        config: Arc::new(pipeline::Config::default()),
        forms: Arc::default(),
        reprocessor: Arc::new(api::reprocess::NotConfigured),
        transforms: Default::default(),
    });
    let mut request = Request::get("/v1/images");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

/// The token is refused: 401 JSON with `WWW-Authenticate: Bearer`.
async fn assert_refused(auth: JwtAuth, token: Option<&str>, why: &str) {
    let (status, headers, body) = list_with(Arc::new(auth), token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer", "{why}");
    assert_eq!(body["error"], "Unauthorized", "{why}");
    assert!(
        body["message"].as_str().unwrap().contains(why),
        "expected `{why}` in {body}"
    );
}

#[tokio::test]
async fn accepts_id_and_access_tokens_and_reads_the_admin_group() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let auth = server.auth();

    let caller = auth.verify(&sign(&a, &id_claims("alice"))).await.unwrap();
    assert_eq!(
        caller,
        Caller {
            sub: "alice".into(),
            admin: false
        }
    );
    let caller = auth
        .verify(&sign(&a, &access_claims("alice")))
        .await
        .unwrap();
    assert_eq!(caller.sub, "alice");

    let mut claims = id_claims("root");
    claims["cognito:groups"] = json!(["editors", "admin"]);
    assert!(auth.verify(&sign(&a, &claims)).await.unwrap().admin);
    let mut claims = access_claims("ed");
    claims["cognito:groups"] = json!(["editors"]);
    assert!(!auth.verify(&sign(&a, &claims)).await.unwrap().admin);

    // `aud` may also be a list.
    let mut claims = id_claims("alice");
    claims["aud"] = json!(["other", CLIENT]);
    assert!(auth.verify(&sign(&a, &claims)).await.is_ok());
    assert_eq!(server.hits(), 1, "the key set is cached");

    let (status, _, body) = list_with(Arc::new(auth), Some(&sign(&a, &id_claims("alice")))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"items": [], "cursor": null}));
}

#[tokio::test]
async fn refuses_a_request_without_a_token() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    assert_refused(server.auth(), None, "Authorization: Bearer").await;
    assert_eq!(
        server
            .auth()
            .caller(&Request::get("/").body(()).unwrap().into_parts().0)
            .await,
        Err(AuthError::Missing)
    );
}

#[tokio::test]
async fn refuses_an_expired_token() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let mut claims = id_claims("alice");
    // Past the minute of leeway.
    claims["exp"] = json!(now() - 120);
    claims["iat"] = json!(now() - 3720);
    assert_refused(server.auth(), Some(&sign(&a, &claims)), "expired").await;

    // Within the leeway it still counts.
    claims["exp"] = json!(now() - 10);
    assert!(server.auth().verify(&sign(&a, &claims)).await.is_ok());
}

#[tokio::test]
async fn refuses_a_bad_signature() {
    let a = test_key("a", "key-a");
    let b = test_key("b", "key-b");
    let server = JwksServer::start(&[&a]).await;
    // Signed with b but naming a's key.
    let token = sign_as(&b, "key-a", &id_claims("alice"));
    assert_refused(server.auth(), Some(&token), "bad signature").await;

    // A valid token with its payload swapped for another subject's.
    let good = sign(&a, &id_claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id_claims("mallory").to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_refused(server.auth(), Some(&forged), "bad signature").await;
}

#[tokio::test]
async fn refuses_another_issuer() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let mut claims = id_claims("alice");
    claims["iss"] = json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_OTHER");
    assert_refused(server.auth(), Some(&sign(&a, &claims)), "not trusted").await;
    assert_eq!(server.hits(), 0, "an untrusted issuer costs no fetch");
}

#[tokio::test]
async fn refuses_another_audience() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let mut claims = id_claims("alice");
    claims["aud"] = json!("client-2");
    assert_refused(server.auth(), Some(&sign(&a, &claims)), "another audience").await;
    let mut claims = id_claims("alice");
    claims.as_object_mut().unwrap().remove("aud");
    assert_refused(server.auth(), Some(&sign(&a, &claims)), "another audience").await;
}

#[tokio::test]
async fn refuses_another_client() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let mut claims = access_claims("alice");
    claims["client_id"] = json!("client-2");
    assert_refused(
        server.auth(),
        Some(&sign(&a, &claims)),
        "another audience or client",
    )
    .await;
    // An access token's `aud`, were it present, does not stand in for `client_id`.
    let mut claims = access_claims("alice");
    claims.as_object_mut().unwrap().remove("client_id");
    claims["aud"] = json!(CLIENT);
    assert_refused(
        server.auth(),
        Some(&sign(&a, &claims)),
        "another audience or client",
    )
    .await;
}

#[tokio::test]
async fn refuses_a_key_no_longer_in_the_jwks() {
    let a = test_key("a", "key-a");
    let b = test_key("b", "key-b");
    let server = JwksServer::start(&[&a]).await;
    let auth = Arc::new(server.auth());
    let old = sign(&a, &id_claims("alice"));
    assert!(auth.verify(&old).await.is_ok());

    // Rotation: b replaces a. A token signed with b names an unknown kid, which refetches
    // the set; from then on a is gone.
    server.publish(&[&b]);
    let new = sign(&b, &id_claims("alice"));
    assert_eq!(auth.verify(&new).await.unwrap().sub, "alice");
    let (status, headers, body) = list_with(auth.clone(), Some(&old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(
        body["message"].as_str().unwrap().contains("key-a"),
        "{body}"
    );

    // A kid that was never published is refused the same way.
    let stranger = sign_as(&b, "key-z", &id_claims("alice"));
    assert_refused(server.auth(), Some(&stranger), "no longer").await;

    // Once the set is older than its max age, a removed key is noticed without any
    // unknown kid prompting a refetch.
    let server = JwksServer::start(&[&a, &b]).await;
    let auth = server
        .auth()
        .with_jwks_timing(Duration::from_secs(60), Duration::ZERO);
    assert!(auth.verify(&old).await.is_ok());
    server.publish(&[&b]);
    assert!(matches!(
        auth.verify(&old).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_a_minute() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let auth = JwtAuth::new().with_jwks(server.issuer());
    assert!(auth.verify(&sign(&a, &id_claims("alice"))).await.is_ok());
    for _ in 0..5 {
        let stranger = sign_as(&a, "key-z", &id_claims("alice"));
        assert!(matches!(
            auth.verify(&stranger).await,
            Err(AuthError::Invalid(_))
        ));
    }
    assert_eq!(
        server.hits(),
        1,
        "within the minute no unknown kid refetches"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_is_503() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let a = test_key("a", "key-a");
    let auth = JwtAuth::new().with_jwks(JwksIssuer {
        jwks_url: format!("http://{addr}/jwks.json"),
        issuer: ISSUER.into(),
        audiences: vec![CLIENT.into()],
    });
    let token = sign(&a, &id_claims("alice"));
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::Unavailable(_))
    ));
    let (status, headers, body) = list_with(Arc::new(auth), Some(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "Unavailable");
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn refuses_hs256_tokens_claiming_a_jwks_issuer() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    // The classic confusion: HMAC "signed" with the issuer's public key material.
    let n = a.jwk["n"].as_str().unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("key-a".into());
    let token = jsonwebtoken::encode(
        &header,
        &id_claims("alice"),
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    assert_refused(server.auth(), Some(&token), "algorithm").await;
}

#[tokio::test]
async fn local_tokens_need_the_local_secret() {
    let a = test_key("a", "key-a");
    let server = JwksServer::start(&[&a]).await;
    let auth = server.auth().with_local(b"local-secret".to_vec());
    let token = issue_local_token(b"local-secret", "dev", true, Duration::from_secs(60));
    assert_eq!(
        auth.verify(&token).await.unwrap(),
        Caller {
            sub: "dev".into(),
            admin: true
        }
    );
    let forged = issue_local_token(b"guess", "dev", true, Duration::from_secs(60));
    assert_refused(
        server.auth().with_local(b"local-secret".to_vec()),
        Some(&forged),
        "bad signature",
    )
    .await;
    // What `imgpipe token` prints: the local issuer and audience, groups only for admins.
    let plain = issue_local_token(b"local-secret", "dev", false, Duration::from_secs(60));
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&plain).unwrap();
    assert_eq!(claims["iss"], "imgpipe-local");
    assert_eq!(claims["aud"], "imgpipe");
    assert_eq!(
        claims["cognito:groups"],
        Value::Null,
        "no groups unless admin"
    );
}

#[tokio::test]
async fn no_auth_makes_everyone_the_same_admin() {
    let auth = NoAuth {
        sub: "local".into(),
    };
    let (parts, _) = Request::get("/").body(()).unwrap().into_parts();
    assert_eq!(
        auth.caller(&parts).await.unwrap(),
        Caller {
            sub: "local".into(),
            admin: true
        }
    );
    let (status, _, _) = list_with(Arc::new(auth), None).await;
    assert_eq!(status, StatusCode::OK);
}
