//! The tool descriptions a model reads, generated from the sandbox itself: its profile,
//! its limits, the host tools its scripts can call (the catalogue `moonjail tools`
//! prints) and the notes of the front end that built it. Nothing here is written per
//! configuration: change a flag and the descriptions follow.

use std::fmt::Write as _;

use moonjail::units::{format_duration, format_size};
use moonjail::{Limits, OutputOverflow, Sandbox};

/// What the descriptions are made from.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub sandbox: &'a Sandbox,
    /// Lines the front end adds about its configuration (isolation, modules, files).
    pub notes: &'a [String],
    /// Live sessions allowed per connection.
    pub max_sessions: usize,
    /// Runs a connection may keep waiting for resume_lua.
    pub max_suspended: usize,
}

/// The descriptions of every tool, and the server's instructions.
#[derive(Debug, Clone)]
pub(crate) struct Descriptions {
    pub run_lua: String,
    pub resume_lua: String,
    pub lint_lua: String,
    pub session_open: String,
    pub session_exec: String,
    pub session_eval: String,
    pub session_call: String,
    pub session_close: String,
    pub instructions: String,
}

impl Descriptions {
    pub fn new(facts: &Facts<'_>) -> Descriptions {
        let environment = environment(facts);
        let run_lua = format!(
            "Run a Lua 5.4 script in a fresh sandbox and get its outcome. The results are the \
             chunk's return values, or, if the script defines a global function `run`, what \
             `run(input)` returns; `input` (any JSON) is also the chunk's vararg (`local input \
             = ...`; JSON null is nil). With `expression: true`, `code` may be an expression \
             (`1 + 1`, `#t`), as in Lua's REPL. Every call starts from nothing: use the \
             session_* tools to keep state between calls.\n\
             \n\
             The outcome: `ok`, `result` (the first value returned), `results` (all of them), \
             `output` (what the script printed), `error` (on failure: `kind`, `message`, \
             `line`, `traceback`, `value`, `hint`) and `stats` (what the run used of each \
             limit). A failed script is reported as a tool error (isError) with these fields, \
             so fix the code and call again.\n\
             \n\
             {environment}"
        );
        let resume_lua = format!(
            "Answer the deferred host tool call a suspended run waits at, and let the run go \
             on. run_lua gives a suspended run (error kind `suspended`, not a failure) when \
             its script calls a deferred tool and the user could not be asked here: \
             `error.value` holds the pending call (`name`, `args`) and its id, `run`, to pass \
             here as run_id, with either `answer` (any JSON: what the call returns to the script) or \
             `error` (a message the script gets as the tool's error, e.g. a refusal). The \
             result is the outcome of run_lua: finished, or suspended again at the next \
             deferred call with a new run_id. Each run_id answers one call; at most {max} \
             runs wait at once on this connection, and they end with it.",
            max = facts.max_suspended,
        );
        let lint_lua = format!(
            "Check a Lua 5.4 script against this exact sandbox without running it: syntax \
             errors (with what Lua spells instead of another language's habit), globals and \
             library members the sandbox does not have (with the nearest name), wrong \
             argument counts, malformed patterns, tool calls whose literal arguments break \
             the tool's schema, HTTP destinations the allowlist refuses, and the usual \
             warnings (unused locals, loops from 0). Returns `findings` (each `rule`, \
             `severity` error|warning|info, `line`, `column`, `end_line`, `end_column`, \
             `message`, `suggestion`) and `manifest` (what the script reaches); an error \
             finding makes the result a tool error. Fast: call it before run_lua.\n\
             \n\
             {environment}"
        );
        let session_open = format!(
            "Open a persistent Lua state and get its `session_id`: globals and functions \
             defined by session_exec stay for the next session_exec, session_eval and \
             session_call. The session lives until session_close or the end of this MCP \
             connection; at most {max} sessions are open at once per connection. Time and \
             instruction limits apply per request, memory to the whole state; after a \
             timeout or an instruction limit the session is closed (its state may be \
             half-updated) and later requests fail with that reason; after any other error \
             it goes on.\n\
             \n\
             {environment}",
            max = facts.max_sessions,
        );
        let session_exec = "Run Lua code in an open session (see session_open); its globals \
             persist. `input` (any JSON) is the chunk's vararg (`local input = ...`). Returns \
             the outcome of run_lua: `ok`, `result`, `results`, `output`, `error` (`kind`, \
             `message`, `line`, `traceback`, `value`, `hint`), `stats`."
            .to_string();
        let session_eval = "The value of a Lua expression in an open session (`count`, \
             `#queue`, `state.items[1]`), as Lua's REPL gives it: `code` is tried as `return \
             CODE`, then as a statement. Returns the outcome of run_lua."
            .to_string();
        let session_call = "Call a function of an open session by name (global, or dotted: \
             `M.f`, `utils.map`; a table with a __call metamethod works too) with `args`, a \
             JSON array of its arguments (absent: none). The results are its return values. \
             Returns the outcome of run_lua."
            .to_string();
        let lowered = " `timeout` (e.g. `\"200ms\"`) and `instructions` give this request \
             lower limits than the session's (never higher).";
        let session_exec = session_exec + lowered;
        let session_eval = session_eval + lowered;
        let session_call = session_call + lowered;
        let session_close = "Close an open session and free its state. Sessions also close \
             with the MCP connection."
            .to_string();
        let instructions = format!(
            "moonjail runs untrusted Lua 5.4 in a sandbox. lint_lua checks a script against \
             it without running it; run_lua runs one script in a fresh \
             state; session_open gives a state that persists across session_exec, \
             session_eval and session_call until session_close. {}",
            summary(facts)
        );
        Descriptions {
            run_lua,
            resume_lua,
            lint_lua,
            session_open,
            session_exec,
            session_eval,
            session_call,
            session_close,
            instructions,
        }
    }
}

/// One paragraph: the profile and the limits.
fn summary(facts: &Facts<'_>) -> String {
    let profile = facts.sandbox.profile().spec();
    format!(
        "Profile: {} ({}). Limits: {}.",
        profile.name,
        profile.summary,
        limits(facts.sandbox.limits())
    )
}

/// What a script can reach and under which limits: the profile, the limits, the host
/// tools, the front end's notes.
fn environment(facts: &Facts<'_>) -> String {
    let sandbox = facts.sandbox;
    let mut out = summary(facts);
    out.push_str(
        " A script that passes a limit fails with that limit's kind (timeout, \
         memory_limit, instruction_limit, output_limit); stats says how close a run came.",
    );
    if let Some(d) = &sandbox.spec().deterministic {
        let _ = write!(
            out,
            " Deterministic: os.time() returns {}, math.random is seeded with {}.",
            d.timestamp, d.seed
        );
    }
    for note in facts.notes {
        let _ = write!(out, " {}", note.trim_end());
    }
    let catalogue = sandbox.tool_catalogue();
    if catalogue.tools.is_empty() {
        out.push_str(
            "\n\nNo host tools: there is no file, network or process access; a script \
             computes from its input and returns a result.",
        );
    } else {
        out.push_str(
            "\n\nFunctions the host provides (call them from Lua; arguments and results \
             cross as JSON; a failed call raises an error pcall can catch). There is no \
             other file, network or process access.\n",
        );
        out.push_str(catalogue.to_text().trim_end());
        if let Some(quota) = sandbox.tools().and_then(|t| t.quota().per_run) {
            let _ = write!(out, "\nAt most {quota} host tool calls per run.");
        }
        let deferred: Vec<&str> = sandbox
            .tools()
            .map_or(Vec::new(), |t| t.deferred().collect());
        if !deferred.is_empty() {
            let _ = write!(
                out,
                "\nDeferred (answered by a person, not by the sandbox): {}. In run_lua, a \
                 call to one waits while the user is asked for its answer, or, when they \
                 cannot be asked here, suspends the run for resume_lua. In a session, such \
                 a call ends the request as `suspended`, and it cannot be resumed.",
                deferred.join(", ")
            );
        }
    }
    out
}

/// The limits, as people write them.
fn limits(l: &Limits) -> String {
    let size = |bytes: Option<usize>| match bytes {
        Some(b) => format_size(b as u64),
        None => "unlimited".to_string(),
    };
    let timeout = match l.timeout {
        Some(t) => format!("timeout {} per run", format_duration(t)),
        None => "no timeout".to_string(),
    };
    let instructions = match l.instructions {
        Some(n) => format!("{n} instructions"),
        None => "no instruction limit".to_string(),
    };
    let overflow = match l.output_overflow {
        OutputOverflow::Fail => "",
        OutputOverflow::Truncate => " (past it the output is truncated, the run goes on)",
    };
    format!(
        "{timeout}, memory {} (Lua heap), {instructions}, output {}{overflow}, source {}, \
         result {} and {} levels deep",
        size(l.memory_bytes),
        size(l.output_bytes),
        size(l.source_bytes),
        size(l.result_bytes),
        l.result_depth,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use moonjail::{Profile, ToolSpec};
    use serde_json::json;

    use super::*;

    fn describe(sandbox: &Sandbox, notes: &[String]) -> Descriptions {
        Descriptions::new(&Facts {
            sandbox,
            notes,
            max_sessions: 8,
            max_suspended: 16,
        })
    }

    #[test]
    fn the_limits_are_the_sandbox_s() {
        let sandbox = Sandbox::builder()
            .timeout(Duration::from_secs(2))
            .memory_limit(16 << 20)
            .instruction_limit(1_000_000)
            .output_limit(64 << 10)
            .build()
            .unwrap();
        let d = describe(&sandbox, &[]);
        for text in [&d.run_lua, &d.session_open] {
            assert!(text.contains("timeout 2 s per run"), "{text}");
            assert!(text.contains("memory 16 MiB"), "{text}");
            assert!(text.contains("1000000 instructions"), "{text}");
            assert!(text.contains("output 64 KiB"), "{text}");
            assert!(text.contains("Profile: standard"), "{text}");
        }
        assert!(d.instructions.contains("timeout 2 s per run"));
    }

    #[test]
    fn no_limit_is_said_as_such() {
        let sandbox = Sandbox::builder()
            .no_timeout()
            .no_memory_limit()
            .build()
            .unwrap();
        let d = describe(&sandbox, &[]);
        assert!(d.run_lua.contains("no timeout"), "{}", d.run_lua);
        assert!(d.run_lua.contains("memory unlimited"), "{}", d.run_lua);
        assert!(d.run_lua.contains("no instruction limit"), "{}", d.run_lua);
    }

    #[test]
    fn host_tools_are_listed_with_their_descriptions() {
        let sandbox = Sandbox::builder()
            .tool("calc.add", |args| Ok(json!(args.len())))
            .describe_tool(
                "calc.add",
                ToolSpec::new()
                    .description("Adds two numbers.")
                    .parameters(json!({"type": "array", "prefixItems": [
                        {"type": "number"}, {"type": "number"}]})),
            )
            .build()
            .unwrap();
        let d = describe(&sandbox, &[]);
        assert!(d.run_lua.contains("calc.add("), "{}", d.run_lua);
        assert!(d.run_lua.contains("Adds two numbers."), "{}", d.run_lua);
        assert!(
            d.run_lua.contains("host tool calls per run"),
            "{}",
            d.run_lua
        );
        // The standard profile's json library is in the catalogue too.
        assert!(d.run_lua.contains("json.encode"), "{}", d.run_lua);
        assert!(d.session_open.contains("calc.add("), "{}", d.session_open);
    }

    #[test]
    fn a_profile_without_tools_says_so() {
        let sandbox = Sandbox::builder()
            .profile(Profile::Minimal)
            .build()
            .unwrap();
        let d = describe(&sandbox, &[]);
        assert!(d.run_lua.contains("Profile: minimal"), "{}", d.run_lua);
        assert!(d.run_lua.contains("No host tools"), "{}", d.run_lua);
        assert!(!d.run_lua.contains("json."), "{}", d.run_lua);
    }

    #[test]
    fn notes_and_the_session_cap_are_included() {
        let sandbox = Sandbox::default();
        let notes = ["Each run happens in a locked-down worker process.".to_string()];
        let d = Descriptions::new(&Facts {
            sandbox: &sandbox,
            notes: &notes,
            max_sessions: 3,
            max_suspended: 16,
        });
        assert!(d.run_lua.contains("locked-down worker process"));
        assert!(d.session_open.contains("at most 3 sessions"));
    }

    #[test]
    fn determinism_is_told() {
        let sandbox = Sandbox::builder()
            .deterministic(Some(moonjail::Determinism {
                timestamp: 1_700_000_000,
                seed: 7,
            }))
            .build()
            .unwrap();
        let d = describe(&sandbox, &[]);
        assert!(d.run_lua.contains("os.time() returns 1700000000"));
    }
}
