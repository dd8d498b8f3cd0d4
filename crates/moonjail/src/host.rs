//! What the host lets a script read: module sources for `require` and files for
//! `io.open` (aos profile). Read by the host on demand, never by path the script made up:
//! module names are validated, readable files are an exact allowlist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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

    /// True when nothing is provided.
    pub fn is_empty(&self) -> bool {
        self.modules_dir.is_none() && self.readable.is_empty()
    }

    /// Finds module `name`: `Ok((source, path))`, or `Err` with the "no file" lines of the
    /// not-found message.
    pub(crate) fn module(&self, name: &str) -> Result<(Vec<u8>, String), String> {
        let Some(dir) = &self.modules_dir else {
            return Err("\n\tno module directory was provided by the host".to_string());
        };
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

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_HOST_FILE).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Makes time and randomness reproducible: the same messages give the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Determinism {
    /// What `os.time()` returns and `os.date()` formats (Unix seconds).
    pub timestamp: i64,
    /// The seed of `math.random` (`math.randomseed()` without arguments reuses it).
    pub seed: i64,
}

/// Everything besides the profile that shapes a state's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvOptions {
    pub files: std::sync::Arc<HostFiles>,
    pub deterministic: Option<Determinism>,
    /// Record globals, library members and requires (see [`crate::Diagnostics`]).
    pub diagnostic: bool,
}
