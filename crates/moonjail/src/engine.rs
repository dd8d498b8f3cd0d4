//! The engine: one Lua state and the whole run pipeline.
//!
//! Every way a script runs goes through here: a one-shot run in process, a call of an
//! in-process session, and both of those inside a worker process. The pipeline is, in
//! order: source checks, the state and its environment (built once per state), limits
//! armed, the chunk loaded and called under the entry convention, the value marshaled
//! (inside the deadline), limits disarmed, the error classified, and everything
//! collected into an [`Outcome`]. The facades (`Sandbox`, `Session`) only choose whether
//! this happens here or in a worker, which runs this same engine.

use std::sync::Arc;
use std::time::Instant;

use mlua::{MultiValue, Value};
use serde_json::Value as Json;

use crate::diag;
use crate::env;
use crate::error::{mlua_message, Error, ErrorKind};
use crate::host::{EnvOptions, FileSource, HostFiles, InterruptCheck};
use crate::marshal::{self, Bounds};
use crate::outcome::{Outcome, Stats};
use crate::spec::{CallOptions, Spec};
use crate::stdlib::base::FORBIDDEN;
use crate::tools::{self, ToolRegistry, ToolRun};
use crate::vm::{watchdog::Deadline, Activation, Control, Vm};

/// What the host attaches to a run besides its spec: the files `require` and `io.open`
/// read, the tools a script may call, and the check that may interrupt a call. In a
/// worker the files and tools are relays to the supervisor, and the check is the
/// supervisor's request to stop (see `worker/serve.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) files: Arc<dyn FileSource>,
    pub(crate) tools: Option<Arc<ToolRegistry>>,
    pub(crate) interrupt: Option<InterruptCheck>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            files: Arc::new(HostFiles::default()),
            tools: None,
            interrupt: None,
        }
    }
}

/// Refuses what no run may load: a source over the limit, a binary chunk.
pub(crate) fn check_source(spec: &Spec, source: &[u8]) -> Result<(), Error> {
    if let Some(max) = spec.limits.source_bytes {
        if source.len() > max {
            let msg = format!(
                "the source is {} bytes, over the {max} byte limit",
                source.len()
            );
            return Err(Error::new(ErrorKind::Input, msg));
        }
    }
    if source.first() == Some(&0x1b) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "binary chunks cannot be loaded",
        ));
    }
    Ok(())
}

/// A fresh state under the spec's memory, output and source limits, environment not yet
/// built.
fn new_vm(spec: &Spec) -> mlua::Result<Vm> {
    let profile = spec.profile.spec();
    let limits = &spec.limits;
    let vm = Vm::new(
        env::libs_for(profile),
        limits.memory_bytes.unwrap_or(usize::MAX),
        spec.deterministic.map(|d| d.seed),
    )?;
    let ctl = vm.ctl();
    ctl.output_limit
        .set(limits.output_bytes.unwrap_or(usize::MAX));
    ctl.output_overflow.set(limits.output_overflow);
    ctl.source_limit
        .set(limits.source_bytes.unwrap_or(usize::MAX));
    Ok(vm)
}

fn env_options(spec: &Spec, host: &Host) -> EnvOptions {
    EnvOptions {
        files: Arc::clone(&host.files),
        deterministic: spec.deterministic,
        diagnostic: spec.diagnostic,
    }
}

/// A state with its environment built: what [`Engine::new`] makes, and what a prepared
/// state is (see `prepared.rs`; only without tools, which attach per state).
pub(crate) fn prepare(spec: &Spec, host: &Host) -> Result<Vm, Error> {
    let vm = new_vm(spec).map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
    {
        let ctl = vm.ctl();
        let _active = Activation::new(ctl);
        vm.begin_call(None);
        // The namespaces are built with the environment; each call attaches its own run
        // (see `Engine::call_with`), so this one, without a deadline, is never called
        // through.
        if let Some(registry) = &host.tools {
            let run = Arc::new(registry.start_run(None));
            attach_tools(&vm, spec, run);
        }
        env::build(vm.lua(), spec.profile.spec(), &env_options(spec, host)).map_err(|e| {
            classify(
                ctl,
                &spec.limits,
                Error::new(
                    ErrorKind::Internal,
                    format!("building the environment: {e}"),
                ),
            )
        })?;
        vm.start_collector();
        tracing::debug!(profile = spec.profile.name(), "environment built");
    }
    Ok(vm)
}

fn attach_tools(vm: &Vm, spec: &Spec, run: Arc<ToolRun>) {
    let limits = &spec.limits;
    tools::lua::attach(vm.lua(), run, limits.result_bounds(), limits.result_depth);
}

/// One Lua state with its environment, and the pipeline that runs code in it.
pub(crate) struct Engine {
    /// Declared before `vm`: its handles go before the state does.
    names: NameCache,
    vm: Vm,
    spec: Spec,
    host: Host,
    chunk_name: String,
}

impl Engine {
    /// A fresh state for `spec`, with the environment built.
    ///
    /// # Errors
    /// `internal` when the state cannot be built, `memory_limit` when the limit is too
    /// small for the environment.
    pub(crate) fn new(spec: &Spec, host: &Host, chunk_name: &str) -> Result<Engine, Error> {
        let vm = prepare(spec, host)?;
        Ok(Engine::with_vm(vm, spec, host, chunk_name))
    }

    /// An engine over a state [`prepare`]d for the same spec and host.
    pub(crate) fn with_vm(vm: Vm, spec: &Spec, host: &Host, chunk_name: &str) -> Engine {
        Engine {
            names: NameCache::default(),
            vm,
            spec: spec.clone(),
            host: host.clone(),
            chunk_name: chunk_name.to_string(),
        }
    }

    /// The state, for retiring it off the caller's path.
    pub(crate) fn into_vm(self) -> Vm {
        self.vm
    }

    /// The spec this engine runs under.
    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// A one-shot run: the chunk gets `input` as its vararg; if it defines a global
    /// function `run`, that is called with `input` and gives the results, otherwise the
    /// chunk's return values do. `start` is when the caller began (wall time and the
    /// deadline count from it). With `expression`, the source may be an expression,
    /// whose value is the result (see [`load_code`]).
    pub(crate) fn run(
        &mut self,
        source: &[u8],
        input: &Json,
        start: Instant,
        expression: bool,
    ) -> Outcome {
        let limits = self.spec.limits.clone();
        self.call_with(start, limits, None, |vm, spec, chunk| {
            let f = load_code(vm, spec, source, chunk, expression)?;
            let lua = vm.lua();
            let input = marshal::from_json(lua, input, spec.limits.result_depth)
                .map_err(|e| Error::new(ErrorKind::Input, mlua_message(&e)))?;
            let rets = call(vm, &f, &input, chunk)?;
            let run: Value = diag::real_globals(lua)
                .raw_get("run")
                .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
            let values = match run {
                Value::Function(run) => {
                    tracing::debug!("entry called: run(input)");
                    call(vm, &run, &input, chunk)?
                }
                _ if spec.require_run => {
                    return Err(Error::new(
                        ErrorKind::Runtime,
                        "the script defines no global function `run`",
                    ))
                }
                _ => rets,
            };
            if spec.require_table && !matches!(values.front(), Some(Value::Table(_))) {
                let got = values.front().map_or("nil", Value::type_name);
                return Err(Error::new(
                    ErrorKind::Result,
                    format!("the result must be a table, got a {got}"),
                ));
            }
            Ok(values)
        })
    }

    /// Runs `code` in this state (a session's `exec`), with `input` as the chunk's
    /// vararg; the results are the chunk's return values. With `expression`, `code` may
    /// be an expression (see [`load_code`]).
    pub(crate) fn exec(
        &mut self,
        code: &[u8],
        input: &Json,
        expression: bool,
        options: &CallOptions,
    ) -> Outcome {
        let limits = self.spec.limits.lowered(options);
        self.call_with(Instant::now(), limits, options.time, |vm, spec, chunk| {
            let f = load_code(vm, spec, code, chunk, expression)?;
            let input = marshal::from_json(vm.lua(), input, spec.limits.result_depth)
                .map_err(|e| Error::new(ErrorKind::Input, mlua_message(&e)))?;
            call(vm, &f, input, chunk)
        })
    }

    /// Calls the function `name` with `args` (a session's `call`); the results are its
    /// return values. `name` may be dotted (`M.f`) and may name a callable table (see
    /// [`resolve`]).
    pub(crate) fn call(&mut self, name: &str, args: &[Json], options: &CallOptions) -> Outcome {
        let limits = self.spec.limits.lowered(options);
        let mut names = std::mem::take(&mut self.names);
        let outcome = self.call_with(Instant::now(), limits, options.time, |vm, spec, chunk| {
            let lua = vm.lua();
            let (f, this) = match resolve(lua, name, Some(&mut names))? {
                Some(callable) => callable,
                None => {
                    return Err(Error::new(
                        ErrorKind::Runtime,
                        format!("no function `{name}` in the session"),
                    ))
                }
            };
            let mut values = MultiValue::new();
            if let Some(this) = this {
                values.push_back(Value::Table(this));
            }
            for a in args {
                let v = marshal::from_json(lua, a, spec.limits.result_depth)
                    .map_err(|e| Error::new(ErrorKind::Input, mlua_message(&e)))?;
                values.push_back(v);
            }
            call(vm, &f, values, chunk)
        });
        self.names = names;
        outcome
    }

    /// True when `name` (dotted or not) names a function or a callable table in the
    /// state (raw lookups: no metamethod runs).
    pub(crate) fn has_function(&self, name: &str) -> bool {
        matches!(resolve(self.vm.lua(), name, None), Ok(Some(_)))
    }

    /// The one place limits are armed and disarmed around script code, the value is
    /// marshaled, the error classified and the outcome collected; and where a request's
    /// own `time` (`CallOptions::time`) becomes the clock its script reads.
    fn call_with(
        &mut self,
        start: Instant,
        limits: crate::Limits,
        time: Option<i64>,
        body: impl FnOnce(&Vm, &Spec, &str) -> Result<MultiValue, Error>,
    ) -> Outcome {
        if time.is_some() && self.spec.deterministic.is_none() {
            // A state that reads the system clock has no clock to set: refused, so that
            // a caller never believes a time was applied when it was not.
            let message = "a request's `time` needs a deterministic session: this one reads \
                           the system clock";
            return Outcome::failed(Error::new(ErrorKind::Input, message), start.elapsed());
        }
        let limits = &limits;
        let vm = &self.vm;
        let ctl = vm.ctl();
        let active = Activation::new(ctl);
        // Reset the call state first: arming first would let a deadline that passes at
        // once be cleared by the reset and lost.
        vm.begin_call(limits.instructions);
        ctl.clock.set(time);
        let interrupt = self.host.interrupt.as_ref();
        if let Some(check) = interrupt {
            ctl.set_interrupt(check);
            // Asked once before anything runs: a call the host stops already does not
            // start (its first instruction raises the stop).
            ctl.interrupt_now();
        }
        let due = limits.timeout.map(|t| start + t);
        // The timer is armed for a deadline, or for the polls of an interrupt check; a
        // call with neither arms nothing.
        let polled = interrupt.is_some_and(|check| check.every.is_some());
        let armed = (due.is_some() || polled).then(|| Deadline::arm(ctl, due));
        let deadline = match armed.transpose() {
            Ok(deadline) => deadline,
            Err(message) => {
                drop(active);
                return Outcome::failed(Error::new(ErrorKind::Internal, message), start.elapsed());
            }
        };
        tracing::debug!(
            profile = self.spec.profile.name(),
            memory = ?limits.memory_bytes,
            timeout = ?limits.timeout,
            instructions = ?limits.instructions,
            output = ?limits.output_bytes,
            "limits set"
        );
        // This call's tool run: its deadline, its quotas, its record.
        let tools = self.host.tools.as_ref().map(|registry| {
            let run = Arc::new(registry.start_bounded_run(due, limits.result_depth));
            attach_tools(vm, &self.spec, Arc::clone(&run));
            run
        });
        // Marshaling happens here, inside the deadline: a result the script built to be
        // expensive to convert is the script's time.
        let result = body(vm, &self.spec, &self.chunk_name)
            .and_then(|values| marshal_results(vm.lua(), &values, limits));
        let trace = ctl.take_trace();
        let result = classify_result(ctl, limits, result)
            .map_err(|e| locate(e, trace, &self.chunk_name).bounded());
        let mut stats = Stats::default();
        let (used, peak, _) = ctl.memory();
        stats.memory_bytes = used;
        stats.peak_memory_bytes = peak;
        stats.output_bytes = ctl.output_total();
        stats.limits = crate::Budget {
            wall: limits.timeout,
            memory_bytes: limits.memory_bytes,
            instructions: limits.instructions,
            output_bytes: limits.output_bytes,
            tool_calls: self.host.tools.as_ref().and_then(|r| r.quota().per_run),
        };
        // A spent budget reports the budget: the last block's remainder may be held by a
        // thread the stop reached in native code.
        stats.instructions = limits.instructions.map(|limit| {
            if ctl.stop() == crate::vm::Stop::Instructions {
                limit
            } else {
                vm.instructions_used()
            }
        });
        let (output, output_truncated) = ctl.take_output();
        let diagnostics = diag::take(vm.lua());
        drop(deadline);
        ctl.clear_interrupt();
        drop(active);
        match &result {
            Ok(_) => tracing::debug!(peak_memory = peak, elapsed = ?start.elapsed(), "outcome: ok"),
            Err(e) => tracing::debug!(
                kind = e.kind.as_str(),
                peak_memory = peak,
                elapsed = ?start.elapsed(),
                "outcome: failed"
            ),
        }
        stats.wall = start.elapsed();
        // The first value is the result; the others ride along (the document's
        // `results` lists them all, without a copy of the first).
        let (result, more_results, count) = match result {
            Ok(values) => {
                let count = values.len();
                let mut values = values.into_iter();
                let first = values.next().unwrap_or(Json::Null);
                (Ok(first), values.collect(), count)
            }
            Err(e) => (Err(e), Vec::new(), 0),
        };
        let mut outcome = Outcome {
            result,
            more_results,
            result_count: count,
            output,
            output_truncated,
            stats,
            diagnostics,
            tool_calls: Vec::new(),
            lint: None,
        };
        crate::tools::ToolRun::settle(tools.as_deref(), &mut outcome);
        outcome.stats.tool_calls = outcome.tool_calls.len();
        outcome
    }
}

/// The function to run for `source`: a script (its BOM and `#` first line skipped as
/// `lua.c` does, see `vm::load::skip_prelude`), and with `expression` first tried as
/// `return SOURCE`, as Lua's REPL does, so that `1 + 1` is 2 and a statement still runs.
fn load_code(
    vm: &Vm,
    spec: &Spec,
    source: &[u8],
    chunk: &str,
    expression: bool,
) -> Result<mlua::Function, Error> {
    check_source(spec, source)?;
    // A `#` line is a script file's (`#!/usr/bin/env moonjail`); an expression is read
    // as Lua's REPL reads a line, where `#t` is a length.
    let source = if expression {
        source.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(source)
    } else {
        crate::vm::load::skip_prelude(source)
    };
    if expression {
        let mut returned = b"return ".to_vec();
        returned.extend_from_slice(source);
        match load_chunk(vm, &returned, chunk) {
            Ok(f) => return Ok(f),
            // A stop (the deadline) or a memory error is the run's, not a reason to try
            // the statement form.
            Err(e) if e.kind != ErrorKind::Syntax => return Err(e),
            Err(_) => {}
        }
    }
    load_chunk(vm, source, chunk)
}

/// What `name` calls, found with raw lookups (no metamethod runs): the global `name`,
/// or for `a.b.c` the field `c` of the table `a.b`; a function, or a table whose
/// metatable has a `__call` function (returned with the table, its first argument).
fn resolve(
    lua: &mlua::Lua,
    name: &str,
    mut cache: Option<&mut NameCache>,
) -> Result<Option<(mlua::Function, Option<mlua::Table>)>, Error> {
    let internal = |e: mlua::Error| Error::new(ErrorKind::Internal, mlua_message(&e));
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let globals = match cache.as_deref_mut() {
        Some(cache) => cache.globals(lua),
        None => diag::real_globals(lua),
    };
    let mut key = |part: &str| match cache.as_deref_mut() {
        Some(cache) => cache.key(lua, part),
        None => lua.create_string(part),
    };
    let mut value: Value = globals
        .raw_get(key(first).map_err(internal)?)
        .map_err(internal)?;
    for part in parts {
        value = match value {
            Value::Table(t) => t.raw_get(key(part).map_err(internal)?).map_err(internal)?,
            _ => return Ok(None),
        };
    }
    callable(value)
}

/// The Lua strings of the names a session calls, and its real globals table, kept
/// between calls: a session that calls `compute` a million times made the string a
/// million times (a protected call each: a sixth of a call's cost). Bounded: the first
/// [`NameCache::MAX`] names stay, later ones are made per call.
#[derive(Default)]
struct NameCache {
    globals: Option<mlua::Table>,
    names: Vec<(Box<str>, mlua::LuaString)>,
}

impl NameCache {
    const MAX: usize = 32;
    const MAX_NAME: usize = 64;

    fn globals(&mut self, lua: &mlua::Lua) -> mlua::Table {
        self.globals
            .get_or_insert_with(|| diag::real_globals(lua))
            .clone()
    }

    fn key(&mut self, lua: &mlua::Lua, part: &str) -> mlua::Result<mlua::LuaString> {
        if let Some((_, s)) = self.names.iter().find(|(n, _)| &**n == part) {
            return Ok(s.clone());
        }
        let s = lua.create_string(part)?;
        if self.names.len() < Self::MAX && part.len() <= Self::MAX_NAME {
            self.names.push((part.into(), s.clone()));
        }
        Ok(s)
    }
}

/// `value` as something to call: a function, or a table whose metatable's `__call` is
/// a function (returned with the table, its first argument).
fn callable(value: Value) -> Result<Option<(mlua::Function, Option<mlua::Table>)>, Error> {
    let internal = |e: mlua::Error| Error::new(ErrorKind::Internal, mlua_message(&e));
    Ok(match value {
        Value::Function(f) => Some((f, None)),
        Value::Table(t) => match t.metatable() {
            Some(mt) => match mt.raw_get::<Value>("__call").map_err(internal)? {
                Value::Function(f) => Some((f, Some(t))),
                _ => None,
            },
            None => None,
        },
        _ => None,
    })
}

/// Compiles `source` as text under the chunk name `name`, under the run's deadline (see
/// `vm/load.rs`).
fn load_chunk(vm: &Vm, source: &[u8], name: &str) -> Result<mlua::Function, Error> {
    // A chunk name is the host's (a file name); a NUL in it would cut it short.
    let chunkname = std::ffi::CString::new(format!("={name}").replace('\0', "?"))
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    // SAFETY: the closure runs protected on the state's running thread with stack room
    // for what it pushes: the function, or Lua's status and the error message.
    let loaded = unsafe {
        vm.lua().exec_raw::<MultiValue>((), |l| {
            let status = crate::vm::load::load_text(l, source, &chunkname);
            if status != mlua::ffi::LUA_OK {
                mlua::ffi::lua_pushinteger(l, mlua::ffi::lua_Integer::from(status));
                mlua::ffi::lua_insert(l, -2);
            }
        })
    }
    .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
    let mut values = loaded.into_iter();
    let f = match (values.next(), values.next()) {
        (Some(Value::Function(f)), _) => f,
        (Some(Value::Integer(status)), message) => {
            let message = match message {
                // A runtime error inside the parser ("C stack overflow" on deep nesting)
                // went through mlua's message handler, which appends a traceback of C
                // frames: noise to a reader, and not the script's.
                Some(Value::String(m)) => {
                    let m = m.to_string_lossy();
                    m.split("\nstack traceback:")
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }
                _ => "the chunk could not be loaded".to_string(),
            };
            let kind = if status == i64::from(mlua::ffi::LUA_ERRMEM) {
                ErrorKind::MemoryLimit
            } else {
                // Syntax errors, and the parser's own runtime errors ("C stack
                // overflow" on deep nesting): the source's fault either way. A stop
                // raised by the reader (the deadline) is classified by its stop.
                ErrorKind::Syntax
            };
            let line = line_of(&message, name);
            let mut error = Error::new(kind, message).with_line(line);
            if kind == ErrorKind::Syntax && line.is_some() {
                // What the other language's spelling is in Lua; the code is not changed.
                // Only for an error on a line: without one (the parser's own C stack
                // overflow) there is nothing to point at, and scanning the whole source
                // would be the host's time.
                error.hint = crate::lint::hints::syntax_hint(source, line, &error.message);
            }
            return Err(error);
        }
        _ => {
            return Err(Error::new(
                ErrorKind::Internal,
                "loading the chunk returned no function",
            ))
        }
    };
    tracing::debug!(chunk = name, bytes = source.len(), "chunk compiled");
    Ok(f)
}

/// Calls `f` through the VM's entry shim: its return values, or the error it raised.
fn call(
    vm: &Vm,
    f: &mlua::Function,
    args: impl mlua::IntoLuaMulti,
    chunk: &str,
) -> Result<MultiValue, Error> {
    vm.call(f, args)
        .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?
        .map_err(|v| script_error(vm, v, chunk))
}

/// The final kind of an error raised while `ctl`'s call was active.
fn classify(ctl: &Control, limits: &crate::Limits, e: Error) -> Error {
    classify_result::<()>(ctl, limits, Err(e))
        .err()
        .unwrap_or_else(|| Error::new(ErrorKind::Internal, "classify: an error became a success"))
}

/// Limits are sticky: a quota that fired fails the run even when the script caught the
/// error and then returned normally (for instance `return pcall(...)`, where no
/// instruction runs after the catch for the hook to stop). Then a refused operation; then
/// the error as raised.
fn classify_result<T>(
    ctl: &Control,
    limits: &crate::Limits,
    r: Result<T, Error>,
) -> Result<T, Error> {
    let line = r.as_ref().err().and_then(|e| e.line);
    if let Some(kind) = ctl.stop().kind() {
        return Err(Error::new(kind, limit_message(kind, limits)).with_line(line));
    }
    let (_, _, memory_hit) = ctl.memory();
    if memory_hit && !matches!(&r, Err(e) if e.kind == ErrorKind::Input) {
        let kind = ErrorKind::MemoryLimit;
        return Err(Error::new(kind, limit_message(kind, limits)).with_line(line));
    }
    r.map_err(|mut e| {
        if e.kind == ErrorKind::Runtime && ctl.forbidden.get() && e.message.contains(FORBIDDEN) {
            e.kind = ErrorKind::Forbidden;
        }
        e
    })
}

/// What a limit error says: which limit, and its value.
fn limit_message(kind: ErrorKind, limits: &crate::Limits) -> String {
    use crate::units::{format_duration, format_size};
    let size = |b: Option<usize>| {
        b.map_or_else(
            || "its".to_string(),
            |b| format!("its {}", format_size(b as u64)),
        )
    };
    match kind {
        ErrorKind::Timeout => match limits.timeout {
            Some(t) => format!(
                "timeout: the script ran past its {} deadline",
                format_duration(t)
            ),
            None => "timeout: the script ran past its deadline".to_string(),
        },
        ErrorKind::InstructionLimit => match limits.instructions {
            Some(n) => {
                format!("instruction_limit: the script used up its budget of {n} instructions")
            }
            None => "instruction_limit: the script used up its instruction budget".to_string(),
        },
        ErrorKind::OutputLimit => format!(
            "output_limit: the script printed more than {} output limit",
            size(limits.output_bytes)
        ),
        ErrorKind::Interrupted => crate::vm::Stop::Interrupted.message().to_string(),
        ErrorKind::Suspended => crate::vm::Stop::Suspended.message().to_string(),
        _ => format!(
            "not enough memory: the script reached {} memory limit",
            size(limits.memory_bytes)
        ),
    }
}

/// Attaches where the error happened: the traceback captured when it was raised (or
/// the run stopped), and from it the line in the script's own chunk when the message
/// names none. A limit error also says where in its message, for readers of the
/// message alone.
fn locate(mut e: Error, trace: Vec<crate::error::Frame>, chunk: &str) -> Error {
    if matches!(
        e.kind,
        ErrorKind::Syntax | ErrorKind::Input | ErrorKind::Internal
    ) {
        return e;
    }
    if e.traceback.is_empty() {
        e.traceback = trace;
    }
    let own = e.traceback.iter().find(|f| is_chunk(&f.source, chunk));
    if e.line.is_none() {
        e.line = own.map(|f| f.line);
    }
    // "stopped at" for a limit; an interrupt says "stopped" already.
    let lead = match e.kind {
        ErrorKind::Interrupted => Some("at"),
        kind if kind.is_limit() => Some("stopped at"),
        _ => None,
    };
    if let (Some(lead), Some(frame)) = (lead, own) {
        let place = match &frame.function {
            Some(f) => format!(" ({lead} line {} in function '{f}')", frame.line),
            None => format!(" ({lead} line {})", frame.line),
        };
        e.message.push_str(&place);
    }
    e
}

/// True when a frame's `source` (Lua's short form of a chunk name, cut to 59 bytes)
/// is the chunk `chunk`.
fn is_chunk(source: &str, chunk: &str) -> bool {
    const SHORT_SRC: usize = 59;
    if chunk.len() <= SHORT_SRC {
        source == chunk
    } else {
        source.len() == SHORT_SRC && chunk.as_bytes().starts_with(source.as_bytes())
    }
}

/// Every value the script returned, as JSON, under one result budget (the bounds cover
/// them together).
fn marshal_results(
    lua: &mlua::Lua,
    values: &MultiValue,
    limits: &crate::Limits,
) -> Result<Vec<Json>, Error> {
    marshal::to_json_all(lua, values.iter(), limits.result_bounds()).map_err(|(i, e)| {
        let kind = if e.host {
            ErrorKind::MemoryLimit
        } else {
            ErrorKind::Result
        };
        let message = if values.len() > 1 {
            format!("result {}: {e}", i + 1)
        } else {
            e.to_string()
        };
        Error::new(kind, message)
    })
}

/// Turns an error value into an error. A string is the message; a table is marshaled
/// raw (no metamethod runs) into `value`, and its message is what its `__tostring`
/// gives, run inside the sandbox under the call's remaining limits (read raw from its
/// metatable, so `__index` and `__metatable` play no part).
fn script_error(vm: &Vm, v: Value, name: &str) -> Error {
    let lua = vm.lua();
    let mut value = None;
    let message = match &v {
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Error(e) => mlua_message(e),
        Value::Nil => "nil".to_string(),
        Value::Table(t) => {
            value = marshal::to_json(lua, &v, Bounds::new(16, crate::error::MAX_VALUE_BYTES)).ok();
            match render_with_tostring(vm, t) {
                Some(text) => text,
                None => match &value {
                    Some(j) => format!("error object: {j}"),
                    None => "(error object is a table value)".to_string(),
                },
            }
        }
        other => format!("(error object is a {} value)", other.type_name()),
    };
    let line = line_of(&message, name);
    let mut error = Error::new(ErrorKind::Runtime, message).with_line(line);
    error.value = value;
    error
}

/// The text `t`'s own `__tostring` makes of it, when it has one that returns a string.
fn render_with_tostring(vm: &Vm, t: &mlua::Table) -> Option<String> {
    let tostring: mlua::Function = t.metatable()?.raw_get("__tostring").ok()?;
    if vm.ctl().stop() != crate::vm::Stop::None {
        return None;
    }
    match vm.call(&tostring, t.clone()) {
        Ok(Ok(values)) => match values.into_iter().next() {
            Some(Value::String(s)) => Some(s.to_string_lossy()),
            _ => None,
        },
        _ => None,
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

    /// A state leaves `prepare` collecting, in generational mode ([`Vm::new`] stops the
    /// collector for the build: a state left so would grow without bound).
    #[test]
    fn a_prepared_state_collects_generationally() {
        use mlua::state::{GcGenParams, GcMode};
        for deterministic in [
            None,
            Some(crate::Determinism {
                timestamp: 0,
                seed: 1,
            }),
        ] {
            let spec = Spec {
                deterministic,
                ..Spec::default()
            };
            let vm = prepare(&spec, &Host::default()).unwrap();
            assert!(vm.lua().gc_is_running());
            let before = vm
                .lua()
                .gc_set_mode(GcMode::Generational(GcGenParams::default()));
            assert!(matches!(before, GcMode::Generational(_)));
        }
    }

    #[test]
    fn lines() {
        assert_eq!(line_of("script:3: boom", "script"), Some(3));
        assert_eq!(line_of("other:3: boom", "script"), None);
        assert_eq!(line_of("script: boom", "script"), None);
    }
}
