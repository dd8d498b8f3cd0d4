//! Host-side amplification: values built to cost the host far more than the script's
//! heap (shared subtables, strings that escape six-fold, deep nesting), handed to every
//! host boundary (the result, `json.encode`, a tool's arguments, an error value). Each
//! run must end with an ordinary kind, within its deadline plus slack, with a result no
//! larger than the result limit as written and an error message within
//! `MAX_MESSAGE_BYTES`.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moonjail::{ErrorKind, Sandbox, MAX_MESSAGE_BYTES};
use serde_json::Value as Json;

const RESULT_LIMIT: usize = 256 << 10;

#[derive(Arbitrary, Debug)]
enum Leaf {
    Empty,
    Number(i32),
    /// `("\1"):rep(n)`: six bytes of JSON a byte.
    Control(u16),
    /// Invalid UTF-8.
    Invalid(u8),
}

#[derive(Arbitrary, Debug)]
enum Sink {
    Result,
    Encode,
    Tool,
    Error,
    Print,
}

#[derive(Arbitrary, Debug)]
struct Case {
    leaf: Leaf,
    /// Levels of `t = {t, t}` (shared) or nesting `t = {t}`.
    levels: u8,
    shared: bool,
    sink: Sink,
}

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        Sandbox::builder()
            .memory_limit(4 << 20)
            .timeout(Duration::from_millis(500))
            .result_limit(RESULT_LIMIT)
            .result_depth(200)
            .output_limit(64 << 10)
            .tool("echo", |args| Ok(Json::Array(args)))
            .build()
            .expect("valid")
    })
}

fn script(case: &Case) -> String {
    let leaf = match case.leaf {
        Leaf::Empty => "{}".to_string(),
        Leaf::Number(n) => n.to_string(),
        Leaf::Control(n) => format!("(\"\\1\"):rep({n})"),
        Leaf::Invalid(n) => format!("(\"\\255\"):rep({n})"),
    };
    let levels = case.levels % 40;
    let step = if case.shared { "{t, t}" } else { "{t}" };
    let sink = match case.sink {
        Sink::Result => "return t",
        Sink::Encode => "return json.encode(t)",
        Sink::Tool => "return echo(t)",
        Sink::Error => "error(t, 0)",
        Sink::Print => "print(json.encode(t)) return 1",
    };
    format!("local t = {leaf} for i = 1, {levels} do t = {step} end {sink}")
}

fuzz_target!(|case: Case| {
    let source = script(&case);
    let started = Instant::now();
    let out = sandbox().run(&source, &Json::Null);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{source} took {:?}",
        started.elapsed()
    );
    match &out.result {
        Ok(value) => {
            let written = serde_json::to_string(value).expect("a result serialises").len();
            assert!(written <= RESULT_LIMIT, "{source}: a {written} byte result");
        }
        Err(e) => {
            assert!(
                !matches!(e.kind, ErrorKind::Internal | ErrorKind::Killed),
                "{source}: {} {}",
                e.kind,
                e.message
            );
            assert!(e.message.len() <= MAX_MESSAGE_BYTES, "{source}: a long message");
        }
    }
    assert!(out.output.len() <= 64 << 10, "{source}: {} bytes of output", out.output.len());
});
