//! The order in which the layers are applied, and what is reported.

use std::io;

use crate::config::{Layer, LockdownConfig, PidNamespace};
use crate::error::{chain, Error, LayerError};
use crate::namespaces::{self, Namespace};
use crate::report::{LayerStatus, LockdownReport};
use crate::rlimits::Limits;
use crate::{credentials, fds, landlock, pidns, seccomp};

/// Applies every layer of `config` to the calling process, in this order:
///
/// 1. close every file descriptor except [`keep_fds`](crate::LockdownConfigBuilder::keep_fds);
/// 2. unshare the user namespace (only when not root), then the network, mount, IPC and UTS
///    namespaces, then the PID namespace (see [`PidNamespace`]: by default the process
///    forks once here and `lockdown` returns in the child, PID 1 of the new namespace; the
///    parent stays behind as a relay that drops the credentials of step 4 and sets
///    `no_new_privs` and a seccomp filter of its own before the child goes on);
/// 3. set `RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_NOFILE`, `RLIMIT_NPROC`, and `RLIMIT_FSIZE` and
///    `RLIMIT_CORE` to 0;
/// 4. when root, drop supplementary groups, gid and uid; in all cases drop every
///    capability and become non-dumpable;
/// 5. `PR_SET_NO_NEW_PRIVS`;
/// 6. a Landlock ruleset that handles every access right and grants none;
/// 7. the seccomp allowlist ([`crate::seccomp`]), on every thread, last.
///
/// Call it at the very start of the worker's `main`, while the process has a single thread
/// and before any untrusted byte is read. Afterwards the process can still compute, allocate,
/// start and join threads, read the clock and use the descriptors it kept; anything that
/// needs a path, a new descriptor, a process or the network kills it. Warm up anything that
/// opens files lazily (for example glibc's `tzset`) before calling it.
///
/// Things that stop working afterwards, by design:
/// - opening any path (`File::open`, `std::thread::available_parallelism`, symbolised
///   backtraces with `RUST_BACKTRACE` set, `tzset` reading `/etc/localtime`): killed;
/// - writing to a kept descriptor that is a *regular file*: `RLIMIT_FSIZE` is 0, so it fails
///   with `EFBIG` (pipes and sockets are not affected);
/// - `Command::pre_exec` is not a place to call this: it allocates, and the `execve` that
///   follows would be killed.
///
/// With the default [`PidNamespace::Fork`] the function returns in a new child process (see
/// there); the caller's original process never returns from it.
///
/// # Errors
///
/// [`Error::NotSingleThreaded`] before anything is changed; [`Error::Layer`] when a layer
/// that is not in [`allow_missing`](crate::LockdownConfigBuilder::allow_missing) cannot be
/// applied. After an `Error::Layer` the process is partly confined: exit.
pub fn lockdown(config: &LockdownConfig) -> Result<LockdownReport, Error> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Error::NotSingleThreaded(threads));
    }
    let layers = config.layers();
    let root = credentials::running_as_root();
    let pid_mode = config.pid_namespace();
    let own_pid = rustix::process::getpid().as_raw_nonzero().get();

    // Prepare: build everything that can fail without changing the process.
    let pid_after = if layers.contains(Layer::PidNamespace) {
        1
    } else {
        own_pid
    };
    let mut filter = layers
        .contains(Layer::Seccomp)
        .then(|| seccomp::Filter::worker(pid_after));
    let relay_filter = (layers.contains(Layer::PidNamespace) && pid_mode == PidNamespace::Fork)
        .then(|| seccomp::Filter::relay(own_pid));
    let ruleset = layers
        .contains(Layer::Landlock)
        .then(landlock::Prepared::new);
    let limits = Limits::from_config(config);

    let mut run = Run {
        config,
        report: LockdownReport::default(),
    };

    // 1. File descriptors.
    run.layer(Layer::Fds, || {
        fds::close_all_except(config.keep_fds())?;
        Ok(format!("kept {:?}", config.keep_fds()))
    })?;

    // 2. Namespaces.
    if root {
        run.not_applicable(
            Layer::UserNamespace,
            "running as root: ids are switched instead",
        );
    } else {
        run.layer(Layer::UserNamespace, || {
            namespaces::unshare(Namespace::User)?;
            Ok("new user namespace (no id mapping)".into())
        })?;
    }
    for (layer, detail) in [
        (
            Layer::NetworkNamespace,
            "new network namespace, no interface up",
        ),
        (
            Layer::MountNamespace,
            "new mount namespace, every mount private",
        ),
        (Layer::IpcNamespace, "new IPC namespace"),
        (Layer::UtsNamespace, "new UTS namespace"),
    ] {
        if let Some(ns) = Namespace::of(layer) {
            run.layer(layer, || {
                namespaces::unshare(ns)?;
                Ok(detail.into())
            })?;
        }
    }
    let mut link = None;
    let pid_applied = run.layer(Layer::PidNamespace, || match pid_mode {
        PidNamespace::Existing => {
            pidns::check_pid_one()?;
            Ok("already PID 1 of a PID namespace".into())
        }
        _ => {
            let Some(relay_filter) = relay_filter else {
                return Ok("not entered".into());
            };
            // The relay drops its privileges as the worker's credentials layer will.
            let credentials =
                layers
                    .contains(Layer::Credentials)
                    .then(|| pidns::RelayCredentials {
                        switch_ids: root,
                        uid: config.uid(),
                        gid: config.gid(),
                        required: !config.allow_missing().contains(Layer::Credentials),
                    });
            let entered = pidns::enter(&relay_filter?, credentials)?;
            link = Some(entered.link);
            let relay = if entered.relay_unprivileged {
                "with the worker's credentials and a seccomp filter of its own"
            } else {
                "keeping its credentials, with a seccomp filter of its own"
            };
            Ok(format!(
                "unshared and forked: this process is PID 1 of a new PID namespace; \
                 the parent (pid {own_pid}) relays its exit status, {relay}"
            ))
        }
    })?;
    if layers.contains(Layer::PidNamespace) && !pid_applied {
        // The PID the filter allows `tgkill` towards is not 1 after all.
        filter = layers
            .contains(Layer::Seccomp)
            .then(|| seccomp::Filter::worker(own_pid));
    }

    // 3. Resource limits.
    run.layer(Layer::Rlimits, || Ok(limits.apply()?))?;

    // 4. Credentials. Then tie the worker to the relay: a credential change clears
    //    PR_SET_PDEATHSIG, so this is the first moment it sticks.
    run.layer(Layer::Credentials, || {
        Ok(credentials::drop_privileges(
            root,
            config.uid(),
            config.gid(),
        )?)
    })?;
    if let Some(link) = link {
        link.arm()
            .map_err(|e| layer_error(Layer::PidNamespace, e))?;
    }

    // 5. no_new_privs.
    run.layer(Layer::NoNewPrivs, || {
        credentials::set_no_new_privs()?;
        Ok("PR_SET_NO_NEW_PRIVS set".into())
    })?;

    // 6. Landlock.
    run.layer(Layer::Landlock, || match ruleset {
        Some(prepared) => Ok(prepared?.enforce()?),
        None => Ok(String::new()),
    })?;

    // 7. Seccomp, last.
    run.layer(Layer::Seccomp, || match filter {
        Some(filter) => {
            let filter = filter?;
            filter.apply()?;
            Ok(format!(
                "allowlist installed on every thread (TSYNC), {} BPF instructions, \
                 default action: kill the process",
                filter.instructions()
            ))
        }
        None => Ok(String::new()),
    })?;

    Ok(run.report)
}

struct Run<'a> {
    config: &'a LockdownConfig,
    report: LockdownReport,
}

impl Run<'_> {
    /// Applies one layer if enabled; records the outcome. Returns whether it was applied.
    fn layer(
        &mut self,
        layer: Layer,
        apply: impl FnOnce() -> Result<String, LayerError>,
    ) -> Result<bool, Error> {
        if !self.config.layers().contains(layer) {
            self.report.record(layer, LayerStatus::Disabled);
            return Ok(false);
        }
        match apply() {
            Ok(detail) => {
                self.report.record(layer, LayerStatus::Applied { detail });
                Ok(true)
            }
            Err(source) if self.config.allow_missing().contains(layer) => {
                let reason = chain(&source);
                self.report.record(layer, LayerStatus::Skipped { reason });
                Ok(false)
            }
            Err(source) => Err(Error::Layer { layer, source }),
        }
    }

    fn not_applicable(&mut self, layer: Layer, reason: &str) {
        let status = if self.config.layers().contains(layer) {
            LayerStatus::NotApplicable {
                reason: reason.into(),
            }
        } else {
            LayerStatus::Disabled
        };
        self.report.record(layer, status);
    }
}

fn layer_error(layer: Layer, error: impl Into<LayerError>) -> Error {
    Error::Layer {
        layer,
        source: error.into(),
    }
}

/// The number of threads of the calling process, from `/proc/self/status`.
fn thread_count() -> Result<usize, Error> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(Error::CountThreads)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| {
            Error::CountThreads(io::Error::new(
                io::ErrorKind::InvalidData,
                "no Threads: line",
            ))
        })
}
