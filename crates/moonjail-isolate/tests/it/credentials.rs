//! The credentials and no_new_privs layers, observed from outside through
//! /proc/PID/status of every thread, and from inside.

use crate::common;

use common::{proc_field, require, run, Held};
use moonjail_isolate::Layer;

#[test]
fn every_thread_is_unprivileged_and_filtered_seen_from_outside() {
    if !require(
        "every_thread_is_unprivileged_and_filtered_seen_from_outside",
        &[Layer::Credentials, Layer::NoNewPrivs, Layer::Seccomp],
    ) {
        return;
    }
    if !common::capabilities().running_as_root {
        eprintln!("SKIP every_thread_is_unprivileged_and_filtered_seen_from_outside: not root, no ids to switch");
        return;
    }
    // `hold` starts a thread after lockdown and waits on stdin.
    let held = Held::start("hold", &[]);
    let worker = held.worker_pid();
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/task"))
        .expect("list tasks")
        .map(|entry| {
            entry
                .expect("task")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        tasks.len(),
        2,
        "main thread and the watchdog thread: {tasks:?}"
    );
    for task in &tasks {
        let status = format!("/proc/{worker}/task/{task}/status");
        let field = |key| proc_field(&status, key).unwrap_or_else(|| panic!("{key} in {status}"));
        assert_eq!(field("Uid"), "65534\t65534\t65534\t65534", "{status}");
        assert_eq!(field("Gid"), "65534\t65534\t65534\t65534", "{status}");
        assert_eq!(field("Groups"), "", "{status}");
        assert_eq!(field("CapEff"), "0000000000000000", "{status}");
        assert_eq!(field("CapPrm"), "0000000000000000", "{status}");
        assert_eq!(field("CapInh"), "0000000000000000", "{status}");
        assert_eq!(field("CapAmb"), "0000000000000000", "{status}");
        assert_eq!(field("CapBnd"), "0000000000000000", "{status}");
        assert_eq!(field("NoNewPrivs"), "1", "{status}");
        assert_eq!(field("Seccomp"), "2", "{status}");
    }
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
    assert!(
        transcript.iter().any(|l| l == "DONE joined=true"),
        "{transcript:?}"
    );
}

#[test]
fn ids_are_dropped_seen_from_inside() {
    if !require("ids_are_dropped_seen_from_inside", &[Layer::Credentials]) {
        return;
    }
    if !common::capabilities().running_as_root {
        eprintln!("SKIP ids_are_dropped_seen_from_inside: not root, no ids to switch");
        return;
    }
    // Seccomp would kill getresuid; this scenario looks with it disabled.
    let outcome = run("ids", &["--without", "seccomp"], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert_eq!(
        outcome.value("UIDS"),
        Some("65534 65534 65534"),
        "{outcome:#?}"
    );
    assert_eq!(
        outcome.value("GIDS"),
        Some("65534 65534 65534"),
        "{outcome:#?}"
    );
    if common::capabilities().running_as_root {
        assert_eq!(outcome.value("GROUPS"), Some("0"), "{outcome:#?}");
        // Control: without the credentials layer a root helper stays root.
        let control = run("ids", &["--without", "seccomp,credentials"], "");
        assert_eq!(control.value("UIDS"), Some("0 0 0"), "{control:#?}");
    }
}

/// The PID-namespace relay (the process the caller spawned, left behind by the fork) drops
/// the same ids and every capability as the worker, and is filtered, seen from outside.
#[test]
fn the_relay_is_unprivileged_and_filtered_seen_from_outside() {
    if !require(
        "the_relay_is_unprivileged_and_filtered_seen_from_outside",
        &[
            Layer::PidNamespace,
            Layer::Credentials,
            Layer::NoNewPrivs,
            Layer::Seccomp,
        ],
    ) {
        return;
    }
    let root = common::capabilities().running_as_root;
    let held = Held::start("hold", &[]);
    let relay = held.pid();
    assert_ne!(
        held.worker_pid(),
        relay,
        "no relay: the helper did not fork"
    );
    let status = format!("/proc/{relay}/status");
    let field = |key| proc_field(&status, key).unwrap_or_else(|| panic!("{key} in {status}"));
    if root {
        assert_eq!(field("Uid"), "65534\t65534\t65534\t65534", "{status}");
        assert_eq!(field("Gid"), "65534\t65534\t65534\t65534", "{status}");
        assert_eq!(field("Groups"), "", "{status}");
    }
    for key in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(field(key), "0000000000000000", "{key} of the relay");
    }
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("Seccomp"), "2", "{status}");
    // Still a working relay: the worker's exit status comes through.
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
    // The report says what the relay holds, with and without the credentials layer.
    let with = run("report", &[], "");
    let detail = with.value("REPORT pid-namespace").unwrap_or_default();
    assert!(detail.contains("with the worker's credentials"), "{detail}");
    let without = run("report", &["--without", "credentials"], "");
    let detail = without.value("REPORT pid-namespace").unwrap_or_default();
    assert!(detail.contains("keeping its credentials"), "{detail}");
}
