//! `moonjail profile` and the help texts.

use serde_json::{json, Value as Json};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// profile.
// ---------------------------------------------------------------------------------------

#[test]
fn profile_list() {
    let out = mj(&["profile", "list"]);
    assert_eq!(out.code, Some(0));
    let names: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names[..2], ["minimal", "standard"], "{out:?}");
    assert!(
        out.stdout.lines().all(|l| l.split_whitespace().count() > 1),
        "each has a summary"
    );
    // Every listed profile can be shown and used.
    for name in names {
        assert_eq!(mj(&["profile", "show", name]).code, Some(0), "show {name}");
        let (code, doc) = json_eval("return 1", &["--profile", name]);
        assert_eq!(
            (code, &doc["result"]),
            (Some(0), &json!(1)),
            "run --profile {name}"
        );
    }
}

#[test]
fn profile_show_text() {
    let out = mj(&["profile", "show", "standard"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("profile standard: "), "{out:?}");
    assert!(out.stdout.contains("nothing else exists in the sandbox"));
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {}", out.stdout))
            .to_string()
    };
    assert!(line("setmetatable").contains("__gc"));
    assert!(line("collectgarbage").contains("count"));
    assert!(line("string.find").contains("metered"));
    assert!(line("string.upper").contains("metered"));
    assert_eq!(line("string.len").trim(), "string.len");
    assert!(!out.stdout.contains("string.dump"));
    let out = mj(&["profile", "show", "minimal"]);
    assert_eq!(out.code, Some(0));
    assert!(!out
        .stdout
        .lines()
        .any(|l| l.trim_start().starts_with("load")));
    assert_misuse(&mj(&["profile", "show", "nope"]), "unknown profile");
}

#[test]
fn profile_show_json() {
    let out = mj(&["profile", "show", "standard", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let doc = out.json();
    assert_eq!(doc["name"], json!("standard"));
    assert!(doc["summary"].as_str().is_some_and(|s| !s.is_empty()));
    let items = doc["items"].as_array().expect("items");
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    for want in [
        "print",
        "load",
        "_G",
        "json",
        "string.format",
        "coroutine.wrap",
        "os.time",
        "utf8.char",
        "require",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for absent in [
        "string.dump",
        "os.execute",
        "io",
        "debug",
        "package.loadlib",
        "package.searchers",
    ] {
        assert!(!names.contains(&absent), "{absent} must not be listed");
    }
    for item in items {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "{item}");
        assert!(
            item["guard"].is_null() || item["guard"].is_string(),
            "{item}"
        );
    }
    let guard = |n: &str| items.iter().find(|i| i["name"] == json!(n)).unwrap()["guard"].clone();
    assert!(guard("load").as_str().unwrap().contains("binary"));
    assert_eq!(guard("string.len"), Json::Null);

    let out = mj(&["profile", "show", "minimal", "--json"]);
    let doc = out.json();
    let names: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"load") && !names.contains(&"json") && !names.contains(&"_G"));
    assert!(names.contains(&"pcall") && names.contains(&"string.rep"));
}

#[test]
fn run_help_example_works() {
    let out = mj(&["run", "--help"]);
    let example = out
        .stdout
        .lines()
        .find(|l| l.contains("echo '"))
        .expect("the stdin example");
    let code = example.split('\'').nth(1).expect("quoted code");
    let out = moonjail(
        &TempDir::new(),
        &["run", "-", "--input", r#"{"n": 21}"#, "--json"],
        Some(code.as_bytes()),
    );
    assert_eq!(out.code, Some(0), "{code}: {out:?}");
    assert_eq!(out.json()["result"], json!(42));
}

#[test]
fn help_and_version() {
    let out = mj(&["--help"]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("run"));
    let out = mj(&["run", "--help"]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("--input") && out.stdout.contains("--json"));
    let out = mj(&["--version"]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.starts_with("moonjail "), "{out:?}");
}
