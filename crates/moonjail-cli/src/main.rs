//! `moonjail`: a thin shell over the library. Exit status: 0 the script succeeded, 1 it
//! failed (any error kind), 2 the command itself was misused.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use moonjail::{units, Isolation, Item, Limits, ProcessConfig, Profile, RunOptions, Sandbox};

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
    ///   echo 'return (...).n * 2' | moonjail run - --input '{"n": 21}' --json
    ///   moonjail run agent.lua --input @context.json --timeout 500ms --memory 16MiB
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Inspect the profiles: what each one lets a script reach.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Show which isolation layers this machine can apply (for `run --isolate`), and why
    /// not when not; then start one worker process and run a script in it.
    ///
    /// Exit status: 0 when every layer is available and the worker ran, 1 otherwise.
    Doctor {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
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
    /// Run the script in a locked-down worker process (namespaces, rlimits, dropped
    /// ids, no_new_privs, Landlock, seccomp), killed if it passes its deadline.
    #[arg(long)]
    isolate: bool,
    /// With --isolate: layers this machine may lack, comma-separated (see
    /// `moonjail doctor`), e.g. `landlock,user-namespace`. Default: none.
    #[arg(long, value_name = "LAYERS", requires = "isolate")]
    allow_missing: Option<String>,
    /// Print one JSON document: {"ok", "result", "output", "error", "stats"}.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Started as a worker process by `--isolate` (this executable re-run with a hidden
    // first argument): serve, and never come back.
    moonjail::worker::run_if_worker();
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
        Command::Run(args) => run(*args),
        Command::Profile { command } => profile(command),
        Command::Doctor { json } => doctor(json),
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
    let mut builder = Sandbox::builder()
        .profile(args.profile.parse()?)
        .limits(limits)
        .require_run(args.require_run)
        .require_table_result(args.require_table);
    if args.isolate {
        // One run: one worker, started on demand.
        let config = ProcessConfig::builder().pool_size(1).prespawn(0);
        let config = allow_missing(config, args.allow_missing.as_deref())?;
        builder = builder.isolation(Isolation::Process(config.build()?));
    }
    let sandbox = builder.build()?;
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
                    Item::Alias { name, target } => {
                        rows.push((name.to_string(), Some(alias_note(target))))
                    }
                    Item::Package => {
                        rows.push((
                            "package".into(),
                            Some("loaded, preload, path = \"\", cpath = \"\"; no loadlib, no searchers"),
                        ));
                        rows.push((
                            "require".into(),
                            Some("package.loaded, package.preload, then --modules DIR"),
                        ));
                    }
                    Item::Io => rows.push((
                        "io.open".into(),
                        Some("read-only (\"r\", \"rb\"), only files listed with --read"),
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

#[cfg(target_os = "linux")]
fn allow_missing(
    config: moonjail::ProcessConfigBuilder,
    list: Option<&str>,
) -> anyhow::Result<moonjail::ProcessConfigBuilder> {
    use moonjail::worker::{Layer, LayerSet};
    let Some(list) = list else {
        return Ok(config);
    };
    let mut layers = LayerSet::empty();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let layer = Layer::from_name(name).with_context(|| {
            let known: Vec<_> = Layer::ALL.iter().map(|l| l.name()).collect();
            format!(
                "--allow-missing: unknown layer {name:?} (known: {})",
                known.join(", ")
            )
        })?;
        layers = layers.with(layer);
    }
    Ok(config.allow_missing(layers))
}

#[cfg(not(target_os = "linux"))]
fn allow_missing(
    config: moonjail::ProcessConfigBuilder,
    list: Option<&str>,
) -> anyhow::Result<moonjail::ProcessConfigBuilder> {
    if list.is_some() {
        bail!("--allow-missing: isolation layers exist on Linux only");
    }
    Ok(config)
}

/// `moonjail doctor`: the probe's findings, then one real isolated run.
#[cfg(target_os = "linux")]
fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    use moonjail::worker::Availability;

    let capabilities = moonjail::worker::probe();
    let layers: Vec<_> = capabilities
        .layers
        .iter()
        .map(|(layer, availability)| {
            let (status, detail) = match availability {
                Availability::Available { detail } => ("available", detail.clone()),
                Availability::Unavailable { reason } => ("unavailable", reason.clone()),
                Availability::NotApplicable { reason } => ("not_applicable", reason.clone()),
                other => ("unknown", other.to_string()),
            };
            (layer.name(), status, detail, availability.is_usable())
        })
        .collect();
    let all_usable = capabilities.all_usable();

    // One run in a real worker, every layer required, as `run --isolate` would do it.
    let started = std::time::Instant::now();
    let worker = ProcessConfig::builder()
        .pool_size(1)
        .prespawn(0)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            Ok(Sandbox::builder()
                .isolation(Isolation::Process(config))
                .build()?)
        })
        .map(|sandbox| sandbox.run("return 6 * 7", &serde_json::Value::Null));
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let worker_error = match &worker {
        Ok(outcome) => match &outcome.result {
            Ok(v) if *v == serde_json::json!(42) => None,
            Ok(v) => Some(format!("the worker answered {v} instead of 42")),
            Err(e) => Some(format!("{}: {}", e.kind, e.message)),
        },
        Err(e) => Some(format!("{e:#}")),
    };
    let ok = all_usable && worker_error.is_none();

    if json {
        let doc = serde_json::json!({
            "ok": ok,
            "kernel": capabilities.kernel_release,
            "running_as_root": capabilities.running_as_root,
            "landlock_abi": capabilities.landlock_abi,
            "layers": layers.iter().map(|(name, status, detail, usable)| serde_json::json!({
                "layer": name, "status": status, "usable": usable, "detail": detail,
            })).collect::<Vec<_>>(),
            "worker": {
                "ok": worker_error.is_none(),
                "error": worker_error,
                "ms": (elapsed_ms * 1e3).round() / 1e3,
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "kernel {}, running as {}",
            capabilities.kernel_release,
            if capabilities.running_as_root {
                "root"
            } else {
                "an unprivileged user"
            }
        );
        for (name, status, detail, _) in &layers {
            let status = status.replace('_', " ");
            println!("  {name:<18} {status:<15} {detail}");
        }
        match &worker_error {
            None => println!("worker: started, locked down and ran a script in {elapsed_ms:.1} ms"),
            Some(e) => println!("worker: FAILED: {e}"),
        }
        if ok {
            println!("every layer is available: `moonjail run --isolate` applies them all");
        } else if !all_usable {
            println!(
                "some layers are unavailable: `run --isolate` fails unless they are listed \
                 in --allow-missing"
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(not(target_os = "linux"))]
fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "error": "isolation needs Linux"})
        );
    } else {
        println!("isolation layers exist on Linux only: `run --isolate` is not available");
    }
    Ok(ExitCode::from(1))
}

fn alias_note(target: &str) -> &'static str {
    match target {
        "load" => "alias of load (Lua 5.1 spelling)",
        "table.unpack" => "alias of table.unpack (Lua 5.1 spelling)",
        _ => "alias",
    }
}
