//! `moonjail session` (JSON lines), `moonjail check` and the aos flags.

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn session_protocol_good_bad_and_interleaved_requests() {
    let (docs, code) = session(
        &["--timeout", "300ms"],
        &[
            r#"{"id":1,"op":"exec","code":"n = 0 function bump(k) n = n + (k or 1) print('n=' .. n) return n end"}"#,
            r#"{"id":"two","op":"call","function":"bump","args":[5]}"#,
            "this is not json",
            r#"{"id":3,"op":"has_function","name":"bump"}"#,
            r#"{"id":4,"op":"frobnicate"}"#,
            r#"{"id":5,"op":"call","function":"bump"}"#,
            r#"{"id":6,"op":"exec","code":"error('boom')"}"#,
            r#"{"id":7,"op":"call","function":"bump","args":"nope"}"#,
            r#"{"id":8,"op":"exec","code":"return n"}"#,
            r#"{"id":9,"op":"exec","code":"while true do end"}"#,
            r#"{"id":10,"op":"exec","code":"return n"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), 11);
    assert_eq!(docs[0]["id"], json!(1));
    assert_eq!(docs[0]["ok"], json!(true));
    assert_eq!(docs[1]["id"], json!("two"));
    assert_eq!(docs[1]["result"], json!(5));
    assert_eq!(docs[1]["output"], json!("n=5\n"));
    assert_eq!(docs[2]["ok"], json!(false));
    assert_eq!(docs[2]["error"]["kind"], json!("input"));
    assert_eq!(docs[3]["result"], json!(true));
    assert_eq!(docs[4]["error"]["kind"], json!("input"));
    assert_eq!(docs[5]["result"], json!(6));
    assert_eq!(docs[6]["error"]["kind"], json!("runtime"));
    assert_eq!(docs[6]["error"]["line"], json!(1));
    assert_eq!(docs[7]["error"]["kind"], json!("input"));
    assert_eq!(docs[8]["result"], json!(6), "state survived the errors");
    assert_eq!(docs[9]["error"]["kind"], json!("timeout"));
    assert_eq!(docs[10]["error"]["kind"], json!("timeout"));
    assert!(docs[10]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("session was closed"));
}

#[test]
fn session_close_op_ends_the_session() {
    let (docs, code) = session(
        &[],
        &[
            r#"{"id":1,"op":"close"}"#,
            r#"{"id":2,"op":"exec","code":"return 1"}"#,
        ],
    );
    assert_eq!(code, Some(0));
    assert_eq!(docs.len(), 1);
}

#[test]
fn check_passes_for_every_profile() {
    for profile in ["minimal", "standard", "aos"] {
        let out = command(".", &[])
            .args(["check", "--profile", profile, "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{profile}");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["ok"], json!(true));
        assert_eq!(doc["profile"], json!(profile));
        assert!(doc["items"].as_array().unwrap().len() > 20);
        let human = command(".", &[])
            .args(["check", "--profile", profile])
            .output()
            .unwrap();
        let text = String::from_utf8(human.stdout).unwrap();
        assert!(text.contains("pass  "), "{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
}

#[test]
fn aos_flags_modules_read_deterministic_diagnostic() {
    let dir = std::env::temp_dir().join(format!("moonjail-cli-aos-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/util.lua"),
        "return {twice = function(x) return 2 * x end}",
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), "first\nsecond\n").unwrap();
    let data = dir.join("data.txt").to_string_lossy().into_owned();
    let code = format!(
        "local u = require('lib.util') local f = io.open('{data}') local l = f:read('l') \
         return {{u.twice(21), l, os.time(), math.random(1, 1000000)}}"
    );
    let run = |extra: &[&str]| {
        let out = command(".", &[])
            .args(["run", "--profile", "aos", "--json", "--modules"])
            .arg(&dir)
            .args(["--read", &data, "-e", &code])
            .args(extra)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let a = run(&[
        "--deterministic",
        "--timestamp",
        "1700000000",
        "--seed",
        "7",
    ]);
    let b = run(&[
        "--deterministic",
        "--timestamp",
        "1700000000",
        "--seed",
        "7",
    ]);
    assert_eq!(a["ok"], json!(true), "{a}");
    assert_eq!(a["result"][0], json!(42));
    assert_eq!(a["result"][1], json!("first"));
    assert_eq!(a["result"][2], json!(1_700_000_000));
    assert_eq!(a["result"], b["result"], "deterministic runs agree");
    let d = run(&["--diagnostic"]);
    assert_eq!(
        d["diagnostics"]["require"][0],
        json!({"name": "lib.util", "found": true})
    );
    assert_eq!(d["diagnostics"]["library"]["io.open"], json!(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn session_protocol_is_the_same_isolated() {
    let lines = [
        r#"{"id":1,"op":"exec","code":"n = 0 function bump(k) n = n + (k or 1) print('n=' .. n) return n end"}"#,
        r#"{"id":2,"op":"call","function":"bump","args":[5]}"#,
        "not json",
        r#"{"id":3,"op":"has_function","name":"bump"}"#,
        r#"{"id":4,"op":"exec","code":"error('boom')"}"#,
        r#"{"id":5,"op":"exec","code":"return n"}"#,
        r#"{"id":6,"op":"exec","code":"while true do end"}"#,
        r#"{"id":7,"op":"exec","code":"return n"}"#,
    ];
    let strip = |mut docs: Vec<Value>| {
        for d in &mut docs {
            if let Some(obj) = d.as_object_mut() {
                obj.remove("stats");
            }
        }
        docs
    };
    let (plain, code) = session(&["--timeout", "300ms"], &lines);
    assert_eq!(code, Some(0));
    let (isolated, code) = session(&["--timeout", "300ms", "--isolate"], &lines);
    assert_eq!(code, Some(0));
    assert_eq!(strip(plain), strip(isolated));
}
