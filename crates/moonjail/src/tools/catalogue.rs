//! The catalogue: every tool a script of a sandbox can call, with what a model needs to
//! call it well (description, parameter and result schemas), as data ([`Catalogue`],
//! whose `Serialize` is `moonjail tools --json`) and as LuaLS annotation stubs
//! ([`Catalogue::lua_stubs`], `moonjail tools --lua-stubs`).
//!
//! Front ends reuse it as is: an MCP tool definition is an entry's `name`, `description`
//! and `parameters` (as `inputSchema`). The built-in `json` and `http` libraries are
//! described by hand-written data (`builtin.json`), with their real argument shapes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::ToolSpec;

/// Every tool a sandbox's scripts can call, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Catalogue {
    /// The entries, sorted by name.
    pub tools: Vec<ToolInfo>,
}

/// One entry of a [`Catalogue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolInfo {
    /// The dotted name scripts use (`weather.lookup`, `http.get`, `json.null`).
    pub name: String,
    /// A function to call, or a value (`json.null`).
    pub kind: EntryKind,
    /// What it does (`null`: not described).
    pub description: Option<String>,
    /// JSON Schema of the arguments (`null`: not described). `"type": "array"` at the
    /// top describes the whole argument list; any other schema the one argument.
    pub parameters: Option<Json>,
    /// JSON Schema of the result (`null`: not described).
    pub returns: Option<Json>,
}

/// What a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A function scripts call.
    Function,
    /// A value scripts use (`json.null`).
    Value,
}

impl ToolInfo {
    /// The entry of a host tool named `name`, described by `spec` (if any).
    pub(crate) fn host(name: &str, spec: Option<&ToolSpec>) -> ToolInfo {
        ToolInfo {
            name: name.to_string(),
            kind: EntryKind::Function,
            description: spec.and_then(|s| s.description.clone()),
            parameters: spec.and_then(|s| s.parameters.clone()),
            returns: spec.and_then(|s| s.returns.clone()),
        }
    }
}

#[derive(Deserialize)]
struct Builtins {
    json: Vec<ToolInfo>,
    http: Vec<ToolInfo>,
}

fn builtins() -> &'static Builtins {
    static BUILTINS: OnceLock<Builtins> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        // The data is part of the source and checked by the tests: it always parses.
        serde_json::from_str(include_str!("builtin.json")).unwrap_or(Builtins {
            json: Vec::new(),
            http: Vec::new(),
        })
    })
}

/// The `json` library's entries.
pub(crate) fn json_entries() -> Vec<ToolInfo> {
    builtins().json.clone()
}

/// The spec of the built-in `http.get` or `http.post`, its description ending with the
/// allowlist (what a model must know to choose a URL).
pub(crate) fn http_spec(name: &str, allowed: &str) -> ToolSpec {
    let Some(info) = builtins().http.iter().find(|i| i.name == name) else {
        return ToolSpec::new();
    };
    let mut spec = ToolSpec::new();
    spec.description = Some(format!(
        "{} Allowed destinations: {allowed}.",
        info.description.as_deref().unwrap_or_default()
    ));
    spec.parameters = info.parameters.clone();
    spec.returns = info.returns.clone();
    spec
}

impl Catalogue {
    /// A catalogue of `entries`, sorted by name.
    pub(crate) fn new(mut entries: Vec<ToolInfo>) -> Catalogue {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Catalogue { tools: entries }
    }

    /// Adds `entries` and sorts again.
    pub(crate) fn extend(&mut self, entries: Vec<ToolInfo>) {
        self.tools.extend(entries);
        self.tools.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ToolInfo> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// LuaLS annotation stubs (`---@meta`): a table per namespace, a `---@class` per
    /// object schema with properties (`---@field city string`), and per tool its
    /// description, `---@param`s, `---@return` and an empty function, ready to paste
    /// into a prompt or a `.luarc` library folder.
    pub fn lua_stubs(&self) -> String {
        let mut out = String::from(
            "---@meta\n-- The tools of this sandbox (moonjail tools --lua-stubs). Arguments and \
             results cross as JSON.\n",
        );
        let namespaces: BTreeSet<&str> = self
            .tools
            .iter()
            .flat_map(|t| t.name.match_indices('.').map(|(i, _)| &t.name[..i]))
            .collect();
        if !namespaces.is_empty() {
            out.push('\n');
        }
        for ns in namespaces {
            let _ = writeln!(out, "{ns} = {{}}");
        }
        for tool in &self.tools {
            out.push('\n');
            let mut classes = Vec::new();
            let mut body = String::new();
            for line in tool.description.iter().flat_map(|d| d.lines()) {
                let _ = writeln!(body, "---{}", one_line(line, 1000));
            }
            if tool.kind == EntryKind::Value {
                let _ = writeln!(body, "---@type any\n{} = nil", tool.name);
                out.push_str(&body);
                continue;
            }
            let mut types = Types {
                classes: &mut classes,
                inline: false,
            };
            let params = signature(tool, &mut types);
            for p in &params {
                let _ = write!(body, "---@param {} {}", p.name, p.ty);
                match &p.description {
                    Some(d) => {
                        let _ = writeln!(body, " {d}");
                    }
                    None => body.push('\n'),
                }
            }
            let ret = match &tool.returns {
                Some(schema) => types.of(schema, &format!("{}.Result", tool.name), 0),
                None => "any".to_string(),
            };
            let _ = writeln!(body, "---@return {ret}");
            let names: Vec<&str> = params.iter().map(|p| p.bare_name()).collect();
            let _ = writeln!(body, "function {}({}) end", tool.name, names.join(", "));
            for class in classes {
                out.push_str(&class);
                out.push('\n');
            }
            out.push_str(&body);
        }
        out
    }

    /// One line per entry, `name(params) -> result` with inline types, then its
    /// description, indented: what `moonjail tools` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for tool in &self.tools {
            let mut classes = Vec::new();
            let mut types = Types {
                classes: &mut classes,
                inline: true,
            };
            if tool.kind == EntryKind::Value {
                let _ = writeln!(out, "{}", tool.name);
            } else {
                let params: Vec<String> = signature(tool, &mut types)
                    .iter()
                    .map(|p| format!("{}: {}", p.name, p.ty))
                    .collect();
                let ret = match &tool.returns {
                    Some(schema) => types.of(schema, "", 0),
                    None => "any".to_string(),
                };
                let _ = writeln!(out, "{}({}) -> {ret}", tool.name, params.join(", "));
            }
            match &tool.description {
                Some(d) => {
                    for line in d.lines() {
                        let _ = writeln!(out, "    {}", one_line(line, 1000));
                    }
                }
                None => out.push_str("    (no description)\n"),
            }
        }
        out
    }
}

/// One parameter of a stub.
struct Param {
    /// `city`, `url?` or `...`.
    name: String,
    ty: String,
    description: Option<String>,
}

impl Param {
    /// The name as the function header spells it (no `?`).
    fn bare_name(&self) -> &str {
        self.name.trim_end_matches('?')
    }
}

/// The parameters of `tool`, following the rule of [`crate::ToolSpec`]: a top-level
/// array schema is the argument list, any other schema the one argument.
fn signature(tool: &ToolInfo, types: &mut Types<'_>) -> Vec<Param> {
    let any_args = || Param {
        name: "...".into(),
        ty: "any".into(),
        description: None,
    };
    let Some(schema) = &tool.parameters else {
        return vec![any_args()];
    };
    if schema.get("type").and_then(Json::as_str) != Some("array") {
        let name = title(schema).unwrap_or("args").to_string();
        let ty = types.of(schema, &format!("{}.Args", tool.name), 0);
        return vec![Param {
            name,
            ty,
            description: None,
        }];
    }
    let required = schema.get("minItems").and_then(Json::as_u64).unwrap_or(0);
    let mut params = Vec::new();
    let prefix = schema
        .get("prefixItems")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut used = BTreeSet::new();
    for (i, item) in prefix.iter().enumerate().take(32) {
        let base = match title(item) {
            Some(t) if !used.contains(t) => t.to_string(),
            _ => format!("arg{}", i + 1),
        };
        used.insert(base.clone());
        let optional = (i as u64) >= required;
        let ty = types.of(item, &format!("{}.{}", tool.name, base), 0);
        params.push(Param {
            name: if optional { format!("{base}?") } else { base },
            ty,
            description: item
                .get("description")
                .and_then(Json::as_str)
                .map(|d| one_line(d, 200)),
        });
    }
    let rest = schema.get("items");
    match rest {
        Some(Json::Bool(false)) => {}
        Some(items) => {
            let ty = types.of(items, &format!("{}.Item", tool.name), 0);
            params.push(Param {
                name: "...".into(),
                ty,
                description: None,
            });
        }
        None if prefix.is_empty() => params.push(any_args()),
        None => {
            // Without `items`, more arguments are allowed unless `maxItems` says not.
            let max = schema.get("maxItems").and_then(Json::as_u64);
            if max.is_none_or(|m| m > prefix.len() as u64) {
                params.push(any_args());
            }
        }
    }
    params
}

/// A schema's `title`, when it can name a Lua parameter.
fn title(schema: &Json) -> Option<&str> {
    schema
        .get("title")
        .and_then(Json::as_str)
        .filter(|t| is_identifier(t))
}

/// Deepest schema nesting translated; deeper is `any`.
const MAX_TYPE_DEPTH: usize = 16;

/// JSON Schema → LuaLS types.
struct Types<'a> {
    /// `---@class` blocks made along the way (class mode).
    classes: &'a mut Vec<String>,
    /// Object types written inline (`{city: string}`) instead of as classes.
    inline: bool,
}

impl Types<'_> {
    /// The LuaLS type of `schema`; `class` names the class an object schema becomes.
    fn of(&mut self, schema: &Json, class: &str, depth: usize) -> String {
        let Json::Object(s) = schema else {
            return if schema == &Json::Bool(false) {
                "nil".into()
            } else {
                "any".into()
            };
        };
        if depth > MAX_TYPE_DEPTH {
            return "any".into();
        }
        if let Some(c) = s.get("const") {
            return literal(c);
        }
        if let Some(Json::Array(options)) = s.get("enum") {
            return union(options.iter().take(64).map(literal));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Json::Array(options)) = s.get(key) {
                let mut parts = Vec::new();
                for (i, o) in options.iter().enumerate().take(16) {
                    parts.push(self.of(o, &format!("{class}{}", i + 1), depth + 1));
                }
                return union(parts.into_iter());
            }
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Json::String(t)) => vec![t.as_str()],
            Some(Json::Array(ts)) => ts.iter().filter_map(Json::as_str).collect(),
            _ if s.contains_key("properties") => vec!["object"],
            _ if s.contains_key("items") || s.contains_key("prefixItems") => vec!["array"],
            _ => return "any".into(),
        };
        let mut parts = Vec::new();
        for t in types {
            parts.push(match t {
                "string" => "string".to_string(),
                "integer" => "integer".to_string(),
                "number" => "number".to_string(),
                "boolean" => "boolean".to_string(),
                "null" => "nil".to_string(),
                "object" => self.object(s, class, depth),
                "array" => match s.get("items") {
                    Some(items) if items.is_object() => {
                        let item = self.of(items, &format!("{class}.Item"), depth + 1);
                        if item.contains('|') {
                            format!("({item})[]")
                        } else {
                            format!("{item}[]")
                        }
                    }
                    _ => "any[]".to_string(),
                },
                _ => "any".to_string(),
            });
        }
        union(parts.into_iter())
    }

    fn object(&mut self, s: &Map<String, Json>, class: &str, depth: usize) -> String {
        let props = match s.get("properties") {
            Some(Json::Object(p)) if !p.is_empty() => p,
            _ => {
                return match s.get("additionalProperties") {
                    Some(v @ Json::Object(_)) => {
                        let value = self.of(v, &format!("{class}.Value"), depth + 1);
                        format!("table<string, {value}>")
                    }
                    _ => "table<string, any>".to_string(),
                }
            }
        };
        let required: BTreeSet<&str> = s
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        let mut fields = Vec::new();
        for (name, schema) in props.iter().take(256) {
            let ty = self.of(schema, &format!("{class}.{}", class_part(name)), depth + 1);
            let optional = if required.contains(name.as_str()) {
                ""
            } else {
                "?"
            };
            let description = schema
                .get("description")
                .and_then(Json::as_str)
                .map(|d| one_line(d, 200));
            fields.push((field_name(name), optional, ty, description));
        }
        if self.inline || class.is_empty() {
            let inner: Vec<String> = fields
                .iter()
                .map(|(n, o, t, _)| format!("{n}{o}: {t}"))
                .collect();
            return format!("{{{}}}", inner.join(", "));
        }
        let mut block = format!("---@class {class}\n");
        for (name, optional, ty, description) in fields {
            let _ = write!(block, "---@field {name}{optional} {ty}");
            match description {
                Some(d) => {
                    let _ = writeln!(block, " {d}");
                }
                None => block.push('\n'),
            }
        }
        self.classes.push(block);
        class.to_string()
    }
}

/// `a|b|c`, without repeats; `any` when empty.
fn union(parts: impl Iterator<Item = String>) -> String {
    let mut seen = Vec::new();
    for p in parts {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    if seen.is_empty() {
        "any".into()
    } else {
        seen.join("|")
    }
}

/// A JSON value as a LuaLS literal type.
fn literal(v: &Json) -> String {
    match v {
        Json::Null => "nil".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => serde_json::to_string(&one_line(s, 100)).unwrap_or_default(),
        Json::Array(_) => "any[]".into(),
        Json::Object(_) => "table".into(),
    }
}

/// A property name as a `---@field` name: as is when it is a Lua identifier, else
/// quoted in brackets.
fn field_name(name: &str) -> String {
    if is_identifier(name) {
        name.to_string()
    } else {
        format!(
            "[{}]",
            serde_json::to_string(&one_line(name, 100)).unwrap_or_default()
        )
    }
}

/// A property name as part of a class name.
fn class_part(name: &str) -> String {
    let part: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if part.is_empty() {
        "_".into()
    } else {
        part
    }
}

const KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

/// `text` on one line (whitespace runs, newlines included, become one space), at most
/// `max` characters: an annotation line cannot be broken out of.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_builtin_data_parses_and_its_schemas_compile() {
        let b = builtins();
        assert_eq!(b.json.len(), 3);
        assert_eq!(b.http.len(), 2);
        for info in b.json.iter().chain(&b.http) {
            for schema in [&info.parameters, &info.returns].into_iter().flatten() {
                super::super::schema::compile(schema, "builtin").unwrap();
            }
        }
    }

    fn ty(schema: Json) -> String {
        let mut classes = Vec::new();
        Types {
            classes: &mut classes,
            inline: true,
        }
        .of(&schema, "", 0)
    }

    #[test]
    fn schema_to_type_table() {
        for (schema, want) in [
            (json!({"type": "string"}), "string"),
            (json!({"type": "integer"}), "integer"),
            (json!({"type": ["string", "null"]}), "string|nil"),
            (json!({"enum": ["a", "b"]}), r#""a"|"b""#),
            (json!({"const": 3}), "3"),
            (
                json!({"type": "array", "items": {"type": "number"}}),
                "number[]",
            ),
            (
                json!({"type": "array", "items": {"type": ["number", "string"]}}),
                "(number|string)[]",
            ),
            (json!({"type": "array"}), "any[]"),
            (json!({"type": "object"}), "table<string, any>"),
            (
                json!({"type": "object", "additionalProperties": {"type": "integer"}}),
                "table<string, integer>",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b-c": {}},
                       "required": ["a"]}),
                r#"{a: string, ["b-c"]?: any}"#,
            ),
            (
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
                "string|integer",
            ),
            (json!({}), "any"),
            (json!(true), "any"),
        ] {
            assert_eq!(ty(schema.clone()), want, "{schema}");
        }
    }

    #[test]
    fn descriptions_cannot_break_out_of_their_line() {
        let info = ToolInfo {
            name: "t".into(),
            kind: EntryKind::Function,
            description: Some("line one\nfunction evil() end".into()),
            parameters: Some(json!({"type": "object", "properties": {
                "a": {"type": "string", "description": "x\nfunction evil2() end"}}})),
            returns: None,
        };
        let stubs = Catalogue::new(vec![info]).lua_stubs();
        for line in stubs.lines().skip(2) {
            assert!(
                line.starts_with("---") || line.starts_with("function t(") || line.is_empty(),
                "{line:?} in\n{stubs}"
            );
        }
    }
}
