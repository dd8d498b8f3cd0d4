//! What [`lockdown`](crate::lockdown) did, layer by layer.

use std::fmt;

use crate::config::Layer;

/// The outcome of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerStatus {
    /// The layer is in force; `detail` says what exactly was applied.
    Applied {
        /// What was applied (limits, ids, Landlock status, …).
        detail: String,
    },
    /// The layer could not be applied and the configuration allowed it to be missing.
    Skipped {
        /// Why it could not be applied (the error, with its OS cause).
        reason: String,
    },
    /// The layer has no meaning here (for example a user namespace when running as root).
    NotApplicable {
        /// Why it does not apply.
        reason: String,
    },
    /// The configuration did not ask for this layer.
    Disabled,
}

impl LayerStatus {
    /// Whether the layer is in force.
    pub fn is_applied(&self) -> bool {
        matches!(self, LayerStatus::Applied { .. })
    }
}

impl fmt::Display for LayerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerStatus::Applied { detail } => write!(f, "applied: {detail}"),
            LayerStatus::Skipped { reason } => write!(f, "skipped (allowed missing): {reason}"),
            LayerStatus::NotApplicable { reason } => write!(f, "not applicable: {reason}"),
            LayerStatus::Disabled => f.write_str("disabled by configuration"),
        }
    }
}

/// What [`lockdown`](crate::lockdown) did: one entry per [`Layer`], in application order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockdownReport {
    layers: Vec<(Layer, LayerStatus)>,
}

impl LockdownReport {
    pub(crate) fn record(&mut self, layer: Layer, status: LayerStatus) {
        self.layers.push((layer, status));
    }

    /// Every layer with its status, in application order.
    pub fn layers(&self) -> &[(Layer, LayerStatus)] {
        &self.layers
    }

    /// The status of `layer`.
    pub fn status(&self, layer: Layer) -> Option<&LayerStatus> {
        self.layers
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, status)| status)
    }
}

impl fmt::Display for LockdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (layer, status) in &self.layers {
            writeln!(f, "{layer}: {status}")?;
        }
        Ok(())
    }
}
