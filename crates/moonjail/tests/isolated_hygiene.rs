//! Process hygiene of isolated mode (issue 9): every process moonjail forks is reaped by
//! moonjail, runs without a clock still end, and a worker's death or an answer too large
//! is reported as the limit it hit, not as a crash.
//!
//! The test process makes itself a child subreaper, as a service running as PID 1 in a
//! container is: a worker orphaned by its relay would then become *our* zombie, and stay
//! one, since nothing here waits for processes it did not spawn. The tests share that
//! process-wide state, so they run one at a time.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use moonjail::worker::{Capabilities, Layer, LayerSet, ProcessConfigBuilder};
use moonjail::{ErrorKind, Isolation, ProcessConfig, Sandbox, WorkerPath};
use serde_json::{json, Value as Json};

const WORKER: &str = env!("CARGO_BIN_EXE_moonjail-worker");

fn capabilities() -> &'static Capabilities {
    static CAPABILITIES: OnceLock<Capabilities> = OnceLock::new();
    CAPABILITIES.get_or_init(moonjail::worker::probe)
}

fn unusable() -> LayerSet {
    capabilities()
        .layers
        .iter()
        .filter(|(_, availability)| !availability.is_usable())
        .map(|(layer, _)| *layer)
        .collect()
}

/// One test at a time, in a process that is a child subreaper.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static SUBREAPER: OnceLock<()> = OnceLock::new();
    SUBREAPER.get_or_init(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointer.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    });
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn config() -> ProcessConfigBuilder {
    ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(1)
        .test_hooks(true)
}

fn sandbox(timeout: Option<Duration>, config: ProcessConfigBuilder) -> Sandbox {
    let builder = match timeout {
        Some(timeout) => Sandbox::builder().timeout(timeout),
        None => Sandbox::builder().no_timeout(),
    };
    builder
        .memory_limit(256 << 20)
        .isolation(Isolation::Process(
            config.build().expect("a process config"),
        ))
        .build()
        .expect("a sandbox")
}

/// The children of this process (every thread's), with their state letter.
fn children() -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.trim_start().chars().next())
                .unwrap_or('?');
            found.push((pid, state));
        }
    }
    found
}

/// Waits until this process has no child left; returns what is left after 10 s.
fn no_children_left() -> Vec<(u32, char)> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = children();
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_children(what: &str) {
    let left = no_children_left();
    assert!(
        left.is_empty(),
        "{what}: children left with this subreaper (pid, state): {left:?}"
    );
}

fn error_of(outcome: moonjail::Outcome) -> moonjail::Error {
    match outcome.result {
        Err(e) => e,
        Ok(v) => panic!(
            "expected an error, got {}",
            v.to_string().chars().take(200).collect::<String>()
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 1. No zombie left with the caller.
// ---------------------------------------------------------------------------------------

/// Runs that end well, time out, crash and get killed, on a pool whose workers are
/// retired after every run, then a dropped sandbox: nothing is left, not even a zombie.
#[test]
fn isolated_runs_leave_no_process_with_a_subreaper_caller() {
    let _serial = serial();
    assert_no_children("before any run");
    let sb = sandbox(
        Some(Duration::from_millis(500)),
        config()
            .max_runs(Some(1))
            .kill_grace(Duration::from_millis(50)),
    );
    for i in 0..4 {
        assert_eq!(
            sb.run("return 1 + 1", &Json::Null).result,
            Ok(json!(2)),
            "run {i}"
        );
    }
    // The supervisor's kill path (deadline), and deaths it only observes (a fault).
    let timeout = sb.probe_worker("spin").unwrap_err();
    assert_eq!(timeout.kind, ErrorKind::Timeout, "{timeout:?}");
    let crash = sb.probe_worker("segv").unwrap_err();
    assert_eq!(crash.kind, ErrorKind::Killed, "{crash:?}");
    let stuck = sb.run("while true do end", &Json::Null);
    assert_eq!(error_of(stuck).kind, ErrorKind::Timeout);
    assert_eq!(sb.run("return 3", &Json::Null).result, Ok(json!(3)));
    // Sessions have a worker of their own, killed when the session goes.
    {
        let mut session = sb.session().expect("a session");
        assert_eq!(session.exec("x = 5").result, Ok(Json::Null));
    }
    drop(sb);
    assert_no_children("after the sandbox was dropped");
}

/// A worker killed while idle (the pool kills and reaps its replacement's predecessor)
/// and the pool's own drop of idle, prespawned workers leave nothing behind.
#[test]
fn dropping_a_pool_of_idle_workers_leaves_no_process() {
    let _serial = serial();
    let sb = sandbox(
        Some(Duration::from_secs(5)),
        config().pool_size(3).prespawn(3),
    );
    assert!(sb.wait_for_idle_workers(3, Duration::from_secs(30)));
    let workers = sb.worker_pids();
    assert_eq!(workers.len(), 3);
    for worker in &workers {
        assert!(Path::new(&format!("/proc/{}", worker.pid)).exists());
    }
    drop(sb);
    assert_no_children("after a pool of idle workers was dropped");
}

// ---------------------------------------------------------------------------------------
// 3. Budgets without a clock still end.
// ---------------------------------------------------------------------------------------

/// Without a timeout, a script stuck in one C call (no instruction count, no deadline)
/// is stopped by the supervisor's per-request CPU budget, and the pool serves on.
#[test]
fn a_run_without_a_timeout_ends_at_its_cpu_budget() {
    let _serial = serial();
    let sb = sandbox(
        None,
        config().run_cpu_time(Some(Duration::from_millis(1500))),
    );
    for source in [
        "table.move({}, 1, math.maxinteger - 1, 1)",
        "while true do end",
    ] {
        let started = Instant::now();
        let err = error_of(sb.run(source, &Json::Null));
        let took = started.elapsed();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}\nsource: {source}");
        assert!(err.message.contains("CPU time"), "{err:?}");
        assert!(took >= Duration::from_millis(1500), "ended after {took:?}");
        // Generous: CPU time comes slower than wall time on a loaded machine.
        assert!(took < Duration::from_secs(60), "ended only after {took:?}");
        assert_eq!(sb.run("return 'ok'", &Json::Null).result, Ok(json!("ok")));
    }
    // The budget is per request: runs of 0.6 s of CPU each (`os.clock` is CPU time) on one
    // worker add up past it, and none is stopped.
    assert!(sb.wait_for_idle_workers(1, Duration::from_secs(20)));
    let before = sb.worker_pids();
    for _ in 0..4 {
        let out = sb.run(
            "local t = os.clock() while os.clock() - t < 0.6 do end return 1",
            &Json::Null,
        );
        assert_eq!(out.result, Ok(json!(1)));
    }
    assert_eq!(
        sb.worker_pids().first().map(|w| w.pid),
        before.first().map(|w| w.pid),
        "the same worker served every run"
    );
    drop(sb);
    assert_no_children("after CPU-limited runs");
}

/// The kernel's `RLIMIT_CPU` (`ProcessConfig::cpu_time`), when it ends a worker, is a
/// `timeout` that names it, not an unexplained `killed`.
#[test]
fn a_worker_ended_by_its_rlimit_cpu_is_a_timeout() {
    let _serial = serial();
    if !capabilities()
        .availability(Layer::Rlimits)
        .is_some_and(|a| a.is_usable())
    {
        eprintln!("SKIP a_worker_ended_by_its_rlimit_cpu_is_a_timeout: no rlimits");
        return;
    }
    let sb = sandbox(
        None,
        config()
            .cpu_time(Some(Duration::from_secs(1)))
            .run_cpu_time(None),
    );
    let err = sb.probe_worker("spin").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(err.message.contains("RLIMIT_CPU"), "{err:?}");
    assert_eq!(sb.run("return 1", &Json::Null).result, Ok(json!(1)));
    drop(sb);
    assert_no_children("after a worker hit its RLIMIT_CPU");
}

// ---------------------------------------------------------------------------------------
// 4. A blow-up outside the Lua heap is a memory_limit; a crash stays a crash.
// ---------------------------------------------------------------------------------------

/// A result within the Lua heap's limit whose JSON does not fit in the worker's address
/// space: the allocation fails, the worker aborts, and the run is a `memory_limit` that
/// says so. A plain fault or abort (no allocation failure) stays `killed`.
#[test]
fn a_worker_out_of_address_space_is_a_memory_limit() {
    let _serial = serial();
    if !capabilities()
        .availability(Layer::Rlimits)
        .is_some_and(|a| a.is_usable())
    {
        eprintln!("SKIP a_worker_out_of_address_space_is_a_memory_limit: no rlimits");
        return;
    }
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(20))
        .memory_limit(200 << 20)
        .result_limit(200 << 20)
        .isolation(Isolation::Process(
            config()
                .address_space_bytes(Some(320 << 20))
                .build()
                .unwrap(),
        ))
        .build()
        .unwrap();
    // A 90 MB string (within the memory and result limits): its copies on the way out
    // (the JSON value, its text, the frame) pass what is left of 320 MiB.
    let err = error_of(sb.run(r#"return ("x"):rep(90e6)"#, &Json::Null));
    assert_eq!(err.kind, ErrorKind::MemoryLimit, "{err:?}");
    assert!(err.message.contains("memory allocation of"), "{err:?}");
    assert!(err.message.contains("RLIMIT_AS"), "{err:?}");
    assert_eq!(sb.run("return 1", &Json::Null).result, Ok(json!(1)));
    for crash in ["segv", "abort"] {
        let err = sb.probe_worker(crash).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Killed, "{crash}: {err:?}");
    }
    drop(sb);
    assert_no_children("after a worker ran out of address space");
}

/// An answer whose escaped JSON would be bigger than the supervisor accepts never
/// reaches it: the worker counts the result as written (escapes included) against the
/// result limit, so it is an ordinary `result` error, as in process, not `internal`.
/// (A frame over the maximum from a dishonest worker is `memory_limit`: see
/// `isolated.rs`.)
#[test]
fn an_answer_over_the_frame_limit_is_refused_by_the_worker() {
    let _serial = serial();
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .result_limit(1000)
        .output_limit(0)
        .isolation(Isolation::Process(
            config().max_frame_bytes(0).build().unwrap(),
        ))
        .build()
        .unwrap();
    // 990 control bytes escape to 5940 bytes of JSON, over the 1000 byte result limit.
    let err = error_of(sb.run(r#"return ("\1"):rep(990)"#, &Json::Null));
    assert_eq!(err.kind, ErrorKind::Result, "{err:?}");
    assert!(err.message.contains("byte limit"), "{err:?}");
    drop(sb);
    assert_no_children("after an over-size answer");
}

// ---------------------------------------------------------------------------------------
// 5. Over-size results and error messages are ordinary outcomes.
// ---------------------------------------------------------------------------------------

/// A result within the result limit whose JSON escapes every byte in six, and an error
/// message of 20 MB: the first comes back whole, the second cut to 64 KiB with a marker.
#[test]
fn large_escaped_results_and_huge_error_messages_are_ordinary_outcomes() {
    let _serial = serial();
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(30))
        .memory_limit(256 << 20)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    // 15 MB of control bytes are 90 MB of JSON: over the 16 MiB result limit as
    // written, an ordinary `result` error; 2 MB (12 MB escaped) come back whole.
    let err = error_of(sb.run(r#"return ("\1"):rep(15e6)"#, &Json::Null));
    assert_eq!(err.kind, ErrorKind::Result, "{err:?}");
    let out = sb.run(r#"return ("\1"):rep(2e6)"#, &Json::Null);
    match out.result {
        Ok(Json::String(s)) => assert_eq!(s.len(), 2_000_000),
        other => panic!("expected the string back, got {:?}", other.map(|_| ())),
    }
    let err = error_of(sb.run(r#"error(("\1"):rep(20e6), 0)"#, &Json::Null));
    assert_eq!(err.kind, ErrorKind::Runtime, "{}", &err.message[..80]);
    assert!(
        err.message.len() <= moonjail::MAX_MESSAGE_BYTES,
        "{}",
        err.message.len()
    );
    assert!(err.message.starts_with('\u{1}'));
    assert!(
        err.message.ends_with("more bytes not shown)"),
        "{}",
        &err.message[err.message.len() - 80..]
    );
    assert_eq!(sb.run("return 1", &Json::Null).result, Ok(json!(1)));
    drop(sb);
    assert_no_children("after large answers");
}
