//! Host tools through the command line: `--tool NAME=COMMAND` (command tools written in
//! a few lines of shell), `--allow-http HOST[:PORT]`, and `examples/agent_http.lua`
//! exactly as the README runs it, against the fixture server started in-process — each
//! in process and with `--isolate` (the script in a worker, the tools in `moonjail`),
//! for `run` and for `session`.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::fixture_server;
use crate::support::*;

/// A command tool in a few lines of shell: `calc.add(a, b)` prints a + b; an argument
/// that is not a number makes it fail with a message on stderr.
const ADD: &str = r#"read -r args
set -- $(echo "$args" | tr '[],' '   ')
case "$1$2" in *[!0-9-]*) echo "calc.add: numbers only, got $args" >&2; exit 3;; esac
echo $(($1 + $2))
"#;

/// A command tool answering an object built from its input.
const GREET: &str = r#"read -r args
name=$(echo "$args" | sed 's/^\["\(.*\)"\]$/\1/')
printf '{"greeting": "hello %s", "args": %s}\n' "$name" "$args"
"#;

// ---------------------------------------------------------------------------------------
// Command tools.
// ---------------------------------------------------------------------------------------

#[test]
fn a_shell_command_tool_used_from_a_script() {
    let dir = TempDir::new();
    dir.write("add.sh", ADD);
    dir.write("greet.sh", GREET);
    dir.write(
        "script.lua",
        r#"
        local sum = calc.add(2, 3)
        local g = greet("Ada")
        local ok, err = pcall(calc.add, 1, "x")
        return {sum = sum, greeting = g.greeting, args = g.args, caught = err}
        "#,
    );
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "script.lua",
            "--tool",
            "calc.add=sh add.sh",
            "--tool",
            "greet=sh greet.sh",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = out.json();
    assert_eq!(
        doc["result"],
        json!({"sum": 5, "greeting": "hello Ada", "args": ["Ada"],
               "caught": r#"calc.add: the command exited with status 3: calc.add: numbers only, got [1,"x"]"#})
    );
    // The audit record: three calls, the last one failed.
    let calls = doc["tool_calls"].as_array().expect("tool_calls");
    let summary: Vec<_> = calls
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("calc.add", true), ("greet", true), ("calc.add", false)]
    );
    assert_eq!(calls[0]["bytes_in"], json!(5)); // [2,3]
    assert_eq!(calls[0]["bytes_out"], json!(1)); // 5
}

#[test]
fn an_uncaught_tool_error_fails_the_run_with_its_message() {
    let dir = TempDir::new();
    dir.write("add.sh", ADD);
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "-e",
            "return calc.add('a', 1)",
            "--tool",
            "calc.add=sh add.sh",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("calc.add: the command exited with status 3: calc.add: numbers only"),
        "{out:?}"
    );
}

#[test]
fn invalid_json_output_is_a_tool_error() {
    let dir = TempDir::new();
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "-e",
            "return {pcall(bad)}",
            "--tool",
            "bad=echo 'not json'; echo 'a warning' >&2",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let r = &out.json()["result"];
    assert_eq!(r[0], json!(false));
    let msg = r[1].as_str().unwrap();
    assert!(
        msg.starts_with("bad: the command's output is not valid JSON")
            && msg.ends_with(": a warning"),
        "{msg}"
    );
}

#[test]
fn a_command_tool_is_killed_at_the_run_deadline() {
    let dir = TempDir::new();
    let start = Instant::now();
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "-e",
            "return pcall(slow)",
            "--tool",
            "slow=sleep 30",
            "--timeout",
            "300ms",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["error"]["kind"], json!("timeout"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn tool_flags_are_checked() {
    let dir = TempDir::new();
    for (args, fragment) in [
        (vec!["--tool", "no-equals-sign"], "expected NAME=COMMAND"),
        (vec!["--tool", "1x=true"], "not a Lua identifier"),
        (vec!["--tool", "x="], "the command is empty"),
        (
            vec!["--tool", "string.x=true"],
            "already defines the global `string`",
        ),
        (
            vec!["--allow-http", "http://example.com"],
            "not HOST[:PORT]",
        ),
        (vec!["--allow-http", "example.com:0"], "invalid port"),
    ] {
        let mut all = vec!["run", "-e", "return 1"];
        all.extend(args.iter());
        let out = moonjail(dir.path(), &all, None);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(fragment), "{args:?}: {out:?}");
    }
}

#[test]
fn help_teaches_the_tool_flags() {
    let out = moonjail(&repo(), &["run", "--help"], None);
    assert_eq!(out.code, Some(0));
    for fragment in [
        "--tool <NAME=COMMAND>",
        "/bin/sh -c COMMAND",
        "JSON array on stdin",
        "--allow-http <HOST[:PORT]>",
        "http.get(url [, headers])",
        "--allow-http 127.0.0.1:8765",
    ] {
        assert!(out.stdout.contains(fragment), "help lacks {fragment:?}");
    }
}

#[test]
fn the_help_example_command_tool_works() {
    // The three lines `run --help` prints, verbatim.
    let dir = TempDir::new();
    dir.write(
        "add.sh",
        "read -r args\nset -- $(echo \"$args\" | tr \"[],\" \"   \")\necho $(($1 + $2))\n",
    );
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "-e",
            "return calc.add(2, 3)",
            "--tool",
            "calc.add=sh add.sh",
        ],
        None,
    );
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "5"), "{out:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn an_isolated_run_uses_a_shell_command_tool_as_in_process() {
    let dir = TempDir::new();
    dir.write("add.sh", ADD);
    dir.write("greet.sh", GREET);
    dir.write(
        "script.lua",
        r#"
        local sum = calc.add(2, 3)
        local g = greet("Ada")
        local ok, err = pcall(calc.add, 1, "x")
        local ok2, err2 = pcall(calc.add, print)
        return {sum = sum, greeting = g.greeting, args = g.args, caught = err, bad = err2}
        "#,
    );
    let flags = isolate_flags();
    let args = [
        "run",
        "script.lua",
        "--tool",
        "calc.add=sh add.sh",
        "--tool",
        "greet=sh greet.sh",
        "--json",
    ];
    let local = moonjail(dir.path(), &args, None);
    let isolated = moonjail(dir.path(), &with_isolation(&args, true, &flags), None);
    assert_eq!(isolated.code, Some(0), "{isolated:?}");
    let doc = isolated.json();
    assert_eq!(doc["result"]["sum"], json!(5));
    assert_eq!(doc["result"]["greeting"], json!("hello Ada"));
    assert_eq!(
        doc["result"]["bad"],
        json!("calc.add: argument 1: $: a function cannot be represented in JSON")
    );
    let calls: Vec<_> = doc["tool_calls"]
        .as_array()
        .expect("tool_calls")
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [
            ("calc.add", true),
            ("greet", true),
            ("calc.add", false),
            ("calc.add", false)
        ]
    );
    assert_eq!(essence(doc), essence(local.json()));

    // The command tool is killed at the deadline, the run is a timeout.
    let args = [
        "run",
        "-e",
        "return pcall(slow)",
        "--tool",
        "slow=sleep 30",
        "--timeout",
        "300ms",
        "--json",
    ];
    let start = Instant::now();
    let out = moonjail(dir.path(), &with_isolation(&args, true, &flags), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["error"]["kind"], json!("timeout"));
    assert_eq!(out.json()["tool_calls"][0]["name"], json!("slow"));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_session_has_tools_with_an_audit_per_request() {
    let dir = TempDir::new();
    dir.write("add.sh", ADD);
    let flags = isolate_flags();
    let requests = [
        r#"{"id":1,"op":"exec","code":"total = 0 function add(n) total = calc.add(total, n) return total end"}"#,
        r#"{"id":2,"op":"call","function":"add","args":[2]}"#,
        r#"{"id":3,"op":"call","function":"add","args":[40]}"#,
        r#"{"id":4,"op":"exec","code":"return {pcall(calc.add, 1, 'x')}"}"#,
        r#"{"id":5,"op":"exec","code":"return pcall(function() calc.add = 1 end)"}"#,
        r#"{"id":6,"op":"exec","code":"return {total, calc.add(0, 0)}"}"#,
    ]
    .join("\n");
    let mut sessions = Vec::new();
    for isolate in [false, true] {
        if isolate && !cfg!(target_os = "linux") {
            continue;
        }
        let args = ["session", "--tool", "calc.add=sh add.sh", "--timeout", "5s"];
        let out = moonjail(
            dir.path(),
            &with_isolation(&args, isolate, &flags),
            Some(requests.as_bytes()),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        let docs: Vec<Json> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 6, "{out:?}");
        let results: Vec<_> = docs.iter().map(|d| d["result"].clone()).collect();
        assert_eq!((&results[1], &results[2]), (&json!(2), &json!(42)));
        assert_eq!(results[3][0], json!(false));
        assert!(
            results[3][1]
                .as_str()
                .unwrap()
                .contains("calc.add: the command exited with status 3"),
            "{results:?}"
        );
        // The namespace is read-only in a session too.
        assert_eq!(results[4], json!(false));
        assert_eq!(results[5], json!([42, 0]));
        // Each response lists its own calls.
        let counts: Vec<_> = docs
            .iter()
            .map(|d| {
                d.get("tool_calls")
                    .map_or(0, |c| c.as_array().unwrap().len())
            })
            .collect();
        assert_eq!(counts, [0, 1, 1, 1, 0, 1], "isolate={isolate}");
        assert_eq!(docs[2]["tool_calls"][0]["bytes_in"], json!(6)); // [2,40]
        sessions.push(docs.into_iter().map(essence).collect::<Vec<_>>());
    }
    if sessions.len() == 2 {
        assert_eq!(sessions[0], sessions[1]);
    }
}

// ---------------------------------------------------------------------------------------
// http and the LuaExecutor example.
// ---------------------------------------------------------------------------------------

#[test]
fn agent_http_example_runs_against_the_fixture_server() {
    let port = fixture_server::start(0).expect("start the fixture server");
    let allow = format!("127.0.0.1:{port}");
    let input = json!({"city": "Lyon", "base_url": format!("http://127.0.0.1:{port}")});
    let out = moonjail(
        &repo(),
        &[
            "run",
            "examples/agent_http.lua",
            "--allow-http",
            &allow,
            "--input",
            &input.to_string(),
            "--require-run",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = out.json();
    assert_eq!(
        doc["result"],
        json!({"city": "Lyon", "base_url": format!("http://127.0.0.1:{port}"),
               "forecast": "sunny", "temperature_c": 21, "summary": "Lyon: sunny, 21 °C"})
    );
    assert_eq!(doc["tool_calls"][0]["name"], json!("http.get"));
    assert_eq!(doc["tool_calls"][0]["ok"], json!(true));

    // The same in a worker process, which has no network: the request is made by
    // moonjail, outside the worker.
    if cfg!(target_os = "linux") {
        let flags = isolate_flags();
        let args = [
            "run",
            "examples/agent_http.lua",
            "--allow-http",
            &allow,
            "--input",
            &input.to_string(),
            "--require-run",
            "--json",
        ];
        let out = moonjail(&repo(), &with_isolation(&args, true, &flags), None);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(essence(out.json()), essence(doc.clone()));
    }

    // An unknown city: the script's own error, fed back as a runtime error.
    let input = json!({"city": "Rome", "base_url": format!("http://127.0.0.1:{port}")});
    let out = moonjail(
        &repo(),
        &[
            "run",
            "examples/agent_http.lua",
            "--allow-http",
            &allow,
            "--input",
            &input.to_string(),
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("the weather service answered 404"),
        "{out:?}"
    );

    // Without --allow-http there is no http tool at all.
    let out = moonjail(
        &repo(),
        &[
            "run",
            "examples/agent_http.lua",
            "--input",
            &input.to_string(),
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("global 'http'"), "{out:?}");
}

#[test]
fn allow_http_refuses_names_that_resolve_to_loopback() {
    let port = fixture_server::start(0).expect("start the fixture server");
    let url = format!("http://localhost:{port}/weather?city=Oslo");
    let code = format!("return http.get({url:?}).status");
    let by_name = format!("localhost:{port}");
    let by_addr = format!("127.0.0.1:{port}");
    let out = moonjail(
        &repo(),
        &["run", "-e", &code, "--allow-http", &by_name],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("localhost resolves to 127.0.0.1"),
        "{out:?}"
    );
    let out = moonjail(
        &repo(),
        &[
            "run",
            "-e",
            &code,
            "--allow-http",
            &by_name,
            "--allow-http",
            &by_addr,
        ],
        None,
    );
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "200"), "{out:?}");
}
