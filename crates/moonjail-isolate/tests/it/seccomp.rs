//! The seccomp layer, observed: forbidden calls kill the locked-down child with SIGSYS;
//! `clone3`, path-resolving `stat` calls, `getcpu` and `prctl(PR_SET_VMA)` fail with
//! ENOSYS; other ABIs are killed; every thread carries the filter; and a normal workload
//! still runs.

use crate::common;

use common::{require, run, Held, Outcome};
use moonjail_isolate::Layer;

/// Runs `scenario` under full lockdown and asserts it died by SIGSYS right at the attempt.
fn assert_killed(scenario: &str, args: &[&str]) -> Outcome {
    let outcome = run(scenario, args, "");
    assert!(
        outcome.locked(),
        "{scenario}: lockdown failed: {outcome:#?}"
    );
    assert!(
        outcome.value("ATTEMPT").is_some(),
        "{scenario}: never attempted: {outcome:#?}"
    );
    assert_eq!(
        outcome.value("SURVIVED"),
        None,
        "{scenario}: the call returned: {outcome:#?}"
    );
    assert_eq!(
        outcome.signal(),
        Some(libc::SIGSYS),
        "{scenario}: expected death by SIGSYS: {outcome:#?}"
    );
    outcome
}

#[test]
fn process_creation_is_killed() {
    if !require("process_creation_is_killed", &[Layer::Seccomp]) {
        return;
    }
    for scenario in ["fork", "clone-process", "clone-thread-newnet"] {
        assert_killed(scenario, &[]);
    }
    if common::is_x86_64() {
        assert_killed("raw-fork", &[]);
        assert_killed("vfork", &[]);
    }
}

#[test]
fn exec_is_killed() {
    if !require("exec_is_killed", &[Layer::Seccomp]) {
        return;
    }
    assert_killed("execve", &[]);
    assert_killed("execveat", &[]);
    // Without the PID namespace relay: the helper itself is the worker and dies directly.
    assert_killed("execve", &["--without", "pid-namespace"]);
}

#[test]
fn network_calls_are_killed() {
    if !require("network_calls_are_killed", &[Layer::Seccomp]) {
        return;
    }
    for scenario in [
        "socket",
        "socket-unix",
        "connect",
        "bind",
        "listen",
        "accept",
        "accept4",
    ] {
        assert_killed(scenario, &[]);
    }
}

#[test]
fn opening_files_is_killed() {
    if !require("opening_files_is_killed", &[Layer::Seccomp]) {
        return;
    }
    assert_killed("openat", &[]);
    assert_killed("openat2", &[]);
    if common::is_x86_64() {
        assert_killed("open", &[]);
    }
}

#[test]
fn ptrace_signals_and_namespace_calls_are_killed() {
    if !require(
        "ptrace_signals_and_namespace_calls_are_killed",
        &[Layer::Seccomp],
    ) {
        return;
    }
    for scenario in ["ptrace", "kill", "tgkill-other", "mount", "unshare"] {
        assert_killed(scenario, &[]);
    }
}

#[test]
fn executable_memory_is_killed() {
    if !require("executable_memory_is_killed", &[Layer::Seccomp]) {
        return;
    }
    let outcome = assert_killed("mprotect-exec", &[]);
    assert_eq!(
        outcome.value("MMAP-RW"),
        Some("ok=true"),
        "plain mmap allowed"
    );
    assert_killed("mmap-exec", &[]);
}

#[test]
fn x32_system_calls_are_killed() {
    if !common::is_x86_64() {
        eprintln!("SKIP x32_system_calls_are_killed: not x86_64");
        return;
    }
    if !require("x32_system_calls_are_killed", &[Layer::Seccomp]) {
        return;
    }
    // Control: without seccomp this kernel just refuses the x32 call.
    let control = run("x32", &["--without", "seccomp"], "");
    assert!(control.value("SURVIVED").is_some(), "{control:#?}");
    assert_killed("x32", &[]);
}

#[test]
fn ia32_system_calls_are_killed() {
    if !common::is_x86_64() {
        eprintln!("SKIP ia32_system_calls_are_killed: not x86_64");
        return;
    }
    if !require("ia32_system_calls_are_killed", &[Layer::Seccomp]) {
        return;
    }
    // Control: the same `int 0x80` getpid without seccomp answers (if the kernel has IA32
    // emulation at all).
    let control = run("ia32", &["--without", "seccomp"], "");
    let pid_before: i64 = control
        .value("IA32-BEFORE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    if pid_before <= 0 {
        eprintln!(
            "SKIP ia32_system_calls_are_killed: no IA32 emulation in this kernel ({control:?})"
        );
        return;
    }
    assert!(control.value("SURVIVED").is_some(), "{control:#?}");
    assert_killed("ia32", &[]);
}

#[test]
fn errno_calls_fail_with_enosys() {
    if !require("errno_calls_fail_with_enosys", &[Layer::Seccomp]) {
        return;
    }
    let enosys = format!("rc=-1 errno={}", libc::ENOSYS);
    // `clone3` (glibc falls back to `clone`), a path-resolving `fstatat`; naming a mapping
    // (mimalloc's prctl(PR_SET_VMA) after each mmap) and mimalloc's NUMA query on a new
    // thread (`getcpu`), which fail instead of killing the worker.
    for (scenario, key) in [
        ("clone3", "CLONE3"),
        ("fstatat", "FSTATAT"),
        ("vma-name", "VMA-NAME"),
        ("getcpu", "GETCPU"),
    ] {
        let outcome = run(scenario, &[], "");
        assert_eq!(outcome.value(key), Some(enosys.as_str()), "{outcome:#?}");
        assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    }
    // Controls: without seccomp, getcpu answers, and clone3 with size 0 reaches the
    // kernel (EINVAL).
    let control = run("getcpu", &["--without", "seccomp"], "");
    assert!(
        control
            .value("GETCPU")
            .is_some_and(|v| v.starts_with("rc=0 ")),
        "{control:#?}"
    );
    let control = run("clone3", &["--without", "seccomp"], "");
    let einval = format!("rc=-1 errno={}", libc::EINVAL);
    assert_eq!(
        control.value("CLONE3"),
        Some(einval.as_str()),
        "{control:#?}"
    );
}

/// The errno program's `prctl(PR_SET_VMA)` rule opens nothing else: any other option is
/// still killed by the allowlist, and PR_SET_VMA with junk in the upper half of the
/// register (which the kernel truncates away) is answered with ENOSYS, not run.
#[test]
fn prctl_other_than_naming_is_still_killed() {
    if !require("prctl_other_than_naming_is_still_killed", &[Layer::Seccomp]) {
        return;
    }
    assert_killed("prctl-set-dumpable", &[]);
    assert_killed("prctl-set-mm", &[]);
    let outcome = run("vma-name-high-bits", &[], "");
    assert_eq!(
        outcome.value("VMA-NAME-HIGH"),
        Some(format!("rc=-1 errno={}", libc::ENOSYS).as_str()),
        "{outcome:#?}"
    );
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
}

#[test]
fn allowed_workload_still_runs() {
    if !require("allowed_workload_still_runs", &[Layer::Seccomp]) {
        return;
    }
    let outcome = run("workload", &[], "hello\n");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert!(outcome.locked(), "{outcome:#?}");
    assert!(
        outcome.value("MEMORY").is_some_and(|v| v.starts_with("ok")),
        "{outcome:#?}"
    );
    assert_eq!(outcome.value("THREAD"), Some("ok sum=500500"));
    assert_eq!(outcome.value("THREADS"), Some("joined=true total=4000"));
    assert_eq!(
        outcome.value("CLOCK"),
        Some("ok unix=true cpu_rc=0 random=16 map=1")
    );
    assert_eq!(outcome.value("SIGNAL"), Some("rc=0 handled=true"));
    assert_eq!(
        outcome.value("CHANNEL"),
        Some("sent=4 received=4 payload=ping")
    );
    assert_eq!(outcome.value("ECHO"), Some("hello"));
    assert!(outcome
        .value("WORKLOAD")
        .is_some_and(|v| v.starts_with("ok")));
}

#[test]
fn every_thread_is_filtered_including_ones_started_before() {
    if !require(
        "every_thread_is_filtered_including_ones_started_before",
        &[Layer::Seccomp],
    ) {
        return;
    }
    // `tsync` starts a thread, then installs the filter from the main thread only.
    let held = Held::start("tsync", &[]);
    let pid = held.pid();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list tasks")
        .map(|entry| entry.expect("task").file_name())
        .collect();
    assert_eq!(tasks.len(), 2, "main thread and the early thread");
    for task in tasks {
        let status = format!("/proc/{pid}/task/{}/status", task.to_string_lossy());
        assert_eq!(
            common::proc_field(&status, "Seccomp").as_deref(),
            Some("2"),
            "{status}"
        );
        assert_eq!(
            common::proc_field(&status, "NoNewPrivs").as_deref(),
            Some("1"),
            "{status}"
        );
    }
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
    assert!(transcript.iter().any(|l| l == "DONE joined=true"));
}
