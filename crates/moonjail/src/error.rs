//! The one error type of a run, with a stable `kind` that hosts and models can branch on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong in a run. The `as_str` names are a stable contract (front ends: the
/// CLI's `--json`, a future HTTP service; logs): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The source (or a `load`ed chunk at top level) does not parse.
    Syntax,
    /// The script raised an error, or called something with bad arguments.
    Runtime,
    /// The Lua heap would have grown past the memory limit (isolated: or the worker ran
    /// out of address space outside it, or its answer was too large to accept).
    MemoryLimit,
    /// The instruction budget ran out.
    InstructionLimit,
    /// The wall-clock deadline passed.
    Timeout,
    /// Captured output (`print`) passed its byte limit.
    OutputLimit,
    /// The input (source, input JSON) was refused before the script ran.
    Input,
    /// The result could not be turned into JSON.
    Result,
    /// The script tried something the sandbox refuses (binary chunks, `__gc`, ...).
    Forbidden,
    /// The host stopped the run: its interrupt check
    /// ([`crate::SandboxBuilder::interrupt_check`]) said so. Not a limit: the script did
    /// nothing wrong.
    Interrupted,
    /// The worker process running the script died (isolated mode).
    Killed,
    /// A fault in moonjail itself, never the script's doing.
    Internal,
    /// The linter found errors before the run (`run --lint`), so the script was not run;
    /// the findings are in [`crate::Outcome::lint`].
    Lint,
    /// A replay of a journal ([`crate::replay`]) stopped because the script asked for
    /// something other than what the journal recorded next (another tool, other
    /// arguments, a call past the last recorded one, fewer calls); the message names the
    /// step, what was recorded and what was asked.
    ReplayDivergence,
    /// The script called a deferred tool ([`crate::SandboxBuilder::defer_tool`]): the run
    /// stopped there to wait for the host's answer. Not a failure of the script: the
    /// error's `value` is the pending call (`{"step", "name", "args"}`), and a journaled
    /// run resumes from its journal ([`crate::Sandbox::resume`], `moonjail resume`).
    Suspended,
}

impl ErrorKind {
    /// Every kind, in documentation order.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Syntax,
        ErrorKind::Runtime,
        ErrorKind::MemoryLimit,
        ErrorKind::InstructionLimit,
        ErrorKind::Timeout,
        ErrorKind::OutputLimit,
        ErrorKind::Input,
        ErrorKind::Result,
        ErrorKind::Forbidden,
        ErrorKind::Interrupted,
        ErrorKind::Killed,
        ErrorKind::Internal,
        ErrorKind::Lint,
        ErrorKind::ReplayDivergence,
        ErrorKind::Suspended,
    ];

    /// The stable name used in JSON outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "syntax",
            ErrorKind::Runtime => "runtime",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::InstructionLimit => "instruction_limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::Input => "input",
            ErrorKind::Result => "result",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Killed => "killed",
            ErrorKind::Internal => "internal",
            ErrorKind::Lint => "lint",
            ErrorKind::ReplayDivergence => "replay_divergence",
            ErrorKind::Suspended => "suspended",
        }
    }

    /// True for the kinds that mean a quota was exhausted.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            ErrorKind::MemoryLimit
                | ErrorKind::InstructionLimit
                | ErrorKind::Timeout
                | ErrorKind::OutputLimit
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run: precise enough to show a person or to feed back to the model that wrote
/// the script.
///
/// Serialised (the `error` of the `--json` contract) it is `{"kind", "message", "line",
/// "traceback", "value", "hint"}`, every key always present (`null` or `[]` when there
/// is nothing to say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct Error {
    /// The stable category.
    pub kind: ErrorKind,
    /// The message, as Lua worded it where Lua raised it.
    pub message: String,
    /// The line in the script's own chunk: the one the message names, else the
    /// innermost frame of the script's chunk in [`Error::traceback`].
    pub line: Option<u32>,
    /// The Lua frames active where the error was raised (or the run was stopped),
    /// innermost first, at most [`MAX_FRAMES`]. Empty for errors no Lua code raised
    /// (syntax, input, a memory error, which unwinds before anything can look).
    #[serde(default)]
    pub traceback: Vec<Frame>,
    /// The error value, when the script raised a table (`error({code = 42})`): marshaled
    /// raw (no metamethod runs) and bounded like a result.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<serde_json::Value>))]
    pub value: Option<serde_json::Value>,
    /// For a syntax error that looks like a habit from another language (`!=`, `+=`,
    /// `continue`, ...), what Lua spells instead. The code is never changed.
    #[serde(default)]
    pub hint: Option<String>,
}

/// One Lua frame of a traceback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Frame {
    /// The function's name as its caller knew it (`run`, `process`, a method), or
    /// `null` for the main chunk and for functions with no name to give.
    pub function: Option<String>,
    /// The chunk the function was defined in (the script's chunk name, a module name).
    pub source: String,
    /// The line being executed in that frame.
    pub line: u32,
}

/// The most frames a traceback keeps (the innermost ones).
pub const MAX_FRAMES: usize = 32;

/// The largest error value kept, as JSON text.
pub(crate) const MAX_VALUE_BYTES: usize = 64 << 10;

/// The longest function or chunk name a frame keeps (a script names its functions).
const MAX_NAME_BYTES: usize = 256;

impl Error {
    /// An error of `kind` with no line.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            line: None,
            traceback: Vec::new(),
            value: None,
            hint: None,
        }
    }

    /// The same error with `line` set.
    pub fn with_line(mut self, line: Option<u32>) -> Self {
        self.line = line;
        self
    }
}

/// The longest error message an outcome carries; longer ones keep their head and a
/// marker. A script chooses its error messages, and the host must not pay for 30 MB of
/// one (nor a worker frame overflow on it).
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

impl Error {
    /// Cuts the message to [`MAX_MESSAGE_BYTES`] (on a character boundary), saying how
    /// much was dropped.
    pub(crate) fn bounded(mut self) -> Self {
        self.message = bound_message(self.message);
        self.traceback.truncate(MAX_FRAMES);
        for frame in &mut self.traceback {
            frame.source = cut_message(std::mem::take(&mut frame.source), MAX_NAME_BYTES);
            frame.function = frame
                .function
                .take()
                .map(|f| cut_message(f, MAX_NAME_BYTES));
        }
        self.hint = self.hint.take().map(|h| cut_message(h, MAX_NAME_BYTES * 4));
        // The engine marshals an error value within this bound; one that comes larger
        // (from a worker that broke the protocol) is dropped, not carried.
        if self
            .value
            .as_ref()
            .is_some_and(|v| serde_json::to_vec(v).map_or(true, |t| t.len() > MAX_VALUE_BYTES))
        {
            self.value = None;
        }
        self
    }
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`], marker included (see [`cut_message`]).
pub(crate) fn bound_message(message: String) -> String {
    cut_message(message, MAX_MESSAGE_BYTES)
}

/// `message` cut to at most `max` bytes (at least 64), marker included, on a character
/// boundary, naming how much was dropped. Idempotent: a message cut once passes unchanged.
pub(crate) fn cut_message(mut message: String, max: usize) -> String {
    if message.len() > max {
        let total = message.len();
        // Room for the marker, so the result stays within the bound.
        let mut end = max.saturating_sub(64);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("... ({} more bytes not shown)", total - end));
    }
    message
}

/// The innermost message of an mlua error (callback errors wrap the real one).
pub(crate) fn mlua_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => mlua_message(cause),
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::WithContext { cause, .. } => mlua_message(cause),
        other => other.to_string(),
    }
}

/// Result alias for run outcomes.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A sandbox configuration that cannot work, reported when it is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit was set to a value that would make every run fail.
    #[error("invalid limit {name}: {reason}")]
    InvalidLimit {
        /// The limit's name, as the CLI spells it.
        name: &'static str,
        /// Why the value does not work.
        reason: String,
    },
    /// A size or duration string did not parse.
    #[error("cannot parse {what} {input:?}: {reason}")]
    Parse {
        /// "size" or "duration".
        what: &'static str,
        /// The text given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Isolated mode cannot be set up as configured: no worker executable, a profile
    /// workers do not know, a platform or build without isolation.
    #[error("isolation: {0}")]
    Isolation(String),
    /// An option the sandbox's profile cannot honour (modules without `require`, files
    /// without `io`): refused rather than silently ignored.
    #[error("{0}")]
    Unsupported(String),
    /// No profile of that name exists.
    #[error("unknown profile {0:?} (known: minimal, standard, aos)")]
    UnknownProfile(String),
    /// A host tool cannot be registered or used as configured.
    #[error("tool {name}: {reason}")]
    Tool {
        /// The tool's name (or `http` for the built-in tool's configuration).
        name: String,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind is listed once, and its stable name is the one it serialises to.
    #[test]
    fn every_kind_serialises_to_its_name() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().to_string())
            );
            assert!(!ErrorKind::ALL[..i].contains(kind), "{kind} twice");
        }
        assert!(ErrorKind::ALL.contains(&ErrorKind::Interrupted));
        assert!(!ErrorKind::Interrupted.is_limit());
    }
}
