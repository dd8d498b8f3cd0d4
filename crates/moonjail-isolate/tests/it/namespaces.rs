//! The namespace layers, observed from inside (no network) and from outside (/proc/PID/ns),
//! and the PID namespace relay.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{namespace, require, run, Held};
use moonjail_isolate::Layer;

#[test]
fn network_namespace_has_no_interface_up() {
    if !require(
        "network_namespace_has_no_interface_up",
        &[Layer::NetworkNamespace],
    ) {
        return;
    }
    let outcome = run("network", &["--without", "seccomp,landlock"], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert_eq!(outcome.value("INTERFACES"), Some("lo"), "{outcome:#?}");
    assert_eq!(outcome.value("LO-UP"), Some("false"), "{outcome:#?}");
    let unreachable = format!("errno={}", libc::ENETUNREACH);
    assert_eq!(
        outcome.value("CONNECT-LOOPBACK"),
        Some(unreachable.as_str()),
        "{outcome:#?}"
    );
}

#[test]
fn without_network_namespace_loopback_is_reachable() {
    // The control for the test above: the same checks see the host's network.
    let outcome = run(
        "network",
        &["--without", "seccomp,landlock,network-namespace"],
        "",
    );
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    if outcome.value("LO-UP") != Some("true") {
        eprintln!("SKIP without_network_namespace_loopback_is_reachable: the host's lo is down");
        return;
    }
    assert_eq!(
        outcome.value("CONNECT-LOOPBACK"),
        Some("ok"),
        "{outcome:#?}"
    );
}

#[test]
fn namespaces_differ_from_the_parents_seen_from_outside() {
    let layers = [
        Layer::NetworkNamespace,
        Layer::MountNamespace,
        Layer::IpcNamespace,
        Layer::UtsNamespace,
        Layer::PidNamespace,
    ];
    if !require(
        "namespaces_differ_from_the_parents_seen_from_outside",
        &layers,
    ) {
        return;
    }
    let held = Held::start("hold", &[]);
    let worker = held.worker_pid().to_string();
    assert_ne!(
        worker,
        held.pid().to_string(),
        "the worker is the relay's child"
    );
    for kind in ["net", "mnt", "ipc", "uts", "pid"] {
        assert_ne!(
            namespace(&worker, kind),
            namespace("self", kind),
            "{kind} namespace"
        );
    }
    if common::capabilities().running_as_root {
        // Root switches ids instead of entering a user namespace.
        assert_eq!(namespace(&worker, "user"), namespace("self", "user"));
    } else {
        assert_ne!(namespace(&worker, "user"), namespace("self", "user"));
    }
    // PID 1 inside, its host pid outside.
    let nspid = common::proc_field(&format!("/proc/{worker}/status"), "NSpid");
    assert_eq!(nspid, Some(format!("{worker}\t1")));
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
}

#[test]
fn unprivileged_caller_gets_a_user_namespace() {
    // As root the helper first becomes nobody; otherwise it already is unprivileged.
    let as_nobody: &[&str] = if common::capabilities().running_as_root {
        &["--as-nobody"]
    } else {
        &[]
    };
    let outcome = run("report", as_nobody, "");
    if let Some(error) = outcome.value("LOCKDOWN-ERROR") {
        if error.contains("user-namespace") {
            eprintln!("SKIP unprivileged_caller_gets_a_user_namespace: {error}");
            return;
        }
    }
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert!(
        outcome
            .value("REPORT user-namespace")
            .is_some_and(|v| v.starts_with("applied")),
        "{outcome:#?}"
    );
    // From outside: a different user namespace, and no capability in it.
    let held = Held::start("hold", as_nobody);
    let worker = held.worker_pid().to_string();
    assert_ne!(namespace(&worker, "user"), namespace("self", "user"));
    let status = format!("/proc/{worker}/status");
    assert_eq!(
        common::proc_field(&status, "CapEff").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(
        common::proc_field(&status, "CapPrm").as_deref(),
        Some("0000000000000000")
    );
    assert_eq!(common::proc_field(&status, "Seccomp").as_deref(), Some("2"));
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
}

#[test]
fn unsharing_the_pid_namespace_alone_forbids_threads() {
    // Why PidNamespace::Fork exists: after unshare(CLONE_NEWPID) and no fork, the kernel
    // refuses to create threads (EINVAL).
    let outcome = run("unshare-pid-then-thread", &["--without", "all"], "");
    if outcome.value("UNSHARE-PID") != Some("rc=0") {
        eprintln!("SKIP unsharing_the_pid_namespace_alone_forbids_threads: {outcome:?}");
        return;
    }
    let einval = format!("error errno={}", libc::EINVAL);
    assert_eq!(
        outcome.value("THREAD"),
        Some(einval.as_str()),
        "{outcome:#?}"
    );
}

#[test]
fn relay_reports_the_workers_exit_code_and_signal() {
    if !require(
        "relay_reports_the_workers_exit_code_and_signal",
        &[Layer::PidNamespace, Layer::Seccomp],
    ) {
        return;
    }
    let outcome = run("exit-code", &[], "");
    assert!(outcome.locked(), "{outcome:#?}");
    assert_eq!(outcome.status.code(), Some(7), "{outcome:#?}");
    // A signal other than SIGSYS proves the relay re-raises what killed the worker (and is
    // not itself killed by its own filter).
    let outcome = run("segv", &[], "");
    assert!(outcome.locked(), "{outcome:#?}");
    assert_eq!(outcome.status.signal(), Some(libc::SIGSEGV), "{outcome:#?}");
}

#[test]
fn killing_the_relay_kills_the_worker() {
    if !require("killing_the_relay_kills_the_worker", &[Layer::PidNamespace]) {
        return;
    }
    let mut held = Held::start("hold", &[]);
    let relay = held.pid();
    let worker = held.worker_pid();
    assert_ne!(worker, relay);
    // The relay is confined too: its own filter, no_new_privs, one descriptor.
    let relay_status = format!("/proc/{relay}/status");
    assert_eq!(
        common::proc_field(&relay_status, "Seccomp").as_deref(),
        Some("2")
    );
    assert_eq!(
        common::proc_field(&relay_status, "NoNewPrivs").as_deref(),
        Some("1")
    );
    let relay_fds = std::fs::read_dir(format!("/proc/{relay}/fd"))
        .expect("list relay fds")
        .count();
    assert_eq!(relay_fds, 1, "the relay keeps only its pipe to the worker");

    held.child.kill().expect("kill the relay");
    let _ = held.child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = common::proc_field(&format!("/proc/{worker}/status"), "State");
        match state {
            None => break,
            Some(state) if state.starts_with('Z') => break,
            Some(state) => {
                assert!(
                    Instant::now() < deadline,
                    "worker {worker} still alive ({state}) after its relay died"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
