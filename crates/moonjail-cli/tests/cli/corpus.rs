//! The containment corpus: one-line scripts that used to hang the host past its deadline,
//! make it allocate gigabytes, or make isolated runs report `internal`. Each runs through
//! `moonjail run --json`, in process and isolated, under a 1 GiB address-space limit on
//! the moonjail process (`ulimit -S -v`: a host that allocates past it fails, it does not
//! take the machine down), and must answer one document with an expected kind, within
//! its deadline plus slack, with output within its limit.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::support::*;

/// The address space moonjail may use: a few hundred MB of heap plus its code, stacks
/// and the pool's threads.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;
/// Past the deadline: the in-process backstop fires 1 s after it; the rest is a loaded
/// machine's scheduling. Generous on purpose: the point is "it ends", not how fast.
const SLACK: Duration = Duration::from_secs(10);

struct Case {
    name: &'static str,
    script: String,
    extra: Vec<&'static str>,
    /// The acceptable kinds (`"ok"` for success).
    kinds: &'static [&'static str],
}

fn case(name: &'static str, script: &str, kinds: &'static [&'static str]) -> Case {
    Case {
        name,
        script: script.to_string(),
        extra: Vec::new(),
        kinds,
    }
}

fn corpus() -> Vec<Case> {
    let ephemerons = r#"
        local N = 40000
        local keys = {}
        for i = 1, N do keys[i] = {} end
        for i = N, 2, -1 do local j = math.random(i) keys[i], keys[j] = keys[j], keys[i] end
        local t = setmetatable({}, {__mode = "k"})
        for i = 1, N - 1 do t[keys[i]] = keys[i + 1] end
        keys = nil
        while true do local x = {} end"#;
    let dag = "local t = {a = {}} for i = 1, 20 do t = {t, t} end";
    vec![
        case("table.move over a huge range", "table.move({}, 1, math.maxinteger - 1, 1)", &["timeout"]),
        case("string.rep of an empty string", r#"return #string.rep("", math.maxinteger)"#, &["ok"]),
        case(
            "table.insert under a huge __len",
            // `#t + 1` is math.maxinteger: every element from there down to 2 moves.
            "local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end}) table.insert(t, 1, 1)",
            &["timeout"],
        ),
        case(
            "table.remove under a huge __len",
            "local t = setmetatable({}, {__len = function() return math.maxinteger end}) table.remove(t, 1)",
            &["timeout"],
        ),
        case(
            "sorting references to one 30 MB string",
            r#"local s = ("\0"):rep(30e6) local t = {} for i = 1, 1e5 do t[i] = s end table.sort(t) return #t"#,
            &["ok", "timeout"],
        ),
        case("an ephemeron chain in the collector", ephemerons, &["timeout"]),
        case(
            "a quadratic chunk for the compiler",
            r#"return load("local a = 1 return " .. ("a or "):rep(200000) .. "a")"#,
            &["timeout"],
        ),
        Case {
            extra: vec!["--memory", "1MiB"],
            ..case("a shared-subtable result", &format!("{dag} return t"), &["memory_limit"])
        },
        Case {
            extra: vec!["--memory", "1MiB"],
            ..case("json.encode of shared subtables", &format!("{dag} return json.encode(t)"), &["memory_limit"])
        },
        case("an escaped result over the result limit", r#"return ("\1"):rep(15e6)"#, &["result"]),
        case("a 30 MB error message", r#"error(("x"):rep(30e6), 0)"#, &["runtime"]),
        case("a 20 MB escaped error message", r#"error(("\1"):rep(20e6), 0)"#, &["runtime"]),
        Case {
            extra: vec!["--output-limit", "1000"],
            ..case("invalid UTF-8 output", r#"print(("\255"):rep(5000))"#, &["output_limit"])
        },
        Case {
            extra: vec!["--instructions", "2000000", "--timeout", "none"],
            ..case(
                "native work under an instruction budget and no clock",
                "local t = {} for i = 1, 1000 do t[i] = i end while true do json.encode(t) end",
                &["instruction_limit"],
            )
        },
        Case {
            extra: vec!["--instructions", "2000000", "--timeout", "none"],
            ..case(
                "table.move under an instruction budget and no clock",
                "table.move({}, 1, math.maxinteger - 1, 1)",
                &["instruction_limit"],
            )
        },
        Case {
            extra: vec!["--diagnostic"],
            ..case(
                "diagnostics of made-up names",
                // Five times the 4096 names diagnostics keep. A debug worker on a loaded
                // 2-core machine took most of the second for 100,000 (and sometimes all
                // of it): a timeout is the run ending in time too.
                "for i = 1, 20000 do local _ = _G['g' .. i] end return 1",
                &["ok", "timeout"],
            )
        },
    ]
}

fn run_case(dir: &TempDir, c: &Case, isolate: bool, flags: &[String]) -> (Json, Duration) {
    dir.write("case.lua", &c.script);
    let mut args = vec!["run", "case.lua", "--json"];
    if !c.extra.contains(&"--timeout") {
        args.extend(["--timeout", "1s"]);
    }
    args.extend(c.extra.iter().copied());
    let args = with_isolation(&args, isolate, flags);
    let started = Instant::now();
    let out = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#"ulimit -S -v {ADDRESS_SPACE_KIB} && exec "$0" "$@""#
            ))
            .arg(MOONJAIL)
            .args(&args)
            .env("MOONJAIL_WORKER", MOONJAIL)
            .current_dir(dir.path()),
    );
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "{} (isolate={isolate}): one document, got {stdout:?} / {:?}",
        c.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Json = serde_json::from_str(stdout.trim()).expect("a JSON document");
    (doc, took)
}

#[test]
fn every_case_ends_in_time_with_an_expected_kind_in_bounded_memory() {
    let flags = isolate_flags();
    let dir = TempDir::new();
    let mut failures = Vec::new();
    for c in corpus() {
        for isolate in [false, true] {
            let (doc, took) = run_case(&dir, &c, isolate, &flags);
            let kind = if doc["ok"] == json!(true) {
                "ok".to_string()
            } else {
                doc["error"]["kind"].as_str().unwrap_or("?").to_string()
            };
            let deadline = Duration::from_secs(1);
            let message_len = doc["error"]["message"].as_str().map_or(0, str::len);
            let output_len = doc["output"].as_str().map_or(0, str::len);
            let problems = [
                (!c.kinds.contains(&kind.as_str())).then(|| format!("kind {kind}")),
                (took > deadline + SLACK).then(|| format!("took {took:?}")),
                (message_len > 64 << 10).then(|| format!("a {message_len} byte message")),
                (output_len > 1 << 20).then(|| format!("{output_len} bytes of output")),
            ];
            for p in problems.into_iter().flatten() {
                failures.push(format!(
                    "{} (isolate={isolate}): {p}: {}",
                    c.name,
                    doc.to_string().chars().take(300).collect::<String>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn identities_are_opaque_and_lines_stay_lines() {
    for isolate in [false, true] {
        let flags = isolate_flags();
        let args = with_isolation(
            &[
                "run",
                "-e",
                "return {tostring({}), tostring(print), ('%p'):format({}), 'a\u{2028}b'}",
                "--json",
            ],
            isolate,
            &flags,
        );
        let out = mj(&args);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
        assert!(!out.stdout.contains('\u{2028}'), "raw U+2028: {out:?}");
        let doc = out.json();
        for shown in doc["result"].as_array().unwrap().iter().take(3) {
            let text = shown.as_str().unwrap();
            let hex = text.rsplit("0x").next().unwrap();
            let n = u64::from_str_radix(hex, 16).unwrap_or(u64::MAX);
            assert!(n < 1 << 20, "an address, not a per-run number: {text}");
        }
    }
}

#[test]
fn an_absurd_result_depth_is_a_misuse() {
    let out = mj(&[
        "run",
        "-e",
        "return 1",
        "--result-depth",
        "10000000",
        "--json",
    ]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(kind(&out.json()), "input");
}
