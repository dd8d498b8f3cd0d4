//! `moonjail check`: a profile's environment checklist, run inside the real sandbox.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use crate::args::SandboxArgs;
use crate::output;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print one JSON document: {"profile", "ok", "items": [{"name", "pass", "detail"}]}.
    /// A misuse (status 2) is the document of `run --json`, error kind "input".
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Runs the checklist in the sandbox the flags describe; status 1 when an item fails.
pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let sandbox = args.sandbox.build(false, false)?;
    let results = sandbox.check()?;
    let ok = results.iter().all(|r| r.pass);
    let mut out = output::stdout();
    if args.json {
        let doc = serde_json::json!({
            "profile": sandbox.profile().name(),
            "ok": ok,
            "items": results,
        });
        writeln!(out, "{}", moonjail::to_json_line(&doc))?;
    } else {
        for r in &results {
            let mark = if r.pass { "pass" } else { "FAIL" };
            match &r.detail {
                Some(d) => writeln!(out, "{mark}  {}  ({d})", r.name)?,
                None => writeln!(out, "{mark}  {}", r.name)?,
            }
        }
        let failed = results.iter().filter(|r| !r.pass).count();
        writeln!(
            out,
            "\n{} items, {} passed, {failed} failed (profile {})",
            results.len(),
            results.len() - failed,
            sandbox.profile().name()
        )?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::FAILED)
    })
}
