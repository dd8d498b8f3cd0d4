//! Soak test of isolated mode: thousands of runs through one warm pool, from two threads,
//! mixing good scripts, script errors, limit violations, forbidden system calls and
//! crashes. Afterwards the supervisor must have leaked nothing: no child process (zombie
//! or not), no file descriptor, no unbounded memory.
//!
//! `MOONJAIL_SOAK_RUNS` changes the number of runs (default 2000: about 10 s for a debug
//! build on two cores).

use std::time::{Duration, Instant};

use moonjail::worker::LayerSet;
use moonjail::{ErrorKind, Isolation, ProcessConfig, Sandbox, WorkerPath};
use serde_json::json;

const WORKER: &str = env!("CARGO_BIN_EXE_moonjail-worker");

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Processes whose parent is this process: `(pid, state)`.
fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            found.push((pid, state));
        }
    }
    found
}

fn unusable_layers() -> LayerSet {
    moonjail::worker::probe()
        .layers
        .iter()
        .filter(|(_, availability)| !availability.is_usable())
        .map(|(layer, _)| *layer)
        .collect()
}

fn sandbox() -> Sandbox {
    let config = ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable_layers())
        .pool_size(2)
        .prespawn(2)
        .max_runs(Some(100))
        .test_hooks(true)
        .build()
        .unwrap();
    Sandbox::builder()
        .timeout(Duration::from_millis(100))
        .memory_limit(8 << 20)
        .output_limit(16 << 10)
        .isolation(Isolation::Process(config))
        .build()
        .unwrap()
}

/// One run of the mix; panics if the outcome is not the expected one.
fn one(sb: &Sandbox, i: usize) {
    let expect = |source: &str, kind: Option<ErrorKind>| {
        let out = sb.run(source, &json!({"i": i}));
        match (kind, &out.result) {
            (None, Ok(_)) => {}
            (Some(kind), Err(e)) if e.kind == kind => {}
            _ => panic!("run {i}: {source}: expected {kind:?}, got {:?}", out.result),
        }
    };
    match i % 20 {
        0..=9 => {
            let out = sb.run(
                "local input = ... local t = {} for k = 1, 50 do t[k] = k * input.i end \
                 print(#t) return {sum = t[50], s = ('x'):rep(10)}",
                &json!({"i": i}),
            );
            assert_eq!(
                out.result,
                Ok(json!({"sum": 50 * i, "s": "xxxxxxxxxx"})),
                "run {i}"
            );
            assert_eq!(out.output, "50\n");
        }
        10 => expect("error('a plain error')", Some(ErrorKind::Runtime)),
        11 => expect("return 1 +", Some(ErrorKind::Syntax)),
        12 => expect(
            r#"local s = "x" while true do s = s .. s end"#,
            Some(ErrorKind::MemoryLimit),
        ),
        13 => expect(
            r#"while true do print(("x"):rep(1000)) end"#,
            Some(ErrorKind::OutputLimit),
        ),
        14 if i % 100 == 14 => expect(
            "while true do pcall(function() while true do end end) end",
            Some(ErrorKind::Timeout),
        ),
        15 if i % 40 == 15 => {
            let err = sb.probe_worker("segv").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Killed, "run {i}: {err:?}");
        }
        16 if i % 40 == 16 => {
            let err = sb.probe_worker("socket").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Killed, "run {i}: {err:?}");
        }
        17 => expect(
            "setmetatable({}, {__gc = function() end})",
            Some(ErrorKind::Forbidden),
        ),
        _ => expect("return select('#', ...)", None),
    }
}

#[test]
fn thousands_of_isolated_runs_leak_nothing() {
    let runs: usize = std::env::var("MOONJAIL_SOAK_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);

    // Warm the process up (allocator, probe, the thread machinery) before measuring.
    drop(sandbox());
    let fds_before = fd_count();
    let rss_before = rss_kib();
    assert!(children().is_empty(), "children before: {:?}", children());

    let started = Instant::now();
    let sb = sandbox();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let sb = sb.clone();
            std::thread::spawn(move || {
                for i in (t..runs).step_by(2) {
                    one(&sb, i);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a soak thread failed");
    }
    let elapsed = started.elapsed();
    let rss_during = rss_kib();
    drop(sb);
    eprintln!(
        "soak: {runs} isolated runs in {elapsed:?} ({:?} per run); RSS {rss_before} KiB \
         before, {rss_during} KiB at the end, fds {fds_before} before, {} after",
        elapsed / runs as u32,
        fd_count()
    );

    // Every worker (relay) was reaped: no child left, zombie or not.
    let until = Instant::now() + Duration::from_secs(5);
    while !children().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(children(), [], "child processes left behind");
    assert_eq!(fd_count(), fds_before, "file descriptors leaked");
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
}
