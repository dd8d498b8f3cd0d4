//! `moonjail replay`: re-execute a journal written by `run --journal`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use moonjail::{Isolation, ProcessConfig, ReplayOptions};

use crate::args;

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
