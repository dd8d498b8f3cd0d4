//! The flags every sandbox-building command shares, their parsing (sizes, durations,
//! layer lists) and the `Sandbox` they describe.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use moonjail::{
    units, CommandTool, Determinism, HostFiles, Isolation, Limits, OutputOverflow, ProcessConfig,
    Sandbox, ToolRegistry,
};
// Imported on its own line: the list above is shared with other flags' changes.
use moonjail::ToolSpec;

/// Largest `--tool-schema` file read.
const MAX_SCHEMA_FILE: u64 = 1 << 20;

/// What every command that builds a sandbox accepts.
#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The profile: minimal, standard or aos.
    #[arg(long, default_value = "standard", value_name = "NAME")]
    pub profile: String,
    /// Lua heap limit, e.g. 16MiB; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub memory: String,
    /// Wall-clock deadline (per call in a session), e.g. 500ms or 2s; `none` for no limit.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub timeout: String,
    /// Instruction budget shared by all coroutines, native work included (costs about
    /// what Lua's own count hook does). Default: none.
    #[arg(long, value_name = "N")]
    pub instructions: Option<u64>,
    /// Limit on captured print output; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub output_limit: String,
    /// What printing past --output-limit does: `fail` the run (kind output_limit), or
    /// `truncate`: keep the first and the last half of the limit, with a marker line
    /// between them, let the run go on, and report `output_truncated` ({"kept_bytes",
    /// "dropped_bytes"}) in the outcome.
    #[arg(long, value_name = "MODE", default_value = "fail", value_parser = ["fail", "truncate"])]
    pub output_overflow: String,
    /// Limit on the source size (also for `load`; a script FILE or `-` is read no
    /// further); `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub source_limit: String,
    /// Limit on the result's JSON size; `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub result_limit: String,
    /// How deeply the input and the result may nest.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub result_depth: usize,
    /// Serve `require("a.b")` from DIR/a/b.lua or DIR/a/b/init.lua (`require(".a")`
    /// too, as aos process code writes it), in the profiles that have `require`
    /// (standard, aos); elsewhere a usage error.
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// aos: let `io.open(PATH)` read PATH (exactly as the script spells it). Repeatable.
    #[arg(long = "read", value_name = "PATH")]
    pub read: Vec<String>,
    /// Make os.time/os.clock/os.date and math.random reproducible (see --timestamp,
    /// --seed): the same messages then give the same state.
    #[arg(long)]
    pub deterministic: bool,
    /// With --deterministic: what os.time() returns (Unix seconds).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        requires = "deterministic"
    )]
    pub timestamp: i64,
    /// With --deterministic: the seed of math.random.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "deterministic"
    )]
    pub seed: i64,
    /// Record the globals read and written, library members used, missing globals and
    /// requires, and report them ("diagnostics" in JSON).
    #[arg(long)]
    pub diagnostic: bool,
    /// Print execution milestones on stderr (environment built, chunk compiled, entry
    /// called, limits, outcome).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Run the script in a locked-down worker process (namespaces, rlimits, dropped
    /// ids, no_new_privs, Landlock, seccomp), killed if it passes its deadline.
    #[arg(long)]
    pub isolate: bool,
    /// With --isolate: layers this machine may lack, comma-separated (see
    /// `moonjail doctor`), e.g. `landlock,user-namespace`. Default: none.
    #[arg(long, value_name = "LAYERS", requires = "isolate")]
    pub allow_missing: Option<String>,
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
    pub tool: Vec<String>,
    /// Declare a deferred tool NAME (`run --journal`, `resume`, `serve` and `mcp` only):
    /// a person or another system answers it later. When the script calls it, the
    /// arguments are checked (against its --tool-schema, if any), then the run stops
    /// there: the outcome fails with error kind "suspended", the pending call {"name",
    /// "args", "journal"} as the error's value, and exit status 3. `moonjail resume
    /// JOURNAL --answer JSON` (or --error MESSAGE) continues it, in any process, later.
    /// (`serve` holds the suspended run in memory instead: POST /v1/runs/{id}/resume;
    /// `mcp` asks the client's user for the answer, or holds the run for resume_lua.)
    /// Repeatable.
    #[arg(long = "defer-tool", value_name = "NAME")]
    pub defer_tool: Vec<String>,
    /// Describe the --tool NAME with the JSON document in FILE, and check every call's
    /// arguments against it before the program runs. Repeatable.
    ///
    /// FILE is either a JSON Schema of the arguments, or a tool document:
    ///   {"description": "...", "parameters": SCHEMA, "returns": SCHEMA}
    /// (a document is recognised by its "parameters" or "returns" member). A parameter
    /// schema whose top-level "type" is "array" describes the whole argument list
    /// (`f("Lyon", 3)`: use "prefixItems"); any other schema describes the one argument
    /// (`f{city = "Lyon"}`), and a call with more than one is refused. A call that does
    /// not match fails, catchable with pcall, with e.g.
    ///   weather.lookup: argument 1: at /city: expected string, got integer
    /// An invalid schema, or a "$ref" outside the file, is a usage error (status 2).
    /// "returns" is for the catalogue only (`moonjail tools`).
    #[arg(long = "tool-schema", value_name = "NAME=FILE", verbatim_doc_comment)]
    pub tool_schema: Vec<String>,
    /// Describe the --tool NAME for models (`moonjail tools`), replacing the
    /// description of its --tool-schema document if any. Repeatable.
    #[arg(long = "tool-description", value_name = "NAME=TEXT")]
    pub tool_description: Vec<String>,
    /// Enable the `http` tool for HOST[:PORT] (without a port: 80 and 443). Repeatable.
    ///
    /// Scripts get http.get(url [, headers]) and http.post(url, body [, headers]), which
    /// return {status, headers, body, url}; a table body is sent as JSON. Only http and
    /// https, only allowed hosts and ports, redirects only within the list, bodies up to
    /// 1 MiB, 100 requests per run, each request bounded by the run's deadline. A name
    /// must resolve to public addresses: to reach a loopback or private address, allow
    /// the address itself, e.g. `--allow-http 127.0.0.1:8765`.
    ///
    /// `*.example.com` allows every subdomain of example.com (one or more labels before
    /// it; not example.com itself, list it too if needed), with the same address checks.
    /// `*`, `*.com` and a `*` anywhere but the whole first label are refused (status 2).
    #[arg(long = "allow-http", value_name = "HOST[:PORT]", verbatim_doc_comment)]
    pub allow_http: Vec<String>,
}

impl SandboxArgs {
    /// The sandbox these flags describe, for a command that may require a `run` entry
    /// or a table result.
    pub fn build(&self, require_run: bool, require_table: bool) -> anyhow::Result<Sandbox> {
        // One command: one worker, started on demand.
        self.build_pooled(require_run, require_table, 1, 0)
    }

    /// [`SandboxArgs::build`] for a long-running command (`serve`): with --isolate, a pool
    /// of `pool` workers, `prespawn` of them kept ready.
    pub fn build_pooled(
        &self,
        require_run: bool,
        require_table: bool,
        pool: usize,
        prespawn: usize,
    ) -> anyhow::Result<Sandbox> {
        if self.verbose {
            init_tracing();
        }
        let limits = Limits {
            memory_bytes: size(&self.memory).context("--memory")?,
            timeout: duration(&self.timeout).context("--timeout")?,
            instructions: self.instructions,
            output_bytes: size(&self.output_limit).context("--output-limit")?,
            output_overflow: if self.output_overflow == "truncate" {
                OutputOverflow::Truncate
            } else {
                OutputOverflow::Fail
            },
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
        if !self.tool.is_empty() || !self.defer_tool.is_empty() {
            let mut tools = ToolRegistry::new();
            for spec in &self.tool {
                let Some((name, command)) = spec.split_once('=') else {
                    bail!("--tool {spec:?}: expected NAME=COMMAND, e.g. 'weather.lookup=python3 weather.py'");
                };
                tools
                    .register_command(name.trim(), CommandTool::new(command))
                    .with_context(|| format!("--tool {spec:?}"))?;
            }
            for name in &self.defer_tool {
                tools
                    .register_deferred(name.trim())
                    .with_context(|| format!("--defer-tool {name:?}"))?;
            }
            self.describe_tools(&mut tools)?;
            builder = builder.tools(tools);
        } else if let Some(flag) = self.tool_schema.first().or(self.tool_description.first()) {
            bail!("{flag:?}: describes a tool, but no --tool NAME=COMMAND or --defer-tool NAME is given");
        }
        for destination in &self.allow_http {
            builder = builder.allow_http(destination.clone());
        }
        if self.isolate {
            let config = ProcessConfig::builder().pool_size(pool).prespawn(prespawn);
            let config = allow_missing(config, self.allow_missing.as_deref())?;
            builder = builder.isolation(Isolation::Process(config.build()?));
        }
        Ok(builder.build()?)
    }
}

impl SandboxArgs {
    /// Refuses --defer-tool for `command`, which has no journal to resume a suspended
    /// call from.
    pub fn refuse_deferred(&self, command: &str) -> anyhow::Result<()> {
        if let Some(name) = self.defer_tool.first() {
            bail!(
                "--defer-tool {name:?}: `{command}` cannot suspend at a deferred call (only \
                 `moonjail run --journal FILE` can, to be resumed with `moonjail resume`, \
                 `moonjail serve`, to be resumed with POST /v1/runs/ID/resume, and \
                 `moonjail mcp`)"
            );
        }
        Ok(())
    }

    /// Applies --tool-schema and --tool-description to the command tools in `tools`.
    fn describe_tools(&self, tools: &mut ToolRegistry) -> anyhow::Result<()> {
        let mut specs: Vec<(String, ToolSpec)> = Vec::new();
        for flag in &self.tool_schema {
            let Some((name, file)) = flag.split_once('=') else {
                bail!("--tool-schema {flag:?}: expected NAME=FILE, e.g. 'weather.lookup=weather.schema.json'");
            };
            let name = name.trim();
            let doc = read_schema(file).with_context(|| format!("--tool-schema {flag:?}"))?;
            let spec = ToolSpec::from_document(doc)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--tool-schema {flag:?}"))?;
            if specs.iter().any(|(n, _)| n == name) {
                bail!("--tool-schema {flag:?}: `{name}` already has a --tool-schema");
            }
            specs.push((name.to_string(), spec));
        }
        for flag in &self.tool_description {
            let Some((name, text)) = flag.split_once('=') else {
                bail!("--tool-description {flag:?}: expected NAME=TEXT");
            };
            let name = name.trim();
            match specs.iter_mut().find(|(n, _)| n == name) {
                Some((_, spec)) => spec.description = Some(text.to_string()),
                None => specs.push((name.to_string(), ToolSpec::new().description(text))),
            }
        }
        for (name, spec) in specs {
            if !tools.contains(&name) {
                bail!("--tool-schema/--tool-description `{name}`: no --tool or --defer-tool of that name");
            }
            tools.describe(&name, spec)?;
        }
        Ok(())
    }
}

/// A schema file's JSON, read no further than [`MAX_SCHEMA_FILE`], nesting at most 64
/// levels.
fn read_schema(path: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {path}"))?;
    let mut text = Vec::new();
    file.take(MAX_SCHEMA_FILE + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {path}"))?;
    if text.len() as u64 > MAX_SCHEMA_FILE {
        bail!("{path}: larger than {MAX_SCHEMA_FILE} bytes");
    }
    // Depth and size checked before parsing, as for every JSON moonjail reads.
    moonjail::parse_input(&text, &Limits::default())
        .map_err(|e| anyhow::anyhow!("{path}: {}", e.message))
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

/// A size flag's value; `none` lifts the limit.
pub fn size(text: &str) -> anyhow::Result<Option<usize>> {
    if text == "none" {
        return Ok(None);
    }
    let n = units::parse_size(text)?;
    Ok(Some(
        usize::try_from(n).context("size too large for this machine")?,
    ))
}

/// A duration flag's value; `none` lifts the limit.
pub fn duration(text: &str) -> anyhow::Result<Option<Duration>> {
    if text == "none" {
        return Ok(None);
    }
    Ok(Some(units::parse_duration(text)?))
}

#[cfg(target_os = "linux")]
pub fn allow_missing(
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
pub fn allow_missing(
    config: moonjail::ProcessConfigBuilder,
    list: Option<&str>,
) -> anyhow::Result<moonjail::ProcessConfigBuilder> {
    if list.is_some() {
        bail!("--allow-missing: isolation layers exist on Linux only");
    }
    Ok(config)
}
