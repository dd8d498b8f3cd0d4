//! moonjail-isolate's integration tests, one binary: every check confines a child
//! (the scenario helper), never the test process itself.

mod common;

mod credentials;
mod fds;
mod landlock;
mod lockdown;
mod namespaces;
mod probe;
mod rlimits;
mod seccomp;
