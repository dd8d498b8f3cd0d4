//! The router with its layers, and a server that binds, serves and shuts down
//! gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::api;
use crate::config::Config;
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
    /// finish within the configured grace period, closes every session (isolated: kills
    /// their workers) and returns. Warms up (for `/readyz`) and expires idle sessions in
    /// the background meanwhile.
    ///
    /// # Errors
    /// [`Error::Io`] when serving fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server { state, listener } = self;
        let warm = tokio::spawn({
            let state = state.clone();
            async move { state.warm_up().await }
        });
        let reaper = tokio::spawn({
            let state = state.clone();
            let every = (state.sessions.idle() / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(10));
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let closed = state.sessions.expire();
                    if closed > 0 {
                        tracing::info!(closed, "closed idle sessions");
                    }
                }
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let signalled = {
            let state = state.clone();
            async move {
                shutdown.await;
                state.begin_shutdown();
                tracing::info!("shutting down: no new connections; finishing requests in flight");
                let _ = stop_tx.send(());
            }
        };
        let app = router(state.clone());
        let serve = axum::serve(listener, app).with_graceful_shutdown(signalled);
        let grace = state.config().shutdown_grace;
        let outcome = tokio::select! {
            served = serve => served.map_err(|source| Error::Io { what: "serving".into(), source }),
            () = async move {
                if stop_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(?grace, "grace period over: cancelling the requests still in flight");
                Ok(())
            }
        };
        warm.abort();
        reaper.abort();
        state.sessions.clear();
        outcome
    }
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

/// A runtime sized for the service: `workers` async threads is plenty (the work happens
/// on blocking threads, as many as executors plus a few), with stacks deep enough for
/// deeply nested JSON.
///
/// # Errors
/// [`Error::Io`] when the runtime cannot start.
pub fn runtime(config: &Config) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.clamp(1, 4))
        .max_blocking_threads(config.workers + 4)
        .thread_stack_size(16 << 20)
        .thread_name("moonjail-http")
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "starting the async runtime".into(),
            source,
        })
}
