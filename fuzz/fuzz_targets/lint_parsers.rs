//! The linter's two parsers on arbitrary text: its own fast parser of valid Lua 5.4
//! (`lint/parse.rs`) and full_moon, which reads the scripts with a syntax error. Whenever
//! the fast parser accepts a source, full_moon must find no error in it and both trees
//! must be the same, offsets included (`moonjail::fuzzing::lint_parsers_agree` panics
//! with the first difference otherwise). The fast parser accepting what full_moon
//! refuses would hide a syntax error from the linter's user; a tree that differs would
//! make a finding depend on which parser read the script.
//!
//! Seeded from valid Lua (`corpus/lint_parsers/`): mutations of it are what reach the
//! interesting parts, arbitrary bytes are nearly always refused by both.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        moonjail::fuzzing::lint_parsers_agree(source);
    }
});
