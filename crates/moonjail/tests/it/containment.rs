//! Containment at the host boundary: what a script makes the host compile, convert,
//! escape or print is bounded by the run's limits, in both isolation modes; every case
//! ends with an ordinary kind, never `internal`, within its deadline plus slack.

use std::time::{Duration, Instant};

use crate::support::both_sandboxes as both;
use moonjail::{ErrorKind, Limits, Outcome, Sandbox, MAX_MESSAGE_BYTES};
use serde_json::{json, Value as Json};

/// "It ended": these tests never assert how fast.
const SLACK: Duration = Duration::from_secs(15);

fn expect(sb: &Sandbox, mode: &str, source: &str, kind: ErrorKind) -> Outcome {
    let started = Instant::now();
    let out = sb.run(source, &Json::Null);
    let deadline = sb.limits().timeout.unwrap_or(Duration::ZERO);
    assert!(
        started.elapsed() < deadline + SLACK,
        "{mode}: {source} took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.error().map(|e| e.kind),
        Some(kind),
        "{mode}: {source}: {out:?}"
    );
    out
}

#[test]
fn compiling_stops_at_the_deadline() {
    let timeout = Duration::from_millis(500);
    let slow = format!("local a = 1 return {}a", "a or ".repeat(200_000));
    for (mode, sb) in both(|| Sandbox::builder().timeout(timeout)) {
        // The script itself, and a chunk it loads.
        let _ = expect(&sb, mode, &slow, ErrorKind::Timeout);
        let _ = expect(
            &sb,
            mode,
            r#"return load("local a = 1 return " .. ("a or "):rep(200000) .. "a")"#,
            ErrorKind::Timeout,
        );
        // Ordinary chunks still compile, and syntax errors keep Lua's message.
        assert_eq!(sb.run("return 1 + 1", &Json::Null).result, Ok(json!(2)));
        let out = expect(&sb, mode, "return 1 +", ErrorKind::Syntax);
        assert_eq!(
            out.error().unwrap().message,
            "script:1: unexpected symbol near <eof>",
            "{mode}"
        );
        let out = sb.run("local f, e = load('x = ') return e", &Json::Null);
        assert_eq!(
            out.result,
            Ok(json!("[string \"x = \"]:1: unexpected symbol near <eof>")),
            "{mode}"
        );
    }
}

/// A table reachable 2^20 times: 21 KB of Lua heap, gigabytes of JSON values.
const DAG: &str = "local t = {a = {}} for i = 1, 20 do t = {t, t} end";

#[test]
fn shared_subtables_are_charged_per_copy() {
    for (mode, sb) in both(|| {
        Sandbox::builder()
            .memory_limit(1 << 20)
            .timeout(Duration::from_secs(5))
            .tool("echo", |args| Ok(Json::Array(args)))
    }) {
        let out = expect(
            &sb,
            mode,
            &format!("{DAG} return t"),
            ErrorKind::MemoryLimit,
        );
        assert!(
            out.error().unwrap().message.contains("host memory"),
            "{mode}: {out:?}"
        );
        let _ = expect(
            &sb,
            mode,
            &format!("{DAG} return json.encode(t)"),
            ErrorKind::MemoryLimit,
        );
        // A tool argument built so never reaches the tool.
        let out = sb.run(format!("{DAG} return pcall(echo, t)"), &Json::Null);
        assert_eq!(out.result, Ok(json!(false)), "{mode}: {out:?}");
        // Small DAGs are fine: each copy is written out.
        let out = sb.run(
            "local t = {1} for i = 1, 3 do t = {t, t} end return t",
            &Json::Null,
        );
        assert_eq!(
            out.result,
            Ok(json!([[[[1], [1]], [[1], [1]]], [[[1], [1]], [[1], [1]]]])),
            "{mode}"
        );
    }
}

#[test]
fn escaped_json_counts_against_the_result_limit() {
    for (mode, sb) in both(|| Sandbox::builder().result_limit(1 << 20)) {
        // 300 KB of text, 1.8 MB of JSON once escaped.
        let out = expect(&sb, mode, r#"return ("\1"):rep(300000)"#, ErrorKind::Result);
        assert!(
            out.error().unwrap().message.contains("byte limit"),
            "{mode}: {out:?}"
        );
        let out = sb.run(r#"return ("\1"):rep(100000)"#, &Json::Null);
        assert!(
            out.is_ok(),
            "{mode}: 600 KB escaped fits: {:?}",
            out.error()
        );
    }
}

#[test]
fn error_messages_are_bounded() {
    for (mode, sb) in both(Sandbox::builder) {
        for source in [
            r#"error(("x"):rep(3000000), 0)"#,
            r#"error(("\1"):rep(3000000), 0)"#,
        ] {
            let out = expect(&sb, mode, source, ErrorKind::Runtime);
            let message = &out.error().unwrap().message;
            assert!(
                message.len() <= MAX_MESSAGE_BYTES,
                "{mode}: {} bytes",
                message.len()
            );
            assert!(message.ends_with("more bytes not shown)"), "{mode}");
        }
    }
}

#[test]
fn replaced_output_counts_against_the_output_limit() {
    for (mode, sb) in both(|| Sandbox::builder().output_limit(1000)) {
        // 600 invalid bytes become 1800 bytes of U+FFFD.
        let out = expect(
            &sb,
            mode,
            r#"print(("\255"):rep(600))"#,
            ErrorKind::OutputLimit,
        );
        assert!(out.output.len() <= 1000, "{mode}: {}", out.output.len());
        let out = sb.run(r#"print(("\255"):rep(300))"#, &Json::Null);
        assert!(out.is_ok(), "{mode}");
        assert_eq!(out.output.chars().filter(|c| *c == '\u{fffd}').count(), 300);
    }
}

#[test]
fn result_depth_has_a_hard_ceiling() {
    let e = Sandbox::builder()
        .result_depth(10_000_000)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("result-depth"), "{e}");
    assert!(Sandbox::builder()
        .result_depth(Limits::MAX_RESULT_DEPTH)
        .build()
        .is_ok());
}

#[test]
fn the_deepest_result_does_not_overflow_a_small_stack() {
    // Marshaling grows its stack as it goes: the deepest result the ceiling allows
    // converts on a thread with a 256 KiB stack, both ways.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let sb = Sandbox::builder()
                .result_depth(Limits::MAX_RESULT_DEPTH)
                .build()
                .unwrap();
            let deep = "local t = 1 for i = 1, 1000 do t = {t} end return t";
            let out = sb.run(deep, &Json::Null);
            let value = out.result.expect("a deep result");
            let out = sb.run(
                "local t, n = ..., 0 while type(t) == 'table' do t = t[1] n = n + 1 end return n",
                &value,
            );
            // Dropping a deep value recurses too: leave it to a thread with room.
            std::mem::forget(value);
            out.result
        })
        .unwrap();
    assert_eq!(handle.join().unwrap(), Ok(json!(1000)));
}

#[test]
fn diagnostics_keep_a_bounded_number_of_names() {
    let sb = Sandbox::builder().diagnostic(true).build().unwrap();
    let out = sb.run(
        "for i = 1, 20000 do local _ = _G['g' .. i] end \
         for i = 1, 10 do local _ = _G[('x'):rep(100000) .. i] end return 1",
        &Json::Null,
    );
    assert_eq!(out.result, Ok(json!(1)), "{out:?}");
    let d = out.diagnostics.expect("diagnostics");
    assert!(d.missing.len() <= 4097, "{} names", d.missing.len());
    assert!(
        d.missing.contains_key("(more names, not recorded)"),
        "{:?}",
        d.missing.keys().last()
    );
    assert!(d.missing.keys().all(|k| k.len() <= 260));
}

#[test]
fn lines_takes_no_more_formats_than_stock_lua() {
    let dir = std::env::temp_dir().join(format!("moonjail-lines-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data.txt");
    std::fs::write(&file, "a\nb\n").unwrap();
    let path = file.to_str().unwrap().to_string();
    let sb = Sandbox::builder()
        .profile(moonjail::Profile::Aos)
        .host_files(moonjail::HostFiles::default().allow_read(&path))
        .build()
        .unwrap();
    let script = |n: usize| {
        format!(
            "local f = io.open({path:?}) local t = {{}} for i = 1, {n} do t[i] = 'l' end \
             local ok, e = pcall(f.lines, f, table.unpack(t)) return {{ok = ok, e = tostring(e)}}"
        )
    };
    let out = sb.run(script(250), &Json::Null);
    assert_eq!(out.result.as_ref().unwrap()["ok"], json!(true), "{out:?}");
    let out = sb.run(script(100_000), &Json::Null);
    let result = out.result.expect("a result");
    assert_eq!(result["ok"], json!(false));
    assert!(
        result["e"].as_str().unwrap().contains("too many arguments"),
        "{result}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a worker, marshaling a deep value grows the stack through `stacker`, whose first
/// call on a thread opens /proc/self/maps: the worker reads it before its lockdown, or
/// the seccomp filter would kill it here.
#[test]
fn a_deep_result_converts_in_a_locked_down_worker() {
    for (mode, sb) in both(|| Sandbox::builder().result_depth(Limits::MAX_RESULT_DEPTH)) {
        let out = sb.run(
            "local t = 1 for i = 1, 1000 do t = {t} end return t",
            &Json::Null,
        );
        assert!(out.is_ok(), "{mode}: {:?}", out.error());
        std::mem::forget(out);
    }
}
