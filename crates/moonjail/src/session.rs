//! Persistent sessions: one Lua state that outlives a call, for plugin hosts (a VM per
//! tenant) and AO harnesses (`compute(state, msg)` per message).
//!
//! Time and instruction limits apply per call; the memory limit covers the whole state.
//! After a memory limit, an output limit or an error the script raised, the session stays
//! usable (Lua unwound normally). After a timeout or an instruction limit the state may
//! be mid-update (a handler stopped half-way), so the session is closed, and every later
//! call fails with the reason.

use std::time::Instant;

use mlua::chunk::ChunkMode;
use mlua::Value;
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind};
use crate::marshal::{self, Bounds};
use crate::sandbox::{
    classify, classify_result, load_error, mlua_message, script_error, Outcome, Sandbox, Stats,
};
use crate::vm::{watchdog::Deadline, Activation, Vm};
use crate::{env, ErrorKind as Kind};

/// A persistent sandbox state. Not `Send`: a session lives on the thread that made it
/// (drive it from a dedicated thread to share it).
pub struct Session {
    vm: Option<Vm>,
    sandbox: Sandbox,
    closed: Option<Error>,
    chunk_name: String,
}

impl Sandbox {
    /// Opens a persistent session with this sandbox's profile and limits.
    ///
    /// # Errors
    /// An `internal` error if the state cannot be built (or `memory_limit` if the limit
    /// is too small for the environment).
    pub fn session(&self) -> Result<Session, Error> {
        if self.is_isolated() {
            return Err(Error::new(
                ErrorKind::Internal,
                "sessions do not run in worker processes yet: build the sandbox with \
                 Isolation::InProcess for sessions",
            ));
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
            vm: Some(vm),
            sandbox: self.clone(),
            closed: None,
            chunk_name: "session".to_string(),
        })
    }
}

impl Session {
    /// Runs `code` in the session's state; the result is the chunk's first return value.
    pub fn exec(&mut self, code: impl AsRef<[u8]>) -> Outcome {
        let code = code.as_ref();
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
    /// metamethod of `_G` runs).
    pub fn has_function(&self, name: &str) -> bool {
        self.vm.as_ref().is_some_and(|vm| {
            matches!(
                crate::diag::real_globals(vm.lua()).raw_get::<Value>(name),
                Ok(Value::Function(_))
            )
        })
    }

    /// Why the session was closed, if it was.
    pub fn closed_reason(&self) -> Option<&Error> {
        self.closed.as_ref()
    }

    /// Closes the session's state now (dropping the session does the same).
    pub fn close(mut self) {
        self.vm = None;
    }

    fn with_call(&mut self, body: impl FnOnce(&Vm, &Sandbox) -> Result<Value, Error>) -> Outcome {
        let start = Instant::now();
        let mut stats = Stats::default();
        let Some(vm) = self.vm.as_ref() else {
            let reason = self
                .closed
                .clone()
                .unwrap_or_else(|| Error::new(ErrorKind::Internal, "the session is closed"));
            return Outcome {
                result: Err(Error {
                    message: format!("the session was closed: {}", reason.message),
                    ..reason
                }),
                output: String::new(),
                stats,
                diagnostics: None,
            };
        };
        let ctl = vm.ctl();
        let limits = self.sandbox.limits().clone();
        let active = Activation::new(ctl);
        // Reset before arming, so a deadline that passes at once is not cleared.
        vm.begin_call(limits.instructions);
        let deadline = limits
            .timeout
            .map(|t| Deadline::arm(start + t, ctl.expired.clone()));
        let result = body(vm, &self.sandbox).and_then(|value| {
            let bounds = Bounds {
                depth: limits.result_depth,
                bytes: limits.result_bytes.unwrap_or(usize::MAX),
            };
            marshal::to_json(vm.lua(), &value, bounds)
                .map_err(|e| Error::new(ErrorKind::Result, e.to_string()))
        });
        let result = classify_result(ctl, result);
        let (_, peak, _) = ctl.memory();
        stats.memory_bytes = peak;
        stats.instructions = limits.instructions.map(|_| ctl.instr_charged.get());
        let output = String::from_utf8_lossy(&ctl.take_output()).into_owned();
        let diagnostics = crate::diag::take(vm.lua());
        drop(deadline);
        drop(active);
        if let Err(e) = &result {
            if matches!(e.kind, Kind::Timeout | Kind::InstructionLimit) {
                self.closed = Some(e.clone());
                self.vm = None;
            }
        }
        stats.wall = start.elapsed();
        Outcome {
            result,
            output,
            stats,
            diagnostics,
        }
    }
}

impl Sandbox {
    /// True when runs go to worker processes.
    fn is_isolated(&self) -> bool {
        !matches!(self.isolation, crate::worker::Isolated::InProcess)
    }
}
