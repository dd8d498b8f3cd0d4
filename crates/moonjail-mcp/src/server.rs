//! The MCP handler: the tools, declared with rmcp's macros (input schemas derived from
//! the parameter types below), their descriptions replaced by the generated ones, each a
//! thin call into the library.

use std::sync::Arc;
use std::time::Duration;

use moonjail::{
    CallOptions, Error, ErrorKind, Outcome, Pending, Run, RunOptions, Sandbox, Suspension,
    ToolError,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, CancelledNotificationParam, ClientResult, ElicitRequest, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, Implementation, ServerCapabilities, ServerConfig,
    ServerRequest,
};
use rmcp::service::{ElicitationMode, PeerRequestOptions, ServiceError};
use rmcp::{tool, tool_handler, tool_router, Peer, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use crate::describe::{Descriptions, Facts};
use crate::render;
use crate::sessions::{Refusal, Sessions};
use crate::suspended::{Suspended, DEFAULT_MAX_SUSPENDED};

/// How many sessions one connection may keep open, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 8;

/// How long the user is given to answer a deferred call, by default; past it the script
/// gets the tool's error.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `run_lua`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunLua {
    /// The Lua 5.4 source to run.
    pub code: String,
    /// Any JSON value: the chunk's vararg (`local input = ...`) and the argument of a
    /// global function `run`, if the script defines one. JSON null is nil. Absent: nil.
    #[serde(default)]
    pub input: Json,
    /// Treat `code` as an expression whose value is the result (`1 + 1`, `#t`): it is
    /// tried as `return CODE` first, then as a script, as Lua's REPL does. Default false.
    #[serde(default)]
    pub expression: bool,
}

/// `resume_lua`'s arguments: the answer to a suspended run's pending call, exactly one of
/// `answer` and `error`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeLua {
    /// The id run_lua gave the suspended run (`error.value.run`).
    pub run_id: String,
    /// The pending call's result, as the host tool would have returned it (any JSON).
    #[serde(default)]
    pub answer: Option<Json>,
    /// Refuse the pending call instead: the script gets this message as the tool's error
    /// (which it may catch with pcall).
    #[serde(default)]
    pub error: Option<String>,
}

/// What a user is asked for a deferred call (MCP form elicitation).
#[derive(Debug, Deserialize, JsonSchema)]
struct Approval {
    /// What the call returns to the script: JSON (`{"id": "tx-1"}`, `true`, `42`,
    /// `"text"`), or any other text, which the script gets as a string.
    answer: String,
}
rmcp::elicit_safe!(Approval);

/// `lint_lua`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LintLua {
    /// The Lua 5.4 source to check (it is not run).
    pub code: String,
}

/// `session_exec`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionExec {
    /// The id session_open gave.
    pub session_id: String,
    /// The Lua 5.4 code to run in the session's state.
    pub code: String,
    /// Any JSON value: the chunk's vararg (`local input = ...`). JSON null is nil.
    /// Absent: nil.
    #[serde(default)]
    pub input: Json,
    /// A shorter deadline for this request than the session's, e.g. `"200ms"` (a
    /// longer one is the session's own).
    #[serde(default)]
    pub timeout: Option<String>,
    /// A smaller instruction budget for this request than the session's.
    #[serde(default)]
    pub instructions: Option<u64>,
}

/// `session_eval`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionEval {
    /// The id session_open gave.
    pub session_id: String,
    /// A Lua expression (`count`, `#queue`), or a statement.
    pub code: String,
    /// A shorter deadline for this request than the session's, e.g. `"200ms"` (a
    /// longer one is the session's own).
    #[serde(default)]
    pub timeout: Option<String>,
    /// A smaller instruction budget for this request than the session's.
    #[serde(default)]
    pub instructions: Option<u64>,
}

/// `session_call`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCall {
    /// The id session_open gave.
    pub session_id: String,
    /// The function's name: global (`compute`) or dotted (`M.f`).
    pub function: String,
    /// The arguments, in order, as JSON (null is nil). Absent: none.
    #[serde(default)]
    pub args: Option<Vec<Json>>,
    /// A shorter deadline for this request than the session's, e.g. `"200ms"` (a
    /// longer one is the session's own).
    #[serde(default)]
    pub timeout: Option<String>,
    /// A smaller instruction budget for this request than the session's.
    #[serde(default)]
    pub instructions: Option<u64>,
}

/// `session_close`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionClose {
    /// The id session_open gave.
    pub session_id: String,
}

/// A moonjail MCP server for one connection: the tools `run_lua`, `lint_lua`, `session_open`,
/// `session_exec`, `session_eval`, `session_call` and `session_close` over one
/// [`Sandbox`]. Its sessions belong to it, and close when it is dropped (when the
/// connection ends). Serve it with [`Server::serve_stdio`], or with any rmcp transport
/// (it is an [`rmcp::ServerHandler`]).
pub struct Server {
    sandbox: Arc<Sandbox>,
    sessions: Sessions,
    suspended: Suspended,
    ask_timeout: Duration,
    instructions: String,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("sandbox", &self.sandbox)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    sandbox: Sandbox,
    notes: Vec<String>,
    max_sessions: usize,
    max_suspended: usize,
    ask_timeout: Duration,
}

impl ServerBuilder {
    /// Adds a sentence to the tool descriptions about how the sandbox is configured
    /// that the sandbox cannot tell (`"Each run happens in a locked-down worker
    /// process."`, where `require` finds modules). By default, none.
    pub fn note(mut self, sentence: impl Into<String>) -> Self {
        self.notes.push(sentence.into());
        self
    }

    /// Sets how many sessions a connection may keep open at once; `session_open` past
    /// it fails with a message saying so. By default, [`DEFAULT_MAX_SESSIONS`].
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Sets how many runs a connection may keep waiting at a deferred call, for
    /// `resume_lua` or for the user's answer together (each holds a live state); one more
    /// ends as `suspended`, with no id to resume it by. By default,
    /// [`DEFAULT_MAX_SUSPENDED`].
    pub fn max_suspended(mut self, max: usize) -> Self {
        self.max_suspended = max;
        self
    }

    /// Sets how long a user is given to answer a deferred call (MCP elicitation); past
    /// it, the script gets the tool's error. By default, [`DEFAULT_ASK_TIMEOUT`].
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// The server, its tool descriptions generated from the sandbox and the notes.
    pub fn build(self) -> Server {
        let descriptions = Descriptions::new(&Facts {
            sandbox: &self.sandbox,
            notes: &self.notes,
            max_sessions: self.max_sessions,
            max_suspended: self.max_suspended,
        });
        let mut tool_router = Server::tool_router();
        // resume_lua answers deferred calls: without deferred tools there are none.
        if !has_deferred(&self.sandbox) {
            tool_router.map.remove("resume_lua");
        }
        for route in tool_router.map.values_mut() {
            if let Some(text) = descriptions.of(&route.attr.name) {
                route.attr.description = Some(text.to_string().into());
            }
        }
        Server {
            sandbox: Arc::new(self.sandbox),
            sessions: Sessions::new(self.max_sessions),
            suspended: Suspended::new(self.max_suspended),
            ask_timeout: self.ask_timeout,
            instructions: descriptions.instructions,
            tool_router,
        }
    }
}

impl Descriptions {
    /// The generated description of the tool `name`.
    fn of(&self, name: &str) -> Option<&str> {
        Some(match name {
            "run_lua" => &self.run_lua,
            "resume_lua" => &self.resume_lua,
            "lint_lua" => &self.lint_lua,
            "session_open" => &self.session_open,
            "session_exec" => &self.session_exec,
            "session_eval" => &self.session_eval,
            "session_call" => &self.session_call,
            "session_close" => &self.session_close,
            _ => return None,
        })
    }
}

impl Server {
    /// A builder for a server over `sandbox`.
    pub fn builder(sandbox: Sandbox) -> ServerBuilder {
        ServerBuilder {
            sandbox,
            notes: Vec::new(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_suspended: DEFAULT_MAX_SUSPENDED,
            ask_timeout: DEFAULT_ASK_TIMEOUT,
        }
    }

    /// The tools this server lists, with their generated descriptions and input
    /// schemas, sorted by name.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }
}

#[tool_router]
impl Server {
    /// Run a Lua 5.4 script in a fresh sandbox.
    #[tool(name = "run_lua")]
    async fn run_lua(
        &self,
        peer: Peer<RoleServer>,
        cancel: CancellationToken,
        Parameters(args): Parameters<RunLua>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let sandbox = Arc::clone(&self.sandbox);
        let options = RunOptions::default().expression(args.expression);
        if !has_deferred(&sandbox) {
            let outcome = blocking(move || Ok(sandbox.run_with(args.code, &args.input, &options)))
                .await
                .unwrap_or_else(Outcome::from_error);
            return Ok(render::outcome(&outcome));
        }
        let run = blocking(move || Ok(sandbox.start(args.code, &args.input, &options)));
        Ok(self.settle(&peer, &cancel, run).await)
    }

    /// Answer the deferred call a suspended run waits at, and let it go on.
    #[tool(name = "resume_lua")]
    async fn resume_lua(
        &self,
        peer: Peer<RoleServer>,
        cancel: CancellationToken,
        Parameters(args): Parameters<ResumeLua>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let answer = match (args.answer, args.error) {
            (Some(answer), None) => Ok(answer),
            (None, Some(message)) => Err(ToolError::new(message)),
            (Some(_), Some(_)) => {
                return Ok(render::refused(
                    "resume_lua takes `answer` or `error`, not both",
                ))
            }
            (None, None) => {
                return Ok(render::refused(
                    "resume_lua needs `answer` (the pending call's result) or `error` (a \
                     message the script gets as the tool's error)",
                ))
            }
        };
        let Some(run) = self.suspended.take(&args.run_id) else {
            return Ok(render::refused(format!(
                "no suspended run {:?} on this connection: an id answers one pending call \
                 (a run that stops again gets a new id), and runs end with the connection",
                args.run_id
            )));
        };
        let run = blocking(move || Ok(run.resume(answer)));
        Ok(self.settle(&peer, &cancel, run).await)
    }

    /// Check a Lua script against this sandbox without running it.
    #[tool(name = "lint_lua")]
    async fn lint_lua(
        &self,
        Parameters(args): Parameters<LintLua>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let sandbox = Arc::clone(&self.sandbox);
        // Linting a large source is the host's CPU: off the async threads, like a run.
        let report = tokio::task::spawn_blocking(move || sandbox.lint(args.code)).await;
        Ok(match report {
            Ok(report) => render::lint(&report),
            Err(e) => render::outcome(&Outcome::from_error(Error::new(
                ErrorKind::Internal,
                format!("the lint's thread failed: {e}"),
            ))),
        })
    }

    /// Open a persistent Lua session.
    #[tool(name = "session_open")]
    async fn session_open(&self) -> Result<CallToolResult, rmcp::ErrorData> {
        Ok(match self.sessions.open(&self.sandbox).await {
            Ok(id) => {
                let mut result = CallToolResult::structured(json!({ "session_id": id }));
                result.content = vec![rmcp::model::ContentBlock::text(format!(
                    "session {id} is open: pass \"session_id\": \"{id}\" to session_exec, \
                     session_eval, session_call and session_close"
                ))];
                result
            }
            Err(refusal) => refused(refusal),
        })
    }

    /// Run Lua code in a session.
    #[tool(name = "session_exec")]
    async fn session_exec(
        &self,
        Parameters(args): Parameters<SessionExec>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let SessionExec {
            session_id,
            code,
            input,
            timeout,
            instructions,
        } = args;
        Ok(self
            .on_session(&session_id, timeout, instructions, move |s, options| {
                s.exec_with(code, &input, options)
            })
            .await)
    }

    /// The value of an expression in a session.
    #[tool(name = "session_eval")]
    async fn session_eval(
        &self,
        Parameters(args): Parameters<SessionEval>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let SessionEval {
            session_id,
            code,
            timeout,
            instructions,
        } = args;
        Ok(self
            .on_session(&session_id, timeout, instructions, move |s, options| {
                s.eval(code, options)
            })
            .await)
    }

    /// Call a function of a session.
    #[tool(name = "session_call")]
    async fn session_call(
        &self,
        Parameters(args): Parameters<SessionCall>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let SessionCall {
            session_id,
            function,
            args,
            timeout,
            instructions,
        } = args;
        let args = args.unwrap_or_default();
        Ok(self
            .on_session(&session_id, timeout, instructions, move |s, options| {
                s.call_with(&function, &args, options)
            })
            .await)
    }

    /// Close a session.
    #[tool(name = "session_close")]
    async fn session_close(
        &self,
        Parameters(args): Parameters<SessionClose>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        Ok(match self.sessions.close(&args.session_id) {
            Ok(()) => {
                let mut result = CallToolResult::structured(json!({ "closed": args.session_id }));
                result.content = vec![rmcp::model::ContentBlock::text(format!(
                    "session {} is closed",
                    args.session_id
                ))];
                result
            }
            Err(refusal) => refused(refusal),
        })
    }
}

impl Server {
    /// A run to its end: each deferred call it stops at is put to the user when the client
    /// can ask (MCP form elicitation), and the run goes on with the answer; otherwise the
    /// run is held for `resume_lua` and its outcome (kind `suspended`) names the pending
    /// call and the id to answer it by. A call the client cancels gives its run up where
    /// it waits (a run still executing ends first, on its own thread), and is never held.
    async fn settle(
        &self,
        peer: &Peer<RoleServer>,
        cancel: &CancellationToken,
        run: impl std::future::Future<Output = Result<Run, Error>>,
    ) -> CallToolResult {
        let mut run = tokio::select! {
            run = run => run,
            () = cancel.cancelled() => return render::refused(CANCELLED),
        };
        loop {
            let suspension = match run {
                Err(e) => return render::outcome(&Outcome::from_error(e)),
                Ok(Run::Finished(outcome)) => return render::outcome(&outcome),
                Ok(Run::Suspended(suspension)) => Waiting(Some(Box::new(suspension))),
            };
            let asking = match suspension.0.as_deref() {
                Some(s) if can_ask(peer) => self
                    .suspended
                    .begin_asking()
                    .map(|turn| (turn, s.pending().clone())),
                _ => None,
            };
            let answer = match asking {
                Some((_turn, pending)) => match ask(peer, &pending, self.ask_timeout, cancel).await
                {
                    Asked::Answer(answer) => Some(answer),
                    Asked::CannotAsk => None,
                    // `suspension` is given up as it drops, on a blocking thread.
                    Asked::Cancelled => return render::refused(CANCELLED),
                },
                None => None,
            };
            let Some(answer) = answer else {
                if cancel.is_cancelled() {
                    return render::refused(CANCELLED);
                }
                return self.hold(suspension).await;
            };
            let mut suspension = suspension;
            let Some(held) = suspension.0.take() else {
                return render::refused("the suspended run is gone");
            };
            let resumed = blocking(move || Ok(held.resume(answer)));
            run = tokio::select! {
                run = resumed => run,
                () = cancel.cancelled() => return render::refused(CANCELLED),
            };
        }
    }

    /// Holds a suspended run for `resume_lua`: its outcome, with the id in
    /// `error.value.run` and the text saying how to answer. With no place left, the run
    /// is given up instead, and its outcome (output and statistics so far) says why.
    async fn hold(&self, mut waiting: Waiting) -> CallToolResult {
        let Some(run) = waiting.0.take() else {
            return render::refused("the suspended run is gone");
        };
        let mut outcome = run.outcome();
        match self.suspended.hold(run) {
            Ok(id) => render::suspended(&mut outcome, Some(&id), self.suspended.max()),
            Err(run) => {
                let mut outcome = blocking(move || Ok(run.abandon()))
                    .await
                    .unwrap_or_else(Outcome::from_error);
                render::suspended(&mut outcome, None, self.suspended.max())
            }
        }
    }

    /// One session request: its own limits (`timeout`, `instructions`: lower than the
    /// session's, never higher) parsed, then `op` run on the session's thread.
    async fn on_session(
        &self,
        id: &str,
        timeout: Option<String>,
        instructions: Option<u64>,
        op: impl FnOnce(&mut moonjail::Session, &CallOptions) -> Outcome + Send + 'static,
    ) -> CallToolResult {
        let options = match CallOptions::parse(timeout.as_deref(), instructions) {
            Ok(options) => options,
            Err(moonjail::ConfigError::InvalidLimit { name, reason }) => {
                return render::refused(format!("{name}: {reason}"))
            }
            Err(e) => return render::refused(format!("timeout: {e}")),
        };
        answered(self.sessions.request(id, move |s| op(s, &options)).await)
    }
}

/// What a cancelled call answers (rmcp sends no response to a cancelled request; this
/// is for a transport that would).
const CANCELLED: &str = "the client cancelled the call: its run was given up";

/// Whether a sandbox declares deferred tools (suspending runs).
fn has_deferred(sandbox: &Sandbox) -> bool {
    sandbox
        .tools()
        .is_some_and(|t| t.deferred().next().is_some())
}

/// `f` on a blocking thread (runs and resumes wait on the VM or a worker).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::new(
            ErrorKind::Internal,
            format!("the run's thread failed: {e}"),
        ))
    })
}

/// A suspended run on its way to an answer. Giving it up (a cancelled request, a full
/// table) may wait for its thread, so it is given up off the async threads
/// ([`crate::suspended::give_up`]).
struct Waiting(Option<Box<Suspension>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            crate::suspended::give_up(vec![run]);
        }
    }
}

/// Whether the client can put a question to its user: form elicitation, declared at
/// initialization, on a protocol that still allows server-to-client requests.
fn can_ask(peer: &Peer<RoleServer>) -> bool {
    peer.supported_elicitation_modes()
        .contains(&ElicitationMode::Form)
}

/// What putting a deferred call to the user gave.
enum Asked {
    /// Their answer (JSON, or text as a string), or the tool error the script gets when
    /// they decline, dismiss or do not answer in time.
    Answer(Result<Json, ToolError>),
    /// The client cannot ask after all (its protocol forbids server-to-client requests,
    /// or the connection failed): the run is held for `resume_lua`.
    CannotAsk,
    /// The tool call that asked was cancelled: the question was withdrawn.
    Cancelled,
}

/// Puts the `pending` call to the user (MCP form elicitation). rmcp's
/// `elicit_with_timeout` would do the asking, but a question it asked cannot be
/// withdrawn: a `run_lua` the client cancels would leave its user looking at a form
/// nobody waits for. The request is sent here so that its id is known, and a
/// cancellation sends `notifications/cancelled` for it.
async fn ask(
    peer: &Peer<RoleServer>,
    pending: &Pending,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Asked {
    let call = render::call(&pending.name, &pending.args);
    let message = format!(
        "A Lua script asks to call {call}. Give the answer the call returns to the \
         script (JSON, or plain text, which the script gets as a string) to let it go on, \
         or decline to refuse the call (the script gets an error)."
    );
    let name = &pending.name;
    let Ok(schema) = ElicitationSchema::from_type::<Approval>() else {
        return Asked::CannotAsk;
    };
    let request = ServerRequest::ElicitRequest(ElicitRequest::new(
        ElicitRequestParams::FormElicitationParams {
            meta: None,
            message,
            requested_schema: schema,
        },
    ));
    let mut options = PeerRequestOptions::no_options();
    options.timeout = Some(timeout);
    let sent = tokio::select! {
        sent = peer.send_cancellable_request(request, options) => sent,
        () = cancel.cancelled() => return Asked::Cancelled,
    };
    let handle = match sent {
        Ok(handle) => handle,
        Err(e) => {
            tracing::debug!("elicitation failed: {e}");
            return Asked::CannotAsk;
        }
    };
    let id = handle.id.clone();
    let response = tokio::select! {
        response = handle.await_response() => response,
        () = cancel.cancelled() => {
            let withdrawn = CancelledNotificationParam::new(
                Some(id),
                Some("the tool call that asked was cancelled".to_string()),
            );
            if let Err(e) = peer.notify_cancelled(withdrawn).await {
                tracing::debug!("withdrawing the elicitation failed: {e}");
            }
            return Asked::Cancelled;
        }
    };
    let refused = |why: &str| Asked::Answer(Err(ToolError::new(format!("the user {why}"))));
    match response {
        Ok(ClientResult::ElicitResult(result)) => {
            match result.action {
                ElicitationAction::Accept => {
                    let content = result.content.unwrap_or(Json::Null);
                    match serde_json::from_value::<Approval>(content.clone()) {
                        Ok(Approval { answer }) => Asked::Answer(Ok(
                            serde_json::from_str(&answer).unwrap_or(Json::String(answer))
                        )),
                        // A client that sent the answer as a JSON value rather than the
                        // text asked for.
                        Err(_) if content.get("answer").is_some_and(|a| !a.is_null()) => {
                            Asked::Answer(Ok(content["answer"].clone()))
                        }
                        Err(_) => refused(&format!(
                            "accepted the call to {name} without giving its answer"
                        )),
                    }
                }
                ElicitationAction::Decline => refused(&format!("declined the call to {name}")),
                // Cancel, and any action a later protocol adds.
                _ => refused(&format!("dismissed the call to {name} without answering")),
            }
        }
        Err(ServiceError::Timeout { .. }) => refused(&format!(
            "did not answer the call to {name} within {}",
            moonjail::units::format_duration(timeout)
        )),
        Ok(other) => {
            tracing::debug!("the client answered an elicitation with {other:?}");
            refused(&format!(
                "accepted the call to {name} without giving its answer"
            ))
        }
        Err(e) => {
            tracing::debug!("elicitation failed: {e}");
            Asked::CannotAsk
        }
    }
}

/// A session request's tool result.
fn answered(answer: Result<Outcome, Refusal>) -> CallToolResult {
    match answer {
        Ok(outcome) => render::outcome(&outcome),
        Err(refusal) => refused(refusal),
    }
}

fn refused(refusal: Refusal) -> CallToolResult {
    match refusal {
        // Opening failed for a reason of its own kind (memory_limit, internal).
        Refusal::Open(mut e) => {
            e.message = format!("the session could not be opened: {}", e.message);
            render::outcome(&Outcome::from_error(e))
        }
        other => render::refused(other.to_string()),
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("moonjail", env!("CARGO_PKG_VERSION"))
                    .with_title("moonjail: a Lua 5.4 sandbox"),
            )
            .with_instructions(self.instructions.clone())
    }
}
