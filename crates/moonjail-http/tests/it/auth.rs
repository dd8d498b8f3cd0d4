//! Keys: 401 without or with a bad key, sessions owned by their key, per-key rate and
//! concurrency limits. Each in process and isolated.

use serde_json::json;

use crate::support::{config, holding_sandbox, sandbox_in, TestServer, ALICE, BOB};
use moonjail_http::{Auth, RateLimit};

fn requests_without_a_valid_key_get_401_with_a_json_error(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let body = json!({"code": "return 1"});
    for key in [None, Some("mj_wrong"), Some("")] {
        let answer = server.post("/v1/run", key, &body);
        assert_eq!(answer.status, 401, "{key:?}: {}", answer.text);
        assert_eq!(answer.kind(), "unauthorized");
        assert!(answer.header("www-authenticate").is_some());
    }
    // Not a bearer scheme.
    let answer = server.get("/v1/sessions/x", None);
    assert_eq!(answer.status, 405);
    for path in ["/v1/sessions", "/v1/sessions/x/exec"] {
        assert_eq!(server.post(path, Some("nope"), &json!({})).status, 401);
    }
    assert_eq!(server.delete("/v1/sessions/x", None).status, 401);
    assert_eq!(server.post("/v1/run", Some(ALICE), &body).status, 200);
    assert_eq!(server.post("/v1/run", Some(BOB), &body).status, 200);
}
in_both_modes!(requests_without_a_valid_key_get_401_with_a_json_error);

fn a_session_belongs_to_the_key_that_opened_it(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let id = server.open_session(ALICE, &json!({}));
    let exec = format!("/v1/sessions/{id}/exec");
    let code = json!({"code": "n = 1"});
    for path in [
        exec.clone(),
        format!("/v1/sessions/{id}/eval"),
        format!("/v1/sessions/{id}/call"),
        format!("/v1/sessions/{id}/has_function"),
    ] {
        let body = match path.rsplit('/').next() {
            Some("call") => json!({"function": "f"}),
            Some("has_function") => json!({"name": "f"}),
            _ => code.clone(),
        };
        let answer = server.post(&path, Some(BOB), &body);
        assert_eq!(answer.status, 404, "{path}: {}", answer.text);
        assert_eq!(answer.kind(), "not_found");
    }
    assert_eq!(
        server
            .delete(&format!("/v1/sessions/{id}"), Some(BOB))
            .status,
        404
    );
    // Still alice's, and still open.
    assert_eq!(server.post(&exec, Some(ALICE), &code).status, 200);
}
in_both_modes!(a_session_belongs_to_the_key_that_opened_it);

fn the_rate_limit_answers_429_with_its_headers(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.rate_limit = Some(RateLimit {
        per_second: 0.01,
        burst: 2,
    });
    let server = TestServer::start(config);
    let body = json!({"code": "return 1"});
    // Every answer to the key says what is left of its budget, not only the refusal.
    let first = server.post("/v1/run", Some(ALICE), &body);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-limit"), Some("2"));
    assert_eq!(first.header("ratelimit-remaining"), Some("1"));
    let reset: u64 = first.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset >= 1, "{reset}");
    let second = server.post("/v1/run", Some(ALICE), &body);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("ratelimit-remaining"), Some("0"));
    // Unkeyed routes carry none.
    assert_eq!(server.get("/healthz", None).header("ratelimit-limit"), None);
    let refused = server.post("/v1/run", Some(ALICE), &body);
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.kind(), "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(refused.header("ratelimit-limit"), Some("2"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert!(refused.header("ratelimit-reset").is_some());
    // Another key has its own bucket.
    assert_eq!(server.post("/v1/run", Some(BOB), &body).status, 200);
}
in_both_modes!(the_rate_limit_answers_429_with_its_headers);

fn a_key_over_its_concurrency_gets_429(isolated: bool) {
    let (sandbox, release) = holding_sandbox(isolated);
    let mut config = config(sandbox);
    config.key_concurrency = 1;
    let server = std::sync::Arc::new(TestServer::start(config));
    // One request holds alice's only place: a session call blocked in `hold` (on the
    // executor's thread in both modes) until the test lets go; its deadline passes
    // meanwhile, so it then ends as a timeout.
    let id = server.open_session(ALICE, &json!({}));
    let busy = {
        let server = server.clone();
        let path = format!("/v1/sessions/{id}/exec");
        std::thread::spawn(move || {
            server.post(
                &path,
                Some(ALICE),
                &json!({"code": "hold() while true do end", "timeout": "100ms"}),
            )
        })
    };
    // Wait until it is executing, then try another.
    server.wait_executing(1);
    let refused = server.post("/v1/run", Some(ALICE), &json!({"code": "return 1"}));
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.kind(), "too_many_requests");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        server
            .post("/v1/run", Some(BOB), &json!({"code": "return 1"}))
            .status,
        200
    );
    drop(release);
    let done = busy.join().unwrap();
    assert_eq!(done.body["error"]["kind"], "timeout");
}
in_both_modes!(a_key_over_its_concurrency_gets_429);

fn without_auth_everyone_is_anonymous(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.auth = Auth::None;
    let server = TestServer::start(config);
    let answer = server.post("/v1/run", None, &json!({"code": "return 1"}));
    assert_eq!(answer.status, 200);
}
in_both_modes!(without_auth_everyone_is_anonymous);
