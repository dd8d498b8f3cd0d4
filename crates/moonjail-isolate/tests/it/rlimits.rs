//! The rlimits layer, observed from outside through /proc/PID/limits.

use crate::common;

use common::{require, Held};
use moonjail_isolate::Layer;

/// `(soft, hard)` of one line of /proc/PID/limits.
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("{name} in {limits}"));
    let mut values = line[name.len()..].split_whitespace();
    (
        values.next().unwrap_or_default().to_owned(),
        values.next().unwrap_or_default().to_owned(),
    )
}

#[test]
fn limits_are_set_seen_from_outside() {
    if !require("limits_are_set_seen_from_outside", &[Layer::Rlimits]) {
        return;
    }
    let held = Held::start("hold", &[]);
    let worker = held.worker_pid();
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).expect("limits");
    let both = |value: &str| (value.to_owned(), value.to_owned());
    assert_eq!(limit(&limits, "Max file size"), both("0"));
    assert_eq!(limit(&limits, "Max core file size"), both("0"));
    assert_eq!(limit(&limits, "Max address space"), both("1073741824"));
    assert_eq!(limit(&limits, "Max open files"), both("64"));
    assert_eq!(limit(&limits, "Max processes"), both("256"));
    // No CPU limit by default.
    assert_eq!(limit(&limits, "Max cpu time"), both("unlimited"));
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
}
