//! What every handler shares: the configuration, the executors, the per-key limits, the
//! sessions and the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moonjail::units::{format_duration, format_size, parse_duration, parse_size};
use moonjail::{CallOptions, Limits, Profile, Sandbox, Spec};

use crate::admission::{Executors, KeyLimits};
use crate::api::{LimitsRequest, Quantity};
use crate::config::Config;
use crate::error::{ApiError, Error};
use crate::metrics::{Metrics, RequestTally, Snapshot};
use crate::runners::Runners;
use crate::sessions::Sessions;
use crate::suspended::SuspendedRuns;

/// The stack of every thread that runs Lua or parses a request: deep enough for the Lua
/// C stack and for deeply nested JSON.
pub(crate) const STACK_BYTES: usize = 16 << 20;

/// The service's shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[doc(hidden)]
pub struct Inner {
    pub(crate) config: Config,
    pub(crate) executors: Executors,
    pub(crate) runners: Runners,
    pub(crate) key_limits: KeyLimits,
    pub(crate) sessions: Sessions,
    /// Runs suspended at a deferred tool call, waiting for their answer.
    pub(crate) suspended: Arc<SuspendedRuns>,
    /// The sandbox has deferred tools: runs go through `Sandbox::start`.
    pub(crate) defers: bool,
    pub(crate) metrics: Metrics,
    ready: AtomicBool,
    stopping: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Checks `config` and sets up the state around it. Not ready until
    /// [`AppState::warm_up`] has run a script.
    ///
    /// # Errors
    /// [`Error::Config`] for a setting that cannot work, [`Error::Io`] when the threads
    /// that run scripts cannot start.
    pub fn new(config: Config) -> Result<AppState, Error> {
        config.validate()?;
        let runners = Runners::start(config.workers, STACK_BYTES).map_err(|source| Error::Io {
            what: "starting the threads that run scripts".into(),
            source,
        })?;
        Ok(AppState {
            inner: Arc::new(Inner {
                executors: Executors::new(config.workers, config.queue),
                runners,
                key_limits: KeyLimits::new(config.key_concurrency, config.rate_limit),
                sessions: Sessions::new(
                    config.max_sessions,
                    config.max_sessions_per_key,
                    config.session_idle,
                ),
                suspended: Arc::new(SuspendedRuns::new(
                    config.max_suspended,
                    config.max_suspended_per_key,
                    config.suspend_timeout,
                )),
                defers: config
                    .sandbox
                    .tools()
                    .is_some_and(|tools| tools.deferred().next().is_some()),
                metrics: Metrics::new(),
                ready: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// True once a script has run (isolated: once a worker is up and answering) and
    /// until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Requests read so far, and those never answered (their client left first, or the
    /// shutdown's grace period cancelled them): after a stop, what it cost.
    pub fn requests(&self) -> RequestTally {
        self.metrics.tally()
    }

    /// Requests executing now (runs and session calls).
    pub fn executing(&self) -> usize {
        self.executors.running()
    }

    /// Requests waiting for an executor now.
    pub fn queued(&self) -> usize {
        self.executors.queued()
    }

    /// Sessions open now.
    pub fn live_sessions(&self) -> usize {
        self.sessions.live()
    }

    /// Runs suspended at a deferred tool call now, waiting for their answer (or being
    /// resumed).
    pub fn suspended_runs(&self) -> usize {
        self.suspended.live()
    }

    /// Marks the service as stopping: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Runs `return 1` until it succeeds (retrying each second, logging why not), then
    /// marks the service ready. Isolated, that is a worker started, locked down and
    /// answering: the pool is warm.
    pub async fn warm_up(&self) {
        loop {
            let sandbox = self.config.sandbox.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                sandbox.run("return 1", &serde_json::Value::Null)
            })
            .await;
            match outcome {
                Ok(outcome) if outcome.is_ok() => {
                    self.ready.store(true, Ordering::Release);
                    tracing::info!("ready: a warm-up run succeeded");
                    return;
                }
                Ok(outcome) => {
                    let why = outcome.error().map(ToString::to_string).unwrap_or_default();
                    tracing::error!(error = %why, "warm-up run failed; retrying in 1 s");
                }
                Err(e) => tracing::error!(error = %e, "warm-up run panicked; retrying in 1 s"),
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The metrics' text with the gauges of now.
    pub(crate) fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        self.metrics.encode(Snapshot {
            queue_depth: self.executors.queued(),
            running: self.executors.running(),
            pool_size: self.executors.workers(),
            live_sessions: self.sessions.live(),
            suspended_runs: self.suspended.live(),
        })
    }

    /// The server's maximum limits (the sandbox's own).
    pub(crate) fn max_limits(&self) -> &Limits {
        self.config.sandbox.limits()
    }

    /// The sandbox a request runs in: the server's, or one with the request's profile
    /// and lowered limits (400 for an unknown profile or a limit over the maximum, 403 for a
    /// profile this server does not allow).
    pub(crate) fn sandbox_for(
        &self,
        profile: Option<&str>,
        limits: &LimitsRequest,
    ) -> Result<Sandbox, ApiError> {
        let base = &self.config.sandbox;
        let profile = match profile {
            None => base.profile(),
            Some(name) => {
                let profile: Profile = name.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "profile: unknown profile {name:?} (allowed: {})",
                        self.profile_names()
                    ))
                })?;
                if !self.config.profiles.contains(&profile) {
                    return Err(ApiError::forbidden(format!(
                        "profile: {name:?} is not allowed on this server (allowed: {})",
                        self.profile_names()
                    )));
                }
                profile
            }
        };
        if profile == base.profile() && limits.is_empty() {
            return Ok(base.clone());
        }
        let mut spec: Spec = base.spec().clone();
        spec.profile = profile;
        spec.limits = narrow(base.limits(), limits)?;
        base.with_spec(spec)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// A session request's lowered limits (400 over the maximum).
    pub(crate) fn call_options(
        &self,
        timeout: Option<&Quantity>,
        instructions: Option<u64>,
    ) -> Result<CallOptions, ApiError> {
        let max = self.max_limits();
        let mut options = CallOptions::default();
        if let Some(t) = timeout {
            if let Some(t) = duration("timeout", t, max.timeout)? {
                options = options.timeout(t);
            }
        }
        if let Some(n) = instructions {
            options = options.instructions(count("instructions", n, max.instructions)?);
        }
        Ok(options)
    }

    fn profile_names(&self) -> String {
        let names: Vec<&str> = self.config.profiles.iter().map(|p| p.name()).collect();
        names.join(", ")
    }
}

/// `max` lowered by what the request asks for.
fn narrow(max: &Limits, asked: &LimitsRequest) -> Result<Limits, ApiError> {
    let mut limits = max.clone();
    if let Some(t) = &asked.timeout {
        limits.timeout = duration("limits.timeout", t, max.timeout)?;
    }
    if let Some(n) = asked.instructions {
        limits.instructions = Some(count("limits.instructions", n, max.instructions)?);
    }
    for (name, asked, limit) in [
        ("limits.memory", &asked.memory, &mut limits.memory_bytes),
        ("limits.output", &asked.output, &mut limits.output_bytes),
        ("limits.source", &asked.source, &mut limits.source_bytes),
        ("limits.result", &asked.result, &mut limits.result_bytes),
    ] {
        if let Some(q) = asked {
            *limit = size(name, q, *limit)?;
        }
    }
    if let Some(depth) = asked.result_depth {
        if depth > max.result_depth {
            return Err(over("limits.result_depth", depth, max.result_depth));
        }
        limits.result_depth = depth;
    }
    Ok(limits)
}

fn over(field: &str, asked: impl std::fmt::Display, max: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "{field}: {asked} is over this server's maximum of {max}"
    ))
}

/// A duration a request asks for, within `max` (`none` only when there is no maximum).
fn duration(
    field: &str,
    q: &Quantity,
    max: Option<Duration>,
) -> Result<Option<Duration>, ApiError> {
    if q.is_none() {
        return match max {
            None => Ok(None),
            Some(m) => Err(over(field, "none", format_duration(m))),
        };
    }
    let d = parse_duration(q.text()).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
    if d.is_zero() {
        return Err(ApiError::bad_request(format!(
            "{field}: must be greater than zero"
        )));
    }
    match max {
        Some(m) if d > m => Err(over(field, format_duration(d), format_duration(m))),
        _ => Ok(Some(d)),
    }
}

/// A size a request asks for, within `max`.
fn size(field: &str, q: &Quantity, max: Option<usize>) -> Result<Option<usize>, ApiError> {
    if q.is_none() {
        return match max {
            None => Ok(None),
            Some(m) => Err(over(field, "none", format_size(m as u64))),
        };
    }
    let n = parse_size(q.text()).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
    let n = usize::try_from(n).map_err(|_| ApiError::bad_request(format!("{field}: too large")))?;
    match max {
        Some(m) if n > m => Err(over(field, format_size(n as u64), format_size(m as u64))),
        _ => Ok(Some(n)),
    }
}

/// A count a request asks for, within `max`.
fn count(field: &str, n: u64, max: Option<u64>) -> Result<u64, ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request(format!(
            "{field}: must be at least 1"
        )));
    }
    match max {
        Some(m) if n > m => Err(over(field, n, m)),
        _ => Ok(n),
    }
}
