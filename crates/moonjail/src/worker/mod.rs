//! Isolated mode: each run executes in a worker process that locked itself down (new
//! namespaces, rlimits, dropped credentials, `no_new_privs`, Landlock, a seccomp
//! allowlist) before it read a single byte of untrusted code, under a deadline the
//! supervisor enforces from outside.
//!
//! ```no_run
//! use moonjail::worker::{Isolation, ProcessConfig};
//! use moonjail::Sandbox;
//!
//! fn main() {
//!     // First thing in main: serve as a worker when started as one.
//!     moonjail::worker::run_if_worker();
//!
//!     let sandbox = Sandbox::builder()
//!         .isolation(Isolation::Process(ProcessConfig::default()))
//!         .build()
//!         .unwrap();
//!     let outcome = sandbox.run("return 1 + 1", &serde_json::Value::Null);
//!     assert_eq!(outcome.result.unwrap(), 2);
//! }
//! ```
//!
//! The pieces, one module each: `protocol` (the versioned, length-prefixed frames),
//! `serve` (the worker's side: warm up, lock down, serve runs and sessions), `supervisor`
//! (one worker process seen from outside: spawn, deadline, kill, reap), `host_call` (what
//! a worker may ask its supervisor for mid-run: modules, listed files, tool calls),
//! `session` (a persistent session in a dedicated worker) and `pool` (the warm pool that
//! lives inside a [`Sandbox`]).
//!
//! **Host files.** A worker cannot open files. `require` of a host module and `io.open`
//! of a listed file ask the supervisor over the channel, which answers from the sandbox's
//! [`crate::HostFiles`] with the same rules as in process. The host calls of one request
//! are bounded ([`ProcessConfigBuilder::max_host_calls`],
//! [`ProcessConfigBuilder::max_host_call_bytes`]): past the bound the worker is killed and
//! the request fails as `forbidden`.
//!
//! **Host tools.** A worker has no network and no file system, so a tool runs in the
//! supervisor: the worker learns the tool names and quotas (never anything callable),
//! builds the same read-only namespaces, and turns each call into a host call; the
//! supervisor runs the tool with the run's own [`crate::ToolRun`] — the quotas, the
//! deadline in the tool's [`crate::ToolContext`], and the audit record in
//! [`crate::Outcome::tool_calls`] are the supervisor's, exactly as in process — and the
//! worker turns the answer into the same Lua value or plain-string error. The supervisor
//! calls only registered names: a worker that asks for any other is killed and the run
//! fails as `forbidden`. Tool calls count against the host-call budget as well as the
//! tool quotas (which the worker applies itself first, so a script retrying past a quota
//! costs no host call). Time in a tool counts against the run's deadline; a tool that
//! returns past the kill deadline gets the worker killed and the run reported as
//! `timeout`.
//!
//! **Sessions.** [`Sandbox::session`] on an isolated sandbox takes one worker for the
//! session alone: an idle worker of the pool (which then prespawns a replacement), or a
//! new one. Session workers are not counted in the pool's size and never go back to it:
//! the worker is killed when the session closes, is dropped, or dies. Every call has the
//! run deadline, enforced from outside; a call that overruns it kills the worker and
//! closes the session as `timeout`, a worker that dies closes it as `killed`.
//!
//! **Deadlines.** The supervisor kills a worker that has not answered by the run's
//! timeout plus [`ProcessConfigBuilder::kill_grace`], and reports `timeout`: this is what
//! stops a script stuck in a long C call. A request without a timeout is bounded by CPU
//! time instead: the supervisor kills its worker once the request has used
//! [`ProcessConfigBuilder::run_cpu_time`] (60 s by default) and reports `timeout`.
//! [`ProcessConfigBuilder::cpu_time`] adds a kernel backstop over a worker's whole life.
//!
//! **Interrupts.** With a host interrupt check
//! ([`crate::SandboxBuilder::interrupt_check`]), the supervisor asks it on the calling
//! thread as a request starts and then every period while it waits, and on true tells
//! the worker to stop with a signal naming the request: the worker answers `interrupted`,
//! with the place, and goes on serving (a session keeps its worker). A worker that does
//! not answer within [`ProcessConfigBuilder::kill_grace`] is killed and the request
//! reported as `interrupted`.
//!
//! **Crashes.** A worker that dies (seccomp's SIGSYS, a fault) fails the run it was
//! serving as `killed`, with the signal in the message; one ended by its `RLIMIT_CPU` is a
//! `timeout`, and one that aborted because an allocation failed under its `RLIMIT_AS` a
//! `memory_limit`, as is an answer too large for the supervisor to accept. The worker and
//! its relay are reaped (no zombie is left to the caller's subreaper or init) and the next
//! run gets a fresh worker. A worker that sends anything else but a well-formed answer fails
//! the run as `internal` and is killed. None of this ever panics or hangs the supervisor.
//!
//! **Which executable is the worker.** [`WorkerPath::Auto`] looks for, in order: the
//! `MOONJAIL_WORKER` environment variable; a `moonjail-worker` executable next to the
//! current one; the current executable itself. Every worker is started with the hidden
//! first argument `__moonjail_worker`, so any program that calls [`run_if_worker`] first
//! thing in `main` (the `moonjail` CLI does, and the `moonjail-worker` binary is only that
//! call) can serve as its own worker.

#[cfg(all(target_os = "linux", feature = "isolation"))]
pub(crate) mod host_call;
#[cfg(all(target_os = "linux", feature = "isolation"))]
mod interrupt;
#[cfg(all(target_os = "linux", feature = "isolation"))]
mod pool;
#[cfg(all(target_os = "linux", feature = "isolation"))]
pub(crate) mod protocol;
#[cfg(all(target_os = "linux", feature = "isolation"))]
mod serve;
#[cfg(all(target_os = "linux", feature = "isolation"))]
pub(crate) mod session;
#[cfg(all(target_os = "linux", feature = "isolation"))]
pub(crate) mod supervisor;

use std::path::{Path, PathBuf};
#[cfg(all(target_os = "linux", feature = "isolation"))]
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

#[cfg(all(target_os = "linux", feature = "isolation"))]
use crate::engine::check_source;
use crate::engine::Host;
use crate::error::{ConfigError, Error};
use crate::limits::Limits;
use crate::outcome::Outcome;
#[cfg(all(target_os = "linux", feature = "isolation"))]
use crate::profile::Profile;
use crate::spec::Spec;

#[cfg(all(target_os = "linux", feature = "isolation"))]
pub use moonjail_isolate::{probe, Availability, Capabilities, Layer, LayerSet};

/// The hidden first argument a worker process is started with.
pub const WORKER_ARG: &str = "__moonjail_worker";

/// The environment variable that names the worker executable for [`WorkerPath::Auto`].
pub const WORKER_ENV: &str = "MOONJAIL_WORKER";

/// The environment variable that enables the test hooks of a worker (set only by the
/// hidden [`ProcessConfigBuilder::test_hooks`]).
pub(crate) const TEST_HOOKS_ENV: &str = "MOONJAIL_WORKER_TEST_HOOKS";

/// Serves as a worker process, and exits, when this process was started as one (its first
/// argument is [`WORKER_ARG`]); otherwise returns at once.
///
/// Call it first thing in `main`, before any thread is started: the worker locks itself
/// down, which needs a single-threaded process.
pub fn run_if_worker() {
    let first = std::env::args_os().nth(1);
    if first.as_deref() != Some(std::ffi::OsStr::new(WORKER_ARG)) {
        return;
    }
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    std::process::exit(serve::serve());
    #[cfg(not(all(target_os = "linux", feature = "isolation")))]
    {
        eprintln!("moonjail: worker processes need Linux");
        std::process::exit(2);
    }
}

/// Where a sandbox runs its scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// In the calling process, on the calling thread: the Lua-level layers only.
    #[default]
    InProcess,
    /// In a locked-down worker process from a warm pool (Linux only).
    Process(ProcessConfig),
}

/// Which executable serves as the worker process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerPath {
    /// `$MOONJAIL_WORKER` if set; else `moonjail-worker` next to the current executable;
    /// else the current executable (which must call [`run_if_worker`] first in `main`).
    #[default]
    Auto,
    /// This executable.
    Path(PathBuf),
}

impl WorkerPath {
    /// The executable this resolves to now.
    ///
    /// # Errors
    /// [`ConfigError::InvalidLimit`] (named `worker`) when the current executable cannot
    /// be found.
    pub fn resolve(&self) -> Result<PathBuf, ConfigError> {
        if let WorkerPath::Path(path) = self {
            return Ok(path.clone());
        }
        if let Some(path) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        let current = std::env::current_exe().map_err(|e| {
            ConfigError::Isolation(format!("cannot find the current executable: {e}"))
        })?;
        let sibling = current.with_file_name("moonjail-worker");
        if sibling != current && is_file(&sibling) {
            return Ok(sibling);
        }
        Ok(current)
    }
}

fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// How worker processes are started, locked down, pooled and supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    worker: WorkerPath,
    pool_size: usize,
    prespawn: usize,
    max_runs: Option<u64>,
    kill_grace: Duration,
    spawn_timeout: Duration,
    cpu_time: Option<Duration>,
    run_cpu_time: Option<Duration>,
    address_space_bytes: Option<u64>,
    ids: (u32, u32),
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    allow_missing: LayerSet,
    max_frame_bytes: usize,
    stderr_bytes: usize,
    test_hooks: bool,
    max_host_calls: u64,
    max_host_call_bytes: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            worker: WorkerPath::Auto,
            pool_size: std::thread::available_parallelism().map_or(2, |n| n.get()),
            prespawn: 1,
            max_runs: Some(1000),
            kill_grace: Duration::from_millis(100),
            spawn_timeout: Duration::from_secs(10),
            cpu_time: None,
            run_cpu_time: Some(Duration::from_secs(60)),
            address_space_bytes: Some(1 << 30),
            ids: (65534, 65534),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            allow_missing: LayerSet::empty(),
            max_frame_bytes: 64 << 20,
            stderr_bytes: 64 << 10,
            test_hooks: false,
            max_host_calls: 10_000,
            max_host_call_bytes: 256 << 20,
        }
    }
}

impl ProcessConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ProcessConfigBuilder {
        ProcessConfigBuilder {
            config: ProcessConfig::default(),
        }
    }

    /// The most workers alive at once for runs (each open session has one more).
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// How many idle workers are kept ready.
    pub fn prespawn(&self) -> usize {
        self.prespawn
    }

    /// Runs after which a worker is replaced.
    pub fn max_runs(&self) -> Option<u64> {
        self.max_runs
    }
}

/// Builds a [`ProcessConfig`], validating it in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct ProcessConfigBuilder {
    config: ProcessConfig,
}

impl ProcessConfigBuilder {
    /// Sets the worker executable.
    ///
    /// By default, [`WorkerPath::Auto`].
    pub fn worker(mut self, worker: WorkerPath) -> Self {
        self.config.worker = worker;
        self
    }

    /// Sets the most workers alive at once for runs; a run that finds them all busy waits.
    /// Sessions are not counted: each open session has a worker of its own on top.
    ///
    /// By default, the number of CPUs.
    pub fn pool_size(mut self, workers: usize) -> Self {
        self.config.pool_size = workers;
        self
    }

    /// Sets how many idle, locked-down workers the pool keeps ready, spawned in the
    /// background (when the sandbox is built and after each worker is retired). 0 spawns
    /// workers only when a run needs one.
    ///
    /// By default, 1.
    pub fn prespawn(mut self, workers: usize) -> Self {
        self.config.prespawn = workers;
        self
    }

    /// Sets after how many runs a worker is replaced by a fresh one. Workers are also
    /// replaced after any run that hit a limit, crashed or failed oddly.
    ///
    /// By default, 1000.
    pub fn max_runs(mut self, runs: Option<u64>) -> Self {
        self.config.max_runs = runs;
        self
    }

    /// Sets how long after a run's timeout the supervisor waits for the worker's answer
    /// before it kills the worker (the worker's own deadline normally answers first,
    /// with the output so far); also how long a worker told to stop by the host's
    /// interrupt check ([`crate::SandboxBuilder::interrupt_check`]) has to answer.
    ///
    /// By default, 100 ms.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.config.kill_grace = grace;
        self
    }

    /// Sets how long a worker may take to start and lock down.
    ///
    /// By default, 10 s.
    pub fn spawn_timeout(mut self, timeout: Duration) -> Self {
        self.config.spawn_timeout = timeout;
        self
    }

    /// Sets `RLIMIT_CPU` of each worker (whole seconds, at least one). CPU time adds up
    /// over all the runs of a worker, so allow for `max_runs` of them; a worker that
    /// reaches it is killed by the kernel and the run reported as `timeout`, naming the
    /// limit.
    ///
    /// By default, no limit is set (the wall-clock timeout, or else
    /// [`run_cpu_time`](Self::run_cpu_time), bounds each run).
    pub fn cpu_time(mut self, limit: Option<Duration>) -> Self {
        self.config.cpu_time = limit;
        self
    }

    /// Sets the CPU time one request (a run, a session call) *without* a wall-clock
    /// timeout may use. The supervisor watches the worker's CPU time while it waits for the
    /// answer and, past this, kills the worker and reports `timeout`. Unlike
    /// [`cpu_time`](Self::cpu_time), it counts per request, so pooled workers keep
    /// serving; a request with a timeout is bounded by its deadline instead. `None` lets
    /// such a request spin forever.
    ///
    /// By default, 60 s.
    pub fn run_cpu_time(mut self, limit: Option<Duration>) -> Self {
        self.config.run_cpu_time = limit;
        self
    }

    /// Sets `RLIMIT_AS` of each worker: a backstop behind the exact Lua memory limit,
    /// which it must comfortably exceed (the worker's code, stacks and allocator arenas
    /// count too).
    ///
    /// By default, 1 GiB.
    pub fn address_space_bytes(mut self, limit: Option<u64>) -> Self {
        self.config.address_space_bytes = limit;
        self
    }

    /// Sets the uid and gid the worker switches to when the supervisor runs as root.
    /// Neither may be 0.
    ///
    /// By default, 65534/65534 (`nobody`).
    pub fn ids(mut self, uid: u32, gid: u32) -> Self {
        self.config.ids = (uid, gid);
        self
    }

    /// Sets which isolation layers may be missing on this machine. Any other layer that
    /// cannot be applied fails the worker's start, and so the run, with the reason.
    ///
    /// By default, none.
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    pub fn allow_missing(mut self, layers: LayerSet) -> Self {
        self.config.allow_missing = layers;
        self
    }

    /// Sets the largest frame accepted from a worker, on top of the sandbox's result and
    /// output limits (so a run within its limits always fits, a result counted as the JSON
    /// that may escape each byte in six). A bigger frame fails the run as `memory_limit`
    /// and retires the worker.
    ///
    /// By default, 64 MiB.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.max_frame_bytes = bytes;
        self
    }

    /// Sets how much of each worker's stderr is kept (for error messages); the rest is
    /// dropped.
    ///
    /// By default, 64 KiB.
    pub fn stderr_bytes(mut self, bytes: usize) -> Self {
        self.config.stderr_bytes = bytes;
        self
    }

    /// Sets how many host calls (`require` of a host module, `io.open` of a listed file,
    /// a host tool call) one request — a run, or one call of a session — may make. A
    /// worker that makes more is killed and the request fails as `forbidden`.
    ///
    /// By default, 10 000.
    pub fn max_host_calls(mut self, calls: u64) -> Self {
        self.config.max_host_calls = calls;
        self
    }

    /// Sets how many bytes the host calls of one request may move, requests and answers
    /// together (a module's source, a file's bytes, a tool's arguments and result count
    /// in full on every call). A worker that moves more is killed and the request fails
    /// as `forbidden`.
    ///
    /// By default, 256 MiB.
    pub fn max_host_call_bytes(mut self, bytes: u64) -> Self {
        self.config.max_host_call_bytes = bytes;
        self
    }

    /// Starts workers with their test hooks enabled (raw system calls and crashes on
    /// request, for the tests of the isolation layers). Never for production.
    #[cfg(feature = "test-support")]
    pub fn test_hooks(mut self, yes: bool) -> Self {
        self.config.test_hooks = yes;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ConfigError::InvalidLimit`] for a pool size of 0, more prespawned workers than
    /// the pool holds, `max_runs` of 0, a uid or gid of 0, or a CPU limit under a second.
    pub fn build(self) -> Result<ProcessConfig, ConfigError> {
        let c = &self.config;
        let bad = |name, reason: &str| {
            Err(ConfigError::InvalidLimit {
                name,
                reason: reason.to_string(),
            })
        };
        if c.pool_size == 0 {
            return bad("pool-size", "must be at least 1");
        }
        if c.prespawn > c.pool_size {
            return bad("prespawn", "cannot exceed the pool size");
        }
        if c.max_runs == Some(0) {
            return bad("max-runs", "must be at least 1");
        }
        if c.ids.0 == 0 || c.ids.1 == 0 {
            return bad("ids", "the worker's uid and gid must not be 0");
        }
        if c.cpu_time.is_some_and(|t| t < Duration::from_secs(1)) {
            return bad("cpu-time", "must be at least one second");
        }
        if c.run_cpu_time.is_some_and(|t| t.is_zero()) {
            return bad("run-cpu-time", "must be greater than zero");
        }
        if c.spawn_timeout.is_zero() {
            return bad("spawn-timeout", "must be greater than zero");
        }
        Ok(self.config)
    }
}

/// Process ids of an idle worker, for tests that inspect it from outside.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPids {
    /// The process the supervisor spawned (the PID-namespace relay).
    pub relay: u32,
    /// The locked-down worker (the relay's child; the same process without a PID
    /// namespace).
    pub pid: u32,
    /// Runs served so far.
    pub runs: u64,
    /// The lockdown report: (layer, status).
    pub layers: Vec<(String, String)>,
}

/// One run, as `Sandbox::run_with` hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) source: &'a [u8],
    pub(crate) input: &'a Json,
    pub(crate) chunk_name: &'a str,
    /// The source may be an expression (see `RunOptions::expression`).
    pub(crate) expression: bool,
    pub(crate) spec: &'a Spec,
    /// The host's files and tools (served by the supervisor, on the worker's request).
    pub(crate) host: &'a Host,
}

impl Job<'_> {
    pub(crate) fn limits(&self) -> &Limits {
        &self.spec.limits
    }
}

/// What a [`Sandbox`] runs its scripts in: its own thread, or a pool of workers.
#[derive(Debug, Clone, Default)]
pub(crate) enum Isolated {
    #[default]
    InProcess,
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    Process(Arc<pool::Pool>),
}

impl Isolated {
    /// Sets up `isolation` for a sandbox with `limits` (starting a pool and its
    /// background prespawning for [`Isolation::Process`]).
    pub(crate) fn new(isolation: Isolation, spec: &Spec) -> Result<Isolated, ConfigError> {
        let limits = &spec.limits;
        match isolation {
            Isolation::InProcess => Ok(Isolated::InProcess),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolation::Process(config) => {
                if let Profile::Custom(spec) = spec.profile {
                    // Runs name their profile; a worker knows only the built-in ones (and
                    // must never mistake a custom list for a built-in of the same name).
                    return Err(ConfigError::Isolation(format!(
                        "the custom profile {:?} is not available to worker processes \
                             yet: only built-in profiles are",
                        spec.name
                    )));
                }
                let settings = settings(&config, limits)?;
                let pool =
                    pool::Pool::new(settings, config.pool_size, config.prespawn, config.max_runs)
                        .map_err(ConfigError::Isolation)?;
                Ok(Isolated::Process(Arc::new(pool)))
            }
            #[cfg(not(all(target_os = "linux", feature = "isolation")))]
            Isolation::Process(_) => {
                let _ = limits;
                Err(ConfigError::Isolation(
                    "process isolation needs Linux and the `isolation` feature".into(),
                ))
            }
        }
    }

    /// Stops the pool: kills the workers running runs now ([`pool::Pool::stop_busy`]).
    pub(crate) fn stop_busy(&self) -> usize {
        match self {
            Isolated::InProcess => 0,
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => pool.stop_busy(),
        }
    }

    /// Runs in a worker when isolated; `None` means "run in process".
    pub(crate) fn run(&self, job: &Job) -> Option<Outcome> {
        match self {
            Isolated::InProcess => {
                let _ = job;
                None
            }
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => {
                // Refused here rather than shipped to a worker only to be refused there.
                if let Err(error) = check_source(job.spec, job.source) {
                    return Some(Outcome::failed(error, Duration::ZERO));
                }
                Some(pool.run(job))
            }
        }
    }

    /// Opens a session in a dedicated worker when isolated; `None` means "in process".
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    pub(crate) fn open_session(
        &self,
        spec: &Spec,
        host: &Host,
        chunk_name: &str,
    ) -> Option<Result<session::WorkerSession, Error>> {
        match self {
            Isolated::InProcess => None,
            Isolated::Process(pool) => {
                Some(session::WorkerSession::open(pool, spec, host, chunk_name))
            }
        }
    }
}

/// The most memory the supervisor lets JSON from a worker take once parsed: twice what
/// the script's heap may take (the worker bounded the value by the same limit; the
/// estimate over text is coarser than the worker's over values). Untrusted bytes never
/// cost the host more than that, whatever a compromised worker sends.
#[cfg(all(target_os = "linux", feature = "isolation"))]
pub(crate) fn host_budget(limits: &Limits) -> u64 {
    limits
        .memory_bytes
        .map_or(u64::MAX, |m| (m as u64).saturating_mul(2))
}

#[cfg(all(target_os = "linux", feature = "isolation"))]
fn settings(config: &ProcessConfig, limits: &Limits) -> Result<supervisor::Settings, ConfigError> {
    let exe = config.worker.resolve()?;
    let configure = protocol::Configure {
        uid: config.ids.0,
        gid: config.ids.1,
        cpu_time: config.cpu_time,
        address_space_bytes: config.address_space_bytes,
        allow_missing: config
            .allow_missing
            .iter()
            .map(|l| l.name().to_string())
            .collect(),
    };
    let configure = protocol::encode_json(protocol::Kind::Configure, &configure)
        .map_err(|e| ConfigError::Isolation(e.to_string()))?;
    let required = Layer::ALL
        .into_iter()
        .filter(|layer| !config.allow_missing.contains(*layer))
        .map(|layer| layer.name().to_string())
        .collect();
    let unlimited = u32::MAX as usize;
    // The result limit counts the value's bytes; its JSON may escape each in six
    // (`"\u0001"`), and a run within its limits must fit.
    let max_frame = config
        .max_frame_bytes
        .saturating_add(limits.result_bytes.unwrap_or(unlimited).saturating_mul(6))
        .saturating_add(limits.output_bytes.unwrap_or(unlimited))
        .min(unlimited);
    Ok(supervisor::Settings {
        exe,
        configure,
        required,
        kill_grace: config.kill_grace,
        spawn_timeout: config.spawn_timeout,
        max_frame,
        stderr_bytes: config.stderr_bytes,
        test_hooks: config.test_hooks,
        max_host_calls: config.max_host_calls,
        max_host_call_bytes: config.max_host_call_bytes,
        run_cpu_time: config.run_cpu_time,
        rlimit_cpu: config.cpu_time,
        rlimit_as: config.address_space_bytes,
    })
}

/// Inspection hooks for tests of isolated mode (the `test-support` feature; `Sandbox`
/// exposes them).
#[cfg(feature = "test-support")]
impl Isolated {
    /// The pids of this sandbox's idle workers (empty in process).
    pub(crate) fn worker_pids(&self) -> Vec<WorkerPids> {
        match self {
            Isolated::InProcess => Vec::new(),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => pool.worker_pids(),
        }
    }

    /// Waits until `count` workers are idle (prespawned or back from runs).
    pub(crate) fn wait_for_idle_workers(&self, count: usize, timeout: Duration) -> bool {
        match self {
            Isolated::InProcess => false,
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => pool.wait_for_idle(count, timeout),
        }
    }

    /// Starts a worker with this sandbox's settings outside its pool, waits until it is
    /// locked down (spawn, lockdown, `Ready`), kills it, and says how long the start took.
    /// For benchmarks.
    ///
    /// # Errors
    /// Why the worker could not start, as an `internal` [`Error`].
    pub(crate) fn cold_start_worker(&self) -> Result<Duration, Error> {
        match self {
            Isolated::InProcess => Err(Error::new(
                crate::error::ErrorKind::Internal,
                "this sandbox runs in process: there is no worker to start",
            )),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => pool
                .cold_start()
                .map_err(|message| Error::new(crate::error::ErrorKind::Internal, message)),
        }
    }

    /// Sends a test-hook probe to one of this sandbox's workers; honoured only by workers
    /// started with test hooks. A probe that kills the worker comes back as a `killed`
    /// error naming the signal.
    ///
    /// # Errors
    /// The worker's death, refusal or failure, as an [`Error`].
    pub(crate) fn probe_worker(
        &self,
        probe: &str,
        timeout: Option<Duration>,
    ) -> Result<Json, Error> {
        match self {
            Isolated::InProcess => Err(Error::new(
                crate::error::ErrorKind::Internal,
                "this sandbox runs in process: there is no worker to probe",
            )),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Isolated::Process(pool) => pool.probe(probe, timeout),
        }
    }
}
