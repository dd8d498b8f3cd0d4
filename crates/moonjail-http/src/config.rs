//! The service's settings: the sandbox requests run in (its limits are the most a request
//! may ask for), who may call, and how much work is admitted at once.

use std::time::Duration;

use moonjail::{Profile, Sandbox};

use crate::error::Error;
use crate::keys::KeyStore;

/// Who may call the service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Auth {
    /// Requests must carry `Authorization: Bearer KEY` with a key of this store.
    Keys(KeyStore),
    /// Anyone may call, as the key named `anonymous`. Only for a service listening on
    /// loopback (the CLI refuses it on any other address).
    None,
}

/// A per-key token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests added to the bucket each second.
    pub per_second: f64,
    /// The bucket's size: requests allowed at once after a pause.
    pub burst: u32,
}

/// Everything the service is configured with. Build one with [`Config::new`] and adjust
/// the fields; [`crate::AppState::new`] checks it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The sandbox requests run in. Its profile is the one a request gets when it names
    /// none; its limits are the most a request may ask for (asking for more is a 400).
    pub sandbox: Sandbox,
    /// The profiles a request may name. By default, every built-in profile.
    pub profiles: Vec<Profile>,
    /// Who may call. By default, [`Auth::Keys`] of an empty store: nobody.
    pub auth: Auth,
    /// Requests executed at once (runs and session calls). By default, the number of
    /// CPUs. Isolated, an executor beyond the worker pool's size waits for a worker:
    /// `moonjail serve` sizes both by [`default_workers`].
    pub workers: usize,
    /// Requests that may wait for an executor; past them a request gets 503 at once. By
    /// default, 4 per worker.
    pub queue: usize,
    /// The largest request body, in bytes; larger is a 413. By default, 2 MiB.
    pub max_body_bytes: usize,
    /// Open sessions in all. By default, 256.
    pub max_sessions: usize,
    /// Open sessions per key. By default, 16.
    pub max_sessions_per_key: usize,
    /// How long a session may sit unused before it is closed. By default, 10 minutes.
    pub session_idle: Duration,
    /// How long a run suspended at a deferred tool call (a sandbox with
    /// `SandboxBuilder::defer_tool`) waits for its answer before it is given up (it
    /// ends as suspended). By default, 15 minutes.
    pub suspend_timeout: Duration,
    /// Suspended runs held in all, each a live Lua state (isolated: its worker process,
    /// outside the pool's count); a run that suspends past it is given up and answered
    /// 503. By default, 256.
    pub max_suspended: usize,
    /// Suspended runs held per key; a run that suspends past it is given up and answered
    /// 429. By default, 16.
    pub max_suspended_per_key: usize,
    /// Requests one key may have in flight at once; past it, 429. By default, 64.
    pub key_concurrency: usize,
    /// Each key's request rate. By default, none.
    pub rate_limit: Option<RateLimit>,
    /// How long in-flight requests get to finish after a shutdown signal. By default,
    /// 10 s.
    pub shutdown_grace: Duration,
    /// How long a whole request may take, body upload included, before it is answered
    /// 408 (a backstop: runs have their own deadline, which should be well within it).
    /// By default, the sandbox's timeout plus 30 s, or 5 minutes without one.
    pub request_timeout: Duration,
    /// How long a client may take to send a request's head (request line and headers),
    /// counted from its first byte; past it the connection is closed without an answer.
    /// The defence against clients that trickle their headers to hold connections
    /// (slowloris). By default, 10 s.
    pub header_timeout: Duration,
    /// How long a connection may stay open without a request in progress: after it is
    /// accepted, and between an answer and the next request's first byte (writing the
    /// answer out included); past it the connection is closed. Keep it longer than the
    /// idle timeout of a load balancer in front, which would otherwise reuse a
    /// connection just as it closes. By default, 75 s.
    pub idle_timeout: Duration,
    /// Connections open at once; at the cap, new connections wait in the listen backlog
    /// until one closes. Keep it below the process's file-descriptor limit (`ulimit -n`)
    /// with room for workers and files. By default, 512.
    pub max_connections: usize,
}

/// What `moonjail serve` allows a request body to weigh by default.
pub const DEFAULT_MAX_BODY: usize = 2 << 20;

/// How many requests the service executes at once by default: the number of CPUs in
/// process, half as many again isolated.
///
/// In process an executor is a thread that computes from start to end: more of them than
/// cores only preempt each other. Isolated, each run is a relay: the executor's thread
/// hands the script to its worker process and sleeps until the answer, then sends the
/// reply while the worker waits. With one executor per core a core sits idle in each
/// handoff (7% of the machine under saturation, measured with `perf`); a third executor
/// on two cores raised throughput by 10% and brought the p99 from about 10 ms to 8 ms
/// (BENCHMARKS.md §6), while a fourth gave nothing more.
pub fn default_workers(isolated: bool) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    if isolated {
        cpus + cpus.div_ceil(2)
    } else {
        cpus
    }
}

impl Config {
    /// The defaults around `sandbox` (see each field).
    pub fn new(sandbox: Sandbox) -> Config {
        let workers = default_workers(false);
        let request_timeout = sandbox
            .limits()
            .timeout
            .map_or(Duration::from_secs(300), |t| t + Duration::from_secs(30));
        Config {
            sandbox,
            profiles: Profile::ALL.to_vec(),
            auth: Auth::Keys(KeyStore::new()),
            workers,
            queue: workers * 4,
            max_body_bytes: DEFAULT_MAX_BODY,
            max_sessions: 256,
            max_sessions_per_key: 16,
            session_idle: Duration::from_secs(600),
            suspend_timeout: Duration::from_secs(900),
            max_suspended: 256,
            max_suspended_per_key: 16,
            key_concurrency: 64,
            rate_limit: None,
            shutdown_grace: Duration::from_secs(10),
            request_timeout,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_string()));
        if self.workers == 0 {
            return bad("workers: must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return bad("max body size: must be at least 1 byte");
        }
        if self.key_concurrency == 0 {
            return bad("per-key concurrency: must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request timeout: must be greater than zero");
        }
        if self.header_timeout.is_zero() {
            return bad("header timeout: must be greater than zero");
        }
        if self.idle_timeout.is_zero() {
            return bad("idle timeout: must be greater than zero");
        }
        if self.max_connections == 0 {
            return bad("max connections: must be at least 1");
        }
        if self.session_idle.is_zero() {
            return bad("session idle timeout: must be greater than zero");
        }
        if self.suspend_timeout.is_zero() {
            return bad("suspend timeout: must be greater than zero");
        }
        if let Some(rate) = self.rate_limit {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                return bad("rate limit: needs a positive rate and a burst of at least 1");
            }
        }
        if !self.profiles.contains(&self.sandbox.profile()) {
            return bad("profiles: the sandbox's own profile must be allowed");
        }
        Ok(())
    }
}
