//! The sandbox: a validated configuration, and `run`, which gives every script a fresh
//! state built from the profile, under the limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::diag::Diagnostics;
use crate::env;
use crate::error::{ConfigError, Error, ErrorKind};
use crate::host::{Determinism, EnvOptions, HostFiles};
use crate::limits::Limits;
use crate::marshal::{self, Bounds};
use crate::prepared::Prepared;
use crate::profile::Profile;
use crate::stdlib::base::FORBIDDEN;
use crate::tools::{HttpConfig, ToolCall, ToolContext, ToolError, ToolQuota, ToolRegistry};
use crate::vm::{watchdog::Deadline, Activation, Control, Vm};
use crate::worker::{Isolated, Isolation};

/// What a run produced: the result or the error, the captured output and statistics.
/// Output and statistics are there whether the run succeeded or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The JSON result, or why there is none.
    pub result: Result<Json, Error>,
    /// Everything the script printed (invalid UTF-8 replaced), up to the output limit.
    pub output: String,
    /// Measurements of the run.
    pub stats: Stats,
    /// What the script touched, when the sandbox runs in diagnostic mode.
    pub diagnostics: Option<Diagnostics>,
    /// Every host tool call the script made, in order (see [`ToolCall`]).
    pub tool_calls: Vec<ToolCall>,
}

/// Measurements of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Wall-clock time, from the start of `run` to the state's close.
    pub wall: Duration,
    /// Peak Lua heap, in bytes.
    pub memory_bytes: usize,
    /// Instructions charged, when an instruction limit was set (counted in blocks of up
    /// to 256, paid in advance).
    pub instructions: Option<u64>,
}

impl Outcome {
    /// True when the run succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The error, if the run failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }

    /// The document `moonjail run --json` prints (a stable contract):
    /// `{"ok", "result", "output", "error": {"kind", "message", "line"} | null, "stats"}`,
    /// plus `"diagnostics"` in diagnostic mode and `"tool_calls"` (`[{"name", "ms", "ok",
    /// "error", "bytes_in", "bytes_out"}]`) when the script called host tools.
    pub fn to_json(&self) -> Json {
        let (ok, result, error) = match &self.result {
            Ok(v) => (true, v.clone(), Json::Null),
            Err(e) => (
                false,
                Json::Null,
                serde_json::json!({"kind": e.kind.as_str(), "message": e.message, "line": e.line}),
            ),
        };
        let mut doc = serde_json::json!({
            "ok": ok,
            "result": result,
            "output": self.output,
            "error": error,
            "stats": {
                "wall_ms": (self.stats.wall.as_secs_f64() * 1e6).round() / 1e3,
                "memory_bytes": self.stats.memory_bytes,
                "instructions": self.stats.instructions,
            },
        });
        if let (Some(d), Some(obj)) = (&self.diagnostics, doc.as_object_mut()) {
            obj.insert(
                "diagnostics".into(),
                serde_json::to_value(d).unwrap_or(Json::Null),
            );
        }
        if let (false, Some(obj)) = (self.tool_calls.is_empty(), doc.as_object_mut()) {
            let calls = self.tool_calls.iter().map(ToolCall::to_json).collect();
            obj.insert("tool_calls".into(), Json::Array(calls));
        }
        doc
    }
}

/// How many prepared states a sandbox keeps ready by default: none. Preparing pays off
/// when runs arrive with idle time between them (a service: ~5–8 µs per run instead of
/// ~25–35 µs); back to back on a busy machine the helper thread only competes with the
/// runs for the cores, so it is the caller's choice.
const DEFAULT_PREPARED_STATES: usize = 0;

/// A fresh state under this configuration's memory, output and source limits.
fn new_vm(profile: Profile, limits: &Limits) -> mlua::Result<Vm> {
    let spec = profile.spec();
    let vm = Vm::new(
        env::libs_for(spec),
        limits.memory_bytes.unwrap_or(usize::MAX),
    )?;
    let ctl = vm.ctl();
    ctl.output_limit
        .set(limits.output_bytes.unwrap_or(usize::MAX));
    ctl.source_limit
        .set(limits.source_bytes.unwrap_or(usize::MAX));
    Ok(vm)
}

/// A fresh state with its environment built, ready for one run (see [`Prepared`]).
fn prepare(profile: Profile, limits: &Limits, env_opts: &EnvOptions) -> mlua::Result<Vm> {
    let vm = new_vm(profile, limits)?;
    {
        let active = Activation::new(vm.ctl());
        vm.begin_call(None);
        env::build(vm.lua(), profile.spec(), env_opts)?;
        drop(active);
    }
    Ok(vm)
}

/// Builds a [`Sandbox`]; validates when built.
#[derive(Debug, Clone, Default)]
pub struct SandboxBuilder {
    profile: Profile,
    limits: Limits,
    env: EnvOptions,
    require_run: bool,
    require_table: bool,
    isolation: Isolation,
    tools: ToolRegistry,
    http: HttpConfig,
    /// The first invalid tool registration, reported by `build`.
    tool_error: Option<ConfigError>,
    /// `None`: [`DEFAULT_PREPARED_STATES`].
    prepared_states: Option<usize>,
}

impl SandboxBuilder {
    /// Selects the profile. By default, [`Profile::Standard`].
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Replaces all limits at once. By default, [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the Lua heap limit in bytes. By default, 64 MiB.
    pub fn memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.limits.memory_bytes = bytes;
        self
    }

    /// Sets the wall-clock deadline of each run. By default, 5 s.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// Sets an instruction budget shared by all coroutines of a run. This installs a
    /// count hook, which roughly doubles run time. By default, no limit is set.
    pub fn instruction_limit(mut self, instructions: Option<u64>) -> Self {
        self.limits.instructions = instructions;
        self
    }

    /// Sets the limit on captured output in bytes. By default, 1 MiB.
    pub fn output_limit(mut self, bytes: Option<usize>) -> Self {
        self.limits.output_bytes = bytes;
        self
    }

    /// Sets the limit on source size in bytes (also for `load`). By default, 1 MiB.
    pub fn source_limit(mut self, bytes: Option<usize>) -> Self {
        self.limits.source_bytes = bytes;
        self
    }

    /// Sets how deeply input and result may nest. By default, 64.
    pub fn result_depth(mut self, depth: usize) -> Self {
        self.limits.result_depth = depth;
        self
    }

    /// Sets the limit on the result's JSON size in bytes. By default, 16 MiB.
    pub fn result_limit(mut self, bytes: Option<usize>) -> Self {
        self.limits.result_bytes = bytes;
        self
    }

    /// Fails runs whose script defines no global function `run` (LuaExecutor
    /// strictness). By default, off: the chunk's return value is the result.
    pub fn require_run(mut self, yes: bool) -> Self {
        self.require_run = yes;
        self
    }

    /// Fails runs whose result is not a table. By default, off.
    pub fn require_table_result(mut self, yes: bool) -> Self {
        self.require_table = yes;
        self
    }

    /// Lets scripts `require` host modules and `io.open` host files (aos profile).
    /// By default, nothing is readable.
    pub fn host_files(mut self, files: HostFiles) -> Self {
        self.env.files = std::sync::Arc::new(files);
        self
    }

    /// Makes `os.time`/`os.clock`/`os.date` and `math.random` reproducible. Works with
    /// every profile. By default, off.
    pub fn deterministic(mut self, determinism: Option<Determinism>) -> Self {
        self.env.deterministic = determinism;
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
        self.env.diagnostic = yes;
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
        let spec = self.profile.spec();
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

    /// Validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError::InvalidLimit`] for a limit that would fail every run;
    /// [`ConfigError::Tool`] for a tool that cannot be registered (an invalid or taken
    /// name, a name the profile already defines, an invalid `http` allowlist entry).
    pub fn build(self) -> Result<Sandbox, ConfigError> {
        let l = &self.limits;
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
        if l.instructions == Some(0) {
            return bad("instructions", "must be at least 1");
        }
        if l.result_depth == 0 {
            return bad("result-depth", "must be at least 1");
        }
        let tools = self.tool_registry()?;
        let isolation = Isolated::new(self.isolation, self.profile, &self.limits, &self.env)?;
        // States can be prepared ahead only when nothing per-run goes into the
        // environment (tools attach per run) and runs happen in this process.
        let spares = self.prepared_states.unwrap_or(DEFAULT_PREPARED_STATES);
        let prepared = (spares > 0 && tools.is_none() && matches!(isolation, Isolated::InProcess))
            .then(|| {
                let (profile, limits, env) = (self.profile, self.limits.clone(), self.env.clone());
                Arc::new(Prepared::new(
                    spares,
                    Box::new(move || prepare(profile, &limits, &env).ok()),
                ))
            });
        Ok(Sandbox {
            profile: self.profile,
            limits: self.limits,
            env: self.env,
            require_run: self.require_run,
            require_table: self.require_table,
            isolation,
            tools,
            prepared,
        })
    }
}

/// A validated sandbox configuration. Cheap to share: `Send + Sync`, and every run
/// builds its own state, so runs on many threads share nothing.
#[derive(Debug, Clone)]
pub struct Sandbox {
    profile: Profile,
    limits: Limits,
    pub(crate) env: EnvOptions,
    require_run: bool,
    require_table: bool,
    pub(crate) isolation: Isolated,
    tools: Option<Arc<ToolRegistry>>,
    prepared: Option<Arc<Prepared>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            profile: Profile::default(),
            limits: Limits::default(),
            env: EnvOptions::default(),
            require_run: false,
            require_table: false,
            isolation: Isolated::InProcess,
            tools: None,
            prepared: None,
        }
    }
}

/// Per-run options that are not limits.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// The chunk name used in error messages (`NAME:LINE: message`). By default, "script".
    pub chunk_name: &'a str,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            chunk_name: "script",
        }
    }
}

impl Sandbox {
    /// Starts a builder with the defaults.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The profile runs use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The limits runs use.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The host tools runs get (`None`: no tools), frozen when the sandbox was built.
    pub fn tools(&self) -> Option<&Arc<ToolRegistry>> {
        self.tools.as_ref()
    }

    /// Runs `source` in a fresh state with `input` as its first vararg (and as the
    /// argument of `run`, if the chunk defines one).
    pub fn run(&self, source: impl AsRef<[u8]>, input: &Json) -> Outcome {
        self.run_with(source.as_ref(), input, &RunOptions::default())
    }

    /// [`Sandbox::run`] with options.
    pub fn run_with(&self, source: impl AsRef<[u8]>, input: &Json, opts: &RunOptions) -> Outcome {
        if let Some(outcome) = self.isolation.run(&crate::worker::Job {
            source: source.as_ref(),
            input,
            chunk_name: opts.chunk_name,
            profile: self.profile,
            limits: &self.limits,
            env: &self.env,
            require_run: self.require_run,
            require_table: self.require_table,
            tools: self.tools.as_ref(),
        }) {
            return outcome;
        }
        let start = Instant::now();
        let mut stats = Stats::default();
        let tools = self
            .tools
            .as_ref()
            .map(|registry| Arc::new(registry.start_run(self.limits.timeout.map(|t| start + t))));
        let (result, output, diagnostics) = self.execute(
            source.as_ref(),
            input,
            opts,
            start,
            &mut stats,
            tools.clone(),
        );
        stats.wall = start.elapsed();
        Outcome {
            result,
            output,
            stats,
            diagnostics,
            tool_calls: tools.map(|t| t.take_calls()).unwrap_or_default(),
        }
    }

    fn execute(
        &self,
        source: &[u8],
        input: &Json,
        opts: &RunOptions,
        start: Instant,
        stats: &mut Stats,
        tools: Option<Arc<crate::tools::ToolRun>>,
    ) -> (Result<Json, Error>, String, Option<Diagnostics>) {
        if let Some(max) = self.limits.source_bytes {
            if source.len() > max {
                let msg = format!(
                    "the source is {} bytes, over the {max} byte limit",
                    source.len()
                );
                return (Err(Error::new(ErrorKind::Input, msg)), String::new(), None);
            }
        }
        if source.first() == Some(&0x1b) {
            let msg = "binary chunks cannot be loaded";
            return (
                Err(Error::new(ErrorKind::Forbidden, msg)),
                String::new(),
                None,
            );
        }
        let spec = self.profile.spec();
        // A prepared state has its environment built already; otherwise build it here.
        let prepared = self.prepared.as_ref().and_then(|p| p.take());
        let built = prepared.is_some();
        let vm = match prepared {
            Some(vm) => vm,
            None => match new_vm(self.profile, &self.limits) {
                Ok(vm) => vm,
                Err(e) => {
                    return (
                        Err(Error::new(ErrorKind::Internal, e.to_string())),
                        String::new(),
                        None,
                    )
                }
            },
        };
        let ctl = vm.ctl();
        let active = Activation::new(ctl);
        // Reset the call state first: arming first would let a deadline that passes at
        // once be cleared by the reset and lost.
        vm.begin_call(self.limits.instructions);
        let deadline = self.limits.timeout.map(|t| Deadline::arm(ctl, start + t));

        tracing::debug!(
            profile = spec.name,
            memory = ?self.limits.memory_bytes,
            timeout = ?self.limits.timeout,
            instructions = ?self.limits.instructions,
            output = ?self.limits.output_bytes,
            "limits set"
        );
        if let Some(run) = tools {
            attach_tools(&vm, &self.limits, run);
        }
        let environment = if built {
            Ok(())
        } else {
            env::build(vm.lua(), spec, &self.env)
        };
        let result = environment
            .inspect(|()| {
                tracing::debug!(profile = spec.name, prepared = built, "environment built")
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("building the environment: {e}"),
                )
            })
            .and_then(|()| self.script(&vm, source, input, opts));
        let result = classify_result(ctl, result);

        let (_, peak, _) = ctl.memory();
        match &result {
            Ok(_) => tracing::debug!(peak_memory = peak, elapsed = ?start.elapsed(), "outcome: ok"),
            Err(e) => tracing::debug!(
                kind = e.kind.as_str(),
                message = %e.message,
                peak_memory = peak,
                elapsed = ?start.elapsed(),
                "outcome: failed"
            ),
        }
        let (output, diagnostics) = collect(&vm, &self.limits, stats);
        drop(deadline);
        drop(active);
        match &self.prepared {
            // Closed by the helper thread, off this run's path.
            Some(p) => p.retire(vm),
            None => drop(vm),
        }
        (result, output, diagnostics)
    }

    fn script(
        &self,
        vm: &Vm,
        source: &[u8],
        input: &Json,
        opts: &RunOptions,
    ) -> Result<Json, Error> {
        let lua = vm.lua();
        let name = opts.chunk_name;
        let f = lua
            .load(source)
            .set_name(format!("={name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| load_error(e, name))?;
        tracing::debug!(chunk = name, bytes = source.len(), "chunk compiled");
        let input = marshal::from_json(lua, input, self.limits.result_depth)
            .map_err(|e| Error::new(ErrorKind::Input, mlua_message(&e)))?;
        let rets = vm
            .call(&f, &input)
            .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?
            .map_err(|v| script_error(lua, v, name))?;
        let run: Value = crate::diag::real_globals(lua)
            .raw_get("run")
            .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
        if matches!(run, Value::Function(_)) {
            tracing::debug!("entry called: run(input)");
        }
        let value = match run {
            Value::Function(run) => vm
                .call(&run, &input)
                .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?
                .map_err(|v| script_error(lua, v, name))?
                .into_iter()
                .next(),
            _ if self.require_run => {
                return Err(Error::new(
                    ErrorKind::Runtime,
                    "the script defines no global function `run`",
                ))
            }
            _ => rets.into_iter().next(),
        }
        .unwrap_or(Value::Nil);
        if self.require_table && !matches!(value, Value::Table(_)) {
            return Err(Error::new(
                ErrorKind::Result,
                format!("the result must be a table, got a {}", value.type_name()),
            ));
        }
        marshal::to_json(lua, &value, self.limits.result_bounds())
            .map_err(|e| Error::new(ErrorKind::Result, e.to_string()))
    }
}

/// Sends the tool calls of `vm`'s state to `run`, under `limits`' marshaling bounds.
pub(crate) fn attach_tools(vm: &Vm, limits: &Limits, run: Arc<crate::tools::ToolRun>) {
    crate::tools::lua::attach(vm.lua(), run, limits.result_bounds(), limits.result_depth);
}

/// What a finished call leaves to report: memory and instruction figures into `stats`,
/// then the captured output and the diagnostics.
pub(crate) fn collect(
    vm: &Vm,
    limits: &Limits,
    stats: &mut Stats,
) -> (String, Option<Diagnostics>) {
    let ctl = vm.ctl();
    let (_, peak, _) = ctl.memory();
    stats.memory_bytes = peak;
    stats.instructions = limits.instructions.map(|_| ctl.instr_charged.get());
    let output = String::from_utf8_lossy(&ctl.take_output()).into_owned();
    (output, crate::diag::take(vm.lua()))
}

/// The final kind: a quota that fired wins over whatever error the script raised after
/// catching it; then a refused operation; then the error as raised.
pub(crate) fn classify(ctl: &Control, e: Error) -> Error {
    classify_result(ctl, Err(e))
        .err()
        .unwrap_or_else(|| Error::new(ErrorKind::Internal, "classify: an error became a success"))
}

/// Limits are sticky: a quota that fired fails the run even when the script caught the
/// error and then returned normally (for instance `return pcall(...)`, where no
/// instruction runs after the catch for the hook to stop).
pub(crate) fn classify_result(ctl: &Control, r: Result<Json, Error>) -> Result<Json, Error> {
    let line = r.as_ref().err().and_then(|e| e.line);
    if let Some(kind) = ctl.stop().kind() {
        return Err(Error {
            kind,
            message: ctl.stop().message().to_string(),
            line,
        });
    }
    let (_, _, memory_hit) = ctl.memory();
    if memory_hit && !matches!(&r, Err(e) if e.kind == ErrorKind::Input) {
        return Err(Error {
            kind: ErrorKind::MemoryLimit,
            message: "not enough memory: the script reached its memory limit".to_string(),
            line,
        });
    }
    r.map_err(|e| classify_error(ctl, e))
}

fn classify_error(ctl: &Control, e: Error) -> Error {
    if e.kind == ErrorKind::Runtime && ctl.forbidden.get() && e.message.contains(FORBIDDEN) {
        return Error {
            kind: ErrorKind::Forbidden,
            ..e
        };
    }
    e
}

/// The innermost message of an mlua error (callback errors wrap the real one).
pub(crate) fn mlua_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => mlua_message(cause),
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::WithContext { cause, .. } => mlua_message(cause),
        other => other.to_string(),
    }
}

pub(crate) fn load_error(e: mlua::Error, name: &str) -> Error {
    match e {
        mlua::Error::SyntaxError { message, .. } => Error {
            line: line_of(&message, name),
            kind: ErrorKind::Syntax,
            message,
        },
        mlua::Error::MemoryError(m) => Error::new(ErrorKind::MemoryLimit, m),
        // The parser raises runtime errors too ("C stack overflow" on deep nesting):
        // still the source's fault.
        mlua::Error::RuntimeError(message) => Error {
            line: line_of(&message, name),
            kind: ErrorKind::Syntax,
            message,
        },
        other => Error::new(ErrorKind::Internal, mlua_message(&other)),
    }
}

/// Turns an error value into a message without running any of its metamethods.
pub(crate) fn script_error(lua: &mlua::Lua, v: Value, name: &str) -> Error {
    let message = match &v {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Error(e) => mlua_message(e),
        Value::Nil => "nil".to_string(),
        Value::Table(_) => {
            let bounds = Bounds {
                depth: 16,
                bytes: 4096,
            };
            match marshal::to_json(lua, &v, bounds) {
                Ok(j) => format!("error object: {j}"),
                Err(_) => "(error object is a table value)".to_string(),
            }
        }
        other => format!("(error object is a {} value)", other.type_name()),
    };
    Error {
        line: line_of(&message, name),
        kind: ErrorKind::Runtime,
        message,
    }
}

/// The line number when `message` starts with `NAME:LINE:`.
fn line_of(message: &str, name: &str) -> Option<u32> {
    let rest = message.strip_prefix(name)?.strip_prefix(':')?;
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(line_of("script:3: boom", "script"), Some(3));
        assert_eq!(line_of("other:3: boom", "script"), None);
        assert_eq!(line_of("script: boom", "script"), None);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sandbox_is_send_sync() {
        assert_send_sync::<Sandbox>();
        assert_send_sync::<Outcome>();
    }
}
