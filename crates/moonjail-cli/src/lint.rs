//! `moonjail lint`: check a script against the sandbox `run` would give it, without
//! running it. Human output in the style of rustc and selene (`file:line:col:
//! severity[rule]: message`, the source line, a caret under the span, `help:`), or one
//! JSON document.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use moonjail::{LintReport, Severity};
use serde_json::json;

use crate::args::{self, SandboxArgs};
use crate::output;
use crate::run::read_script;

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The script to check; `-` reads it from standard input.
    #[arg(
        value_name = "FILE|-",
        required_unless_present = "code",
        conflicts_with = "code"
    )]
    pub file: Option<PathBuf>,
    /// Check CODE instead of a file.
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    pub code: Option<String>,
    /// The script must define a global function `run` (as `run --require-run`).
    #[arg(long)]
    pub require_run: bool,
    /// Print one JSON document: {"file", "ok", "errors", "warnings", "findings": [{"rule",
    /// "severity", "line", "column", "end_line", "end_column", "message", "suggestion"}],
    /// "manifest"}. A misuse (status 2) is the document of `run --json`, kind "input".
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Lints once and prints the report: status 0 without error findings, 1 with.
pub fn lint(args: LintArgs) -> anyhow::Result<ExitCode> {
    // A file over the source limit is a misuse, as for `run`; `-e CODE` over it is a
    // `source-limit` finding, as `run` would refuse it.
    let limit = args::size(&args.sandbox.source_limit).context("--source-limit")?;
    let (source, name) = read_script(args.code.as_deref(), args.file.as_deref(), limit)?;
    let sandbox = args.sandbox.build(args.require_run, false)?;
    let report = sandbox.lint(&source);
    let mut stdout = output::stdout();
    if args.json {
        let doc = document(&name, &report);
        writeln!(stdout, "{}", moonjail::to_json_line(&doc))?;
    } else {
        print_findings(&name, &source, &report, &mut stdout)?;
    }
    stdout.flush()?;
    Ok(if report.has_errors() {
        ExitCode::from(crate::FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The `--json` document.
pub fn document(name: &str, report: &LintReport) -> serde_json::Value {
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    json!({
        "file": name,
        "ok": !report.has_errors(),
        "errors": count(Severity::Error),
        "warnings": count(Severity::Warning),
        "findings": report.findings,
        "manifest": report.manifest,
    })
}

/// The findings as rustc prints diagnostics, then a count.
pub fn print_findings(
    name: &str,
    source: &[u8],
    report: &LintReport,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(source);
    let lines: Vec<&str> = text.split('\n').collect();
    for f in &report.findings {
        writeln!(
            out,
            "{name}:{}:{}: {}[{}]: {}",
            f.line, f.column, f.severity, f.rule, f.message
        )?;
        let index = usize::try_from(f.line)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        if let Some(line) = lines.get(index) {
            let line = line.trim_end_matches('\r');
            // A byte order mark is not part of what a reader sees.
            let line = if index == 0 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            let number = f.line.to_string();
            let pad = " ".repeat(number.len());
            writeln!(out, "{number} | {line}")?;
            let start = usize::try_from(f.column).unwrap_or(1).saturating_sub(1);
            let width = line.chars().count();
            let end = if f.end_line == f.line {
                usize::try_from(f.end_column).unwrap_or(1).saturating_sub(1)
            } else {
                width
            };
            // Tabs stay tabs under the line, so the caret lines up whatever the tab width.
            let lead: String = line
                .chars()
                .take(start)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let carets = "^".repeat(end.saturating_sub(start).max(1));
            writeln!(out, "{pad} | {lead}{carets}")?;
            if let Some(s) = &f.suggestion {
                writeln!(out, "{pad} = help: {s}")?;
            }
        } else if let Some(s) = &f.suggestion {
            writeln!(out, "  = help: {s}")?;
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if report.findings.is_empty() {
        writeln!(out, "{name}: no findings")?;
    } else {
        writeln!(
            out,
            "{name}: {errors} error{}, {warnings} warning{}, {} note{}",
            plural(errors),
            plural(warnings),
            count(Severity::Info),
            plural(count(Severity::Info))
        )?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
