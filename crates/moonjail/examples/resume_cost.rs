//! What resuming a suspended run costs in memory (`Sandbox::start`, `Suspension::resume`):
//! a script that calls a deferred tool 100 times, each answered at once, against the same
//! script with the tool answering live (`run_with`). The difference per call is the cost
//! of one suspension and resumption (a thread handoff each way; isolated, also the
//! worker's round trip). Medians of alternating runs, in process and then isolated (this
//! example serves as its own worker). Run:
//! cargo run --release -p moonjail --example resume_cost
//! (`MOONJAIL_RESUME_N` sets the number of runs per row).
use std::time::{Duration, Instant};

use moonjail::{Isolation, ProcessConfig, Run, RunOptions, Sandbox, SandboxBuilder};
use serde_json::json;

const CALLS: u32 = 100;
const SCRIPT: &str = r#"
local total = 0
for i = 1, 100 do total = total + approve({step = i}).ok end
return total
"#;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    moonjail::worker::run_if_worker();
    let n: usize = std::env::var("MOONJAIL_RESUME_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!("in process");
    measure(n, Sandbox::builder);
    let capabilities = moonjail::worker::probe();
    let allow_missing: moonjail::worker::LayerSet = capabilities
        .layers
        .iter()
        .filter(|(_, a)| !a.is_usable())
        .map(|(layer, _)| *layer)
        .collect();
    let isolated = move || {
        let config = ProcessConfig::builder()
            .pool_size(1)
            .max_runs(None)
            .allow_missing(allow_missing)
            .build()
            .expect("a valid process config");
        Sandbox::builder().isolation(Isolation::Process(config))
    };
    println!("isolated (one worker per sandbox)");
    measure(n, isolated);
}

fn measure(n: usize, builder: impl Fn() -> SandboxBuilder) {
    let live = builder()
        .tool("approve", |_| Ok(json!({"ok": 1})))
        .build()
        .expect("a sandbox");
    let deferred = builder().defer_tool("approve").build().expect("a sandbox");
    let opts = RunOptions::default();
    let (mut plain, mut resumed, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let out = live.run_with(SCRIPT, &json!(null), &opts);
        plain.push(t.elapsed());
        assert_eq!(out.result.expect("ok"), json!(100));

        let t = Instant::now();
        let mut run = deferred.start(SCRIPT, &json!(null), &opts);
        first.push(t.elapsed());
        let outcome = loop {
            match run {
                Run::Finished(outcome) => break outcome,
                Run::Suspended(s) => run = s.resume(Ok(json!({"ok": 1}))),
            }
        };
        resumed.push(t.elapsed());
        assert_eq!(outcome.result.expect("ok"), json!(100));
    }
    let (plain, resumed, first) = (median(plain), median(resumed), median(first));
    let per_call = resumed.saturating_sub(plain) / CALLS;
    println!("runs per row: {n}, deferred calls per run: {CALLS}");
    println!("plain run_with, the tool answering live: {plain:?}");
    println!("start until the first suspension:        {first:?}");
    println!("start, {CALLS} suspensions and resumes:    {resumed:?}");
    println!("one suspension + resume, in memory:      {per_call:?}");
}
