//! Host tools through the command line: `--tool NAME=COMMAND` (command tools written in
//! a few lines of shell), `--allow-http HOST[:PORT]`, and `examples/agent_http.lua`
//! exactly as the README runs it, against the fixture server started in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

// The example's own server code, so the test runs against exactly what the README starts.
#[allow(dead_code)]
#[path = "../examples/fixture_server.rs"]
mod fixture_server;

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "moonjail-cli-tools-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write a test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// Runs the built `moonjail` in `dir`.
fn moonjail(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_moonjail"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run moonjail");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The repository root (the README's commands run from there).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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
        let out = moonjail(dir.path(), &all);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(fragment), "{args:?}: {out:?}");
    }
    // Isolated mode has no tools yet: refused when the sandbox is built.
    if cfg!(target_os = "linux") {
        for flag in [["--tool", "x=true"], ["--allow-http", "127.0.0.1:1"]] {
            let out = moonjail(
                dir.path(),
                &["run", "-e", "return 1", "--isolate", flag[0], flag[1]],
            );
            assert_eq!(out.code, Some(2), "{out:?}");
            assert!(
                out.stderr.contains("not available to worker processes yet"),
                "{out:?}"
            );
        }
    }
    // Sessions have no tools yet: refused rather than silently missing.
    let out = moonjail(dir.path(), &["session", "--tool", "x=true"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("sessions do not have host tools"),
        "{out:?}"
    );
}

#[test]
fn help_teaches_the_tool_flags() {
    let out = moonjail(&repo(), &["run", "--help"]);
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
    );
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "5"), "{out:?}");
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
    let out = moonjail(&repo(), &["run", "-e", &code, "--allow-http", &by_name]);
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
    );
    assert_eq!((out.code, out.stdout.trim()), (Some(0), "200"), "{out:?}");
}
