//! The Linux isolation layer of moonjail: the primitives a worker process uses to lock
//! itself down before it reads a single untrusted byte.
//!
//! [`lockdown`] applies, in order, one layer per module: [`fds`], [`namespaces`] (and the PID
//! namespace relay in `pidns`), [`rlimits`], [`credentials`], `no_new_privs`, [`landlock`]
//! and [`seccomp`]. Each layer that cannot be applied is an error unless the configuration
//! allows it to be missing; the [`LockdownReport`] says what was applied and what was
//! skipped and why. [`probe`] tells which layers this machine can apply, without confining
//! the caller (for `moonjail doctor`).
//!
//! The PID namespace layer forks: the caller's original process stays behind as a *relay*
//! that drops the same uid, gid and capabilities as the worker, sets `no_new_privs`, runs
//! under a seccomp filter of its own that allows little more than waiting, reaps the worker
//! and ends as it ended. A supervisor stops a worker by killing the relay's child, then
//! waiting for the relay: every process the lockdown forked is then reaped (see `pidns`).
//!
//! ```no_run
//! use moonjail_isolate::{lockdown, LockdownConfig};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // First thing in the worker's main: keep stdin/stdout (the channel) and stderr.
//!     let config = LockdownConfig::builder().keep_fds([0, 1, 2]).build()?;
//!     let report = lockdown(&config)?;
//!     eprint!("{report}");
//!     // ... now read requests from stdin and run them ...
//!     Ok(())
//! }
//! ```
//!
//! Probing is safe to run anywhere:
//!
//! ```
//! let capabilities = moonjail_isolate::probe();
//! for (layer, availability) in &capabilities.layers {
//!     println!("{layer}: {availability}");
//! }
//! ```
#![cfg(target_os = "linux")]

mod config;
pub mod credentials;
mod error;
pub mod fds;
pub mod landlock;
mod lockdown;
pub mod namespaces;
pub mod pidns;
mod probe;
mod report;
pub mod rlimits;
pub mod seccomp;

pub use crate::config::{
    ConfigError, Layer, LayerSet, LockdownConfig, LockdownConfigBuilder, PidNamespace,
};
pub use crate::error::{Error, LayerError, Result};
pub use crate::lockdown::lockdown;
pub use crate::probe::{probe, Availability, Capabilities};
pub use crate::report::{LayerStatus, LockdownReport};
