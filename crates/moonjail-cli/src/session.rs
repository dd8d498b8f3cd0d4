//! `moonjail session`: one persistent sandbox driven over JSON lines.
//!
//! Whatever arrives on stdin, the session answers each line and goes on: a line that is
//! not UTF-8, not JSON, not a known request or longer than `--request-limit` gets an
//! `input` error response. Only `close`, the end of stdin, a read error or a closed stdout
//! end it.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::args::{self, SandboxArgs};
use crate::output;

#[derive(Args, Debug)]
pub struct SessionArgs {
    /// Limit on one request line; a longer line is skipped (never held in memory) and
    /// answered with an `input` error. Default: 16MiB plus --source-limit (none when
    /// --source-limit is none); `none` for no limit.
    #[arg(long, value_name = "SIZE")]
    pub request_limit: Option<String>,
    /// Record the session into FILE (created or truncated; JSON lines, see
    /// docs/JOURNAL.md), so that `--restore FILE` can rebuild its state later: the
    /// sandbox's spec, time and seed, then every exec, eval, call and has_function
    /// request with each tool call and its answer, each module and file read with its
    /// content, and the response. A request's lines are written and fsynced before its
    /// response is printed (see --journal-fsync): a response you saw is in the journal.
    /// lint, close and refused requests change no state and are not recorded. Without
    /// --deterministic the session is made deterministic with a fresh seed, recorded,
    /// and its clock still moves: os.time() is the time each request started (fixed
    /// within the request), recorded in its line, and a restore replays each request at
    /// its recorded time. With --restore --fork: record the fork into FILE instead.
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// The journal's size limit (the whole file, restored requests included); a request
    /// whose lines would pass it is stopped, answered with an error, and the command
    /// exits 2 (the journal stays restorable up to the previous request). Also the
    /// largest journal --restore reads. `none` for no limit.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub journal_limit: String,
    /// Rebuild the state of a session recorded with --journal FILE, then go on with it,
    /// recording into FILE. The recorded requests are replayed in order, every tool call
    /// and file read answered from the journal (no tool runs, no file is opened), and
    /// each replayed response is checked against the recorded one: a difference is an
    /// error naming the request (status 2, FILE untouched). A last request without a
    /// response (the process was killed during it, so no one saw its answer) is cut off
    /// FILE. Give the sandbox flags the session was recorded with (--profile, limits,
    /// --tool, --modules, --read, --deterministic...); --isolate may differ.
    ///
    /// Example (the session is killed, then continued where it was):
    ///   moonjail session --journal s.jsonl < requests-1.jsonl
    ///   moonjail session --restore s.jsonl < requests-2.jsonl
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub restore: Option<PathBuf>,
    /// When the journal is fsynced: `response`, after each response's line, before the
    /// response is printed (a response you saw survives a crash of the machine; costs a
    /// disk flush per request, milliseconds on many disks); `end`, when the session ends
    /// (a response you saw survives the process being killed, as every line is flushed
    /// when written, but a crash of the machine may lose the last requests).
    #[arg(long, value_name = "WHEN", default_value = "response", value_parser = ["response", "end"])]
    pub journal_fsync: String,
    /// With --restore: restore into a new session and leave FILE untouched (a dry run:
    /// evaluate a message against the state, then discard it); with --journal NEW the
    /// fork is recorded into NEW (the restored requests copied first).
    #[arg(long, requires = "restore")]
    pub fork: bool,
    /// With --fork: restore only the first N requests of the journal.
    #[arg(long, value_name = "N", requires = "fork")]
    pub upto: Option<u64>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// The default request limit on top of the source limit: room for `call` arguments, and
/// for the JSON escaping of an `exec` request's code.
const REQUEST_OVERHEAD: usize = 16 << 20;

/// The ops of [`Request`], as a request spells them.
const OPS: [&str; 6] = ["exec", "eval", "call", "has_function", "lint", "close"];

/// The ops, as error messages list them.
const OP_LIST: &str = "exec, eval, call, has_function, lint, close";

/// One request, `id` aside (it is echoed whatever it is, so it is taken out first).
#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    /// Run a chunk in the session's state, with `input` as its vararg.
    Exec {
        #[serde(deserialize_with = "field::code")]
        code: String,
        #[serde(default)]
        input: Value,
        #[serde(default, deserialize_with = "field::timeout")]
        timeout: Option<String>,
        #[serde(default, deserialize_with = "field::instructions")]
        instructions: Option<u64>,
    },
    /// The value of an expression (tried as `return CODE`, then as a statement).
    Eval {
        #[serde(deserialize_with = "field::code")]
        code: String,
        #[serde(default, deserialize_with = "field::timeout")]
        timeout: Option<String>,
        #[serde(default, deserialize_with = "field::instructions")]
        instructions: Option<u64>,
    },
    /// Call a function (dotted names and callable tables too) with JSON arguments
    /// (absent or null: none).
    Call {
        #[serde(deserialize_with = "field::function")]
        function: String,
        #[serde(default, deserialize_with = "field::args")]
        args: Option<Vec<Value>>,
        #[serde(default, deserialize_with = "field::timeout")]
        timeout: Option<String>,
        #[serde(default, deserialize_with = "field::instructions")]
        instructions: Option<u64>,
    },
    /// Whether a global function of that name exists.
    HasFunction {
        #[serde(deserialize_with = "field::name")]
        name: String,
    },
    /// Check a chunk against the session's sandbox without running it.
    Lint {
        #[serde(deserialize_with = "field::code")]
        code: String,
    },
    /// End the session. A struct variant so that unknown fields are refused here too.
    Close {},
}

/// A request's own limits, lower than the session's (a higher one is the session's):
/// `timeout` in the CLI's units (`200ms`), `instructions` a count. (Fields of each
/// variant rather than one flattened struct: serde cannot refuse unknown fields
/// through `flatten`.)
fn lowered(
    timeout: Option<&str>,
    instructions: Option<u64>,
) -> Result<moonjail::CallOptions, String> {
    moonjail::CallOptions::parse(timeout, instructions).map_err(|e| match e {
        moonjail::ConfigError::InvalidLimit { name, reason } => {
            format!("field `{name}`: {reason}")
        }
        e => format!("field `timeout`: {e}"),
    })
}

/// Field deserializers that name their field: serde's "invalid type: integer `5`,
/// expected a string" alone does not say which field was wrong.
mod field {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Value;

    fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        name: &str,
    ) -> Result<T, D::Error> {
        T::deserialize(d).map_err(|e| D::Error::custom(format_args!("field `{name}`: {e}")))
    }

    pub fn code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        named(d, "code")
    }

    pub fn function<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        named(d, "function")
    }

    pub fn args<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
        named(d, "args")
    }

    pub fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        named(d, "name")
    }

    pub fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        named(d, "timeout")
    }

    pub fn instructions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        named(d, "instructions")
    }
}

/// One line of input, read under the request limit.
#[derive(Debug, PartialEq)]
enum Line {
    /// A line (without its newline) in the caller's buffer.
    Text,
    /// A line longer than `limit`, skipped up to and including its newline.
    TooLong { limit: usize },
    /// The end of the input.
    End,
}

/// Reads one line into `buf`, holding at most `limit + 1` bytes of it: past that the rest
/// of the line is skipped in the reader's own chunks, never buffered.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: Option<usize>,
) -> std::io::Result<Line> {
    buf.clear();
    let max = limit.map_or(u64::MAX, |l| (l as u64).saturating_add(1));
    let n = std::io::Read::take(&mut *reader, max).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Text);
    }
    if let Some(limit) = limit.filter(|&l| buf.len() > l) {
        buf.clear();
        reader.skip_until(b'\n')?;
        return Ok(Line::TooLong { limit });
    }
    // The last line, without a newline.
    Ok(Line::Text)
}

/// Answers request lines until `close`, the end of stdin or a closed stdout.
pub fn session(args: SessionArgs) -> anyhow::Result<ExitCode> {
    let limit = match &args.request_limit {
        Some(text) => args::size(text).context("--request-limit")?,
        None => args::size(&args.sandbox.source_limit)
            .context("--source-limit")?
            .map(|source| source.saturating_add(REQUEST_OVERHEAD)),
    };
    args.sandbox.refuse_deferred("session")?;
    let sandbox = args.sandbox.build(false, false)?;
    let mut vm = open(&args, &sandbox)?;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = output::stdout();
    let mut buf = Vec::new();
    loop {
        let line = read_line(&mut stdin, &mut buf, limit)
            .context("reading a request from standard input")?;
        let (response, close) = match line {
            Line::End => break,
            Line::TooLong { limit } => (
                input_error(
                    Value::Null,
                    format!(
                        "the request is over the --request-limit of {limit} bytes; it was skipped"
                    ),
                ),
                false,
            ),
            Line::Text if buf.trim_ascii().is_empty() => continue,
            Line::Text => match std::str::from_utf8(&buf) {
                Ok(text) => match answer(&mut vm, &sandbox, text) {
                    Ok(answered) => answered,
                    Err((response, error)) => {
                        // The request got its answer; the session cannot go on unrecorded.
                        writeln!(stdout, "{}", moonjail::to_json_line(&response))?;
                        stdout.flush()?;
                        return Err(error);
                    }
                },
                Err(e) => (
                    input_error(
                        Value::Null,
                        format!(
                            "the request is not UTF-8 (invalid byte at offset {})",
                            e.valid_up_to()
                        ),
                    ),
                    false,
                ),
            },
        };
        writeln!(stdout, "{}", moonjail::to_json_line(&response))?;
        stdout.flush()?;
        if close {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The response to a request that could not be carried out as written: the shape of
/// every response, with an `input` error (built from an `Outcome`, so the error has the
/// contract's shape), and `stats` null: nothing ran.
fn input_error(id: Value, message: String) -> Value {
    let error = moonjail::Error::new(moonjail::ErrorKind::Input, message);
    let mut doc = moonjail::Outcome::from_error(error).to_json();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("id".into(), id);
        obj.insert("stats".into(), Value::Null);
    }
    doc
}

/// The response to a request answered without running code (`has_function`, `close`):
/// the shape of every response, `stats` null.
fn answered(id: Value, result: Option<Value>) -> Value {
    let results: Vec<Value> = result.iter().cloned().collect();
    json!({"id": id, "ok": true, "result": result, "results": results, "output": "",
           "output_truncated": null, "error": null, "stats": null})
}

/// The session: plain, or recorded in a journal.
enum Vm {
    Plain(moonjail::Session),
    Journaled(moonjail::JournaledSession),
}

/// The session the flags ask for: plain, recorded (--journal), restored (--restore) or
/// forked (--restore --fork [--journal NEW]).
fn open(args: &SessionArgs, sandbox: &moonjail::Sandbox) -> anyhow::Result<Vm> {
    let limit = args::size(&args.journal_limit)
        .context("--journal-limit")?
        .map(|l| l as u64);
    let create = |path: &PathBuf| {
        moonjail::JournalWriter::create_locked(path)
            .with_context(|| format!("--journal {}", path.display()))
            .map(|w| w.limit(limit))
    };
    let mut vm = match (&args.restore, &args.journal) {
        (None, None) => Vm::Plain(sandbox.session()?),
        (None, Some(path)) => Vm::Journaled(
            sandbox
                .session_journaled(create(path)?)
                .with_context(|| format!("--journal {}", path.display()))?,
        ),
        (Some(file), Some(_)) if !args.fork => bail!(
            "--journal with --restore: a restored session goes on recording into the file it \
             was restored from ({}); to record into another file, add --fork",
            file.display()
        ),
        (Some(file), None) if !args.fork => Vm::Journaled(
            moonjail::restore_session(sandbox, file, limit)
                .with_context(|| format!("--restore {}", file.display()))?,
        ),
        (Some(file), new) => {
            let context = || format!("--restore {}", file.display());
            let journal = std::fs::File::open(file)
                .map_err(moonjail::JournalError::from)
                .and_then(|f| moonjail::SessionJournal::read(f, limit))
                .with_context(context)?;
            if let Some(new) = new {
                if same_file(file, new) {
                    bail!(
                        "--fork --journal {}: that is the journal being forked, which a fork \
                         leaves untouched; record the fork into another file",
                        new.display()
                    );
                }
            }
            let record = new.as_ref().map(create).transpose()?;
            Vm::Journaled(
                moonjail::fork_session(sandbox, &journal, args.upto, record)
                    .with_context(context)?,
            )
        }
    };
    if let Vm::Journaled(session) = &mut vm {
        session.sync_each_response(args.journal_fsync == "response");
    }
    Ok(vm)
}

/// Whether two paths name one file (a path that does not exist yet names none).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Answers one request line; true when the session should end. Err: the journal failed,
/// with the response to print before ending the session.
fn answer(
    vm: &mut Vm,
    sandbox: &moonjail::Sandbox,
    line: &str,
) -> Result<(Value, bool), (Value, anyhow::Error)> {
    let (id, request) = match parse(line, sandbox.limits()) {
        Ok(parsed) => parsed,
        Err((id, message)) => return Ok((input_error(id, message), false)),
    };
    let lowered_or = |timeout: Option<String>, instructions| {
        lowered(timeout.as_deref(), instructions)
            .map_err(|message| input_error(id.clone(), message))
    };
    let request = match request {
        Request::Exec {
            code,
            input,
            timeout,
            instructions,
        } => match lowered_or(timeout, instructions) {
            Ok(options) => moonjail::SessionRequest::Exec {
                code: code.into_bytes(),
                input,
                options,
            },
            Err(doc) => return Ok((doc, false)),
        },
        Request::Eval {
            code,
            timeout,
            instructions,
        } => match lowered_or(timeout, instructions) {
            Ok(options) => moonjail::SessionRequest::Eval {
                code: code.into_bytes(),
                options,
            },
            Err(doc) => return Ok((doc, false)),
        },
        Request::Call {
            function,
            args,
            timeout,
            instructions,
        } => match lowered_or(timeout, instructions) {
            Ok(options) => moonjail::SessionRequest::Call {
                function,
                args: args.unwrap_or_default(),
                options,
            },
            Err(doc) => return Ok((doc, false)),
        },
        Request::HasFunction { name } => moonjail::SessionRequest::HasFunction { name },
        Request::Lint { code } => {
            let mut doc = answered(id, None);
            if let Some(obj) = doc.as_object_mut() {
                obj.insert("lint".into(), json!(sandbox.lint(code)));
            }
            return Ok((doc, false));
        }
        Request::Close {} => return Ok((answered(id, None), true)),
    };
    let response = match vm {
        Vm::Plain(session) => session.perform(&request),
        Vm::Journaled(session) => match session.request(&request) {
            Ok(response) => response,
            Err(e) => {
                let error = moonjail::Error::new(moonjail::ErrorKind::Internal, e.to_string());
                let mut doc = moonjail::Outcome::from_error(error).to_json();
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert("id".into(), id);
                    obj.insert("stats".into(), Value::Null);
                }
                return Err((doc, e.into()));
            }
        },
    };
    let mut doc = match response {
        moonjail::SessionResponse::HasFunction(Ok(has)) => {
            return Ok((answered(id, Some(Value::Bool(has))), false))
        }
        // A closed session refuses has_function as it refuses every other op.
        moonjail::SessionResponse::HasFunction(Err(error)) => {
            moonjail::Outcome::from_error(error).to_json()
        }
        moonjail::SessionResponse::Outcome(outcome) => outcome.to_json(),
        other => other.to_json(),
    };
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("id".into(), id);
    }
    Ok((doc, false))
}

/// A request line as its id and request, or the id (null when unreadable) and why not.
fn parse(line: &str, limits: &moonjail::Limits) -> Result<(Value, Request), (Value, String)> {
    // Parsed within the sandbox's depth and memory limits: a request of a few megabytes
    // must not cost the host a gigabyte of JSON values.
    let value: Value = moonjail::parse_input(line.as_bytes(), limits).map_err(|e| {
        (
            Value::Null,
            format!("the request is not JSON: {}", e.message),
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err((
            Value::Null,
            "a request is a JSON object, e.g. {\"id\": 1, \"op\": \"exec\", \"code\": \"return 1\"}"
                .into(),
        ));
    };
    let id = fields.remove("id").unwrap_or(Value::Null);
    let op = match fields.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => {
            return Err((
                id,
                format!("\"op\" must be a string ({OP_LIST}), not {other}"),
            ))
        }
        None => return Err((id, format!("the request has no \"op\" ({OP_LIST})"))),
    };
    if !OPS.contains(&op.as_str()) {
        return Err((id, format!("unknown op {op:?} ({OP_LIST})")));
    }
    match Request::deserialize(Value::Object(fields)) {
        Ok(request) => Ok((id, request)),
        Err(e) => Err((id, format!("op {op:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_into_their_variant() {
        let limits = moonjail::Limits::default();
        let ok = |line: &str| parse(line, &limits).map(|(_, r)| r).map_err(|(_, m)| m);
        assert_eq!(
            ok(r#"{"op":"exec","code":"return 1"}"#),
            Ok(Request::Exec {
                code: "return 1".into(),
                input: Value::Null,
                timeout: None,
                instructions: None,
            })
        );
        assert_eq!(
            ok(r#"{"op":"call","function":"f","args":[1]}"#),
            Ok(Request::Call {
                function: "f".into(),
                args: Some(vec![json!(1)]),
                timeout: None,
                instructions: None,
            })
        );
        assert_eq!(
            ok(r#"{"op":"call","function":"f"}"#),
            Ok(Request::Call {
                function: "f".into(),
                args: None,
                timeout: None,
                instructions: None,
            })
        );
        assert_eq!(ok(r#"{"op":"close"}"#), Ok(Request::Close {}));
        assert_eq!(
            ok(r#"{"op":"lint","code":"x"}"#),
            Ok(Request::Lint { code: "x".into() })
        );
        let err = ok(r#"{"op":"frobnicate"}"#).unwrap_err();
        assert_eq!(
            err,
            "unknown op \"frobnicate\" (exec, eval, call, has_function, lint, close)"
        );
        let err = ok(r#"{"op":"exec","code":5}"#).unwrap_err();
        assert!(err.contains("field `code`: invalid type"), "{err}");
        let err = ok(r#"{"op":"exec","code":"x","bogus":1}"#).unwrap_err();
        assert!(err.contains("unknown field `bogus`"), "{err}");
        assert_eq!(
            ok(r#"{"op":"eval","code":"1","timeout":"10ms","instructions":5}"#),
            Ok(Request::Eval {
                code: "1".into(),
                timeout: Some("10ms".into()),
                instructions: Some(5),
            })
        );
        let err = ok(r#"{"op":"close","now":1}"#).unwrap_err();
        assert!(err.contains("unknown field `now`"), "{err}");
    }

    #[test]
    fn lines_are_read_under_the_limit() {
        let input = b"12345\n123456\n\n1234567890123\nabc";
        let mut reader = std::io::BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            let line = read_line(&mut reader, &mut buf, Some(5)).unwrap();
            if line == Line::End {
                break;
            }
            lines.push((line, String::from_utf8(buf.clone()).unwrap()));
        }
        // A limit as large as they come does not overflow.
        let mut reader = &b"x\n"[..];
        assert_eq!(
            read_line(&mut reader, &mut buf, Some(usize::MAX)).unwrap(),
            Line::Text
        );
        assert_eq!(
            lines,
            [
                (Line::Text, "12345".into()),
                (Line::TooLong { limit: 5 }, String::new()),
                (Line::Text, String::new()),
                (Line::TooLong { limit: 5 }, String::new()),
                (Line::Text, "abc".into()),
            ]
        );
    }
}
