//! Median latency of a fresh sandbox + `return 1`, end to end in the library.
//!
//! Two patterns: back to back (a batch: the helper that prepares states cannot get
//! ahead, and states are built on the calling thread), and spaced (requests arriving
//! with idle time between them, as a service sees them: every run finds a prepared
//! state). Run: cargo run --release -p moonjail --example latency
//! (`MOONJAIL_LATENCY_N` sets the number of runs per row.)
use std::time::{Duration, Instant};

use moonjail::{Profile, Sandbox};

fn measure(sandbox: &Sandbox, n: usize, gap: Option<Duration>) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(gap) = gap {
            std::thread::sleep(gap);
        }
        let t = Instant::now();
        let out = sandbox.run("return 1", &serde_json::Value::Null);
        samples.push(t.elapsed());
        assert!(out.is_ok());
    }
    samples.sort();
    (samples[n / 2], samples[n * 9 / 10])
}

fn main() {
    let n: usize = std::env::var("MOONJAIL_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for profile in Profile::ALL {
        let inline = Sandbox::builder()
            .profile(profile)
            .prepared_states(0)
            .build()
            .expect("valid");
        let prepared = Sandbox::builder()
            .profile(profile)
            .prepared_states(2)
            .build()
            .expect("valid");
        let (m, p) = measure(&inline, n, None);
        println!(
            "{:<9} state built per run, back to back: median {m:?}, p90 {p:?}",
            profile.name()
        );
        let gap = Some(Duration::from_micros(500));
        let (m, p) = measure(&prepared, n / 10, gap);
        println!(
            "{:<9} prepared states, runs 0.5 ms apart:   median {m:?}, p90 {p:?}",
            profile.name()
        );
    }
}
