//! `moonjail replay`: re-execute a journal written by `run --journal`; `moonjail resume`:
//! continue a run suspended at a deferred tool call.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use moonjail::{Isolation, ProcessConfig, ReplayOptions};

use crate::args::{self, SandboxArgs};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The journal written by `moonjail run --journal FILE`.
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// Replay this script instead of the recorded one (another version of it, to check a
    /// fix against a recorded run): it runs with the recorded input, time, seed and tool
    /// answers, up to the first divergence.
    #[arg(long, value_name = "FILE")]
    pub source: Option<PathBuf>,
    /// Print one JSON document, as `run --json` does.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Print the result only, as `run --raw` does.
    #[arg(long)]
    pub raw: bool,
    /// The largest journal read; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub journal_limit: String,
    /// Replay under whatever limits the journal records, for a journal you trust. By
    /// default a journal whose limits allow more than 60 s, 1 GiB of memory, 16 MiB of
    /// output or of result (or no limit at all) is refused: its limits are its own claim,
    /// and a crafted one could hold this machine for ever.
    #[arg(long)]
    pub trust_limits: bool,
    /// Replay in a locked-down worker process (as `run --isolate`).
    #[arg(long)]
    pub isolate: bool,
    /// With --isolate: layers this machine may lack, comma-separated (see
    /// `moonjail doctor`).
    #[arg(long, value_name = "LAYERS", requires = "isolate")]
    pub allow_missing: Option<String>,
}

/// Reads the journal, replays it, prints the outcome as `run` does.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let limit = args::size(&args.journal_limit).context("--journal-limit")?;
    let mut options = ReplayOptions::default().limit(limit.map(|l| l as u64));
    if args.trust_limits {
        options = options.ceiling(None);
    }
    if let Some(path) = &args.source {
        let source = std::fs::read(path).with_context(|| format!("--source {}", path.display()))?;
        options = options.source(source);
    }
    if args.isolate {
        let config = ProcessConfig::builder().pool_size(1);
        let config = args::allow_missing(config, args.allow_missing.as_deref())?;
        options = options.isolation(Isolation::Process(config.build()?));
    }
    let file = std::fs::File::open(&args.journal)
        .with_context(|| format!("reading {}", args.journal.display()))?;
    let outcome = moonjail::replay(file, &options)
        .with_context(|| format!("replaying {}", args.journal.display()))?;
    crate::run::print_outcome(&outcome, args.json, args.raw)
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The journal of the suspended run (`moonjail run --defer-tool NAME --journal FILE`).
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// The answer to the pending call, as JSON text or @FILE: the script receives it as
    /// the tool's return value.
    #[arg(long, value_name = "JSON|@FILE", required_unless_present = "error")]
    pub answer: Option<String>,
    /// Answer the pending call with a tool error: the script's call raises MESSAGE (as
    /// `NAME: MESSAGE`), which `pcall` catches.
    #[arg(long, value_name = "MESSAGE", conflicts_with = "answer")]
    pub error: Option<String>,
    /// Print one JSON document, as `run --json` does.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Print the result only, as `run --raw` does.
    #[arg(long)]
    pub raw: bool,
    /// The journal's size limit, read and appended to; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub journal_limit: String,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Declares the journal's deferred tools that the command line does not name: a deferred
/// tool is only a name (the host answers it), so nothing is trusted by taking it from the
/// journal, and `moonjail resume JOURNAL --answer JSON` works as `run` told. Live tools
/// (`--tool NAME=COMMAND`), `--allow-http`, `--modules` and `--read` are never taken from a
/// journal: they must be given again.
fn adopt_deferred_tools(
    sandbox: &mut SandboxArgs,
    journal: &std::path::Path,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(journal).with_context(|| format!("resuming {}", journal.display()))?;
    let Ok(read) = moonjail::Journal::read(file, limit.map(|l| l as u64)) else {
        // Reported by the resume itself, with its context.
        return Ok(());
    };
    let named = |name: &str| {
        sandbox.defer_tool.iter().any(|d| d.trim() == name)
            || sandbox
                .tool
                .iter()
                .any(|t| t.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    };
    let missing: Vec<String> = read
        .deferred()
        .iter()
        .filter(|name| !named(name))
        .cloned()
        .collect();
    sandbox.defer_tool.extend(missing);
    Ok(())
}

/// The largest --answer read from a file.
const ANSWER_LIMIT: usize = 16 << 20;

/// Resumes the journal's run with the answer, prints the outcome as `run` does.
pub fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let limit = args::size(&args.journal_limit).context("--journal-limit")?;
    let answer = match (&args.answer, &args.error) {
        (Some(text), _) => {
            let bytes = match text.strip_prefix('@') {
                Some(path) => {
                    let file = std::fs::File::open(path)
                        .with_context(|| format!("--answer: reading {path}"))?;
                    crate::run::read_capped(file, Some(ANSWER_LIMIT), "the answer is over 16 MiB")
                        .with_context(|| format!("--answer: reading {path}"))?
                }
                None => text.as_bytes().to_vec(),
            };
            Ok(serde_json::from_slice(&bytes).context("--answer is not valid JSON")?)
        }
        (None, Some(message)) => Err(moonjail::ToolError::new(message.clone())),
        (None, None) => {
            anyhow::bail!("give the pending call's answer: --answer JSON or --error MESSAGE")
        }
    };
    let mut sandbox_args = args.sandbox;
    adopt_deferred_tools(&mut sandbox_args, &args.journal, limit)?;
    let sandbox = sandbox_args.build(false, false)?;
    let mut outcome = sandbox
        .resume_with(&args.journal, answer, limit.map(|l| l as u64))
        .with_context(|| format!("resuming {}", args.journal.display()))?;
    crate::run::name_journal(&mut outcome, &args.journal);
    crate::run::print_outcome(&outcome, args.json, args.raw)
}
