//! Dropping privileges: supplementary groups, gid, uid, capabilities, `no_new_privs`.
//!
//! The calls here change the calling thread only (raw syscalls, not glibc's
//! all-threads `setuid`), which is right because [`lockdown`](crate::lockdown) runs
//! single-threaded. The PID-namespace relay drops the same privileges with an
//! allocation-free variant, so that it holds no more than the worker it waits for.

use std::io;

use rustix::process::{Gid, Uid};
use rustix::thread::{
    capabilities, set_capabilities, set_thread_groups, set_thread_res_gid, set_thread_res_uid,
    CapabilitySet, CapabilitySets,
};

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)` failed.
    #[error("prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")]
    ClearAmbient(#[source] io::Error),
    /// `prctl(PR_CAPBSET_DROP)` failed.
    #[error("prctl(PR_CAPBSET_DROP, {capability}) failed")]
    DropBounding {
        /// The capability number.
        capability: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `setgroups(0, NULL)` failed.
    #[error("setgroups([]) failed")]
    Setgroups(#[source] io::Error),
    /// `setresgid(2)` failed.
    #[error("setresgid({0}, {0}, {0}) failed")]
    Setresgid(u32, #[source] io::Error),
    /// `setresuid(2)` failed.
    #[error("setresuid({0}, {0}, {0}) failed")]
    Setresuid(u32, #[source] io::Error),
    /// `prctl(PR_SET_DUMPABLE, 0)` failed.
    #[error("prctl(PR_SET_DUMPABLE, 0) failed")]
    SetDumpable(#[source] io::Error),
    /// `capset(2)` failed.
    #[error("capset(all empty) failed")]
    Capset(#[source] io::Error),
    /// `capget(2)` failed.
    #[error("capget failed")]
    Capget(#[source] io::Error),
    /// A capability or id survived the drop.
    #[error("privileges still held after dropping them: {0}")]
    StillPrivileged(String),
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS, 1) failed")]
    NoNewPrivs(#[source] io::Error),
}

/// Whether the process holds root ids (real or effective uid 0).
pub(crate) fn running_as_root() -> bool {
    rustix::process::getuid().is_root() || rustix::process::geteuid().is_root()
}

/// Drops every privilege. When `switch_ids` (the process started as root), switches to
/// `uid`/`gid` with no supplementary group; otherwise (unprivileged, possibly in a new user
/// namespace where it holds a full capability set) keeps its ids and drops the capabilities.
/// In both cases the ambient and bounding capability sets are emptied, the process is made
/// non-dumpable, and the result is verified.
pub(crate) fn drop_privileges(switch_ids: bool, uid: u32, gid: u32) -> Result<String, Error> {
    clear_ambient()?;
    let bounding = drop_bounding_set()?;
    if switch_ids {
        set_thread_groups(&[]).map_err(|e| Error::Setgroups(e.into()))?;
        let g = Gid::from_raw(gid);
        set_thread_res_gid(g, g, g).map_err(|e| Error::Setresgid(gid, e.into()))?;
        let u = Uid::from_raw(uid);
        set_thread_res_uid(u, u, u).map_err(|e| Error::Setresuid(uid, e.into()))?;
    }
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| Error::SetDumpable(e.into()))?;
    let empty = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, empty).map_err(|e| Error::Capset(e.into()))?;

    let held = capabilities(None).map_err(|e| Error::Capget(e.into()))?;
    if held != empty {
        return Err(Error::StillPrivileged(format!("{held:?}")));
    }
    let (now_uid, now_gid) = (rustix::process::getuid(), rustix::process::getgid());
    if switch_ids && (now_uid.as_raw() != uid || now_gid.as_raw() != gid) {
        return Err(Error::StillPrivileged(format!(
            "uid {} gid {}",
            now_uid.as_raw(),
            now_gid.as_raw()
        )));
    }
    let ids = if switch_ids {
        format!("switched to uid {uid}, gid {gid}, no supplementary groups")
    } else {
        format!(
            "kept unprivileged uid {}, gid {}",
            now_uid.as_raw(),
            now_gid.as_raw()
        )
    };
    Ok(format!(
        "{ids}; no effective, permitted, inheritable or ambient capability; {bounding}; not dumpable"
    ))
}

fn clear_ambient() -> Result<(), Error> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointer; the extra arguments must be 0.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == -1 {
        let error = io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set: nothing to clear.
        if error.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::ClearAmbient(error));
        }
    }
    Ok(())
}

/// What emptying the bounding set came to.
enum Bounding {
    /// Every capability up to this count was dropped.
    Emptied(u32),
    /// No `CAP_SETPCAP`: the set cannot shrink (see [`drop_bounding_set`]).
    Kept,
}

/// Drops every capability the kernel knows from the bounding set, allocating nothing (the
/// relay runs it in a forked process). `Err((capability, errno))` names the one that
/// could not be dropped.
fn empty_bounding_set() -> Result<Bounding, (u32, i32)> {
    for capability in 0u32.. {
        // SAFETY: PR_CAPBSET_READ takes the capability number and no pointer.
        let present = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_READ,
                libc::c_ulong::from(capability),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if present == -1 {
            // EINVAL: past the last capability this kernel knows.
            return Ok(Bounding::Emptied(capability));
        }
        if present == 1 {
            // SAFETY: PR_CAPBSET_DROP takes the capability number and no pointer.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    libc::c_ulong::from(capability),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc == -1 {
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let can_setpcap = capabilities(None)
                    .map(|sets| sets.effective.contains(CapabilitySet::SETPCAP))
                    .unwrap_or(false);
                if errno == libc::EPERM && !can_setpcap {
                    return Ok(Bounding::Kept);
                }
                return Err((capability, errno));
            }
        }
    }
    Ok(Bounding::Emptied(u32::MAX))
}

/// Drops every capability the kernel knows from the bounding set; says what was done.
///
/// Without `CAP_SETPCAP` (an unprivileged process outside a user namespace) the bounding
/// set cannot be changed; it only matters for `execve` of a file with capabilities, which
/// `no_new_privs` and seccomp both rule out, so that case is reported, not failed.
fn drop_bounding_set() -> Result<String, Error> {
    match empty_bounding_set() {
        Ok(Bounding::Emptied(n)) => Ok(format!("bounding set emptied ({n} capabilities)")),
        Ok(Bounding::Kept) => {
            Ok("bounding set kept (no CAP_SETPCAP; irrelevant without execve)".to_owned())
        }
        Err((capability, errno)) => Err(Error::DropBounding {
            capability,
            source: io::Error::from_raw_os_error(errno),
        }),
    }
}

/// Sets `no_new_privs`: no later `execve` can gain privileges, and Landlock and seccomp can
/// be applied without `CAP_SYS_ADMIN`.
pub(crate) fn set_no_new_privs() -> Result<(), Error> {
    rustix::thread::set_no_new_privs(true).map_err(|e| Error::NoNewPrivs(e.into()))
}

/// Drops every privilege like [`drop_privileges`], allocating nothing: for the
/// PID-namespace relay, a forked process that must not touch the allocator's state. Empties
/// the ambient and (where `CAP_SETPCAP` allows) bounding sets, switches ids when
/// `switch_ids`, becomes non-dumpable (so that no other process of the same uid can ptrace
/// it), empties the effective, permitted and inheritable sets, and checks that they are
/// empty. Returns the first errno (`EPERM` when a capability survived).
pub(crate) fn drop_raw(switch_ids: bool, uid: u32, gid: u32) -> Result<(), i32> {
    clear_ambient().map_err(|e| match e {
        Error::ClearAmbient(e) => e.raw_os_error().unwrap_or(libc::EPERM),
        _ => libc::EPERM,
    })?;
    empty_bounding_set().map_err(|(_, errno)| errno)?;
    probe_raw(switch_ids, uid, gid)?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| e.raw_os_error())?;
    let held = capabilities(None).map_err(|e| e.raw_os_error())?;
    let empty = held.effective.is_empty() && held.permitted.is_empty();
    if !empty || !held.inheritable.is_empty() {
        return Err(libc::EPERM);
    }
    Ok(())
}

/// Drops privileges like [`drop_privileges`] but allocating nothing and checking nothing
/// beyond the calls' results: for the probe child. Returns the first errno.
pub(crate) fn probe_raw(switch_ids: bool, uid: u32, gid: u32) -> Result<(), i32> {
    if switch_ids {
        set_thread_groups(&[]).map_err(|e| e.raw_os_error())?;
        let g = Gid::from_raw(gid);
        set_thread_res_gid(g, g, g).map_err(|e| e.raw_os_error())?;
        let u = Uid::from_raw(uid);
        set_thread_res_uid(u, u, u).map_err(|e| e.raw_os_error())?;
    }
    let empty = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    set_capabilities(None, empty).map_err(|e| e.raw_os_error())
}
