//! moonjail runs untrusted Lua 5.4 safely.
//!
//! Every run gets a fresh Lua state whose globals are exactly a [`Profile`]'s list, under
//! exact [`Limits`]: memory counted by the allocator, a wall-clock deadline that costs
//! nothing until it passes, an opt-in instruction budget shared by all coroutines, and
//! caps on output, source and result. Input and result cross as JSON, read with raw
//! access only.
//!
//! Scripts reach outside only through host tools the host registers ([`ToolRegistry`],
//! [`SandboxBuilder::tool`]): read-only namespaces of functions taking and returning JSON,
//! under per-run quotas and the run's deadline, each call recorded in
//! [`Outcome::tool_calls`]. Built in: an allowlisted `http` tool ([`HttpConfig`]) and
//! external programs as tools ([`CommandTool`]). Tools work in sessions and in isolated
//! mode alike; there the tool runs in the supervisor, on the worker's request (see
//! [`worker`]).
//!
//! ```
//! use std::time::Duration;
//! use moonjail::{ErrorKind, Sandbox};
//! use serde_json::json;
//!
//! let sandbox = Sandbox::builder()
//!     .timeout(Duration::from_millis(100))
//!     .build()
//!     .unwrap();
//! let out = sandbox.run("function run(ctx) return {sum = ctx.a + ctx.b} end", &json!({"a": 1, "b": 2}));
//! assert_eq!(out.result.unwrap(), json!({"sum": 3}));
//!
//! // pcall cannot swallow the deadline.
//! let out = sandbox.run("while true do pcall(function() while true do end end) end", &json!(null));
//! assert_eq!(out.error().unwrap().kind, ErrorKind::Timeout);
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
// Without a default feature, the code that only that feature calls (the worker protocol's
// plumbing, the http client's helpers) is compiled but idle; the default build, which CI
// lints with `-D warnings`, keeps the full checks.
#![cfg_attr(
    not(all(feature = "http", feature = "isolation")),
    allow(dead_code, unused_imports)
)]

/// The README's Rust examples, compiled and run as doctests so they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

mod check;
mod diag;
mod engine;
mod env;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod input;
mod journal;
mod limits;
mod lint;
mod marshal;
mod outcome;
mod prepared;
mod profile;
mod sandbox;
mod session;
mod spec;
mod stdlib;
mod tools;
pub mod units;
mod vm;
pub mod worker;

pub use check::{checklist, CheckItem, CheckResult};
pub use diag::{Diagnostics, RequireRecord};
pub use error::{ConfigError, Error, ErrorKind, Frame, Result, MAX_FRAMES, MAX_MESSAGE_BYTES};
pub use host::{Determinism, HostFiles};
pub use input::parse_input;
pub use journal::{
    replay, replay_journal, Flush, Journal, JournalError, JournalWriter, Pending, ReplayOptions,
    Run, Suspension, DEFAULT_JOURNAL_LIMIT, JOURNAL_VERSION, REPLAY_CEILING,
};
// Durable sessions (journal/session.rs), apart from the run journal's list above.
pub use journal::{
    fork_session, restore_session, JournaledSession, SessionJournal, SessionRequest,
    SessionResponse,
};
pub use limits::Limits;
pub use lint::{nearest, Finding, LintReport, Manifest, Severity};
pub use outcome::{to_json_line, Budget, Outcome, OutcomeDoc, Stats};
pub use profile::{guard_note, Item, Profile, ProfileSpec};
pub use sandbox::{RunOptions, Sandbox, SandboxBuilder};
pub use session::Session;
pub use spec::{CallOptions, Spec};
pub use tools::{
    Catalogue, CommandTool, EntryKind, HttpConfig, HttpDestination, ToolCall, ToolContext,
    ToolError, ToolFn, ToolInfo, ToolQuota, ToolRegistry, ToolRun, ToolSpec,
};
pub use vm::output::{OutputOverflow, Truncation};
pub use vm::watchdog::deadline_signal;
pub use worker::{Isolation, ProcessConfig, ProcessConfigBuilder, WorkerPath};
