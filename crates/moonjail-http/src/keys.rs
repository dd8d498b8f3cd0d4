//! API keys: a file of names and SHA-256 hashes (never the keys themselves), and the
//! constant-time check of a presented key.
//!
//! The file is text, one key a line, `NAME sha256:HEX`; blank lines and lines starting
//! with `#` are ignored. `moonjail keys add NAME --keys FILE` creates a key, prints it
//! once and stores its hash.
//!
//! Why a plain SHA-256 rather than a password hash (argon2, bcrypt): the keys are 256
//! random bits made here, not passwords people choose. A slow hash exists to make
//! guessing a low-entropy secret from its hash expensive; guessing among 2^256 keys is
//! out of reach at any hashing speed, so the stolen file reveals nothing usable, and a
//! fast hash keeps authentication off the request path's budget.

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with, so a leaked one is recognisable (by secret scanners, by
/// people).
pub const KEY_PREFIX: &str = "mj_";

/// The largest key file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a key file or a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line of the file is not `NAME sha256:HEX`.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The key file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that cannot be used.
    #[error("invalid key name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidName(String),
    /// `add` of a name already in the file.
    #[error("a key named {0:?} exists already (remove it first)")]
    Duplicate(String),
    /// `remove` of a name not in the file.
    #[error("no key named {0:?}")]
    Unknown(String),
    /// The system's random source failed.
    #[error("generating a key: {0}")]
    Random(String),
}

/// One stored key: its name and the SHA-256 of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    hash: [u8; 32],
}

/// The keys a service accepts, by name and hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStore {
    entries: Vec<Entry>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl KeyStore {
    /// An empty store: no key is accepted.
    pub fn new() -> Self {
        KeyStore::default()
    }

    /// Reads a key file; a missing file is an empty store (so `keys add` can create it).
    ///
    /// # Errors
    /// [`KeyError::Io`] when the file cannot be read, [`KeyError::Parse`] for a bad line.
    pub fn load(path: &Path) -> Result<KeyStore, KeyError> {
        use std::io::Read;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyStore::new()),
            Err(e) => return Err(io(e)),
        };
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(io(std::io::Error::other(format!(
                "larger than {MAX_FILE_BYTES} bytes"
            ))));
        }
        KeyStore::parse(&text, &path.display().to_string())
    }

    /// Parses a key file's text (`origin` names it in errors).
    ///
    /// # Errors
    /// [`KeyError::Parse`] for a line that is not `NAME sha256:HEX`, or a repeated name.
    pub fn parse(text: &str, origin: &str) -> Result<KeyStore, KeyError> {
        let mut store = KeyStore::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| KeyError::Parse {
                path: origin.to_string(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut parts = line.split_whitespace();
            let (Some(name), Some(digest), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `NAME sha256:HEX`"));
            };
            if !valid_name(name) {
                return Err(bad(&format!("invalid key name {name:?}")));
            }
            let hash = digest
                .strip_prefix("sha256:")
                .and_then(unhex)
                .ok_or_else(|| bad("expected sha256: and 64 hex digits"))?;
            if store.contains(name) {
                return Err(bad(&format!("the name {name:?} appears twice")));
            }
            store.entries.push(Entry {
                name: name.to_string(),
                hash,
            });
        }
        Ok(store)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# moonjail API keys: NAME sha256:HEX of the key. Managed with `moonjail keys`.\n",
        );
        for e in &self.entries {
            let _ = writeln!(out, "{} sha256:{}", e.name, hex(&e.hash));
        }
        out
    }

    /// Writes the store to `path` (a new file beside it, then renamed over it, readable
    /// by its owner only).
    ///
    /// # Errors
    /// [`KeyError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut file, self.to_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// True when a key is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// The names of the keys, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Creates a key named `name` and returns it: the only time it is seen (the store
    /// keeps its hash).
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], [`KeyError::Duplicate`], [`KeyError::Random`].
    pub fn add(&mut self, name: &str) -> Result<String, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::InvalidName(name.to_string()));
        }
        if self.contains(name) {
            return Err(KeyError::Duplicate(name.to_string()));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = format!("{KEY_PREFIX}{}", hex(&secret));
        self.insert(name, &key)?;
        Ok(key)
    }

    /// Stores `key` (made elsewhere) under `name`.
    ///
    /// # Errors
    /// [`KeyError::InvalidName`], [`KeyError::Duplicate`].
    pub fn insert(&mut self, name: &str, key: &str) -> Result<(), KeyError> {
        if !valid_name(name) {
            return Err(KeyError::InvalidName(name.to_string()));
        }
        if self.contains(name) {
            return Err(KeyError::Duplicate(name.to_string()));
        }
        self.entries.push(Entry {
            name: name.to_string(),
            hash: hash(key),
        });
        Ok(())
    }

    /// Removes the key named `name`.
    ///
    /// # Errors
    /// [`KeyError::Unknown`].
    pub fn remove(&mut self, name: &str) -> Result<(), KeyError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        if self.entries.len() == before {
            return Err(KeyError::Unknown(name.to_string()));
        }
        Ok(())
    }

    /// The name of the key `presented` is, if any. Every stored hash is compared, each in
    /// constant time, so the time taken says nothing about which key came close.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let digest = hash(presented);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&digest)) {
                found = Some(e.name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_file_and_only_hashes_are_stored() {
        let mut store = KeyStore::new();
        let key = store.add("alice").unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        let other = store.add("bob").unwrap();
        assert_ne!(key, other);
        let text = store.to_text();
        assert!(!text.contains(&key[KEY_PREFIX.len()..]));
        let back = KeyStore::parse(&text, "keys").unwrap();
        assert_eq!(back, store);
        assert_eq!(back.verify(&key), Some("alice"));
        assert_eq!(back.verify(&other), Some("bob"));
        assert_eq!(back.verify("mj_0000"), None);
        assert_eq!(back.verify(""), None);
    }

    #[test]
    fn bad_files_and_names_are_refused() {
        assert!(matches!(
            KeyStore::parse("alice sha256:12", "k"),
            Err(KeyError::Parse { line: 1, .. })
        ));
        assert!(KeyStore::parse("# c\n\nalice\n", "k").is_err());
        let mut store = KeyStore::new();
        assert!(matches!(store.add("a b"), Err(KeyError::InvalidName(_))));
        store.add("a").unwrap();
        assert!(matches!(store.add("a"), Err(KeyError::Duplicate(_))));
        store.remove("a").unwrap();
        assert!(matches!(store.remove("a"), Err(KeyError::Unknown(_))));
    }
}
