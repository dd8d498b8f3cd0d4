//! `moonjail lint`: static analysis of a script against the exact sandbox it would run in.
//!
//! The runtime allowlist is the security boundary and stays so; the linter is feedback
//! before a run, so that a model (or a plugin author) learns in one step what the sandbox
//! does not have and where the script breaks.

#![allow(dead_code)] // Filled in by the commits that build the linter on these parts.

pub(crate) mod hints;
mod lex;
