//! The one-shot run's last resort: a run still going a grace period after its deadline
//! is ended by ending the process.
//!
//! In process, the deadline reaches a script at its next VM instruction or native
//! checkpoint. Two kinds of work have neither and cannot be interrupted inside one
//! process: the collector's atomic phase (a chain of weak-keyed tables made to be slow
//! to mark) and a single comparison of two huge strings. A one-shot `moonjail run` can
//! still keep its promise: a timer signal, `GRACE` after the deadline, writes the
//! timeout outcome prepared in advance and exits with status 1. (`--isolate` needs no
//! such thing: the supervisor kills the worker.) See docs/THREATS.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How long after the deadline the process waits for the run to end on its own.
pub const GRACE: Duration = Duration::from_secs(1);

/// What the handler writes, and where (1: stdout, 2: stderr).
static MESSAGE: OnceLock<(libc::c_int, Vec<u8>)> = OnceLock::new();
/// Set by whichever ends the run first: the run (it prints its outcome) or the handler.
static SETTLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: libc::c_int) {
    if SETTLED.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some((fd, bytes)) = MESSAGE.get() {
        let mut written = 0;
        while written < bytes.len() {
            // SAFETY: write(2) is async-signal-safe; the buffer is a static that is never
            // changed after it is set.
            let n = unsafe {
                libc::write(*fd, bytes[written..].as_ptr().cast(), bytes.len() - written)
            };
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
    }
    // SAFETY: _exit(2) is async-signal-safe and ends the process without running
    // anything else.
    unsafe { libc::_exit(i32::from(crate::FAILED)) }
}

/// An armed backstop; [`Backstop::settle`] disarms it.
pub struct Backstop(());

impl Backstop {
    /// Arms the backstop for a run whose deadline is `timeout` from now: `message` (a
    /// complete `--json` document or human error line, newline included) goes to `fd`.
    /// `None` when it cannot be armed (the run then relies on the in-process deadline).
    pub fn arm(timeout: Duration, fd: libc::c_int, message: Vec<u8>) -> Option<Backstop> {
        MESSAGE.set((fd, message)).ok()?;
        let after = timeout.saturating_add(GRACE);
        let value = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_usec: libc::suseconds_t::from(after.subsec_micros()),
            },
        };
        // SAFETY: installing a plain handler that only touches statics, write(2) and
        // _exit(2); then a one-shot ITIMER_REAL. The CLI uses SIGALRM for nothing else
        // (the library's deadline signal is a real-time one).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
                return None;
            }
            if libc::setitimer(libc::ITIMER_REAL, &value, std::ptr::null_mut()) != 0 {
                return None;
            }
        }
        Some(Backstop(()))
    }

    /// The run ended on its own: disarms the timer. False if the handler got there
    /// first (it is then ending the process).
    pub fn settle(self) -> bool {
        let stop = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        // SAFETY: disarming this process's ITIMER_REAL.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &stop, std::ptr::null_mut()) };
        !SETTLED.swap(true, Ordering::SeqCst)
    }
}
