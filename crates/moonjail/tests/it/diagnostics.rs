//! Diagnostic mode records what a script touched without changing what it does.

use std::time::Duration;

use moonjail::{ErrorKind, HostFiles, Profile, Sandbox};
use serde_json::{json, Value};

fn diag(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .diagnostic(true)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

const SCRIPT: &str = r#"
    local parts = {}
    for i = 1, 3 do parts[#parts + 1] = string.format("%d", i) end
    local s = ("x"):rep(2)
    Counter = (Counter or 0) + 1
    Counter = Counter + 1
    local missing = Handlers
    print(table.concat(parts, ","), s, Counter, missing)
    return {n = #parts, c = Counter, raw = rawget(_G, "Counter"), keys = (function()
        local n = 0 for k in pairs(_G) do if k == "Counter" then n = n + 1 end end return n end)()}
"#;

#[test]
fn records_globals_libraries_and_missing_names() {
    let out = diag(Profile::Standard).run(SCRIPT, &Value::Null);
    assert_eq!(
        out.result.clone().unwrap(),
        json!({"n": 3, "c": 2, "raw": 2, "keys": 1})
    );
    let d = out.diagnostics.expect("diagnostics on");
    assert_eq!(d.library["string.format"], 3);
    assert_eq!(
        d.library["string.rep"], 1,
        "method calls on strings are seen"
    );
    assert_eq!(d.library["table.concat"], 1);
    assert_eq!(d.globals_written["Counter"], 2);
    // `Counter + 1`, the print and the return read it; the first `(Counter or 0)` missed.
    assert_eq!(d.globals_read["Counter"], 3);
    assert_eq!(d.missing["Handlers"], 1);
    assert!(
        d.missing.contains_key("Counter"),
        "first read of Counter was missing"
    );
    assert_eq!(d.globals_read["print"], 1);
    assert_eq!(d.globals_read["rawget"], 1);
}

#[test]
fn behaviour_is_the_same_with_and_without() {
    let plain = Sandbox::builder().build().unwrap();
    for code in [
        SCRIPT,
        "setmetatable(_G, {__index = function(_, k) return 'dflt:' .. k end}) return {x, getmetatable(_G) ~= nil}",
        "rawset(_G, 'a', 1) local n = 0 for k, v in next, _G do n = n + 1 end return {rawget(_G, 'a'), rawlen(_G), n > 5}",
        "local f = load('y = 5 return y') return {f(), y, _G.y, _G._G == _G}",
        "return select('#', pcall(error, {}))",
    ] {
        let a = plain.run(code, &Value::Null);
        let b = diag(Profile::Standard).run(code, &Value::Null);
        assert_eq!(a.result, b.result, "{code}");
        assert_eq!(a.output, b.output, "{code}");
    }
}

#[test]
fn bookkeeping_does_not_count_against_limits() {
    let sb = |d: bool| {
        Sandbox::builder()
            .instruction_limit(5_000)
            .memory_limit(256 << 10)
            .diagnostic(d)
            .build()
            .unwrap()
    };
    // The same number of instructions passes or fails the same way.
    let code = "local x = 0 for i = 1, 500 do x = x + (math.abs(-i)) end return x";
    assert!(sb(false).run(code, &Value::Null).is_ok());
    assert!(sb(true).run(code, &Value::Null).is_ok());
    let code = "local x = 0 for i = 1, 5000 do x = x + math.abs(-i) end return x";
    assert_eq!(
        sb(true).run(code, &Value::Null).error().unwrap().kind,
        ErrorKind::InstructionLimit
    );
}

#[test]
fn requires_are_recorded() {
    let dir = std::env::temp_dir().join(format!("moonjail-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("helper.lua"), "return {v = 1}").unwrap();
    let sb = Sandbox::builder()
        .profile(Profile::Aos)
        .diagnostic(true)
        .host_files(HostFiles::default().modules_dir(&dir))
        .build()
        .unwrap();
    let out = sb.run(
        "local h = require('helper') local h2 = require('helper') local ok = pcall(require, 'nope') return h.v",
        &Value::Null,
    );
    assert_eq!(out.result.clone().unwrap(), json!(1));
    let d = out.diagnostics.unwrap();
    let names: Vec<_> = d
        .require
        .iter()
        .map(|r| (r.name.as_str(), r.found))
        .collect();
    assert_eq!(names, [("helper", true), ("helper", true), ("nope", false)]);
    assert_eq!(d.globals_read["require"], 3);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn off_by_default_and_in_json() {
    let out = Sandbox::builder()
        .build()
        .unwrap()
        .run("return 1", &Value::Null);
    assert!(out.diagnostics.is_none());
    assert!(out.to_json().get("diagnostics").is_none());
    let out = diag(Profile::Minimal).run("return math.max(1, 2)", &Value::Null);
    assert_eq!(
        out.to_json()["diagnostics"]["library"]["math.max"],
        json!(1)
    );
}

#[test]
fn the_proxies_memory_is_not_charged_to_the_script() {
    const LIMIT: usize = 128 << 10;
    let sb = |d: bool| {
        Sandbox::builder()
            .memory_limit(LIMIT)
            .diagnostic(d)
            .build()
            .unwrap()
    };
    let plain_peak = sb(false)
        .run("return 1", &Value::Null)
        .stats
        .peak_memory_bytes;
    let diag_peak = sb(true)
        .run("return 1", &Value::Null)
        .stats
        .peak_memory_bytes;
    let proxies = diag_peak - plain_peak;
    const MARGIN: usize = 2048;
    assert!(
        proxies > 2 * MARGIN,
        "the proxies cost only {proxies} bytes: the test below could not tell"
    );
    // A string that fits the limit with MARGIN to spare when the proxies are not charged,
    // and would not if they were (`string.rep` holds its buffer and the result at once,
    // so it needs twice the length).
    let n = (LIMIT - plain_peak - MARGIN) / 2;
    let code = format!("local s = string.rep('x', {n}) return #s");
    assert_eq!(sb(false).run(&code, &Value::Null).result, Ok(json!(n)));
    assert_eq!(sb(true).run(&code, &Value::Null).result, Ok(json!(n)));
}
