//! The web page at GET /: static HTML, JavaScript and CSS compiled into the binary, no build
//! step and nothing loaded from elsewhere. It is a client of the same API as any other (a
//! pasted bearer token, POST /v1/uploads, the returned form, polling GET /v1/images/{id}).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// The routes of the page. `base_url` is where upload forms and download URLs point, which
/// the page's content security policy must allow when it is not the page's own origin.
pub fn routes(base_url: &str) -> Router {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: {base_url}; \
         connect-src 'self' {base_url}; form-action 'self' {base_url}; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    let csp = HeaderValue::try_from(csp).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
    });
    Router::new()
        .route(
            "/",
            get(move || {
                let csp = csp.clone();
                async move { asset("text/html; charset=utf-8", INDEX_HTML, Some(csp)) }
            }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS, None) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS, None) }),
        )
}

fn asset(content_type: &'static str, body: &'static str, csp: Option<HeaderValue>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated every time: a new binary may bring a new page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}
