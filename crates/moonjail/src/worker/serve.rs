//! The worker's side: what a worker process does from `main` on.
//!
//! 1. Warm up everything that would read the file system later (the time zone, one run
//!    through the whole in-process sandbox), while the process has a single thread.
//! 2. Read `Configure` from the supervisor (a trusted peer: no untrusted byte has arrived
//!    yet), move the channel off stdin/stdout and point those at stderr, so that a stray
//!    `print!` anywhere in the process lands in the captured stderr instead of corrupting
//!    the protocol.
//! 3. [`moonjail_isolate::lockdown`]: every layer, in order; the process returns from it
//!    as PID 1 of a new PID namespace (the original process stays behind as the relay).
//! 4. Send `Ready`, then serve `Run` requests, each with a fresh Lua state (the Lua-level
//!    layers and quotas stay on inside the worker), until the channel closes — or, after
//!    `SessionOpen`, the session's `Exec`, `Call` and `HasFunction` requests against one
//!    persistent state, until `Close`. A request the supervisor asks to stop (a signal,
//!    see `interrupt.rs`) ends as `interrupted`, answered as usual.
//!
//! Lua code running here never sees the channel: no library a profile can list reaches a
//! file descriptor, and the requests are driven by the supervisor alone. The one way a
//! script reaches past its state is through the host's own functions: `require` of a host
//! module and `io.open` of a listed file, which here become `HostCall` frames (a
//! [`ChannelFiles`] in place of the host's file system), and host tools, whose calls
//! become `HostCall` frames too (a [`ChannelTools`] relay in place of the tools, which the
//! worker knows by name only); the supervisor answers them from its configuration, and
//! the script chooses only the name, path or arguments asked for. `Probe` requests
//! (raw system calls and crashes, for the tests of the isolation layers) are honoured only
//! when the process was started with `MOONJAIL_WORKER_TEST_HOOKS=1`, which the supervisor
//! sets only for a `ProcessConfig` built with the hidden `test_hooks` switch; a production
//! worker answers them with `Refused`.

use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use moonjail_isolate::{lockdown, Layer, LayerSet, LayerStatus, LockdownConfig, LockdownReport};
use serde_json::{json, Value as Json};

use super::protocol::{
    self, Configure, Decoded, DoneMeta, ExecMeta, Frame, FunctionName, HostAnswer, HostCall,
    HostReply, HostRequest, Kind, LayerLine, Message, ProbeRequest, Ready, RequestMeta,
};
use super::{interrupt, TEST_HOOKS_ENV};
use crate::engine::{Engine, Host};
use crate::error::{Error, ErrorKind};
use crate::host::{FileSource, HostFiles};
use crate::outcome::Outcome;
use crate::spec::Spec;
use crate::tools::{Relay, ToolError, ToolRegistry};

/// Exit statuses of a worker.
const EXIT_OK: i32 = 0;
const EXIT_PROTOCOL: i32 = 2;
const EXIT_LOCKDOWN: i32 = 3;

/// How much deeper than `result_depth` a run's input may nest before it is refused while
/// parsing (the sandbox itself refuses anything over `result_depth` with its own message).
const INPUT_DEPTH_SLACK: usize = 64;

const WARM_UP: &str = r##"
local t = os.time({year = 2020, month = 1, day = 1, hour = 12})
return {os.date("%c", t), os.date("*t", t).year, os.date("!%H", 0), os.clock(),
        string.format("%5.2f %q %g", 1.5, "x", 1e300), ("ab"):rep(3):find("b+"),
        json.encode({1, "two", {three = 3}}), math.random(1, 6), utf8.char(228, 8364),
        table.concat({1, 2, 3}, ","), select("#", pcall(error, {}))}
"##;

extern "C" {
    fn tzset();
}

/// The worker's `main`. Returns the exit status.
pub(crate) fn serve() -> i32 {
    install_panic_hook();
    let test_hooks = std::env::var_os(TEST_HOOKS_ENV).is_some_and(|v| v == "1");
    if let Err(e) = interrupt::install() {
        return protocol_error(&format!("installing the interrupt signal's handler: {e}"));
    }
    warm_up();

    let stdin = std::io::stdin();
    let mut channel = WorkerChannel::new(stdin.as_fd());
    let configure: Configure = match channel.recv(protocol::MAX_CONFIGURE_BYTES) {
        Ok(frame) if frame.kind == Kind::Configure => match frame.json(0) {
            Ok(configure) => configure,
            Err(e) => return protocol_error(&format!("a bad Configure frame: {e}")),
        },
        Ok(frame) => return protocol_error(&format!("{:?} before Configure", frame.kind)),
        Err(e) => return protocol_error(&format!("no Configure frame: {e}")),
    };
    let channel_fd = match move_channel_off_stdio() {
        Ok(fd) => fd,
        Err(e) => return protocol_error(&format!("moving the channel off stdin: {e}")),
    };
    let raw_fd = channel_fd.as_raw_fd();
    let link = Arc::new(Link::new(channel_fd));

    let report = match lock_down(&configure, raw_fd) {
        Ok(report) => report,
        Err(message) => {
            let _ = link.send_json(Kind::StartFailed, &Message { message });
            return EXIT_LOCKDOWN;
        }
    };
    if link
        .send_json(
            Kind::Ready,
            &Ready {
                layers: report_lines(&report),
            },
        )
        .is_err()
    {
        return EXIT_PROTOCOL;
    }

    let mut session: Option<Engine> = None;
    // Requests are numbered from 1, as the supervisor numbers them, for its requests to
    // stop one (see `interrupt.rs`).
    let mut requests: u64 = 0;
    loop {
        let frame = match link.recv() {
            Ok(frame) => frame,
            Err(RecvError::Closed) => return EXIT_OK,
            Err(e) => return protocol_error(&e.to_string()),
        };
        requests += 1;
        interrupt::serving(requests);
        let reply = match frame.kind {
            Kind::Run => run(&frame, &link),
            Kind::SessionOpen if session.is_some() => refused("a session is already open"),
            Kind::SessionOpen => open_session(&frame, &link, &mut session),
            Kind::Exec | Kind::Call | Kind::HasFunction => match session.as_mut() {
                Some(session) => session_request(&frame, session),
                None => refused(&format!("{:?} without an open session", frame.kind)),
            },
            // The session ends with the process: nothing of its state outlives it.
            Kind::Close => return EXIT_OK,
            Kind::Probe if test_hooks => probe(&frame),
            Kind::Probe => refused("test hooks are disabled in this worker"),
            other => refused(&format!("a worker does not accept {other:?} frames")),
        };
        interrupt::served();
        match reply {
            Ok(bytes) => {
                if link.send(&bytes).is_err() {
                    return EXIT_PROTOCOL;
                }
            }
            Err(e) => return protocol_error(&e),
        }
    }
}

fn protocol_error(message: &str) -> i32 {
    eprintln!("moonjail worker: {message}");
    EXIT_PROTOCOL
}

/// Panics print one line and nothing else: a symbolised backtrace would open files,
/// which the seccomp filter punishes with SIGSYS.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(std::io::stderr(), "moonjail worker panicked: {info}");
    }));
}

/// Loads what the VM would otherwise load lazily from the file system after lockdown.
fn warm_up() {
    // glibc re-reads the zone file on every `mktime`/`localtime` unless TZ names one and
    // is unchanged since the last read: pin it (the supervisor passes TZ, this covers
    // workers started another way).
    if std::env::var_os("TZ").is_none() {
        std::env::set_var("TZ", ":/etc/localtime");
    }
    // SAFETY: tzset only reads TZ and the zone file; the process is single-threaded here.
    unsafe { tzset() };
    // Marshaling grows its stack on deep values through `stacker`, whose first call on a
    // thread reads the stack's bounds from /proc/self/maps: an open the seccomp filter
    // would punish later. Read them now, while the worker may still open files.
    let _ = stacker::remaining_stack();
    // One run through the whole engine. No timeout: lockdown needs a single-threaded
    // process, and the deadline machinery is set up lazily per thread.
    let mut spec = Spec::default();
    spec.limits.timeout = None;
    if let Ok(mut engine) = Engine::new(&spec, &Host::default(), "warm-up") {
        let _ = engine.run(
            WARM_UP.as_bytes(),
            &Json::Null,
            std::time::Instant::now(),
            false,
        );
    }
}

/// Duplicates stdin (the channel) to a descriptor above 2, then points stdin and stdout
/// at stderr.
fn move_channel_off_stdio() -> std::io::Result<OwnedFd> {
    let channel = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3)?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto stdin/stdout, which the std handles keep referring to by
        // number; fd 2 is open (the supervisor gives every worker a stderr pipe).
        if unsafe { libc::dup2(2, fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(channel)
}

fn lock_down(configure: &Configure, channel_fd: i32) -> Result<LockdownReport, String> {
    let mut allow_missing = LayerSet::empty();
    for name in &configure.allow_missing {
        let layer =
            Layer::from_name(name).ok_or_else(|| format!("unknown layer {name:?} in Configure"))?;
        allow_missing = allow_missing.with(layer);
    }
    let config = LockdownConfig::builder()
        .keep_fds([0, 1, 2, channel_fd])
        .ids(configure.uid, configure.gid)
        .cpu_time(configure.cpu_time)
        .address_space_bytes(configure.address_space_bytes)
        .allow_missing(allow_missing)
        .build()
        .map_err(|e| e.to_string())?;
    lockdown(&config).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    })
}

fn report_lines(report: &LockdownReport) -> Vec<LayerLine> {
    report
        .layers()
        .iter()
        .map(|(layer, status)| {
            let (status, detail) = match status {
                LayerStatus::Applied { detail } => ("applied", detail.clone()),
                LayerStatus::Skipped { reason } => ("skipped", reason.clone()),
                LayerStatus::NotApplicable { reason } => ("not_applicable", reason.clone()),
                LayerStatus::Disabled => ("disabled", String::new()),
                other => ("unknown", other.to_string()),
            };
            LayerLine {
                layer: layer.name().to_string(),
                status: status.to_string(),
                detail,
            }
        })
        .collect()
}

fn refused(message: &str) -> Result<Vec<u8>, String> {
    protocol::encode_json(
        Kind::Refused,
        &Message {
            message: message.to_string(),
        },
    )
    .map_err(|e| e.to_string())
}

/// Serves one `Run`: a fresh engine with the requested spec.
fn run(frame: &Frame, link: &Arc<Link>) -> Result<Vec<u8>, String> {
    let start = std::time::Instant::now();
    let outcome = match run_request(frame, link) {
        Ok((mut engine, source, input, expression)) => {
            engine.run(source, &input, start, expression)
        }
        Err(error) => Outcome::failed(error, start.elapsed()),
    };
    done(&outcome)
}

/// Encodes `outcome` as a `Done` frame.
fn done(outcome: &Outcome) -> Result<Vec<u8>, String> {
    let (error, result) = match &outcome.result {
        Ok(value) => (
            None,
            serde_json::to_vec(value).map_err(|e| format!("encoding the result: {e}"))?,
        ),
        // Bounded by the engine already; bounded again here for the errors made outside
        // it, so the escaped message always fits a frame the supervisor accepts.
        Err(error) => (Some(error.clone().bounded()), Vec::new()),
    };
    let more = if outcome.more_results.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&outcome.more_results)
            .map_err(|e| format!("encoding the results: {e}"))?
    };
    let meta = serde_json::to_vec(&DoneMeta {
        error,
        stats: outcome.stats.clone(),
        diagnostics: outcome.diagnostics.clone(),
        result_count: outcome.result_count,
        output_truncated: outcome.output_truncated,
    })
    .map_err(|e| format!("encoding Done: {e}"))?;
    protocol::encode(
        Kind::Done,
        &[&meta, &result, outcome.output.as_bytes(), &more],
    )
    .map_err(|e| e.to_string())
}

fn internal(what: String) -> Error {
    Error::new(ErrorKind::Internal, what)
}

fn run_request<'f>(
    frame: &'f Frame,
    link: &Arc<Link>,
) -> Result<(Engine, &'f [u8], Json, bool), Error> {
    let meta: RequestMeta = frame.json(0).map_err(|e| internal(e.to_string()))?;
    let input = frame
        .section(1)
        .ok_or_else(|| internal("a Run frame without input".into()))?;
    let source = frame
        .section(2)
        .ok_or_else(|| internal("a Run frame without source".into()))?;
    let depth = meta
        .spec
        .limits
        .result_depth
        .saturating_add(INPUT_DEPTH_SLACK);
    let input = protocol::parse_value(input, depth, u64::MAX)
        .map_err(|e| Error::new(ErrorKind::Input, format!("the input: {e}")))?;
    Ok((engine(&meta, link)?, source, input, meta.expression))
}

/// An engine for the spec a request carries; its host files (when the host provides
/// any) and its tools are asked of the supervisor over `link`.
fn engine(meta: &RequestMeta, link: &Arc<Link>) -> Result<Engine, Error> {
    let files: Arc<dyn FileSource> = if meta.host_files {
        Arc::new(ChannelFiles(Arc::clone(link)))
    } else {
        Arc::new(HostFiles::default())
    };
    let tools = match &meta.tools {
        Some(tools) => {
            let relay = Arc::new(ChannelTools {
                link: Arc::clone(link),
                result_depth: meta.spec.limits.result_depth,
            });
            let registry =
                ToolRegistry::relayed(&tools.names, &tools.deferred, tools.quota.clone(), relay)
                    .map_err(|e| internal(format!("the tools sent: {e}")))?;
            Some(Arc::new(registry))
        }
        None => None,
    };
    let host = Host {
        files,
        tools,
        interrupt: Some(interrupt::check()),
    };
    Engine::new(&meta.spec, &host, &meta.chunk_name)
}

/// Serves `SessionOpen`: builds the session's state, answering `Done` (null on success).
fn open_session(
    frame: &Frame,
    link: &Arc<Link>,
    slot: &mut Option<Engine>,
) -> Result<Vec<u8>, String> {
    let opened = frame
        .json::<RequestMeta>(0)
        .map_err(|e| internal(e.to_string()))
        .and_then(|meta| engine(&meta, link));
    let outcome = match opened {
        Ok(engine) => {
            *slot = Some(engine);
            Outcome::bare(Ok(Json::Null), Default::default())
        }
        Err(error) => Outcome::failed(error, Default::default()),
    };
    done(&outcome)
}

/// Serves `Exec`, `Call` and `HasFunction` against the open session.
fn session_request(frame: &Frame, session: &mut Engine) -> Result<Vec<u8>, String> {
    let outcome = match frame.kind {
        Kind::Exec => match exec_request(frame, session.spec().limits.result_depth) {
            Ok((code, input, meta)) => session.exec(code, &input, meta.expression, &meta.options),
            Err(error) => Outcome::failed(error, Default::default()),
        },
        Kind::Call => match call_request(frame, session.spec().limits.result_depth) {
            Ok((f, args)) => session.call(&f.name, &args, &f.options),
            Err(error) => Outcome::failed(error, Default::default()),
        },
        _ => match frame.json::<FunctionName>(0) {
            Ok(f) => {
                let has = session.has_function(&f.name);
                Outcome::bare(Ok(Json::Bool(has)), Default::default())
            }
            Err(e) => Outcome::failed(internal(e.to_string()), Default::default()),
        },
    };
    done(&outcome)
}

/// An `Exec`'s code, input (null when absent) and options.
fn exec_request(frame: &Frame, result_depth: usize) -> Result<(&[u8], Json, ExecMeta), Error> {
    let code = frame
        .section(0)
        .ok_or_else(|| internal("an Exec frame without source".into()))?;
    let meta = match frame.section(1) {
        Some(bytes) if !bytes.is_empty() => {
            serde_json::from_slice(bytes).map_err(|e| internal(e.to_string()))?
        }
        _ => ExecMeta::default(),
    };
    let input = match frame.section(2) {
        Some(bytes) if !bytes.is_empty() => {
            let depth = result_depth.saturating_add(INPUT_DEPTH_SLACK);
            protocol::parse_value(bytes, depth, u64::MAX)
                .map_err(|e| Error::new(ErrorKind::Input, format!("the input: {e}")))?
        }
        _ => Json::Null,
    };
    Ok((code, input, meta))
}

fn call_request(frame: &Frame, result_depth: usize) -> Result<(FunctionName, Vec<Json>), Error> {
    let meta: FunctionName = frame.json(0).map_err(|e| internal(e.to_string()))?;
    let args = frame
        .section(1)
        .ok_or_else(|| internal("a Call frame without arguments".into()))?;
    // The arguments are an array: one level more than each argument may nest.
    let depth = result_depth.saturating_add(INPUT_DEPTH_SLACK + 1);
    let args = match protocol::parse_value(args, depth, u64::MAX) {
        Ok(Json::Array(args)) => args,
        Ok(_) => return Err(internal("the arguments of a Call are not an array".into())),
        Err(e) => return Err(Error::new(ErrorKind::Input, format!("the arguments: {e}"))),
    };
    Ok((meta, args))
}

/// Serves one test-hook `Probe`. A forbidden system call is expected never to return
/// (seccomp kills the process); if it does, the reply says so.
fn probe(frame: &Frame) -> Result<Vec<u8>, String> {
    let request: ProbeRequest = frame.json(0).map_err(|e| e.to_string())?;
    let answer = match hooks::probe(&request.probe) {
        Some(answer) => answer,
        None => return refused(&format!("unknown probe {:?}", request.probe)),
    };
    protocol::encode_json(Kind::ProbeReply, &answer).map_err(|e| e.to_string())
}

/// Why reading a request failed.
#[derive(Debug)]
enum RecvError {
    Closed,
    Frame(protocol::FrameError),
    Io(std::io::Error),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Closed => f.write_str("the channel closed"),
            RecvError::Frame(e) => write!(f, "the supervisor sent {e}"),
            RecvError::Io(e) => write!(f, "reading the channel: {e}"),
        }
    }
}

/// The worker's end of the channel: blocking reads and writes (`read`/`write` are in the
/// seccomp allowlist; the supervisor enforces every deadline).
#[derive(Debug)]
struct WorkerChannel<F: AsFd> {
    fd: F,
    buffer: Vec<u8>,
}

impl<F: AsFd> WorkerChannel<F> {
    fn new(fd: F) -> Self {
        WorkerChannel {
            fd,
            buffer: Vec::new(),
        }
    }

    fn recv(&mut self, max: usize) -> Result<Frame, RecvError> {
        loop {
            let need = match protocol::decode(&self.buffer, max).map_err(RecvError::Frame)? {
                Decoded::Frame(frame, used) => {
                    self.buffer.drain(..used);
                    if self.buffer.is_empty() && self.buffer.capacity() > KEEP_BUFFER_BYTES {
                        // Do not hold on to the memory of a big source or file between
                        // requests.
                        self.buffer = Vec::new();
                    }
                    return Ok(frame);
                }
                Decoded::Need(total) => total,
            };
            // Read the announced frame whole, but never more than it: a request's bytes
            // must not sit in the buffer of a process that is about to lock down.
            let want = need - self.buffer.len();
            self.buffer.reserve(want);
            let spare = &mut self.buffer.spare_capacity_mut()[..want];
            match rustix::io::read(self.fd.as_fd(), spare) {
                Ok(([], _)) => return Err(RecvError::Closed),
                Ok((read, _)) => {
                    let n = read.len();
                    let len = self.buffer.len();
                    // SAFETY: `read` initialised the first `n` bytes of the spare capacity.
                    unsafe { self.buffer.set_len(len + n) };
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(RecvError::Io(errno.into())),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            match rustix::io::write(self.fd.as_fd(), &bytes[sent..]) {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }
}

/// Read buffers larger than this are freed once empty.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// The channel to the supervisor once it is off stdin, shared by the request loop and
/// the host calls of the script being served. Both run on the worker's one VM thread, one
/// after the other: the mutex, never contended, only makes the link `Send + Sync`, as a
/// sandbox's file source must be.
#[derive(Debug)]
struct Link {
    channel: Mutex<WorkerChannel<OwnedFd>>,
    next_id: AtomicU64,
}

impl Link {
    fn new(fd: OwnedFd) -> Link {
        Link {
            channel: Mutex::new(WorkerChannel::new(fd)),
            next_id: AtomicU64::new(1),
        }
    }

    fn channel(&self) -> std::sync::MutexGuard<'_, WorkerChannel<OwnedFd>> {
        self.channel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next request from the supervisor (trusted: no size limit).
    fn recv(&self) -> Result<Frame, RecvError> {
        self.channel().recv(u32::MAX as usize)
    }

    fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.channel().send(bytes)
    }

    fn send_json(&self, kind: Kind, meta: &impl serde::Serialize) -> std::io::Result<()> {
        let bytes = protocol::encode_json(kind, meta).map_err(std::io::Error::other)?;
        self.send(&bytes)
    }

    /// Asks the supervisor and waits for its answer (the supervisor's deadline bounds the
    /// wait: past it, this process is killed). The bytes are those of a module or file.
    ///
    /// A channel that fails here leaves nothing useful to do: the process exits, and the
    /// supervisor reports the request as failed.
    fn host_call(&self, request: HostRequest) -> (HostAnswer, Vec<u8>) {
        match self.try_host_call(request) {
            Ok(answer) => answer,
            Err(message) => std::process::exit(protocol_error(&format!("a host call: {message}"))),
        }
    }

    fn try_host_call(&self, request: HostRequest) -> Result<(HostAnswer, Vec<u8>), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let call = protocol::encode_json(Kind::HostCall, &HostCall { id, request })
            .map_err(|e| e.to_string())?;
        let mut channel = self.channel();
        channel.send(&call).map_err(|e| e.to_string())?;
        let frame = channel.recv(u32::MAX as usize).map_err(|e| e.to_string())?;
        if frame.kind != Kind::HostReply {
            return Err(format!(
                "the supervisor sent {:?}, not a HostReply",
                frame.kind
            ));
        }
        let reply: HostReply = frame.json(0).map_err(|e| e.to_string())?;
        if reply.id != id {
            return Err(format!("the reply to host call {id} has id {}", reply.id));
        }
        let data = frame.section(1).unwrap_or_default().to_vec();
        Ok((reply.answer, data))
    }
}

/// The host's files, as seen from inside a worker: every `require` of a host module and
/// every `io.open` is asked of the supervisor, which applies the host's rules.
#[derive(Debug)]
struct ChannelFiles(Arc<Link>);

impl FileSource for ChannelFiles {
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        let request = HostRequest::ReadModule {
            name: name.to_string(),
        };
        match self.0.host_call(request) {
            (HostAnswer::Module { path }, source) => Ok((source, path)),
            (HostAnswer::NoModule { tried }, _) => Err(tried),
            (other, _) => unexpected(&other),
        }
    }

    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        let request = HostRequest::ReadFile {
            path: path.to_string(),
        };
        match self.0.host_call(request) {
            (HostAnswer::File, bytes) => Some(Ok(bytes)),
            (HostAnswer::NotListed, _) => None,
            (HostAnswer::Failed { message }, _) => Some(Err(message)),
            (other, _) => unexpected(&other),
        }
    }
}

/// The host's tools, as seen from inside a worker: each call the worker's own
/// [`crate::ToolRun`] admits (a registered name, before its deadline, within the quotas)
/// is asked of the supervisor, which runs the tool, and the answer becomes the call's
/// result or tool error.
struct ChannelTools {
    link: Arc<Link>,
    /// Deepest result the worker parses (the sandbox then refuses anything deeper than
    /// `result_depth` itself, with the in-process message).
    result_depth: usize,
}

impl Relay for ChannelTools {
    fn call(&self, name: &str, args: Result<Vec<Json>, ToolError>) -> Result<Json, ToolError> {
        let (args, args_error) = match args {
            Ok(args) => (Json::Array(args), None),
            Err(e) => (Json::Null, Some(e.message().to_string())),
        };
        let request = HostRequest::Tool {
            name: name.to_string(),
            args,
            args_error,
        };
        let (result, expired) = match self.link.host_call(request) {
            (HostAnswer::Value { expired }, bytes) => {
                let depth = self.result_depth.saturating_add(INPUT_DEPTH_SLACK);
                let value = protocol::parse_value(&bytes, depth, u64::MAX)
                    .map_err(|e| ToolError::new(format!("result: {e}")));
                (value, expired)
            }
            (
                HostAnswer::ToolError {
                    message,
                    expired,
                    suspend,
                },
                _,
            ) => {
                let error = if suspend {
                    ToolError::suspended()
                } else {
                    ToolError::new(message)
                };
                (Err(error), expired)
            }
            (other, _) => unexpected(&other),
        };
        // The run's deadline passed while the tool ran: the run is over here too, even if
        // this process's own deadline (which started a little later) has not come yet.
        if expired {
            if let Some(ctl) = crate::vm::current() {
                ctl.expire();
            }
        }
        result
    }
}

fn unexpected(answer: &HostAnswer) -> ! {
    std::process::exit(protocol_error(&format!(
        "the supervisor answered a host call with {answer:?}"
    )))
}

/// The test hooks: raw system calls the seccomp filter must stop, and crashes.
mod hooks {
    use super::*;

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Runs probe `name`; `None` when there is no such probe.
    pub(super) fn probe(name: &str) -> Option<Json> {
        let passwd = c"/etc/passwd";
        let true_bin = c"/bin/true";
        // SAFETY (for every block below): each call is made with valid pointers, or null
        // where the kernel accepts null; the point is to see the seccomp filter stop it.
        let rc: i64 = match name {
            // SAFETY: see above.
            "pid" => return Some(json!({"pid": unsafe { libc::getpid() }})),
            "segv" => {
                // SAFETY: deliberately faults; the kernel forces SIGSEGV.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
                0
            }
            "abort" => std::process::abort(),
            // A C-level loop that never looks at any deadline: only the supervisor can
            // stop it.
            "spin" => loop {
                std::hint::spin_loop();
            },
            // SAFETY: see above.
            "socket" => i64::from(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }),
            "socket-unix" => {
                // SAFETY: see above.
                i64::from(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) })
            }
            // SAFETY: see above.
            "connect" => i64::from(unsafe { libc::connect(3, std::ptr::null(), 0) }),
            // SAFETY: see above.
            "bind" => i64::from(unsafe { libc::bind(3, std::ptr::null(), 0) }),
            // SAFETY: see above.
            "listen" => i64::from(unsafe { libc::listen(3, 1) }),
            // SAFETY: see above.
            "accept" => unsafe { libc::syscall(libc::SYS_accept, 3, 0, 0) },
            "execve" => {
                let argv = [true_bin.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                // SAFETY: see above.
                i64::from(unsafe { libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr()) })
            }
            "execveat" => {
                let argv = [true_bin.as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                // SAFETY: see above.
                unsafe {
                    libc::syscall(
                        libc::SYS_execveat,
                        libc::AT_FDCWD,
                        true_bin.as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        0,
                    )
                }
            }
            // SAFETY: see above.
            "fork" => i64::from(unsafe { libc::fork() }),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see above.
            "vfork" => unsafe { libc::syscall(libc::SYS_vfork) },
            // SAFETY: see above; with a null stack and plain SIGCHLD this is fork.
            "clone-process" => unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) },
            // SAFETY: see above.
            "ptrace" => unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) },
            // SAFETY: see above.
            "openat" => i64::from(unsafe { libc::open(passwd.as_ptr(), libc::O_RDONLY) }),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see above.
            "open" => unsafe { libc::syscall(libc::SYS_open, passwd.as_ptr(), libc::O_RDONLY) },
            // SAFETY: see above; signal 0 only checks.
            "kill" => i64::from(unsafe { libc::kill(1, 0) }),
            // SAFETY: see above.
            "unshare" => i64::from(unsafe { libc::unshare(libc::CLONE_NEWNET) }),
            // SAFETY: see above.
            "getuid" => i64::from(unsafe { libc::getuid() }),
            _ => return None,
        };
        Some(json!({"returned": rc, "errno": errno()}))
    }
}
