//! Suspension at a deferred tool call and resumption from the journal
//! (`SandboxBuilder::defer_tool`, `Sandbox::resume`), in process and isolated.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moonjail::{
    ErrorKind, Isolation, Journal, JournalError, JournalWriter, Outcome, ReplayOptions, RunOptions,
    Sandbox, ToolError, ToolSpec,
};
use serde_json::{json, Value as Json};

use crate::support::both_modes as modes;

/// A payment agent's sandbox: `payments.send` is deferred (a person approves it),
/// `rates.get` is a live tool that counts its calls.
fn sandbox(isolation: Isolation, calls: Arc<AtomicU64>) -> Sandbox {
    Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .instruction_limit(10_000_000)
        .isolation(isolation)
        .tool("rates.get", move |args| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"rate": 2, "call": n, "echo": args}))
        })
        .defer_tool("payments.send")
        .describe_tool(
            "payments.send",
            ToolSpec::new().parameters(json!({"type": "object", "required": ["to", "amount"],
                "properties": {"to": {"type": "string"}, "amount": {"type": "number"}}})),
        )
        .build()
        .expect("a sandbox")
}

const PLAN: &str = r#"
local rate = rates.get("EUR").rate
print("planning", rate)
local receipt = payments.send({to = "alice", amount = 10 * rate})
print("sent", receipt.id)
local ok, err = pcall(payments.send, {to = "bob", amount = 1})
print("second", ok, err)
local again = rates.get("USD")
return {receipt = receipt.id, second = ok and err.id or err, calls = again.call}
"#;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "moonjail-suspend-{}-{name}-{:?}.jsonl",
        std::process::id(),
        std::thread::current().id()
    ))
}

fn journaled(sandbox: &Sandbox, path: &PathBuf) -> Outcome {
    sandbox
        .run_journaled(
            PLAN,
            &json!(null),
            &RunOptions::default(),
            JournalWriter::create(path).expect("a journal file"),
        )
        .expect("the journal is written")
}

fn error(out: &Outcome) -> &moonjail::Error {
    out.result.as_ref().expect_err("the run did not finish")
}

#[test]
fn suspend_a_deferred_call_stops_the_run_with_the_pending_call() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = sandbox(isolation, Arc::clone(&calls));
        let path = temp("pending");
        let out = journaled(&sandbox, &path);
        let e = error(&out);
        assert_eq!(e.kind, ErrorKind::Suspended, "{mode}: {e:?}");
        assert_eq!(
            e.value.as_ref().expect("the pending call"),
            &json!({"name": "payments.send", "args": [{"to": "alice", "amount": 20}]}),
            "{mode}"
        );
        assert_eq!(e.line, Some(4), "{mode}: stopped at the call");
        // Nothing after the call ran: not its print, not the next tool call.
        assert_eq!(out.output, "planning\t2\n", "{mode}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{mode}");
        let journal = Journal::read(std::fs::File::open(&path).unwrap(), None).unwrap();
        let pending = journal.pending().expect("a suspended journal");
        assert_eq!((pending.step, pending.name.as_str()), (2, "payments.send"));
        assert_eq!(journal.deferred(), ["payments.send".to_string()]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with(r#"{"type":"suspend","step":2"#),
            "{text}"
        );
        // A replay of a suspended journal stops where the recorded run did.
        let again = moonjail::replay(text.as_bytes(), &ReplayOptions::default()).unwrap();
        assert_eq!(error(&again).kind, ErrorKind::Suspended, "{mode}");
        assert_eq!(error(&again).value, e.value, "{mode}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{mode}: the replay called nothing"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn suspend_a_catching_script_cannot_go_on() {
    let sandbox = Sandbox::builder().defer_tool("ask").build().unwrap();
    let out = sandbox.run(
        "local ok = pcall(ask, 1) print('went on', ok) return 'finished'",
        &json!(null),
    );
    let e = error(&out);
    assert_eq!(e.kind, ErrorKind::Suspended, "{e:?}");
    assert_eq!(out.output, "", "nothing ran after the deferred call");
    // Arguments the schema refuses are the script's error: no suspension.
    let typed = Sandbox::builder()
        .defer_tool("ask")
        .describe_tool(
            "ask",
            ToolSpec::new().parameters(json!({"type": "object", "required": ["q"]})),
        )
        .build()
        .unwrap();
    let out = typed.run("return pcall(ask, {})", &json!(null));
    assert_eq!(out.result.unwrap(), json!(false), "{:?}", out.output);
}

#[test]
fn suspend_resume_in_a_new_sandbox_finishes_with_the_answer() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let path = temp("resume");
        let first = sandbox(isolation.clone(), Arc::clone(&calls));
        let out = journaled(&first, &path);
        assert_eq!(error(&out).kind, ErrorKind::Suspended, "{mode}");
        drop(first);
        // Another sandbox (as another process would build it) resumes with the answer.
        let second = sandbox(isolation.clone(), Arc::clone(&calls));
        let out = second
            .resume(&path, Ok(json!({"id": "tx-1"})))
            .expect("resumed");
        // The next deferred call suspends again.
        let e = error(&out);
        assert_eq!(e.kind, ErrorKind::Suspended, "{mode}: {e:?}");
        assert_eq!(
            e.value.as_ref().unwrap()["args"],
            json!([{"to": "bob", "amount": 1}])
        );
        assert_eq!(out.output, "planning\t2\nsent\ttx-1\n", "{mode}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{mode}: the prefix was replayed"
        );
        // Refused: the person says no. The script sees a tool error.
        let out = second
            .resume(&path, Err(ToolError::new("declined by the approver")))
            .expect("resumed again");
        assert_eq!(
            out.result.as_ref().unwrap(),
            &json!({"receipt": "tx-1", "second": "payments.send: declined by the approver",
                    "calls": 1}),
            "{mode}: {:?}",
            out.result
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "{mode}: one live call after it"
        );
        assert_eq!(out.tool_calls.len(), 4, "{mode}: the whole run's calls");
        assert!(out.stats.instructions.unwrap() > 0);
        // The journal is now a finished run's: it replays to the same outcome, and cannot
        // be resumed again.
        let replayed = moonjail::replay(
            std::fs::File::open(&path).unwrap(),
            &ReplayOptions::default(),
        )
        .unwrap();
        assert_eq!(replayed.result, out.result, "{mode}");
        assert_eq!(replayed.output, out.output, "{mode}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}");
        assert!(matches!(
            second.resume(&path, Ok(json!(1))),
            Err(JournalError::NotSuspended)
        ));
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn suspend_resume_gives_the_uninterrupted_runs_outcome() {
    // The same script with the deferred tool answered at once (a live tool) gives what
    // suspension and resumption give.
    let calls = Arc::new(AtomicU64::new(0));
    let live = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .instruction_limit(10_000_000)
        .tool("rates.get", {
            let calls = Arc::clone(&calls);
            move |args| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"rate": 2, "call": n, "echo": args}))
            }
        })
        .tool("payments.send", |args| {
            Ok(json!({"id": format!("tx-{}", args[0]["to"].as_str().unwrap())}))
        })
        .build()
        .unwrap();
    let straight = live.run(PLAN, &json!(null));
    let calls = Arc::new(AtomicU64::new(0));
    let deferred = sandbox(Isolation::InProcess, calls);
    let path = temp("same");
    let _ = journaled(&deferred, &path);
    let _ = deferred
        .resume(&path, Ok(json!({"id": "tx-alice"})))
        .unwrap();
    let resumed = deferred.resume(&path, Ok(json!({"id": "tx-bob"}))).unwrap();
    assert_eq!(resumed.result, straight.result);
    assert_eq!(resumed.output, straight.output);
    assert_eq!(resumed.stats.instructions, straight.stats.instructions);
    assert_eq!(resumed.tool_calls.len(), straight.tool_calls.len());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_resume_of_an_edited_script_reports_the_divergence_and_appends_nothing() {
    let calls = Arc::new(AtomicU64::new(0));
    let sandbox = sandbox(Isolation::InProcess, calls);
    let path = temp("diverge");
    let _ = journaled(&sandbox, &path);
    // The pending call recorded with other arguments: the script no longer matches.
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(r#""amount":20"#, r#""amount":99"#);
    std::fs::write(&path, &edited).unwrap();
    let out = sandbox.resume(&path, Ok(json!({"id": "x"}))).unwrap();
    let e = error(&out);
    assert_eq!(e.kind, ErrorKind::ReplayDivergence, "{e:?}");
    assert!(
        e.message.contains("step 2") && e.message.contains("99"),
        "{e:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_a_plain_run_reports_the_pending_call_too() {
    let sandbox = Sandbox::builder().defer_tool("approve").build().unwrap();
    let out = sandbox.run("return approve('deploy', 3)", &json!(null));
    let e = error(&out);
    assert_eq!(e.kind, ErrorKind::Suspended);
    assert_eq!(
        e.value,
        Some(json!({"name": "approve", "args": ["deploy", 3]}))
    );
    assert_eq!(out.to_json()["error"]["kind"], json!("suspended"));
}

/// Drives a started run to its end, answering each deferred call with `answer(call)`.
fn drive(mut run: moonjail::Run, mut answer: impl FnMut(&moonjail::Pending) -> Json) -> Outcome {
    loop {
        match run {
            moonjail::Run::Finished(outcome) => return outcome,
            moonjail::Run::Suspended(s) => {
                let a = answer(s.pending());
                run = s.resume(Ok(a));
            }
        }
    }
}

#[test]
fn suspend_in_memory_resume_gives_the_journal_resumes_outcome() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox_like =
            |_: &Sandbox| self::sandbox(isolation.clone(), Arc::new(AtomicU64::new(0)));
        let sandbox = sandbox(isolation.clone(), Arc::clone(&calls));
        let mut seen = Vec::new();
        let run = sandbox.start(PLAN, &json!(null), &RunOptions::default());
        let memory = drive(run, |p| {
            seen.push((p.name.clone(), p.args.clone()));
            json!({"id": format!("tx-{}", p.args[0]["to"].as_str().unwrap())})
        });
        assert_eq!(seen.len(), 2, "{mode}");
        assert_eq!(seen[1].1, vec![json!({"to": "bob", "amount": 1})], "{mode}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{mode}: no call repeated");
        // Through a journal file, resumed twice (a fresh counter: `calls` is in the result).
        let sandbox = sandbox_like(&sandbox);
        let path = temp("memory");
        let _ = journaled(&sandbox, &path);
        let _ = sandbox
            .resume(&path, Ok(json!({"id": "tx-alice"})))
            .unwrap();
        let file = sandbox.resume(&path, Ok(json!({"id": "tx-bob"}))).unwrap();
        assert_eq!(memory.result, file.result, "{mode}");
        assert_eq!(memory.output, file.output, "{mode}");
        assert_eq!(memory.stats.instructions, file.stats.instructions, "{mode}");
        assert_eq!(memory.tool_calls.len(), file.tool_calls.len(), "{mode}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn suspend_in_memory_time_spent_suspended_is_not_the_runs() {
    // A 300 ms deadline, suspended for 600 ms: the run still finishes, and its wall time
    // does not count the wait. Isolated, both clocks stop: the worker's own (it would
    // end the run as a timeout) and the supervisor's (it would kill the worker).
    for (mode, isolation) in modes() {
        let sandbox = Sandbox::builder()
            .timeout(Duration::from_millis(300))
            .isolation(isolation)
            .defer_tool("ask")
            .tool("plain", |_| Ok(json!(2)))
            .build()
            .unwrap();
        let run = sandbox.start(
            "local a = ask() local n = 0 for i = 1, 1000 do n = n + i end \
             return a + n + plain() + ask()",
            &json!(null),
            &RunOptions::default(),
        );
        let out = drive(run, |_| {
            std::thread::sleep(Duration::from_millis(600));
            json!(1)
        });
        assert_eq!(
            out.result.clone().unwrap(),
            json!(500_504),
            "{mode}: {:?}",
            out.result
        );
        // Had the waits counted, the wall time would be 1.2 s at least (and the deadline
        // would have passed).
        assert!(
            out.stats.wall < Duration::from_millis(600),
            "{mode}: {:?}",
            out.stats.wall
        );
        // The deadline still holds for the script's own time.
        let run = sandbox.start(
            "ask() while true do end",
            &json!(null),
            &RunOptions::default(),
        );
        let out = drive(run, |_| json!(1));
        assert_eq!(out.result.unwrap_err().kind, ErrorKind::Timeout, "{mode}");
    }
}

#[test]
fn suspend_in_memory_isolated_a_waiting_run_does_not_hold_up_the_pool() {
    // One worker in the pool, held by a run waiting for a person: other runs still get a
    // worker (the waiting one left the pool's count), and the waiting run then finishes
    // in its own worker, not replayed in another.
    let calls = Arc::new(AtomicU64::new(0));
    let sandbox = sandbox(crate::support::one_worker(), Arc::clone(&calls));
    let suspension = match sandbox.start(PLAN, &json!(null), &RunOptions::default()) {
        moonjail::Run::Suspended(s) => s,
        moonjail::Run::Finished(o) => panic!("not suspended: {o:?}"),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let other = sandbox.clone();
    std::thread::spawn(move || {
        let _ = tx.send(other.run("return 6 * 7", &json!(null)));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a run while another waits at a deferred call");
    assert_eq!(out.result.unwrap(), json!(42));
    let out = drive(
        moonjail::Run::Suspended(suspension),
        |p| json!({"id": format!("tx-{}", p.args[0]["to"].as_str().unwrap())}),
    );
    assert_eq!(
        out.result.unwrap(),
        json!({"receipt": "tx-alice", "second": "tx-bob", "calls": 1})
    );
    assert!(
        out.output
            .starts_with("planning\t2\nsent\ttx-alice\nsecond\ttrue\t"),
        "{}",
        out.output
    );
    // Each live `rates.get` call ran once. (That the run waited in its worker, frozen,
    // rather than being replayed: `tools_isolated.rs::a_worker_waiting_at_a_deferred_call_is_frozen`.)
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The waiting run's worker rejoined the pool, or was retired for the one spawned
    // meanwhile: the pool is back to its size.
    assert!(sandbox.wait_for_idle_workers(1, Duration::from_secs(30)));
    assert_eq!(
        sandbox.run("return 1", &json!(null)).result.unwrap(),
        json!(1)
    );
}

#[test]
fn suspend_in_memory_a_run_given_up_ends_and_a_run_without_deferred_calls_finishes() {
    let sandbox = Sandbox::builder()
        .defer_tool("ask")
        .tool("plain", |_| Ok(json!(7)))
        .build()
        .unwrap();
    match sandbox.start("return ask()", &json!(null), &RunOptions::default()) {
        moonjail::Run::Suspended(s) => drop(s),
        moonjail::Run::Finished(o) => panic!("not suspended: {o:?}"),
    }
    let out = sandbox
        .start("return plain() * 6", &json!(null), &RunOptions::default())
        .finished()
        .expect("finished");
    assert_eq!(out.result.unwrap(), json!(42));
    // An error answer is the tool's error.
    let run = sandbox.start(
        "local ok, e = pcall(ask) return e",
        &json!(null),
        &RunOptions::default(),
    );
    let out = match run {
        moonjail::Run::Suspended(s) => s.resume(Err(ToolError::new("no"))).finished().unwrap(),
        moonjail::Run::Finished(o) => panic!("not suspended: {o:?}"),
    };
    assert_eq!(out.result.unwrap(), json!("ask: no"));
}

#[test]
fn suspend_a_replay_whose_outcome_differs_from_the_end_line_is_a_divergence() {
    // An edited `end` line stands for a run that depended on something the journal does
    // not hold: the replay asks the same calls but does not give the recorded outcome.
    let sandbox = Sandbox::builder()
        .tool("n", |_| Ok(json!(3)))
        .build()
        .unwrap();
    let path = temp("end");
    let out = sandbox
        .run_journaled(
            "return {n = n()}",
            &json!(null),
            &RunOptions::default(),
            JournalWriter::create(&path).unwrap(),
        )
        .unwrap();
    assert_eq!(out.result.unwrap(), json!({"n": 3}));
    let same = moonjail::replay(
        std::fs::File::open(&path).unwrap(),
        &ReplayOptions::default(),
    )
    .unwrap();
    assert!(same.is_ok(), "{:?}", same.result);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(r#""result":{"n":3}"#, r#""result":{"n":4}"#);
    assert_ne!(text, edited);
    let out = moonjail::replay(edited.as_bytes(), &ReplayOptions::default()).unwrap();
    let e = error(&out);
    assert_eq!(e.kind, ErrorKind::ReplayDivergence, "{e:?}");
    assert!(
        e.message.contains("/result/n: recorded 4, replayed 3"),
        "{}",
        e.message
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_resume_refuses_a_journal_of_another_sandbox() {
    // A journal is untrusted: resuming runs the rest live under this sandbox's own
    // limits, tools and quota, so a journal recorded (or edited) with others is refused.
    let calls = Arc::new(AtomicU64::new(0));
    let recorded = sandbox(Isolation::InProcess, Arc::clone(&calls));
    let path = temp("other");
    let _ = journaled(&recorded, &path);
    let looser = Sandbox::builder()
        .timeout(Duration::from_secs(60))
        .instruction_limit(10_000_000)
        .tool("rates.get", |_| Ok(json!({"rate": 2})))
        .defer_tool("payments.send")
        .build()
        .unwrap();
    let e = looser.resume(&path, Ok(json!({"id": 1}))).unwrap_err();
    assert!(matches!(e, JournalError::Sandbox(_)), "{e}");
    assert!(e.to_string().contains("/limits"), "{e}");
    let fewer = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .instruction_limit(10_000_000)
        .defer_tool("payments.send")
        .build()
        .unwrap();
    let e = fewer.resume(&path, Ok(json!({"id": 1}))).unwrap_err();
    assert!(e.to_string().contains("tools: recorded"), "{e}");
    // An edited limit in the journal is the same mismatch.
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("10000000", "99999999", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, &edited).unwrap();
    let e = recorded.resume(&path, Ok(json!({"id": 1}))).unwrap_err();
    assert!(matches!(e, JournalError::Sandbox(_)), "{e}");
    // A `suspend` line whose step does not follow the calls before it is corrupt.
    std::fs::write(
        &path,
        text.replace(
            r#""type":"suspend","step":2"#,
            r#""type":"suspend","step":7"#,
        ),
    )
    .unwrap();
    let e = recorded.resume(&path, Ok(json!({"id": 1}))).unwrap_err();
    assert!(matches!(e, JournalError::Corrupt { .. }), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing ran live");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_two_resumes_at_once_run_the_rest_once() {
    // The first resume holds the journal while its live tool runs; the second is refused.
    let entered = Arc::new(std::sync::Barrier::new(2));
    let release = Arc::new(std::sync::Barrier::new(2));
    let build = |entered: Arc<std::sync::Barrier>, release: Arc<std::sync::Barrier>| {
        Sandbox::builder()
            .defer_tool("approve")
            .tool("slow.send", move |_| {
                entered.wait();
                release.wait();
                Ok(json!("sent"))
            })
            .build()
            .unwrap()
    };
    let sb = build(Arc::clone(&entered), Arc::clone(&release));
    let path = temp("twice");
    let out = sb
        .run_journaled(
            "approve() return slow.send()",
            &json!(null),
            &RunOptions::default(),
            JournalWriter::create(&path).unwrap(),
        )
        .unwrap();
    assert_eq!(error(&out).kind, ErrorKind::Suspended);
    let first = {
        let sb = sb.clone();
        let path = path.clone();
        std::thread::spawn(move || sb.resume(&path, Ok(json!(true))))
    };
    entered.wait();
    let second = sb.resume(&path, Ok(json!(true)));
    assert!(
        matches!(&second, Err(e) if e.to_string().contains("locked")),
        "{second:?}"
    );
    release.wait();
    let done = first.join().unwrap().unwrap();
    assert_eq!(done.result.unwrap(), json!("sent"));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_the_resuming_sandboxs_interrupt_check_stops_the_run() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sb = {
        let stop = Arc::clone(&stop);
        Sandbox::builder()
            .defer_tool("approve")
            .interrupt_check(Duration::from_millis(5), move || {
                stop.load(Ordering::SeqCst)
            })
            .build()
            .unwrap()
    };
    let path = temp("interrupt");
    let _ = sb
        .run_journaled(
            "approve() while true do end",
            &json!(null),
            &RunOptions::default(),
            JournalWriter::create(&path).unwrap(),
        )
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let out = sb.resume(&path, Ok(json!(true))).unwrap();
    assert_eq!(error(&out).kind, ErrorKind::Interrupted);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn suspend_in_memory_a_run_abandoned_gives_its_outcome_with_output_and_statistics() {
    for (mode, isolation) in modes() {
        let calls = Arc::new(AtomicU64::new(0));
        let sandbox = sandbox(isolation, calls);
        let suspension = match sandbox.start(PLAN, &json!(null), &RunOptions::default()) {
            moonjail::Run::Suspended(s) => s,
            moonjail::Run::Finished(o) => panic!("{mode}: not suspended: {o:?}"),
        };
        let out = suspension.abandon();
        let e = error(&out);
        assert_eq!(e.kind, ErrorKind::Suspended, "{mode}: {e:?}");
        assert_eq!(e.value.as_ref().unwrap()["name"], json!("payments.send"));
        // What the script did before the deferred call is in the outcome, as in the
        // outcome of a plain run of the same script.
        assert_eq!(out.output, "planning\t2\n", "{mode}");
        assert!(out.stats.wall > Duration::ZERO, "{mode}");
        let plain = sandbox.run(PLAN, &json!(null));
        let names =
            |o: &Outcome| -> Vec<String> { o.tool_calls.iter().map(|c| c.name.clone()).collect() };
        assert_eq!(names(&out), ["rates.get", "payments.send"], "{mode}");
        assert_eq!(names(&out), names(&plain), "{mode}");
        assert_eq!(out.output, plain.output, "{mode}");
        assert_eq!(e.message, error(&plain).message, "{mode}");
    }
}
