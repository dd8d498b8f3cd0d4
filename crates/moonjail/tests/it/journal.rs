//! Durable runs: `Sandbox::run_journaled` records a run, `moonjail::replay` re-executes it
//! without calling a tool or reading a file, in process and isolated.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moonjail::{
    ErrorKind, Flush, HostFiles, Journal, JournalError, JournalWriter, Outcome, Profile,
    ReplayOptions, RunOptions, Sandbox, SandboxBuilder, ToolError, ToolSpec,
};
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::support::both_modes as modes;

/// A journal kept in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
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

/// A sandbox whose `rand.next` answers a different number on every call (and counts
/// its calls), plus a failing tool and a described one.
fn tools(calls: Arc<AtomicU64>) -> SandboxBuilder {
    Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .tool("rand.next", move |args| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            Ok(json!({"n": n, "noise": nanos, "echo": args}))
        })
        .tool("svc.down", |_| Err(ToolError::new("the service is down")))
        .tool("typed", |args| Ok(Json::Array(args)))
        .describe_tool(
            "typed",
            ToolSpec::new().parameters(json!({"type": "object", "required": ["x"],
                                               "properties": {"x": {"type": "integer"}}})),
        )
}

const SCRIPT: &str = r#"
local a = rand.next("first")
local b = rand.next({k = 2})
local ok, err = pcall(svc.down)
local ok2, err2 = pcall(typed, {x = "not an integer"})
print("time", os.time(), "random", math.random(1, 1000000))
return {a = a, b = b, err = err, err2 = err2, r = math.random()}
"#;

/// The outcome document without what varies between runs (wall times, memory).
fn essence(out: &Outcome) -> Json {
    let mut doc = out.to_json();
    doc.as_object_mut().unwrap().remove("stats");
    if let Some(calls) = doc.get_mut("tool_calls").and_then(Json::as_array_mut) {
        for call in calls {
            call.as_object_mut().unwrap().remove("ms");
        }
    }
    doc
}

fn record(sandbox: &Sandbox, source: &str) -> (Outcome, Vec<u8>) {
    let buffer = Buffer::default();
    let out = sandbox
        .run_journaled(
            source,
            &json!({"who": "me"}),
            &RunOptions::default(),
            JournalWriter::new(buffer.clone()),
        )
        .expect("the journal is written");
    (out, buffer.bytes())
}

fn replay(journal: &[u8], options: &ReplayOptions) -> Outcome {
    moonjail::replay(journal, options).expect("the journal replays")
}

#[test]
fn journal_a_replay_gives_the_recorded_outcome_without_calling_a_tool() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone())
            .isolation(isolation.clone())
            .build()
            .unwrap();
        let (recorded, journal) = record(&sandbox, SCRIPT);
        assert!(recorded.is_ok(), "{mode}: {:?}", recorded.result);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}");
        let options = ReplayOptions::default().isolation(isolation);
        let replayed = replay(&journal, &options);
        assert_eq!(essence(&replayed), essence(&recorded), "{mode}");
        // No tool ran during the replay.
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}");
        // The journal ends with the outcome document.
        let parsed = Journal::parse(&journal).unwrap();
        // rand.next twice, svc.down, and typed, whose schema refused the call: recorded with
        // the arguments as given and the error as the script got it.
        assert_eq!(parsed.tool_calls(), 4, "{mode}");
        assert_eq!(
            parsed.recorded_outcome()["result"],
            recorded.to_json()["result"]
        );
        let result = recorded.result.unwrap();
        assert_eq!(result["err"], json!("svc.down: the service is down"));
        assert!(result["err2"]
            .as_str()
            .unwrap()
            .contains("expected integer"));
    }
}

#[test]
fn journal_lines_are_versioned_json_with_the_source_hash() {
    let sandbox = tools(Arc::default()).build().unwrap();
    let (_, journal) = record(&sandbox, SCRIPT);
    assert!(journal.starts_with(br#"{"v":1,"type":"start","#));
    let lines: Vec<Json> = journal
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let start = &lines[0];
    assert_eq!(
        (start["v"].clone(), start["type"].clone()),
        (json!(1), json!("start"))
    );
    assert_eq!(start["source"]["text"], json!(SCRIPT));
    assert_eq!(start["source"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(start["input"], json!({"who": "me"}));
    assert_eq!(start["determinism"]["drawn"], json!(true));
    assert_eq!(start["spec"]["profile"], json!("standard"));
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["start", "tool", "tool", "tool", "tool", "end"]);
    assert_eq!(lines[1]["name"], json!("rand.next"));
    assert!(String::from_utf8_lossy(&journal)
        .lines()
        .skip(1)
        .all(|l| l.starts_with(r#"{"type":""#)));
    assert_eq!(lines[1]["args"], json!(["first"]));
    assert_eq!(lines[3]["error"], json!("the service is down"));
    assert_eq!(lines[4]["args"], json!([{"x": "not an integer"}]));
    assert!(lines[4]["error"]
        .as_str()
        .unwrap()
        .contains("expected integer"));
    assert_eq!(lines[5]["outcome"]["ok"], json!(true));
    // The calls are recorded once: the tool lines, not an audit in `end` as well.
    assert!(
        lines[5]["outcome"].get("tool_calls").is_none(),
        "{}",
        lines[5]
    );
}

#[test]
fn journal_an_end_line_with_the_audit_of_the_calls_is_still_compared() {
    // Journals written before `end` left `tool_calls` out hold the audit there: they
    // replay as before, and the audit is compared.
    let sandbox = tools(Arc::default()).build().unwrap();
    let (recorded, journal) = record(&sandbox, SCRIPT);
    let with_audit = |audit: Json| -> Vec<u8> {
        let text = String::from_utf8(journal.clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut end: Json = serde_json::from_str(lines.last().unwrap()).unwrap();
        end["outcome"]["tool_calls"] = audit;
        *lines.last_mut().unwrap() = end.to_string();
        (lines.join("\n") + "\n").into_bytes()
    };
    let audit = recorded.to_json()["tool_calls"].clone();
    assert_eq!(audit.as_array().map(Vec::len), Some(4), "{audit}");
    let replayed = replay(&with_audit(audit.clone()), &ReplayOptions::default());
    assert_eq!(essence(&replayed), essence(&recorded));
    let mut forged = audit;
    forged[0]["bytes_out"] = json!(999);
    let err = moonjail::replay(&with_audit(forged)[..], &ReplayOptions::default())
        .map(|o| o.error().map(|e| (e.kind, e.message.clone())));
    let Ok(Some((kind, message))) = err else {
        panic!("a divergence: {err:?}")
    };
    assert_eq!(kind, moonjail::ErrorKind::ReplayDivergence, "{message}");
    assert!(message.contains("/tool_calls/0/bytes_out"), "{message}");
}

#[test]
fn journal_an_edited_source_diverges_at_the_step_that_differs() {
    for (mode, isolation) in modes() {
        let sandbox = tools(Arc::default()).build().unwrap();
        let (_, journal) = record(&sandbox, SCRIPT);
        let edited = SCRIPT.replace("{k = 2}", "{k = 3}");
        let options = ReplayOptions::default().isolation(isolation).source(edited);
        let out = replay(&journal, &options);
        let e = out.error().expect("a divergence");
        assert_eq!(e.kind, ErrorKind::ReplayDivergence, "{mode}: {e:?}");
        assert!(e.message.starts_with("step 2 (tool call 2)"), "{mode}: {e}");
        // Where the script asked: the line of the second call.
        assert_eq!(e.line, Some(3), "{mode}: {e:?}");
        assert!(e.message.contains(r#"records `rand.next({"k":2})`"#), "{e}");
        assert!(e.message.contains(r#"asked `rand.next({"k":3})`"#), "{e}");
        assert_eq!(ErrorKind::ReplayDivergence.as_str(), "replay_divergence");
    }
}

#[test]
fn journal_another_tool_one_call_too_many_or_too_few_diverge() {
    let sandbox = tools(Arc::default()).build().unwrap();
    let (_, journal) = record(&sandbox, "return rand.next(1), rand.next(2)");
    let cases = [
        (
            "return rand.next(1), typed{x = 1}",
            "step 2",
            "asked `typed({\"x\":1})`",
        ),
        (
            "return rand.next(1), rand.next(2), rand.next(3)",
            "step 3",
            "records only 2 tool calls",
        ),
        ("return rand.next(1)", "step 2", "ended after 1 tool call"),
        // A script that fails before the recorded call says why it ended there.
        (
            "local a = rand.next(1) return rand.other(2)",
            "step 2",
            "ended after 1 tool call, with the error: ",
        ),
        // A divergence caught by pcall still ends the replay.
        (
            "pcall(rand.next, 9) while true do end",
            "step 1",
            "asked `rand.next(9)`",
        ),
    ];
    for (source, step, fragment) in cases {
        let out = replay(&journal, &ReplayOptions::default().source(source));
        let e = out.error().expect("a divergence");
        assert_eq!(e.kind, ErrorKind::ReplayDivergence, "{source}: {e:?}");
        assert!(e.message.starts_with(step), "{source}: {e}");
        assert!(e.message.contains(fragment), "{source}: {e}");
    }
}

#[test]
fn journal_host_modules_and_files_are_replayed_from_their_recorded_content() {
    let dir = std::env::temp_dir().join(format!("moonjail-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("greet.lua"), "return {word = 'hello'}").unwrap();
    let data = dir.join("data.txt");
    std::fs::write(&data, "line one\n").unwrap();
    let data = data.to_str().unwrap().to_string();
    let source = format!(
        "local g = require('greet') local f = io.open({data:?}) local t = f:read('a') \
         f:close() return g.word .. ' ' .. t"
    );
    for (mode, isolation) in modes() {
        let sandbox = Sandbox::builder()
            .profile(Profile::Aos)
            .host_files(HostFiles::default().modules_dir(&dir).allow_read(&data))
            .isolation(isolation.clone())
            .build()
            .unwrap();
        std::fs::write(dir.join("greet.lua"), "return {word = 'hello'}").unwrap();
        std::fs::write(&data, "line one\n").unwrap();
        let (recorded, journal) = record(&sandbox, &source);
        assert_eq!(
            recorded.result.as_ref().unwrap(),
            &json!("hello line one\n"),
            "{mode}"
        );
        // The files change (or vanish): the replay reads the journal, not them.
        std::fs::write(dir.join("greet.lua"), "return {word = 'changed'}").unwrap();
        std::fs::remove_file(&data).unwrap();
        let replayed = replay(
            &journal,
            &ReplayOptions::default().isolation(isolation.clone()),
        );
        assert_eq!(essence(&replayed), essence(&recorded), "{mode}");
        // A file the recorded run did not read is a divergence.
        let other = replay(
            &journal,
            &ReplayOptions::default()
                .isolation(isolation.clone())
                .source("return require('other')"),
        );
        let e = other.error().unwrap();
        assert_eq!(e.kind, ErrorKind::ReplayDivergence, "{mode}: {e:?}");
        assert!(e.message.contains("module `other`"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn journal_the_size_limit_stops_the_run() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).isolation(isolation).build().unwrap();
        let buffer = Buffer::default();
        let result = sandbox.run_journaled(
            "while true do rand.next(string.rep('x', 100)) end",
            &Json::Null,
            &RunOptions::default(),
            JournalWriter::new(buffer.clone()).limit(Some(4096)),
        );
        match result {
            Err(JournalError::Limit {
                limit: 4096,
                finished: false,
            }) => {}
            other => panic!("{mode}: expected the journal limit, got {other:?}"),
        }
        let written = buffer.bytes();
        assert!(written.len() <= 4096, "{mode}: {} bytes", written.len());
        // Every call that ran is in the journal, but for the one that crossed the limit.
        let recorded = written
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            - 1;
        let made = calls.load(Ordering::SeqCst) as usize;
        assert!(
            made == recorded || made == recorded + 1,
            "{mode}: {made} vs {recorded}"
        );
        // And the journal, left without its end line, does not replay.
        let e = moonjail::replay(&written[..], &ReplayOptions::default()).unwrap_err();
        assert!(e.to_string().contains("no \"end\" line"), "{mode}: {e}");

        // A call whose arguments alone would pass the limit is not made at all.
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = tools(calls.clone()).build().unwrap();
        let result = sandbox.run_journaled(
            "return rand.next(string.rep('x', 5000))",
            &Json::Null,
            &RunOptions::default(),
            JournalWriter::new(Buffer::default()).limit(Some(4096)),
        );
        assert!(
            matches!(
                result,
                Err(JournalError::Limit {
                    finished: false,
                    ..
                })
            ),
            "{mode}: {result:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{mode}");

        // A run that ends, but whose outcome does not fit, says so.
        let result = sandbox.run_journaled(
            "print(string.rep('x', 5000)) return 1",
            &Json::Null,
            &RunOptions::default(),
            JournalWriter::new(Buffer::default()).limit(Some(4096)),
        );
        match result {
            Err(e @ JournalError::Limit { finished: true, .. }) => {
                assert!(e.to_string().contains("the run finished"), "{mode}: {e}")
            }
            other => panic!("{mode}: expected an unrecorded outcome, got {other:?}"),
        }
    }
}

#[test]
fn journal_a_deterministic_sandbox_keeps_its_time_and_seed() {
    let sandbox = Sandbox::builder()
        .deterministic(Some(moonjail::Determinism {
            timestamp: 1_700_000_000,
            seed: 7,
        }))
        .build()
        .unwrap();
    let (recorded, journal) = record(&sandbox, "return os.time(), math.random(1, 1000)");
    let plain = sandbox.run("return os.time(), math.random(1, 1000)", &Json::Null);
    assert_eq!(essence(&recorded), essence(&plain));
    let parsed = Journal::parse(&journal).unwrap();
    assert_eq!(parsed.spec().deterministic.unwrap().seed, 7);
    assert_eq!(
        essence(&replay(&journal, &ReplayOptions::default())),
        essence(&recorded)
    );
}

#[test]
fn journal_truncated_corrupt_and_oversized_journals_are_clear_errors() {
    let sandbox = tools(Arc::default()).build().unwrap();
    let (_, journal) = record(&sandbox, SCRIPT);
    let text = String::from_utf8(journal.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "the journal is empty"),
        (b"not json\n".to_vec(), "line 1: not JSON"),
        (lines[1..].join("\n").into_bytes(), "not a \"start\" line"),
        (lines[..3].join("\n").into_bytes(), "no \"end\" line"),
        // Cut inside the last line.
        (journal[..journal.len() - 10].to_vec(), "not JSON"),
        (
            text.replacen("\"v\":1", "\"v\":99", 1).into_bytes(),
            "journal version 99",
        ),
        (
            text.replacen("\"v\":1", "\"v\":3", 1).into_bytes(),
            "journal version 3; this moonjail reads versions 1 to 2",
        ),
        (
            text.replacen("\"type\":\"tool\"", "\"type\":\"teleport\"", 1)
                .into_bytes(),
            "unknown line type",
        ),
        (
            text.replacen("rand.next(\\\"first\\\")", "rand.next(\\\"last\\\")", 1)
                .into_bytes(),
            "does not match its sha256",
        ),
        (
            format!("{text}{}\n", lines[1]).into_bytes(),
            "after the \"end\" line",
        ),
    ];
    for (bytes, fragment) in cases {
        let e = moonjail::replay(&bytes[..], &ReplayOptions::default()).unwrap_err();
        assert!(
            matches!(e, JournalError::Corrupt { .. }),
            "{fragment}: {e:?}"
        );
        assert!(e.to_string().contains(fragment), "{fragment}: {e}");
    }
    let e = moonjail::replay(&journal[..], &ReplayOptions::default().limit(Some(100))).unwrap_err();
    assert!(matches!(e, JournalError::TooLarge { limit: 100 }), "{e:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes as a journal: an error or a journal, never a panic.
    #[test]
    fn journal_arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Journal::parse(&bytes);
    }

    /// A real journal with one byte changed or cut: never a panic, and the replay of
    /// whatever still parses runs to an outcome.
    #[test]
    fn journal_damaged_journals_never_panic(at in 0usize..4096, byte in any::<u8>(), cut in any::<bool>()) {
        static JOURNAL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let journal = JOURNAL.get_or_init(|| {
            let sandbox = tools(Arc::default()).build().unwrap();
            record(&sandbox, SCRIPT).1
        });
        let mut damaged = journal.clone();
        let at = at % damaged.len();
        if cut { damaged.truncate(at) } else { damaged[at] = byte }
        if let Ok(parsed) = Journal::parse(&damaged) {
            let _ = moonjail::replay_journal(&parsed, &ReplayOptions::default());
        }
    }
}

/// The audit of a run's calls without their times.
fn audit(out: &Outcome) -> Vec<(String, bool, Option<String>, u64, u64)> {
    out.tool_calls
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.ok,
                c.error.clone(),
                c.bytes_in,
                c.bytes_out,
            )
        })
        .collect()
}

/// A journaled run takes its audit's sizes from the text of its `tool` lines instead of
/// serialising the arguments and answers again: they must be the sizes an unjournaled
/// run measures, whatever the strings hold (escapes, multi-byte characters), for failed,
/// refused and deep calls too.
#[test]
fn journal_a_recorded_run_audits_its_calls_as_an_unrecorded_one() {
    let script = r#"
        local s = (...).s
        local r = {tools.echo(s, {[s] = s, n = 1.5, list = {1, -2, true}}, nil, "x")}
        r[#r + 1] = select(2, pcall(tools.fail, s))
        r[#r + 1] = select(2, pcall(typed, {x = s}))
        r[#r + 1] = select(2, pcall(tools.deep))
        r[#r + 1] = tools.echo()
        return r
    "#;
    for (mode, isolation) in modes() {
        let sandbox = Sandbox::builder()
            .isolation(isolation)
            .tool("tools.echo", |args| Ok(Json::Array(args)))
            .tool("tools.fail", |args| {
                Err(ToolError::new(format!("no: {}", args[0])))
            })
            .tool("tools.deep", |_| {
                Ok((0..300).fold(json!("bottom \"\u{1}"), |v, _| json!([v])))
            })
            .tool("typed", |args| Ok(Json::Array(args)))
            .describe_tool(
                "typed",
                ToolSpec::new().parameters(json!({"type": "object",
                    "properties": {"x": {"type": "integer"}}})),
            )
            .deterministic(Some(moonjail::Determinism {
                timestamp: 0,
                seed: 1,
            }))
            .build()
            .unwrap();
        for s in [
            "plain",
            "quote \" back \\ nl \n tab \t nul \u{0} del \u{7f}",
            "é中😀",
            "",
        ] {
            let input = json!({"s": s});
            let plain = sandbox.run_with(script, &input, &RunOptions::default());
            let buffer = Buffer::default();
            let journaled = sandbox
                .run_journaled(
                    script,
                    &input,
                    &RunOptions::default(),
                    JournalWriter::new(buffer.clone()),
                )
                .expect("journaled");
            assert!(plain.is_ok(), "{mode}: {:?}", plain.result);
            assert_eq!(audit(&journaled), audit(&plain), "{mode}: {s:?}");
            assert_eq!(audit(&plain).len(), 5, "{mode}");
            assert!(audit(&plain)[0].4 > 0, "{mode}");
            assert_eq!(journaled.result.ok(), plain.result.ok(), "{mode}");
            // The sizes are those of the recorded arguments' and answers' text.
            let lines = buffer.bytes();
            let calls = lines
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Json>(l).ok())
                .filter(|l| l["type"] == "tool")
                .collect::<Vec<_>>();
            for (line, call) in calls.iter().zip(&journaled.tool_calls) {
                let len = |v: &Json| serde_json::to_vec(v).unwrap().len() as u64;
                assert_eq!(call.bytes_in, len(&line["args"]), "{mode}: {line}");
                if call.ok {
                    assert_eq!(call.bytes_out, len(&line["result"]), "{mode}: {line}");
                }
            }
        }
    }
}

/// A writer counting the `write` calls that reach it.
#[derive(Clone, Default)]
struct Counted(Buffer, Arc<AtomicU64>);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn journal_batched_lines_are_written_together_and_replay_the_same() {
    let sandbox = Sandbox::builder()
        .tool("kv.get", |args| Ok(json!({"key": args[0].clone(), "v": 1})))
        .build()
        .unwrap();
    let script = "local n = 0 for i = 1, 200 do n = n + kv.get('k' .. i).v end return n";
    let record = |flush: Flush| {
        let out = Counted::default();
        let journal = JournalWriter::new(out.clone()).flush(flush);
        let outcome = sandbox
            .run_journaled(script, &Json::Null, &RunOptions::default(), journal)
            .expect("journaled");
        assert_eq!(outcome.result.as_ref().ok(), Some(&json!(200)));
        (out.0.bytes(), out.1.load(Ordering::SeqCst))
    };
    let (lines, line_writes) = record(Flush::Line);
    let (batched, batch_writes) = record(Flush::Batch);
    // start, 200 tool lines, end: a write each, or a few writes in all.
    assert!(line_writes >= 202, "{line_writes}");
    assert!(batch_writes < 100, "{batch_writes} writes for 202 lines");
    // The same lines (the seeds drawn for each run aside).
    let count = |j: &[u8]| j.iter().filter(|b| **b == b'\n').count();
    assert_eq!(count(&batched), count(&lines));
    assert_eq!(count(&batched), 202);
    let replayed = replay(&batched, &ReplayOptions::default());
    assert_eq!(replayed.result.ok(), Some(json!(200)));
}

#[test]
fn journal_a_batched_journal_stopped_by_its_limit_keeps_its_whole_lines() {
    let sandbox = Sandbox::builder()
        .tool("kv.get", |_| Ok(json!("x".repeat(100))))
        .tool_quota(moonjail::ToolQuota::default().per_run(None))
        .build()
        .unwrap();
    let out = Buffer::default();
    let journal = JournalWriter::new(out.clone())
        .limit(Some(20_000))
        .flush(Flush::Batch);
    let err = sandbox
        .run_journaled(
            "while true do kv.get() end",
            &Json::Null,
            &RunOptions::default(),
            journal,
        )
        .expect_err("the limit stops the run");
    assert!(matches!(err, JournalError::Limit { .. }), "{err}");
    let bytes = out.bytes();
    // Every line gathered before the limit was written, whole, when the run ended.
    assert!(
        bytes.len() > 19_000 && bytes.len() <= 20_000,
        "{}",
        bytes.len()
    );
    assert!(bytes.ends_with(b"\n"));
    let text = String::from_utf8(bytes).unwrap();
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<Json>(l).is_ok()));
}

/// A writer that takes `room` bytes, then fails every write.
struct Full {
    room: usize,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("no space left"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn journal_without_the_end_fsync_still_reports_a_failed_last_write() {
    // With `fsync_end(false)` the end line is written (and its batch with it) before the
    // run returns, and a failure to write it is the run's error: a writer's drop, which
    // would also write it, could only swallow the failure.
    let sandbox = Sandbox::builder()
        .tool("kv.get", |_| Ok(json!(1)))
        .build()
        .unwrap();
    let script = "for i = 1, 3 do kv.get() end return 'done'";
    let whole = Buffer::default();
    let journal = JournalWriter::new(whole.clone());
    let outcome = sandbox
        .run_journaled(script, &Json::Null, &RunOptions::default(), journal)
        .expect("journaled");
    assert!(outcome.is_ok());
    let size = whole.bytes().len();
    let end_line = whole
        .bytes()
        .split(|b| *b == b'\n')
        .rev()
        .nth(1)
        .unwrap()
        .len()
        + 1;
    for flush in [Flush::Line, Flush::Batch] {
        // Room for everything but the end line: Line fails on it, Batch on the one
        // write of the whole journal at the end.
        let journal = JournalWriter::new(Full {
            room: size - end_line,
        })
        .flush(flush)
        .fsync_end(false);
        let err = sandbox
            .run_journaled(script, &Json::Null, &RunOptions::default(), journal)
            .expect_err("the end line does not fit the writer");
        assert!(
            matches!(&err, JournalError::Io(e) if e.to_string().contains("no space")),
            "{flush:?}: {err}"
        );
    }
    // And with room, the journal is whole when the run returns.
    let out = Buffer::default();
    let journal = JournalWriter::new(out.clone())
        .flush(Flush::Batch)
        .fsync_end(false);
    let outcome = sandbox
        .run_journaled(
            "kv.get() return 'done'",
            &Json::Null,
            &RunOptions::default(),
            journal,
        )
        .expect("journaled");
    assert_eq!(outcome.result.ok(), Some(json!("done")));
    let replayed = replay(&out.bytes(), &ReplayOptions::default());
    assert_eq!(replayed.result.ok(), Some(json!("done")));
}
