//! What journaling costs on a tool-heavy run: 1000 calls of a small in-process tool per
//! run, plain (`run_with`) against journaled (`run_journaled`) to a file (written and
//! flushed per line or in batches, fsynced at the end or not) and to `io::sink()`, and
//! what a replay costs.
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
        .deterministic(Some(moonjail::Determinism {
            timestamp: 0,
            seed: 1,
        }))
        .build()
        .expect("valid");
    // One variant alone (`plain`, `sink`, `file`, `batch`, `file-nosync`, `batch-nosync`),
    // for a profiler: MOONJAIL_JOURNAL_ONLY.
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
                "file" | "batch" | "file-nosync" | "batch-nosync" => {
                    let flush = if only.starts_with("batch") {
                        Flush::Batch
                    } else {
                        Flush::Line
                    };
                    let _ = std::fs::remove_file(&path);
                    let journal = JournalWriter::create(&path).expect("a journal file");
                    let journal = journal.flush(flush).fsync_end(!only.ends_with("nosync"));
                    sandbox
                        .run_journaled(SCRIPT, &Json::Null, &opts, journal)
                        .expect("journaled")
                }
                other => panic!(
                    "MOONJAIL_JOURNAL_ONLY={other}: plain, sink, file, batch, file-nosync or batch-nosync"
                ),
            };
            assert!(out.is_ok());
        }
        let _ = std::fs::remove_file(&path);
        return;
    }
    // Each journal is a new file, as `run --journal NEW` makes: removed (untimed) before
    // each timed run. Truncating the previous one instead costs far more on ext4, which
    // starts writing a file out when it is truncated and written again (auto_da_alloc).
    let path = std::env::temp_dir().join(format!("journal-overhead-{}.jsonl", std::process::id()));
    let opts = RunOptions::default();
    // A journaled run into a new file at `path`.
    let to_file = |flush: Flush, sync_end: bool| {
        let journal = JournalWriter::create(&path).expect("a journal file");
        let journal = journal.flush(flush).fsync_end(sync_end);
        let out = sandbox.run_journaled(SCRIPT, &Json::Null, &opts, journal);
        assert!(out.expect("journaled").is_ok());
    };
    // A journal to replay, and to write alone (the file system's part, no run).
    let _ = std::fs::remove_file(&path);
    to_file(Flush::Line, true);
    let bytes = std::fs::read(&path).expect("the journal");
    type Variant<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let variants: Vec<Variant> = vec![
        (
            "plain run_with",
            Box::new(|| assert!(sandbox.run_with(SCRIPT, &Json::Null, &opts).is_ok())),
        ),
        (
            "with a 5 ms interrupt check",
            Box::new(|| assert!(checked.run_with(SCRIPT, &Json::Null, &opts).is_ok())),
        ),
        (
            "journaled to io::sink",
            Box::new(|| {
                let journal = JournalWriter::new(std::io::sink());
                let out = sandbox.run_journaled(SCRIPT, &Json::Null, &opts, journal);
                assert!(out.expect("journaled").is_ok());
            }),
        ),
        (
            "to a file, line, fsync",
            Box::new(|| to_file(Flush::Line, true)),
        ),
        (
            "to a file, batch, fsync",
            Box::new(|| to_file(Flush::Batch, true)),
        ),
        (
            "to a file, line, no fsync",
            Box::new(|| to_file(Flush::Line, false)),
        ),
        (
            "to a file, batch, no fsync",
            Box::new(|| to_file(Flush::Batch, false)),
        ),
        (
            "replay of that journal",
            Box::new(|| {
                let out = moonjail::replay(&bytes[..], &ReplayOptions::default());
                assert!(out.expect("replayed").is_ok());
            }),
        ),
        (
            "its file alone: 1 write",
            Box::new(|| {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&path).expect("a file");
                f.write_all(&bytes).expect("written");
            }),
        ),
    ];
    // Each round runs every variant once, starting one further along each time: no
    // variant always follows the same one (a replay or a file write leaves the caches
    // colder for whatever comes next).
    let mut samples = vec![Vec::with_capacity(n); variants.len()];
    for round in 0..n {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let _ = std::fs::remove_file(&path);
            let t = Instant::now();
            (variants[i].1)();
            samples[i].push(t.elapsed());
        }
    }
    let _ = std::fs::remove_file(&path);
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let plain = medians[0];
    let pct = |d: Duration| (d.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0;
    println!(
        "1000 tool calls per run, median of {n} runs; journal {} bytes",
        bytes.len()
    );
    for ((name, _), d) in variants.iter().zip(medians) {
        let vs = if d == plain && name.starts_with("plain") {
            String::new()
        } else {
            format!("  ({:+.1}%)", pct(d))
        };
        println!("{name:<27} {:>9.3} ms{vs}", d.as_secs_f64() * 1e3);
    }
}
