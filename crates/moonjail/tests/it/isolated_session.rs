//! Persistent sessions in isolated mode: a session is one dedicated worker process.
//! The same behaviour as in process (`tests/session.rs`: state persists, limits are per
//! call, a timeout or an instruction limit closes the session with its reason), plus what
//! only a worker can do: be killed at the deadline from outside, crash, and be told apart
//! from other sessions' workers.

use std::time::{Duration, Instant};

use crate::support::{unusable, WORKER};
use moonjail::worker::ProcessConfigBuilder;
use moonjail::{ErrorKind, Isolation, Outcome, ProcessConfig, Sandbox, Session, WorkerPath};
use serde_json::{json, Value as Json};

/// Deadline of the calls here: short, so the suite stays fast, long enough for a debug
/// build on a loaded machine.
const TIMEOUT: Duration = Duration::from_millis(400);
/// A test that has not finished after this long has hung the supervisor.
const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

fn config() -> ProcessConfigBuilder {
    ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(1)
        .test_hooks(true)
}

fn isolated(config: ProcessConfigBuilder) -> Sandbox {
    Sandbox::builder()
        .timeout(TIMEOUT)
        .memory_limit(4 << 20)
        .isolation(Isolation::Process(config.build().unwrap()))
        .build()
        .unwrap()
}

fn sandbox() -> Sandbox {
    isolated(config())
}

fn in_process() -> Sandbox {
    Sandbox::builder()
        .timeout(TIMEOUT)
        .memory_limit(4 << 20)
        .build()
        .unwrap()
}

/// Runs `body` on a helper thread (sessions are not `Send`: each is made there); panics
/// if it does not come back, which would mean the supervisor hung.
fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    crate::support::guarded(HANG_GUARD, body)
}

fn open(sb: &Sandbox) -> Session {
    sb.session().expect("an isolated session")
}

/// Waits until `/proc/PID` is gone or a zombie.
fn wait_gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// What two outcomes must share across modes: result (or error kind and message) and
/// output. Timings differ, and so do heap sizes (a worker's state is built the same way,
/// but not byte for byte in the same allocator history).
fn essence(out: &Outcome) -> Json {
    match &out.result {
        Ok(v) => json!({"ok": v, "output": out.output}),
        Err(e) => json!({"kind": e.kind.as_str(), "message": e.message, "line": e.line,
                         "output": out.output}),
    }
}

fn assert_closed(s: &mut Session, kind: ErrorKind) {
    assert_eq!(
        s.closed_reason().map(|e| e.kind),
        Some(kind),
        "{:?}",
        s.closed_reason()
    );
    assert_eq!(s.worker_pid(), None, "a closed session keeps no worker");
    let out = s.exec("return 1");
    let e = out.error().expect("a closed session refuses calls");
    assert_eq!(e.kind, kind, "{e:?}");
    assert!(e.message.starts_with("the session was closed: "), "{e:?}");
    let out = s.call("anything", &[]);
    assert!(out.error().unwrap().message.contains("session was closed"));
    let e = s.has_function("anything").unwrap_err();
    assert!(e.message.contains("session was closed"), "{e:?}");
}

/// A run and a new session on the same sandbox both work.
fn assert_healthy(sb: &Sandbox) {
    let out = sb.run("return 6 * 7", &Json::Null);
    assert_eq!(out.result, Ok(json!(42)), "the sandbox is not healthy");
    let mut s = open(sb);
    assert_eq!(s.exec("return 'fresh'").result, Ok(json!("fresh")));
}

// ---------------------------------------------------------------------------------------
// The behaviour of tests/session.rs, in a worker.
// ---------------------------------------------------------------------------------------

#[test]
fn state_persists_across_calls() {
    guarded(|| {
        let mut s = open(&sandbox());
        assert!(s.worker_pid().is_some());
        assert!(!s.has_function("compute").unwrap());
        let out = s.exec(
            "count = 0 function compute(state, msg) count = count + 1 \
             state.n = (state.n or 0) + msg.add return state, count end",
        );
        assert!(out.is_ok(), "{:?}", out.result);
        assert!(s.has_function("compute").unwrap());
        assert!(!s.has_function("count").unwrap());
        let out = s.call("compute", &[json!({"n": 1}), json!({"add": 2})]);
        assert_eq!(out.result.unwrap(), json!({"n": 3}));
        let out = s.call("compute", &[json!({}), json!({"add": 5})]);
        assert_eq!(out.result.unwrap(), json!({"n": 5}));
        assert_eq!(s.exec("return count").result.unwrap(), json!(2));
        assert!(s.closed_reason().is_none());
    });
}

#[test]
fn output_is_per_call() {
    guarded(|| {
        let mut s = open(&sandbox());
        assert_eq!(s.exec("print('a')").output, "a\n");
        assert_eq!(s.exec("print('b')").output, "b\n");
    });
}

#[test]
fn caught_error_and_memory_limit_keep_the_session() {
    guarded(|| {
        let mut s = open(&sandbox());
        let pid = s.worker_pid();
        let _ = s.exec("x = 41");
        let out = s.exec("error('boom')");
        assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
        let out = s.exec("local t = {} for i = 1, 1e9 do t[i] = i end");
        assert_eq!(out.error().unwrap().kind, ErrorKind::MemoryLimit);
        assert_eq!(s.exec("x = x + 1 return x").result.unwrap(), json!(42));
        assert!(s.closed_reason().is_none());
        // Still the same worker: a memory limit does not cost a session its worker.
        assert_eq!(s.worker_pid(), pid);
    });
}

#[test]
fn timeout_closes_the_session_with_its_reason_and_kills_the_worker() {
    guarded(|| {
        let sb = sandbox();
        let mut s = open(&sb);
        let pid = s.worker_pid().unwrap();
        let _ =
            s.exec("function spin() while true do pcall(function() while true do end end) end end");
        let started = Instant::now();
        let out = s.call("spin", &[]);
        assert!(started.elapsed() < TIMEOUT * 10, "{:?}", started.elapsed());
        assert_eq!(
            out.error().unwrap().kind,
            ErrorKind::Timeout,
            "{:?}",
            out.result
        );
        assert_closed(&mut s, ErrorKind::Timeout);
        assert!(
            wait_gone(pid),
            "the timed-out session's worker {pid} lives on"
        );
        assert_healthy(&sb);
    });
}

#[test]
fn a_call_the_worker_cannot_stop_is_killed_from_outside() {
    guarded(|| {
        // No grace: the supervisor's deadline is the script's, so the supervisor kills the
        // worker about when the worker's own deadline fires; either way the call is a
        // timeout and the session closes.
        let sb = isolated(config().kill_grace(Duration::ZERO));
        let mut s = open(&sb);
        let out = s.exec("while true do end");
        assert_eq!(
            out.error().unwrap().kind,
            ErrorKind::Timeout,
            "{:?}",
            out.result
        );
        assert_closed(&mut s, ErrorKind::Timeout);

        // A worker stuck in native code never answers: only the supervisor stops it.
        let mut s = open(&sb);
        let pid = s.worker_pid().unwrap();
        let started = Instant::now();
        let err = s.probe_worker("spin").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
        assert!(started.elapsed() < TIMEOUT * 10, "{:?}", started.elapsed());
        assert_eq!(s.closed_reason().map(|e| e.kind), Some(ErrorKind::Timeout));
        assert!(wait_gone(pid));
        assert_closed(&mut s, ErrorKind::Timeout);
        assert_healthy(&sb);
    });
}

#[test]
fn instruction_limit_is_per_call_and_closes() {
    guarded(|| {
        let sb = Sandbox::builder()
            .instruction_limit(100_000)
            .timeout(Duration::from_secs(5))
            .isolation(Isolation::Process(config().build().unwrap()))
            .build()
            .unwrap();
        let mut s = open(&sb);
        let _ = s.exec("function work(n) local x = 0 for i = 1, n do x = x + i end return x end");
        // Each call gets the whole budget again.
        for _ in 0..5 {
            assert_eq!(
                s.call("work", &[json!(10_000)]).result.unwrap(),
                json!(50_005_000)
            );
        }
        let out = s.call("work", &[json!(10_000_000)]);
        assert_eq!(out.error().unwrap().kind, ErrorKind::InstructionLimit);
        assert_closed(&mut s, ErrorKind::InstructionLimit);
    });
}

#[test]
fn calling_a_missing_function_is_a_runtime_error() {
    guarded(|| {
        let mut s = open(&sandbox());
        let out = s.call("nope", &[]);
        assert_eq!(out.error().unwrap().kind, ErrorKind::Runtime);
        assert!(s.exec("return 1").is_ok());
    });
}

#[test]
fn sessions_match_in_process_sessions() {
    guarded(|| {
        let steps: Vec<(&str, Json)> = vec![
            (
                "exec",
                json!("acc = {} function add(k, v) acc[k] = v return acc end"),
            ),
            ("call", json!(["add", "a", 1])),
            ("call", json!(["add", "b", {"deep": [1, 2, {"x": true}]}])),
            ("exec", json!("print('acc', #acc) return acc")),
            ("exec", json!("local x = nil; return x.y")),
            ("exec", json!("return 1 +")),
            ("exec", json!("error({code = 7})")),
            ("exec", json!("return function() end")),
            ("exec", json!("return string.rep('x', 10)")),
            ("call", json!(["add"])),
            ("call", json!(["missing", 1])),
            ("exec", json!("\u{1b}Lua")),
            ("exec", json!("return math.maxinteger, 0.5")),
        ];
        let drive = |sb: &Sandbox| -> Vec<Json> {
            let mut s = open(sb);
            steps
                .iter()
                .map(|(op, arg)| {
                    let out = match *op {
                        "exec" => s.exec(arg.as_str().unwrap()),
                        _ => {
                            let a = arg.as_array().unwrap();
                            s.call(a[0].as_str().unwrap(), &a[1..])
                        }
                    };
                    essence(&out)
                })
                .collect()
        };
        let local = drive(&in_process());
        let remote = drive(&sandbox());
        for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
            assert_eq!(l, r, "step {i}: {:?}", steps[i]);
        }
    });
}

#[test]
fn an_oversized_exec_is_refused_before_it_is_sent() {
    guarded(|| {
        let sb = Sandbox::builder()
            .source_limit(100)
            .isolation(Isolation::Process(config().build().unwrap()))
            .build()
            .unwrap();
        let mut s = open(&sb);
        let out = s.exec(format!("return '{}'", "x".repeat(200)));
        let e = out.error().unwrap();
        assert_eq!(e.kind, ErrorKind::Input);
        assert!(e.message.contains("over the 100 byte limit"), "{e:?}");
        assert!(s.closed_reason().is_none());
        assert!(s.exec("return 1").is_ok());
    });
}

// ---------------------------------------------------------------------------------------
// What only a worker does: crash, die from outside, have a pid.
// ---------------------------------------------------------------------------------------

#[test]
fn a_crash_closes_the_session_as_killed() {
    guarded(|| {
        let sb = sandbox();
        let mut s = open(&sb);
        let _ = s.exec("important = 1");
        let pid = s.worker_pid().unwrap();
        let err = s.probe_worker("segv").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Killed, "{err:?}");
        assert!(err.message.contains("SIGSEGV"), "{err:?}");
        assert_closed(&mut s, ErrorKind::Killed);
        let reason = s.closed_reason().unwrap().message.clone();
        assert!(reason.contains("SIGSEGV"), "{reason}");
        assert!(wait_gone(pid));
        assert_healthy(&sb);
    });
}

#[test]
fn a_worker_killed_from_outside_closes_the_session_on_the_next_call() {
    guarded(|| {
        let sb = sandbox();
        // Through has_function: the failure to ask is an error, and closes the session.
        let mut s = open(&sb);
        let _ = s.exec("function f() end");
        assert!(s.has_function("f").unwrap());
        let pid = s.worker_pid().unwrap();
        // SAFETY: kill(2) on the worker this test's session runs in.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        assert!(wait_gone(pid));
        assert_eq!(s.has_function("f").unwrap_err().kind, ErrorKind::Killed);
        assert_closed(&mut s, ErrorKind::Killed);
        assert!(
            s.closed_reason().unwrap().message.contains("SIGKILL"),
            "{:?}",
            s.closed_reason()
        );

        // Through a call.
        let mut s = open(&sb);
        let pid = s.worker_pid().unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        assert!(wait_gone(pid));
        let out = s.exec("return 1");
        assert_eq!(
            out.error().unwrap().kind,
            ErrorKind::Killed,
            "{:?}",
            out.result
        );
        assert_closed(&mut s, ErrorKind::Killed);
        assert_healthy(&sb);
    });
}

#[test]
fn each_session_has_its_own_stable_worker() {
    guarded(|| {
        let sb = sandbox();
        let mut a = open(&sb);
        let mut b = open(&sb);
        let (pa, pb) = (a.worker_pid().unwrap(), b.worker_pid().unwrap());
        assert_ne!(pa, pb, "two sessions share a worker");
        let _ = a.exec("who = 'a'");
        let _ = b.exec("who = 'b'");
        for _ in 0..5 {
            assert_eq!(a.exec("return who").result, Ok(json!("a")));
            assert_eq!(b.exec("return who").result, Ok(json!("b")));
            assert!(a.has_function("print").unwrap());
            assert_eq!(a.worker_pid(), Some(pa));
            assert_eq!(b.worker_pid(), Some(pb));
        }
        // Neither is a pool worker, and runs still have theirs (the pool holds one worker;
        // sessions do not count against it).
        assert_eq!(sb.run("return who", &Json::Null).result, Ok(Json::Null));
        assert!(sb.wait_for_idle_workers(1, Duration::from_secs(20)));
        for idle in sb.worker_pids() {
            assert!(idle.pid != pa && idle.pid != pb, "{idle:?}");
        }
        // Closing a session kills its worker, and only its worker.
        a.close();
        assert!(wait_gone(pa), "the closed session's worker {pa} lives on");
        assert_eq!(b.exec("return who").result, Ok(json!("b")));
        drop(b);
        assert!(wait_gone(pb), "the dropped session's worker {pb} lives on");
    });
}

#[test]
fn a_session_outlives_its_sandbox_handle() {
    guarded(|| {
        let mut s = open(&sandbox());
        // The sandbox value is gone; the session holds what it needs.
        assert_eq!(s.exec("return 1 + 1").result, Ok(json!(2)));
        let pid = s.worker_pid().unwrap();
        drop(s);
        assert!(wait_gone(pid));
    });
}

#[test]
fn the_in_process_session_has_no_worker() {
    let mut s = in_process().session().unwrap();
    assert_eq!(s.worker_pid(), None);
    assert_eq!(s.probe_worker("pid").unwrap_err().kind, ErrorKind::Internal);
}
