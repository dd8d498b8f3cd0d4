//! The service's errors: [`ApiError`], what a request gets when it is refused (one JSON
//! shape, `{"error": {"kind", "message"}}`, for every status), and [`Error`], why the
//! service could not start.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::log::Logged;

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: ErrorDetail,
}

/// What was wrong with a request, for a program (`kind`) and a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable category: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `request_timeout`, `payload_too_large`, `rate_limited`,
    /// `too_many_requests`, `too_many_sessions`, `too_many_suspended`, `overloaded`,
    /// `session_closed`, `shutting_down`, `unavailable`, `internal`.
    pub kind: String,
    /// What happened, naming the field, the limit or the key problem.
    pub message: String,
}

/// A rate limit's state, sent as `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` headers on every answer to a key while `--rate` is set (a 429 for
/// the rate says `Remaining: 0` and adds `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests in a full bucket.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the next request is allowed (0 when one is).
    pub reset_secs: u64,
}

/// A request the service refused: a status, a stable `kind` and a message, plus the
/// headers that tell a client when to come back.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<Duration>,
    rate_limit: Option<RateLimitInfo>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
            rate_limit: None,
        }
    }

    /// 400: the request is malformed; `message` names the field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no key, or not a valid one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the key is valid, but what it asks for is not allowed on this server (a
    /// profile outside `--profiles`).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: no such route, or no such session for this key.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the route does not serve this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 408: the whole request took longer than the request timeout.
    pub fn request_timeout(limit: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
    }

    /// 409: the session closed itself (after a timeout, say).
    pub fn session_closed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "session_closed", message)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over the {limit} byte limit"),
        )
    }

    /// 429: a per-key limit (rate, concurrency, sessions) was reached.
    pub fn too_many(kind: &'static str, message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, kind, message)
        }
    }

    /// 429 from the rate limit, with its headers.
    pub fn rate_limited(key: &str, info: RateLimitInfo) -> Self {
        ApiError {
            rate_limit: Some(info),
            ..Self::too_many(
                "rate_limited",
                format!(
                    "the key {key:?} is over its rate limit of {} requests; retry in {} s",
                    info.limit, info.reset_secs
                ),
                Duration::from_secs(info.reset_secs),
            )
        }
    }

    /// 503: every executor is busy and the queue is full, or the service is not ready.
    pub fn unavailable(
        kind: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, message)
        }
    }

    /// 500: a fault in the service itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// Whole seconds, at least one: what `Retry-After` says.
fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RateLimitInfo {
    /// Sets the `RateLimit-*` headers (those the 429 and every other answer carry).
    pub(crate) fn set_headers(&self, headers: &mut axum::http::HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset_secs),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs(after).max(1)));
        }
        if let Some(info) = self.rate_limit {
            info.set_headers(headers);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"moonjail\""),
            );
        }
        response.extensions_mut().insert(Logged::kind(self.kind));
        response
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot work (no workers, auth off on a public address...).
    #[error("{0}")]
    Config(String),
    /// The sandbox the requests run in could not be built.
    #[error(transparent)]
    Sandbox(#[from] moonjail::ConfigError),
    /// The key file could not be read or written.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The service's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
