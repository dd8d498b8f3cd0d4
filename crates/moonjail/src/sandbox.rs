//! The sandbox facade: a validated configuration, and `run`, which gives every script a
//! fresh state built from the profile, under the limits, in process or in a worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::engine::{self, Engine, Host};
use crate::error::ConfigError;
use crate::host::{Determinism, FileSource, HostFiles, InterruptCheck, MIN_INTERRUPT_PERIOD};
use crate::limits::Limits;
use crate::lint::{self, Environment, LintReport};
use crate::outcome::Outcome;
use crate::prepared::Prepared;
use crate::profile::Profile;
use crate::spec::Spec;
use crate::tools::{
    Catalogue, HttpConfig, HttpDestination, ToolContext, ToolError, ToolQuota, ToolRegistry,
    ToolSpec,
};
use crate::worker::{Isolated, Isolation, Job};

/// How many prepared states a sandbox keeps ready by default: none. Preparing pays off
/// when runs arrive with idle time between them (a service: ~5–8 µs per run instead of
/// ~25–35 µs); back to back on a busy machine the helper thread only competes with the
/// runs for the cores, so it is the caller's choice.
const DEFAULT_PREPARED_STATES: usize = 0;

/// Builds a [`Sandbox`]; validates when built.
#[derive(Debug, Clone, Default)]
pub struct SandboxBuilder {
    spec: Spec,
    files: HostFiles,
    isolation: Isolation,
    tools: ToolRegistry,
    http: HttpConfig,
    /// The first invalid tool registration, reported by `build`.
    tool_error: Option<ConfigError>,
    /// `None`: [`DEFAULT_PREPARED_STATES`].
    prepared_states: Option<usize>,
    /// The host's interrupt check, with its period as given (checked by `build`).
    interrupt: Option<InterruptCheck>,
}

impl SandboxBuilder {
    /// Replaces the whole spec (a journal's, replayed).
    pub(crate) fn spec(mut self, spec: Spec) -> Self {
        self.spec = spec;
        self
    }

    /// Selects the profile. By default, [`Profile::Standard`].
    pub fn profile(mut self, profile: Profile) -> Self {
        self.spec.profile = profile;
        self
    }

    /// Replaces all limits at once. By default, [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.spec.limits = limits;
        self
    }

    /// Sets the Lua heap limit in bytes (counted exactly by the allocator). By default,
    /// 64 MiB; [`SandboxBuilder::no_memory_limit`] lifts it.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.spec.limits.memory_bytes = Some(bytes);
        self
    }

    /// Lets the Lua heap grow without a limit (the process's own memory still bounds it).
    pub fn no_memory_limit(mut self) -> Self {
        self.spec.limits.memory_bytes = None;
        self
    }

    /// Sets the wall-clock deadline of each run (each call, in a session): greater than
    /// zero and at most a year ([`SandboxBuilder::build`] refuses others). By default,
    /// 5 s; [`SandboxBuilder::no_timeout`] lifts it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.limits.timeout = Some(timeout);
        self
    }

    /// Runs without a wall-clock deadline: only the instruction budget, if one is set,
    /// ends a script that never stops.
    pub fn no_timeout(mut self) -> Self {
        self.spec.limits.timeout = None;
        self
    }

    /// Sets an instruction budget shared by all coroutines of a run; moonjail's native
    /// work (metered library loops, pattern matching, marshaling, `json`) is charged to it
    /// too. This installs a count hook, about as costly as Lua's own (see BENCHMARKS.md).
    /// By default, no limit is set.
    pub fn instruction_limit(mut self, instructions: u64) -> Self {
        self.spec.limits.instructions = Some(instructions);
        self
    }

    /// Removes the instruction budget (the default).
    pub fn no_instruction_limit(mut self) -> Self {
        self.spec.limits.instructions = None;
        self
    }

    /// Sets the limit on captured output in bytes. By default, 1 MiB;
    /// [`SandboxBuilder::no_output_limit`] lifts it.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.spec.limits.output_bytes = Some(bytes);
        self
    }

    /// Captures output without a limit.
    pub fn no_output_limit(mut self) -> Self {
        self.spec.limits.output_bytes = None;
        self
    }

    /// Sets the limit on source size in bytes (also for `load`). By default, 1 MiB;
    /// [`SandboxBuilder::no_source_limit`] lifts it.
    pub fn source_limit(mut self, bytes: usize) -> Self {
        self.spec.limits.source_bytes = Some(bytes);
        self
    }

    /// Accepts sources of any size.
    pub fn no_source_limit(mut self) -> Self {
        self.spec.limits.source_bytes = None;
        self
    }

    /// Sets how deeply input and result may nest. By default, 64.
    pub fn result_depth(mut self, depth: usize) -> Self {
        self.spec.limits.result_depth = depth;
        self
    }

    /// Sets the limit on the result's JSON size in bytes, counted as written (escapes
    /// included). By default, 16 MiB; [`SandboxBuilder::no_result_limit`] lifts it.
    pub fn result_limit(mut self, bytes: usize) -> Self {
        self.spec.limits.result_bytes = Some(bytes);
        self
    }

    /// Accepts results of any size (the memory limit still bounds what marshaling
    /// takes on the host).
    pub fn no_result_limit(mut self) -> Self {
        self.spec.limits.result_bytes = None;
        self
    }

    /// Fails runs whose script defines no global function `run` (LuaExecutor
    /// strictness). By default, off: the chunk's return value is the result.
    pub fn require_run(mut self, yes: bool) -> Self {
        self.spec.require_run = yes;
        self
    }

    /// Fails runs whose result is not a table. By default, off.
    pub fn require_table_result(mut self, yes: bool) -> Self {
        self.spec.require_table = yes;
        self
    }

    /// Lets scripts `require` host modules and `io.open` host files (aos profile).
    /// By default, nothing is readable.
    pub fn host_files(mut self, files: HostFiles) -> Self {
        self.files = files;
        self
    }

    /// Makes `os.time`/`os.clock`/`os.date` and `math.random` reproducible. Works with
    /// every profile. By default, off.
    pub fn deterministic(mut self, determinism: Option<Determinism>) -> Self {
        self.spec.deterministic = determinism;
        self
    }

    /// Selects where scripts run: in process, or in locked-down worker processes (see
    /// [`crate::worker`]). By default, [`Isolation::InProcess`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Records every global read and write, library member used, missing global and
    /// `require`, into [`Outcome::diagnostics`]. The script behaves the same and the
    /// bookkeeping does not count against its limits. By default, off.
    pub fn diagnostic(mut self, yes: bool) -> Self {
        self.spec.diagnostic = yes;
        self
    }

    /// Registers a host tool under `name` (`"weather.lookup"`, or a bare `"log"`): scripts
    /// call it as `weather.lookup(...)`, with arguments and result crossing as JSON. An
    /// invalid or taken name is reported by [`SandboxBuilder::build`]. By default, no
    /// tool is registered. See [`ToolRegistry`].
    pub fn tool<F>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Vec<Json>) -> Result<Json, ToolError> + Send + Sync + 'static,
    {
        if let Err(e) = self.tools.register(name, f) {
            self.tool_error.get_or_insert(e);
        }
        self
    }

    /// [`SandboxBuilder::tool`] for a tool that needs its [`ToolContext`] (its deadline).
    pub fn tool_with_context<F>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(&ToolContext, Vec<Json>) -> Result<Json, ToolError> + Send + Sync + 'static,
    {
        if let Err(e) = self.tools.register_with_context(name, f) {
            self.tool_error.get_or_insert(e);
        }
        self
    }

    /// Registers a deferred tool under `name` (see [`ToolRegistry::register_deferred`]):
    /// a call to it suspends the run (error kind [`crate::ErrorKind::Suspended`], the
    /// pending call in the error's `value`) until the host answers it; a journaled run
    /// ([`Sandbox::run_journaled`]) is then resumed from its journal with [`Sandbox::resume`].
    /// An invalid or taken name is reported by [`SandboxBuilder::build`].
    pub fn defer_tool(mut self, name: &str) -> Self {
        if let Err(e) = self.tools.register_deferred(name) {
            self.tool_error.get_or_insert(e);
        }
        self
    }

    /// Describes the tool registered as `name` (see [`ToolRegistry::describe`]): a
    /// description and schemas for the catalogue ([`Sandbox::tool_catalogue`]), and
    /// parameters every call is checked against before the tool runs. Call it after
    /// the tool is registered; a problem (no such tool, an invalid schema) is reported
    /// by [`SandboxBuilder::build`]. By default, tools are not described.
    ///
    /// ```
    /// use moonjail::{Sandbox, ToolSpec};
    /// use serde_json::json;
    ///
    /// let sandbox = Sandbox::builder()
    ///     .tool("weather.lookup", |_| Ok(json!({"forecast": "sunny"})))
    ///     .describe_tool("weather.lookup", ToolSpec::new()
    ///         .description("The forecast for a city.")
    ///         .parameters(json!({"type": "object", "required": ["city"],
    ///                            "properties": {"city": {"type": "string"}}})))
    ///     .build()?;
    /// let catalogue = sandbox.tool_catalogue();
    /// let entry = catalogue.get("weather.lookup").unwrap();
    /// assert_eq!(entry.description.as_deref(), Some("The forecast for a city."));
    /// # Ok::<(), moonjail::ConfigError>(())
    /// ```
    pub fn describe_tool(mut self, name: &str, spec: ToolSpec) -> Self {
        if let Err(e) = self.tools.describe(name, spec) {
            self.tool_error.get_or_insert(e);
        }
        self
    }

    /// Replaces every tool registered so far (and the tool quota) with `registry`'s.
    /// By default, no tool is registered.
    pub fn tools(mut self, registry: ToolRegistry) -> Self {
        self.tools = registry;
        self
    }

    /// Sets how many tool calls a run may make, in all and per tool. By default,
    /// [`ToolQuota::default`] (1000 calls per run).
    pub fn tool_quota(mut self, quota: ToolQuota) -> Self {
        self.tools.set_quota(quota);
        self
    }

    /// Allows the built-in `http` tool (`http.get`, `http.post`) to reach `destination`,
    /// `HOST[:PORT]` (see [`HttpConfig::allow`]); the tool exists once one destination is
    /// allowed. By default, there is no `http` tool.
    pub fn allow_http(mut self, destination: impl Into<String>) -> Self {
        self.http = self.http.allow(destination);
        self
    }

    /// Replaces the `http` tool's configuration (allowlist included). By default,
    /// [`HttpConfig::default`], which allows nothing.
    pub fn http(mut self, config: HttpConfig) -> Self {
        self.http = config;
        self
    }

    /// The tools runs get: the registered ones, plus `http` when allowed.
    fn tool_registry(&self) -> Result<Option<Arc<ToolRegistry>>, ConfigError> {
        if let Some(e) = &self.tool_error {
            return Err(e.clone());
        }
        let mut registry = self.tools.clone();
        if self.http.is_enabled() {
            registry.register_http(self.http.clone())?;
        }
        if registry.is_empty() {
            return Ok(None);
        }
        check_tool_globals(self.spec.profile, &registry)?;
        Ok(Some(Arc::new(registry)))
    }

    /// Keeps this many fresh states, with the environment already built, ready on a
    /// helper thread (started by the first run), and closes used states there: a run
    /// then only compiles and runs its chunk (~5–8 µs for `return 1` instead of ~25–35
    /// µs, when runs leave the helper time to keep up). Each run still gets a state made
    /// for it alone, used by no other run. Not used with host tools or isolation. The
    /// helper thread makes a single-threaded host multi-threaded, and glibc's allocator
    /// then locks: allocation-heavy scripts run slower. By default, 0: every state is
    /// built on the calling thread, which suits batches and sandboxes used once.
    pub fn prepared_states(mut self, states: usize) -> Self {
        self.prepared_states = Some(states);
        self
    }

    /// Lets the host stop a run from outside: while a script runs (a [`Sandbox::run`] or
    /// [`Sandbox::run_with`], and every request of a [`crate::Session`] made from this
    /// sandbox: `exec`, `exec_with`, `eval`, `call`, `call_with`, `has_function`), `check`
    /// is called about every `every` (at least every millisecond: a shorter period is
    /// raised to 1 ms), and once as each call starts; when it returns true the run stops
    /// with [`crate::ErrorKind::Interrupted`], with the place where it stopped, as a
    /// timeout stops it (`pcall`, coroutines, `__close` and metered library loops cannot
    /// hold it up). A panic in `check` counts as true.
    ///
    /// In process, `check` is called on the thread that called `run`, `exec` or `call`,
    /// never from a signal handler, so it may do what the host likes (take a lock, take
    /// Python's GIL and look at its signal flags). The period is kept by the deadline's
    /// per-thread timer: no thread is started, and a check that keeps returning false
    /// changes nothing in the run (its `stats.instructions` included). Isolated, the
    /// supervisor calls it on the same calling thread while it waits for the worker's
    /// answer, and on true tells the worker to stop with a signal; the worker answers
    /// `interrupted` with the place, and a session goes on in the same worker. A worker
    /// that has not answered [`crate::ProcessConfigBuilder::kill_grace`] after being told
    /// is killed, the request reported as `interrupted` (a session is then closed).
    ///
    /// Not interrupted: a host tool call in progress (the check is asked again as soon as
    /// the script resumes). A session stays open after an interrupted call, and the state
    /// keeps whatever the call had changed before it stopped. By default, no check.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let flag = Arc::clone(&stop);
    /// let sandbox = moonjail::Sandbox::builder()
    ///     .no_timeout()
    ///     .interrupt_check(Duration::from_millis(10), move || flag.load(Ordering::Relaxed))
    ///     .build()?;
    /// stop.store(true, Ordering::Relaxed); // say, set by a Ctrl-C handler
    /// let outcome = sandbox.run("while true do end", &serde_json::Value::Null);
    /// assert_eq!(outcome.error().unwrap().kind, moonjail::ErrorKind::Interrupted);
    /// # Ok::<(), moonjail::ConfigError>(())
    /// ```
    pub fn interrupt_check(
        mut self,
        every: Duration,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.interrupt = Some(InterruptCheck {
            every: Some(every),
            check: Arc::new(check),
        });
        self
    }

    /// Removes the interrupt check (the default).
    pub fn no_interrupt_check(mut self) -> Self {
        self.interrupt = None;
        self
    }

    /// The interrupt check as runs get it: its period checked and raised to the minimum.
    fn interrupt(&self) -> Result<Option<InterruptCheck>, ConfigError> {
        let Some(check) = &self.interrupt else {
            return Ok(None);
        };
        let every = check.every.unwrap_or(MIN_INTERRUPT_PERIOD);
        if every.is_zero() {
            return Err(ConfigError::InvalidLimit {
                name: "interrupt-check",
                reason: "its period must be greater than zero".to_string(),
            });
        }
        Ok(Some(InterruptCheck {
            every: Some(every.max(MIN_INTERRUPT_PERIOD)),
            check: Arc::clone(&check.check),
        }))
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError::InvalidLimit`] for a limit that would fail every run (and for an
    /// interrupt check whose period is zero);
    /// [`ConfigError::Tool`] for a tool that cannot be registered (an invalid or taken
    /// name, a name the profile already defines, an invalid `http` allowlist entry);
    /// [`ConfigError::Unsupported`] for host modules or files the profile has no
    /// `require` or `io.open` to reach.
    pub fn build(self) -> Result<Sandbox, ConfigError> {
        validate_limits(&self.spec.limits)?;
        check_host_files(self.spec.profile, &self.files)?;
        let host = Host {
            files: Arc::new(self.files.clone()),
            tools: self.tool_registry()?,
            interrupt: self.interrupt()?,
        };
        let lint = Arc::new(LintView::new(&self.http));
        let isolation = Isolated::new(self.isolation, &self.spec)?;
        // States can be prepared ahead only when nothing per-run goes into the
        // environment (tools attach per run) and runs happen in this process.
        let spares = self.prepared_states.unwrap_or(DEFAULT_PREPARED_STATES);
        let prepared = (spares > 0
            && host.tools.is_none()
            && matches!(isolation, Isolated::InProcess))
        .then(|| {
            let (spec, host) = (self.spec.clone(), host.clone());
            Arc::new(Prepared::new(
                spares,
                Box::new(move || engine::prepare(&spec, &host).ok()),
            ))
        });
        Ok(Sandbox {
            spec: self.spec,
            host,
            isolation,
            prepared,
            lint,
        })
    }
}

/// The longest timeout a sandbox accepts: a year.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The limits checks of [`SandboxBuilder::build`] (and [`Sandbox::with_spec`]).
fn validate_limits(l: &Limits) -> Result<(), ConfigError> {
    let bad = |name, reason: &str| {
        Err(ConfigError::InvalidLimit {
            name,
            reason: reason.to_string(),
        })
    };
    if l.memory_bytes.is_some_and(|m| m < 64 << 10) {
        return bad("memory", "below 64 KiB no state can even be built");
    }
    if l.timeout.is_some_and(|t| t.is_zero()) {
        return bad("timeout", "must be greater than zero");
    }
    // A deadline is `start + timeout`, which panics past what an `Instant` holds; a
    // limits document (a journal's spec) may say anything.
    if l.timeout.is_some_and(|t| t > MAX_TIMEOUT) {
        return bad("timeout", "must be at most a year (none for no timeout)");
    }
    if l.instructions == Some(0) {
        return bad("instructions", "must be at least 1");
    }
    if l.result_depth == 0 {
        return bad("result-depth", "must be at least 1");
    }
    if l.result_depth > Limits::MAX_RESULT_DEPTH {
        return bad(
            "result-depth",
            &format!("must be at most {}", Limits::MAX_RESULT_DEPTH),
        );
    }
    Ok(())
}

/// No tool may take a name the profile already defines as a global.
fn check_tool_globals(profile: Profile, registry: &ToolRegistry) -> Result<(), ConfigError> {
    let spec = profile.spec();
    for name in registry.names() {
        let global = name.split('.').next().unwrap_or(name);
        if spec.has_global(global) {
            return Err(ConfigError::Tool {
                name: name.to_string(),
                reason: format!(
                    "the profile {} already defines the global `{global}`",
                    spec.name
                ),
            });
        }
    }
    Ok(())
}

/// Host modules and files need a profile that can reach them.
fn check_host_files(profile: Profile, files: &dyn FileSource) -> Result<(), ConfigError> {
    let profile = profile.spec();
    if files.has_modules() && !profile.items.contains(&crate::Item::Package) {
        return Err(ConfigError::Unsupported(format!(
            "the {} profile has no `require`, so host modules cannot be served \
             (profiles with `require`: standard, aos)",
            profile.name
        )));
    }
    if files.has_readable() && !profile.items.contains(&crate::Item::Io) {
        return Err(ConfigError::Unsupported(format!(
            "the {} profile has no `io.open`, so host files cannot be read \
             (profiles with `io.open`: aos)",
            profile.name
        )));
    }
    Ok(())
}

/// A validated sandbox configuration. Cheap to share: `Send + Sync`, and every run
/// builds its own state, so runs on many threads share nothing.
#[derive(Debug, Clone)]
pub struct Sandbox {
    spec: Spec,
    host: Host,
    isolation: Isolated,
    prepared: Option<Arc<Prepared>>,
    /// What the linter knows of this sandbox, built on the first lint.
    lint: Arc<LintView>,
}

/// What the linter needs besides the spec and the host (the `http` allowlist, which
/// runs keep only inside the tool registry), and the view built from them on the
/// first lint: most sandboxes never lint, and building one must not pay for it.
#[derive(Debug, Default)]
struct LintView {
    http: Vec<HttpDestination>,
    env: std::sync::OnceLock<Environment>,
}

impl LintView {
    fn new(http: &HttpConfig) -> LintView {
        LintView {
            // Entries that do not parse were refused when the sandbox was built.
            http: http
                .allowed()
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect(),
            env: std::sync::OnceLock::new(),
        }
    }

    /// The linter's view of a sandbox: its profile, its tools (`http` included) and its
    /// `http` allowlist, from the very values runs are built from.
    fn env(&self, spec: &Spec, host: &Host, isolated: bool) -> &Environment {
        self.env.get_or_init(|| {
            let tools = host.tools.iter().flat_map(|registry| registry.names());
            let mut env = Environment::new(spec.profile.spec(), tools, self.http.clone());
            env.require_run = spec.require_run;
            env.source_limit = spec.limits.source_bytes;
            env.lua_in_host = !isolated;
            if let Some(registry) = &host.tools {
                env.schemas = registry
                    .names()
                    .filter_map(|name| {
                        Some((name.to_string(), registry.args_schema(name)?.clone()))
                    })
                    .collect();
            }
            env
        })
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            spec: Spec::default(),
            host: Host::default(),
            isolation: Isolated::InProcess,
            prepared: None,
            lint: Arc::default(),
        }
    }
}

/// Per-run options that are not limits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions<'a> {
    /// The chunk name used in error messages (`NAME:LINE: message`). By default, "script".
    pub chunk_name: &'a str,
    /// The source may be an expression whose value is the result (`1 + 1`, `#t`): it
    /// is tried as `return SOURCE` first, then as a script, as Lua's REPL does.
    pub expression: bool,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            chunk_name: "script",
            expression: false,
        }
    }
}

impl<'a> RunOptions<'a> {
    /// The options with this chunk name.
    pub fn chunk_name(mut self, name: &'a str) -> Self {
        self.chunk_name = name;
        self
    }

    /// The options with expression mode on or off.
    pub fn expression(mut self, yes: bool) -> Self {
        self.expression = yes;
        self
    }
}

impl Sandbox {
    /// Starts a builder with the defaults.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// A sandbox whose runs and sessions use `spec` (another built-in profile, other
    /// limits) and share everything else with this one: the host files, the host tools
    /// and, isolated, the pool of workers (no new worker is started). For a front end
    /// whose requests choose their own profile and limits (the HTTP service); it is up
    /// to the caller to keep those within what it allows, and, isolated, the limits on
    /// output and result within this sandbox's own (they size what a worker may send).
    /// Prepared states are not shared: the new sandbox builds each state per run.
    ///
    /// # Errors
    /// What [`SandboxBuilder::build`] reports for these limits and this profile
    /// ([`ConfigError::InvalidLimit`], [`ConfigError::Tool`],
    /// [`ConfigError::Unsupported`]), and [`ConfigError::Isolation`] for a custom
    /// profile on an isolated sandbox (workers know only the built-in ones).
    pub fn with_spec(&self, spec: Spec) -> Result<Sandbox, ConfigError> {
        validate_limits(&spec.limits)?;
        check_host_files(spec.profile, self.host.files.as_ref())?;
        if let Some(tools) = &self.host.tools {
            check_tool_globals(spec.profile, tools)?;
        }
        if let (Profile::Custom(custom), false) =
            (spec.profile, matches!(self.isolation, Isolated::InProcess))
        {
            return Err(ConfigError::Isolation(format!(
                "the custom profile {:?} is not available to worker processes: only \
                 built-in profiles are",
                custom.name
            )));
        }
        // The linter's view follows the spec (built again on first use); the tools and
        // the allowlist stay.
        let lint = Arc::new(LintView {
            http: self.lint.http.clone(),
            env: std::sync::OnceLock::new(),
        });
        Ok(Sandbox {
            spec,
            host: self.host.clone(),
            isolation: self.isolation.clone(),
            prepared: None,
            lint,
        })
    }

    /// The profile runs use.
    pub fn profile(&self) -> Profile {
        self.spec.profile
    }

    /// The limits runs use.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// Stops this sandbox's worker pool (shared with its clones) for good: every worker
    /// running a run now is killed before this returns, and runs in workers are refused
    /// from then on (`internal`). A run ends as `killed` once its supervisor sees it (one
    /// inside a host tool call or waiting at a deferred call, when that returns). Returns
    /// how many workers were killed. For a service's last step once its grace period is
    /// over, so that no worker outlives it. Sessions keep their own workers. In process,
    /// nothing: a run on a thread cannot be stopped from outside (see
    /// [`SandboxBuilder::interrupt_check`]).
    pub fn stop_workers(&self) -> usize {
        self.isolation.stop_busy()
    }

    /// Everything runs are configured with (what a worker is sent).
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The host tools runs get (`None`: no tools), frozen when the sandbox was built.
    pub fn tools(&self) -> Option<&Arc<ToolRegistry>> {
        self.host.tools.as_ref()
    }

    /// Everything this sandbox's scripts can call, with descriptions and schemas: the
    /// host tools, `http.get`/`http.post` when allowed (their description lists the
    /// allowlist), and the `json` library when the profile has it. What `moonjail tools`
    /// prints; an MCP front end's tool list is its entries' `name`, `description` and
    /// `parameters`.
    pub fn tool_catalogue(&self) -> Catalogue {
        let mut catalogue = self
            .host
            .tools
            .as_ref()
            .map(|tools| tools.catalogue())
            .unwrap_or_default();
        let profile = self.spec.profile.spec();
        if profile
            .items
            .iter()
            .any(|item| matches!(item, crate::profile::Item::Json))
        {
            catalogue.extend(crate::tools::json_entries());
        }
        catalogue
    }

    /// This sandbox with another spec and host (a journaled run's or a replay's taps),
    /// sharing its workers; no prepared states.
    pub(crate) fn variant(&self, spec: Spec, host: Host) -> Sandbox {
        Sandbox {
            spec,
            host,
            isolation: self.isolation.clone(),
            prepared: None,
            lint: Arc::clone(&self.lint),
        }
    }

    /// What runs get from the host besides the spec.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// Where runs happen.
    pub(crate) fn isolated(&self) -> &Isolated {
        &self.isolation
    }

    /// Checks `code` against this sandbox without running it: syntax errors (with hints
    /// for other languages' spellings), globals and library members the sandbox does
    /// not have, tool namespaces written to, malformed pattern literals, literal URLs
    /// the `http` allowlist refuses, argument counts, and the usual correctness lints;
    /// plus a manifest of what the script reaches. The sandbox's own checks at run time
    /// stay the boundary: this is feedback before a run. A script with a shebang line or
    /// a byte order mark is read as `moonjail run` reads a file.
    ///
    /// ```
    /// let sandbox = moonjail::Sandbox::builder().build()?;
    /// let report = sandbox.lint("local f = io.open('x')\nreturn string.spilt(f, ',')");
    /// assert!(report.has_errors());
    /// let rules: Vec<_> = report.findings.iter().map(|f| (f.rule, f.line)).collect();
    /// assert_eq!(rules, [("removed-global", 1), ("unknown-member", 2)]);
    /// # Ok::<(), moonjail::ConfigError>(())
    /// ```
    pub fn lint(&self, code: impl AsRef<[u8]>) -> LintReport {
        let isolated = !matches!(self.isolation, Isolated::InProcess);
        lint::lint(
            self.lint.env(&self.spec, &self.host, isolated),
            code.as_ref(),
        )
    }

    /// What the linter believes this sandbox provides: each global with the names of its
    /// members (empty for functions and values). The same as a run's environment, which
    /// `tests/it/lint.rs` checks for every profile.
    pub fn lint_environment(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let isolated = !matches!(self.isolation, Isolated::InProcess);
        self.lint.env(&self.spec, &self.host, isolated).names()
    }

    /// Runs `source` in a fresh state with `input` as its first vararg (and as the
    /// argument of `run`, if the chunk defines one).
    pub fn run(&self, source: impl AsRef<[u8]>, input: &Json) -> Outcome {
        self.run_with(source.as_ref(), input, &RunOptions::default())
    }

    /// [`Sandbox::run`] with options.
    pub fn run_with(&self, source: impl AsRef<[u8]>, input: &Json, opts: &RunOptions) -> Outcome {
        let source = source.as_ref();
        let job = Job {
            source,
            input,
            chunk_name: opts.chunk_name,
            expression: opts.expression,
            spec: &self.spec,
            host: &self.host,
        };
        if let Some(outcome) = self.isolation.run(&job) {
            return outcome;
        }
        let start = Instant::now();
        // A prepared state has its environment built already.
        let engine = match self.prepared.as_ref().and_then(|p| p.take()) {
            Some(vm) => Ok(Engine::with_vm(vm, &self.spec, &self.host, opts.chunk_name)),
            None => Engine::new(&self.spec, &self.host, opts.chunk_name),
        };
        let mut engine = match engine {
            Ok(engine) => engine,
            Err(error) => return Outcome::failed(error, start.elapsed()),
        };
        let outcome = engine.run(source, input, start, opts.expression);
        match &self.prepared {
            // Closed by the helper thread, off this run's path.
            Some(p) => p.retire(engine.into_vm()),
            None => drop(engine),
        }
        outcome
    }
}

/// Inspection hooks for tests of isolated mode (the `test-support` feature).
#[cfg(feature = "test-support")]
impl Sandbox {
    /// The pids of this sandbox's idle workers (empty in process).
    pub fn worker_pids(&self) -> Vec<crate::worker::WorkerPids> {
        self.isolation.worker_pids()
    }

    /// Waits until `count` workers are idle (prespawned or back from runs).
    pub fn wait_for_idle_workers(&self, count: usize, timeout: Duration) -> bool {
        self.isolation.wait_for_idle_workers(count, timeout)
    }

    /// Starts a worker with this sandbox's settings outside its pool, waits until it is
    /// locked down (spawn, lockdown, `Ready`), kills it, and says how long the start took.
    /// For benchmarks.
    ///
    /// # Errors
    /// Why the worker could not start, as an `internal` [`crate::Error`].
    pub fn cold_start_worker(&self) -> Result<Duration, crate::Error> {
        self.isolation.cold_start_worker()
    }

    /// Sends a test-hook probe to one of this sandbox's workers; honoured only by workers
    /// started with test hooks. A probe that kills the worker comes back as a `killed`
    /// error naming the signal.
    ///
    /// # Errors
    /// The worker's death, refusal or failure, as an [`crate::Error`].
    pub fn probe_worker(&self, probe: &str) -> Result<Json, crate::Error> {
        self.isolation.probe_worker(probe, self.spec.limits.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn with_spec_changes_the_profile_and_limits_and_validates_them() {
        let base = Sandbox::builder()
            .host_files(HostFiles::default().allow_read("x"))
            .profile(Profile::Aos)
            .build()
            .unwrap();
        let mut spec = base.spec().clone();
        spec.limits.instructions = Some(1000);
        let narrowed = base.with_spec(spec.clone()).unwrap();
        let out = narrowed.run("while true do end", &Json::Null);
        assert_eq!(
            out.error().map(|e| e.kind),
            Some(crate::ErrorKind::InstructionLimit)
        );
        spec.limits.memory_bytes = Some(1);
        assert!(matches!(
            base.with_spec(spec.clone()),
            Err(ConfigError::InvalidLimit { name: "memory", .. })
        ));
        // The base reads a host file: a profile without io.open cannot have it.
        spec.limits = Limits::default();
        spec.profile = Profile::Standard;
        assert!(matches!(
            base.with_spec(spec),
            Err(ConfigError::Unsupported(_))
        ));
    }

    #[test]
    fn sandbox_is_send_sync() {
        assert_send_sync::<Sandbox>();
        assert_send_sync::<Outcome>();
    }
}
