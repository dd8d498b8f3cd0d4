//! Isolated mode over HTTP: runs and sessions in locked-down worker processes, and a
//! subset of the escape suite through the API.

use serde_json::{json, Value as Json};

use crate::support::{config, isolated_sandbox, TestServer, ALICE};

fn server() -> TestServer {
    TestServer::start(config(isolated_sandbox(2)))
}

#[test]
fn runs_and_sessions_in_workers() {
    let server = server();
    let doc = server.run(&json!({"code": "return (...).n + 1", "input": {"n": 1}}));
    assert_eq!(doc["result"], 2, "{doc}");
    let id = server.open_session(ALICE, &json!({}));
    let base = format!("/v1/sessions/{id}");
    server.post(
        &format!("{base}/exec"),
        Some(ALICE),
        &json!({"code": "function f(x) return x * 3 end"}),
    );
    let doc = server
        .post(
            &format!("{base}/call"),
            Some(ALICE),
            &json!({"function": "f", "args": [4]}),
        )
        .body;
    assert_eq!(doc["result"], 12, "{doc}");
    // A timeout kills the session's worker and closes the session.
    let doc = server
        .post(
            &format!("{base}/exec"),
            Some(ALICE),
            &json!({"code": "while true do end", "timeout": "100ms"}),
        )
        .body;
    assert_eq!(doc["error"]["kind"], "timeout");
    assert_eq!(server.delete(&base, Some(ALICE)).status, 204);
    assert_eq!(server.get("/readyz", None).status, 200);
}

/// Escape attempts through the API: each fails with its exact kind (or is simply not
/// there), and the next run on the same service is healthy.
#[test]
fn escape_subset_through_the_api() {
    let server = server();
    let cases: [(&str, Json, Option<&str>); 8] = [
        ("while true do pcall(function() while true do end end) end", json!({"timeout": "200ms"}), Some("timeout")),
        ("local t = {} while true do t[#t + 1] = string.rep('x', 4096) .. #t end", json!({}), Some("memory_limit")),
        ("while true do print(string.rep('x', 1000)) end", json!({"output": "64KiB"}), Some("output_limit")),
        ("local n = 0 while true do n = n + 1 end", json!({"instructions": 100000}), Some("instruction_limit")),
        ("setmetatable({}, {__gc = function() end})", json!({}), Some("forbidden")),
        ("return #string.rep('x', 1 << 26)", json!({}), Some("memory_limit")),
        ("return {os.execute == nil, io == nil, debug == nil, dofile == nil, loadfile == nil, string.dump == nil, package == nil or package.loadlib == nil}", json!({}), None),
        ("local f, err = load('\\27Lua') return f == nil and err:find('binary') ~= nil", json!({}), None),
    ];
    for (code, limits, kind) in cases {
        let doc = server.run(&json!({"code": code, "limits": limits}));
        match kind {
            Some(kind) => assert_eq!(doc["error"]["kind"], kind, "{code}: {doc}"),
            None => {
                let all_true = match &doc["result"] {
                    Json::Array(items) => items.iter().all(|v| v == &Json::Bool(true)),
                    other => other == &Json::Bool(true),
                };
                assert!(all_true, "{code}: {doc}");
            }
        }
        let healthy = server.run(&json!({"code": "return 6 * 7"}));
        assert_eq!(healthy["result"], 42, "after {code}: {healthy}");
    }
}

/// Isolated, a run is relayed between an executor thread and its worker process, so
/// `moonjail serve` runs half as many executors (and pooled workers) again as there are
/// CPUs (one per core left a core idle in each handoff: BENCHMARKS.md §6); in process,
/// one per CPU. `Config::new` keeps one per CPU: the pool it is given may be no larger.
#[test]
fn isolated_executors_outnumber_the_cores_by_default() {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(
        moonjail_http::default_workers(true),
        cpus + cpus.div_ceil(2)
    );
    assert_eq!(moonjail_http::default_workers(false), cpus);
    let isolated = moonjail_http::Config::new(isolated_sandbox(1));
    assert_eq!(isolated.workers, cpus);
}
