//! Durable sessions through the command line: `session --journal FILE` records every
//! request, the process is killed (`kill -9`), `session --restore FILE` rebuilds the state
//! and goes on; `--fork` leaves the journal alone. In process and with `--isolate`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use serde_json::{json, Value as Json};

use crate::support::*;

/// A `moonjail session` driven one request at a time, as a client would.
struct Live {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Live {
    fn start(dir: &TempDir, args: &[&str]) -> Live {
        let mut all = vec!["session"];
        all.extend_from_slice(args);
        let mut cmd = command(dir, &all);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = spawn(&mut cmd);
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Live {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one request and waits for its response.
    fn ask(&mut self, request: &Json) -> Json {
        writeln!(self.stdin, "{request}").expect("send a request");
        self.stdin.flush().expect("send a request");
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read a response");
        assert!(n > 0, "the session ended before answering {request}");
        serde_json::from_str(&line).expect("a JSON response")
    }

    /// Sends a request without waiting for its response.
    fn send(&mut self, request: &Json) {
        writeln!(self.stdin, "{request}").expect("send a request");
        self.stdin.flush().expect("send a request");
    }

    /// `kill -9`: no chance to write anything more.
    fn kill(mut self) {
        self.child.kill().expect("kill the session");
        let _ = self.child.wait();
    }
}

fn fixtures() -> PathBuf {
    repo().join("crates/moonjail/tests/fixtures/ao")
}

fn utils() -> String {
    fixtures().join("utils.lua").to_string_lossy().into_owned()
}

/// Message `i` (from 1): pings, sums, math.random and os.time, a read of utils.lua.
fn message(i: usize) -> Json {
    match i % 4 {
        0 => json!({"Action": "Ping"}),
        1 => json!({"Action": "Sum", "Data": format!("{i},2,3")}),
        2 => json!({"Action": "Eval", "Data": "return #Inbox + math.random(1, 1000) + os.time()"}),
        _ => json!({"Action": "Eval",
                    "Data": format!("local f = assert(io.open({:?})) local t = f:read('a') f:close() return #t", utils())}),
    }
}

fn load_process() -> Json {
    let code = std::fs::read_to_string(fixtures().join("process.lua")).unwrap();
    json!({"id": 0, "op": "exec", "code": code})
}

fn compute(i: usize, state: &Json) -> Json {
    json!({"id": i, "op": "call", "function": "compute", "args": [state, message(i)]})
}

/// The sandbox flags of the AO session (`--journal`/`--restore` and isolation aside).
fn ao_flags(determinism: Option<(i64, i64)>) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--profile",
        "aos",
        "--modules",
        &fixtures().to_string_lossy(),
        "--read",
        &utils(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((timestamp, seed)) = determinism {
        // `--seed=N`: a drawn seed may be negative.
        flags.extend([
            "--deterministic".into(),
            format!("--timestamp={timestamp}"),
            format!("--seed={seed}"),
        ]);
    }
    flags
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What a state comparison looks at: the response without timings and memory.
fn state(doc: &Json) -> Json {
    let mut doc = essence(doc.clone());
    doc.as_object_mut().unwrap().remove("id");
    doc
}

/// Messages 1..=6 in a journaled session, killed; then 7..=10 in a restored one. The
/// responses, and the journal's (time, seed).
fn interrupted(dir: &TempDir, flags: &[String], isolate: bool) -> (Vec<Json>, (i64, i64)) {
    let iso = isolate_flags();
    let mut args = strs(flags);
    args.extend(["--journal", "ao.jsonl"]);
    let args = with_isolation(&args, isolate, &iso);
    let mut live = Live::start(dir, &args);
    assert_eq!(live.ask(&load_process())["ok"], json!(true));
    let mut st = json!({});
    let mut responses = Vec::new();
    for i in 1..=6 {
        let doc = live.ask(&compute(i, &st));
        assert_eq!(doc["ok"], json!(true), "{doc}");
        st = doc["result"].clone();
        responses.push(state(&doc));
    }
    live.kill();

    let mut args = strs(flags);
    args.extend(["--restore", "ao.jsonl"]);
    let args = with_isolation(&args, isolate, &iso);
    let mut live = Live::start(dir, &args);
    for i in 7..=10 {
        let doc = live.ask(&compute(i, &st));
        assert_eq!(doc["ok"], json!(true), "{doc}");
        st = doc["result"].clone();
        responses.push(state(&doc));
    }
    live.kill();
    let journal = std::fs::read_to_string(dir.path().join("ao.jsonl")).unwrap();
    let first: Json = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    let det = &first["determinism"];
    (
        responses,
        (
            det["timestamp"].as_i64().unwrap(),
            det["seed"].as_i64().unwrap(),
        ),
    )
}

/// The ten messages in one session that is never interrupted.
fn uninterrupted(flags: &[String]) -> Vec<Json> {
    let dir = TempDir::new();
    let mut live = Live::start(&dir, &strs(flags));
    assert_eq!(live.ask(&load_process())["ok"], json!(true));
    let mut st = json!({});
    let responses = (1..=10)
        .map(|i| {
            let doc = live.ask(&compute(i, &st));
            st = doc["result"].clone();
            state(&doc)
        })
        .collect();
    live.kill();
    responses
}

#[test]
fn session_journal_ao_killed_after_6_messages_restores_like_one_uninterrupted_session() {
    for isolate in [false, true] {
        let flags = ao_flags(Some((1_700_000_000, 42)));
        let dir = TempDir::new();
        let (restored, det) = interrupted(&dir, &flags, isolate);
        assert_eq!(det, (1_700_000_000, 42));
        let reference = uninterrupted(&flags);
        for (i, (a, b)) in restored.iter().zip(&reference).enumerate() {
            assert_eq!(a, b, "isolate {isolate}: message {}", i + 1);
        }
        assert_eq!(restored[9]["result"]["last"]["inbox"], json!(10));
        // 1 exec + 10 calls, each request and response, after the session line.
        let journal = std::fs::read_to_string(dir.path().join("ao.jsonl")).unwrap();
        let responses = journal
            .lines()
            .filter(|l| l.starts_with(r#"{"type":"response""#))
            .count();
        assert_eq!(responses, 11, "isolate {isolate}");
    }
}

/// Message `i`'s state with the time it read (`os.time()`, in the milliseconds the AO
/// process makes of it) taken out: what is left depends on the seed alone.
fn untimed(mut doc: Json, i: usize, time: i64) -> Json {
    let last = &mut doc["result"]["last"];
    let ms = time * 1000;
    let at = last["at"].as_i64().expect("the state's time");
    assert_eq!(at, ms, "message {i} read another time than {time}");
    last["at"] = json!(0);
    if i % 4 == 2 {
        // `#Inbox + math.random(1, 1000) + os.time()`.
        last["reply"] = json!(last["reply"].as_i64().expect("a number") - ms);
    }
    // `results` repeats the one result, the time in it too: compared untimed as well
    // (it differed whenever a message's second was not the session's).
    assert_eq!(doc["results"].as_array().map(Vec::len), Some(1), "{doc}");
    doc["results"] = json!([doc["result"].clone()]);
    doc
}

#[test]
fn session_journal_a_non_deterministic_session_is_restored_with_its_recorded_times_and_seed() {
    for isolate in [false, true] {
        let dir = TempDir::new();
        let (restored, (timestamp, seed)) = interrupted(&dir, &ao_flags(None), isolate);
        // Each message ran at the time its request line records (message i is request
        // i + 1, after the exec of the process), 7 to 10 after the restore as 1 to 6
        // before it; the restore replayed 1 to 6 at theirs.
        let journal = std::fs::read_to_string(dir.path().join("ao.jsonl")).unwrap();
        let times: Vec<i64> = journal
            .lines()
            .map(|l| serde_json::from_str::<Json>(l).unwrap())
            .filter(|l| l["type"] == "request" && l["op"] == "call")
            .map(|l| {
                l["time"]
                    .as_i64()
                    .expect("a drawn session's request has a time")
            })
            .collect();
        assert_eq!(times.len(), 10, "isolate {isolate}");
        // The journal drew a seed: one uninterrupted session with it (and a fixed time)
        // gives the same ten states, the time each read aside.
        let reference = uninterrupted(&ao_flags(Some((timestamp, seed))));
        for (i, (a, b)) in restored.iter().zip(&reference).enumerate() {
            let a = untimed(a.clone(), i + 1, times[i]);
            let b = untimed(b.clone(), i + 1, timestamp);
            assert_eq!(a, b, "isolate {isolate}: message {}", i + 1);
        }
        // Message 2 drew from math.random and read os.time.
        assert!(restored[1]["result"]["last"]["reply"].is_number());
    }
}

/// A command tool answering a random number, appending its arguments to calls.log on
/// every call: a side effect a restore must not repeat.
const RNG: &str = r#"read -r args
echo "$args" >> calls.log
n=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
printf '{"n": %s}\n' "$n"
"#;

const DEFINE: &str = "total = 0 function add(k) local r = rng.next(k) total = total + r.n + k return {total = total, n = r.n} end";

fn calls(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn add(i: u64) -> String {
    json!({"id": i, "op": "call", "function": "add", "args": [i]}).to_string()
}

/// Records `exec DEFINE` and add(1..=3) into s.jsonl: the responses.
fn record_tools(dir: &TempDir, isolate: bool) -> Vec<Json> {
    dir.write("rng.sh", RNG);
    let iso = isolate_flags();
    let args = with_isolation(
        &[
            "session",
            "--tool",
            "rng.next=sh rng.sh",
            "--journal",
            "s.jsonl",
        ],
        isolate,
        &iso,
    );
    let define = json!({"id": 0, "op": "exec", "code": DEFINE}).to_string();
    let input = format!("{define}\n{}\n{}\n{}\n", add(1), add(2), add(3));
    let out = moonjail(dir, &args, Some(input.as_bytes()));
    assert_eq!(out.code, Some(0), "{out:?}");
    out.json_lines()
}

#[test]
fn session_journal_tool_calls_are_not_made_again_by_a_restore() {
    let iso = isolate_flags();
    for isolate in [false, true] {
        let dir = TempDir::new();
        let recorded = record_tools(&dir, isolate);
        assert_eq!(calls(&dir), 3);
        let args = with_isolation(
            &[
                "session",
                "--tool",
                "rng.next=sh rng.sh",
                "--restore",
                "s.jsonl",
            ],
            isolate,
            &iso,
        );
        let input = format!(
            "{}\n{}\n",
            add(4),
            json!({"id": 5, "op": "eval", "code": "total"})
        );
        let out = moonjail(&dir, &args, Some(input.as_bytes()));
        assert_eq!(out.code, Some(0), "{out:?}");
        let docs = out.json_lines();
        // The restore called nothing; request 4 called the tool once.
        assert_eq!(calls(&dir), 4, "isolate {isolate}");
        let before = recorded[3]["result"]["total"].as_u64().unwrap();
        let n = docs[0]["result"]["n"].as_u64().unwrap();
        assert_eq!(docs[0]["result"]["total"], json!(before + n + 4));
        assert_eq!(docs[1]["result"], docs[0]["result"]["total"]);
        // The journal goes on: request 5 and 6 are in it, with request 4's tool line.
        let journal = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
        let last: Json = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
        assert_eq!(
            (last["type"].clone(), last["n"].clone()),
            (json!("response"), json!(6))
        );
        assert_eq!(journal.matches(r#"{"type":"tool""#).count(), 4);
    }
}

#[test]
fn session_journal_a_tampered_journal_is_refused_naming_the_request() {
    let iso = isolate_flags();
    for isolate in [false, true] {
        let dir = TempDir::new();
        record_tools(&dir, isolate);
        let original = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
        // Request 3's tool answer (add(2)'s), or its recorded response, edited.
        let mut lines: Vec<Json> = original
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tools: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i]["type"] == "tool")
            .collect();
        lines[tools[1]]["result"]["n"] = json!(7);
        let tool_edited: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut lines: Vec<Json> = original
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = lines.len() - 1;
        lines[last]["outcome"]["result"]["total"] = json!(1);
        let response_edited: String = lines.iter().map(|l| format!("{l}\n")).collect();
        for (edited, request, fragment) in [
            (tool_edited, 3, "at /result/n: recorded"),
            (response_edited, 4, "at /result/total: recorded 1, replayed"),
        ] {
            dir.write("s.jsonl", &edited);
            let args = with_isolation(
                &[
                    "session",
                    "--tool",
                    "rng.next=sh rng.sh",
                    "--restore",
                    "s.jsonl",
                ],
                isolate,
                &iso,
            );
            let out = moonjail(&dir, &args, Some(add(9).as_bytes()));
            assert_misuse(&out, &format!("request {request} (call `add`)"));
            assert!(out.stderr.contains(fragment), "{out:?}");
            assert!(out.stderr.contains("differs from its journal"), "{out:?}");
            // Nothing appended, nothing called.
            let after = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
            assert_eq!(after, edited, "isolate {isolate}");
            assert_eq!(calls(&dir), 3);
        }
    }
}

#[test]
fn session_journal_a_request_killed_mid_way_is_dropped_and_the_session_goes_on() {
    let iso = isolate_flags();
    for isolate in [false, true] {
        let dir = TempDir::new();
        let args = with_isolation(&["--journal", "s.jsonl"], isolate, &iso);
        let mut live = Live::start(&dir, &args);
        let define = json!({"id": 1, "op": "exec",
                            "code": "n = 0 function bump() n = n + 1 return n end function spin() n = 100 while true do end end"});
        assert_eq!(live.ask(&define)["ok"], json!(true));
        assert_eq!(
            live.ask(&json!({"id": 2, "op": "call", "function": "bump"}))["result"],
            json!(1)
        );
        let complete = std::fs::read(dir.path().join("s.jsonl")).unwrap();
        live.send(&json!({"id": 3, "op": "call", "function": "spin"}));
        // Until its request line is in the journal.
        let path = dir.path().join("s.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        while std::fs::read(&path).unwrap().len() == complete.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "request 3 was never recorded"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        live.kill();
        let args = with_isolation(&["session", "--restore", "s.jsonl"], isolate, &iso);
        let out = moonjail(
            &dir,
            &args,
            Some(br#"{"id": 4, "op": "call", "function": "bump"}"#),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        // The state before request 3 (n = 1, not 100), and request 3 is gone.
        assert_eq!(out.json_lines()[0]["result"], json!(2), "isolate {isolate}");
        let journal = std::fs::read(&path).unwrap();
        assert!(journal.starts_with(&complete));
        let text = String::from_utf8(journal).unwrap();
        assert!(!text.contains("\"spin\""), "{text}");
        let last: Json = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(
            (last["type"].clone(), last["n"].clone()),
            (json!("response"), json!(3))
        );
    }
}

#[test]
fn session_journal_fork_leaves_the_journal_byte_identical() {
    let iso = isolate_flags();
    for isolate in [false, true] {
        let dir = TempDir::new();
        let recorded = record_tools(&dir, isolate);
        let before = std::fs::read(dir.path().join("s.jsonl")).unwrap();
        let eval = json!({"id": 9, "op": "eval", "code": "total"}).to_string();
        // A dry run at the end of the journal, and one after request 2 (exec, add(1)).
        for (upto, expected) in [(None, &recorded[3]), (Some("2"), &recorded[1])] {
            let mut args = vec![
                "session",
                "--tool",
                "rng.next=sh rng.sh",
                "--restore",
                "s.jsonl",
                "--fork",
            ];
            if let Some(upto) = upto {
                args.extend(["--upto", upto]);
            }
            let args = with_isolation(&args, isolate, &iso);
            let input = format!("{eval}\n{}\n", add(100));
            let out = moonjail(&dir, &args, Some(input.as_bytes()));
            assert_eq!(out.code, Some(0), "{out:?}");
            let docs = out.json_lines();
            assert_eq!(docs[0]["result"], expected["result"]["total"], "{upto:?}");
            assert_eq!(std::fs::read(dir.path().join("s.jsonl")).unwrap(), before);
        }
        // Recorded into another file: the prefix copied, the fork's requests after it.
        let args = with_isolation(
            &[
                "session",
                "--tool",
                "rng.next=sh rng.sh",
                "--restore",
                "s.jsonl",
                "--fork",
                "--upto",
                "2",
                "--journal",
                "fork.jsonl",
            ],
            isolate,
            &iso,
        );
        let out = moonjail(&dir, &args, Some(format!("{eval}\n").as_bytes()));
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(std::fs::read(dir.path().join("s.jsonl")).unwrap(), before);
        let fork = std::fs::read_to_string(dir.path().join("fork.jsonl")).unwrap();
        assert_eq!(
            fork.lines()
                .filter(|l| l.contains(r#""type":"response""#))
                .count(),
            3
        );
        // Into the journal itself: refused, the journal untouched.
        let args = [
            "session",
            "--restore",
            "s.jsonl",
            "--fork",
            "--journal",
            "s.jsonl",
        ];
        let out = moonjail(&dir, &args, None);
        assert_misuse(&out, "that is the journal being forked");
        assert_eq!(std::fs::read(dir.path().join("s.jsonl")).unwrap(), before);
    }
}

#[test]
fn session_journal_replay_refuses_a_session_journal_and_flags_are_documented() {
    let dir = TempDir::new();
    record_tools(&dir, false);
    let out = moonjail(&dir, &["replay", "s.jsonl"], None);
    assert_misuse(
        &out,
        "this is a session journal; restore it with `moonjail session --restore FILE`",
    );
    // And a restore without the recorded tool is refused before anything runs.
    let out = moonjail(&dir, &["session", "--restore", "s.jsonl"], Some(b""));
    assert_misuse(&out, "tools: recorded [\"rng.next\"], this sandbox []");
    let out = mj(&["session", "--help"]);
    for fragment in [
        "--journal <FILE>",
        "--restore <FILE>",
        "--fork",
        "--upto <N>",
        "--journal-limit",
        "fsynced",
    ] {
        assert!(out.stdout.contains(fragment), "{fragment}: {}", out.stdout);
    }
}

#[test]
fn session_journal_a_journal_in_use_is_neither_truncated_nor_restored() {
    let dir = TempDir::new();
    let mut live = Live::start(&dir, &["--journal", "s.jsonl"]);
    let doc = live.ask(&json!({"id": 1, "op": "exec", "code": "x = 1"}));
    assert_eq!(doc["ok"], json!(true));
    let before = std::fs::read(dir.path().join("s.jsonl")).unwrap();
    for args in [
        &["session", "--journal", "s.jsonl"][..],
        &["session", "--restore", "s.jsonl"][..],
    ] {
        let out = moonjail(&dir, args, Some(b""));
        assert_misuse(&out, "locked by another process");
        assert_eq!(std::fs::read(dir.path().join("s.jsonl")).unwrap(), before);
    }
    live.kill();
    // Once the recording process is gone, the journal restores (even without fsync per
    // response: every line was flushed).
    let out = moonjail(
        &dir,
        &["session", "--restore", "s.jsonl", "--journal-fsync", "end"],
        Some(br#"{"id": 2, "op": "eval", "code": "x"}"#),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.json_lines()[0]["result"], json!(1));
}
