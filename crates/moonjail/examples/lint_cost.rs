//! What one lint of about 1 MB of real Lua costs, for a profiler: the megabyte of the
//! lint bench (copies of rxi's json.lua, each in its own block) linted
//! `MOONJAIL_LINT_N` times (default 5), or only parsed with full_moon when
//! `MOONJAIL_LINT_PARSE_ONLY` is set. Instruction counts, unlike the criterion bench's
//! wall times, do not depend on the machine's load:
//! `valgrind --tool=callgrind target/release/examples/lint_cost`.
use std::time::Instant;

use moonjail::Sandbox;

#[path = "../benches/common/megabyte.rs"]
mod megabyte;

fn main() {
    let n: usize = std::env::var("MOONJAIL_LINT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let parse_only = std::env::var_os("MOONJAIL_LINT_PARSE_ONLY").is_some();
    let source = megabyte::megabyte();
    let sandbox = Sandbox::builder().no_source_limit().build().expect("valid");
    let t = Instant::now();
    for _ in 0..n {
        if parse_only {
            let parsed = full_moon::parse_fallible(&source, full_moon::LuaVersion::lua54());
            assert!(parsed.errors().is_empty());
        } else {
            assert!(!sandbox.lint(&source).has_errors());
        }
    }
    println!(
        "{} of {} bytes: {:.1} ms each",
        if parse_only { "parse" } else { "lint" },
        source.len(),
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
