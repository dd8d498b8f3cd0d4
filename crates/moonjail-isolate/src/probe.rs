//! Which layers this machine can apply, found by applying them in a throw-away child.
//!
//! The caller is never confined: [`probe`] forks, the child applies every layer in
//! [`lockdown`](crate::lockdown)'s order using raw system calls only (it allocates nothing,
//! so forking from a multi-threaded caller is safe), reports each result through a pipe as
//! it goes, and exits. The parent turns the results into reasons a person can act on.

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{Pid, WaitOptions};

use crate::config::Layer;
use crate::credentials;
use crate::landlock::{self, RawOutcome};
use crate::namespaces::{self, Namespace};
use crate::rlimits;
use crate::seccomp;

/// Whether one layer can be applied here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Availability {
    /// The probe applied it.
    Available {
        /// What was applied.
        detail: String,
    },
    /// The probe could not apply it.
    Unavailable {
        /// Why, as precisely as the machine lets us say.
        reason: String,
    },
    /// The layer is not used in this situation (a user namespace when running as root).
    NotApplicable {
        /// Why.
        reason: String,
    },
}

impl Availability {
    /// Whether the layer can be applied (or is not needed).
    pub fn is_usable(&self) -> bool {
        !matches!(self, Availability::Unavailable { .. })
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Available { detail } => write!(f, "available: {detail}"),
            Availability::Unavailable { reason } => write!(f, "UNAVAILABLE: {reason}"),
            Availability::NotApplicable { reason } => write!(f, "not applicable: {reason}"),
        }
    }
}

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether the probing process runs as root (then ids are switched and no user
    /// namespace is used).
    pub running_as_root: bool,
    /// `uname -r`.
    pub kernel_release: String,
    /// The kernel's Landlock ABI version, if it has Landlock.
    pub landlock_abi: Option<i32>,
    /// Every layer, in application order.
    pub layers: Vec<(Layer, Availability)>,
}

impl Capabilities {
    /// The availability of `layer`.
    pub fn availability(&self, layer: Layer) -> Option<&Availability> {
        self.layers
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, availability)| availability)
    }

    /// Whether every layer can be applied.
    pub fn all_usable(&self) -> bool {
        self.layers.iter().all(|(_, a)| a.is_usable())
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kernel {}, running as {}",
            self.kernel_release,
            if self.running_as_root {
                "root"
            } else {
                "an unprivileged user"
            }
        )?;
        for (layer, availability) in &self.layers {
            writeln!(f, "{layer}: {availability}")?;
        }
        Ok(())
    }
}

/// Result codes the probe child sends, besides a positive errno.
const OK: i32 = 0;
const NOT_APPLICABLE: i32 = -1;
const LANDLOCK_PARTIAL: i32 = -2;
const LANDLOCK_NOT_ENFORCED: i32 = -3;
const SETUP_FAILED: i32 = -4;

/// Finds which layers this machine can apply, by applying them in a forked child. The
/// calling process is not confined.
pub fn probe() -> Capabilities {
    let running_as_root = credentials::running_as_root();
    let kernel_release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let abi = landlock::kernel_abi();
    let mut capabilities = Capabilities {
        running_as_root,
        kernel_release,
        landlock_abi: abi.ok(),
        layers: Vec::new(),
    };
    let results = match run_child(running_as_root) {
        Ok(results) => results,
        Err(error) => {
            let reason = format!("the probe itself failed: {error}");
            capabilities.layers = Layer::ALL
                .into_iter()
                .map(|layer| {
                    let reason = reason.clone();
                    (layer, Availability::Unavailable { reason })
                })
                .collect();
            return capabilities;
        }
    };
    capabilities.layers = Layer::ALL
        .into_iter()
        .map(|layer| {
            let availability = match results.codes[layer as usize] {
                None => Availability::Unavailable {
                    reason: format!("the probe child did not get this far ({})", results.end),
                },
                Some(code) => explain(layer, code, running_as_root, abi),
            };
            (layer, availability)
        })
        .collect();
    capabilities
}

struct ChildResults {
    codes: [Option<i32>; Layer::ALL.len()],
    end: String,
}

fn run_child(running_as_root: bool) -> io::Result<ChildResults> {
    // Everything that allocates happens here, before the fork.
    let filter = seccomp::Filter::worker(1).map_err(io::Error::other);
    let ruleset = landlock::Prepared::new().and_then(landlock::Prepared::create);
    let (mut from_child, to_parent) =
        pipe_with(PipeFlags::CLOEXEC).map(|(r, w)| (std::fs::File::from(r), w))?;
    let defaults = crate::LockdownConfig::default();
    let (uid, gid) = (defaults.uid(), defaults.gid());

    // SAFETY: the child runs `probe_child`, which only makes system calls and writes to a
    // pipe: nothing that needs a lock another thread of the parent may hold.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(from_child);
        probe_child(
            &to_parent,
            running_as_root,
            uid,
            gid,
            ruleset.ok(),
            filter.ok(),
        );
    }
    drop(to_parent);

    let mut bytes = Vec::new();
    let read = from_child.read_to_end(&mut bytes);
    let status = loop {
        match rustix::process::waitpid(Pid::from_raw(pid), WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other,
        }
    };
    read?;
    let mut codes = [None; Layer::ALL.len()];
    for record in bytes.chunks_exact(8) {
        let index = u32::from_ne_bytes([record[0], record[1], record[2], record[3]]) as usize;
        let code = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
        if let Some(slot) = codes.get_mut(index) {
            *slot = Some(code);
        }
    }
    let end = match status {
        Ok(Some((_, status))) => match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => format!("it exited with status {code}"),
            (_, Some(signal)) => format!("it was killed by signal {signal}"),
            _ => "it stopped".to_owned(),
        },
        Ok(None) => "it vanished".to_owned(),
        Err(errno) => format!("waitpid failed: {}", io::Error::from(errno)),
    };
    Ok(ChildResults { codes, end })
}

/// The probe child: applies each layer, sends `(layer, code)` after each, exits.
fn probe_child(
    out: &OwnedFd,
    running_as_root: bool,
    uid: u32,
    gid: u32,
    ruleset: Option<::landlock::RulesetCreated>,
    filter: Option<seccomp::Filter>,
) -> ! {
    let send = |layer: Layer, result: Result<i32, i32>| {
        let code = match result {
            Ok(code) => code,
            Err(errno) => errno.max(1),
        };
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&(layer as u32).to_ne_bytes());
        record[4..].copy_from_slice(&code.to_ne_bytes());
        let _ = rustix::io::write(out.as_fd(), &record);
    };
    let ok = |r: Result<(), i32>| r.map(|()| OK);

    // Fds: an empty range far above any open descriptor; ENOSYS on kernels before 5.9.
    // SAFETY: closes nothing (no descriptor that high is open in the child).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, u32::MAX - 1, u32::MAX, 0u32) };
    send(Layer::Fds, if rc == 0 { Ok(OK) } else { Err(libc::ENOSYS) });

    if running_as_root {
        send(Layer::UserNamespace, Ok(NOT_APPLICABLE));
    } else {
        send(
            Layer::UserNamespace,
            ok(namespaces::unshare_raw(Namespace::User)),
        );
    }
    for layer in [
        Layer::NetworkNamespace,
        Layer::MountNamespace,
        Layer::IpcNamespace,
        Layer::UtsNamespace,
        Layer::PidNamespace,
    ] {
        if let Some(ns) = Namespace::of(layer) {
            send(layer, ok(namespaces::unshare_raw(ns)));
        }
    }
    send(Layer::Rlimits, ok(rlimits::probe_raw()));
    send(
        Layer::Credentials,
        ok(credentials::probe_raw(running_as_root, uid, gid)),
    );
    send(
        Layer::NoNewPrivs,
        rustix::thread::set_no_new_privs(true)
            .map(|()| OK)
            .map_err(|e| e.raw_os_error()),
    );
    send(
        Layer::Landlock,
        match ruleset {
            Some(created) => match landlock::restrict_raw(created) {
                Ok(RawOutcome::Full) => Ok(OK),
                Ok(RawOutcome::Partial) => Ok(LANDLOCK_PARTIAL),
                Ok(RawOutcome::NotEnforced) => Ok(LANDLOCK_NOT_ENFORCED),
                Err(errno) => Err(errno),
            },
            None => Ok(SETUP_FAILED),
        },
    );
    send(
        Layer::Seccomp,
        match &filter {
            Some(filter) => match filter.apply() {
                Ok(()) => Ok(OK),
                Err(seccomp::Error::Install(seccompiler::Error::Seccomp(e)))
                | Err(seccomp::Error::Install(seccompiler::Error::Prctl(e))) => {
                    Err(e.raw_os_error().unwrap_or(libc::EIO))
                }
                Err(_) => Err(libc::EIO),
            },
            None => Ok(SETUP_FAILED),
        },
    );
    // SAFETY: ends the child at once, without running the parent's atexit handlers or
    // flushing its buffers a second time.
    unsafe { libc::_exit(0) }
}

fn explain(layer: Layer, code: i32, running_as_root: bool, abi: Result<i32, i32>) -> Availability {
    let available = |detail: &str| Availability::Available {
        detail: detail.to_owned(),
    };
    let unavailable = |reason: String| Availability::Unavailable { reason };
    let errno = |code: i32| io::Error::from_raw_os_error(code);
    match (layer, code) {
        (Layer::Fds, OK) => available("close_range(2)"),
        (Layer::Fds, _) => available("no close_range(2) (kernel before 5.9): /proc/self/fd is listed instead"),
        (Layer::UserNamespace, NOT_APPLICABLE) => Availability::NotApplicable {
            reason: "running as root: ids are switched instead".into(),
        },
        (Layer::UserNamespace, OK) => available("unprivileged user namespaces"),
        (Layer::UserNamespace, code) => unavailable(user_namespace_reason(code)),
        (Layer::PidNamespace, OK) => available("unshare(CLONE_NEWPID), then one fork"),
        (
            Layer::NetworkNamespace
            | Layer::MountNamespace
            | Layer::IpcNamespace
            | Layer::UtsNamespace,
            OK,
        ) => available("unshare(2)"),
        (
            Layer::NetworkNamespace
            | Layer::MountNamespace
            | Layer::IpcNamespace
            | Layer::UtsNamespace
            | Layer::PidNamespace,
            code,
        ) => {
            let flag = Namespace::of(layer).map_or("?", Namespace::flag_name);
            let hint = if running_as_root {
                ""
            } else {
                " (without a user namespace an unprivileged process cannot create namespaces)"
            };
            unavailable(format!("unshare({flag}) failed: {}{hint}", errno(code)))
        }
        (Layer::Rlimits, OK) => available("setrlimit(2)"),
        (Layer::Rlimits, code) => unavailable(format!("setrlimit failed: {}", errno(code))),
        (Layer::Credentials, OK) if running_as_root => {
            available("setgroups/setresgid/setresuid to 65534, capabilities dropped")
        }
        (Layer::Credentials, OK) => available("capabilities dropped"),
        (Layer::Credentials, code) => unavailable(format!(
            "dropping ids/capabilities failed: {}",
            errno(code)
        )),
        (Layer::NoNewPrivs, OK) => available("prctl(PR_SET_NO_NEW_PRIVS)"),
        (Layer::NoNewPrivs, code) => unavailable(format!(
            "prctl(PR_SET_NO_NEW_PRIVS) failed: {}",
            errno(code)
        )),
        (Layer::Landlock, OK) => Availability::Available {
            detail: format!("fully enforced, kernel ABI {}", abi.unwrap_or(0)),
        },
        (Layer::Landlock, LANDLOCK_PARTIAL) => Availability::Available {
            detail: format!(
                "partially enforced: kernel ABI {} handles fewer rights than this crate knows; \
                 every right the kernel knows is denied",
                abi.unwrap_or(0)
            ),
        },
        (Layer::Landlock, LANDLOCK_NOT_ENFORCED | SETUP_FAILED) => unavailable(match abi {
            Err(errno) => landlock::describe_abi_error(errno),
            Ok(version) => format!("Landlock ABI {version} present but the ruleset was not enforced"),
        }),
        (Layer::Landlock, code) => unavailable(format!(
            "landlock_restrict_self failed: {}",
            errno(code)
        )),
        (Layer::Seccomp, OK) => available("allowlist installed with SECCOMP_FILTER_FLAG_TSYNC"),
        (Layer::Seccomp, SETUP_FAILED) => {
            unavailable("the seccomp filter could not be built for this architecture".into())
        }
        (Layer::Seccomp, libc::EINVAL) => unavailable(
            "seccomp filters not supported by this kernel (CONFIG_SECCOMP_FILTER) or flag TSYNC refused (EINVAL)".into(),
        ),
        (Layer::Seccomp, code) => unavailable(format!("seccomp failed: {}", errno(code))),
    }
}

/// Why an unprivileged `unshare(CLONE_NEWUSER)` failed, from the sysctls that govern it.
fn user_namespace_reason(code: i32) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let error = io::Error::from_raw_os_error(code);
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return format!(
            "unprivileged user namespaces disabled (kernel.unprivileged_userns_clone = 0): {error}"
        );
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return format!("user namespaces disabled (user.max_user_namespaces = 0): {error}");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return format!(
            "unprivileged user namespaces restricted by AppArmor \
             (kernel.apparmor_restrict_unprivileged_userns = 1): {error}"
        );
    }
    format!("unshare(CLONE_NEWUSER) failed: {error}")
}
