//! The seccomp allowlist of a worker: what a running Lua VM, its deadline timer and signal,
//! the threads of the process and the channel to the supervisor need, and nothing else. Any other system call kills the whole
//! process (`SECCOMP_RET_KILL_PROCESS`, seen by the parent as death by `SIGSYS`).
//!
//! Prepare, then enforce: [`Filter::worker`] compiles the BPF programs (where errors can be
//! reported), [`Filter::apply`] installs them on every thread (`SECCOMP_FILTER_FLAG_TSYNC`).
//!
//! The worker filter is two stacked programs, because one seccompiler program has one match
//! action:
//! 1. *errno*: `clone3` fails with `ENOSYS` (so glibc falls back to `clone`, whose flags a
//!    filter can read, unlike `clone3`'s, which sit behind a pointer), and `newfstatat` /
//!    `statx`, which would resolve a path, fail with `ENOSYS` (glibc's `fstat` then reports an
//!    error; Rust's `File::metadata` falls back to `fstat`); so do `getcpu` (see
//!    [`ENOSYS_SYSCALLS`]) and
//!    `prctl(PR_SET_VMA)`, with which allocators such as mimalloc name their mappings
//!    (they ignore the failure, as on a kernel without `CONFIG_ANON_VMA_NAME`): the kernel
//!    code behind it is never reached, and the worker executable may use any allocator;
//! 2. *allowlist*: everything else not listed below kills the process.
//!
//! The kernel runs both and keeps the most severe verdict (kill > errno > allow), so the
//! allowlist lists the errno'd calls too. What is allowed:
//!
//! - I/O on descriptors already open: `read`, `write`, `readv`, `writev`, `recvmsg`,
//!   `sendmsg`, `recvfrom`, `sendto` (no destination address), `shutdown`, `close`, `fstat`,
//!   `poll`/`ppoll`, `fcntl(F_GETFD | F_GETFL)`;
//! - memory: `brk`, `mmap` and `mprotect` without `PROT_EXEC`, `munmap`, `mremap`, `madvise`;
//! - time: `clock_gettime`, `clock_getres`, `gettimeofday`, `time`, `nanosleep`,
//!   `clock_nanosleep`, `timer_create`/`settime`/`gettime`/`getoverrun`/`delete`;
//! - threads: `clone` with `CLONE_THREAD | CLONE_VM` and no `CLONE_NEW*` flag, `futex`
//!   (wait/wake/requeue/bitset operations, no priority-inheritance ones), `set_robust_list`,
//!   `rseq`, `sched_yield`, `sched_getaffinity`, `exit`, `prctl(PR_SET_NAME | PR_GET_NAME)`
//!   (and `prctl(PR_SET_VMA)`, answered with ENOSYS),
//!   `getpid`, `gettid`;
//! - signals: `rt_sigaction`, `rt_sigprocmask`, `rt_sigreturn`, `sigaltstack`,
//!   `restart_syscall`, and `tgkill` to the process's own thread group only (the in-process
//!   timeout signal);
//! - `getrandom`, `exit_group`.
//!
//! Everything else, notably `execve`, `execveat`, `fork`, `vfork`, a process-creating
//! `clone`, `socket`, `connect`, `bind`, `listen`, `accept`, `accept4`, `ptrace`, `open`,
//! `openat`, `openat2`, `kill`, `mount`, `unshare`, `setns`, `pkey_mprotect`, kills the
//! process. So does any call through another ABI: the compiled program first checks the
//! architecture (a 32-bit `int 0x80` call on x86_64 carries `AUDIT_ARCH_I386` and is killed),
//! and x32 calls (number with `__X32_SYSCALL_BIT`) match no allowed number.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Why the seccomp filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// seccompiler refused a rule or the program.
    #[error("building the seccomp filter failed")]
    Build(#[source] BackendError),
    /// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC)` (or the `prctl`
    /// before it) failed.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC) failed")]
    Install(#[source] seccompiler::Error),
    /// No allowlist exists for this architecture.
    #[error("no seccomp allowlist for the {0} architecture")]
    UnsupportedArch(&'static str),
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        Error::Build(error)
    }
}

/// Compiled seccomp programs, installed in order by [`apply`](Self::apply).
#[derive(Clone, Debug)]
pub struct Filter {
    programs: Vec<BpfProgram>,
}

#[cfg(target_arch = "x86_64")]
const ARCH: Option<TargetArch> = Some(TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<TargetArch> = Some(TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<TargetArch> = None;

fn arch() -> Result<TargetArch, Error> {
    ARCH.ok_or(Error::UnsupportedArch(std::env::consts::ARCH))
}

impl Filter {
    /// Compiles the worker filter. `own_pid` is the process's PID as it will see it once
    /// confined (1 inside a new PID namespace): `tgkill` is allowed only towards it.
    ///
    /// # Errors
    ///
    /// [`Error::Build`] if seccompiler refuses the filter, [`Error::UnsupportedArch`] on an
    /// architecture other than x86_64 and aarch64.
    pub fn worker(own_pid: i32) -> Result<Filter, Error> {
        let arch = arch()?;
        let mut errno_rules: BTreeMap<i64, Vec<SeccompRule>> =
            ENOSYS_SYSCALLS.iter().map(|&nr| (nr, Vec::new())).collect();
        errno_rules.insert(libc::SYS_prctl, vec![arg_eq(0, PR_SET_VMA)?]);
        let errno = SeccompFilter::new(
            errno_rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?;
        let allow = SeccompFilter::new(
            worker_allowlist(own_pid)?,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )?;
        Ok(Filter {
            programs: vec![errno.try_into()?, allow.try_into()?],
        })
    }

    /// Compiles the filter of the PID-namespace relay: write its handshake byte, wait for
    /// the child, exit or re-raise its signal on itself (`own_pid`), nothing else.
    pub(crate) fn relay(own_pid: i32) -> Result<Filter, Error> {
        let arch = arch()?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = [
            libc::SYS_wait4,
            // One byte to the worker (the relay has no other descriptor).
            libc::SYS_write,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_restart_syscall,
        ]
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
        rules.insert(libc::SYS_tgkill, vec![arg_eq(0, own_pid as u64)?]);
        rules.insert(libc::SYS_kill, vec![arg_eq(0, own_pid as u64)?]);
        let allow = SeccompFilter::new(
            rules,
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )?;
        Ok(Filter {
            programs: vec![allow.try_into()?],
        })
    }

    /// Installs the programs on every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`),
    /// setting `no_new_privs` first as the kernel requires. Irreversible. Allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Install`] with the OS error (or the id of a thread that could not be
    /// synchronized).
    pub fn apply(&self) -> Result<(), Error> {
        for program in &self.programs {
            seccompiler::apply_filter_all_threads(program).map_err(Error::Install)?;
        }
        Ok(())
    }

    /// Total number of BPF instructions (the kernel accepts at most 4096 per program).
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }
}

/// `prctl(PR_SET_VMA, ...)` (linux/prctl.h; the libc crate defines it for Android only).
const PR_SET_VMA: u64 = 0x53564d41;

/// System calls answered with `ENOSYS` instead of being run. `getcpu`: mimalloc asks it
/// for the NUMA node when a thread first allocates on a machine with several nodes, and
/// falls back to node 0 when it fails (no worker thread starts after lockdown today; one
/// that did would otherwise die on multi-socket hosts only).
const ENOSYS_SYSCALLS: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_getcpu,
];

/// System calls allowed whatever their arguments.
const ALWAYS_ALLOWED: &[i64] = &[
    // I/O on descriptors that are already open.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_ppoll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    // Memory.
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    // Threads.
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_exit,
    libc::SYS_getpid,
    libc::SYS_gettid,
    // Signals.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Misc.
    libc::SYS_getrandom,
    libc::SYS_exit_group,
];

/// `CLONE_NEW*` flags `clone` can take (`CLONE_NEWTIME` only exists for `clone3`).
const CLONE_NEW_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `futex` operations allowed (after masking `FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME`).
const FUTEX_OPS: &[i32] = &[
    libc::FUTEX_WAIT,
    libc::FUTEX_WAKE,
    libc::FUTEX_REQUEUE,
    libc::FUTEX_CMP_REQUEUE,
    libc::FUTEX_WAKE_OP,
    libc::FUTEX_WAIT_BITSET,
    libc::FUTEX_WAKE_BITSET,
];

fn worker_allowlist(own_pid: i32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALWAYS_ALLOWED
        .iter()
        .chain(ENOSYS_SYSCALLS)
        .map(|&nr| (nr, Vec::new()))
        .collect();

    let no_exec = || arg_masked_eq(2, libc::PROT_EXEC as u64, 0);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);

    // A thread, never a process: CLONE_THREAD and CLONE_VM set, no CLONE_NEW* flag.
    let thread = (libc::CLONE_THREAD | libc::CLONE_VM) as u64;
    rules.insert(
        libc::SYS_clone,
        vec![arg_masked_eq(0, thread | CLONE_NEW_FLAGS, thread)?],
    );

    let futex_cmd_mask = !((libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u32);
    rules.insert(
        libc::SYS_futex,
        FUTEX_OPS
            .iter()
            .map(|&op| arg_masked_eq(1, u64::from(futex_cmd_mask), op as u64))
            .collect::<Result<_, _>>()?,
    );

    rules.insert(libc::SYS_tgkill, vec![arg_eq(0, own_pid as u64)?]);
    rules.insert(
        libc::SYS_prctl,
        vec![
            arg_eq(0, libc::PR_SET_NAME as u64)?,
            arg_eq(0, libc::PR_GET_NAME as u64)?,
            // Answered with ENOSYS by the errno program (see the module's comment).
            arg_eq(0, PR_SET_VMA)?,
        ],
    );
    // Reading descriptor flags only (Rust's std checks an fd is open before closing it in
    // debug builds).
    rules.insert(
        libc::SYS_fcntl,
        vec![
            arg_eq(1, libc::F_GETFD as u64)?,
            arg_eq(1, libc::F_GETFL as u64)?,
        ],
    );
    // `send` on a connected socket, never `sendto` an address.
    rules.insert(libc::SYS_sendto, vec![arg_eq_qword(4, 0)?]);
    Ok(rules)
}

fn arg_eq(index: u8, value: u64) -> Result<SeccompRule, Error> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        value,
    )?])?)
}

fn arg_eq_qword(index: u8, value: u64) -> Result<SeccompRule, Error> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Eq,
        value,
    )?])?)
}

fn arg_masked_eq(index: u8, mask: u64, value: u64) -> Result<SeccompRule, Error> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )?])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_filter_compiles_within_kernel_limits() {
        let filter = Filter::worker(1).unwrap();
        assert_eq!(filter.programs.len(), 2);
        assert!(filter.programs.iter().all(|p| p.len() < 4096));
    }

    #[test]
    fn relay_filter_compiles() {
        assert!(Filter::relay(42).unwrap().instructions() > 0);
    }

    #[test]
    fn forbidden_calls_are_not_in_the_allowlist() {
        let rules = worker_allowlist(1).unwrap();
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_ptrace,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_kill,
            libc::SYS_pkey_mprotect,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
        ] {
            assert!(!rules.contains_key(&nr), "syscall {nr} must not be allowed");
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_open,
            libc::SYS_creat,
        ] {
            assert!(!rules.contains_key(&nr), "syscall {nr} must not be allowed");
        }
    }
}
