//! The MCP handler: the tools, declared with rmcp's macros (input schemas derived from
//! the parameter types below), their descriptions replaced by the generated ones, each a
//! thin call into the library.

use std::sync::Arc;

use moonjail::{CallOptions, Error, ErrorKind, Outcome, RunOptions, Sandbox};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::describe::{Descriptions, Facts};
use crate::render;
use crate::sessions::{Refusal, Sessions};

/// How many sessions one connection may keep open, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 8;

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

    /// The server, its tool descriptions generated from the sandbox and the notes.
    pub fn build(self) -> Server {
        let descriptions = Descriptions::new(&Facts {
            sandbox: &self.sandbox,
            notes: &self.notes,
            max_sessions: self.max_sessions,
        });
        let mut tool_router = Server::tool_router();
        for route in tool_router.map.values_mut() {
            if let Some(text) = descriptions.of(&route.attr.name) {
                route.attr.description = Some(text.to_string().into());
            }
        }
        Server {
            sandbox: Arc::new(self.sandbox),
            sessions: Sessions::new(self.max_sessions),
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
        Parameters(args): Parameters<RunLua>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let sandbox = Arc::clone(&self.sandbox);
        let run = tokio::task::spawn_blocking(move || {
            let options = RunOptions::default().expression(args.expression);
            sandbox.run_with(args.code, &args.input, &options)
        });
        let outcome = run.await.unwrap_or_else(|e| {
            Outcome::from_error(Error::new(
                ErrorKind::Internal,
                format!("the run's thread failed: {e}"),
            ))
        });
        Ok(render::outcome(&outcome))
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
