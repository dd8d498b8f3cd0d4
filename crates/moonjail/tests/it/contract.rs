//! The agent contract: every outcome says enough for a model (or a plugin host) to act
//! on it. Errors carry the line and a traceback (also when raised inside a C function),
//! the raised table, limits by name, value and place; JSON null is nil where a script
//! looks for it; every return value is kept; `require("json")` works where a profile has
//! `require`; scripts with a shebang or a BOM run; `load` of a binary chunk returns nil;
//! expressions evaluate; output can be truncated instead of failing; stats give each
//! budget; sessions call dotted names and callable tables, take input and lower limits.
//! The same in a worker process where the wire carries something new.

use std::time::Duration;

use moonjail::{
    CallOptions, ErrorKind, Frame, Isolation, OutputOverflow, ProcessConfig, Profile, RunOptions,
    Sandbox, WorkerPath,
};
use serde_json::{json, Value as Json};

use crate::support::{unusable, WORKER};

fn sandbox(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn isolated() -> Sandbox {
    let config = ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(0);
    Sandbox::builder()
        .timeout(Duration::from_secs(5))
        .isolation(Isolation::Process(config.build().unwrap()))
        .build()
        .unwrap()
}

fn frame(function: Option<&str>, source: &str, line: u32) -> Frame {
    serde_json::from_value(json!({"function": function, "source": source, "line": line})).unwrap()
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// The case from the issue: a missing field iterated in `run`. The error is raised inside
/// `ipairs` (a C function): the line is the Lua line that called it, and the traceback
/// names `run` (found among the globals, as `luaL_traceback` does).
#[test]
fn an_error_inside_a_c_function_has_the_lua_line_and_a_traceback() {
    let sb = sandbox(Profile::Standard);
    // (`local n = total(...)`: a `return total(...)` is a tail call, whose caller's
    // frame Lua no longer has.)
    let script = "local function total(orders)\n  local n = 0\n  for _, v in ipairs(orders) do n = n + v end\n  return n\nend\nfunction run(ctx)\n  local n = total(ctx.orders)\n  return n\nend";
    let out = sb.run(script, &json!({}));
    let e = out.error().expect("fails");
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!(e.line, Some(3), "{e:?}");
    assert!(e.message.contains("attempt to index a nil value"), "{e:?}");
    assert_eq!(
        e.traceback,
        [
            frame(Some("total"), "script", 3),
            frame(Some("run"), "script", 7)
        ]
    );
    // `table.unpack(nil)`: the same.
    let out = sb.run("local t\nlocal a = 1\nreturn table.unpack(t)", &Json::Null);
    let e = out.error().unwrap();
    assert_eq!((e.line, e.traceback.len()), (Some(3), 1), "{e:?}");
}

#[test]
fn moonjail_functions_name_themselves() {
    let sb = sandbox(Profile::Standard);
    let out = sb.run("return json.decode(nil)", &Json::Null);
    let e = out.error().unwrap();
    assert!(
        e.message
            .ends_with("json.decode: expected a string, got nil"),
        "{e:?}"
    );
    assert_eq!(e.line, Some(1));
    let out = sb.run("return json.decode('{}', 5)", &Json::Null);
    assert!(out.error().unwrap().message.contains("json.decode"));
}

#[test]
fn a_traceback_is_bounded_and_crosses_coroutines() {
    let sb = sandbox(Profile::Standard);
    let out = sb.run("local function f(n) if n == 0 then error('deep') end return f(n - 1) + 1 end\nreturn f(500)", &Json::Null);
    let e = out.error().unwrap();
    assert_eq!(e.traceback.len(), moonjail::MAX_FRAMES);
    assert_eq!(e.line, Some(1));
    // A stop inside a coroutine: the frames of the coroutine, then of its resumer.
    let sb = Sandbox::builder()
        .instruction_limit(100_000)
        .build()
        .unwrap();
    let out = sb.run(
        "local co = coroutine.wrap(function()\n  while true do end\nend)\nco()",
        &Json::Null,
    );
    let e = out.error().unwrap();
    assert_eq!(e.kind, ErrorKind::InstructionLimit);
    let lines: Vec<u32> = e.traceback.iter().map(|f| f.line).collect();
    assert_eq!(lines, [2, 4], "{e:?}");
}

#[test]
fn a_raised_table_is_the_value() {
    let sb = sandbox(Profile::Standard);
    let out = sb.run("error({code = 42, why = 'no'})", &Json::Null);
    let e = out.error().unwrap();
    assert_eq!(e.value, Some(json!({"code": 42, "why": "no"})));
    let doc = out.to_json();
    assert_eq!(doc["error"]["value"], json!({"code": 42, "why": "no"}));
    // With __tostring, the message is what it says.
    let out = sb.run(
        "error(setmetatable({code = 7}, {__tostring = function(e) return 'E' .. e.code end}))",
        &Json::Null,
    );
    let e = out.error().unwrap();
    assert_eq!(
        (e.message.as_str(), e.value.clone()),
        ("E7", Some(json!({"code": 7})))
    );
}

/// Limit errors say which limit, its value, and where the script was.
#[test]
fn limit_errors_name_the_limit_its_value_and_the_place() {
    let sb = Sandbox::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let out = sb.run(
        "local x = 0\nfunction spin()\n  while true do x = x + 1 end\nend\nspin()",
        &Json::Null,
    );
    let e = out.error().unwrap();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message
            .starts_with("timeout: the script ran past its 200 ms deadline"),
        "{e:?}"
    );
    assert_eq!(e.line, Some(3));
    assert_eq!(e.traceback[0], frame(Some("spin"), "script", 3));
    assert!(e.message.contains("line 3"), "{e:?}");

    let sb = Sandbox::builder().instruction_limit(5000).build().unwrap();
    let e = sb.run("while true do end", &Json::Null).result.unwrap_err();
    assert!(e.message.contains("budget of 5000 instructions"), "{e:?}");
    assert_eq!(e.line, Some(1));

    let sb = Sandbox::builder().memory_limit(1 << 20).build().unwrap();
    let e = sb
        .run("local t = {} for i = 1, 1e7 do t[i] = i end", &Json::Null)
        .result
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::MemoryLimit);
    assert!(e.message.contains("1 MiB memory limit"), "{e:?}");

    let sb = Sandbox::builder().output_limit(10).build().unwrap();
    let e = sb
        .run("print('a')\nprint(string.rep('x', 20))", &Json::Null)
        .result
        .unwrap_err();
    assert!(e.message.contains("10 B output limit"), "{e:?}");
    assert_eq!(e.line, Some(2));
}

// ---------------------------------------------------------------------------------------
// Values.
// ---------------------------------------------------------------------------------------

#[test]
fn json_null_is_nil_where_a_script_looks() {
    let sb = sandbox(Profile::Standard);
    // A missing input and a null one: `... or {}` works.
    let script = "local input = ... or {default = true} return input";
    assert_eq!(
        sb.run(script, &Json::Null).result,
        Ok(json!({"default": true}))
    );
    // Object fields: absent. Arrays: positions kept with json.null.
    let script = "local t = ...\nreturn {t.x == nil, t.y or 'dflt', #t.list, t.list[2] == json.null, t.list[3]}";
    let out = sb.run(script, &json!({"x": null, "y": null, "list": [1, null, 3]}));
    assert_eq!(out.result, Ok(json!([true, "dflt", 3, true, 3])));
    // `run(ctx)` gets the same.
    let out = sb.run(
        "function run(ctx) return ctx.missing or 'none' end",
        &json!({"missing": null}),
    );
    assert_eq!(out.result, Ok(json!("none")));
    // json.decode follows the rule; {null = json.null} keeps the sentinel for round trips.
    let script = r#"
        local text = '{"a": null, "b": [null, 1]}'
        local t = json.decode(text)
        local kept = json.decode(text, {null = json.null})
        return {t.a == nil, t.b[1] == json.null, kept.a == json.null, json.encode(kept)}
    "#;
    let out = sb.run(script, &Json::Null);
    assert_eq!(
        out.result,
        Ok(json!([true, true, true, r#"{"a":null,"b":[null,1]}"#]))
    );
    assert_eq!(
        sb.run("return json.decode('null') == nil", &Json::Null)
            .result,
        Ok(json!(true))
    );
}

#[test]
fn every_return_value_is_kept() {
    let sb = sandbox(Profile::Standard);
    let out = sb.run("return nil, 'not found'", &Json::Null);
    assert_eq!(out.result, Ok(Json::Null));
    assert_eq!(out.results(), [&Json::Null, &json!("not found")]);
    assert_eq!(out.to_json()["results"], json!([null, "not found"]));
    let out = sb.run("function run() return 1, {2}, 'three' end", &Json::Null);
    assert_eq!(out.to_json()["results"], json!([1, [2], "three"]));
    let out = sb.run("return", &Json::Null);
    assert_eq!(out.to_json()["results"], json!([]));
    assert_eq!(out.to_json()["result"], Json::Null);
    // The result limit covers all of them together.
    let sb = Sandbox::builder().result_limit(30).build().unwrap();
    let out = sb.run(
        "return string.rep('a', 20), string.rep('b', 20)",
        &Json::Null,
    );
    let e = out.error().unwrap();
    assert_eq!(e.kind, ErrorKind::Result);
    assert!(e.message.starts_with("result 2:"), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// Lua as people write it.
// ---------------------------------------------------------------------------------------

#[test]
fn require_json_works_in_standard_and_aos() {
    for profile in [Profile::Standard, Profile::Aos] {
        let sb = sandbox(profile);
        let out = sb.run(
            "local json = require('json') return json.encode(json.decode('[1,2]'))",
            &Json::Null,
        );
        assert_eq!(out.result, Ok(json!("[1,2]")), "{profile}");
    }
    // aos keeps its global list: no `json` global, even after the require.
    let sb = sandbox(Profile::Aos);
    let out = sb.run(
        "local j = require('json') return {rawget(_G, 'json') == nil, require('json') == j}",
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!([true, true])));
    // minimal has no require at all.
    let sb = sandbox(Profile::Minimal);
    let out = sb.run("return require == nil", &Json::Null);
    assert_eq!(out.result, Ok(json!(true)));
}

#[test]
fn host_modules_need_a_profile_with_require_and_dotted_names_resolve() {
    let dir = std::env::temp_dir().join(format!("moonjail-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("handlers.lua"), "return {name = 'handlers'}").unwrap();
    let files = || moonjail::HostFiles::default().modules_dir(&dir);
    // Refused, not ignored, where there is no `require`.
    let err = Sandbox::builder()
        .profile(Profile::Minimal)
        .host_files(files())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no `require`"), "{err}");
    let err = Sandbox::builder()
        .host_files(moonjail::HostFiles::default().allow_read("x"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("no `io.open`"), "{err}");
    // standard serves host modules; aos resolves `.handlers` as aos process code does.
    for profile in [Profile::Standard, Profile::Aos] {
        let sb = Sandbox::builder()
            .profile(profile)
            .host_files(files())
            .build()
            .unwrap();
        let out = sb.run(
            "return {require('handlers').name, require('.handlers').name}",
            &Json::Null,
        );
        assert_eq!(out.result, Ok(json!(["handlers", "handlers"])), "{profile}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shebang_and_a_bom_are_accepted_as_lua_c_accepts_them() {
    let sb = sandbox(Profile::Standard);
    let out = sb.run("#!/usr/bin/env lua\nreturn 1 + 1", &Json::Null);
    assert_eq!(out.result, Ok(json!(2)));
    let out = sb.run("\u{feff}return 'bom'", &Json::Null);
    assert_eq!(out.result, Ok(json!("bom")));
    // Line numbers stay the file's.
    let out = sb.run("\u{feff}#!/bin/lua\n\nerror('x')", &Json::Null);
    assert_eq!(out.error().unwrap().line, Some(3));
}

#[test]
fn expressions_evaluate_as_in_the_repl() {
    let sb = sandbox(Profile::Standard);
    let opts = RunOptions::default().expression(true);
    assert_eq!(
        sb.run_with("1 + 1", &Json::Null, &opts).result,
        Ok(json!(2))
    );
    assert_eq!(
        sb.run_with("(...).n * 2", &json!({"n": 21}), &opts).result,
        Ok(json!(42))
    );
    // A statement still runs.
    assert_eq!(
        sb.run_with("x = 5 return x", &Json::Null, &opts).result,
        Ok(json!(5))
    );
    // A syntax error is the statement form's.
    let e = sb.run_with("1 +", &Json::Null, &opts).result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Syntax);
    // `#` starts a length here, not a shebang line to skip (found by the Python suite:
    // `eval("#'abc'")` gave nothing).
    assert_eq!(
        sb.run_with("#'abc'", &Json::Null, &opts).result,
        Ok(json!(3))
    );
    let mut session = sb.session().unwrap();
    let _ = session.exec("data = {1, 2}");
    assert_eq!(
        session
            .eval("#data", &moonjail::CallOptions::default())
            .result,
        Ok(json!(2))
    );
}

// ---------------------------------------------------------------------------------------
// Output and budgets.
// ---------------------------------------------------------------------------------------

#[test]
fn output_can_be_truncated_instead_of_failing() {
    let limits = moonjail::Limits {
        output_bytes: Some(100),
        output_overflow: OutputOverflow::Truncate,
        ..moonjail::Limits::default()
    };
    let sb = Sandbox::builder().limits(limits).build().unwrap();
    let out = sb.run(
        "for i = 1, 1000 do print('line ' .. i) end return 'done'",
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!("done")));
    let cut = out.output_truncated.expect("truncated");
    assert!(out.output.starts_with("line 1\nline 2\n"), "{}", out.output);
    assert!(out.output.ends_with("line 1000\n"), "{}", out.output);
    assert_eq!(cut.kept_bytes + cut.dropped_bytes, out.stats.output_bytes);
    assert!(cut.kept_bytes <= 100);
    assert_eq!(
        out.to_json()["output_truncated"],
        json!({"kept_bytes": cut.kept_bytes, "dropped_bytes": cut.dropped_bytes})
    );
}

#[test]
fn stats_give_each_budget() {
    let sb = Sandbox::builder()
        .timeout(Duration::from_millis(1500))
        .memory_limit(8 << 20)
        .instruction_limit(1_000_000)
        .output_limit(4096)
        .tool("t.echo", |args| {
            Ok(args.into_iter().next().unwrap_or(Json::Null))
        })
        .build()
        .unwrap();
    let out = sb.run("print('hello') t.echo(1) t.echo(2) return 1", &Json::Null);
    let stats = out.to_json()["stats"].clone();
    assert_eq!(
        stats["limits"],
        json!({"wall_ms": 1500.0, "memory_bytes": 8 << 20, "instructions": 1_000_000,
               "output_bytes": 4096, "tool_calls": 1000})
    );
    assert_eq!(stats["output_bytes"], json!(6));
    assert_eq!(stats["tool_calls"], json!(2));
    assert!(stats["instructions"].as_u64().unwrap() > 0);
    let (peak, kept) = (
        stats["peak_memory_bytes"].as_u64().expect("a peak"),
        stats["memory_bytes"].as_u64().expect("memory in use"),
    );
    assert!(kept > 0 && peak >= kept, "{stats}");
}

// ---------------------------------------------------------------------------------------
// Sessions.
// ---------------------------------------------------------------------------------------

fn check_session_contract(sb: &Sandbox) {
    let mut s = sb.session().unwrap();
    let out = s.exec(
        "M = {} function M.f(a, b) return a + b, 'sum' end\n\
         utils = {map = function(t, k) return t[k] end}\n\
         Callable = setmetatable({base = 10}, {__call = function(self, x) return self.base + x end})\n\
         Trap = setmetatable({}, {__index = function() error('ran __index') end})",
    );
    assert!(out.is_ok(), "{out:?}");
    let out = s.call("M.f", &[json!(2), json!(3)]);
    assert_eq!(out.to_json()["results"], json!([5, "sum"]));
    assert_eq!(
        s.call("utils.map", &[json!({"k": 1}), json!("k")]).result,
        Ok(json!(1))
    );
    assert_eq!(s.call("Callable", &[json!(5)]).result, Ok(json!(15)));
    // Raw lookups: `Trap.x` does not run `__index`.
    let e = s.call("Trap.x", &[]).result.unwrap_err();
    assert!(e.message.contains("no function `Trap.x`"), "{e:?}");
    assert_eq!(s.has_function("M.f"), Ok(true));
    assert_eq!(s.has_function("Callable"), Ok(true));
    assert_eq!(s.has_function("M.nope"), Ok(false));
    // exec takes an input; eval gives an expression's value.
    let out = s.exec_with(
        "local n = ... return n.k * 2",
        &json!({"k": 21}),
        &CallOptions::default(),
    );
    assert_eq!(out.result, Ok(json!(42)));
    assert_eq!(
        s.eval("M.f(1, 1)", &CallOptions::default()).result,
        Ok(json!(2))
    );
    // A request lowers its timeout (never raises it).
    let short = CallOptions::default().timeout(Duration::from_millis(100));
    let e = s
        .exec_with("while true do end", &Json::Null, &short)
        .result
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("100 ms"), "{e:?}");
}

#[test]
fn sessions_call_dotted_names_take_input_and_lower_limits() {
    check_session_contract(&sandbox(Profile::Standard));
}

/// `memory_bytes` is what the state keeps after the call (a session's global stays
/// counted in the next call's figure); `peak_memory_bytes` is the call's peak, apart:
/// `string.rep` builds its result in a buffer it frees before the call ends, so the peak
/// holds both. (That each call's peak is its own is
/// `vm::control::tests::each_call_starts_its_peak_from_the_memory_in_use`.)
#[test]
fn session_memory_is_in_use_after_the_call_and_peak_apart() {
    let sb = sandbox(Profile::Standard);
    let mut s = sb.session().unwrap();
    let before = s.exec("return 1").stats.memory_bytes;
    assert!(before < 1 << 20, "{before}");
    let kept = s.exec("big = string.rep('x', 1 << 20)");
    assert!(kept.stats.memory_bytes > 1 << 20, "{:?}", kept.stats);
    assert!(
        kept.stats.peak_memory_bytes > kept.stats.memory_bytes + (1 << 19),
        "{:?}",
        kept.stats
    );
    let next = s.exec("return #big");
    assert_eq!(next.result, Ok(json!(1 << 20)));
    assert!(next.stats.memory_bytes > 1 << 20, "{:?}", next.stats);
}

#[test]
fn isolated_runs_keep_the_contract() {
    let sb = isolated();
    let out = sb.run("return nil, 'not found'", &Json::Null);
    assert_eq!(
        out.to_json()["results"],
        json!([null, "not found"]),
        "{out:?}"
    );
    let out = sb.run(
        "function run(ctx)\n  for _ in ipairs(ctx.orders) do end\nend",
        &json!({}),
    );
    let e = out.error().unwrap();
    assert_eq!(e.line, Some(2), "{e:?}");
    assert_eq!(e.traceback, [frame(Some("run"), "script", 2)]);
    let out = sb.run("error({code = 1})", &Json::Null);
    assert_eq!(out.error().unwrap().value, Some(json!({"code": 1})));
    let opts = RunOptions::default().expression(true);
    assert_eq!(
        sb.run_with("6 * 7", &Json::Null, &opts).result,
        Ok(json!(42))
    );
    assert_eq!(
        sb.run("#!/bin/lua\nreturn 1", &Json::Null).result,
        Ok(json!(1))
    );
    check_session_contract(&sb);
}

/// A syntax error keeps Lua's message and adds a hint for habits from other languages;
/// the code is never changed.
#[test]
fn syntax_errors_hint_at_other_languages() {
    let sb = sandbox(Profile::Standard);
    for (code, fragment) in [
        ("local x = 1\nif x != 2 then end", "`~=`"),
        ("x += 1", "x = x + ..."),
        (
            "for i = 1, 3 do\n  if i == 2 then continue end\nend",
            "goto continue",
        ),
        ("local a = b ? 1 : 2", "cond and a or b"),
        ("// note\nreturn 1", "`--`"),
        ("```lua\nreturn 1\n```", "code fence"),
    ] {
        let e = sb.run(code, &Json::Null).result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Syntax, "{code}");
        let hint = e.hint.clone().unwrap_or_default();
        assert!(hint.contains(fragment), "{code}: {e:?}");
        assert!(
            e.message.starts_with("script:"),
            "Lua's message stays: {e:?}"
        );
    }
    // Nothing to say about an ordinary mistake.
    let e = sb.run("local = 1", &Json::Null).result.unwrap_err();
    assert_eq!(e.hint, None);
}
