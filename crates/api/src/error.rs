//! Errors as the API answers them: JSON `{error, message}` with the right status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use pipeline::PortError;
use serde::Serialize;

use crate::AuthError;

/// How long a client should wait before retrying a 503: long enough for a throttled store or
/// an unreachable JWKS endpoint to recover, short enough not to matter to a person.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {message}")]
pub struct ApiError {
    pub status: u16,
    /// A stable name, e.g. `NotFound`, `InvalidRecipe`, `Unauthorized`.
    pub error: String,
    pub message: String,
    /// Seconds for the `Retry-After` header; a 503 without one gets [`RETRY_AFTER_SECONDS`].
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: status.as_u16(),
            error: error.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the client when to try again.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 `InvalidRequest`: a body, parameter or combination the API does not accept.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    /// 400 `InvalidRecipe`: an unknown preset or a recipe that does not validate.
    pub fn invalid_recipe(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRecipe", message)
    }

    /// 400 `InvalidCursor`: a page cursor this server did not issue.
    pub fn invalid_cursor(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidCursor", message)
    }

    /// 401 `Unauthorized`, answered with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 404 `NotFound`. Also what another user's image answers, so ids cannot be probed.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    /// 500 `Internal`. The details go to the log, never to the client: they can name
    /// tables, buckets and keys of other users.
    pub fn internal(details: impl std::fmt::Display) -> Self {
        tracing::error!(error = %details, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            "internal error; it has been logged",
        )
    }

    /// 503 `Unavailable`, answered with `Retry-After`.
    pub fn unavailable(details: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %details, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "temporarily unavailable; retry shortly",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The error a bare status stands for, when something below the routes (axum itself, a
    /// tower layer) answered without a JSON body.
    pub fn for_status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let error = match status {
            StatusCode::BAD_REQUEST => "InvalidRequest",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            s if s.is_server_error() => "Internal",
            _ => "InvalidRequest",
        };
        ApiError {
            status: status.as_u16(),
            error: error.to_string(),
            message: reason,
            retry_after: None,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (
            status,
            Json(Body {
                error: &self.error,
                message: &self.message,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE if self.retry_after.is_none() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::NotFound(what) => {
                // A store saying "not there" mid-request is a race with a delete; the key it
                // names is internal, so the client only hears that the image is gone.
                tracing::info!(%what, "not found in a store");
                ApiError::not_found("no such image")
            }
            PortError::Transient(_) => ApiError::unavailable(e),
            PortError::Permanent(_) => ApiError::internal(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::unauthorized(
                "this route needs `Authorization: Bearer <token>`".to_string(),
            ),
            AuthError::Invalid(why) => ApiError::unauthorized(format!("invalid token: {why}")),
            AuthError::Unavailable(why) => ApiError::unavailable(format!("auth: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_errors_map_to_statuses_without_leaking_details() {
        let e = ApiError::from(PortError::Permanent("table t-secret is gone".into()));
        assert_eq!((e.status, e.error.as_str()), (500, "Internal"));
        assert!(!e.message.contains("t-secret"), "{}", e.message);
        let e = ApiError::from(PortError::Transient("throttled".into()));
        assert_eq!((e.status, e.error.as_str()), (503, "Unavailable"));
        let e = ApiError::from(PortError::NotFound("uploads/u/x".into()));
        assert_eq!((e.status, e.error.as_str()), (404, "NotFound"));
        assert!(!e.message.contains("uploads/"), "{}", e.message);
    }

    #[test]
    fn auth_errors_map_to_401_and_503_with_their_headers() {
        let r = ApiError::from(AuthError::Missing).into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = ApiError::from(AuthError::Unavailable("jwks down".into())).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
