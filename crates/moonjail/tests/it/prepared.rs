//! Prepared states: built ahead on a helper thread, each still used by exactly one run.

use std::time::Duration;

use moonjail::{Determinism, ErrorKind, Profile, Sandbox};
use serde_json::{json, Value};

fn prepared(profile: Profile) -> Sandbox {
    Sandbox::builder()
        .profile(profile)
        .prepared_states(2)
        .timeout(Duration::from_millis(300))
        .memory_limit(4 << 20)
        .output_limit(1024)
        .build()
        .unwrap()
}

/// Gives the helper time to refill, so the next run takes a prepared state.
fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

#[test]
fn every_run_gets_a_state_no_other_run_touched() {
    for profile in Profile::ALL {
        let sb = prepared(profile);
        for i in 0..20 {
            settle();
            let out = sb.run(
                "local n = ... assert(leaked == nil, 'a global leaked from another run') \
                 leaked = n string.leak = n return n",
                &json!(i),
            );
            assert_eq!(out.result, Ok(json!(i)), "{profile} run {i}");
        }
    }
}

#[test]
fn limits_hold_on_prepared_states_and_the_next_run_is_healthy() {
    let sb = prepared(Profile::Standard);
    for (code, kind) in [
        (
            "while true do pcall(function() while true do end end) end",
            ErrorKind::Timeout,
        ),
        (
            "local s = 'x' while true do s = s .. s end",
            ErrorKind::MemoryLimit,
        ),
        (
            "while true do print(('x'):rep(100)) end",
            ErrorKind::OutputLimit,
        ),
        ("setmetatable({}, {__gc = print})", ErrorKind::Forbidden),
    ] {
        settle();
        let out = sb.run(code, &Value::Null);
        assert_eq!(out.error().map(|e| e.kind), Some(kind), "{code}");
        settle();
        assert_eq!(sb.run("return 1 + 1", &Value::Null).result, Ok(json!(2)));
    }
    let sb = Sandbox::builder()
        .prepared_states(1)
        .instruction_limit(10_000)
        .build()
        .unwrap();
    settle();
    let out = sb.run("while true do end", &Value::Null);
    assert_eq!(out.error().unwrap().kind, ErrorKind::InstructionLimit);
}

#[test]
fn options_reach_prepared_states() {
    let sb = Sandbox::builder()
        .prepared_states(2)
        .diagnostic(true)
        .deterministic(Some(Determinism {
            timestamp: 1_700_000_000,
            seed: 1,
        }))
        .build()
        .unwrap();
    settle();
    let out = sb.run("return os.time() + #string.format('%d', 7)", &Value::Null);
    assert_eq!(out.result, Ok(json!(1_700_000_001)));
    assert_eq!(out.diagnostics.unwrap().library["string.format"], 1);
}

#[test]
fn many_threads_share_one_prepared_sandbox() {
    let sb = prepared(Profile::Standard);
    std::thread::scope(|s| {
        for t in 0..16 {
            let sb = &sb;
            s.spawn(move || {
                for i in 0..20 {
                    let out = sb.run(
                        "local n = ... assert(mine == nil) mine = n return mine * 2",
                        &json!(t * 100 + i),
                    );
                    assert_eq!(out.result, Ok(json!((t * 100 + i) * 2)));
                }
            });
        }
    });
}
