//! The one-shot run's backstop: a deadline that cannot be delivered in process (the
//! collector's atomic phase over a long ephemeron chain, ~86 s for this one) still ends
//! `moonjail run` as a `timeout`, soon after the deadline.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// A shuffled chain of 100,000 weak-keyed entries: one atomic GC step marks it in time
/// quadratic in its length, inside one C call.
const EPHEMERON_CHAIN: &str = r#"
local N = 100000
local keys = {}
for i = 1, N do keys[i] = {} end
for i = N, 2, -1 do local j = math.random(i) keys[i], keys[j] = keys[j], keys[i] end
local t = setmetatable({}, {__mode = "k"})
for i = 1, N - 1 do t[keys[i]] = keys[i + 1] end
local root = keys[1]
keys = nil
while true do local x = {} end
"#;

#[test]
fn an_undeliverable_deadline_still_ends_the_run_as_a_timeout() {
    let dir = TempDir::new();
    dir.write("chain.lua", EPHEMERON_CHAIN);
    for json_mode in [true, false] {
        let mut args = vec!["run", "chain.lua", "--timeout", "300ms"];
        if json_mode {
            args.push("--json");
        }
        let started = Instant::now();
        let out = moonjail(&dir, &args, None);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(out.code, Some(1), "{out:?}");
        if json_mode {
            let doc = out.json();
            assert_document_shape(&doc);
            assert_eq!(doc["error"]["kind"], json!("timeout"), "{doc}");
            assert_eq!(out.stdout.lines().count(), 1, "one document: {out:?}");
        } else {
            assert!(out.stderr.contains("timeout"), "{out:?}");
        }
    }
}

#[test]
fn isolated_the_supervisor_kills_it() {
    let dir = TempDir::new();
    dir.write("chain.lua", EPHEMERON_CHAIN);
    let flags = isolate_flags();
    let args = with_isolation(
        &["run", "chain.lua", "--timeout", "300ms", "--json"],
        true,
        &flags,
    );
    let out = moonjail(&dir, &args, None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.json()["error"]["kind"], json!("timeout"), "{out:?}");
}

#[test]
fn a_run_that_ends_in_time_prints_only_its_own_outcome() {
    // The backstop is armed for 100 ms + 1 s. A run that ends in time, or that ends at
    // its deadline in the ordinary way, prints exactly its own document: the backstop
    // was disarmed before it could add a second one.
    let out = mj(&["run", "-e", "return 1", "--timeout", "100ms", "--json"]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let out = mj(&[
        "run",
        "-e",
        "while true do end",
        "--timeout",
        "100ms",
        "--json",
    ]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one document: {out:?}");
    let doc = out.json();
    assert_eq!(doc["error"]["kind"], json!("timeout"));
    assert!(
        !doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be interrupted"),
        "the in-process deadline ended it, not the backstop: {doc}"
    );
}
