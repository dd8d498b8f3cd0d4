//! `moonjail run`: one script, one fresh sandbox.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use moonjail::{Diagnostics, RunOptions};

use crate::args::{self, SandboxArgs};
use crate::backstop;
use crate::output;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The script to run; `-` reads it from standard input.
    #[arg(
        value_name = "FILE|-",
        required_unless_present = "code",
        conflicts_with = "code"
    )]
    pub file: Option<PathBuf>,
    /// Run CODE instead of a file. As in Lua's REPL, CODE may be an expression: it is
    /// tried as `return CODE` first, so `-e '1 + 1'` prints 2 and `-e 'x = 1'` still
    /// runs as a statement.
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    pub code: Option<String>,
    /// The input, as JSON text or @FILE. Default: null.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,
    /// Limit on the input's size (inline or @FILE, which is read no further); `none` for
    /// no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub input_limit: String,
    /// Fail if the script defines no global function `run`.
    #[arg(long)]
    pub require_run: bool,
    /// Fail if the result is not a table.
    #[arg(long)]
    pub require_table: bool,
    /// Lint the script against the sandbox first (see `moonjail lint`): a script with
    /// error findings is not run, and fails with error kind "lint" (its findings under
    /// "lint" in --json); warnings are printed on stderr (under "lint" in --json) and the
    /// script runs.
    #[arg(long)]
    pub lint: bool,
    /// Print one JSON document: {"ok", "result", "results", "output",
    /// "output_truncated", "error", "stats"}. A misuse (status 2) is one such document
    /// too, error kind "input".
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Print the result only, for shells: a string as is (no quotes, one newline after
    /// it), anything else as compact JSON, nothing for nil. The script's own output is
    /// not printed. A failure is reported on stderr (status 1).
    #[arg(long)]
    pub raw: bool,
    /// Record the run into a journal (JSON lines, see docs/JOURNAL.md): the spec, the
    /// source, the input, the time and seed, every tool call with its answer, every
    /// module and file read with its content, and the outcome. `moonjail replay FILE`
    /// re-executes it without calling a tool or reading a file. Without --deterministic
    /// the run is made deterministic with the current time and a fresh seed, both
    /// recorded (os.time() does not advance during the run, os.clock() is 0).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// With --journal: the journal's size limit; a run whose journal would pass it is
    /// stopped (status 2, the journal left without its "end" line). `none` for no limit.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "16MiB",
        requires = "journal"
    )]
    pub journal_limit: String,
    /// With --journal: when the journal's lines are written. `line`: each as it is
    /// recorded, before the script gets the answer it records (if moonjail dies, the
    /// journal holds every answer the script saw). `batch`: gathered in memory and written
    /// once 64 KiB have gathered, with the first line recorded 100 ms or more after the
    /// last write, and at the end (for runs making many quick tool calls; if moonjail
    /// dies, the lines since the last write are lost, however old). Either way the end
    /// (or suspend) line is written and fsynced at once.
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "line",
        requires = "journal"
    )]
    pub journal_flush: JournalFlush,
    /// With --journal: when the journal is fsynced. `end` (the default): after the end
    /// line, before moonjail exits, and after a suspend line (a finished run's journal
    /// survives a crash of the machine). `suspend`: only after a suspend line (the
    /// journal a resume needs is on disk either way); a finished run's journal is
    /// written and flushed to the operating system, which keeps it if moonjail dies but
    /// not if the machine crashes, and the run saves a disk flush (about 0.4 ms on ext4
    /// here).
    #[arg(long, value_name = "WHEN", default_value = "end", requires = "journal")]
    pub journal_fsync: JournalFsync,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `--journal-fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalFsync {
    End,
    Suspend,
}

/// `--journal-flush`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum JournalFlush {
    Line,
    Batch,
}

impl From<JournalFlush> for moonjail::Flush {
    fn from(flush: JournalFlush) -> Self {
        match flush {
            JournalFlush::Line => moonjail::Flush::Line,
            JournalFlush::Batch => moonjail::Flush::Batch,
        }
    }
}

/// Reads the script and the input (each under its limit), runs once, prints the outcome;
/// status 1 when the script failed.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source_limit = args::size(&args.sandbox.source_limit).context("--source-limit")?;
    let journal_limit = args::size(&args.journal_limit).context("--journal-limit")?;
    let input_limit = args::size(&args.input_limit).context("--input-limit")?;
    if !args.sandbox.defer_tool.is_empty() && args.journal.is_none() {
        bail!(
            "--defer-tool: a run suspended at a deferred call is resumed from its journal: \
             give --journal FILE too"
        );
    }
    let (source, name) = read_script(args.code.as_deref(), args.file.as_deref(), source_limit)?;
    let sandbox = args.sandbox.build(args.require_run, args.require_table)?;
    let limits = sandbox.limits().clone();
    let over_input = "the input is over the --input-limit";
    let input: serde_json::Value = match &args.input {
        None => serde_json::Value::Null,
        Some(text) => {
            let bytes: Cow<[u8]> = match text.strip_prefix('@') {
                Some(path) => std::fs::File::open(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|file| read_capped(file, input_limit, over_input))
                    .with_context(|| format!("reading {path}"))?
                    .into(),
                None => match input_limit {
                    Some(limit) if text.len() > limit => {
                        bail!("--input: {over_input} of {limit} bytes")
                    }
                    _ => text.as_bytes().into(),
                },
            };
            // Within the sandbox's depth and memory limits (see moonjail::parse_input).
            moonjail::parse_input(&bytes, &limits)
                .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {}", e.message))?
        }
    };
    // In process, a deadline that cannot be delivered (see backstop.rs) still ends the
    // run, as a timeout, soon after.
    let backstop = match sandbox.limits().timeout {
        Some(timeout) if !args.sandbox.isolate => {
            let (fd, message) = backstop_message(timeout, args.json);
            backstop::Backstop::arm(timeout, fd, message)
        }
        _ => None,
    };
    let options = RunOptions::default()
        .chunk_name(&name)
        .expression(args.code.is_some());
    let report = args.lint.then(|| sandbox.lint(&source));
    let outcome = match report {
        Some(report) if report.has_errors() => {
            if !args.json {
                crate::lint::print_findings(&name, &source, &report, &mut std::io::stderr())?;
            }
            moonjail::Outcome::refused_by_lint(report)
        }
        report => {
            if let Some(report) = report
                .as_ref()
                .filter(|r| !r.findings.is_empty() && !args.json)
            {
                crate::lint::print_findings(&name, &source, report, &mut std::io::stderr())?;
            }
            let mut outcome = match &args.journal {
                Some(path) => {
                    let journal = moonjail::JournalWriter::create(path)
                        .with_context(|| format!("--journal {}", path.display()))?
                        .limit(journal_limit.map(|l| l as u64))
                        .flush(args.journal_flush.into())
                        .fsync_end(args.journal_fsync == JournalFsync::End);
                    let mut outcome = sandbox
                        .run_journaled(&source, &input, &options, journal)
                        .with_context(|| format!("--journal {}", path.display()))?;
                    name_journal(&mut outcome, path);
                    outcome
                }
                None => sandbox.run_with(&source, &input, &options),
            };
            outcome.lint = report;
            outcome
        }
    };
    if let Some(backstop) = backstop {
        if !backstop.settle() {
            // The backstop is ending the process with its own outcome.
            std::thread::sleep(backstop::GRACE);
        }
    }

    print_outcome(&outcome, args.json, args.raw)
}

/// A suspended outcome's pending call also says which journal resumes it.
pub fn name_journal(outcome: &mut moonjail::Outcome, path: &std::path::Path) {
    if let Err(e) = &mut outcome.result {
        if let (moonjail::ErrorKind::Suspended, Some(serde_json::Value::Object(pending))) =
            (e.kind, &mut e.value)
        {
            pending.insert("journal".into(), path.to_string_lossy().into_owned().into());
        }
    }
}

/// Prints `outcome` as `run` does (--json, --raw or for people); status 1 when the script
/// failed, 3 when it is suspended at a deferred tool call.
pub fn print_outcome(
    outcome: &moonjail::Outcome,
    json: bool,
    raw: bool,
) -> anyhow::Result<ExitCode> {
    let mut stdout = output::stdout();
    if json {
        writeln!(stdout, "{}", moonjail::to_json_line(outcome))?;
    } else if raw {
        match &outcome.result {
            Ok(serde_json::Value::Null) => {}
            Ok(serde_json::Value::String(s)) => writeln!(stdout, "{s}")?,
            Ok(v) => writeln!(stdout, "{v}")?,
            Err(e) => report_error(e),
        }
    } else {
        stdout.write_all(outcome.output.as_bytes())?;
        if let Some(d) = &outcome.diagnostics {
            stdout.flush()?;
            output::warn(format_args!("{}", render_diagnostics(d).trim_end()));
        }
        match &outcome.result {
            Ok(_) => {
                let results = outcome.results();
                // One value: as before; several (`return nil, "not found"`): one per
                // line, nil as null, as the REPL lists them.
                if results.len() > 1 || results.first().is_some_and(|v| !v.is_null()) {
                    for v in results {
                        writeln!(stdout, "{}", serde_json::to_string_pretty(v)?)?;
                    }
                }
            }
            Err(e) => {
                stdout.flush()?;
                report_error(e);
            }
        }
    }
    stdout.flush()?;
    Ok(match &outcome.result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.kind == moonjail::ErrorKind::Suspended => ExitCode::from(crate::SUSPENDED),
        Err(_) => ExitCode::from(crate::FAILED),
    })
}

/// The script of `-e CODE`, `-` (standard input) or FILE, read no further than
/// `source_limit`, and the chunk name it runs under.
pub fn read_script(
    code: Option<&str>,
    file: Option<&std::path::Path>,
    source_limit: Option<usize>,
) -> anyhow::Result<(Vec<u8>, String)> {
    let over_source = "the script is over the --source-limit";
    Ok(match (code, file) {
        // Already in memory; the sandbox applies the source limit to it.
        (Some(code), _) => (code.as_bytes().to_vec(), "(command line)".to_string()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let buf = read_capped(std::io::stdin().lock(), source_limit, over_source)
                .context("reading the script from standard input")?;
            (buf, "stdin".to_string())
        }
        (None, Some(path)) => {
            let buf = std::fs::File::open(path)
                .map_err(anyhow::Error::from)
                .and_then(|file| read_capped(file, source_limit, over_source))
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into());
            (buf, name)
        }
        (None, None) => bail!("give a FILE, `-` for standard input, or -e CODE"),
    })
}

/// A failed run on stderr: the kind, the line and the message, then where it happened
/// (the traceback, innermost first) and the hint, if any.
fn report_error(e: &moonjail::Error) {
    if e.kind == moonjail::ErrorKind::Suspended {
        return report_suspension(e);
    }
    let line = e.line.map(|l| format!(" at line {l}")).unwrap_or_default();
    output::warn(format_args!(
        "moonjail: {} error{line}: {}",
        e.kind, e.message
    ));
    if e.traceback.len() > 1 || e.traceback.first().is_some_and(|f| f.function.is_some()) {
        output::warn(format_args!("traceback (innermost first):"));
        for frame in &e.traceback {
            match &frame.function {
                Some(f) => output::warn(format_args!(
                    "  {}:{} in function '{f}'",
                    frame.source, frame.line
                )),
                None => output::warn(format_args!("  {}:{}", frame.source, frame.line)),
            }
        }
    }
    if let Some(hint) = &e.hint {
        output::warn(format_args!("hint: {hint}"));
    }
}

/// What the backstop prints if it has to end the run: the `--json` document or the
/// human error line of a `timeout`, and the descriptor it goes to.
fn backstop_message(timeout: std::time::Duration, json: bool) -> (libc::c_int, Vec<u8>) {
    let message = format!(
        "timeout: the script ran past its {} ms deadline inside work that cannot be \
         interrupted in process (the collector or one huge string comparison); the process \
         ended it {} ms later (use --isolate to contain this)",
        timeout.as_millis(),
        backstop::GRACE.as_millis()
    );
    let error = moonjail::Error::new(moonjail::ErrorKind::Timeout, message);
    if json {
        let mut outcome = moonjail::Outcome::from_error(error);
        outcome.stats.wall = timeout.saturating_add(backstop::GRACE);
        (
            1,
            format!("{}\n", moonjail::to_json_line(&outcome)).into_bytes(),
        )
    } else {
        (
            2,
            format!("moonjail: {} error: {}\n", error.kind, error.message).into_bytes(),
        )
    }
}

/// A readable table of what a run touched (printed on stderr in human mode).
fn render_diagnostics(d: &Diagnostics) -> String {
    let mut out = String::from("-- diagnostics --\n");
    let mut section = |title: &str, map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            return;
        }
        out.push_str(&format!("{title}:\n"));
        for (name, n) in map {
            out.push_str(&format!("  {name:<28} x{n}\n"));
        }
    };
    section("globals read", &d.globals_read);
    section("globals written", &d.globals_written);
    section("library members used", &d.library);
    section("missing (read but never defined)", &d.missing);
    if !d.require.is_empty() {
        out.push_str("require:\n");
        for r in &d.require {
            let found = if r.found { "found" } else { "NOT FOUND" };
            out.push_str(&format!("  {:<28} {found}\n", r.name));
        }
    }
    out
}

/// Reads all of `reader`, or fails as soon as it has given more than `limit` bytes: at
/// most `limit + 1` bytes are ever held, whatever the source (`/dev/zero`, an endless
/// pipe). `over` says what was over which flag.
pub fn read_capped(reader: impl Read, limit: Option<usize>, over: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let max = limit.map_or(u64::MAX, |l| (l as u64).saturating_add(1));
    reader.take(max).read_to_end(&mut buf)?;
    match limit {
        Some(limit) if buf.len() > limit => bail!("{over} of {limit} bytes"),
        _ => Ok(buf),
    }
}

/// A suspended run on stderr: the pending call, and how to resume it.
fn report_suspension(e: &moonjail::Error) {
    let pending = e.value.as_ref();
    let name = pending
        .and_then(|p| p["name"].as_str())
        .unwrap_or("a deferred tool");
    let args = pending
        .and_then(|p| p["args"].as_array())
        .map(|a| {
            a.iter()
                .map(serde_json::Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let line = e.line.map(|l| format!(" at line {l}")).unwrap_or_default();
    output::warn(format_args!(
        "moonjail: suspended{line}: the script called the deferred tool {name}({args}) and waits for its answer"
    ));
    if let Some(journal) = pending.and_then(|p| p["journal"].as_str()) {
        output::warn(format_args!(
            "resume it with: moonjail resume {journal} --answer JSON   (or --error MESSAGE; \
             give the run's --tool, --allow-http, --modules and --read flags again, if it had any)"
        ));
    }
}
