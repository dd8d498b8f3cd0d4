//! `moonjail`: a thin shell over the library: parse the command line, dispatch to the
//! command's module, turn the outcome into an exit status. Exit status: 0 the script
//! succeeded (or stdout's reader went away), 1 it failed (any error kind), 2 the command
//! itself was misused.

mod args;
mod backstop;
mod check;
mod doctor;
mod lint;
mod mcp;
mod output;
mod profile;
mod replay;
mod run;
mod serve;
mod session;
mod tools;

use std::io::Write;
use std::process::ExitCode;

/// Every fresh sandbox state is a few hundred small allocations made and freed again
/// (Lua's objects go through the global allocator too, see moonjail's vm/alloc.rs).
/// mimalloc in its secure mode (guard pages, encoded free lists, double-free detection,
/// randomised allocation: a script that found a memory bug in the VM meets a harder heap
/// than glibc's) still takes 5.5% fewer instructions per `serve` request than glibc's
/// malloc; its plain mode would take 18% fewer, with weaker hardening than glibc's
/// (BENCHMARKS.md §6). Only this executable chooses it; the library leaves the choice to
/// its host. When this executable serves as its own worker, the supervisor tells
/// mimalloc not to reserve address space ahead (worker/supervisor.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use crate::check::{check, CheckArgs};
use crate::doctor::doctor;
use crate::lint::{lint, LintArgs};
use crate::mcp::{mcp, McpArgs};
use crate::profile::{profile, ProfileCommand};
use crate::replay::{replay, resume, ReplayArgs, ResumeArgs};
use crate::run::{run, RunArgs};
use crate::serve::{keys, serve, KeysCommand, ServeArgs};
use crate::session::{session, SessionArgs};
use crate::tools::{tools, ToolsArgs};

/// Run untrusted Lua 5.4 safely.
///
/// moonjail gives every run a fresh Lua state holding exactly what a profile lists, under
/// exact limits (memory, wall-clock time, instructions, output), and hands back the
/// result as JSON.
///
/// Exit status: 0 the command succeeded (also when the reader of stdout goes away early,
/// as with `| head`: moonjail then stops quietly), 1 the script failed (any error kind)
/// or a check failed, 2 the command was misused, 3 the run is suspended at a deferred tool
/// call (`run --defer-tool`, `resume`).
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
    /// global function `run`, that is then called as `run(input)` and its return values
    /// are the results; otherwise the chunk's return values are. JSON null in the input is
    /// nil where a script looks (an object's null field is absent, an array keeps its
    /// positions with json.null); without --input the vararg is nil. `require("json")`
    /// works in the standard and aos profiles. A shebang first line (`#!/usr/bin/env
    /// lua`) and a UTF-8 BOM are skipped as `lua` skips them; line numbers stay the file's.
    ///
    /// The --json document (one line):
    ///   "ok"                true or false
    ///   "result"            the first value returned (null when none)
    ///   "results"           every value returned, in order: `return nil, "not found"`
    ///                       gives [null, "not found"]; [] for a bare `return` or a failure
    ///   "output"            what the script printed; with --output-overflow truncate its
    ///                       head and tail around a `[... N bytes of output dropped ...]` line
    ///   "output_truncated"  null, or {"kept_bytes", "dropped_bytes"} when the output was cut
    ///   "error"             null, or {"kind", "message", "line", "traceback", "value", "hint"}:
    ///     "kind"       syntax runtime memory_limit instruction_limit timeout output_limit
    ///                  input result forbidden interrupted killed internal
    ///                  replay_divergence (`moonjail replay`)
    ///                  suspended (--defer-tool: exit status 3; "value" is the pending call
    ///                  {"name", "args", "journal"}; `moonjail resume` continues the run)
    ///     "message"    Lua's message; for a limit, which limit, its value and where the
    ///                  script was stopped ("ran past its 200 ms deadline (stopped at line 3
    ///                  in function 'spin')")
    ///     "line"       the innermost line of the script, also for an error raised inside a
    ///                  library function (null when there is none)
    ///     "traceback"  the Lua frames, innermost first, at most 32:
    ///                  [{"function": NAME or null, "source": CHUNK, "line": N}]
    ///     "value"      the raised value when it is a table (`error({code = 42})` gives
    ///                  {"code": 42}; an object with __tostring is also its message), else null
    ///     "hint"       for a syntax error that looks like another language's habit (`!=`,
    ///                  `+=`, `continue`, ...), what Lua spells instead; else null
    ///   "stats"             what the run used of each limit, and the limits:
    ///     "wall_ms", "memory_bytes" (in use at the end), "peak_memory_bytes",
    ///     "instructions" (exact: the least --instructions that succeeds; null without
    ///     --instructions), "output_bytes" (printed, before any truncation), "tool_calls",
    ///     "limits": {"wall_ms", "memory_bytes", "instructions", "output_bytes",
    ///     "tool_calls"} (null: no limit)
    /// plus "tool_calls" (the host tool calls, when there were any) and "diagnostics"
    /// (with --diagnostic). Without --json: the output, then each result on a line (nil
    /// as null); a failure on stderr with its line, traceback and hint. --raw: the first
    /// result alone.
    ///
    /// Examples:
    ///   moonjail run examples/hello.lua
    ///   moonjail run -e 'return 1 + 1'
    ///   moonjail run -e '1 + 1'                      # an expression, as in the REPL: 2
    ///   moonjail run -e 'return ("%d items"):format(3)' --raw   # 3 items
    ///   moonjail run flood.lua --output-limit 64KiB --output-overflow truncate --json
    ///   echo 'return (...).n * 2' | moonjail run - --input '{"n": 21}' --json
    ///   moonjail run agent.lua --input @context.json --timeout 500ms --memory 16MiB
    ///
    /// Host tools (see --tool and --allow-http):
    ///   moonjail run examples/agent_http.lua --allow-http 127.0.0.1:8765 --input '{"city": "Lyon"}'
    ///   moonjail run -e 'return calc.add(2, 3)' --tool 'calc.add=sh add.sh' --json
    ///
    /// Durable runs (see --journal, `moonjail replay --help`, docs/JOURNAL.md):
    ///   moonjail run agent.lua --tool 'calc.add=sh add.sh' --journal run.jsonl
    ///   moonjail replay run.jsonl --json             # same outcome, add.sh is not run
    ///
    /// Human approval (see --defer-tool, `moonjail resume --help`):
    ///   moonjail run pay.lua --defer-tool payments.send --journal pay.jsonl   # exit 3
    ///   moonjail resume pay.jsonl --answer '{"id": "tx-1"}' --defer-tool payments.send   # later
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Check a script against the sandbox `run` would give it, without running it.
    ///
    /// Takes run's sandbox flags (--profile, --tool, --allow-http, --modules,
    /// --require-run ...), so the check is against exactly what the script would reach:
    /// syntax errors (with hints for other languages' spellings: != += continue ?: //),
    /// globals and library members the sandbox does not have (and which it removes on
    /// purpose: io, os.execute, debug, string.dump ...), typos ("did you mean"), writes to
    /// tool namespaces, malformed pattern literals, literal URLs the --allow-http list
    /// refuses, wrong argument counts, a missing `run` under --require-run, and the usual
    /// correctness warnings (unused locals, shadowing, 0-based loops).
    ///
    /// Output: `FILE:LINE:COL: SEVERITY[RULE]: MESSAGE`, the source line with a caret
    /// under the span, and `= help:` with what to write instead. --json prints one
    /// document with every finding and the script's capability manifest (globals, library
    /// members, tools and hosts it reaches; whether it loads code at run time).
    ///
    /// Exit status: 0 no error finding (warnings allowed), 1 error findings, 2 misuse.
    ///
    /// Examples:
    ///   moonjail lint agent.lua
    ///   moonjail lint agent.lua --json | jq '.findings[] | [.line, .rule, .message]'
    ///   moonjail lint -e 'if a != b then print(io.open("x")) end'
    ///   moonjail lint weather.lua --tool 'weather.lookup=python3 w.py' --allow-http api.example.com
    ///   moonjail lint --profile aos --modules ./process process.lua
    ///   moonjail run --lint agent.lua     # lint first; error findings: not run (kind "lint")
    #[command(verbatim_doc_comment)]
    Lint(Box<LintArgs>),
    /// Re-execute a run recorded with `moonjail run --journal FILE`, without calling a
    /// tool or reading a file: the recorded source (or --source FILE) runs with the
    /// recorded sandbox, input, time and seed; every tool call is answered from the
    /// journal, in order, and every module or file read with the recorded content.
    ///
    /// The outcome is the recorded run's (but for wall times and tool call durations),
    /// printed as `run` prints it. If the script asks for something the journal does not
    /// have next (another tool, other arguments, one call too many or too few, a file
    /// the recorded run did not read), the replay stops with error kind
    /// "replay_divergence", whose message names the step, what was recorded and what was
    /// asked.
    ///
    /// Exit status: as `run` (0 ok, 1 the script failed or diverged), 2 for a journal
    /// that cannot be read (missing, truncated, corrupt, over --journal-limit).
    ///
    /// Examples:
    ///   moonjail run agent.lua --tool 'dice.roll=sh roll.sh' --journal run.jsonl
    ///   moonjail replay run.jsonl --json          # the same outcome; roll.sh is not run
    ///   moonjail replay run.jsonl --source agent-fixed.lua   # the fix against that run
    #[command(verbatim_doc_comment)]
    Replay(Box<ReplayArgs>),
    /// Continue a run suspended at a deferred tool call (`run --defer-tool NAME --journal
    /// FILE`, exit status 3), with the host's answer to that call.
    ///
    /// The journal is replayed up to the pending call (every earlier tool call and file
    /// read answered from it: nothing is called again, no file is read again), the script
    /// receives --answer JSON as the tool's return value (or --error MESSAGE as the tool's
    /// error, which `pcall` catches), and the run goes on live to its end or to its next
    /// deferred call, appending to the same journal. So a run can be suspended and resumed
    /// any number of times, in any process, any time later; the journal stays one run's,
    /// and `moonjail replay` replays it whole.
    ///
    /// Give the sandbox flags the run was made with (--profile, the limits, --tool,
    /// --modules, --read; --isolate may differ): the rest of the run runs under them, and
    /// a journal recorded with other ones (or edited) is refused, naming the difference.
    /// The journal's deferred tools are declared without --defer-tool (a deferred tool is
    /// only a name; a live tool's command is never taken from a journal). The recorded
    /// time and seed are kept. Every limit but wall time holds across the whole run (the
    /// replayed part is re-executed); time spent suspended does not count. The journal is locked while a run resumes from it.
    ///
    /// Exit status: as `run` (0 finished, 1 the script failed or no longer matches the
    /// journal: error kind "replay_divergence", and nothing is appended), 3 suspended
    /// again, 2 for a journal that cannot be read or is not suspended.
    ///
    /// Examples:
    ///   moonjail run pay.lua --defer-tool payments.send --tool 'fx.rate=sh fx.sh' --journal pay.jsonl
    ///   moonjail resume pay.jsonl --answer '{"id": "tx-1"}' --tool 'fx.rate=sh fx.sh' --defer-tool payments.send
    ///   moonjail resume pay.jsonl --error 'declined by the approver' --tool 'fx.rate=sh fx.sh' --defer-tool payments.send
    #[command(verbatim_doc_comment)]
    Resume(Box<ResumeArgs>),
    /// Drive one persistent sandbox over JSON lines: one request per line on stdin, one
    /// response per line on stdout, so any language can host a Lua VM over a pipe.
    ///
    /// Requests (any `id` is echoed back):
    ///   {"id": 1, "op": "exec", "code": "function compute(s, m) ... end"}
    ///   {"id": 2, "op": "call", "function": "compute", "args": [{}, {"Action": "Ping"}]}
    ///   {"id": 3, "op": "has_function", "name": "compute"}
    ///   {"id": 4, "op": "close"}
    /// and also:
    ///   {"id": 5, "op": "exec", "code": "local order = ... return order.qty", "input": {"qty": 2}}
    ///   {"id": 6, "op": "eval", "code": "#queue"}
    ///   {"id": 7, "op": "call", "function": "M.f", "args": [1], "timeout": "200ms"}
    ///   {"id": 8, "op": "lint", "code": "return io.open('x')"}
    /// "exec" runs a chunk in the session's state, "input" its vararg (JSON null is nil,
    /// as for `run --input`). "eval" gives an expression's value (tried as `return CODE`,
    /// then as a statement, as Lua's REPL does). "call" and "has_function" take a global
    /// name, a dotted one (`M.f`, `utils.map`) or a callable table (a __call metatable),
    /// found by raw lookups (no metamethod runs). exec, eval and call accept "timeout" (a
    /// duration, `200ms`) and "instructions" (a count): they lower the session's limits
    /// for that request, never raise them.
    ///
    /// Responses to exec, eval and call are the document of `run --json` ("ok", "result",
    /// "results", "output", "output_truncated", "error" with its "line", "traceback",
    /// "value" and "hint", "stats" with "memory_bytes" in use after the request,
    /// "peak_memory_bytes" during it, and the request's "limits") plus "id"; those to
    /// has_function, close and refused requests have the same fields, "stats" null.
    /// "lint" runs nothing: its response adds "lint": {"findings", "manifest"} (as
    /// `moonjail lint --json`; the chunk is judged alone, against a fresh sandbox).
    /// A line that is not UTF-8, not JSON, not one of these requests
    /// (unknown op, missing, unknown or mistyped field) or longer than --request-limit
    /// gets an error response (kind "input", the message names the op or field) and the
    /// session goes on. Time and instruction limits are per request; memory covers the
    /// whole state. After a timeout or an instruction limit the session is closed and
    /// every later request fails with that reason. Host tools (--tool, --allow-http) are
    /// there in every request, with quotas per request; a response lists the request's
    /// own calls in "tool_calls".
    ///
    /// Durable sessions (see --journal, --restore, --fork, docs/JOURNAL.md): --journal FILE
    /// records every exec, eval, call and has_function request with its tool calls, file
    /// reads and response (fsynced before the response is printed); --restore FILE
    /// rebuilds the state by replaying them (no tool runs, no file is read, each response
    /// checked against the recorded one: a difference names the request, exit status 2)
    /// and goes on recording into FILE; --fork restores into a new session without
    /// touching FILE (a dry run). Exit status 2 also when the journal fails (its limit).
    ///
    /// Examples:
    ///   printf '%s\n' '{"id":1,"op":"exec","code":"n = 0 function bump() n = n + 1 return n end"}' \
    ///     '{"id":2,"op":"call","function":"bump"}' | moonjail session
    ///   moonjail session --profile aos --modules ./process --journal ao.jsonl   # killed later...
    ///   moonjail session --profile aos --modules ./process --restore ao.jsonl   # ...goes on
    ///   echo '{"op":"eval","code":"#Inbox"}' | moonjail session --restore ao.jsonl --fork --upto 6
    #[command(verbatim_doc_comment)]
    Session(SessionArgs),
    /// Serve the sandbox to an MCP client (Claude Desktop, an IDE, an agent framework)
    /// over stdio: JSON-RPC on stdin and stdout, logs (with -v) on stderr. Configure it
    /// with the sandbox flags of `run`; the client starts it and ends it by closing stdin.
    ///
    /// Tools:
    ///   run_lua        {code, input?, expression?}: one script in a fresh sandbox
    ///   lint_lua       {code}: check it against this sandbox without running it
    ///   session_open   {}: a persistent state, returns {"session_id"}
    ///   session_exec   {session_id, code, input?}: run code in it (globals persist)
    ///   session_eval   {session_id, code}: an expression's value
    ///   session_call   {session_id, function, args?}: call a function of it
    ///   session_close  {session_id}
    ///   resume_lua     {run_id, answer? | error?}: with --defer-tool only (below)
    /// Sessions belong to the connection and close with it; at most --max-sessions are
    /// open at once. Their descriptions tell the model the profile, every limit and the
    /// host tools (--tool, --allow-http, json) with their signatures, as `moonjail tools`
    /// lists them.
    ///
    /// Human approval (--defer-tool NAME): a script's call to NAME waits for a person.
    /// A client that can ask its user (MCP form elicitation) is asked for the call's
    /// answer within the same run_lua; declining gives the script the tool's error. A
    /// client that cannot gets the run back suspended (error kind "suspended", its id in
    /// error.value.run), for resume_lua to answer. At most --max-suspended runs wait.
    ///
    /// Each result's structured content is the document of `run --json` ("ok", "result",
    /// "results", "output", "error" with "kind", "message", "line", "traceback", "value",
    /// "hint", "stats"), and its text a rendering for the model. A script that fails is a
    /// tool error (isError: true) the model can read and fix; so are malformed
    /// arguments, an unknown session id and a session past the cap.
    ///
    /// Register it in a client's configuration, e.g.:
    ///   {"mcpServers": {"lua": {"command": "moonjail",
    ///                           "args": ["mcp", "--timeout", "2s", "--memory", "32MiB"]}}}
    ///
    /// Examples:
    ///   moonjail mcp --timeout 2s
    ///   moonjail mcp --profile minimal --instructions 10000000 --max-sessions 2
    ///   moonjail mcp --isolate --tool 'weather.lookup=python3 w.py' \
    ///     --tool-schema weather.lookup=weather.schema.json
    ///   moonjail mcp --defer-tool payments.send --ask-timeout 5m
    #[command(verbatim_doc_comment)]
    Mcp(Box<McpArgs>),
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
    /// Print the tools a script gets with these sandbox flags: host tools (--tool, with
    /// --tool-schema and --tool-description), http (--allow-http) and json (in profiles
    /// that have it), with descriptions and argument schemas.
    ///
    /// Output: a readable list; --json, one document for programs (an MCP tool list is
    /// each entry's name, description and parameters); --lua-stubs, LuaLS annotations
    /// to paste into a model's prompt.
    ///
    /// Examples:
    ///   moonjail tools
    ///   moonjail tools --tool 'weather.lookup=python3 w.py' \
    ///     --tool-schema weather.lookup=weather.schema.json --lua-stubs
    ///   moonjail tools --allow-http api.example.com --allow-http '*.example.org' --json
    #[command(verbatim_doc_comment)]
    Tools(Box<ToolsArgs>),
    /// Serve the sandbox over HTTP: one-off runs and persistent sessions for programs in
    /// any language, behind API keys, with bounded queues and Prometheus metrics.
    ///
    /// Routes (the full description, with every schema: GET /openapi.json):
    ///   POST   /v1/run                        {code, input?, profile?, limits?, expression?}
    ///   POST   /v1/lint                       {code, profile?}  -> {findings, manifest}
    ///   POST   /v1/sessions                   {profile?, limits?}  -> {id, expires_at}
    ///   POST   /v1/sessions/ID/exec           {code, input?, timeout?, instructions?}
    ///   POST   /v1/sessions/ID/eval           {code, timeout?, instructions?}
    ///   POST   /v1/sessions/ID/call           {function, args?, timeout?, instructions?}
    ///   POST   /v1/sessions/ID/has_function   {name}  -> {name, exists}
    ///   DELETE /v1/sessions/ID
    ///   GET    /healthz  /readyz  /metrics  /openapi.json
    /// Runs and session calls answer the document of `run --json` (a script's failure is a
    /// 200 with "ok": false). Refusals are {"error": {"kind", "message"}}: 400 malformed
    /// body or a limit over the server's (the message names the field), 401 no or bad key,
    /// 404 no such route or session (another key's session is not found either), 413 body
    /// too large, 429 the key's rate, concurrency or session cap (Retry-After), 503 every
    /// executor busy and the queue full (Retry-After).
    ///
    /// The sandbox flags (--memory, --timeout, --instructions, --output-limit...) set the
    /// MAXIMUM: a request's "limits" may ask for less ({"timeout": "200ms", "memory":
    /// "16MiB"}), never more. --isolate runs every script in a locked-down worker process
    /// (--workers of them, kept warm; a session gets its own).
    ///
    /// Example:
    ///   moonjail keys add alice --keys keys.txt          # prints the key once
    ///   moonjail serve --listen 127.0.0.1:8080 --keys keys.txt --isolate --timeout 2s
    ///   curl -s localhost:8080/v1/run -H "Authorization: Bearer $KEY" \
    ///     -d '{"code": "return (...).n * 2", "input": {"n": 21}}'
    ///
    /// Connections: a request's head must arrive within --header-timeout of its first
    /// byte, a connection with no request in progress closes after --idle-timeout, and at
    /// most --max-connections are open at once (slow clients cannot hold them).
    ///
    /// Stops on SIGTERM or SIGINT: no new connections, requests in flight get --grace to
    /// finish (then are cancelled), then sessions are closed and the command exits 0.
    #[command(verbatim_doc_comment)]
    Serve(Box<ServeArgs>),
    /// Manage the API keys of `moonjail serve`: a key file stores names and SHA-256
    /// hashes only; a key is printed once, when it is added.
    ///
    /// Examples:
    ///   moonjail keys add alice --keys keys.txt
    ///   moonjail keys list --keys keys.txt
    ///   moonjail keys remove alice --keys keys.txt
    #[command(verbatim_doc_comment)]
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
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
        /// Print one JSON document. A misuse (status 2) is the document of `run --json`,
        /// error kind "input".
        #[arg(long)]
        json: bool,
    },
}

/// The script failed (any error kind), a check did, or lint found errors.
const FAILED: u8 = 1;
/// The command was misused: a bad flag or value, an unreadable or over-limit file, a
/// sandbox that cannot be built. Under `--json` also one document, error kind `input`.
const MISUSE: u8 = 2;
/// The run stopped at a deferred tool call (`--defer-tool`), to be resumed from its
/// journal (`moonjail resume`).
const SUSPENDED: u8 = 3;

fn main() -> ExitCode {
    // Started as a worker process by `--isolate` (this executable re-run with a hidden
    // first argument): serve, and never come back.
    moonjail::worker::run_if_worker();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(e),
    };
    let json = cli.json();
    match dispatch(cli) {
        Ok(code) => code,
        // The reader went away: nothing is wrong, and no one is left to tell.
        Err(_) if output::closed() => ExitCode::SUCCESS,
        Err(e) => misuse(json, &format!("{e:#}")),
    }
}

impl Cli {
    /// Whether the command was asked for one JSON document, failures included.
    fn json(&self) -> bool {
        match &self.command {
            Command::Run(args) => args.json,
            Command::Replay(args) => args.json,
            Command::Resume(args) => args.json,
            Command::Lint(args) => args.json,
            Command::Check(args) => args.json,
            Command::Tools(args) => args.json,
            Command::Profile {
                command: ProfileCommand::Show { json, .. },
            } => *json,
            Command::Doctor { json } => *json,
            Command::Session(_)
            | Command::Mcp(_)
            | Command::Serve(_)
            | Command::Keys { .. }
            | Command::Profile {
                command: ProfileCommand::List,
            } => false,
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Replay(args) => replay(*args),
        Command::Resume(args) => resume(*args),
        Command::Lint(args) => lint(*args),
        Command::Session(args) => session(args),
        Command::Mcp(args) => mcp(*args),
        Command::Serve(args) => serve(*args),
        Command::Keys { command } => keys(command),
        Command::Check(args) => check(args),
        Command::Tools(args) => tools(*args),
        Command::Profile { command } => profile(command),
        Command::Doctor { json } => doctor(json),
    }
}

/// The command line did not parse. Help and version are printed as asked; a real error
/// is a misuse, reported as a JSON document when `--json` is among the arguments (the
/// caller asked for JSON even if clap could not tell which command it belongs to).
fn parse_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        // --help, --version: stdout, and a closed stdout is nobody's problem.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    if json {
        let message = e.render().to_string();
        let message = message.trim_end();
        misuse(true, message.strip_prefix("error: ").unwrap_or(message))
    } else {
        let _ = e.print();
        ExitCode::from(MISUSE)
    }
}

/// Reports a misuse: one JSON document on stdout under `--json` (unless stdout already
/// has one), a line on stderr otherwise.
fn misuse(json: bool, message: &str) -> ExitCode {
    if json && !output::wrote() {
        let doc = output::misuse_document(message);
        let mut out = output::stdout();
        let written = writeln!(out, "{}", moonjail::to_json_line(&doc)).and_then(|()| out.flush());
        if written.is_err() && output::closed() {
            return ExitCode::SUCCESS;
        }
    } else {
        output::warn(format_args!("moonjail: {message}"));
    }
    ExitCode::from(MISUSE)
}
