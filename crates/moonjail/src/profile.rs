//! Profiles as data: each is one list of everything a script can reach.
//!
//! Nothing outside a profile's list exists in the sandbox. How each listed name is made
//! safe (for instance `setmetatable` refusing `__gc`) is the environment builder's
//! policy (the environment layer); the profile only says *what* is there.

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

/// One thing a profile exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// A base-library global function, e.g. `pairs`.
    Global(&'static str),
    /// A library table with exactly these members, e.g. `os` with `time clock date difftime`.
    Library {
        /// The global name of the table.
        name: &'static str,
        /// Its members; nothing else of the stock library is kept.
        members: &'static [&'static str],
    },
    /// `_G`: the sandbox's own environment table.
    GlobalsRef,
    /// The `json` library (`encode`, `decode`, `null`), implemented in Rust.
    Json,
    /// A second global name for something already listed, e.g. `loadstring` for `load`
    /// or `unpack` for `table.unpack` (5.1 spellings AO code still uses).
    Alias {
        /// The alias.
        name: &'static str,
        /// What it names: a global or `library.member`.
        target: &'static str,
    },
    /// `package` (`loaded`, `preload`, `path = ""`, `cpath = ""`) and `require`, which
    /// resolves from `package.loaded`, `package.preload`, then host-provided modules.
    Package,
    /// `io` with only `open`, for reading files the host listed.
    Io,
}

/// A named, declarative list of [`Item`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfileSpec {
    /// The name front ends (the CLI; a future HTTP service) use.
    pub name: &'static str,
    /// One line saying who the profile is for.
    pub summary: &'static str,
    /// Everything the profile exposes.
    pub items: &'static [Item],
}

const MATH: &[&str] = &[
    "abs",
    "acos",
    "asin",
    "atan",
    "ceil",
    "cos",
    "deg",
    "exp",
    "floor",
    "fmod",
    "huge",
    "log",
    "max",
    "maxinteger",
    "min",
    "mininteger",
    "modf",
    "pi",
    "rad",
    "random",
    "randomseed",
    "sin",
    "sqrt",
    "tan",
    "tointeger",
    "type",
    "ult",
];

/// `string` without `dump` (which would hand out bytecode).
const STRING: &[&str] = &[
    "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack",
    "packsize", "rep", "reverse", "sub", "unpack", "upper",
];

const TABLE: &[&str] = &[
    "concat", "insert", "move", "pack", "remove", "sort", "unpack",
];

const COROUTINE: &[&str] = &[
    "close",
    "create",
    "isyieldable",
    "resume",
    "running",
    "status",
    "wrap",
    "yield",
];

const UTF8: &[&str] = &["char", "charpattern", "codepoint", "codes", "len", "offset"];

const OS_TIME: &[&str] = &["clock", "date", "difftime", "time"];

/// The HyperAOS sandbox requirements, exactly.
const AOS: &[Item] = &[
    Item::Global("assert"),
    Item::Global("error"),
    Item::Global("getmetatable"),
    Item::Global("ipairs"),
    Item::Global("load"),
    Item::Global("next"),
    Item::Global("pairs"),
    Item::Global("pcall"),
    Item::Global("print"),
    Item::Global("rawequal"),
    Item::Global("rawget"),
    Item::Global("rawlen"),
    Item::Global("rawset"),
    Item::Global("select"),
    Item::Global("setmetatable"),
    Item::Global("tonumber"),
    Item::Global("tostring"),
    Item::Global("type"),
    Item::Global("xpcall"),
    Item::GlobalsRef,
    Item::Library {
        name: "math",
        members: MATH,
    },
    Item::Library {
        name: "string",
        members: STRING,
    },
    Item::Library {
        name: "table",
        members: TABLE,
    },
    Item::Library {
        name: "coroutine",
        members: COROUTINE,
    },
    Item::Library {
        name: "utf8",
        members: UTF8,
    },
    Item::Library {
        name: "os",
        members: OS_TIME,
    },
    Item::Alias {
        name: "loadstring",
        target: "load",
    },
    Item::Alias {
        name: "unpack",
        target: "table.unpack",
    },
    Item::Package,
    Item::Io,
];

/// LuaWard's whitelist, exactly.
const MINIMAL: &[Item] = &[
    Item::Global("assert"),
    Item::Global("error"),
    Item::Global("ipairs"),
    Item::Global("next"),
    Item::Global("pairs"),
    Item::Global("pcall"),
    Item::Global("print"),
    Item::Global("select"),
    Item::Global("tonumber"),
    Item::Global("tostring"),
    Item::Global("type"),
    Item::Global("xpcall"),
    Item::Library {
        name: "math",
        members: MATH,
    },
    Item::Library {
        name: "string",
        members: STRING,
    },
    Item::Library {
        name: "table",
        members: TABLE,
    },
];

const STANDARD: &[Item] = &[
    Item::Global("assert"),
    Item::Global("error"),
    Item::Global("ipairs"),
    Item::Global("next"),
    Item::Global("pairs"),
    Item::Global("pcall"),
    Item::Global("print"),
    Item::Global("select"),
    Item::Global("tonumber"),
    Item::Global("tostring"),
    Item::Global("type"),
    Item::Global("xpcall"),
    Item::Global("collectgarbage"),
    Item::Global("getmetatable"),
    Item::Global("load"),
    Item::Global("rawequal"),
    Item::Global("rawget"),
    Item::Global("rawlen"),
    Item::Global("rawset"),
    Item::Global("setmetatable"),
    Item::GlobalsRef,
    Item::Library {
        name: "math",
        members: MATH,
    },
    Item::Library {
        name: "string",
        members: STRING,
    },
    Item::Library {
        name: "table",
        members: TABLE,
    },
    Item::Library {
        name: "coroutine",
        members: COROUTINE,
    },
    Item::Library {
        name: "utf8",
        members: UTF8,
    },
    Item::Library {
        name: "os",
        members: OS_TIME,
    },
    Item::Json,
    Item::Package,
];

/// The built-in profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// LuaWard's whitelist: base functions without metatables or raw access, plus `math`,
    /// `string` and `table`.
    Minimal,
    /// What most embedders want: `minimal` plus `_G`, guarded metatables, raw access,
    /// `coroutine`, `utf8`, the time functions of `os`, text-only `load`, `json`, and
    /// `require` (of the libraries, and of host modules when the host serves some).
    #[default]
    Standard,
    /// The HyperAOS environment for AO process modules (`aos.lua`, `utils.lua`):
    /// 5.1 aliases, `package`/`require` of host-provided modules, read-only `io.open`.
    Aos,
    /// A profile defined by the embedding program: its own list of items. `moonjail check`
    /// judges it by the checklist of the built-in profile with the same name, if any.
    Custom(&'static ProfileSpec),
}

impl Profile {
    /// Every built-in profile.
    pub const ALL: [Profile; 3] = [Profile::Minimal, Profile::Standard, Profile::Aos];

    /// The profile's declarative list.
    pub fn spec(self) -> &'static ProfileSpec {
        match self {
            Profile::Minimal => &ProfileSpec {
                name: "minimal",
                summary: "LuaWard's whitelist: no metatables, no raw access, no _G, no coroutines",
                items: MINIMAL,
            },
            Profile::Standard => &ProfileSpec {
                name: "standard",
                summary: "the default: minimal + _G, guarded metatables, raw access, coroutine, \
                          utf8, os time functions, text-only load, json, require",
                items: STANDARD,
            },
            Profile::Aos => &ProfileSpec {
                name: "aos",
                summary: "the HyperAOS environment: standard's libraries without json and \
                          collectgarbage, plus loadstring, unpack, package/require and \
                          read-only io.open",
                items: AOS,
            },
            Profile::Custom(spec) => spec,
        }
    }

    /// The profile's name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile crosses process boundaries by name. A custom profile does not cross at
/// all: a worker must never take a custom list for the built-in of the same name.
impl serde::Serialize for Profile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Profile::Custom(spec) => Err(serde::ser::Error::custom(format!(
                "the custom profile {:?} cannot be serialised: only built-in profiles can",
                spec.name
            ))),
            builtin => serializer.serialize_str(builtin.name()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Profile {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ConfigError::UnknownProfile(s.to_string()))
    }
}

impl ProfileSpec {
    /// True when the profile exposes the global `name` (a function, a library or `_G`).
    pub fn has_global(&self, name: &str) -> bool {
        self.items.iter().any(|item| match item {
            Item::Global(g) => *g == name,
            Item::Library { name: lib, .. } => *lib == name,
            Item::GlobalsRef => name == "_G",
            Item::Json => name == "json",
            Item::Alias { name: alias, .. } => *alias == name,
            Item::Package => name == "package" || name == "require",
            Item::Io => name == "io",
        })
    }

    /// The members the profile keeps of library `lib`, if it exposes that library.
    pub fn library(&self, lib: &str) -> Option<&'static [&'static str]> {
        self.items.iter().find_map(|item| match item {
            Item::Library { name, members } if *name == lib => Some(*members),
            _ => None,
        })
    }
}

/// How a listed name is made safe when the sandbox provides it (`moonjail profile
/// show` prints it; a profile lists *what*, the environment layer decides *how*).
pub fn guard_note(name: &str) -> Option<&'static str> {
    Some(match name {
        "print" => {
            "captured into the run's output, under the output limit; objects show a per-run \
             number, not a host address"
        }
        "load" => "text chunks only; binary chunks are forbidden; env argument honoured",
        "setmetatable" => "refuses metatables with __gc (finalizers)",
        "getmetatable" => "getmetatable(\"\") returns false: the string metatable is locked",
        "collectgarbage" => "only collectgarbage(\"count\")",
        "xpcall" => "the message handler is skipped once a limit has stopped the run",
        "coroutine.resume" | "coroutine.wrap" | "coroutine.create" | "coroutine.close" => {
            "deadline and instruction budget reach every coroutine"
        }
        "string.find" | "string.match" | "string.gmatch" | "string.gsub" => {
            "metered matcher: backtracking stops at the deadline and the instruction budget"
        }
        "table.move" | "table.insert" | "table.remove" | "table.concat" | "table.unpack"
        | "unpack" | "string.rep" | "string.reverse" | "string.lower" | "string.upper" => {
            "metered: long loops stop at the deadline and count against the instruction budget"
        }
        "tostring" | "string.format" => {
            "tables, functions and coroutines show a per-run number, not a host address"
        }
        "utf8.len" | "utf8.codepoint" | "utf8.offset" | "utf8.char" | "string.byte"
        | "string.char" | "string.sub" => {
            "charged per call against the instruction budget (one unit per 64 bytes covered)"
        }
        "table.sort" => {
            "metered: comparisons count against the deadline and the instruction budget"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
        }
        assert!("aos2".parse::<Profile>().is_err());
    }

    #[test]
    fn minimal_is_luaward_whitelist() {
        let m = Profile::Minimal.spec();
        for g in [
            "setmetatable",
            "getmetatable",
            "rawget",
            "rawset",
            "_G",
            "load",
            "require",
        ] {
            assert!(!m.has_global(g), "{g} must not be in minimal");
        }
        assert!(!m.library("string").unwrap().contains(&"dump"));
    }

    #[test]
    fn no_profile_lists_dangerous_names() {
        for p in Profile::ALL {
            let s = p.spec();
            for g in ["debug", "dofile", "loadfile", "collectgarbage_", "ffi"] {
                assert!(!s.has_global(g), "{} exposes {g}", s.name);
            }
            if p != Profile::Aos {
                for g in ["io", "loadstring"] {
                    assert!(!s.has_global(g), "{} exposes {g}", s.name);
                }
            }
            // `require` reaches only the libraries and the host's module directory.
            if p == Profile::Minimal {
                for g in ["package", "require"] {
                    assert!(!s.has_global(g), "{} exposes {g}", s.name);
                }
            }
            if let Some(os) = s.library("os") {
                for m in [
                    "execute",
                    "exit",
                    "getenv",
                    "remove",
                    "rename",
                    "tmpname",
                    "setlocale",
                ] {
                    assert!(!os.contains(&m), "{} exposes os.{m}", s.name);
                }
            }
        }
    }
}
