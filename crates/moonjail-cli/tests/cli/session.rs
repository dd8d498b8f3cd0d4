//! `moonjail session` (JSON lines), `moonjail check` and the aos flags.

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn session_protocol_good_bad_and_interleaved_requests() {
    let (docs, code) = session(
        &["--timeout", "300ms"],
        &[
            r#"{"id":1,"op":"exec","code":"n = 0 function bump(k) n = n + (k or 1) print('n=' .. n) return n end"}"#,
            r#"{"id":"two","op":"call","function":"bump","args":[5]}"#,
            "this is not json",
            r#"{"id":3,"op":"has_function","name":"bump"}"#,
            r#"{"id":4,"op":"frobnicate"}"#,
            r#"{"id":5,"op":"call","function":"bump"}"#,
            r#"{"id":6,"op":"exec","code":"error('boom')"}"#,
            r#"{"id":7,"op":"call","function":"bump","args":"nope"}"#,
            r#"{"id":8,"op":"exec","code":"return n"}"#,
            r#"{"id":9,"op":"exec","code":"while true do end"}"#,
            r#"{"id":10,"op":"exec","code":"return n"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), 11);
    assert_eq!(docs[0]["id"], json!(1));
    assert_eq!(docs[0]["ok"], json!(true));
    assert_eq!(docs[1]["id"], json!("two"));
    assert_eq!(docs[1]["result"], json!(5));
    assert_eq!(docs[1]["output"], json!("n=5\n"));
    assert_eq!(docs[2]["ok"], json!(false));
    assert_eq!(docs[2]["error"]["kind"], json!("input"));
    assert_eq!(docs[3]["result"], json!(true));
    assert_eq!(docs[4]["error"]["kind"], json!("input"));
    assert_eq!(docs[5]["result"], json!(6));
    assert_eq!(docs[6]["error"]["kind"], json!("runtime"));
    assert_eq!(docs[6]["error"]["line"], json!(1));
    assert_eq!(docs[7]["error"]["kind"], json!("input"));
    assert_eq!(docs[8]["result"], json!(6), "state survived the errors");
    assert_eq!(docs[9]["error"]["kind"], json!("timeout"));
    assert_eq!(docs[10]["error"]["kind"], json!("timeout"));
    assert!(docs[10]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session was closed"));
}

#[test]
fn session_close_op_ends_the_session() {
    let (docs, code) = session(
        &[],
        &[
            r#"{"id":1,"op":"close"}"#,
            r#"{"id":2,"op":"exec","code":"return 1"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), 1);
}

#[test]
fn check_passes_for_every_profile() {
    for profile in ["minimal", "standard", "aos"] {
        let out = output(&mut command(
            ".",
            &["check", "--profile", profile, "--json"],
        ));
        assert_eq!(out.status.code(), Some(0), "{profile}");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["ok"], json!(true));
        assert_eq!(doc["profile"], json!(profile));
        assert!(doc["items"].as_array().unwrap().len() > 20);
        let human = output(&mut command(".", &["check", "--profile", profile]));
        let text = String::from_utf8(human.stdout).unwrap();
        assert!(text.contains("pass  "), "{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
}

#[test]
fn aos_flags_modules_read_deterministic_diagnostic() {
    let dir = std::env::temp_dir().join(format!("moonjail-cli-aos-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/util.lua"),
        "return {twice = function(x) return 2 * x end}",
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), "first\nsecond\n").unwrap();
    let data = dir.join("data.txt").to_string_lossy().into_owned();
    let code = format!(
        "local u = require('lib.util') local f = io.open('{data}') local l = f:read('l') \
         return {{u.twice(21), l, os.time(), math.random(1, 1000000)}}"
    );
    let run = |extra: &[&str]| {
        let out = output(
            command(".", &["run", "--profile", "aos", "--json", "--modules"])
                .arg(&dir)
                .args(["--read", &data, "-e", &code])
                .args(extra),
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let a = run(&[
        "--deterministic",
        "--timestamp",
        "1700000000",
        "--seed",
        "7",
    ]);
    let b = run(&[
        "--deterministic",
        "--timestamp",
        "1700000000",
        "--seed",
        "7",
    ]);
    assert_eq!(a["ok"], json!(true), "{a}");
    assert_eq!(a["result"][0], json!(42));
    assert_eq!(a["result"][1], json!("first"));
    assert_eq!(a["result"][2], json!(1_700_000_000));
    assert_eq!(a["result"], b["result"], "deterministic runs agree");
    let d = run(&["--diagnostic"]);
    assert_eq!(
        d["diagnostics"]["require"][0],
        json!({"name": "lib.util", "found": true})
    );
    assert_eq!(d["diagnostics"]["library"]["io.open"], json!(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn session_protocol_is_the_same_isolated() {
    let lines = [
        r#"{"id":1,"op":"exec","code":"n = 0 function bump(k) n = n + (k or 1) print('n=' .. n) return n end"}"#,
        r#"{"id":2,"op":"call","function":"bump","args":[5]}"#,
        "not json",
        r#"{"id":3,"op":"has_function","name":"bump"}"#,
        r#"{"id":4,"op":"exec","code":"error('boom')"}"#,
        r#"{"id":5,"op":"exec","code":"return n"}"#,
        r#"{"id":6,"op":"exec","code":"while true do end"}"#,
        r#"{"id":7,"op":"exec","code":"return n"}"#,
    ];
    let strip = |mut docs: Vec<Value>| {
        for d in &mut docs {
            if let Some(obj) = d.as_object_mut() {
                obj.remove("stats");
            }
        }
        docs
    };
    let (plain, code) = session(&["--timeout", "300ms"], &lines);
    assert_eq!(code, Some(0));
    let (isolated, code) = session(&["--timeout", "300ms", "--isolate"], &lines);
    assert_eq!(code, Some(0));
    assert_eq!(strip(plain), strip(isolated));
}

// ---------------------------------------------------------------------------------------
// The protocol's edges: bytes that are not text, requests of the wrong shape, lines past
// the request limit.
// ---------------------------------------------------------------------------------------

/// The error message of a response that must be an `input` error.
fn input_error(doc: &Value) -> &str {
    assert_eq!(doc["ok"], json!(false), "{doc}");
    assert_eq!(doc["error"]["kind"], json!("input"), "{doc}");
    doc["error"]["message"].as_str().expect("a message")
}

#[test]
fn a_line_that_is_not_utf8_gets_an_input_error_and_the_session_goes_on() {
    let dir = TempDir::new();
    let out = moonjail(
        &dir,
        &["session"],
        Some(b"{\"id\":1,\"op\":\"exec\",\"code\":\"return 1\"}\n\xff\xfe\n{\"id\":2,\"op\":\"exec\",\"code\":\"return 2\"}\n"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let docs = out.json_lines();
    assert_eq!(docs.len(), 3, "{out:?}");
    assert_eq!(docs[0]["result"], json!(1));
    assert!(input_error(&docs[1]).contains("UTF-8"), "{}", docs[1]);
    assert_eq!(docs[1]["id"], Value::Null);
    assert_eq!(docs[2]["result"], json!(2));
    assert_eq!(docs[2]["id"], json!(2));
}

#[test]
fn requests_of_the_wrong_shape_get_precise_input_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"id":1,"op":"frobnicate"}"#,
            &["frobnicate", "exec", "has_function"],
        ),
        (r#"{"id":1}"#, &["op"]),
        (r#"{"id":1,"op":7}"#, &["op"]),
        (r#"{"id":1,"op":"exec"}"#, &["exec", "code"]),
        (
            r#"{"id":1,"op":"exec","code":5}"#,
            &["exec", "code", "string"],
        ),
        (
            r#"{"id":1,"op":"exec","code":"return 1","cod":1}"#,
            &["exec", "cod"],
        ),
        (
            r#"{"id":1,"op":"call","function":"f","args":"nope"}"#,
            &["call", "args"],
        ),
        (r#"{"id":1,"op":"call","fn":"f"}"#, &["call", "fn"]),
        (
            r#"{"id":1,"op":"has_function","name":["f"]}"#,
            &["has_function", "name"],
        ),
        (r#"{"id":1,"op":"close","now":true}"#, &["close", "now"]),
        ("[1, 2]", &["object"]),
        ("not json", &["not JSON"]),
    ];
    let mut lines: Vec<&str> = cases.iter().map(|(l, _)| *l).collect();
    lines.push(r#"{"id":{"any":["json"]},"op":"exec","code":"return 'alive'"}"#);
    let (docs, code) = session(&[], &lines);
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), cases.len() + 1, "{docs:?}");
    for ((line, fragments), doc) in cases.iter().zip(&docs) {
        let message = input_error(doc);
        for f in *fragments {
            assert!(message.contains(f), "{line}: {message:?} lacks {f:?}");
        }
        assert_document_shape_with_id(doc);
    }
    // The id is echoed whatever it is, and the session went on.
    let last = &docs[cases.len()];
    assert_eq!(last["id"], json!({"any": ["json"]}));
    assert_eq!(last["result"], json!("alive"));
    // The id of a request that is not right is still echoed when it can be read.
    assert_eq!(docs[0]["id"], json!(1));
}

/// A response: the fields of `run --json` plus `id` (a refused request's `stats` null).
fn assert_document_shape_with_id(doc: &Value) {
    let mut keys: Vec<&str> = doc
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "error",
            "id",
            "ok",
            "output",
            "output_truncated",
            "result",
            "results",
            "stats"
        ],
        "{doc}"
    );
    if let Some(error) = doc["error"].as_object() {
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["hint", "kind", "line", "message", "traceback", "value"],
            "{doc}"
        );
    }
}

#[test]
fn call_args_may_be_absent_or_null() {
    let (docs, code) = session(
        &[],
        &[
            r#"{"id":1,"op":"exec","code":"function f(...) return select('#', ...) end"}"#,
            r#"{"id":2,"op":"call","function":"f"}"#,
            r#"{"id":3,"op":"call","function":"f","args":null}"#,
            r#"{"id":4,"op":"call","function":"f","args":[1, null, {}]}"#,
            r#"{"op":"has_function","name":"f"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    let results: Vec<_> = docs.iter().map(|d| d["result"].clone()).collect();
    assert_eq!(results[1..], [json!(0), json!(0), json!(3), json!(true)]);
    assert_eq!(docs[4]["id"], Value::Null, "no id: null");
}

#[test]
fn an_over_long_request_line_is_skipped_without_being_held() {
    // 300 MiB on one line, to a session that may map only 256 MiB: it must skip the line
    // in chunks, answer it, and go on. (Read whole, it dies of its memory limit.)
    let mut child = spawn(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"ulimit -v {ADDRESS_SPACE_KIB} && exec "$0" "$@""#
            ))
            .arg(MOONJAIL)
            .args(["session", "--request-limit", "1MiB"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'x'; 1 << 20];
        let mut write = || -> std::io::Result<()> {
            stdin.write_all(br#"{"id":1,"op":"exec","code":"return 1"}"#)?;
            stdin.write_all(b"\n")?;
            for _ in 0..300 {
                stdin.write_all(&chunk)?;
            }
            stdin.write_all(b"\n")?;
            stdin.write_all(br#"{"id":3,"op":"exec","code":"return 3"}"#)?;
            stdin.write_all(b"\n")
        };
        let _ = write();
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("the writer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    let docs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(docs.len(), 3, "{stdout}");
    assert_eq!(docs[0]["result"], json!(1));
    let message = input_error(&docs[1]);
    assert!(message.contains("--request-limit"), "{message}");
    assert_eq!(docs[2]["result"], json!(3));
}

#[test]
fn request_lines_up_to_the_limit_are_accepted() {
    // A line of exactly the limit passes; one byte more does not; the next line is fine.
    let exact = format!(
        r#"{{"id":1,"op":"exec","code":"return 1{}"}}"#,
        " ".repeat(60)
    );
    let limit = exact.len().to_string();
    let over = format!(
        r#"{{"id":2,"op":"exec","code":"return 2{}"}}"#,
        " ".repeat(61)
    );
    let (docs, code) = session(
        &["--request-limit", &limit],
        &[&exact, &over, r#"{"id":3,"op":"exec","code":"return 3"}"#],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs[0]["result"], json!(1), "{docs:?}");
    assert!(input_error(&docs[1]).contains("--request-limit"));
    assert_eq!(docs[2]["result"], json!(3));
    // A source limit as large as they come: the default request limit saturates.
    let (docs, _) = session(
        &["--source-limit", "18446744073709549568"],
        &[r#"{"id":4,"op":"exec","code":"return 4"}"#],
    );
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["result"], json!(4));
    // `none` lifts the limit; a bad size is a misuse.
    let (docs, _) = session(&["--request-limit", "none"], &[&over]);
    assert_eq!(docs[0]["result"], json!(2));
    assert_misuse(
        &mj(&["session", "--request-limit", "lots"]),
        "--request-limit",
    );
}

/// Regression: `has_function` answered `ok: true` on a session a timeout had closed.
#[test]
fn a_closed_session_refuses_every_op() {
    for isolate in [false, true] {
        let flags = isolate_flags();
        let args = with_isolation(&["--timeout", "200ms"], isolate, &flags);
        let (docs, code) = session(
            &args,
            &[
                r#"{"id":1,"op":"exec","code":"function f() end while true do end"}"#,
                r#"{"id":2,"op":"has_function","name":"f"}"#,
                r#"{"id":3,"op":"call","function":"f"}"#,
                r#"{"id":4,"op":"exec","code":"return 1"}"#,
            ],
        );
        assert_eq!(code, Some(0));
        assert_eq!(docs[0]["error"]["kind"], json!("timeout"), "{docs:?}");
        for doc in &docs[1..] {
            assert_eq!(doc["ok"], json!(false), "isolate={isolate}: {doc}");
            assert_eq!(doc["error"]["kind"], json!("timeout"), "{doc}");
            assert!(
                doc["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("session was closed"),
                "{doc}"
            );
        }
    }
}

/// Regression: a request line of a few megabytes of small JSON values cost the host
/// hundreds of megabytes (15 MB: 1.4 GB) before any limit applied. It is now refused by
/// an estimate made before parsing, and the session goes on.
#[test]
fn a_request_that_would_parse_into_too_much_memory_is_refused() {
    let many = format!("[{}{{}}]", "{},".repeat(1_000_000));
    let big = format!(r#"{{"id":1,"op":"call","function":"f","args":{many}}}"#);
    let (docs, code) = session(
        &["--memory", "16MiB"],
        &[&big, r#"{"id":2,"op":"exec","code":"return 2"}"#],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs[0]["error"]["kind"], json!("input"), "{:?}", docs[0]);
    assert!(
        docs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory"),
        "{:?}",
        docs[0]
    );
    assert_eq!(docs[1]["result"], json!(2));
}

/// Regression: the request line was parsed within `result_depth + 1` levels, so a call
/// whose argument nested exactly `result_depth` deep (two more for the request's object
/// and argument array) was refused although the sandbox accepts it.
#[test]
fn call_arguments_may_nest_as_deep_as_the_result_depth() {
    let (docs, code) = session(
        &["--result-depth", "3"],
        &[
            r#"{"id":1,"op":"exec","code":"function depth(t) local n = 0 while type(t) == 'table' do t = t[1] n = n + 1 end return n end"}"#,
            r#"{"id":2,"op":"call","function":"depth","args":[[[[1]]]]}"#,
            r#"{"id":3,"op":"call","function":"depth","args":[[[[[1]]]]]}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs[1]["result"], json!(3), "{:?}", docs[1]);
    assert_eq!(docs[2]["ok"], json!(false), "{:?}", docs[2]);
}
