//! The Landlock layer alone (seccomp disabled) refuses every file system access.

use crate::common;

use common::{require, run};
use moonjail_isolate::Layer;

#[test]
fn landlock_alone_blocks_the_file_system() {
    if !require("landlock_alone_blocks_the_file_system", &[Layer::Landlock]) {
        return;
    }
    let eacces = format!("errno={}", libc::EACCES);
    let outcome = run("landlock", &["--without", "seccomp"], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert!(
        outcome
            .value("REPORT landlock")
            .is_some_and(|v| v.starts_with("applied")),
        "{outcome:#?}"
    );
    assert!(
        outcome
            .value("REPORT seccomp")
            .is_some_and(|v| v.starts_with("disabled")),
        "{outcome:#?}"
    );
    for key in ["READ-FILE", "READ-DIR", "CREATE-FILE", "EXEC"] {
        assert_eq!(
            outcome.value(key),
            Some(eacces.as_str()),
            "{key}: {outcome:#?}"
        );
    }
}

#[test]
fn without_landlock_the_same_accesses_succeed() {
    // The control for the test above: it is Landlock, not the other layers, that refuses.
    let outcome = run("landlock", &["--without", "seccomp,landlock"], "");
    assert_eq!(outcome.status.code(), Some(0), "{outcome:#?}");
    assert_eq!(outcome.value("READ-FILE"), Some("ok"), "{outcome:#?}");
    assert_eq!(outcome.value("READ-DIR"), Some("ok"), "{outcome:#?}");
}
