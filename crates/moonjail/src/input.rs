//! Untrusted JSON text to values, within a depth and a host-memory bound.
//!
//! A JSON value costs the host far more than its text: `[{},{},...]` is 3 bytes an
//! element as text and ~40 as `serde_json::Value`s; a session request or a worker's
//! answer of a few megabytes could make the host allocate a gigabyte before any limit
//! applied. So the text is scanned first (a single pass, no allocation): its nesting is
//! checked against the depth bound and its parsed size estimated against the host bound;
//! only then is it parsed. Every front end and the supervisor parse what they did not
//! write through here.

use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind};
use crate::limits::Limits;

/// Host bytes of one parsed JSON value beyond its text (the `Value` itself).
const VALUE_BYTES: u64 = std::mem::size_of::<Json>() as u64;
/// Host bytes of one object entry beyond its key's text (the key `String`, the map's
/// share of a B-tree node).
const ENTRY_BYTES: u64 = std::mem::size_of::<String>() as u64 + 24;

/// What a scan of JSON text found: its deepest nesting and an estimate of what parsing
/// it would allocate.
struct Shape {
    depth: usize,
    host_bytes: u64,
}

/// Scans `bytes` (which may be invalid: the parser reports the rest).
fn shape(bytes: &[u8]) -> Shape {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut values, mut entries) = (1u64, 0u64);
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                values += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            b':' => entries += 1,
            _ => {}
        }
    }
    Shape {
        depth: deepest,
        host_bytes: (bytes.len() as u64)
            .saturating_add(values.saturating_mul(VALUE_BYTES))
            .saturating_add(entries.saturating_mul(ENTRY_BYTES)),
    }
}

/// Parses `bytes` as one JSON value nesting at most `max_depth` levels and taking at
/// most about `host_bytes` once parsed.
///
/// # Errors
/// A message naming the bound that was passed, or the parser's.
pub(crate) fn parse_bounded(
    bytes: &[u8],
    max_depth: usize,
    host_bytes: u64,
) -> Result<Json, String> {
    let shape = shape(bytes);
    if shape.depth > max_depth {
        return Err(format!(
            "JSON nested {} levels deep, over the maximum of {max_depth}",
            shape.depth
        ));
    }
    if shape.host_bytes > host_bytes {
        return Err(format!(
            "JSON that would take about {} bytes of memory once parsed, over the {host_bytes} \
             byte limit",
            shape.host_bytes
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Nesting was checked above; serde's own fixed limit (128) is below what
    // `result_depth` may allow.
    de.disable_recursion_limit();
    let value = stacker::maybe_grow(64 << 10, 1 << 20, || Json::deserialize(&mut de))
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Parses a run's input (or a session call's arguments) from JSON text under `limits`:
/// nesting at most `result_depth`, and parsed into no more host memory than the memory
/// limit lets the script's own heap take. Front ends parse what their callers send
/// through this rather than `serde_json::from_slice`.
///
/// # Errors
/// An [`ErrorKind::Input`] error saying what was wrong.
pub fn parse_input(text: &[u8], limits: &Limits) -> Result<Json, Error> {
    // Two levels of slack: a session request wraps a call's arguments in an object and
    // an array; the engine checks each value's own depth exactly.
    let depth = limits.result_depth.saturating_add(2);
    let host = limits.memory_bytes.map_or(u64::MAX, |m| m as u64);
    parse_bounded(text, depth, host).map_err(|e| Error::new(ErrorKind::Input, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_size_are_checked_before_parsing() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(parse_bounded(deep.as_bytes(), 299, u64::MAX).is_err());
        assert!(parse_bounded(deep.as_bytes(), 300, u64::MAX).is_ok());
        assert!(parse_bounded(b"[1] x", 10, u64::MAX).is_err());
        // Brackets inside strings do not count.
        assert!(parse_bounded(br#"["[[[[", "{{{{"]"#, 1, u64::MAX).is_ok());
        let many = format!("[{}{{}}]", "{},".repeat(100_000));
        let e = parse_bounded(many.as_bytes(), 10, 1 << 20).unwrap_err();
        assert!(e.contains("memory"), "{e}");
        assert!(parse_bounded(many.as_bytes(), 10, 64 << 20).is_ok());
    }

    #[test]
    fn the_estimate_is_not_below_what_parsing_takes() {
        // 100,000 empty objects: at least a Value each.
        let many = format!("[{}{{}}]", "{},".repeat(100_000));
        assert!(shape(many.as_bytes()).host_bytes >= 100_000 * VALUE_BYTES);
    }
}
