//! The `moonjail` command line, through the built binary: one test binary, one harness
//! (`support`), one module per command.

// The example's own server code, so the tools tests run against exactly what the README
// starts.
#[allow(dead_code)]
#[path = "../../examples/fixture_server.rs"]
mod fixture_server;

mod backstop;
mod catalogue;
mod contract;
mod corpus;
mod determinism;
mod isolated;
mod journal;
mod json_errors;
mod lint;
mod mcp;
mod pipes;
mod profile;
mod run;
mod serve;
mod session;
mod session_journal;
mod support;
mod suspend;
mod tools;
