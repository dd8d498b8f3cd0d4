//! Durable sessions: `Sandbox::session_journaled` records every request,
//! `moonjail::restore_session` rebuilds the state by replaying them (no tool called, no
//! file read) and goes on recording, `moonjail::fork_session` restores a prefix without
//! touching the journal; in process and isolated.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moonjail::{
    CallOptions, Determinism, HostFiles, Isolation, JournalError, JournalWriter, JournaledSession,
    Profile, ReplayOptions, Sandbox, SandboxBuilder, SessionJournal,
};
use serde_json::{json, Value as Json};

use crate::support::{both_modes as modes, one_worker as isolation};

/// A journal file in a fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "moonjail-jsession-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sandbox whose `rand.next` answers a different number on every call and counts its
/// calls: a side effect a restore must not repeat.
fn tools(calls: Arc<AtomicU64>) -> SandboxBuilder {
    Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .tool("rand.next", move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            Ok(json!(nanos % 1_000_000))
        })
}

const DEFINE: &str = "total = 0 seen = {} \
    function add(k) local r = rand.next(k) total = total + r + k seen[#seen + 1] = r \
    return {total = total, r = r, dice = math.random(1, 6), at = os.time()} end";

/// The response document without what varies between runs (wall times, memory).
fn essence(doc: Json) -> Json {
    let mut doc = doc;
    if let Some(stats) = doc.get_mut("stats").and_then(Json::as_object_mut) {
        for k in ["wall_ms", "memory_bytes", "peak_memory_bytes"] {
            stats.remove(k);
        }
    }
    if let Some(calls) = doc.get_mut("tool_calls").and_then(Json::as_array_mut) {
        for call in calls {
            call.as_object_mut().unwrap().remove("ms");
        }
    }
    doc
}

fn call(s: &mut JournaledSession, f: &str, args: &[Json]) -> Json {
    let out = s
        .call_with(f, args, &CallOptions::default())
        .expect("the journal records the request");
    assert!(out.is_ok(), "{:?}", out.result);
    out.to_json()
}

fn exec(s: &mut JournaledSession, code: &str) -> Json {
    let out = s
        .exec_with(code, &Json::Null, &CallOptions::default())
        .expect("the journal records the request");
    assert!(out.is_ok(), "{:?}", out.result);
    out.to_json()
}

fn lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `time` recorded in request `n`'s line, if it has one.
fn request_time(path: &Path, n: u64) -> Option<i64> {
    lines(path)
        .iter()
        .find(|l| l["type"] == "request" && l["n"] == json!(n))
        .and_then(|l| l.get("time"))
        .and_then(Json::as_i64)
}

#[test]
fn journal_session_restore_makes_no_tool_call_and_continues_the_state() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("tools");
        let path = dir.file("s.jsonl");
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(&mut s, DEFINE);
        let recorded: Vec<Json> = (1..=3).map(|k| call(&mut s, "add", &[json!(k)])).collect();
        assert_eq!(s.requests(), 4);
        drop(s);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{mode}");

        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        // Restored without calling the tool.
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{mode}");
        assert_eq!(s.requests(), 4, "{mode}");
        // The state is the recorded one: the sum of the recorded answers.
        let seen = s
            .eval("seen", &CallOptions::default())
            .unwrap()
            .result
            .unwrap();
        let answers: Vec<Json> = recorded.iter().map(|r| r["result"]["r"].clone()).collect();
        assert_eq!(seen, json!(answers), "{mode}");
        let next = call(&mut s, "add", &[json!(4)]);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "{mode}");
        let total = recorded[2]["result"]["total"].as_i64().unwrap()
            + next["result"]["r"].as_i64().unwrap()
            + 4;
        assert_eq!(next["result"]["total"], json!(total), "{mode}");
        drop(s);
        // Each request read its own time, the one its line records (a live request after
        // the restore too), and the random sequence went on.
        // (Requests 2 to 4 before the restore; 5 is the eval of `seen`, 6 is add(4).)
        for (n, doc) in [2, 3, 4, 6].into_iter().zip(recorded.iter().chain([&next])) {
            assert_eq!(
                doc["result"]["at"],
                json!(request_time(&path, n).expect("a drawn session's request has a time")),
                "{mode}: request {n}"
            );
        }

        // Restored again: the request made after the first restore is in the journal.
        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4, "{mode}");
        assert_eq!(s.requests(), 6, "{mode}");
        let again = s.eval("total", &CallOptions::default()).unwrap();
        assert_eq!(again.result.unwrap(), json!(total), "{mode}");
        drop(s);

        // Recorded in one mode, restored in the other.
        let other = if mode == "isolated" {
            Isolation::InProcess
        } else {
            self::isolation()
        };
        let sandbox = tools(calls.clone()).isolation(other).build().unwrap();
        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        let again = s.eval("total", &CallOptions::default()).unwrap();
        assert_eq!(
            again.result.unwrap(),
            json!(total),
            "{mode}, restored in the other"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 4, "{mode}");

        // The journal: one session line, then request, tool, response per call.
        let types: Vec<String> = lines(&path)
            .iter()
            .map(|l| l["type"].as_str().unwrap().to_string())
            .collect();
        let mut expected = vec!["session", "request", "response"];
        for _ in 0..3 {
            expected.extend(["request", "tool", "response"]);
        }
        // eval, add(4), eval (second restore), eval (restored in the other mode).
        expected.extend(["request", "response", "request", "tool", "response"]);
        expected.extend(["request", "response", "request", "response"]);
        assert_eq!(types, expected, "{mode}");
    }
}

fn aos(deterministic: Option<Determinism>, isolation: Isolation) -> Sandbox {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ao");
    Sandbox::builder()
        .profile(Profile::Aos)
        .host_files(
            HostFiles::default()
                .modules_dir(&fixtures)
                .allow_read(fixtures.join("utils.lua").to_string_lossy()),
        )
        .deterministic(deterministic)
        .isolation(isolation)
        .build()
        .unwrap()
}

fn message(i: usize) -> Json {
    match i % 4 {
        0 => json!({"Action": "Ping"}),
        1 => json!({"Action": "Sum", "Data": format!("{i},2,3")}),
        2 => json!({"Action": "Eval", "Data": "return #Inbox + math.random(1, 1000) + os.time()"}),
        _ => {
            json!({"Action": "Eval", "Data": "local f = assert(io.open(UTILS)) local t = f:read('a') f:close() return #t"})
        }
    }
}

/// Sends messages `from..=to` through `compute`, each with the previous state and the
/// options `options` gives for its number.
fn drive(
    s: &mut JournaledSession,
    state: &mut Json,
    range: std::ops::RangeInclusive<usize>,
    options: impl Fn(usize) -> CallOptions,
) -> Vec<Json> {
    range
        .map(|i| {
            let out = s
                .call_with("compute", &[state.clone(), message(i)], &options(i))
                .expect("the journal records the request");
            assert!(out.is_ok(), "{:?}", out.result);
            let doc = out.to_json();
            *state = doc["result"].clone();
            essence(doc)
        })
        .collect()
}

fn ao_setup(s: &mut JournaledSession) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ao");
    let src = std::fs::read_to_string(fixtures.join("process.lua")).unwrap();
    exec(s, &src);
    exec(
        s,
        &format!("UTILS = {:?}", fixtures.join("utils.lua").to_string_lossy()),
    );
}

#[test]
fn journal_session_ao_interrupted_and_restored_matches_one_uninterrupted_session() {
    for (mode, isolation) in modes() {
        for deterministic in [true, false] {
            let det = deterministic.then_some(Determinism {
                timestamp: 1_700_000_000,
                seed: 42,
            });
            let sandbox = aos(det, isolation.clone());
            let dir = Dir::new("ao");
            let path = dir.file("ao.jsonl");
            let mut s = sandbox
                .session_journaled(JournalWriter::create(&path).unwrap())
                .unwrap();
            ao_setup(&mut s);
            let mut state = json!({});
            let mut restored = drive(&mut s, &mut state, 1..=6, |_| CallOptions::default());
            drop(s);
            let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
            restored.extend(drive(&mut s, &mut state, 7..=10, |_| {
                CallOptions::default()
            }));
            drop(s);

            // One uninterrupted session with the journal's seed and times: drawn when the
            // sandbox was not deterministic, each message then at the time its request
            // line records (messages are requests 3.., after the two of the setup).
            let journal = SessionJournal::read(std::fs::File::open(&path).unwrap(), None).unwrap();
            let used = journal.spec().deterministic;
            assert!(deterministic || used.is_some());
            let times: Vec<Option<i64>> = (1..=10)
                .map(|i| request_time(&path, i as u64 + 2))
                .collect();
            assert!(
                times.iter().all(|t| t.is_some() != deterministic),
                "{mode}, deterministic {deterministic}: {times:?}"
            );
            let reference = aos(used, isolation.clone());
            let mut s = reference
                .session_journaled(JournalWriter::new(std::io::sink()))
                .unwrap();
            ao_setup(&mut s);
            let mut state = json!({});
            let uninterrupted = drive(&mut s, &mut state, 1..=10, |i| match times[i - 1] {
                Some(t) => CallOptions::default().time(t),
                None => CallOptions::default(),
            });
            for (i, (a, b)) in restored.iter().zip(&uninterrupted).enumerate() {
                assert_eq!(
                    a,
                    b,
                    "{mode}, deterministic {deterministic}: message {}",
                    i + 1
                );
            }
            assert_eq!(restored[9]["result"]["last"]["inbox"], json!(10));
        }
    }
}

#[test]
fn journal_session_a_tampered_journal_is_a_mismatch_naming_the_request() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("tamper");
        let path = dir.file("s.jsonl");
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(&mut s, DEFINE);
        call(&mut s, "add", &[json!(1)]);
        call(&mut s, "add", &[json!(2)]);
        drop(s);
        let original = std::fs::read_to_string(&path).unwrap();
        let mut journal: Vec<Json> = original
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Request 3's total, as recorded, changed.
        let response = journal.len() - 1;
        journal[response]["outcome"]["result"]["total"] = json!(-1);
        let edited: String = journal.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, &edited).unwrap();
        let e = moonjail::restore_session(&sandbox, &path, None).unwrap_err();
        assert!(
            matches!(e, JournalError::Mismatch { request: 3, .. }),
            "{mode}: {e:?}"
        );
        let message = e.to_string();
        assert!(message.contains("request 3 (call `add`)"), "{message}");
        assert!(message.contains("/result/total: recorded -1"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited, "{mode}");

        // A tool answer changed: the replayed response differs (its total), the
        // request named.
        let mut journal: Vec<Json> = original
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tool = journal.iter().position(|l| l["type"] == "tool").unwrap();
        journal[tool]["result"] = json!(123_456_789);
        let edited: String = journal.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, &edited).unwrap();
        let e = moonjail::restore_session(&sandbox, &path, None).unwrap_err();
        assert!(
            matches!(e, JournalError::Mismatch { request: 2, .. }),
            "{mode}: {e:?}"
        );
        // A request asking another tool call than recorded.
        let mut journal: Vec<Json> = original
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        journal[tool]["args"] = json!([7]);
        let edited: String = journal.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, &edited).unwrap();
        let e = moonjail::restore_session(&sandbox, &path, None).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("request 2 (call `add`)")
                && message.contains("tool call 1: the journal records `rand.next(7)`")
                && message.contains("asked `rand.next(1)`"),
            "{mode}: {message}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited, "{mode}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}");
    }
}

#[test]
fn journal_session_a_request_without_response_is_dropped_and_the_session_goes_on() {
    let dir = Dir::new("killed");
    let path = dir.file("s.jsonl");
    let calls = Arc::new(AtomicU64::new(0));
    let sandbox = tools(calls.clone()).build().unwrap();
    let mut s = sandbox
        .session_journaled(JournalWriter::create(&path).unwrap())
        .unwrap();
    exec(&mut s, DEFINE);
    let first = call(&mut s, "add", &[json!(1)]);
    drop(s);
    let complete = std::fs::read(&path).unwrap();
    // What a process killed during request 3 leaves: its request line, a tool line, and
    // half of the next line.
    let mut killed = complete.clone();
    killed.extend_from_slice(
        b"{\"type\":\"request\",\"n\":3,\"op\":\"call\",\"function\":\"add\",\"args\":[5]}\n\
          {\"type\":\"tool\",\"step\":1,\"name\":\"rand.next\",\"args\":[5],\"ok\":true,\"result\":7}\n\
          {\"type\":\"respo",
    );
    std::fs::write(&path, &killed).unwrap();
    let journal = SessionJournal::read(&killed[..], None).unwrap();
    assert_eq!((journal.requests(), journal.dropped()), (2, Some(3)));
    let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
    // Cut back to the last complete request.
    assert_eq!(std::fs::read(&path).unwrap(), complete);
    assert_eq!(s.requests(), 2);
    let next = call(&mut s, "add", &[json!(5)]);
    assert_eq!(
        next["result"]["total"].as_i64().unwrap(),
        first["result"]["total"].as_i64().unwrap() + next["result"]["r"].as_i64().unwrap() + 5
    );
    drop(s);
    let lines = lines(&path);
    assert_eq!(lines.last().unwrap()["n"], json!(3));
    assert_eq!(lines.last().unwrap()["type"], json!("response"));
}

#[test]
fn journal_session_a_fork_leaves_the_journal_untouched() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("fork");
        let path = dir.file("s.jsonl");
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(&mut s, DEFINE);
        let recorded: Vec<Json> = (1..=3).map(|k| call(&mut s, "add", &[json!(k)])).collect();
        drop(s);
        let before = std::fs::read(&path).unwrap();
        let journal = SessionJournal::read(&before[..], None).unwrap();

        // A dry run after request 2 (exec + one add): the state is the one after add(1).
        let mut fork = moonjail::fork_session(&sandbox, &journal, Some(2), None).unwrap();
        assert!(!fork.is_journaled());
        let total = fork.eval("total", &CallOptions::default()).unwrap();
        assert_eq!(
            total.result.unwrap(),
            recorded[0]["result"]["total"],
            "{mode}"
        );
        call(&mut fork, "add", &[json!(100)]);
        drop(fork);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{mode}");

        // Recorded into another file: the prefix, then the fork's own requests.
        let new = dir.file("fork.jsonl");
        let mut fork = moonjail::fork_session(
            &sandbox,
            &journal,
            Some(2),
            Some(JournalWriter::create(&new).unwrap()),
        )
        .unwrap();
        call(&mut fork, "add", &[json!(100)]);
        drop(fork);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{mode}");
        let forked = std::fs::read(&new).unwrap();
        let cut = journal_prefix(&before, 2);
        assert!(forked.starts_with(&cut), "{mode}");
        let restored = moonjail::restore_session(&sandbox, &new, None).unwrap();
        assert_eq!(restored.requests(), 3, "{mode}");
        // Past the journal's end: refused.
        let e = moonjail::fork_session(&sandbox, &journal, Some(9), None).unwrap_err();
        assert!(e.to_string().contains("has 4 complete requests"), "{e}");
    }
}

/// The bytes of `journal` up to the end of request `n`'s response line.
fn journal_prefix(journal: &[u8], n: u64) -> Vec<u8> {
    let text = String::from_utf8(journal.to_vec()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        let v: Json = serde_json::from_str(line).unwrap();
        if v["type"] == "response" && v["n"] == json!(n) {
            break;
        }
    }
    out.into_bytes()
}

#[test]
fn journal_session_other_sandboxes_and_journal_kinds_are_refused_clearly() {
    let dir = Dir::new("kinds");
    let path = dir.file("s.jsonl");
    let sandbox = tools(Arc::default()).build().unwrap();
    let mut s = sandbox
        .session_journaled(JournalWriter::create(&path).unwrap())
        .unwrap();
    exec(&mut s, DEFINE);
    // A second recorder of the same file is refused while the first holds it.
    let e = moonjail::restore_session(&sandbox, &path, None).unwrap_err();
    assert!(e.to_string().contains("locked by another process"), "{e}");
    drop(s);
    let before = std::fs::read(&path).unwrap();
    // Another sandbox: other limits, no tools, another profile.
    let other = tools(Arc::default())
        .memory_limit(32 << 20)
        .build()
        .unwrap();
    let e = moonjail::restore_session(&other, &path, None).unwrap_err();
    assert!(e.to_string().contains("at /limits/memory_bytes"), "{e}");
    let bare = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let e = moonjail::restore_session(&bare, &path, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("tools: recorded [\"rand.next\"], this sandbox []"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // `replay` refuses a session journal, restore a run journal.
    let e = moonjail::replay(&before[..], &ReplayOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "journal: this is a session journal; restore it with `moonjail session --restore \
         FILE` (library: moonjail::restore_session)"
    );
    let run = dir.file("run.jsonl");
    let _ = sandbox
        .run_journaled(
            "return 1",
            &Json::Null,
            &Default::default(),
            JournalWriter::create(&run).unwrap(),
        )
        .unwrap();
    let e = moonjail::restore_session(&sandbox, &run, None).unwrap_err();
    assert!(
        matches!(e, JournalError::WrongKind { found: "run", .. }),
        "{e}"
    );
}

#[test]
fn journal_session_the_limit_closes_the_session_and_leaves_a_restorable_journal() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("limit");
        let path = dir.file("s.jsonl");
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap().limit(Some(4096)))
            .unwrap();
        exec(&mut s, DEFINE);
        exec(
            &mut s,
            "function flood() for i = 1, 1000 do rand.next(string.rep('x', 100)) end end",
        );
        let e = s
            .call_with("flood", &[], &CallOptions::default())
            .unwrap_err();
        assert!(
            matches!(e, JournalError::Limit { limit: 4096, .. }),
            "{mode}: {e:?}"
        );
        assert!(calls.load(Ordering::SeqCst) < 100, "{mode}");
        let e = s
            .call_with("add", &[json!(1)], &CallOptions::default())
            .unwrap_err();
        assert!(matches!(e, JournalError::Closed { .. }), "{mode}: {e:?}");
        drop(s);
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        let made = calls.load(Ordering::SeqCst);
        let mut s = moonjail::restore_session(&sandbox, &path, Some(4096)).unwrap();
        assert_eq!(s.requests(), 2, "{mode}");
        assert_eq!(calls.load(Ordering::SeqCst), made, "{mode}");
        call(&mut s, "add", &[json!(1)]);
    }
}

#[test]
fn journal_session_isolated_the_worker_never_holds_the_journal() {
    let dir = Dir::new("isolated");
    let path = dir.file("s.jsonl");
    let sandbox = tools(Arc::default())
        .isolation(isolation())
        .build()
        .unwrap();
    let mut s = sandbox
        .session_journaled(JournalWriter::create(&path).unwrap())
        .unwrap();
    exec(&mut s, DEFINE);
    call(&mut s, "add", &[json!(1)]);
    let pid = s
        .session()
        .worker_pid()
        .expect("an isolated session has a worker");
    assert_ne!(pid, std::process::id());
    // The tool line was written by this process (the supervisor): the worker has no
    // descriptor of the journal.
    let journal = std::fs::canonicalize(&path).unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
    if let Ok(fds) = fds {
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            assert_ne!(target, journal, "the worker holds the journal open");
        }
    }
    // And the script cannot read it either.
    let out = s
        .exec_with(
            format!("return io and io.open({:?})", journal.to_string_lossy()),
            &Json::Null,
            &CallOptions::default(),
        )
        .unwrap();
    assert!(
        out.result
            .as_ref()
            .map_or(true, |r| r.is_null() || r == &json!(false)),
        "{:?}",
        out.result
    );
    assert!(lines(&path).iter().any(|l| l["type"] == "tool"));
}

#[test]
fn journal_session_a_request_stopped_by_its_deadline_restores_to_the_closed_session() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("timeout");
        let path = dir.file("s.jsonl");
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(
            &mut s,
            "function spin() while true do pcall(rand.next, 1) print('x') end end",
        );
        let short = CallOptions::default().timeout(Duration::from_millis(50));
        let out = s.call_with("spin", &[], &short).unwrap();
        assert_eq!(
            out.error().unwrap().kind,
            moonjail::ErrorKind::Timeout,
            "{mode}"
        );
        let refused = s.eval("1", &CallOptions::default()).unwrap();
        assert!(refused
            .error()
            .unwrap()
            .message
            .contains("session was closed"));
        drop(s);
        let made = calls.load(Ordering::SeqCst);
        // How far the replay gets before its deadline (tool calls, output) depends on
        // the clock: compared by the error kind, the session is closed again.
        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), made, "{mode}");
        assert!(!s.session().is_open(), "{mode}");
        let refused = s.eval("1", &CallOptions::default()).unwrap();
        assert!(refused
            .error()
            .unwrap()
            .message
            .contains("session was closed"));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// A real session journal with one byte changed or cut: an error or a journal, never
    /// a panic, and whatever still parses restores (or is refused) without one.
    #[test]
    fn journal_session_damaged_journals_never_panic(at in 0usize..8192, byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
        static JOURNAL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let journal = JOURNAL.get_or_init(|| {
            let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
            struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
            impl std::io::Write for Shared {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let sandbox = tools(Arc::default()).build().unwrap();
            let mut s = sandbox
                .session_journaled(JournalWriter::new(Shared(buffer.clone())))
                .unwrap();
            exec(&mut s, DEFINE);
            call(&mut s, "add", &[json!(1)]);
            s.has_function("add").unwrap().unwrap();
            drop(s);
            let bytes = buffer.lock().unwrap().clone();
            bytes
        });
        let mut damaged = journal.clone();
        let at = at % damaged.len();
        if cut { damaged.truncate(at) } else { damaged[at] = byte }
        if let Ok(parsed) = SessionJournal::parse(damaged) {
            let sandbox = tools(Arc::default()).build().unwrap();
            let _ = moonjail::fork_session(&sandbox, &parsed, None, None);
        }
    }
}

#[test]
fn journal_session_lines_are_written_as_recorded_even_when_a_batch_was_asked() {
    // A response the caller has seen must be in the file: a session journal ignores
    // `Flush::Batch`.
    let dir = Dir::new("batch");
    let path = dir.file("s.jsonl");
    let journal = JournalWriter::create(&path)
        .unwrap()
        .flush(moonjail::Flush::Batch);
    let mut session = Sandbox::builder()
        .build()
        .unwrap()
        .session_journaled(journal)
        .unwrap();
    // Not even fsynced per response (`--journal-fsync end`): still written.
    session.sync_each_response(false);
    exec(&mut session, "x = 41");
    let types: Vec<Json> = lines(&path).iter().map(|l| l["type"].clone()).collect();
    assert_eq!(
        types,
        [json!("session"), json!("request"), json!("response")]
    );
    drop(session);
}

/// Keeps the time each `stamp()` saw in `times`, and answers it with `os.date`'s
/// reading of it (UTC).
const CLOCK: &str = "times = {} function stamp() local t = os.time() times[#times + 1] = t \
    local d = os.date('!*t') return {t = t, hour = d.hour, min = d.min, sec = d.sec} end";

/// What `os.date('!*t')` says of Unix time `t`.
fn utc(t: i64) -> (i64, i64, i64) {
    (
        t.rem_euclid(86_400) / 3600,
        t.rem_euclid(3600) / 60,
        t.rem_euclid(60),
    )
}

fn stamped(doc: &Json) -> (i64, (i64, i64, i64)) {
    let r = &doc["result"];
    let n = |k: &str| r[k].as_i64().unwrap();
    (n("t"), (n("hour"), n("min"), n("sec")))
}

#[test]
fn journal_session_a_drawn_clock_moves_per_request_and_a_restore_replays_each_time() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("clock");
        let path = dir.file("s.jsonl");
        let build = |isolation: Isolation| {
            Sandbox::builder()
                .timeout(Duration::from_secs(10))
                .isolation(isolation)
                .build()
                .unwrap()
        };
        let sandbox = build(isolation);
        let mut s = sandbox
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(&mut s, CLOCK);
        let first = stamped(&call(&mut s, "stamp", &[]));
        // Past the next second: a clock fixed when the session opened would not show it.
        std::thread::sleep(Duration::from_millis(1100));
        let second = stamped(&call(&mut s, "stamp", &[]));
        assert_eq!(s.has_function("stamp").unwrap(), Ok(true));
        drop(s);

        // Requests with their own time make the journal version 2, which a reader of
        // version 1 refuses instead of restoring them at the session's timestamp.
        assert_eq!(lines(&path)[0]["v"], json!(2), "{mode}");
        // Each request read the time its line records, and os.date formats it.
        let opened = lines(&path)[0]["determinism"]["timestamp"]
            .as_i64()
            .unwrap();
        let t1 = request_time(&path, 2).expect("request 2 records its time");
        let t2 = request_time(&path, 3).expect("request 3 records its time");
        assert_eq!(first, (t1, utc(t1)), "{mode}");
        assert_eq!(second, (t2, utc(t2)), "{mode}");
        assert!(
            t2 > opened,
            "{mode}: request 3 started after the session's first second"
        );
        // has_function runs no script: nothing to time.
        assert_eq!(request_time(&path, 4), None, "{mode}");

        // Restored: each request replays at its recorded time (a replay at any other
        // would answer request 3 differently, and the restore would fail), so the state
        // holds both times; a request after the restore reads the current time, which
        // its line records.
        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        let times = s.eval("times", &CallOptions::default()).unwrap();
        assert_eq!(times.result.unwrap(), json!([t1, t2]), "{mode}");
        let third = stamped(&call(&mut s, "stamp", &[]));
        drop(s);
        let t3 = request_time(&path, 6).expect("a request after the restore records its time");
        assert_eq!(third, (t3, utc(t3)), "{mode}");

        // Restored in the other mode, and forked: the same three times.
        let other = if mode == "isolated" {
            Isolation::InProcess
        } else {
            self::isolation()
        };
        let journal = SessionJournal::read(std::fs::File::open(&path).unwrap(), None).unwrap();
        let mut fork = moonjail::fork_session(&build(other), &journal, None, None).unwrap();
        let times = fork.eval("times", &CallOptions::default()).unwrap();
        assert_eq!(times.result.unwrap(), json!([t1, t2, t3]), "{mode}");
    }
}

#[test]
fn journal_session_a_journal_without_request_times_restores_at_the_session_time() {
    for (mode, isolation) in modes() {
        let dir = Dir::new("oldclock");
        let path = dir.file("s.jsonl");
        // A drawn session's journal as written before requests carried their time: a
        // deterministic session's (whose requests have none), marked drawn.
        let timestamp = 1_600_000_000;
        let recorder = Sandbox::builder()
            .timeout(Duration::from_secs(10))
            .deterministic(Some(Determinism { timestamp, seed: 7 }))
            .isolation(isolation.clone())
            .build()
            .unwrap();
        let mut s = recorder
            .session_journaled(JournalWriter::create(&path).unwrap())
            .unwrap();
        exec(&mut s, CLOCK);
        let old = stamped(&call(&mut s, "stamp", &[]));
        drop(s);
        assert_eq!(old, (timestamp, utc(timestamp)), "{mode}");
        let mut journal = lines(&path);
        assert!(
            journal.iter().all(|l| l.get("time").is_none()),
            "{mode}: a deterministic session's requests read its timestamp"
        );
        assert_eq!(journal[0]["v"], json!(1), "{mode}: nothing version 1 lacks");
        journal[0]["determinism"]["drawn"] = json!(true);
        let text: String = journal.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();

        // Restored by a sandbox without determinism (as a drawn session is): the old
        // requests replay at the session's timestamp; new ones read the current time.
        let sandbox = Sandbox::builder()
            .timeout(Duration::from_secs(10))
            .isolation(isolation)
            .build()
            .unwrap();
        let mut s = moonjail::restore_session(&sandbox, &path, None).unwrap();
        let times = s.eval("times", &CallOptions::default()).unwrap();
        assert_eq!(times.result.unwrap(), json!([timestamp]), "{mode}");
        let now = stamped(&call(&mut s, "stamp", &[]));
        drop(s);
        let t = request_time(&path, 4).expect("a request after the restore records its time");
        assert_eq!(now, (t, utc(t)), "{mode}");
        assert_ne!(t, timestamp, "{mode}");
    }
}
