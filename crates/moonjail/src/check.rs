//! The environment checklist: runs inside a real sandbox, not by reading Rust tables, so
//! it proves what a script actually sees.
//!
//! For `aos` the list is the HyperAOS requirements' validation list, written out here
//! independently of the profile data (so a broken profile fails it). For the other
//! profiles it is their own list plus the names that must never exist.

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind};
use crate::profile::{Item, ProfileSpec};
use crate::sandbox::Sandbox;

/// One expectation: a name and a Lua expression that is `true` when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What is checked, for people.
    pub name: String,
    /// A Lua expression evaluated inside the sandbox.
    pub expr: String,
}

/// The outcome of one [`CheckItem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub pass: bool,
    /// The error, when evaluating the expression raised one.
    pub detail: Option<String>,
}

fn item(name: impl Into<String>, expr: impl Into<String>) -> CheckItem {
    CheckItem {
        name: name.into(),
        expr: expr.into(),
    }
}

/// `present("string.format")` → an expression true when the dotted name exists.
fn present_expr(path: &str) -> String {
    match path.split_once('.') {
        Some((lib, member)) => format!("(type({lib}) == 'table' and {lib}.{member} ~= nil)"),
        None => format!("({path} ~= nil)"),
    }
}

fn absent_expr(path: &str) -> String {
    match path.split_once('.') {
        Some((lib, member)) => format!("(type({lib}) ~= 'table' or {lib}.{member} == nil)"),
        None => format!("({path} == nil)"),
    }
}

fn present(path: &str) -> CheckItem {
    item(format!("{path} present"), present_expr(path))
}

fn absent(path: &str) -> CheckItem {
    item(format!("{path} absent"), absent_expr(path))
}

const ALWAYS_ABSENT: &[&str] = &[
    "dofile",
    "loadfile",
    "debug",
    "string.dump",
    "os.execute",
    "os.exit",
    "os.getenv",
    "os.remove",
    "os.rename",
    "os.setlocale",
    "os.tmpname",
    "io.write",
    "io.popen",
    "io.tmpfile",
    "io.output",
    "io.input",
    "io.lines",
    "package.loadlib",
    "package.searchers",
    "package.searchpath",
];

/// The HyperAOS validation list.
fn aos_list() -> Vec<CheckItem> {
    let mut v = vec![item("_G self-reference (_G._G == _G)", "_G._G == _G")];
    for lib in [
        "table",
        "string",
        "math",
        "coroutine",
        "utf8",
        "os",
        "io",
        "package",
    ] {
        v.push(item(
            format!("{lib} library present"),
            format!("type({lib}) == 'table'"),
        ));
    }
    for m in [
        "insert", "remove", "concat", "sort", "unpack", "pack", "move",
    ] {
        v.push(present(&format!("table.{m}")));
    }
    for m in [
        "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "rep",
        "reverse", "sub", "upper", "pack", "packsize", "unpack",
    ] {
        v.push(present(&format!("string.{m}")));
    }
    for m in [
        "abs",
        "ceil",
        "floor",
        "fmod",
        "max",
        "min",
        "modf",
        "sqrt",
        "exp",
        "log",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "random",
        "randomseed",
        "tointeger",
        "type",
        "ult",
        "deg",
        "rad",
        "maxinteger",
        "mininteger",
    ] {
        v.push(present(&format!("math.{m}")));
    }
    v.push(item("math.huge is infinite", "math.huge == 1/0"));
    v.push(item(
        "math.pi is pi",
        "math.abs(math.pi - 3.141592653589793) < 1e-15",
    ));
    for f in [
        "type",
        "tostring",
        "tonumber",
        "rawequal",
        "rawget",
        "rawset",
        "rawlen",
        "pairs",
        "ipairs",
        "next",
        "select",
        "print",
        "load",
        "loadstring",
        "unpack",
        "require",
    ] {
        v.push(present(f));
    }
    for f in ["setmetatable", "getmetatable"] {
        v.push(item(
            format!("metatable function {f} present"),
            present_expr(f),
        ));
    }
    for f in ["pcall", "xpcall", "error", "assert"] {
        v.push(item(format!("error function {f} present"), present_expr(f)));
    }
    for m in [
        "create",
        "resume",
        "yield",
        "status",
        "wrap",
        "isyieldable",
        "running",
        "close",
    ] {
        v.push(present(&format!("coroutine.{m}")));
    }
    for m in ["char", "charpattern", "codepoint", "codes", "len", "offset"] {
        v.push(present(&format!("utf8.{m}")));
    }
    for m in ["date", "time", "clock", "difftime"] {
        v.push(present(&format!("os.{m}")));
    }
    v.push(item(
        "package.loaded present, holding _G and the libraries",
        "type(package.loaded) == 'table' and package.loaded._G == _G and package.loaded.string == string",
    ));
    v.push(item(
        "package.preload present, path and cpath empty",
        "type(package.preload) == 'table' and package.path == '' and package.cpath == ''",
    ));
    v.push(item(
        "os is writable (AO reassigns os.time)",
        "(function() local t = os.time; os.time = t; return true end)()",
    ));
    for name in ALWAYS_ABSENT {
        v.push(absent(name));
    }
    v.push(item("require('ffi') fails", "not pcall(require, 'ffi')"));
    v.push(item(
        "io restricted: writing refused",
        "io.open('moonjail-check', 'w') == nil",
    ));
    v.push(item(
        "io restricted: unlisted files unreadable",
        "io.open('/etc/passwd') == nil",
    ));
    v.push(item("binary chunks refused", "load('\\27Lua') == nil"));
    v.push(item(
        "loadstring is load, env honoured",
        "loadstring('return x', 'c', 't', {x = 7})() == 7",
    ));
    v.push(item(
        "__gc refused",
        "not pcall(setmetatable, {}, {__gc = print})",
    ));
    v
}

/// The checklist for a profile: the AOS validation list for `aos`, the profile's own
/// list plus the never-exposed names otherwise.
pub fn checklist(spec: &ProfileSpec) -> Vec<CheckItem> {
    if spec.name == "aos" {
        return aos_list();
    }
    let mut v = Vec::new();
    for it in spec.items {
        match *it {
            Item::Global(g) => v.push(present(g)),
            Item::Library { name, members } => {
                v.push(item(
                    format!("{name} library present"),
                    format!("type({name}) == 'table'"),
                ));
                for m in members {
                    v.push(present(&format!("{name}.{m}")));
                }
            }
            Item::GlobalsRef => v.push(item("_G self-reference (_G._G == _G)", "_G._G == _G")),
            Item::Json => {
                for m in ["encode", "decode", "null"] {
                    v.push(present(&format!("json.{m}")));
                }
                v.push(item(
                    "json round trip",
                    "json.decode(json.encode({1, 2}))[2] == 2",
                ));
            }
            Item::Alias { name, .. } => v.push(present(name)),
            Item::Package => {
                v.push(present("package"));
                v.push(present("require"));
            }
            Item::Io => v.push(present("io.open")),
        }
    }
    for name in [
        "io",
        "package",
        "require",
        "loadstring",
        "collectgarbage",
        "load",
        "_G",
    ] {
        if !spec.has_global(name) {
            v.push(absent(name));
        }
    }
    for name in ALWAYS_ABSENT {
        v.push(absent(name));
    }
    for name in [
        "setmetatable",
        "getmetatable",
        "rawget",
        "rawset",
        "rawequal",
        "rawlen",
    ] {
        if !spec.has_global(name) {
            v.push(absent(name));
        }
    }
    if spec.has_global("load") {
        v.push(item("binary chunks refused", "load('\\27Lua') == nil"));
    }
    if spec.has_global("setmetatable") {
        v.push(item(
            "__gc refused",
            "not pcall(setmetatable, {}, {__gc = print})",
        ));
    }
    if spec.has_global("getmetatable") {
        v.push(item("string metatable locked", "getmetatable('') == false"));
    }
    if spec.has_global("collectgarbage") {
        v.push(item(
            "collectgarbage limited to count",
            "type(collectgarbage('count')) == 'number' and not pcall(collectgarbage, 'stop')",
        ));
    }
    v
}

impl Sandbox {
    /// Runs the profile's checklist inside a sandbox of this configuration.
    ///
    /// # Errors
    /// The run's error when the checklist script itself cannot run.
    pub fn check(&self) -> Result<Vec<CheckResult>, Error> {
        self.check_with(checklist(self.profile().spec()))
    }

    /// Runs `items` inside a sandbox of this configuration (e.g. another profile's
    /// checklist, to see what this one exposes beyond it).
    ///
    /// # Errors
    /// The run's error when the checklist script itself cannot run.
    pub fn check_with(&self, items: Vec<CheckItem>) -> Result<Vec<CheckResult>, Error> {
        let mut src = String::from(
            "local results = {}\nlocal function check(f)\n  local ok, v = pcall(f)\n  \
             results[#results + 1] = {ok and v == true, ok and '' or tostring(v)}\nend\n",
        );
        for it in &items {
            src.push_str(&format!("check(function() return {} end)\n", it.expr));
        }
        src.push_str("return results\n");
        let out = self.run(&src, &Json::Null);
        let rows = out.result?;
        let rows = rows
            .as_array()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "the checklist returned no list"))?;
        Ok(items
            .into_iter()
            .zip(rows)
            .map(|(it, row)| {
                let pass = row.get(0).and_then(Json::as_bool).unwrap_or(false);
                let detail = row
                    .get(1)
                    .and_then(Json::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                CheckResult {
                    name: it.name,
                    pass,
                    detail,
                }
            })
            .collect())
    }
}
