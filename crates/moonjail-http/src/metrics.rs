//! The service's Prometheus metrics (`GET /metrics`, OpenMetrics text): runs by profile
//! and outcome kind, their latency, requests by route and status and how long each took
//! to answer (queueing included), limit hits by kind, tool calls, connections closed
//! for being idle or slow, and the gauges of the moment (queue depth, executors busy,
//! pool size, live sessions, suspended runs, open connections), and resumes of suspended
//! runs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use moonjail::Outcome;

/// What a run is counted under.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    /// `run`, `resume` (a suspended run resumed) or `session`.
    mode: &'static str,
    profile: &'static str,
    /// `ok`, or the error kind.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    /// `idle` or `header`.
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// A request's answer time buckets: 100 µs to ~50 s, each 1.5 times the last (fine
/// enough to tell a 6 ms p99 from a 9 ms one).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 1.5, 33))
}

type RequestDurations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric, and the registry that writes them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    latency: Histogram,
    limit_hits: Family<KindLabels, Counter>,
    tool_calls: Counter,
    requests: Family<RequestLabels, Counter>,
    requests_read: Counter,
    requests_unanswered: Counter,
    request_durations: RequestDurations,
    queue_depth: Gauge,
    running: Gauge,
    pool_size: Gauge,
    live_sessions: Gauge,
    suspended_runs: Gauge,
    resumes: Counter,
    connections: Gauge,
    connections_expired: Family<PhaseLabels, Counter>,
}

/// A request read and not yet answered: counted as unanswered if it is dropped before
/// [`PendingRequest::answered`] (its client closed the connection, or the shutdown's grace
/// period cancelled it).
pub(crate) struct PendingRequest(Option<Counter>);

impl PendingRequest {
    pub(crate) fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if let Some(unanswered) = self.0.take() {
            unanswered.inc();
        }
    }
}

/// How many requests the service read, and how many of them it never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTally {
    /// Requests read (their head complete and routed), answered or not.
    pub read: u64,
    /// Requests read but never answered: their client closed the connection first, or
    /// the shutdown's grace period cancelled them.
    pub unanswered: u64,
}

/// An open connection, counted until it is dropped.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The gauges' values at scrape time.
pub(crate) struct Snapshot {
    pub(crate) queue_depth: usize,
    pub(crate) running: usize,
    pub(crate) pool_size: usize,
    pub(crate) live_sessions: usize,
    pub(crate) suspended_runs: usize,
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("moonjail");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs and session calls, by mode, profile and outcome (ok or the error kind)",
            runs.clone(),
        );
        // 100 µs to ~27 s.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 19));
        registry.register(
            "run_duration_seconds",
            "Wall-clock time of runs and session calls, as measured by the sandbox",
            latency.clone(),
        );
        let limit_hits = Family::<KindLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Runs stopped by a limit, by kind (timeout, memory_limit, instruction_limit, output_limit)",
            limit_hits.clone(),
        );
        let tool_calls = Counter::default();
        registry.register(
            "tool_calls",
            "Host tool calls made by scripts",
            tool_calls.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let requests_read = Counter::default();
        registry.register(
            "http_requests_read",
            "HTTP requests read (head complete), answered or not",
            requests_read.clone(),
        );
        let requests_unanswered = Counter::default();
        registry.register(
            "http_requests_unanswered",
            "HTTP requests read but never answered: their client closed the connection \
             first, or the shutdown's grace period cancelled them",
            requests_unanswered.clone(),
        );
        let request_durations: RequestDurations =
            Family::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival (its head read) to its response, by route: what a \
             client waits, the executor queue included, the network and its own scheduling not",
            request_durations.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests waiting for an executor",
            queue_depth.clone(),
        );
        let running = Gauge::default();
        registry.register("executors_busy", "Requests executing now", running.clone());
        let pool_size = Gauge::default();
        registry.register(
            "pool_size",
            "Executors: requests that may execute at once (isolated: the worker pool's size)",
            pool_size.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register("live_sessions", "Open sessions", live_sessions.clone());
        let suspended_runs = Gauge::default();
        registry.register(
            "suspended_runs",
            "Runs suspended at a deferred tool call, held for their answer (or being resumed)",
            suspended_runs.clone(),
        );
        let resumes = Counter::default();
        registry.register(
            "resumes",
            "Suspended runs resumed (POST /v1/runs/{id}/resume), counted once their outcome is answered",
            resumes.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "HTTP connections open now",
            connections.clone(),
        );
        let connections_expired = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Connections closed by the service: idle past the idle timeout (phase idle), or a \
             request's head not complete within the header timeout (phase header)",
            connections_expired.clone(),
        );
        Metrics {
            registry,
            runs,
            latency,
            limit_hits,
            tool_calls,
            requests,
            requests_read,
            requests_unanswered,
            request_durations,
            queue_depth,
            running,
            pool_size,
            live_sessions,
            suspended_runs,
            resumes,
            connections,
            connections_expired,
        }
    }

    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    /// Counts a connection closed for outlasting a timeout.
    pub(crate) fn connection_expired(&self, phase: crate::conn::Expired) {
        self.connections_expired
            .get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            })
            .inc();
    }

    /// Counts one outcome.
    pub(crate) fn outcome(&self, mode: &'static str, profile: &'static str, outcome: &Outcome) {
        let kind = outcome.error().map(|e| e.kind);
        self.runs
            .get_or_create(&RunLabels {
                mode,
                profile,
                outcome: kind.map_or("ok", |k| k.as_str()),
            })
            .inc();
        self.latency.observe(outcome.stats.wall.as_secs_f64());
        if let Some(kind) = kind.filter(|k| k.is_limit()) {
            self.limit_hits
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc();
        }
        if !outcome.tool_calls.is_empty() {
            self.tool_calls.inc_by(outcome.tool_calls.len() as u64);
        }
    }

    /// Counts one resume of a suspended run.
    pub(crate) fn resumed(&self) {
        self.resumes.inc();
    }

    /// Counts a request read; its answer is counted by [`Metrics::request`], and if it
    /// never comes, the returned guard counts it unanswered when dropped.
    pub(crate) fn request_read(&self) -> PendingRequest {
        self.requests_read.inc();
        PendingRequest(Some(self.requests_unanswered.clone()))
    }

    /// Requests read, and those never answered.
    pub(crate) fn tally(&self) -> RequestTally {
        RequestTally {
            read: self.requests_read.get(),
            unanswered: self.requests_unanswered.get(),
        }
    }

    /// Counts one answered request, which took `took` to answer. The route moves from
    /// one label set to the other: no copy of it on the request's path.
    pub(crate) fn request(&self, route: String, status: u16, took: std::time::Duration) {
        let labels = RouteLabels { route };
        self.request_durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route: labels.route,
                status,
            })
            .inc();
    }

    /// The metrics as OpenMetrics text, with the gauges set to `now`.
    pub(crate) fn encode(&self, now: Snapshot) -> Result<String, std::fmt::Error> {
        self.queue_depth.set(gauge(now.queue_depth));
        self.running.set(gauge(now.running));
        self.pool_size.set(gauge(now.pool_size));
        self.live_sessions.set(gauge(now.live_sessions));
        self.suspended_runs.set(gauge(now.suspended_runs));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
