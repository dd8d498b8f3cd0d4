//! The harness: a service started in process on 127.0.0.1:0, and a blocking client.

#![allow(dead_code)]

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use moonjail::worker::{Isolation, LayerSet, ProcessConfig, WorkerPath};
use moonjail::{Sandbox, SandboxBuilder};
use moonjail_http::{AppState, Auth, Config, KeyStore, Server};
use serde_json::Value as Json;

/// The worker executable built with this package.
pub const WORKER: &str = env!("CARGO_BIN_EXE_moonjail-http-worker");

pub const ALICE: &str = "mj_alice-test-key";
pub const BOB: &str = "mj_bob-test-key";

/// Keys `alice` and `bob`.
pub fn keys() -> KeyStore {
    let mut store = KeyStore::new();
    store.insert("alice", ALICE).unwrap();
    store.insert("bob", BOB).unwrap();
    store
}

/// A config around `sandbox` with the test keys, 2 workers and a short grace.
pub fn config(sandbox: Sandbox) -> Config {
    let mut config = Config::new(sandbox);
    config.auth = Auth::Keys(keys());
    config.workers = 2;
    config.queue = 8;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// Isolation by workers of this package's worker binary, a pool of `pool`.
fn process(pool: usize) -> Isolation {
    let process = ProcessConfig::builder()
        .worker(WorkerPath::Path(WORKER.into()))
        .pool_size(pool)
        .prespawn(1)
        .allow_missing(unusable())
        .build()
        .unwrap();
    Isolation::Process(process)
}

/// The builder of most tests' sandbox (a short deadline, 16 MiB), in process or isolated
/// (a pool of 2 workers).
pub fn builder(isolated: bool) -> SandboxBuilder {
    let builder = Sandbox::builder()
        .timeout(Duration::from_secs(2))
        .memory_limit(16 << 20);
    if isolated {
        builder.isolation(process(2))
    } else {
        builder
    }
}

/// The in-process sandbox of most tests: a short deadline, 16 MiB.
pub fn sandbox() -> Sandbox {
    builder(false).build().unwrap()
}

/// The sandbox of most tests in either mode: [`sandbox`], or [`isolated_sandbox`] with a
/// pool of 2.
pub fn sandbox_in(isolated: bool) -> Sandbox {
    builder(isolated).build().unwrap()
}

/// The layers this machine cannot apply.
pub fn unusable() -> LayerSet {
    moonjail::worker::probe()
        .layers
        .iter()
        .filter(|(_, availability)| !availability.is_usable())
        .map(|(layer, _)| *layer)
        .collect()
}

/// An isolated sandbox: workers of this package's worker binary.
pub fn isolated_sandbox(pool: usize) -> Sandbox {
    Sandbox::builder()
        .timeout(Duration::from_secs(2))
        .memory_limit(16 << 20)
        .isolation(process(pool))
        .build()
        .unwrap()
}

/// [`sandbox_in`] with the tool `hold`, which blocks until the returned sender is dropped
/// (every call at once; later calls return at once). A host tool runs on the thread
/// serving the request in both modes (isolated, in the supervisor, which answers the
/// worker's tool call), so `hold()` keeps a request executing, without spinning a core,
/// for as long as a test needs it busy. A deadline that passes meanwhile ends the run as
/// a timeout when the tool returns, in both modes.
pub fn holding_sandbox(isolated: bool) -> (Sandbox, mpsc::Sender<()>) {
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let sandbox = builder(isolated)
        .tool("hold", move |_| {
            let _ = held.lock().unwrap().recv();
            Ok(Json::Null)
        })
        .build()
        .unwrap();
    (sandbox, release)
}

/// A sandbox with the deferred tool `approve` (a person answers it) and the live tool
/// `note`, in process or isolated.
pub fn deferring_sandbox(isolated: bool) -> Sandbox {
    let mut builder = Sandbox::builder()
        .timeout(Duration::from_secs(5))
        .memory_limit(16 << 20)
        .tool("note", |args| Ok(serde_json::json!({"noted": args})))
        .defer_tool("approve");
    if isolated {
        builder = builder.isolation(process(2));
    }
    builder.build().unwrap()
}

/// A running service and its runtime; stopped when dropped.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    served: Mutex<Option<tokio::task::JoinHandle<moonjail_http::Result<()>>>>,
    agent: ureq::Agent,
}

/// A response: status, headers, and the body as JSON (`Json::String` if it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Json,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error kind of a refusal.
    pub fn kind(&self) -> &str {
        self.body["error"]["kind"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

impl TestServer {
    /// Starts a service with `config` and waits until it is ready.
    pub fn start(config: Config) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(Server::bind(config, "127.0.0.1:0".parse().unwrap()))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let state = server.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(server.run(async {
            let _ = stopped.await;
        }));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let server = TestServer {
            base: format!("http://{addr}"),
            state,
            runtime: Some(runtime),
            stop: Mutex::new(Some(stop)),
            served: Mutex::new(Some(served)),
            agent,
        };
        let start = Instant::now();
        while !server.state.is_ready() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the service never became ready"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("the request was answered");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.clone()));
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// POSTs `body` (raw text) to `path`, with `key` as the bearer key.
    pub fn post_raw(&self, path: &str, key: Option<&str>, body: &str) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Self::answer(request.send(body))
    }

    /// POSTs `body` as JSON.
    pub fn post(&self, path: &str, key: Option<&str>, body: &Json) -> Answer {
        self.post_raw(path, key, &body.to_string())
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Self::answer(request.call())
    }

    pub fn delete(&self, path: &str, key: Option<&str>) -> Answer {
        let mut request = self.agent.delete(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        Self::answer(request.call())
    }

    /// Runs `code` as alice and returns the outcome document (asserting a 200).
    pub fn run(&self, body: &Json) -> Json {
        let answer = self.post("/v1/run", Some(ALICE), body);
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body
    }

    /// Opens a session as `key`; returns its id.
    pub fn open_session(&self, key: &str, body: &Json) -> String {
        let answer = self.post("/v1/sessions", Some(key), body);
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body["id"].as_str().unwrap().to_string()
    }

    /// Waits until `n` requests are executing.
    pub fn wait_executing(&self, n: usize) {
        let start = Instant::now();
        while self.state.executing() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never {n} executing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Signals shutdown (as SIGTERM would).
    pub fn signal_stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for the service to stop; returns what `run` returned.
    pub fn shutdown(&self) -> moonjail_http::Result<()> {
        self.signal_stop();
        let served = self.served.lock().unwrap().take().expect("not stopped yet");
        let runtime = self.runtime.as_ref().unwrap();
        runtime
            .block_on(served)
            .expect("the server task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(runtime) = self.runtime.take() {
            if let Some(served) = self.served.lock().unwrap().take() {
                let _ = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), served).await
                });
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
