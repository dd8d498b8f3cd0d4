//! What [`lockdown`](crate::lockdown) applies: the layers, their order, and their settings.

use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

/// One isolation layer, in the order [`lockdown`](crate::lockdown) applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Layer {
    /// Close every inherited file descriptor except the ones asked to be kept.
    Fds,
    /// A new user namespace; only used when not running as root.
    UserNamespace,
    /// A new, empty network namespace: no interface is up, not even loopback.
    NetworkNamespace,
    /// A new mount namespace, with every mount made private.
    MountNamespace,
    /// A new System V IPC / POSIX message queue namespace.
    IpcNamespace,
    /// A new hostname namespace.
    UtsNamespace,
    /// A new PID namespace (see [`PidNamespace`] for how the caller ends up inside it).
    PidNamespace,
    /// `RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_NOFILE`, `RLIMIT_NPROC`, `RLIMIT_FSIZE=0`, `RLIMIT_CORE=0`.
    Rlimits,
    /// Drop supplementary groups, gid and uid (when root) and every capability.
    Credentials,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// A Landlock ruleset that handles every access right and grants none.
    Landlock,
    /// A seccomp allowlist whose default action kills the process.
    Seccomp,
}

impl Layer {
    /// Every layer, in application order.
    pub const ALL: [Layer; 12] = [
        Layer::Fds,
        Layer::UserNamespace,
        Layer::NetworkNamespace,
        Layer::MountNamespace,
        Layer::IpcNamespace,
        Layer::UtsNamespace,
        Layer::PidNamespace,
        Layer::Rlimits,
        Layer::Credentials,
        Layer::NoNewPrivs,
        Layer::Landlock,
        Layer::Seccomp,
    ];

    /// A stable, kebab-case name (used by `moonjail doctor` and in reports).
    pub fn name(self) -> &'static str {
        match self {
            Layer::Fds => "fds",
            Layer::UserNamespace => "user-namespace",
            Layer::NetworkNamespace => "network-namespace",
            Layer::MountNamespace => "mount-namespace",
            Layer::IpcNamespace => "ipc-namespace",
            Layer::UtsNamespace => "uts-namespace",
            Layer::PidNamespace => "pid-namespace",
            Layer::Rlimits => "rlimits",
            Layer::Credentials => "credentials",
            Layer::NoNewPrivs => "no-new-privs",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
        }
    }

    /// The layer whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|layer| layer.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Layer`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LayerSet(u16);

impl LayerSet {
    /// No layer.
    pub const fn empty() -> Self {
        LayerSet(0)
    }

    /// Every layer.
    pub fn all() -> Self {
        Layer::ALL.into_iter().collect()
    }

    /// This set with `layer` added.
    #[must_use]
    pub fn with(self, layer: Layer) -> Self {
        LayerSet(self.0 | layer.bit())
    }

    /// This set with `layer` removed.
    #[must_use]
    pub fn without(self, layer: Layer) -> Self {
        LayerSet(self.0 & !layer.bit())
    }

    /// Whether `layer` is in the set.
    pub fn contains(self, layer: Layer) -> bool {
        self.0 & layer.bit() != 0
    }

    /// Whether the set holds no layer.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The layers of the set, in application order.
    pub fn iter(self) -> impl Iterator<Item = Layer> {
        Layer::ALL
            .into_iter()
            .filter(move |layer| self.contains(*layer))
    }
}

impl FromIterator<Layer> for LayerSet {
    fn from_iter<I: IntoIterator<Item = Layer>>(iter: I) -> Self {
        iter.into_iter().fold(LayerSet::empty(), LayerSet::with)
    }
}

impl fmt::Debug for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// How the calling process ends up inside a new PID namespace.
///
/// `unshare(CLONE_NEWPID)` does not move the caller: only its *children* are created in the
/// new namespace. Worse, the kernel then refuses to create threads (`clone(CLONE_THREAD)`
/// fails with `EINVAL` while `pid_for_children` differs from the caller's own PID namespace),
/// and a worker must be able to create threads (its runtime and libraries may). So
/// unsharing alone is never what a worker wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PidNamespace {
    /// Unshare, then fork once. The child becomes PID 1 of the new namespace and
    /// [`lockdown`](crate::lockdown) returns in it; the original process becomes a *relay*
    /// that closes every fd, drops the worker's ids and every capability (with the
    /// credentials layer), installs a tiny seccomp filter of its own, waits for (and reaps)
    /// the child and exits the way the child did (same exit code, or dies by the same
    /// signal). The child is killed (`PR_SET_PDEATHSIG`) if the relay dies, but its zombie
    /// then goes to the caller's subreaper or init: a supervisor should kill the child and
    /// wait for the relay instead.
    #[default]
    Fork,
    /// The caller was already started as PID 1 of a fresh PID namespace (for example by a
    /// supervisor using `clone(CLONE_NEWPID)`). `lockdown` only checks `getpid() == 1`.
    Existing,
}

/// Settings for [`lockdown`](crate::lockdown). Build one with [`LockdownConfig::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockdownConfig {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) cpu_time: Option<Duration>,
    pub(crate) address_space_bytes: Option<u64>,
    pub(crate) open_files: Option<u64>,
    pub(crate) processes: Option<u64>,
    pub(crate) layers: LayerSet,
    pub(crate) allow_missing: LayerSet,
    pub(crate) keep_fds: Vec<RawFd>,
    pub(crate) pid_namespace: PidNamespace,
}

impl Default for LockdownConfig {
    fn default() -> Self {
        LockdownConfig {
            uid: DEFAULT_ID,
            gid: DEFAULT_ID,
            cpu_time: None,
            address_space_bytes: Some(DEFAULT_ADDRESS_SPACE_BYTES),
            open_files: Some(DEFAULT_OPEN_FILES),
            processes: Some(DEFAULT_PROCESSES),
            layers: LayerSet::all(),
            allow_missing: LayerSet::empty(),
            keep_fds: Vec::new(),
            pid_namespace: PidNamespace::Fork,
        }
    }
}

const DEFAULT_ID: u32 = 65534;
const DEFAULT_ADDRESS_SPACE_BYTES: u64 = 1 << 30;
const DEFAULT_OPEN_FILES: u64 = 64;
const DEFAULT_PROCESSES: u64 = 256;

impl LockdownConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> LockdownConfigBuilder {
        LockdownConfigBuilder {
            config: LockdownConfig::default(),
        }
    }

    /// The uid to switch to when running as root.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The gid to switch to when running as root.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// `RLIMIT_CPU`, if any.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.cpu_time
    }

    /// `RLIMIT_AS` in bytes, if any.
    pub fn address_space_bytes(&self) -> Option<u64> {
        self.address_space_bytes
    }

    /// `RLIMIT_NOFILE`, if any.
    pub fn open_files(&self) -> Option<u64> {
        self.open_files
    }

    /// `RLIMIT_NPROC`, if any.
    pub fn processes(&self) -> Option<u64> {
        self.processes
    }

    /// The layers that are applied.
    pub fn layers(&self) -> LayerSet {
        self.layers
    }

    /// The layers that may fail to apply without failing [`lockdown`](crate::lockdown).
    pub fn allow_missing(&self) -> LayerSet {
        self.allow_missing
    }

    /// The file descriptors left open, sorted.
    pub fn keep_fds(&self) -> &[RawFd] {
        &self.keep_fds
    }

    /// How the caller ends up in a new PID namespace.
    pub fn pid_namespace(&self) -> PidNamespace {
        self.pid_namespace
    }
}

/// Builds a [`LockdownConfig`], validating it in [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct LockdownConfigBuilder {
    config: LockdownConfig,
}

impl LockdownConfigBuilder {
    /// Sets the uid and gid to switch to when running as root. Neither may be 0.
    ///
    /// By default, 65534/65534 (`nobody`/`nogroup`).
    pub fn ids(mut self, uid: u32, gid: u32) -> Self {
        self.config.uid = uid;
        self.config.gid = gid;
        self
    }

    /// Sets `RLIMIT_CPU` (rounded up to whole seconds; at least one second). When it is
    /// reached the kernel kills the process with `SIGKILL`. CPU time accumulates over the
    /// whole life of the process, so a pooled worker needs room for all its runs.
    ///
    /// By default, no limit is set.
    pub fn cpu_time(mut self, limit: Option<Duration>) -> Self {
        self.config.cpu_time = limit;
        self
    }

    /// Sets `RLIMIT_AS` (bytes of virtual address space), a backstop behind the exact
    /// per-state memory limit. Each thread reserves its stack and glibc may reserve a
    /// 64 MiB malloc arena per thread, so leave room.
    ///
    /// By default, 1 GiB.
    pub fn address_space_bytes(mut self, limit: Option<u64>) -> Self {
        self.config.address_space_bytes = limit;
        self
    }

    /// Sets `RLIMIT_NOFILE`: new descriptors must be numbered below it.
    ///
    /// By default, 64.
    pub fn open_files(mut self, limit: Option<u64>) -> Self {
        self.config.open_files = limit;
        self
    }

    /// Sets `RLIMIT_NPROC`. The kernel counts every task (thread or process) of the real
    /// uid, across all processes of that uid, so with a pool of workers all running as
    /// `nobody` the limit must cover all their threads (and their relays, which run as
    /// `nobody` too). Seccomp is what forbids creating
    /// processes; this is a backstop.
    ///
    /// By default, 256.
    pub fn processes(mut self, limit: Option<u64>) -> Self {
        self.config.processes = limit;
        self
    }

    /// Sets which layers are applied at all; the others are reported as
    /// [`LayerStatus::Disabled`](crate::LayerStatus::Disabled). Meant for tests and
    /// diagnosis: a worker should apply every layer.
    ///
    /// By default, every layer.
    pub fn layers(mut self, layers: LayerSet) -> Self {
        self.config.layers = layers;
        self
    }

    /// Sets which layers may fail to apply (for example Landlock on an old kernel) without
    /// failing [`lockdown`](crate::lockdown); they are then reported as
    /// [`LayerStatus::Skipped`](crate::LayerStatus::Skipped) with the reason.
    ///
    /// By default, none: any layer that cannot be applied is an error.
    pub fn allow_missing(mut self, layers: LayerSet) -> Self {
        self.config.allow_missing = layers;
        self
    }

    /// Sets the file descriptors to keep open (the channel to the supervisor, and usually
    /// stdin/stdout/stderr). Every one of them must be open when `lockdown` runs.
    ///
    /// By default, none: every descriptor is closed.
    pub fn keep_fds(mut self, fds: impl IntoIterator<Item = RawFd>) -> Self {
        self.config.keep_fds = fds.into_iter().collect();
        self
    }

    /// Sets how the caller ends up in a new PID namespace.
    ///
    /// By default, [`PidNamespace::Fork`].
    pub fn pid_namespace(mut self, mode: PidNamespace) -> Self {
        self.config.pid_namespace = mode;
        self
    }

    /// Checks the settings and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a uid/gid is 0, a kept fd is negative, or the CPU limit is
    /// zero.
    pub fn build(mut self) -> Result<LockdownConfig, ConfigError> {
        let config = &mut self.config;
        if config.uid == 0 || config.gid == 0 {
            return Err(ConfigError::RootTarget {
                uid: config.uid,
                gid: config.gid,
            });
        }
        if let Some(fd) = config.keep_fds.iter().copied().find(|fd| *fd < 0) {
            return Err(ConfigError::NegativeFd(fd));
        }
        if config.cpu_time == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroCpuTime);
        }
        config.keep_fds.sort_unstable();
        config.keep_fds.dedup();
        Ok(self.config)
    }
}

/// A [`LockdownConfig`] that [`LockdownConfigBuilder::build`] refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The uid or gid to switch to is root.
    #[error("the uid/gid to switch to must not be 0 (got {uid}/{gid})")]
    RootTarget {
        /// The configured uid.
        uid: u32,
        /// The configured gid.
        gid: u32,
    },
    /// A file descriptor to keep is negative.
    #[error("file descriptor {0} cannot be kept: it is negative")]
    NegativeFd(RawFd),
    /// `RLIMIT_CPU` of zero.
    #[error("the CPU time limit must be at least one second")]
    ZeroCpuTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_name(layer.name()), Some(layer));
        }
        assert_eq!(Layer::from_name("nope"), None);
    }

    #[test]
    fn layer_set_operations() {
        let set = LayerSet::empty()
            .with(Layer::Seccomp)
            .with(Layer::Fds)
            .with(Layer::Seccomp);
        assert!(set.contains(Layer::Seccomp));
        assert!(!set.contains(Layer::Landlock));
        assert_eq!(set.iter().collect::<Vec<_>>(), [Layer::Fds, Layer::Seccomp]);
        assert!(set.without(Layer::Fds).without(Layer::Seccomp).is_empty());
        assert_eq!(LayerSet::all().iter().count(), Layer::ALL.len());
    }

    #[test]
    fn defaults_deny_missing_layers() {
        let config = LockdownConfig::builder().build().unwrap();
        assert!(config.allow_missing().is_empty());
        assert_eq!(config.layers(), LayerSet::all());
        assert_eq!((config.uid(), config.gid()), (65534, 65534));
        assert_eq!(config.pid_namespace(), PidNamespace::Fork);
    }

    #[test]
    fn build_rejects_root_target_and_bad_values() {
        assert_eq!(
            LockdownConfig::builder().ids(0, 5).build(),
            Err(ConfigError::RootTarget { uid: 0, gid: 5 })
        );
        assert_eq!(
            LockdownConfig::builder().keep_fds([1, -3]).build(),
            Err(ConfigError::NegativeFd(-3))
        );
        assert_eq!(
            LockdownConfig::builder()
                .cpu_time(Some(Duration::ZERO))
                .build(),
            Err(ConfigError::ZeroCpuTime)
        );
    }

    #[test]
    fn build_sorts_and_dedups_kept_fds() {
        let config = LockdownConfig::builder()
            .keep_fds([5, 1, 5, 0])
            .build()
            .unwrap();
        assert_eq!(config.keep_fds(), [0, 1, 5]);
    }
}
