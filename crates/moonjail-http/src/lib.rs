//! moonjail as an HTTP service: authenticated one-off runs and persistent sessions of
//! untrusted Lua, for programs in any language. The `moonjail serve` command is a thin
//! shell over this crate.
//!
//! - `POST /v1/lint` `{code, profile}` checks a script without running it.
//! - `POST /v1/run` `{code, input, profile, limits, expression}` answers the outcome
//!   document of `moonjail run --json` (`moonjail::Outcome`'s serialisation; its schema
//!   in `/openapi.json` is derived from the same type).
//! - Sessions: `POST /v1/sessions`, then `.../{id}/exec`, `eval`, `call`,
//!   `has_function`, and `DELETE /v1/sessions/{id}`. Each lives on a thread of its own
//!   (isolated: in a worker process of its own), belongs to the key that opened it (any
//!   other key gets 404), and closes when idle.
//! - Human approval: on a sandbox with deferred tools (`SandboxBuilder::defer_tool`), a
//!   run that calls one answers the outcome of kind `suspended` with the pending call and
//!   `"run"`, an id, in `error.value`; `POST /v1/runs/{id}/resume` `{answer}` or
//!   `{error}` continues it, `DELETE /v1/runs/{id}` gives it up. Held in memory, owned by
//!   the key that started it, given up after [`Config::suspend_timeout`], capped by
//!   [`Config::max_suspended`] and [`Config::max_suspended_per_key`].
//! - `GET /healthz`, `/readyz`, `/metrics` (OpenMetrics), `/openapi.json`.
//!
//! Requests carry `Authorization: Bearer KEY` ([`KeyStore`]); each key has a concurrency
//! cap and optionally a rate limit (429, with `Retry-After` and `RateLimit-*` headers).
//! Work goes through a fixed number of executors behind a bounded queue: when it is
//! full, a request gets 503 with `Retry-After` at once. Limits a request asks for are at
//! most the server's: more is a 400 naming the field and the maximum.
//!
//! Connections are HTTP/1.1 and cannot be held by slow clients: one whose request head
//! takes longer than [`Config::header_timeout`] from its first byte, or that sits idle
//! longer than [`Config::idle_timeout`], is closed; at most [`Config::max_connections`]
//! are open at once.
//!
//! ```no_run
//! use moonjail::Sandbox;
//! use moonjail_http::{Auth, Config, Server};
//!
//! # async fn example() -> Result<(), moonjail_http::Error> {
//! let mut config = Config::new(Sandbox::builder().build()?);
//! config.auth = Auth::None; // loopback only
//! let server = Server::bind(config, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("listening on {}", server.local_addr()?);
//! server.run(moonjail_http::shutdown_signal()).await
//! # }
//! ```

mod admission;
mod api;
mod config;
mod conn;
mod error;
mod extract;
pub mod keys;
mod log;
mod metrics;
mod runners;
mod server;
mod sessions;
mod state;
mod suspended;

pub use api::{
    CallRequest, EvalRequest, ExecRequest, HasFunctionAnswer, HasFunctionRequest, Health,
    LimitsRequest, LintRequest, OpenSessionRequest, Quantity, ResumeRequest, RunRequest,
    SessionCreated,
};
pub use config::{default_workers, Auth, Config, RateLimit, DEFAULT_MAX_BODY};
pub use error::{ApiError, Error, ErrorBody, ErrorDetail, RateLimitInfo, Result};
pub use extract::{Caller, JsonBody, ANONYMOUS};
pub use keys::{KeyError, KeyStore};
pub use metrics::RequestTally;
pub use server::{openapi, router, runtime, shutdown_signal, Server};
pub use state::AppState;
