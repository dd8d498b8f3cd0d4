//! Shared harness: runs the `moonjail-isolate-scenario` helper as a child process (so no
//! test confines the test harness), parses its `KEY value` lines, inspects it from outside
//! through /proc, and skips tests whose layers this machine cannot apply.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use moonjail_isolate::{Capabilities, Layer};

pub const HELPER: &str = env!("CARGO_BIN_EXE_moonjail-isolate-scenario");
const TIMEOUT: Duration = Duration::from_secs(60);

/// What the probe says about this machine (probed once per test binary).
pub fn capabilities() -> &'static Capabilities {
    static CAPABILITIES: OnceLock<Capabilities> = OnceLock::new();
    CAPABILITIES.get_or_init(moonjail_isolate::probe)
}

/// Returns false, after printing why, when one of `layers` cannot be applied here.
pub fn require(test: &str, layers: &[Layer]) -> bool {
    for &layer in layers {
        match capabilities().availability(layer) {
            Some(availability) if availability.is_usable() => {}
            Some(availability) => {
                eprintln!("SKIP {test}: {layer} {availability}");
                return false;
            }
            None => {
                eprintln!("SKIP {test}: {layer} not probed");
                return false;
            }
        }
    }
    true
}

/// The layers the probe found unusable: passed as `--allow-missing` so that a test about
/// one layer still runs on a machine that lacks another.
fn unusable_layers() -> String {
    capabilities()
        .layers
        .iter()
        .filter(|(_, availability)| !availability.is_usable())
        .map(|(layer, _)| layer.name())
        .collect::<Vec<_>>()
        .join(",")
}

fn command(scenario: &str, args: &[&str]) -> Command {
    let mut command = Command::new(HELPER);
    command.arg(scenario).args(args);
    let missing = unusable_layers();
    if !missing.is_empty() && !args.contains(&"--allow-missing") {
        command.args(["--allow-missing", &missing]);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// How a scenario ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The value of the first line starting with `key `.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(' ').or(rest.is_empty().then_some("")))
        })
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    pub fn locked(&self) -> bool {
        self.has_line("LOCKED")
    }
}

/// Runs a scenario to completion with `stdin` as its input.
pub fn run(scenario: &str, args: &[&str], stdin: &str) -> Outcome {
    run_command(command(scenario, args), stdin)
}

pub fn run_command(mut command: Command, stdin: &str) -> Outcome {
    let mut child = command.spawn().expect("spawn the scenario helper");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_timeout(&mut child);
    Outcome {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn wait_with_timeout(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("scenario helper still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A scenario that printed `READY` and now blocks reading stdin, to be inspected.
pub struct Held {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pub transcript: Vec<String>,
}

impl Held {
    /// Starts `scenario` and waits for `READY`.
    pub fn start(scenario: &str, args: &[&str]) -> Held {
        Self::start_command(command(scenario, args))
    }

    pub fn start_command(mut command: Command) -> Held {
        let mut child = command.spawn().expect("spawn the scenario helper");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut held = Held {
            child,
            stdin,
            lines,
            transcript: Vec::new(),
        };
        held.wait_for("READY");
        held
    }

    pub fn wait_for(&mut self, wanted: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(wanted);
                    self.transcript.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut stderr = String::new();
                    if let Some(mut err) = self.child.stderr.take() {
                        let _ = err.read_to_string(&mut stderr);
                    }
                    panic!(
                        "no {wanted} line; got {:?}; stderr {stderr:?}",
                        self.transcript
                    );
                }
            }
        }
    }

    /// The pid of the process spawned (the relay when the PID namespace layer forks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The locked-down worker: the spawned process's only child when it became a relay.
    pub fn worker_pid(&self) -> u32 {
        let pid = self.pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|child| child.parse().ok())
            .unwrap_or(pid)
    }

    /// Sends a line, then waits for the scenario to end.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let status = wait_with_timeout(&mut self.child);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.transcript.push(line);
        }
        (status, std::mem::take(&mut self.transcript))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `Key:` field of a /proc status-like file.
pub fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

/// The target of a /proc/PID/ns link (e.g. `net:[4026531840]`).
pub fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|target| target.to_string_lossy().into_owned())
        .unwrap_or_else(|error| panic!("readlink /proc/{pid}/ns/{kind}: {error}"))
}

/// A command for the helper that gets an extra descriptor 7 (/dev/null) it did not ask for.
pub fn command_with_extra_fd(scenario: &str, args: &[&str]) -> Command {
    let mut command = command(scenario, args);
    let dev_null = c"/dev/null";
    // SAFETY: open and dup2 are async-signal-safe and touch only the child's descriptors.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(dev_null.as_ptr(), libc::O_RDONLY);
            if fd < 0 || libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

pub fn is_x86_64() -> bool {
    cfg!(target_arch = "x86_64")
}
