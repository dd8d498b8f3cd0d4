//! Measures isolated mode: the round trip of a trivial run on a warm, locked-down worker,
//! and the cold start of a worker with every layer applied (spawn, lockdown, `Ready`).
//!
//! ```sh
//! cargo run --release -p moonjail --example isolated_latency [RUNS]
//! ```
//!
//! This example serves as its own worker (it calls `run_if_worker` first), unless
//! `MOONJAIL_WORKER` names another executable.

use std::time::{Duration, Instant};

use moonjail::{Isolation, ProcessConfig, Sandbox};
use serde_json::Value as Json;

fn main() {
    moonjail::worker::run_if_worker();
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);

    let capabilities = moonjail::worker::probe();
    if !capabilities.all_usable() {
        eprintln!(
            "note: not every layer is available here (see `moonjail doctor`):\n{capabilities}"
        );
    }
    let allow_missing = capabilities
        .layers
        .iter()
        .filter(|(_, a)| !a.is_usable())
        .map(|(layer, _)| *layer)
        .collect();
    let config = ProcessConfig::builder()
        .pool_size(1)
        .prespawn(1)
        .max_runs(None)
        .allow_missing(allow_missing)
        .build()
        .expect("a valid process config");
    let sandbox = Sandbox::builder()
        .isolation(Isolation::Process(config))
        .build()
        .expect("a valid sandbox");
    assert!(sandbox.wait_for_idle_workers(1, Duration::from_secs(10)));

    // Warm run: `return 1` on an already locked-down worker, supervisor to supervisor.
    for _ in 0..100 {
        assert!(sandbox.run("return 1", &Json::Null).is_ok());
    }
    let mut warm: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let outcome = sandbox.run("return 1", &Json::Null);
            let took = started.elapsed();
            assert!(outcome.is_ok(), "{:?}", outcome.result);
            took
        })
        .collect();

    // Cold start: a new worker with every layer applied, until it reports Ready.
    let cold_runs = (runs / 10).clamp(20, 200);
    let mut cold: Vec<Duration> = (0..cold_runs)
        .map(|_| sandbox.cold_start_worker().expect("a worker starts"))
        .collect();

    // The same script in process, for comparison.
    let local = Sandbox::builder().build().expect("a valid sandbox");
    let mut in_process: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let _ = local.run("return 1", &Json::Null);
            started.elapsed()
        })
        .collect();

    report("warm isolated run of `return 1` (round trip)", &mut warm);
    report("cold worker: spawn + lockdown + Ready", &mut cold);
    report("in-process run of `return 1`", &mut in_process);
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.1} us, p90 {:.1} us, p99 {:.1} us, min {:.1} us ({} samples)",
        micros(at(0.5)),
        micros(at(0.9)),
        micros(at(0.99)),
        micros(samples[0]),
        samples.len()
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
