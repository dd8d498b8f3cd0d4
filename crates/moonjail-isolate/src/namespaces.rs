//! Leaving the host's user, network, mount, IPC and UTS namespaces.
//!
//! Namespaces belong to a thread, not to a process: `unshare` moves only the calling thread.
//! [`lockdown`](crate::lockdown) therefore refuses to run in a process that has more than
//! one thread. The PID namespace needs a fork and lives in [`crate::pidns`].

use std::io;

use rustix::mount::{mount_change, MountPropagationFlags};
use rustix::thread::{unshare_unsafe, UnshareFlags};

use crate::config::Layer;

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `unshare(2)` failed.
    #[error("unshare({flag}) failed")]
    Unshare {
        /// The `CLONE_NEW*` flag.
        flag: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Making every mount of the new mount namespace private failed.
    #[error("mount(\"/\", MS_REC | MS_PRIVATE) failed")]
    MakePrivate(#[source] io::Error),
}

/// One namespace that [`unshare`] can enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Namespace {
    User,
    Network,
    Mount,
    Ipc,
    Uts,
    Pid,
}

impl Namespace {
    pub(crate) fn of(layer: Layer) -> Option<Namespace> {
        Some(match layer {
            Layer::UserNamespace => Namespace::User,
            Layer::NetworkNamespace => Namespace::Network,
            Layer::MountNamespace => Namespace::Mount,
            Layer::IpcNamespace => Namespace::Ipc,
            Layer::UtsNamespace => Namespace::Uts,
            Layer::PidNamespace => Namespace::Pid,
            _ => return None,
        })
    }

    pub(crate) fn flag_name(self) -> &'static str {
        match self {
            Namespace::User => "CLONE_NEWUSER",
            Namespace::Network => "CLONE_NEWNET",
            Namespace::Mount => "CLONE_NEWNS",
            Namespace::Ipc => "CLONE_NEWIPC",
            Namespace::Uts => "CLONE_NEWUTS",
            Namespace::Pid => "CLONE_NEWPID",
        }
    }

    fn flags(self) -> UnshareFlags {
        match self {
            Namespace::User => UnshareFlags::NEWUSER,
            Namespace::Network => UnshareFlags::NEWNET,
            Namespace::Mount => UnshareFlags::NEWNS,
            Namespace::Ipc => UnshareFlags::NEWIPC,
            Namespace::Uts => UnshareFlags::NEWUTS,
            Namespace::Pid => UnshareFlags::NEWPID,
        }
    }
}

/// Moves the calling thread into a new namespace of kind `ns`.
///
/// A new network namespace holds only a loopback interface, and it is down: nothing can
/// be reached, not even 127.0.0.1. A new mount namespace is a copy of the current one; its
/// mounts are made private so no mount event propagates in either direction.
pub(crate) fn unshare(ns: Namespace) -> Result<(), Error> {
    // SAFETY: none of the flags used here is CLONE_FILES (the flag that makes unshare unsafe
    // by splitting the descriptor table under other threads), and lockdown runs single-threaded.
    unsafe { unshare_unsafe(ns.flags()) }.map_err(|errno| Error::Unshare {
        flag: ns.flag_name(),
        source: errno.into(),
    })?;
    if ns == Namespace::Mount {
        mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        )
        .map_err(|errno| Error::MakePrivate(errno.into()))?;
    }
    Ok(())
}

/// Like [`unshare`] but touching nothing but the kernel: for the probe child, which must not
/// allocate. Returns the errno on failure.
pub(crate) fn unshare_raw(ns: Namespace) -> Result<(), i32> {
    // SAFETY: as in `unshare`; the probe child is single-threaded (it was just forked).
    unsafe { unshare_unsafe(ns.flags()) }.map_err(|errno| errno.raw_os_error())
}
