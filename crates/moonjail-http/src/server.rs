//! The router with its layers, and a server that binds, accepts, serves each connection
//! under its clock (see [`crate::conn`]) and shuts down gracefully.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api;
use crate::config::Config;
use crate::conn::{self, Clock, Timeouts, Watched};
use crate::error::{ApiError, Error, Result};
use crate::state::AppState;

/// The service's router: every route of `/openapi.json`, with the body limit, the
/// request timeout and the request log as layers, and JSON answers for unknown routes
/// and methods.
pub fn router(state: AppState) -> Router {
    let (router, _) = api::routes().split_for_parts();
    let timeout = state.config().request_timeout;
    router
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::no_method)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(move |response: Response| {
            json_for_timeout(response, timeout)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::log::log_request,
        ))
        .with_state(state)
}

/// The timeout layer answers a bare 408; every refusal has the JSON body.
async fn json_for_timeout(response: Response, timeout: Duration) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return ApiError::request_timeout(timeout).into_response();
    }
    response
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::openapi_document()
}

/// A bound service, not yet serving.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Checks `config` and binds `addr` (port 0: any free port; see
    /// [`Server::local_addr`]).
    ///
    /// # Errors
    /// [`Error::Config`], or [`Error::Io`] when the address cannot be bound.
    pub async fn bind(config: Config, addr: SocketAddr) -> Result<Server> {
        let state = AppState::new(config)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Io {
                what: format!("binding {addr}"),
                source,
            })?;
        Ok(Server { state, listener })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|source| Error::Io {
            what: "reading the listening address".into(),
            source,
        })
    }

    /// The shared state (for metrics and readiness in tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes; then stops accepting, lets requests in flight
    /// finish within the configured grace period, cancels what is still running, closes
    /// every session (isolated: kills their workers), gives up every suspended run (each
    /// ends as suspended) and returns. Warms up (for
    /// `/readyz`) and expires idle sessions in the background meanwhile.
    ///
    /// Each connection is closed when it sits idle longer than
    /// [`Config::idle_timeout`] or takes longer than [`Config::header_timeout`] to send
    /// a request's head; at most [`Config::max_connections`] are open at once.
    ///
    /// # Errors
    /// None so far: a failed accept is logged and retried, a failed connection closed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server { state, listener } = self;
        let warm = tokio::spawn({
            let state = state.clone();
            async move { state.warm_up().await }
        });
        let reaper = tokio::spawn({
            let state = state.clone();
            let every = (state.sessions.idle().min(state.suspended.timeout()) / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(10));
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let closed = state.sessions.expire();
                    if closed > 0 {
                        tracing::info!(closed, "closed idle sessions");
                    }
                    let expired = state.suspended.expire();
                    if !expired.is_empty() {
                        tracing::info!(
                            given_up = expired.len(),
                            "gave up suspended runs unanswered past the suspend timeout"
                        );
                        crate::suspended::give_up(expired);
                    }
                }
            }
        });
        let config = state.config();
        let timeouts = Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
        };
        let grace = config.shutdown_grace;
        let http = http1_builder(timeouts);
        let app = router(state.clone());
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let next = async {
                // At the cap, wait for a connection to close before accepting: new ones
                // wait in the listen backlog meanwhile.
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(ended) = connections.join_next() => {
                    if let Err(e) = ended {
                        if e.is_panic() {
                            tracing::error!(error = %e, "a connection's task panicked");
                        }
                    }
                }
                (slot, accepted) = next => {
                    let Ok(slot) = slot else { break };
                    match accepted {
                        Ok((stream, _peer)) => {
                            let serve = serve_connection(
                                &http, &graceful, &app, &state, stream, timeouts,
                            );
                            connections.spawn(async move {
                                serve.await;
                                drop(slot);
                            });
                        }
                        Err(e) if is_connection_error(&e) => {}
                        Err(e) => {
                            // Out of descriptors, most likely: give connections time to
                            // close rather than spin.
                            tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                            tokio::select! {
                                () = &mut shutdown => break,
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
            }
        }
        // Stop accepting: connections still in the backlog are refused.
        drop(listener);
        state.begin_shutdown();
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        // Idle connections close now, busy ones after their answer; then the grace
        // period is over and whatever is still running is cancelled.
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(?grace, "grace period over: cancelling the requests still in flight");
            }
        }
        connections.shutdown().await;
        warm.abort();
        reaper.abort();
        state.sessions.clear();
        give_up_suspended(&state, grace).await;
        // Runs still in a worker (past the grace period) end now: their workers must not
        // outlive the service, running to their own deadlines as orphans. Killed here,
        // before the process can exit; their supervisors then reap them (waited for a
        // little, so that the tally below counts them).
        let killed = state.config.sandbox.stop_workers();
        if killed > 0 {
            tracing::warn!(
                killed,
                "runs still in workers after the grace period: their workers were killed"
            );
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while state.executing() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // What a SIGTERM under load cost: requests read and never answered (cancelled
        // after the grace period, or left by their client).
        let tally = state.metrics.tally();
        if tally.unanswered == 0 {
            tracing::info!(read = tally.read, unanswered = 0, "stopped");
        } else {
            tracing::warn!(read = tally.read, unanswered = tally.unanswered, "stopped");
        }
        Ok(())
    }
}

/// Gives up every suspended run (each ends as suspended; in process, its thread is told
/// and joined), waiting at most `grace` for their threads: a stop never hangs on them.
async fn give_up_suspended(state: &AppState, grace: Duration) {
    let runs = state.suspended.close();
    if runs.is_empty() {
        return;
    }
    let count = runs.len();
    let dropped = tokio::task::spawn_blocking(move || drop(runs));
    match tokio::time::timeout(grace.max(Duration::from_millis(100)), dropped).await {
        Ok(_) => tracing::info!(count, "gave up the suspended runs"),
        Err(_) => tracing::warn!(count, "suspended runs still ending after the grace period"),
    }
}

/// HTTP/1.1 as every connection speaks it. A timer, so hyper's own header-read timeout
/// runs: a backstop behind [`conn::guard`], which bounds each phase separately (hyper's
/// clock starts when it begins waiting for a head, idle time included, so it is set to
/// both phases together). HTTP/2 is not compiled in: clients and load balancers reach the
/// service over HTTP/1.1, and an HTTP/2 stack would be attack surface of its own (stream
/// floods, its own keep-alive and header limits) for nothing the API needs.
fn http1_builder(timeouts: Timeouts) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle + timeouts.header)
        .keep_alive(true);
    builder
}

/// One accepted connection, ready to be spawned: served by `app` under its clock, watched
/// by `graceful`, counted in the metrics.
fn serve_connection(
    http: &http1::Builder,
    graceful: &GracefulShutdown,
    app: &Router,
    state: &AppState,
    stream: TcpStream,
    timeouts: Timeouts,
) -> impl Future<Output = ()> + Send + 'static {
    // Answers go out as soon as they are written, not after a delayed ACK.
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(Watched::new(stream, clock.clone()));
    let service = hyper::service::service_fn({
        let clock = clock.clone();
        let app = app.clone();
        move |request: Request<Incoming>| {
            clock.request();
            let answer = tower_service::Service::call(&mut app.clone(), request);
            let clock = clock.clone();
            async move {
                let response = answer.await;
                clock.answered();
                response
            }
        }
    });
    let served = graceful.watch(http.serve_connection(io, service));
    let state = state.clone();
    async move {
        let _open = state.metrics.connection_opened();
        match conn::guard(served, &clock, timeouts).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "a connection ended with an error"),
            Err(expired) => {
                state.metrics.connection_expired(expired);
                tracing::debug!(
                    phase = expired.as_str(),
                    "closed a connection: too long idle, or too slow sending a request's head"
                );
            }
        }
    }
}

/// An accept error that concerns one connection only (the next accept may succeed).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A runtime sized for the service: one async thread per two executors, at most 4, is
/// plenty, since the async side only speaks HTTP (runs happen on runner threads, one per
/// executor; session calls and lint on blocking threads), and fewer async threads wake
/// each other less; stacks deep enough for deeply nested JSON.
///
/// # Errors
/// [`Error::Io`] when the runtime cannot start.
pub fn runtime(config: &Config) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads((config.workers / 2).clamp(1, 4))
        .max_blocking_threads(config.workers + 4)
        .thread_stack_size(crate::state::STACK_BYTES)
        .thread_name("moonjail-http")
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "starting the async runtime".into(),
            source,
        })
}
