//! `stats.instructions` is exact: the count a run reports is the smallest instruction
//! limit under which it succeeds.

use moonjail::{ErrorKind, Sandbox};
use serde_json::Value as Json;

fn run(source: &str, limit: u64) -> moonjail::Outcome {
    Sandbox::builder()
        .instruction_limit(limit)
        .build()
        .unwrap()
        .run(source, &Json::Null)
}

const SCRIPTS: &[&str] = &[
    "return 1",
    "local x = 0 for i = 1, 10 do x = x + i end return x",
    "local s = 0 for i = 1, 1000 do s = s + i * 2 end return s",
    "local function f(n) if n < 2 then return n end return f(n - 1) + f(n - 2) end return f(12)",
    "local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end) \
     return co() + co() + co()",
    "local t = {} for i = 1, 300 do t[i] = coroutine.create(function(a) return a + 1 end) end \
     local s = 0 for i = 1, 300 do local _, v = coroutine.resume(t[i], i) s = s + v end return s",
    "local ok = pcall(function() error('x') end) return ok",
    "function run(x) local n = 0 while n < 777 do n = n + 1 end return n end",
    // Blocks kept across many switches: a coroutine that yields mid-block, nested ones.
    "local co = coroutine.wrap(function() local s = 0 for i = 1, 5000 do s = s + i \
     if i % 37 == 0 then coroutine.yield(s) end end return s end) \
     local last for i = 1, 200 do last = co() if i == 135 then break end end return last",
    "local function gen(n) return coroutine.wrap(function() for i = 1, n do \
     local inner = coroutine.wrap(function() for j = 1, 3 do coroutine.yield(j) end end) \
     coroutine.yield(inner() + inner() + i) end end) end \
     local g, s = gen(100), 0 for i = 1, 100 do s = s + g() end return s",
];

#[test]
fn the_reported_count_is_the_least_limit_that_suffices() {
    for source in SCRIPTS {
        let roomy = run(source, 100_000_000);
        assert!(roomy.is_ok(), "{source}: {roomy:?}");
        let n = roomy.stats.instructions.expect("a count under a limit");
        assert!(n > 0, "{source}");
        let exact = run(source, n);
        assert!(
            exact.is_ok(),
            "{source}: fails with its own count {n}: {exact:?}"
        );
        assert_eq!(exact.stats.instructions, Some(n), "{source}");
        let short = run(source, n - 1);
        assert_eq!(
            short.error().map(|e| e.kind),
            Some(ErrorKind::InstructionLimit),
            "{source}: succeeds with {} < its count",
            n - 1
        );
    }
}

#[test]
fn a_two_instruction_script_reports_three() {
    // LOADI, RETURN (Lua's count hook starts after a vararg chunk's VARARGPREP), and one
    // unit for converting the result to JSON: not a block of 256.
    let out = run("return 1", 1_000_000);
    assert_eq!(out.stats.instructions, Some(3), "{out:?}");
}

#[test]
fn a_run_that_hits_the_limit_reports_the_limit() {
    let out = run("while true do end", 5000);
    assert_eq!(
        out.error().map(|e| e.kind),
        Some(ErrorKind::InstructionLimit)
    );
    assert_eq!(out.stats.instructions, Some(5000));
}
