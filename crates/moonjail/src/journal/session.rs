//! Durable sessions: the journal of a persistent session, and its restore.
//!
//! A session journal (the format: docs/JOURNAL.md) is the run journal's JSON lines with
//! another frame: a `session` first line (the spec, the time and seed, the tool names and
//! quota, whether host files are configured), then, per request, a `request` line (the
//! op and its fields; its own time when the session's time was drawn), the `tool`,
//! `module` and `file` lines of what the request got from the host (written by the run
//! journal's own taps, [`Recording`] and [`RecordingFiles`]), and a `response` line (the
//! outcome document).
//!
//! A session's state is the fold of its requests: **restoring** ([`restore_session`])
//! opens a fresh session with the recorded spec and replays the requests in order, every
//! tool call and file read answered from the journal (nothing is called, no file is
//! opened), and checks each replayed response against the recorded one. Then the same
//! taps switch to live: the session goes on, recording into the same file. A **fork**
//! ([`fork_session`]) replays a prefix into a new session and leaves the journal alone.
//!
//! The taps sit where the host answers, as for runs: in process, the calling thread;
//! isolated, the supervisor. A worker never sees the journal.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::{
    blob, call_text, corrupt, drawn_seed, field, now_unix, stop_check, string, tool_event, unblob,
    FileEvent, JournalError, JournalWriter, Recording, RecordingFiles, ToolEvent, JOURNAL_VERSION,
    JOURNAL_VERSION_1,
};
use crate::engine::Host;
use crate::error::Error;
use crate::host::{Determinism, FileSource};
use crate::outcome::Outcome;
use crate::sandbox::Sandbox;
use crate::session::Session;
use crate::spec::{CallOptions, Spec};
use crate::tools::{ToolError, ToolQuota, ToolTap};

/// What `replay` says of a session journal.
pub(super) const SESSION_KIND: JournalError = JournalError::WrongKind {
    found: "session",
    hint: "restore it with `moonjail session --restore FILE` (library: \
           moonjail::restore_session)",
};

/// What restoring says of a run journal.
const RUN_KIND: JournalError = JournalError::WrongKind {
    found: "run",
    hint: "replay it with `moonjail replay FILE` (library: moonjail::replay)",
};

// ---------------------------------------------------------------------------------------
// Requests and responses.
// ---------------------------------------------------------------------------------------

/// One request to a session that reaches its state: what a session journal records and
/// a restore replays. (Requests that do not touch the state, such as the CLI's `lint`
/// and `close`, are not requests here.)
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionRequest {
    /// [`Session::exec_with`]: run `code` with `input` as its vararg.
    Exec {
        /// The chunk.
        code: Vec<u8>,
        /// The chunk's vararg (JSON null is nil).
        input: Json,
        /// The request's lowered limits.
        options: CallOptions,
    },
    /// [`Session::eval`]: an expression's value.
    Eval {
        /// The expression (or statement).
        code: Vec<u8>,
        /// The request's lowered limits.
        options: CallOptions,
    },
    /// [`Session::call_with`]: call the function `function` with `args`.
    Call {
        /// A global name, dotted or not.
        function: String,
        /// The arguments, each converted from JSON.
        args: Vec<Json>,
        /// The request's lowered limits.
        options: CallOptions,
    },
    /// [`Session::has_function`].
    HasFunction {
        /// A global name, dotted or not.
        name: String,
    },
}

/// The answer to a [`SessionRequest`].
// The outcome is the answer to nearly every request: boxing it would allocate per
// request to save bytes on the rare `has_function`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionResponse {
    /// The outcome of `exec`, `eval` and `call`.
    Outcome(Outcome),
    /// Whether the function exists, or why the session could not say (it is closed).
    HasFunction(Result<bool, Error>),
}

impl SessionResponse {
    /// The document a `response` line records: the outcome document for `exec`,
    /// `eval` and `call`; `{"ok": true, "result": BOOL}` or `{"ok": false, "error":
    /// ERROR}` for `has_function`.
    pub fn to_json(&self) -> Json {
        match self {
            SessionResponse::Outcome(outcome) => outcome.to_json(),
            SessionResponse::HasFunction(Ok(has)) => json!({"ok": true, "result": has}),
            SessionResponse::HasFunction(Err(e)) => json!({"ok": false, "error": e}),
        }
    }
}

impl Session {
    /// Carries out `request` (the one entry point of front ends that take requests as
    /// data, and of a journal's restore).
    pub fn perform(&mut self, request: &SessionRequest) -> SessionResponse {
        match request {
            SessionRequest::Exec {
                code,
                input,
                options,
            } => SessionResponse::Outcome(self.exec_with(code, input, options)),
            SessionRequest::Eval { code, options } => {
                SessionResponse::Outcome(self.eval(code, options))
            }
            SessionRequest::Call {
                function,
                args,
                options,
            } => SessionResponse::Outcome(self.call_with(function, args, options)),
            SessionRequest::HasFunction { name } => {
                SessionResponse::HasFunction(self.has_function(name))
            }
        }
    }
}

impl SessionRequest {
    /// The request as a mismatch message names it: `call \`compute\``.
    fn label(&self) -> String {
        match self {
            SessionRequest::Exec { .. } => "exec".into(),
            SessionRequest::Eval { .. } => "eval".into(),
            SessionRequest::Call { function, .. } => format!("call `{function}`"),
            SessionRequest::HasFunction { name } => format!("has_function `{name}`"),
        }
    }

    /// The request's options: `None` for `has_function`, which runs no script (so has
    /// neither limits nor a clock).
    fn options(&self) -> Option<&CallOptions> {
        match self {
            SessionRequest::Exec { options, .. }
            | SessionRequest::Eval { options, .. }
            | SessionRequest::Call { options, .. } => Some(options),
            SessionRequest::HasFunction { .. } => None,
        }
    }

    /// [`SessionRequest::options`], to set them.
    fn options_mut(&mut self) -> Option<&mut CallOptions> {
        match self {
            SessionRequest::Exec { options, .. }
            | SessionRequest::Eval { options, .. }
            | SessionRequest::Call { options, .. } => Some(options),
            SessionRequest::HasFunction { .. } => None,
        }
    }

    /// The `request` line of request `n`.
    fn line(&self, n: u64) -> Json {
        let limits = |line: &mut Json, options: &CallOptions| {
            line["timeout_ms"] = json!(options.timeout.map(|t| t.as_nanos() as f64 / 1e6));
            line["instructions"] = json!(options.instructions);
            // Absent when the request reads the session's timestamp (a deterministic
            // session, and every journal written before requests had their own time).
            if let Some(time) = options.time {
                line["time"] = json!(time);
            }
        };
        match self {
            SessionRequest::Exec {
                code,
                input,
                options,
            } => {
                let mut line = json!({"type": "request", "n": n, "op": "exec",
                                      "code": blob(code), "input": input});
                limits(&mut line, options);
                line
            }
            SessionRequest::Eval { code, options } => {
                let mut line = json!({"type": "request", "n": n, "op": "eval",
                                      "code": blob(code)});
                limits(&mut line, options);
                line
            }
            SessionRequest::Call {
                function,
                args,
                options,
            } => {
                let mut line = json!({"type": "request", "n": n, "op": "call",
                                      "function": function, "args": args});
                limits(&mut line, options);
                line
            }
            SessionRequest::HasFunction { name } => {
                json!({"type": "request", "n": n, "op": "has_function", "name": name})
            }
        }
    }

    /// The request of a `request` line (line `at` of the file).
    fn parse(v: &Json, at: usize) -> Result<SessionRequest, JournalError> {
        let code = |v: &Json| {
            unblob(field(v, "code", at)?).map_err(|e| corrupt(at, format!("\"code\": {e}")))
        };
        let options = |v: &Json| -> Result<CallOptions, JournalError> {
            let timeout = match v.get("timeout_ms") {
                None | Some(Json::Null) => None,
                Some(ms) => match ms.as_f64().map(|ms| (ms * 1e6).round()) {
                    Some(ns) if ns.is_finite() && ns >= 1.0 => {
                        Some(Duration::from_nanos(ns as u64))
                    }
                    _ => {
                        return Err(corrupt(
                            at,
                            "\"timeout_ms\" is not a positive number of milliseconds",
                        ))
                    }
                },
            };
            let instructions = match v.get("instructions") {
                None | Some(Json::Null) => None,
                Some(n) => Some(
                    n.as_u64()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| corrupt(at, "\"instructions\" is not a count above 0"))?,
                ),
            };
            let time = match v.get("time") {
                None | Some(Json::Null) => None,
                Some(t) => Some(
                    t.as_i64()
                        .ok_or_else(|| corrupt(at, "\"time\" is not a whole number of seconds"))?,
                ),
            };
            Ok(CallOptions {
                timeout,
                instructions,
                time,
            })
        };
        match string(v, "op", at)?.as_str() {
            "exec" => Ok(SessionRequest::Exec {
                code: code(v)?,
                input: v.get("input").cloned().unwrap_or(Json::Null),
                options: options(v)?,
            }),
            "eval" => Ok(SessionRequest::Eval {
                code: code(v)?,
                options: options(v)?,
            }),
            "call" => Ok(SessionRequest::Call {
                function: string(v, "function", at)?,
                args: match field(v, "args", at)? {
                    Json::Array(args) => args.clone(),
                    _ => return Err(corrupt(at, "\"args\" is not a list")),
                },
                options: options(v)?,
            }),
            "has_function" => Ok(SessionRequest::HasFunction {
                name: string(v, "name", at)?,
            }),
            other => Err(corrupt(
                at,
                format!("unknown op {other:?} (exec, eval, call, has_function)"),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The taps: replaying, then live.
// ---------------------------------------------------------------------------------------

/// Where a journaled session's tool calls and file reads go. Its host is fixed when the
/// state is built, so one tap serves both phases of a restore: answering from the
/// journal while requests are replayed, then running (and recording) live.
struct Taps {
    mode: Mutex<Mode>,
    /// The sandbox's own files.
    files: Arc<dyn FileSource>,
    /// Stops the request in progress (a journal that failed, a replay that diverged):
    /// the session's interrupt check asks it.
    stop: Arc<AtomicBool>,
}

#[derive(Clone)]
enum Mode {
    /// Answer from the journal: the request being replayed.
    Replay(Arc<Replaying>),
    /// Call the tools and read the files, recording them when there is a journal.
    Live(Option<Arc<Recording>>),
}

impl fmt::Debug for Taps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Taps")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Taps {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }
}

impl ToolTap for Taps {
    fn call(
        &self,
        name: &str,
        args: Vec<Json>,
        real: &mut dyn FnMut(Vec<Json>) -> Result<Json, ToolError>,
    ) -> Result<Json, ToolError> {
        match self.mode() {
            Mode::Replay(replaying) => replaying.answer(name, args),
            Mode::Live(Some(recording)) => recording.call(name, args, real),
            Mode::Live(None) => real(args),
        }
    }
}

impl FileSource for Taps {
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        match self.mode() {
            Mode::Replay(replaying) => {
                match replaying.read(format!("module:{name}"), || format!("module `{name}`")) {
                    Some(FileEvent::Module(answer)) => answer,
                    _ => Err(format!("\n\t{DIVERGED}")),
                }
            }
            Mode::Live(Some(recording)) => RecordingFiles {
                inner: Arc::clone(&self.files),
                recording,
            }
            .module(name),
            Mode::Live(None) => self.files.module(name),
        }
    }

    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        match self.mode() {
            Mode::Replay(replaying) => {
                match replaying.read(format!("file:{path}"), || format!("file `{path}`")) {
                    Some(FileEvent::File(answer)) => answer,
                    _ => Some(Err(DIVERGED.to_string())),
                }
            }
            Mode::Live(Some(recording)) => RecordingFiles {
                inner: Arc::clone(&self.files),
                recording,
            }
            .read(path),
            Mode::Live(None) => self.files.read(path),
        }
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn has_modules(&self) -> bool {
        self.files.has_modules()
    }

    fn has_readable(&self) -> bool {
        self.files.has_readable()
    }
}

const DIVERGED: &str = "the restored session diverged from its journal: the request is stopped";

/// Answers one replayed request's tool calls and file reads from its recorded lines.
struct Replaying {
    calls: Mutex<VecDeque<ToolEvent>>,
    /// Keyed by `module:NAME` and `file:PATH`, each key's answers in order (a file may
    /// change between requests, and be read again).
    files: Mutex<BTreeMap<String, VecDeque<FileEvent>>>,
    made: AtomicU64,
    divergence: Mutex<Option<String>>,
    stop: Arc<AtomicBool>,
    /// The recorded request was stopped by its deadline: how many of its tool calls it
    /// made depended on the clock, so a replay may make fewer, or ask more (each refused
    /// as past the deadline).
    timed_out: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replaying {
    fn new(request: &Recorded, stop: Arc<AtomicBool>) -> Replaying {
        Replaying {
            calls: Mutex::new(request.calls.iter().cloned().collect()),
            files: Mutex::new(request.files.clone()),
            made: AtomicU64::new(0),
            divergence: Mutex::new(None),
            stop,
            timed_out: request.response["error"]["kind"] == "timeout",
        }
    }

    fn diverge(&self, message: String) {
        lock(&self.divergence).get_or_insert(message);
        self.stop.store(true, Ordering::SeqCst);
    }

    fn diverged(&self) -> bool {
        lock(&self.divergence).is_some()
    }

    fn answer(&self, name: &str, args: Vec<Json>) -> Result<Json, ToolError> {
        if self.diverged() {
            return Err(ToolError::new(DIVERGED));
        }
        let step = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        let next = lock(&self.calls).pop_front();
        let asked = call_text(name, &args);
        match next {
            None if self.timed_out => Err(ToolError::new(
                "the request's deadline passed (as in the recorded session)",
            )),
            None => {
                self.diverge(format!(
                    "tool call {step}: the session asked {asked}, but the journal records \
                     only {} tool calls in this request",
                    step - 1
                ));
                Err(ToolError::new(DIVERGED))
            }
            Some(ev) if ev.name != name || ev.args != args => {
                self.diverge(format!(
                    "tool call {step}: the journal records {}, the session asked {asked}",
                    call_text(&ev.name, &ev.args)
                ));
                Err(ToolError::new(DIVERGED))
            }
            Some(ev) => ev.result.map_err(ToolError::new),
        }
    }

    fn read(&self, key: String, what: impl FnOnce() -> String) -> Option<FileEvent> {
        if self.diverged() {
            return None;
        }
        let found = lock(&self.files)
            .get_mut(&key)
            .and_then(VecDeque::pop_front);
        if found.is_none() {
            self.diverge(format!(
                "{}: the session read it, but the recorded request did not (the journal has \
                 no content for it)",
                what()
            ));
        }
        found
    }
}

// ---------------------------------------------------------------------------------------
// The journaled session.
// ---------------------------------------------------------------------------------------

/// A [`Session`] whose requests are recorded in a journal (see docs/JOURNAL.md), made by
/// [`Sandbox::session_journaled`], [`restore_session`] or [`fork_session`] (a fork may
/// have no journal: a dry run).
///
/// Durability: each line is written whole and flushed as it is recorded; after a
/// request's `response` line the file is fsynced, before [`JournaledSession::request`]
/// returns. So a response a caller has seen is in the journal, on disk; a request whose
/// process died before its response was recorded is dropped by the next restore.
///
/// When the journal fails (its limit, a write error), the request is stopped, the error
/// returned, and the session takes no more requests ([`JournalError::Closed`]): the state
/// may hold what the journal does not. The journal itself stays restorable up to the
/// last request with a response.
///
/// Time: a session whose time was drawn for the journal (its sandbox was not
/// deterministic) gives each request that runs a script the current time, recorded in
/// the request's line ([`CallOptions::time`]), so its clock moves as an unjournaled
/// session's does and a restore replays each request at its own time. A deterministic
/// sandbox's session keeps its fixed timestamp.
pub struct JournaledSession {
    session: Session,
    recording: Option<Arc<Recording>>,
    /// Give each request the current time (the session's time was drawn).
    clock: bool,
    /// fsync after each response (else only when the session is dropped).
    sync_each: bool,
    /// The number of the next request.
    next: u64,
    /// Why the journal failed, once it has.
    broken: Option<String>,
}

impl fmt::Debug for JournaledSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournaledSession")
            .field("journaled", &self.recording.is_some())
            .field("requests", &(self.next - 1))
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl JournaledSession {
    /// Carries out `request` and records it: the `request` line, what it gets from the
    /// host, and the `response` line, fsynced before this returns. In a session whose
    /// time was drawn, a request without a `time` of its own runs at the current time,
    /// which its line records.
    ///
    /// # Errors
    /// [`JournalError`] when the journal cannot record the request (the request is then
    /// stopped, and the session closed: [`JournalError::Closed`] for every later one).
    pub fn request(&mut self, request: &SessionRequest) -> Result<SessionResponse, JournalError> {
        self.record(Cow::Borrowed(request))
    }

    /// [`JournaledSession::request`], taking the request by value when the caller built
    /// it (so that giving it its time copies nothing).
    fn record(
        &mut self,
        mut request: Cow<'_, SessionRequest>,
    ) -> Result<SessionResponse, JournalError> {
        if let Some(reason) = &self.broken {
            return Err(JournalError::Closed {
                reason: reason.clone(),
            });
        }
        // The one place a request's time is chosen: here, in the process that holds the
        // journal (the supervisor of an isolated session), never in a worker.
        // (A borrowed request is copied only when it needs its time: not `has_function`.)
        let untimed = request.options().is_some_and(|o| o.time.is_none());
        if self.clock && untimed {
            if let Some(options) = request.to_mut().options_mut() {
                options.time = Some(now_unix());
            }
        }
        let request = request.as_ref();
        let n = self.next;
        let Some(recording) = self.recording.clone() else {
            self.next += 1;
            return Ok(self.session.perform(request));
        };
        recording.steps.store(0, Ordering::SeqCst);
        let written = recording.writer().line(&request.line(n));
        if let Err(e) = written {
            return Err(self.break_with(e));
        }
        let response = self.session.perform(request);
        let failed = lock(&recording.failed).take();
        if let Some(e) = failed {
            return Err(self.break_with(e));
        }
        let line = json!({"type": "response", "n": n, "outcome": response.to_json()});
        let mut writer = recording.writer();
        let recorded = writer
            .line(&line)
            .map_err(|e| match e {
                JournalError::Limit { limit, .. } => JournalError::Limit {
                    limit,
                    finished: true,
                },
                e => e,
            })
            .and_then(|()| {
                if self.sync_each {
                    writer.sync()
                } else {
                    Ok(())
                }
            });
        drop(writer);
        if let Err(e) = recorded {
            return Err(self.break_with(e));
        }
        self.next += 1;
        Ok(response)
    }

    /// Whether the journal file is fsynced after each response (the default: a response
    /// the caller has seen survives a crash of the machine), or only when the session is
    /// dropped. Lines are flushed as they are written either way, so a response the
    /// caller has seen survives the process being killed; fsyncing each costs a disk
    /// flush per request (milliseconds on many disks).
    pub fn sync_each_response(&mut self, yes: bool) {
        self.sync_each = yes;
    }

    fn break_with(&mut self, error: JournalError) -> JournalError {
        self.broken = Some(error.to_string());
        error
    }

    /// [`Session::exec_with`], recorded.
    ///
    /// # Errors
    /// As [`JournaledSession::request`].
    pub fn exec_with(
        &mut self,
        code: impl AsRef<[u8]>,
        input: &Json,
        options: &CallOptions,
    ) -> Result<Outcome, JournalError> {
        self.outcome(SessionRequest::Exec {
            code: code.as_ref().to_vec(),
            input: input.clone(),
            options: *options,
        })
    }

    /// [`Session::eval`], recorded.
    ///
    /// # Errors
    /// As [`JournaledSession::request`].
    pub fn eval(
        &mut self,
        code: impl AsRef<[u8]>,
        options: &CallOptions,
    ) -> Result<Outcome, JournalError> {
        self.outcome(SessionRequest::Eval {
            code: code.as_ref().to_vec(),
            options: *options,
        })
    }

    /// [`Session::call_with`], recorded.
    ///
    /// # Errors
    /// As [`JournaledSession::request`].
    pub fn call_with(
        &mut self,
        function: &str,
        args: &[Json],
        options: &CallOptions,
    ) -> Result<Outcome, JournalError> {
        self.outcome(SessionRequest::Call {
            function: function.to_string(),
            args: args.to_vec(),
            options: *options,
        })
    }

    /// [`Session::has_function`], recorded.
    ///
    /// # Errors
    /// As [`JournaledSession::request`]; the inner error is the session's.
    pub fn has_function(&mut self, name: &str) -> Result<Result<bool, Error>, JournalError> {
        match self.request(&SessionRequest::HasFunction {
            name: name.to_string(),
        })? {
            SessionResponse::HasFunction(answer) => Ok(answer),
            SessionResponse::Outcome(outcome) => Ok(outcome.result.map(|_| false)),
        }
    }

    fn outcome(&mut self, request: SessionRequest) -> Result<Outcome, JournalError> {
        match self.record(Cow::Owned(request))? {
            SessionResponse::Outcome(outcome) => Ok(outcome),
            SessionResponse::HasFunction(answer) => {
                Ok(Outcome::from_error(answer.err().unwrap_or_else(|| {
                    Error::new(crate::ErrorKind::Internal, "an unexpected response")
                })))
            }
        }
    }

    /// The requests this session has answered, restored ones included.
    pub fn requests(&self) -> u64 {
        self.next - 1
    }

    /// Whether requests are recorded (a fork may run without a journal).
    pub fn is_journaled(&self) -> bool {
        self.recording.is_some()
    }

    /// The session itself ([`Session::is_open`], [`Session::closed_reason`]).
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for JournaledSession {
    /// fsyncs the journal (after each response it already was, by default) and closes
    /// it now, releasing its lock (the taps, which hold the recording, may outlive the
    /// session for a moment: an isolated session's supervisor).
    fn drop(&mut self) {
        if let Some(recording) = &self.recording {
            let mut writer = recording.writer();
            let _ = writer.sync();
            *writer = JournalWriter::new(std::io::sink());
        }
    }
}

/// The session line's fields both a recording and a restore compare: what the sandbox
/// gives a session besides its spec.
fn attachments(sandbox: &Sandbox) -> (Vec<String>, Option<ToolQuota>, bool, bool) {
    let host = sandbox.host();
    let tools = host.tools.as_deref();
    (
        tools.map_or(Vec::new(), |t| t.names().map(str::to_string).collect()),
        tools.map(|t| t.quota().clone()),
        host.files.has_modules(),
        host.files.has_readable(),
    )
}

/// A fresh session of `sandbox` with `spec`, its tools and files behind [`Taps`] (live,
/// unrecorded until told otherwise).
fn open(sandbox: &Sandbox, spec: Spec) -> Result<(Session, Arc<Taps>), JournalError> {
    let host = sandbox.host();
    // A session call cannot be resumed: a deferred tool would leave the journal with a
    // `suspend` line no restore could answer.
    if let Some(name) = host.tools.as_deref().and_then(|t| t.deferred().next()) {
        return Err(JournalError::Session(format!(
            "the sandbox has the deferred tool `{name}`: a session cannot be journaled with \
             deferred tools (only a run can suspend and resume)"
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let taps = Arc::new(Taps {
        mode: Mutex::new(Mode::Live(None)),
        files: Arc::clone(&host.files),
        stop: Arc::clone(&stop),
    });
    let tapped = Host {
        files: taps.clone(),
        tools: host
            .tools
            .as_ref()
            .map(|t| Arc::new(t.tapped(taps.clone()))),
        interrupt: Some(stop_check(host, stop)),
    };
    let session = sandbox
        .variant(spec, tapped)
        .session()
        .map_err(|e| JournalError::Session(format!("the session could not be opened: {e}")))?;
    Ok((session, taps))
}

/// A recording into `writer` for the session behind `taps`.
fn recording(writer: JournalWriter, taps: &Taps) -> Arc<Recording> {
    Arc::new(Recording {
        writer: Mutex::new(writer),
        failed: Mutex::new(None),
        stop: Arc::clone(&taps.stop),
        steps: AtomicU64::new(0),
        suspended: AtomicBool::new(false),
    })
}

/// Takes the journal file's exclusive lock, so that two processes never append to one
/// journal (a session still running, and its restore).
///
/// A lock is held for a moment longer than its holder when another thread forks while
/// the file is open (the child has the descriptor until it execs), so a busy lock is
/// tried again for up to [`LOCK_PATIENCE`] before it is reported.
pub(super) fn lock_file(file: &File) -> Result<(), JournalError> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match try_lock(file) {
            Ok(true) => return Ok(()),
            Ok(false) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(false) => {
                return Err(JournalError::Session(
                    "the journal file is locked by another process (a session still \
                     recording into it or restoring it, or a run being resumed from it)"
                        .into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: whether the lock was taken. (`File::try_lock` is newer
/// than the crate's minimum Rust.)
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this `File` owns (open for the call's duration);
    // it reads and writes no memory.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// No advisory lock off Unix: the journal is not guarded against a second writer.
#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// How long a busy journal lock is tried again.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

impl JournalWriter {
    /// Creates (or truncates) the journal file at `path` for a session, once it holds
    /// the file's lock: a journal another session is recording into (or restoring) is
    /// refused, never truncated under it.
    ///
    /// # Errors
    /// Why the file could not be opened, and [`JournalError::Session`] when another
    /// process holds it.
    pub fn create_locked(path: impl AsRef<Path>) -> Result<JournalWriter, JournalError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        lock_file(&file)?;
        file.set_len(0)?;
        let out = file.try_clone()?;
        Ok(JournalWriter::with(Box::new(out), Some(file), 0))
    }
}

impl Sandbox {
    /// Opens a persistent session ([`Sandbox::session`]) whose every request is recorded
    /// into `journal` (see docs/JOURNAL.md and [`JournaledSession`]), so that
    /// [`restore_session`] can rebuild its state later, in another process.
    ///
    /// A sandbox that is not deterministic is made so for the journal, as
    /// [`Sandbox::run_journaled`] does, but its clock still moves: `math.random` is
    /// seeded with a fresh seed (one sequence for the whole session), written to the
    /// `session` line, and each request that runs a script reads, as `os.time()`, the
    /// time it started, written to its `request` line ([`CallOptions::time`]), so that a
    /// restore replays it at that time and rebuilds the same state. A deterministic
    /// sandbox's session reads its fixed timestamp throughout.
    ///
    /// ```
    /// use moonjail::{CallOptions, JournalWriter, Sandbox};
    /// use serde_json::json;
    ///
    /// let sandbox = Sandbox::builder().build()?;
    /// let path = std::env::temp_dir().join(format!("doc-session-{}.jsonl", std::process::id()));
    /// let mut session = sandbox.session_journaled(JournalWriter::create(&path)?)?;
    /// session.exec_with("n = 0 function bump() n = n + 1 return n end", &json!(null),
    ///     &CallOptions::default())?;
    /// session.call_with("bump", &[], &CallOptions::default())?;
    /// drop(session); // the process could die here
    /// let mut restored = moonjail::restore_session(&sandbox, &path, None)?;
    /// let out = restored.call_with("bump", &[], &CallOptions::default())?;
    /// assert_eq!(out.result.unwrap(), json!(2));
    /// # drop(restored);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JournalError`] when the journal's first line cannot be written, its file is
    /// locked by another process, or the session cannot be opened.
    pub fn session_journaled(
        &self,
        mut journal: JournalWriter,
    ) -> Result<JournaledSession, JournalError> {
        // A response the caller has seen must survive the process: lines are written as
        // they are recorded, whatever the writer was set to.
        journal.flush = super::Flush::Line;
        if let Some(file) = &journal.file {
            lock_file(file)?;
        }
        let mut spec = self.spec().clone();
        let drawn = spec.deterministic.is_none();
        let determinism = *spec.deterministic.get_or_insert(Determinism {
            timestamp: now_unix(),
            seed: drawn_seed(),
        });
        let (tools, quota, modules, readable) = attachments(self);
        let first = json!({
            // Requests of a drawn session carry their own time (see `JOURNAL_VERSION`).
            "v": if drawn { JOURNAL_VERSION } else { JOURNAL_VERSION_1 },
            "type": "session",
            "moonjail": env!("CARGO_PKG_VERSION"),
            "spec": serde_json::to_value(&spec).map_err(std::io::Error::other)?,
            "determinism": {"timestamp": determinism.timestamp, "seed": determinism.seed,
                            "drawn": drawn},
            "tools": tools,
            "quota": quota,
            "files": {"modules": modules, "readable": readable},
        });
        let (session, taps) = open(self, spec)?;
        let recording = recording(journal, &taps);
        {
            let mut writer = recording.writer();
            writer.line(&first)?;
            writer.sync()?;
        }
        taps.set(Mode::Live(Some(Arc::clone(&recording))));
        Ok(JournaledSession {
            session,
            recording: Some(recording),
            clock: drawn,
            sync_each: true,
            next: 1,
            broken: None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Reading and restoring.
// ---------------------------------------------------------------------------------------

/// One recorded request with a response.
#[derive(Debug, Clone)]
struct Recorded {
    n: u64,
    request: SessionRequest,
    calls: Vec<ToolEvent>,
    files: BTreeMap<String, VecDeque<FileEvent>>,
    response: Json,
    /// The byte offset just past its `response` line.
    end: u64,
}

/// A session journal, read and checked: the `session` line and every request that has
/// its response. A trailing request without one (its process died before answering) is
/// left out, and so are the bytes after the last complete request.
#[derive(Debug)]
pub struct SessionJournal {
    bytes: Vec<u8>,
    /// The recorded sandbox: spec, tools, quota, host files.
    recorded: super::Header,
    /// The byte offset past the `session` line.
    header: u64,
    requests: Vec<Recorded>,
    /// The number of a trailing request that has no response, if any.
    dropped: Option<u64>,
}

impl SessionJournal {
    /// Reads a session journal from `reader`, at most `limit` bytes (`None`: no limit).
    ///
    /// # Errors
    /// [`JournalError::Io`], [`JournalError::TooLarge`], [`JournalError::WrongKind`] for
    /// a run journal, and [`JournalError::Corrupt`] naming the line for anything else
    /// that is not a session journal of this version.
    pub fn read(reader: impl Read, limit: Option<u64>) -> Result<SessionJournal, JournalError> {
        SessionJournal::parse(super::read_bounded(reader, limit)?)
    }

    /// Parses the bytes of a session journal.
    ///
    /// Every line that ends with a newline must be valid; a last line without one is
    /// what a process killed while writing leaves, and is dropped with the request it
    /// belongs to.
    ///
    /// # Errors
    /// As [`SessionJournal::read`].
    pub fn parse(bytes: Vec<u8>) -> Result<SessionJournal, JournalError> {
        // (line number, text, offset past the line); a last line without its newline is
        // left out: it was being written.
        let mut lines = Vec::new();
        let mut at = 0usize;
        for (i, chunk) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
            at += chunk.len();
            if let Some(text) = chunk.strip_suffix(b"\n") {
                if !text.is_empty() {
                    lines.push((i + 1, text, at as u64));
                }
            }
        }
        let mut lines = lines.into_iter();
        let (n, first, header) = lines.next().ok_or_else(|| {
            corrupt(
                1,
                "the journal has no complete first line (empty, or cut while it was written)",
            )
        })?;
        let start: Json =
            serde_json::from_slice(first).map_err(|e| corrupt(n, format!("not JSON: {e}")))?;
        match start.get("type").and_then(Json::as_str) {
            Some("session") => {}
            Some("start") => return Err(RUN_KIND),
            _ => return Err(corrupt(n, "the first line is not a \"session\" line")),
        }
        let recorded = super::Header::read(&start, n)?;

        let mut requests: Vec<Recorded> = Vec::new();
        let mut open: Option<Recorded> = None;
        for (n, text, end) in lines {
            let v: Json =
                serde_json::from_slice(text).map_err(|e| corrupt(n, format!("not JSON: {e}")))?;
            let kind = v.get("type").and_then(Json::as_str);
            let number = || {
                field(&v, "n", n)?
                    .as_u64()
                    .ok_or_else(|| corrupt(n, "\"n\" is not a request number"))
            };
            match (kind, open.as_mut()) {
                (Some("request"), None) => {
                    let expected = requests.last().map_or(1, |r| r.n + 1);
                    let number = number()?;
                    if number != expected {
                        return Err(corrupt(
                            n,
                            format!("request {number}, where request {expected} was expected"),
                        ));
                    }
                    open = Some(Recorded {
                        n: number,
                        request: SessionRequest::parse(&v, n)?,
                        calls: Vec::new(),
                        files: BTreeMap::new(),
                        response: Json::Null,
                        end: 0,
                    });
                }
                (Some("request"), Some(current)) => {
                    return Err(corrupt(
                        n,
                        format!(
                            "a request line, but request {} has no response line",
                            current.n
                        ),
                    ))
                }
                (Some("tool"), Some(current)) => current.calls.push(tool_event(&v, n)?),
                (Some(kind @ ("module" | "file")), Some(current)) => {
                    let (key, event) = super::file_event(&v, kind, n)?;
                    current.files.entry(key).or_default().push_back(event);
                }
                (Some("response"), Some(current)) => {
                    if number()? != current.n {
                        return Err(corrupt(
                            n,
                            format!("the response of request {}, not {}", number()?, current.n),
                        ));
                    }
                    let outcome = field(&v, "outcome", n)?;
                    if !outcome.is_object() {
                        return Err(corrupt(n, "\"outcome\" is not an object"));
                    }
                    if let Some(mut done) = open.take() {
                        done.response = outcome.clone();
                        done.end = end;
                        requests.push(done);
                    }
                }
                (Some(kind @ ("tool" | "module" | "file" | "response")), None) => {
                    return Err(corrupt(n, format!("a {kind:?} line outside a request")))
                }
                (Some(other), _) => return Err(corrupt(n, format!("unknown line type {other:?}"))),
                (None, _) => return Err(corrupt(n, "no \"type\" field")),
            }
        }
        let dropped = open.map(|r| r.n).or_else(|| {
            // Bytes after the last line (a line cut while written) that began a request.
            let complete = requests.last().map_or(header, |r| r.end);
            (complete < bytes.len() as u64).then(|| requests.last().map_or(1, |r| r.n + 1))
        });
        Ok(SessionJournal {
            bytes,
            recorded,
            header,
            requests,
            dropped,
        })
    }

    /// The recorded spec, with the determinism the session had.
    pub fn spec(&self) -> &Spec {
        &self.recorded.spec
    }

    /// How many requests have their response (the ones a restore replays).
    pub fn requests(&self) -> u64 {
        self.requests.len() as u64
    }

    /// The number of a trailing request without a response (the recording process died
    /// during it): a restore drops it.
    pub fn dropped(&self) -> Option<u64> {
        self.dropped
    }

    /// The recorded response document of request `n` (from 1).
    pub fn response(&self, n: u64) -> Option<&Json> {
        let i = usize::try_from(n.checked_sub(1)?).ok()?;
        self.requests.get(i).map(|r| &r.response)
    }

    /// The journal's bytes up to the end of request `upto` (the `session` line alone
    /// for 0; every complete request past the last one).
    fn prefix(&self, upto: u64) -> &[u8] {
        let last = self.requests.last().map_or(self.header, |r| r.end);
        let end = match upto.checked_sub(1) {
            None => self.header,
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.requests.get(i))
                .map_or(last, |r| r.end),
        };
        let end = usize::try_from(end).map_or(self.bytes.len(), |e| e.min(self.bytes.len()));
        &self.bytes[..end]
    }

    /// Refuses a sandbox that would not give the recorded session's answers: another
    /// spec, other tools or quota, host files configured or not.
    fn check(&self, sandbox: &Sandbox) -> Result<(), JournalError> {
        self.recorded.check(sandbox).map_err(|what| {
            JournalError::Session(format!(
                "the session cannot be restored into this sandbox: {what} (restore it into \
                 the sandbox it was recorded with: the same flags)"
            ))
        })
    }

    /// Opens a session of `sandbox` with the recorded spec and replays the first `upto`
    /// requests into it, each checked against its recorded response. The taps are left
    /// live and unrecorded.
    fn replay(&self, sandbox: &Sandbox, upto: u64) -> Result<(Session, Arc<Taps>), JournalError> {
        self.check(sandbox)?;
        let (mut session, taps) = open(sandbox, self.recorded.spec.clone())?;
        for recorded in self.requests.iter().take(upto as usize) {
            let mismatch = |what: String| JournalError::Mismatch {
                request: recorded.n,
                op: recorded.request.label(),
                what,
            };
            let replaying = Arc::new(Replaying::new(recorded, Arc::clone(&taps.stop)));
            taps.set(Mode::Replay(Arc::clone(&replaying)));
            let response = session.perform(&recorded.request);
            taps.set(Mode::Live(None));
            if let Some(what) = lock(&replaying.divergence).take() {
                return Err(mismatch(what));
            }
            let left = lock(&replaying.calls)
                .front()
                .cloned()
                .filter(|_| !replaying.timed_out);
            if let Some(next) = left {
                let made = replaying.made.load(Ordering::SeqCst);
                let failed = match &response {
                    SessionResponse::Outcome(outcome) => outcome.error(),
                    SessionResponse::HasFunction(answer) => answer.as_ref().err(),
                }
                .map(|e| e.message.as_str());
                return Err(mismatch(format!(
                    "tool call {}: the journal records {}, but the replayed request ended {}",
                    made + 1,
                    call_text(&next.name, &next.args),
                    super::ended_after(made, failed)
                )));
            }
            let replayed = essence(response.to_json());
            let expected = essence(recorded.response.clone());
            if let Some((path, a, b)) = difference(&expected, &replayed, String::new()) {
                return Err(mismatch(format!(
                    "the replayed response differs from the recorded one at {path}: \
                     recorded {a}, replayed {b}"
                )));
            }
        }
        Ok((session, taps))
    }
}

/// A response document without what varies between runs of the same request: wall
/// times and memory figures (as docs/JOURNAL.md says of replays).
///
/// A request stopped by its deadline is compared by its error kind alone: where it was
/// stopped, what it had printed and counted by then depend on the clock (and the
/// session is closed after it, so no later state depends on them).
pub(super) fn essence(mut doc: Json) -> Json {
    let timed_out = doc["error"]["kind"] == "timeout";
    if let Some(stats) = doc.get_mut("stats").and_then(Json::as_object_mut) {
        for volatile in ["wall_ms", "memory_bytes", "peak_memory_bytes"] {
            stats.remove(volatile);
        }
        if timed_out {
            for volatile in ["instructions", "output_bytes", "tool_calls"] {
                stats.remove(volatile);
            }
        }
    }
    if timed_out {
        if let Some(doc) = doc.as_object_mut() {
            for volatile in ["output", "output_truncated", "tool_calls"] {
                doc.remove(volatile);
            }
        }
        if let Some(error) = doc.get_mut("error").and_then(Json::as_object_mut) {
            error.retain(|k, _| k == "kind");
        }
    }
    if let Some(calls) = doc.get_mut("tool_calls").and_then(Json::as_array_mut) {
        for call in calls {
            if let Some(call) = call.as_object_mut() {
                call.remove("ms");
            }
        }
    }
    doc
}

/// The first place where `a` and `b` differ: its JSON pointer (`/result/last/reply`,
/// `(the document)` for the root) and both values, cut to a readable length.
pub(super) fn difference(a: &Json, b: &Json, path: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let here = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => difference(u, v, here),
                    (u, v) => Some((here, shown(u), shown(v))),
                }
            })
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| difference(u, v, format!("{path}/{i}"))),
        _ if a == b => None,
        _ => Some((
            if path.is_empty() {
                "(the document)".into()
            } else {
                path
            },
            shown(Some(a)),
            shown(Some(b)),
        )),
    }
}

fn shown(v: Option<&Json>) -> String {
    match v {
        None => "(nothing)".into(),
        Some(v) => crate::error::cut_message(v.to_string(), 200),
    }
}

/// Rebuilds a journaled session's state from its journal file at `path` and goes on
/// recording into the same file.
///
/// The journal's requests are replayed in order into a fresh session of `sandbox` with
/// the recorded spec and seed, each request at its recorded time (the session's
/// timestamp for a request that has none): every tool call and file read is answered
/// from the journal (no tool is called, no file opened), and every replayed response is
/// checked against the recorded one (wall times and memory figures aside). Then a
/// trailing request without a response (its process died; no caller saw an answer) is
/// cut off the file, and the session goes on live, appending new requests, so it can be
/// restored again.
///
/// `sandbox` must be the one the session was recorded with (the same spec; without
/// determinism if the recording drew its time and seed; the same tool names, quota, and
/// host files configured or not): it supplies the live tools and files, and where the
/// session runs (in process or isolated). `limit` bounds the journal read, and then
/// written (the whole file).
///
/// # Errors
/// [`JournalError::Mismatch`] naming the request and what differs when the replay does
/// not give the recorded answers (nothing is then written to the file);
/// [`JournalError::WrongKind`] for a run journal; [`JournalError::Session`] for a
/// sandbox that differs from the recorded one, or a file locked by another process; and
/// the read errors of [`SessionJournal::read`].
pub fn restore_session(
    sandbox: &Sandbox,
    path: impl AsRef<Path>,
    limit: Option<u64>,
) -> Result<JournaledSession, JournalError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    lock_file(&file)?;
    let journal = SessionJournal::read(&mut file, limit)?;
    let (session, taps) = journal.replay(sandbox, journal.requests())?;
    // Only now, the replay agreeing with the journal, is the file changed.
    let keep = journal.prefix(journal.requests()).len() as u64;
    file.set_len(keep)?;
    file.seek(SeekFrom::End(0))?;
    file.sync_all()?;
    let out = file.try_clone()?;
    let writer = JournalWriter::with(Box::new(out), Some(file), keep).limit(limit);
    let recording = recording(writer, &taps);
    taps.set(Mode::Live(Some(Arc::clone(&recording))));
    Ok(JournaledSession {
        session,
        recording: Some(recording),
        clock: journal.recorded.drawn,
        sync_each: true,
        next: journal.requests() + 1,
        broken: None,
    })
}

/// Restores the first `upto` requests of `journal` (all when `None`) into a new session,
/// as [`restore_session`] does, without touching the journal: an AO dry run (evaluate a
/// message against the state, and discard it). With `record`, the fork is journaled
/// there: the journal's prefix is copied into it, and the fork's requests follow.
///
/// # Errors
/// As [`restore_session`]; [`JournalError::Session`] when `upto` is past the journal's
/// complete requests.
pub fn fork_session(
    sandbox: &Sandbox,
    journal: &SessionJournal,
    upto: Option<u64>,
    record: Option<JournalWriter>,
) -> Result<JournaledSession, JournalError> {
    let upto = upto.unwrap_or(journal.requests());
    if upto > journal.requests() {
        return Err(JournalError::Session(format!(
            "cannot fork after request {upto}: the journal has {} complete requests",
            journal.requests()
        )));
    }
    let (session, taps) = journal.replay(sandbox, upto)?;
    let recording = match record {
        None => None,
        Some(mut writer) => {
            if let Some(file) = &writer.file {
                lock_file(file)?;
            }
            writer.text(journal.prefix(upto))?;
            writer.sync()?;
            let recording = recording(writer, &taps);
            taps.set(Mode::Live(Some(Arc::clone(&recording))));
            Some(recording)
        }
    };
    Ok(JournaledSession {
        session,
        recording,
        clock: journal.recorded.drawn,
        sync_each: true,
        next: upto + 1,
        broken: None,
    })
}
