//! `moonjail lint`: static analysis of a script against the exact sandbox it would run in.
//!
//! The runtime allowlist is the security boundary and stays so; the linter is feedback
//! before a run, so that a model (or a plugin author) learns in one step that `io.open`
//! does not exist here, that `string.spilt` is a typo, that `http.get` names a host the
//! sandbox will refuse and that line 7 uses `!=`.
//!
//! **Parsers.** Two build the same small tree ([`ast`]). Valid scripts, the common case
//! and the one with a time budget (a megabyte in under 100 ms), are read by [`parse`], a
//! strict recursive-descent parser of our own over [`lex`]'s tokens, which gives up at
//! the first syntax error. Scripts with one are read again by [full_moon] (only its
//! `lua54` feature), a lossless, error-recovering Lua 5.4 parser that says what is wrong
//! and where, and reads past it ([`recover`]); its tree is converted. full_moon alone
//! took ~120 ms of CPU per megabyte here, over the budget by itself, which is why the
//! fast path exists; it stays for what it does well. selene-lib, the linter built on
//! full_moon, was the other candidate: it would bring its own rule engine and a standard
//! library read from YAML or TOML, but as a dependency it is 48 crates against
//! full_moon's 17, and its standard library would be a second description of the
//! sandbox to keep in step with the profiles. Here the standard library *is* the sandbox
//! ([`view::Environment`], built from the profile's item list and the tool registry),
//! and the rules are a few hundred lines over the tree.
//!
//! **Untrusted input.** The source is what a model wrote; linting it must not be a way to
//! hurt the host. Line breaks are first read as Lua reads them ([`lua_line_breaks`]), so
//! that no lexer sees code where Lua sees a comment. Both parsers recurse (and so do the
//! walk and dropping a tree), so before parsing, [`lex::nesting_bound`] bounds how deeply
//! the chunk can nest; past [`MAX_NESTING`] the chunk is not parsed (a `too-complex`
//! warning: stock Lua refuses nesting past 200 levels anyway), and under it, parsing,
//! analysis and the tree's drop run on a stack grown to fit (`stacker`). full_moon's
//! lexer reads some strings differently, so its path bounds full_moon's own view too. No
//! step is worse than linear in the source (a source of many syntax errors, locals or
//! backticks once was). The source limit of the sandbox applies.

mod ast;
#[cfg(test)]
mod differential;
// The run pipeline adds the same hints to its syntax errors.
pub(crate) mod hints;
mod lex;
mod parse;
mod recover;
mod rules;

pub use rules::nearest;
mod scope;
pub(crate) mod view;

use std::collections::BTreeSet;

use serde::Serialize;

pub(crate) use view::Environment;

/// How much a finding matters. `error`: the script will fail (or be refused) when that
/// code runs; `warning`: probably a mistake; `info`: what the linter could not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The script fails (or is refused) when this code runs.
    Error,
    /// Probably a mistake; the script may still run.
    Warning,
    /// Something the linter could not check.
    Info,
}

impl Severity {
    /// `error`, `warning` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the linter found. Lines and columns are 1-based; a column counts
/// characters; the end is exclusive (`end_column` is one past the last character).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Finding {
    /// The rule's stable id, e.g. `undefined-global` (see the README for the list).
    pub rule: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// Where it starts.
    pub line: u32,
    /// Where it starts on its line.
    pub column: u32,
    /// Where it ends.
    pub end_line: u32,
    /// One past its last character.
    pub end_column: u32,
    /// What is wrong, in a sentence.
    pub message: String,
    /// What to write instead, when there is something to say.
    pub suggestion: Option<String>,
}

/// What a script can reach, as far as its text says: for a host to show or approve
/// before a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Manifest {
    /// Sandbox globals the script reads (`print`, `string`, `json`), libraries and tool
    /// namespaces included.
    pub globals: BTreeSet<String>,
    /// Library members it uses, as `string.format`.
    pub library: BTreeSet<String>,
    /// Host tools it calls or refers to, by registered name (`weather.lookup`).
    pub tools: BTreeSet<String>,
    /// Hosts its literal URLs name (`api.example.com:443`), allowed or not.
    pub hosts: BTreeSet<String>,
    /// Modules it `require`s by a literal name.
    pub requires: BTreeSet<String>,
    /// Globals the script defines itself.
    pub defines: BTreeSet<String>,
    /// True when it compiles code at run time (`load`, `loadstring`, `require` of a
    /// computed name): that code is not in this manifest.
    pub dynamic_load: bool,
}

/// The findings and the manifest of one script.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct LintReport {
    /// Every finding, in source order.
    pub findings: Vec<Finding>,
    /// What the script reaches.
    pub manifest: Manifest,
}

impl LintReport {
    /// True when a finding has error severity: the script would fail or be refused.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// The findings of error severity.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// A one-paragraph summary of the first error findings, for an error message:
    /// `3 lint errors: 2:4 undefined-global: ...; ...`.
    pub fn summary(&self) -> String {
        const SHOWN: usize = 3;
        let errors: Vec<&Finding> = self.errors().collect();
        let mut text = match errors.len() {
            1 => "1 lint error: ".to_string(),
            n => format!("{n} lint errors: "),
        };
        let parts: Vec<String> = errors
            .iter()
            .take(SHOWN)
            .map(|f| {
                let hint = f
                    .suggestion
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                format!(
                    "line {}:{} [{}] {}{hint}",
                    f.line, f.column, f.rule, f.message
                )
            })
            .collect();
        text.push_str(&parts.join("; "));
        if errors.len() > SHOWN {
            text.push_str(&format!("; and {} more", errors.len() - SHOWN));
        }
        text
    }
}

/// Chunks that nest deeper than this (by [`lex::nesting_bound`], an over-estimate) are
/// not parsed. Stock Lua refuses more than 200 nested levels (`LUAI_MAXCCALLS`), so code
/// that runs is far below; long left-associative chains (`1 + 1 + ... + 1`, which Lua
/// compiles in a loop) are what can come near.
pub(crate) const MAX_NESTING: usize = 1000;

/// Stack one level of nesting may take in either parser, our walk and the trees' drop: a debug build (the hungriest) needs 24–40 KiB on the deepest shapes (nested
/// tables, right-associative chains); twice that, reserved only when a chunk nests
/// deeply, and touched only as far as used.
const STACK_PER_LEVEL: usize = 80 << 10;

/// The stack to parse, walk and drop a chunk nesting `depth` levels deep on (touched only
/// as far as used).
fn stack_for(depth: usize) -> usize {
    (depth + 8).saturating_mul(STACK_PER_LEVEL).max(1 << 20)
}

/// Lints `source` (a script file's bytes, shebang and BOM included) against `env`.
pub(crate) fn lint(env: &Environment, source: &[u8]) -> LintReport {
    let mut report = LintReport::default();
    if let Some(limit) = env.source_limit {
        if source.len() > limit {
            report.findings.push(whole(
                "source-limit",
                Severity::Error,
                format!(
                    "the source is {} bytes, over the sandbox's {limit} byte limit: it would \
                     be refused unrun",
                    source.len()
                ),
            ));
            return report;
        }
    }
    let code = crate::vm::load::skip_prelude(source);
    if code.first() == Some(&0x1b) {
        report.findings.push(whole(
            "binary-chunk",
            Severity::Error,
            "binary chunks are refused: send Lua source text".into(),
        ));
        return report;
    }
    let code = lua_line_breaks(code);
    let code: &[u8] = &code;
    let depth = lex::nesting_bound(code);
    if depth > MAX_NESTING {
        report.findings.push(whole(
            "too-complex",
            Severity::Warning,
            format!(
                "the script nests too deeply to check (more than {MAX_NESTING} levels of \
                 brackets, blocks and operators); stock Lua compiles at most 200 nested levels"
            ),
        ));
        return report;
    }
    let text = String::from_utf8_lossy(code);
    let stack = stack_for(depth);
    stacker::maybe_grow(stack, stack, || scope::analyse(env, &text, &mut report));
    report
        .findings
        .sort_by_key(|f| (f.line, f.column, f.severity));
    report
}

/// The fast parser against full_moon, and against Lua's own compiler, on `src`. When the
/// fast parser accepts it (and records nothing Lua refuses), Lua must compile it, but
/// for the compile errors the linter does not claim to find (`goto` and labels, Lua's
/// own limits, an assignment to a `<const>` local, which the walk reports); and then
/// full_moon must either read it without error, with the same tree as the fast parser's
/// (offsets included), or refuse valid Lua (it does for a `break` before a block's last
/// statement, empty statements, a form feed). A panic, with the first difference,
/// otherwise. Returns whether the fast parser accepted it. For the differential tests
/// and the `lint_parsers` fuzz target; the caller bounds the nesting, as [`lint`] does.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parsers_agree(src: &str) -> bool {
    let Ok(parsed) = parse::chunk(src) else {
        return false;
    };
    if !parsed.refused.is_empty() {
        return true;
    }
    if let Some(error) = lua_refuses(src) {
        panic!("the fast parser accepts what Lua refuses ({error}):\n{src}");
    }
    // full_moon ends a comment only at a `\n`, Lua at a `\r` too, and its lexer panics on
    // a backtick where it loses track of a string (the linter blanks them before
    // full_moon reads a script): the trees are compared on a copy with each `\r` a `\n`
    // and each backtick a space (the same offsets).
    let src: &str = &src.replace('\r', "\n").replace('`', " ");
    if recover::full_moon_nesting(src) > MAX_NESTING {
        // full_moon reads it nesting deeper than the linter lets it parse.
        return true;
    }
    let Ok(fast) = parse::chunk(src).map(|p| p.block) else {
        return true;
    };
    let Some(result) = recover::parse(src) else {
        // full_moon's lexer panics on some inputs; Lua accepted this one.
        return true;
    };
    if !result.errors().is_empty() {
        // Valid Lua (Lua compiled it) that full_moon refuses.
        return true;
    }
    let slow = recover::convert(src, result.ast().nodes());
    if fast != slow {
        let (a, b) = (format!("{fast:#?}"), format!("{slow:#?}"));
        let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        let from = at.saturating_sub(12);
        panic!(
            "the trees differ on:\n{src}\nfast parser:\n{}\nfull_moon:\n{}",
            a[from..(at + 3).min(a.len())].join("\n"),
            b[from..(at + 3).min(b.len())].join("\n")
        );
    }
    true
}

/// What Lua's own compiler says against `src`, if it refuses it (`src:LINE: message`):
/// compiled, never run, in a state with no library and a memory limit. For what the
/// linter's parsers cannot judge alone (a script the fast parser refuses and full_moon
/// reads without error), and to hold the parsers to Lua in tests.
fn lua_compile_error(src: &str) -> Option<String> {
    let lua = mlua::Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::default()).ok()?;
    // Compiling takes memory in proportion to the source: a generous bound, so that a
    // failure is Lua's judgement, not this state's size.
    let limit = src.len().saturating_mul(64).saturating_add(64 << 20);
    lua.set_memory_limit(limit).ok()?;
    match lua
        .load(src)
        .set_name("=src")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
    {
        Ok(_) => None,
        Err(mlua::Error::SyntaxError { message, .. }) => Some(message),
        // The parser's own limits (`C stack overflow` past 200 nested levels) come as a
        // runtime error: still Lua refusing the script.
        Err(mlua::Error::RuntimeError(message)) => Some(message),
        // Out of memory, or anything else that is not a verdict on the script.
        Err(_) => None,
    }
}

/// Lua's compiler's error on `src`, but for those the linter does not claim to find.
#[cfg(any(test, feature = "fuzzing"))]
fn lua_refuses(src: &str) -> Option<String> {
    let error = lua_compile_error(src)?;
    let not_claimed = [
        "goto",
        "label",
        "too many",
        "overflow",
        "limit",
        "const variable",
        "control structure too long",
    ];
    (!not_claimed.iter().any(|m| error.contains(m))).then_some(error)
}

/// [`parsers_agree`] on what the linter would parse, on a stack grown as [`lint`] grows
/// it; `false` for a source nesting past [`MAX_NESTING`].
#[cfg(feature = "fuzzing")]
pub(crate) fn parsers_agree_bounded(src: &str) -> bool {
    let depth = lex::nesting_bound(src.as_bytes());
    if depth > MAX_NESTING {
        return false;
    }
    let stack = stack_for(depth.max(MAX_NESTING));
    stacker::maybe_grow(stack, stack, || parsers_agree(src))
}

/// `code` with its line breaks as Lua reads them, in a form the lexers (ours and
/// full_moon's) read the same way. Lua ends a line (and a comment) at a lone `\r` too,
/// and takes `\n\r` for one break; they break only at `\n`, so code after a lone `\r`
/// in a comment was invisible to the linter (an `http.get` left out of the manifest).
/// A lone `\r` becomes `\n`, the `\r` of a `\n\r` a space, `\r\n` stays: the same
/// length, so every offset holds, and the same meaning (long strings store any break
/// as `\n`; a raw break in a short string is an error either way).
fn lua_line_breaks(code: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !code.contains(&b'\r') {
        return std::borrow::Cow::Borrowed(code);
    }
    let mut out = code.to_vec();
    let mut i = 0;
    while let Some(&b) = code.get(i) {
        let pair = matches!(
            (b, code.get(i + 1)),
            (b'\n', Some(b'\r')) | (b'\r', Some(b'\n'))
        );
        match b {
            b'\n' | b'\r' if pair => {
                if b == b'\n' {
                    out[i + 1] = b' ';
                }
                i += 2;
            }
            b'\r' => {
                out[i] = b'\n';
                i += 1;
            }
            _ => i += 1,
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A finding at `span`.
fn finding(
    rule: &'static str,
    severity: Severity,
    span: ast::Span,
    message: String,
    suggestion: Option<String>,
) -> Finding {
    Finding {
        rule,
        severity,
        line: span.line,
        column: span.column,
        end_line: span.end_line,
        end_column: span.end_column,
        message,
        suggestion,
    }
}

/// A finding about the whole script, at line 1.
fn whole(rule: &'static str, severity: Severity, message: String) -> Finding {
    finding(rule, severity, ast::Span::START, message, None)
}
