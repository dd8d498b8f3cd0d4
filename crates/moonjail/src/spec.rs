//! One run's configuration as data: what the builder produces, what the worker protocol
//! carries, and what the engine consumes. A new option is a new field here (and the one
//! place in the engine that reads it), not an edit in five shapes.
//!
//! The spec holds only what can cross a process boundary. The host-side attachments (the
//! files `require` and `io.open` read, the tools a script may call) stay with the caller
//! as the engine's `Host`; a worker gets relays for them instead.

use serde::{Deserialize, Serialize};

use crate::host::Determinism;
use crate::limits::Limits;
use crate::profile::Profile;

/// Everything that shapes a run besides its source, its input and the host's
/// attachments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Spec {
    /// What the script can reach.
    pub profile: Profile,
    /// The quotas of each run (or session call, for time and instructions).
    pub limits: Limits,
    /// Fail runs whose script defines no global function `run`.
    pub require_run: bool,
    /// Fail runs whose result is not a table.
    pub require_table: bool,
    /// Fixed time and randomness, when set.
    pub deterministic: Option<Determinism>,
    /// Record what the script touched into the outcome's diagnostics.
    pub diagnostic: bool,
}

/// What one session request may change for itself: its time and instruction limits,
/// lowered, never raised (a value above the session's own limit is the session's limit),
/// and, in a deterministic session, the clock its script reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallOptions {
    /// A shorter deadline for this request.
    pub timeout: Option<std::time::Duration>,
    /// A smaller instruction budget for this request.
    pub instructions: Option<u64>,
    /// What `os.time()` returns and `os.date()` formats during this request (Unix
    /// seconds), instead of the session's fixed timestamp: a deterministic session whose
    /// clock still moves, one recorded value per request (an AO message's timestamp; a
    /// journaled session stamps each request with the current time and replays it).
    /// Only a deterministic session has a clock to set: elsewhere the request is refused
    /// (`input`) rather than the time silently ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
}

impl CallOptions {
    /// A shorter deadline for this request.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A smaller instruction budget for this request.
    pub fn instructions(mut self, instructions: u64) -> Self {
        self.instructions = Some(instructions);
        self
    }

    /// The time (Unix seconds) this request's `os.time()` returns and `os.date()`
    /// formats, in a deterministic session (see the field of the same name). By default,
    /// the session's own timestamp.
    pub fn time(mut self, unix_seconds: i64) -> Self {
        self.time = Some(unix_seconds);
        self
    }
}

impl CallOptions {
    /// The options a front end's request asks for: `timeout` in the CLI's units
    /// (`"200ms"`, `"2s"`), `instructions` a count. What the CLI session, the MCP
    /// session tools (and any front end taking text) parse requests with.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for a timeout that is not a duration;
    /// [`ConfigError::InvalidLimit`] for a zero one (or zero instructions), which no
    /// request could run under.
    pub fn parse(
        timeout: Option<&str>,
        instructions: Option<u64>,
    ) -> Result<CallOptions, crate::ConfigError> {
        let timeout = timeout.map(crate::units::parse_duration).transpose()?;
        CallOptions::checked(timeout, instructions)
    }

    /// The options of a request whose timeout is already a duration (the Python
    /// package takes seconds or a `timedelta`): the checks of [`CallOptions::parse`].
    ///
    /// # Errors
    /// [`ConfigError::InvalidLimit`](crate::ConfigError::InvalidLimit) for a zero
    /// timeout or zero instructions.
    pub fn checked(
        timeout: Option<std::time::Duration>,
        instructions: Option<u64>,
    ) -> Result<CallOptions, crate::ConfigError> {
        let invalid = |name, reason: &str| crate::ConfigError::InvalidLimit {
            name,
            reason: reason.to_string(),
        };
        let mut options = CallOptions::default();
        if let Some(timeout) = timeout {
            if timeout.is_zero() {
                return Err(invalid("timeout", "must be greater than zero"));
            }
            options = options.timeout(timeout);
        }
        if let Some(n) = instructions {
            if n == 0 {
                return Err(invalid("instructions", "must be at least 1"));
            }
            options = options.instructions(n);
        }
        Ok(options)
    }
}

impl Limits {
    /// These limits with `options` applied: each the smaller of the two.
    pub(crate) fn lowered(&self, options: &CallOptions) -> Limits {
        fn min<T: Ord>(own: Option<T>, asked: Option<T>) -> Option<T> {
            match (own, asked) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            timeout: min(self.timeout, options.timeout),
            instructions: min(self.instructions, options.instructions),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_lowers_limits_and_never_raises_them() {
        use std::time::Duration;
        let own = Limits {
            timeout: Some(Duration::from_secs(1)),
            instructions: None,
            ..Limits::default()
        };
        let asked = CallOptions::default()
            .timeout(Duration::from_secs(5))
            .instructions(100);
        let lowered = own.lowered(&asked);
        assert_eq!(lowered.timeout, Some(Duration::from_secs(1)));
        assert_eq!(lowered.instructions, Some(100));
        let asked = CallOptions::default().timeout(Duration::from_millis(10));
        assert_eq!(own.lowered(&asked).timeout, Some(Duration::from_millis(10)));
        assert_eq!(own.lowered(&CallOptions::default()), own);
    }

    #[test]
    fn request_options_parse_from_text() {
        use std::time::Duration;
        let o = CallOptions::parse(Some("200ms"), Some(5)).unwrap();
        assert_eq!(
            (o.timeout, o.instructions),
            (Some(Duration::from_millis(200)), Some(5))
        );
        assert_eq!(
            CallOptions::parse(None, None).unwrap(),
            CallOptions::default()
        );
        assert!(CallOptions::parse(Some("soon"), None).is_err());
        assert!(CallOptions::parse(Some("0ms"), None).is_err());
        assert!(CallOptions::parse(None, Some(0)).is_err());
    }

    use super::*;

    #[test]
    fn a_spec_survives_the_wire() {
        let spec = Spec {
            profile: Profile::Aos,
            deterministic: Some(Determinism {
                timestamp: 1_700_000_000,
                seed: 42,
            }),
            diagnostic: true,
            ..Spec::default()
        };
        let text = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn a_custom_profile_does_not_cross_as_a_builtin() {
        let text = r#"{"profile":"mine","limits":null}"#;
        assert!(serde_json::from_str::<Spec>(text).is_err());
    }
}
