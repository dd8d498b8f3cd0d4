//! `lockdown` as a whole: its report, its refusals, and `allow_missing`.

use crate::common;

use common::run;
use moonjail_isolate::Layer;

#[test]
fn report_lists_every_layer_in_order() {
    if !common::capabilities().all_usable() {
        eprintln!(
            "SKIP report_lists_every_layer_in_order: not every layer is available here:\n{}",
            common::capabilities()
        );
        return;
    }
    let outcome = run("report", &[], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    let reported: Vec<&str> = outcome
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("REPORT "))
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    let expected: Vec<&str> = Layer::ALL.iter().map(|layer| layer.name()).collect();
    assert_eq!(reported, expected);
    for layer in Layer::ALL {
        let status = outcome
            .value(&format!("REPORT {layer}"))
            .unwrap_or_default();
        let expected = if layer == Layer::UserNamespace && common::capabilities().running_as_root {
            "not applicable"
        } else {
            "applied"
        };
        assert!(status.starts_with(expected), "{layer}: {status}");
    }
}

#[test]
fn disabled_layers_are_reported_as_disabled() {
    let outcome = run("report", &["--without", "landlock,seccomp"], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert_eq!(
        outcome.value("REPORT landlock"),
        Some("disabled by configuration")
    );
    assert_eq!(
        outcome.value("REPORT seccomp"),
        Some("disabled by configuration")
    );
}

#[test]
fn a_second_thread_is_refused_before_anything_changes() {
    let outcome = run("report", &["--thread-before"], "");
    assert_eq!(outcome.status.code(), Some(3), "{outcome:#?}");
    assert_eq!(
        outcome.value("LOCKDOWN-ERROR"),
        Some("lockdown must run in a single-threaded process, but this one has 2 threads")
    );
}

#[test]
fn a_missing_layer_fails_unless_allowed() {
    // `--pid-existing` claims the helper was started as PID 1 of a PID namespace; it was
    // not, so the PID namespace layer cannot be applied.
    let outcome = run("report", &["--pid-existing"], "");
    assert_eq!(outcome.status.code(), Some(3), "{outcome:#?}");
    let error = outcome.value("LOCKDOWN-ERROR").unwrap_or_default();
    assert!(
        error.starts_with("the pid-namespace layer could not be applied: expected to run as PID 1"),
        "{error}"
    );
    assert!(!outcome.locked());

    let missing = common::capabilities()
        .layers
        .iter()
        .filter(|(_, a)| !a.is_usable())
        .map(|(layer, _)| layer.name())
        .chain(["pid-namespace"])
        .collect::<Vec<_>>()
        .join(",");
    let outcome = run(
        "report",
        &["--pid-existing", "--allow-missing", &missing],
        "",
    );
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert!(outcome.locked());
    let skipped = outcome.value("REPORT pid-namespace").unwrap_or_default();
    assert!(
        skipped.starts_with("skipped (allowed missing): expected to run as PID 1"),
        "{skipped}"
    );
}
