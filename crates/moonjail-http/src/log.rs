//! One log line per request (a tower layer, not code in handlers): method, route, key
//! name, status, outcome kind and duration. Never the script's source or input.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

/// What a response was, for the log: the outcome's kind (`ok`, `timeout`...) or the
/// refusal's (`unauthorized`...). Handlers put it in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged {
    kind: &'static str,
}

impl Logged {
    pub(crate) fn kind(kind: &'static str) -> Logged {
        Logged { kind }
    }
}

/// The middleware: a span per request (handlers and extractors record the key into
/// it), then one event when the response is ready.
pub(crate) async fn log_request(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "(no route)".to_string(), |m| m.as_str().to_string());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        key = tracing::field::Empty,
    );
    let start = Instant::now();
    let pending = state.metrics.request_read();
    let response = next.run(request).instrument(span.clone()).await;
    pending.answered();
    let status = response.status().as_u16();
    let kind = response
        .extensions()
        .get::<Logged>()
        .map_or("-", |l| l.kind);
    let took = start.elapsed();
    state.metrics.request(route, status, took);
    let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
    span.in_scope(|| tracing::info!(status, outcome = kind, ms, "answered"));
    response
}
