//! Scripts with a syntax error: full_moon's parse, which recovers and says what is wrong,
//! converted to the linter's tree ([`super::ast`]) so that the rest of the script is
//! still read. Valid scripts never come here: [`super::parse`] reads them, faster.
//!
//! The conversion keeps what the rules look at and drops the rest (punctuation, trivia,
//! `goto`, labels, `break`). Every offset comes from full_moon's own ranges, which
//! exclude trivia, so for a valid script this tree is the fast parser's, offsets
//! included (the differential tests in `differential.rs` hold the two to it).
//!
//! The input is untrusted and a recovered tree can be odd (tokens full_moon made up to
//! close a construct have no place in the source): nothing here indexes the source
//! without checking, and what cannot be read is left out or left empty, never a panic.

use std::collections::HashSet;

use full_moon::ast as fm;
use full_moon::node::Node;
use full_moon::tokenizer::{Symbol, TokenReference, TokenType};
use full_moon::LuaVersion;

use super::ast::{
    self, clamp, Args, Block, Expr, ExprKind, Field, FuncBody, Lines, Name, Prefix, Range, Span,
    Stmt, Suffix, Table,
};
use super::hints::{repair, syntax_hint_indexed};
use super::lex::{Kind, Lexer};
use super::{finding, LintReport, Severity};

/// full_moon's tree of a script with syntax errors, and what was reported about them.
pub(super) struct Recovered {
    /// The text full_moon read: the script with its backticks blanked and other
    /// languages' spellings repaired, each in place (same offsets).
    source: String,
    ast: full_moon::ast::Ast,
    /// Syntax findings were added to the report.
    pub(super) syntax_errors: bool,
    /// Errors remain after the repairs: the tree misses what the parser skipped.
    pub(super) still_broken: bool,
    /// Lua's compile error, where full_moon found none and this linter's parser refused
    /// the script: to report after the walk, unless the walk found a syntax error on
    /// its line (the walk checks some of what Lua's compiler does: `goto`, attributes).
    pub(super) lua_said: Option<crate::lint::Finding>,
}

impl Recovered {
    /// The recovered tree, as the linter's.
    pub(super) fn tree(&self) -> ast::Block<'_> {
        convert(&self.source, self.ast.nodes())
    }
}

/// full_moon's parse of `text`, with its syntax errors added to `report` as findings
/// (`lines` places them); `None` when the parser itself failed (reported too). With
/// `lua_judges` (where the fast parser gave up, when known), Lua's compiler is asked
/// about a script full_moon finds no error in ([`Recovered::lua_said`]).
pub(super) fn read(
    text: &str,
    lines: &Lines<'_>,
    report: &mut LintReport,
    lua_judges: Option<Option<ast::Range>>,
) -> Option<Recovered> {
    let (blanked, backticks) = blank_backticks(text);
    if !nests_within_bound(&blanked, report) {
        return None;
    }
    let Some(result) = parse(&blanked) else {
        report.findings.push(finding(
            "syntax",
            Severity::Error,
            Span::START,
            "the script could not be parsed: the parser failed on it".to_string(),
            None,
        ));
        return None;
    };
    let mut errors: Vec<(Span, String)> = result.errors().iter().map(parse_error).collect();
    let mut ast = result.into_ast();
    let mut fixed_source = None;
    let mut repaired = Vec::new();
    let mut still_broken = !errors.is_empty();
    // After a syntax error, the parser's recovery may have skipped much of the script,
    // and its errors land where recovery stopped, not where the mistake is. With the
    // other languages' spellings repaired (same positions), each spelling is reported
    // where it stands, the errors left are the script's own, and the rest of the
    // script is read for everything else.
    if still_broken {
        if let Some((fixed, repairs)) = repair(&blanked) {
            let again = nests_within_bound(&fixed, report)
                .then(|| parse(&fixed))
                .flatten();
            if let Some(again) = again {
                errors = again.errors().iter().map(parse_error).collect();
                still_broken = !errors.is_empty();
                ast = again.into_ast();
                repaired = repairs;
                fixed_source = Some(fixed);
            }
        }
    }
    let range = |start: usize, end: usize| ast::Range {
        start: u32::try_from(start).unwrap_or(u32::MAX),
        end: u32::try_from(end).unwrap_or(u32::MAX),
    };
    let mut lines_with_errors = HashSet::new();
    for &at in &backticks {
        let span = lines.span(range(at, at + 1));
        if lines_with_errors.insert(span.line) {
            report.findings.push(finding(
                "syntax",
                Severity::Error,
                span,
                "syntax error: a backtick (`) is not Lua".to_string(),
                Some(
                    "Lua strings are quoted with \"...\", '...' or [[...]]; a Markdown code \
                     fence (```) does not belong in the script"
                        .to_string(),
                ),
            ));
        }
    }
    for r in &repaired {
        let span = lines.span(range(r.start, r.end));
        if lines_with_errors.insert(span.line) {
            report.findings.push(finding(
                "syntax",
                Severity::Error,
                span,
                format!("syntax error: `{}` is not Lua", r.text),
                Some(r.hint.clone()),
            ));
        }
    }
    for (span, message) in errors {
        // One error per line: the parser's recovery reports the same mistake again.
        if !lines_with_errors.insert(span.line) {
            continue;
        }
        let hint = syntax_hint_indexed(
            blanked.as_bytes(),
            lines.starts(),
            Some(span.line),
            &message,
        );
        let after_return = hint.as_deref().is_some_and(|h| h.contains("do return end"));
        report.findings.push(finding(
            if after_return {
                "unreachable-code"
            } else {
                "syntax"
            },
            Severity::Error,
            span,
            format!("syntax error: {message}"),
            hint,
        ));
    }
    if lines_with_errors.is_empty() {
        // full_moon reads it without error, yet this linter's parser did not: what
        // full_moon does not check and Lua refuses. Escapes are the one said here.
        for (at, escape) in invalid_escapes(&blanked) {
            let span = lines.span(range(at, at + escape.len()));
            if lines_with_errors.insert(span.line) {
                report.findings.push(finding(
                    "syntax",
                    Severity::Error,
                    span,
                    format!("syntax error: invalid escape sequence `{escape}`"),
                    Some(
                        "Lua's escapes are \\n \\t \\r \\\\ \\\" \\' \\a \\b \\f \\v, \\xXX, \\ddd (up \
                         to 255), \\u{XXX} and \\z; a backslash itself is written `\\\\`"
                            .to_string(),
                    ),
                ));
            }
        }
    }
    // Still nothing, yet this linter's parser refused it: Lua's own compiler judges
    // (`return return`, `0x.p1`), and what it refuses is a finding on the line it names,
    // unless the walk reports the same there ([`Recovered::lua_said`]).
    let lua_said = lua_judges
        .filter(|_| lines_with_errors.is_empty())
        .and_then(|stuck| Some((stuck, lua_verdict(text)?)))
        .map(|(stuck, (line, message))| {
            let span = match line {
                Some(line) => line_span(text, lines, line, near(&message), stuck),
                // Where this linter's parser gave up.
                None => stuck.map_or(Span::START, |r| lines.span(r)),
            };
            finding(
                "syntax",
                Severity::Error,
                span,
                format!("syntax error: {message}"),
                None,
            )
        });
    let lua_refused = lua_said.is_some();
    Some(Recovered {
        lua_said,
        source: fixed_source.unwrap_or_else(|| blanked.into_owned()),
        ast,
        syntax_errors: !lines_with_errors.is_empty() || lua_refused,
        still_broken,
    })
}
/// A parse error's span and message (the tokenizer's messages end with their range,
/// which the finding has).
fn parse_error(error: &full_moon::Error) -> (Span, String) {
    let (start, end) = error.range();
    let span = Span {
        line: clamp(start.line()),
        column: clamp(start.character()),
        end_line: clamp(end.line()),
        end_column: clamp(end.character()),
    };
    let message = error.error_message().into_owned();
    let message = match message.rfind(" (") {
        Some(at) if message.ends_with(')') && message[at..].contains(" to ") => {
            message[..at].to_string()
        }
        _ => message,
    };
    (span, message)
}

/// `text` with every backtick that stands where a token would (not inside a string or a
/// comment) blanked, and where they were. full_moon's lexer treats a backtick as Luau's
/// interpolated-string quote and, with Luau off, reaches an `unreachable!()` on it: a
/// Markdown fence (```` ```lua ````) pasted into a script would panic the linter. It is
/// never valid Lua 5.4, so it is reported here as a syntax error and the rest is read.
fn blank_backticks(text: &str) -> (std::borrow::Cow<'_, str>, Vec<usize>) {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'`') {
        return (std::borrow::Cow::Borrowed(text), Vec::new());
    }
    let at: Vec<usize> = Lexer::new(bytes)
        .filter(|t| t.kind == Kind::Other && bytes.get(t.start) == Some(&b'`'))
        .map(|t| t.start)
        .collect();
    // Every backtick is blanked, also those this module's lexer sees inside a string or
    // a comment: where a string ends on malformed input (an unfinished one, a lone
    // `\r`) full_moon's lexer and this one may disagree, and a backtick full_moon
    // reads as a token start is the panic. Inside a real string or comment a blank
    // changes nothing the rules look at but that text. Only those at token positions
    // are reported.
    let mut out: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'`' { b' ' } else { b })
        .collect();
    for &i in &at {
        out[i] = b' ';
        // A fence line (```` ```lua ````): its info string goes too, or it would read as
        // a stray name.
        // Only blanks before it on its line: a walk back over them alone (a scan to the
        // line's start for each backtick was quadratic on a long line of them).
        let first_on_line = bytes[..i]
            .iter()
            .rev()
            .find(|&&b| b == b'\n' || !b.is_ascii_whitespace())
            .is_none_or(|&b| b == b'\n');
        if first_on_line && bytes[i..].starts_with(b"```") {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n);
            for b in &mut out[i..end] {
                if b.is_ascii() {
                    *b = b' ';
                }
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII: still UTF-8.
    let blanked = String::from_utf8(out).unwrap_or_else(|_| text.replace('`', " "));
    (std::borrow::Cow::Owned(blanked), at)
}

/// True when full_moon's parser, by its own tokens, nests `text` no deeper than the
/// linter parses ([`super::MAX_NESTING`]); else a `too-complex` finding. The bound the
/// linter checks first is this module's lexer's view; full_moon's lexer reads some
/// strings differently (a `\z` then a line break ends a string for it, not for Lua), so
/// code it recurses through may be string text to that bound: a string of 19,000 `(`
/// overflowed the host's stack. The caller runs this path on a stack for the maximum.
fn nests_within_bound(text: &str, report: &mut LintReport) -> bool {
    if full_moon_nesting(text) <= super::MAX_NESTING {
        return true;
    }
    report.findings.push(finding(
        "too-complex",
        Severity::Warning,
        Span::START,
        format!(
            "the script nests too deeply to check (more than {} levels of brackets, \
             blocks and operators, as the parser reads it)",
            super::MAX_NESTING
        ),
        None,
    ));
    false
}

/// [`super::lex::nesting_bound`] over full_moon's own tokens of `text`.
pub(super) fn full_moon_nesting(text: &str) -> usize {
    let tokens = std::panic::catch_unwind(|| {
        match full_moon::tokenizer::Lexer::new(text, LuaVersion::lua54()).collect() {
            full_moon::tokenizer::LexerResult::Ok(tokens)
            | full_moon::tokenizer::LexerResult::Recovered(tokens, _) => tokens,
            full_moon::tokenizer::LexerResult::Fatal(_) => Vec::new(),
        }
    })
    .unwrap_or_default();
    let bytes = text.as_bytes();
    let ours = tokens.iter().filter_map(|t| {
        let start = t.start_position().bytes();
        let end = t.end_position().bytes();
        let spelled = bytes.get(start..end)?;
        let kind = match t.token_type() {
            TokenType::Identifier { .. } => Kind::Name,
            TokenType::Number { .. } => Kind::Number,
            TokenType::StringLiteral { .. } => Kind::Str,
            TokenType::Symbol { .. } if spelled.first().is_some_and(u8::is_ascii_alphabetic) => {
                Kind::Name
            }
            TokenType::Symbol { .. } => Kind::Sym(super::lex::symbol(spelled)?),
            _ => return None,
        };
        Some(super::lex::Token { kind, start, end })
    });
    super::lex::nesting_bound_of(bytes, ours)
}

/// full_moon's parse, with a panic inside it (a bug of the parser on some input we do
/// not know yet) contained: `None` then, and the linter reports that it could not read
/// the script rather than taking the host down.
pub(super) fn parse(text: &str) -> Option<full_moon::ast::AstResult> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        full_moon::parse_fallible(text, LuaVersion::lua54())
    }))
    .ok()
}

/// The escapes Lua refuses in the short strings of `text`: where each starts, and its
/// text (the backslash and the next character).
fn invalid_escapes(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    Lexer::new(bytes)
        .filter(|t| t.kind == Kind::Str)
        .filter_map(|t| {
            let at = t.start + super::parse::invalid_escape(t.text(bytes))?;
            let escape: String = text.get(at..)?.chars().take(2).collect();
            Some((at, escape))
        })
        .collect()
}

/// Converts `block`, full_moon's tree of exactly `src`, to the linter's tree.
pub(crate) fn convert<'s>(src: &'s str, block: &fm::Block) -> Block<'s> {
    Converter { src }.block(block)
}

/// The source the tree's offsets point into, so that names and literals are slices of
/// it rather than copies.
struct Converter<'s> {
    src: &'s str,
}

/// Bytes `start..end` of `node`, trivia excluded (the default when full_moon cannot
/// place it). Only for tokens and nodes with no expression inside: full_moon places a
/// node from its range, and a node's range from both ends of its children, so placing a
/// chain nested N deep (`a[a[a[...]]]`) costs 2^N (a 150-byte line hung the linter; found
/// by the `lint_source` fuzz target). Nodes with expressions inside are placed from
/// their own tokens and their converted children ([`Converter::chain`]).
fn range_of(node: &impl Node) -> Range {
    match node.range() {
        Some((start, end)) => Range {
            start: offset(start.bytes()),
            end: offset(end.bytes()),
        },
        None => Range::default(),
    }
}

/// From the start of token `first` to the end of token `last`.
fn between(first: &TokenReference, last: &TokenReference) -> Range {
    Range {
        start: range_of(first).start,
        end: range_of(last).end,
    }
}

/// A table constructor's braces.
fn table_range(table: &fm::TableConstructor) -> Range {
    let (open, close) = table.braces().tokens();
    between(open, close)
}

/// Where a suffix ends: its last token's end.
fn suffix_end(suffix: &fm::Suffix) -> Option<u32> {
    let args_end = |args: &fm::FunctionArgs| match args {
        fm::FunctionArgs::Parentheses { parentheses, .. } => {
            Some(range_of(parentheses.tokens().1).end)
        }
        fm::FunctionArgs::TableConstructor(t) => Some(table_range(t).end),
        fm::FunctionArgs::String(token) => Some(range_of(token).end),
        _ => None,
    };
    match suffix {
        fm::Suffix::Index(fm::Index::Dot { name, .. }) => Some(range_of(name).end),
        fm::Suffix::Index(fm::Index::Brackets { brackets, .. }) => {
            Some(range_of(brackets.tokens().1).end)
        }
        fm::Suffix::Call(fm::Call::AnonymousCall(args)) => args_end(args),
        fm::Suffix::Call(fm::Call::MethodCall(m)) => args_end(m.args()),
        _ => None,
    }
}

/// A byte offset as the tree stores it (sources are far below 4 GiB; saturate anyway).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'s> Converter<'s> {
    /// The source text of `range`, if it is one (a made-up token's may not be).
    fn slice(&self, range: Range) -> Option<&'s str> {
        let start = usize::try_from(range.start).ok()?;
        let end = usize::try_from(range.end).ok()?;
        self.src.get(start..end)
    }

    /// The text of `token` as written (empty when it cannot be found in the source).
    fn text(&self, token: &TokenReference) -> (&'s str, Range) {
        let range = range_of(token);
        (self.slice(range).unwrap_or_default(), range)
    }

    /// `token` as a name: only an identifier that is where full_moon says it is.
    fn name(&self, token: &TokenReference) -> Option<Name<'s>> {
        let TokenType::Identifier { identifier } = token.token_type() else {
            return None;
        };
        let range = range_of(token);
        let text = self.slice(range)?;
        (text == identifier.as_str()).then_some(Name { text, range })
    }

    fn block(&self, block: &fm::Block) -> Block<'s> {
        let stmts = block.stmts().filter_map(|s| self.stmt(s)).collect();
        let ret = match block.last_stmt() {
            Some(fm::LastStmt::Return(r)) => Some(self.exprs(r.returns())),
            _ => None,
        };
        Block { stmts, ret }
    }

    fn exprs<'a>(&self, list: impl IntoIterator<Item = &'a fm::Expression>) -> Vec<Expr<'s>> {
        list.into_iter().map(|e| self.expr(e)).collect()
    }

    /// A statement, or `None` for those the tree leaves out (`goto`, labels) and for the
    /// odd recovered one without the name it needs.
    fn stmt(&self, stmt: &fm::Stmt) -> Option<Stmt<'s>> {
        Some(match stmt {
            fm::Stmt::Assignment(a) => Stmt::Assign {
                targets: a.variables().iter().map(|v| self.var(v)).collect(),
                values: self.exprs(a.expressions()),
            },
            fm::Stmt::LocalAssignment(l) => {
                // Recovery may leave fewer attributes than names: the rest have none.
                let attributes = l.attributes().chain(std::iter::repeat(None));
                let names = l
                    .names()
                    .iter()
                    .zip(attributes)
                    .filter_map(|(n, a)| {
                        let attribute = a.and_then(|a| self.name(a.name()));
                        Some((self.name(n)?, attribute))
                    })
                    .collect();
                Stmt::Local {
                    names,
                    values: self.exprs(l.expressions()),
                }
            }
            fm::Stmt::FunctionCall(c) => Stmt::Call(self.call(c)),
            fm::Stmt::Do(d) => Stmt::Do(self.block(d.block())),
            fm::Stmt::While(w) => Stmt::While(self.expr(w.condition()), self.block(w.block())),
            fm::Stmt::Repeat(r) => Stmt::Repeat(self.block(r.block()), self.expr(r.until())),
            fm::Stmt::If(i) => {
                let mut arms = vec![(self.expr(i.condition()), self.block(i.block()))];
                for arm in i.else_if().into_iter().flatten() {
                    arms.push((self.expr(arm.condition()), self.block(arm.block())));
                }
                Stmt::If {
                    arms,
                    otherwise: i.else_block().map(|b| self.block(b)),
                }
            }
            fm::Stmt::NumericFor(f) => Stmt::NumericFor {
                var: self.name(f.index_variable())?,
                start: self.expr(f.start()),
                end: self.expr(f.end()),
                step: f.step().map(|e| self.expr(e)),
                body: self.block(f.block()),
            },
            fm::Stmt::GenericFor(f) => Stmt::GenericFor {
                names: f.names().iter().filter_map(|n| self.name(n)).collect(),
                exprs: self.exprs(f.expressions()),
                body: self.block(f.block()),
            },
            fm::Stmt::FunctionDeclaration(f) => Stmt::Function {
                names: f
                    .name()
                    .names()
                    .iter()
                    .filter_map(|n| self.name(n))
                    .collect(),
                method: f.name().method_name().and_then(|n| self.name(n)),
                range: range_of(f.name()),
                body: self.body(f.body()),
            },
            fm::Stmt::LocalFunction(f) => Stmt::LocalFunction {
                name: self.name(f.name())?,
                body: self.body(f.body()),
            },
            fm::Stmt::Goto(g) => Stmt::Goto(self.name(g.label_name())?),
            fm::Stmt::Label(l) => Stmt::Label(self.name(l.name())?),
            _ => return None,
        })
    }

    fn body(&self, body: &fm::FunctionBody) -> FuncBody<'s> {
        let params = body
            .parameters()
            .iter()
            .filter_map(|p| match p {
                fm::Parameter::Name(n) => self.name(n),
                _ => None,
            })
            .collect();
        FuncBody {
            params,
            block: self.block(body.block()),
        }
    }

    /// An assignment target: a name, or a chain (ending in an index when valid).
    fn var(&self, var: &fm::Var) -> Expr<'s> {
        match var {
            fm::Var::Expression(v) => self.chain(v.prefix(), v.suffixes()),
            fm::Var::Name(token) => self.name_expr(token),
            _ => Expr {
                kind: ExprKind::Nil,
                range: range_of(var),
            },
        }
    }

    /// A name on its own: a chain without suffixes (nil if the token is not a name).
    fn name_expr(&self, token: &TokenReference) -> Expr<'s> {
        let range = range_of(token);
        let kind = match self.name(token) {
            Some(name) => ExprKind::Chain(Box::new(Prefix::Name(name)), Vec::new()),
            None => ExprKind::Nil,
        };
        Expr { kind, range }
    }

    fn call(&self, call: &fm::FunctionCall) -> Expr<'s> {
        self.chain(call.prefix(), call.suffixes())
    }

    /// A chain's range runs from its prefix to the end of its last suffix, computed here
    /// from the converted prefix and the suffixes' last tokens: full_moon's own range of a
    /// chain ending in `[key]` stops before the `]`, and costs 2^N for N nested chains
    /// ([`range_of`]).
    fn chain<'a>(
        &self,
        prefix: &fm::Prefix,
        suffixes: impl Iterator<Item = &'a fm::Suffix>,
    ) -> Expr<'s> {
        let (prefix, range) = match prefix {
            fm::Prefix::Name(token) => {
                let range = range_of(token);
                match self.name(token) {
                    Some(name) => (Prefix::Name(name), range),
                    None => {
                        return Expr {
                            kind: ExprKind::Nil,
                            range,
                        }
                    }
                }
            }
            fm::Prefix::Expression(e) => {
                let e = self.expr(e);
                let range = e.range;
                (Prefix::Expr(e), range)
            }
            other => {
                let range = range_of(other);
                (
                    Prefix::Expr(Expr {
                        kind: ExprKind::Nil,
                        range,
                    }),
                    range,
                )
            }
        };
        let suffixes: Vec<&fm::Suffix> = suffixes.collect();
        let end = suffixes
            .last()
            .map_or(range.end, |s| suffix_end(s).unwrap_or(range.end));
        let suffixes = suffixes
            .into_iter()
            .filter_map(|s| self.suffix(s))
            .collect();
        Expr {
            kind: ExprKind::Chain(Box::new(prefix), suffixes),
            range: Range {
                start: range.start,
                end,
            },
        }
    }

    fn suffix(&self, suffix: &fm::Suffix) -> Option<Suffix<'s>> {
        match suffix {
            fm::Suffix::Index(fm::Index::Dot { name, .. }) => Some(Suffix::Dot(self.name(name)?)),
            fm::Suffix::Index(fm::Index::Brackets { expression, .. }) => {
                Some(Suffix::Index(self.expr(expression)))
            }
            fm::Suffix::Call(fm::Call::AnonymousCall(args)) => Some(Suffix::Call(self.args(args))),
            fm::Suffix::Call(fm::Call::MethodCall(m)) => {
                Some(Suffix::Method(self.name(m.name())?, self.args(m.args())))
            }
            _ => None,
        }
    }

    fn args(&self, args: &fm::FunctionArgs) -> Args<'s> {
        match args {
            fm::FunctionArgs::Parentheses { arguments, .. } => Args::List(self.exprs(arguments)),
            fm::FunctionArgs::TableConstructor(t) => Args::Table(self.table(t), table_range(t)),
            fm::FunctionArgs::String(token) => {
                let (text, range) = self.text(token);
                Args::Str(text, range)
            }
            _ => Args::List(Vec::new()),
        }
    }

    fn table(&self, table: &fm::TableConstructor) -> Table<'s> {
        let fields = table
            .fields()
            .iter()
            .filter_map(|f| match f {
                fm::Field::ExpressionKey { key, value, .. } => {
                    Some(Field::Keyed(self.expr(key), self.expr(value)))
                }
                fm::Field::NameKey { key, value, .. } => {
                    Some(Field::Named(self.name(key)?, self.expr(value)))
                }
                fm::Field::NoKey(value) => Some(Field::Item(self.expr(value))),
                _ => None,
            })
            .collect();
        Table { fields }
    }

    /// Each node's range is taken from its own tokens, never from `range_of` over a
    /// subtree: full_moon computes that by walking down the subtree's spine, so a chain
    /// of N operators converted that way costs N² (a megabyte of them, with one syntax
    /// error, took 20 s; found in review).
    fn expr(&self, expr: &fm::Expression) -> Expr<'s> {
        let kind = match expr {
            // Operator ranges are their operands' (full_moon's would inherit a chain's
            // short end).
            fm::Expression::BinaryOperator { lhs, binop, rhs } => {
                let (lhs, rhs) = (self.expr(lhs), self.expr(rhs));
                return Expr {
                    range: Range {
                        start: lhs.range.start,
                        end: rhs.range.end,
                    },
                    kind: ExprKind::Binary(
                        self.text(binop.token()).0,
                        Box::new(lhs),
                        Box::new(rhs),
                    ),
                };
            }
            fm::Expression::UnaryOperator { unop, expression } => {
                let (op, range_op) = self.text(unop.token());
                let operand = self.expr(expression);
                return Expr {
                    range: Range {
                        start: range_op.start,
                        end: operand.range.end,
                    },
                    kind: ExprKind::Unary(op, Box::new(operand)),
                };
            }
            fm::Expression::Parentheses {
                contained,
                expression,
            } => {
                let (open, close) = contained.tokens();
                return Expr {
                    kind: ExprKind::Paren(Box::new(self.expr(expression))),
                    range: between(open, close),
                };
            }
            fm::Expression::Function(f) => {
                return Expr {
                    kind: ExprKind::Function(Box::new(self.body(f.body()))),
                    range: between(f.function_token(), f.body().end_token()),
                }
            }
            fm::Expression::FunctionCall(c) => return self.call(c),
            fm::Expression::TableConstructor(t) => {
                return Expr {
                    kind: ExprKind::Table(self.table(t)),
                    range: table_range(t),
                }
            }
            fm::Expression::Number(token) => ExprKind::Number(self.text(token).0),
            fm::Expression::String(token) => ExprKind::Str(self.text(token).0),
            fm::Expression::Symbol(token) => match token.token_type() {
                TokenType::Symbol {
                    symbol: Symbol::True,
                } => ExprKind::True,
                TokenType::Symbol {
                    symbol: Symbol::False,
                } => ExprKind::False,
                TokenType::Symbol {
                    symbol: Symbol::Ellipsis,
                } => ExprKind::Dots,
                _ => ExprKind::Nil,
            },
            fm::Expression::Var(var) => return self.var(var),
            _ => ExprKind::Nil,
        };
        // Leaves: a token each.
        Expr {
            kind,
            range: range_of(expr),
        }
    }
}

/// Lua's compile error on `text`, as its line (when Lua names one: `C stack overflow`
/// names none) and message, but for `goto` and labels: the walk reports those itself,
/// and Lua places them where the block closes. Matched on Lua's own words, before the
/// `near '...'` a script can fill with any token.
fn lua_verdict(text: &str) -> Option<(Option<u32>, String)> {
    let error = super::lua_compile_error(text)?;
    let placed = error
        .strip_prefix("src:")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(line, message)| Some((line.parse::<u32>().ok()?, message)));
    let (line, message) = match placed {
        Some((line, message)) => (Some(line), message),
        None => (None, error.as_str()),
    };
    let own_words = message
        .rsplit_once(" near ")
        .map_or(message, |(words, _)| words);
    let walked = [
        "no visible label",
        "already defined on line",
        "jumps into the scope of local",
    ];
    (!walked.iter().any(|w| own_words.contains(w))).then(|| (line, message.to_string()))
}

/// The token a Lua message names (`... near 'x'`).
fn near(message: &str) -> Option<&str> {
    let (_, token) = message.rsplit_once(" near '")?;
    token.strip_suffix('\'')
}

/// The span of `token` on line `line` (1-based) of `text` where it stands there, else of
/// the line from its first character that is not blank to its end; the script's start if
/// it has no such line.
fn line_span(
    text: &str,
    lines: &Lines<'_>,
    line: u32,
    token: Option<&str>,
    stuck: Option<ast::Range>,
) -> Span {
    let starts = lines.starts();
    let Some(&start) = usize::try_from(line)
        .ok()
        .and_then(|l| l.checked_sub(1))
        .and_then(|i| starts.get(i))
    else {
        return Span::START;
    };
    let start = start as usize;
    let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
    let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    // Where this linter's parser gave up, if that is the token Lua names on that line;
    // else the token's first place on the line.
    if let Some(stuck) = stuck.filter(|r| {
        let (from, to) = (r.start as usize, r.end as usize);
        from >= start && to <= end && token.is_some_and(|t| text.get(from..to) == Some(t))
    }) {
        return lines.span(stuck);
    }
    if let Some((n, token)) = token
        .filter(|t| !t.is_empty())
        .and_then(|t| Some((text[start..end].find(t)?, t)))
    {
        return lines.span(ast::Range {
            start: at(start + n),
            end: at(start + n + token.len()),
        });
    }
    let first = text[start..end]
        .find(|c: char| !c.is_whitespace())
        .map_or(start, |n| start + n);
    lines.span(ast::Range {
        start: at(first),
        end: at(end.max(first)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::ast::{Args, Expr, ExprKind, Field, Name, Prefix, Range, Stmt, Suffix};
    use super::super::differential::{converted, range, sexp};
    use super::convert;

    /// The tree of `src` (valid Lua, offsets checked), rendered.
    fn tree(src: &str) -> String {
        sexp(&converted(src))
    }

    fn name(text: &str, start: u32) -> Name<'_> {
        Name {
            text,
            range: range(start, start + text.len() as u32),
        }
    }

    fn var(text: &str, start: u32) -> Expr<'_> {
        Expr {
            kind: ExprKind::Chain(Box::new(Prefix::Name(name(text, start))), Vec::new()),
            range: range(start, start + text.len() as u32),
        }
    }

    fn number(text: &str, start: u32) -> Expr<'_> {
        Expr {
            kind: ExprKind::Number(text),
            range: range(start, start + text.len() as u32),
        }
    }

    #[test]
    fn statements() {
        assert_eq!(
            tree("local a <const>, b <close>, c = 1, 's'"),
            "[(local (a<const> b<close> c) 1 's')]"
        );
        assert_eq!(tree("local a"), "[(local (a))]");
        assert_eq!(
            tree("a, b.c, d[1] = f(), 2"),
            "[(set (a (chain b .c) (chain d (index 1))) ((chain f (call (args))) 2))]"
        );
        assert_eq!(tree("f(1, 2)"), "[(call (chain f (call (args 1 2))))]");
        assert_eq!(tree("do local x end"), "[(do [(local (x))])]");
        assert_eq!(tree("while x do end"), "[(while x [])]");
        assert_eq!(
            tree("repeat local y = 1 until y"),
            "[(repeat [(local (y) 1)] y)]"
        );
        assert_eq!(
            tree("if a then x() elseif b then elseif c then return else y() end"),
            "[(if (a [(call (chain x (call (args))))]) (b []) (c [(return)]) \
             else [(call (chain y (call (args))))])]"
        );
        assert_eq!(tree("if a then end"), "[(if (a []))]");
        assert_eq!(
            tree("for i = 1, n do end for j = 10, 1, -1 do end"),
            "[(fornum i 1 n _ []) (fornum j 10 1 (- 1) [])]"
        );
        assert_eq!(
            tree("for k, v in pairs(t), 1 do end"),
            "[(forin (k v) ((chain pairs (call (args t))) 1) [])]"
        );
        assert_eq!(
            tree("function a.b.c:m(x, ...) return self end"),
            "[(function a.b.c:m (x) [(return self)])]"
        );
        assert_eq!(tree("function f() end"), "[(function f () [])]");
        assert_eq!(
            tree("local function g(a, b) end"),
            "[(localfunction g (a b) [])]"
        );
        assert_eq!(tree("return 1, ..."), "[(return 1 ...)]");
        assert_eq!(tree("return"), "[(return)]");
        assert_eq!(tree(""), "[]");
    }

    #[test]
    fn left_out() {
        // `break` and empty statements are not in the tree; neither is a `return`
        // (ret) after a `break`. `goto` and labels are.
        assert_eq!(
            tree("::top:: goto top while x do f() break end"),
            "[(label top) (goto top) (while x [(call (chain f (call (args))))])]"
        );
        let b = converted("while x do break end");
        let Stmt::While(_, body) = &b.stmts[0] else {
            panic!("{b:?}")
        };
        assert_eq!(body.ret, None);
        assert!(body.stmts.is_empty());
        assert_eq!(converted("x = 1;").stmts.len(), 1);
    }

    #[test]
    fn expressions() {
        assert_eq!(
            tree("x = nil, true, false, ..., 0x1p-4, 'a\\n', [==[s]==]"),
            "[(set (x) (nil true false ... 0x1p-4 'a\\n' [==[s]==]))]"
        );
        assert_eq!(
            tree("x = a+b*c^-d"),
            "[(set (x) ((+ a (* b (^ c (- d))))))]"
        );
        assert_eq!(tree("x = -x^2"), "[(set (x) ((- (^ x 2))))]");
        assert_eq!(tree("x = 2^-3^2"), "[(set (x) ((^ 2 (- (^ 3 2)))))]");
        assert_eq!(tree("x = a..b..c"), "[(set (x) ((.. a (.. b c))))]");
        assert_eq!(tree("x = a-b-c"), "[(set (x) ((- (- a b) c)))]");
        assert_eq!(tree("x = not a == b"), "[(set (x) ((== (not a) b)))]");
        assert_eq!(tree("x = a or b and c"), "[(set (x) ((or a (and b c))))]");
        assert_eq!(
            tree("x = a | b ~ c & d << 1 >> 2"),
            "[(set (x) ((| a (~ b (& c (>> (<< d 1) 2))))))]"
        );
        assert_eq!(
            tree("x = ~a // #b % c"),
            "[(set (x) ((% (// (~ a) (# b)) c)))]"
        );
        assert_eq!(
            tree("x = (a + b) * c"),
            "[(set (x) ((* (paren (+ a b)) c)))]"
        );
        assert_eq!(
            tree("x = function(a, ...) end"),
            "[(set (x) ((fn (a) [])))]"
        );
        assert_eq!(
            tree("x = {[1] = 2; k = v, 3,}"),
            "[(set (x) ((table (key 1 2) (named k v) 3)))]"
        );
    }

    #[test]
    fn chains() {
        assert_eq!(
            tree("a.b[c](d):e(f).g = 1"),
            "[(set ((chain a .b (index c) (call (args d)) (method e (args f)) .g)) (1))]"
        );
        assert_eq!(
            tree("s:rep\"x\" f{1} f'y' f[[z]] o:m{}"),
            "[(call (chain s (method rep \"x\"))) (call (chain f (call (table 1)))) \
             (call (chain f (call 'y'))) (call (chain f (call [[z]]))) \
             (call (chain o (method m (table))))]"
        );
        assert_eq!(
            tree("(\"x\"):rep(3)"),
            "[(call (chain (paren \"x\") (method rep (args 3))))]"
        );
        assert_eq!(tree("(f)()"), "[(call (chain (paren f) (call (args))))]");
        assert_eq!(tree("x = (f)"), "[(set (x) ((paren f)))]");
    }

    #[test]
    fn ranges() {
        // Trivia (spaces, comments) is outside every range; parentheses are inside.
        let src = "x = ( a --[[c]] + 1 ) * 2 -- end";
        let b = converted(src);
        let a_plus_1 = Expr {
            kind: ExprKind::Binary("+", Box::new(var("a", 6)), Box::new(number("1", 18))),
            range: range(6, 19),
        };
        let paren = Expr {
            kind: ExprKind::Paren(Box::new(a_plus_1)),
            range: range(4, 21),
        };
        let times = Expr {
            kind: ExprKind::Binary("*", Box::new(paren), Box::new(number("2", 24))),
            range: range(4, 25),
        };
        assert_eq!(
            b.stmts,
            vec![Stmt::Assign {
                targets: vec![var("x", 0)],
                values: vec![times],
            }]
        );

        let src = "local  v <const> = - n";
        assert_eq!(
            converted(src).stmts,
            vec![Stmt::Local {
                names: vec![(name("v", 7), Some(name("const", 10)))],
                values: vec![Expr {
                    kind: ExprKind::Unary("-", Box::new(var("n", 21))),
                    range: range(19, 22),
                }],
            }]
        );

        let src = "function a.b:c() end";
        let b = converted(src);
        let Stmt::Function {
            names,
            method,
            range: r,
            ..
        } = &b.stmts[0]
        else {
            panic!("{b:?}")
        };
        assert_eq!(names, &vec![name("a", 9), name("b", 11)]);
        assert_eq!(*method, Some(name("c", 13)));
        assert_eq!(*r, range(9, 14));

        let src = "f 'x' . y {1}";
        let b = converted(src);
        let Stmt::Call(call) = &b.stmts[0] else {
            panic!("{b:?}")
        };
        assert_eq!(call.range, range(0, 13));
        let ExprKind::Chain(_, suffixes) = &call.kind else {
            panic!("{call:?}")
        };
        let [Suffix::Call(Args::Str(s, sr)), Suffix::Dot(d), Suffix::Call(Args::Table(t, tr))] =
            &suffixes[..]
        else {
            panic!("{suffixes:?}")
        };
        assert_eq!((*s, *sr), ("'x'", range(2, 5)));
        assert_eq!(*d, name("y", 8));
        assert_eq!(*tr, range(10, 13));
        assert_eq!(t.fields, vec![Field::Item(number("1", 11))]);
    }

    /// Every prefix of valid code and every code with a byte left out is something
    /// full_moon recovers from; the conversion never panics on what it recovers, and
    /// names stay where they are.
    #[test]
    fn recovered_trees() {
        let samples = [
            "local a <const>, b = f(x, y):m{1, k = 2, [3] = 4}.z[5] 'q'",
            "function a.b:c(x, ...) if x then return ... elseif y then else end end",
            "for i = 1, 2, 3 do while x do repeat local y = -x ^ 2 until y end end end",
            "for k, v in pairs(t) do goto l ::l:: break end x = (f)() .. [[s]]",
            "local function g() return function() end end do x = {a = 1; 2,} end",
        ];
        for src in super::super::differential::INVALID {
            // full_moon's lexer panics on a backtick (the linter blanks them first).
            if !src.contains('`') {
                let result = full_moon::parse_fallible(src, full_moon::LuaVersion::lua54());
                let block = convert(src, result.ast().nodes());
                check_names(src, &format!("{block:?}"));
            }
        }
        for sample in samples {
            let cuts = (0..=sample.len()).filter(|&i| sample.is_char_boundary(i));
            for i in cuts {
                for src in [
                    sample[..i].to_string(),
                    format!("{}{}", &sample[..i], sample.get(i + 1..).unwrap_or("")),
                ] {
                    let result = full_moon::parse_fallible(&src, full_moon::LuaVersion::lua54());
                    let block = convert(&src, result.ast().nodes());
                    check_names(&src, &format!("{block:?}"));
                }
            }
        }
    }

    /// Every `Name { text: "t", range: Range { start: s, end: e } }` in the debug
    /// rendering has `src[s..e] == t`.
    fn check_names(src: &str, debug: &str) {
        let mut rest = debug;
        while let Some(at) = rest.find("Name { text: \"") {
            rest = &rest[at + 14..];
            let text = &rest[..rest.find('"').unwrap()];
            let start: usize = field(rest, "start: ");
            let end: usize = field(rest, "end: ");
            assert_eq!(src.get(start..end), Some(text), "{src}");
        }
    }

    fn field(s: &str, key: &str) -> usize {
        let at = s.find(key).unwrap() + key.len();
        let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }

    #[test]
    fn default_range() {
        assert_eq!(Range::default(), range(0, 0));
    }
}
