//! What the host lets a script read: module sources for `require` and files for
//! `io.open` (aos profile). Read by the host on demand, never by path the script made up:
//! module names are validated, readable files are an exact allowlist.
//!
//! A state reads through a [`FileSource`]. In process that is the [`HostFiles`] itself,
//! on the host's file system. Inside a worker process, which cannot open files, it is the
//! channel to the supervisor, which answers from the sandbox's `HostFiles`: the same
//! validation and the same allowlist, applied by the same code, outside the sandbox.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where `require` and `io.open` get their bytes.
pub(crate) trait FileSource: fmt::Debug + Send + Sync {
    /// Finds module `name`: `Ok((source, path))`, or `Err` with the "no file" lines of the
    /// not-found message.
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String>;

    /// Reads `path`: `None` when the host did not list it, `Some(Err(why))` when reading
    /// a listed file failed.
    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>>;

    /// True when this source can provide nothing (no module directory, no listed file):
    /// every request would be refused.
    fn is_empty(&self) -> bool {
        false
    }

    /// True when modules are served (`require` needs the profile to have it).
    fn has_modules(&self) -> bool {
        false
    }

    /// True when some file is readable (`io.open` needs the profile to have it).
    fn has_readable(&self) -> bool {
        false
    }
}

/// Host-provided files and modules. By default, none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFiles {
    modules_dir: Option<PathBuf>,
    readable: BTreeSet<String>,
}

/// Largest file `io.open` or `require` will read (the Lua heap limit applies as well).
pub(crate) const MAX_HOST_FILE: u64 = 64 << 20;

impl HostFiles {
    /// Serves `require("a.b")` from `DIR/a/b.lua` or `DIR/a/b/init.lua`.
    pub fn modules_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.modules_dir = Some(dir.into());
        self
    }

    /// Lets `io.open(path)` read `path` (exactly as the script spells it).
    pub fn allow_read(mut self, path: impl Into<String>) -> Self {
        self.readable.insert(path.into());
        self
    }

    /// True when modules are served (`require` needs the profile to have it).
    pub fn has_modules(&self) -> bool {
        self.modules_dir.is_some()
    }

    /// True when some file is readable (`io.open` needs the profile to have it).
    pub fn has_readable(&self) -> bool {
        !self.readable.is_empty()
    }

    /// True when nothing is provided.
    pub fn is_empty(&self) -> bool {
        self.modules_dir.is_none() && self.readable.is_empty()
    }

    /// Finds module `name`: `Ok((source, path))`, or `Err` with the "no file" lines of the
    /// not-found message. A leading dot is how aos process code names its own modules
    /// (`require('.handlers')`, `require('.crypto.init')`): it is resolved from the
    /// module directory as the name without it.
    pub(crate) fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        let Some(dir) = &self.modules_dir else {
            return Err("\n\tno module directory was provided by the host".to_string());
        };
        let name = name.strip_prefix('.').unwrap_or(name);
        let valid = !name.is_empty()
            && name.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !valid {
            return Err(format!("\n\tinvalid module name '{name}'"));
        }
        let rel: PathBuf = name.split('.').collect();
        let mut tried = String::new();
        for candidate in [rel.with_extension("lua"), rel.join("init.lua")] {
            let full = dir.join(&candidate);
            match read_bounded(&full) {
                Ok(src) => return Ok((src, candidate.to_string_lossy().into_owned())),
                Err(_) => tried.push_str(&format!("\n\tno file '{}'", candidate.display())),
            }
        }
        Err(tried)
    }

    /// Reads an allowlisted file; `None` when `path` is not on the list.
    pub(crate) fn read(&self, path: &str) -> Option<std::io::Result<Vec<u8>>> {
        self.readable
            .contains(path)
            .then(|| read_bounded(Path::new(path)))
    }
}

impl FileSource for HostFiles {
    fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        HostFiles::module(self, name)
    }

    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        HostFiles::read(self, path).map(|r| r.map_err(|e| e.to_string()))
    }

    fn is_empty(&self) -> bool {
        HostFiles::is_empty(self)
    }

    fn has_modules(&self) -> bool {
        HostFiles::has_modules(self)
    }

    fn has_readable(&self) -> bool {
        HostFiles::has_readable(self)
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO or a device for reading may block (forever, for a FIFO without a
    // writer): open without blocking, then refuse anything but a regular file. Reads from
    // a regular file ignore the flag.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let f = options.open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_HOST_FILE).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The host's interrupt check ([`crate::SandboxBuilder::interrupt_check`]): asked, on the
/// thread running a call, whether that call must stop now.
#[derive(Clone)]
pub(crate) struct InterruptCheck {
    /// How often it is asked while a script runs (it is also asked once as each call
    /// starts); `None`: only as each call starts (a worker's check of its supervisor's
    /// request, which a signal also delivers as it comes).
    pub(crate) every: Option<Duration>,
    pub(crate) check: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// The shortest period between two interrupt checks: a shorter one asked for is raised
/// to this (each check is a timer signal and a call into the host).
pub(crate) const MIN_INTERRUPT_PERIOD: Duration = Duration::from_millis(1);

impl InterruptCheck {
    /// Asks the check. A check that panics stops the call: the panic cannot unwind
    /// through Lua, and a broken check must not leave a run that nothing can stop.
    pub(crate) fn ask(&self) -> bool {
        let check = &*self.check;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            Ok(stop) => stop,
            Err(_) => {
                tracing::error!("the interrupt check panicked: the call is stopped");
                true
            }
        }
    }
}

impl fmt::Debug for InterruptCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterruptCheck")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Makes time and randomness reproducible: the same messages give the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Determinism {
    /// What `os.time()` returns and `os.date()` formats (Unix seconds).
    pub timestamp: i64,
    /// The seed of `math.random` (`math.randomseed()` without arguments reuses it).
    pub seed: i64,
}

/// Everything besides the profile that shapes a state's environment.
#[derive(Debug, Clone)]
pub(crate) struct EnvOptions {
    /// What `require` and `io.open` read through (the sandbox's [`HostFiles`], except
    /// inside a worker process).
    pub files: Arc<dyn FileSource>,
    pub deterministic: Option<Determinism>,
    /// Record globals, library members and requires (see [`crate::Diagnostics`]).
    pub diagnostic: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            files: Arc::new(HostFiles::default()),
            deterministic: None,
            diagnostic: false,
        }
    }
}
