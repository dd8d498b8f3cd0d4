//! Host tools across the process boundary (`Isolation::Process`): the script runs in a
//! locked-down worker, every tool runs in the supervisor. The cases of `tools.rs` again —
//! immutability, marshaling, errors, panics, quotas, the audit record, the deadline —
//! compared with in-process runs where they can be; then what only a worker boundary
//! has: the `http` tool used from a worker without a network, fake workers that ask for
//! tools that do not exist or flood the channel, a tool that ignores its deadline, and
//! sessions with tools in both modes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moonjail::worker::{LayerSet, ProcessConfigBuilder};
use moonjail::{
    ErrorKind, Isolation, Outcome, ProcessConfig, Profile, Sandbox, SandboxBuilder, ToolError,
    ToolQuota, WorkerPath,
};
use serde_json::{json, Value as Json};

use crate::support::fake_worker;
use fake_worker::{frame, Fake, HOST_CALL};

/// A test that has not finished after this long has hung the supervisor.
const HANG_GUARD: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

fn config() -> ProcessConfigBuilder {
    ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(1)
}

fn isolated(builder: SandboxBuilder) -> Sandbox {
    isolated_with(builder, config())
}

fn isolated_with(builder: SandboxBuilder, config: ProcessConfigBuilder) -> Sandbox {
    builder
        .isolation(Isolation::Process(
            config.build().expect("a process config"),
        ))
        .build()
        .expect("the sandbox builds")
}

/// Runs `body` on a helper thread; panics if it does not finish (a hung supervisor).
fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    crate::support::guarded(HANG_GUARD, body)
}

use crate::support::tool_fixtures;
use crate::support::{unusable, WORKER};
use tool_fixtures::{builder, echo};

/// The same sandbox, in process and isolated.
fn both() -> (Sandbox, Sandbox) {
    (builder().build().unwrap(), isolated(builder()))
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

/// What a host compares between the two modes: everything but timings.
fn essence(out: &Outcome) -> Json {
    json!({
        "result": match &out.result {
            Ok(v) => json!({"ok": v}),
            Err(e) => json!({"kind": e.kind.as_str(), "message": e.message, "line": e.line}),
        },
        "output": out.output,
        "tool_calls": out.tool_calls.iter().map(|c| json!({
            "name": c.name, "ok": c.ok, "error": c.error,
            "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
        })).collect::<Vec<_>>(),
    })
}

/// Runs `src` in both sandboxes and asserts the same outcome; returns it.
fn same(local: &Sandbox, remote: &Sandbox, src: &str) -> Json {
    let a = essence(&run(local, src));
    let b = essence(&run(remote, src));
    assert_eq!(a, b, "in process vs isolated differ for\n{src}");
    a
}

/// A counting tool.
fn counter() -> (
    Arc<AtomicUsize>,
    impl Fn(Vec<Json>) -> Result<Json, ToolError>,
) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    (count, move |_| {
        Ok(json!(c.fetch_add(1, Ordering::SeqCst) + 1))
    })
}

// ---------------------------------------------------------------------------------------
// The cases of tools.rs, isolated.
// ---------------------------------------------------------------------------------------

#[test]
fn tools_are_called_by_their_dotted_names() {
    guarded(|| {
        let (local, remote) = both();
        for src in [
            r#"return weather.lookup{city = "Lyon"}"#,
            "return echo(1, 'two', true)",
            "return deep.er.tool()",
            "return {type(echo), type(weather), tostring(weather), tostring(deep.er)}",
            "local f = echo return coroutine.wrap(function() return f(7) end)()",
        ] {
            let r = same(&local, &remote, src);
            assert!(r["result"].get("ok").is_some(), "{src}: {r}");
        }
        assert_eq!(
            ok(&remote, r#"return weather.lookup{city = "Lyon"}.forecast"#),
            json!("sunny")
        );
    });
}

#[test]
fn namespaces_cannot_be_modified() {
    guarded(|| {
        let (local, remote) = both();
        for attempt in [
            "weather.lookup = function() return 'fake' end",
            "weather.x = 1",
            "weather.lookup = nil",
            "deep.er = {}",
            "deep.er.tool = print",
            "setmetatable(weather, {})",
            "setmetatable(weather, nil)",
            "rawset(weather, 'lookup', print)",
            "rawset(weather, 'x', 1)",
            "rawget(weather, 'lookup')",
            "next(weather)",
            "getmetatable(weather).__index = {}",
        ] {
            let src = format!("local ok, err = pcall(function() {attempt} end) return {{ok, err}}");
            let r = ok(&remote, &src);
            assert_eq!(r[0], json!(false), "{attempt} succeeded");
            same(&local, &remote, &src);
        }
        assert_eq!(
            ok(&remote, "return getmetatable(weather)"),
            json!("locked: tool namespaces cannot be changed")
        );
        let src = r#"
            pcall(function() weather.lookup = nil end)
            pcall(rawset, weather, "lookup", print)
            pcall(setmetatable, weather, {__index = {lookup = print}})
            return weather.lookup{city = "Lyon"}.forecast
        "#;
        assert_eq!(ok(&remote, src), json!("sunny"));
        // Replacing the global changes only that script's globals.
        let src =
            "weather = {lookup = function() return 'fake' end} echo = nil return weather.lookup()";
        assert_eq!(ok(&remote, src), json!("fake"));
        assert_eq!(
            ok(
                &remote,
                r#"return {weather.lookup{city = "Lyon"}.forecast, echo(1)}"#
            ),
            json!(["sunny", [1]])
        );
        // Iteration shows the members, in order, without the hidden table.
        let src = "local n = {} for k, v in pairs(weather) do n[#n + 1] = k .. ':' .. type(v) end return n";
        assert_eq!(
            ok(&remote, src),
            json!(["boom:function", "fail:function", "lookup:function"])
        );
    });
}

#[test]
fn arguments_and_results_cross_as_json() {
    guarded(|| {
        let (local, remote) = both();
        let r = same(
            &local,
            &remote,
            r#"return echo({1, 2, {a = "b"}}, {x = {y = json.null}}, nil, 3.5, "é", math.maxinteger)"#,
        );
        assert_eq!(
            r["result"]["ok"],
            // `y` reached the tool as null; coming back, a null field is absent in Lua.
            json!([[1, 2, {"a": "b"}], {"x": {}}, null, 3.5, "é", i64::MAX])
        );
        for src in [
            "return #echo(1, nil, nil)",
            "return echo()",
            "return echo(json.decode('[]'))",
            "return math.type(echo(1)[1]) .. math.type(echo(1.0)[1])",
            // Arguments JSON cannot hold: catchable, and recorded as failed calls.
            "return {pcall(echo, print)}",
            "return {pcall(echo, {f = print})}",
            "local t = {} t.self = t return {pcall(echo, t)}",
            "return {pcall(echo, 0/0)}",
            "return {pcall(echo, coroutine.create(print))}",
        ] {
            same(&local, &remote, src);
        }
        // Results: nulls, empty arrays and objects, integers and floats.
        let tool = |b: SandboxBuilder| {
            b.tool("data.get", |_| {
                Ok(json!({"list": [1, 2.5, "x", null, {"k": []}], "empty": {}, "n": null}))
            })
        };
        let src = r#"
            local d = data.get()
            return {d.list[1], math.type(d.list[1]), d.list[2], d.list[4] == json.null,
                    #d.list, d.n == nil, json.encode(d.list[5].k), json.encode(d.empty)}
        "#;
        let remote_data = isolated(tool(Sandbox::builder()));
        assert_eq!(
            ok(&remote_data, src),
            json!([1, "integer", 2.5, true, 5, true, "[]", "{}"])
        );
        // Depth: arguments are bounded before they leave the worker, results before they
        // become Lua values; both are catchable errors.
        let deep = |b: SandboxBuilder| {
            b.result_depth(4)
                .tool("deep", |_| Ok(json!([[[[[1]]]]])))
                .tool("echo", echo)
        };
        let (local, remote) = (
            deep(Sandbox::builder()).build().unwrap(),
            isolated(deep(Sandbox::builder())),
        );
        let r = same(&local, &remote, "return {pcall(deep)}");
        assert!(
            r["result"]["ok"][1]
                .as_str()
                .unwrap()
                .contains("deep: result:"),
            "{r}"
        );
        let r = same(&local, &remote, "return {pcall(echo, {{{{{{}}}}}})}");
        assert!(
            r["result"]["ok"][1]
                .as_str()
                .unwrap()
                .contains("nested deeper"),
            "{r}"
        );
    });
}

#[test]
fn results_and_arguments_deeper_than_serdes_default_cross() {
    guarded(|| {
        // result_depth above serde_json's fixed limit of 128, both ways.
        let b = || Sandbox::builder().result_depth(300).tool("echo", echo);
        let (local, remote) = (b().build().unwrap(), isolated(b()));
        let src = "local t = 1 for i = 1, 250 do t = {t} end local r = echo(t)[1] \
                   local n = 0 while type(r) == 'table' do r = r[1] n = n + 1 end return n";
        assert_eq!(same(&local, &remote, src)["result"]["ok"], json!(250));
    });
}

#[test]
fn tool_errors_are_plain_strings_the_script_can_catch() {
    guarded(|| {
        let (local, remote) = both();
        let src = r#"
            local ok, err = pcall(weather.lookup, {city = "Rome"})
            return {ok = ok, err = err, kind = type(err), joined = "tool said: " .. err}
        "#;
        assert_eq!(
            same(&local, &remote, src)["result"]["ok"],
            json!({"ok": false, "err": "weather.lookup: no forecast for Rome", "kind": "string",
                   "joined": "tool said: weather.lookup: no forecast for Rome"})
        );
        let out = run(&remote, "local x = 1\nreturn weather.fail()");
        let e = out.error().unwrap();
        assert_eq!(
            (e.kind, e.line, e.message.as_str()),
            (
                ErrorKind::Runtime,
                Some(2),
                "script:2: weather.fail: the service is down"
            )
        );
        same(&local, &remote, "local x = 1\nreturn weather.fail()");
        same(
            &local,
            &remote,
            "local ok, err = pcall(weather.fail) error(err, 0)",
        );
    });
}

#[test]
fn a_panicking_tool_is_contained_and_reported() {
    guarded(|| {
        let (local, remote) = both();
        let r = same(
            &local,
            &remote,
            "local ok, err = pcall(weather.boom) return {ok, err}",
        );
        assert_eq!(
            r["result"]["ok"],
            json!([false, "weather.boom: the tool panicked: the tool's own bug"])
        );
        assert_eq!(
            r["tool_calls"][0]["error"],
            json!("the tool panicked: the tool's own bug")
        );
        let out = run(&remote, "weather.boom()");
        assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
        // The supervisor and the sandbox are fine.
        assert_eq!(ok(&remote, "return echo(1)"), json!([1]));
    });
}

#[test]
fn quotas_bound_calls_per_tool_and_per_run() {
    guarded(|| {
        let b = || {
            builder().tool_quota(
                ToolQuota::default()
                    .per_run(Some(6))
                    .tool("weather.lookup", 2),
            )
        };
        let (local, remote) = (b().build().unwrap(), isolated(b()));
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
        let r = same(&local, &remote, src);
        let quota_tool =
            "weather.lookup: tool call quota exceeded: at most 2 calls to `weather.lookup` per run";
        let quota_run = "echo: tool call quota exceeded: at most 6 tool calls per run";
        assert_eq!(
            r["result"]["ok"],
            json!([
                "ok", "ok", quota_tool, quota_tool, "ok", "ok", "ok", "ok", quota_run, quota_run
            ])
        );
        assert_eq!(r["tool_calls"].as_array().unwrap().len(), 6);
        // Quotas are per run.
        assert_eq!(ok(&remote, "return echo(1)"), json!([1]));
        // A namespace quota covers every tool under it.
        let b = || builder().tool_quota(ToolQuota::default().tool("weather", 1));
        let (local, remote) = (b().build().unwrap(), isolated(b()));
        let r = same(
            &local,
            &remote,
            "pcall(weather.fail) local ok, err = pcall(weather.lookup, {city = 'Lyon'}) return err",
        );
        assert!(
            r["result"]["ok"]
                .as_str()
                .unwrap()
                .contains("the `weather` tools"),
            "{r}"
        );
    });
}

#[test]
fn calls_over_a_quota_never_reach_the_supervisor() {
    guarded(|| {
        // The worker refuses them itself: 100 000 refused calls cost no host call, so a
        // budget of 20 host calls is plenty.
        let (count, tick) = counter();
        let sb = isolated_with(
            Sandbox::builder()
                .tool("tick", tick)
                .tool_quota(ToolQuota::default().per_run(Some(10))),
            config().max_host_calls(20),
        );
        let out = run(
            &sb,
            "local n = 0 for i = 1, 100000 do if pcall(tick) then n = n + 1 end end return n",
        );
        assert_eq!(out.result, Ok(json!(10)));
        assert_eq!(out.tool_calls.len(), 10);
        assert_eq!(count.load(Ordering::SeqCst), 10);
    });
}

#[test]
fn the_audit_record_is_the_same_as_in_process() {
    guarded(|| {
        let (local, remote) = both();
        let src = r#"
            weather.lookup{city = "Lyon"}
            pcall(weather.lookup, {city = "Rome"})
            pcall(echo, print)
            pcall(weather.boom)
            return echo("abc")
        "#;
        let r = same(&local, &remote, src);
        let names: Vec<_> = r["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["ok"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("weather.lookup".to_string(), true),
                ("weather.lookup".to_string(), false),
                ("echo".to_string(), false),
                ("weather.boom".to_string(), false),
                ("echo".to_string(), true)
            ]
        );
        let out = run(&remote, src);
        assert!(out
            .tool_calls
            .iter()
            .all(|c| c.duration < Duration::from_secs(1)));
        let doc = out.to_json();
        assert_eq!(doc["tool_calls"].as_array().unwrap().len(), 5);
        assert!(doc["tool_calls"][0]["ms"].is_number());
        assert_eq!(
            doc["tool_calls"][0]["bytes_in"],
            json!(r#"[{"city":"Lyon"}]"#.len())
        );
        // No calls, no key.
        assert!(run(&remote, "return 1")
            .to_json()
            .get("tool_calls")
            .is_none());
    });
}

#[test]
fn tools_work_in_every_built_in_profile_and_in_diagnostic_mode() {
    guarded(|| {
        for profile in [Profile::Minimal, Profile::Standard, Profile::Aos] {
            let sb = isolated(builder().profile(profile));
            assert_eq!(
                ok(&sb, r#"return weather.lookup({city = "Lyon"}).forecast"#),
                json!("sunny"),
                "{profile:?}"
            );
        }
        let sb = isolated(builder().diagnostic(true));
        let out = run(&sb, "return echo(1)");
        assert_eq!(out.result, Ok(json!([1])));
        assert!(out.diagnostics.unwrap().globals_read.contains_key("echo"));
    });
}

// ---------------------------------------------------------------------------------------
// The deadline.
// ---------------------------------------------------------------------------------------

#[test]
fn a_slow_tool_ends_the_run_as_a_timeout() {
    guarded(|| {
        // The tool honours its deadline and returns just after it; the script catches the
        // tool's answer, yet the run is a timeout.
        let seen = Arc::new(Mutex::new(None));
        let seen2 = Arc::clone(&seen);
        let sb = isolated(
            Sandbox::builder()
                .timeout(Duration::from_millis(300))
                .tool_with_context("slow", move |ctx, _| {
                    *seen2.lock().unwrap() = ctx.remaining();
                    std::thread::sleep(
                        ctx.timeout(Duration::from_secs(10)) + Duration::from_millis(20),
                    );
                    Ok(json!("late"))
                }),
        );
        let start = Instant::now();
        let out = run(&sb, "local ok, r = pcall(slow) return r");
        assert_eq!(
            out.error().map(|e| e.kind),
            Some(ErrorKind::Timeout),
            "{:?}",
            out.result
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let remaining = seen.lock().unwrap().unwrap();
        assert!(
            remaining <= Duration::from_millis(300) && remaining > Duration::from_millis(150),
            "{remaining:?}"
        );
        assert_eq!(out.tool_calls.len(), 1);
        // The next run is fine.
        assert_eq!(ok(&sb, "return 1"), json!(1));
    });
}

#[test]
fn a_tool_returning_right_at_the_deadline_ends_the_run() {
    guarded(|| {
        // The tool returns exactly when its deadline passes, which may be a little before
        // the worker's own deadline (the worker started later): the supervisor's answer
        // then says the run is over. Either way the run ends as a timeout, in both modes.
        let b = || {
            Sandbox::builder()
                .timeout(Duration::from_millis(300))
                .tool_with_context("punctual", |ctx, _| {
                    std::thread::sleep(ctx.timeout(Duration::from_secs(10)));
                    Ok(json!("just in time?"))
                })
        };
        for sb in [b().build().unwrap(), isolated(b())] {
            let out = run(&sb, "return (select(2, pcall(punctual)))");
            assert_eq!(
                out.error().map(|e| e.kind),
                Some(ErrorKind::Timeout),
                "{:?}",
                out.result
            );
            assert_eq!(out.tool_calls.len(), 1);
        }
    });
}

#[test]
fn a_tool_that_ignores_its_deadline_gets_the_worker_killed() {
    guarded(|| {
        // Past the kill deadline (timeout + grace) no answer is sent: the worker is
        // killed and the run reported as a timeout, with the call in the record.
        let sb = isolated_with(
            Sandbox::builder()
                .timeout(Duration::from_millis(200))
                .tool("stubborn", |_| {
                    std::thread::sleep(Duration::from_millis(800));
                    Ok(json!("much too late"))
                }),
            config().kill_grace(Duration::from_millis(100)),
        );
        let out = run(&sb, "local ok, r = pcall(stubborn) return r");
        let e = out.error().unwrap();
        assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}");
        assert!(e.message.contains("killed"), "{e:?}");
        assert_eq!(out.tool_calls.len(), 1);
        assert!(out.tool_calls[0].ok);
        assert_eq!(ok(&sb, "return 1"), json!(1));
    });
}

#[test]
fn calls_after_the_deadline_never_reach_the_tool() {
    guarded(|| {
        let (count, tick) = counter();
        let sb = isolated(
            Sandbox::builder()
                .timeout(Duration::from_millis(200))
                .tool_quota(ToolQuota::default().per_run(None))
                .tool("tick", tick),
        );
        let out = run(&sb, "while true do pcall(tick) end");
        assert_eq!(out.error().unwrap().kind, ErrorKind::Timeout);
        assert_eq!(out.tool_calls.len(), count.load(Ordering::SeqCst));
        assert!(!out.tool_calls.is_empty());
    });
}

// ---------------------------------------------------------------------------------------
// http: the worker has no network, the supervisor makes the request.
// ---------------------------------------------------------------------------------------

/// A one-route HTTP server on 127.0.0.1: `/ok` answers JSON, anything else 404. Counts
/// requests.
fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let (status, body) = if request.starts_with("GET /ok ") {
                ("200 OK", r#"{"hello": "world"}"#)
            } else {
                ("404 Not Found", "nothing here")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

#[test]
fn the_http_tool_is_used_from_a_worker_without_a_network() {
    guarded(|| {
        let (port, hits) = http_server();
        let sb = isolated(Sandbox::builder().allow_http(format!("127.0.0.1:{port}")));
        let src = format!(
            r#"local r = http.get("http://127.0.0.1:{port}/ok")
               local missing = http.get("http://127.0.0.1:{port}/missing")
               local ok, err = pcall(http.get, "http://example.invalid/")
               return {{status = r.status, hello = json.decode(r.body).hello,
                        type = r.headers["content-type"], missing = missing.status, err = err}}"#
        );
        let out = run(&sb, &src);
        let r = out.result.clone().unwrap();
        assert_eq!(
            (&r["status"], &r["hello"], &r["type"], &r["missing"]),
            (
                &json!(200),
                &json!("world"),
                &json!("application/json"),
                &json!(404)
            ),
            "{r}"
        );
        assert!(
            r["err"]
                .as_str()
                .unwrap()
                .contains("not an allowed destination"),
            "{r}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        let calls: Vec<_> = out
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.ok))
            .collect();
        assert_eq!(
            calls,
            [("http.get", true), ("http.get", true), ("http.get", false)]
        );
    });
}

// ---------------------------------------------------------------------------------------
// Floods.
// ---------------------------------------------------------------------------------------

#[test]
fn a_flood_of_tool_calls_is_bounded_by_the_host_call_budget() {
    guarded(|| {
        // No deadline, no tool quota: only the budget of host calls stops the loop.
        let (count, tick) = counter();
        let sb = isolated_with(
            Sandbox::builder()
                .no_timeout()
                .tool_quota(ToolQuota::default().per_run(None))
                .tool("tick", tick),
            config().max_host_calls(200),
        );
        let out = run(&sb, "while true do pcall(tick) end");
        let e = out.error().unwrap();
        assert_eq!(e.kind, ErrorKind::Forbidden, "{e:?}");
        assert!(e.message.contains("more than 200 host calls"), "{e:?}");
        assert_eq!(count.load(Ordering::SeqCst), 200);
        assert_eq!(out.tool_calls.len(), 200);
        // The default quota (1000 calls per run) stops the same loop first, without a
        // host call per refusal: the run then ends at its deadline. (The deadline leaves
        // a loaded machine ample time for the 1000 calls: 300 ms did not, under load.)
        let (count, tick) = counter();
        let sb = isolated(
            Sandbox::builder()
                .timeout(Duration::from_secs(3))
                .tool("tick", tick),
        );
        let out = run(&sb, "while true do pcall(tick) end");
        assert_eq!(out.error().unwrap().kind, ErrorKind::Timeout);
        assert_eq!(count.load(Ordering::SeqCst), 1000);
    });
}

// ---------------------------------------------------------------------------------------
// Fake workers: a worker cannot make the supervisor call what was not registered.
// ---------------------------------------------------------------------------------------

fn tool_call(id: u64, name: &str, args: &str) -> Vec<u8> {
    let meta =
        format!(r#"{{"id": {id}, "request": {{"tool": {{"name": {name:?}, "args": {args}}}}}}}"#);
    frame(HOST_CALL, &[meta.as_bytes()])
}

impl Fake {
    fn sandbox_with_tools(&self, builder: SandboxBuilder, config: ProcessConfigBuilder) -> Sandbox {
        isolated_with(
            builder.timeout(Duration::from_secs(2)),
            config
                .worker(WorkerPath::Path(self.dir.join("worker")))
                .allow_missing(LayerSet::all())
                .prespawn(0)
                .max_frame_bytes(1 << 20),
        )
    }
}

/// Runs against `fake`; returns the error, which must come well before the deadline
/// when `fast`.
fn fake_error(sb: &Sandbox, fast: bool) -> moonjail::Error {
    let started = Instant::now();
    let out = run(sb, "return 1");
    if fast {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }
    out.result.expect_err("a fake worker cannot succeed")
}

#[test]
fn a_worker_asking_for_an_unregistered_tool_is_killed_without_anything_being_called() {
    guarded(|| {
        for name in ["os.execute", "tick.x", "TICK", "", "http.get", "../tick"] {
            let (count, tick) = counter();
            let fake = Fake::new("unregistered", tool_call(1, name, "[]"));
            let sb = fake.sandbox_with_tools(Sandbox::builder().tool("tick", tick), config());
            let e = fake_error(&sb, true);
            assert_eq!(e.kind, ErrorKind::Forbidden, "{name:?}: {e:?}");
            assert!(e.message.contains("not a tool"), "{name:?}: {e:?}");
            assert_eq!(count.load(Ordering::SeqCst), 0, "{name:?}");
        }
        // Without any tool at all, the same.
        let fake = Fake::new("no-tools", tool_call(1, "tick", "[]"));
        let sb = fake.sandbox_with_tools(Sandbox::builder(), config());
        assert_eq!(fake_error(&sb, true).kind, ErrorKind::Forbidden);
        // A registered name with arguments that are not a list: malformed, not called.
        let (count, tick) = counter();
        let fake = Fake::new("bad-args", tool_call(1, "tick", r#"{"a": 1}"#));
        let sb = fake.sandbox_with_tools(Sandbox::builder().tool("tick", tick), config());
        let e = fake_error(&sb, true);
        assert_eq!(e.kind, ErrorKind::Internal, "{e:?}");
        assert!(e.message.contains("malformed"), "{e:?}");
        assert_eq!(count.load(Ordering::SeqCst), 0);
    });
}

/// User plus system CPU time of `pid`, in clock ticks, and its state letter.
fn cpu_ticks(pid: u32) -> (u64, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (ticks, fields[0].chars().next().unwrap())
}

#[test]
fn a_worker_waiting_at_a_deferred_call_is_frozen() {
    // While a run started with `Sandbox::start` waits for a person, no deadline watches
    // its worker (the supervisor waits for the host, and the deadline moves by the wait).
    // A worker that computes instead of waiting for the answer is frozen meanwhile: it
    // gets no CPU time, however long the person takes.
    guarded(|| {
        let fake = Fake::spinning("frozen", tool_call(1, "ask", "[]"));
        let sb = fake.sandbox_with_tools(Sandbox::builder().defer_tool("ask"), config());
        let suspension = match sb.start("return ask()", &Json::Null, &Default::default()) {
            moonjail::Run::Suspended(s) => s,
            moonjail::Run::Finished(o) => panic!("not suspended: {o:?}"),
        };
        let pid: u32 = std::fs::read_to_string(fake.dir.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // A stop signal takes effect as the kernel next schedules the process: give it
        // that moment (on a loaded machine, a spinning process may still be running).
        let stopped_by = Instant::now() + Duration::from_secs(10);
        let (before, state) = loop {
            let (ticks, state) = cpu_ticks(pid);
            if state == 'T' || Instant::now() > stopped_by {
                break (ticks, state);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(state, 'T', "the waiting worker is stopped");
        std::thread::sleep(Duration::from_millis(1500));
        let (after, state) = cpu_ticks(pid);
        assert_eq!(state, 'T');
        // Spinning, it would have used ~150 ticks (at 100 per second).
        assert!(
            after - before <= 2,
            "{before} -> {after} ticks while frozen"
        );
        // Given up, the worker is thawed and then killed at its (moved) deadline: the run
        // ends where it waited, suspended at its call.
        let out = suspension.abandon();
        let e = out.result.expect_err("given up");
        assert_eq!(e.kind, ErrorKind::Suspended, "{e:?}");
        assert_eq!(e.value.unwrap()["name"], json!("ask"));
    });
}

#[test]
fn a_fake_worker_flooding_tool_calls_is_stopped() {
    guarded(|| {
        // 500 calls of a registered tool, answers never read: the tool runs only as often
        // as its quota allows, and the budget of host calls ends the run.
        let (count, tick) = counter();
        let flood: Vec<u8> = (1..=500)
            .flat_map(|id| tool_call(id, "tick", "[]"))
            .collect();
        let fake = Fake::new("flood", flood);
        let sb = fake.sandbox_with_tools(
            Sandbox::builder()
                .tool("tick", tick)
                .tool_quota(ToolQuota::default().per_run(Some(10))),
            config().max_host_calls(100),
        );
        let e = fake_error(&sb, false);
        assert_eq!(e.kind, ErrorKind::Forbidden, "{e:?}");
        assert!(e.message.contains("more than 100 host calls"), "{e:?}");
        assert_eq!(count.load(Ordering::SeqCst), 10);
    });
}

#[test]
fn a_fake_worker_going_on_after_a_deferred_call_gets_no_more_tool_calls() {
    guarded(|| {
        // A compromised worker ignores the suspension (protocol 6's `suspend`) and asks
        // for another tool: the host, which saw the deferred call, refuses every later
        // call without running it, and the outcome still names the pending call.
        let (count, tick) = counter();
        let calls: Vec<u8> = [
            tool_call(1, "approve", r#"["pay"]"#),
            tool_call(2, "tick", "[]"),
            tool_call(3, "tick", "[]"),
        ]
        .concat();
        let fake = Fake::new("after-suspend", calls);
        let sb = fake.sandbox_with_tools(
            Sandbox::builder().tool("tick", tick).defer_tool("approve"),
            config(),
        );
        let out = run(&sb, "return 1");
        let e = out.result.expect_err("a fake worker cannot succeed");
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "no tool ran after the deferred call"
        );
        assert_eq!(e.kind, ErrorKind::Suspended, "{e:?}");
        assert_eq!(e.value, Some(json!({"name": "approve", "args": ["pay"]})));
    });
}

// ---------------------------------------------------------------------------------------
// Sessions with tools, in both modes.
// ---------------------------------------------------------------------------------------

fn session_builder() -> SandboxBuilder {
    Sandbox::builder()
        .timeout(Duration::from_secs(5))
        .tool("store.add", |args| {
            let n = args.first().and_then(Json::as_i64).ok_or("a number")?;
            Ok(json!(n + 1))
        })
        .tool("echo", echo)
        .tool_quota(ToolQuota::default().per_run(Some(3)))
}

#[test]
fn sessions_have_tools_in_both_modes() {
    guarded(|| {
        let drive = |sb: &Sandbox| -> Vec<Json> {
            let mut s = sb.session().expect("a session");
            let outs = [
                s.exec(
                    "total = 0 function add(n) total = store.add(total + n - 1) return total end",
                ),
                s.call("add", &[json!(10)]),
                s.call("add", &[json!(5)]),
                // Each call has its own quota: three calls here, the fourth refused.
                s.exec(
                    "local r = {} for i = 1, 4 do r[i] = select(2, pcall(echo, i)) end return r",
                ),
                s.exec("return {total, echo('again')}"),
                s.exec("return {pcall(echo, print)}"),
                s.exec("return pcall(function() echo = nil store.add = nil end)"),
                s.exec("return {type(store), store.add(0), echo == nil}"),
            ];
            assert!(s.has_function("add").unwrap());
            assert!(s.closed_reason().is_none());
            outs.iter().map(essence).collect()
        };
        let local = session_builder().build().unwrap();
        let remote = isolated(session_builder());
        let a = drive(&local);
        let b = drive(&remote);
        assert_eq!(a, b);
        let results: Vec<_> = b.iter().map(|o| o["result"]["ok"].clone()).collect();
        let quota = "echo: tool call quota exceeded: at most 3 tool calls per run";
        assert_eq!(
            results,
            [
                json!(null),
                json!(10),
                json!(15),
                json!([[1], [2], [3], quota]),
                json!([15, ["again"]]),
                json!([
                    false,
                    "echo: argument 1: $: a function cannot be represented in JSON"
                ]),
                json!(false),
                json!(["userdata", 1, true]),
            ]
        );
        // The audit is per call: each outcome lists only its own calls.
        let counts: Vec<_> = b
            .iter()
            .map(|o| o["tool_calls"].as_array().unwrap().len())
            .collect();
        assert_eq!(counts, [0, 1, 1, 3, 1, 1, 0, 1]);
    });
}

#[test]
fn a_session_call_whose_tool_overruns_closes_the_session_as_timeout() {
    guarded(|| {
        for isolate in [false, true] {
            let b = Sandbox::builder()
                .timeout(Duration::from_millis(300))
                .tool_with_context("slow", |ctx, _| {
                    std::thread::sleep(
                        ctx.timeout(Duration::from_secs(10)) + Duration::from_millis(20),
                    );
                    Ok(json!("late"))
                })
                .tool("echo", echo);
            let sb = if isolate {
                isolated(b)
            } else {
                b.build().unwrap()
            };
            let mut s = sb.session().unwrap();
            assert_eq!(s.exec("return echo(1)").result, Ok(json!([1])));
            let out = s.exec("local ok, r = pcall(slow) return r");
            assert_eq!(
                out.error().map(|e| e.kind),
                Some(ErrorKind::Timeout),
                "isolate={isolate}"
            );
            assert_eq!(out.tool_calls.len(), 1);
            assert_eq!(s.closed_reason().map(|e| e.kind), Some(ErrorKind::Timeout));
        }
    });
}

/// Regression: `tool_calls` said `ok: true` for a call whose result the script could
/// not be given (it received an error). The record now says what the script received,
/// in both modes, with the same message.
#[test]
fn a_result_the_script_cannot_receive_is_recorded_as_a_failed_call() {
    guarded(|| {
        let deep = || {
            let mut v = json!(1);
            for _ in 0..20 {
                v = json!([v]);
            }
            v
        };
        let b = move || {
            Sandbox::builder()
                .result_depth(10)
                .tool("deep", move |_| Ok(deep()))
        };
        let (local, remote) = (b().build().unwrap(), isolated(b()));
        for sb in [&local, &remote] {
            let out = run(sb, "local ok, e = pcall(deep) return {ok = ok, e = e}");
            let result = out.result.clone().expect("a result");
            assert_eq!(result["ok"], json!(false), "{out:?}");
            assert!(
                result["e"].as_str().unwrap().contains("nested deeper"),
                "{result}"
            );
            assert_eq!(out.tool_calls.len(), 1);
            assert!(!out.tool_calls[0].ok, "{:?}", out.tool_calls[0]);
            assert!(out.tool_calls[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("nested deeper")));
        }
    });
}
