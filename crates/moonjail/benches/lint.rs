//! Criterion benchmarks of `Sandbox::lint`: a typical 100-line agent script (target:
//! under 1 ms) and a 1 MB source (target: under 100 ms), both valid (the fast parser's
//! path); the agent script with a syntax error (full_moon's recovering path); and
//! full_moon's parse of the megabyte alone, for reference.
//! Run: cargo bench -p moonjail --bench lint

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use moonjail::Sandbox;

/// An agent script of 100 lines, the way a model writes one: helpers, a `run`, tool and
/// library calls, patterns, JSON.
fn agent_script() -> String {
    let mut lines = vec![
        "-- summarise the orders and look up the weather for each city".to_string(),
        "local function round(x, places)".into(),
        "  local m = 10 ^ (places or 0)".into(),
        "  return math.floor(x * m + 0.5) / m".into(),
        "end".into(),
        "local function trim(s) return (s:gsub('^%s+', ''):gsub('%s+$', '')) end".into(),
    ];
    let mut i = 0;
    while i < 9 {
        lines.push(format!("local function step{i}(ctx, order)"));
        lines.push(format!(
            "  local name = trim(order.customer or 'n/a') .. '#{i}'"
        ));
        lines.push("  if order.amount ~= nil and order.amount > 0 then".into());
        lines.push("    ctx.total = (ctx.total or 0) + round(order.amount, 2)".into());
        lines.push("    local w = weather.lookup{city = order.city}".into());
        lines.push(
            "    ctx.notes[#ctx.notes + 1] = string.format('%s: %s', name, w.forecast)".into(),
        );
        lines.push("  end".into());
        lines.push("end".into());
        i += 1;
    }
    lines.push("function run(ctx)".into());
    lines.push("  ctx.notes = {}".into());
    lines.push("  for _, order in ipairs(ctx.orders) do".into());
    for j in 0..i {
        lines.push(format!("    step{j}(ctx, order)"));
    }
    lines.push("  end".into());
    lines.push("  return json.encode(ctx)".into());
    lines.push("end".into());
    while lines.len() < 100 {
        lines.insert(1, "-- (notes the model wrote for itself)".into());
    }
    lines.join("\n")
}

#[path = "common/megabyte.rs"]
mod megabyte;
use megabyte::megabyte;

fn lint(c: &mut Criterion) {
    let sandbox = Sandbox::builder()
        .tool("weather.lookup", |_| {
            Ok(serde_json::json!({"forecast": "sunny"}))
        })
        .no_source_limit()
        .build()
        .unwrap();
    let agent = agent_script();
    let report = sandbox.lint(&agent);
    assert!(!report.has_errors(), "{:#?}", report.findings);
    let big = megabyte();
    let report = sandbox.lint(&big);
    assert!(!report.has_errors(), "{:#?}", report.errors().next());
    let mut g = c.benchmark_group("lint");
    g.bench_function("agent_100_lines", |b| {
        b.iter(|| sandbox.lint(black_box(&agent)))
    });
    // A model's slip on one line: the script is read again by full_moon.
    let broken = agent.replacen("order.amount ~= nil", "order.amount != nil", 1);
    assert!(sandbox.lint(&broken).has_errors());
    g.bench_function("agent_100_lines_syntax_error", |b| {
        b.iter(|| sandbox.lint(black_box(&broken)))
    });
    g.sample_size(10);
    g.bench_function("source_1MB", |b| b.iter(|| sandbox.lint(black_box(&big))));
    // full_moon's parse alone, for reference: what every lint cost before the fast path.
    g.bench_function("full_moon_parse_1MB", |b| {
        b.iter(|| {
            let parsed = full_moon::parse_fallible(black_box(&big), full_moon::LuaVersion::lua54());
            parsed.errors().len()
        })
    });
    g.finish();
}

criterion_group!(benches, lint);
criterion_main!(benches);
