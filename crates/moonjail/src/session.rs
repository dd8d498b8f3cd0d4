//! Persistent sessions: one Lua state that outlives a call, for plugin hosts (a VM per
//! tenant) and AO harnesses (`compute(state, msg)` per message).
//!
//! Time and instruction limits apply per call; the memory limit covers the whole state.
//! After a memory limit, an output limit or an error the script raised, the session stays
//! usable (Lua unwound normally). After a timeout or an instruction limit the state may
//! be mid-update (a handler stopped half-way), so the session is closed, and every later
//! call fails with the reason.
//!
//! On an isolated sandbox a session is one worker process, dedicated to it: the state
//! lives there, each call's deadline is enforced from outside as for runs, and the worker
//! is killed when the session closes. There, a call that overruns its deadline kills the
//! worker and closes the session as `timeout`; a worker that dies closes it as `killed`.
//!
//! Host tools are part of a session's environment, in both modes. Each call (`exec`,
//! `call`) is one run as far as tools are concerned: a fresh [`crate::ToolRun`] with the
//! call's deadline and its own quotas, and the calls it made in that call's
//! [`Outcome::tool_calls`].

use std::cell::OnceCell;
#[cfg(target_os = "linux")]
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use mlua::chunk::ChunkMode;
use mlua::Value;
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind};
use crate::marshal;
use crate::sandbox::{
    attach_tools, classify, classify_result, collect, load_error, mlua_message, script_error,
    Outcome, Sandbox, Stats,
};
use crate::vm::{watchdog::Deadline, Activation, Vm};
use crate::{env, ErrorKind as Kind};

/// A persistent sandbox state. Not `Send`: a session lives on the thread that made it
/// (drive it from a dedicated thread to share it).
pub struct Session {
    backend: Backend,
    sandbox: Sandbox,
    /// Set once, when the session closes on its own (never by [`Session::close`]).
    closed: OnceCell<Error>,
    chunk_name: String,
}

/// Where the session's state lives; `None` once the session is closed.
enum Backend {
    InProcess(Option<Vm>),
    #[cfg(target_os = "linux")]
    Worker(RefCell<Option<Box<crate::worker::session::WorkerSession>>>),
}

/// The chunk name of the code a session runs, in error messages.
const CHUNK_NAME: &str = "session";

impl Sandbox {
    /// Opens a persistent session with this sandbox's profile and limits — in a
    /// dedicated worker process when the sandbox is isolated.
    ///
    /// # Errors
    /// An `internal` error if the state cannot be built (or `memory_limit` if the limit
    /// is too small for the environment), or, isolated, if no worker can be started.
    pub fn session(&self) -> Result<Session, Error> {
        #[cfg(target_os = "linux")]
        if let Some(opened) = self.isolation.open_session(self, CHUNK_NAME) {
            return opened.map(|worker| Session {
                backend: Backend::Worker(RefCell::new(Some(Box::new(worker)))),
                sandbox: self.clone(),
                closed: OnceCell::new(),
                chunk_name: CHUNK_NAME.to_string(),
            });
        }
        let spec = self.profile().spec();
        let memory = self.limits().memory_bytes.unwrap_or(usize::MAX);
        let vm = Vm::new(env::libs_for(spec), memory)
            .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
        {
            let ctl = vm.ctl();
            ctl.output_limit
                .set(self.limits().output_bytes.unwrap_or(usize::MAX));
            ctl.source_limit
                .set(self.limits().source_bytes.unwrap_or(usize::MAX));
            let _active = Activation::new(ctl);
            vm.begin_call(None);
            // The namespaces are built now; each call attaches its own run (see
            // `with_call`), so this one, without a deadline, is never called through.
            if let Some(registry) = self.tools() {
                let run = Arc::new(registry.start_run(None));
                attach_tools(&vm, self.limits(), run);
            }
            env::build(vm.lua(), spec, &self.env).map_err(|e| {
                classify(
                    ctl,
                    Error::new(
                        ErrorKind::Internal,
                        format!("building the environment: {e}"),
                    ),
                )
            })?;
        }
        Ok(Session {
            backend: Backend::InProcess(Some(vm)),
            sandbox: self.clone(),
            closed: OnceCell::new(),
            chunk_name: CHUNK_NAME.to_string(),
        })
    }
}

impl Session {
    /// Runs `code` in the session's state; the result is the chunk's first return value.
    pub fn exec(&mut self, code: impl AsRef<[u8]>) -> Outcome {
        let code = code.as_ref();
        #[cfg(target_os = "linux")]
        if let Some(outcome) = self.in_worker(|worker| worker.exec(code)) {
            return outcome;
        }
        let name = self.chunk_name.clone();
        self.with_call(|vm, sandbox| {
            if let Some(max) = sandbox.limits().source_bytes {
                if code.len() > max {
                    return Err(Error::new(
                        ErrorKind::Input,
                        format!(
                            "the source is {} bytes, over the {max} byte limit",
                            code.len()
                        ),
                    ));
                }
            }
            if code.first() == Some(&0x1b) {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "binary chunks cannot be loaded",
                ));
            }
            let lua = vm.lua();
            let f = lua
                .load(code)
                .set_name(format!("={name}"))
                .set_mode(ChunkMode::Text)
                .into_function()
                .map_err(|e| load_error(e, &name))?;
            let rets = vm
                .call(&f, ())
                .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?
                .map_err(|v| script_error(lua, v, &name))?;
            Ok(rets.into_iter().next().unwrap_or(Value::Nil))
        })
    }

    /// Calls the global function `name` with `args` (each converted from JSON); the
    /// result is its first return value.
    pub fn call(&mut self, name: &str, args: &[Json]) -> Outcome {
        #[cfg(target_os = "linux")]
        if let Some(outcome) = self.in_worker(|worker| worker.call(name, args)) {
            return outcome;
        }
        let chunk = self.chunk_name.clone();
        self.with_call(|vm, sandbox| {
            let lua = vm.lua();
            let f: Value = crate::diag::real_globals(lua)
                .raw_get(name)
                .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?;
            let Value::Function(f) = f else {
                return Err(Error::new(
                    ErrorKind::Runtime,
                    format!("no global function `{name}` in the session"),
                ));
            };
            let depth = sandbox.limits().result_depth;
            let mut values = mlua::MultiValue::new();
            for a in args {
                let v = marshal::from_json(lua, a, depth)
                    .map_err(|e| Error::new(ErrorKind::Input, mlua_message(&e)))?;
                values.push_back(v);
            }
            let rets = vm
                .call(&f, values)
                .map_err(|e| Error::new(ErrorKind::Internal, mlua_message(&e)))?
                .map_err(|v| script_error(lua, v, &chunk))?;
            Ok(rets.into_iter().next().unwrap_or(Value::Nil))
        })
    }

    /// True when the session holds a global function `name` (a raw lookup: no
    /// metamethod of `_G` runs). False once the session is closed; in a worker process,
    /// a failure to ask is false too, and closes the session with the reason.
    pub fn has_function(&self, name: &str) -> bool {
        match &self.backend {
            Backend::InProcess(vm) => vm.as_ref().is_some_and(|vm| {
                matches!(
                    crate::diag::real_globals(vm.lua()).raw_get::<Value>(name),
                    Ok(Value::Function(_))
                )
            }),
            #[cfg(target_os = "linux")]
            Backend::Worker(slot) => {
                let mut slot = slot.borrow_mut();
                let Some(worker) = slot.as_mut() else {
                    return false;
                };
                match worker.has_function(name) {
                    Ok(has) => has,
                    Err(reason) => {
                        *slot = None;
                        let _ = self.closed.set(reason);
                        false
                    }
                }
            }
        }
    }

    /// Why the session was closed, if it was.
    pub fn closed_reason(&self) -> Option<&Error> {
        self.closed.get()
    }

    /// Closes the session's state now (dropping the session does the same; an isolated
    /// session's worker process is killed).
    pub fn close(self) {}

    /// The pid of the session's worker process (`None` in process, or once closed). For
    /// tests of isolated sessions.
    #[doc(hidden)]
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::InProcess(_) => None,
            #[cfg(target_os = "linux")]
            Backend::Worker(slot) => slot.borrow().as_ref().and_then(|w| w.pid()),
        }
    }

    /// Sends a test-hook probe to the session's worker (honoured only by workers started
    /// with test hooks). A probe that kills the worker closes the session as `killed`.
    ///
    /// # Errors
    /// In process, on a closed session, or the worker's death, refusal or failure.
    #[doc(hidden)]
    pub fn probe_worker(&mut self, probe: &str) -> Result<Json, Error> {
        match &mut self.backend {
            Backend::InProcess(_) => Err(Error::new(
                ErrorKind::Internal,
                "this session runs in process: there is no worker to probe",
            )),
            #[cfg(target_os = "linux")]
            Backend::Worker(slot) => {
                let slot = slot.get_mut();
                let Some(worker) = slot.as_mut() else {
                    return Err(self.closed_outcome().result.unwrap_err());
                };
                let (result, close) = worker.probe(probe);
                if close {
                    *slot = None;
                    let reason = result.clone().err().unwrap_or_else(|| {
                        Error::new(ErrorKind::Internal, "the session's worker process was lost")
                    });
                    let _ = self.closed.set(reason);
                }
                result
            }
        }
    }

    /// Names the chunk of the code the session runs (in error messages).
    #[cfg(target_os = "linux")]
    pub(crate) fn set_chunk_name(&mut self, name: String) {
        self.chunk_name = name;
    }

    /// The sandbox the session was opened from.
    #[cfg(target_os = "linux")]
    pub(crate) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The outcome of a call on a closed session.
    fn closed_outcome(&self) -> Outcome {
        let reason = self
            .closed
            .get()
            .cloned()
            .unwrap_or_else(|| Error::new(ErrorKind::Internal, "the session is closed"));
        Outcome {
            result: Err(Error {
                message: format!("the session was closed: {}", reason.message),
                ..reason
            }),
            output: String::new(),
            stats: Stats::default(),
            diagnostics: None,
            tool_calls: Vec::new(),
        }
    }

    /// Runs `call` against the session's worker when the session is isolated (`None`
    /// otherwise), closing the session when the call says so.
    #[cfg(target_os = "linux")]
    fn in_worker(
        &mut self,
        call: impl FnOnce(&mut crate::worker::session::WorkerSession) -> (Outcome, bool),
    ) -> Option<Outcome> {
        let Backend::Worker(slot) = &mut self.backend else {
            return None;
        };
        let slot = slot.get_mut();
        let Some(worker) = slot.as_mut() else {
            return Some(self.closed_outcome());
        };
        let (outcome, close) = call(&mut *worker);
        if close {
            // Dropping the worker's session kills the worker.
            *slot = None;
            let reason = outcome.error().cloned().unwrap_or_else(|| {
                Error::new(ErrorKind::Internal, "the session's worker process was lost")
            });
            let _ = self.closed.set(reason);
        }
        Some(outcome)
    }

    fn with_call(&mut self, body: impl FnOnce(&Vm, &Sandbox) -> Result<Value, Error>) -> Outcome {
        let start = Instant::now();
        let mut stats = Stats::default();
        let vm = match &self.backend {
            Backend::InProcess(Some(vm)) => vm,
            _ => return self.closed_outcome(),
        };
        let ctl = vm.ctl();
        let limits = self.sandbox.limits().clone();
        let active = Activation::new(ctl);
        // Reset before arming, so a deadline that passes at once is not cleared.
        vm.begin_call(limits.instructions);
        let deadline = limits.timeout.map(|t| Deadline::arm(ctl, start + t));
        // This call's tool run: its deadline, its quotas, its record.
        let tools = self.sandbox.tools().map(|registry| {
            let run = Arc::new(registry.start_run(limits.timeout.map(|t| start + t)));
            attach_tools(vm, self.sandbox.limits(), Arc::clone(&run));
            run
        });
        let result = body(vm, &self.sandbox).and_then(|value| {
            marshal::to_json(vm.lua(), &value, limits.result_bounds())
                .map_err(|e| Error::new(ErrorKind::Result, e.to_string()))
        });
        let result = classify_result(ctl, result);
        let (output, diagnostics) = collect(vm, &limits, &mut stats);
        drop(deadline);
        drop(active);
        if let Err(e) = &result {
            if matches!(e.kind, Kind::Timeout | Kind::InstructionLimit) {
                let _ = self.closed.set(e.clone());
                self.backend = Backend::InProcess(None);
            }
        }
        stats.wall = start.elapsed();
        Outcome {
            result,
            output,
            stats,
            diagnostics,
            tool_calls: tools.map(|run| run.take_calls()).unwrap_or_default(),
        }
    }
}
