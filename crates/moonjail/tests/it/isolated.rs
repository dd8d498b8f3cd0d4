//! Isolated mode (`Isolation::Process`): the worker process, its lockdown, the
//! supervisor's deadline and crash handling, the protocol's defences and the warm pool.
//!
//! Every layer is proved twice: from inside the worker, through its test hooks (raw system
//! calls the seccomp filter must answer with SIGSYS), and from outside, through
//! `/proc/PID` of a live worker. The escape payloads of THREATS.md run here too, each
//! followed by a healthy run on the same sandbox. A machine that lacks a layer skips the
//! tests that need it (`SKIP name: reason`) and runs the others with that layer allowed to
//! be missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use std::time::{Duration, Instant};

use moonjail::worker::{Layer, LayerSet, ProcessConfigBuilder};
use moonjail::{ErrorKind, Isolation, Outcome, ProcessConfig, Profile, Sandbox, WorkerPath};
use serde_json::{json, Value as Json};

/// Deadline of the runs here: short, so the suite stays fast, long enough for a debug
/// build on a loaded machine.
const TIMEOUT: Duration = Duration::from_millis(300);
/// A run that has not returned after this long has hung the supervisor.
const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

/// False, after printing why, when one of `layers` cannot be applied here.
fn require(test: &str, layers: &[Layer]) -> bool {
    for layer in layers {
        match capabilities().availability(*layer) {
            Some(a) if a.is_usable() => {}
            Some(a) => {
                eprintln!("SKIP {test}: {layer} {a}");
                return false;
            }
            None => {
                eprintln!("SKIP {test}: {layer} not probed");
                return false;
            }
        }
    }
    true
}

fn running_as_root() -> bool {
    capabilities().running_as_root
}

fn config() -> ProcessConfigBuilder {
    ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(1)
        .test_hooks(true)
}

fn build(config: ProcessConfigBuilder) -> Sandbox {
    Sandbox::builder()
        .timeout(TIMEOUT)
        .memory_limit(16 << 20)
        .output_limit(64 << 10)
        .isolation(Isolation::Process(
            config.build().expect("a valid process config"),
        ))
        .build()
        .expect("a valid sandbox")
}

fn sandbox() -> Sandbox {
    build(config())
}

/// Runs on a helper thread; panics if the supervisor does not come back.
fn run_input(sb: &Sandbox, source: impl AsRef<[u8]>, input: &Json) -> Outcome {
    let sb = sb.clone();
    let source = source.as_ref().to_vec();
    let shown = String::from_utf8_lossy(&source)
        .chars()
        .take(200)
        .collect::<String>();
    let input = input.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sb.run(&source, &input));
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(out) => out,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the supervisor hung: no outcome within {HANG_GUARD:?}\nsource: {shown}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the run panicked\nsource: {shown}"),
    }
}

fn run(sb: &Sandbox, source: impl AsRef<[u8]>) -> Outcome {
    run_input(sb, source, &Json::Null)
}

use crate::support::healthy;
use crate::support::{capabilities, unusable, WORKER};
use healthy::{check_healthy, healthy_input, HEALTHY};

/// A normal run on the same sandbox succeeds with the right result and output.
fn assert_healthy(sb: &Sandbox) {
    check_healthy(&run_input(sb, HEALTHY, &healthy_input()));
}

/// Runs `source`, asserts the error kind and a message fragment, then a healthy run.
fn expect_err(sb: &Sandbox, source: &str, kind: ErrorKind, fragment: &str) -> moonjail::Error {
    let out = run(sb, source);
    let err = match out.result {
        Err(e) => e,
        Ok(v) => panic!("expected a {kind} error, got {v}\nsource: {source}"),
    };
    assert_eq!(err.kind, kind, "{err:?}\nsource: {source}");
    assert!(
        err.message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        err.message
    );
    assert_healthy(sb);
    err
}

/// Sends a probe on a helper thread; panics if the supervisor does not come back.
fn probe(sb: &Sandbox, name: &str) -> Result<Json, moonjail::Error> {
    let sb = sb.clone();
    let name = name.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sb.probe_worker(&name));
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("the supervisor hung on a probe")
}

/// The one idle worker of a sandbox (waiting for it to be prespawned if need be).
fn idle_worker(sb: &Sandbox) -> moonjail::worker::WorkerPids {
    assert!(
        sb.wait_for_idle_workers(1, Duration::from_secs(20)),
        "no idle worker"
    );
    sb.worker_pids().into_iter().next().expect("an idle worker")
}

/// A `Key:` field of a /proc status-like file.
fn proc_field(path: impl AsRef<Path>, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|target| target.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
}

/// Waits until `/proc/PID` is gone (or belongs to a zombie no longer ours).
fn wait_gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        match stat {
            Err(_) => return true,
            // A zombie reparented to init is about to be reaped by it.
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                if !is_our_child(pid) {
                    return true;
                }
            }
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn is_our_child(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    ppid == Some(std::process::id())
}

// ---------------------------------------------------------------------------------------
// Basics: results, output, errors and stats cross the process boundary unchanged.
// ---------------------------------------------------------------------------------------

#[test]
fn isolated_runs_match_in_process_runs() {
    let isolated = sandbox();
    let local = Sandbox::builder()
        .timeout(TIMEOUT)
        .memory_limit(16 << 20)
        .output_limit(64 << 10)
        .build()
        .unwrap();
    let input = json!({"n": 3, "list": [1, 2, {"deep": [true, null]}], "s": "é\u{0}x"});
    for source in [
        HEALTHY,
        "return ...",
        "local input = ... function run(ctx) return {twice = ctx.n * 2} end",
        "print('a', 1, nil, true) io = nil return nil",
        "return 1 +",
        "error('boom')",
        "error({code = 7})",
        "return function() end",
        "return 0/0",
        "local t = {} t[1] = t return t",
        "return ('x'):rep(100):len()",
    ] {
        let a = run_input(&isolated, source, &input);
        let b = local.run(source, &input);
        assert_eq!(a.result, b.result, "source: {source}");
        assert_eq!(a.output, b.output, "source: {source}");
        assert_eq!(
            a.stats.instructions, b.stats.instructions,
            "source: {source}"
        );
    }
}

#[test]
fn sources_may_hold_any_byte() {
    let sb = sandbox();
    let mut source = b"-- \x00\xff\xfe binary bytes in a comment\n".to_vec();
    source.extend_from_slice(b"return #'\xff\x00\x1b' .. 'ok'");
    let out = run(&sb, &source);
    assert_eq!(out.result, Ok(json!("3ok")));
    // A binary chunk is refused by the worker's sandbox, as in process.
    let out = run(&sb, b"\x1bLua\x54\x00");
    assert_eq!(out.result.unwrap_err().kind, ErrorKind::Forbidden);
    assert_healthy(&sb);
}

#[test]
fn time_functions_work_after_lockdown() {
    // os.date/os.time read the zone file lazily; the worker loads it before lockdown
    // (otherwise the first os.time after lockdown would be killed by seccomp).
    let sb = sandbox();
    let out = run(
        &sb,
        r#"return {os.date("%Y-%m-%d", 86400), os.time({year = 2020, month = 6, day = 1, hour = 12}) > 0,
                   type(os.time()), os.date("*t").year >= 2024, os.date("!%H:%M", 3600), os.clock() >= 0}"#,
    );
    assert_eq!(
        out.result,
        Ok(json!(["1970-01-02", true, "number", true, "01:00", true])),
    );
    assert_healthy(&sb);
}

#[test]
fn results_deeper_than_serde_defaults_cross_the_channel() {
    let sb = Sandbox::builder()
        .result_depth(300)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let out = run(
        &sb,
        "local t = {} local c = t for i = 1, 250 do c[1] = {} c = c[1] end return t",
    );
    // 250 arrays around an empty table (which encodes as an object).
    let mut depth = 0;
    let mut value = out.result.expect("a deep result");
    while let Json::Array(mut items) = value {
        depth += 1;
        value = items.pop().unwrap_or(Json::Null);
    }
    assert_eq!(depth, 250);
    assert_eq!(value, json!({}));
}

#[test]
fn large_output_and_results_within_the_limits_fit() {
    let sb = Sandbox::builder()
        .output_limit(4 << 20)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let out = run(
        &sb,
        r#"print(("y"):rep(3 << 20)) return ("z"):rep(5 << 20)"#,
    );
    assert_eq!(out.output.len(), (3 << 20) + 1);
    assert_eq!(out.result.unwrap().as_str().map(str::len), Some(5 << 20));
}

#[test]
fn the_source_limit_is_checked_before_anything_is_sent() {
    let sb = Sandbox::builder()
        .source_limit(100)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let out = run(&sb, "return 1 -- ".to_string() + &"x".repeat(200));
    let err = out.result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Input);
    assert!(err.message.contains("over the 100 byte limit"), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// From inside the worker (test hooks): the seccomp filter kills forbidden calls.
// ---------------------------------------------------------------------------------------

/// Each probe makes one forbidden system call; each must kill its worker with SIGSYS,
/// and the next run must succeed on a fresh worker.
#[test]
fn forbidden_system_calls_kill_the_worker_with_sigsys() {
    if !require(
        "forbidden_system_calls_kill_the_worker_with_sigsys",
        &[Layer::Seccomp],
    ) {
        return;
    }
    let sb = sandbox();
    let mut probes = vec![
        "socket",
        "socket-unix",
        "connect",
        "bind",
        "listen",
        "accept",
        "execve",
        "execveat",
        "fork",
        "clone-process",
        "ptrace",
        "openat",
        "kill",
        "unshare",
        "getuid",
    ];
    if cfg!(target_arch = "x86_64") {
        probes.extend(["vfork", "open"]);
    }
    for name in probes {
        let before = idle_worker(&sb).pid;
        let err = probe(&sb, name).expect_err(&format!("probe {name} returned"));
        assert_eq!(err.kind, ErrorKind::Killed, "probe {name}: {err:?}");
        assert!(
            err.message.contains("SIGSYS"),
            "probe {name}: {:?}",
            err.message
        );
        assert_healthy(&sb);
        assert_ne!(idle_worker(&sb).pid, before, "probe {name}: not replaced");
    }
}

#[test]
fn opening_etc_passwd_kills_the_worker() {
    if !require("opening_etc_passwd_kills_the_worker", &[Layer::Seccomp]) {
        return;
    }
    let sb = sandbox();
    let err = probe(&sb, "openat").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Killed);
    assert!(err.message.contains("SIGSYS"), "{err:?}");
    // And Lua has no way to even try.
    let out = run(
        &sb,
        "return {io == nil, package.loadlib == nil and package.searchers == nil, \
                 not pcall(require, 'io'), dofile == nil, loadfile == nil}",
    );
    assert_eq!(out.result, Ok(json!([true, true, true, true, true])));
}

#[test]
fn the_worker_is_pid_one_of_its_namespace() {
    if !require(
        "the_worker_is_pid_one_of_its_namespace",
        &[Layer::PidNamespace],
    ) {
        return;
    }
    let sb = sandbox();
    assert_eq!(probe(&sb, "pid"), Ok(json!({"pid": 1})));
}

#[test]
fn production_workers_refuse_probes() {
    let sb = build(config().test_hooks(false));
    let before = idle_worker(&sb).pid;
    let err = probe(&sb, "socket").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("test hooks are disabled"), "{err:?}");
    // The worker is unharmed and keeps serving.
    assert_healthy(&sb);
    assert_eq!(idle_worker(&sb).pid, before);
}

// ---------------------------------------------------------------------------------------
// From outside: /proc of a live worker.
// ---------------------------------------------------------------------------------------

#[test]
fn every_thread_of_a_live_worker_has_no_new_privs_and_seccomp() {
    if !require(
        "every_thread_of_a_live_worker_has_no_new_privs_and_seccomp",
        &[Layer::Seccomp, Layer::NoNewPrivs],
    ) {
        return;
    }
    let sb = sandbox();
    // A run with a deadline arms the worker's per-thread deadline timer (no helper
    // thread: the worker stays single-threaded; threads that exist when the filter is
    // installed are covered by TSYNC, tested in moonjail-isolate's seccomp tests).
    assert_healthy(&sb);
    let worker = idle_worker(&sb);
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", worker.pid))
        .expect("the worker's task list")
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!tasks.is_empty(), "no task in the worker: {tasks:?}");
    for task in tasks {
        let status = task.join("status");
        assert_eq!(
            proc_field(&status, "NoNewPrivs").as_deref(),
            Some("1"),
            "{task:?}"
        );
        assert_eq!(
            proc_field(&status, "Seccomp").as_deref(),
            Some("2"),
            "{task:?}"
        );
        assert_eq!(
            proc_field(&status, "CapEff").as_deref(),
            Some("0000000000000000"),
            "{task:?}"
        );
    }
}

#[test]
fn a_live_worker_runs_with_dropped_ids() {
    if !require("a_live_worker_runs_with_dropped_ids", &[Layer::Credentials]) {
        return;
    }
    let sb = sandbox();
    let worker = idle_worker(&sb);
    let status = format!("/proc/{}/status", worker.pid);
    let ids = |key| {
        proc_field(&status, key)
            .unwrap_or_default()
            .split_whitespace()
            .map(|id| id.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    if running_as_root() {
        assert_eq!(ids("Uid"), [65534; 4]);
        assert_eq!(ids("Gid"), [65534; 4]);
        assert_eq!(proc_field(&status, "Groups").as_deref(), Some(""));
    } else {
        assert!(ids("Uid").iter().all(|id| *id != 0));
    }
    assert_eq!(
        proc_field(&status, "CapBnd").as_deref(),
        Some("0000000000000000")
    );
}

/// The relay (the process the supervisor spawned, left behind by the fork into the PID
/// namespace) holds no more than the worker: same ids, no capability, no_new_privs, and a
/// seccomp filter of its own.
#[test]
fn a_live_workers_relay_runs_with_dropped_ids_and_no_capability() {
    if !require(
        "a_live_workers_relay_runs_with_dropped_ids_and_no_capability",
        &[
            Layer::PidNamespace,
            Layer::Credentials,
            Layer::NoNewPrivs,
            Layer::Seccomp,
        ],
    ) {
        return;
    }
    let sb = sandbox();
    let worker = idle_worker(&sb);
    assert_ne!(worker.relay, worker.pid, "no relay");
    let status = format!("/proc/{}/status", worker.relay);
    let field = |key| proc_field(&status, key).unwrap_or_else(|| panic!("{key} in {status}"));
    if running_as_root() {
        assert_eq!(field("Uid"), "65534\t65534\t65534\t65534");
        assert_eq!(field("Gid"), "65534\t65534\t65534\t65534");
        assert_eq!(field("Groups"), "");
    }
    for key in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(field(key), "0000000000000000", "{key} of the relay");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2");
    assert_healthy(&sb);
}

#[test]
fn a_live_worker_lives_in_its_own_namespaces() {
    let needed = [
        Layer::NetworkNamespace,
        Layer::MountNamespace,
        Layer::IpcNamespace,
        Layer::UtsNamespace,
        Layer::PidNamespace,
    ];
    if !require("a_live_worker_lives_in_its_own_namespaces", &needed) {
        return;
    }
    let sb = sandbox();
    let worker = idle_worker(&sb).pid.to_string();
    for kind in ["net", "mnt", "ipc", "uts", "pid"] {
        assert_ne!(namespace(&worker, kind), namespace("self", kind), "{kind}");
    }
    let user_same = namespace(&worker, "user") == namespace("self", "user");
    assert_eq!(
        user_same,
        running_as_root(),
        "user namespace only when unprivileged"
    );
}

#[test]
fn a_live_worker_keeps_only_its_channel_and_stdio() {
    if !require(
        "a_live_worker_keeps_only_its_channel_and_stdio",
        &[Layer::Fds],
    ) {
        return;
    }
    let sb = sandbox();
    let worker = idle_worker(&sb);
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", worker.pid))
        .expect("the worker's fds")
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort_unstable();
    assert_eq!(
        fds.len(),
        4,
        "stdin, stdout, stderr and the channel: {fds:?}"
    );
    assert_eq!(&fds[..3], [0, 1, 2]);
    // stdout points at stderr: a stray print cannot corrupt the protocol.
    let target = |fd: u32| std::fs::read_link(format!("/proc/{}/fd/{fd}", worker.pid)).unwrap();
    assert_eq!(target(1), target(2));
    assert!(target(fds[3]).to_string_lossy().starts_with("socket:"));
}

#[test]
fn a_live_worker_has_its_rlimits() {
    if !require("a_live_worker_has_its_rlimits", &[Layer::Rlimits]) {
        return;
    }
    let sb = build(
        config()
            .address_space_bytes(Some(768 << 20))
            .cpu_time(Some(Duration::from_secs(3600))),
    );
    let worker = idle_worker(&sb);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", worker.pid)).unwrap();
    let soft = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(soft("Max file size"), "0");
    assert_eq!(soft("Max core file size"), "0");
    assert_eq!(soft("Max address space"), (768u64 << 20).to_string());
    assert_eq!(soft("Max cpu time"), "3600");
}

/// Joins the worker's network namespace from a short-lived helper thread (network
/// namespaces are per thread) and looks at its interfaces there.
#[test]
fn a_live_worker_has_no_network_interface_up() {
    if !require(
        "a_live_worker_has_no_network_interface_up",
        &[Layer::NetworkNamespace],
    ) {
        return;
    }
    let sb = sandbox();
    let worker = idle_worker(&sb);
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", worker.pid)).unwrap();
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"], "only a loopback device exists");
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", worker.pid)).unwrap();
    let checked = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this helper thread only (network namespaces are per thread);
        // the thread ends right after.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a UDP socket used only for two ioctls, then closed; `request` is a
        // valid ifreq.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0);
            let mut request: libc::ifreq = std::mem::zeroed();
            for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request), 0);
            let lo_up = i32::from(request.ifr_ifru.ifru_flags) & libc::IFF_UP != 0;
            // Interfaces with an IPv4 address.
            let mut buffer = [0u8; 4096];
            let mut conf: libc::ifconf = std::mem::zeroed();
            conf.ifc_len = buffer.len() as i32;
            conf.ifc_ifcu.ifcu_buf = buffer.as_mut_ptr().cast();
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFCONF, &mut conf), 0);
            libc::close(fd);
            Ok((lo_up, conf.ifc_len))
        }
    });
    match checked.join().unwrap() {
        Ok((lo_up, addressed)) => {
            assert!(!lo_up, "loopback is up in the worker's namespace");
            assert_eq!(addressed, 0, "an interface has an address");
        }
        Err(e) => {
            eprintln!("SKIP (inside part) a_live_worker_has_no_network_interface_up: setns: {e}")
        }
    }
}

#[test]
fn the_lockdown_report_shows_every_layer() {
    let sb = sandbox();
    let worker = idle_worker(&sb);
    let missing = unusable();
    for layer in Layer::ALL {
        let status = worker
            .layers
            .iter()
            .find(|(name, _)| name == layer.name())
            .map(|(_, status)| status.as_str());
        let fine = match status {
            Some("applied") => true,
            Some("not_applicable") => layer == Layer::UserNamespace && running_as_root(),
            Some("skipped") => missing.contains(layer),
            _ => false,
        };
        assert!(fine, "{layer}: {status:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The escape suite, isolated: each payload, then a healthy run on the same sandbox.
// ---------------------------------------------------------------------------------------

#[test]
fn pcall_loops_time_out() {
    let sb = sandbox();
    expect_err(
        &sb,
        "while true do pcall(function() while true do end end) end",
        ErrorKind::Timeout,
        "deadline",
    );
    expect_err(
        &sb,
        "local function f() return pcall(f) end while true do f() end",
        ErrorKind::Timeout,
        "deadline",
    );
}

#[test]
fn coroutine_loops_time_out() {
    let sb = sandbox();
    expect_err(
        &sb,
        "coroutine.wrap(function() while true do end end)()",
        ErrorKind::Timeout,
        "deadline",
    );
    expect_err(
        &sb,
        "while true do local co = coroutine.create(function() while true do coroutine.yield() end end) \
         for i = 1, 1000 do coroutine.resume(co) end end",
        ErrorKind::Timeout,
        "deadline",
    );
}

#[test]
fn instruction_limits_hold() {
    let sb = Sandbox::builder()
        .instruction_limit(100_000)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let out = run(&sb, "while true do pcall(function() end) end");
    assert_eq!(out.result.unwrap_err().kind, ErrorKind::InstructionLimit);
    assert!(out.stats.instructions.unwrap() >= 100_000);
    assert_healthy(&sb);
}

#[test]
fn allocation_bombs_hit_the_memory_limit() {
    // A longer deadline: filling 16 MiB takes a while in a debug build.
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .memory_limit(16 << 20)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    for bomb in [
        r#"local s = "x" while true do s = s .. s end"#,
        r#"local t = {} for i = 1, 1e9 do t[i] = i end"#,
        r#"return #("x"):rep(2^30)"#,
        r#"local t = {} for i = 1, 1e7 do t[i] = ("x"):rep(100) .. i end"#,
        r#"local t = {} for i = 1, 1e5 do t[i] = ("x"):rep(100) end return table.concat(t):rep(4)"#,
    ] {
        expect_err(&sb, bomb, ErrorKind::MemoryLimit, "memory limit");
    }
}

#[test]
fn output_floods_hit_the_output_limit() {
    let sb = sandbox();
    let err = expect_err(
        &sb,
        r#"while true do print(("x"):rep(1e6)) end"#,
        ErrorKind::OutputLimit,
        "output limit",
    );
    assert_eq!(err.kind, ErrorKind::OutputLimit);
}

#[test]
fn finalizers_are_forbidden() {
    let sb = sandbox();
    expect_err(
        &sb,
        "setmetatable({}, {__gc = function() while true do end end})",
        ErrorKind::Forbidden,
        "__gc",
    );
}

#[test]
fn host_reach_is_absent() {
    let sb = sandbox();
    let out = run(
        &sb,
        "return {package.loadlib == nil, io == nil, os.execute == nil, os.getenv == nil, \
                 os.remove == nil, not pcall(require, 'io'), dofile == nil, loadfile == nil, \
                 string.dump == nil, debug == nil}",
    );
    assert_eq!(out.result, Ok(Json::Array(vec![Json::Bool(true); 10])));
    assert_healthy(&sb);
}

/// THREATS #6: a backtracking match in C. If the in-process matcher does not stop it, the
/// supervisor kills the worker at the deadline; either way the run is a `timeout`.
#[test]
fn long_c_calls_time_out() {
    let sb = sandbox();
    let started = Instant::now();
    expect_err(
        &sb,
        r#"return string.find(("a"):rep(40), ("a*"):rep(40) .. "b")"#,
        ErrorKind::Timeout,
        "deadline",
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The supervisor's kill path on its own: a worker spinning in native code that never
/// looks at any deadline (a test hook) is killed and reported as `timeout`.
#[test]
fn a_worker_stuck_in_native_code_is_killed_at_the_deadline() {
    let sb = build(config().kill_grace(Duration::from_millis(50)));
    let before = idle_worker(&sb);
    let started = Instant::now();
    let err = probe(&sb, "spin").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(
        took >= TIMEOUT,
        "killed after {took:?}, before the deadline"
    );
    assert!(
        took < TIMEOUT + Duration::from_secs(5),
        "killed only after {took:?}"
    );
    assert!(
        wait_gone(before.relay),
        "the relay {} is still there",
        before.relay
    );
    assert!(
        wait_gone(before.pid),
        "the worker {} is still there",
        before.pid
    );
    assert_healthy(&sb);
}

#[test]
fn crashes_are_reported_as_killed_and_the_next_run_succeeds() {
    let sb = sandbox();
    // abort() raises SIGABRT on itself, which PID 1 of a namespace ignores; glibc then
    // ends the process with a faulting instruction: SIGSEGV.
    for (probe_name, signals) in [("segv", ["SIGSEGV"; 2]), ("abort", ["SIGABRT", "SIGSEGV"])] {
        let before = idle_worker(&sb);
        let err = probe(&sb, probe_name).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Killed, "{err:?}");
        assert!(signals.iter().any(|s| err.message.contains(s)), "{err:?}");
        assert!(wait_gone(before.relay));
        assert_healthy(&sb);
    }
}

#[test]
fn a_worker_killed_from_outside_while_idle_is_replaced_unnoticed() {
    let sb = sandbox();
    let worker = idle_worker(&sb);
    // SAFETY: kill(2) on a process this test's sandbox spawned.
    assert_eq!(unsafe { libc::kill(worker.relay as i32, libc::SIGKILL) }, 0);
    // The worker follows its relay (PR_SET_PDEATHSIG); once it is gone its channel reads
    // as closed, and the pool replaces it before the next run.
    assert!(wait_gone(worker.pid));
    assert_healthy(&sb);
}

// ---------------------------------------------------------------------------------------
// The protocol's defences: fake workers that lie, stall, flood or die.
// ---------------------------------------------------------------------------------------

/// The worker protocol's version (`protocol::VERSION`).
const VERSION: u8 = crate::support::fake_worker::VERSION;

/// A frame as the worker protocol encodes it.
fn frame(kind: u8, sections: &[&[u8]]) -> Vec<u8> {
    let body: usize = 2 + sections.iter().map(|s| 4 + s.len()).sum::<usize>();
    let mut out = (body as u32).to_le_bytes().to_vec();
    out.extend([VERSION, kind]);
    for s in sections {
        out.extend((s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

const READY: u8 = 2;
const DONE: u8 = 5;

struct Fake {
    dir: PathBuf,
}

impl Fake {
    /// A fake worker: a shell script that first sends `ready` (if any), then `reply`
    /// (if any) once it has read something, then runs `tail` (a shell command).
    fn new(name: &str, ready: Option<Vec<u8>>, reply: Option<Vec<u8>>, tail: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!(
            "moonjail-fake-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut script = String::from("#!/bin/sh\n");
        if let Some(ready) = ready {
            std::fs::write(dir.join("ready"), ready).unwrap();
            script.push_str(&format!("cat '{}/ready'\n", dir.display()));
        }
        if let Some(reply) = reply {
            std::fs::write(dir.join("reply"), reply).unwrap();
            // Wait for the Run request to arrive (any byte), then answer.
            script.push_str(&format!(
                "dd bs=1 count=1 of=/dev/null 2>/dev/null\ncat '{}/reply'\n",
                dir.display()
            ));
        }
        script.push_str(tail);
        script.push('\n');
        let path = dir.join("worker");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fake { dir }
    }

    fn sandbox(&self) -> Sandbox {
        self.sandbox_with(Duration::from_secs(20))
    }

    fn sandbox_with(&self, spawn_timeout: Duration) -> Sandbox {
        build(
            ProcessConfig::builder()
                .worker(WorkerPath::Path(self.dir.join("worker")))
                .allow_missing(LayerSet::all())
                .prespawn(0)
                .spawn_timeout(spawn_timeout)
                .max_frame_bytes(1 << 20),
        )
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ready_frame() -> Vec<u8> {
    frame(READY, &[br#"{"layers":[]}"#])
}

/// Runs against a fake; asserts an error of one of `kinds` containing `fragment`, well
/// before the hang guard.
fn expect_fake_error(fake: &Fake, kinds: &[ErrorKind], fragment: &str) {
    expect_error_from(fake.sandbox(), kinds, fragment);
}

fn expect_error_from(sb: Sandbox, kinds: &[ErrorKind], fragment: &str) {
    let started = Instant::now();
    let out = run(&sb, "return 1");
    let err = out.result.expect_err("a fake worker cannot succeed");
    assert!(kinds.contains(&err.kind), "{err:?}");
    assert!(
        err.message.contains(fragment),
        "{:?} lacks {fragment:?}",
        err.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(sb);
}

#[test]
fn a_worker_that_prints_garbage_is_an_error() {
    let fake = Fake::new(
        "garbage",
        None,
        None,
        "printf 'garbage from a fake worker\\n'; exec sleep 30",
    );
    expect_fake_error(&fake, &[ErrorKind::Internal], "over the");
}

#[test]
fn a_worker_that_exits_at_once_is_an_error() {
    let fake = Fake::new("exits", None, None, "exit 7");
    expect_fake_error(&fake, &[ErrorKind::Internal], "exited with status 7");
}

#[test]
fn a_worker_that_never_answers_is_an_error() {
    let fake = Fake::new("silent", None, None, "exec sleep 30");
    expect_error_from(
        fake.sandbox_with(Duration::from_millis(500)),
        &[ErrorKind::Internal],
        "no answer within 500 ms",
    );
}

#[test]
fn a_missing_worker_executable_is_an_error() {
    let sb = build(config().worker(WorkerPath::Path("/nonexistent/moonjail-worker".into())));
    let err = run(&sb, "return 1").result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(
        err.message.contains("cannot start the worker executable"),
        "{err:?}"
    );
}

#[test]
fn an_oversized_frame_is_refused_before_it_is_read() {
    // A header announcing 3 GiB, and nothing behind it.
    let mut huge = (3u32 << 30).to_le_bytes().to_vec();
    huge.extend([VERSION, DONE]);
    let fake = Fake::new(
        "oversized",
        Some(ready_frame()),
        Some(huge),
        "exec sleep 30",
    );
    expect_fake_error(&fake, &[ErrorKind::MemoryLimit], "over the");
}

#[test]
fn a_frame_of_another_version_is_refused() {
    let mut reply = frame(DONE, &[b"{}"]);
    reply[4] = 9;
    let fake = Fake::new("version", Some(ready_frame()), Some(reply), "exec sleep 30");
    expect_fake_error(&fake, &[ErrorKind::Internal], "protocol version 9");
}

#[test]
fn a_frame_of_unknown_type_is_refused() {
    let fake = Fake::new(
        "type",
        Some(ready_frame()),
        Some(frame(77, &[b"{}"])),
        "exec sleep 30",
    );
    expect_fake_error(&fake, &[ErrorKind::Internal], "unknown type 77");
}

#[test]
fn a_malformed_done_is_refused() {
    for (name, reply) in [
        ("json", frame(DONE, &[b"{not json", b"", b""])),
        ("sections", frame(DONE, &[br#"{"error":null,"stats":{"wall":{"secs":0,"nanos":0},"memory_bytes":0,"instructions":null}}"#])),
        ("result", frame(DONE, &[br#"{"error":null,"stats":{"wall":{"secs":0,"nanos":0},"memory_bytes":0,"instructions":null}}"#, b"[1,", b""])),
        ("cut", {
            let mut f = frame(DONE, &[b"{}"]);
            f[6] = 200; // a section length past the end of the frame
            f
        }),
    ] {
        let fake = Fake::new(name, Some(ready_frame()), Some(reply), "exec sleep 30");
        expect_fake_error(&fake, &[ErrorKind::Internal], "malformed");
    }
}

#[test]
fn a_truncated_frame_then_death_is_killed() {
    let mut reply = frame(DONE, &[b"{}", b"", b""]);
    reply.truncate(reply.len() - 3);
    let fake = Fake::new("truncated", Some(ready_frame()), Some(reply), "exit 0");
    expect_fake_error(&fake, &[ErrorKind::Killed], "before answering");
}

#[test]
fn a_worker_that_dribbles_forever_times_out() {
    // A header that promises 100 bytes, then one byte a second.
    let mut partial = 100u32.to_le_bytes().to_vec();
    partial.extend([VERSION, DONE]);
    let fake = Fake::new(
        "dribble",
        Some(ready_frame()),
        Some(partial),
        "while true; do printf x; sleep 1; done",
    );
    expect_fake_error(&fake, &[ErrorKind::Timeout], "deadline");
}

#[test]
fn a_worker_that_reports_a_missing_layer_is_refused() {
    // The fake claims readiness without having applied anything; only layers allowed to
    // be missing may be absent from its report.
    let fake = Fake::new("unlocked", Some(ready_frame()), None, "exec sleep 30");
    let sb = build(
        ProcessConfig::builder()
            .worker(WorkerPath::Path(fake.dir.join("worker")))
            .prespawn(0),
    );
    let err = run(&sb, "return 1").result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("not allowed to be missing"), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// The warm pool.
// ---------------------------------------------------------------------------------------

#[test]
fn prespawned_workers_are_locked_down_before_any_run() {
    if !require(
        "prespawned_workers_are_locked_down_before_any_run",
        &[Layer::Seccomp],
    ) {
        return;
    }
    let sb = build(config().pool_size(2).prespawn(2));
    assert!(sb.wait_for_idle_workers(2, Duration::from_secs(20)));
    let workers = sb.worker_pids();
    assert_eq!(workers.len(), 2);
    for worker in workers {
        assert_eq!(worker.runs, 0);
        let status = format!("/proc/{}/status", worker.pid);
        assert_eq!(proc_field(&status, "Seccomp").as_deref(), Some("2"));
        assert_eq!(proc_field(&status, "NoNewPrivs").as_deref(), Some("1"));
    }
}

#[test]
fn workers_are_recycled_after_max_runs() {
    let sb = build(config().pool_size(1).prespawn(1).max_runs(Some(3)));
    let first = idle_worker(&sb);
    for runs in 1..=2 {
        assert_healthy(&sb);
        let now = idle_worker(&sb);
        assert_eq!((now.pid, now.runs), (first.pid, runs));
    }
    assert_healthy(&sb);
    let next = idle_worker(&sb);
    assert_ne!(
        next.pid, first.pid,
        "the worker was not recycled after 3 runs"
    );
    assert_eq!(next.runs, 0);
    assert!(wait_gone(first.relay));
}

#[test]
fn workers_are_recycled_after_a_limit_violation_but_not_after_an_error() {
    let sb = build(config().pool_size(1).prespawn(1));
    let mut current = idle_worker(&sb).pid;
    // A script error keeps the worker.
    let out = run(&sb, "error('just an error')");
    assert_eq!(out.result.unwrap_err().kind, ErrorKind::Runtime);
    assert_eq!(idle_worker(&sb).pid, current);
    for (source, kind) in [
        (
            r#"local s = "x" while true do s = s .. s end"#,
            ErrorKind::MemoryLimit,
        ),
        ("while true do end", ErrorKind::Timeout),
        (
            r#"while true do print(("x"):rep(1e5)) end"#,
            ErrorKind::OutputLimit,
        ),
    ] {
        let out = run(&sb, source);
        assert_eq!(out.result.unwrap_err().kind, kind);
        let next = idle_worker(&sb).pid;
        assert_ne!(next, current, "not recycled after {kind}");
        current = next;
    }
}

#[test]
fn concurrent_runs_use_different_workers() {
    let sb = build(config().pool_size(2).prespawn(2));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sb = sb.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let out = sb.run("local t = ... return t.a * t.b", &json!({"a": t, "b": i}));
                    assert_eq!(out.result, Ok(json!(t * i)));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(sb.worker_pids().len() <= 2);
}

#[test]
fn dropping_the_sandbox_kills_and_reaps_its_workers() {
    let sb = build(config().pool_size(2).prespawn(2));
    assert!(sb.wait_for_idle_workers(2, Duration::from_secs(20)));
    let workers = sb.worker_pids();
    let clone = sb.clone();
    drop(sb);
    // A clone keeps the pool alive.
    assert!(workers
        .iter()
        .all(|w| Path::new(&format!("/proc/{}", w.pid)).exists()));
    drop(clone);
    for worker in workers {
        assert!(
            wait_gone(worker.relay),
            "relay {} left behind",
            worker.relay
        );
        assert!(wait_gone(worker.pid), "worker {} left behind", worker.pid);
        assert!(!is_our_child(worker.relay));
    }
}

#[test]
fn invalid_process_configs_are_refused() {
    for (builder, name) in [
        (ProcessConfig::builder().pool_size(0), "pool-size"),
        (
            ProcessConfig::builder().pool_size(1).prespawn(2),
            "prespawn",
        ),
        (ProcessConfig::builder().max_runs(Some(0)), "max-runs"),
        (ProcessConfig::builder().ids(0, 5), "ids"),
        (
            ProcessConfig::builder().cpu_time(Some(Duration::from_millis(10))),
            "cpu-time",
        ),
    ] {
        match builder.build() {
            Err(moonjail::ConfigError::InvalidLimit { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn both_profiles_run_isolated() {
    for profile in [Profile::Minimal, Profile::Standard] {
        let sb = Sandbox::builder()
            .profile(profile)
            .isolation(Isolation::Process(config().build().unwrap()))
            .build()
            .unwrap();
        let out = run(&sb, "return setmetatable == nil");
        assert_eq!(out.result, Ok(json!(profile == Profile::Minimal)));
    }
}

// ---------------------------------------------------------------------------------------
// What isolated mode supports, and what it refuses at build time.
// ---------------------------------------------------------------------------------------

#[test]
fn deterministic_runs_match_in_process() {
    let determinism = Some(moonjail::Determinism {
        timestamp: 1_700_000_000,
        seed: 42,
    });
    let source = "return {os.time(), os.date('!%Y-%m-%d'), math.random(1, 1000000), math.random()}";
    let local = Sandbox::builder()
        .deterministic(determinism)
        .build()
        .unwrap();
    let isolated = Sandbox::builder()
        .deterministic(determinism)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let expected = local.run(source, &Json::Null).result;
    assert!(expected.is_ok(), "{expected:?}");
    assert_eq!(run(&isolated, source).result, expected);
}

#[test]
fn the_aos_profile_runs_isolated_without_host_files() {
    let sb = Sandbox::builder()
        .profile(Profile::Aos)
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    let out = run(
        &sb,
        "package.preload.m = function() return {v = 7} end return require('m').v",
    );
    assert_eq!(out.result, Ok(json!(7)));
}

#[test]
fn custom_profiles_are_refused_at_build_time_and_host_files_accepted() {
    let spec: &'static moonjail::ProfileSpec = Box::leak(Box::new(moonjail::ProfileSpec {
        name: "standard",
        summary: "a custom list that borrows a built-in name",
        items: &[moonjail::Item::Global("print")],
    }));
    let custom = Sandbox::builder()
        .profile(Profile::Custom(spec))
        .isolation(Isolation::Process(config().build().unwrap()))
        .build();
    match custom {
        Err(moonjail::ConfigError::Isolation(reason)) => {
            assert!(reason.contains("custom profile"), "{reason}");
        }
        other => panic!("a custom profile was accepted: {other:?}"),
    }
    // Host files are served to workers over the channel (tests/isolated_aos.rs).
    let files = Sandbox::builder()
        .profile(Profile::Aos)
        .host_files(moonjail::HostFiles::default().allow_read("/etc/hostname"))
        .isolation(Isolation::Process(config().build().unwrap()))
        .build();
    assert!(files.is_ok(), "{files:?}");
}

#[test]
fn stop_workers_kills_a_busy_worker_and_refuses_later_runs() {
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(60))
        .isolation(Isolation::Process(config().build().unwrap()))
        .build()
        .unwrap();
    assert!(sb.wait_for_idle_workers(1, Duration::from_secs(30)));
    let (tx, rx) = mpsc::channel();
    {
        let sb = sb.clone();
        std::thread::spawn(move || {
            let _ = tx.send(sb.run("while true do end", &Json::Null));
        });
    }
    // Until the run has taken the pool's only worker (a stop just before the run
    // registers it still reaches it: the run sees the stop when it registers).
    let start = std::time::Instant::now();
    while !sb.worker_pids().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "never busy");
        std::thread::sleep(Duration::from_millis(5));
    }
    sb.stop_workers();
    // A hang check, not a timing: unstopped, the run spins for 60 s.
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the stopped run did not end");
    let error = out.error().expect("the run was stopped");
    assert_eq!(error.kind.as_str(), "killed", "{error:?}");
    // The pool is stopped for good.
    let later = sb.run("return 1", &Json::Null);
    assert_eq!(
        later.error().map(|e| e.kind.as_str()),
        Some("internal"),
        "{later:?}"
    );
}
