//! The linter's view of a sandbox: every global, library member and tool a script can
//! reach, built from the same data the runtime builds its environment from (the
//! profile's [`Item`] list, the tool registry's names, the `http` allowlist). There is no
//! second list to keep in step: a profile edit changes both at once, and
//! `tests/it/lint.rs` compares this view with what a real sandbox holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::profile::{Item, ProfileSpec};
use crate::tools::{ArgsSchema, HttpDestination};

/// What a name in the environment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A function or a plain value (`print`, `math.pi`, `json.null`).
    Value,
    /// A table whose members are known.
    Table {
        kind: TableKind,
        members: BTreeMap<String, Entry>,
    },
}

/// Whose table it is, which decides what writing to it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    /// A library table (`string`, `json`): a plain table, writable.
    Library,
    /// A tool namespace: read-only, every write fails.
    Tools,
    /// `_G`: the globals themselves; its members are whatever the script defines.
    Globals,
}

/// Everything the linter knows about the sandbox a script will run in.
#[derive(Debug, Clone)]
pub(crate) struct Environment {
    /// The profile's name, for messages.
    pub(crate) profile: &'static str,
    pub(crate) globals: BTreeMap<String, Entry>,
    /// Every host tool, by registered name.
    pub(crate) tools: BTreeSet<String>,
    /// The `http` allowlist, parsed as the client parses it (empty: no `http` tool).
    pub(crate) http: Vec<HttpDestination>,
    /// `--require-run`: the script must define a global function `run`.
    pub(crate) require_run: bool,
    /// The source limit runs apply.
    pub(crate) source_limit: Option<usize>,
    /// The compiled parameter schemas of the tools the host described, by tool name.
    pub(crate) schemas: BTreeMap<String, Arc<ArgsSchema>>,
    /// Whether Lua's own compiler may judge, in this process, a script the linter's
    /// parsers cannot (runs compile here too, in process). Not for an isolated sandbox:
    /// there untrusted source reaches Lua's C code only inside a worker.
    pub(crate) lua_in_host: bool,
}

impl Environment {
    /// The view of `profile` with these tools (dotted names) and `http` allowlist.
    pub(crate) fn new<'a>(
        profile: &'static ProfileSpec,
        tools: impl IntoIterator<Item = &'a str>,
        http: Vec<HttpDestination>,
    ) -> Environment {
        let mut globals = BTreeMap::new();
        let library = |members: &[&str]| Entry::Table {
            kind: TableKind::Library,
            members: members
                .iter()
                .map(|m| (m.to_string(), Entry::Value))
                .collect(),
        };
        for item in profile.items {
            match *item {
                Item::Global(name) | Item::Alias { name, .. } => {
                    globals.insert(name.to_string(), Entry::Value);
                }
                Item::Library { name, members } => {
                    globals.insert(name.to_string(), library(members));
                }
                Item::GlobalsRef => {
                    let globals_table = Entry::Table {
                        kind: TableKind::Globals,
                        members: BTreeMap::new(),
                    };
                    globals.insert("_G".to_string(), globals_table);
                }
                Item::Json => {
                    globals.insert("json".into(), library(&["decode", "encode", "null"]));
                }
                Item::Package => {
                    let package = library(&["cpath", "loaded", "path", "preload"]);
                    globals.insert("package".into(), package);
                    globals.insert("require".into(), Entry::Value);
                }
                Item::Io => {
                    globals.insert("io".into(), library(&["open"]));
                }
            }
        }
        let tools: BTreeSet<String> = tools.into_iter().map(str::to_string).collect();
        for name in &tools {
            insert_tool(&mut globals, name);
        }
        Environment {
            profile: profile.name,
            globals,
            tools,
            http,
            require_run: false,
            source_limit: None,
            schemas: BTreeMap::new(),
            lua_in_host: true,
        }
    }

    #[cfg(test)]
    /// The entry at `path` (`["string", "format"]`), if the sandbox has it.
    pub(crate) fn lookup(&self, path: &[&str]) -> Option<&Entry> {
        let (first, rest) = path.split_first()?;
        let mut entry = self.globals.get(*first)?;
        for name in rest {
            match entry {
                Entry::Table { members, .. } => entry = members.get(*name)?,
                Entry::Value => return None,
            }
        }
        Some(entry)
    }

    /// Each global with the names of its members (empty for functions and values).
    pub(crate) fn names(&self) -> BTreeMap<String, Vec<String>> {
        self.globals
            .iter()
            .map(|(name, entry)| {
                let members = match entry {
                    Entry::Table { members, .. } => members.keys().cloned().collect(),
                    Entry::Value => Vec::new(),
                };
                (name.clone(), members)
            })
            .collect()
    }
}

/// Adds tool `name` (`weather.lookup`: a namespace `weather` holding `lookup`).
fn insert_tool(globals: &mut BTreeMap<String, Entry>, name: &str) {
    let mut parts = name.split('.').peekable();
    let mut level = globals;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            level.insert(part.to_string(), Entry::Value);
            return;
        }
        let entry = level
            .entry(part.to_string())
            .or_insert_with(|| Entry::Table {
                kind: TableKind::Tools,
                members: BTreeMap::new(),
            });
        match entry {
            Entry::Table { members, .. } => level = members,
            // The registry refuses a name that is both a tool and a namespace.
            Entry::Value => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    #[test]
    fn tools_become_namespaces() {
        let env = Environment::new(
            Profile::Standard.spec(),
            ["weather.lookup", "a.b.c", "log"],
            Vec::new(),
        );
        assert_eq!(env.lookup(&["weather", "lookup"]), Some(&Entry::Value));
        assert!(matches!(
            env.lookup(&["a", "b"]),
            Some(Entry::Table {
                kind: TableKind::Tools,
                ..
            })
        ));
        assert_eq!(env.lookup(&["a", "b", "c"]), Some(&Entry::Value));
        assert_eq!(env.lookup(&["log"]), Some(&Entry::Value));
        assert_eq!(env.lookup(&["string", "dump"]), None);
        assert_eq!(env.lookup(&["string", "format"]), Some(&Entry::Value));
        assert_eq!(env.lookup(&["json", "null"]), Some(&Entry::Value));
    }
}
