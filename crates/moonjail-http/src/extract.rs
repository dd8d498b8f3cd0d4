//! Typed extractors: [`Caller`] (who is asking, within their key's limits) and
//! [`JsonBody`] (a bounded, precisely reported JSON body).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::Auth;
use crate::error::ApiError;
use crate::state::AppState;

/// The key name of an unauthenticated caller (`--insecure-no-auth`).
pub const ANONYMOUS: &str = "anonymous";

/// An authenticated caller, holding a place among its key's requests in flight for as
/// long as the request lasts.
pub struct Caller {
    /// The key's name.
    pub key: Arc<str>,
    _in_flight: OwnedSemaphorePermit,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key: Arc<str> = match &state.config().auth {
            Auth::None => Arc::from(ANONYMOUS),
            Auth::Keys(store) => {
                let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
                    ApiError::unauthorized(
                        "no Authorization header: send `Authorization: Bearer KEY`",
                    )
                })?;
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|h| {
                        let (scheme, token) = h.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                    })
                    .ok_or_else(|| {
                        ApiError::unauthorized("the Authorization header is not `Bearer KEY`")
                    })?;
                let name = store
                    .verify(token)
                    .ok_or_else(|| ApiError::unauthorized("the key is not valid"))?;
                Arc::from(name)
            }
        };
        tracing::Span::current().record("key", &*key);
        if let Some(info) = state.key_limits.take_token(&key)? {
            // For the answer's headers, set by the request's middleware.
            if let Some(slot) = parts.extensions.get::<crate::log::RateSlot>() {
                slot.set(info);
            }
        }
        let in_flight = state.key_limits.enter(&key)?;
        Ok(Caller {
            key,
            _in_flight: in_flight,
        })
    }
}

/// A JSON body of type `T`. The text is checked before it is parsed (nesting within the
/// server's result depth, parsed size within its memory limit), the body's size is
/// capped (413), an empty body reads as `{}`, and a body that does not match `T` is a 400
/// whose message names the field (`limits.timeout: invalid type: ...`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config().max_body_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::bad_request(format!("reading the body: {}", rejection.body_text()))
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let value = moonjail::parse_input(text, state.max_limits()).map_err(|e| {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.message))
        })?;
        let parsed: T = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::bad_request(inner.to_string())
            } else {
                ApiError::bad_request(format!("{path}: {inner}"))
            }
        })?;
        Ok(JsonBody(parsed))
    }
}
