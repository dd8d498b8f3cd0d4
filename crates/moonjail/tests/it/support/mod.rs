//! What several test modules share: the worker executable and what this machine can
//! apply of the isolation layers, plus fixtures.

#![allow(dead_code)]

use std::sync::{mpsc, OnceLock};
use std::time::Duration;

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

/// Runs `body` on a helper thread and waits at most `limit`: a test whose subject hangs
/// (a supervisor, a deadline that never fires) fails instead of hanging the suite.
pub fn guarded<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung for {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test body panicked"),
    }
}

/// `v` as a script sees it by default: object fields that are null are absent (JSON null
/// is nil there), array elements keep their place.
pub fn without_null_fields(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match v {
        Json::Object(map) => Json::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_null_fields(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(without_null_fields).collect()),
        other => other.clone(),
    }
}

/// Isolation in worker processes of this build's worker, one at a time, allowing the
/// layers this machine lacks.
pub fn one_worker() -> moonjail::Isolation {
    moonjail::Isolation::Process(
        moonjail::ProcessConfig::builder()
            .worker(moonjail::WorkerPath::Path(WORKER.into()))
            .allow_missing(unusable())
            .pool_size(1)
            .build()
            .expect("a process config"),
    )
}

/// Both isolation modes, each with its name for assertion messages.
pub fn both_modes() -> [(&'static str, moonjail::Isolation); 2] {
    [
        ("in process", moonjail::Isolation::InProcess),
        ("isolated", one_worker()),
    ]
}

/// The same configuration built in each isolation mode ([`both_modes`]).
pub fn both_sandboxes(
    builder: impl Fn() -> moonjail::SandboxBuilder,
) -> [(&'static str, moonjail::Sandbox); 2] {
    both_modes().map(|(mode, isolation)| {
        (
            mode,
            builder().isolation(isolation).build().expect("a sandbox"),
        )
    })
}
