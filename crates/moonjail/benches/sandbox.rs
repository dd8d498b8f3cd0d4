//! Criterion benchmarks: fresh sandbox + trivial run, and marshaling both ways.
//! Run: cargo bench -p moonjail --bench sandbox

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use moonjail::{Profile, Sandbox};
use serde_json::{json, Value};

fn fresh_run(c: &mut Criterion) {
    let mut g = c.benchmark_group("fresh_run");
    for profile in Profile::ALL {
        let sandbox = Sandbox::builder().profile(profile).build().unwrap();
        g.bench_function(format!("return_1/{}", profile.name()), |b| {
            b.iter(|| {
                let out = sandbox.run(black_box("return 1"), &Value::Null);
                assert!(out.is_ok());
            })
        });
    }
    let no_limits = Sandbox::builder()
        .no_memory_limit()
        .no_timeout()
        .no_output_limit()
        .build()
        .unwrap();
    g.bench_function("return_1/standard_no_limits", |b| {
        b.iter(|| no_limits.run(black_box("return 1"), &Value::Null))
    });
    g.finish();
}

fn document(n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "tags": ["a", "b"], "score": i as f64 + 0.5, "ok": i % 2 == 0}))
        .collect();
    json!({"items": items, "meta": {"count": n, "source": "bench"}})
}

fn marshaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("marshal");
    let sandbox = Sandbox::default();
    let doc = document(1000);
    g.bench_function("roundtrip_1000_objects", |b| {
        b.iter(|| {
            let out = sandbox.run("return ...", black_box(&doc));
            assert!(out.is_ok());
        })
    });
    g.bench_function("json_lib_1000_objects", |b| {
        let text = serde_json::to_string(&doc).unwrap();
        b.iter(|| {
            let out = sandbox.run(
                "local s = ... return #json.encode(json.decode(s))",
                black_box(&Value::String(text.clone())),
            );
            assert!(out.is_ok());
        })
    });
    g.finish();
}

criterion_group!(benches, fresh_run, marshaling);
criterion_main!(benches);
