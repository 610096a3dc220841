//! Who is calling. `imgpipe serve` verifies bearer JWTs itself (Cognito's, through their JWKS,
//! or its own local issuer's); behind API Gateway the Cognito authorizer has verified the
//! token already and the api Lambda reads the claims it passed on.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell};

/// The caller of a request: the token's `sub`, and whether it is in the `admin` group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("cannot verify tokens right now: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait CallerSource: Send + Sync {
    /// Who is calling, from the request head. `Missing`/`Invalid` answer 401,
    /// `Unavailable` 503.
    async fn caller(&self, parts: &http::request::Parts) -> Result<Caller, AuthError>;
}

/// The `iss` of tokens made by [`issue_local_token`].
pub const LOCAL_ISSUER: &str = "imgpipe-local";
/// The `aud` of tokens made by [`issue_local_token`].
pub const LOCAL_AUDIENCE: &str = "imgpipe";
/// The group that sees every image; Cognito puts groups in `cognito:groups`.
pub const ADMIN_GROUP: &str = "admin";
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// Cognito tokens are around 1 KiB; anything far larger is not worth parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A JWKS is a handful of keys; the bound only protects against a misconfigured URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Every caller is the same admin: `imgpipe serve --auth none`, for loopback use only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAuth {
    pub sub: String,
}

#[async_trait]
impl CallerSource for NoAuth {
    async fn caller(&self, _parts: &http::request::Parts) -> Result<Caller, AuthError> {
        Ok(Caller {
            sub: self.sub.clone(),
            admin: true,
        })
    }
}

/// An issuer whose RS256 keys are published as a JWKS, as a Cognito user pool's are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksIssuer {
    /// Where the public keys are, e.g.
    /// `https://cognito-idp.{region}.amazonaws.com/{pool}/.well-known/jwks.json`.
    pub jwks_url: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Accepted app client ids: an ID token's `aud` or an access token's `client_id` must be
    /// one of them. Empty accepts no token at all, never any audience.
    pub audiences: Vec<String>,
}

impl JwksIssuer {
    /// A Cognito user pool, by region and pool id, accepting tokens of these app clients.
    pub fn cognito(region: &str, user_pool_id: &str, client_ids: Vec<String>) -> JwksIssuer {
        let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}");
        JwksIssuer {
            jwks_url: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            audiences: client_ids,
        }
    }
}

/// Verifies bearer JWTs from any number of JWKS issuers (Cognito user pools) and, optionally,
/// the local HS256 issuer of [`issue_local_token`].
///
/// Keys are fetched on first use and cached. A token naming an unknown `kid` refetches the
/// set (at most once per `min_refetch`, 60 s by default), so a rotated-in key works at once;
/// the set is also refetched once it is `max_age` old (10 min by default), and every fetch
/// replaces the whole set, so a key removed from the JWKS stops working then.
pub struct JwtAuth {
    local: Option<Vec<u8>>,
    issuers: Vec<JwksState>,
    http: OnceCell<reqwest::Client>,
    min_refetch: Duration,
    max_age: Duration,
}

struct JwksState {
    config: JwksIssuer,
    cache: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    last_error: Option<String>,
}

impl fmt::Debug for JwtAuth {
    // By hand, so the local secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("local", &self.local.is_some())
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.config).collect::<Vec<_>>(),
            )
            .field("min_refetch", &self.min_refetch)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl Default for JwtAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtAuth {
    /// Trusts nobody yet: add issuers with [`JwtAuth::with_local`] and [`JwtAuth::with_jwks`].
    pub fn new() -> JwtAuth {
        JwtAuth {
            local: None,
            issuers: Vec::new(),
            http: OnceCell::new(),
            min_refetch: Duration::from_secs(60),
            max_age: Duration::from_secs(600),
        }
    }

    /// Trusts HS256 tokens of the local issuer signed with `secret` (see
    /// [`issue_local_token`]). An empty secret is ignored: anyone could sign with it.
    pub fn with_local(mut self, secret: impl Into<Vec<u8>>) -> JwtAuth {
        let secret = secret.into();
        if secret.is_empty() {
            tracing::warn!("empty local token secret ignored; local tokens are refused");
        } else {
            self.local = Some(secret);
        }
        self
    }

    /// Trusts RS256 tokens of a JWKS issuer.
    pub fn with_jwks(mut self, issuer: JwksIssuer) -> JwtAuth {
        self.issuers.push(JwksState {
            config: issuer,
            cache: Mutex::new(KeyCache::default()),
        });
        self
    }

    /// How often an unknown `kid` may trigger a refetch, and how old a key set may get.
    pub fn with_jwks_timing(mut self, min_refetch: Duration, max_age: Duration) -> JwtAuth {
        self.min_refetch = min_refetch;
        self.max_age = max_age;
        self
    }

    /// The caller a bearer token stands for.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        // Only to pick the issuer whose keys decide; nothing of it is trusted until verified.
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(invalid)?;
        let iss = peek.iss.unwrap_or_default();
        if iss == LOCAL_ISSUER
            && let Some(secret) = &self.local
        {
            let mut validation = base_validation(Algorithm::HS256, LOCAL_ISSUER);
            validation.set_audience(&[LOCAL_AUDIENCE]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            let claims = decode(token, &DecodingKey::from_secret(secret), &validation)?;
            return caller_of(claims);
        }
        let Some(issuer) = self.issuers.iter().find(|i| i.config.issuer == iss) else {
            return Err(AuthError::Invalid(format!(
                "issuer `{}` is not trusted",
                bounded(&iss)
            )));
        };
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no `kid` in the token header".into()))?;
        // RS256 only, whatever the header says: the classic confusion is an HS256 token
        // "signed" with the public key.
        let mut validation = base_validation(Algorithm::RS256, &issuer.config.issuer);
        // Cognito ID tokens carry `aud`, access tokens `client_id`: checked below.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let key = self.key(issuer, &kid).await?;
        let claims = decode(token, &key, &validation)?;
        let audiences = &issuer.config.audiences;
        let audience_ok = if claims.token_use.as_deref() == Some("access") {
            claims
                .client_id
                .as_ref()
                .is_some_and(|c| audiences.contains(c))
        } else {
            match &claims.aud {
                Some(Audience::One(a)) => audiences.contains(a),
                Some(Audience::Many(all)) => all.iter().any(|a| audiences.contains(a)),
                None => false,
            }
        };
        if !audience_ok {
            return Err(AuthError::Invalid(
                "the token is for another audience or client".into(),
            ));
        }
        caller_of(claims)
    }

    /// The issuer's key `kid`, from the cache or a (re)fetched key set.
    async fn key(&self, issuer: &JwksState, kid: &str) -> Result<DecodingKey, AuthError> {
        // One fetch at a time per issuer; whoever waits sees its result.
        let mut cache = issuer.cache.lock().await;
        let fresh = cache.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
        if fresh && let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        // Unknown kids are anyone's to invent, so they refetch at most once per
        // `min_refetch`; an expired set refetches at once unless its last fetch failed just
        // now (then the issuer is down and waiting is kinder to it).
        let may_fetch = cache
            .attempted_at
            .is_none_or(|t| t.elapsed() >= self.min_refetch)
            || (!fresh && cache.last_error.is_none());
        let mut fetched = false;
        if may_fetch {
            cache.attempted_at = Some(Instant::now());
            match self.fetch(&issuer.config.jwks_url).await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched_at = cache.attempted_at;
                    cache.last_error = None;
                    fetched = true;
                }
                Err(e) => {
                    tracing::warn!(jwks = %issuer.config.jwks_url, error = %e, "cannot fetch JWKS");
                    cache.last_error = Some(e);
                }
            }
        }
        // What was fetched just now is current even with a `max_age` of zero.
        let fresh = fetched || cache.fetched_at.is_some_and(|t| t.elapsed() < self.max_age);
        if !fresh {
            return Err(AuthError::Unavailable(format!(
                "signing keys of {}: {}",
                issuer.config.issuer,
                cache.last_error.as_deref().unwrap_or("not fetched yet")
            )));
        }
        cache.keys.get(kid).cloned().ok_or_else(|| {
            AuthError::Invalid(format!(
                "signing key `{}` is not (or no longer) published by the issuer",
                bounded(kid)
            ))
        })
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, DecodingKey>, String> {
        let client = self
            .http
            .get_or_try_init(|| async {
                // reqwest is built without a TLS provider so that the process picks one;
                // ring is the one every imgpipe binary uses. Already installed is fine.
                if rustls::crypto::ring::default_provider()
                    .install_default()
                    .is_err()
                {
                    tracing::debug!("a rustls provider was installed already");
                }
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(5))
                    .build()
            })
            .await
            .map_err(|e| format!("http client: {e}"))?;
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("GET {url}: over {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(|e| format!("GET {url}: {e}"))
    }
}

#[async_trait]
impl CallerSource for JwtAuth {
    async fn caller(&self, parts: &http::request::Parts) -> Result<Caller, AuthError> {
        let token = bearer_token(&parts.headers)?;
        self.verify(token).await
    }
}

/// The token of `Authorization: Bearer <token>`; any other scheme counts as no token.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// The RSA signing keys of a JWKS by `kid`. Keys this API cannot use (other types, other
/// algorithms, encryption keys) are skipped rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(value) else {
            continue;
        };
        let rsa = matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
        );
        let signing = !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        );
        let rs256 = jwk
            .common
            .key_algorithm
            .is_none_or(|a| a == jsonwebtoken::jwk::KeyAlgorithm::RS256);
        let (Some(kid), true, true, true) = (jwk.common.key_id.clone(), rsa, signing, rs256) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, key);
        }
    }
    Ok(keys)
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
    #[serde(default, rename = "cognito:groups")]
    groups: Vec<String>,
}

fn base_validation(alg: Algorithm, issuer: &str) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECONDS;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(invalid)
}

fn caller_of(claims: Claims) -> Result<Caller, AuthError> {
    // The subject becomes a key segment (`uploads/{sub}/...`).
    if !pipeline::keys::valid_segment(&claims.sub) {
        return Err(AuthError::Invalid(
            "the subject is not a usable owner id".into(),
        ));
    }
    if pipeline::keys::reserved_owner(&claims.sub) {
        return Err(AuthError::Invalid(format!(
            "the subject `{}` is reserved for images that arrive without a user",
            claims.sub
        )));
    }
    Ok(Caller {
        admin: claims.groups.iter().any(|g| g == ADMIN_GROUP),
        sub: claims.sub,
    })
}

fn invalid(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let why = match e.kind() {
        K::ExpiredSignature => "expired".to_string(),
        K::ImmatureSignature => "not valid yet".to_string(),
        K::InvalidSignature => "bad signature".to_string(),
        K::InvalidIssuer => "issuer not trusted".to_string(),
        K::InvalidAudience => "the token is for another audience".to_string(),
        K::InvalidAlgorithm => "algorithm not accepted for this issuer".to_string(),
        K::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        _ => "malformed token".to_string(),
    };
    AuthError::Invalid(why)
}

/// Token text quoted in an error, bounded.
fn bounded(s: &str) -> String {
    s.chars().take(100).collect()
}

#[derive(Serialize)]
struct LocalClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(rename = "cognito:groups", skip_serializing_if = "Vec::is_empty")]
    groups: Vec<&'a str>,
}

/// An HS256 token of the local issuer (`iss` `imgpipe-local`, `aud` `imgpipe`) for `sub`,
/// valid for `ttl`; `admin` puts it in the admin group the way Cognito does
/// (`cognito:groups: ["admin"]`). What `imgpipe token` prints.
pub fn issue_local_token(secret: &[u8], sub: &str, admin: bool, ttl: Duration) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = LocalClaims {
        iss: LOCAL_ISSUER,
        aud: LOCAL_AUDIENCE,
        sub,
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl.as_secs()),
        groups: if admin { vec![ADMIN_GROUP] } else { Vec::new() },
    };
    // Signing plain claims with HMAC cannot fail (any key length is valid and the claims
    // always serialise); an empty token would be refused anyway.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_tokens_round_trip_with_the_admin_group() {
        let auth = JwtAuth::new().with_local(b"s3cret".to_vec());
        let t = issue_local_token(b"s3cret", "alice", false, Duration::from_secs(60));
        assert_eq!(
            auth.verify(&t).await.unwrap(),
            Caller {
                sub: "alice".into(),
                admin: false
            }
        );
        let t = issue_local_token(b"s3cret", "root", true, Duration::from_secs(60));
        assert!(auth.verify(&t).await.unwrap().admin);
        let forged = issue_local_token(b"other", "root", true, Duration::from_secs(60));
        assert_eq!(
            auth.verify(&forged).await,
            Err(AuthError::Invalid("bad signature".into()))
        );
        // Without a local secret, local tokens are from an untrusted issuer.
        assert!(matches!(
            JwtAuth::new().verify(&t).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer_token(&h), Err(AuthError::Missing));
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Err(AuthError::Missing));
        h.insert(http::header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&h), Ok("abc"));
    }

    #[test]
    fn subjects_must_be_key_safe() {
        let claims = Claims {
            sub: "../x".into(),
            aud: None,
            client_id: None,
            token_use: None,
            groups: vec![],
        };
        assert!(matches!(caller_of(claims), Err(AuthError::Invalid(_))));
        // The owners of inbox and bucket drops are no one's name.
        for sub in ["inbox", "drop", "Inbox"] {
            let claims = Claims {
                sub: sub.into(),
                aud: None,
                client_id: None,
                token_use: None,
                groups: vec![],
            };
            assert!(
                matches!(caller_of(claims), Err(AuthError::Invalid(ref m)) if m.contains("reserved")),
                "{sub}"
            );
        }
    }
}
