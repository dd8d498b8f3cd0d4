//! Durable runs through the command line: `run --journal FILE` records a run, `replay
//! FILE` re-executes it without running a tool, in process and with `--isolate`.

use crate::support::*;

/// A command tool answering a random number, and appending its arguments to calls.log
/// on every call: a side effect a replay must not repeat.
const RNG: &str = r#"read -r args
echo "$args" >> calls.log
n=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
printf '{"n": %s, "args": %s}\n' "$n" "$args"
"#;

const SCRIPT: &str = r#"
local a = rng.next("a")
local b = rng.next({step = 2})
print("sum", a.n + b.n, "roll", math.random(1, 6), "at", os.time())
return {a = a, b = b}
"#;

fn calls(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn setup() -> TempDir {
    let dir = TempDir::new();
    dir.write("rng.sh", RNG);
    dir.write("script.lua", SCRIPT);
    dir.write("edited.lua", SCRIPT.replace("{step = 2}", "{step = 3}"));
    dir
}

/// Records `script.lua` (in process) into `run.jsonl`.
fn record(dir: &TempDir) {
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "script.lua",
            "--tool",
            "rng.next=sh rng.sh",
            "--journal",
            "run.jsonl",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn journal_a_run_replays_to_the_same_document_without_running_the_tool() {
    let flags = isolate_flags();
    for isolate in [false, true] {
        let dir = setup();
        let run = with_isolation(
            &[
                "run",
                "script.lua",
                "--tool",
                "rng.next=sh rng.sh",
                "--journal",
                "run.jsonl",
                "--json",
            ],
            isolate,
            &flags,
        );
        let recorded = moonjail(dir.path(), &run, None);
        assert_eq!(recorded.code, Some(0), "{recorded:?}");
        assert_eq!(calls(&dir), 2);
        let replay = with_isolation(&["replay", "run.jsonl", "--json"], isolate, &flags);
        let replayed = moonjail(dir.path(), &replay, None);
        assert_eq!(replayed.code, Some(0), "{replayed:?}");
        assert_eq!(essence(replayed.json()), essence(recorded.json()));
        // The tool did not run again.
        assert_eq!(calls(&dir), 2, "isolate: {isolate}");
        // Without --json: the script's output and the result, as `run` prints them.
        let human = moonjail(dir.path(), &["replay", "run.jsonl"], None);
        assert_eq!(human.code, Some(0), "{human:?}");
        let printed = recorded.json()["output"].as_str().unwrap().to_string();
        assert!(human.stdout.starts_with(&printed), "{human:?}");
        assert_eq!(calls(&dir), 2);
    }
}

#[test]
fn journal_an_edited_script_reports_replay_divergence_at_its_step() {
    let flags = isolate_flags();
    for isolate in [false, true] {
        let dir = setup();
        record(&dir);
        let replay = with_isolation(
            &["replay", "run.jsonl", "--source", "edited.lua", "--json"],
            isolate,
            &flags,
        );
        let out = moonjail(dir.path(), &replay, None);
        assert_eq!(out.code, Some(1), "{out:?}");
        let doc = out.json();
        assert_eq!(doc["ok"], false);
        // The line of the call that diverged.
        assert_eq!(doc["error"]["line"], 3, "{doc}");
        assert_eq!(kind(&doc), "replay_divergence", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("step 2 (tool call 2)"), "{message}");
        assert!(
            message.contains(r#"records `rng.next({"step":2})`"#),
            "{message}"
        );
        assert!(
            message.contains(r#"asked `rng.next({"step":3})`"#),
            "{message}"
        );
        assert_eq!(calls(&dir), 2);
        // Human mode: the kind and the message on stderr.
        let out = moonjail(
            dir.path(),
            &["replay", "run.jsonl", "--source", "edited.lua"],
            None,
        );
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("replay_divergence error"), "{out:?}");
    }
}

#[test]
fn journal_bad_journals_are_misuse_never_a_panic() {
    let dir = setup();
    record(&dir);
    let journal = std::fs::read(dir.path().join("run.jsonl")).unwrap();
    dir.write("truncated.jsonl", &journal[..journal.len() - 20]);
    dir.write("corrupt.jsonl", b"\x00\xffnot a journal\n");
    dir.write("empty.jsonl", b"");
    let cases = [
        ("truncated.jsonl", "not a valid journal"),
        ("corrupt.jsonl", "line 1: not JSON"),
        ("empty.jsonl", "the journal is empty"),
        ("missing.jsonl", "reading missing.jsonl"),
    ];
    for (file, fragment) in cases {
        let out = moonjail(dir.path(), &["replay", file], None);
        assert_eq!(out.code, Some(2), "{file}: {out:?}");
        assert!(out.stderr.contains(fragment), "{file}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{file}: {out:?}");
        let out = moonjail(dir.path(), &["replay", file, "--json"], None);
        assert_eq!(out.code, Some(2), "{file}: {out:?}");
        let doc = out.json();
        assert_eq!(kind(&doc), "input", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains(fragment), "{file}: {message}");
    }
    // Over the replay's own limit.
    let out = moonjail(
        dir.path(),
        &["replay", "run.jsonl", "--journal-limit", "100B"],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("larger than the limit of 100 bytes"),
        "{out:?}"
    );
}

#[test]
fn journal_the_journal_limit_stops_the_run() {
    let flags = isolate_flags();
    for isolate in [false, true] {
        let dir = setup();
        let run = with_isolation(
            &[
                "run",
                "-e",
                "for i = 1, 100 do rng.next(string.rep('x', 200)) end",
                "--tool",
                "rng.next=sh rng.sh",
                "--journal",
                "run.jsonl",
                "--journal-limit",
                "2KiB",
            ],
            isolate,
            &flags,
        );
        let out = moonjail(dir.path(), &run, None);
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr.contains("journal limit of 2048 bytes"),
            "{out:?}"
        );
        let size = std::fs::metadata(dir.path().join("run.jsonl"))
            .unwrap()
            .len();
        assert!(size <= 2048, "{size}");
        // The tool stopped running with the journal: far fewer than 100 calls.
        assert!(calls(&dir) < 10, "{}", calls(&dir));
    }
}

#[test]
fn journal_flags_are_documented_in_help() {
    let out = mj(&["replay", "--help"]);
    assert_eq!(out.code, Some(0));
    for fragment in ["--source", "replay_divergence", "run --journal"] {
        assert!(out.stdout.contains(fragment), "{fragment}: {}", out.stdout);
    }
    let out = mj(&["run", "--help"]);
    assert!(out.stdout.contains("--journal <FILE>"), "{}", out.stdout);
    assert!(out.stdout.contains("--journal-limit"), "{}", out.stdout);
    assert!(
        out.stdout.contains("--journal-flush <WHEN>"),
        "{}",
        out.stdout
    );
}

#[test]
fn journal_a_batched_journal_replays_the_same() {
    let dir = setup();
    let recorded = moonjail(
        dir.path(),
        &[
            "run",
            "script.lua",
            "--tool",
            "rng.next=sh rng.sh",
            "--journal",
            "run.jsonl",
            "--journal-flush",
            "batch",
            "--json",
        ],
        None,
    );
    assert_eq!(recorded.code, Some(0), "{recorded:?}");
    let replayed = moonjail(dir.path(), &["replay", "run.jsonl", "--json"], None);
    assert_eq!(replayed.code, Some(0), "{replayed:?}");
    assert_eq!(essence(replayed.json()), essence(recorded.json()));
    assert_eq!(calls(&dir), 2);
    // Without a journal, the flag is misuse.
    let out = moonjail(
        dir.path(),
        &["run", "script.lua", "--journal-flush", "batch"],
        None,
    );
    assert_misuse(&out, "--journal");
}

#[test]
fn journal_a_journal_without_limits_replays_only_when_trusted() {
    // Recorded with no timeout and no memory limit: its limits are its own claim, and a
    // crafted journal could loop for ever under them. Refused with exit status 2 and the
    // flag to pass; replayed with --trust-limits.
    let dir = setup();
    let out = moonjail(
        dir.path(),
        &[
            "run",
            "-e",
            "return 7",
            "--timeout",
            "none",
            "--memory",
            "none",
            "--journal",
            "open.jsonl",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let refused = moonjail(dir.path(), &["replay", "open.jsonl"], None);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("timeout limit (none)"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("--trust-limits"), "{refused:?}");
    let trusted = moonjail(
        dir.path(),
        &["replay", "open.jsonl", "--trust-limits", "--json"],
        None,
    );
    assert_eq!(trusted.code, Some(0), "{trusted:?}");
    assert_eq!(trusted.json()["result"], 7);
}

/// The fsync calls `moonjail ARGS` makes in `dir`, seen by strace; `None` (said on
/// stderr) where strace cannot run here.
fn fsyncs(dir: &TempDir, args: &[&str]) -> Option<usize> {
    let probe = std::process::Command::new("strace").arg("-V").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no strace on this machine to count fsync calls");
        return None;
    }
    let mut cmd = std::process::Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=fsync,fdatasync,sync_file_range",
        "-o",
        "trace.txt",
    ])
    .arg(MOONJAIL)
    .args(args)
    .current_dir(dir.path())
    .env("MOONJAIL_WORKER", MOONJAIL);
    let out = output(&mut cmd);
    let trace = std::fs::read_to_string(dir.path().join("trace.txt")).unwrap_or_default();
    if trace.contains("PTRACE") || trace.contains("Operation not permitted") {
        eprintln!("skipped: strace cannot trace here: {trace}");
        return None;
    }
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        trace
            .lines()
            .filter(|l| l.contains("sync") && !l.contains("exited"))
            .count(),
    )
}

#[test]
fn journal_fsync_suspend_skips_the_end_lines_disk_flush_but_not_a_suspend_lines() {
    let dir = setup();
    dir.write(
        "pay.lua",
        "local q = rng.next('q') return payments.send({amount = q.n})",
    );
    let run = |script: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            script,
            "--tool",
            "rng.next=sh rng.sh",
            "--journal",
            "run.jsonl",
        ];
        args.extend_from_slice(extra);
        fsyncs(&dir, &args)
    };
    let Some(default) = run("script.lua", &[]) else {
        return;
    };
    assert!(
        default >= 1,
        "the end line is fsynced by default: {default}"
    );
    let flushed_only = run("script.lua", &["--journal-fsync", "suspend"]);
    assert_eq!(
        flushed_only,
        Some(0),
        "no fsync for a finished run's journal"
    );
    // The journal is whole all the same.
    let replayed = moonjail(dir.path(), &["replay", "run.jsonl", "--json"], None);
    assert_eq!(replayed.code, Some(0), "{replayed:?}");
    // A suspended run's journal is what resumes it: fsynced whatever the flag says.
    let suspended = run(
        "pay.lua",
        &[
            "--defer-tool",
            "payments.send",
            "--journal-fsync",
            "suspend",
        ],
    );
    assert!(suspended >= Some(1), "{suspended:?}");
    // Without a journal, the flag is misuse.
    let out = moonjail(
        dir.path(),
        &["run", "script.lua", "--journal-fsync", "suspend"],
        None,
    );
    assert_misuse(&out, "--journal");
}
