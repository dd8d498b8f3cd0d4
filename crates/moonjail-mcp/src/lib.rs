//! moonjail as a Model Context Protocol server: any MCP client gets a Lua 5.4 sandbox
//! as tools, over stdio, on the official Rust SDK (`rmcp`).
//!
//! The tools: `run_lua` runs one script in a fresh state; `session_open`,
//! `session_exec`, `session_eval`, `session_call` and `session_close` keep a state
//! between calls, for as long as the connection lasts. Every result carries the outcome
//! document of `moonjail run --json` as structured content, and a text rendering for the
//! model (on failure: kind, message, line, traceback, hint). The descriptions of the
//! tools are generated from the sandbox: its profile, its limits, and the host tools its
//! scripts can call, from the same catalogue as `moonjail tools`.
//!
//! A failed script is a *successful* call whose result is a tool error (`isError:
//! true`): MCP means tool errors for the model to read and correct, and keeps protocol
//! errors for requests that could not be routed. Malformed arguments are tool errors
//! too (rmcp reports argument errors so), naming the field.
//!
//! ```no_run
//! use std::time::Duration;
//! use moonjail::Sandbox;
//!
//! let sandbox = Sandbox::builder().timeout(Duration::from_secs(2)).build()?;
//! // Serves stdin/stdout until the client goes away.
//! moonjail_mcp::Server::builder(sandbox).build().serve_stdio()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod describe;
mod render;
mod server;
mod sessions;
mod suspended;

pub use server::{
    ResumeLua, RunLua, Server, ServerBuilder, SessionCall, SessionClose, SessionEval, SessionExec,
    DEFAULT_ASK_TIMEOUT, DEFAULT_MAX_SESSIONS,
};
pub use suspended::DEFAULT_MAX_SUSPENDED;

/// Why serving stopped short of the client's leaving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The async runtime could not be built.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The MCP session could not start (the client's `initialize` never came, or was
    /// not one).
    #[error("starting the MCP session: {0}")]
    Initialize(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while serving.
    #[error("serving MCP: {0}")]
    Serve(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The result of serving.
pub type Result<T> = std::result::Result<T, Error>;

impl Server {
    /// Serves this server on stdin and stdout until the client closes the connection
    /// (stdin's end), on a runtime of its own. Stdout carries the protocol and nothing
    /// else; logs go through `tracing`, which the caller points at stderr.
    ///
    /// # Errors
    /// [`Error::Runtime`] if the runtime cannot start, [`Error::Initialize`] if the
    /// client's handshake fails, [`Error::Serve`] if the connection fails.
    pub fn serve_stdio(self) -> Result<()> {
        use rmcp::ServiceExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let served = runtime.block_on(async {
            let service = self
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| Error::Initialize(Box::new(e)))?;
            service
                .waiting()
                .await
                .map(drop)
                .map_err(|e| Error::Serve(Box::new(e)))
        });
        // A run still going on a blocking thread ends at its own deadline; the client
        // is gone, so nobody waits for it.
        runtime.shutdown_background();
        served
    }
}
