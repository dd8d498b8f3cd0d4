//! With `--json`, every outcome is one JSON document on stdout, misuse included: the
//! shape of `run --json`, error kind `input`, status 2, nothing on stderr. A program
//! driving moonjail parses stdout and never has to scrape stderr.

use serde_json::json;

use crate::support::*;

/// A misuse under `--json`: status 2, one `input` document whose message has `fragment`.
fn assert_json_misuse(out: &Out, fragment: &str) {
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one line: {out:?}");
    let doc = out.json();
    assert_document_shape(&doc);
    assert_eq!(doc["ok"], json!(false));
    assert_eq!(kind(&doc), "input", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    assert_eq!(
        doc["stats"],
        json!({"wall_ms": 0.0, "memory_bytes": 0, "peak_memory_bytes": 0,
            "instructions": null, "output_bytes": 0, "tool_calls": 0,
            "limits": {"wall_ms": null, "memory_bytes": null, "instructions": null,
                "output_bytes": null, "tool_calls": null}})
    );
    assert_eq!(out.stderr, "", "{out:?}");
}

#[test]
fn run_json_misuse_is_one_document() {
    let dir = TempDir::new();
    dir.write("deep.json", "[".repeat(200_000) + &"]".repeat(200_000));
    dir.write("big.lua", "return 1 --".to_string() + &"x".repeat(2000));
    let cases: &[(&[&str], &str)] = &[
        (&["--input", "{bad"], "--input is not valid JSON"),
        (&["--input", "@missing.json"], "reading missing.json"),
        (&["--input", "@deep.json"], "levels deep"),
        (
            &["--input", "[1, 2]", "--input-limit", "3"],
            "--input-limit",
        ),
        (&["--memory", "0"], "memory"),
        (&["--memory", "5parsecs"], "--memory"),
        (&["--timeout", "fast"], "--timeout"),
        (&["--profile", "nope"], "unknown profile"),
        (&["--tool", "no-equals-sign"], "expected NAME=COMMAND"),
        (&["--modules", "nowhere"], "not a directory"),
        (&["--isolate", "--allow-missing", "bogus"], "unknown layer"),
    ];
    for (extra, fragment) in cases {
        let mut args = vec!["run", "-e", "return 1", "--json"];
        args.extend_from_slice(extra);
        assert_json_misuse(&moonjail(&dir, &args, None), fragment);
    }
    // The script's file, missing or over the source limit.
    assert_json_misuse(
        &moonjail(&dir, &["run", "missing.lua", "--json"], None),
        "reading missing.lua",
    );
    assert_json_misuse(
        &moonjail(
            &dir,
            &["run", "big.lua", "--json", "--source-limit", "1KiB"],
            None,
        ),
        "--source-limit of 1024 bytes",
    );
}

#[test]
fn command_line_parse_errors_are_one_document_under_json() {
    for (args, fragment) in [
        (
            &["run", "-e", "return 1", "--json", "--frobnicate"][..],
            "--frobnicate",
        ),
        (&["run", "--json"][..], "required"),
        (
            &["run", "--json", "-e", "1", "x.lua"][..],
            "cannot be used with",
        ),
        (
            &["run", "--json", "-e", "1", "--instructions", "x"][..],
            "--instructions",
        ),
        (
            &["check", "--json", "--result-depth", "many"][..],
            "--result-depth",
        ),
        (&["doctor", "--json", "--verbose"][..], "--verbose"),
        (&["frobnicate", "--json"][..], "frobnicate"),
    ] {
        assert_json_misuse(&mj(args), fragment);
    }
    // Without --json, the same mistakes stay on stderr.
    assert_misuse(&mj(&["run", "-e", "1", "--frobnicate"]), "--frobnicate");
    // Help is not an error, --json or not.
    let out = mj(&["run", "--help", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Usage"), "{out:?}");
}

#[test]
fn check_and_profile_show_json_misuse_is_one_document() {
    assert_json_misuse(
        &mj(&["check", "--json", "--profile", "nope"]),
        "unknown profile",
    );
    assert_json_misuse(&mj(&["check", "--json", "--memory", "0"]), "memory");
    assert_json_misuse(
        &mj(&["profile", "show", "nope", "--json"]),
        "unknown profile",
    );
    // Without --json: stderr, as before.
    assert_misuse(&mj(&["profile", "show", "nope"]), "unknown profile");
}

#[test]
fn a_failed_run_under_json_is_still_status_1() {
    // Misuse is 2; a script that ran and failed stays 1, with its own kind.
    let (code, doc) = json_eval("error('boom')", &[]);
    assert_eq!((code, kind(&doc)), (Some(1), "runtime"));
    // The sandbox's own source limit (for -e CODE) is the run's `input` failure.
    let (code, doc) = json_eval("return 1 -- long enough", &["--source-limit", "10"]);
    assert_eq!((code, kind(&doc)), (Some(1), "input"));
}
