//! Median latency of a fresh sandbox + `return 1`, end to end in the library.
//! Run: cargo run --release -p moonjail --example latency
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("MOONJAIL_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for profile in moonjail::Profile::ALL {
        let sandbox = moonjail::Sandbox::builder()
            .profile(profile)
            .build()
            .expect("valid");
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let out = sandbox.run("return 1", &serde_json::Value::Null);
            samples.push(t.elapsed());
            assert!(out.is_ok());
        }
        samples.sort();
        println!(
            "{:<9} fresh sandbox + `return 1`: median {:?}, p90 {:?}",
            profile.name(),
            samples[n / 2],
            samples[n * 9 / 10]
        );
    }
}
