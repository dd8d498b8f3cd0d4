//! Captured output (`print`, `io.write`): bounded by the output limit, and on overflow
//! either the end of the run (the default) or a cut that keeps the head and the tail.
//!
//! Agent frameworks usually want both ends of a flood (the first lines say what the
//! script set out to do, the last ones how it ended), so the truncating mode keeps the
//! first half of the limit and a rolling window of the last half, and reports how much
//! of the middle it dropped.

use serde::{Deserialize, Serialize};

/// What happens when a script prints more than its output limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputOverflow {
    /// The run fails with `output_limit` (the output up to the limit is kept).
    #[default]
    Fail,
    /// The run goes on; the outcome keeps the first and the last part of the output, up
    /// to the limit in all, and says what was dropped (`output_truncated`).
    Truncate,
}

/// How much output a truncating run kept and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Truncation {
    /// Bytes of the script's output kept (head and tail; the marker not counted).
    pub kept_bytes: usize,
    /// Bytes dropped from the middle.
    pub dropped_bytes: usize,
}

/// The most a truncated output's text exceeds its limit by: the newline that ends a head
/// cut mid-line and the marker line (`[... N bytes of output dropped ...]`, N at most 20
/// digits). A supervisor checking a worker's output against the limit allows this much.
pub(crate) const MARKER_MAX_BYTES: usize = 64;

/// The line that stands for the dropped middle of a truncated output.
fn marker(dropped: usize) -> String {
    format!("[... {dropped} bytes of output dropped ...]\n")
}

/// The capture buffer of one call.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// Everything, in failing mode; the first half of the limit, when truncating.
    head: Vec<u8>,
    /// When truncating: the most recent bytes past the head (at most twice the tail
    /// budget, compacted to it as it grows, so appending stays amortised O(1)).
    tail: Vec<u8>,
    /// Bytes written in all (after invalid UTF-8 was replaced).
    total: usize,
}

impl Captured {
    /// Appends `text` under `limit`; false (after keeping what fits) when the limit is
    /// reached in failing mode. Cuts fall on character boundaries.
    pub(crate) fn write(&mut self, text: &str, limit: usize, overflow: OutputOverflow) -> bool {
        self.total = self.total.saturating_add(text.len());
        let head_limit = match overflow {
            OutputOverflow::Fail => limit,
            OutputOverflow::Truncate => limit / 2,
        };
        let room = head_limit.saturating_sub(self.head.len());
        if self.tail.is_empty() && text.len() <= room {
            self.head.extend_from_slice(text.as_bytes());
            return true;
        }
        let mut end = room.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if self.tail.is_empty() {
            self.head.extend_from_slice(&text.as_bytes()[..end]);
        } else {
            end = 0;
        }
        match overflow {
            OutputOverflow::Fail => false,
            OutputOverflow::Truncate => {
                let tail_limit = limit - head_limit;
                let rest = &text.as_bytes()[end..];
                // Never hold more than two tails: keep the last `tail_limit` bytes of the
                // rest, then compact.
                let keep = rest.len().min(tail_limit);
                self.tail.extend_from_slice(&rest[rest.len() - keep..]);
                if self.tail.len() > 2 * tail_limit.max(1) {
                    let cut = self.tail.len() - tail_limit;
                    self.tail.drain(..cut);
                }
                true
            }
        }
    }

    /// Bytes written in all.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// The captured text, and what was dropped when it was cut. Resets the buffer.
    pub(crate) fn take(&mut self, limit: usize) -> (String, Option<Truncation>) {
        let this = std::mem::take(self);
        let mut head = this.head;
        if this.tail.is_empty() {
            return (String::from_utf8(head).unwrap_or_default(), None);
        }
        let tail_limit = limit - limit / 2;
        let mut tail = this.tail.as_slice();
        if tail.len() > tail_limit {
            tail = &tail[tail.len() - tail_limit..];
        }
        // The window may start inside a character: start at the next one.
        while let Some((&b, rest)) = tail.split_first() {
            if b & 0xC0 != 0x80 {
                break;
            }
            tail = rest;
        }
        let kept = head.len() + tail.len();
        let dropped = this.total - kept;
        if dropped == 0 {
            head.extend_from_slice(tail);
            return (String::from_utf8(head).unwrap_or_default(), None);
        }
        let mut text = String::from_utf8(head).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&marker(dropped));
        text.push_str(&String::from_utf8_lossy(tail));
        (
            text,
            Some(Truncation {
                kept_bytes: kept,
                dropped_bytes: dropped,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_mode_keeps_what_fits() {
        let mut c = Captured::default();
        assert!(c.write("hello ", 8, OutputOverflow::Fail));
        assert!(!c.write("world", 8, OutputOverflow::Fail));
        assert_eq!(c.total(), 11);
        assert_eq!(c.take(8), ("hello wo".to_string(), None));
    }

    #[test]
    fn the_marker_fits_its_bound() {
        assert!(
            marker(usize::MAX).len() < MARKER_MAX_BYTES,
            "room for the newline too"
        );
    }

    #[test]
    fn truncating_keeps_head_and_tail() {
        let mut c = Captured::default();
        for i in 0..1000 {
            assert!(c.write(&format!("line {i}\n"), 40, OutputOverflow::Truncate));
        }
        let total = c.total();
        let (text, cut) = c.take(40);
        let cut = cut.unwrap();
        assert!(text.starts_with("line 0\nline 1\n"), "{text}");
        assert!(text.ends_with("line 999\n"), "{text}");
        assert_eq!(cut.kept_bytes + cut.dropped_bytes, total);
        assert!(cut.kept_bytes <= 40);
        assert!(text.contains(&format!("[... {} bytes", cut.dropped_bytes)));
    }

    #[test]
    fn truncating_under_the_limit_is_whole() {
        let mut c = Captured::default();
        assert!(c.write("abc", 40, OutputOverflow::Truncate));
        assert!(c.write("def", 40, OutputOverflow::Truncate));
        assert_eq!(c.take(40), ("abcdef".to_string(), None));
    }

    #[test]
    fn cuts_fall_on_characters() {
        let mut c = Captured::default();
        let text = "é".repeat(100);
        assert!(c.write(&text, 11, OutputOverflow::Truncate));
        let (kept, cut) = c.take(11);
        assert!(cut.is_some());
        assert!(!kept.contains('\u{FFFD}'), "{kept}");
        assert!(kept.starts_with("éé"));
        assert!(kept.ends_with("éé"));
    }
}
