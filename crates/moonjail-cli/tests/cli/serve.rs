//! `moonjail keys` and `moonjail serve`: keys stored as hashes and printed once; the
//! service refuses to run without auth off loopback; it serves over HTTP (isolated, the
//! binary being its own worker) and exits 0 on SIGTERM; `--header-timeout` closes a
//! connection whose request head is too slow.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use crate::support::{assert_misuse, command, moonjail, spawn, TempDir};

#[test]
fn keys_are_printed_once_and_stored_as_hashes() {
    let dir = TempDir::new();
    let out = moonjail(&dir, &["keys", "add", "alice", "--keys", "k.txt"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let key = out.stdout.trim();
    assert!(key.starts_with("mj_") && key.len() == 67, "{key}");
    let file = std::fs::read_to_string(dir.path().join("k.txt")).unwrap();
    assert!(file.contains("alice sha256:"), "{file}");
    assert!(!file.contains(&key[3..]), "the file holds the key itself");
    let out = moonjail(&dir, &["keys", "add", "alice", "--keys", "k.txt"], None);
    assert_misuse(&out, "exists already");
    moonjail(&dir, &["keys", "add", "bob", "--keys", "k.txt"], None);
    let out = moonjail(&dir, &["keys", "list", "--keys", "k.txt"], None);
    assert_eq!(out.stdout, "alice\nbob\n");
    let out = moonjail(&dir, &["keys", "remove", "alice", "--keys", "k.txt"], None);
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = moonjail(&dir, &["keys", "list", "--keys", "k.txt"], None);
    assert_eq!(out.stdout, "bob\n");
}

#[test]
fn serve_refuses_to_run_without_auth_off_loopback() {
    let dir = TempDir::new();
    let out = moonjail(
        &dir,
        &["serve", "--listen", "0.0.0.0:0", "--insecure-no-auth"],
        None,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("not a loopback address"),
        "{}",
        out.stderr
    );
    let out = moonjail(&dir, &["serve", "--listen", "127.0.0.1:0"], None);
    assert_misuse(&out, "--keys");
    let out = moonjail(
        &dir,
        &["serve", "--listen", "127.0.0.1:0", "--keys", "missing.txt"],
        None,
    );
    assert_misuse(&out, "no keys");
}

/// One HTTP/1.1 request over a fresh connection; the response's status and body.
fn http(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the service");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts `moonjail ARGS` (a `serve` on port 0): the child, the address it printed, and
/// a thread draining its log (so it never blocks on a full pipe) that returns it.
fn start_serve(
    dir: &TempDir,
    args: &[&str],
) -> (std::process::Child, String, std::thread::JoinHandle<String>) {
    let mut cmd = command(dir, args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = spawn(&mut cmd);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no address printed"
        );
        if let Some(rest) = line.trim().strip_prefix("moonjail: listening on http://") {
            break rest.to_string();
        }
    };
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    (child, addr, log)
}

/// SIGTERM to `child`, then its exit status and log.
fn stop_serve(
    mut child: std::process::Child,
    log: std::thread::JoinHandle<String>,
) -> (std::process::ExitStatus, String) {
    // SAFETY: kill(2) on our own child's pid, which it cannot have reused: not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    (status, log.join().unwrap())
}

#[test]
fn serve_answers_runs_isolated_and_exits_0_on_sigterm() {
    let dir = TempDir::new();
    let key = moonjail(&dir, &["keys", "add", "ci", "--keys", "k.txt"], None)
        .stdout
        .trim()
        .to_string();
    let isolate = crate::support::isolate_flags();
    let args = crate::support::with_isolation(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "k.txt",
            "--workers",
            "1",
            "--timeout",
            "2s",
        ],
        true,
        &isolate,
    );
    let (child, addr, log) = start_serve(&dir, &args);
    let body = r#"{"code": "return (...).n * 2", "input": {"n": 21}}"#;
    let (status, answer) = http(
        &addr,
        &format!(
            "POST /v1/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{answer}");
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(doc["result"], 42, "{doc}");
    let (status, _) = http(
        &addr,
        "POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 401);
    let (status, log) = stop_serve(child, log);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("key=\"ci\""),
        "the request log names the key: {log}"
    );
    assert!(
        !log.contains("return (...)"),
        "the log never holds the source: {log}"
    );
}

#[test]
fn serve_closes_a_connection_whose_head_is_slower_than_header_timeout() {
    let dir = TempDir::new();
    let (child, addr, log) = start_serve(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--workers",
            "1",
            "--header-timeout",
            "200ms",
        ],
    );
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /heal").unwrap();
    // Closed (EOF or reset) before the hang guard, never answered.
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    match slow.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open"
        ),
    }
    // A prompt client is served.
    let (status, _) = http(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let (status, log) = stop_serve(child, log);
    assert_eq!(status.code(), Some(0), "{log}");
    // The flag is checked.
    let out = moonjail(
        &dir,
        &["serve", "--insecure-no-auth", "--header-timeout", "none"],
        None,
    );
    assert_misuse(&out, "--header-timeout");
}

/// A JSON POST as `key` over a fresh connection: the status and the body as JSON.
fn post(addr: &str, key: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let doc = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, doc)
}

#[test]
fn serve_defer_tool_suspends_a_run_and_resumes_it_over_http() {
    let dir = TempDir::new();
    let key = moonjail(&dir, &["keys", "add", "ci", "--keys", "k.txt"], None)
        .stdout
        .trim()
        .to_string();
    let isolate = crate::support::isolate_flags();
    for isolated in [false, true] {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "k.txt",
            "--workers",
            "1",
            "--defer-tool",
            "approve",
            "--suspend-timeout",
            "1m",
            "--max-suspended-per-key",
            "4",
        ];
        if isolated {
            args.extend(isolate.iter().map(String::as_str));
        }
        let (child, addr, log) = start_serve(&dir, &args);
        let (status, doc) = post(
            &addr,
            &key,
            "/v1/run",
            r#"{"code": "local r = approve({amount = (...).n}) return r.id .. '!'", "input": {"n": 5}}"#,
        );
        assert_eq!(status, 200, "isolated {isolated}: {doc}");
        assert_eq!(doc["error"]["kind"], "suspended", "{doc}");
        assert_eq!(doc["error"]["value"]["args"][0]["amount"], 5, "{doc}");
        let id = doc["error"]["value"]["run"].as_str().unwrap().to_string();
        let resume = format!("/v1/runs/{id}/resume");
        let (status, doc) = post(&addr, &key, &resume, r#"{"answer": {"id": "tx-1"}}"#);
        assert_eq!(status, 200, "isolated {isolated}: {doc}");
        assert_eq!(doc["result"], "tx-1!", "{doc}");
        let (status, doc) = post(&addr, &key, &resume, r#"{"answer": {"id": "tx-2"}}"#);
        assert_eq!(status, 404, "{doc}");
        // One left suspended: the stop gives it up and still exits 0.
        let (status, _) = post(&addr, &key, "/v1/run", r#"{"code": "return approve()"}"#);
        assert_eq!(status, 200);
        let (status, log) = stop_serve(child, log);
        assert_eq!(status.code(), Some(0), "{log}");
    }
    // The flags are checked; `session` still refuses --defer-tool.
    let out = moonjail(
        &dir,
        &["serve", "--insecure-no-auth", "--suspend-timeout", "none"],
        None,
    );
    assert_misuse(&out, "--suspend-timeout");
    let out = moonjail(&dir, &["session", "--defer-tool", "approve"], None);
    assert_misuse(&out, "cannot suspend");
}

/// Every process below `pid` now: its children and theirs (from /proc's `children`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Whether `pid` still runs (a zombie has ended: only its parent's reaping is left).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

#[test]
fn serve_leaves_no_worker_running_after_sigterm() {
    // A run still computing in its worker when the grace period ends: the worker is
    // killed before serve exits, not left as an orphan running to its 60 s deadline.
    let dir = TempDir::new();
    let isolate = crate::support::isolate_flags();
    let args = crate::support::with_isolation(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--workers",
            "1",
            "--timeout",
            "60s",
            "--grace",
            "300ms",
        ],
        true,
        &isolate,
    );
    let (child, addr, log) = start_serve(&dir, &args);
    let serve = child.id();
    let spinner = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let body = r#"{"code": "while true do end"}"#;
            let mut stream = TcpStream::connect(&addr).unwrap();
            let _ = write!(
                stream,
                "POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
        })
    };
    // Until the run is in its worker.
    let start = std::time::Instant::now();
    loop {
        let (_, metrics) = http(
            &addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if metrics.lines().any(|l| l == "moonjail_executors_busy 1") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "never busy"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let workers = descendants(serve);
    assert!(!workers.is_empty(), "no worker process under serve");
    let (status, log) = stop_serve(child, log);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("were killed"), "{log}");
    spinner.join().unwrap();
    // A hang check, not a timing: unkilled, the spinning worker runs for 60 s.
    let start = std::time::Instant::now();
    while let Some(pid) = workers.iter().find(|p| running(**p)) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "worker process {pid} still runs after serve exited: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
