//! `moonjail mcp`: the sandbox the flags describe, served to an MCP client over stdio. A
//! thin shell over `moonjail_mcp::Server`: build the sandbox, tell the server what the
//! sandbox cannot say about itself, serve until the client goes away.

use std::process::ExitCode;

use clap::Args;

use crate::args::SandboxArgs;

#[derive(Args, Debug)]
pub struct McpArgs {
    /// How many sessions (session_open) the client may keep open at once; one more is
    /// refused with a message saying so, until one is closed.
    #[arg(long, value_name = "N", default_value_t = moonjail_mcp::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Serves MCP on stdin/stdout until the client closes stdin.
pub fn mcp(args: McpArgs) -> anyhow::Result<ExitCode> {
    args.sandbox.refuse_deferred("mcp")?;
    let sandbox = args.sandbox.build(false, false)?;
    let mut server = moonjail_mcp::Server::builder(sandbox).max_sessions(args.max_sessions);
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
