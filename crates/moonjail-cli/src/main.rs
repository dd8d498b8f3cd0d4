//! `moonjail`: a thin shell over the library. Exit status: 0 the script succeeded, 1 it
//! failed (any error kind), 2 the command itself was misused.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use moonjail::{units, Item, Limits, Profile, RunOptions, Sandbox};

/// Run untrusted Lua 5.4 safely.
///
/// moonjail gives every run a fresh Lua state holding exactly what a profile lists, under
/// exact limits (memory, wall-clock time, instructions, output), and hands back the
/// result as JSON.
#[derive(Parser, Debug)]
#[command(name = "moonjail", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a Lua script once, in a fresh sandbox.
    ///
    /// The chunk gets the input as its first vararg (`local input = ...`). If it defines a
    /// global function `run`, that is then called as `run(input)` and its first return
    /// value is the result; otherwise the chunk's first return value is.
    ///
    /// Examples:
    ///   moonjail run examples/hello.lua
    ///   moonjail run -e 'return 1 + 1'
    ///   echo 'return ... .n * 2' | moonjail run - --input '{"n": 21}' --json
    ///   moonjail run agent.lua --input @context.json --timeout 500ms --memory 16MiB
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Inspect the profiles: what each one lets a script reach.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// List the profiles.
    List,
    /// Print everything a profile exposes, and how each guarded name is made safe.
    Show {
        /// minimal or standard
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The script to run; `-` reads it from standard input.
    #[arg(
        value_name = "FILE|-",
        required_unless_present = "code",
        conflicts_with = "code"
    )]
    file: Option<PathBuf>,
    /// Run CODE instead of a file.
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    code: Option<String>,
    /// The input, as JSON text or @FILE. Default: null.
    #[arg(long, value_name = "JSON|@FILE")]
    input: Option<String>,
    /// The profile: minimal or standard.
    #[arg(long, default_value = "standard", value_name = "NAME")]
    profile: String,
    /// Lua heap limit, e.g. 16MiB; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    memory: String,
    /// Wall-clock deadline, e.g. 500ms or 2s; `none` for no limit.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    timeout: String,
    /// Instruction budget shared by all coroutines (costs ~2x run time). Default: none.
    #[arg(long, value_name = "N")]
    instructions: Option<u64>,
    /// Limit on captured print output; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    output_limit: String,
    /// Limit on the source size (also for `load`); `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    source_limit: String,
    /// Limit on the result's JSON size; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    result_limit: String,
    /// How deeply the input and the result may nest.
    #[arg(long, value_name = "N", default_value_t = 64)]
    result_depth: usize,
    /// Fail if the script defines no global function `run`.
    #[arg(long)]
    require_run: bool,
    /// Fail if the result is not a table.
    #[arg(long)]
    require_table: bool,
    /// Print one JSON document: {"ok", "result", "output", "error", "stats"}.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moonjail: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Profile { command } => profile(command),
    }
}

fn size(text: &str) -> anyhow::Result<Option<usize>> {
    if text == "none" {
        return Ok(None);
    }
    let n = units::parse_size(text)?;
    Ok(Some(
        usize::try_from(n).context("size too large for this machine")?,
    ))
}

fn duration(text: &str) -> anyhow::Result<Option<Duration>> {
    if text == "none" {
        return Ok(None);
    }
    Ok(Some(units::parse_duration(text)?))
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (source, name) = match (&args.code, &args.file) {
        (Some(code), _) => (code.clone().into_bytes(), "(command line)".to_string()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the script from standard input")?;
            (buf, "stdin".to_string())
        }
        (None, Some(path)) => {
            let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "script".into());
            (buf, name)
        }
        (None, None) => bail!("give a FILE, `-` for standard input, or -e CODE"),
    };
    let input: serde_json::Value = match &args.input {
        None => serde_json::Value::Null,
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
                }
                None => text.clone(),
            };
            serde_json::from_str(&text).context("--input is not valid JSON")?
        }
    };
    let limits = Limits {
        memory_bytes: size(&args.memory).context("--memory")?,
        timeout: duration(&args.timeout).context("--timeout")?,
        instructions: args.instructions,
        output_bytes: size(&args.output_limit).context("--output-limit")?,
        source_bytes: size(&args.source_limit).context("--source-limit")?,
        result_depth: args.result_depth,
        result_bytes: size(&args.result_limit).context("--result-limit")?,
    };
    let sandbox = Sandbox::builder()
        .profile(args.profile.parse()?)
        .limits(limits)
        .require_run(args.require_run)
        .require_table_result(args.require_table)
        .build()?;
    let outcome = sandbox.run_with(&source, &input, &RunOptions { chunk_name: &name });

    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", outcome.to_json())?;
    } else {
        stdout.write_all(outcome.output.as_bytes())?;
        match &outcome.result {
            Ok(serde_json::Value::Null) => {}
            Ok(v) => writeln!(stdout, "{}", serde_json::to_string_pretty(v)?)?,
            Err(e) => {
                stdout.flush()?;
                let line = e.line.map(|l| format!(" at line {l}")).unwrap_or_default();
                eprintln!("moonjail: {} error{line}: {}", e.kind, e.message);
            }
        }
    }
    stdout.flush()?;
    Ok(if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn profile(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfileCommand::List => {
            for p in Profile::ALL {
                println!("{:<10} {}", p.name(), p.spec().summary);
            }
        }
        ProfileCommand::Show { name, json } => {
            let p: Profile = name.parse()?;
            let spec = p.spec();
            let mut rows: Vec<(String, Option<&str>)> = Vec::new();
            for item in spec.items {
                match item {
                    Item::Global(g) => rows.push((g.to_string(), moonjail::guard_note(g))),
                    Item::GlobalsRef => rows.push(("_G".into(), Some("the sandbox's own globals"))),
                    Item::Json => rows.push((
                        "json".into(),
                        Some("json.encode, json.decode, json.null (Rust, under the run's limits)"),
                    )),
                    Item::Library { name, members } => {
                        for m in *members {
                            let full = format!("{name}.{m}");
                            let note = moonjail::guard_note(&full);
                            rows.push((full, note));
                        }
                    }
                }
            }
            if json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|(n, note)| serde_json::json!({"name": n, "guard": note}))
                    .collect();
                let doc =
                    serde_json::json!({"name": spec.name, "summary": spec.summary, "items": items});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("profile {}: {}", spec.name, spec.summary);
                println!(
                    "exposes {} names; nothing else exists in the sandbox.\n",
                    rows.len()
                );
                for (n, note) in rows {
                    match note {
                        Some(note) => println!("  {n:<22} {note}"),
                        None => println!("  {n}"),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
