//! `/openapi.json`: an OpenAPI 3.1 document listing every route the router serves, whose
//! schemas the responses match — checked on fixed requests and on generated ones
//! (property-based: no request may get a 5xx, or a body its schema does not describe),
//! in process and isolated.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::support::{config, sandbox, sandbox_in, Answer, TestServer, ALICE};

/// Every route, as (method, path template).
const ROUTES: [(&str, &str); 14] = [
    ("post", "/v1/run"),
    ("post", "/v1/runs/{id}/resume"),
    ("delete", "/v1/runs/{id}"),
    ("post", "/v1/lint"),
    ("post", "/v1/sessions"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/exec"),
    ("post", "/v1/sessions/{id}/eval"),
    ("post", "/v1/sessions/{id}/call"),
    ("post", "/v1/sessions/{id}/has_function"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

pub(crate) fn document(server: &TestServer) -> Json {
    let answer = server.get("/openapi.json", None);
    assert_eq!(answer.status, 200);
    answer.body
}

/// The response schema the document gives for `method path` answering `status`, as a
/// standalone JSON Schema (the document's components beside it, for `$ref`s).
fn response_schema(doc: &Json, method: &str, path: &str, status: u16) -> Option<Json> {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    let schema = response["content"]["application/json"]["schema"].clone();
    if schema.is_null() {
        return None;
    }
    let mut root = schema;
    root["components"] = doc["components"].clone();
    Some(root)
}

/// Asserts that `answer` is one of the document's responses for `method path`, and
/// matches its schema.
pub(crate) fn assert_documented(doc: &Json, method: &str, path: &str, answer: &Answer) {
    assert!(
        answer.status < 500,
        "{method} {path}: {} {}",
        answer.status,
        answer.text
    );
    let documented = &doc["paths"][path][method]["responses"][answer.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path}: status {} is not documented ({})",
        answer.status,
        answer.text
    );
    if let Some(schema) = response_schema(doc, method, path, answer.status) {
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(&answer.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {}: {errors:?}\n{}",
            answer.status,
            answer.text
        );
    }
}

#[test]
fn the_document_is_openapi_3_and_lists_every_route() {
    let server = TestServer::start(config(sandbox()));
    let doc = document(&server);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, expected);
    // The same document as the library function's.
    assert_eq!(
        doc,
        serde_json::from_str::<Json>(&moonjail_http::openapi().to_json().unwrap()).unwrap()
    );
    // Every listed route is served: it answers something other than "no route".
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "0000");
        let answer = match method {
            "get" => server.get(&concrete, Some(ALICE)),
            "delete" => server.delete(&concrete, Some(ALICE)),
            _ => server.post(&concrete, Some(ALICE), &json!({})),
        };
        assert_ne!(answer.status, 405, "{method} {path}");
        assert!(
            !answer.message().starts_with("no route"),
            "{method} {path}: {}",
            answer.text
        );
    }
    // And the outcome's schema is the library's document: the error kinds are listed,
    // every one of them.
    let kinds = &doc["components"]["schemas"]["ErrorKind"]["enum"];
    for kind in moonjail::ErrorKind::ALL {
        assert!(
            kinds.as_array().unwrap().contains(&json!(kind.as_str())),
            "{kind} missing from {kinds}"
        );
    }
}

fn responses_match_their_schemas(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let doc = document(&server);
    let run = |body: Json| {
        let answer = server.post("/v1/run", Some(ALICE), &body);
        assert_documented(&doc, "post", "/v1/run", &answer);
        answer
    };
    assert_eq!(
        run(json!({"code": "return 1, nil, {a = {1, 2}}"})).status,
        200
    );
    assert_eq!(run(json!({"code": "error({code = 7})"})).status, 200);
    assert_eq!(run(json!({"code": "print('x') return 1 +"})).status, 200);
    assert_eq!(run(json!({"code": 1})).status, 400);
    let answer = server.post(
        "/v1/lint",
        Some(ALICE),
        &json!({"code": "return string.spilt('a')"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_documented(&doc, "post", "/v1/lint", &answer);
    let answer = server.post("/v1/run", None, &json!({"code": "return 1"}));
    assert_documented(&doc, "post", "/v1/run", &answer);

    let answer = server.post("/v1/sessions", Some(ALICE), &json!({}));
    assert_documented(&doc, "post", "/v1/sessions", &answer);
    let id = answer.body["id"].as_str().unwrap().to_string();
    for (op, body) in [
        ("exec", json!({"code": "function f(x) return {x} end"})),
        ("eval", json!({"code": "f"})),
        ("call", json!({"function": "f", "args": ["y"]})),
        ("has_function", json!({"name": "f"})),
    ] {
        let path = format!("/v1/sessions/{{id}}/{op}");
        let answer = server.post(&format!("/v1/sessions/{id}/{op}"), Some(ALICE), &body);
        assert_eq!(answer.status, 200, "{op}: {}", answer.text);
        assert_documented(&doc, "post", &path, &answer);
        let answer = server.post("/v1/sessions/0000/exec", Some(ALICE), &body);
        assert_documented(&doc, "post", "/v1/sessions/{id}/exec", &answer);
    }
    for path in ["/healthz", "/readyz"] {
        assert_documented(&doc, "get", path, &server.get(path, None));
    }
    let answer = server.delete(&format!("/v1/sessions/{id}"), Some(ALICE));
    assert_documented(&doc, "delete", "/v1/sessions/{id}", &answer);
    let answer = server.delete(&format!("/v1/sessions/{id}"), Some(ALICE));
    assert_documented(&doc, "delete", "/v1/sessions/{id}", &answer);
}
in_both_modes!(responses_match_their_schemas);

/// Fragments of Lua that generated requests are built from: successes, every failure
/// kind, odd results.
const SNIPPETS: [&str; 10] = [
    "return 1",
    "return (...)",
    "return {1, 'two', {three = 3}}",
    "error('x')",
    "error({code = 1})",
    "while true do end",
    "print(string.rep('y', 300))",
    "return 1 +",
    "return nil, 2",
    "local t = {} for i = 1, 1e7 do t[i] = i end",
];

fn arbitrary_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z0-9]{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: mostly well-formed run requests with limits that may be valid or
/// not, sometimes any JSON at all.
fn run_body() -> impl Strategy<Value = Json> {
    let limits = (
        prop::option::of(prop_oneof![
            Just(json!("20ms")),
            Just(json!("1s")),
            Just(json!("9s")),
            Just(json!(1)),
            Just(json!("soon")),
            Just(json!(true)),
        ]),
        prop::option::of(prop_oneof![
            Just(json!("8MiB")),
            Just(json!("1GiB")),
            Just(json!(100)),
            Just(json!(-1)),
        ]),
        prop::option::of(prop_oneof![
            Just(json!(1000)),
            Just(json!(0)),
            Just(json!("x"))
        ]),
        prop::option::of(prop_oneof![Just(json!("100B")), Just(json!("none"))]),
    )
        .prop_map(|(timeout, memory, instructions, output)| {
            let mut limits = serde_json::Map::new();
            for (name, value) in [
                ("timeout", timeout),
                ("memory", memory),
                ("instructions", instructions),
                ("output", output),
            ] {
                if let Some(value) = value {
                    limits.insert(name.into(), value);
                }
            }
            Json::Object(limits)
        });
    let well_formed = (
        prop::sample::select(SNIPPETS.to_vec()),
        arbitrary_json(),
        prop::option::of(prop::sample::select(vec![
            "minimal", "standard", "aos", "root",
        ])),
        limits,
        any::<bool>(),
    )
        .prop_map(|(code, input, profile, limits, expression)| {
            let mut body = json!({"code": code, "input": input, "limits": limits,
                "expression": expression});
            if let Some(profile) = profile {
                body["profile"] = json!(profile);
            }
            body
        });
    prop_oneof![4 => well_formed, 1 => arbitrary_json()]
}

fn generated_requests_never_get_a_5xx_or_an_undocumented_answer(isolated: bool) {
    let mut config = config(sandbox_in(isolated));
    config.workers = 2;
    config.queue = 64;
    let server = TestServer::start(config);
    let doc = document(&server);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&run_body(), |body| {
            let answer = server.post("/v1/run", Some(ALICE), &body);
            assert_documented(&doc, "post", "/v1/run", &answer);
            prop_assert!(
                matches!(answer.status, 200 | 400),
                "{body}: {}",
                answer.text
            );
            Ok(())
        })
        .unwrap();
}
in_both_modes!(generated_requests_never_get_a_5xx_or_an_undocumented_answer);
