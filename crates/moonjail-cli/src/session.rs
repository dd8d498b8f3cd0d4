//! `moonjail session`: one persistent sandbox driven over JSON lines.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::args::SandboxArgs;
use crate::output;

#[derive(Args, Debug)]
pub struct SessionArgs {
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

pub fn session(args: SessionArgs) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    let sandbox = args.sandbox.build(false, false)?;
    let mut vm = sandbox.session()?;
    let stdin = std::io::stdin();
    let mut stdout = output::stdout();
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
                let has = vm.has_function(name);
                return (
                    json!({"id": id, "ok": true, "result": has, "output": "",
                               "error": null, "stats": null}),
                    false,
                );
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
