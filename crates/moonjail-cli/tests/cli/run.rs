//! `moonjail run`: sources, input, failures and exit statuses, limits, profiles.
//!
//! The contract under test: `run [FILE|-] [-e CODE] [--input JSON|@FILE] ... [--json]`,
//! one JSON document `{"ok", "result", "output", "error": {"kind", "message", "line"} |
//! null, "stats": {"wall_ms", "memory_bytes", "instructions"}}`, human mode printing
//! output then the result (errors on stderr with the line), and exit statuses 0 (the
//! script succeeded), 1 (it failed, any kind), 2 (the command was misused).

use serde_json::{json, Value as Json};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// run: sources.
// ---------------------------------------------------------------------------------------

#[test]
fn run_file_human_mode_prints_output_then_result() {
    let dir = TempDir::new();
    dir.write(
        "hello.lua",
        "print('hi')\nprint('there')\nreturn {n = 1, list = {1, 2}}\n",
    );
    let out = moonjail(&dir, &["run", "hello.lua"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let pretty = serde_json::to_string_pretty(&json!({"n": 1, "list": [1, 2]})).unwrap();
    assert_eq!(out.stdout, format!("hi\nthere\n{pretty}\n"));
    assert_eq!(out.stderr, "");
}

#[test]
fn run_file_json_mode() {
    let dir = TempDir::new();
    dir.write("hello.lua", "print('hi')\nreturn {n = 1}\n");
    let out = moonjail(&dir, &["run", "hello.lua", "--json"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "exactly one line: {out:?}");
    let doc = out.json();
    assert_document_shape(&doc);
    assert_eq!(doc["ok"], json!(true));
    assert_eq!(doc["result"], json!({"n": 1}));
    assert_eq!(doc["output"], json!("hi\n"));
    assert_eq!(doc["error"], Json::Null);
    assert_eq!(doc["stats"]["instructions"], Json::Null);
    assert!(doc["stats"]["memory_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn run_file_by_absolute_path_and_chunk_name() {
    let dir = TempDir::new();
    let p = dir.write("fails.lua", "local x = 1\n\nerror('boom')\n");
    let out = moonjail(&dir, &["run", p.to_str().unwrap(), "--json"], None);
    assert_eq!(out.code, Some(1));
    let doc = out.json();
    assert_document_shape(&doc);
    // Errors are named after the file.
    assert_eq!(
        doc["error"],
        json!({"kind": "runtime", "message": "fails.lua:3: boom", "line": 3,
               "traceback": [{"function": null, "source": "fails.lua", "line": 3}],
               "value": null, "hint": null})
    );
}

#[test]
fn run_stdin() {
    let dir = TempDir::new();
    let out = moonjail(
        &dir,
        &["run", "-", "--input", r#"{"n": 21}"#],
        Some(b"return (...).n * 2"),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "42\n"),
        "{out:?}"
    );
    let out = moonjail(
        &dir,
        &["run", "-", "--json"],
        Some(b"print('from stdin')\nerror('x')"),
    );
    assert_eq!(out.code, Some(1));
    let doc = out.json();
    assert_document_shape(&doc);
    assert_eq!(doc["output"], json!("from stdin\n"));
    assert_eq!(
        doc["error"],
        json!({"kind": "runtime", "message": "stdin:2: x", "line": 2,
               "traceback": [{"function": null, "source": "stdin", "line": 2}],
               "value": null, "hint": null})
    );
    // An empty script is fine: null result, nothing printed.
    let out = moonjail(&dir, &["run", "-"], Some(b""));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""));
}

#[test]
fn run_eval() {
    let out = mj(&["run", "-e", "return 1 + 1"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "2\n", "")
    );
    let (code, doc) = json_eval("return 'x'", &[]);
    assert_eq!(code, Some(0));
    assert_document_shape(&doc);
    assert_eq!(doc["result"], json!("x"));
    // The run convention: `run(input)`'s first return value.
    let out = mj(&[
        "run",
        "-e",
        "function run(i) return i.a + i.b end",
        "--input",
        r#"{"a": 1, "b": 2}"#,
    ]);
    assert_eq!(out.stdout, "3\n");
}

#[test]
fn run_input_inline_and_from_file() {
    let dir = TempDir::new();
    dir.write("input.json", r#"{"items": [1, 2, 3], "name": "é"}"#);
    dir.write("sum.lua", "local i = ... local s = 0 for _, v in ipairs(i.items) do s = s + v end return {sum = s, name = i.name}");
    let out = moonjail(
        &dir,
        &["run", "sum.lua", "--input", "@input.json", "--json"],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json()["result"], json!({"sum": 6, "name": "é"}));
    let out = moonjail(
        &dir,
        &[
            "run",
            "sum.lua",
            "--input",
            r#"{"items": [4], "name": "x"}"#,
            "--json",
        ],
        None,
    );
    assert_eq!(out.json()["result"], json!({"sum": 4, "name": "x"}));
    // No --input means nil (so `local input = ... or {}` works).
    let out = moonjail(&dir, &["run", "-e", "return (...) == nil", "--json"], None);
    assert_eq!(out.json()["result"], json!(true));
    // Input nested deeper than --result-depth is an `input` failure of the run.
    let (code, doc) = json_eval("return ...", &["--input", "[[[1]]]", "--result-depth", "2"]);
    assert_eq!((code, kind(&doc)), (Some(1), "input"));
}

// ---------------------------------------------------------------------------------------
// run: failures and exit statuses.
// ---------------------------------------------------------------------------------------

#[test]
fn human_mode_errors_go_to_stderr_with_the_line() {
    let out = mj(&["run", "-e", "print('before')\nlocal x = 1\nerror('boom')"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "before\n");
    assert_eq!(
        out.stderr.trim_end(),
        "moonjail: runtime error at line 3: (command line):3: boom"
    );
    // A limit: its value and where the script was.
    let out = mj(&["run", "-e", "while true do end", "--timeout", "100ms"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.trim_end(),
        "moonjail: timeout error at line 1: timeout: the script ran past its 100 ms deadline \
         (stopped at line 1)"
    );
    // The traceback, innermost first, and a hint line when there is one.
    let out = mj(&[
        "run",
        "-e",
        "function inner() error('deep') end\nfunction outer() inner() end\nouter()",
    ]);
    assert_eq!(out.code, Some(1));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "moonjail: runtime error at line 1: (command line):1: deep",
            "traceback (innermost first):",
            "  (command line):1 in function 'inner'",
            "  (command line):2 in function 'outer'",
            "  (command line):3",
        ],
        "{out:?}"
    );
    // A null result prints nothing.
    let out = mj(&["run", "-e", "print('only output')"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "only output\n"));
}

#[test]
fn every_failure_kind_exits_1_with_its_kind() {
    let dir = TempDir::new();
    dir.write("bin.lua", b"\x1bLua\x54\x00");
    let cases: &[(&str, &[&str], &str)] = &[
        ("return 1 +", &[], "syntax"),
        ("error('x')", &[], "runtime"),
        (
            "local s = 'x' while true do s = s .. s end",
            &["--memory", "1MiB"],
            "memory_limit",
        ),
        (
            "while true do end",
            &["--instructions", "1000"],
            "instruction_limit",
        ),
        ("while true do end", &["--timeout", "150ms"], "timeout"),
        (
            "while true do print('x') end",
            &["--output-limit", "100"],
            "output_limit",
        ),
        ("return print", &[], "result"),
        ("return 1", &["--require-table"], "result"),
        ("return 1", &["--require-run"], "runtime"),
        ("setmetatable({}, {__gc = print})", &[], "forbidden"),
        (r#"setmetatable({}, {__gc = print})"#, &[], "forbidden"),
        (
            "return 1 --------------------------------",
            &["--source-limit", "10"],
            "input",
        ),
    ];
    for (code, extra, want) in cases {
        let mut args = vec!["run", "-e", code];
        args.extend_from_slice(extra);
        args.push("--json");
        let out = moonjail(&dir, &args, None);
        assert_eq!(out.code, Some(1), "{code} {extra:?}: {out:?}");
        let doc = out.json();
        assert_document_shape(&doc);
        assert_eq!(kind(&doc), *want, "{code} {extra:?}: {doc}");
    }
    let out = moonjail(&dir, &["run", "bin.lua", "--json"], None);
    assert_eq!(out.code, Some(1));
    assert_eq!(kind(&out.json()), "forbidden");
}

#[test]
fn limits_show_in_the_document() {
    let (code, doc) = json_eval("while true do end", &["--instructions", "1000"]);
    assert_eq!(code, Some(1));
    let charged = doc["stats"]["instructions"]
        .as_u64()
        .expect("counted when limited");
    assert!(charged > 0 && charged <= 1000, "{doc}");
    let (_, doc) = json_eval("print(('x'):rep(100))", &["--output-limit", "10"]);
    assert_eq!(doc["output"], json!("xxxxxxxxxx"));
    let (_, doc) = json_eval(
        "local s = 'x' while true do s = s .. s end",
        &["--memory", "1MiB"],
    );
    assert!(
        doc["stats"]["memory_bytes"].as_u64().unwrap() <= 1 << 20,
        "{doc}"
    );
}

#[test]
fn misuse_exits_2() {
    let dir = TempDir::new();
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--frobnicate"], None),
        "--frobnicate",
    );
    assert_misuse(&moonjail(&dir, &["frobnicate"], None), "frobnicate");
    assert_misuse(&moonjail(&dir, &["run"], None), "");
    assert_misuse(
        &moonjail(&dir, &["run", "missing.lua"], None),
        "reading missing.lua",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "x.lua"], None),
        "",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--input", "{bad"], None),
        "--input is not valid JSON",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--input", "@missing.json"],
            None,
        ),
        "reading missing.json",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--profile", "nope"], None),
        "unknown profile",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--memory", "5parsecs"],
            None,
        ),
        "--memory",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--memory", "10KiB"], None),
        "memory",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--timeout", "fast"], None),
        "--timeout",
    );
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "return 1", "--timeout", "0s"], None),
        "timeout",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--output-limit", "lots"],
            None,
        ),
        "--output-limit",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--instructions", "-5"],
            None,
        ),
        "",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--instructions", "0"],
            None,
        ),
        "instructions",
    );
    assert_misuse(
        &moonjail(
            &dir,
            &["run", "-e", "return 1", "--result-depth", "0"],
            None,
        ),
        "result-depth",
    );
    // A directory is not a readable script.
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    assert_misuse(&moonjail(&dir, &["run", "adir"], None), "reading adir");
}

#[test]
fn deeply_nested_input_is_refused_without_crashing() {
    let dir = TempDir::new();
    dir.write("deep.json", "[".repeat(200_000) + &"]".repeat(200_000));
    let out = moonjail(
        &dir,
        &["run", "-e", "return 1", "--input", "@deep.json", "--json"],
        None,
    );
    // Refused either as bad JSON (2) or as an input error of the run (1): never a crash.
    assert!(matches!(out.code, Some(1) | Some(2)), "{out:?}");
}

#[test]
fn sizes_and_durations() {
    for size in ["5MiB", "5m", "5000KB", "6000000", "64KiB", "1GiB", "none"] {
        let (code, doc) = json_eval("return 1", &["--memory", size]);
        assert_eq!(
            (code, &doc["result"]),
            (Some(0), &json!(1)),
            "--memory {size}"
        );
    }
    for d in ["500ms", "2s", "1.5s", "1m", "none", "3"] {
        let (code, doc) = json_eval("return 1", &["--timeout", d]);
        assert_eq!(
            (code, &doc["result"]),
            (Some(0), &json!(1)),
            "--timeout {d}"
        );
    }
    for size in ["1KiB", "none"] {
        let (code, _) = json_eval("print('x')", &["--output-limit", size]);
        assert_eq!(code, Some(0), "--output-limit {size}");
    }
    // The limit is the parsed size: 1KiB of output fits, 1025 bytes do not.
    let (code, _) = json_eval("print(('x'):rep(1023))", &["--output-limit", "1KiB"]);
    assert_eq!(code, Some(0));
    let (code, doc) = json_eval("print(('x'):rep(1024))", &["--output-limit", "1KiB"]);
    assert_eq!((code, kind(&doc)), (Some(1), "output_limit"));
    assert_eq!(doc["output"].as_str().unwrap().len(), 1024);
}

#[test]
fn profiles_on_the_command_line() {
    let (_, doc) = json_eval(
        "return {load == nil, json == nil}",
        &["--profile", "minimal"],
    );
    assert_eq!(doc["result"], json!([true, true]));
    let (_, doc) = json_eval(
        "return {load == nil, json == nil}",
        &["--profile", "standard"],
    );
    assert_eq!(doc["result"], json!([false, false]));
    // standard is the default.
    let (_, doc) = json_eval("return type(json)", &[]);
    assert_eq!(doc["result"], json!("table"));
}

// ---------------------------------------------------------------------------------------
// run: bounded reads. The script and the input are read up to their limit plus one byte,
// never further, whatever the source: `/dev/zero` fails at once instead of filling memory.
// ---------------------------------------------------------------------------------------

fn dev_zero() -> std::process::Stdio {
    std::fs::File::open("/dev/zero").expect("/dev/zero").into()
}

#[test]
fn a_script_over_the_source_limit_is_refused_before_it_is_read_whole() {
    let dir = TempDir::new();
    let cases: &[(&[&str], bool, &str)] = &[
        (
            &["run", "/dev/zero", "--source-limit", "1KiB"],
            false,
            "1024",
        ),
        (&["run", "-", "--source-limit", "1KiB"], true, "1024"),
        // The default limit (1 MiB) bounds the read too.
        (&["run", "/dev/zero"], false, "1048576"),
        (&["run", "-"], true, "1048576"),
    ];
    for (args, stdin, limit) in cases {
        let stdin = if *stdin {
            dev_zero()
        } else {
            std::process::Stdio::null()
        };
        let out = capped(&dir, args, stdin);
        assert_misuse(&out, "--source-limit");
        assert!(out.stderr.contains(limit), "{args:?}: {out:?}");
    }
}

#[test]
fn a_script_of_exactly_the_source_limit_runs() {
    let dir = TempDir::new();
    let script = format!("return 1 --{}", "x".repeat(1024 - 11));
    assert_eq!(script.len(), 1024);
    dir.write("exact.lua", &script);
    dir.write("over.lua", format!("{script}x"));
    let out = moonjail(&dir, &["run", "exact.lua", "--source-limit", "1KiB"], None);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "1\n"), "{out:?}");
    let out = moonjail(
        &dir,
        &["run", "-", "--source-limit", "1KiB"],
        Some(script.as_bytes()),
    );
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "1\n"), "{out:?}");
    assert_misuse(
        &moonjail(&dir, &["run", "over.lua", "--source-limit", "1KiB"], None),
        "reading over.lua: the script is over the --source-limit of 1024 bytes",
    );
    // `none` reads it all.
    let out = moonjail(&dir, &["run", "over.lua", "--source-limit", "none"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn the_input_is_read_up_to_the_input_limit() {
    let dir = TempDir::new();
    // From an endless file: refused at once, under the default limit and a given one.
    for extra in [&[][..], &["--input-limit", "1KiB"][..]] {
        let mut args = vec!["run", "-e", "return 1", "--input", "@/dev/zero"];
        args.extend_from_slice(extra);
        let out = capped(&dir, &args, std::process::Stdio::null());
        assert_misuse(&out, "--input-limit");
    }
    // Exactly the limit passes, a byte more does not, inline or from a file.
    let exact = format!("\"{}\"", "x".repeat(14)); // 16 bytes
    dir.write("exact.json", &exact);
    dir.write("over.json", format!("{exact} "));
    for input in ["@exact.json", exact.as_str()] {
        let out = moonjail(
            &dir,
            &[
                "run",
                "-e",
                "return #...",
                "--input",
                input,
                "--input-limit",
                "16",
            ],
            None,
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "14\n"),
            "{out:?}"
        );
    }
    let over_inline = format!("{exact} ");
    for input in ["@over.json", over_inline.as_str()] {
        assert_misuse(
            &moonjail(
                &dir,
                &[
                    "run",
                    "-e",
                    "return 1",
                    "--input",
                    input,
                    "--input-limit",
                    "16",
                ],
                None,
            ),
            "over the --input-limit of 16 bytes",
        );
    }
    let out = moonjail(
        &dir,
        &[
            "run",
            "-e",
            "return #...",
            "--input",
            "@over.json",
            "--input-limit",
            "none",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_misuse(
        &moonjail(&dir, &["run", "-e", "1", "--input-limit", "lots"], None),
        "--input-limit",
    );
}
