//! `POST /v1/run`: the outcome document, profiles and lowered limits; `POST /v1/lint`.
//! Each in process and isolated.

use serde_json::json;

use crate::support::{config, sandbox_in, TestServer};

fn a_run_answers_the_outcome_document_of_run_json(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let doc = server.run(&json!({"code": "print('hi') return (...).n * 2", "input": {"n": 21}}));
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["result"], 42);
    assert_eq!(doc["results"], json!([42]));
    assert_eq!(doc["output"], "hi\n");
    assert_eq!(doc["error"], json!(null));
    // The same document the library writes for the same run.
    let local = sandbox_in(isolated).run("print('hi') return (...).n * 2", &json!({"n": 21}));
    let mut expected = local.to_json();
    expected["stats"]["wall_ms"] = doc["stats"]["wall_ms"].clone();
    assert_eq!(doc, expected);
}
in_both_modes!(a_run_answers_the_outcome_document_of_run_json);

fn a_script_failure_is_a_200_with_the_error(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let doc = server.run(&json!({"code": "error('boom')"}));
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["kind"], "runtime");
    assert!(doc["error"]["message"].as_str().unwrap().contains("boom"));
    let doc = server.run(&json!({"code": "return 1 +"}));
    assert_eq!(doc["error"]["kind"], "syntax");
}
in_both_modes!(a_script_failure_is_a_200_with_the_error);

fn expressions_profiles_and_lowered_limits_apply(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let doc = server.run(&json!({"code": "1 + 1", "expression": true}));
    assert_eq!(doc["result"], 2);
    // minimal has no coroutines; standard does.
    let doc = server.run(&json!({"code": "return coroutine == nil", "profile": "minimal"}));
    assert_eq!(doc["result"], true);
    let doc = server.run(&json!({"code": "return coroutine == nil"}));
    assert_eq!(doc["result"], false);
    // Limits lower than the server's apply, and are reported in stats.
    let doc = server.run(&json!({"code": "while true do end",
        "limits": {"instructions": 1000, "timeout": "1s", "memory": "8MiB", "output": 100}}));
    assert_eq!(doc["error"]["kind"], "instruction_limit");
    assert_eq!(doc["stats"]["limits"]["wall_ms"], 1000.0);
    assert_eq!(doc["stats"]["limits"]["memory_bytes"], 8 << 20);
    assert_eq!(doc["stats"]["limits"]["output_bytes"], 100);
    let doc = server.run(&json!({"code": "print(string.rep('x', 200))",
        "limits": {"output": "100B"}}));
    assert_eq!(doc["error"]["kind"], "output_limit");
}
in_both_modes!(expressions_profiles_and_lowered_limits_apply);

fn lint_checks_a_script_without_running_it(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let answer = server.post(
        "/v1/lint",
        Some(crate::support::ALICE),
        &json!({"code": "print('never')\nreturn string.spilt('a,b', ',')"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    let rules: Vec<&str> = answer.body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"unknown-member"), "{}", answer.text);
    assert!(answer.body["manifest"]["globals"]
        .as_array()
        .unwrap()
        .contains(&json!("print")));
    // Against another profile: minimal has no coroutines.
    let answer = server.post(
        "/v1/lint",
        Some(crate::support::ALICE),
        &json!({"code": "return coroutine.create(print)", "profile": "minimal"}),
    );
    assert_eq!(answer.status, 200);
    assert!(answer.text.contains("coroutine"), "{}", answer.text);
    assert_eq!(
        server.post("/v1/lint", None, &json!({"code": "x"})).status,
        401
    );
}
in_both_modes!(lint_checks_a_script_without_running_it);
