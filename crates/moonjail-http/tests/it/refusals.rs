//! Every refusal status, with the JSON error body and the message a client needs: 400
//! naming the field, 403 for a profile the server does not allow, 404, 405, 408, 413, 429
//! (session caps), 503 with Retry-After. Each in process and isolated.

use std::sync::Arc;

use serde_json::json;

use moonjail::Profile;

use crate::support::{config, holding_sandbox, sandbox_in, TestServer, ALICE, BOB};

fn malformed_bodies_get_400_naming_the_field(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let cases = [
        ("{", "not valid JSON"),
        (r#""text""#, "invalid type: string"),
        (r#"{"input": 1}"#, "missing field `code`"),
        (
            r#"{"code": 5}"#,
            "code: invalid type: integer `5`, expected a string",
        ),
        (r#"{"code": "x", "colour": 1}"#, "unknown field `colour`"),
        (
            r#"{"code": "x", "expression": "yes"}"#,
            "expression: invalid type: string",
        ),
        (
            r#"{"code": "x", "limits": {"timeout": true}}"#,
            "limits.timeout: invalid type: boolean",
        ),
        (
            r#"{"code": "x", "limits": {"memory": "lots"}}"#,
            "limits.memory",
        ),
        (
            r#"{"code": "x", "limits": {"speed": 1}}"#,
            "limits.speed: unknown field `speed`",
        ),
        (
            r#"{"code": "x", "profile": "root"}"#,
            "profile: unknown profile \"root\"",
        ),
        (
            r#"{"code": "x", "limits": {"instructions": 0}}"#,
            "limits.instructions: must be at least 1",
        ),
    ];
    for (body, message) in cases {
        let answer = server.post_raw("/v1/run", Some(ALICE), body);
        assert_eq!(answer.status, 400, "{body}: {}", answer.text);
        assert_eq!(answer.kind(), "bad_request");
        assert!(
            answer.message().contains(message),
            "{body}: {:?} does not contain {message:?}",
            answer.message()
        );
    }
    // Nesting past the server's depth is refused before it is parsed.
    let deep = format!(
        "{{\"code\": \"x\", \"input\": {}{}}}",
        "[".repeat(500),
        "]".repeat(500)
    );
    let answer = server.post_raw("/v1/run", Some(ALICE), &deep);
    assert_eq!(answer.status, 400);
    assert!(answer.message().contains("nested"), "{}", answer.message());
}
in_both_modes!(malformed_bodies_get_400_naming_the_field);

fn asking_for_more_than_the_server_allows_is_a_400_naming_the_field_and_the_maximum(
    isolated: bool,
) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    for (limits, field, max) in [
        (json!({"timeout": "10s"}), "limits.timeout", "2 s"),
        (json!({"memory": "1GiB"}), "limits.memory", "16 MiB"),
        (json!({"memory": "none"}), "limits.memory", "16 MiB"),
        (json!({"output": "2MiB"}), "limits.output", "1 MiB"),
        (json!({"result_depth": 65}), "limits.result_depth", "64"),
    ] {
        let answer = server.post(
            "/v1/run",
            Some(ALICE),
            &json!({"code": "return 1", "limits": limits}),
        );
        assert_eq!(answer.status, 400, "{limits}: {}", answer.text);
        let message = answer.message();
        assert!(message.starts_with(field), "{message}");
        assert!(message.contains(&format!("maximum of {max}")), "{message}");
    }
    // Session calls too.
    let id = server.open_session(ALICE, &json!({}));
    let answer = server.post(
        &format!("/v1/sessions/{id}/exec"),
        Some(ALICE),
        &json!({"code": "return 1", "timeout": "1m"}),
    );
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(
        answer.message().starts_with("timeout: "),
        "{}",
        answer.message()
    );
}
in_both_modes!(asking_for_more_than_the_server_allows_is_a_400_naming_the_field_and_the_maximum);

fn a_body_over_the_limit_gets_413(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.max_body_bytes = 1024;
    let server = TestServer::start(config);
    let code = format!("return '{}'", "x".repeat(2048));
    let answer = server.post("/v1/run", Some(ALICE), &json!({"code": code}));
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(answer.kind(), "payload_too_large");
    assert!(answer.message().contains("1024"));
    // Just under it is fine.
    assert_eq!(
        server
            .post("/v1/run", Some(ALICE), &json!({"code": "return 1"}))
            .status,
        200
    );
}
in_both_modes!(a_body_over_the_limit_gets_413);

fn unknown_routes_sessions_and_methods_get_json_errors(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let answer = server.get("/v2/run", Some(ALICE));
    assert_eq!((answer.status, answer.kind()), (404, "not_found"));
    let answer = server.post("/v1/sessions/0123/exec", Some(ALICE), &json!({"code": "x"}));
    assert_eq!((answer.status, answer.kind()), (404, "not_found"));
    let answer = server.delete("/v1/sessions/0123", Some(ALICE));
    assert_eq!((answer.status, answer.kind()), (404, "not_found"));
    let answer = server.get("/v1/run", Some(ALICE));
    assert_eq!((answer.status, answer.kind()), (405, "method_not_allowed"));
}
in_both_modes!(unknown_routes_sessions_and_methods_get_json_errors);

fn a_full_queue_gets_503_with_retry_after_at_once(isolated: bool) {
    // The one executor is held by a run blocked in `hold` (on the executor's thread in
    // both modes) until the refusals below are in; its deadline passes meanwhile, so it
    // then ends as a timeout.
    let (sandbox, release) = holding_sandbox(isolated);
    let mut config = config(sandbox);
    config.workers = 1;
    config.queue = 0;
    let server = Arc::new(TestServer::start(config));
    let busy = {
        let server = server.clone();
        std::thread::spawn(move || {
            server.run(&json!({"code": "hold() while true do end", "limits": {"timeout": "100ms"}}))
        })
    };
    server.wait_executing(1);
    let refused = server.post("/v1/run", Some(BOB), &json!({"code": "return 1"}));
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.kind(), "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Sessions share the executors.
    let refused = server.post("/v1/sessions", Some(BOB), &json!({}));
    assert_eq!(refused.status, 503, "{}", refused.text);
    drop(release);
    assert_eq!(busy.join().unwrap()["error"]["kind"], "timeout");
    assert_eq!(
        server
            .post("/v1/run", Some(BOB), &json!({"code": "return 1"}))
            .status,
        200
    );
}
in_both_modes!(a_full_queue_gets_503_with_retry_after_at_once);

fn session_caps_per_key_and_in_all(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.max_sessions_per_key = 2;
    config.max_sessions = 3;
    let server = TestServer::start(config);
    server.open_session(ALICE, &json!({}));
    let second = server.open_session(ALICE, &json!({}));
    let refused = server.post("/v1/sessions", Some(ALICE), &json!({}));
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.kind(), "too_many_sessions");
    assert!(refused.header("retry-after").is_some());
    server.open_session(BOB, &json!({}));
    let refused = server.post("/v1/sessions", Some(BOB), &json!({}));
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.kind(), "too_many_sessions");
    // Closing one makes room.
    assert_eq!(
        server
            .delete(&format!("/v1/sessions/{second}"), Some(ALICE))
            .status,
        204
    );
    server.open_session(BOB, &json!({}));
}
in_both_modes!(session_caps_per_key_and_in_all);

fn a_request_past_the_request_timeout_gets_408(isolated: bool) {
    // The run is held in `hold` past the request timeout, however slow the machine.
    let (sandbox, release) = holding_sandbox(isolated);
    let mut config = config(sandbox);
    config.request_timeout = std::time::Duration::from_millis(100);
    let server = TestServer::start(config);
    let answer = server.post("/v1/run", Some(ALICE), &json!({"code": "hold()"}));
    assert_eq!(answer.status, 408, "{}", answer.text);
    assert_eq!(answer.kind(), "request_timeout");
    drop(release);
}
in_both_modes!(a_request_past_the_request_timeout_gets_408);

// A valid key asking for what this server does not allow: 403, not a malformed request.
fn a_profile_the_server_does_not_allow_gets_403(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.profiles = vec![Profile::Standard];
    let server = TestServer::start(config);
    for (path, body) in [
        ("/v1/run", json!({"code": "return 1", "profile": "aos"})),
        ("/v1/lint", json!({"code": "return 1", "profile": "aos"})),
        ("/v1/sessions", json!({"profile": "aos"})),
    ] {
        let answer = server.post(path, Some(ALICE), &body);
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
        assert_eq!(answer.kind(), "forbidden", "{}", answer.text);
        assert!(answer.message().contains("not allowed"), "{}", answer.text);
    }
    // An unknown profile is a malformed request.
    let answer = server.post(
        "/v1/run",
        Some(ALICE),
        &json!({"code": "return 1", "profile": "nope"}),
    );
    assert_eq!(answer.status, 400, "{}", answer.text);
    // The profile it allows runs.
    let doc = server.run(&json!({"code": "return 1", "profile": "standard"}));
    assert_eq!(doc["result"], 1, "{doc}");
}
in_both_modes!(a_profile_the_server_does_not_allow_gets_403);
