//! The host's interrupt check (`SandboxBuilder::interrupt_check`), in process and
//! isolated: it is asked on the calling thread, it stops what a timeout stops (and
//! nothing a script does can hold it up), a check that never says stop changes nothing,
//! and a session goes on after an interrupted call. These tests count calls and never
//! assert how fast anything was.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use crate::support::{guarded, unusable, WORKER};
use moonjail::{
    ConfigError, ErrorKind, Isolation, Outcome, ProcessConfig, Sandbox, SandboxBuilder, WorkerPath,
};
use serde_json::{json, Value as Json};

/// A run or a call that has not come back after this long hangs: the test fails.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// How often the checks here are asked.
const EVERY: Duration = Duration::from_millis(2);

/// `spin` loops for ever on line 3.
const SPIN: &str = "local x = 0\nfunction spin()\n  while true do x = x + 1 end\nend\nspin()\n";

/// A check that says stop on its `nth` call after it is armed, once; it counts its
/// calls and records the threads that made them.
#[derive(Clone, Default)]
struct Trigger {
    /// Calls left before it says stop (0: it never does).
    countdown: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    threads: Arc<Mutex<Vec<ThreadId>>>,
}

impl Trigger {
    fn after(nth: usize) -> Trigger {
        let trigger = Trigger::default();
        trigger.arm(nth);
        trigger
    }

    fn arm(&self, nth: usize) {
        self.countdown.store(nth, Ordering::SeqCst);
    }

    fn check(&self) -> impl Fn() -> bool + Send + Sync + Clone + 'static {
        let me = self.clone();
        move || {
            me.calls.fetch_add(1, Ordering::SeqCst);
            me.threads.lock().unwrap().push(std::thread::current().id());
            let left = me.countdown.load(Ordering::SeqCst);
            match left {
                0 => false,
                1 => {
                    me.countdown.store(0, Ordering::SeqCst);
                    true
                }
                n => {
                    me.countdown.store(n - 1, Ordering::SeqCst);
                    false
                }
            }
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn kind(out: &Outcome) -> Option<ErrorKind> {
    out.error().map(|e| e.kind)
}

/// Runs `source` on a thread of its own: the outcome, and that thread's id.
fn run_on_thread(sb: &Sandbox, source: &'static str) -> (Outcome, ThreadId) {
    let sb = sb.clone();
    guarded(HANG_GUARD, move || {
        (sb.run(source, &Json::Null), std::thread::current().id())
    })
}

#[test]
fn an_endless_loop_is_interrupted_on_the_calling_thread() {
    let trigger = Trigger::default();
    for (mode, sb) in with_trigger(&trigger, |b| b.no_timeout()) {
        trigger.arm(3);
        let before = trigger.calls();
        trigger.threads.lock().unwrap().clear();
        let (out, thread) = run_on_thread(&sb, SPIN);
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
        let e = out.error().unwrap();
        assert_eq!(
            e.message, "interrupted: the host stopped the run (at line 3 in function 'spin')",
            "{mode}"
        );
        assert_eq!(e.line, Some(3), "{mode}");
        assert_eq!(
            e.traceback.first().and_then(|f| f.function.as_deref()),
            Some("spin"),
            "{mode}: {e:?}"
        );
        // Asked until it said stop (once as the run started, then every period), and not
        // once more; always on the thread that called `run`.
        assert_eq!(trigger.calls() - before, 3, "{mode}");
        let threads = trigger.threads.lock().unwrap();
        assert!(threads.iter().all(|t| *t == thread), "{mode}: {threads:?}");
    }
}

/// Isolated mode for these tests. A layer this machine cannot apply is allowed to be
/// missing (the worker still runs, and still answers the signal to stop); the tests of
/// the layers themselves are in `isolated.rs`.
fn isolated_config() -> Isolation {
    let missing = unusable();
    if !missing.is_empty() {
        eprintln!("interrupt: isolated runs here lack the layers {missing:?}");
    }
    Isolation::Process(
        ProcessConfig::builder()
            .worker(WorkerPath::Path(WORKER.into()))
            .allow_missing(missing)
            .pool_size(1)
            .prespawn(0)
            .build()
            .unwrap(),
    )
}

/// Both modes, each with `trigger` as the check, on top of `configure`.
fn with_trigger(
    trigger: &Trigger,
    configure: impl Fn(SandboxBuilder) -> SandboxBuilder,
) -> Vec<(&'static str, Sandbox)> {
    let builder = || configure(Sandbox::builder().interrupt_check(EVERY, trigger.check()));
    vec![
        ("in process", builder().build().unwrap()),
        (
            "isolated",
            builder().isolation(isolated_config()).build().unwrap(),
        ),
    ]
}

/// What a script can do to outlast a stop: catch it, run in a coroutine, close a
/// variable, loop inside one library call.
const HOLDOUTS: &[&str] = &[
    "local ok, e = pcall(function() while true do end end) return ok, e",
    "while true do pcall(function() while true do end end) end",
    "while true do xpcall(function() while true do end end, \
     function() while true do end end) end",
    "local co = coroutine.wrap(function() while true do end end) co()",
    "while true do local co = coroutine.create(function() while true do end end) \
     coroutine.resume(co) end",
    "local gen = coroutine.wrap(function() while true do coroutine.yield(1) end end) \
     while true do gen() end",
    "do local x <close> = setmetatable({}, {__close = function() while true do end end}) \
     while true do end end",
    // One library call that never ends: only its own checkpoints can see the stop.
    "table.move({}, 1, math.maxinteger - 1, 1)",
    "table.concat(setmetatable({}, {__index = table.concat}), '', 1, math.maxinteger)",
    "while true do local s = ('ab'):rep(4096) s = s:upper():reverse() end",
    "string.find(('a'):rep(40), ('a*'):rep(40) .. 'b')",
    "local t = {} for i = 1, 1000 do t[i] = i end \
     table.sort(t, function(a, b) while true do end end)",
];

#[test]
fn nothing_a_script_does_holds_up_an_interrupt() {
    let trigger = Trigger::default();
    for (mode, sb) in with_trigger(&trigger, |b| b.no_timeout()) {
        for source in HOLDOUTS {
            trigger.arm(3);
            let sb = sb.clone();
            let out = guarded(HANG_GUARD, move || sb.run(source, &Json::Null));
            assert_eq!(
                kind(&out),
                Some(ErrorKind::Interrupted),
                "{mode}: {source}: {out:?}"
            );
            assert!(out.result.is_err(), "{mode}: {source}");
        }
    }
}

/// Long enough that a check every 2 ms is asked many times.
const BUSY: &[&str] = &[
    "local s = 0 for i = 1, 3000000 do s = s + i % 7 end return s",
    "local co = coroutine.wrap(function() local i = 0 while true do i = i + 1 \
     coroutine.yield(i) end end) local s = 0 for _ = 1, 200000 do s = s + co() end return s",
    "local t = {} for i = 1, 50000 do t[i] = (i * 7919) % 50021 end table.sort(t) \
     return #table.concat(t, ','), select('#', table.unpack(t, 1, 5000)), \
     #(('xy'):rep(100000):upper()), (('a'):rep(20000) .. 'b'):find('a*b')",
    "local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end \
     return fib(24)",
];

#[test]
fn a_check_that_never_stops_changes_nothing() {
    let quiet = Trigger::default();
    let limit = 10_000_000_000;
    let with = with_trigger(&quiet, |b| b.no_timeout().instruction_limit(limit));
    let without = [
        Sandbox::builder()
            .no_timeout()
            .instruction_limit(limit)
            .build()
            .unwrap(),
        Sandbox::builder()
            .no_timeout()
            .instruction_limit(limit)
            .isolation(isolated_config())
            .build()
            .unwrap(),
    ];
    for ((mode, checked), plain) in with.into_iter().zip(without) {
        for source in BUSY {
            let before = quiet.calls();
            let a = guarded(HANG_GUARD, {
                let sb = checked.clone();
                move || sb.run(source, &Json::Null)
            });
            let b = guarded(HANG_GUARD, {
                let sb = plain.clone();
                move || sb.run(source, &Json::Null)
            });
            assert!(a.is_ok(), "{mode}: {source}: {a:?}");
            assert_eq!(a.result, b.result, "{mode}: {source}");
            assert_eq!(a.more_results, b.more_results, "{mode}: {source}");
            assert!(a.stats.instructions.is_some(), "{mode}: {source}");
            assert_eq!(
                a.stats.instructions, b.stats.instructions,
                "{mode}: {source}: the count moved with a check"
            );
            // It was asked (as the run started, at least), and always said go on.
            assert!(quiet.calls() > before, "{mode}: {source}");
        }
        // Without an instruction limit too (no count hook: the check hooks the
        // coroutines for its polls, and unhooks them again).
        for source in BUSY {
            let sb = checked.with_spec(no_budget(&checked)).unwrap();
            let reference = plain.with_spec(no_budget(&plain)).unwrap();
            let out = guarded(HANG_GUARD, move || sb.run(source, &Json::Null));
            let expected = guarded(HANG_GUARD, move || reference.run(source, &Json::Null));
            assert!(out.is_ok(), "{mode}: {source}: {out:?}");
            assert_eq!(out.result, expected.result, "{mode}: {source}");
            assert_eq!(out.more_results, expected.more_results, "{mode}: {source}");
        }
    }
    assert!(
        quiet.calls() > 2 * BUSY.len() * 2,
        "the check was asked during the runs too, not only as they started: {}",
        quiet.calls()
    );
}

fn no_budget(sb: &Sandbox) -> moonjail::Spec {
    let mut spec = sb.spec().clone();
    spec.limits.instructions = None;
    spec
}

#[test]
fn a_timeout_and_an_interrupt_each_win_when_they_come_first() {
    // The deadline first: the check is not due before it.
    let late = Trigger::after(1_000_000);
    for (mode, sb) in with_trigger(&late, |b| b.timeout(Duration::from_millis(150))) {
        let out = guarded(HANG_GUARD, move || sb.run(SPIN, &Json::Null));
        assert_eq!(kind(&out), Some(ErrorKind::Timeout), "{mode}: {out:?}");
    }
    // The check first: its third call comes long before a 30 s deadline.
    let early = Trigger::default();
    for (mode, sb) in with_trigger(&early, |b| b.timeout(Duration::from_secs(30))) {
        early.arm(3);
        let out = guarded(HANG_GUARD, move || sb.run(SPIN, &Json::Null));
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
    }
    // With an instruction budget as well (the check rides on the count hook there).
    for (mode, sb) in with_trigger(&early, |b| {
        b.timeout(Duration::from_secs(30))
            .instruction_limit(u64::MAX / 2)
    }) {
        early.arm(3);
        let out = guarded(HANG_GUARD, move || sb.run(SPIN, &Json::Null));
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
        assert!(out.stats.instructions.is_some_and(|n| n > 0), "{mode}");
    }
}

#[test]
fn a_session_goes_on_after_an_interrupted_call() {
    let trigger = Trigger::default();
    for (mode, sb) in with_trigger(&trigger, |b| b.no_timeout()) {
        let trigger = trigger.clone();
        guarded(HANG_GUARD, move || {
            let mut session = sb.session().expect("a session");
            let pid = session.worker_pid();
            assert_eq!(pid.is_some(), mode == "isolated");
            assert!(session.exec("n = 0").is_ok(), "{mode}");
            trigger.arm(3);
            let out = session.exec("while true do n = n + 1 end");
            assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
            assert!(
                out.error().unwrap().message.contains("(at line 1)"),
                "{mode}: {out:?}"
            );
            // Open, in the same worker, with what the stopped call did kept.
            assert!(session.is_open(), "{mode}");
            assert_eq!(session.worker_pid(), pid, "{mode}");
            let n = session.eval("n", &Default::default());
            assert!(
                n.result.as_ref().is_ok_and(|v| v.as_i64() > Some(0)),
                "{mode}: {n:?}"
            );
            // A function call is interrupted the same way, and the session goes on.
            assert!(session
                .exec("function spin() while true do end end")
                .is_ok());
            trigger.arm(2);
            let out = session.call("spin", &[]);
            assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
            assert_eq!(session.has_function("spin"), Ok(true), "{mode}");
            let out = session.exec_with("return ... + 1", &json!(41), &Default::default());
            assert_eq!(out.result, Ok(json!(42)), "{mode}");
            assert_eq!(session.worker_pid(), pid, "{mode}");
        });
    }
}

#[test]
fn a_tool_call_is_not_interrupted_and_the_check_comes_back_after_it() {
    let trigger = Trigger::default();
    let in_tool = Arc::new(AtomicBool::new(false));
    let asked_in_tool = Arc::new(AtomicBool::new(false));
    let check = {
        let (trigger, in_tool, asked_in_tool) = (
            trigger.check(),
            Arc::clone(&in_tool),
            Arc::clone(&asked_in_tool),
        );
        move || {
            if in_tool.load(Ordering::SeqCst) {
                asked_in_tool.store(true, Ordering::SeqCst);
            }
            trigger()
        }
    };
    let tool = {
        let (trigger, in_tool) = (trigger.clone(), Arc::clone(&in_tool));
        move |_args: Vec<Json>| {
            in_tool.store(true, Ordering::SeqCst);
            // Ten periods pass in the tool; Ctrl-C is pressed meanwhile.
            std::thread::sleep(EVERY * 10);
            trigger.arm(1);
            in_tool.store(false, Ordering::SeqCst);
            Ok(json!("done"))
        }
    };
    let builder = || {
        Sandbox::builder()
            .no_timeout()
            .interrupt_check(EVERY, check.clone())
            .tool("slow", tool.clone())
    };
    let sandboxes = [
        ("in process", builder().build().unwrap()),
        (
            "isolated",
            builder().isolation(isolated_config()).build().unwrap(),
        ),
    ];
    for (mode, sb) in sandboxes {
        // The slow call completes; the run stops right after it.
        let slow = sb.clone();
        let out = guarded(HANG_GUARD, move || {
            slow.run("local r = slow() while true do end", &Json::Null)
        });
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
        assert_eq!(out.tool_calls.len(), 1, "{mode}: {out:?}");
        assert!(out.tool_calls[0].error.is_none(), "{mode}: {out:?}");
        assert!(
            !asked_in_tool.load(Ordering::SeqCst),
            "{mode}: the check was asked while the tool ran"
        );
    }
}

#[test]
fn tools_relayed_from_a_worker_keep_working_under_a_check() {
    let quiet = Trigger::default();
    let sb = Sandbox::builder()
        .no_timeout()
        .interrupt_check(EVERY, quiet.check())
        .tool("echo", |args| {
            std::thread::sleep(Duration::from_micros(200));
            Ok(Json::Array(args))
        })
        .isolation(isolated_config())
        .build()
        .unwrap();
    let out = guarded(HANG_GUARD, move || {
        sb.run(
            "local n = 0 for i = 1, 300 do n = n + echo(i)[1] end \
             for i = 1, 2000000 do n = n + 1 end return n",
            &Json::Null,
        )
    });
    assert_eq!(out.result, Ok(json!(45150 + 2_000_000)), "{out:?}");
    assert_eq!(out.tool_calls.len(), 300);
}

#[test]
fn a_panicking_check_stops_the_run() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let sb = Sandbox::builder()
        .no_timeout()
        .interrupt_check(EVERY, move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 2 {
                panic!("the host's check broke");
            }
            false
        })
        .build()
        .unwrap();
    let out = guarded(HANG_GUARD, move || sb.run(SPIN, &Json::Null));
    assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{out:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn a_check_and_a_nested_run_keep_each_other_s_times() {
    // The outer run's check polls while a tool runs an inner sandbox on the same thread
    // (one timer): the inner deadline still fires, and after it the outer check still
    // stops the outer run.
    let inner = Sandbox::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let trigger = Trigger::default();
    let sb = Sandbox::builder()
        .no_timeout()
        .interrupt_check(EVERY, trigger.check())
        .tool("inner.run", move |_args| {
            let out = inner.run("while true do end", &Json::Null);
            Ok(json!(out.error().map(|e| e.kind.as_str())))
        })
        .build()
        .unwrap();
    let out = guarded(HANG_GUARD, {
        let sb = sb.clone();
        move || sb.run("return inner.run()", &Json::Null)
    });
    assert_eq!(out.result, Ok(json!("timeout")), "{out:?}");
    trigger.arm(3);
    let out = guarded(HANG_GUARD, move || {
        sb.run("local k = inner.run() while true do end", &Json::Null)
    });
    assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{out:?}");

    // The other way round: an inner run with a check inside an outer run with a
    // deadline. The inner check stops the inner run; the outer deadline still fires.
    let inner_trigger = Trigger::default();
    let inner = Sandbox::builder()
        .no_timeout()
        .interrupt_check(EVERY, inner_trigger.check())
        .build()
        .unwrap();
    let sb = Sandbox::builder()
        .timeout(Duration::from_millis(300))
        .tool("inner.run", move |_args| {
            inner_trigger.arm(3);
            let out = inner.run("while true do end", &Json::Null);
            Ok(json!(out.error().map(|e| e.kind.as_str())))
        })
        .build()
        .unwrap();
    let out = guarded(HANG_GUARD, move || {
        sb.run(
            "assert(inner.run() == 'interrupted') while true do end",
            &Json::Null,
        )
    });
    assert_eq!(kind(&out), Some(ErrorKind::Timeout), "{out:?}");
}

#[test]
fn a_zero_period_is_refused_and_a_short_one_raised() {
    let refused = Sandbox::builder()
        .interrupt_check(Duration::ZERO, || false)
        .build();
    assert!(
        matches!(
            refused,
            Err(ConfigError::InvalidLimit {
                name: "interrupt-check",
                ..
            })
        ),
        "{refused:?}"
    );
    // A nanosecond is taken as the minimum, a millisecond: it works.
    let trigger = Trigger::after(3);
    let sb = Sandbox::builder()
        .no_timeout()
        .interrupt_check(Duration::from_nanos(1), trigger.check())
        .build()
        .unwrap();
    let out = guarded(HANG_GUARD, move || sb.run(SPIN, &Json::Null));
    assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{out:?}");
    // And without a check, nothing is asked.
    let sb = Sandbox::builder()
        .interrupt_check(EVERY, || true)
        .no_interrupt_check()
        .build()
        .unwrap();
    assert_eq!(sb.run("return 1", &Json::Null).result, Ok(json!(1)));
}

#[test]
fn a_check_that_says_stop_at_once_stops_the_call_before_it_runs() {
    let at_once = Trigger::after(1);
    for (mode, sb) in with_trigger(&at_once, |b| b.no_timeout()) {
        at_once.arm(1);
        let out = guarded(HANG_GUARD, move || {
            sb.run("print('ran') return 1", &Json::Null)
        });
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{mode}: {out:?}");
        assert_eq!(out.output, "", "{mode}");
    }
}

#[test]
fn many_runs_with_a_check_every_millisecond_all_end() {
    // A coroutine that unhooks itself after each check can miss a hook set just then;
    // the next firing makes up for it. Many short runs give that moment many chances.
    let quiet = Trigger::default();
    let timed = Sandbox::builder()
        .timeout(Duration::from_millis(25))
        .interrupt_check(Duration::from_millis(1), quiet.check())
        .build()
        .unwrap();
    let trigger = Trigger::default();
    let stopped = Sandbox::builder()
        .no_timeout()
        .interrupt_check(Duration::from_millis(1), trigger.check())
        .build()
        .unwrap();
    let source = "local co = coroutine.wrap(function() while true do coroutine.yield() end end) \
                  while true do co() end";
    guarded(HANG_GUARD, move || {
        for _ in 0..40 {
            assert_eq!(
                kind(&timed.run(source, &Json::Null)),
                Some(ErrorKind::Timeout)
            );
            assert_eq!(
                kind(&timed.run(SPIN, &Json::Null)),
                Some(ErrorKind::Timeout)
            );
            trigger.arm(8);
            assert_eq!(
                kind(&stopped.run(source, &Json::Null)),
                Some(ErrorKind::Interrupted)
            );
            trigger.arm(8);
            assert_eq!(
                kind(&stopped.run(SPIN, &Json::Null)),
                Some(ErrorKind::Interrupted)
            );
        }
    });
}

/// A fake worker that ignores the signal to stop: it sends Ready, answers its first
/// request (a session's opening) with `first` if given, and then never answers again.
struct Deaf {
    dir: std::path::PathBuf,
}

impl Deaf {
    fn new(name: &str, first: Option<Vec<u8>>) -> Deaf {
        use crate::support::fake_worker::{frame, READY};
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "moonjail-deaf-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ready"), frame(READY, &[br#"{"layers":[]}"#])).unwrap();
        // The supervisor's stop signal, SIGRTMIN+4, ignored (and so by `sleep` too).
        let mut script = format!(
            "#!/bin/sh\ntrap '' {}\ncat '{}/ready'\n",
            libc::SIGRTMIN() + 4,
            dir.display()
        );
        if let Some(first) = first {
            std::fs::write(dir.join("first"), first).unwrap();
            script.push_str(&format!(
                "dd bs=1 count=1 of=/dev/null 2>/dev/null\ncat '{}/first'\n",
                dir.display()
            ));
        }
        script.push_str("exec sleep 30\n");
        std::fs::write(dir.join("worker"), script).unwrap();
        std::fs::set_permissions(dir.join("worker"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Deaf { dir }
    }

    fn sandbox(&self, trigger: &Trigger) -> Sandbox {
        let config = ProcessConfig::builder()
            .worker(WorkerPath::Path(self.dir.join("worker")))
            .allow_missing(moonjail::worker::LayerSet::all())
            .prespawn(0)
            .kill_grace(Duration::from_millis(50))
            .build()
            .unwrap();
        Sandbox::builder()
            .no_timeout()
            .interrupt_check(EVERY, trigger.check())
            .isolation(Isolation::Process(config))
            .build()
            .unwrap()
    }
}

impl Drop for Deaf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_worker_that_does_not_stop_is_killed_and_the_request_reported_as_interrupted() {
    let trigger = Trigger::default();
    let deaf = Deaf::new("run", None);
    let sb = deaf.sandbox(&trigger);
    trigger.arm(2);
    let out = guarded(HANG_GUARD, move || sb.run("return 1", &Json::Null));
    let e = out.error().expect("stopped");
    assert_eq!(e.kind, ErrorKind::Interrupted, "{e:?}");
    assert!(e.message.contains("was killed"), "{e:?}");

    // A session's worker that does not stop is killed too, and the session closed with
    // the reason.
    use crate::support::fake_worker::frame;
    let meta = json!({"error": null, "stats": moonjail::Stats::default()}).to_string();
    let opened = frame(5, &[meta.as_bytes(), b"null", b""]);
    let deaf = Deaf::new("session", Some(opened));
    let sb = deaf.sandbox(&trigger);
    let trigger = trigger.clone();
    guarded(HANG_GUARD, move || {
        let mut session = sb.session().expect("the fake opens a session");
        trigger.arm(2);
        let out = session.exec("return 1");
        assert_eq!(kind(&out), Some(ErrorKind::Interrupted), "{out:?}");
        assert!(!session.is_open());
        assert_eq!(
            session.closed_reason().map(|e| e.kind),
            Some(ErrorKind::Interrupted)
        );
        let later = session.exec("return 2");
        assert_eq!(kind(&later), Some(ErrorKind::Interrupted), "{later:?}");
        assert!(later
            .error()
            .unwrap()
            .message
            .contains("the session was closed"));
    });
}
