//! Slow clients (slowloris) over raw TCP: a connection whose request head is not
//! complete within the header timeout is closed, whether the client stops half-way or
//! trickles its bytes; a connection idle past the idle timeout is closed; a keep-alive
//! client that pauses between requests for longer than the header timeout keeps its
//! connection and is served. No test asserts how soon: every wait is bounded only by a
//! hang guard far above the timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moonjail_http::Config;

use crate::support::{config, sandbox, TestServer, ALICE};

/// How long a test waits for what should happen before it fails.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// A service whose connections have `header` to send a head and `idle` to start one.
fn start(header: Duration, idle: Duration) -> TestServer {
    let mut config: Config = config(sandbox());
    config.header_timeout = header;
    config.idle_timeout = idle;
    TestServer::start(config)
}

fn connect(server: &TestServer) -> TcpStream {
    let addr = server.base.strip_prefix("http://").unwrap();
    let stream = TcpStream::connect(addr).expect("connect to the service");
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    stream
}

/// What one read on a connection saw.
enum Seen {
    /// The service closed it: EOF, or a reset.
    Closed,
    /// It sent bytes (an answer) instead.
    Answered(String),
    /// Nothing within the hang guard: still open.
    Open,
}

fn read_once(stream: &mut TcpStream) -> Seen {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => Seen::Closed,
        Ok(n) => Seen::Answered(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Seen::Open
        }
        Err(_) => Seen::Closed,
    }
}

/// Fails unless the service closed the connection without answering.
fn expect_closed(seen: Seen, what: &str) {
    match seen {
        Seen::Closed => {}
        Seen::Answered(text) => panic!("{what}: answered instead of closed: {text}"),
        Seen::Open => panic!("{what}: still open after {HANG_GUARD:?}"),
    }
}

/// Waits (up to the hang guard) for the service to close `stream` without answering.
fn assert_closed_without_answer(stream: &mut TcpStream, what: &str) {
    expect_closed(read_once(stream), what);
}

/// Waits until the metrics count at least `n` connections timed out in `phase` (the
/// count is made as a connection closes, not before).
fn wait_for_timed_out(server: &TestServer, phase: &str, n: u64) {
    let series = format!(r#"moonjail_connections_timed_out_total{{phase="{phase}"}} "#);
    let start = Instant::now();
    loop {
        let text = server.get("/metrics", None).text;
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.parse::<u64>().unwrap());
        if count >= n {
            return;
        }
        assert!(start.elapsed() < HANG_GUARD, "{series}{n} not in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn half_a_request_line_then_nothing_is_closed_after_the_header_timeout() {
    let server = start(Duration::from_millis(200), Duration::from_secs(60));
    let mut stream = connect(&server);
    stream.write_all(b"POST /v1/ru").unwrap();
    assert_closed_without_answer(&mut stream, "half a request line");
    wait_for_timed_out(&server, "header", 1);
}

#[test]
fn headers_trickled_faster_than_the_timeout_per_byte_are_still_cut_off() {
    let server = start(Duration::from_millis(200), Duration::from_secs(60));
    let mut stream = connect(&server);
    // Each byte comes well within the header timeout of the last one: only a deadline on
    // the whole head stops this client, not one on each read.
    let mut reader = stream.try_clone().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_once(&mut reader));
    });
    let head = b"POST /v1/run HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let start = Instant::now();
    let mut sent = 0usize;
    let ended = loop {
        if let Ok(read) = rx.try_recv() {
            break read;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "still open after {sent} bytes trickled over {HANG_GUARD:?}"
        );
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_err() {
            // Written into a closed connection: the reader sees it closed too.
            break rx.recv_timeout(HANG_GUARD).unwrap_or(Seen::Open);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    };
    expect_closed(ended, "a trickled head");
    wait_for_timed_out(&server, "header", 1);
}

/// One request on `stream`, keeping the connection open; the status and the body.
fn exchange(stream: &mut TcpStream, body: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "POST /v1/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_len, content_length) = loop {
        let n = stream
            .read(&mut buf)
            .expect("an answer on the same connection");
        assert!(n > 0, "the connection was closed instead of answered");
        received.extend_from_slice(&buf[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .expect("a content-length");
            break (end + 4, length);
        }
    };
    while received.len() < head_len + content_length {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection was closed mid-answer");
        received.extend_from_slice(&buf[..n]);
    }
    let status = std::str::from_utf8(&received[9..12])
        .unwrap()
        .parse()
        .unwrap();
    let body = serde_json::from_slice(&received[head_len..head_len + content_length]).unwrap();
    (status, body)
}

#[test]
fn a_keep_alive_client_pausing_longer_than_the_header_timeout_is_served() {
    let server = start(Duration::from_millis(200), Duration::from_secs(60));
    let mut stream = connect(&server);
    for i in 0..3 {
        if i > 0 {
            // Idle between requests, longer than the header timeout.
            std::thread::sleep(Duration::from_millis(300));
        }
        let (status, doc) = exchange(&mut stream, &format!(r#"{{"code": "return {i}"}}"#));
        assert_eq!(
            (status, &doc["result"]),
            (200, &serde_json::json!(i)),
            "{doc}"
        );
    }
    // A run longer than the header timeout: the head was complete, so only the request
    // timeout bounds it.
    let (status, doc) = exchange(
        &mut stream,
        r#"{"code": "local t = os.clock() while os.clock() - t < 0.3 do end return 'slow'"}"#,
    );
    assert_eq!(
        (status, &doc["result"]),
        (200, &serde_json::json!("slow")),
        "{doc}"
    );
    let metrics = server.get("/metrics", None).text;
    assert!(
        !metrics.contains("moonjail_connections_timed_out_total{"),
        "no connection was timed out:\n{metrics}"
    );
}

#[test]
fn a_connection_idle_past_the_idle_timeout_is_closed() {
    let server = start(Duration::from_secs(10), Duration::from_millis(200));
    // Connected, then nothing at all.
    let mut silent = connect(&server);
    assert_closed_without_answer(&mut silent, "a silent connection");
    // Served once, then idle.
    let mut served = connect(&server);
    let (status, _) = exchange(&mut served, r#"{"code": "return 1"}"#);
    assert_eq!(status, 200);
    assert_closed_without_answer(&mut served, "an idle keep-alive connection");
    wait_for_timed_out(&server, "idle", 2);
}
