//! The wall-clock deadline across nesting and alongside the embedding program's own
//! signal handlers.

use std::time::Duration;

use moonjail::{ErrorKind, Sandbox};
use serde_json::{json, Value as Json};

/// Generous: these tests assert "it ended", never how fast.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Runs `source` on `sb` on a thread of its own and waits at most [`HANG_GUARD`]: a
/// regression here is a run that never ends, which must fail the test, not hang it.
fn run_guarded(sb: Sandbox, source: &'static str) -> moonjail::Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sb.run(source, &Json::Null));
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("the run passed its deadline and never ended")
}

/// A host tool that runs another script in a sandbox of its own, on the calling thread
/// (so the inner run arms and disarms the same thread's timer).
fn nesting_sandbox(outer_timeout: Duration, inner_source: &'static str) -> Sandbox {
    let inner = Sandbox::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Sandbox::builder()
        .timeout(outer_timeout)
        .tool("inner.run", move |_args| {
            let out = inner.run(inner_source, &Json::Null);
            out.result.map_err(|e| moonjail::ToolError::new(e.message))
        })
        .build()
        .unwrap()
}

#[test]
fn a_nested_run_does_not_cancel_the_outer_deadline() {
    let sb = nesting_sandbox(Duration::from_millis(300), "return 1");
    let out = run_guarded(sb, "inner.run() while true do end");
    assert_eq!(
        out.error().map(|e| e.kind),
        Some(ErrorKind::Timeout),
        "{out:?}"
    );
}

#[test]
fn an_outer_deadline_that_passes_during_a_nested_run_stops_the_outer_run() {
    // The inner script outlives the outer deadline (its own is 10 s): when it returns,
    // the outer run must stop at its next instruction.
    let sb = nesting_sandbox(
        Duration::from_millis(200),
        "local t = os.clock() while os.clock() - t < 0.6 do end return 1",
    );
    let out = run_guarded(sb, "inner.run() while true do end");
    assert_eq!(
        out.error().map(|e| e.kind),
        Some(ErrorKind::Timeout),
        "{out:?}"
    );
}

#[test]
fn nested_runs_many_times_keep_every_deadline() {
    let sb = nesting_sandbox(Duration::from_millis(300), "return 2");
    let out = run_guarded(
        sb.clone(),
        "for i = 1, 50 do assert(inner.run() == 2) end while true do end",
    );
    assert_eq!(
        out.error().map(|e| e.kind),
        Some(ErrorKind::Timeout),
        "{out:?}"
    );
    // And the thread is clean afterwards: a run without a deadline problem succeeds.
    let out = sb.run("return inner.run() + 1", &Json::Null);
    assert_eq!(out.result, Ok(json!(3)));
}

/// The child half of the foreign-handler test: runs in a fresh process (signal
/// dispositions are process-wide).
const FOREIGN_CHILD: &str = "MOONJAIL_TEST_FOREIGN_HANDLER_CHILD";

extern "C" fn foreign_handler(_: libc::c_int) {}

#[test]
fn a_foreign_handler_on_the_deadline_signal_is_refused_not_replaced() {
    if std::env::var_os(FOREIGN_CHILD).is_some() {
        // SAFETY: installing a plain handler in this test's own child process.
        let installed = unsafe {
            libc::signal(
                moonjail::deadline_signal(),
                foreign_handler as *const () as libc::sighandler_t,
            )
        };
        assert_ne!(installed, libc::SIG_ERR);
        let sb = Sandbox::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let out = sb.run("while true do end", &Json::Null);
        let e = out
            .error()
            .expect("the run cannot be bounded, so it must not run");
        assert_eq!(e.kind, ErrorKind::Internal, "{e:?}");
        assert!(e.message.contains("deadline signal"), "{e:?}");
        // The embedder's handler is still in place.
        // SAFETY: reading the disposition into a zeroed struct.
        let current = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(moonjail::deadline_signal(), std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        assert_eq!(current, foreign_handler as *const () as libc::sighandler_t);
        // Without a deadline nothing needs the signal: runs still work.
        let unbounded = Sandbox::builder().no_timeout().build().unwrap();
        assert_eq!(unbounded.run("return 1", &Json::Null).result, Ok(json!(1)));
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "deadline::a_foreign_handler_on_the_deadline_signal_is_refused_not_replaced",
            "--test-threads=1",
        ])
        .env(FOREIGN_CHILD, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the child's checks failed: {status}");
}
