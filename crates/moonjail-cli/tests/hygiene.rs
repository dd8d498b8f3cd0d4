//! `moonjail run --isolate` leaves no process behind, not even a zombie, with a caller that
//! is a child subreaper (as a service running as PID 1 in a container is): every worker
//! and relay it forked is reaped before it exits (issue 9).
//!
//! One test in this binary: it makes the whole test process a subreaper.

use std::process::Command;
use std::time::{Duration, Instant};

const MOONJAIL: &str = env!("CARGO_BIN_EXE_moonjail");

/// The children of this process (every thread's), with their state letter.
fn children() -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.trim_start().chars().next())
                .unwrap_or('?');
            found.push((pid, state));
        }
    }
    found
}

/// `--allow-missing` for the layers this machine lacks, from `doctor --json`.
fn missing_layers() -> String {
    let out = Command::new(MOONJAIL)
        .args(["doctor", "--json"])
        .env("MOONJAIL_WORKER", MOONJAIL)
        .output()
        .expect("run moonjail doctor");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    doc["layers"]
        .as_array()
        .expect("a layer list")
        .iter()
        .filter(|l| l["usable"] == serde_json::Value::Bool(false))
        .filter_map(|l| l["layer"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn isolated_runs_leave_no_zombie_with_a_subreaper_caller() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointer.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    let missing = missing_layers();
    for (code, extra, status) in [
        ("return 1", &[][..], Some(0)),
        ("return 1", &[][..], Some(0)),
        ("while true do end", &["--timeout", "200ms"][..], Some(1)),
        ("return #('x'):rep(2^40)", &[][..], Some(1)),
    ] {
        let mut args = vec!["run", "--isolate", "-e", code];
        if !missing.is_empty() {
            args.extend(["--allow-missing", &missing]);
        }
        args.extend(extra);
        let out = Command::new(MOONJAIL)
            .args(&args)
            .env("MOONJAIL_WORKER", MOONJAIL)
            .output()
            .expect("run moonjail");
        assert_eq!(
            out.status.code(),
            status,
            "{code}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let until = Instant::now() + Duration::from_secs(10);
    let mut left = children();
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        left = children();
    }
    assert!(
        left.is_empty(),
        "processes left with this subreaper after `moonjail run --isolate` exited \
         (pid, state): {left:?}"
    );
}
