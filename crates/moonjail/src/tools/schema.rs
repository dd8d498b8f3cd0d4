//! What an agent is told about a tool ([`ToolSpec`]: a description and JSON Schemas), and
//! the check of a call's arguments against the parameter schema before the tool runs.
//!
//! **Which arguments a schema describes.** Scripts call tools two ways:
//! `weather.lookup{city = "Lyon"}` (one table) and `weather.lookup("Lyon", 3)` (a list).
//! So:
//!
//! - a parameter schema whose top-level `"type"` is `"array"` describes the whole argument
//!   list, as a JSON array (trailing `nil`s dropped, as Lua drops them): use
//!   `prefixItems` for positional arguments, `minItems` for the required ones;
//! - any other schema describes the single argument: the tool takes exactly one (a call
//!   with none is checked as if it passed `null`; a call with more is refused).
//!
//! Schemas are compiled once, when the tool is described, offline: a `$ref` to anything
//! outside the schema itself is a configuration error, never fetched. `pattern` uses a
//! linear-time regex engine, so no argument can make a check slow. The `returns` schema is
//! documentation (the catalogue, the stubs); results are not checked against it.

use std::fmt::Write as _;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{PatternOptions, ValidationError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::ToolError;

/// Longest validation message, in bytes (the tool name is put in front of it).
const MAX_VALIDATION_MESSAGE: usize = 512;

/// What a tool says about itself: a description and JSON Schemas of its parameters and
/// its result, for the catalogue ([`crate::Sandbox::tool_catalogue`]) and, for the
/// parameters, for checking every call before the tool runs (see
/// [`crate::ToolRegistry::describe`]).
///
/// ```
/// use moonjail::ToolSpec;
/// use serde_json::json;
///
/// let spec = ToolSpec::new()
///     .description("The forecast for a city.")
///     .parameters(json!({
///         "type": "object",
///         "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
///         "required": ["city"]
///     }))
///     .returns(json!({"type": "object", "properties": {"forecast": {"type": "string"}}}));
/// assert_eq!(spec.description.as_deref(), Some("The forecast for a city."));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolSpec {
    /// What the tool does, for a model to read.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of the arguments (see the module docs for which arguments it describes:
    /// `"type": "array"` at the top means the whole list, anything else the one argument).
    #[serde(default)]
    pub parameters: Option<Json>,
    /// JSON Schema of the result. Documentation only: results are not checked.
    #[serde(default)]
    pub returns: Option<Json>,
}

impl ToolSpec {
    /// An empty spec: no description, no schemas.
    pub fn new() -> ToolSpec {
        ToolSpec::default()
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the JSON Schema of the arguments.
    pub fn parameters(mut self, schema: Json) -> Self {
        self.parameters = Some(schema);
        self
    }

    /// Sets the JSON Schema of the result (documentation only).
    pub fn returns(mut self, schema: Json) -> Self {
        self.returns = Some(schema);
        self
    }

    /// Reads the document `--tool-schema NAME=FILE` takes: either a tool document, an
    /// object with a `parameters` or a `returns` member (and at most `description`,
    /// `parameters` and `returns`), or else a bare JSON Schema of the arguments.
    ///
    /// # Errors
    /// A message for a tool document with other members or members of the wrong type.
    /// (Whether the schemas are valid is checked by [`crate::ToolRegistry::describe`].)
    pub fn from_document(doc: Json) -> Result<ToolSpec, String> {
        let envelope = doc
            .as_object()
            .is_some_and(|o| o.contains_key("parameters") || o.contains_key("returns"));
        if envelope {
            serde_json::from_value(doc).map_err(|e| {
                format!(
                    "a tool document is {{\"description\": TEXT, \"parameters\": SCHEMA, \
                     \"returns\": SCHEMA}}: {e}"
                )
            })
        } else {
            Ok(ToolSpec::new().parameters(doc))
        }
    }
}

/// A compiled parameter schema: what a call's arguments are checked against.
pub(crate) struct ArgsSchema {
    validator: Validator,
    /// The schema describes the whole argument list (top-level `"type": "array"`).
    whole_list: bool,
}

impl std::fmt::Debug for ArgsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgsSchema")
            .field("whole_list", &self.whole_list)
            .finish_non_exhaustive()
    }
}

/// Compiles `schema` (checked against its meta-schema), offline and with linear-time
/// patterns. `what` names it in the error.
pub(crate) fn compile(schema: &Json, what: &str) -> Result<Validator, String> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(format!(
            "the {what} schema must be a JSON object (or true/false), not {}",
            json_type(schema)
        ));
    }
    jsonschema::options()
        .offline()
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() { "/" } else { at };
            // The schema is the host's own: quoting it is fine (and cut).
            cut(format!(
                "the {what} schema is not a valid JSON Schema (at {at}: {e})"
            ))
        })
}

impl ArgsSchema {
    /// Compiles a parameter schema.
    pub(crate) fn new(schema: &Json) -> Result<ArgsSchema, String> {
        let validator = compile(schema, "parameters")?;
        let whole_list = schema.get("type").and_then(Json::as_str) == Some("array");
        Ok(ArgsSchema {
            validator,
            whole_list,
        })
    }

    /// Checks `args` (moved in and handed back, never copied).
    pub(crate) fn check(&self, args: Vec<Json>) -> Result<Vec<Json>, ToolError> {
        if self.whole_list {
            let list = Json::Array(args);
            if let Err(e) = self.validator.validate(&list) {
                return Err(ToolError::new(render(&e, true)));
            }
            return match list {
                Json::Array(args) => Ok(args),
                _ => Ok(Vec::new()),
            };
        }
        match args.as_slice() {
            [] => match self.validator.validate(&Json::Null) {
                Ok(()) => Ok(args),
                Err(e) => Err(ToolError::new(cut(format!(
                    "argument 1 is missing ({})",
                    expected(&e)
                )))),
            },
            [one] => match self.validator.validate(one) {
                Ok(()) => Ok(args),
                Err(e) => Err(ToolError::new(render(&e, false))),
            },
            more => Err(ToolError::new(format!(
                "takes 1 argument (described by its schema), got {}",
                more.len()
            ))),
        }
    }
}

/// `argument N: at /POINTER: what was expected, what came`.
fn render(e: &ValidationError<'_>, whole_list: bool) -> String {
    let path = e.instance_path().as_str();
    let (which, pointer) = if whole_list {
        // "/0/city" is argument 1 at "/city"; "" is the list itself.
        match path.strip_prefix('/') {
            None => ("the arguments".to_string(), ""),
            Some(rest) => {
                let (index, pointer) = match rest.find('/') {
                    Some(at) => (&rest[..at], &rest[at..]),
                    None => (rest, ""),
                };
                let n = index.parse::<usize>().map_or(0, |i| i.saturating_add(1));
                (format!("argument {n}"), pointer)
            }
        }
    } else {
        ("argument 1".to_string(), path)
    };
    let mut message = which;
    if !pointer.is_empty() {
        let _ = write!(message, ": at {pointer}");
    }
    if whole_list && path.is_empty() {
        // Counts of the list are counts of arguments.
        match e.kind() {
            ValidationErrorKind::MinItems { limit } => {
                let got = e.instance().as_array().map_or(0, Vec::len);
                let _ = write!(message, ": expected at least {limit}, got {got}");
                return cut(message);
            }
            ValidationErrorKind::MaxItems { limit } => {
                let got = e.instance().as_array().map_or(0, Vec::len);
                let _ = write!(message, ": expected at most {limit}, got {got}");
                return cut(message);
            }
            ValidationErrorKind::AdditionalItems { limit } => {
                let got = e.instance().as_array().map_or(0, Vec::len);
                let _ = write!(message, ": expected at most {limit}, got {got}");
                return cut(message);
            }
            _ => {}
        }
    }
    let _ = write!(message, ": {}", expected(e));
    cut(message)
}

/// What the failing keyword expected, and what it got when that is short to say.
fn expected(e: &ValidationError<'_>) -> String {
    let got = json_type(e.instance());
    match e.kind() {
        ValidationErrorKind::Type { kind } => {
            let want: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
            };
            format!("expected {}, got {got}", want.join(" or "))
        }
        ValidationErrorKind::Required { property } => {
            format!("missing required property {property}")
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|n| format!("{n:?}")).collect();
            let s = if names.len() == 1 { "y" } else { "ies" };
            format!("unexpected propert{s} {}", names.join(", "))
        }
        ValidationErrorKind::Enum { options } => format!("expected one of {options}, got {got}"),
        ValidationErrorKind::Constant { expected_value } => {
            format!("expected {expected_value}, got {got}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("expected a string of at least {limit} characters")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("expected a string of at most {limit} characters")
        }
        ValidationErrorKind::Minimum { limit } => format!("expected a number >= {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("expected a number <= {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("expected a number > {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("expected a number < {limit}"),
        ValidationErrorKind::MinItems { limit } => {
            format!("expected an array of at least {limit} items")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("expected an array of at most {limit} items")
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("expected a string matching {pattern:?}")
        }
        _ => format!("{} ({})", e.masked_with("the value"), e.kind().keyword()),
    }
}

/// The JSON Schema name of `v`'s type.
pub(crate) fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn cut(message: String) -> String {
    crate::error::cut_message(message, MAX_VALIDATION_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Json, args: Vec<Json>) -> Result<Vec<Json>, String> {
        ArgsSchema::new(&schema)
            .unwrap()
            .check(args)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn one_argument() {
        let schema = json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": false
        });
        assert!(check(schema.clone(), vec![json!({"city": "Lyon"})]).is_ok());
        let e = |args| check(schema.clone(), args).unwrap_err();
        assert_eq!(
            e(vec![json!({"city": 3})]),
            "argument 1: at /city: expected string, got integer"
        );
        assert_eq!(
            e(vec![json!({})]),
            r#"argument 1: missing required property "city""#
        );
        assert_eq!(
            e(vec![json!({"city": "a", "x": 1})]),
            r#"argument 1: unexpected property "x""#
        );
        assert_eq!(
            e(vec![json!({"city": "a", "days": 0})]),
            "argument 1: at /days: expected a number >= 1"
        );
        assert_eq!(
            e(vec![]),
            "argument 1 is missing (expected object, got null)"
        );
        assert_eq!(
            e(vec![json!({"city": "a"}), json!(2)]),
            "takes 1 argument (described by its schema), got 2"
        );
    }

    #[test]
    fn argument_list() {
        let schema = json!({
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}],
            "minItems": 1,
            "maxItems": 2
        });
        assert!(check(schema.clone(), vec![json!("Lyon"), json!(3)]).is_ok());
        assert!(check(schema.clone(), vec![json!("Lyon")]).is_ok());
        let e = |args| check(schema.clone(), args).unwrap_err();
        assert_eq!(
            e(vec![json!("Lyon"), json!("x")]),
            "argument 2: expected integer, got string"
        );
        assert_eq!(e(vec![]), "the arguments: expected at least 1, got 0");
        assert_eq!(
            e(vec![json!("a"), json!(1), json!(2)]),
            "the arguments: expected at most 2, got 3"
        );
    }

    #[test]
    fn invalid_schemas_and_remote_refs_are_refused() {
        assert!(ArgsSchema::new(&json!({"type": "strin"})).is_err());
        assert!(ArgsSchema::new(&json!("string")).is_err());
        assert!(ArgsSchema::new(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(ArgsSchema::new(&json!({"$ref": "file:///etc/passwd"})).is_err());
        assert!(ArgsSchema::new(&json!({"pattern": "(?=a)"})).is_err());
        // Local references resolve.
        let local = json!({"$defs": {"c": {"type": "string"}}, "$ref": "#/$defs/c"});
        assert!(ArgsSchema::new(&local).is_ok());
    }

    #[test]
    fn documents() {
        let bare = ToolSpec::from_document(json!({"type": "object", "description": "x"})).unwrap();
        assert_eq!(bare.description, None);
        assert!(bare.parameters.is_some());
        let doc = ToolSpec::from_document(json!({
            "description": "d", "parameters": {"type": "object"}, "returns": {"type": "string"}
        }))
        .unwrap();
        assert_eq!(doc.description.as_deref(), Some("d"));
        assert!(ToolSpec::from_document(json!({"parameters": {}, "extra": 1})).is_err());
        assert!(ToolSpec::from_document(json!({"parameters": {}, "description": 3})).is_err());
    }
}
