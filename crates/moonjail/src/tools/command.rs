//! Command tools: a tool implemented by an external program, so hosts in any language
//! can add tools without writing Rust.
//!
//! Protocol: the program gets the call's arguments on stdin as one JSON array, and prints
//! its result as one JSON value on stdout. A non-zero exit status is a tool error whose
//! message is the first lines of stderr; so is output that is not JSON. The program runs
//! in its own process group, with the run's remaining time as its timeout (capped); it is
//! killed, with anything it started, when it overruns its time or its output cap, and
//! whatever it left running in its process group is killed when it exits.
//!
//! The command is a shell command line, run with `/bin/sh -c COMMAND`: the host writes
//! it (`--tool weather.lookup='python3 tools/weather.py --units metric'`) and expects the
//! quoting and `$VARIABLES` to work as in its shell. Nothing the script sends ever
//! reaches the command line: the script's data only travels on stdin, as JSON.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::{ToolContext, ToolError};

/// Stderr kept for the error message, in bytes (the rest is read and dropped).
const STDERR_KEPT: usize = 64 << 10;
/// Lines of stderr quoted in an error message.
const STDERR_LINES: usize = 5;

/// An external program as a tool (see the module docs for the protocol).
///
/// ```no_run
/// use moonjail::{CommandTool, Sandbox, ToolRegistry};
/// let mut tools = ToolRegistry::new();
/// tools.register_command("weather.lookup", CommandTool::new("python3 tools/weather.py"))?;
/// let sandbox = Sandbox::builder().tools(tools).build()?;
/// # Ok::<(), moonjail::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTool {
    command: String,
    timeout: Duration,
    max_output_bytes: usize,
}

impl CommandTool {
    /// A tool that runs `/bin/sh -c command`.
    pub fn new(command: impl Into<String>) -> CommandTool {
        CommandTool {
            command: command.into(),
            timeout: Duration::from_secs(30),
            max_output_bytes: 1 << 20,
        }
    }

    /// The shell command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Sets the longest one call may take (always shortened to the run's remaining
    /// time). By default, 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the most the program may print on stdout, in bytes; more is a tool error.
    /// By default, 1 MiB.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    pub(crate) fn call(
        &self,
        name: &str,
        ctx: &ToolContext,
        args: Vec<Json>,
    ) -> Result<Json, ToolError> {
        let timeout = ctx.timeout(self.timeout);
        let deadline = Instant::now() + timeout;
        let input = serde_json::to_vec(&Json::Array(args))
            .map_err(|e| ToolError::new(format!("encoding the arguments: {e}")))?;
        let mut child = spawn(&self.command, name)?;
        let pid = child.id();

        let stdin = child.stdin.take();
        std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                ignore_sigpipe_on_this_thread();
                let _ = stdin.write_all(&input);
                let _ = stdin.write_all(b"\n");
            }
        });
        let overflow = Arc::new(AtomicBool::new(false));
        let stdout = reader(
            child.stdout.take(),
            self.max_output_bytes,
            Some(overflow.clone()),
        );
        let stderr = reader(child.stderr.take(), STDERR_KEPT, None);

        let mut pause = Duration::from_micros(200);
        let ended = loop {
            // Overflow first: the reader stops reading then, so the program may well die
            // of SIGPIPE before this loop notices.
            if overflow.load(Ordering::SeqCst) {
                break Ended::Overflow;
            }
            if exited(pid) {
                break if overflow.load(Ordering::SeqCst) {
                    Ended::Overflow
                } else {
                    Ended::Exited
                };
            }
            let now = Instant::now();
            if now >= deadline {
                break Ended::Timeout;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        };
        // The leader is not reaped yet, so the group id is still ours: this reaches the
        // program (when it overran) and anything it left behind, nothing else.
        kill_group(pid);
        let status = child.wait();
        // Both pipes are closed now (every writer was in the group) unless something left
        // the group: give up on them at the deadline.
        let grace = deadline.max(Instant::now()) + Duration::from_millis(100);
        let out = collect(stdout, grace);
        let err = collect(stderr, grace);
        let err_lines = first_lines(&err);

        match ended {
            Ended::Timeout => {
                return Err(ToolError::new(format!(
                    "the command timed out after {} ms and was killed{err_lines}",
                    timeout.as_millis()
                )))
            }
            Ended::Overflow => {
                return Err(ToolError::new(format!(
                    "the command printed more than {} bytes and was killed",
                    self.max_output_bytes
                )))
            }
            Ended::Exited => {}
        }
        let status = status.map_err(|e| ToolError::new(format!("waiting for the command: {e}")))?;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => format!("was killed by a signal ({status})"),
            };
            return Err(ToolError::new(format!("the command {how}{err_lines}")));
        }
        if out.iter().all(u8::is_ascii_whitespace) {
            return Err(ToolError::new(format!(
                "the command printed nothing: a command tool prints its result as JSON on \
                 stdout{err_lines}"
            )));
        }
        serde_json::from_slice(&out).map_err(|e| {
            ToolError::new(format!(
                "the command's output is not valid JSON: {e}{err_lines}"
            ))
        })
    }
}

enum Ended {
    Exited,
    Overflow,
    Timeout,
}

fn spawn(command: &str, name: &str) -> Result<Child, ToolError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("MOONJAIL_TOOL", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map_err(|e| ToolError::new(format!("cannot start the command: {e}")))
}

/// Reads `pipe` to its end on a helper thread, keeping at most `cap` bytes. With
/// `overflow`, more than `cap` sets it and stops reading (the call is over); without,
/// the rest is read and dropped (so the program never blocks writing it).
fn reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    cap: usize,
    overflow: Option<Arc<AtomicBool>>,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = cap.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                        if n > room {
                            if let Some(flag) = &overflow {
                                flag.store(true, Ordering::SeqCst);
                                break;
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, until: Instant) -> Vec<u8> {
    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        .unwrap_or_default()
}

/// `": first lines of stderr"`, or nothing when stderr is empty.
fn first_lines(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .take(STDERR_LINES)
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join(" | "))
    }
}

/// True once process `pid` (our child) has exited; it stays unreaped (`WNOWAIT`).
fn exited(pid: u32) -> bool {
    // SAFETY: `info` is a zeroed siginfo_t that waitid fills in; the call only inspects
    // our own child and, with WNOWAIT, leaves it waitable for `Child::wait`.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// Kills the program and its process group `pgid` (it was started as the group's
/// leader; the program itself is killed directly too, in case it left the group).
fn kill_group(pgid: u32) {
    // SAFETY: plain syscalls; `pgid` is our unreaped child's pid and the id of the group
    // it leads, so neither can name anyone else's process or group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
        libc::kill(pgid as libc::pid_t, libc::SIGKILL);
    }
}

/// Writing to a pipe whose reader is gone raises SIGPIPE, which kills a process that has
/// not ignored it (Rust binaries do; a C host embedding the library may not). Blocking it
/// on the writer thread turns it into an `EPIPE` error; the pending signal is discarded
/// with the thread.
fn ignore_sigpipe_on_this_thread() {
    // SAFETY: builds a signal set on the stack and changes this thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(command: &str, args: Vec<Json>) -> Result<Json, ToolError> {
        CommandTool::new(command)
            .timeout(Duration::from_secs(5))
            .call("t", &ToolContext::new(None), args)
    }

    #[test]
    fn echoes_its_arguments() {
        assert_eq!(
            call("cat", vec![json!(1), json!("a")]).unwrap(),
            json!([1, "a"])
        );
        assert_eq!(
            call("echo '{\"ok\": true}'", vec![]).unwrap(),
            json!({"ok": true})
        );
    }

    #[test]
    fn failures_are_tool_errors() {
        let e = call("echo bad >&2; exit 3", vec![]).unwrap_err();
        assert_eq!(e.message(), "the command exited with status 3: bad");
        let e = call("echo not json", vec![]).unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{e}");
        let e = call("true", vec![]).unwrap_err();
        assert!(e.message().contains("printed nothing"), "{e}");
    }

    #[test]
    fn overruns_are_killed() {
        let start = Instant::now();
        let e = CommandTool::new("sleep 30")
            .call(
                "t",
                &ToolContext::new(Some(Instant::now() + Duration::from_millis(200))),
                vec![],
            )
            .unwrap_err();
        assert!(e.message().contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let e = CommandTool::new("yes")
            .max_output_bytes(1000)
            .call("t", &ToolContext::new(None), vec![])
            .unwrap_err();
        assert!(e.message().contains("more than 1000 bytes"), "{e}");
    }

    #[test]
    fn leftovers_do_not_hold_the_call() {
        // A background child keeps stdout open; it is killed with the group on exit.
        let start = Instant::now();
        let r = call("sleep 30 & echo 1", vec![]).unwrap();
        assert_eq!(r, json!(1));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
