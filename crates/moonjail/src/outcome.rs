//! What a run produced, and its one JSON shape: `Outcome`'s `Serialize` is the document
//! `moonjail run --json` prints, the worker protocol's answers carry and every front end
//! returns.

use std::time::Duration;

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
/// `{"ok", "result", "results", "output", "error": {"kind", "message", "line",
/// "traceback", ...} | null, "stats": {...}}`, plus `"diagnostics"` in diagnostic mode
/// `"tool_calls"` when the script called host tools and `"lint"` when it was
/// linted first. `results` lists every value
/// the script returned; `result` is the first (`null` when there is none).
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an outcome says whether the script failed"]
#[non_exhaustive]
pub struct Outcome {
    /// The JSON result (the first value returned), or why there is none.
    pub result: Result<Json, Error>,
    /// The values returned after the first (`return nil, "not found"` puts
    /// `"not found"` here). Kept apart so that the common single result is never copied.
    pub more_results: Vec<Json>,
    /// How many values the script returned: 0 for a bare `return` (then `result` is
    /// `null` and the document's `results` is `[]`), else `1 + more_results.len()`.
    pub result_count: usize,
    /// Everything the script printed (invalid UTF-8 replaced), up to the output limit;
    /// with [`crate::OutputOverflow::Truncate`], its head and tail around a marker line.
    pub output: String,
    /// What was dropped from the middle of the output, when it was truncated.
    pub output_truncated: Option<crate::Truncation>,
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

/// Measurements of one run: for each limit, what was used, and the limit itself (in
/// [`Stats::limits`]), so a caller (or a model) sees how close the run came.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Wall-clock time, from the start of the run to its outcome (marshaling included).
    pub wall: Duration,
    /// Lua heap in use when the call ended, in bytes: for a session, what the state
    /// keeps between calls.
    pub memory_bytes: usize,
    /// Peak Lua heap during the call, in bytes: what the memory limit is checked
    /// against.
    pub peak_memory_bytes: usize,
    /// Instructions used, when an instruction limit was set: VM instructions executed
    /// plus moonjail's native work in the same units (one per element or value, one per
    /// 64 bytes copied; conversion to JSON included). Exact: the least limit under which
    /// the run would have succeeded.
    pub instructions: Option<u64>,
    /// Bytes the script printed (as captured, before any truncation).
    pub output_bytes: usize,
    /// Host tool calls the script made (refused ones included).
    pub tool_calls: usize,
    /// The limits the call ran under; `None` in each field means unlimited.
    pub limits: Budget,
}

/// The limits a call ran under, beside what it used (see [`Stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// The wall-clock deadline.
    pub wall: Option<Duration>,
    /// The memory limit, in bytes.
    pub memory_bytes: Option<usize>,
    /// The instruction budget.
    pub instructions: Option<u64>,
    /// The output limit, in bytes.
    pub output_bytes: Option<usize>,
    /// Tool calls allowed per run.
    pub tool_calls: Option<u32>,
}

impl Outcome {
    /// An outcome with nothing but `result` and the time it took: a request answered
    /// without running a script, or one refused before any script ran.
    pub(crate) fn bare(result: Result<Json, Error>, wall: Duration) -> Outcome {
        let result_count = usize::from(result.is_ok());
        Outcome {
            result,
            more_results: Vec::new(),
            result_count,
            output: String::new(),
            output_truncated: None,
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

    /// The outcome of a script that linting refused (`run --lint`, `lint=True`): error
    /// kind `lint` with the report's summary, and the report; the script did not run.
    pub fn refused_by_lint(report: LintReport) -> Outcome {
        let error = Error::new(crate::ErrorKind::Lint, report.summary());
        let mut outcome = Outcome::from_error(error);
        outcome.lint = Some(report);
        outcome
    }

    /// True when the run succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The error, if the run failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }

    /// Every value the script returned, in order (empty when it failed or returned
    /// nothing): the document's `results`.
    pub fn results(&self) -> Vec<&Json> {
        match &self.result {
            Ok(first) if self.result_count > 0 => {
                std::iter::once(first).chain(&self.more_results).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The `--json` document as a value: the same as serialising the outcome, built
    /// directly (a deep result is cloned, not run through a serialiser, which recurses
    /// with far larger frames).
    pub fn to_json(&self) -> Json {
        let (result, error) = match &self.result {
            Ok(value) => (value.clone(), Json::Null),
            Err(e) => (Json::Null, serde_json::to_value(e).unwrap_or(Json::Null)),
        };
        let results = self.results().into_iter().cloned().collect();
        let mut doc = serde_json::Map::new();
        doc.insert("ok".into(), Json::Bool(self.result.is_ok()));
        doc.insert("result".into(), result);
        doc.insert("results".into(), Json::Array(results));
        doc.insert("output".into(), Json::String(self.output.clone()));
        doc.insert(
            "output_truncated".into(),
            serde_json::to_value(self.output_truncated).unwrap_or(Json::Null),
        );
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

/// The JSON document of an [`Outcome`], borrowed from it: `Outcome`'s `Serialize` writes
/// exactly this, so the document has one definition. With the `schema` feature it also
/// derives its OpenAPI schema (`utoipa::ToSchema`, named `Outcome`), so a front end that
/// describes its API (the HTTP service) describes the document from the type that writes
/// it. ([`Outcome::to_json`] builds the same document as a value without a serialiser,
/// for deep results; the tests below keep the two equal.)
#[derive(Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema), schema(as = Outcome))]
pub struct OutcomeDoc<'a> {
    /// True when the run succeeded.
    ok: bool,
    /// The first value the script returned; `null` when it failed or returned nothing.
    #[cfg_attr(feature = "schema", schema(value_type = serde_json::Value))]
    result: &'a Json,
    /// Every value the script returned, in order (`[]` when it failed).
    #[cfg_attr(feature = "schema", schema(value_type = Vec<serde_json::Value>))]
    results: Vec<&'a Json>,
    /// Everything the script printed, up to the output limit.
    output: &'a str,
    /// What was dropped from the middle of the output, when it was truncated.
    output_truncated: Option<crate::Truncation>,
    /// Why the run failed; `null` when it succeeded.
    error: Option<&'a Error>,
    /// Measurements of the run, and the limits it ran under.
    #[cfg_attr(feature = "schema", schema(value_type = StatsDoc))]
    stats: &'a Stats,
    /// What the script touched, in diagnostic mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(nullable = false))]
    diagnostics: Option<&'a Diagnostics>,
    /// The host tool calls the script made, when it made some.
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Vec<ToolCallDoc>>, nullable = false))]
    tool_calls: &'a [ToolCall],
    /// The linter's report, when the run was linted first (`run --lint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(nullable = false))]
    lint: Option<&'a LintReport>,
}

/// The document shape of a [`ToolCall`] (which serialises through
/// [`ToolCall::to_json`]), for the schema only.
#[cfg(feature = "schema")]
#[derive(utoipa::ToSchema)]
#[schema(as = ToolCall)]
#[allow(dead_code)]
struct ToolCallDoc {
    /// The tool's registered name, e.g. `http.get`.
    name: String,
    /// Time spent in the call, in milliseconds.
    ms: f64,
    /// True when the tool returned a value.
    ok: bool,
    /// The tool error's message, when it failed.
    error: Option<String>,
    /// Size of the arguments as JSON text, in bytes.
    bytes_in: u64,
    /// Size of the result as JSON text, in bytes; 0 on error.
    bytes_out: u64,
}

/// `null`, for the result of a failed run.
const NULL: &Json = &Json::Null;

impl Outcome {
    /// The outcome's JSON document, borrowed (see [`OutcomeDoc`]).
    pub fn doc(&self) -> OutcomeDoc<'_> {
        let (result, error) = match &self.result {
            Ok(value) => (value, None),
            Err(error) => (NULL, Some(error)),
        };
        OutcomeDoc {
            ok: self.result.is_ok(),
            result,
            results: self.results(),
            output: &self.output,
            output_truncated: self.output_truncated,
            error,
            stats: &self.stats,
            diagnostics: self.diagnostics.as_ref(),
            tool_calls: &self.tool_calls,
            lint: self.lint.as_ref(),
        }
    }
}

impl OutcomeDoc<'_> {
    /// The document without its `tool_calls` (a journal's `end` line: its `tool` lines
    /// record the calls).
    pub(crate) fn without_tool_calls(mut self) -> Self {
        self.tool_calls = &[];
        self
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.doc().serialize(serializer)
    }
}

/// The wire and document shape of [`Stats`]: milliseconds, rounded to microseconds.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema), schema(as = Stats))]
struct StatsDoc {
    wall_ms: f64,
    memory_bytes: usize,
    #[serde(default)]
    peak_memory_bytes: usize,
    instructions: Option<u64>,
    #[serde(default)]
    output_bytes: usize,
    #[serde(default)]
    tool_calls: usize,
    #[serde(default)]
    limits: BudgetDoc,
}

/// The document shape of [`Budget`], in the units of [`StatsDoc`].
#[derive(Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema), schema(as = Budget))]
struct BudgetDoc {
    wall_ms: Option<f64>,
    memory_bytes: Option<usize>,
    instructions: Option<u64>,
    output_bytes: Option<usize>,
    tool_calls: Option<u32>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn from_millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1e3).unwrap_or_default()
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let b = &self.limits;
        StatsDoc {
            wall_ms: millis(self.wall),
            memory_bytes: self.memory_bytes,
            peak_memory_bytes: self.peak_memory_bytes,
            instructions: self.instructions,
            output_bytes: self.output_bytes,
            tool_calls: self.tool_calls,
            limits: BudgetDoc {
                wall_ms: b.wall.map(millis),
                memory_bytes: b.memory_bytes,
                instructions: b.instructions,
                output_bytes: b.output_bytes,
                tool_calls: b.tool_calls,
            },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let doc = StatsDoc::deserialize(deserializer)?;
        let b = doc.limits;
        Ok(Stats {
            wall: from_millis(doc.wall_ms),
            memory_bytes: doc.memory_bytes,
            peak_memory_bytes: doc.peak_memory_bytes,
            instructions: doc.instructions,
            output_bytes: doc.output_bytes,
            tool_calls: doc.tool_calls,
            limits: Budget {
                wall: b.wall_ms.map(from_millis),
                memory_bytes: b.memory_bytes,
                instructions: b.instructions,
                output_bytes: b.output_bytes,
                tool_calls: b.tool_calls,
            },
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
            serde_json::json!({"ok": true, "result": {"a": 1}, "results": [{"a": 1}],
                "output": "", "output_truncated": null, "error": null,
                "stats": {"wall_ms": 1.5, "memory_bytes": 0, "peak_memory_bytes": 0,
                    "instructions": null, "output_bytes": 0, "tool_calls": 0,
                    "limits": {"wall_ms": null, "memory_bytes": null, "instructions": null,
                        "output_bytes": null, "tool_calls": null}}})
        );
        let failed = Outcome::failed(Error::new(ErrorKind::Timeout, "late"), Duration::ZERO);
        let doc = failed.to_json();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["result"], Json::Null);
        assert_eq!(
            doc["error"],
            serde_json::json!({"kind": "timeout", "message": "late", "line": null,
                "traceback": [], "value": null, "hint": null})
        );
        assert_eq!(doc["results"], serde_json::json!([]));
        assert!(doc.get("tool_calls").is_none() && doc.get("diagnostics").is_none());
        assert_eq!(serde_json::to_value(&failed).unwrap(), doc);
        // With every optional part: `to_json` (built directly, for deep results) and
        // `Serialize` (written to lines) must stay the same document.
        let mut full = Outcome::bare(
            Ok(serde_json::json!([1, {"a": null}])),
            Duration::from_millis(3),
        );
        full.output = "printed\n".into();
        full.more_results = vec![Json::Null, serde_json::json!("x")];
        full.result_count = 3;
        full.output_truncated = Some(crate::Truncation {
            kept_bytes: 8,
            dropped_bytes: 2,
        });
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
        assert_eq!(
            full.to_json()["results"],
            serde_json::json!([[1, {"a": null}], null, "x"])
        );
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
            peak_memory_bytes: 20,
            instructions: Some(3),
            output_bytes: 4,
            tool_calls: 5,
            limits: Budget {
                wall: Some(Duration::from_millis(200)),
                memory_bytes: Some(1 << 20),
                instructions: None,
                output_bytes: Some(100),
                tool_calls: Some(7),
            },
        };
        let back: Stats = serde_json::from_value(serde_json::to_value(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
    }
}
