//! Entering a new PID namespace: unshare, fork once, and keep the parent as a relay.
//!
//! `unshare(CLONE_NEWPID)` only decides where the caller's *children* are born, and after it
//! the kernel refuses `clone(CLONE_THREAD)` until the caller itself is in that namespace. So
//! `lockdown` forks right after unsharing:
//!
//! - the child is PID 1 of the new namespace and carries on with the lockdown; once its
//!   credentials are final (a credential change clears it) it sets `PR_SET_PDEATHSIG` to
//!   `SIGKILL`, so it dies with the relay;
//! - the parent becomes the relay: it closes every descriptor, sets `RLIMIT_CORE` to 0,
//!   drops its privileges as the worker does (when the credentials layer is on: empty
//!   ambient and bounding sets, the worker's uid and gid with no supplementary group when
//!   root, not dumpable, no effective, permitted or inheritable capability), sets
//!   `no_new_privs`, installs a seccomp filter that allows only waiting and exiting, tells
//!   the child (which waits for that) that it is confined, waits for the child — reaping
//!   it, so no zombie of the worker is ever left to anyone else — then exits with its exit
//!   code or dies by its signal. A supervisor therefore sees the worker's outcome as the
//!   outcome of the process it spawned.
//!
//! To stop a worker without leaving a zombie, a supervisor kills the *worker* (the relay's
//! only child, best through a pidfd) and then waits for the relay, which reaps the worker
//! and ends the same way. Killing the relay instead orphans the worker: `PR_SET_PDEATHSIG`
//! still kills it, but its zombie is reparented to the caller's subreaper or init, which
//! may never reap it.
//!
//! As PID 1 the worker ignores signals it has no handler for when they come from inside its
//! namespace; the kernel's own signals (seccomp's kill, `RLIMIT_CPU`, faults) and `SIGKILL`
//! from outside still end it.

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::namespaces::{self, Namespace};
use crate::seccomp;

/// Why the PID namespace could not be entered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `unshare(CLONE_NEWPID)` failed.
    #[error(transparent)]
    Unshare(namespaces::Error),
    /// `pipe2(2)` failed.
    #[error("pipe2(O_CLOEXEC) failed")]
    Pipe(#[source] io::Error),
    /// `fork(2)` failed.
    #[error("fork() into the new PID namespace failed")]
    Fork(#[source] io::Error),
    /// `prctl(PR_SET_PDEATHSIG)` failed.
    #[error("prctl(PR_SET_PDEATHSIG, SIGKILL) failed")]
    DeathSignal(#[source] io::Error),
    /// Reading the relay's handshake byte failed.
    #[error("read() of the PID namespace relay's handshake failed")]
    Handshake(#[source] io::Error),
    /// The relay could not install its own seccomp filter.
    #[error("the PID namespace relay could not confine itself (no_new_privs or seccomp failed)")]
    RelayUnconfined,
    /// The relay could not drop its privileges (ids, capabilities).
    #[error("the PID namespace relay could not drop its uid, gid or capabilities")]
    RelayPrivileged,
    /// The relay died before the worker was tied to it.
    #[error("the PID namespace relay died before the worker was tied to it")]
    RelayGone,
    /// [`crate::PidNamespace::Existing`] was asked for but the caller is not PID 1.
    #[error("expected to run as PID 1 of a fresh PID namespace, but getpid() is {0}")]
    NotPidOne(i32),
}

/// The worker's end of the tie to the relay: a pipe whose write end only the relay holds.
#[derive(Debug)]
pub(crate) struct Link {
    from_relay: OwnedFd,
}

impl Link {
    /// Asks for `SIGKILL` when the relay dies, then checks that it has not died already.
    /// Call after the last credential change. Closes the pipe.
    pub(crate) fn arm(self) -> Result<(), Error> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
            .map_err(|e| Error::DeathSignal(e.into()))?;
        let mut fds = [PollFd::new(&self.from_relay, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // The relay writes nothing after its handshake byte (already read): any event now
        // means every write end is closed (POLLHUP), that is, the relay is gone. An error
        // leaves the question open: treat it as gone.
        match poll(&mut fds, Some(&now)) {
            Ok(0) => {}
            _ => return Err(Error::RelayGone),
        }
        Ok(())
    }
}

/// How the relay drops its privileges before it confines itself: like the worker's
/// credentials layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayCredentials {
    /// Switch to `uid`/`gid` (the process runs as root); otherwise keep the ids.
    pub(crate) switch_ids: bool,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// A failure stops the worker (the credentials layer is not allowed to be missing).
    pub(crate) required: bool,
}

/// The handshake bytes the relay sends: confined (with its privileges dropped, or keeping
/// them because that was allowed), unconfined, or still privileged when that was required.
const CONFINED: u8 = 1;
const CONFINED_PRIVILEGED: u8 = 3;
const UNCONFINED: u8 = 0;
const PRIVILEGED: u8 = 2;

/// The worker's side of a relay, once the relay is confined.
#[derive(Debug)]
pub(crate) struct Entered {
    pub(crate) link: Link,
    /// Whether the relay dropped its privileges (false: not asked to, or allowed to fail).
    pub(crate) relay_unprivileged: bool,
}

/// Unshares the PID namespace and forks. Returns in the child (PID 1 of the new namespace)
/// with the [`Link`] to arm later; the parent never returns (see the module docs). The relay
/// drops its privileges as `credentials` says (none: it keeps them).
pub(crate) fn enter(
    relay_filter: &seccomp::Filter,
    credentials: Option<RelayCredentials>,
) -> Result<Entered, Error> {
    namespaces::unshare(Namespace::Pid).map_err(Error::Unshare)?;
    let (from_relay, to_worker) =
        pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::Pipe(e.into()))?;
    // SAFETY: the process is single-threaded (lockdown checked), so the child may run any
    // code; the parent only runs `relay`, which allocates nothing.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Error::Fork(io::Error::last_os_error())),
        0 => {
            drop(to_worker);
            let dropped = wait_for_relay(&from_relay)?;
            Ok(Entered {
                link: Link { from_relay },
                relay_unprivileged: dropped && credentials.is_some(),
            })
        }
        child => {
            drop(from_relay);
            relay(child, to_worker, relay_filter, credentials)
        }
    }
}

/// Waits until the relay says it is confined (one byte: [`CONFINED`], or why not); says
/// whether it also dropped its privileges.
fn wait_for_relay(from_relay: &OwnedFd) -> Result<bool, Error> {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(from_relay, &mut byte) {
            Ok(1) if byte[0] == CONFINED => return Ok(true),
            Ok(1) if byte[0] == CONFINED_PRIVILEGED => return Ok(false),
            Ok(1) if byte[0] == PRIVILEGED => return Err(Error::RelayPrivileged),
            Ok(1) => return Err(Error::RelayUnconfined),
            Ok(_) => return Err(Error::RelayGone),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(Error::Handshake(errno.into())),
        }
    }
}

/// Checks that the caller is PID 1 (for [`crate::PidNamespace::Existing`]).
pub(crate) fn check_pid_one() -> Result<(), Error> {
    match rustix::process::getpid().as_raw_nonzero().get() {
        1 => Ok(()),
        other => Err(Error::NotPidOne(other)),
    }
}

/// The relay's whole life: wait for `child`, then end the way it ended.
fn relay(
    child: libc::pid_t,
    to_worker: OwnedFd,
    filter: &seccomp::Filter,
    credentials: Option<RelayCredentials>,
) -> ! {
    // Never dropped: the write end stays open until the relay exits (and dropping an
    // `OwnedFd` may call `fcntl`, which the relay's filter forbids).
    let keep = to_worker.into_raw_fd() as u32;
    // SAFETY: closes every descriptor but the pipe to the worker; nothing in the relay uses
    // them afterwards. Failures leave descriptors open in a process that only waits.
    unsafe {
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit for the duration of the call.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    // Privileges first (dropping the bounding set needs CAP_SETPCAP, which the uid switch
    // takes away), then no_new_privs and the filter, as in the worker.
    let (dropped, required) = match credentials {
        Some(c) => (
            crate::credentials::drop_raw(c.switch_ids, c.uid, c.gid).is_ok(),
            c.required,
        ),
        None => (true, false),
    };
    let confined = rustix::thread::set_no_new_privs(true).is_ok() && filter.apply().is_ok();
    // Tell the worker, which waits for this before going on: when `lockdown` returns, the
    // relay is already confined.
    let byte = [match (dropped, required, confined) {
        (false, true, _) => PRIVILEGED,
        (_, _, false) => UNCONFINED,
        (true, _, true) => CONFINED,
        (false, false, true) => CONFINED_PRIVILEGED,
    }];
    // SAFETY: writes one byte from a live buffer to the pipe descriptor the relay owns.
    unsafe { libc::write(keep as libc::c_int, byte.as_ptr().cast(), 1) };

    let status = loop {
        match rustix::process::waitpid(Pid::from_raw(child), WaitOptions::empty()) {
            Ok(Some((_, status))) if status.exited() || status.signaled() => break status,
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            // ECHILD cannot happen (the child is ours and reaped only here); end as a failure.
            Err(_) => exit_now(125),
        }
    };
    if let Some(code) = status.exit_status() {
        exit_now(code);
    }
    match status.terminating_signal() {
        Some(signal) => die_by(signal),
        None => exit_now(125),
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process at once, running no destructor or atexit handler, which
    // is what the forked relay wants.
    unsafe { libc::_exit(code) }
}

/// Dies by `signal`, like the worker did; falls back to exit status 128 + signal.
fn die_by(signal: i32) -> ! {
    // SAFETY: resetting the disposition to default and unblocking the signal touch only this
    // process's signal state; `raise` then delivers it to the calling thread.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    exit_now(128 + signal)
}
