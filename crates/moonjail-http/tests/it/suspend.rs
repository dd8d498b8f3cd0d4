//! Human approval over HTTP: a run on a sandbox with a deferred tool suspends at its call
//! (`POST /v1/run` answers kind `suspended`, the run's id in `error.value.run`), and
//! `POST /v1/runs/{id}/resume` or `DELETE /v1/runs/{id}` settles it; ownership, expiry,
//! caps, malformed bodies, metrics, the OpenAPI document and shutdown. In process and
//! isolated.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::openapi::{assert_documented, document};
use crate::support::{config, deferring_sandbox, TestServer, ALICE, BOB};

/// Asks for approval of a payment, then reports what the approver said.
const PAY: &str = r#"
local order = ...
local noted = note(order.to)
print("asking", order.to)
local receipt = approve({to = order.to, amount = order.amount})
print("approved", receipt.id)
return {paid = order.amount, receipt = receipt.id, noted = noted.noted[1]}
"#;

/// Catches the deferred tool's error.
const CATCHING: &str = r#"
local ok, err = pcall(approve, "delete everything?")
if ok then return {approved = err} end
return {refused = tostring(err)}
"#;

fn server(isolated: bool) -> TestServer {
    TestServer::start(config(deferring_sandbox(isolated)))
}

/// Starts a run as `key` that suspends; returns its outcome document and the run's id.
fn suspend(server: &TestServer, key: &str, code: &str, input: Json) -> (Json, String) {
    let answer = server.post("/v1/run", Some(key), &json!({"code": code, "input": input}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    let doc = answer.body;
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["error"]["kind"], "suspended", "{doc}");
    let id = doc["error"]["value"]["run"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id: {doc}"))
        .to_string();
    (doc, id)
}

fn resume(server: &TestServer, key: &str, id: &str, body: &Json) -> crate::support::Answer {
    server.post(&format!("/v1/runs/{id}/resume"), Some(key), body)
}

fn pay(server: &TestServer) -> (Json, String) {
    suspend(server, ALICE, PAY, json!({"to": "alice", "amount": 10}))
}

fn suspend_then_resume(isolated: bool) {
    let server = server(isolated);
    let (doc, id) = pay(&server);
    let value = &doc["error"]["value"];
    assert_eq!(value["name"], "approve", "{doc}");
    assert_eq!(
        value["args"],
        json!([{"to": "alice", "amount": 10}]),
        "{doc}"
    );
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let expires = value["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    assert_eq!(server.state.suspended_runs(), 1);

    let answer = resume(&server, ALICE, &id, &json!({"answer": {"id": "tx-7"}}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    let done = answer.body;
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(
        done["result"],
        json!({"paid": 10, "receipt": "tx-7", "noted": "alice"}),
        "{done}"
    );
    assert!(
        done["output"].as_str().unwrap().contains("approved\ttx-7"),
        "{done}"
    );
    assert_eq!(server.state.suspended_runs(), 0);

    // Each id answers one pending call.
    let again = resume(&server, ALICE, &id, &json!({"answer": {"id": "tx-8"}}));
    assert_eq!(
        (again.status, again.kind()),
        (404, "not_found"),
        "{}",
        again.text
    );
    // A run that never calls the deferred tool finishes as usual.
    let plain = server.run(&json!({"code": "return note('x').noted[1]"}));
    assert_eq!(plain["result"], "x", "{plain}");
}

#[test]
fn suspend_then_resume_finishes_with_the_answer_in_process() {
    suspend_then_resume(false);
}

#[test]
fn suspend_then_resume_finishes_with_the_answer_isolated() {
    suspend_then_resume(true);
}

#[test]
fn suspended_runs_do_not_hold_up_an_isolated_pool() {
    // Three runs wait for a person on a pool of two workers: each waits in its own
    // worker, out of the pool's count, so a plain run still gets one; each then resumes
    // where it waits.
    let server = server(true);
    let waiting: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|to| suspend(&server, ALICE, PAY, json!({"to": to, "amount": 1})).1)
        .collect();
    assert_eq!(server.state.suspended_runs(), 3);
    let plain = server.run(&json!({"code": "return note('x').noted[1]"}));
    assert_eq!(plain["result"], "x", "{plain}");
    for (id, to) in waiting.iter().zip(["a", "b", "c"]) {
        let answer = resume(&server, ALICE, id, &json!({"answer": {"id": to}}));
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.body["result"],
            json!({"paid": 1, "receipt": to, "noted": to}),
            "{}",
            answer.text
        );
    }
    assert_eq!(server.state.suspended_runs(), 0);
}

fn error_answer(isolated: bool) {
    let server = server(isolated);
    let (doc, id) = suspend(&server, ALICE, CATCHING, Json::Null);
    assert_eq!(doc["error"]["value"]["args"], json!(["delete everything?"]));
    let answer = resume(&server, ALICE, &id, &json!({"error": "declined by bob"}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    let refused = answer.body["result"]["refused"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.contains("declined by bob"), "{}", answer.text);
}

#[test]
fn an_error_answer_is_the_tools_error_in_process() {
    error_answer(false);
}

#[test]
fn an_error_answer_is_the_tools_error_isolated() {
    error_answer(true);
}

fn owned_and_given_up(isolated: bool) {
    let server = server(isolated);
    let (_, id) = pay(&server);
    // Another key: not found, whatever it asks.
    let answer = resume(&server, BOB, &id, &json!({"answer": {"id": "bob"}}));
    assert_eq!(
        (answer.status, answer.kind()),
        (404, "not_found"),
        "{}",
        answer.text
    );
    let answer = server.delete(&format!("/v1/runs/{id}"), Some(BOB));
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(server.state.suspended_runs(), 1);
    // The owner gives it up; then it is gone.
    let answer = server.delete(&format!("/v1/runs/{id}"), Some(ALICE));
    assert_eq!(answer.status, 204, "{}", answer.text);
    assert_eq!(server.state.suspended_runs(), 0);
    let answer = resume(&server, ALICE, &id, &json!({"answer": {"id": "late"}}));
    assert_eq!(
        (answer.status, answer.kind()),
        (404, "not_found"),
        "{}",
        answer.text
    );
    let answer = server.delete(&format!("/v1/runs/{id}"), Some(ALICE));
    assert_eq!(answer.status, 404, "{}", answer.text);
    // An id never issued.
    let answer = resume(&server, ALICE, "0000", &json!({"answer": 1}));
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert!(
        answer.message().contains("no suspended run"),
        "{}",
        answer.text
    );
}

#[test]
fn another_key_gets_404_and_a_deleted_run_is_gone_in_process() {
    owned_and_given_up(false);
}

#[test]
fn another_key_gets_404_and_a_deleted_run_is_gone_isolated() {
    owned_and_given_up(true);
}

fn a_run_that_suspends_again_gets_a_new_id(isolated: bool) {
    let server = server(isolated);
    let code = "local a = approve('first') local b = approve('second') return a .. b";
    let (_, first) = suspend(&server, ALICE, code, Json::Null);
    let answer = resume(&server, ALICE, &first, &json!({"answer": "x"}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    let doc = answer.body;
    assert_eq!(doc["error"]["kind"], "suspended", "{doc}");
    assert_eq!(doc["error"]["value"]["args"], json!(["second"]), "{doc}");
    let second = doc["error"]["value"]["run"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(server.state.suspended_runs(), 1);
    let stale = resume(&server, ALICE, &first, &json!({"answer": "z"}));
    assert_eq!(stale.status, 404, "{}", stale.text);
    let done = resume(&server, ALICE, &second, &json!({"answer": "y"}));
    assert_eq!(done.body["result"], "xy", "{}", done.text);
    assert_eq!(server.state.suspended_runs(), 0);
}

#[test]
fn a_run_that_suspends_again_gets_a_new_id_in_process() {
    a_run_that_suspends_again_gets_a_new_id(false);
}

#[test]
fn a_run_that_suspends_again_gets_a_new_id_isolated() {
    a_run_that_suspends_again_gets_a_new_id(true);
}

fn a_null_answer_is_an_answer(isolated: bool) {
    let server = server(isolated);
    let (_, id) = suspend(&server, ALICE, "return approve() == nil", Json::Null);
    let done = resume(&server, ALICE, &id, &json!({"answer": null}));
    assert_eq!(done.body["result"], true, "{}", done.text);
}

#[test]
fn a_null_answer_is_an_answer_in_process() {
    a_null_answer_is_an_answer(false);
}

#[test]
fn a_null_answer_is_an_answer_isolated() {
    a_null_answer_is_an_answer(true);
}

fn a_suspended_run_expires(isolated: bool) {
    let mut config = config(deferring_sandbox(isolated));
    config.suspend_timeout = Duration::from_millis(100);
    let server = TestServer::start(config);
    let (_, id) = pay(&server);
    let (_, id2) = pay(&server);
    assert_eq!(server.state.suspended_runs(), 2);
    std::thread::sleep(Duration::from_millis(300));
    let answer = resume(&server, ALICE, &id, &json!({"answer": {"id": "late"}}));
    assert_eq!(
        (answer.status, answer.kind()),
        (404, "not_found"),
        "{}",
        answer.text
    );
    // The other is given up by the reaper, unasked.
    let start = Instant::now();
    while server.state.suspended_runs() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = server.delete(&format!("/v1/runs/{id2}"), Some(ALICE));
    assert_eq!(answer.status, 404, "{}", answer.text);
}

#[test]
fn a_suspended_run_expires_in_process() {
    a_suspended_run_expires(false);
}

#[test]
fn a_suspended_run_expires_isolated() {
    a_suspended_run_expires(true);
}

fn the_caps_give_the_run_up(isolated: bool) {
    let mut config = config(deferring_sandbox(isolated));
    config.max_suspended_per_key = 1;
    config.max_suspended = 2;
    let server = TestServer::start(config);
    let (_, first) = pay(&server);
    let body = json!({"code": PAY, "input": {"to": "carol", "amount": 1}});
    // The key's cap: 429.
    let answer = server.post("/v1/run", Some(ALICE), &body);
    assert_eq!(
        (answer.status, answer.kind()),
        (429, "too_many_suspended"),
        "{}",
        answer.text
    );
    assert!(answer.header("retry-after").is_some());
    assert!(answer.message().contains("given up"), "{}", answer.text);
    // Another key has its own; then the service's cap: 503.
    let (_, _bob) = suspend(&server, BOB, PAY, json!({"to": "bob", "amount": 2}));
    let answer = server.post("/v1/run", Some(BOB), &body);
    assert_eq!(
        (answer.status, answer.kind()),
        (503, "too_many_suspended"),
        "{}",
        answer.text
    );
    assert_eq!(server.state.suspended_runs(), 2);
    // A run that does not suspend is not refused at the cap.
    let plain = server.run(&json!({"code": "return 1"}));
    assert_eq!(plain["result"], 1);
    // Resuming frees the place.
    let done = resume(&server, ALICE, &first, &json!({"answer": {"id": "t"}}));
    assert_eq!(done.status, 200, "{}", done.text);
    let (_, _again) = pay(&server);
}

#[test]
fn the_caps_give_the_run_up_in_process() {
    the_caps_give_the_run_up(false);
}

#[test]
fn the_caps_give_the_run_up_isolated() {
    the_caps_give_the_run_up(true);
}

fn a_malformed_resume_body_is_a_400_naming_the_field(isolated: bool) {
    let server = server(isolated);
    let (_, id) = pay(&server);
    let cases = [
        (json!({}), "answer"),
        (json!({"answer": 1, "error": "no"}), "error"),
        (json!({"error": 5}), "error"),
        (json!({"answr": 1}), "answr"),
        (json!([1]), ""),
    ];
    for (body, field) in cases {
        let answer = resume(&server, ALICE, &id, &body);
        assert_eq!(
            (answer.status, answer.kind()),
            (400, "bad_request"),
            "{body}: {}",
            answer.text
        );
        assert!(answer.message().contains(field), "{body}: {}", answer.text);
    }
    let answer = server.post_raw(
        &format!("/v1/runs/{id}/resume"),
        Some(ALICE),
        "{\"answer\":",
    );
    assert_eq!(answer.status, 400, "{}", answer.text);
    // None of them spent the run.
    let done = resume(&server, ALICE, &id, &json!({"answer": {"id": "ok"}}));
    assert_eq!(done.body["result"]["receipt"], "ok", "{}", done.text);
}

#[test]
fn a_malformed_resume_body_is_a_400_naming_the_field_in_process() {
    a_malformed_resume_body_is_a_400_naming_the_field(false);
}

#[test]
fn a_malformed_resume_body_is_a_400_naming_the_field_isolated() {
    a_malformed_resume_body_is_a_400_naming_the_field(true);
}

fn metrics_show_suspended_runs_and_resumes(isolated: bool) {
    let server = server(isolated);
    let (_, id) = pay(&server);
    let (_, _other) = pay(&server);
    let text = server.get("/metrics", None).text;
    assert!(text.contains("moonjail_suspended_runs 2"), "{text}");
    assert!(text.contains("moonjail_resumes_total 0"), "{text}");
    resume(&server, ALICE, &id, &json!({"answer": {"id": "m"}}));
    let text = server.get("/metrics", None).text;
    assert!(text.contains("moonjail_suspended_runs 1"), "{text}");
    assert!(text.contains("moonjail_resumes_total 1"), "{text}");
    assert!(text.contains("outcome=\"suspended\""), "{text}");
    assert!(text.contains("mode=\"resume\""), "{text}");
}

#[test]
fn metrics_show_suspended_runs_and_resumes_in_process() {
    metrics_show_suspended_runs_and_resumes(false);
}

#[test]
fn metrics_show_suspended_runs_and_resumes_isolated() {
    metrics_show_suspended_runs_and_resumes(true);
}

fn suspension_responses_match_the_document(isolated: bool) {
    let server = server(isolated);
    let doc = document(&server);
    let answer = server.post(
        "/v1/run",
        Some(ALICE),
        &json!({"code": PAY, "input": {"to": "a", "amount": 1}}),
    );
    assert_documented(&doc, "post", "/v1/run", &answer);
    let id = answer.body["error"]["value"]["run"]
        .as_str()
        .unwrap()
        .to_string();
    let path = "/v1/runs/{id}/resume";
    for body in [json!({}), json!({"answer": 1, "error": "x"})] {
        assert_documented(&doc, "post", path, &resume(&server, ALICE, &id, &body));
    }
    assert_documented(
        &doc,
        "post",
        path,
        &resume(&server, BOB, &id, &json!({"answer": 1})),
    );
    let done = resume(&server, ALICE, &id, &json!({"answer": {"id": "d"}}));
    assert_eq!(done.status, 200, "{}", done.text);
    assert_documented(&doc, "post", path, &done);
    assert_documented(
        &doc,
        "post",
        path,
        &resume(&server, ALICE, &id, &json!({"answer": 1})),
    );
    let (_, id) = pay(&server);
    assert_documented(
        &doc,
        "delete",
        "/v1/runs/{id}",
        &server.delete(&format!("/v1/runs/{id}"), Some(ALICE)),
    );
    assert_documented(
        &doc,
        "delete",
        "/v1/runs/{id}",
        &server.delete(&format!("/v1/runs/{id}"), Some(ALICE)),
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/runs/{id}/resume"));
    assert!(doc["components"]["schemas"]["ResumeRequest"].is_object());
}

#[test]
fn suspension_responses_match_the_document_in_process() {
    suspension_responses_match_the_document(false);
}

#[test]
fn suspension_responses_match_the_document_isolated() {
    suspension_responses_match_the_document(true);
}

fn shutdown_gives_up(isolated: bool) {
    let server = server(isolated);
    pay(&server);
    pay(&server);
    assert_eq!(server.state.suspended_runs(), 2);
    let start = Instant::now();
    server.shutdown().unwrap();
    // A hang check, not a timing: the grace period is 5 s.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the stop waited {:?}",
        start.elapsed()
    );
    assert_eq!(server.state.suspended_runs(), 0);
}

#[test]
fn shutdown_gives_up_suspended_runs_in_process() {
    shutdown_gives_up(false);
}

#[test]
fn shutdown_gives_up_suspended_runs_isolated() {
    shutdown_gives_up(true);
}

/// Sessions do not suspend: a deferred call there ends the call as suspended, with
/// nothing held to resume.
fn a_deferred_call_in_a_session_is_not_held(isolated: bool) {
    let server = server(isolated);
    let id = server.open_session(ALICE, &json!({}));
    let answer = server.post(
        &format!("/v1/sessions/{id}/exec"),
        Some(ALICE),
        &json!({"code": "return approve('x')"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["error"]["kind"], "suspended", "{}", answer.text);
    assert!(
        answer.body["error"]["value"]["run"].is_null(),
        "{}",
        answer.text
    );
    assert_eq!(server.state.suspended_runs(), 0);
}

#[test]
fn a_deferred_call_in_a_session_is_not_held_in_process() {
    a_deferred_call_in_a_session_is_not_held(false);
}

#[test]
fn a_deferred_call_in_a_session_is_not_held_isolated() {
    a_deferred_call_in_a_session_is_not_held(true);
}

/// Runs on a deferring sandbox take another path (`Sandbox::start`: in process, on the
/// run's own thread; isolated, in a worker that may park at a deferred call): the limits
/// and deep recursion hold there too, and the service stays healthy.
fn limits_and_deep_recursion_hold_on_the_suspending_path(isolated: bool) {
    let server = server(isolated);
    let cases = [
        ("while true do end", json!({"timeout": "200ms"}), "timeout"),
        (
            "local t = {} while true do t[#t + 1] = string.rep('x', 4096) .. #t end",
            json!({}),
            "memory_limit",
        ),
        (
            "local n = 0 while true do n = n + 1 end",
            json!({"instructions": 100000}),
            "instruction_limit",
        ),
        (
            "local function f(n) return f(n + 1) + 1 end return f(1)",
            json!({}),
            "",
        ),
        (
            "return load(string.rep('(', 100000) .. '1' .. string.rep(')', 100000))",
            json!({}),
            "",
        ),
        (
            "local s = string.rep('{', 100000) return #s",
            json!({}),
            "ok",
        ),
    ];
    for (code, limits, kind) in cases {
        let doc = server.run(&json!({"code": code, "limits": limits}));
        match kind {
            "ok" => assert_eq!(doc["ok"], true, "{code}: {doc}"),
            "" => assert!(
                doc["error"]["kind"].is_string() || doc["ok"] == true,
                "{code}: {doc}"
            ),
            kind => assert_eq!(doc["error"]["kind"], kind, "{code}: {doc}"),
        }
        let healthy = server.run(&json!({"code": "return 6 * 7"}));
        assert_eq!(healthy["result"], 42, "after {code}: {healthy}");
    }
}

#[test]
fn limits_and_deep_recursion_hold_on_the_suspending_path_in_process() {
    limits_and_deep_recursion_hold_on_the_suspending_path(false);
}

#[test]
fn limits_and_deep_recursion_hold_on_the_suspending_path_isolated() {
    limits_and_deep_recursion_hold_on_the_suspending_path(true);
}
