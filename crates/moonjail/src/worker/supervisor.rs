//! One worker process, seen from its supervisor: spawn and configure it, wait until it is
//! locked down, hand it requests (runs, session calls) under a deadline enforced from
//! outside, answer the host calls it makes meanwhile (`host_call`: modules, files, tool
//! calls run here with the request's own `ToolRun`), and kill and reap it.
//!
//! Everything here reads and writes with a deadline (`poll`), so a worker that hangs,
//! floods, lies or dies costs the run it was serving and nothing else: the answer is an
//! error outcome, never a panic or a hang in the supervisor. A [`Worker`] that is dropped
//! is killed and reaped.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags};
use serde_json::Value as Json;

use super::host_call::{self, Budget, Host, Refusal};
use super::protocol::{self, Decoded, DoneMeta, FrameError, Kind, LayerLine, Message, RequestMeta};
use super::{failed, Job, TEST_HOOKS_ENV, WORKER_ARG};
use crate::error::{Error, ErrorKind};
use crate::limits::Limits;
use crate::outcome::Outcome;

/// How long to wait for a worker whose channel closed to be reaped before killing it.
const REAP_WAIT: Duration = Duration::from_secs(2);
/// Read buffers larger than this are freed once empty.
const KEEP_BUFFER_BYTES: usize = 1 << 20;
/// How much of a worker's stderr goes into an error message.
const STDERR_IN_MESSAGE: usize = 2048;

/// What every worker of a pool shares: resolved once, when the sandbox is built.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) exe: PathBuf,
    /// The encoded `Configure` frame.
    pub(crate) configure: Vec<u8>,
    /// Layers the report must show as applied (every layer not allowed to be missing).
    pub(crate) required: Vec<String>,
    pub(crate) kill_grace: Duration,
    pub(crate) spawn_timeout: Duration,
    /// The largest frame accepted from a worker.
    pub(crate) max_frame: usize,
    pub(crate) stderr_bytes: usize,
    pub(crate) test_hooks: bool,
    /// The most host calls one request may make.
    pub(crate) max_host_calls: u64,
    /// The most bytes the host calls of one request may move (both ways).
    pub(crate) max_host_call_bytes: u64,
}

/// Whether a worker may serve again after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Reuse,
    Retire,
}

/// Why an exchange with a worker failed. After any of these the worker is done for.
#[derive(Debug)]
enum Failure {
    /// The deadline passed.
    Timeout,
    /// The worker closed the channel (it died, or exited) — in the middle of a frame or not.
    Closed,
    /// The worker sent bytes that are not an acceptable frame.
    Frame(FrameError),
    /// The worker sent a frame that makes no sense at this point.
    Unexpected(Kind),
    /// The worker refused the request.
    Refused(String),
    /// The channel failed.
    Io(io::Error),
    /// The worker went over its budget of host calls, or asked for a tool that is not
    /// registered.
    HostCalls(String),
}

/// The supervisor's end of the channel, plus the worker's captured stderr.
#[derive(Debug)]
struct Channel {
    socket: OwnedFd,
    buffer: Vec<u8>,
    stderr: Option<ChildStderr>,
    captured: Vec<u8>,
    dropped: usize,
    stderr_limit: usize,
}

impl Channel {
    /// Writes all of `bytes` before `deadline`.
    fn send(&mut self, bytes: &[u8], deadline: Option<Instant>) -> Result<(), Failure> {
        let mut sent = 0;
        while sent < bytes.len() {
            match rustix::net::send(
                &self.socket,
                &bytes[sent..],
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(rustix::io::Errno::AGAIN) => self.wait(PollFlags::OUT, deadline)?,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET) => {
                    return Err(Failure::Closed)
                }
                Err(errno) => return Err(Failure::Io(errno.into())),
            }
        }
        Ok(())
    }

    /// Reads one frame of at most `max` bytes before `deadline`.
    fn recv(&mut self, deadline: Option<Instant>, max: usize) -> Result<protocol::Frame, Failure> {
        loop {
            let need = match protocol::decode(&self.buffer, max).map_err(Failure::Frame)? {
                Decoded::Frame(frame, used) => {
                    self.buffer.drain(..used);
                    if self.buffer.is_empty() && self.buffer.capacity() > KEEP_BUFFER_BYTES {
                        // An idle worker does not hold on to the memory of a big result.
                        self.buffer = Vec::new();
                    }
                    return Ok(frame);
                }
                Decoded::Need(total) => total,
            };
            // Room for the rest of this frame (its length is already checked), at least
            // 64 KiB per read so that small frames take one system call, and at most 4 MiB
            // ahead of what has arrived, so that a mere header claiming a huge frame does
            // not reserve it all.
            let want = (need - self.buffer.len()).clamp(64 << 10, 4 << 20);
            self.buffer.reserve(want);
            match rustix::net::recv(
                &self.socket,
                rustix::buffer::spare_capacity(&mut self.buffer),
                RecvFlags::DONTWAIT,
            ) {
                Ok((0, _)) => return Err(Failure::Closed),
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => self.wait(PollFlags::IN, deadline)?,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::CONNRESET) => return Err(Failure::Closed),
                Err(errno) => return Err(Failure::Io(errno.into())),
            }
        }
    }

    /// Waits until the socket is ready for `events` (or hung up), draining stderr
    /// meanwhile.
    fn wait(&mut self, events: PollFlags, deadline: Option<Instant>) -> Result<(), Failure> {
        loop {
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Failure::Timeout);
                    }
                    Some(timespec(left))
                }
            };
            let (socket_ready, stderr_ready) = {
                let mut fds = vec![PollFd::new(&self.socket, events)];
                if let Some(stderr) = &self.stderr {
                    fds.push(PollFd::new(stderr, PollFlags::IN));
                }
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(errno) => return Err(Failure::Io(errno.into())),
                }
                (
                    !fds[0].revents().is_empty(),
                    fds.get(1).is_some_and(|fd| !fd.revents().is_empty()),
                )
            };
            if stderr_ready {
                self.read_stderr();
            }
            if socket_ready {
                return Ok(());
            }
        }
    }

    /// Reads what the worker's stderr has (one read), keeping up to the limit.
    fn read_stderr(&mut self) {
        let Some(stderr) = &self.stderr else { return };
        let mut chunk = [0u8; 8192];
        match rustix::io::read(stderr, &mut chunk) {
            Ok(0) => self.stderr = None,
            Ok(n) => {
                let room = self.stderr_limit.saturating_sub(self.captured.len());
                let keep = n.min(room);
                self.captured.extend_from_slice(&chunk[..keep]);
                self.dropped += n - keep;
                tracing::debug!(
                    "moonjail worker stderr: {}",
                    String::from_utf8_lossy(&chunk[..n]).trim_end()
                );
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(_) => self.stderr = None,
        }
    }

    /// Reads whatever is left on stderr right now, without waiting.
    fn drain_stderr(&mut self) {
        let zero = timespec(Duration::ZERO);
        // Bounded: a worker that is gone cannot refill the pipe forever.
        for _ in 0..1024 {
            let ready = match &self.stderr {
                None => return,
                Some(stderr) => {
                    let mut fds = [PollFd::new(stderr, PollFlags::IN)];
                    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
                }
            };
            if !ready {
                return;
            }
            self.read_stderr();
        }
    }

    /// The end of the captured stderr, for an error message.
    fn stderr_tail(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.captured);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let start = text
            .char_indices()
            .rev()
            .nth(STDERR_IN_MESSAGE)
            .map_or(0, |(i, _)| i);
        let mut tail = text[start..].to_string();
        if self.dropped > 0 {
            tail.push_str(&format!(" ({} more bytes dropped)", self.dropped));
        }
        Some(tail)
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// A live worker process: the process the supervisor spawned (the PID-namespace relay,
/// whose only child is the locked-down worker), and the channel to it.
#[derive(Debug)]
pub(crate) struct Worker {
    child: Child,
    channel: Channel,
    runs: u64,
    layers: Vec<LayerLine>,
}

impl Worker {
    /// Starts a worker and waits until it reports that it is locked down.
    ///
    /// # Errors
    /// A message saying why the worker could not be started or locked down.
    pub(crate) fn spawn(settings: &Settings) -> Result<Worker, String> {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("socketpair() for a worker failed: {e}"))?;
        let theirs = OwnedFd::from(theirs);
        let their_stdin = theirs
            .try_clone()
            .map_err(|e| format!("dup() of the worker's channel failed: {e}"))?;
        let mut command = Command::new(&settings.exe);
        command
            .arg(WORKER_ARG)
            .env_clear()
            .stdin(Stdio::from(their_stdin))
            .stdout(Stdio::from(theirs))
            .stderr(Stdio::piped());
        // The worker gets no secrets from our environment: only what it needs to start
        // (shared libraries) and the time zone, which it loads before locking down.
        if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
            command.env("LD_LIBRARY_PATH", path);
        }
        command.env(
            "TZ",
            std::env::var_os("TZ").unwrap_or_else(|| ":/etc/localtime".into()),
        );
        if settings.test_hooks {
            command.env(TEST_HOOKS_ENV, "1");
        }
        let spawned = command.spawn();
        // The command holds our copies of the worker's ends of the channel: close them,
        // or the worker's death would never show as end-of-file.
        drop(command);
        let mut child = spawned.map_err(|e| {
            format!(
                "cannot start the worker executable {}: {e}",
                settings.exe.display()
            )
        })?;
        let stderr = child.stderr.take();
        let mut worker = Worker {
            child,
            channel: Channel {
                socket: OwnedFd::from(ours),
                buffer: Vec::new(),
                stderr,
                captured: Vec::new(),
                dropped: 0,
                stderr_limit: settings.stderr_bytes,
            },
            runs: 0,
            layers: Vec::new(),
        };
        let deadline = Some(Instant::now() + settings.spawn_timeout);
        let reply = worker
            .channel
            .send(&settings.configure, deadline)
            .and_then(|()| {
                worker
                    .channel
                    .recv(deadline, protocol::MAX_CONFIGURE_BYTES << 4)
            });
        let frame = match reply {
            Ok(frame) => frame,
            Err(failure) => {
                let closed = matches!(failure, Failure::Closed);
                let mut why = worker.explain(failure, settings);
                if closed {
                    why.push_str(&format!(
                        " (is {} a moonjail worker? A program that serves as its own worker \
                         must call moonjail::worker::run_if_worker() first thing in main)",
                        settings.exe.display()
                    ));
                }
                return Err(format!("the worker did not start: {why}"));
            }
        };
        match frame.kind {
            Kind::Ready => {
                let ready: protocol::Ready =
                    frame.json(0).map_err(|e| format!("the worker sent {e}"))?;
                for layer in &settings.required {
                    let applied = ready.layers.iter().any(|l| {
                        &l.layer == layer
                            && matches!(l.status.as_str(), "applied" | "not_applicable")
                    });
                    if !applied {
                        return Err(format!(
                            "the worker reported the {layer} layer as not applied, and it is \
                             not allowed to be missing"
                        ));
                    }
                }
                worker.layers = ready.layers;
                Ok(worker)
            }
            Kind::StartFailed => {
                let failed: Message = frame.json(0).map_err(|e| format!("the worker sent {e}"))?;
                Err(format!(
                    "the worker could not lock itself down: {}",
                    failed.message
                ))
            }
            other => Err(format!(
                "the worker sent {other:?} instead of Ready; is it a moonjail worker?"
            )),
        }
    }

    /// Runs `job` in the worker. The deadline (timeout plus grace) is enforced here: past
    /// it the worker is killed and the run reported as `timeout`. The run's tool calls are
    /// served and recorded here: the outcome's `tool_calls` are this side's record, even
    /// when the worker died.
    pub(crate) fn run(&mut self, job: &Job, settings: &Settings) -> (Outcome, Fate) {
        let start = Instant::now();
        let deadline = job
            .limits()
            .timeout
            .map(|t| start + t + settings.kill_grace);
        let request = match encode_run(job) {
            Ok(request) => request,
            Err(message) => {
                let error = Error::new(ErrorKind::Input, message);
                return (failed(error, start.elapsed()), Fate::Reuse);
            }
        };
        self.runs += 1;
        let tools = job
            .host
            .tools
            .as_ref()
            .map(|registry| registry.start_run(job.limits().timeout.map(|t| start + t)));
        let host = Host {
            files: &*job.host.files,
            tools: tools.as_ref(),
            max_depth: job.limits().result_depth,
        };
        let (mut outcome, fate) =
            match self.exchange(&request, deadline, settings, host, job.limits()) {
                Ok(outcome) => {
                    let fate = match outcome.error() {
                        Some(e) if e.kind.is_limit() => Fate::Retire,
                        Some(e) if matches!(e.kind, ErrorKind::Killed | ErrorKind::Internal) => {
                            Fate::Retire
                        }
                        _ => Fate::Reuse,
                    };
                    (outcome, fate)
                }
                Err(error) => (failed(error, start.elapsed()), Fate::Retire),
            };
        outcome.tool_calls = tools.map(|run| run.take_calls()).unwrap_or_default();
        (outcome, fate)
    }

    /// Sends `request` and waits for its `Done` until `deadline`, answering the worker's
    /// host calls from `host` meanwhile: the outcome the worker reported (without tool
    /// calls: the caller has their record), or (after the worker was killed, or died) the
    /// error that ended the exchange.
    pub(crate) fn exchange(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
        settings: &Settings,
        host: Host<'_>,
        limits: &Limits,
    ) -> Result<Outcome, Error> {
        let reply = self
            .channel
            .send(request, deadline)
            .and_then(|()| self.reply(Kind::Done, deadline, settings, Some(host)));
        let frame = match reply {
            Ok(frame) => frame,
            Err(Failure::Timeout) => {
                self.kill();
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "timeout: the script ran past its wall-clock deadline (its worker \
                         process was killed {} ms after it)",
                        settings.kill_grace.as_millis()
                    ),
                ));
            }
            Err(failure) => return Err(self.failure_error(failure, settings)),
        };
        decode_done(&frame, limits).map_err(|message| {
            self.kill();
            Error::new(ErrorKind::Internal, format!("the worker sent {message}"))
        })
    }

    /// Sends `Close` without waiting: the worker ends its session and exits. The caller
    /// retires the worker either way.
    pub(crate) fn send_close(&mut self) {
        if let Ok(close) = protocol::encode(Kind::Close, &[]) {
            let soon = Instant::now() + Duration::from_millis(10);
            let _ = self.channel.send(&close, Some(soon));
        }
    }

    /// Sends a test-hook probe and returns the worker's answer.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn probe(
        &mut self,
        probe: &str,
        deadline: Option<Instant>,
        settings: &Settings,
    ) -> (Result<Json, Error>, Fate) {
        let request = protocol::encode_json(
            Kind::Probe,
            &protocol::ProbeRequest {
                probe: probe.to_string(),
            },
        );
        let reply = match request {
            Ok(request) => self
                .channel
                .send(&request, deadline)
                .and_then(|()| self.reply(Kind::ProbeReply, deadline, settings, None)),
            Err(e) => Err(Failure::Frame(e)),
        };
        match reply {
            Ok(frame) => match frame.json::<Json>(0) {
                Ok(value) => (Ok(value), Fate::Reuse),
                Err(e) => (
                    Err(Error::new(
                        ErrorKind::Internal,
                        format!("the worker sent {e}"),
                    )),
                    Fate::Retire,
                ),
            },
            Err(Failure::Refused(message)) => (
                Err(Error::new(
                    ErrorKind::Internal,
                    format!("the worker refused: {message}"),
                )),
                Fate::Reuse,
            ),
            Err(Failure::Timeout) => {
                self.kill();
                (
                    Err(Error::new(
                        ErrorKind::Timeout,
                        "timeout: the probe ran past its deadline (its worker was killed)",
                    )),
                    Fate::Retire,
                )
            }
            Err(failure) => (Err(self.failure_error(failure, settings)), Fate::Retire),
        }
    }

    /// Waits for the reply of type `expected`. The worker's host calls in the middle of
    /// the request are answered here, inside the loop, from `host` (none: a host call is
    /// unexpected), under the same deadline and a fresh budget per request.
    ///
    /// A tool runs on this thread, so the deadline cannot interrupt it: a tool is given
    /// the run's deadline and must honour it. One that returns past `deadline` anyway
    /// gets no answer sent: the worker is killed and the request ends as a timeout.
    fn reply(
        &mut self,
        expected: Kind,
        deadline: Option<Instant>,
        settings: &Settings,
        host: Option<Host<'_>>,
    ) -> Result<protocol::Frame, Failure> {
        let mut budget = Budget::new(settings.max_host_calls, settings.max_host_call_bytes);
        loop {
            let frame = self.channel.recv(deadline, settings.max_frame)?;
            match frame.kind {
                kind if kind == expected => return Ok(frame),
                Kind::Refused => {
                    let message = frame
                        .json::<Message>(0)
                        .map(|m| m.message)
                        .unwrap_or_else(|e| e.to_string());
                    return Err(Failure::Refused(message));
                }
                Kind::HostCall => {
                    let Some(host) = host else {
                        return Err(Failure::Unexpected(Kind::HostCall));
                    };
                    let reply = match host_call::answer(&frame, host, &mut budget) {
                        Ok(reply) => reply,
                        Err(Refusal::Frame(e)) => return Err(Failure::Frame(e)),
                        Err(Refusal::Forbidden(why)) => return Err(Failure::HostCalls(why)),
                    };
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Failure::Timeout);
                    }
                    self.channel.send(&reply, deadline)?;
                }
                other => return Err(Failure::Unexpected(other)),
            }
        }
    }

    /// The error a failed exchange is reported as; the worker is killed and reaped.
    fn failure_error(&mut self, failure: Failure, settings: &Settings) -> Error {
        match failure {
            Failure::Closed => {
                let status = self.reap();
                self.channel.drain_stderr();
                let mut message = describe_death(status);
                if let Some(tail) = self.channel.stderr_tail() {
                    message.push_str(&format!("; its stderr: {tail}"));
                }
                Error::new(ErrorKind::Killed, message)
            }
            Failure::HostCalls(why) => {
                self.kill();
                Error::new(ErrorKind::Forbidden, why)
            }
            other => Error::new(ErrorKind::Internal, self.explain(other, settings)),
        }
    }

    /// Describes a failure in words (killing and reaping the worker).
    fn explain(&mut self, failure: Failure, settings: &Settings) -> String {
        let mut message = match failure {
            Failure::Timeout => {
                self.kill();
                format!(
                    "no answer within {} ms; the worker was killed",
                    settings.spawn_timeout.as_millis()
                )
            }
            Failure::Closed => {
                let status = self.reap();
                describe_death(status)
            }
            Failure::Frame(e) => {
                self.kill();
                format!("the worker sent {e}")
            }
            Failure::Unexpected(kind) => {
                self.kill();
                format!("the worker sent an unexpected {kind:?} frame")
            }
            Failure::Refused(why) => {
                self.kill();
                format!("the worker refused the request: {why}")
            }
            Failure::Io(e) => {
                self.kill();
                format!("the channel to the worker failed: {e}")
            }
            Failure::HostCalls(why) => {
                self.kill();
                why
            }
        };
        self.channel.drain_stderr();
        if let Some(tail) = self.channel.stderr_tail() {
            message.push_str(&format!("; its stderr: {tail}"));
        }
        message
    }

    /// Kills the worker (through the process spawned: killing the relay kills the worker
    /// it is tied to) and reaps it.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Reaps a worker whose channel closed; kills it if it does not end soon.
    fn reap(&mut self) -> Option<ExitStatus> {
        let until = Instant::now() + REAP_WAIT;
        let mut pause = Duration::from_micros(50);
        while Instant::now() < until {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(_) => break,
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        self.kill()
    }

    /// Whether an idle worker still looks usable: nothing to read on its channel (no
    /// end-of-file, no unsolicited frame) and not hung up.
    pub(crate) fn is_idle_and_alive(&self) -> bool {
        if !self.channel.buffer.is_empty() {
            return false;
        }
        let zero = timespec(Duration::ZERO);
        let mut fds = [PollFd::new(&self.channel.socket, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&zero)), Ok(0))
    }

    /// How many runs this worker has served.
    pub(crate) fn runs(&self) -> u64 {
        self.runs
    }

    /// The pid of the process spawned, and of the locked-down worker (its child, when the
    /// PID-namespace layer forked; otherwise the same process).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn pids(&self) -> (u32, u32) {
        let relay = self.child.id();
        (relay, child_of(relay).unwrap_or(relay))
    }

    /// The lockdown report the worker sent with `Ready`.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn layers(&self) -> &[LayerLine] {
        &self.layers
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first child of `pid`, from /proc.
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
fn child_of(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn encode_run(job: &Job) -> Result<Vec<u8>, String> {
    let meta = RequestMeta::new(job.spec, job.host, job.chunk_name);
    let meta = serde_json::to_vec(&meta).map_err(|e| format!("encoding the run: {e}"))?;
    let input = serde_json::to_vec(job.input).map_err(|e| format!("encoding the input: {e}"))?;
    protocol::encode(Kind::Run, &[&meta, &input, job.source]).map_err(|_| {
        format!(
            "the source and input ({} bytes) are too large to send to a worker process",
            meta.len() + input.len() + job.source.len()
        )
    })
}

pub(crate) fn decode_done(frame: &protocol::Frame, limits: &Limits) -> Result<Outcome, String> {
    let meta: DoneMeta = frame.json(0).map_err(|e| e.to_string())?;
    let result = frame
        .section(1)
        .ok_or("a malformed frame: Done without a result section")?;
    let output = frame
        .section(2)
        .ok_or("a malformed frame: Done without an output section")?;
    let result = match meta.error {
        Some(error) => Err(error),
        // The worker checked the depth already; one level of slack for the encoding.
        None => Ok(protocol::parse_value(result, limits.result_depth + 1)
            .map_err(|e| format!("a malformed result: {e}"))?),
    };
    Ok(Outcome {
        result,
        output: String::from_utf8_lossy(output).into_owned(),
        stats: meta.stats,
        diagnostics: meta.diagnostics,
        tool_calls: Vec::new(),
    })
}

/// Says how a worker ended, naming the signal and what it usually means.
fn describe_death(status: Option<ExitStatus>) -> String {
    let Some(status) = status else {
        return "the worker process ended, but its status could not be read".to_string();
    };
    if let Some(signal) = status.signal() {
        let (name, why) = signal_name(signal);
        return if why.is_empty() {
            format!("the worker process was killed by {name}")
        } else {
            format!("the worker process was killed by {name} ({why})")
        };
    }
    match status.code() {
        Some(code) => format!("the worker process exited with status {code} before answering"),
        None => "the worker process ended before answering".to_string(),
    }
}

/// The name of `signal` and what it means for a worker.
pub(crate) fn signal_name(signal: i32) -> (String, &'static str) {
    let (name, why) = match signal {
        libc::SIGSYS => ("SIGSYS", "it made a system call the seccomp filter forbids"),
        libc::SIGSEGV => (
            "SIGSEGV",
            "invalid memory access, or an abort: as PID 1 of its namespace a worker cannot \
             raise SIGABRT on itself, so abort(), for example on running out of memory under \
             its address-space limit, ends this way",
        ),
        libc::SIGBUS => ("SIGBUS", "invalid memory access"),
        libc::SIGABRT => (
            "SIGABRT",
            "it aborted, for example when out of memory under its address-space limit",
        ),
        libc::SIGKILL => (
            "SIGKILL",
            "by its CPU time limit, the kernel's OOM killer or another process",
        ),
        libc::SIGXCPU => ("SIGXCPU", "it reached its CPU time limit"),
        libc::SIGXFSZ => ("SIGXFSZ", "it tried to write a file"),
        libc::SIGILL => ("SIGILL", "illegal instruction"),
        libc::SIGFPE => ("SIGFPE", "arithmetic fault"),
        libc::SIGTRAP => ("SIGTRAP", ""),
        libc::SIGTERM => ("SIGTERM", ""),
        libc::SIGINT => ("SIGINT", ""),
        libc::SIGHUP => ("SIGHUP", ""),
        libc::SIGPIPE => ("SIGPIPE", "its channel to the supervisor closed"),
        _ => return (format!("signal {signal}"), ""),
    };
    (name.to_string(), why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Stats;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGSYS).0, "SIGSYS");
        assert_eq!(signal_name(libc::SIGSEGV).0, "SIGSEGV");
        assert_eq!(signal_name(64).0, "signal 64");
        let killed = describe_death(Some(ExitStatus::from_raw(libc::SIGSYS)));
        assert!(killed.contains("SIGSYS"), "{killed}");
        let exited = describe_death(Some(ExitStatus::from_raw(3 << 8)));
        assert!(exited.contains("status 3"), "{exited}");
    }

    #[test]
    fn done_frames_decode_and_refuse_garbage() {
        let limits = Limits::default();
        let meta = serde_json::to_vec(&DoneMeta {
            error: None,
            stats: Stats::default(),
            diagnostics: None,
        })
        .unwrap();
        let bytes = protocol::encode(Kind::Done, &[&meta, b"{\"a\":[1,2]}", b"hi\n"]).unwrap();
        let Ok(Decoded::Frame(frame, _)) = protocol::decode(&bytes, 1 << 20) else {
            panic!("no frame");
        };
        let outcome = decode_done(&frame, &limits).unwrap();
        assert_eq!(outcome.result, Ok(serde_json::json!({"a": [1, 2]})));
        assert_eq!(outcome.output, "hi\n");

        let bytes = protocol::encode(Kind::Done, &[&meta, b"{\"a\":"]).unwrap();
        let Ok(Decoded::Frame(frame, _)) = protocol::decode(&bytes, 1 << 20) else {
            panic!("no frame");
        };
        assert!(decode_done(&frame, &limits).is_err());
    }

    #[test]
    fn a_dead_peer_reads_as_closed_and_silence_as_timeout() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut channel = Channel {
            socket: OwnedFd::from(ours),
            buffer: Vec::new(),
            stderr: None,
            captured: Vec::new(),
            dropped: 0,
            stderr_limit: 16,
        };
        let soon = Some(Instant::now() + Duration::from_millis(20));
        assert!(matches!(channel.recv(soon, 1024), Err(Failure::Timeout)));
        drop(theirs);
        assert!(matches!(channel.recv(soon, 1024), Err(Failure::Closed)));
        assert!(matches!(
            channel.send(b"x", Some(Instant::now() + Duration::from_secs(1))),
            Err(Failure::Closed)
        ));
    }
}
