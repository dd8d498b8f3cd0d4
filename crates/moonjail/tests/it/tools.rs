//! Host tools through the library: the registry's namespaces in Lua (immutability),
//! argument and result marshaling, tool errors, panics, quotas, the deadline, and the
//! audit record, in process. The same, across the worker channel: `tools_isolated.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moonjail::{
    ConfigError, ErrorKind, Outcome, Profile, Sandbox, SandboxBuilder, ToolQuota, ToolRegistry,
};
use serde_json::{json, Value as Json};

use crate::support::tool_fixtures;
use tool_fixtures::{builder, echo};

fn sandbox() -> Sandbox {
    builder().build().expect("the sandbox builds")
}

fn run(sb: &Sandbox, src: &str) -> Outcome {
    sb.run(src, &Json::Null)
}

fn ok(sb: &Sandbox, src: &str) -> Json {
    let out = run(sb, src);
    match out.result {
        Ok(v) => v,
        Err(e) => panic!("{src}\nfailed: {} {}", e.kind, e.message),
    }
}

#[test]
fn tools_are_called_by_their_dotted_names() {
    let sb = sandbox();
    assert_eq!(
        ok(&sb, r#"return weather.lookup{city = "Lyon"}"#),
        json!({"forecast": "sunny", "temperature_c": 21})
    );
    assert_eq!(
        ok(&sb, "return echo(1, 'two', true)"),
        json!([1, "two", true])
    );
    assert_eq!(ok(&sb, "return deep.er.tool()"), json!("deep"));
    assert_eq!(ok(&sb, "return type(echo)"), json!("function"));
    // From a coroutine, and through a local alias.
    assert_eq!(
        ok(
            &sb,
            "local f = echo return coroutine.wrap(function() return f(7) end)()"
        ),
        json!([7])
    );
}

#[test]
fn namespaces_cannot_be_modified() {
    let sb = sandbox();
    // Assignment, deletion, replacement of a tool: all refused with a plain message.
    for attempt in [
        "weather.lookup = function() return 'fake' end",
        "weather.x = 1",
        "weather.lookup = nil",
        "deep.er = {}",
        "deep.er.tool = print",
    ] {
        let src = format!("local ok, err = pcall(function() {attempt} end) return {{ok, err}}");
        let r = ok(&sb, &src);
        assert_eq!(r[0], json!(false), "{attempt} succeeded");
        let msg = r[1].as_str().unwrap();
        assert!(msg.contains("is read-only"), "{attempt}: {msg}");
    }
    // The metatable is out of reach: getmetatable gives a string, setmetatable, rawset,
    // rawget and next refuse a namespace outright.
    assert_eq!(
        ok(&sb, "return getmetatable(weather)"),
        json!("locked: tool namespaces cannot be changed")
    );
    for attempt in [
        "setmetatable(weather, {})",
        "setmetatable(weather, nil)",
        "rawset(weather, 'lookup', print)",
        "rawset(weather, 'x', 1)",
        "rawget(weather, 'lookup')",
        "next(weather)",
        "getmetatable(weather).__index = {}",
    ] {
        let src = format!("return (pcall(function() {attempt} end))");
        assert_eq!(ok(&sb, &src), json!(false), "{attempt} succeeded");
    }
    // After every attempt in one script, the tool is still the tool.
    let src = r#"
        pcall(function() weather.lookup = nil end)
        pcall(rawset, weather, "lookup", print)
        pcall(setmetatable, weather, {__index = {lookup = print}})
        return weather.lookup{city = "Lyon"}.forecast
    "#;
    assert_eq!(ok(&sb, src), json!("sunny"));
    assert_eq!(ok(&sb, "return type(weather)"), json!("userdata"));
    assert_eq!(
        ok(&sb, "return tostring(weather)"),
        json!("tool namespace: weather")
    );
}

#[test]
fn replacing_a_namespace_affects_only_that_script() {
    let sb = sandbox();
    let src = r#"
        weather = {lookup = function() return "fake" end}
        echo = nil
        return weather.lookup()
    "#;
    assert_eq!(ok(&sb, src), json!("fake"));
    // The next run has the real tools again.
    assert_eq!(
        ok(
            &sb,
            r#"return {weather.lookup{city = "Lyon"}.forecast, echo(1)}"#
        ),
        json!(["sunny", [1]])
    );
}

#[test]
fn namespaces_can_be_iterated_without_reaching_their_table() {
    let sb = sandbox();
    let src = r#"
        local names = {}
        for k, v in pairs(weather) do names[#names + 1] = k .. ":" .. type(v) end
        local f, state = pairs(weather)
        return {names = names, state_is_namespace = rawequal(state, weather)}
    "#;
    assert_eq!(
        ok(&sb, src),
        json!({"names": ["boom:function", "fail:function", "lookup:function"],
               "state_is_namespace": true})
    );
    assert_eq!(
        ok(&sb, "local n = 0 for k, v in pairs(deep) do n = n + 1 assert(type(v) == 'userdata') end return n"),
        json!(1)
    );
}

#[test]
fn arguments_cross_as_json() {
    let sb = sandbox();
    let src = r#"return echo({1, 2, {a = "b"}}, {x = {y = json.null}}, nil, 3.5, "é")"#;
    assert_eq!(
        ok(&sb, src),
        // `y` reached the tool as null; coming back, a null field is absent in Lua.
        json!([[1, 2, {"a": "b"}], {"x": {}}, null, 3.5, "é"])
    );
    // Trailing nils are dropped: f(a, nil) is f(a).
    assert_eq!(ok(&sb, "return #echo(1, nil, nil)"), json!(1));
    assert_eq!(ok(&sb, "return echo()"), json!([]));
    // Empty arrays from JSON stay arrays on the way back.
    assert_eq!(ok(&sb, "return echo(json.decode('[]'))"), json!([[]]));
}

#[test]
fn arguments_json_cannot_hold_are_catchable_tool_errors() {
    let sb = sandbox();
    for (arg, needle) in [
        (
            "print",
            "argument 1: $: a function cannot be represented in JSON",
        ),
        ("{f = print}", "argument 1: $.f: a function"),
        (
            "(function() local t = {} t.self = t return t end)()",
            "cycle",
        ),
        ("0/0", "NaN"),
        ("coroutine.create(print)", "a thread cannot be represented"),
    ] {
        let src = format!("local ok, err = pcall(echo, {arg}) return {{ok, err}}");
        let r = ok(&sb, &src);
        assert_eq!(r[0], json!(false), "{arg}");
        let msg = r[1].as_str().unwrap();
        assert!(msg.starts_with("echo: "), "{msg}");
        assert!(msg.contains(needle), "{arg}: {msg}");
    }
    // The argument is not marshaled past the depth limit either.
    let sb = builder().result_depth(4).build().unwrap();
    let r = ok(&sb, "return {pcall(echo, {{{{{{}}}}}})}");
    assert!(r[1].as_str().unwrap().contains("nested deeper"), "{r}");
}

#[test]
fn tool_errors_are_plain_strings_the_script_can_catch() {
    let sb = sandbox();
    let src = r#"
        local ok, err = pcall(weather.lookup, {city = "Rome"})
        return {ok = ok, err = err, kind = type(err), joined = "tool said: " .. err}
    "#;
    assert_eq!(
        ok(&sb, src),
        json!({"ok": false, "err": "weather.lookup: no forecast for Rome", "kind": "string",
               "joined": "tool said: weather.lookup: no forecast for Rome"})
    );
    // Uncaught, it fails the run as a runtime error with the line.
    let out = run(&sb, "local x = 1\nreturn weather.fail()");
    let e = out.error().unwrap();
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert_eq!(e.line, Some(2));
    assert_eq!(e.message, "script:2: weather.fail: the service is down");
    // error() rethrows it unchanged.
    let out = run(&sb, "local ok, err = pcall(weather.fail) error(err, 0)");
    assert_eq!(
        out.error().unwrap().message,
        "weather.fail: the service is down"
    );
}

#[test]
fn a_panicking_tool_is_contained_and_reported() {
    let sb = sandbox();
    let out = run(&sb, "local ok, err = pcall(weather.boom) return {ok, err}");
    assert_eq!(
        out.result.unwrap(),
        json!([false, "weather.boom: the tool panicked: the tool's own bug"])
    );
    assert_eq!(out.tool_calls.len(), 1);
    assert!(!out.tool_calls[0].ok);
    assert_eq!(
        out.tool_calls[0].error.as_deref(),
        Some("the tool panicked: the tool's own bug")
    );
    // Uncaught, the run fails as a runtime error; the host is fine.
    let out = run(&sb, "weather.boom()");
    assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
    assert!(out.error().unwrap().message.contains("panicked"));
    assert_eq!(ok(&sb, "return echo(1)"), json!([1]));
}

#[test]
fn results_cross_as_json() {
    let sb = Sandbox::builder()
        .tool("data.get", |_| {
            Ok(json!({"list": [1, 2.5, "x", null, {"k": []}], "empty": {}, "n": null}))
        })
        .build()
        .unwrap();
    let src = r#"
        local d = data.get()
        return {d.list[1], math.type(d.list[1]), d.list[2], d.list[4] == json.null,
                #d.list, d.n == nil, json.encode(d.list[5].k), json.encode(d.empty)}
    "#;
    assert_eq!(
        ok(&sb, src),
        json!([1, "integer", 2.5, true, 5, true, "[]", "{}"])
    );
    // A result nested deeper than the limit is a catchable error, not a crash.
    let sb = Sandbox::builder()
        .result_depth(3)
        .tool("deep", |_| Ok(json!([[[[[1]]]]])))
        .build()
        .unwrap();
    let r = ok(&sb, "return {pcall(deep)}");
    assert_eq!(r[0], json!(false));
    assert!(r[1].as_str().unwrap().contains("deep: result:"), "{r}");
}

#[test]
fn a_result_larger_than_the_heap_is_a_memory_limit() {
    let sb = Sandbox::builder()
        .memory_limit(1 << 20)
        .tool("big", |_| Ok(Json::String("x".repeat(4 << 20))))
        .build()
        .unwrap();
    let out = run(&sb, "local ok = pcall(big) return 1");
    assert_eq!(out.error().unwrap().kind, ErrorKind::MemoryLimit);
}

#[test]
fn quotas_bound_calls_per_tool_and_per_run() {
    let sb = builder()
        .tool_quota(
            ToolQuota::default()
                .per_run(Some(6))
                .tool("weather.lookup", 2),
        )
        .build()
        .unwrap();
    let src = r#"
        local results = {}
        for i = 1, 4 do
            local ok, err = pcall(weather.lookup, {city = "Lyon"})
            results[#results + 1] = ok and "ok" or err
        end
        for i = 1, 6 do
            local ok, err = pcall(echo, i)
            results[#results + 1] = ok and "ok" or err
        end
        return results
    "#;
    let out = run(&sb, src);
    let quota_tool =
        "weather.lookup: tool call quota exceeded: at most 2 calls to `weather.lookup` per run";
    let quota_run = "echo: tool call quota exceeded: at most 6 tool calls per run";
    assert_eq!(
        out.result.as_ref().unwrap(),
        &json!(["ok", "ok", quota_tool, quota_tool, "ok", "ok", "ok", "ok", quota_run, quota_run])
    );
    // Refused calls ran nothing and are not recorded.
    assert_eq!(out.tool_calls.len(), 6);
    // Quotas are per run: the next run starts afresh.
    assert_eq!(ok(&sb, "return echo(1)"), json!([1]));
}

#[test]
fn namespace_quotas_cover_every_tool_under_them() {
    let sb = builder()
        .tool_quota(ToolQuota::default().tool("weather", 1))
        .build()
        .unwrap();
    let r = ok(
        &sb,
        "return {pcall(weather.fail), pcall(weather.lookup, {city = 'Lyon'})}",
    );
    // pcall's first values only: false (the tool's error), then false (the quota).
    assert_eq!(r[0], json!(false));
    let r = ok(
        &sb,
        "pcall(weather.fail) local ok, err = pcall(weather.lookup, {city = 'Lyon'}) return err",
    );
    assert!(r.as_str().unwrap().contains("the `weather` tools"), "{r}");
}

#[test]
fn every_call_is_recorded() {
    let sb = sandbox();
    let out = run(
        &sb,
        r#"
        weather.lookup{city = "Lyon"}
        pcall(weather.lookup, {city = "Rome"})
        pcall(echo, print)
        return echo("abc")
    "#,
    );
    assert!(out.is_ok());
    let calls = &out.tool_calls;
    let summary: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.ok,
                c.error.as_deref(),
                c.bytes_in,
                c.bytes_out,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "weather.lookup",
                true,
                None,
                r#"[{"city":"Lyon"}]"#.len() as u64,
                r#"{"forecast":"sunny","temperature_c":21}"#.len() as u64
            ),
            (
                "weather.lookup",
                false,
                Some("no forecast for Rome"),
                r#"[{"city":"Rome"}]"#.len() as u64,
                0
            ),
            (
                "echo",
                false,
                Some("argument 1: $: a function cannot be represented in JSON"),
                0,
                0
            ),
            ("echo", true, None, 7, 7),
        ]
    );
    assert!(calls.iter().all(|c| c.duration < Duration::from_secs(1)));
    // The --json document lists them; without calls there is no "tool_calls" key.
    let doc = out.to_json();
    assert_eq!(doc["tool_calls"].as_array().unwrap().len(), 4);
    assert_eq!(doc["tool_calls"][0]["name"], json!("weather.lookup"));
    assert_eq!(doc["tool_calls"][1]["error"], json!("no forecast for Rome"));
    assert!(doc["tool_calls"][0]["ms"].is_number());
    assert!(run(&sb, "return 1").to_json().get("tool_calls").is_none());
}

#[test]
fn a_tool_call_cannot_outlive_the_run() {
    // The tool gets the run's deadline and sleeps past it; even though the script
    // catches the error, the run ends as a timeout, right after the deadline.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let sb = Sandbox::builder()
        .timeout(Duration::from_millis(300))
        .tool_with_context("slow", move |ctx, _| {
            *seen2.lock().unwrap() = ctx.remaining();
            std::thread::sleep(ctx.timeout(Duration::from_secs(10)) + Duration::from_millis(20));
            Ok(json!("late"))
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let out = run(&sb, "local ok, r = pcall(slow) return r");
    assert_eq!(
        out.error().unwrap().kind,
        ErrorKind::Timeout,
        "{:?}",
        out.result
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    let remaining = seen.lock().unwrap().unwrap();
    assert!(
        remaining <= Duration::from_millis(300) && remaining > Duration::from_millis(200),
        "{remaining:?}"
    );
    // The call is still recorded.
    assert_eq!(out.tool_calls.len(), 1);
}

#[test]
fn calls_after_the_deadline_never_reach_the_tool() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let sb = Sandbox::builder()
        .timeout(Duration::from_millis(200))
        .tool_quota(ToolQuota::default().per_run(None))
        .tool("tick", move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(Json::Null)
        })
        .build()
        .unwrap();
    let out = run(&sb, "while true do pcall(tick) end");
    assert_eq!(out.error().unwrap().kind, ErrorKind::Timeout);
    assert_eq!(out.tool_calls.len(), calls.load(Ordering::SeqCst));
}

#[test]
fn tools_work_in_every_profile_and_in_diagnostic_mode() {
    for profile in [Profile::Minimal, Profile::Standard, Profile::Aos] {
        let sb = builder().profile(profile).build().unwrap();
        assert_eq!(
            ok(&sb, r#"return weather.lookup({city = "Lyon"}).forecast"#),
            json!("sunny"),
            "{profile:?}"
        );
    }
    let sb = builder().diagnostic(true).build().unwrap();
    let out = run(&sb, "return echo(1)");
    assert_eq!(out.result.unwrap(), json!([1]));
    let d = out.diagnostics.unwrap();
    assert!(d.globals_read.contains_key("echo"), "{d:?}");
}

#[test]
fn runs_on_many_threads_share_only_the_registry() {
    let sb = Arc::new(
        builder()
            .tool_quota(ToolQuota::default().tool("echo", 3))
            .build()
            .unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let sb = sb.clone();
            std::thread::spawn(move || {
                let src = format!("local n = 0 for i = 1, 3 do n = n + echo({i})[1] end return n");
                let out = sb.run(src, &Json::Null);
                (out.result.unwrap(), out.tool_calls.len())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), (json!(3 * i), 3));
    }
}

#[test]
fn build_refuses_bad_tool_configurations() {
    let err = |b: SandboxBuilder| match b.build() {
        Err(ConfigError::Tool { name, reason }) => format!("{name}: {reason}"),
        other => panic!("expected a tool error, got {other:?}"),
    };
    assert!(err(Sandbox::builder().tool("1bad", echo)).contains("not a Lua identifier"));
    assert!(err(Sandbox::builder().tool("a.end", echo)).contains("`end`"));
    assert!(err(Sandbox::builder().tool("x", echo).tool("x", echo)).contains("already"));
    assert!(err(Sandbox::builder().tool("x", echo).tool("x.y", echo)).contains("already a tool"));
    let e = err(Sandbox::builder().tool("string.shout", echo));
    assert!(e.contains("already defines the global `string`"), "{e}");
    // ... but a name the profile does not have is fine in that profile.
    assert!(Sandbox::builder()
        .profile(Profile::Minimal)
        .tool("json.extra", echo)
        .build()
        .is_ok());
    let e = err(Sandbox::builder().allow_http("http://a.com"));
    assert!(e.starts_with("http: "), "{e}");
    let mut registry = ToolRegistry::new();
    registry.register("http.get", echo).unwrap();
    let e = err(Sandbox::builder().tools(registry).allow_http("a.com"));
    assert!(e.contains("already registered"), "{e}");
}

#[test]
fn the_registry_is_a_plain_dispatcher_too() {
    // What the supervisor calls for a worker: by name, JSON in, JSON or a tool error out,
    // with the quotas and the audit of one run.
    let mut registry = ToolRegistry::new();
    registry.register("echo", echo).unwrap();
    registry.set_quota(ToolQuota::default().per_run(Some(1)));
    let registry = Arc::new(registry);
    let run = registry.start_run(Some(Instant::now() + Duration::from_secs(5)));
    assert_eq!(run.call("echo", vec![json!(1)]).unwrap(), json!([1]));
    assert!(run
        .call("echo", vec![])
        .unwrap_err()
        .message()
        .contains("quota"));
    assert!(run
        .call("nope", vec![])
        .unwrap_err()
        .message()
        .contains("no tool"));
    assert_eq!(run.take_calls().len(), 1);
}
