//! A persistent session in a dedicated worker process, seen from the supervisor.
//!
//! The worker holds the session's one Lua state; every call is a request (`Exec`, `Call`,
//! `HasFunction`) answered by `Done`, with the host calls of the call answered in between
//! (see `host_call`), under the call's deadline enforced from outside. Each `Exec` and
//! `Call` gets its own [`crate::ToolRun`] here, as in process: its own tool quotas and
//! deadline, and its own audit record in the call's outcome. The public
//! [`crate::Session`] decides from each answer whether the session goes on: it closes
//! after a timeout or an instruction limit (as in process), and whenever the worker was
//! lost (killed at the deadline, crashed, or broke the protocol). A call the host's
//! interrupt check stops is stopped by the worker itself, which answers `interrupted`
//! and keeps the session; only a worker that does not stop in time is killed (and the
//! session closed, as `interrupted`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::host_budget;
use super::host_call::Host;
use super::pool::Pool;
use super::protocol::{self, ExecMeta, FunctionName, Kind, RequestMeta};
use super::supervisor::{Fate, Worker};
use crate::engine::{self, check_source};
use crate::error::{Error, ErrorKind};
use crate::host::{FileSource, InterruptCheck};
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::spec::{CallOptions, Spec};
use crate::tools::{ToolRegistry, ToolRun};

/// One session's worker, taken out of the pool; killed (through the pool's keeper) when
/// dropped.
#[derive(Debug)]
pub(crate) struct WorkerSession {
    /// `None` only while being dropped.
    worker: Option<Worker>,
    pool: Arc<Pool>,
    files: Arc<dyn FileSource>,
    tools: Option<Arc<ToolRegistry>>,
    interrupt: Option<InterruptCheck>,
    spec: Spec,
}

impl WorkerSession {
    /// Takes a worker for a new session of `spec` and opens the session in it.
    ///
    /// # Errors
    /// Why no worker could be had, or why the worker could not build the state.
    pub(crate) fn open(
        pool: &Arc<Pool>,
        spec: &Spec,
        host: &engine::Host,
        chunk_name: &str,
    ) -> Result<WorkerSession, Error> {
        let worker = pool
            .take()
            .map_err(|message| Error::new(ErrorKind::Internal, message))?;
        let mut session = WorkerSession {
            worker: Some(worker),
            pool: Arc::clone(pool),
            files: Arc::clone(&host.files),
            tools: host.tools.clone(),
            interrupt: host.interrupt.clone(),
            spec: spec.clone(),
        };
        let meta = RequestMeta::new(spec, host, chunk_name);
        let request = protocol::encode_json(Kind::SessionOpen, &meta)
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        // Building a state is the host's work, not the script's: the spawn timeout bounds
        // it, not the run's.
        let deadline = Some(Instant::now() + session.settings_spawn_timeout());
        match session.request(&request, deadline, None, false) {
            Ok(outcome) => match outcome.result {
                Ok(_) => Ok(session),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// Runs `code` in the session's state. True in the second place when the session must
    /// close (the outcome's error says why).
    pub(crate) fn exec(
        &mut self,
        code: &[u8],
        input: &Json,
        expression: bool,
        options: &CallOptions,
    ) -> (Outcome, bool) {
        let start = Instant::now();
        // Refused here rather than shipped to the worker only to be refused there.
        if let Err(error) = check_source(&self.spec, code) {
            return (Outcome::failed(error, start.elapsed()), false);
        }
        let meta = ExecMeta {
            expression,
            options: *options,
        };
        let encoded = serde_json::to_vec(&meta).and_then(|m| Ok((m, serde_json::to_vec(input)?)));
        let (meta, input) = match encoded {
            Ok(parts) => parts,
            Err(e) => {
                let error = Error::new(ErrorKind::Internal, e.to_string());
                return (Outcome::failed(error, start.elapsed()), false);
            }
        };
        match protocol::encode(Kind::Exec, &[code, &meta, &input]) {
            Ok(request) => self.call_request(&request, start, options),
            Err(_) => {
                let message = format!(
                    "the source ({} bytes) is too large to send to a worker process",
                    code.len()
                );
                (
                    Outcome::failed(Error::new(ErrorKind::Input, message), start.elapsed()),
                    false,
                )
            }
        }
    }

    /// Calls the global function `name` with `args`.
    pub(crate) fn call(
        &mut self,
        name: &str,
        args: &[Json],
        options: &CallOptions,
    ) -> (Outcome, bool) {
        let start = Instant::now();
        let encoded = serde_json::to_vec(&FunctionName {
            name: name.to_string(),
            options: *options,
        })
        .and_then(|meta| Ok((meta, serde_json::to_vec(args)?)));
        let request = encoded.map_err(|e| e.to_string()).and_then(|(meta, args)| {
            protocol::encode(Kind::Call, &[&meta, &args]).map_err(|_| {
                format!(
                    "the arguments ({} bytes) are too large to send to a worker process",
                    args.len()
                )
            })
        });
        match request {
            Ok(request) => self.call_request(&request, start, options),
            Err(message) => (
                Outcome::failed(Error::new(ErrorKind::Input, message), start.elapsed()),
                false,
            ),
        }
    }

    /// Whether the state holds a global function `name`.
    ///
    /// # Errors
    /// Why the worker could not answer; the session must close.
    pub(crate) fn has_function(&mut self, name: &str) -> Result<bool, Error> {
        let request = protocol::encode_json(
            Kind::HasFunction,
            &FunctionName {
                name: name.to_string(),
                options: CallOptions::default(),
            },
        )
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        let timeout = self
            .limits()
            .timeout
            .unwrap_or_else(|| self.settings_spawn_timeout());
        let deadline = Some(Instant::now() + timeout + self.pool.settings().kill_grace);
        let outcome = self.request(&request, deadline, None, true)?;
        match outcome.result {
            Ok(Json::Bool(has)) => Ok(has),
            Ok(other) => {
                self.kill();
                Err(Error::new(
                    ErrorKind::Internal,
                    format!("the worker answered HasFunction with {other}, not a boolean"),
                ))
            }
            Err(error) => {
                self.kill();
                Err(error)
            }
        }
    }

    /// Sends a test-hook probe to the session's worker. True in the second place when the
    /// session must close (the worker died or misbehaved).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn probe(&mut self, probe: &str) -> (Result<Json, Error>, bool) {
        let deadline = self.limits().timeout.map(|t| Instant::now() + t);
        let pool = Arc::clone(&self.pool);
        let Some(worker) = self.worker.as_mut() else {
            return (Err(lost()), true);
        };
        let (result, fate) = worker.probe(probe, deadline, pool.settings());
        (result, fate == Fate::Retire)
    }

    /// The pid of the locked-down worker process.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn pid(&self) -> Option<u32> {
        self.worker.as_ref().map(|w| w.pids().1)
    }

    /// Sends an `Exec` or `Call` under the call deadline, serving its tool calls with a
    /// fresh [`ToolRun`] whose record becomes the outcome's.
    fn call_request(
        &mut self,
        request: &[u8],
        start: Instant,
        options: &CallOptions,
    ) -> (Outcome, bool) {
        let grace = self.pool.settings().kill_grace;
        // The request's own limits: the worker applies them too, this deadline is the
        // one enforced from outside.
        let limits = self.limits().lowered(options);
        let deadline = limits.timeout.map(|t| start + t + grace);
        let tools = self.tools.as_ref().map(|registry| {
            let due = limits.timeout.map(|t| start + t);
            registry.start_bounded_run(due, limits.result_depth)
        });
        let (mut outcome, close) = match self.request(request, deadline, tools.as_ref(), true) {
            Ok(outcome) => {
                // As in process: after a timeout or an instruction limit the state may be
                // mid-update, so the session closes (and its worker goes).
                let close = outcome.error().is_some_and(|e| {
                    matches!(e.kind, ErrorKind::Timeout | ErrorKind::InstructionLimit)
                });
                (outcome, close)
            }
            Err(error) => (Outcome::failed(error, start.elapsed()), true),
        };
        crate::tools::ToolRun::settle(tools.as_ref(), &mut outcome);
        (outcome, close)
    }

    /// One exchange with the worker, serving tool calls through `tools` (none: the
    /// request may call no tool), and asking the host's interrupt check meanwhile when
    /// `interruptible`; `Err` when the worker was lost.
    fn request(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
        tools: Option<&ToolRun>,
        interruptible: bool,
    ) -> Result<Outcome, Error> {
        let pool = Arc::clone(&self.pool);
        let files = Arc::clone(&self.files);
        let Some(worker) = self.worker.as_mut() else {
            return Err(lost());
        };
        if !worker.belongs_here() {
            return Err(Error::new(
                ErrorKind::Internal,
                "the session's worker belongs to the process that opened the session; \
                 a forked process opens sessions of its own",
            ));
        }
        let host = Host {
            files: &*files,
            tools,
            max_depth: self.spec.limits.result_depth,
            max_host_bytes: host_budget(&self.spec.limits),
        };
        let interrupt = self.interrupt.as_ref().filter(|_| interruptible);
        worker.exchange(
            request,
            deadline,
            pool.settings(),
            host,
            &self.spec.limits,
            interrupt,
        )
    }

    fn settings_spawn_timeout(&self) -> Duration {
        self.pool.settings().spawn_timeout
    }

    fn kill(&mut self) {
        if let Some(worker) = self.worker.as_mut() {
            worker.kill();
        }
    }
}

impl Drop for WorkerSession {
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            if !worker.belongs_here() {
                // A forked copy: the worker is the parent's (dropping only closes fds).
                return;
            }
            worker.send_close();
            self.pool.retire(worker);
        }
    }
}

fn lost() -> Error {
    Error::new(ErrorKind::Internal, "the session's worker process is gone")
}
