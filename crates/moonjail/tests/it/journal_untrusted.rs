//! Journals are untrusted input (`moonjail replay`, `resume`, `session --restore`): real
//! journals mutated line by line and field by field give a clean error or an outcome with
//! a stable error kind, never a panic, an `internal` error, a call to a real tool or a
//! read of a real file before the journal's pending call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moonjail::{
    CallOptions, Determinism, ErrorKind, HostFiles, Journal, JournalError, JournalWriter, Outcome,
    Profile, ReplayOptions, RunOptions, Sandbox, SessionJournal, ToolError,
};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

/// What the real host files hold once the seeds are recorded: a replay that shows it
/// read one, not the journal.
const MARKER: &str = "REAL-FILE-READ";

const MEMORY: usize = 8 << 20;
const INSTRUCTIONS: u64 = 2_000_000;

/// A journal kept in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// The sandbox the seeds are recorded in, and resumed and restored into, with its count
/// of real tool calls.
struct Fixture {
    sandbox: Sandbox,
    sessions: Sandbox,
    calls: Arc<AtomicU64>,
    seeds: Vec<Vec<u8>>,
}

/// The fixture's sandbox; with the deferred tool `ask.human` for runs (a session cannot
/// have one).
fn sandbox(dir: &std::path::Path, calls: &Arc<AtomicU64>, deferred: bool) -> Sandbox {
    let data = dir.join("data.txt");
    let (a, b) = (Arc::clone(calls), Arc::clone(calls));
    let builder = Sandbox::builder()
        .profile(Profile::Aos)
        .memory_limit(MEMORY)
        .timeout(Duration::from_secs(2))
        .instruction_limit(INSTRUCTIONS)
        .deterministic(Some(Determinism {
            timestamp: 1_764_250_000,
            seed: 42,
        }))
        .host_files(
            HostFiles::default()
                .modules_dir(dir)
                .allow_read(data.to_str().unwrap()),
        )
        .tool("rng.next", move |args| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"n": n, "echo": args}))
        })
        .tool("svc.down", move |_| {
            b.fetch_add(1, Ordering::SeqCst);
            Err(ToolError::new("the service is down"))
        });
    match deferred {
        true => builder.defer_tool("ask.human"),
        false => builder,
    }
    .build()
    .unwrap()
}

const DEFERRED: &str = r#"
local a = rng.next(1)
local yes = ask.human({amount = 10, to = "alice"})
local b = rng.next(2)
return {a = a, yes = yes, b = b}
"#;

/// Records the seeds: a run with tool calls and host reads, a suspended run, the same
/// resumed, and a session.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("moonjail-untrusted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data.txt");
        std::fs::write(dir.join("greet.lua"), "return {word = 'hello'}").unwrap();
        std::fs::write(&data, "line one\n").unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let sessions = sandbox(&dir, &calls, false);
        let sandbox = sandbox(&dir, &calls, true);
        let record = |source: &str| {
            let buffer = Buffer::default();
            let out = sandbox
                .run_journaled(
                    source,
                    &json!({"who": "me"}),
                    &RunOptions::default(),
                    JournalWriter::new(buffer.clone()),
                )
                .unwrap();
            let kind = out.error().map(|e| e.kind);
            assert!(
                kind.is_none() || kind == Some(ErrorKind::Suspended),
                "{:?}",
                out.result
            );
            buffer.bytes()
        };
        let tools = record(&format!(
            "local a = rng.next('first') local b = rng.next({{k = 2, l = {{1, 2.5}}}}) \
             local ok, err = pcall(svc.down) local g = require('greet') \
             local f = io.open({:?}) local t = f:read('a') f:close() \
             print(a.n, b.n, err) return {{a = a, b = b, err = err, g = g.word, t = t, \
             time = os.time(), r = math.random(1, 100)}}",
            data.to_str().unwrap()
        ));
        let suspended = record(DEFERRED);
        let resumed = {
            let parsed = Journal::parse(&suspended).unwrap();
            let buffer = Buffer(Arc::new(Mutex::new(suspended.clone())));
            let out = sandbox
                .resume_journal(&parsed, Ok(json!(true)), JournalWriter::new(buffer.clone()))
                .unwrap();
            assert!(out.is_ok(), "{:?}", out.result);
            buffer.bytes()
        };
        let session = {
            let buffer = Buffer::default();
            let mut s = sessions
                .session_journaled(JournalWriter::new(buffer.clone()))
                .unwrap();
            let none = CallOptions::default();
            let defined = s
                .exec_with(
                    "n = 0 function bump(k) n = n + k return {n = n, r = rng.next(n)} end",
                    &Json::Null,
                    &none,
                )
                .unwrap();
            assert!(defined.is_ok(), "{:?}", defined.result);
            for out in [
                s.call_with("bump", &[json!(2)], &none).unwrap(),
                s.exec_with(
                    "word = require('greet').word return ...",
                    &json!({"x": 1}),
                    &none,
                )
                .unwrap(),
            ] {
                assert!(out.is_ok(), "{:?}", out.result);
            }
            assert!(s.eval("n * 10 + #word", &none).unwrap().is_ok());
            assert!(s.has_function("bump").unwrap().unwrap());
            drop(s);
            buffer.bytes()
        };
        // From now on a real read shows in the outcome.
        std::fs::write(
            dir.join("greet.lua"),
            format!("return {{word = '{MARKER}'}}"),
        )
        .unwrap();
        std::fs::write(&data, MARKER).unwrap();
        calls.store(0, Ordering::SeqCst);
        Fixture {
            sandbox,
            sessions,
            calls,
            seeds: vec![tools, suspended, resumed, session],
        }
    })
}

/// Whether a journal asks for no more than the fixture's limits (a replay runs under the
/// journal's own: a test would otherwise wait on a journal that asks for an hour).
fn bounded(limits: &moonjail::Limits) -> bool {
    limits.memory_bytes.is_some_and(|m| m <= MEMORY)
        && limits.instructions.is_some_and(|i| i <= INSTRUCTIONS)
}

fn check(what: &str, out: &Outcome) -> Result<(), TestCaseError> {
    if let Some(e) = out.error() {
        prop_assert_ne!(e.kind, ErrorKind::Internal, "{}: {}", what, e.message);
    }
    let doc = out.to_json().to_string();
    prop_assert!(
        !doc.contains(MARKER),
        "{}: a real file was read: {}",
        what,
        doc
    );
    Ok(())
}

/// The contract, for one journal: parsed as a run journal and as a session journal,
/// then replayed and resumed, or forked and restored from a file, where it parses.
fn contract(bytes: &[u8], isolated: bool) -> Result<(), TestCaseError> {
    let f = fixture();
    // One journal at a time: the count of real calls is the fixture's, for every test.
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let before = f.calls.load(Ordering::SeqCst);
    let real = || f.calls.load(Ordering::SeqCst) - before;
    if let Ok(journal) = Journal::parse(bytes) {
        if !bounded(&journal.spec().limits) {
            return Ok(());
        }
        let mut options = ReplayOptions::default();
        if isolated {
            options = options.isolation(crate::support::one_worker());
        }
        if let Ok(out) = moonjail::replay_journal(&journal, &options) {
            check("replay", &out)?;
        }
        prop_assert_eq!(real(), 0, "a replay called a real tool");
        if journal.pending().is_some() {
            let writer = JournalWriter::new(std::io::sink()).limit(Some(1 << 20));
            match f.sandbox.resume_journal(&journal, Ok(json!(true)), writer) {
                Ok(out) => {
                    check("resume", &out)?;
                    // Live calls come after the pending one only.
                    let after = (out.tool_calls.len() as u64)
                        .saturating_sub(journal.tool_calls() as u64 + 1);
                    prop_assert!(real() <= after, "{} real calls, {} after", real(), after);
                }
                Err(e) => prop_assert!(!matches!(e, JournalError::Io(_)), "{e}"),
            }
        }
    }
    if let Ok(session) = SessionJournal::parse(bytes.to_vec()) {
        if !bounded(&session.spec().limits) {
            return Ok(());
        }
        let writer = JournalWriter::new(std::io::sink()).limit(Some(1 << 20));
        if let Err(e) = moonjail::fork_session(&f.sessions, &session, None, Some(writer)) {
            prop_assert!(!e.to_string().contains(MARKER), "{e}");
        }
        // As `session --restore FILE` does: from the file, which it then cuts after the
        // last complete request.
        let path = std::env::temp_dir().join(format!(
            "moonjail-untrusted-{}-restore.jsonl",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        if let Err(e) = moonjail::restore_session(&f.sessions, &path, Some(1 << 20)) {
            prop_assert!(!e.to_string().contains(MARKER), "{e}");
        }
        let _ = std::fs::remove_file(&path);
        prop_assert_eq!(real(), 0, "a restore called a real tool");
    }
    Ok(())
}

#[test]
fn journal_untrusted_the_seeds_replay_as_recorded() {
    let f = fixture();
    for (i, seed) in f.seeds.iter().enumerate() {
        contract(seed, false).unwrap();
        if let Ok(journal) = Journal::parse(seed) {
            let out = moonjail::replay_journal(&journal, &ReplayOptions::default()).unwrap();
            let kind = out.error().map(|e| e.kind);
            assert!(
                kind.is_none() || kind == Some(ErrorKind::Suspended),
                "seed {i}: {:?}",
                out.result
            );
        } else {
            let session = SessionJournal::parse(seed.clone()).unwrap();
            moonjail::fork_session(&f.sessions, &session, None, None).unwrap();
        }
    }
}

/// The lines of a journal (without the newline that ends the last).
fn lines(journal: &[u8]) -> Vec<Json> {
    journal
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn join(lines: &[Json]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend(serde_json::to_vec(line).unwrap());
        out.push(b'\n');
    }
    out
}

#[test]
fn journal_untrusted_a_huge_timeout_is_refused_not_a_panic() {
    let f = fixture();
    for seed in [&f.seeds[0], &f.seeds[3]] {
        let mut lines = lines(seed);
        lines[0]["spec"]["limits"]["timeout"] = json!({"secs": u64::MAX, "nanos": 999_999_999});
        let bytes = join(&lines);
        if let Ok(journal) = Journal::parse(&bytes) {
            // Over the default ceiling; under its own limits, refused as a limit no
            // sandbox takes.
            let out = moonjail::replay_journal(&journal, &ReplayOptions::default());
            assert!(
                matches!(out, Err(JournalError::Ceiling(_))),
                "{:?}",
                out.map(|o| o.result)
            );
            let trusted = ReplayOptions::default().ceiling(None);
            let out = moonjail::replay_journal(&journal, &trusted);
            assert!(
                matches!(out, Err(JournalError::Config(_))),
                "{:?}",
                out.map(|o| o.result)
            );
        }
        if let Ok(session) = SessionJournal::parse(bytes) {
            let e = moonjail::fork_session(&f.sessions, &session, None, None).unwrap_err();
            assert!(matches!(e, JournalError::Session(_)), "{e:?}");
        }
    }
}

#[test]
fn journal_untrusted_a_journal_without_limits_is_refused_unless_trusted() {
    // A journal is replayed under the limits it records, and those are its claim: no
    // timeout, no memory limit and `while true do end` would hold the replaying process
    // for ever. The default ceiling refuses it, naming the limit; trusted, it replays.
    let f = fixture();
    let mut lines = self::lines(&f.seeds[0]);
    let limits = &mut lines[0]["spec"]["limits"];
    for (field, value) in [
        ("timeout", json!(null)),
        ("memory_bytes", json!(null)),
        ("instructions", json!(null)),
    ] {
        limits[field] = value;
    }
    let journal = Journal::parse(&join(&lines)).expect("a valid journal");
    match moonjail::replay_journal(&journal, &ReplayOptions::default()) {
        Err(JournalError::Ceiling(why)) => {
            assert!(why.contains("timeout limit (none)"), "{why}");
            assert!(why.contains("--trust-limits"), "{why}");
        }
        other => panic!("{:?}", other.map(|o| o.result)),
    }
    // Each limit on its own: memory past the ceiling too, and a source without a size
    // limit (only the journal's size bounded it).
    let refused_for = |field: &str, value: Json, named: &str| -> Journal {
        let mut lines = self::lines(&f.seeds[0]);
        lines[0]["spec"]["limits"][field] = value;
        let journal = Journal::parse(&join(&lines)).expect("a valid journal");
        let out = moonjail::replay_journal(&journal, &ReplayOptions::default());
        assert!(
            matches!(&out, Err(JournalError::Ceiling(why)) if why.contains(named)),
            "{field}: {:?}",
            out.map(|o| o.result)
        );
        journal
    };
    let journal = refused_for("memory_bytes", json!(2u64 << 30), "memory limit");
    refused_for("source_bytes", json!(null), "source-limit");
    let trusted = ReplayOptions::default().ceiling(None);
    let out = moonjail::replay_journal(&journal, &trusted).expect("replayed");
    assert!(out
        .error()
        .is_none_or(|e| e.kind != moonjail::ErrorKind::Internal));
}

/// One edit of a journal.
#[derive(Debug, Clone)]
enum Mutation {
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Cut the journal's bytes here (modulo its length).
    Truncate(usize),
    /// Set the value at a path picked among every path of the line (any depth).
    Set(usize, usize, Json),
    /// Give the value at a path another type, keeping its content (`[v]`, or its text).
    Retype(usize, usize, bool),
    /// Remove the value at a path (a field, or an element of a list).
    Remove(usize, usize),
    /// The first line's `v`.
    Version(Json),
    /// An unknown field, on the line or on an object inside it.
    Unknown(usize, usize, String, Json),
}

fn value() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        prop_oneof![Just(u64::MAX), Just(0), Just(1), Just(2)].prop_map(Json::from),
        Just(json!(-1)),
        Just(json!(1e308)),
        Just(json!(0.5)),
        "[a-z.]{0,8}".prop_map(Json::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = || 0usize..64;
    prop_oneof![
        1 => i().prop_map(Mutation::Drop),
        1 => i().prop_map(Mutation::Duplicate),
        1 => (i(), i()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        3 => (i(), any::<usize>(), value()).prop_map(|(l, f, v)| Mutation::Set(l, f, v)),
        2 => (i(), any::<usize>(), any::<bool>()).prop_map(|(l, f, s)| Mutation::Retype(l, f, s)),
        2 => (i(), any::<usize>()).prop_map(|(l, f)| Mutation::Remove(l, f)),
        1 => value().prop_map(Mutation::Version),
        3 => (i(), any::<usize>(), "[a-z_]{1,6}", value())
            .prop_map(|(l, f, k, v)| Mutation::Unknown(l, f, k, v)),
    ]
}

/// Every path in `v` (object keys and array indexes), outermost first.
fn paths(v: &Json, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &Json)> = match v {
        Json::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (k, child) in children {
        at.push(k);
        out.push(at.clone());
        paths(child, at, out);
        at.pop();
    }
}

fn at_path<'a>(v: &'a mut Json, path: &[String]) -> Option<&'a mut Json> {
    path.iter().try_fold(v, |v, k| match v {
        Json::Object(m) => m.get_mut(k),
        Json::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
        _ => None,
    })
}

/// The value at the path numbered `k` (modulo their number) of `line`.
fn picked(line: &mut Json, k: usize) -> Option<&mut Json> {
    let mut all = Vec::new();
    paths(line, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return None;
    }
    let path = all.swap_remove(k % all.len());
    at_path(line, &path)
}

/// Recomputes every blob's `sha256` (`{"sha256", "text"}`), so that an edited source or
/// content gets past the hash check.
fn rehash(v: &mut Json) {
    use sha2::{Digest, Sha256};
    match v {
        Json::Object(m) => {
            if let (Some(Json::String(text)), true) = (m.get("text"), m.contains_key("sha256")) {
                let digest = Sha256::digest(text.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                m.insert("sha256".into(), json!(hex));
            }
            m.values_mut().for_each(rehash);
        }
        Json::Array(a) => a.iter_mut().for_each(rehash),
        _ => {}
    }
}

fn mutate(seed: &[u8], mutations: &[Mutation], fix: bool) -> Vec<u8> {
    let mut lines = lines(seed);
    let mut cut = None;
    for m in mutations {
        let n = lines.len().max(1);
        match m.clone() {
            Mutation::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) if !lines.is_empty() => {
                let line = lines[i % n].clone();
                lines.insert(i % n, line);
            }
            Mutation::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Mutation::Truncate(at) => cut = Some(at),
            Mutation::Set(l, k, value) if !lines.is_empty() => {
                if let Some(slot) = picked(&mut lines[l % n], k) {
                    *slot = value;
                }
            }
            Mutation::Retype(l, k, text) if !lines.is_empty() => {
                if let Some(slot) = picked(&mut lines[l % n], k) {
                    *slot = if text {
                        Json::String(slot.to_string())
                    } else {
                        json!([slot.clone()])
                    };
                }
            }
            Mutation::Remove(l, k) if !lines.is_empty() => {
                let line = &mut lines[l % n];
                let mut all = Vec::new();
                paths(line, &mut Vec::new(), &mut all);
                if let Some((last, parent)) = all
                    .get(k % all.len().max(1))
                    .and_then(|path| path.split_last())
                {
                    match at_path(line, parent) {
                        Some(Json::Object(m)) => {
                            m.remove(last);
                        }
                        Some(Json::Array(a)) => {
                            if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                                a.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Version(v) if !lines.is_empty() => lines[0]["v"] = v,
            Mutation::Unknown(l, k, key, value) if !lines.is_empty() => {
                let line = &mut lines[l % n];
                let target = if k % 2 == 0 {
                    Some(line)
                } else {
                    picked(line, k)
                };
                if let Some(Json::Object(m)) = target {
                    m.insert(key, value);
                }
            }
            _ => {}
        }
    }
    if fix {
        lines.iter_mut().for_each(rehash);
    }
    let mut bytes = join(&lines);
    if let Some(at) = cut {
        bytes.truncate(at % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A real journal (a run with tool calls and host reads, a suspended run, the same
    /// resumed, a session) with lines dropped, duplicated, swapped, cut at any byte, a
    /// field changed in value or type, another version, unknown fields: an error or an
    /// outcome, never a panic, an `internal` error, a real tool called or a real file
    /// read. One case in ten replays isolated.
    #[test]
    fn journal_untrusted_mutated_journals_keep_the_contract(
        seed in 0usize..4,
        mutations in proptest::collection::vec(mutation(), 1..3),
        fix in any::<bool>(),
        isolated in proptest::bool::weighted(0.1),
    ) {
        let f = fixture();
        let bytes = mutate(&f.seeds[seed], &mutations, fix);
        contract(&bytes, isolated)?;
    }
}

#[test]
fn journal_untrusted_a_suspend_line_of_a_tool_not_deferred_is_corrupt() {
    let f = fixture();
    let mut lines = lines(&f.seeds[1]);
    lines[0].as_object_mut().unwrap().remove("deferred");
    let e = Journal::parse(&join(&lines)).unwrap_err();
    assert!(matches!(e, JournalError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("does not list as deferred"), "{e}");
}
