//! `moonjail mcp`: the sandbox the flags describe, served to an MCP client over stdio. A
//! thin shell over `moonjail_mcp::Server`: build the sandbox, tell the server what the
//! sandbox cannot say about itself, serve until the client goes away.

use std::process::ExitCode;

use clap::Args;

use anyhow::Context as _;

use crate::args::{duration, SandboxArgs};

#[derive(Args, Debug)]
pub struct McpArgs {
    /// How many sessions (session_open) the client may keep open at once; one more is
    /// refused with a message saying so, until one is closed.
    #[arg(long, value_name = "N", default_value_t = moonjail_mcp::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    /// With --defer-tool: how long the user is given to answer a deferred call when the
    /// client can ask them (MCP elicitation); past it the script gets the tool's error.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub ask_timeout: String,
    /// With --defer-tool: runs the client may keep waiting at a deferred call, for its
    /// user's answer or for resume_lua (a client that cannot ask); each holds a live Lua
    /// state (isolated, its own worker process). A run that stops past it ends there, as
    /// suspended.
    #[arg(long, value_name = "N", default_value_t = moonjail_mcp::DEFAULT_MAX_SUSPENDED)]
    pub max_suspended: usize,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Serves MCP on stdin/stdout until the client closes stdin.
pub fn mcp(args: McpArgs) -> anyhow::Result<ExitCode> {
    let ask_timeout = duration(&args.ask_timeout)
        .context("--ask-timeout")?
        .context("--ask-timeout: a timeout is required")?;
    let sandbox = args.sandbox.build(false, false)?;
    let mut server = moonjail_mcp::Server::builder(sandbox)
        .max_sessions(args.max_sessions)
        .max_suspended(args.max_suspended)
        .ask_timeout(ask_timeout);
    for note in notes(&args.sandbox) {
        server = server.note(note);
    }
    server.build().serve_stdio()?;
    Ok(ExitCode::SUCCESS)
}

/// What the tool descriptions should say about flags the sandbox cannot describe
/// itself. Host paths are not named: the model needs the behaviour, not the layout.
fn notes(flags: &SandboxArgs) -> Vec<String> {
    let mut notes = Vec::new();
    if flags.isolate {
        notes.push(
            "Each run and each session runs in a locked-down worker process (namespaces, \
             seccomp, Landlock), killed at its deadline."
                .to_string(),
        );
    }
    if flags.modules.is_some() {
        notes.push("`require(\"name\")` loads the host's Lua modules.".to_string());
    }
    if !flags.read.is_empty() {
        notes.push(format!(
            "io.open can read (only) these files: {}.",
            flags.read.join(", ")
        ));
    }
    if flags.diagnostic {
        notes.push(
            "Outcomes include `diagnostics`: the globals read and written, library members \
             used, missing globals and requires."
                .to_string(),
        );
    }
    notes
}
