//! Sessions over HTTP: open, exec, eval, call, has_function, close; idle expiry; a
//! session that closed itself. Each in process and isolated.

use std::time::Duration;

use serde_json::json;

use crate::support::{config, sandbox_in, TestServer, ALICE};

fn a_session_keeps_its_state_between_requests(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let answer = server.post("/v1/sessions", Some(ALICE), &json!({}));
    assert_eq!(answer.status, 201, "{}", answer.text);
    let id = answer.body["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let expires = answer.body["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    assert_eq!(server.state.live_sessions(), 1);

    let base = format!("/v1/sessions/{id}");
    let doc = server
        .post(
            &format!("{base}/exec"),
            Some(ALICE),
            &json!({
            "code": "n = (...).start function bump(by) n = n + by return n end return n",
            "input": {"start": 10}}),
        )
        .body;
    assert_eq!(doc["result"], 10, "{doc}");
    let call = server.post(
        &format!("{base}/call"),
        Some(ALICE),
        &json!({"function": "bump", "args": [5]}),
    );
    assert_eq!(call.status, 200);
    assert_eq!(call.body["result"], 15);
    let eval = server.post(
        &format!("{base}/eval"),
        Some(ALICE),
        &json!({"code": "n * 2"}),
    );
    assert_eq!(eval.body["result"], 30);
    let has = server.post(
        &format!("{base}/has_function"),
        Some(ALICE),
        &json!({"name": "bump"}),
    );
    assert_eq!(has.body, json!({"name": "bump", "exists": true}));
    let has = server.post(
        &format!("{base}/has_function"),
        Some(ALICE),
        &json!({"name": "nope"}),
    );
    assert_eq!(has.body["exists"], false);
    // A failing call is an outcome, and the session goes on.
    let doc = server
        .post(
            &format!("{base}/call"),
            Some(ALICE),
            &json!({"function": "nope"}),
        )
        .body;
    assert_eq!(doc["ok"], false);
    assert_eq!(
        server
            .post(&format!("{base}/eval"), Some(ALICE), &json!({"code": "n"}))
            .body["result"],
        15
    );

    assert_eq!(server.delete(&base, Some(ALICE)).status, 204);
    assert_eq!(server.state.live_sessions(), 0);
    let gone = server.post(&format!("{base}/eval"), Some(ALICE), &json!({"code": "n"}));
    assert_eq!(gone.status, 404);
}
in_both_modes!(a_session_keeps_its_state_between_requests);

fn sessions_take_a_profile_and_lower_limits(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let id = server.open_session(
        ALICE,
        &json!({"profile": "minimal", "limits": {"instructions": 10000}}),
    );
    let doc = server
        .post(
            &format!("/v1/sessions/{id}/eval"),
            Some(ALICE),
            &json!({"code": "coroutine == nil"}),
        )
        .body;
    assert_eq!(doc["result"], true);
    let doc = server
        .post(
            &format!("/v1/sessions/{id}/exec"),
            Some(ALICE),
            &json!({"code": "for i = 1, 1e9 do end"}),
        )
        .body;
    assert_eq!(doc["error"]["kind"], "instruction_limit");
}
in_both_modes!(sessions_take_a_profile_and_lower_limits);

fn a_session_closed_by_a_timeout_says_why(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let id = server.open_session(ALICE, &json!({}));
    let base = format!("/v1/sessions/{id}");
    let doc = server
        .post(
            &format!("{base}/exec"),
            Some(ALICE),
            &json!({"code": "while true do end", "timeout": "50ms"}),
        )
        .body;
    assert_eq!(doc["error"]["kind"], "timeout");
    let doc = server
        .post(&format!("{base}/eval"), Some(ALICE), &json!({"code": "1"}))
        .body;
    assert_eq!(doc["ok"], false);
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("closed"),
        "{doc}"
    );
    let has = server.post(
        &format!("{base}/has_function"),
        Some(ALICE),
        &json!({"name": "f"}),
    );
    assert_eq!((has.status, has.kind()), (409, "session_closed"));
}
in_both_modes!(a_session_closed_by_a_timeout_says_why);

fn an_idle_session_expires(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.session_idle = Duration::from_millis(100);
    let server = TestServer::start(config);
    let id = server.open_session(ALICE, &json!({}));
    std::thread::sleep(Duration::from_millis(300));
    let answer = server.post(
        &format!("/v1/sessions/{id}/eval"),
        Some(ALICE),
        &json!({"code": "1"}),
    );
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert_eq!(server.state.live_sessions(), 0);
}
in_both_modes!(an_idle_session_expires);
