//! What journaling costs on a tool-heavy run: 1000 calls of a small in-process tool per
//! run, plain (`run_with`) against journaled (`run_journaled`) to a file (written and
//! flushed per line, fsynced at the end) and to `io::sink()`, and what a replay costs.
//! Medians of alternating runs. Run: cargo run --release -p moonjail --example
//! journal_overhead (`MOONJAIL_JOURNAL_N` sets the number of runs per row).
use std::time::{Duration, Instant};

use moonjail::{Flush, JournalWriter, ReplayOptions, RunOptions, Sandbox};
use serde_json::{json, Value as Json};

const SCRIPT: &str = r#"
local total = 0
for i = 1, 1000 do
  local r = kv.get({key = "item" .. i, shard = i % 7})
  total = total + r.value
end
return total
"#;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let n: usize = std::env::var("MOONJAIL_JOURNAL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let sandbox = Sandbox::builder()
        .tool("kv.get", |args| {
            let shard = args[0]["shard"].as_i64().unwrap_or(0);
            Ok(json!({"value": shard, "found": true}))
        })
        .tool_quota(moonjail::ToolQuota::default().per_run(None))
        .deterministic(Some(moonjail::Determinism {
            timestamp: 0,
            seed: 1,
        }))
        .build()
        .expect("valid");
    // What the journal's stop check alone costs: the same sandbox with an interrupt
    // check every 5 ms that never fires.
    let checked = Sandbox::builder()
        .tool("kv.get", |args| {
            let shard = args[0]["shard"].as_i64().unwrap_or(0);
            Ok(json!({"value": shard, "found": true}))
        })
        .tool_quota(moonjail::ToolQuota::default().per_run(None))
        .interrupt_check(Duration::from_millis(5), || false)
        .build()
        .expect("valid");
    // One variant alone (`plain`, `sink`, `file`, `batch`), for a profiler: MOONJAIL_JOURNAL_ONLY.
    if let Ok(only) = std::env::var("MOONJAIL_JOURNAL_ONLY") {
        let opts = RunOptions::default();
        let path = std::env::temp_dir().join(format!("journal-only-{}.jsonl", std::process::id()));
        for _ in 0..n {
            let out = match only.as_str() {
                "plain" => sandbox.run_with(SCRIPT, &Json::Null, &opts),
                "sink" => sandbox
                    .run_journaled(
                        SCRIPT,
                        &Json::Null,
                        &opts,
                        JournalWriter::new(std::io::sink()),
                    )
                    .expect("journaled"),
                "file" | "batch" => {
                    let flush = if only == "batch" {
                        Flush::Batch
                    } else {
                        Flush::Line
                    };
                    let journal = JournalWriter::create(&path).expect("a journal file");
                    sandbox
                        .run_journaled(SCRIPT, &Json::Null, &opts, journal.flush(flush))
                        .expect("journaled")
                }
                other => panic!("MOONJAIL_JOURNAL_ONLY={other}: plain, sink, file or batch"),
            };
            assert!(out.is_ok());
        }
        let _ = std::fs::remove_file(&path);
        return;
    }
    let path = std::env::temp_dir().join(format!("journal-overhead-{}.jsonl", std::process::id()));
    let opts = RunOptions::default();
    let (mut plain, mut file, mut sink, mut replay) = (vec![], vec![], vec![], vec![]);
    let mut batch = vec![];
    let mut check = vec![];
    let mut size = 0;
    for _ in 0..n {
        let t = Instant::now();
        assert!(sandbox.run_with(SCRIPT, &Json::Null, &opts).is_ok());
        plain.push(t.elapsed());

        let t = Instant::now();
        assert!(checked.run_with(SCRIPT, &Json::Null, &opts).is_ok());
        check.push(t.elapsed());

        let t = Instant::now();
        let journal = JournalWriter::create(&path).expect("a journal file");
        let out = sandbox.run_journaled(SCRIPT, &Json::Null, &opts, journal);
        assert!(out.expect("journaled").is_ok());
        file.push(t.elapsed());

        let t = Instant::now();
        let journal = JournalWriter::create(&path).expect("a journal file");
        let out = sandbox.run_journaled(SCRIPT, &Json::Null, &opts, journal.flush(Flush::Batch));
        assert!(out.expect("journaled").is_ok());
        batch.push(t.elapsed());

        let t = Instant::now();
        let journal = JournalWriter::new(std::io::sink());
        let out = sandbox.run_journaled(SCRIPT, &Json::Null, &opts, journal);
        assert!(out.expect("journaled").is_ok());
        sink.push(t.elapsed());

        let bytes = std::fs::read(&path).expect("the journal");
        size = bytes.len();
        let t = Instant::now();
        let out = moonjail::replay(&bytes[..], &ReplayOptions::default()).expect("replayed");
        assert!(out.is_ok());
        replay.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    let plain = median(plain);
    let pct = |d: Duration| (d.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0;
    println!("1000 tool calls per run, median of {n} runs; journal {size} bytes");
    println!(
        "plain run_with              {:>9.3} ms",
        plain.as_secs_f64() * 1e3
    );
    for (name, d) in [
        ("with a 5 ms interrupt check", median(check)),
        ("journaled to io::sink", median(sink)),
        ("journaled to a file (fsync)", median(file)),
        ("  the same, Flush::Batch", median(batch)),
        ("replay of that journal", median(replay)),
    ] {
        println!(
            "{name:<27} {:>9.3} ms  ({:+.1}%)",
            d.as_secs_f64() * 1e3,
            pct(d)
        );
    }
}
