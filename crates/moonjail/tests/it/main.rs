//! moonjail's integration tests, one binary (linking one binary per file dominated
//! `cargo test`). Tests that count what the whole test process holds (file descriptors,
//! threads, child processes, a subreaper's orphans) stay in binaries of their own:
//! `tests/soak.rs`, `tests/prepared_drop.rs`, `tests/isolated_hygiene.rs`.

mod support;

mod aos;
mod architecture;
mod check;
mod collector;
mod concurrency;
mod containment;
mod contract;
mod deadline;
mod determinism;
mod diagnostics;
mod escape;
mod identity;
mod instructions;
mod interrupt;
mod isolated;
mod isolated_aos;
mod isolated_session;
mod journal;
mod journal_session;
mod journal_untrusted;
mod json_lib;
mod libraries;
mod lint;
mod marshal;
mod metered;
mod prepared;
mod session;
mod suspend;
mod tool_schema;
mod tools;
mod tools_http;
mod tools_isolated;
