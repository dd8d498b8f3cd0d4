//! `moonjail`: a thin shell over the library. Exit status: 0 the script succeeded, 1 it
//! failed (any error kind), 2 the command itself was misused.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use moonjail::{
    units, CommandTool, Determinism, Diagnostics, HostFiles, Isolation, Item, Limits,
    ProcessConfig, Profile, RunOptions, Sandbox, ToolRegistry,
};

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
    ///
    /// Host tools (see --tool and --allow-http):
    ///   moonjail run examples/agent_http.lua --allow-http 127.0.0.1:8765 --input '{"city": "Lyon"}'
    ///   moonjail run -e 'return calc.add(2, 3)' --tool 'calc.add=sh add.sh' --json
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Drive one persistent sandbox over JSON lines: one request per line on stdin, one
    /// response per line on stdout, so any language can host a Lua VM over a pipe.
    ///
    /// Requests (any `id` is echoed back):
    ///   {"id": 1, "op": "exec", "code": "function compute(s, m) ... end"}
    ///   {"id": 2, "op": "call", "function": "compute", "args": [{}, {"Action": "Ping"}]}
    ///   {"id": 3, "op": "has_function", "name": "compute"}
    ///   {"id": 4, "op": "close"}
    /// Responses carry the fields of `run --json` ("ok", "result", "output", "error",
    /// "stats") plus "id". A malformed line gets an error response (kind "input") and the
    /// session goes on. Time and instruction limits are per request; memory covers the
    /// whole state. After a timeout or an instruction limit the session is closed and
    /// every later request fails with that reason. Host tools (--tool, --allow-http) are
    /// there in every request, with quotas per request; a response lists the request's
    /// own calls in "tool_calls".
    ///
    /// Example:
    ///   printf '%s\n' '{"id":1,"op":"exec","code":"n = 0 function bump() n = n + 1 return n end"}' \
    ///     '{"id":2,"op":"call","function":"bump"}' | moonjail session
    #[command(verbatim_doc_comment)]
    Session(SessionArgs),
    /// Run a profile's environment checklist inside the real sandbox: one line per item,
    /// exit status 1 if any item fails.
    ///
    /// For aos the checklist is the HyperAOS validation list (_G self-reference, every
    /// library and function present, package.loaded, metatable and error functions,
    /// dangerous functions absent, io restricted).
    ///
    /// Example: moonjail check --profile aos
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
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
        /// minimal, standard or aos
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
    /// Fail if the script defines no global function `run`.
    #[arg(long)]
    require_run: bool,
    /// Fail if the result is not a table.
    #[arg(long)]
    require_table: bool,
    /// Print one JSON document: {"ok", "result", "output", "error", "stats"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args, Debug)]
struct SessionArgs {
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Print one JSON document: {"profile", "ok", "items": [{"name", "pass", "detail"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// What every command that builds a sandbox accepts.
#[derive(Args, Debug)]
struct SandboxArgs {
    /// The profile: minimal, standard or aos.
    #[arg(long, default_value = "standard", value_name = "NAME")]
    profile: String,
    /// Lua heap limit, e.g. 16MiB; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    memory: String,
    /// Wall-clock deadline (per call in a session), e.g. 500ms or 2s; `none` for no limit.
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
    /// aos: serve `require("a.b")` from DIR/a/b.lua or DIR/a/b/init.lua.
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// aos: let `io.open(PATH)` read PATH (exactly as the script spells it). Repeatable.
    #[arg(long = "read", value_name = "PATH")]
    read: Vec<String>,
    /// Make os.time/os.clock/os.date and math.random reproducible (see --timestamp,
    /// --seed): the same messages then give the same state.
    #[arg(long)]
    deterministic: bool,
    /// With --deterministic: what os.time() returns (Unix seconds).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        requires = "deterministic"
    )]
    timestamp: i64,
    /// With --deterministic: the seed of math.random.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "deterministic"
    )]
    seed: i64,
    /// Record the globals read and written, library members used, missing globals and
    /// requires, and report them ("diagnostics" in JSON).
    #[arg(long)]
    diagnostic: bool,
    /// Print execution milestones on stderr (environment built, chunk compiled, entry
    /// called, limits, outcome).
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Run the script in a locked-down worker process (namespaces, rlimits, dropped
    /// ids, no_new_privs, Landlock, seccomp), killed if it passes its deadline.
    #[arg(long)]
    isolate: bool,
    /// With --isolate: layers this machine may lack, comma-separated (see
    /// `moonjail doctor`), e.g. `landlock,user-namespace`. Default: none.
    #[arg(long, value_name = "LAYERS", requires = "isolate")]
    allow_missing: Option<String>,
    /// Register a host tool implemented by a program, e.g. 'weather.lookup=python3 w.py'.
    /// Repeatable.
    ///
    /// NAME is what scripts call (`weather.lookup`, or a bare `log`); COMMAND is a shell
    /// command line, run with `/bin/sh -c COMMAND` once per call. The program reads the call's arguments as one
    /// JSON array on stdin and prints its result as one JSON value on stdout. A non-zero
    /// exit status (the message is stderr's first lines) or output that is not JSON is an
    /// error the script can catch with pcall. The program is killed at the run's deadline
    /// (at most 30 s per call) or past 1 MiB of output. With --isolate the script runs in
    /// the locked-down worker, but the program does not: moonjail starts it outside, with
    /// moonjail's own rights (the script chooses only its arguments).
    ///
    /// Example: a tool adding two numbers, in three lines of shell:
    ///   printf '%s\n' 'read -r args' 'set -- $(echo "$args" | tr "[]," "   ")' \
    ///     'echo $(($1 + $2))' > add.sh
    ///   moonjail run -e 'return calc.add(2, 3)' --tool 'calc.add=sh add.sh'   # 5
    #[arg(long = "tool", value_name = "NAME=COMMAND", verbatim_doc_comment)]
    tool: Vec<String>,
    /// Enable the `http` tool for HOST[:PORT] (without a port: 80 and 443). Repeatable.
    ///
    /// Scripts get http.get(url [, headers]) and http.post(url, body [, headers]), which
    /// return {status, headers, body, url}; a table body is sent as JSON. Only http and
    /// https, only allowed hosts and ports, redirects only within the list, bodies up to
    /// 1 MiB, 100 requests per run, each request bounded by the run's deadline. A name
    /// must resolve to public addresses: to reach a loopback or private address, allow
    /// the address itself, e.g. `--allow-http 127.0.0.1:8765`.
    #[arg(long = "allow-http", value_name = "HOST[:PORT]", verbatim_doc_comment)]
    allow_http: Vec<String>,
}

impl SandboxArgs {
    fn build(&self, require_run: bool, require_table: bool) -> anyhow::Result<Sandbox> {
        if self.verbose {
            init_tracing();
        }
        let limits = Limits {
            memory_bytes: size(&self.memory).context("--memory")?,
            timeout: duration(&self.timeout).context("--timeout")?,
            instructions: self.instructions,
            output_bytes: size(&self.output_limit).context("--output-limit")?,
            source_bytes: size(&self.source_limit).context("--source-limit")?,
            result_depth: self.result_depth,
            result_bytes: size(&self.result_limit).context("--result-limit")?,
        };
        let mut files = HostFiles::default();
        if let Some(dir) = &self.modules {
            if !dir.is_dir() {
                bail!("--modules {}: not a directory", dir.display());
            }
            files = files.modules_dir(dir);
        }
        for path in &self.read {
            files = files.allow_read(path.clone());
        }
        let mut builder = Sandbox::builder()
            .profile(self.profile.parse()?)
            .limits(limits)
            .host_files(files)
            .diagnostic(self.diagnostic)
            .deterministic(self.deterministic.then_some(Determinism {
                timestamp: self.timestamp,
                seed: self.seed,
            }))
            .require_run(require_run)
            .require_table_result(require_table)
            // One command, one run: nothing to prepare ahead.
            .prepared_states(0);
        if !self.tool.is_empty() {
            let mut tools = ToolRegistry::new();
            for spec in &self.tool {
                let Some((name, command)) = spec.split_once('=') else {
                    bail!("--tool {spec:?}: expected NAME=COMMAND, e.g. 'weather.lookup=python3 weather.py'");
                };
                tools
                    .register_command(name.trim(), CommandTool::new(command))
                    .with_context(|| format!("--tool {spec:?}"))?;
            }
            builder = builder.tools(tools);
        }
        for destination in &self.allow_http {
            builder = builder.allow_http(destination.clone());
        }
        if self.isolate {
            // One command: one worker, started on demand.
            let config = ProcessConfig::builder().pool_size(1).prespawn(0);
            let config = allow_missing(config, self.allow_missing.as_deref())?;
            builder = builder.isolation(Isolation::Process(config.build()?));
        }
        Ok(builder.build()?)
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MOONJAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("moonjail=debug")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
        Command::Session(args) => session(args),
        Command::Check(args) => check(args),
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
    let sandbox = args.sandbox.build(args.require_run, args.require_table)?;
    let outcome = sandbox.run_with(&source, &input, &RunOptions { chunk_name: &name });

    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", outcome.to_json())?;
    } else {
        stdout.write_all(outcome.output.as_bytes())?;
        if let Some(d) = &outcome.diagnostics {
            stdout.flush()?;
            eprint!("{}", render_diagnostics(d));
        }
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

fn session(args: SessionArgs) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let sandbox = args.sandbox.build(false, false)?;
    let mut vm = sandbox.session()?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading a request from standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let (response, close) = session_request(&mut vm, &line);
        writeln!(stdout, "{response}")?;
        stdout.flush()?;
        if close {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Answers one JSON-lines request; true when the session should end.
fn session_request(vm: &mut moonjail::Session, line: &str) -> (serde_json::Value, bool) {
    use serde_json::{json, Value};
    let bad = |id: Value, message: String| {
        json!({"id": id, "ok": false, "result": null, "output": "", "stats": null,
               "error": {"kind": "input", "message": message, "line": null}})
    };
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                bad(Value::Null, format!("the request is not JSON: {e}")),
                false,
            )
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let text = |key: &str| request.get(key).and_then(Value::as_str);
    let outcome = match text("op") {
        Some("exec") => match text("code") {
            Some(code) => vm.exec(code),
            None => return (bad(id, "exec needs a string \"code\"".into()), false),
        },
        Some("call") => {
            let Some(name) = text("function") else {
                return (bad(id, "call needs a string \"function\"".into()), false);
            };
            let args = match request.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return (bad(id, "\"args\" must be an array".into()), false),
            };
            vm.call(name, &args)
        }
        Some("has_function") => match text("name") {
            Some(name) => {
                let reply = match vm.has_function(name) {
                    Ok(has) => json!({"id": id, "ok": true, "result": has, "output": "",
                               "error": null, "stats": null}),
                    Err(e) => json!({"id": id, "ok": false, "result": null, "output": "",
                               "error": e, "stats": null}),
                };
                return (reply, false);
            }
            None => {
                return (
                    bad(id, "has_function needs a string \"name\"".into()),
                    false,
                )
            }
        },
        Some("close") => {
            return (
                json!({"id": id, "ok": true, "result": null, "output": "",
                           "error": null, "stats": null}),
                true,
            );
        }
        Some(other) => {
            return (
                bad(
                    id,
                    format!("unknown op {other:?} (exec, call, has_function, close)"),
                ),
                false,
            )
        }
        None => return (bad(id, "the request has no string \"op\"".into()), false),
    };
    let mut doc = outcome.to_json();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("id".into(), id);
    }
    (doc, false)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let sandbox = args.sandbox.build(false, false)?;
    let results = sandbox.check()?;
    let ok = results.iter().all(|r| r.pass);
    if args.json {
        let doc = serde_json::json!({
            "profile": sandbox.profile().name(),
            "ok": ok,
            "items": results,
        });
        println!("{doc}");
    } else {
        for r in &results {
            let mark = if r.pass { "pass" } else { "FAIL" };
            match &r.detail {
                Some(d) => println!("{mark}  {}  ({d})", r.name),
                None => println!("{mark}  {}", r.name),
            }
        }
        let failed = results.iter().filter(|r| !r.pass).count();
        println!(
            "\n{} items, {} passed, {failed} failed (profile {})",
            results.len(),
            results.len() - failed,
            sandbox.profile().name()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
