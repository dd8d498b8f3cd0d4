//! The fds layer: an inherited descriptor the worker did not ask to keep is closed.

use crate::common;

use common::{command_with_extra_fd, Held};

fn open_fds(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list fds")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

#[test]
fn inherited_descriptors_are_closed() {
    let held = Held::start_command(command_with_extra_fd("hold", &[]));
    assert_eq!(open_fds(held.worker_pid()), [0, 1, 2]);
    let (status, transcript) = held.finish();
    assert_eq!(status.code(), Some(0), "{transcript:?}");
}

#[test]
fn without_the_fds_layer_the_inherited_descriptor_stays_open() {
    // The control for the test above.
    let held = Held::start_command(command_with_extra_fd("hold", &["--without", "fds"]));
    assert!(open_fds(held.worker_pid()).contains(&7));
}

#[test]
fn keeping_a_descriptor_that_is_not_open_is_an_error() {
    let outcome = common::run("report", &["--keep", "9"], "");
    assert_eq!(outcome.status.code(), Some(3), "{outcome:#?}");
    let error = outcome.value("LOCKDOWN-ERROR").unwrap_or_default();
    assert!(
        error.starts_with("the fds layer could not be applied: file descriptor 9 was asked to be kept but is not open"),
        "{error}"
    );
}
