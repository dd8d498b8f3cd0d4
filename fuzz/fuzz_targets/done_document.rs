//! `Done` frames from a (compromised) worker through the supervisor's `decode_done`:
//! the metadata JSON (error, stats, diagnostics: well-formed, mangled or raw bytes), the
//! result JSON around the depth limit (nesting made of arrays, objects and strings that
//! hold brackets) and the output bytes, with sections missing or extra.
//!
//! Must hold: no panic and no stack overflow (the depth is checked before parsing); a
//! worker's error is passed through as it was sent; an accepted result nests no deeper
//! than `result_depth + 1`; the output is the section's bytes, made valid UTF-8; the
//! outcome serialises (`to_json_line`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value as Json};

#[derive(Arbitrary, Debug)]
enum Meta {
    Raw(Vec<u8>),
    Ok {
        secs: u64,
        nanos: u32,
        memory: u64,
        instructions: Option<u64>,
        diagnostics: Option<Vec<(String, u64, bool)>>,
    },
    Err {
        kind: u8,
        message: String,
        line: Option<u32>,
    },
    /// A well-formed document with one byte changed.
    Mangled {
        at: u16,
        byte: u8,
    },
}

const KINDS: &[&str] = &[
    "syntax",
    "runtime",
    "memory_limit",
    "instruction_limit",
    "timeout",
    "output_limit",
    "input",
    "result",
    "forbidden",
    "killed",
    "internal",
    "Runtime",
    "",
];

#[derive(Arbitrary, Debug)]
enum Nest {
    Array,
    Object,
    /// An array holding a string full of brackets first.
    Tricky,
}

#[derive(Arbitrary, Debug)]
enum ResultText {
    Raw(Vec<u8>),
    /// `levels` of nesting (modulo 1100), closed or not, around `leaf`.
    Nested {
        levels: u16,
        nest: Nest,
        leaf: String,
        closed: bool,
        trailing: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    meta: Meta,
    result: ResultText,
    output: Vec<u8>,
    /// How many sections the frame has (0 to 4; a worker sends 4, the last empty
    /// unless the script returned several values).
    sections: u8,
    depth: u8,
}

fn meta_bytes(meta: &Meta) -> Vec<u8> {
    let ok = |secs: u64, nanos: u32, memory: u64, instructions: Option<u64>, diag: Json| {
        json!({"error": null,
               "stats": {"wall_ms": secs as f64 * 1e3 + f64::from(nanos) / 1e6,
                         "memory_bytes": memory, "peak_memory_bytes": memory,
                         "instructions": instructions, "output_bytes": 0, "tool_calls": 0,
                         "limits": {"wall_ms": null, "memory_bytes": null,
                                    "instructions": instructions, "output_bytes": null,
                                    "tool_calls": null}},
               "diagnostics": diag})
    };
    let doc = match meta {
        Meta::Raw(bytes) => return bytes.clone(),
        Meta::Ok {
            secs,
            nanos,
            memory,
            instructions,
            diagnostics,
        } => {
            let diag = match diagnostics {
                None => Json::Null,
                Some(items) => {
                    let map: serde_json::Map<String, Json> = items
                        .iter()
                        .map(|(name, count, _)| (name.clone(), json!(count)))
                        .collect();
                    let require: Vec<Json> = items
                        .iter()
                        .map(|(name, _, found)| json!({"name": name, "found": found}))
                        .collect();
                    json!({"globals_read": map, "globals_written": {}, "library": map,
                           "missing": {}, "require": require})
                }
            };
            ok(*secs, *nanos, *memory, *instructions, diag)
        }
        Meta::Err {
            kind,
            message,
            line,
        } => json!({"error": {"kind": KINDS[usize::from(*kind) % KINDS.len()],
                              "message": message, "line": line},
                    "stats": {"wall_ms": 0.005, "memory_bytes": 1, "instructions": null}}),
        Meta::Mangled { at, byte } => {
            let mut bytes = serde_json::to_vec(&ok(1, 2, 3, Some(4), Json::Null)).unwrap();
            let at = usize::from(*at) % bytes.len();
            bytes[at] = *byte;
            return bytes;
        }
    };
    serde_json::to_vec(&doc).unwrap()
}

fn result_bytes(result: &ResultText) -> Vec<u8> {
    match result {
        ResultText::Raw(bytes) => bytes.clone(),
        ResultText::Nested {
            levels,
            nest,
            leaf,
            closed,
            trailing,
        } => {
            let levels = usize::from(*levels) % 1100;
            let (open, close): (&[u8], &[u8]) = match nest {
                Nest::Array => (b"[", b"]"),
                Nest::Object => (b"{\"k\":", b"}"),
                Nest::Tricky => (b"[\"]]}\\\"[[{\",", b"]"),
            };
            let mut out = open.repeat(levels);
            out.extend_from_slice(&serde_json::to_vec(leaf).unwrap());
            if *closed {
                out.extend_from_slice(&close.repeat(levels));
            }
            out.extend_from_slice(trailing);
            out
        }
    }
}

fn depth(v: &Json) -> usize {
    // Iterative, so that checking a deep value cannot overflow the stack itself.
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Json::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Json::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|input: Input| {
    let depth_limit = match input.depth % 6 {
        0 => 0,
        1 => 1,
        2 => 64,
        3 => 128,
        4 => 255,
        _ => 1024,
    };
    let meta = meta_bytes(&input.meta);
    let result = result_bytes(&input.result);
    let all: [&[u8]; 4] = [&meta, &result, &input.output, b"extra"];
    let sections = &all[..usize::from(input.sections % 5)];
    let expected_error = match &input.meta {
        Meta::Err { .. } => serde_json::from_slice::<Json>(&meta).unwrap()["error"].clone(),
        _ => Json::Null,
    };
    match moonjail::fuzzing::decode_done(sections, depth_limit) {
        Err(message) => assert!(!message.is_empty()),
        Ok(outcome) => {
            assert!(sections.len() >= 3);
            assert_eq!(outcome.output, String::from_utf8_lossy(&input.output));
            match &outcome.result {
                Ok(value) => {
                    assert!(depth(value) <= depth_limit + 1, "depth {}", depth(value));
                }
                Err(error) => {
                    if !expected_error.is_null() {
                        // What the worker said, bounded; the fields it did not send
                        // take their defaults.
                        let got = serde_json::to_value(error).unwrap();
                        for key in ["kind", "message", "line"] {
                            assert_eq!(got[key], expected_error[key], "{key}");
                        }
                        assert_eq!(got["traceback"], serde_json::json!([]));
                    }
                }
            }
            let line = moonjail::to_json_line(&outcome);
            assert!(!line.is_empty());
        }
    }
});
