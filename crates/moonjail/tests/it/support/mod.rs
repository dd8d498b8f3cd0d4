//! What several test modules share: the worker executable and what this machine can
//! apply of the isolation layers, plus fixtures.

#![allow(dead_code)]

use std::sync::OnceLock;

use moonjail::worker::{Capabilities, LayerSet};

pub mod fake_worker;
pub mod healthy;
pub mod tool_fixtures;

/// The worker executable built with this crate.
pub const WORKER: &str = env!("CARGO_BIN_EXE_moonjail-worker");

/// What this machine can apply, probed once.
pub fn capabilities() -> &'static Capabilities {
    static CAPABILITIES: OnceLock<Capabilities> = OnceLock::new();
    CAPABILITIES.get_or_init(moonjail::worker::probe)
}

/// The layers this machine cannot apply: allowed to be missing, so that the tests about
/// the other layers still run.
pub fn unusable() -> LayerSet {
    capabilities()
        .layers
        .iter()
        .filter(|(_, availability)| !availability.is_usable())
        .map(|(layer, _)| *layer)
        .collect()
}
