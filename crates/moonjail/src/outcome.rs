//! What a run produced, and its one JSON shape: `Outcome`'s `Serialize` is the document
//! `moonjail run --json` prints, the worker protocol's answers carry and every front end
//! returns.

use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::diag::Diagnostics;
use crate::error::Error;
use crate::lint::LintReport;
use crate::tools::ToolCall;

/// What a run produced: the result or the error, the captured output and statistics.
/// Output and statistics are there whether the run succeeded or not.
///
/// Serialised (the `--json` contract), it is
/// `{"ok", "result", "output", "error": {"kind", "message", "line"} | null, "stats":
/// {"wall_ms", "memory_bytes", "instructions"}}`, plus `"diagnostics"` in diagnostic mode,
/// `"tool_calls"` when the script called host tools and `"lint"` when it was linted first.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an outcome says whether the script failed"]
#[non_exhaustive]
pub struct Outcome {
    /// The JSON result, or why there is none.
    pub result: Result<Json, Error>,
    /// Everything the script printed (invalid UTF-8 replaced), up to the output limit.
    pub output: String,
    /// Measurements of the run.
    pub stats: Stats,
    /// What the script touched, when the sandbox runs in diagnostic mode.
    pub diagnostics: Option<Diagnostics>,
    /// Every host tool call the script made, in order (see [`ToolCall`]).
    pub tool_calls: Vec<ToolCall>,
    /// The linter's report, when the run was linted first (`run --lint`); with error
    /// findings the script was not run and the error is of kind `lint`.
    pub lint: Option<LintReport>,
}

/// Measurements of one run.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Wall-clock time, from the start of the run to its outcome (marshaling included).
    pub wall: Duration,
    /// Peak Lua heap, in bytes.
    pub memory_bytes: usize,
    /// Instructions used, when an instruction limit was set: VM instructions executed
    /// plus moonjail's native work in the same units (one per element or value, one per
    /// 64 bytes copied; conversion to JSON included). Exact: the least limit under which
    /// the run would have succeeded.
    pub instructions: Option<u64>,
}

impl Outcome {
    /// An outcome with nothing but `result` and the time it took: a request answered
    /// without running a script, or one refused before any script ran.
    pub(crate) fn bare(result: Result<Json, Error>, wall: Duration) -> Outcome {
        Outcome {
            result,
            output: String::new(),
            stats: Stats {
                wall,
                ..Stats::default()
            },
            diagnostics: None,
            tool_calls: Vec::new(),
            lint: None,
        }
    }

    /// [`Outcome::bare`] of an error.
    pub(crate) fn failed(error: Error, wall: Duration) -> Outcome {
        Outcome::bare(Err(error), wall)
    }

    /// The outcome of a request refused before any script ran (a front end's usage
    /// error, say): `error`, no output, zero stats. Front ends build every error
    /// document from this, so it has the one shape of the contract.
    pub fn from_error(error: Error) -> Outcome {
        Outcome::failed(error, Duration::ZERO)
    }

    /// True when the run succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The error, if the run failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }

    /// The `--json` document as a value: the same as serialising the outcome, built
    /// directly (a deep result is cloned, not run through a serialiser, which recurses
    /// with far larger frames).
    pub fn to_json(&self) -> Json {
        let (result, error) = match &self.result {
            Ok(value) => (value.clone(), Json::Null),
            Err(e) => (Json::Null, serde_json::to_value(e).unwrap_or(Json::Null)),
        };
        let mut doc = serde_json::Map::new();
        doc.insert("ok".into(), Json::Bool(self.result.is_ok()));
        doc.insert("result".into(), result);
        doc.insert("output".into(), Json::String(self.output.clone()));
        doc.insert("error".into(), error);
        doc.insert(
            "stats".into(),
            serde_json::to_value(&self.stats).unwrap_or(Json::Null),
        );
        if let Some(d) = &self.diagnostics {
            doc.insert(
                "diagnostics".into(),
                serde_json::to_value(d).unwrap_or(Json::Null),
            );
        }
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.iter().map(ToolCall::to_json).collect();
            doc.insert("tool_calls".into(), Json::Array(calls));
        }
        if let Some(report) = &self.lint {
            doc.insert(
                "lint".into(),
                serde_json::to_value(report).unwrap_or(Json::Null),
            );
        }
        Json::Object(doc)
    }
}

/// `value` as one line of JSON that stays one line for every reader: compact, and with
/// U+2028, U+2029 and U+0085 escaped, which JSON allows raw but which line splitters that
/// honour Unicode line breaks (JavaScript's, Python's `str.splitlines`) cut at. Every
/// JSON-lines front end writes its documents with this.
pub fn to_json_line(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, LineFormatter);
    match value.serialize(&mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => format!(
            "{{\"ok\":false,\"result\":null,\"output\":\"\",\"error\":{{\"kind\":\"internal\",\"message\":{},\"line\":null}},\"stats\":null}}",
            Json::String(format!("encoding a document: {e}"))
        ),
    }
}

/// serde_json's compact format, with the Unicode line separators escaped.
struct LineFormatter;

impl serde_json::ser::Formatter for LineFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['\u{85}', '\u{2028}', '\u{2029}']) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or('\u{2028}');
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ok", &self.result.is_ok())?;
        match &self.result {
            Ok(value) => {
                map.serialize_entry("result", value)?;
                map.serialize_entry("output", &self.output)?;
                map.serialize_entry("error", &Json::Null)?;
            }
            Err(error) => {
                map.serialize_entry("result", &Json::Null)?;
                map.serialize_entry("output", &self.output)?;
                map.serialize_entry("error", error)?;
            }
        }
        map.serialize_entry("stats", &self.stats)?;
        if let Some(d) = &self.diagnostics {
            map.serialize_entry("diagnostics", d)?;
        }
        if !self.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &self.tool_calls)?;
        }
        if let Some(report) = &self.lint {
            map.serialize_entry("lint", report)?;
        }
        map.end()
    }
}

/// The wire and document shape of [`Stats`]: milliseconds, rounded to microseconds.
#[derive(Serialize, Deserialize)]
struct StatsDoc {
    wall_ms: f64,
    memory_bytes: usize,
    instructions: Option<u64>,
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StatsDoc {
            wall_ms: (self.wall.as_secs_f64() * 1e6).round() / 1e3,
            memory_bytes: self.memory_bytes,
            instructions: self.instructions,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let doc = StatsDoc::deserialize(deserializer)?;
        Ok(Stats {
            wall: Duration::try_from_secs_f64(doc.wall_ms / 1e3).unwrap_or_default(),
            memory_bytes: doc.memory_bytes,
            instructions: doc.instructions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn serialize_is_the_json_contract() {
        let ok = Outcome::bare(Ok(serde_json::json!({"a": 1})), Duration::from_micros(1500));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"ok": true, "result": {"a": 1}, "output": "", "error": null,
                "stats": {"wall_ms": 1.5, "memory_bytes": 0, "instructions": null}})
        );
        let failed = Outcome::failed(Error::new(ErrorKind::Timeout, "late"), Duration::ZERO);
        let doc = failed.to_json();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["result"], Json::Null);
        assert_eq!(
            doc["error"],
            serde_json::json!({"kind": "timeout", "message": "late", "line": null})
        );
        assert!(doc.get("tool_calls").is_none() && doc.get("diagnostics").is_none());
        assert_eq!(serde_json::to_value(&failed).unwrap(), doc);
        // With every optional part: `to_json` (built directly, for deep results) and
        // `Serialize` (written to lines) must stay the same document.
        let mut full = Outcome::bare(
            Ok(serde_json::json!([1, {"a": null}])),
            Duration::from_millis(3),
        );
        full.output = "printed\n".into();
        full.stats.instructions = Some(7);
        full.diagnostics = Some(Diagnostics::default());
        full.tool_calls.push(ToolCall {
            name: "t.x".into(),
            duration: Duration::from_micros(1500),
            ok: false,
            error: Some("no".into()),
            bytes_in: 2,
            bytes_out: 0,
        });
        full.lint = Some(crate::lint::LintReport::default());
        assert_eq!(serde_json::to_value(&full).unwrap(), full.to_json());
        assert!(full.to_json()["lint"]["findings"].is_array());
        let line: Json = serde_json::from_str(&to_json_line(&full)).unwrap();
        assert_eq!(line, full.to_json());
    }

    #[test]
    fn json_lines_escape_unicode_line_breaks() {
        let value = serde_json::json!({"s": "a\u{2028}b\u{2029}c\u{85}d\né"});
        let line = to_json_line(&value);
        assert_eq!(line, r#"{"s":"a\u2028b\u2029c\u0085d\né"}"#);
        assert_eq!(serde_json::from_str::<Json>(&line).unwrap(), value);
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn escaped_len_is_the_written_length() {
        for text in [
            "",
            "plain",
            "q\"b\\",
            "\u{1}\n\t\u{8}\u{c}\r",
            "é€😀",
            "a\u{2028}b\u{2029}\u{85}c",
        ] {
            let written = to_json_line(&Json::String(text.to_string()));
            assert_eq!(crate::marshal::escaped_len(text), written.len(), "{text:?}");
        }
    }

    #[test]
    fn stats_round_trip() {
        let stats = Stats {
            wall: Duration::from_micros(2500),
            memory_bytes: 10,
            instructions: Some(3),
        };
        let back: Stats = serde_json::from_value(serde_json::to_value(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
    }
}
