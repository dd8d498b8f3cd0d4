//! `moonjail run --isolate` and `moonjail doctor`. The binary serves as its own worker
//! (`MOONJAIL_WORKER` points at it), so these tests also prove that an embedding program
//! can run isolated with nothing but `run_if_worker()` in main.

use serde_json::Value as Json;

use crate::support::*;

/// `moonjail ARGS`: the exit status, stdout and stderr.
fn moonjail_here(args: &[&str]) -> (Option<i32>, String, String) {
    let out = moonjail(".", args, None);
    (out.code, out.stdout, out.stderr)
}

/// `--allow-missing` for the layers this machine lacks.
fn missing_layers(doc: &Json) -> String {
    doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["usable"] == Json::Bool(false))
        .map(|l| l["layer"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn run_isolated(extra: &[&str]) -> (Option<i32>, String, String) {
    let (_, doc) = doctor();
    let missing = missing_layers(&doc);
    let mut args = vec!["run", "--isolate"];
    if !missing.is_empty() {
        args.extend(["--allow-missing", &missing]);
    }
    args.extend(extra);
    moonjail_here(&args)
}

#[test]
fn doctor_json_lists_every_layer_and_its_exit_status_follows() {
    let (code, doc) = doctor();
    let layers = doc["layers"].as_array().expect("a layer list");
    let names: Vec<_> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fds",
            "user-namespace",
            "network-namespace",
            "mount-namespace",
            "ipc-namespace",
            "uts-namespace",
            "pid-namespace",
            "rlimits",
            "credentials",
            "no-new-privs",
            "landlock",
            "seccomp"
        ]
    );
    for layer in layers {
        let status = layer["status"].as_str().unwrap();
        assert!(
            ["available", "unavailable", "not_applicable"].contains(&status),
            "{layer}"
        );
        assert!(!layer["detail"].as_str().unwrap().is_empty(), "{layer}");
    }
    let all_usable = layers.iter().all(|l| l["usable"] == Json::Bool(true));
    assert_eq!(
        doc["ok"],
        Json::Bool(all_usable && doc["worker"]["ok"] == Json::Bool(true))
    );
    assert_eq!(
        code,
        Some(if doc["ok"] == Json::Bool(true) { 0 } else { 1 })
    );
    if all_usable {
        assert_eq!(doc["worker"]["ok"], Json::Bool(true), "{doc}");
    }
}

#[test]
fn doctor_prints_one_line_per_layer() {
    let (code, stdout, _) = moonjail_here(&["doctor"]);
    assert!(matches!(code, Some(0 | 1)));
    for layer in ["fds", "network-namespace", "landlock", "seccomp"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(layer)),
            "{layer} missing from: {stdout}"
        );
    }
    assert!(stdout.contains("worker: "), "{stdout}");
}

#[test]
fn run_isolate_prints_the_same_document() {
    let (code, stdout, stderr) =
        run_isolated(&["-e", "print('hi') return {answer = 42}", "--json"]);
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    let doc: Json = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["ok"], Json::Bool(true));
    assert_eq!(doc["result"]["answer"], 42);
    assert_eq!(doc["output"], "hi\n");
}

#[test]
fn run_isolate_kills_a_long_c_call_at_the_deadline() {
    let (code, stdout, _) = run_isolated(&[
        "-e",
        r#"return string.find(("a"):rep(40), ("a*"):rep(40) .. "b")"#,
        "--timeout",
        "200ms",
        "--json",
    ]);
    assert_eq!(code, Some(1));
    let doc: Json = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "timeout");
}

#[test]
fn allow_missing_needs_isolate_and_known_layers() {
    let (code, _, stderr) =
        moonjail_here(&["run", "--allow-missing", "landlock", "-e", "return 1"]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = moonjail_here(&[
        "run",
        "--isolate",
        "--allow-missing",
        "bogus",
        "-e",
        "return 1",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown layer"), "{stderr}");
}
