//! Persistent sessions: state survives calls, limits are per call, and a timeout closes
//! the session with its reason.

use std::time::Duration;

use moonjail::{ErrorKind, Sandbox};
use serde_json::json;

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .timeout(Duration::from_millis(200))
        .memory_limit(4 << 20)
        .build()
        .unwrap()
}

#[test]
fn state_persists_across_calls() {
    let mut s = sandbox().session().unwrap();
    assert!(!s.has_function("compute").unwrap());
    let out = s.exec("count = 0 function compute(state, msg) count = count + 1 state.n = (state.n or 0) + msg.add return state, count end");
    assert!(out.is_ok(), "{:?}", out.result);
    assert!(s.has_function("compute").unwrap());
    assert!(!s.has_function("count").unwrap());
    let out = s.call("compute", &[json!({"n": 1}), json!({"add": 2})]);
    assert_eq!(out.result.unwrap(), json!({"n": 3}));
    let out = s.call("compute", &[json!({}), json!({"add": 5})]);
    assert_eq!(out.result.unwrap(), json!({"n": 5}));
    assert_eq!(s.exec("return count").result.unwrap(), json!(2));
}

#[test]
fn output_is_per_call() {
    let mut s = sandbox().session().unwrap();
    assert_eq!(s.exec("print('a')").output, "a\n");
    assert_eq!(s.exec("print('b')").output, "b\n");
}

#[test]
fn caught_error_and_memory_limit_keep_the_session() {
    let mut s = sandbox().session().unwrap();
    let _ = s.exec("x = 41");
    let out = s.exec("error('boom')");
    assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
    let out = s.exec("local t = {} for i = 1, 1e9 do t[i] = i end");
    assert_eq!(out.error().unwrap().kind, ErrorKind::MemoryLimit);
    assert_eq!(s.exec("x = x + 1 return x").result.unwrap(), json!(42));
    assert!(s.closed_reason().is_none());
}

#[test]
fn timeout_closes_the_session_with_its_reason() {
    let mut s = sandbox().session().unwrap();
    let _ = s.exec("function spin() while true do pcall(function() while true do end end) end end");
    let out = s.call("spin", &[]);
    assert_eq!(out.error().unwrap().kind, ErrorKind::Timeout);
    assert_eq!(s.closed_reason().unwrap().kind, ErrorKind::Timeout);
    let out = s.exec("return 1");
    let e = out.error().unwrap();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("session was closed"), "{}", e.message);
    // A closed session refuses has_function too, with the reason.
    let e = s.has_function("spin").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("session was closed"), "{}", e.message);
}

#[test]
fn instruction_limit_is_per_call_and_closes() {
    let sb = Sandbox::builder()
        .instruction_limit(100_000)
        .build()
        .unwrap();
    let mut s = sb.session().unwrap();
    let _ = s.exec("function work(n) local x = 0 for i = 1, n do x = x + i end return x end");
    // Each call gets the whole budget again.
    for _ in 0..5 {
        assert_eq!(
            s.call("work", &[json!(10_000)]).result.unwrap(),
            json!(50_005_000)
        );
    }
    let out = s.call("work", &[json!(10_000_000)]);
    assert_eq!(out.error().unwrap().kind, ErrorKind::InstructionLimit);
    assert!(s.closed_reason().is_some());
}

#[test]
fn calling_a_missing_function_is_a_runtime_error() {
    let mut s = sandbox().session().unwrap();
    let out = s.call("nope", &[]);
    assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
    assert!(s.exec("return 1").is_ok());
}

/// A session keeps the names it calls between calls (engine.rs `NameCache`); what a
/// name means must still be read afresh at every call.
#[test]
fn a_called_name_is_looked_up_again_at_every_call() {
    let sb = sandbox();
    let mut s = sb.session().unwrap();
    assert!(s
        .exec("function f() return 1 end M = {g = function() return 'a' end}")
        .is_ok());
    assert_eq!(s.call("f", &[]).result, Ok(json!(1)));
    assert_eq!(s.call("M.g", &[]).result, Ok(json!("a")));
    // Redefined, replaced, removed: each call sees the state as it is now.
    assert!(s
        .exec("function f() return 2 end M = {g = function() return 'b' end}")
        .is_ok());
    assert_eq!(s.call("f", &[]).result, Ok(json!(2)));
    assert_eq!(s.call("M.g", &[]).result, Ok(json!("b")));
    assert!(s.exec("f = nil").is_ok());
    assert_eq!(
        s.call("f", &[]).error().map(|e| e.kind),
        Some(ErrorKind::Runtime)
    );
    // More names than the cache keeps, and long ones, still resolve.
    let defs: String = (0..40)
        .map(|i| format!("function name_{i}() return {i} end\n"))
        .collect();
    let long = "x".repeat(100);
    assert!(s
        .exec(format!("{defs}\nfunction {long}() return 'long' end"))
        .is_ok());
    for round in 0..2 {
        for i in 0..40 {
            assert_eq!(
                s.call(&format!("name_{i}"), &[]).result,
                Ok(json!(i)),
                "round {round}"
            );
        }
        assert_eq!(s.call(&long, &[]).result, Ok(json!("long")));
    }
}
