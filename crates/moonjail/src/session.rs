//! Persistent sessions: one Lua state that outlives a call, for plugin hosts (a VM per
//! tenant) and AO harnesses (`compute(state, msg)` per message).
//!
//! Time and instruction limits apply per call; the memory limit covers the whole state.
//! After a memory limit, an output limit or an error the script raised, the session stays
//! usable (Lua unwound normally). After a timeout or an instruction limit the state may
//! be mid-update (a handler stopped half-way), so the session is closed, and every later
//! request fails with the reason. A call the host stopped through its interrupt check
//! ([`crate::SandboxBuilder::interrupt_check`]) leaves the session open: the host chose
//! to stop it (a Ctrl-C in a REPL), and the state keeps whatever the call had changed.
//!
//! On an isolated sandbox a session is one worker process, dedicated to it: the state
//! lives there (in the same engine), each call's deadline is enforced from outside as for
//! runs, and the worker is killed when the session closes. There, a call that overruns
//! its deadline kills the worker and closes the session as `timeout`; a worker that dies
//! closes it as `killed`. An interrupted call is stopped by the worker itself, which keeps
//! the session; only a worker that does not stop within `kill_grace` of being told is
//! killed, which closes the session as `interrupted`.
//!
//! Host tools are part of a session's environment, in both modes. Each call (`exec`,
//! `call`) is one run as far as tools are concerned: a fresh [`crate::ToolRun`] with the
//! call's deadline and its own quotas, and the calls it made in that call's
//! [`Outcome::tool_calls`].

use std::time::Duration;

use serde_json::Value as Json;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind};
use crate::outcome::Outcome;
use crate::sandbox::Sandbox;
use crate::spec::CallOptions;

/// A persistent sandbox state. Not `Send`: a session lives on the thread that made it
/// (drive it from a dedicated thread to share it).
pub struct Session {
    /// `None` once the session is closed.
    backend: Option<Backend>,
    /// Why the session closed on its own (never set by [`Session::close`]).
    closed: Option<Error>,
}

/// Where the session's state lives.
enum Backend {
    InProcess(Box<Engine>),
    #[cfg(all(target_os = "linux", feature = "isolation"))]
    Worker(Box<crate::worker::session::WorkerSession>),
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
    ///
    /// A session call that calls a deferred tool ([`crate::SandboxBuilder::defer_tool`])
    /// ends there as `suspended`, with the pending call in its error's value, and cannot
    /// be resumed (only a run can: [`Sandbox::start`], [`Sandbox::run_journaled`]); the
    /// session stays open, its state as the call left it.
    pub fn session(&self) -> Result<Session, Error> {
        #[cfg(all(target_os = "linux", feature = "isolation"))]
        if let Some(opened) = self
            .isolated()
            .open_session(self.spec(), self.host(), CHUNK_NAME)
        {
            return opened.map(|worker| Session {
                backend: Some(Backend::Worker(Box::new(worker))),
                closed: None,
            });
        }
        let engine = Engine::new(self.spec(), self.host(), CHUNK_NAME)?;
        Ok(Session {
            backend: Some(Backend::InProcess(Box::new(engine))),
            closed: None,
        })
    }
}

impl Session {
    /// Runs `code` in the session's state; the results are the chunk's return values.
    pub fn exec(&mut self, code: impl AsRef<[u8]>) -> Outcome {
        self.exec_with(code, &Json::Null, &CallOptions::default())
    }

    /// Runs `code` with `input` as the chunk's vararg (`local input = ...`; JSON null
    /// is nil), under `options`' lowered limits.
    pub fn exec_with(
        &mut self,
        code: impl AsRef<[u8]>,
        input: &Json,
        options: &CallOptions,
    ) -> Outcome {
        self.exec_code(code.as_ref(), input, false, options)
    }

    /// The value of an expression (`state.count`, `#Handlers.list`), as Lua's REPL
    /// gives it: `code` is tried as `return CODE` first, then as a statement.
    pub fn eval(&mut self, code: impl AsRef<[u8]>, options: &CallOptions) -> Outcome {
        self.exec_code(code.as_ref(), &Json::Null, true, options)
    }

    fn exec_code(
        &mut self,
        code: &[u8],
        input: &Json,
        expression: bool,
        options: &CallOptions,
    ) -> Outcome {
        self.request(|backend| match backend {
            Backend::InProcess(engine) => (engine.exec(code, input, expression, options), false),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Backend::Worker(worker) => worker.exec(code, input, expression, options),
        })
    }

    /// Calls the function `name` with `args` (each converted from JSON); the results
    /// are its return values. `name` may be dotted (`utils.map`, `M.f`) and may name a
    /// callable table (one whose metatable has `__call`), found with raw lookups: no
    /// `__index` runs on the way.
    pub fn call(&mut self, name: &str, args: &[Json]) -> Outcome {
        self.call_with(name, args, &CallOptions::default())
    }

    /// [`Session::call`] under `options`' lowered limits.
    pub fn call_with(&mut self, name: &str, args: &[Json], options: &CallOptions) -> Outcome {
        self.request(|backend| match backend {
            Backend::InProcess(engine) => (engine.call(name, args, options), false),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Backend::Worker(worker) => worker.call(name, args, options),
        })
    }

    /// Whether `name` (dotted or not) names a function or a callable table in the
    /// session, found as [`Session::call`] finds it (raw lookups: no metamethod runs).
    ///
    /// # Errors
    /// On a closed session, the reason it closed; in a worker process, a failure to ask
    /// (which closes the session).
    pub fn has_function(&mut self, name: &str) -> Result<bool, Error> {
        self.request(|backend| match backend {
            Backend::InProcess(engine) => (Ok(engine.has_function(name)), false),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Backend::Worker(worker) => {
                let answer = worker.has_function(name);
                let lost = answer.is_err();
                (answer, lost)
            }
        })
    }

    /// Why the session was closed, if it was.
    pub fn closed_reason(&self) -> Option<&Error> {
        self.closed.as_ref()
    }

    /// True while the session accepts requests.
    pub fn is_open(&self) -> bool {
        self.backend.is_some()
    }

    /// Closes the session's state now (dropping the session does the same; an isolated
    /// session's worker process is killed).
    pub fn close(self) {}

    /// The pid of the session's worker process (`None` in process, or once closed). For
    /// tests of isolated sessions.
    #[cfg(feature = "test-support")]
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.backend {
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Some(Backend::Worker(worker)) => worker.pid(),
            _ => None,
        }
    }

    /// Sends a test-hook probe to the session's worker (honoured only by workers started
    /// with test hooks). A probe that kills the worker closes the session as `killed`.
    ///
    /// # Errors
    /// In process, on a closed session, or the worker's death, refusal or failure.
    #[cfg(feature = "test-support")]
    pub fn probe_worker(&mut self, probe: &str) -> Result<Json, Error> {
        self.request(|backend| match backend {
            Backend::InProcess(_) => (
                Err(Error::new(
                    ErrorKind::Internal,
                    "this session runs in process: there is no worker to probe",
                )),
                false,
            ),
            #[cfg(all(target_os = "linux", feature = "isolation"))]
            Backend::Worker(worker) => worker.probe(probe),
        })
    }

    /// Runs one request against the backend, or refuses it on a closed session; closes
    /// the session when the backend says so (its worker was lost) or when the call hit a
    /// limit that may have left the state mid-update.
    fn request<A: Answer>(&mut self, op: impl FnOnce(&mut Backend) -> (A, bool)) -> A {
        let Some(backend) = self.backend.as_mut() else {
            return A::refused(self.closed_error());
        };
        let (answer, lost) = op(backend);
        let stopped = matches!(
            answer.error().map(|e| e.kind),
            Some(ErrorKind::Timeout | ErrorKind::InstructionLimit)
        );
        if lost || stopped {
            // Dropping a worker backend kills the worker.
            self.backend = None;
            let reason = answer.error().cloned().unwrap_or_else(|| {
                Error::new(ErrorKind::Internal, "the session's worker process was lost")
            });
            self.closed.get_or_insert(reason);
        }
        answer
    }

    /// The error of a request on a closed session.
    fn closed_error(&self) -> Error {
        match &self.closed {
            Some(reason) => Error {
                message: format!("the session was closed: {}", reason.message),
                ..reason.clone()
            },
            None => Error::new(ErrorKind::Input, "the session was closed"),
        }
    }
}

/// What a request answers: an outcome (`exec`, `call`) or a plain result
/// (`has_function`, probes). [`Session::request`] needs its error and a refusal.
trait Answer {
    fn error(&self) -> Option<&Error>;
    fn refused(error: Error) -> Self;
}

impl Answer for Outcome {
    fn error(&self) -> Option<&Error> {
        Outcome::error(self)
    }

    fn refused(error: Error) -> Self {
        Outcome::failed(error, Duration::ZERO)
    }
}

impl<T> Answer for Result<T, Error> {
    fn error(&self) -> Option<&Error> {
        self.as_ref().err()
    }

    fn refused(error: Error) -> Self {
        Err(error)
    }
}
