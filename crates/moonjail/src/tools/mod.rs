//! Host tools: functions the host registers under dotted names (`"weather.lookup"`, or a
//! bare `"log"`) and scripts call as `weather.lookup{city = "Lyon"}`.
//!
//! The registry ([`ToolRegistry`]) is built once, frozen in an `Arc` when the sandbox is
//! built, and shared by every run. Each run gets its own [`ToolRun`]: the call quotas,
//! the deadline and the audit record ([`ToolCall`]) live there, so runs share nothing.
//! [`ToolRun::call`] dispatches by name with a JSON argument list and returns JSON or a
//! [`ToolError`]; the Lua side (`lua.rs`) is one caller of it, the supervisor serving a
//! worker's host calls is the other.
//!
//! **In a worker process** the registry holds names and quotas only: a *relayed*
//! registry, whose calls go through a [`Relay`] (the channel to the supervisor) instead
//! of functions. The worker's own [`ToolRun`] still refuses unknown names, calls past its
//! deadline and calls over the quotas, with the same messages as in process and without
//! asking; what it admits, the supervisor checks again and runs with the run's real
//! [`ToolRun`], whose record is the one the outcome reports.
//!
//! Arguments and results cross through the core marshaling rules. A tool error, an
//! argument JSON cannot hold, an exceeded quota and a panicking tool all reach the script
//! as a plain string error it can catch with `pcall`; none ever reaches the host as a
//! panic.
//!
//! Built-in tools: [`HttpConfig`] (`http.get`, `http.post` to allowlisted destinations)
//! and [`CommandTool`] (an external program, JSON on stdin and stdout).

mod catalogue;
mod command;
mod http;
pub(crate) mod lua;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::ConfigError;

pub use catalogue::{Catalogue, EntryKind, ToolInfo};
pub use command::CommandTool;
pub(crate) use http::check_url;
pub use http::{HttpConfig, HttpDestination};
pub use schema::ToolSpec;

pub(crate) use catalogue::json_entries;
pub(crate) use schema::ArgsSchema;

/// Longest tool error message kept (in the audit record and in the Lua error), in bytes.
const MAX_MESSAGE_BYTES: usize = 4096;

/// What a tool returns instead of a value: the script sees `message` as a plain string
/// error it can catch with `pcall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    message: String,
    /// The answer of a deferred tool: the run stops here, suspended (see
    /// [`ToolRegistry::register_deferred`]). Only moonjail makes one.
    pub(crate) suspend: bool,
}

/// What the script would see of a deferred call's error, were it not stopped at once.
const SUSPENDED: &str = "the run is suspended at this call: the host answers it later";

impl ToolError {
    /// A tool error with this message.
    pub fn new(message: impl Into<String>) -> ToolError {
        ToolError {
            message: message.into(),
            suspend: false,
        }
    }

    /// The answer of a deferred tool: suspend the run.
    pub(crate) fn suspended() -> ToolError {
        ToolError {
            message: SUSPENDED.to_string(),
            suspend: true,
        }
    }

    /// The message the script sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::new(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::new(message)
    }
}

/// What a tool knows about the call it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolContext {
    deadline: Option<Instant>,
}

impl ToolContext {
    /// A context whose calls must end by `deadline` (`None`: the run has no deadline).
    pub fn new(deadline: Option<Instant>) -> ToolContext {
        ToolContext { deadline }
    }

    /// When the run ends. A tool must return by then: the run is over at that instant,
    /// and whatever the tool returns later is thrown away.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The timeout a tool should use for its own work: `cap`, shortened to the time left.
    pub fn timeout(&self, cap: Duration) -> Duration {
        self.remaining().map_or(cap, |left| left.min(cap))
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The audit record of one tool call, as [`crate::Outcome::tool_calls`] lists it.
///
/// Calls refused before the tool ran (an unknown name, a passed deadline, an exceeded
/// quota) are not recorded: so the record is bounded by the quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The tool's registered name, e.g. `"http.get"`.
    pub name: String,
    /// Time spent in the call (marshaling included).
    pub duration: Duration,
    /// True when the tool returned a value.
    pub ok: bool,
    /// The tool error's message, when it failed.
    pub error: Option<String>,
    /// Size of the arguments as JSON text (what went into the tool), in bytes.
    pub bytes_in: u64,
    /// Size of the result as JSON text (what came out of it), in bytes; 0 on error.
    pub bytes_out: u64,
}

/// Serialised as `run --json` prints it (see [`ToolCall::to_json`]), written straight
/// from the fields: a run's audit can list a thousand calls, and the journal's `end`
/// line and every outcome document write it whole.
impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The document's fields, in its key order (sorted, as a JSON object's are).
        #[derive(Serialize)]
        struct Doc<'a> {
            bytes_in: u64,
            bytes_out: u64,
            error: &'a Option<String>,
            ms: f64,
            name: &'a str,
            ok: bool,
        }
        Doc {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            error: &self.error,
            ms: self.ms(),
            name: &self.name,
            ok: self.ok,
        }
        .serialize(serializer)
    }
}

impl ToolCall {
    /// The call's duration in milliseconds, rounded to microseconds.
    fn ms(&self) -> f64 {
        (self.duration.as_secs_f64() * 1e6).round() / 1e3
    }

    /// `{"name", "ms", "ok", "error", "bytes_in", "bytes_out"}`, as `run --json` prints it.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "name": self.name,
            "ms": self.ms(),
            "ok": self.ok,
            "error": self.error,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        })
    }
}

/// How many tool calls one run may make.
///
/// A call over a quota is a tool error the script can catch (it is not recorded, and the
/// tool does not run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolQuota {
    /// Calls to all tools together. By default, 1000.
    pub per_run: Option<u32>,
    /// Calls per tool or per namespace: `"weather.lookup"` bounds that tool, `"weather"`
    /// every tool under `weather.`. A call must fit every quota that names it. By
    /// default, empty (the `http` namespace gets [`HttpConfig::max_requests`]).
    pub per_tool: BTreeMap<String, u32>,
}

impl Default for ToolQuota {
    fn default() -> Self {
        ToolQuota {
            per_run: Some(1000),
            per_tool: BTreeMap::new(),
        }
    }
}

impl ToolQuota {
    /// Bounds the calls a run may make to `name` (a tool or a namespace).
    pub fn tool(mut self, name: impl Into<String>, calls: u32) -> Self {
        self.per_tool.insert(name.into(), calls);
        self
    }

    /// Bounds the calls a run may make to all tools together (`None`: no bound).
    pub fn per_run(mut self, calls: Option<u32>) -> Self {
        self.per_run = calls;
        self
    }
}

/// A tool: called with the context and the JSON argument list.
pub type ToolFn = dyn Fn(&ToolContext, Vec<Json>) -> Result<Json, ToolError> + Send + Sync;

/// Where the calls of a relayed registry go instead of to functions: inside a worker
/// process, the channel to the supervisor, which runs the real tool.
pub(crate) trait Relay: Send + Sync {
    /// Performs the admitted call `name`. `args` are its arguments, or why they could not
    /// be marshaled: that is relayed too, so that the host records the failed call as it
    /// would in process.
    fn call(&self, name: &str, args: Result<Vec<Json>, ToolError>) -> Result<Json, ToolError>;
}

/// The host functions a sandbox exposes, by dotted name, with their quotas.
///
/// ```
/// use moonjail::{Sandbox, ToolError, ToolRegistry};
/// use serde_json::json;
///
/// let mut tools = ToolRegistry::new();
/// tools.register("weather.lookup", |args| match args.first().and_then(|a| a["city"].as_str()) {
///     Some("Lyon") => Ok(json!({"forecast": "sunny"})),
///     Some(city) => Err(ToolError::new(format!("no forecast for {city}"))),
///     None => Err(ToolError::new("expected {city = ...}")),
/// })?;
/// let sandbox = Sandbox::builder().tools(tools).build()?;
/// let out = sandbox.run(r#"return weather.lookup{city = "Lyon"}.forecast"#, &json!(null));
/// assert_eq!(out.result.unwrap(), json!("sunny"));
/// assert_eq!(out.tool_calls.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<ToolFn>>,
    /// What the described tools say about themselves, with their compiled parameter
    /// schemas. Never sent to a worker: the supervisor, which runs the tools, checks.
    specs: BTreeMap<String, Described>,
    quota: ToolQuota,
    /// Set in a worker process: every call goes through it (the functions are
    /// placeholders, never called).
    relay: Option<Arc<dyn Relay>>,
    /// Set for a journaled run (`Sandbox::run_journaled`): every call the host runs goes
    /// through it, which records it (or, replaying, answers it from the journal).
    tap: Option<Arc<dyn ToolTap>>,
    /// The tools registered with [`ToolRegistry::register_deferred`].
    deferred: BTreeSet<String>,
    /// Set for a run started with [`crate::Sandbox::start`]: a deferred call waits here
    /// for the host's answer instead of stopping the run (in process, on the run's
    /// thread; isolated, on the supervisor's, the worker waiting for the reply).
    park: Option<Arc<dyn Park>>,
}

/// The pending call as a suspended outcome's error value: `{"name", "args"}`.
pub(crate) fn pending_value(name: &str, args: &[Json]) -> Json {
    serde_json::json!({"name": name, "args": args})
}

/// Where a run started in memory waits at a deferred call ([`crate::Sandbox::start`]).
pub(crate) trait Park: Send + Sync {
    /// Hands the pending call to the host and blocks until it answers; `None`: the host
    /// gave the run up, which then stops there, suspended.
    fn park(&self, step: u64, name: &str, args: &[Json]) -> Option<Result<Json, ToolError>>;
}

/// What sees every call a host-side registry runs, before its schema check: the journal
/// records the arguments as the script gave them and the answer as the script got it
/// (a schema failure, a panic and the tool's error included).
pub(crate) trait ToolTap: Send + Sync {
    /// Performs call `name`: `real` runs it as an untapped registry would.
    fn call(
        &self,
        name: &str,
        args: Vec<Json>,
        real: &mut dyn FnMut(Vec<Json>) -> Result<Json, ToolError>,
    ) -> Result<Json, ToolError>;

    /// [`ToolTap::call`], setting `sizes` to the JSON sizes of the arguments and the
    /// answer for the run's audit. A tap that writes them as JSON (the journal) knows
    /// them without serialising them again; by default the arguments are measured here
    /// and the answer is left to the caller.
    fn call_sized(
        &self,
        name: &str,
        args: Vec<Json>,
        real: &mut dyn FnMut(Vec<Json>) -> Result<Json, ToolError>,
        sizes: &mut CallSizes,
    ) -> Result<Json, ToolError> {
        *sizes = CallSizes::of_args(&args);
        self.call(name, args, real)
    }
}

/// The sizes a call's audit entry records ([`ToolCall::bytes_in`],
/// [`ToolCall::bytes_out`]): the length of the arguments and of the answer as compact
/// JSON text, which is what `serde_json::to_writer` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallSizes {
    /// The arguments' (the array of them).
    pub(crate) args: u64,
    /// The answer's, when the call returned `Ok` and it was measured on the way (`None`:
    /// the caller measures it).
    pub(crate) result: Option<u64>,
}

impl CallSizes {
    /// The sizes of a call with `args`, its answer not measured.
    #[inline]
    pub(crate) fn of_args(args: &[Json]) -> CallSizes {
        CallSizes {
            args: json_len(&args),
            result: None,
        }
    }
}

/// A tool's spec, and its parameter schema compiled once (`None`: not checked).
#[derive(Debug, Clone)]
struct Described {
    spec: ToolSpec,
    args: Option<Arc<ArgsSchema>>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .field("described", &self.specs.keys().collect::<Vec<_>>())
            .field("quota", &self.quota)
            .field("relayed", &self.relay.is_some())
            .field("tapped", &self.tap.is_some())
            .field("deferred", &self.deferred)
            .field("parked", &self.park.is_some())
            .finish()
    }
}

impl ToolRegistry {
    /// An empty registry with the default quota.
    pub fn new() -> ToolRegistry {
        ToolRegistry::default()
    }

    /// A registry of `names` under `quota` whose calls all go through `relay`: the view a
    /// worker process has of its supervisor's registry (names and quotas cross the
    /// channel, never anything callable).
    ///
    /// # Errors
    /// As [`ToolRegistry::register`], for a name that is not valid.
    pub(crate) fn relayed(
        names: &[String],
        deferred: &[String],
        quota: ToolQuota,
        relay: Arc<dyn Relay>,
    ) -> Result<ToolRegistry, ConfigError> {
        let mut registry = ToolRegistry {
            quota,
            relay: Some(relay),
            ..ToolRegistry::default()
        };
        for name in names {
            registry.insert(
                name,
                Arc::new(|_: &ToolContext, _| {
                    Err(ToolError::new("a relayed tool is called through its relay"))
                }),
            )?;
        }
        for name in deferred {
            if !registry.contains(name) {
                return Err(ConfigError::Tool {
                    name: name.clone(),
                    reason: "a deferred tool that is not among the tools".into(),
                });
            }
            registry.deferred.insert(name.clone());
        }
        Ok(registry)
    }

    /// Registers `f` under `name`: a bare Lua identifier (`"log"`, a global function) or
    /// dotted identifiers (`"weather.lookup"`, `weather` becoming a read-only namespace).
    ///
    /// # Errors
    /// [`ConfigError::Tool`] for a name that is not dotted Lua identifiers, is taken, or
    /// would be both a tool and a namespace.
    pub fn register<F>(&mut self, name: &str, f: F) -> Result<&mut Self, ConfigError>
    where
        F: Fn(Vec<Json>) -> Result<Json, ToolError> + Send + Sync + 'static,
    {
        self.register_with_context(name, move |_: &ToolContext, args| f(args))
    }

    /// [`ToolRegistry::register`] for a tool that needs its [`ToolContext`] (a tool that
    /// can block must finish by [`ToolContext::deadline`]).
    ///
    /// # Errors
    /// As [`ToolRegistry::register`].
    pub fn register_with_context<F>(&mut self, name: &str, f: F) -> Result<&mut Self, ConfigError>
    where
        F: Fn(&ToolContext, Vec<Json>) -> Result<Json, ToolError> + Send + Sync + 'static,
    {
        self.insert(name, Arc::new(f))?;
        Ok(self)
    }

    /// Registers a *deferred* tool: one the host answers later, perhaps much later, perhaps
    /// in another process (a person approving a payment). When the script calls it, the
    /// arguments are checked (against the tool's schema, if described), then the run
    /// stops there: its outcome fails with [`crate::ErrorKind::Suspended`], whose error
    /// `value` is the pending call `{"name", "args"}`. A journaled run
    /// ([`crate::Sandbox::run_journaled`]) records the pending call as a `suspend` line,
    /// and [`crate::Sandbox::resume`] (`moonjail resume`) continues the run from its journal with
    /// the host's answer, which the script receives as the tool's return value (or error).
    ///
    /// # Errors
    /// As [`ToolRegistry::register`].
    pub fn register_deferred(&mut self, name: &str) -> Result<&mut Self, ConfigError> {
        self.insert(
            name,
            Arc::new(|_: &ToolContext, _| Err(ToolError::suspended())),
        )?;
        self.deferred.insert(name.to_string());
        Ok(self)
    }

    /// A deferred tool whose calls `f` answers (a replay answers them from the journal,
    /// a resume with the host's answer); `f` suspends the run by returning
    /// [`ToolError::suspended`].
    pub(crate) fn register_deferred_with<F>(&mut self, name: &str, f: F) -> Result<(), ConfigError>
    where
        F: Fn(&ToolContext, Vec<Json>) -> Result<Json, ToolError> + Send + Sync + 'static,
    {
        self.insert(name, Arc::new(f))?;
        self.deferred.insert(name.to_string());
        Ok(())
    }

    /// True when `name` is a deferred tool ([`ToolRegistry::register_deferred`]).
    pub fn is_deferred(&self, name: &str) -> bool {
        self.deferred.contains(name)
    }

    /// The deferred tools' names, in order.
    pub fn deferred(&self) -> impl Iterator<Item = &str> {
        self.deferred.iter().map(String::as_str)
    }

    /// Without the `http` feature there is no client to register.
    ///
    /// # Errors
    /// Always [`ConfigError::Tool`]: moonjail was built without the `http` feature.
    #[cfg(not(feature = "http"))]
    pub fn register_http(&mut self, config: HttpConfig) -> Result<&mut Self, ConfigError> {
        let _ = config;
        Err(tool_error(
            "http",
            "this moonjail was built without the `http` feature (no HTTP or TLS client)",
        ))
    }

    /// Registers an external program as tool `name` (see [`CommandTool`]).
    ///
    /// # Errors
    /// As [`ToolRegistry::register`], and for an empty command.
    pub fn register_command(
        &mut self,
        name: &str,
        tool: CommandTool,
    ) -> Result<&mut Self, ConfigError> {
        if tool.command().trim().is_empty() {
            return Err(tool_error(name, "the command is empty"));
        }
        let label = name.to_string();
        self.register_with_context(name, move |ctx, args| tool.call(&label, ctx, args))
    }

    /// Registers `http.get` and `http.post`, restricted to `config`'s allowlist, and
    /// bounds the `http` namespace to [`HttpConfig::max_requests`] calls per run (or to
    /// the quota already set for `http`, if lower; a later
    /// [`ToolRegistry::set_quota`] replaces it).
    ///
    /// # Errors
    /// [`ConfigError::Tool`] for an allowlist entry that does not parse, an empty
    /// allowlist, or when `http.get`/`http.post` are taken.
    #[cfg(feature = "http")]
    pub fn register_http(&mut self, config: HttpConfig) -> Result<&mut Self, ConfigError> {
        let max = config.request_quota();
        let client = Arc::new(http::Client::new(config)?);
        if self.contains("http.get") || self.contains("http.post") {
            return Err(tool_error(
                "http",
                "`http.get` or `http.post` is already registered",
            ));
        }
        let allowed = client.allowed_summary();
        let get = client.clone();
        self.register_with_context("http.get", move |ctx, args| get.get(ctx, args))?;
        self.register_with_context("http.post", move |ctx, args| client.post(ctx, args))?;
        // Described for the catalogue, not checked: the client checks its own arguments,
        // with messages that name them.
        for name in ["http.get", "http.post"] {
            let spec = catalogue::http_spec(name, &allowed);
            self.specs
                .insert(name.into(), Described { spec, args: None });
        }
        if let Some(max) = max {
            let per_tool = &mut self.quota.per_tool;
            let max = per_tool.get("http").map_or(max, |q| (*q).min(max));
            per_tool.insert("http".into(), max);
        }
        Ok(self)
    }

    fn insert(&mut self, name: &str, f: Arc<ToolFn>) -> Result<(), ConfigError> {
        validate_name(name)?;
        if self.tools.contains_key(name) {
            return Err(tool_error(
                name,
                "a tool of that name is already registered",
            ));
        }
        let prefix = format!("{name}.");
        if let Some(other) = self.tools.keys().find(|k| k.starts_with(&prefix)) {
            return Err(tool_error(
                name,
                format!("`{name}` is already a namespace (of `{other}`)"),
            ));
        }
        let mut end = 0;
        while let Some(dot) = name[end..].find('.') {
            let ns = &name[..end + dot];
            if self.tools.contains_key(ns) {
                return Err(tool_error(
                    name,
                    format!("`{ns}` is already a tool, so it cannot be a namespace"),
                ));
            }
            end += dot + 1;
        }
        self.tools.insert(name.to_string(), f);
        Ok(())
    }

    /// Replaces the call quota. By default, [`ToolQuota::default`].
    pub fn set_quota(&mut self, quota: ToolQuota) -> &mut Self {
        self.quota = quota;
        self
    }

    /// Describes the registered tool `name` for models ([`ToolRegistry::catalogue`])
    /// and, when `spec` has parameters, checks every call's arguments against them
    /// before the tool runs: a call that does not match fails with a message naming the
    /// argument, the JSON pointer of the failing place and what was expected
    /// (`argument 1: at /city: expected string, got integer`), recorded as a failed
    /// call. See [`ToolSpec`] for which arguments a schema describes. The schemas are
    /// compiled here, once; a `$ref` outside the schema is refused, never fetched.
    /// Describing a tool again replaces its spec.
    ///
    /// ```
    /// use moonjail::{Sandbox, ToolRegistry, ToolSpec};
    /// use serde_json::json;
    ///
    /// let mut tools = ToolRegistry::new();
    /// tools.register("weather.lookup", |_| Ok(json!({"forecast": "sunny"})))?;
    /// tools.describe("weather.lookup", ToolSpec::new()
    ///     .description("The forecast for a city.")
    ///     .parameters(json!({"type": "object", "properties": {"city": {"type": "string"}},
    ///                        "required": ["city"]})))?;
    /// let sandbox = Sandbox::builder().tools(tools).build()?;
    /// let out = sandbox.run("return select(2, pcall(weather.lookup, {city = 3}))", &json!(null));
    /// assert_eq!(out.result.unwrap(),
    ///            json!("weather.lookup: argument 1: at /city: expected string, got integer"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Tool`] when no tool `name` is registered, or a schema is not a
    /// valid JSON Schema (or refers outside itself).
    pub fn describe(&mut self, name: &str, spec: ToolSpec) -> Result<&mut Self, ConfigError> {
        if !self.tools.contains_key(name) {
            return Err(tool_error(
                name,
                "no tool of that name is registered (register it before describing it)",
            ));
        }
        let args = match &spec.parameters {
            Some(schema) => Some(Arc::new(
                ArgsSchema::new(schema).map_err(|e| tool_error(name, e))?,
            )),
            None => None,
        };
        if let Some(returns) = &spec.returns {
            schema::compile(returns, "returns").map_err(|e| tool_error(name, e))?;
        }
        self.specs
            .insert(name.to_string(), Described { spec, args });
        Ok(self)
    }

    /// What tool `name` says about itself (`None`: not described).
    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.specs.get(name).map(|d| &d.spec)
    }

    /// Tool `name`'s compiled parameter schema, if it has one: the linter checks literal
    /// arguments against the very schema calls are checked against.
    pub(crate) fn args_schema(&self, name: &str) -> Option<&Arc<ArgsSchema>> {
        self.specs.get(name).and_then(|d| d.args.as_ref())
    }

    /// Every registered tool with its description and schemas, sorted by name (the
    /// `http` tools included when registered; the `json` library is the sandbox's, see
    /// [`crate::Sandbox::tool_catalogue`]).
    pub fn catalogue(&self) -> Catalogue {
        Catalogue::new(
            self.names()
                .map(|name| ToolInfo::host(name, self.spec(name)))
                .collect(),
        )
    }

    /// The call quota each run starts with.
    pub fn quota(&self) -> &ToolQuota {
        &self.quota
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// True when a tool of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// True when no tool is registered.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Calls tool `name` directly: no quota, no audit (see [`ToolRun::call`] for both).
    /// A panic in the tool is contained and returned as a tool error.
    ///
    /// # Errors
    /// The tool's error; a tool error for an unknown name or a panic.
    pub fn call(&self, ctx: &ToolContext, name: &str, args: Vec<Json>) -> Result<Json, ToolError> {
        let f = self.tool(name)?;
        if let Some(relay) = &self.relay {
            return relay.call(name, Ok(args));
        }
        if let Some(tap) = &self.tap {
            return tap.call(name, args, &mut |args| {
                self.call_untapped(ctx, f, name, args)
            });
        }
        self.call_untapped(ctx, f, name, args)
    }

    /// [`ToolRegistry::call`] for a run's audit, setting `sizes` to the JSON sizes of
    /// the arguments and, when the tap measured it, of the answer. (Inlined: the
    /// untapped path costs what it did before the tap could measure.)
    #[inline(always)]
    fn call_sized(
        &self,
        ctx: &ToolContext,
        name: &str,
        args: Vec<Json>,
        sizes: &mut CallSizes,
    ) -> Result<Json, ToolError> {
        // Looked up here only when tapped: an untapped call looks its tool up once.
        let tapped = match (&self.tap, &self.relay) {
            (Some(tap), None) => self.tools.get(name).map(|f| (tap, f)),
            _ => None,
        };
        match tapped {
            Some((tap, f)) => tap.call_sized(
                name,
                args,
                &mut |args| self.call_untapped(ctx, f, name, args),
                sizes,
            ),
            None => {
                *sizes = CallSizes::of_args(&args);
                self.call(ctx, name, args)
            }
        }
    }

    /// Tool `name`'s function, or the error of a call to an unknown name.
    fn tool(&self, name: &str) -> Result<&Arc<ToolFn>, ToolError> {
        self.tools
            .get(name)
            .ok_or_else(|| ToolError::new(format!("no tool named `{name}` is registered")))
    }

    /// The call of tool `f` (named `name`): its schema check, then the tool, a panic
    /// contained.
    fn call_untapped(
        &self,
        ctx: &ToolContext,
        f: &Arc<ToolFn>,
        name: &str,
        args: Vec<Json>,
    ) -> Result<Json, ToolError> {
        // Before the tool runs: a tool with a schema only ever sees arguments that match.
        let args = match self.specs.get(name).and_then(|d| d.args.as_ref()) {
            Some(schema) => schema.check(args)?,
            None => args,
        };
        match catch_unwind(AssertUnwindSafe(|| f(ctx, args))) {
            Ok(r) => r,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_string());
                Err(ToolError::new(format!("the tool panicked: {what}")))
            }
        }
    }

    /// This registry with its deferred calls waiting at `park` (a run started in memory).
    pub(crate) fn parked(&self, park: Arc<dyn Park>) -> ToolRegistry {
        ToolRegistry {
            park: Some(park),
            ..self.clone()
        }
    }

    /// Whether a deferred call waits for the host's answer (see [`ToolRegistry::parked`])
    /// rather than stopping the run.
    pub(crate) fn parks(&self) -> bool {
        self.park.is_some()
    }

    /// This registry with every call going through `tap` (a journaled run's).
    pub(crate) fn tapped(&self, tap: Arc<dyn ToolTap>) -> ToolRegistry {
        ToolRegistry {
            tap: Some(tap),
            ..self.clone()
        }
    }

    /// Starts the per-run state (quotas, audit) of one run ending at `deadline`.
    pub fn start_run(self: &Arc<Self>, deadline: Option<Instant>) -> ToolRun {
        ToolRun {
            registry: Arc::clone(self),
            deadline,
            parked_ns: AtomicU64::new(0),
            on_park: None,
            result_depth: None,
            state: Mutex::new(RunState::default()),
        }
    }

    /// [`ToolRegistry::start_run`] for a run whose results may nest at most
    /// `result_depth` levels: a deeper result is the call's error, recorded as such, so
    /// the audit says what the script received (in process and isolated alike).
    pub(crate) fn start_bounded_run(
        self: &Arc<Self>,
        deadline: Option<Instant>,
        result_depth: usize,
    ) -> ToolRun {
        ToolRun {
            result_depth: Some(result_depth),
            ..self.start_run(deadline)
        }
    }
}

/// One run's view of a registry: its quotas, its deadline and its audit record.
#[derive(Debug)]
pub struct ToolRun {
    registry: Arc<ToolRegistry>,
    deadline: Option<Instant>,
    /// Time spent parked at deferred calls: the deadline moves by it, and it is not the
    /// run's wall time.
    parked_ns: AtomicU64,
    /// Called as the run parks at a deferred call (see [`ToolRun::on_park`]).
    on_park: Option<OnPark>,
    /// Results nesting deeper fail the call (see [`ToolRegistry::start_bounded_run`]).
    result_depth: Option<usize>,
    state: Mutex<RunState>,
}

#[derive(Debug, Default)]
struct RunState {
    total: u32,
    counts: BTreeMap<String, u32>,
    calls: Vec<ToolCall>,
    /// The deferred call the run stopped at: its name and arguments.
    pending: Option<(String, Vec<Json>)>,
    /// Calls that reached the registry (the ones a journal numbers).
    reached: u64,
}

/// What a run does as it parks at a deferred call and as it goes on: an isolated run's
/// worker is frozen (a compromised worker must not compute while no deadline watches it)
/// and leaves its pool's count meanwhile, so that runs waiting for a person never starve
/// the runs that do not.
pub(crate) struct OnPark {
    /// Before the run waits.
    pub(crate) parking: Box<dyn Fn() + Send + Sync>,
    /// Once the host has answered (or given the run up), before the run goes on.
    pub(crate) going_on: Box<dyn Fn() + Send + Sync>,
}

impl OnPark {
    /// `self`'s hooks wrapped around `inner`'s: `self` parks first and goes on last.
    pub(crate) fn around(self, inner: OnPark) -> OnPark {
        let (outer_parking, outer_going_on) = (self.parking, self.going_on);
        let (inner_parking, inner_going_on) = (inner.parking, inner.going_on);
        OnPark {
            parking: Box::new(move || {
                outer_parking();
                inner_parking();
            }),
            going_on: Box::new(move || {
                inner_going_on();
                outer_going_on();
            }),
        }
    }
}

impl std::fmt::Debug for OnPark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnPark")
    }
}

impl ToolRun {
    /// This run with `hook` called each time it parks at a deferred call: before it waits
    /// and once it may go on.
    pub(crate) fn on_park(self, hook: OnPark) -> ToolRun {
        ToolRun {
            on_park: Some(hook),
            ..self
        }
    }

    /// The time spent parked at deferred calls so far.
    pub(crate) fn parked(&self) -> Duration {
        Duration::from_nanos(self.parked_ns.load(Ordering::Relaxed))
    }

    /// The registry this run calls into.
    pub fn registry(&self) -> &Arc<ToolRegistry> {
        &self.registry
    }

    /// When the run ends (`None`: no deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.map(|d| d + self.parked())
    }

    /// Calls tool `name` with `args` under this run's quotas and deadline, and records
    /// the call.
    ///
    /// # Errors
    /// A tool error for an unknown name, a passed deadline or an exceeded quota (none of
    /// them recorded), or the tool's own error or panic (recorded).
    pub fn call(&self, name: &str, args: Vec<Json>) -> Result<Json, ToolError> {
        self.call_prepared(name, || Ok(args))
    }

    /// [`ToolRun::call`] with arguments prepared once the call is admitted (marshaling
    /// from Lua happens there, so its cost and failures are part of the recorded call).
    pub(crate) fn call_prepared(
        &self,
        name: &str,
        args: impl FnOnce() -> Result<Vec<Json>, ToolError>,
    ) -> Result<Json, ToolError> {
        if !self.registry.contains(name) {
            return Err(ToolError::new(format!(
                "no tool named `{name}` is registered"
            )));
        }
        let ctx = ToolContext::new(self.deadline());
        if ctx.expired() {
            return Err(ToolError::new("the run's deadline has passed"));
        }
        self.admit(name)?;
        let start = Instant::now();
        let mut sizes = CallSizes::default();
        let mut bytes_out = 0;
        let result = match (args(), &self.registry.relay) {
            (Ok(args), _) => {
                self.lock().reached += 1;
                if self.registry.is_deferred(name) {
                    let pending = (name.to_string(), args.clone());
                    let result = if self.registry.relay.is_some() {
                        // In a worker: the host may hold the call until a person answers
                        // (a run started with `Sandbox::start`). That time is not the
                        // run's; the supervisor's deadline, the one enforced, moves only
                        // by the time the host itself held the call.
                        self.clock_stopped(|| {
                            self.registry.call_sized(&ctx, name, args, &mut sizes)
                        })
                    } else {
                        self.registry.call_sized(&ctx, name, args, &mut sizes)
                    };
                    // Only an `Err` is replaced: a measured answer's size stays its own.
                    match (&result, &self.registry.park) {
                        (Err(e), Some(park)) if e.suspend => self.park(&**park, pending),
                        (Err(e), None) if e.suspend => {
                            self.lock().pending = Some(pending);
                            result
                        }
                        _ => result,
                    }
                } else {
                    self.registry.call_sized(&ctx, name, args, &mut sizes)
                }
            }
            // Relayed, so that the host records the failed call too.
            (Err(e), Some(relay)) => relay.call(name, Err(e)),
            (Err(e), None) => Err(e),
        };
        // A result the script cannot be given is the call's failure, and recorded so.
        let result = result.and_then(|v| match self.result_depth {
            Some(max) if nesting(&v) > max => Err(ToolError::new(format!(
                "result: JSON nested deeper than the limit of {max} levels"
            ))),
            _ => Ok(v),
        });
        if let Ok(v) = &result {
            bytes_out = sizes.result.unwrap_or_else(|| json_len(v));
        }
        let result = result.map_err(|e| ToolError {
            message: crate::error::cut_message(e.message, MAX_MESSAGE_BYTES),
            ..e
        });
        let bytes_in = sizes.args;
        let call = ToolCall {
            name: name.to_string(),
            duration: start.elapsed(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(|e| e.message.clone()),
            bytes_in,
            bytes_out,
        };
        tracing::debug!(
            tool = name,
            ok = call.ok,
            elapsed = ?call.duration,
            bytes_in,
            bytes_out,
            "tool call"
        );
        self.lock().calls.push(call);
        result
    }

    /// Waits at `park` for the answer to the deferred call `pending` (its arguments
    /// passed the schema), the run's clock stopped meanwhile: in process, on the run's
    /// own thread, so the VM's deadline is paused here too; isolated, on the supervisor's
    /// thread (no VM here), the supervisor's deadline moving by [`ToolRun::parked`] and
    /// the worker pausing its own (it knows which calls are deferred).
    fn park(&self, park: &dyn Park, pending: (String, Vec<Json>)) -> Result<Json, ToolError> {
        let step = self.lock().reached;
        // Inside the stopped clock: going on may wait for room in the worker pool.
        let answer = self.clock_stopped(|| {
            if let Some(hook) = &self.on_park {
                (hook.parking)();
            }
            let answer = park.park(step, &pending.0, &pending.1);
            if let Some(hook) = &self.on_park {
                (hook.going_on)();
            }
            answer
        });
        match answer {
            Some(answer) => answer,
            None => {
                self.lock().pending = Some(pending);
                Err(ToolError::suspended())
            }
        }
    }

    /// Runs `wait` with the run's clock stopped: the VM's deadline paused (when a VM runs
    /// on this thread) and the time taken added to [`ToolRun::parked`].
    fn clock_stopped<R>(&self, wait: impl FnOnce() -> R) -> R {
        let ctl = crate::vm::current();
        let left = ctl.and_then(|c| c.pause_deadline());
        let start = Instant::now();
        let r = wait();
        let waited = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.parked_ns.fetch_add(waited, Ordering::Relaxed);
        if let Some(ctl) = ctl {
            ctl.resume_deadline(left);
        }
        r
    }

    /// Counts a call against every quota that names it, or refuses it (every call, once
    /// the run is suspended).
    fn admit(&self, name: &str) -> Result<(), ToolError> {
        let quota = &self.registry.quota;
        let mut state = self.lock();
        // After a deferred call the run is over: a worker that went on gets nothing more.
        if state.pending.is_some() {
            return Err(ToolError::suspended());
        }
        if let Some(max) = quota.per_run {
            if state.total >= max {
                return Err(ToolError::new(format!(
                    "tool call quota exceeded: at most {max} tool calls per run"
                )));
            }
        }
        let keys: Vec<&str> = std::iter::once(name)
            .chain(name.match_indices('.').map(|(i, _)| &name[..i]))
            .filter(|k| quota.per_tool.contains_key(*k))
            .collect();
        for key in &keys {
            let max = quota.per_tool[*key];
            if state.counts.get(*key).copied().unwrap_or(0) >= max {
                let what = if *key == name {
                    format!("`{key}`")
                } else {
                    format!("the `{key}` tools")
                };
                return Err(ToolError::new(format!(
                    "tool call quota exceeded: at most {max} calls to {what} per run"
                )));
            }
        }
        state.total += 1;
        for key in keys {
            *state.counts.entry(key.to_string()).or_default() += 1;
        }
        Ok(())
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<ToolCall> {
        self.lock().calls.clone()
    }

    /// Takes the calls recorded so far.
    pub fn take_calls(&self) -> Vec<ToolCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Hands the run's record to its outcome: the calls, and for a run suspended at a
    /// deferred call, the pending call as the error's `value` (`{"name", "args"}`). A
    /// suspension this side did not see (a worker's claim alone) is an internal error.
    pub(crate) fn settle(this: Option<&ToolRun>, outcome: &mut crate::Outcome) {
        // A worker's run relays its calls: the host, which saw them, settles there.
        if this.is_some_and(|run| run.registry.relay.is_some()) {
            if let Some(run) = this {
                outcome.tool_calls = run.take_calls();
            }
            return;
        }
        let pending = match this {
            Some(run) => {
                outcome.stats.wall = outcome.stats.wall.saturating_sub(run.parked());
                let mut state = run.lock();
                outcome.tool_calls = std::mem::take(&mut state.calls);
                state.pending.take()
            }
            None => {
                outcome.tool_calls = Vec::new();
                None
            }
        };
        use crate::ErrorKind::{Internal, Interrupted, Suspended, Timeout};
        let kind = outcome.result.as_ref().err().map(|e| e.kind);
        match (pending, kind) {
            (None, Some(Suspended)) => {
                outcome.result = Err(crate::Error::new(
                    Internal,
                    "the run reported a suspension at a deferred tool call that the host \
                     did not see",
                ));
            }
            // Suspended; or stopped by its deadline or the host at that very moment (the
            // first stop wins): the call is pending all the same, and resumable.
            (Some((name, args)), Some(Suspended | Timeout | Interrupted)) => {
                if let Err(e) = &mut outcome.result {
                    if e.kind != Suspended {
                        *e = crate::Error::new(Suspended, crate::vm::Stop::Suspended.message())
                            .with_line(e.line);
                    }
                    e.value = Some(pending_value(&name, &args));
                }
            }
            // The worker died or was killed where the run waited (its own failure says
            // so, and is the outcome: the run did not go on).
            (Some(_), Some(crate::ErrorKind::Killed)) => {}
            (Some(_), _) => {
                // Only a worker that ignored the stop gets here: not the run's outcome.
                outcome.result = Err(crate::Error::new(
                    Internal,
                    "the run went on after its deferred tool call had suspended it",
                ));
                outcome.more_results.clear();
                outcome.result_count = 0;
            }
            (None, _) => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        // A panic cannot happen while the lock is held (tools run outside it).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The size of `v` as JSON text, without building the text.
fn json_len(v: &impl Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// How deeply `v`'s arrays and objects nest (0 for a scalar), without recursion.
fn nesting(v: &Json) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Json>> = match v {
            Json::Array(items) => Box::new(items.iter()),
            Json::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

pub(crate) fn tool_error(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Tool {
        name: name.to_string(),
        reason: reason.into(),
    }
}

const KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

/// Most segments a tool name may have (`a.b.c.d`).
const MAX_DEPTH: usize = 4;

fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 128 {
        return Err(tool_error(name, "a tool name has 1 to 128 characters"));
    }
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() > MAX_DEPTH {
        return Err(tool_error(
            name,
            format!("a tool name has at most {MAX_DEPTH} dotted parts"),
        ));
    }
    for seg in segments {
        let ident = seg
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident || KEYWORDS.contains(&seg) {
            return Err(tool_error(
                name,
                format!(
                    "`{seg}` is not a Lua identifier (a tool name is identifiers joined by \
                     dots, e.g. `weather.lookup`)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo(args: Vec<Json>) -> Result<Json, ToolError> {
        Ok(Json::Array(args))
    }

    #[test]
    fn a_tool_call_serialises_as_its_json_document() {
        for error in [None, Some("no \"such\" city".to_string())] {
            let call = ToolCall {
                name: "weather.lookup".into(),
                duration: Duration::from_nanos(1_234_567),
                ok: error.is_none(),
                error,
                bytes_in: 17,
                bytes_out: 42,
            };
            let text = serde_json::to_string(&call).unwrap();
            assert_eq!(text, call.to_json().to_string());
            assert!(text.contains("\"ms\":1.235"), "{text}");
        }
    }

    #[test]
    fn names() {
        let mut r = ToolRegistry::new();
        r.register("log", echo).unwrap();
        r.register("weather.lookup", echo).unwrap();
        r.register("a.b.c.d", echo).unwrap();
        for bad in [
            "",
            "1x",
            "a..b",
            ".a",
            "a.",
            "a-b",
            "end",
            "x.local",
            "a.b.c.d.e",
        ] {
            assert!(r.register(bad, echo).is_err(), "{bad:?} accepted");
        }
        // Taken, a tool under a tool, a tool over a namespace.
        assert!(r.register("log", echo).is_err());
        assert!(r.register("log.x", echo).is_err());
        assert!(r.register("weather", echo).is_err());
        assert!(r.register("a.b", echo).is_err());
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn quotas_per_run_per_tool_per_namespace() {
        let mut r = ToolRegistry::new();
        r.register("ns.a", echo).unwrap();
        r.register("ns.b", echo).unwrap();
        r.register("c", echo).unwrap();
        r.set_quota(
            ToolQuota::default()
                .per_run(Some(5))
                .tool("ns", 3)
                .tool("ns.a", 1),
        );
        let run = Arc::new(r).start_run(None);
        assert!(run.call("ns.a", vec![]).is_ok());
        let e = run.call("ns.a", vec![]).unwrap_err();
        assert!(e.message().contains("at most 1 calls to `ns.a`"), "{e}");
        assert!(run.call("ns.b", vec![]).is_ok());
        assert!(run.call("ns.b", vec![]).is_ok());
        let e = run.call("ns.b", vec![]).unwrap_err();
        assert!(e.message().contains("the `ns` tools"), "{e}");
        assert!(run.call("c", vec![]).is_ok());
        assert!(run.call("c", vec![]).is_ok());
        let e = run.call("c", vec![]).unwrap_err();
        assert!(e.message().contains("at most 5 tool calls"), "{e}");
        // Refused calls are not recorded.
        assert_eq!(run.calls().len(), 5);
    }

    #[test]
    fn audit_and_panics() {
        let mut r = ToolRegistry::new();
        r.register("echo", echo).unwrap();
        r.register("boom", |_| panic!("kaboom")).unwrap();
        r.register("fail", |_| Err(ToolError::new("nope"))).unwrap();
        let run = Arc::new(r).start_run(None);
        assert_eq!(run.call("echo", vec![json!("ab")]).unwrap(), json!(["ab"]));
        let e = run.call("boom", vec![]).unwrap_err();
        assert_eq!(e.message(), "the tool panicked: kaboom");
        assert_eq!(run.call("fail", vec![]).unwrap_err().message(), "nope");
        assert!(run.call("missing", vec![]).is_err());
        let calls = run.take_calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(
            (calls[0].ok, calls[0].bytes_in, calls[0].bytes_out),
            (true, 6, 6)
        );
        assert_eq!(calls[1].error.as_deref(), Some("the tool panicked: kaboom"));
        assert_eq!(calls[2].error.as_deref(), Some("nope"));
    }

    /// What reached a relay: the tool's name, and its arguments or why there are none.
    type Relayed = (String, Result<Vec<Json>, String>);

    /// A relay that records what reaches it and answers with the arguments.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Relayed>>);

    impl Relay for Recorder {
        fn call(&self, name: &str, args: Result<Vec<Json>, ToolError>) -> Result<Json, ToolError> {
            let seen = args.clone().map_err(|e| e.message);
            self.0.lock().unwrap().push((name.to_string(), seen));
            args.map(Json::Array)
        }
    }

    #[test]
    fn a_relayed_registry_checks_locally_and_relays_the_rest() {
        let recorder = Arc::new(Recorder::default());
        let names = ["ns.a".to_string(), "b".to_string()];
        let quota = ToolQuota::default().per_run(Some(3)).tool("ns", 1);
        let r = ToolRegistry::relayed(&names, &[], quota, recorder.clone()).unwrap();
        assert_eq!(r.names().collect::<Vec<_>>(), ["b", "ns.a"]);
        let run = Arc::new(r).start_run(None);
        assert_eq!(run.call("ns.a", vec![json!(1)]).unwrap(), json!([1]));
        // Refused locally: over the namespace quota, an unknown name.
        assert!(run
            .call("ns.a", vec![])
            .unwrap_err()
            .message()
            .contains("quota"));
        assert!(run.call("c", vec![]).is_err());
        // Arguments that could not be marshaled are relayed as such.
        let e = run
            .call_prepared("b", || Err(ToolError::new("argument 1: bad")))
            .unwrap_err();
        assert_eq!(e.message(), "argument 1: bad");
        assert_eq!(run.call("b", vec![]).unwrap(), json!([]));
        assert!(run
            .call("b", vec![])
            .unwrap_err()
            .message()
            .contains("at most 3"));
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                ("ns.a".to_string(), Ok(vec![json!(1)])),
                ("b".to_string(), Err("argument 1: bad".to_string())),
                ("b".to_string(), Ok(vec![])),
            ]
        );
        // Invalid names are refused as in `register`.
        let bad = ToolRegistry::relayed(&["1x".to_string()], &[], ToolQuota::default(), recorder);
        assert!(bad.is_err());
    }

    #[test]
    fn deadline_refuses_calls() {
        let mut r = ToolRegistry::new();
        r.register("echo", echo).unwrap();
        let run = Arc::new(r).start_run(Some(Instant::now()));
        assert!(run.call("echo", vec![]).is_err());
        assert!(run.calls().is_empty());
    }
}
