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

#[cfg(test)]
mod tests {
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
