//! The aos profile in isolated mode: `require` of host modules and `io.open` of listed
//! files work in a locked-down worker (which cannot open a file) because the worker asks
//! its supervisor, which answers from the sandbox's `HostFiles` with the in-process rules.
//! Everything here is compared with in-process runs; and the host-call channel is bounded
//! against floods and refuses malformed calls from a fake worker without hanging.

use std::path::PathBuf;

use std::time::{Duration, Instant};

use moonjail::worker::{LayerSet, ProcessConfigBuilder};
use moonjail::{
    Determinism, ErrorKind, HostFiles, Isolation, Outcome, ProcessConfig, Profile, Sandbox,
    WorkerPath,
};
use serde_json::{json, Value as Json};

use crate::support::fake_worker;
use crate::support::{unusable, WORKER};
use fake_worker::{frame, Fake, HOST_CALL};

const TIMEOUT: Duration = Duration::from_secs(2);
const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ao")
}

fn listed() -> String {
    fixtures().join("utils.lua").to_string_lossy().into_owned()
}

fn config() -> ProcessConfigBuilder {
    ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .allow_missing(unusable())
        .pool_size(1)
        .prespawn(1)
}

fn host_files() -> HostFiles {
    HostFiles::default()
        .modules_dir(fixtures())
        .allow_read(listed())
}

/// The aos sandbox of tests/aos.rs, in process or (with `isolation`) in workers.
fn aos(deterministic: bool, isolation: Option<ProcessConfigBuilder>) -> Sandbox {
    let mut builder = Sandbox::builder()
        .profile(Profile::Aos)
        .timeout(TIMEOUT)
        .host_files(host_files())
        .deterministic(deterministic.then_some(Determinism {
            timestamp: 1_700_000_000,
            seed: 42,
        }));
    if let Some(config) = isolation {
        builder = builder.isolation(Isolation::Process(config.build().unwrap()));
    }
    builder.build().unwrap()
}

fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    crate::support::guarded(HANG_GUARD, body)
}

/// Result (or error kind, message and line) and output: what must not depend on the mode.
fn essence(out: &Outcome) -> Json {
    match &out.result {
        Ok(v) => json!({"ok": v, "output": out.output}),
        Err(e) => json!({"kind": e.kind.as_str(), "message": e.message, "line": e.line,
                         "output": out.output}),
    }
}

/// Runs `code` with `input` in both modes and asserts the same essence; returns it.
fn same_in_both(local: &Sandbox, remote: &Sandbox, code: &str, input: &Json) -> Json {
    let l = essence(&local.run(code, input));
    let r = essence(&remote.run(code, input));
    assert_eq!(l, r, "in process vs isolated differ for {code}");
    l
}

/// The message sequence of tests/aos.rs, through one session, plus `io.open` of the
/// listed file and a `require` from `exec`: every outcome, serialized.
fn drive(sandbox: &Sandbox) -> Vec<Json> {
    let mut s = sandbox.session().unwrap();
    let src = std::fs::read(fixtures().join("process.lua")).unwrap();
    let out = s.exec(&src);
    assert!(out.is_ok(), "{:?}", out.result);
    let mut outcomes = vec![essence(&out)];
    let mut state = json!({});
    for msg in [
        json!({"Action": "Ping"}),
        json!({"Action": "Sum", "Data": "1,2,3"}),
        json!({"Action": "Ping"}),
        json!({"Action": "Eval", "Data": "return #Inbox + math.random(1, 1000)"}),
        json!({"Action": "Nope"}),
    ] {
        let out = s.call("compute", &[state.clone(), msg]);
        state = out.result.clone().unwrap();
        outcomes.push(json!({"result": state, "output": out.output}));
    }
    let read = format!(
        r#"
        local f = assert(io.open({:?}))
        local first = f:read("l")
        local n = 1
        for _ in f:lines() do n = n + 1 end
        f:close()
        local again = require("utils") == package.loaded.utils
        local h = require("lib.handlers")
        local missing, err = pcall(require, "lib.nothing")
        local x, xerr = io.open("/etc/passwd")
        print(first)
        return {{first = first, lines = n, again = again, handlers = #h.list,
                missing = missing, err = err, x = x == nil, xerr = xerr, inbox = #Inbox}}
        "#,
        listed()
    );
    outcomes.push(essence(&s.exec(read)));
    outcomes
}

// ---------------------------------------------------------------------------------------
// The AO module, in a worker.
// ---------------------------------------------------------------------------------------

#[test]
fn ao_module_handles_messages_isolated_as_in_process() {
    guarded(|| {
        let remote = drive(&aos(true, Some(config())));
        let local = drive(&aos(true, None));
        assert_eq!(remote, local);

        let last = &remote[5]["result"];
        assert_eq!(last["pings"], json!(2));
        assert_eq!(last["total"], json!(6));
        assert_eq!(last["last"]["reply"], json!("no handler for Nope"));
        assert_eq!(last["last"]["inbox"], json!(5));
        assert_eq!(last["last"]["at"], json!(1_700_000_000_000i64));
        assert_eq!(remote[1]["result"]["last"]["reply"], json!("Pong 1"));
        assert_eq!(remote[2]["output"], json!("handled Sum\n"));
        let read = &remote[6];
        assert_eq!(
            read["ok"]["first"],
            json!("local utils = { _version = \"0.0.1\" }")
        );
        assert_eq!(read["ok"]["lines"], json!(9));
        assert_eq!(read["ok"]["again"], json!(true));
        assert_eq!(read["ok"]["handlers"], json!(3));
        assert_eq!(read["ok"]["missing"], json!(false));
        assert!(read["ok"]["err"]
            .as_str()
            .unwrap()
            .contains("module 'lib.nothing' not found"));
        assert_eq!(
            read["ok"]["xerr"],
            json!("/etc/passwd: No such file or directory")
        );
        assert_eq!(read["ok"]["inbox"], json!(5));
    });
}

#[test]
fn deterministic_isolated_sessions_are_byte_identical() {
    guarded(|| {
        let sb = aos(true, Some(config()));
        let a = serde_json::to_string(&drive(&sb)).unwrap();
        let b = serde_json::to_string(&drive(&sb)).unwrap();
        assert_eq!(a, b);
        // And a second sandbox, with fresh workers, too.
        let c = serde_json::to_string(&drive(&aos(true, Some(config())))).unwrap();
        assert_eq!(a, c);
    });
}

#[test]
fn require_resolution_order_and_errors_match_in_process() {
    guarded(|| {
        let local = aos(false, None);
        let remote = aos(false, Some(config()));
        let ok = same_in_both(
            &local,
            &remote,
            r#"
            package.preload["virtual"] = function(name, extra) return {name = name, extra = extra} end
            local v = require("virtual")
            local u1, path = require("utils")
            local u2 = require("utils")
            local h, hpath = require("lib.handlers")
            return {v = v, same = u1 == u2, path = path, hpath = hpath,
                    loaded = package.loaded.utils == u1, g = package.loaded._G == _G}
            "#,
            &Json::Null,
        );
        assert_eq!(ok["ok"]["path"], json!("utils.lua"));
        assert_eq!(ok["ok"]["hpath"], json!("lib/handlers.lua"));
        for (code, fragment) in [
            (
                "require('missing.module')",
                "module 'missing.module' not found",
            ),
            ("require('../../etc/passwd')", "invalid module name"),
            ("require('/etc/passwd')", "invalid module name"),
            ("require('a..b')", "invalid module name"),
            ("require('')", "invalid module name"),
            ("require(42)", "module '42' not found"),
            ("require({})", "string expected"),
        ] {
            let e = same_in_both(&local, &remote, code, &Json::Null);
            assert_eq!(e["kind"], json!("runtime"), "{code}: {e}");
            assert!(
                e["message"].as_str().unwrap().contains(fragment),
                "{code}: {e}"
            );
        }
    });
}

#[test]
fn io_reads_only_listed_files_as_in_process() {
    guarded(|| {
        let local = aos(false, None);
        let remote = aos(false, Some(config()));
        let code = r#"
            local path = ...
            local f = assert(io.open(path))
            local first = f:read("l")
            local rest = f:read("*a")
            f:close()
            local g = assert(io.open(path, "rb"))
            local n = 0
            for line in g:lines() do n = n + 1 end
            local w, werr = io.open(path, "w")
            local x, xerr = io.open("/etc/passwd")
            local y, yerr = io.open(path .. "/../utils.lua")
            local z, zerr = io.open("utils.lua")
            return {first = first, rest = rest, lines = n, w = w == nil, werr = werr,
                    x = x == nil, xerr = xerr, y = y == nil, yerr = yerr, z = z == nil,
                    zerr = zerr}
        "#;
        let r = same_in_both(&local, &remote, code, &json!(listed()));
        let r = &r["ok"];
        assert_eq!(r["lines"], json!(9));
        assert_eq!(r["xerr"], json!("/etc/passwd: No such file or directory"));
        assert_eq!(r["y"], json!(true));
        assert_eq!(r["z"], json!(true));
        assert!(r["werr"].as_str().unwrap().contains("only reading"));
    });
}

#[test]
fn a_listed_file_that_cannot_be_read_fails_as_in_process() {
    guarded(|| {
        let gone = std::env::temp_dir().join(format!("moonjail-gone-{}", std::process::id()));
        let gone = gone.to_string_lossy().into_owned();
        let build = |isolation: Option<ProcessConfigBuilder>| {
            let mut b = Sandbox::builder()
                .profile(Profile::Aos)
                .timeout(TIMEOUT)
                .host_files(HostFiles::default().allow_read(gone.clone()));
            if let Some(c) = isolation {
                b = b.isolation(Isolation::Process(c.build().unwrap()));
            }
            b.build().unwrap()
        };
        let code = "local f, err = io.open(...) return {f == nil, err}";
        let r = same_in_both(&build(None), &build(Some(config())), code, &json!(gone));
        assert!(
            r["ok"][0] == json!(true) && r["ok"][1].as_str().unwrap().contains("No such file"),
            "{r}"
        );
    });
}

#[test]
fn a_listed_fifo_is_refused_without_blocking() {
    guarded(|| {
        let fifo = std::env::temp_dir().join(format!("moonjail-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let path = fifo.to_string_lossy().into_owned();
        let build = |isolation: Option<ProcessConfigBuilder>| {
            let mut b = Sandbox::builder()
                .profile(Profile::Aos)
                .timeout(TIMEOUT)
                .host_files(HostFiles::default().allow_read(path.clone()));
            if let Some(c) = isolation {
                b = b.isolation(Isolation::Process(c.build().unwrap()));
            }
            b.build().unwrap()
        };
        let code = "local f, err = io.open(...) return {f == nil, err}";
        let r = same_in_both(&build(None), &build(Some(config())), code, &json!(path));
        let _ = std::fs::remove_file(&fifo);
        assert_eq!(r["ok"][0], json!(true), "{r}");
        assert!(
            r["ok"][1].as_str().unwrap().contains("not a regular file"),
            "{r}"
        );
    });
}

#[test]
fn without_host_files_aos_refuses_as_in_process() {
    guarded(|| {
        let local = Sandbox::builder().profile(Profile::Aos).build().unwrap();
        let remote = Sandbox::builder()
            .profile(Profile::Aos)
            .isolation(Isolation::Process(config().build().unwrap()))
            .build()
            .unwrap();
        for code in [
            "return require('utils')",
            "return {io.open('/etc/hostname')}",
            "package.preload.m = function() return {v = 7} end return require('m').v",
        ] {
            same_in_both(&local, &remote, code, &Json::Null);
        }
    });
}

#[test]
fn diagnostics_record_requires_in_a_worker() {
    guarded(|| {
        let build = |isolation: Option<ProcessConfigBuilder>| {
            let mut b = Sandbox::builder()
                .profile(Profile::Aos)
                .host_files(host_files())
                .diagnostic(true);
            if let Some(c) = isolation {
                b = b.isolation(Isolation::Process(c.build().unwrap()));
            }
            b.build().unwrap()
        };
        let code = "require('utils') pcall(require, 'nope') return 1";
        let local = build(None).run(code, &Json::Null);
        let remote = build(Some(config())).run(code, &Json::Null);
        assert_eq!(remote.result, Ok(json!(1)));
        let (l, r) = (local.diagnostics.unwrap(), remote.diagnostics.unwrap());
        assert_eq!(l.require, r.require);
        assert_eq!(r.require.len(), 2, "{:?}", r.require);
    });
}

// ---------------------------------------------------------------------------------------
// Floods: the host calls of one request are bounded.
// ---------------------------------------------------------------------------------------

/// An isolated aos sandbox with `config`, without a deadline: only the host-call budget
/// stops the floods below.
fn unbounded_time(config: ProcessConfigBuilder) -> Sandbox {
    Sandbox::builder()
        .profile(Profile::Aos)
        .no_timeout()
        .host_files(host_files())
        .isolation(Isolation::Process(config.build().unwrap()))
        .build()
        .unwrap()
}

fn assert_flood_stopped(sb: &Sandbox, code: &str, fragment: &str) {
    let started = Instant::now();
    let out = sb.run(code, &json!(listed()));
    let e = out
        .error()
        .unwrap_or_else(|| panic!("a flood succeeded: {:?}", out.result));
    assert_eq!(e.kind, ErrorKind::Forbidden, "{e:?}");
    assert!(e.message.contains(fragment), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The supervisor is healthy: the next run (on a fresh worker) reads again.
    let out = sb.run("return require('utils')._version", &Json::Null);
    assert_eq!(out.result, Ok(json!("0.0.1")));
}

#[test]
fn a_require_flood_is_bounded() {
    guarded(|| {
        let sb = unbounded_time(config().max_host_calls(200));
        let code = "local i = 0 while true do i = i + 1 pcall(require, 'missing' .. i) end";
        assert_flood_stopped(&sb, code, "more than 200 host calls");
        // The default bound holds too (10 000 calls).
        let sb = unbounded_time(config());
        assert_flood_stopped(&sb, code, "more than 10000 host calls");
    });
}

#[test]
fn an_io_open_flood_is_bounded_by_calls_and_by_bytes() {
    guarded(|| {
        let sb = unbounded_time(config().max_host_calls(300));
        let code = "local p = ... while true do io.open('/nonexistent/' .. p) end";
        assert_flood_stopped(&sb, code, "more than 300 host calls");
        // A listed file read over and over moves its bytes every time.
        let sb = unbounded_time(config().max_host_call_bytes(64 << 10));
        let code = "local p = ... while true do assert(io.open(p)):close() end";
        assert_flood_stopped(&sb, code, "more than 65536 bytes");
    });
}

#[test]
fn a_flood_closes_the_session_but_not_the_sandbox() {
    guarded(|| {
        let sb = unbounded_time(config().max_host_calls(100));
        let mut s = sb.session().unwrap();
        // Within the budget per call: each call may make 100 host calls.
        for _ in 0..3 {
            let out = s.exec("for i = 1, 90 do pcall(require, 'm' .. i) end return 1");
            assert_eq!(out.result, Ok(json!(1)));
        }
        let out = s.exec("for i = 1, 1000 do pcall(require, 'm' .. i) end");
        assert_eq!(out.error().unwrap().kind, ErrorKind::Forbidden);
        assert_eq!(
            s.closed_reason().map(|e| e.kind),
            Some(ErrorKind::Forbidden)
        );
        assert!(s
            .exec("return 1")
            .error()
            .unwrap()
            .message
            .contains("session was closed"));
        assert_eq!(sb.run("return 1", &Json::Null).result, Ok(json!(1)));
    });
}

// ---------------------------------------------------------------------------------------
// Fake workers that abuse the host-call channel.
// ---------------------------------------------------------------------------------------

impl Fake {
    fn sandbox(&self, config: ProcessConfigBuilder) -> Sandbox {
        Sandbox::builder()
            .profile(Profile::Aos)
            .timeout(TIMEOUT)
            .host_files(host_files())
            .isolation(Isolation::Process(
                config
                    .worker(WorkerPath::Path(self.dir.join("worker")))
                    .allow_missing(LayerSet::all())
                    .prespawn(0)
                    .max_frame_bytes(1 << 20)
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap()
    }
}

fn expect_fake_error(fake: &Fake, config: ProcessConfigBuilder, kind: ErrorKind, fragment: &str) {
    let sb = fake.sandbox(config);
    let started = Instant::now();
    let out = sb.run("return 1", &Json::Null);
    let e = out.error().expect("a fake worker cannot succeed");
    assert_eq!(e.kind, kind, "{e:?}");
    assert!(
        e.message.contains(fragment),
        "{:?} lacks {fragment:?}",
        e.message
    );
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_malformed_host_call_is_an_error_not_a_hang() {
    guarded(|| {
        for (name, meta) in [
            ("not-json", &b"{\"id\": 1, \"request\": "[..]),
            (
                "unknown-request",
                br#"{"id": 1, "request": {"format_disk": {"path": "/"}}}"#,
            ),
            (
                "no-id",
                br#"{"request": {"read_file": {"path": "/etc/passwd"}}}"#,
            ),
        ] {
            let fake = Fake::new(name, frame(HOST_CALL, &[meta]));
            expect_fake_error(&fake, config(), ErrorKind::Internal, "malformed");
        }
        let fake = Fake::new("no-sections", frame(HOST_CALL, &[]));
        expect_fake_error(&fake, config(), ErrorKind::Internal, "malformed");
    });
}

#[test]
fn a_fake_worker_flooding_host_calls_is_stopped() {
    guarded(|| {
        // Valid calls, never reading the answers: the budget stops it.
        let call = frame(
            HOST_CALL,
            &[br#"{"id": 1, "request": {"read_module": {"name": "utils"}}}"#],
        );
        let flood: Vec<u8> = call.repeat(500);
        let fake = Fake::new("flood", flood);
        expect_fake_error(
            &fake,
            config().max_host_calls(100),
            ErrorKind::Forbidden,
            "more than 100 host calls",
        );
        // A call of a tool the sandbox does not have is refused, not obeyed: the worker is
        // killed (more in tests/tools_isolated.rs).
        let tool = frame(
            HOST_CALL,
            &[br#"{"id": 1, "request": {"tool": {"name": "x", "args": null}}}"#],
        );
        let fake = Fake::new("tool", tool);
        expect_fake_error(&fake, config(), ErrorKind::Forbidden, "not a tool");
    });
}
