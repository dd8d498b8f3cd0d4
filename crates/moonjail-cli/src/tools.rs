//! `moonjail tools`: the catalogue of the tools a script would get with the same sandbox
//! flags, for a person, as JSON, or as LuaLS stubs to paste into a model's prompt. A thin
//! shell over `Sandbox::tool_catalogue`.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::args::SandboxArgs;
use crate::output;

#[derive(Args, Debug)]
pub struct ToolsArgs {
    /// Print one JSON document: {"tools": [{"name", "kind", "description", "parameters",
    /// "returns"}]}, sorted by name ("kind" is "function" or "value"; a missing
    /// description or schema is null). A misuse (status 2) is the document of
    /// `run --json`, error kind "input".
    #[arg(long, conflicts_with = "lua_stubs")]
    pub json: bool,
    /// Print LuaLS annotation stubs (---@meta, ---@class per object schema, ---@param,
    /// ---@return, a function per tool), ready to paste into a prompt.
    #[arg(long)]
    pub lua_stubs: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Prints the catalogue of the sandbox the flags describe.
pub fn tools(args: ToolsArgs) -> anyhow::Result<ExitCode> {
    let sandbox = args.sandbox.build(false, false)?;
    let catalogue = sandbox.tool_catalogue();
    let mut out = output::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&catalogue)?)?;
    } else if args.lua_stubs {
        write!(out, "{}", catalogue.lua_stubs())?;
    } else if catalogue.tools.is_empty() {
        writeln!(
            out,
            "no tools: add --tool NAME=COMMAND or --allow-http HOST (the {} profile has no json library)",
            sandbox.profile().name()
        )?;
    } else {
        write!(out, "{}", catalogue.to_text())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
