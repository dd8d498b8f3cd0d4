//! An outcome as a tool result: the `--json` document as structured content, and a
//! text rendering for the model to read, failure first (kind, message, line, traceback,
//! value, hint), then output and stats.

use std::fmt::Write as _;

use moonjail::units::{format_duration, format_size};
use moonjail::{Error, ErrorKind, Outcome};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value as Json;

/// The tool result of an outcome. A failed script is a tool error (`isError: true`):
/// the call itself worked, and MCP's tool errors are what a model is meant to read and
/// correct (protocol errors are for calls that could not be routed). The structured
/// content is the outcome's `--json` document, exactly.
pub(crate) fn outcome(outcome: &Outcome) -> CallToolResult {
    let mut result = CallToolResult::structured(outcome.to_json());
    result.content = vec![ContentBlock::text(text(outcome))];
    result.is_error = Some(!outcome.is_ok());
    result
}

/// A request refused before any script ran (an unknown session, the session cap), in
/// the outcome's shape: kind `input`.
pub(crate) fn refused(message: impl Into<String>) -> CallToolResult {
    outcome(&Outcome::from_error(Error::new(ErrorKind::Input, message)))
}

/// A run suspended at a deferred call, as a tool result. Held under `id`, it is not a
/// failure (`isError: false`): `error.value.run` and the hint say how `resume_lua`
/// answers it. Not held (`max` runs wait already), it has ended there, and is an error.
pub(crate) fn suspended(outcome: &mut Outcome, id: Option<&str>, max: usize) -> CallToolResult {
    let held = id.is_some();
    if let Err(e) = &mut outcome.result {
        let call = match &e.value {
            Some(Json::Object(v)) => call(
                v.get("name").and_then(Json::as_str).unwrap_or("?"),
                v.get("args")
                    .and_then(Json::as_array)
                    .map_or(&[][..], Vec::as_slice),
            ),
            _ => "a deferred tool".to_string(),
        };
        match id {
            Some(id) => {
                if let Some(Json::Object(v)) = &mut e.value {
                    v.insert("run".to_string(), Json::String(id.to_string()));
                }
                e.hint = Some(format!(
                    "the run waits at {call}, a call the host answers, not the sandbox: do \
                     what it asks (or have the user decide), then call resume_lua with \
                     run_id \"{id}\" and `answer` (what the call returns to the script) or \
                     `error` (a refusal the script gets as the tool's error)"
                ));
            }
            None => {
                e.hint = Some(format!(
                    "the run stopped at {call} and cannot be resumed: {max} runs wait on \
                     this connection already (for resume_lua, or for the user's answer), \
                     the most allowed; answer them first, then run the script again"
                ));
            }
        }
    }
    let mut result = self::outcome(outcome);
    result.is_error = Some(!held);
    result
}

/// A tool call as people write it: `name(arg, ...)`, each argument as compact JSON, the
/// whole cut to a readable length. The arguments are written only up to that length (they
/// may be as large as the run's memory limit; this runs on an async thread).
pub(crate) fn call(name: &str, args: &[Json]) -> String {
    const MAX: usize = 2000;
    let mut text = Bounded(format!("{name}(").into_bytes(), MAX);
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            text.0.extend_from_slice(b", ");
        }
        // Stops with an error once the text is full.
        if serde_json::to_writer(&mut text, arg).is_err() {
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&text.0).into_owned();
    if text.len() >= MAX {
        let mut end = MAX.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text.push(')');
    text
}

/// Bytes up to a length; a write past it fails (after keeping what fits).
struct Bounded(Vec<u8>, usize);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.1.saturating_sub(self.0.len());
        if room == 0 {
            return Err(std::io::Error::other("full"));
        }
        let n = room.min(buf.len());
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The text a model reads.
pub(crate) fn text(outcome: &Outcome) -> String {
    let mut out = String::new();
    match &outcome.result {
        Ok(first) => {
            out.push_str("ok: the script succeeded\n");
            match outcome.result_count {
                0 => out.push_str("results: none (the script returned nothing)\n"),
                1 => {
                    let _ = writeln!(out, "result: {}", compact(first));
                }
                n => {
                    let all: Vec<Json> = outcome.results().into_iter().cloned().collect();
                    let _ = writeln!(out, "results ({n}): {}", compact(&Json::Array(all)));
                }
            }
        }
        Err(e) => error(&mut out, e),
    }
    if outcome.output.is_empty() {
        out.push_str("output: none\n");
    } else {
        let _ = writeln!(out, "output:\n{}", outcome.output.trim_end_matches('\n'));
        if let Some(t) = &outcome.output_truncated {
            let _ = writeln!(
                out,
                "(output truncated: {} bytes kept, {} dropped from the middle)",
                t.kept_bytes, t.dropped_bytes
            );
        }
    }
    stats(&mut out, outcome);
    out.trim_end().to_string()
}

fn error(out: &mut String, e: &Error) {
    let _ = writeln!(out, "error: {}", e.kind.as_str());
    let _ = writeln!(out, "message: {}", e.message);
    if let Some(line) = e.line {
        let _ = writeln!(out, "line: {line}");
    }
    if !e.traceback.is_empty() {
        out.push_str("traceback (innermost first):\n");
        for frame in &e.traceback {
            let name = match &frame.function {
                Some(f) => format!("in function '{f}'"),
                None => "in the main chunk or an unnamed function".to_string(),
            };
            let _ = writeln!(out, "  {}:{} {name}", frame.source, frame.line);
        }
    }
    if let Some(value) = &e.value {
        let _ = writeln!(out, "error value: {}", compact(value));
    }
    if let Some(hint) = &e.hint {
        let _ = writeln!(out, "hint: {hint}");
    }
}

/// One line: what the run used of each limit.
fn stats(out: &mut String, outcome: &Outcome) {
    let s = &outcome.stats;
    let b = &s.limits;
    let of = |used: String, limit: Option<String>| match limit {
        Some(limit) => format!("{used} of {limit}"),
        None => used,
    };
    let mut parts = vec![
        format!(
            "time {}",
            of(
                format!("{:.3} ms", s.wall.as_secs_f64() * 1e3),
                b.wall.map(format_duration)
            )
        ),
        format!(
            "peak memory {}",
            of(
                format!("{} B", s.peak_memory_bytes),
                b.memory_bytes.map(|m| format_size(m as u64))
            )
        ),
        format!(
            "output {}",
            of(
                format!("{} B", s.output_bytes),
                b.output_bytes.map(|m| format_size(m as u64))
            )
        ),
    ];
    if let Some(n) = s.instructions {
        parts.push(format!(
            "instructions {}",
            of(n.to_string(), b.instructions.map(|i| i.to_string()))
        ));
    }
    if s.tool_calls > 0 {
        parts.push(format!(
            "tool calls {}",
            of(
                s.tool_calls.to_string(),
                b.tool_calls.map(|t| t.to_string())
            )
        ));
    }
    let _ = writeln!(out, "stats: {}", parts.join(", "));
}

fn compact(value: &Json) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// A lint report as a tool result: the report as structured content, one line per
/// finding for the model, and `isError` when a finding is an error (the script would
/// fail or be refused).
pub(crate) fn lint(report: &moonjail::LintReport) -> CallToolResult {
    let doc = serde_json::to_value(report).unwrap_or(Json::Null);
    let mut text = if report.findings.is_empty() {
        "no findings: the script uses only what this sandbox has".to_string()
    } else {
        let mut lines = Vec::new();
        for f in &report.findings {
            let help = f
                .suggestion
                .as_deref()
                .map(|s| format!(" (help: {s})"))
                .unwrap_or_default();
            lines.push(format!(
                "{}:{}: {}[{}]: {}{help}",
                f.line, f.column, f.severity, f.rule, f.message
            ));
        }
        lines.join("\n")
    };
    if report.has_errors() {
        text.push_str("\nthe script would fail as written: fix the errors before running it");
    }
    let mut result = CallToolResult::structured(doc);
    result.content = vec![ContentBlock::text(text)];
    result.is_error = Some(report.has_errors());
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use moonjail::Sandbox;
    use serde_json::json;

    use super::*;

    fn run(code: &str) -> Outcome {
        Sandbox::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .run(code, &json!(null))
    }

    #[test]
    fn a_success_shows_the_result_and_the_output() {
        let out = run("print('hi') return {a = 1}");
        let text = text(&out);
        assert!(text.starts_with("ok: the script succeeded\nresult: {\"a\":1}\n"));
        assert!(text.contains("output:\nhi\n"), "{text}");
        assert!(text.contains("stats: time "), "{text}");
        let result = outcome(&out);
        assert_eq!(result.is_error, Some(false));
        assert_eq!(result.structured_content, Some(out.to_json()));
    }

    #[test]
    fn several_results_are_listed() {
        let text = text(&run("return nil, 'not found'"));
        assert!(text.contains("results (2): [null,\"not found\"]"), "{text}");
    }

    #[test]
    fn a_failure_shows_kind_message_line_and_traceback() {
        let out = run("local function f(x)\n  return x + nil\nend\nlocal y = f(1)\nreturn y");
        let text = text(&out);
        assert!(text.starts_with("error: runtime\nmessage: "), "{text}");
        assert!(text.contains("line: 2\n"), "{text}");
        assert!(
            text.contains("traceback (innermost first):\n  script:2 in function 'f'"),
            "{text}"
        );
        assert_eq!(outcome(&out).is_error, Some(true));
    }

    #[test]
    fn a_syntax_error_carries_its_hint() {
        let text = text(&run("if 1 != 2 then end"));
        assert!(text.starts_with("error: syntax\n"), "{text}");
        assert!(text.contains("hint: "), "{text}");
    }

    #[test]
    fn a_call_is_written_as_people_write_it_and_cut_when_long() {
        assert_eq!(
            call("payments.send", &[json!({"to": "bob"}), json!(5)]),
            r#"payments.send({"to":"bob"}, 5)"#
        );
        assert_eq!(call("ping", &[]), "ping()");
        let long = call("log", &[json!("é".repeat(1 << 20))]);
        assert!(long.len() <= 2010 && long.ends_with("…)"), "{}", long.len());
    }

    #[test]
    fn a_refusal_has_the_outcome_shape() {
        let result = refused("no session s9");
        let doc = result.structured_content.unwrap();
        assert_eq!(doc["ok"], json!(false));
        assert_eq!(doc["error"]["kind"], json!("input"));
        assert_eq!(doc["error"]["message"], json!("no session s9"));
        assert_eq!(result.is_error, Some(true));
    }
}
