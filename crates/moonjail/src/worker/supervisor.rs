//! One worker process, seen from its supervisor: spawn and configure it, wait until it is
//! locked down, hand it requests (runs, session calls) under a deadline enforced from
//! outside, answer the host calls it makes meanwhile (`host_call`: modules, files, tool
//! calls run here with the request's own `ToolRun`), and kill and reap it.
//!
//! Everything here reads and writes with a deadline (`poll`), so a worker that hangs,
//! floods, lies or dies costs the run it was serving and nothing else: the answer is an
//! error outcome, never a panic or a hang in the supervisor. A [`Worker`] that is dropped
//! is killed and reaped.
//!
//! **Reaping.** Every process a worker consists of is reaped: the supervisor kills the
//! locked-down worker itself (the PID-namespace relay's only child, through a pidfd taken
//! while it was alive, so a recycled pid is never hit), and then waits for the relay, which
//! reaps the worker and ends the same way. Killing the relay instead would orphan the
//! worker, whose zombie would then go to the caller's subreaper or init — for a service
//! running as PID 1 in a container, a zombie per worker until its pid limit is reached.
//!
//! **Classifying a death.** A worker whose channel closes is reported as `killed`, naming
//! the signal, except for two deaths whose cause is certain: the kernel's `SIGKILL` (or
//! `SIGXCPU`) once the CPU time it used (from `wait4`'s rusage, which includes the reaped
//! worker) reached its `RLIMIT_CPU` is a `timeout`; and an abort (`SIGABRT`, or `SIGSEGV`,
//! how `abort` ends a PID 1) after Rust's allocation-failure message on its stderr
//! (`memory allocation of N bytes failed`, what an allocation refused under `RLIMIT_AS`
//! prints) is a `memory_limit`. A frame over the size the supervisor accepts is a
//! `memory_limit` too. Anything else (a fault without that message, a signal from another
//! process) stays `killed`: a genuine crash is never reported as a limit.
//!
//! **CPU time without a clock.** A request without a deadline is watched for CPU time
//! instead: while waiting for its answer the supervisor reads the worker's CPU time from
//! `/proc/PID/stat` (opened while it was alive) every [`CPU_TICK`], and kills it past
//! `run_cpu_time`, reported as `timeout`. This is per request, unlike `RLIMIT_CPU`, which
//! adds up over every run of a pooled worker.
//!
//! **The host's interrupt check.** While it waits for a run's or a session call's answer,
//! the supervisor (on the caller's thread) asks the sandbox's interrupt check once per
//! period. When it says stop, the worker is told with a signal naming the request (see
//! `interrupt.rs`) and the wait goes on: the worker answers `interrupted`, with the place
//! it stopped, and stays usable. A worker that has not answered `kill_grace` after being
//! told (stuck where no hook runs) is killed, and the request reported as `interrupted`.
//! Host calls that come meanwhile are answered as ever.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ChildStderr, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags};
use serde_json::Value as Json;

use super::host_call::{self, Budget, Host, Refusal};
use super::protocol::{self, Decoded, DoneMeta, FrameError, Kind, LayerLine, Message, RequestMeta};
use super::{Job, TEST_HOOKS_ENV, WORKER_ARG};
use crate::error::{Error, ErrorKind};
use crate::host::InterruptCheck;
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::tools::{OnPark, ToolRun};

/// How long to wait for a worker whose channel closed to be reaped before killing it.
const REAP_WAIT: Duration = Duration::from_secs(2);
/// How long a relay may take to end once its worker has: it only has to reap it.
const RELAY_WAIT: Duration = Duration::from_millis(250);
/// Read buffers larger than this are freed once empty.
const KEEP_BUFFER_BYTES: usize = 1 << 20;
/// How much of a worker's stderr goes into an error message.
const STDERR_IN_MESSAGE: usize = 2048;
/// How often the CPU time of a worker serving a request without a deadline is read.
const CPU_TICK: Duration = Duration::from_millis(50);
/// What Rust's default allocation-error handler prints before it aborts.
const ALLOC_FAILED: &str = "memory allocation of ";

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
    /// The CPU time a request without a deadline may use (watched from here).
    pub(crate) run_cpu_time: Option<Duration>,
    /// Each worker's `RLIMIT_CPU` and `RLIMIT_AS`, to name them when a worker dies of one.
    pub(crate) rlimit_cpu: Option<Duration>,
    pub(crate) rlimit_as: Option<u64>,
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
    /// A request without a deadline used more than this CPU time.
    CpuTime(Duration),
    /// The interrupt check said stop: the worker is to be told (not a failure yet).
    Interrupt,
    /// The worker did not answer within the grace after it was told to stop, or could
    /// not be told.
    NotStopped(String),
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
    /// Armed for a request without a deadline: its CPU budget.
    cpu: Option<CpuWatch>,
    /// Armed while waiting for the answer of a request the host's check may interrupt.
    interrupt: Option<InterruptWatch>,
}

/// The host's interrupt check, asked while the supervisor waits for an answer.
struct InterruptWatch {
    check: InterruptCheck,
    every: Duration,
    /// When it is asked next.
    next: Instant,
    /// Once it said stop and the worker was told: by when the worker must answer.
    told: Option<Instant>,
}

impl std::fmt::Debug for InterruptWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptWatch")
            .field("every", &self.every)
            .field("told", &self.told)
            .finish_non_exhaustive()
    }
}

/// The CPU time of the worker, read from `/proc/PID/stat`, against a budget.
#[derive(Debug)]
struct CpuWatch {
    /// `/proc/WORKER/stat`, opened while the worker was alive: after the worker is gone it
    /// reads as an error, never as another process that got the same pid.
    stat: File,
    /// CPU time (user + system) when the request was sent.
    start: Duration,
    limit: Duration,
}

impl CpuWatch {
    fn new(stat: File, limit: Duration) -> Option<CpuWatch> {
        let start = cpu_time(&stat)?;
        Some(CpuWatch { stat, start, limit })
    }

    /// Whether the request has used up its CPU time (false when it cannot be read: the
    /// worker is gone, which the channel will show).
    fn exceeded(&self) -> bool {
        cpu_time(&self.stat).is_some_and(|now| now.saturating_sub(self.start) >= self.limit)
    }
}

/// User plus system CPU time of a process, from its open `/proc/PID/stat`.
fn cpu_time(stat: &File) -> Option<Duration> {
    let mut buffer = [0u8; 1024];
    let n = stat.read_at(&mut buffer, 0).ok()?;
    let text = std::str::from_utf8(&buffer[..n]).ok()?;
    // The command name (field 2) may hold anything up to its closing parenthesis; fields
    // 14 and 15 (utime, stime) are the 12th and 13th after it.
    let mut fields = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let ticks = utime.saturating_add(stime);
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
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
    /// meanwhile. Waiting for an answer, asks the interrupt check when it is due.
    fn wait(&mut self, events: PollFlags, deadline: Option<Instant>) -> Result<(), Failure> {
        loop {
            let left = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Failure::Timeout);
                    }
                    Some(left)
                }
            };
            if let Some(cpu) = &self.cpu {
                if cpu.exceeded() {
                    return Err(Failure::CpuTime(cpu.limit));
                }
            }
            let interrupt = match &mut self.interrupt {
                Some(watch) if events.contains(PollFlags::IN) => Some(watch.due()?),
                _ => None,
            };
            let tick = self.cpu.as_ref().map(|_| CPU_TICK);
            let timeout = [left, tick, interrupt]
                .into_iter()
                .flatten()
                .min()
                .map(timespec);
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

impl InterruptWatch {
    fn new(check: &InterruptCheck) -> Option<InterruptWatch> {
        let every = check.every?;
        Some(InterruptWatch {
            check: check.clone(),
            every,
            next: Instant::now() + every,
            told: None,
        })
    }

    /// Asks the check if it is due; how long until it is due next (or until the grace of
    /// a worker told to stop runs out).
    ///
    /// # Errors
    /// [`Failure::Interrupt`] when the check says stop; [`Failure::NotStopped`] when the
    /// worker was told and its grace is over.
    fn due(&mut self) -> Result<Duration, Failure> {
        let now = Instant::now();
        if let Some(by) = self.told {
            if now >= by {
                return Err(Failure::NotStopped(
                    "its worker process had not stopped when the grace after being told to \
                     was over, and was killed"
                        .to_string(),
                ));
            }
            return Ok(by - now);
        }
        if now >= self.next {
            if self.check.ask() {
                return Err(Failure::Interrupt);
            }
            self.next = now + self.every;
        }
        Ok(self.next.saturating_duration_since(now))
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// How the process the supervisor spawned ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    status: ExitStatus,
    /// CPU time it used, with that of its reaped children (the worker, behind a relay).
    cpu: Duration,
}

/// Ends a worker from another thread than its supervisor's ([`Worker::stopper`]): a
/// pidfd of the locked-down worker when the supervisor had found it, else of the process
/// it spawned (the PID-namespace relay, whose death kills the worker through
/// `PR_SET_PDEATHSIG`), and a copy of the channel.
#[derive(Debug)]
pub(crate) struct Stopper {
    socket: OwnedFd,
    process: OwnedFd,
}

impl Stopper {
    /// Kills the worker now and hangs up its channel: its supervisor reads the end of the
    /// stream and reaps it. Synchronous, so that a process about to exit leaves no worker
    /// running behind it. Errors mean the worker has ended already.
    pub(crate) fn stop(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.process, rustix::process::Signal::KILL);
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Both);
    }
}

/// The processes of one worker as the supervisor holds them: the process it spawned (the
/// PID-namespace relay, or the worker itself without that layer), ours to wait for, and a
/// pidfd of the relay's child, the locked-down worker.
#[derive(Debug)]
struct Processes {
    spawned: rustix::process::Pid,
    /// The relay's child, once found: its pid and a pidfd (signals through it can never
    /// reach another process that got the same pid).
    worker: Option<(u32, OwnedFd)>,
    /// Whether the spawned process is a relay, once the worker's report said so (before
    /// that, a process that has one child is taken for one).
    relay: Option<bool>,
    ended: Option<Ended>,
}

impl Processes {
    /// Finds the relay's child and takes a pidfd of it, unless done already. Without a
    /// relay (no PID namespace) there is no child: the spawned process is the worker.
    fn attach(&mut self) {
        if self.worker.is_some() || self.ended.is_some() || self.relay == Some(false) {
            return;
        }
        let spawned = self.spawned.as_raw_nonzero().get() as u32;
        let Some(pid) = child_of(spawned) else { return };
        let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else {
            return;
        };
        let Ok(pidfd) = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        else {
            return;
        };
        // Only the relay reaps its child, so if `pid` is still its child now, the pidfd
        // (taken before) refers to that child and not to a process that reused the pid.
        if child_of(spawned) == Some(pid) {
            self.worker = Some((pid, pidfd));
        }
    }

    /// Reaps the spawned process if it has ended (`block`: waits until it has).
    fn wait(&mut self, block: bool) -> Option<Ended> {
        if self.ended.is_some() {
            return self.ended;
        }
        let options = if block { 0 } else { libc::WNOHANG };
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 writes only to the two live locals; the pid is our child and
            // is reaped only here (std's `Child` was dropped at spawn, unused).
            let rc = unsafe {
                libc::wait4(
                    self.spawned.as_raw_nonzero().get(),
                    &mut status,
                    options,
                    &mut usage,
                )
            };
            match rc {
                0 => return None,
                -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                -1 => return None,
                _ => break,
            }
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        self.ended = Some(Ended {
            status: ExitStatus::from_raw(status),
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
        });
        self.worker = None;
        self.ended
    }

    /// Kills the worker and reaps every process of it: the worker through its pidfd, then
    /// the relay, which reaps the worker and ends the same way. A relay that has not ended
    /// [`RELAY_WAIT`] after its worker (or a worker without a pidfd) is killed itself.
    fn kill(&mut self) -> Option<Ended> {
        if self.ended.is_some() {
            return self.ended;
        }
        self.attach();
        if let Some((_, pidfd)) = &self.worker {
            // ESRCH: the worker has ended already; the relay is reaping it. Any other
            // error: the worker cannot be signalled, so only killing the relay is left.
            let sent = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
            if matches!(sent, Ok(()) | Err(rustix::io::Errno::SRCH)) {
                // A pidfd reads as ready once its process has ended.
                let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
                let _ = poll(&mut fds, Some(&timespec(REAP_WAIT)));
                if let Some(ended) = self.wait_for(RELAY_WAIT) {
                    return Some(ended);
                }
            }
        }
        // Not reaped yet, so the pid is still ours: no other process can have it.
        let _ = rustix::process::kill_process(self.spawned, rustix::process::Signal::KILL);
        self.wait(true)
    }

    /// Where a signal for the worker goes: its pidfd, or the spawned process when that is
    /// the worker (no PID namespace) and not yet reaped; `None` when neither is known.
    fn target(&self) -> Option<super::interrupt::Target<'_>> {
        match (&self.worker, self.relay) {
            (Some((_, pidfd)), _) => Some(super::interrupt::Target::Pidfd(pidfd.as_fd())),
            (None, Some(false)) if self.ended.is_none() => Some(super::interrupt::Target::Child(
                self.spawned.as_raw_nonzero().get(),
            )),
            _ => None,
        }
    }

    /// Waits up to `limit` for the spawned process to end.
    fn wait_for(&mut self, limit: Duration) -> Option<Ended> {
        let until = Instant::now() + limit;
        let mut pause = Duration::from_micros(50);
        loop {
            if let Some(ended) = self.wait(false) {
                return Some(ended);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// A live worker process: the process the supervisor spawned (the PID-namespace relay,
/// whose only child is the locked-down worker), and the channel to it.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The fork generation of the process that spawned the worker. After a `fork`, the
    /// child holds a copy of this handle: the worker is still the parent's, so the child
    /// must neither use it nor kill it (its pidfd would let it).
    owner: u64,
    processes: Processes,
    /// `/proc/WORKER/stat`, opened once the worker was ready, for the CPU watch.
    stat: Option<File>,
    channel: Channel,
    runs: u64,
    /// Requests sent to the worker's loop, which numbers them the same way (from 1):
    /// how a request to stop names the request it is about.
    requests: u64,
    layers: Vec<LayerLine>,
    /// Made at the first run and kept: its descriptors live as long as the worker, so a
    /// run registers it without a system call ([`Worker::stopper`]).
    stopper: Option<Arc<Stopper>>,
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
        // A worker executable built with mimalloc (the `moonjail` CLI serves as its own
        // worker) would otherwise reserve 1 GiB of address space at its first allocation,
        // which counts against the worker's RLIMIT_AS and leaves no room for a
        // deterministic state's arena. With no reserve, mimalloc maps what it uses.
        command.env("MIMALLOC_ARENA_RESERVE", "0");
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
        let spawned = rustix::process::Pid::from_child(&child);
        // From here on the pid is waited for with `wait4` (for the CPU time the worker
        // used), never through `child`, which has nothing left to release.
        drop(child);
        let mut worker = Worker {
            owner: crate::vm::watchdog::fork_generation(),
            processes: Processes {
                spawned,
                worker: None,
                relay: None,
                ended: None,
            },
            stat: None,
            channel: Channel {
                socket: OwnedFd::from(ours),
                buffer: Vec::new(),
                stderr,
                captured: Vec::new(),
                dropped: 0,
                stderr_limit: settings.stderr_bytes,
                cpu: None,
                interrupt: None,
            },
            runs: 0,
            requests: 0,
            layers: Vec::new(),
            stopper: None,
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
                // With the PID namespace layer (forking, the default) the process spawned
                // is a relay and its only child the worker; without it there is no child.
                worker.processes.relay = Some(
                    ready
                        .layers
                        .iter()
                        .any(|l| l.layer == "pid-namespace" && l.status == "applied"),
                );
                worker.layers = ready.layers;
                worker.processes.attach();
                let (_, pid) = worker.pids();
                worker.stat = File::open(format!("/proc/{pid}/stat")).ok();
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
    /// when the worker died. A run that parks at a deferred call (`Sandbox::start`) calls
    /// `on_park` around the wait, and its worker is frozen meanwhile (see
    /// [`Worker::freezer`]); the time it waits moves the deadline.
    pub(crate) fn run(
        &mut self,
        job: &Job,
        settings: &Settings,
        on_park: Option<OnPark>,
    ) -> (Outcome, Fate) {
        let start = Instant::now();
        let deadline = job
            .limits()
            .timeout
            .map(|t| start + t + settings.kill_grace);
        let request = match encode_run(job) {
            Ok(request) => request,
            Err(message) => {
                let error = Error::new(ErrorKind::Input, message);
                return (Outcome::failed(error, start.elapsed()), Fate::Reuse);
            }
        };
        self.runs += 1;
        let tools = job.host.tools.as_ref().map(|registry| {
            let due = job.limits().timeout.map(|t| start + t);
            let run = registry.start_bounded_run(due, job.limits().result_depth);
            match on_park {
                Some(hook) => run.on_park(self.freezer().around(hook)),
                None => run,
            }
        });
        let host = Host {
            files: &*job.host.files,
            tools: tools.as_ref(),
            max_depth: job.limits().result_depth,
            max_host_bytes: super::host_budget(job.limits()),
        };
        let interrupt = job.host.interrupt.as_ref();
        let (mut outcome, fate) =
            match self.exchange(&request, deadline, settings, host, job.limits(), interrupt) {
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
                Err(error) => (Outcome::failed(error, start.elapsed()), Fate::Retire),
            };
        ToolRun::settle(tools.as_ref(), &mut outcome);
        (outcome, fate)
    }

    /// Sends `request` and waits for its `Done` until `deadline`, answering the worker's
    /// host calls from `host` meanwhile and asking `interrupt` once per its period: the
    /// outcome the worker reported (without tool calls: the caller has their record), or
    /// (after the worker was killed, or died) the error that ended the exchange.
    pub(crate) fn exchange(
        &mut self,
        request: &[u8],
        deadline: Option<Instant>,
        settings: &Settings,
        host: Host<'_>,
        limits: &Limits,
        interrupt: Option<&InterruptCheck>,
    ) -> Result<Outcome, Error> {
        // Asked once before the request goes out, as in process: a call the host stops
        // already is not sent (and the worker stays as it was).
        if interrupt.is_some_and(InterruptCheck::ask) {
            let error = Error::new(
                ErrorKind::Interrupted,
                crate::vm::Stop::Interrupted.message(),
            );
            return Ok(Outcome::failed(error, Duration::ZERO));
        }
        self.requests += 1;
        let sent = self.channel.send(request, deadline);
        self.channel.interrupt = interrupt.and_then(InterruptWatch::new);
        let reply = sent.and_then(|()| self.reply(Kind::Done, deadline, settings, Some(host)));
        self.channel.interrupt = None;
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
        self.requests += 1;
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
        self.requests += 1;
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
        // No clock bounds this request: its CPU time does.
        self.channel.cpu = match (deadline, settings.run_cpu_time, &self.stat) {
            (None, Some(limit), Some(stat)) => stat
                .try_clone()
                .ok()
                .and_then(|stat| CpuWatch::new(stat, limit)),
            _ => None,
        };
        let reply = self.reply_frames(expected, deadline, settings, host, &mut budget);
        self.channel.cpu = None;
        reply
    }

    fn reply_frames(
        &mut self,
        expected: Kind,
        deadline: Option<Instant>,
        settings: &Settings,
        host: Option<Host<'_>>,
        budget: &mut Budget,
    ) -> Result<protocol::Frame, Failure> {
        // Time the host held a deferred call (`Sandbox::start`) is not the request's.
        let due = || match host.and_then(|h| h.tools) {
            Some(tools) => deadline.map(|d| d + tools.parked()),
            None => deadline,
        };
        loop {
            let frame = match self.channel.recv(due(), settings.max_frame) {
                Ok(frame) => frame,
                Err(Failure::Interrupt) => {
                    self.tell_to_stop(settings)?;
                    continue;
                }
                Err(failure) => return Err(failure),
            };
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
                    let reply = match host_call::answer(&frame, host, budget) {
                        Ok(reply) => reply,
                        Err(Refusal::Frame(e)) => return Err(Failure::Frame(e)),
                        Err(Refusal::Forbidden(why)) => return Err(Failure::HostCalls(why)),
                    };
                    let deadline = due();
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Failure::Timeout);
                    }
                    self.channel.send(&reply, deadline)?;
                    // A worker told to stop while the host served its call gets its grace
                    // from now: it could not stop while it waited for the answer.
                    if let Some(watch) = &mut self.channel.interrupt {
                        if watch.told.is_some() {
                            watch.told = Some(Instant::now() + settings.kill_grace);
                        }
                    }
                }
                other => return Err(Failure::Unexpected(other)),
            }
        }
    }

    /// Hooks that freeze the worker (`SIGSTOP`) while its run waits at a deferred call,
    /// and thaw it (`SIGCONT`) before the run goes on. No deadline watches the worker
    /// meanwhile (the supervisor's thread waits for the host, and the deadline moves by
    /// the wait): a worker that did not wait for the answer as an honest one does must not
    /// get that time to compute. Through the worker's pidfd, or the spawned process when
    /// it is the worker (no PID namespace): never a pid another process could have taken.
    fn freezer(&mut self) -> OnPark {
        use rustix::process::{kill_process, pidfd_send_signal, Signal};
        enum Target {
            Pidfd(OwnedFd),
            Child(rustix::process::Pid),
        }
        self.processes.attach();
        let target = match self.processes.target() {
            Some(super::interrupt::Target::Pidfd(fd)) => {
                fd.try_clone_to_owned().ok().map(Target::Pidfd)
            }
            Some(super::interrupt::Target::Child(_)) => Some(Target::Child(self.processes.spawned)),
            None => None,
        };
        if target.is_none() {
            tracing::warn!("a worker waiting at a deferred call cannot be frozen: no handle on it");
        }
        let target = std::sync::Arc::new(target);
        let signal = move |target: &Option<Target>, signal: Signal| {
            // ESRCH: the worker has ended; its run's end is reported when it goes on.
            let _ = match target {
                Some(Target::Pidfd(fd)) => pidfd_send_signal(fd, signal),
                Some(Target::Child(pid)) => kill_process(*pid, signal),
                None => Ok(()),
            };
        };
        let thaw = std::sync::Arc::clone(&target);
        OnPark {
            parking: Box::new(move || signal(&target, Signal::STOP)),
            going_on: Box::new(move || signal(&thaw, Signal::CONT)),
        }
    }

    /// Tells the worker to stop the request it is serving (the interrupt check said so),
    /// giving it `kill_grace` to answer.
    ///
    /// # Errors
    /// [`Failure::NotStopped`] when the worker cannot be told.
    fn tell_to_stop(&mut self, settings: &Settings) -> Result<(), Failure> {
        let told = match self.processes.target() {
            Some(target) => super::interrupt::send(target, self.requests)
                .map_err(|e| format!("its worker process could not be told to stop ({e})")),
            None => Err("its worker process could not be told to stop".to_string()),
        };
        match told {
            Ok(()) => {
                if let Some(watch) = &mut self.channel.interrupt {
                    watch.told = Some(Instant::now() + settings.kill_grace);
                }
                Ok(())
            }
            Err(why) => Err(Failure::NotStopped(format!("{why}, and was killed"))),
        }
    }

    /// The error a failed exchange is reported as; the worker is killed and reaped.
    fn failure_error(&mut self, failure: Failure, settings: &Settings) -> Error {
        match failure {
            Failure::NotStopped(why) => {
                self.kill();
                Error::new(
                    ErrorKind::Interrupted,
                    format!("{}; {why}", crate::vm::Stop::Interrupted.message()),
                )
            }
            Failure::Closed => {
                let ended = self.reap();
                self.channel.drain_stderr();
                let (kind, mut message) = classify_death(ended, &self.channel.captured, settings);
                // A memory_limit already quotes the one line of stderr that matters.
                if let Some(tail) = self
                    .channel
                    .stderr_tail()
                    .filter(|_| kind != ErrorKind::MemoryLimit)
                {
                    message.push_str(&format!("; its stderr: {tail}"));
                }
                Error::new(kind, message)
            }
            Failure::HostCalls(why) => {
                self.kill();
                Error::new(ErrorKind::Forbidden, why)
            }
            Failure::CpuTime(limit) => {
                self.kill();
                Error::new(ErrorKind::Timeout, cpu_time_message(limit))
            }
            Failure::Frame(FrameError::Oversized { length, max }) => {
                self.kill();
                Error::new(
                    ErrorKind::MemoryLimit,
                    format!(
                        "memory limit: the worker sent a frame (an answer or a host call) of \
                         {length} bytes, over the {max} bytes the supervisor accepts in one \
                         (max_frame_bytes plus room for the result and output limits); its \
                         worker process was killed"
                    ),
                )
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
                let ended = self.reap();
                describe_death(ended.map(|e| e.status))
            }
            Failure::CpuTime(limit) => {
                self.kill();
                cpu_time_message(limit)
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
            Failure::Interrupt => {
                self.kill();
                "the host stopped it".to_string()
            }
            Failure::NotStopped(why) => {
                self.kill();
                format!("the host stopped it; {why}")
            }
        };
        self.channel.drain_stderr();
        if let Some(tail) = self.channel.stderr_tail() {
            message.push_str(&format!("; its stderr: {tail}"));
        }
        message
    }

    /// Kills the worker and reaps it and its relay (see the module docs: no zombie is
    /// left to anyone).
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        // In a forked child the worker is the parent's: never signalled from here.
        if !self.belongs_here() {
            return None;
        }
        self.processes.kill().map(|ended| ended.status)
    }

    /// Reaps a worker whose channel closed; kills it if it does not end soon.
    fn reap(&mut self) -> Option<Ended> {
        match self.processes.wait_for(REAP_WAIT) {
            Some(ended) => Some(ended),
            None => self.processes.kill(),
        }
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

    /// What another thread needs to end this worker at once ([`Stopper::stop`]): made
    /// once, while the worker is alive and not yet reaped (so its pid is still its own),
    /// then shared.
    pub(crate) fn stopper(&mut self) -> Option<Arc<Stopper>> {
        if self.stopper.is_none() {
            let socket = self.channel.socket.try_clone().ok()?;
            let process = match &self.processes.worker {
                Some((_, pidfd)) => pidfd.try_clone().ok()?,
                None => rustix::process::pidfd_open(
                    self.processes.spawned,
                    rustix::process::PidfdFlags::empty(),
                )
                .ok()?,
            };
            self.stopper = Some(Arc::new(Stopper { socket, process }));
        }
        self.stopper.clone()
    }

    /// How many runs this worker has served.
    pub(crate) fn runs(&self) -> u64 {
        self.runs
    }

    /// The pid of the process spawned, and of the locked-down worker (its child, when the
    /// PID-namespace layer forked; otherwise the same process).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn pids(&self) -> (u32, u32) {
        let relay = self.processes.spawned.as_raw_nonzero().get() as u32;
        match &self.processes.worker {
            Some((pid, _)) => (relay, *pid),
            None => (relay, child_of(relay).unwrap_or(relay)),
        }
    }

    /// The lockdown report the worker sent with `Ready`.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn layers(&self) -> &[LayerLine] {
        &self.layers
    }
}

impl Worker {
    /// False in a process forked off the one that spawned the worker.
    pub(crate) fn belongs_here(&self) -> bool {
        self.owner == crate::vm::watchdog::fork_generation()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // In a forked child, `kill` leaves the parent's worker alone: dropping this copy
        // only closes its descriptors.
        self.kill();
    }
}

/// The first child of `pid`, from /proc: its `children` list, or, on a kernel built
/// without it (`CONFIG_PROC_CHILDREN`), the process whose parent it is.
fn child_of(pid: u32) -> Option<u32> {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        Ok(children) => children.split_whitespace().next()?.parse().ok(),
        Err(_) => child_by_parent(pid),
    }
}

/// A process whose parent is `pid`, from every `/proc/PID/stat`.
fn child_by_parent(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // Field 4, the parent, is the second after the command name's ')'.
            let parent = stat
                .get(stat.rfind(')')? + 1..)?
                .split_whitespace()
                .nth(1)?;
            (parent.parse::<u32>().ok()? == pid).then_some(child)
        })
}

fn encode_run(job: &Job) -> Result<Vec<u8>, String> {
    let mut meta = RequestMeta::new(job.spec, job.host, job.chunk_name);
    meta.expression = job.expression;
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
    // A worker that keeps to its limits never sends more than they allow: anything else
    // is a worker that broke the protocol, and none of it reaches the caller. A truncated
    // output is its kept bytes (within the limit) plus the marker line.
    let marker = if meta.output_truncated.is_some() {
        crate::vm::output::MARKER_MAX_BYTES
    } else {
        0
    };
    let over_output = |max: &usize| {
        output.len() > max.saturating_add(marker)
            || meta.output_truncated.is_some_and(|t| t.kept_bytes > *max)
    };
    if let Some(max) = limits.output_bytes.filter(over_output) {
        return Err(format!(
            "{} bytes of output, over the {max} byte output limit",
            output.len()
        ));
    }
    let more = frame.section(3).unwrap_or_default();
    // The values after the first come as one array: its brackets and commas are the
    // encoding's, not the script's.
    let sent = result.len() + more.len();
    let slack = if more.is_empty() {
        0
    } else {
        meta.result_count
    };
    if let Some(max) = limits
        .result_bytes
        .filter(|max| sent > max.saturating_add(slack))
    {
        return Err(format!(
            "{sent} bytes of results, over the {max} byte result limit"
        ));
    }
    let budget = super::host_budget(limits);
    let (result, more_results) = match meta.error {
        Some(error) => (Err(error.bounded()), Vec::new()),
        // The worker checked the depth already; one level of slack for the encoding (two
        // for the array of further values).
        None => {
            let first = protocol::parse_value(result, limits.result_depth + 1, budget)
                .map_err(|e| format!("a malformed result: {e}"))?;
            let more = if more.is_empty() {
                Vec::new()
            } else {
                match protocol::parse_value(more, limits.result_depth + 2, budget)
                    .map_err(|e| format!("malformed results: {e}"))?
                {
                    serde_json::Value::Array(values) => values,
                    _ => return Err("malformed results: not an array".to_string()),
                }
            };
            if meta.result_count != usize::from(meta.result_count > 0) + more.len() {
                return Err(format!(
                    "{} values for a result count of {}",
                    1 + more.len(),
                    meta.result_count
                ));
            }
            (Ok(first), more)
        }
    };
    let result_count = if result.is_ok() { meta.result_count } else { 0 };
    Ok(Outcome {
        result,
        more_results,
        result_count,
        output_truncated: meta.output_truncated,
        output: String::from_utf8_lossy(output).into_owned(),
        stats: meta.stats,
        diagnostics: meta.diagnostics,
        tool_calls: Vec::new(),
        lint: None,
    })
}

/// The message of a request without a deadline that used up its CPU time.
fn cpu_time_message(limit: Duration) -> String {
    format!(
        "timeout: the script used {:.1} s of CPU time, the CPU-time limit of a request \
         without a wall-clock timeout (run_cpu_time); its worker process was killed",
        limit.as_secs_f64()
    )
}

/// What a worker's death is reported as (see the module docs for the rule): `timeout` when
/// its `RLIMIT_CPU` ended it, `memory_limit` when an allocation under its `RLIMIT_AS` failed
/// and it aborted, otherwise `killed`.
fn classify_death(ended: Option<Ended>, stderr: &[u8], settings: &Settings) -> (ErrorKind, String) {
    let described = describe_death(ended.map(|e| e.status));
    let Some(ended) = ended else {
        return (ErrorKind::Killed, described);
    };
    let signal = ended.status.signal();
    if let (Some(libc::SIGKILL | libc::SIGXCPU), Some(limit)) = (signal, settings.rlimit_cpu) {
        // The kernel kills at the limit rounded up to whole seconds; rusage may be short of
        // it by a tick or so.
        let whole = Duration::from_secs(limit.as_secs() + u64::from(limit.subsec_nanos() > 0));
        if ended.cpu + Duration::from_millis(100) >= whole {
            return (
                ErrorKind::Timeout,
                format!(
                    "timeout: the worker process reached its CPU-time limit (RLIMIT_CPU, {} s \
                     over all its runs) after {:.2} s of CPU time; {described}",
                    whole.as_secs(),
                    ended.cpu.as_secs_f64()
                ),
            );
        }
    }
    if matches!(signal, Some(libc::SIGABRT | libc::SIGSEGV)) {
        let text = String::from_utf8_lossy(stderr);
        if let Some(line) = text.lines().find(|line| {
            line.starts_with(ALLOC_FAILED) && line.trim_end().ends_with("bytes failed")
        }) {
            let limit = settings
                .rlimit_as
                .map_or_else(|| "no".to_string(), |bytes| format!("{bytes} bytes"));
            return (
                ErrorKind::MemoryLimit,
                format!(
                    "memory limit: the worker process ran out of address space outside the \
                     Lua heap (RLIMIT_AS: {limit}) and aborted: {}",
                    line.trim()
                ),
            );
        }
    }
    (ErrorKind::Killed, described)
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

    fn settings(rlimit_cpu: Option<Duration>) -> Settings {
        Settings {
            exe: PathBuf::new(),
            configure: Vec::new(),
            required: Vec::new(),
            kill_grace: Duration::ZERO,
            spawn_timeout: Duration::ZERO,
            max_frame: 0,
            stderr_bytes: 0,
            test_hooks: false,
            max_host_calls: 0,
            max_host_call_bytes: 0,
            run_cpu_time: None,
            rlimit_cpu,
            rlimit_as: Some(1 << 30),
        }
    }

    fn ended(signal: i32, cpu_ms: u64) -> Option<Ended> {
        Some(Ended {
            status: ExitStatus::from_raw(signal),
            cpu: Duration::from_millis(cpu_ms),
        })
    }

    #[test]
    fn deaths_are_limits_only_when_the_cause_is_certain() {
        let oom = b"moonjail worker: x\nmemory allocation of 240000143 bytes failed\nnote: ...\n";
        let plain = settings(None);
        // An abort (SIGSEGV as PID 1, or SIGABRT) after the allocation failure message.
        for signal in [libc::SIGSEGV, libc::SIGABRT] {
            let (kind, message) = classify_death(ended(signal, 10), oom, &plain);
            assert_eq!(kind, ErrorKind::MemoryLimit, "{message}");
            assert!(message.contains("memory allocation of 240000143 bytes failed"));
            assert!(message.contains("1073741824 bytes"), "{message}");
        }
        // The same signals without it, the message from another signal, or a script that
        // merely printed something alike in the middle of a line: a crash.
        let (kind, _) = classify_death(ended(libc::SIGSEGV, 10), b"boom\n", &plain);
        assert_eq!(kind, ErrorKind::Killed);
        let (kind, _) = classify_death(ended(libc::SIGSYS, 10), oom, &plain);
        assert_eq!(kind, ErrorKind::Killed);
        let echoed = b"print: memory allocation of 5 bytes failed\n";
        let (kind, _) = classify_death(ended(libc::SIGSEGV, 10), echoed, &plain);
        assert_eq!(kind, ErrorKind::Killed);
        // SIGKILL at the RLIMIT_CPU (rounded up to 2 s) is a timeout; before it, or with
        // no such limit, someone else killed the worker.
        let limited = settings(Some(Duration::from_millis(1500)));
        let (kind, message) = classify_death(ended(libc::SIGKILL, 1990), b"", &limited);
        assert_eq!(kind, ErrorKind::Timeout, "{message}");
        assert!(message.contains("RLIMIT_CPU, 2 s"), "{message}");
        let (kind, _) = classify_death(ended(libc::SIGKILL, 300), b"", &limited);
        assert_eq!(kind, ErrorKind::Killed);
        let (kind, _) = classify_death(ended(libc::SIGKILL, 5000), b"", &plain);
        assert_eq!(kind, ErrorKind::Killed);
        let (kind, _) = classify_death(None, oom, &limited);
        assert_eq!(kind, ErrorKind::Killed);
        // An exit status is never a limit.
        let exited = Some(Ended {
            status: ExitStatus::from_raw(2 << 8),
            cpu: Duration::from_secs(9),
        });
        assert_eq!(classify_death(exited, oom, &limited).0, ErrorKind::Killed);
    }

    #[test]
    fn the_child_of_a_process_is_found_in_proc() {
        // A single-threaded parent with one child, as a relay is.
        let mut shell = Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        let parent = shell.id();
        let until = Instant::now() + Duration::from_secs(5);
        let mut found = child_of(parent);
        while found.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            found = child_of(parent);
        }
        let by_parent = child_by_parent(parent);
        // The child is there from its fork, as a copy of `sh`, until it execs `sleep`.
        let comm_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
        let mut comm = found.and_then(comm_of);
        while comm.as_deref() == Some("sh\n") && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            comm = found.and_then(comm_of);
        }
        if let Some(pid) = found.and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(found.is_some(), "no child of {parent}");
        assert_eq!(by_parent, found);
        assert_eq!(comm.as_deref(), Some("sleep\n"));
    }

    #[test]
    fn cpu_time_is_read_from_proc_stat() {
        let stat = File::open("/proc/self/stat").unwrap();
        let before = cpu_time(&stat).expect("this process's CPU time");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {
            std::hint::spin_loop();
        }
        let after = cpu_time(&stat).unwrap();
        assert!(after > before, "{before:?} then {after:?}");
    }

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
            result_count: 1,
            output_truncated: None,
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
            cpu: None,
            interrupt: None,
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

/// A worker's `Done` is held to the limits the worker was given (found by reading the
/// code behind the `done_document` fuzz target).
#[cfg(test)]
mod done_bounds {
    use super::*;
    use crate::error::ErrorKind;

    fn done(error: Option<Error>, result: &[u8], output: &[u8]) -> protocol::Frame {
        done_truncated(error, result, output, None)
    }

    fn done_truncated(
        error: Option<Error>,
        result: &[u8],
        output: &[u8],
        output_truncated: Option<crate::Truncation>,
    ) -> protocol::Frame {
        let meta = serde_json::to_vec(&DoneMeta {
            error,
            stats: Default::default(),
            diagnostics: None,
            result_count: 1,
            output_truncated,
        })
        .unwrap();
        let bytes = protocol::encode(Kind::Done, &[&meta, result, output]).unwrap();
        match protocol::decode(&bytes, usize::MAX).unwrap() {
            Decoded::Frame(frame, _) => frame,
            Decoded::Need(_) => panic!("a whole frame"),
        }
    }

    #[test]
    fn output_and_results_over_the_limits_are_refused() {
        let limits = Limits {
            output_bytes: Some(10),
            result_bytes: Some(10),
            ..Limits::default()
        };
        let e = decode_done(&done(None, b"1", &[b'x'; 11]), &limits).unwrap_err();
        assert!(e.contains("output limit"), "{e}");
        let e = decode_done(&done(None, b"\"0123456789\"", b""), &limits).unwrap_err();
        assert!(e.contains("result limit"), "{e}");
        let ok = decode_done(&done(None, b"1", b"0123456789"), &limits).unwrap();
        assert_eq!(ok.output, "0123456789");
    }

    /// Regression: with `OutputOverflow::Truncate`, the worker's output is the kept
    /// bytes plus the marker line, longer than the limit; every isolated truncating run
    /// failed as `internal` ("the worker sent the worker sent 1064 bytes of output").
    #[test]
    fn a_truncated_output_may_carry_its_marker_past_the_limit() {
        let limits = Limits {
            output_bytes: Some(10),
            output_overflow: crate::OutputOverflow::Truncate,
            ..Limits::default()
        };
        let cut = |kept_bytes| {
            Some(crate::Truncation {
                kept_bytes,
                dropped_bytes: 100,
            })
        };
        let text = b"01234\n[... 100 bytes of output dropped ...]\n56789";
        let ok = decode_done(&done_truncated(None, b"1", text, cut(10)), &limits).unwrap();
        assert_eq!(ok.output.as_bytes(), text);
        assert_eq!(ok.output_truncated, cut(10));
        // Not more than the marker's room, and never more kept bytes than the limit.
        let long = [b'x'; 10 + crate::vm::output::MARKER_MAX_BYTES + 1];
        let e = decode_done(&done_truncated(None, b"1", &long, cut(10)), &limits).unwrap_err();
        assert_eq!(
            e,
            format!(
                "{} bytes of output, over the 10 byte output limit",
                long.len()
            )
        );
        assert!(decode_done(&done_truncated(None, b"1", text, cut(11)), &limits).is_err());
        // Without a truncation, the limit is the limit.
        assert!(decode_done(&done(None, b"1", text), &limits).is_err());
    }

    #[test]
    fn an_error_value_and_traceback_are_bounded_whatever_the_worker_says() {
        let mut huge = Error::new(ErrorKind::Runtime, "x");
        huge.value = Some(serde_json::json!("v".repeat(1 << 20)));
        huge.traceback = vec![
            crate::error::Frame {
                function: Some("f".repeat(1 << 16)),
                source: "s".into(),
                line: 1,
            };
            1000
        ];
        let out = decode_done(&done(Some(huge), b"", b""), &Limits::default()).unwrap();
        let e = out.error().unwrap();
        assert_eq!(e.value, None);
        assert_eq!(e.traceback.len(), crate::error::MAX_FRAMES);
        assert!(e.traceback[0].function.as_ref().unwrap().len() <= 256);
    }

    #[test]
    fn an_error_message_is_bounded_whatever_the_worker_says() {
        let huge = Error::new(ErrorKind::Runtime, "x".repeat(1 << 20));
        let out = decode_done(&done(Some(huge), b"", b""), &Limits::default()).unwrap();
        let message = out.error().unwrap().message.clone();
        assert!(
            message.len() <= crate::error::MAX_MESSAGE_BYTES,
            "{}",
            message.len()
        );
    }
}
