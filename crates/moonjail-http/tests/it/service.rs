//! `/healthz`, `/readyz`, `/metrics`, and graceful shutdown. Each in process and isolated.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::{config, holding_sandbox, sandbox_in, TestServer, ALICE};

fn health_and_readiness(isolated: bool) {
    let server = TestServer::start(config(sandbox_in(isolated)));
    let health = server.get("/healthz", None);
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = server.get("/readyz", None);
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (200, Some("ready"))
    );
    server.state.begin_shutdown();
    assert_eq!(server.get("/readyz", None).status, 503);
    assert_eq!(server.get("/healthz", None).status, 200);
}
in_both_modes!(health_and_readiness);

fn metrics_count_runs_limits_tool_calls_and_sessions(isolated: bool) {
    let sandbox = crate::support::builder(isolated)
        .tool("echo", |args| Ok(args[0].clone()))
        .build()
        .unwrap();
    let server = TestServer::start(config(sandbox));
    // Two tool calls in the first run.
    server.run(&json!({"code": "echo(1) echo(2) return 1"}));
    server.run(&json!({"code": "return 1", "profile": "minimal"}));
    server.run(&json!({"code": "while true do end", "limits": {"timeout": "20ms"}}));
    server.open_session(ALICE, &json!({}));
    let metrics = server.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &metrics.text;
    for line in [
        r#"moonjail_runs_total{mode="run",profile="standard",outcome="ok"} 1"#,
        r#"moonjail_runs_total{mode="run",profile="minimal",outcome="ok"} 1"#,
        r#"moonjail_runs_total{mode="run",profile="standard",outcome="timeout"} 1"#,
        r#"moonjail_limit_hits_total{kind="timeout"} 1"#,
        "moonjail_run_duration_seconds_count 3",
        "moonjail_live_sessions 1",
        "moonjail_pool_size 2",
        "moonjail_queue_depth 0",
        "moonjail_tool_calls_total 2",
        r#"moonjail_http_requests_total{route="/v1/run",status="200"} 3"#,
        r#"moonjail_http_request_duration_seconds_count{route="/v1/run"} 3"#,
        "moonjail_http_requests_unanswered_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
}
in_both_modes!(metrics_count_runs_limits_tool_calls_and_sessions);

fn shutdown_lets_requests_in_flight_finish(isolated: bool) {
    let server = Arc::new(TestServer::start(config(sandbox_in(isolated))));
    let busy = {
        let server = server.clone();
        std::thread::spawn(move || {
            server.run(&json!({"code":
                "local t = os.clock() while os.clock() - t < 0.3 do end return 'done'"}))
        })
    };
    server.wait_executing(1);
    server.signal_stop();
    assert_eq!(busy.join().unwrap()["result"], "done");
    server.shutdown().unwrap();
    assert!(!server.state.is_ready());
    // Every request read was answered (the readiness polls and the run).
    let tally = server.state.requests();
    assert!(tally.read >= 1, "{tally:?}");
    assert_eq!(tally.unanswered, 0, "{tally:?}");
}
in_both_modes!(shutdown_lets_requests_in_flight_finish);

fn shutdown_stops_accepting_and_cancels_what_outlasts_the_grace_period(isolated: bool) {
    // A tool that holds its run until the test lets go: a request that cannot finish
    // within any grace period, without spinning a core (isolated too: the tool runs in
    // the supervisor, on the executor's thread).
    let (sandbox, release) = holding_sandbox(isolated);
    let mut config = config(sandbox);
    config.shutdown_grace = Duration::from_millis(200);
    let server = TestServer::start(config);
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let mut stuck = running(&server, r#"{"code": "hold() return 'finished'"}"#);
    server.shutdown().unwrap();
    // The grace period is over: the request was cancelled, its connection closed
    // without an answer, and nothing is accepted any more.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    match stuck.read_to_end(&mut answer) {
        Ok(_) => assert!(
            answer.is_empty(),
            "answered: {}",
            String::from_utf8_lossy(&answer)
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open"
        ),
    }
    assert!(TcpStream::connect(&addr).is_err(), "still accepting");
    // The stop's tally names the one request it cancelled.
    assert_eq!(server.state.requests().unanswered, 1);
    drop(release);
}
in_both_modes!(shutdown_stops_accepting_and_cancels_what_outlasts_the_grace_period);

#[test]
fn shutdown_kills_the_workers_of_runs_that_outlast_the_grace_period() {
    // Isolated, a run past the grace period is in a worker process: the stop must end it
    // (the worker killed and reaped, the executor freed), not leave it running to its own
    // 60 s deadline as an orphan once the service has exited.
    let sandbox = crate::support::builder(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut config = config(sandbox);
    config.shutdown_grace = Duration::from_millis(200);
    let server = TestServer::start(config);
    let _stuck = running(&server, r#"{"code": "while true do end"}"#);
    server.shutdown().unwrap();
    // A hang check, not a timing: without the stop the run holds its executor for 60 s.
    let start = std::time::Instant::now();
    while server.state.executing() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the run is still executing in its worker after the stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.state.requests().unanswered, 1);
}

/// Posts a run of `body` on a connection of its own and waits until it executes: the
/// connection, for the test to read what (if anything) comes back.
fn running(server: &TestServer, body: &str) -> TcpStream {
    let addr = server.base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.wait_executing(1);
    stream
}
