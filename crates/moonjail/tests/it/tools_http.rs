//! The built-in `http` tool against real HTTP servers on 127.0.0.1, started by the tests
//! (std only, one thread per connection). Every case checks what the script sees and,
//! for refusals, that the refused server was never reached.
//!
//! https runs against a local rustls server whose certificate the test makes on the
//! spot: trusted (through `HttpConfig::root_certificates_der`) it answers; not trusted
//! (the default Mozilla roots) the handshake is refused. No public https server is
//! reachable from here.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moonjail::{ErrorKind, HttpConfig, Outcome, Sandbox, SandboxBuilder};
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------------------
// A test server.
// ---------------------------------------------------------------------------------------

struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(None)
    }

    /// An https server with a fresh self-signed certificate for 127.0.0.1 and localhost;
    /// returns it with the certificate (DER).
    fn start_tls() -> (Server, Vec<u8>) {
        let key = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("make a certificate");
        let cert = key.cert.der().to_vec();
        let private =
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone().into()], private)
            .expect("a server config");
        (Server::start_with(Some(Arc::new(config))), cert)
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let h = h.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = match tls {
                        None => handle(stream, &h),
                        Some(config) => rustls::ServerConnection::new(config)
                            .map_err(std::io::Error::other)
                            .and_then(|conn| handle(rustls::StreamOwned::new(conn, stream), &h)),
                    };
                });
            }
        });
        Server { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn handle<S: Read + Write>(mut stream: S, hits: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    drop(reader);
    hits.fetch_add(1, Ordering::SeqCst);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    };
    let (status, extra, body) = route(&req);
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

fn route(req: &Request) -> (&'static str, Vec<(&'static str, String)>, Vec<u8>) {
    let q = |k: &str| req.query.get(k).cloned().unwrap_or_default();
    match req.path.as_str() {
        "/ok" => (
            "200 OK",
            vec![
                ("Content-Type", "application/json".into()),
                ("X-Test", "yes".into()),
            ],
            br#"{"hello": "world"}"#.to_vec(),
        ),
        "/echo" => {
            let doc = json!({
                "method": req.method,
                "headers": req.headers,
                "body": String::from_utf8_lossy(&req.body),
            });
            ("200 OK", vec![], doc.to_string().into_bytes())
        }
        "/big" => {
            let n: usize = q("n").parse().unwrap_or(0);
            ("200 OK", vec![], vec![b'x'; n])
        }
        "/slow" => {
            let ms: u64 = q("ms").parse().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            ("200 OK", vec![], b"late".to_vec())
        }
        "/redirect" => ("302 Found", vec![("Location", q("to"))], vec![]),
        "/loop" => ("302 Found", vec![("Location", "/loop".into())], vec![]),
        "/see-other" => ("303 See Other", vec![("Location", "/echo".into())], vec![]),
        "/temporary" => (
            "307 Temporary Redirect",
            vec![("Location", "/echo".into())],
            vec![],
        ),
        "/missing" => ("404 Not Found", vec![], b"nothing here".to_vec()),
        "/binary" => ("200 OK", vec![], vec![0xff, 0xfe, 0x00]),
        _ => ("404 Not Found", vec![], vec![]),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn builder() -> SandboxBuilder {
    Sandbox::builder().timeout(Duration::from_secs(5))
}

fn run(sb: &Sandbox, src: &str) -> Outcome {
    sb.run(src, &Json::Null)
}

fn ok(sb: &Sandbox, src: &str) -> Json {
    let out = run(sb, src);
    match out.result {
        Ok(v) => v,
        Err(e) => panic!("{src}\nfailed: {} {}", e.kind, e.message),
    }
}

/// The error message a script catches from `call` (a Lua expression).
fn caught(sb: &Sandbox, call: &str) -> String {
    let src = format!(
        "local ok, err = pcall(function() return {call} end) assert(not ok, 'no error') return err"
    );
    match ok(sb, &src) {
        // The position is the function wrapping the call.
        Json::String(s) => s.strip_prefix("script:1: ").unwrap_or(&s).to_string(),
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------

#[test]
fn allowed_get_returns_status_headers_and_body() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let src = format!(
        r#"local r = http.get("{}")
           return {{status = r.status, test = r.headers["x-test"], body = r.body,
                    hello = json.decode(r.body).hello, url = r.url}}"#,
        s.url("/ok")
    );
    assert_eq!(
        ok(&sb, &src),
        json!({"status": 200, "test": "yes", "body": r#"{"hello": "world"}"#,
               "hello": "world", "url": s.url("/ok")})
    );
    // Any status is a result, not an error.
    let src = format!(
        r#"local r = http.get("{}") return {{r.status, r.body}}"#,
        s.url("/missing")
    );
    assert_eq!(ok(&sb, &src), json!([404, "nothing here"]));
}

#[test]
fn post_sends_strings_as_is_and_tables_as_json() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let src = format!(
        r#"local a = json.decode(http.post("{url}", "plain text", {{["X-Token"] = "t1"}}).body)
           local b = json.decode(http.post("{url}", {{n = 1, list = {{1, 2}}}}).body)
           local c = json.decode(http.get("{url}", {{Accept = "text/plain"}}).body)
           return {{a.method, a.body, a.headers["x-token"], b.body, b.headers["content-type"],
                    c.method, c.headers.accept}}"#,
        url = s.url("/echo")
    );
    let r = ok(&sb, &src);
    assert_eq!(r[0], json!("POST"));
    assert_eq!(r[1], json!("plain text"));
    assert_eq!(r[2], json!("t1"));
    let sent: Json = serde_json::from_str(r[3].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"n": 1, "list": [1, 2]}));
    assert_eq!(r[4], json!("application/json"));
    assert_eq!(r[5], json!("GET"));
    assert_eq!(r[6], json!("text/plain"));
}

#[test]
fn denied_host() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    // Refused before any lookup: the name is not on the list.
    let e = caught(&sb, r#"http.get("http://example.invalid/ok")"#);
    assert_eq!(
        e,
        format!(
            "http.get: example.invalid:80 is not an allowed destination (allowed: {})",
            s.addr()
        )
    );
    // An allowlisted address is not an allowlisted name, and the other way round.
    let e = caught(
        &sb,
        &format!(r#"http.get("http://localhost:{}/ok")"#, s.port),
    );
    assert!(e.contains("is not an allowed destination"), "{e}");
    assert_eq!(s.hits(), 0);
}

#[test]
fn denied_port() {
    let allowed = Server::start();
    let other = Server::start();
    let sb = builder().allow_http(allowed.addr()).build().unwrap();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, other.url("/ok")));
    assert!(
        e.contains(&format!("{} is not an allowed destination", other.addr())),
        "{e}"
    );
    assert_eq!(other.hits(), 0);
    // Without a port, an entry allows 80 and 443 only.
    let sb = builder().allow_http("127.0.0.1").build().unwrap();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, other.url("/ok")));
    assert!(e.contains("not an allowed destination"), "{e}");
    assert_eq!(other.hits(), 0);
}

#[test]
fn only_http_and_https() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    for (url, needle) in [
        (format!("ftp://{}/x", s.addr()), "only http and https"),
        ("file:///etc/passwd".to_string(), "only http and https"),
        ("not a url".to_string(), "invalid URL"),
        (format!("http://user:pw@{}/ok", s.addr()), "credentials"),
    ] {
        let e = caught(&sb, &format!("http.get({url:?})"));
        assert!(e.contains(needle), "{url}: {e}");
    }
    assert_eq!(s.hits(), 0);
}

#[test]
fn redirects_are_followed_within_the_allowlist() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let src = format!(
        r#"local r = http.get("{}")
           return {{r.status, json.decode(r.body).hello, r.url}}"#,
        s.url(&format!("/redirect?to={}", s.url("/ok")))
    );
    assert_eq!(ok(&sb, &src), json!([200, "world", s.url("/ok")]));
    // 303 turns a POST into a GET without a body; 307 keeps the method and the body.
    let src = format!(
        r#"local a = json.decode(http.post("{}", "data").body)
           local b = json.decode(http.post("{}", "data").body)
           return {{a.method, a.body, b.method, b.body}}"#,
        s.url("/see-other"),
        s.url("/temporary")
    );
    assert_eq!(ok(&sb, &src), json!(["GET", "", "POST", "data"]));
}

#[test]
fn redirect_out_of_the_allowlist() {
    let s = Server::start();
    let outside = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let e = caught(
        &sb,
        &format!(
            r#"http.get("{}")"#,
            s.url(&format!("/redirect?to={}", outside.url("/ok")))
        ),
    );
    assert!(
        e.contains(&format!("{} is not an allowed destination", outside.addr())),
        "{e}"
    );
    assert_eq!(outside.hits(), 0);
    // A redirect to an allowlisted name that resolves to loopback is refused as well.
    let e = caught(
        &sb,
        &format!(
            r#"http.get("{}")"#,
            s.url(&format!("/redirect?to=http://localhost:{}/ok", s.port))
        ),
    );
    assert!(e.contains("not an allowed destination"), "{e}");
    // Redirects are bounded.
    let before = s.hits();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, s.url("/loop")));
    assert!(e.contains("too many redirects (at most 5)"), "{e}");
    assert_eq!(s.hits() - before, 6);
}

#[test]
fn oversized_body() {
    let s = Server::start();
    let sb = builder()
        .http(HttpConfig::new().allow(s.addr()).max_body_bytes(1000))
        .build()
        .unwrap();
    let src = format!(r#"return #http.get("{}").body"#, s.url("/big?n=1000"));
    assert_eq!(ok(&sb, &src), json!(1000));
    let e = caught(&sb, &format!(r#"http.get("{}")"#, s.url("/big?n=1001")));
    assert_eq!(
        e,
        "http.get: the response body is larger than the 1000 byte limit"
    );
    // The default cap is 1 MiB.
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, s.url("/big?n=2000000")));
    assert!(e.contains("larger than the 1048576 byte limit"), "{e}");
}

#[test]
fn slow_server_vs_the_run_deadline() {
    let s = Server::start();
    let sb = builder()
        .timeout(Duration::from_millis(300))
        .allow_http(s.addr())
        .build()
        .unwrap();
    let start = Instant::now();
    let src = format!(
        r#"local ok, r = pcall(http.get, "{}") return r"#,
        s.url("/slow?ms=3000")
    );
    let out = run(&sb, &src);
    assert_eq!(
        out.error().unwrap().kind,
        ErrorKind::Timeout,
        "{:?}",
        out.result
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.tool_calls.len(), 1);
    assert!(!out.tool_calls[0].ok);
}

#[test]
fn slow_server_vs_the_request_timeout() {
    let s = Server::start();
    let sb = builder()
        .http(
            HttpConfig::new()
                .allow(s.addr())
                .timeout(Some(Duration::from_millis(200))),
        )
        .build()
        .unwrap();
    let start = Instant::now();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, s.url("/slow?ms=3000")));
    assert!(
        e.starts_with("http.get: the request timed out after"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_millis(1500));
    // The run itself goes on normally.
    let src = format!(r#"return http.get("{}").status"#, s.url("/slow?ms=10"));
    assert_eq!(ok(&sb, &src), json!(200));
}

#[test]
fn a_name_resolving_to_a_loopback_address() {
    let s = Server::start();
    let url = format!("http://localhost:{}/ok", s.port);
    // `localhost` is allowlisted by name, but it resolves to 127.0.0.1: refused.
    let sb = builder()
        .allow_http(format!("localhost:{}", s.port))
        .build()
        .unwrap();
    let e = caught(&sb, &format!("http.get({url:?})"));
    assert!(
        e.contains("localhost resolves to 127.0.0.1")
            && e.contains("not allowed unless the address itself is on the allowlist"),
        "{e}"
    );
    assert_eq!(s.hits(), 0);
    // With the address itself allowlisted too, the same request goes through.
    let sb = builder()
        .allow_http(format!("localhost:{}", s.port))
        .allow_http(s.addr())
        .build()
        .unwrap();
    let src = format!("return http.get({url:?}).status");
    assert_eq!(ok(&sb, &src), json!(200));
    assert_eq!(s.hits(), 1);
}

#[test]
fn requests_are_capped_per_run() {
    let s = Server::start();
    let sb = builder()
        .http(HttpConfig::new().allow(s.addr()).max_requests(Some(2)))
        .build()
        .unwrap();
    let src = format!(
        r#"http.get("{u}") http.post("{u}", "x")
           local ok, err = pcall(http.get, "{u}") return err"#,
        u = s.url("/ok")
    );
    assert_eq!(
        ok(&sb, &src),
        json!("http.get: tool call quota exceeded: at most 2 calls to the `http` tools per run")
    );
    assert_eq!(s.hits(), 2);
    // The default is 100 per run.
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let src = format!(
        r#"local n = 0
           while pcall(http.get, "{}") do n = n + 1 end
           return n"#,
        s.url("/ok")
    );
    assert_eq!(ok(&sb, &src), json!(100));
}

#[test]
fn bad_arguments_and_reserved_headers() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let u = s.url("/echo");
    for (call, needle) in [
        ("http.get()".to_string(), "argument 1 (url) is missing"),
        ("http.get(42)".to_string(), "must be a string"),
        (
            format!("http.get({u:?}, 'x')"),
            "argument 2 (headers) must be a table",
        ),
        (
            format!("http.get({u:?}, {{Host = 'evil'}})"),
            "cannot be set by a script",
        ),
        (
            format!("http.get({u:?}, {{['Content-Length'] = '1'}})"),
            "cannot be set",
        ),
        (
            format!("http.get({u:?}, {{['bad name'] = 'x'}})"),
            "not a valid header name",
        ),
        (format!("http.get({u:?}, {{X = 'a\\nb'}})"), "invalid value"),
        (format!("http.get({u:?}, {{X = {{}}}})"), "must be a string"),
        (format!("http.get({u:?}, nil, 3)"), "at most 2 arguments"),
    ] {
        let e = caught(&sb, &call);
        assert!(e.contains(needle), "{call}: {e}");
    }
    assert_eq!(s.hits(), 0);
}

#[test]
fn binary_bodies_are_refused_rather_than_mangled() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let e = caught(&sb, &format!(r#"http.get("{}")"#, s.url("/binary")));
    assert!(e.contains("not valid UTF-8"), "{e}");
}

#[test]
fn https_with_a_trusted_certificate() {
    let (s, cert) = Server::start_tls();
    let sb = builder()
        .http(
            HttpConfig::new()
                .allow(s.addr())
                .root_certificates_der(vec![cert]),
        )
        .build()
        .unwrap();
    let src = format!(
        r#"local r = http.get("https://{}/ok") return {{r.status, json.decode(r.body).hello}}"#,
        s.addr()
    );
    assert_eq!(ok(&sb, &src), json!([200, "world"]));
    assert_eq!(s.hits(), 1);
}

#[test]
fn https_verifies_certificates() {
    // The default roots do not include the test's self-signed certificate.
    let (s, _) = Server::start_tls();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let e = caught(&sb, &format!(r#"http.get("https://{}/ok")"#, s.addr()));
    assert!(
        e.starts_with("http.get: the request failed:") && e.contains("certificate"),
        "{e}"
    );
    assert_eq!(s.hits(), 0);
    // Plain http to a TLS port, and https to a plain port, fail cleanly and quickly.
    let plain = Server::start();
    let sb = builder().allow_http(plain.addr()).build().unwrap();
    let start = Instant::now();
    let e = caught(&sb, &format!(r#"http.get("https://{}/ok")"#, plain.addr()));
    assert!(e.starts_with("http.get: the request failed:"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn without_an_allowlist_there_is_no_http_tool() {
    let sb = builder().build().unwrap();
    assert_eq!(ok(&sb, "return http == nil"), json!(true));
}

#[test]
fn http_calls_are_audited() {
    let s = Server::start();
    let sb = builder().allow_http(s.addr()).build().unwrap();
    let out = run(
        &sb,
        &format!(
            r#"http.get("{}") pcall(http.get, "http://example.invalid/") return 1"#,
            s.url("/ok")
        ),
    );
    assert!(out.is_ok());
    let calls: Vec<_> = out
        .tool_calls
        .iter()
        .map(|c| (c.name.as_str(), c.ok))
        .collect();
    assert_eq!(calls, vec![("http.get", true), ("http.get", false)]);
    assert_eq!(
        out.tool_calls[0].bytes_in,
        format!("[{:?}]", s.url("/ok")).len() as u64
    );
    assert!(out.tool_calls[0].bytes_out > 18);
    assert!(out.tool_calls[1]
        .error
        .as_deref()
        .unwrap()
        .contains("not an allowed destination"));
}
