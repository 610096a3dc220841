//! Checks on requests before they reach a route: a deadline for the API's requests, with
//! `--auth none` a loopback `Host` only, and beyond loopback `/metrics` for admins only.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiError, CallerSource};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

/// How long an API request (its small JSON body included) may take, start to answer.
pub const API_REQUEST_TIME: Duration = Duration::from_secs(30);

/// Answers 408 `RequestTimeout` when the request is not answered within [`API_REQUEST_TIME`]:
/// a body sent a byte at a time holds nothing for longer.
pub async fn api_deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(API_REQUEST_TIME, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "the request was not complete within {} s",
                API_REQUEST_TIME.as_secs()
            ),
        )
        .into_response(),
    }
}

/// With `--auth none`: 421 unless the request names this machine by a loopback address or
/// `localhost`. Without it, a web page the user opens could reach the server through a DNS
/// name that first points at the page's own server, then at 127.0.0.1 (DNS rebinding), and
/// act as the admin.
pub async fn loopback_host_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match host {
        Some(host) if is_loopback_host(host) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "MisdirectedRequest",
            "without authentication (--auth none) this server answers only requests to \
             localhost, 127.0.0.1 or [::1]",
        )
        .into_response(),
    }
}

/// When serving beyond loopback: `GET /metrics` only with an admin's bearer token. The
/// metrics name routes, counts and timings of every user's work, which is the operator's
/// business; a scraper sends the token (Prometheus: `authorization: {credentials: ...}`).
/// On a loopback address only this machine's users reach it, as they reach the data
/// directory's database.
pub async fn metrics_for_admins(
    State(auth): State<Arc<dyn CallerSource>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != "/metrics" {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match auth.caller(&parts).await {
        Ok(caller) if caller.admin => next.run(Request::from_parts(parts, body)).await,
        Ok(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "/metrics needs an admin's token (imgpipe token --admin) when served beyond \
             loopback",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `localhost`, a 127.0.0.0/8 address or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || valid_port(tail) => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `:` and 1-5 digits.
fn valid_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_only() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.5.6.7:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "rebind.example.com",
            "rebind.example.com:8080",
            "localhost.example.com",
            "127.0.0.1.nip.io",
            "192.168.1.2:8080",
            "[::2]:80",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:123456",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
