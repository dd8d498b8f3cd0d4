//! The supervisor's request to a worker to stop the request it is serving (the host's
//! interrupt check said so, see `SandboxBuilder::interrupt_check`).
//!
//! It travels as a real-time signal, [`signal`] (`SIGRTMIN+4`), queued with the number of
//! the request it is about (`si_value`): both sides count the requests the worker's loop
//! reads, from 1. The worker's handler stops the run at once (the same sticky stop and
//! hooks as a deadline) when the number is the request it is serving, and records the
//! number in any case; as each call starts, the engine asks the worker's interrupt check,
//! which looks at that record, so a request asked to stop before its call started (while
//! its state was being built, or before the worker had even read it) stops at its first
//! instruction. A signal about an earlier request, which can arrive after that request
//! was answered, changes nothing.
//!
//! The worker, as PID 1 of its namespace, would ignore a signal it has no handler for;
//! the handler is installed before lockdown (`rt_sigaction` is allowed after it too) and
//! inherited across the PID-namespace fork.

use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::host::InterruptCheck;
use crate::vm::{current, Stop};

/// The signal a supervisor sends a worker to stop its request.
pub(crate) fn signal() -> c_int {
    libc::SIGRTMIN() + 4
}

/// The head of a Linux `siginfo_t` as `sigqueue` fills it (`_rt`: pid, uid, value); the
/// union of fields is pointer-aligned, as the `repr(C)` of [`Rt`] makes it.
#[repr(C)]
struct Head {
    signo: c_int,
    errno: c_int,
    code: c_int,
    rt: Rt,
}

#[repr(C)]
struct Rt {
    pid: libc::pid_t,
    uid: libc::uid_t,
    /// `union sigval`: an int or a pointer; the request number, pointer-sized.
    value: usize,
}

/// A whole `siginfo_t`: the head and zeroes.
#[repr(C)]
struct Info {
    head: Head,
    rest: [u8; std::mem::size_of::<libc::siginfo_t>() - std::mem::size_of::<Head>()],
}

const _: () = assert!(std::mem::size_of::<Info>() == std::mem::size_of::<libc::siginfo_t>());

/// Where to send the signal: the locked-down worker through a pidfd (behind a
/// PID-namespace relay), or the process the supervisor spawned, when that is the worker.
pub(crate) enum Target<'a> {
    Pidfd(BorrowedFd<'a>),
    /// The supervisor's own unreaped child: its pid cannot have been reused.
    Child(libc::pid_t),
}

/// Asks the worker to stop request `request`.
///
/// # Errors
/// The kernel's refusal (the worker is gone, or cannot be signalled).
pub(crate) fn send(target: Target<'_>, request: u64) -> io::Result<()> {
    let info = Info {
        head: Head {
            signo: signal(),
            errno: 0,
            // SI_QUEUE: what `sigqueue` sends; a negative code is what one process may
            // send another.
            code: libc::SI_QUEUE,
            rt: Rt {
                // SAFETY: getpid and getuid have no preconditions.
                pid: unsafe { libc::getpid() },
                // SAFETY: as above.
                uid: unsafe { libc::getuid() },
                value: usize::try_from(request).unwrap_or(usize::MAX),
            },
        },
        rest: [0; std::mem::size_of::<libc::siginfo_t>() - std::mem::size_of::<Head>()],
    };
    let info: *const Info = &info;
    // SAFETY: both system calls read a `siginfo_t` from the pointer, which points to one
    // of that size, alive for the call; the descriptor and the pid are the caller's.
    let rc = unsafe {
        match target {
            Target::Pidfd(fd) => libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal(),
                info,
                0,
            ),
            Target::Child(pid) => libc::syscall(libc::SYS_rt_sigqueueinfo, pid, signal(), info),
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---- the worker's side ----

/// The number of the request the worker is serving (0: none).
static SERVING: AtomicU64 = AtomicU64::new(0);
/// The highest request number the supervisor asked to stop.
static ASKED: AtomicU64 = AtomicU64::new(0);

/// Installs the worker's handler. Called once, before lockdown.
///
/// # Errors
/// `sigaction` failed.
pub(crate) fn install() -> io::Result<()> {
    // SAFETY: a plain SA_SIGINFO handler on a signal nothing else in a worker uses; the
    // handler touches only atomics, const-initialised thread-locals and `lua_sethook`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// The worker starts serving request `request`.
pub(crate) fn serving(request: u64) {
    SERVING.store(request, Ordering::SeqCst);
}

/// The worker is done with its request (about to answer it).
pub(crate) fn served() {
    SERVING.store(0, Ordering::SeqCst);
}

/// Whether the supervisor asked to stop the request being served.
fn asked() -> bool {
    let serving = SERVING.load(Ordering::SeqCst);
    serving != 0 && ASKED.load(Ordering::SeqCst) >= serving
}

/// The worker engine's interrupt check: asked as each call starts (no polling: the
/// signal's handler stops a call already running itself).
pub(crate) fn check() -> InterruptCheck {
    InterruptCheck {
        every: None,
        check: Arc::new(asked),
    }
}

extern "C" fn on_signal(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    if info.is_null() {
        return;
    }
    // SAFETY: the kernel passes a whole `siginfo_t` to an SA_SIGINFO handler; `Info` has
    // its size and layout.
    let request = unsafe { (*info.cast::<Info>()).head.rt.value } as u64;
    ASKED.fetch_max(request, Ordering::SeqCst);
    if request != 0 && request == SERVING.load(Ordering::SeqCst) {
        if let Some(ctl) = current() {
            ctl.set_stop(Stop::Interrupted);
            ctl.arm_all();
        }
    }
}
