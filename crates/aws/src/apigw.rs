//! The API behind API Gateway: who is calling, read from the claims the Cognito authorizer
//! has already verified, and the routes' state over the stack's resources.
//!
//! A REST API's Cognito user pool authorizer passes the token's claims on in
//! `requestContext.authorizer.claims`, every value flattened to a string; lambda_http puts
//! that request context into the request's extensions.
//!
//! API Gateway answers CORS preflights itself (the template's `Cors`), but with a Lambda proxy
//! integration the function's own responses must carry `Access-Control-Allow-Origin`, so the
//! router is wrapped in a CORS layer for the origin the stack allows.

use std::sync::Arc;

use api::{ApiState, AuthError, Caller, CallerSource};
use async_trait::async_trait;
use aws_config::SdkConfig;
use axum::Router;
use http::{HeaderValue, Method, header};
use lambda_http::request::RequestContext;
use serde_json::{Map, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{Config, DynamoMetadata, S3Presigner, S3Store};

/// Members of this user pool group see and delete every user's images.
pub const ADMIN_GROUP: &str = "admin";
/// The browser origin allowed to read the API's responses (`*` for any); unset, responses
/// carry no CORS headers. The template sets it from `ApiAllowOrigin`.
pub const ALLOW_ORIGIN: &str = "IMGPIPE_API_ALLOW_ORIGIN";

/// The caller from the API Gateway authorizer's claims. Routes without an authorizer
/// (`/health`, `/v1/presets`) carry no claims, and neither does anything that did not come
/// through API Gateway: both are [`AuthError::Missing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiGatewayClaims;

#[async_trait]
impl CallerSource for ApiGatewayClaims {
    async fn caller(&self, parts: &http::request::Parts) -> Result<Caller, AuthError> {
        let context = parts
            .extensions
            .get::<RequestContext>()
            .ok_or(AuthError::Missing)?;
        caller_from_claims(&claims(context).ok_or(AuthError::Missing)?)
    }
}

/// The REST API authorizer's `claims`, if it passed any.
pub fn claims(context: &RequestContext) -> Option<Map<String, Value>> {
    match context.authorizer()?.fields.get("claims") {
        Some(Value::Object(claims)) if !claims.is_empty() => Some(claims.clone()),
        _ => None,
    }
}

/// `sub` is the owner of everything the caller makes; `cognito:groups` decides admin.
pub fn caller_from_claims(claims: &Map<String, Value>) -> Result<Caller, AuthError> {
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(AuthError::Invalid("the token has no `sub` claim".into())),
    };
    let admin = claims
        .get("cognito:groups")
        .is_some_and(|g| groups(g).iter().any(|g| g == ADMIN_GROUP));
    Ok(Caller { sub, admin })
}

/// The groups of a `cognito:groups` claim in each form it reaches a function in. In the token
/// it is a JSON array; a REST API's authorizer flattens it to a string: the bare name for one
/// group (`admin`), the names joined by commas for several (`admin,editors`); an HTTP API's
/// JWT authorizer writes arrays as `[admin editors]`. A string that is itself a JSON array
/// (`["admin","editors"]`), a real array, and `[admin, editors]` are read too. Cognito group
/// names cannot contain whitespace; a comma inside one would split it, which can only ever
/// make a caller less privileged unless a pool administrator names a group `x,admin`.
pub fn groups(claim: &Value) -> Vec<String> {
    match claim {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        Value::String(text) => {
            let text = text.trim();
            if text.starts_with('[')
                && let Ok(parsed @ Value::Array(_)) = serde_json::from_str::<Value>(text)
            {
                return groups(&parsed);
            }
            let inner = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text);
            inner
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(|g| g.trim_matches('"'))
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The routes' state over AWS, exactly as the api function builds it: records in DynamoDB,
/// originals and quarantine copies in the uploads bucket, renditions in theirs, forms and
/// download URLs signed by [`S3Presigner`] and callers from the authorizer's claims.
pub fn api_state(config: &Config, sdk: &SdkConfig) -> ApiState {
    // Keys still named by secret would leave links answering 501 and the CDN unsigned.
    if !config.transforms.secrets.is_empty() {
        tracing::error!(
            "signing-key secrets were not read (Config::read_secrets): signed links and CDN \
             redirects are off"
        );
    }
    let s3 = S3Store::client_for(sdk);
    ApiState {
        metadata: Arc::new(DynamoMetadata::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.table.clone(),
        )),
        uploads: Arc::new(S3Store::new(s3.clone(), config.uploads_bucket.clone())),
        renditions: Arc::new(S3Store::new(s3, config.renditions_bucket.clone())),
        presigner: Arc::new(S3Presigner::new(
            sdk,
            config.uploads_bucket.clone(),
            config.renditions_bucket.clone(),
        )),
        auth: Arc::new(ApiGatewayClaims),
        config: Arc::new(config.steps.clone()),
        forms: Arc::new(api::FormThrottle::new(config.forms)),
        reprocessor: match &config.reprocess {
            Some(r) => Arc::new(crate::sfn::SfnReprocessor::new(
                aws_sdk_sfn::Client::new(sdk),
                r.clone(),
            )),
            None => Arc::new(api::reprocess::NotConfigured),
        },
        transforms: Arc::new({
            let transforms = api::Transforms::new(
                config.transforms.policy.clone(),
                config.transforms.link_keys.clone(),
                config.transforms.public_url.clone(),
            );
            match &config.transforms.cdn {
                Some(signer) => transforms.with_cdn(signer.clone()),
                None => transforms,
            }
        }),
    }
}

/// The api function's whole service: the API's router over [`api_state`], with CORS for
/// `allow_origin` when one is given.
pub fn app(state: ApiState, allow_origin: Option<&str>) -> Result<Router, String> {
    let router = api::router(state).layer(axum::middleware::map_request(stage_prefix));
    Ok(
        match allow_origin.map(str::trim).filter(|o| !o.is_empty()) {
            Some(origin) => router.layer(cors(origin)?),
            None => router,
        },
    )
}

/// The stage a REST API serves under (`/dev`), as `X-Forwarded-Prefix`: the router sees paths
/// without it (`AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH`), but links it hands out must carry it.
/// A client's own header of that name is dropped.
async fn stage_prefix(mut request: axum::extract::Request) -> axum::extract::Request {
    request
        .headers_mut()
        .remove(api::transform::FORWARDED_PREFIX);
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        _ => None,
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && s != "$default"
    };
    if let Some(value) = stage
        .filter(|s| valid(s))
        .and_then(|s| HeaderValue::from_str(&format!("/{s}")).ok())
    {
        request
            .headers_mut()
            .insert(api::transform::FORWARDED_PREFIX, value);
    }
    request
}

/// What the template's `Cors` promises the preflight, for the actual responses: the origin,
/// the headers and methods clients send, and `Location` (of a created upload) readable.
pub fn cors(origin: &str) -> Result<CorsLayer, String> {
    let origin = if origin == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::exact(
            HeaderValue::from_str(origin)
                .map_err(|_| format!("{ALLOW_ORIGIN}: `{origin}` is not an origin"))?,
        )
    };
    Ok(CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION])
        .max_age(std::time::Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(claim: Value) -> Vec<String> {
        groups(&claim)
    }

    #[test]
    fn reads_every_form_of_the_groups_claim() {
        assert_eq!(names(json!("admin")), ["admin"]);
        assert_eq!(names(json!("admin,editors")), ["admin", "editors"]);
        assert_eq!(names(json!("editors, admin")), ["editors", "admin"]);
        assert_eq!(names(json!("[admin editors]")), ["admin", "editors"]);
        assert_eq!(names(json!("[admin, editors]")), ["admin", "editors"]);
        assert_eq!(names(json!("[admin]")), ["admin"]);
        assert_eq!(
            names(json!("[\"admin\",\"editors\"]")),
            ["admin", "editors"]
        );
        assert_eq!(names(json!(["admin", "editors"])), ["admin", "editors"]);
        assert!(names(json!("")).is_empty());
        assert!(names(json!("[]")).is_empty());
        assert!(names(json!(null)).is_empty());
        assert!(names(json!(7)).is_empty());
    }

    fn caller(claims: Value) -> Result<Caller, AuthError> {
        caller_from_claims(claims.as_object().unwrap())
    }

    #[test]
    fn admin_needs_the_exact_group() {
        let c = caller(json!({"sub": "s1", "cognito:groups": "editors,admin"})).unwrap();
        assert_eq!(
            c,
            Caller {
                sub: "s1".into(),
                admin: true
            }
        );
        for not_admin in [
            json!({"sub": "s1"}),
            json!({"sub": "s1", "cognito:groups": "administrators"}),
            json!({"sub": "s1", "cognito:groups": "Admin"}),
            json!({"sub": "s1", "cognito:groups": "[admins editors]"}),
        ] {
            assert!(!caller(not_admin.clone()).unwrap().admin, "{not_admin}");
        }
    }

    #[test]
    fn claims_without_a_sub_are_invalid() {
        for bad in [
            json!({}),
            json!({"sub": ""}),
            json!({"sub": 5}),
            json!({"cognito:groups": "admin"}),
        ] {
            assert!(
                matches!(caller(bad.clone()), Err(AuthError::Invalid(_))),
                "{bad}"
            );
        }
    }

    fn parts_of(event: Value) -> http::request::Parts {
        let request: lambda_http::Request =
            lambda_http::request::from_str(&event.to_string()).unwrap();
        request.into_parts().0
    }

    fn rest_event(authorizer: Value) -> Value {
        json!({
            "resource": "/v1/images",
            "path": "/v1/images",
            "httpMethod": "GET",
            "headers": {"Host": "abc123.execute-api.us-east-1.amazonaws.com"},
            "multiValueHeaders": {"Host": ["abc123.execute-api.us-east-1.amazonaws.com"]},
            "queryStringParameters": null,
            "multiValueQueryStringParameters": null,
            "pathParameters": null,
            "stageVariables": null,
            "requestContext": {
                "resourcePath": "/v1/images",
                "httpMethod": "GET",
                "path": "/dev/v1/images",
                "stage": "dev",
                "requestId": "r1",
                "accountId": "123456789012",
                "apiId": "abc123",
                "identity": {"sourceIp": "203.0.113.9"},
                "authorizer": authorizer
            },
            "body": null,
            "isBase64Encoded": false
        })
    }

    #[tokio::test]
    async fn reads_the_rest_authorizers_claims_from_the_request() {
        let parts = parts_of(rest_event(json!({
            "claims": {
                "sub": "7d8e9f00-1111-4222-8333-944455556666",
                "cognito:groups": "admin",
                "token_use": "id",
                "exp": "Tue Apr 04 18:39:39 UTC 2023"
            }
        })));
        let c = ApiGatewayClaims.caller(&parts).await.unwrap();
        assert_eq!(c.sub, "7d8e9f00-1111-4222-8333-944455556666");
        assert!(c.admin);
    }

    #[tokio::test]
    async fn no_claims_is_missing_credentials() {
        for authorizer in [json!(null), json!({}), json!({"claims": {}})] {
            let parts = parts_of(rest_event(authorizer.clone()));
            assert_eq!(
                ApiGatewayClaims.caller(&parts).await,
                Err(AuthError::Missing),
                "{authorizer}"
            );
        }
        let (parts, ()) = http::Request::new(()).into_parts();
        assert_eq!(
            ApiGatewayClaims.caller(&parts).await,
            Err(AuthError::Missing)
        );
    }
}
