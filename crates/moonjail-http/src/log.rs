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

/// Where the key extractor leaves the key's rate-limit state for the answer's
/// `RateLimit-*` headers (one per request; empty without `--rate` or a key).
#[derive(Clone, Default)]
pub(crate) struct RateSlot(std::sync::Arc<std::sync::Mutex<Option<crate::error::RateLimitInfo>>>);

impl RateSlot {
    pub(crate) fn set(&self, info: crate::error::RateLimitInfo) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
    }

    fn take(&self) -> Option<crate::error::RateLimitInfo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
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
    let mut request = request;
    let rate = state.config().rate_limit.map(|_| {
        let slot = RateSlot::default();
        request.extensions_mut().insert(slot.clone());
        slot
    });
    let mut response = next.run(request).instrument(span.clone()).await;
    pending.answered();
    if let Some(info) = rate.and_then(|slot| slot.take()) {
        // A 429 for the rate carries its own (remaining 0).
        if !response.headers().contains_key("ratelimit-limit") {
            info.set_headers(response.headers_mut());
        }
    }
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
