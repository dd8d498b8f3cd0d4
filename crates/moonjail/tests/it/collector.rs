//! Every state a script runs in collects: `Vm::new` stops the collector while the
//! environment is built and `engine::prepare` starts it, so a state that ran with it
//! stopped would only be saved by the emergency collection at the memory limit. Under a
//! generous limit, garbage churned far past it must keep the peak low, in every kind of
//! state: one-shot runs (fresh and prepared), sessions, deterministic (arena) or not, in
//! process and isolated, and journaled sessions.

use crate::support::both_sandboxes as both;
use moonjail::{CallOptions, Determinism, JournalWriter, Sandbox};
use serde_json::Value as Json;
use std::time::Duration;

const LIMIT: usize = 256 << 20;
/// Well over 32 MiB of short-lived tables and strings.
const CHURN: &str = "for i = 1, 3e5 do local t = {i, i, i, i, tostring(i)} end return 1";
/// The peak a collecting state stays under.
const LOW: usize = 16 << 20;

const DET: Determinism = Determinism {
    timestamp: 1_700_000_000,
    seed: 7,
};

#[test]
fn every_kind_of_state_collects_while_the_script_runs() {
    for deterministic in [None, Some(DET)] {
        for prepared in [0, 2] {
            for (mode, sb) in both(|| {
                // The churn takes a while in a debug build on a busy machine: the
                // deadline is not what this test is about.
                let b = Sandbox::builder()
                    .memory_limit(LIMIT)
                    .timeout(Duration::from_secs(120))
                    .deterministic(deterministic);
                if prepared > 0 {
                    b.prepared_states(prepared)
                } else {
                    b
                }
            }) {
                let what = format!(
                    "{mode}, deterministic {}, prepared {prepared}",
                    deterministic.is_some()
                );
                for i in 0..3 {
                    let out = sb.run(CHURN, &Json::Null);
                    assert!(out.is_ok(), "{what}: run {i}: {out:?}");
                    assert!(
                        out.stats.peak_memory_bytes < LOW,
                        "{what}: run {i}: {:?}",
                        out.stats
                    );
                }
                let mut s = sb.session().unwrap();
                for i in 0..3 {
                    let out = s.exec(CHURN);
                    assert!(out.is_ok(), "{what}: session request {i}: {out:?}");
                    assert!(
                        out.stats.peak_memory_bytes < LOW,
                        "{what}: session request {i}: {:?}",
                        out.stats
                    );
                }
                let mut j = sb
                    .session_journaled(JournalWriter::new(std::io::sink()))
                    .unwrap();
                let out = j
                    .exec_with(CHURN, &Json::Null, &CallOptions::default())
                    .unwrap();
                assert!(out.is_ok(), "{what}: journaled: {out:?}");
                assert!(
                    out.stats.peak_memory_bytes < LOW,
                    "{what}: journaled: {:?}",
                    out.stats
                );
            }
        }
    }
}
