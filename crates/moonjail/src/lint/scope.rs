//! The walk over full_moon's tree: scopes and locals, then every global path the script
//! reads, writes or calls, checked against the sandbox's [`Environment`] once the whole
//! script has been seen (a global the script defines on line 90 may be read by a function
//! on line 3).
//!
//! Severity follows one principle, no false alarms: `error` only where the code fails
//! whenever it runs (calling or indexing what does not exist, writing a tool namespace,
//! a malformed pattern literal, a URL the allowlist refuses, too few arguments). Reading
//! a missing name as a value only yields `nil` (`local unpack = table.unpack or unpack`
//! is how portable modules are written), and code that tests a name before using it
//! (`if setfenv then setfenv(1, env) end`) is feature detection: both are warnings. A
//! script that changes how globals resolve (`_ENV`, a metatable on `_G`) gets no
//! global-name errors at all.

use std::collections::{BTreeSet, HashMap, HashSet};

use full_moon::ast::{
    self, Block, Call, Expression, Field, FunctionArgs, FunctionBody, Index, LastStmt, Parameter,
    Prefix, Stmt, Suffix, Var,
};
use full_moon::node::Node;
use full_moon::tokenizer::{StringLiteralQuoteType, TokenReference, TokenType};
use full_moon::LuaVersion;

use super::hints::{foreign_name, repair, syntax_hint};
use super::lex::{Kind, Lexer};
use super::rules;
use super::view::{Entry, Environment, TableKind};
use super::{Finding, LintReport, Severity};
use crate::stdlib::strmatch::{check_pattern, check_replacement};

/// Where something is: 1-based lines and columns, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
}

fn span_of(node: &impl Node) -> Span {
    match node.range() {
        Some((start, end)) => Span {
            line: clamp(start.line()),
            column: clamp(start.character()),
            end_line: clamp(end.line()),
            end_column: clamp(end.character()),
        },
        None => Span::default(),
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// What a function argument is, as far as the text says.
#[derive(Debug, Clone)]
enum Arg {
    /// A string literal's value.
    Str(Vec<u8>),
    /// A concatenation whose leftmost operand is this string literal.
    StrPrefix(Vec<u8>),
    /// `true`, `false`, `nil`, a number, a table: something that is not a string.
    Other,
}

/// How a path is used where it appears.
#[derive(Debug, Clone)]
enum Use {
    /// Read as a value (`local f = string.pack`).
    Value,
    /// Indexed further (`weather.x`), so it must be a table.
    Index,
    /// Called with these arguments (`open`: the last one may expand to many values).
    Call {
        args: Vec<(Arg, Span)>,
        /// The arguments as JSON, when every one is a literal (`{city = "Lyon"}`, `3`).
        literal: Option<Vec<serde_json::Value>>,
        open: bool,
        /// A method call on a string value (`("x"):rep(2)`): `self` is one more argument.
        method: bool,
    },
    /// Assigned to.
    Write,
}

/// A global path met in the script, checked at the end.
#[derive(Debug)]
struct Reach {
    path: Vec<String>,
    span: Span,
    use_: Use,
    /// A method form (`s:find(p)`) on a receiver we cannot see to be a string.
    uncertain: bool,
}

#[derive(Debug)]
struct Local {
    name: String,
    span: Span,
    used: bool,
    /// Report it when unused (plain locals and local functions, not parameters or loop
    /// variables, not `<close>` variables, which exist for their effect).
    report_unused: bool,
}

#[derive(Debug, Default)]
struct Scope {
    locals: Vec<Local>,
    /// A function's outermost scope: shadowing is only reported within one function.
    function: bool,
}

struct Walker<'e> {
    env: &'e Environment,
    scopes: Vec<Scope>,
    findings: Vec<Finding>,
    reaches: Vec<Reach>,
    /// Global names the script assigns anywhere.
    defined: HashSet<String>,
    /// `lib.member` paths the script assigns anywhere.
    defined_members: HashSet<String>,
    /// Global paths the script tests (`if X then`, `X and ...`): feature detection.
    tested: HashSet<String>,
    /// The script changes how globals resolve: no global-name errors.
    env_tricks: bool,
    /// True while walking a condition.
    in_condition: usize,
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

/// A call `s:name(...)` read as a call of `string.name` with the receiver as `self`;
/// `uncertain` when the receiver is not known to be a string.
fn string_method_call(m: &full_moon::ast::MethodCall, name: &str, uncertain: bool) -> Reach {
    let args = call_args(m.args());
    Reach {
        path: vec!["string".into(), name.to_string()],
        span: span_of(m.name()),
        use_: Use::Call {
            args: args.iter().map(|a| arg_with_span(a)).collect(),
            literal: None,
            open: open_ended(&args),
            method: true,
        },
        uncertain,
    }
}

/// The span of bytes `start..end` of `text` (columns count characters).
fn span_at(text: &str, start: usize, end: usize) -> Span {
    let at = |offset: usize| {
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (clamp(line), clamp(column))
    };
    let ((line, column), (end_line, end_column)) = (at(start), at(end));
    Span {
        line,
        column,
        end_line,
        end_column,
    }
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
        let line_start = bytes[..i]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1);
        if bytes[line_start..i].iter().all(u8::is_ascii_whitespace)
            && bytes[i..].starts_with(b"```")
        {
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

/// full_moon's parse, with a panic inside it (a bug of the parser on some input we do
/// not know yet) contained: `None` then, and the linter reports that it could not read
/// the script rather than taking the host down.
fn parse(text: &str, version: LuaVersion) -> Option<full_moon::ast::AstResult> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        full_moon::parse_fallible(text, version)
    }))
    .ok()
}

/// Parses `text` and adds what it finds to `report`.
pub(crate) fn analyse(env: &Environment, text: &str, report: &mut LintReport) {
    let version = LuaVersion::lua54();
    let original = text;
    let (blanked, backticks) = blank_backticks(text);
    let text: &str = &blanked;
    let Some(result) = parse(text, version) else {
        report.findings.push(finding(
            "syntax",
            Severity::Error,
            span_at(text, 0, 0),
            "the script could not be parsed: the parser failed on it".to_string(),
            None,
        ));
        return;
    };
    let mut errors: Vec<(Span, String)> = result.errors().iter().map(parse_error).collect();
    let mut ast = result.into_ast();
    let mut repaired = Vec::new();
    let mut still_broken = !errors.is_empty();
    // After a syntax error, the parser's recovery may have skipped much of the script,
    // and its errors land where recovery stopped, not where the mistake is. With the
    // other languages' spellings repaired (same positions), each spelling is reported
    // where it stands, the errors left are the script's own, and the rest of the
    // script is read for everything else.
    if still_broken {
        if let Some((fixed, repairs)) = repair(text) {
            if let Some(again) = parse(&fixed, version) {
                errors = again.errors().iter().map(parse_error).collect();
                still_broken = !errors.is_empty();
                ast = again.into_ast();
                repaired = repairs;
            }
        }
    }
    let mut lines_with_errors = HashSet::new();
    for &at in &backticks {
        let span = span_at(original, at, at + 1);
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
        let span = span_at(text, r.start, r.end);
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
        let hint = syntax_hint(text.as_bytes(), Some(span.line), &message);
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
    let mut walker = Walker {
        env,
        scopes: Vec::new(),
        findings: Vec::new(),
        reaches: Vec::new(),
        defined: HashSet::new(),
        defined_members: HashSet::new(),
        tested: HashSet::new(),
        env_tricks: false,
        in_condition: 0,
    };
    walker.push(true);
    walker.block(ast.nodes());
    walker.pop();
    let syntax_errors = !lines_with_errors.is_empty();
    if still_broken {
        // The recovered tree lacks what the parser skipped: what it says is unused or
        // shadowed may not be.
        walker
            .findings
            .retain(|f| !matches!(f.rule, "unused-local" | "shadowing"));
    }
    walker.finish(report, syntax_errors);
}

fn finding(
    rule: &'static str,
    severity: Severity,
    span: Span,
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

/// The name of an identifier token.
fn ident(token: &TokenReference) -> Option<&str> {
    match token.token_type() {
        TokenType::Identifier { identifier } => Some(identifier.as_str()),
        _ => None,
    }
}

/// A string literal's value, escapes decoded; `None` when the escapes are not valid.
fn string_value(token: &TokenReference) -> Option<Vec<u8>> {
    match token.token_type() {
        TokenType::StringLiteral {
            literal,
            quote_type,
            ..
        } => match quote_type {
            StringLiteralQuoteType::Brackets => {
                let text = literal.as_str();
                // A long string skips a first newline.
                let text = text
                    .strip_prefix("\r\n")
                    .or_else(|| text.strip_prefix('\n'))
                    .unwrap_or(text);
                Some(text.as_bytes().to_vec())
            }
            _ => unescape(literal.as_str().as_bytes()),
        },
        _ => None,
    }
}

/// Lua's short-string escapes.
fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1)?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'"' | b'\'' | b'\n' => out.push(e),
            b'\r' => {
                out.push(b'\n');
                if raw.get(i) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'x' => {
                let hex = std::str::from_utf8(raw.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'z' => {
                while raw.get(i).is_some_and(u8::is_ascii_whitespace) {
                    i += 1;
                }
            }
            b'u' => {
                let rest = raw.get(i..)?;
                let close = rest.iter().position(|&b| b == b'}')?;
                let hex = std::str::from_utf8(rest.get(1..close)?).ok()?;
                let code = u32::from_str_radix(hex, 16).ok()?;
                let ch = char::from_u32(code)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += close + 1;
            }
            d if d.is_ascii_digit() => {
                let mut value: u32 = u32::from(d - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&n) if n.is_ascii_digit() => {
                            value = value * 10 + u32::from(n - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(value).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The string literal an expression is, if it is one (parentheses allowed).
fn literal_string(expr: &Expression) -> Option<Vec<u8>> {
    match expr {
        Expression::String(token) => string_value(token),
        Expression::Parentheses { expression, .. } => literal_string(expression),
        _ => None,
    }
}

fn arg_of(expr: &Expression) -> Arg {
    match expr {
        Expression::String(token) => string_value(token).map_or(Arg::Other, Arg::Str),
        Expression::Parentheses { expression, .. } => arg_of(expression),
        Expression::BinaryOperator { lhs, binop, .. }
            if binop.token().token().to_string() == ".." =>
        {
            match arg_of(lhs) {
                Arg::Str(s) | Arg::StrPrefix(s) => Arg::StrPrefix(s),
                Arg::Other => Arg::Other,
            }
        }
        _ => Arg::Other,
    }
}

/// The argument and, for a string (the only arguments findings point at), its span:
/// a span is a walk over the expression's tokens, too dear for every argument.
fn arg_with_span(expr: &Expression) -> (Arg, Span) {
    match arg_of(expr) {
        Arg::Other => (Arg::Other, Span::default()),
        arg => (arg, span_of(expr)),
    }
}

impl Arg {
    fn string(&self) -> Option<&[u8]> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Deepest literal table converted to JSON for a schema check.
const MAX_LITERAL_DEPTH: usize = 32;

/// A literal expression as the JSON a tool would receive (the marshaling rules: a table
/// with keys `1..n` is an array, any other an object); `None` when it is not a literal,
/// or holds `nil` (whose place in a list a schema check cannot judge).
fn literal_json(expr: &Expression, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    match expr {
        Expression::String(t) => String::from_utf8(string_value(t)?).ok().map(Json::String),
        Expression::Number(t) => number_json(&t.token().to_string()),
        Expression::Symbol(t) => match t.token().to_string().as_str() {
            "true" => Some(Json::Bool(true)),
            "false" => Some(Json::Bool(false)),
            _ => None,
        },
        Expression::Parentheses { expression, .. } => literal_json(expression, depth),
        Expression::UnaryOperator {
            unop: ast::UnOp::Minus(_),
            expression,
        } => match &**expression {
            Expression::Number(t) => number_json(&format!("-{}", t.token())),
            _ => None,
        },
        Expression::TableConstructor(t) => table_json(t, depth),
        _ => None,
    }
}

fn number_json(text: &str) -> Option<serde_json::Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i.into());
    }
    let f = text.parse::<f64>().ok()?;
    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
}

fn table_json(table: &ast::TableConstructor, depth: usize) -> Option<serde_json::Value> {
    if depth >= MAX_LITERAL_DEPTH {
        return None;
    }
    let fields: Vec<&Field> = table.fields().iter().collect();
    if fields.is_empty() {
        return Some(serde_json::Value::Object(serde_json::Map::new()));
    }
    if fields.iter().all(|f| matches!(f, Field::NoKey(_))) {
        let items: Option<Vec<serde_json::Value>> = fields
            .iter()
            .map(|f| match f {
                Field::NoKey(e) => literal_json(e, depth + 1),
                _ => None,
            })
            .collect();
        return items.map(serde_json::Value::Array);
    }
    let mut object = serde_json::Map::new();
    for field in fields {
        match field {
            Field::NameKey { key, value, .. } => {
                let key = ident(key)?.to_string();
                object.insert(key, literal_json(value, depth + 1)?);
            }
            Field::ExpressionKey { key, value, .. } => {
                let key = String::from_utf8(literal_string(key)?).ok()?;
                object.insert(key, literal_json(value, depth + 1)?);
            }
            _ => return None,
        }
    }
    Some(serde_json::Value::Object(object))
}

/// True for an argument list whose last value may expand to any number of values.
fn open_ended(args: &[&Expression]) -> bool {
    matches!(
        args.last(),
        Some(Expression::FunctionCall(_)) | Some(Expression::Symbol(_))
    ) && args.last().is_some_and(|e| match e {
        Expression::Symbol(t) => t.token().to_string() == "...",
        _ => true,
    })
}

fn call_args(args: &FunctionArgs) -> Vec<&Expression> {
    match args {
        FunctionArgs::Parentheses { arguments, .. } => arguments.iter().collect(),
        _ => Vec::new(),
    }
}

impl<'e> Walker<'e> {
    fn push(&mut self, function: bool) {
        self.scopes.push(Scope {
            locals: Vec::new(),
            function,
        });
    }

    fn pop(&mut self) {
        let Some(scope) = self.scopes.pop() else {
            return;
        };
        for local in scope.locals {
            if local.report_unused && !local.used && !local.name.starts_with('_') {
                self.findings.push(finding(
                    "unused-local",
                    Severity::Warning,
                    local.span,
                    format!("local `{}` is never used", local.name),
                    Some(format!(
                        "remove it, or name it `_{}` if it must stay",
                        local.name
                    )),
                ));
            }
        }
    }

    fn declare(&mut self, token: &TokenReference, report_unused: bool) {
        let Some(name) = ident(token) else {
            return;
        };
        let span = span_of(token);
        if name == "_ENV" {
            self.env_tricks = true;
        }
        if !name.starts_with('_') {
            // Enclosing blocks of the same function; a redeclaration in the same block
            // (`local x = x + 1`) is an idiom, not a mistake.
            let mut shadowed = None;
            let current = self.scopes.len().saturating_sub(1);
            for scope in self.scopes[..current].iter().rev() {
                if let Some(l) = scope.locals.iter().rev().find(|l| l.name == name) {
                    shadowed = Some(l.span);
                    break;
                }
                if scope.function {
                    break;
                }
            }
            if self.scopes.get(current).is_some_and(|s| s.function) {
                shadowed = None;
            }
            if let Some(outer) = shadowed {
                self.findings.push(finding(
                    "shadowing",
                    Severity::Warning,
                    span,
                    format!(
                        "local `{name}` shadows the `{name}` declared on line {}",
                        outer.line
                    ),
                    Some("give one of them another name".into()),
                ));
            }
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.locals.push(Local {
                name: name.to_string(),
                span,
                used: false,
                report_unused,
            });
        }
    }

    /// Marks local `name` used; false when it is not a local (a global).
    fn use_local(&mut self, name: &str) -> bool {
        for scope in self.scopes.iter_mut().rev() {
            if let Some(local) = scope.locals.iter_mut().rev().find(|l| l.name == name) {
                local.used = true;
                return true;
            }
        }
        false
    }

    fn is_local(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.locals.iter().any(|l| l.name == name))
    }

    fn block(&mut self, block: &Block) {
        for stmt in block.stmts() {
            self.stmt(stmt);
        }
        if let Some(last) = block.last_stmt() {
            match last {
                LastStmt::Return(ret) => {
                    for e in ret.returns().iter() {
                        self.expr(e);
                    }
                }
                LastStmt::Break(_) => {}
                _ => {}
            }
        }
    }

    fn scoped_block(&mut self, block: &Block) {
        self.push(false);
        self.block(block);
        self.pop();
    }

    fn condition(&mut self, expr: &Expression) {
        self.in_condition += 1;
        self.expr(expr);
        self.in_condition -= 1;
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Assignment(assign) => {
                for e in assign.expressions().iter() {
                    self.expr(e);
                }
                for var in assign.variables().iter() {
                    self.assign_target(var);
                }
            }
            Stmt::LocalAssignment(local) => {
                for e in local.expressions().iter() {
                    self.expr(e);
                }
                let attributes: Vec<Option<String>> = local
                    .attributes()
                    .map(|a| a.and_then(|a| ident(a.name()).map(str::to_string)))
                    .collect();
                for (i, name) in local.names().iter().enumerate() {
                    let close = attributes.get(i).and_then(|a| a.as_deref()) == Some("close");
                    self.declare(name, !close);
                }
            }
            Stmt::FunctionCall(call) => self.function_call(call),
            Stmt::Do(block) => self.scoped_block(block.block()),
            Stmt::While(w) => {
                self.condition(w.condition());
                self.scoped_block(w.block());
            }
            Stmt::Repeat(r) => {
                // `until` sees the block's locals.
                self.push(false);
                self.block(r.block());
                self.condition(r.until());
                self.pop();
            }
            Stmt::If(i) => {
                self.condition(i.condition());
                self.scoped_block(i.block());
                if let Some(else_ifs) = i.else_if() {
                    for else_if in else_ifs {
                        self.condition(else_if.condition());
                        self.scoped_block(else_if.block());
                    }
                }
                if let Some(block) = i.else_block() {
                    self.scoped_block(block);
                }
            }
            Stmt::NumericFor(f) => {
                self.expr(f.start());
                self.expr(f.end());
                if let Some(step) = f.step() {
                    self.expr(step);
                }
                self.zero_based(f);
                self.push(false);
                self.declare(f.index_variable(), false);
                self.block(f.block());
                self.pop();
            }
            Stmt::GenericFor(f) => {
                for e in f.expressions().iter() {
                    self.expr(e);
                }
                self.push(false);
                for name in f.names().iter() {
                    self.declare(name, false);
                }
                self.block(f.block());
                self.pop();
            }
            Stmt::FunctionDeclaration(decl) => {
                let name = decl.name();
                let names: Vec<&TokenReference> = name.names().iter().collect();
                let method = name.method_name();
                if let Some(first) = names.first().and_then(|t| ident(t)) {
                    if names.len() == 1 && method.is_none() {
                        if !self.use_local_write(first) {
                            self.defined.insert(first.to_string());
                        }
                    } else {
                        let mut path: Vec<String> = names
                            .iter()
                            .filter_map(|t| ident(t).map(str::to_string))
                            .collect();
                        if let Some(m) = method.and_then(ident) {
                            path.push(m.to_string());
                        }
                        self.write_path(first, path, span_of(name));
                    }
                }
                self.function_body(decl.body(), method.is_some());
            }
            Stmt::LocalFunction(f) => {
                self.declare(f.name(), true);
                self.function_body(f.body(), false);
            }
            Stmt::Goto(_) | Stmt::Label(_) => {}
            _ => {}
        }
    }

    /// An assignment to a bare name: true when it is a local (or upvalue).
    fn use_local_write(&mut self, name: &str) -> bool {
        self.is_local(name)
    }

    fn assign_target(&mut self, var: &Var) {
        match var {
            Var::Name(token) => {
                if let Some(name) = ident(token) {
                    if name == "_ENV" {
                        self.env_tricks = true;
                    }
                    if !self.is_local(name) {
                        self.defined.insert(name.to_string());
                    }
                }
            }
            Var::Expression(ve) => {
                let suffixes: Vec<&Suffix> = ve.suffixes().collect();
                match ve.prefix() {
                    Prefix::Name(token) => {
                        let Some(name) = ident(token) else {
                            return;
                        };
                        let dotted: Option<Vec<String>> = suffixes
                            .iter()
                            .map(|s| match s {
                                Suffix::Index(Index::Dot { name, .. }) => {
                                    ident(name).map(str::to_string)
                                }
                                _ => None,
                            })
                            .collect();
                        match dotted {
                            Some(rest) if !self.is_local(name) => {
                                let mut path = vec![name.to_string()];
                                path.extend(rest);
                                self.write_path(name, path, span_of(var));
                            }
                            _ => {
                                // A local table, or an index we cannot name: walk it as
                                // a read of everything but the written key.
                                self.chain_from_name(token, &suffixes, true);
                            }
                        }
                    }
                    Prefix::Expression(e) => {
                        self.expr(e);
                        self.suffix_exprs(&suffixes);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// A write to `a.b.c` where `a` is not a local.
    fn write_path(&mut self, root: &str, path: Vec<String>, span: Span) {
        if self.is_local(root) {
            self.use_local(root);
            return;
        }
        if path.len() >= 2 {
            self.defined_members.insert(path.join("."));
            // The tables on the way are read.
            self.reaches.push(Reach {
                path: path[..path.len() - 1].to_vec(),
                span,
                use_: Use::Index,
                uncertain: false,
            });
        }
        self.reaches.push(Reach {
            path,
            span,
            use_: Use::Write,
            uncertain: false,
        });
    }

    fn function_body(&mut self, body: &FunctionBody, method: bool) {
        self.push(true);
        if method {
            if let Some(scope) = self.scopes.last_mut() {
                scope.locals.push(Local {
                    name: "self".into(),
                    span: Span::default(),
                    used: false,
                    report_unused: false,
                });
            }
        }
        for param in body.parameters().iter() {
            if let Parameter::Name(token) = param {
                self.declare(token, false);
            }
        }
        self.block(body.block());
        self.pop();
    }

    fn function_call(&mut self, call: &ast::FunctionCall) {
        let suffixes: Vec<&Suffix> = call.suffixes().collect();
        match call.prefix() {
            Prefix::Name(token) => self.chain_from_name(token, &suffixes, false),
            Prefix::Expression(e) => {
                self.expr(e);
                self.string_method(e, &suffixes);
                self.suffix_exprs(&suffixes);
            }
            _ => {}
        }
    }

    /// `("x"):rep(3)`: a method of the string library, certainly.
    fn string_method(&mut self, receiver: &Expression, suffixes: &[&Suffix]) {
        if literal_string(receiver).is_none() {
            return;
        }
        if let Some(Suffix::Call(Call::MethodCall(m))) = suffixes.first() {
            if let Some(name) = ident(m.name()) {
                self.reaches.push(string_method_call(m, name, false));
            }
        }
    }

    /// Walks the expressions inside suffixes (call arguments, bracket indexes).
    fn suffix_exprs(&mut self, suffixes: &[&Suffix]) {
        for suffix in suffixes {
            match suffix {
                Suffix::Call(Call::AnonymousCall(args)) => self.args(args),
                Suffix::Call(Call::MethodCall(m)) => self.args(m.args()),
                Suffix::Index(Index::Brackets { expression, .. }) => self.expr(expression),
                _ => {}
            }
        }
    }

    fn args(&mut self, args: &FunctionArgs) {
        match args {
            FunctionArgs::Parentheses { arguments, .. } => {
                for a in arguments.iter() {
                    self.expr(a);
                }
            }
            FunctionArgs::TableConstructor(t) => self.table(t),
            _ => {}
        }
    }

    /// `name.a.b(...)...`: a local's use, or a global path to check. `writing`: the last
    /// suffix is the key an assignment writes (not read).
    fn chain_from_name(&mut self, token: &TokenReference, suffixes: &[&Suffix], writing: bool) {
        let Some(name) = ident(token) else {
            return;
        };
        if name == "_ENV" {
            self.env_tricks = true;
        }
        let reads = if writing {
            &suffixes[..suffixes.len().saturating_sub(1)]
        } else {
            suffixes
        };
        if self.use_local(name) {
            self.method_patterns(reads);
            self.suffix_exprs(suffixes);
            return;
        }
        // The global path: the name and the `.field`s after it.
        let mut path = vec![name.to_string()];
        let mut span = span_of(token);
        let mut rest = reads;
        while let Some((Suffix::Index(Index::Dot { name: field, .. }), tail)) = rest.split_first() {
            let Some(text) = ident(field) else { break };
            path.push(text.to_string());
            let end = span_of(field);
            span.end_line = end.end_line;
            span.end_column = end.end_column;
            rest = tail;
        }
        let use_ = match rest.first() {
            None if writing => Use::Index,
            None => Use::Value,
            Some(Suffix::Call(Call::AnonymousCall(args))) => {
                let list = call_args(args);
                // `setmetatable(_G, ...)`: globals may come from anywhere.
                let first_is_globals = matches!(
                    list.first(),
                    Some(Expression::Var(Var::Name(t))) if ident(t) == Some("_G")
                );
                if path.len() == 1 && name == "setmetatable" && first_is_globals {
                    self.env_tricks = true;
                }
                let mut collected: Vec<(Arg, Span)> =
                    list.iter().map(|a| arg_with_span(a)).collect();
                let mut open = open_ended(&list);
                let mut literal: Option<Vec<serde_json::Value>> =
                    list.iter().map(|a| literal_json(a, 0)).collect();
                match &**args {
                    FunctionArgs::String(t) => {
                        let value = string_value(t);
                        literal = value
                            .as_ref()
                            .and_then(|v| String::from_utf8(v.clone()).ok())
                            .map(|v| vec![serde_json::Value::String(v)]);
                        collected.push((value.map_or(Arg::Other, Arg::Str), span_of(t)));
                        open = false;
                    }
                    FunctionArgs::TableConstructor(t) => {
                        literal = table_json(t, 0).map(|v| vec![v]);
                        collected.push((Arg::Other, span_of(&**t)));
                        open = false;
                    }
                    _ => {}
                }
                Use::Call {
                    args: collected,
                    literal,
                    open,
                    method: false,
                }
            }
            Some(_) => Use::Index,
        };
        if self.in_condition > 0 {
            for i in 1..=path.len() {
                self.tested.insert(path[..i].join("."));
            }
        }
        self.reaches.push(Reach {
            path,
            span,
            use_,
            uncertain: false,
        });
        self.method_patterns(rest);
        self.suffix_exprs(suffixes);
    }

    /// `s:find("[a-")`: method calls of the pattern functions on a receiver we cannot
    /// see; the pattern is checked, as a warning (the receiver may not be a string).
    fn method_patterns(&mut self, suffixes: &[&Suffix]) {
        for suffix in suffixes {
            if let Suffix::Call(Call::MethodCall(m)) = suffix {
                let Some(name) = ident(m.name()) else {
                    continue;
                };
                if !matches!(name, "find" | "match" | "gmatch" | "gsub") {
                    continue;
                }
                self.reaches.push(string_method_call(m, name, true));
            }
        }
    }

    fn table(&mut self, table: &ast::TableConstructor) {
        for field in table.fields().iter() {
            match field {
                Field::ExpressionKey { key, value, .. } => {
                    self.expr(key);
                    self.expr(value);
                }
                Field::NameKey { value, .. } => self.expr(value),
                Field::NoKey(value) => self.expr(value),
                _ => {}
            }
        }
    }

    fn expr(&mut self, expr: &Expression) {
        match expr {
            Expression::BinaryOperator { lhs, binop, rhs } => {
                let op = binop.token().token().to_string();
                let op = op.as_str();
                if op == "and" || op == "or" {
                    // The left operand guards the right one.
                    self.in_condition += 1;
                    self.expr(lhs);
                    self.in_condition -= 1;
                } else {
                    self.expr(lhs);
                }
                self.expr(rhs);
            }
            Expression::UnaryOperator { unop, expression } => {
                if let (ast::UnOp::Hash(_), Expression::TableConstructor(t)) = (unop, &**expression)
                {
                    let fields: Vec<&Field> = t.fields().iter().collect();
                    if !fields.is_empty() && fields.iter().all(|f| !matches!(f, Field::NoKey(_))) {
                        self.findings.push(finding(
                            "length-of-map",
                            Severity::Warning,
                            span_of(expr),
                            "`#` of a table built with keys only: its length is 0".into(),
                            Some("count the keys with a `pairs` loop".into()),
                        ));
                    }
                }
                if matches!(unop, ast::UnOp::Not(_)) {
                    self.in_condition += 1;
                    self.expr(expression);
                    self.in_condition -= 1;
                } else {
                    self.expr(expression);
                }
            }
            Expression::Parentheses { expression, .. } => self.expr(expression),
            Expression::Function(f) => self.function_body(f.body(), false),
            Expression::FunctionCall(call) => self.function_call(call),
            Expression::TableConstructor(t) => self.table(t),
            Expression::Var(var) => match var {
                Var::Name(token) => self.chain_from_name(token, &[], false),
                Var::Expression(ve) => {
                    let suffixes: Vec<&Suffix> = ve.suffixes().collect();
                    match ve.prefix() {
                        Prefix::Name(token) => self.chain_from_name(token, &suffixes, false),
                        Prefix::Expression(e) => {
                            self.expr(e);
                            self.suffix_exprs(&suffixes);
                        }
                        _ => {}
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// `for i = 0, #t do`: Lua sequences start at 1.
    fn zero_based(&mut self, f: &ast::NumericFor) {
        let zero = matches!(f.start(), Expression::Number(n) if n.token().to_string() == "0");
        let length = |e: &Expression| {
            matches!(
                e,
                Expression::UnaryOperator {
                    unop: ast::UnOp::Hash(_),
                    ..
                }
            )
        };
        let end = match f.end() {
            Expression::BinaryOperator { lhs, .. } => length(lhs),
            e => length(e),
        };
        if zero && end && f.step().is_none() {
            self.findings.push(finding(
                "zero-based-loop",
                Severity::Warning,
                span_of(f.start()),
                "this loop starts at 0, but Lua sequences start at 1 (`t[0]` is nil)".into(),
                Some("write `for i = 1, #t do`".into()),
            ));
        }
    }

    /// Checks every global path against the environment, now that every definition is
    /// known, and fills the manifest.
    fn finish(mut self, report: &mut LintReport, syntax_errors: bool) {
        if self.env.require_run && !self.defined.contains("run") && !syntax_errors {
            self.findings.push(finding(
                "missing-run",
                Severity::Error,
                Span {
                    line: 1,
                    column: 1,
                    end_line: 1,
                    end_column: 1,
                },
                "the sandbox requires a global function `run`, and the script defines none".into(),
                Some("define `function run(input) ... end`".into()),
            ));
        }
        let reaches = std::mem::take(&mut self.reaches);
        let mut seen_undefined: HashMap<String, usize> = HashMap::new();
        for reach in &reaches {
            self.check(reach, report, &mut seen_undefined);
        }
        report.manifest.defines = self.defined.iter().cloned().collect::<BTreeSet<_>>();
        report.findings.append(&mut self.findings);
    }

    fn check(&mut self, reach: &Reach, report: &mut LintReport, seen: &mut HashMap<String, usize>) {
        let root = reach.path[0].as_str();
        if self.defined.contains(root) && !reach.uncertain {
            // The script's own global (or its replacement of the sandbox's).
            return;
        }
        let env = self.env;
        let Some(mut entry) = env.globals.get(root) else {
            if !reach.uncertain {
                self.undefined_global(reach, seen);
            }
            return;
        };
        let manifest = &mut report.manifest;
        if !reach.uncertain {
            manifest.globals.insert(root.to_string());
        }
        // Walk the path: each level must exist, unless the script defined it.
        for depth in 1..reach.path.len() {
            let member = reach.path[depth].as_str();
            let here = reach.path[..=depth].join(".");
            let (kind, members) = match entry {
                Entry::Table { kind, members } => (*kind, members),
                Entry::Value => return,
            };
            if kind == TableKind::Globals {
                return;
            }
            let last = depth + 1 == reach.path.len();
            if last && matches!(reach.use_, Use::Write) {
                if kind == TableKind::Tools {
                    self.findings.push(finding(
                        "readonly-write",
                        Severity::Error,
                        reach.span,
                        format!(
                            "tool namespace `{}` is read-only: assigning `{here}` fails",
                            reach.path[..depth].join(".")
                        ),
                        Some("keep your own values in a local table".into()),
                    ));
                } else if !members.contains_key(member) {
                    self.findings.push(finding(
                        "library-write",
                        Severity::Info,
                        reach.span,
                        format!("adds `{here}` to the library table `{root}`"),
                        None,
                    ));
                }
                return;
            }
            match members.get(member) {
                Some(next) => {
                    entry = next;
                    if kind == TableKind::Tools {
                        if matches!(next, Entry::Value) {
                            manifest.tools.insert(here.clone());
                        }
                    } else if !reach.uncertain {
                        manifest.library.insert(here.clone());
                    }
                }
                None => {
                    if self.defined_members.contains(&here) || reach.uncertain {
                        return;
                    }
                    self.unknown_member(reach, depth, kind, members.keys());
                    return;
                }
            }
        }
        if reach.path.len() == 1 && env.tools.contains(root) {
            manifest.tools.insert(root.to_string());
        }
        if let Use::Call {
            args,
            literal,
            open,
            method,
        } = &reach.use_
        {
            let path = reach.path.join(".");
            if let (Some(schema), Some(values)) = (env.schemas.get(&path), literal) {
                if let Err(e) = schema.check(values.clone()) {
                    self.findings.push(finding(
                        "tool-schema",
                        Severity::Error,
                        reach.span,
                        format!("`{path}` would refuse these arguments: {e}"),
                        Some(format!(
                            "see the tool's schema (`moonjail tools` lists it) for what `{path}` takes"
                        )),
                    ));
                }
            }
            self.call_checks(&path, reach, args, *open, *method, report);
        }
    }

    fn undefined_global(&mut self, reach: &Reach, seen: &mut HashMap<String, usize>) {
        let root = reach.path[0].as_str();
        if matches!(reach.use_, Use::Write) {
            return;
        }
        let certain = (reach.path.len() > 1 || matches!(reach.use_, Use::Call { .. } | Use::Index))
            && !self.tested.contains(root)
            && !self.env_tricks;
        let severity = if certain {
            Severity::Error
        } else {
            Severity::Warning
        };
        // One finding per name and severity is enough to learn from; the rest repeat it.
        let count = seen.entry(format!("{root}/{severity}")).or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        let env = self.env;
        let stock = rules::STOCK_GLOBALS.contains(&root);
        let (rule, message, suggestion) = if stock {
            (
                "removed-global",
                rules::removed_reason(root, env.profile),
                None,
            )
        } else if root == "http" {
            (
                "removed-global",
                "`http` exists only when the host allows destinations (`--allow-http HOST`)"
                    .to_string(),
                None,
            )
        } else {
            let suggestion = foreign_name(root)
                .map(str::to_string)
                .or_else(|| rules::old_global(root).map(str::to_string))
                .or_else(|| {
                    let candidates = env
                        .globals
                        .keys()
                        .map(String::as_str)
                        .chain(self.defined.iter().map(String::as_str));
                    rules::nearest(root, candidates).map(|n| format!("did you mean `{n}`?"))
                });
            (
                "undefined-global",
                format!(
                    "`{root}` is not defined: the script never assigns it and the {} \
                     sandbox does not provide it",
                    env.profile
                ),
                suggestion,
            )
        };
        let span = Span {
            end_line: reach.span.line,
            end_column: reach.span.column + clamp(root.chars().count()),
            ..reach.span
        };
        self.findings
            .push(finding(rule, severity, span, message, suggestion));
    }

    fn unknown_member<'m>(
        &mut self,
        reach: &Reach,
        depth: usize,
        kind: TableKind,
        members: impl Iterator<Item = &'m String>,
    ) {
        let table = reach.path[..depth].join(".");
        let member = reach.path[depth].as_str();
        let last = depth + 1 == reach.path.len();
        let certain = (!last || matches!(reach.use_, Use::Call { .. } | Use::Index))
            && !self.tested.contains(&reach.path[..=depth].join("."));
        let severity = if certain {
            Severity::Error
        } else {
            Severity::Warning
        };
        let full = format!("{table}.{member}");
        let stock = depth == 1 && rules::stock_members(&table).contains(&member);
        let (rule, message, suggestion) = if stock {
            (
                "removed-global",
                rules::removed_reason(&full, self.env.profile),
                None,
            )
        } else {
            let members: Vec<&String> = members.collect();
            let suggestion = rules::nearest(member, members.iter().map(|m| m.as_str()))
                .map(|n| format!("did you mean `{table}.{n}`?"))
                .or_else(|| rules::foreign_member(&table, member).map(str::to_string));
            let what = match kind {
                TableKind::Tools => "tool namespace",
                _ => "library",
            };
            (
                "unknown-member",
                format!("the {what} `{table}` has no member `{member}`"),
                suggestion,
            )
        };
        self.findings
            .push(finding(rule, severity, reach.span, message, suggestion));
    }

    /// Argument counts, pattern literals, `http` URLs, dynamic loads.
    fn call_checks(
        &mut self,
        path: &str,
        reach: &Reach,
        args: &[(Arg, Span)],
        open: bool,
        method: bool,
        report: &mut LintReport,
    ) {
        // With `self`, a method call passes one more argument, and the receiver is not
        // in `args`: shift the positions so that index 0 is the first parameter.
        let offset = usize::from(method);
        let count = args.len() + offset;
        let arg = |i: usize| i.checked_sub(offset).and_then(|i| args.get(i));
        if !reach.uncertain {
            if let Some((min, max)) = rules::arity(path) {
                if count < min && !open {
                    self.findings.push(finding(
                        "arg-count",
                        Severity::Error,
                        reach.span,
                        format!(
                            "`{path}` needs at least {min} argument{}, and this call passes {count}",
                            if min == 1 { "" } else { "s" }
                        ),
                        None,
                    ));
                } else if max.is_some_and(|max| count > max) {
                    let max = max.unwrap_or_default();
                    // table.insert with 4 or more arguments is an error, not a surplus.
                    let severity = if path == "table.insert" {
                        Severity::Error
                    } else {
                        Severity::Warning
                    };
                    self.findings.push(finding(
                        "arg-count",
                        severity,
                        reach.span,
                        format!(
                            "`{path}` takes at most {max} arguments, and this call passes {count}"
                        ),
                        None,
                    ));
                }
            }
        }
        let severity = if reach.uncertain {
            Severity::Warning
        } else {
            Severity::Error
        };
        match path {
            "string.find" | "string.match" | "string.gmatch" | "string.gsub" => {
                // string.find(s, p, init, true) is a plain search.
                let plain = path == "string.find"
                    && matches!(arg(3), Some((Arg::Other, _)) | Some((Arg::Str(_), _)));
                if let Some((Arg::Str(pattern), span)) = arg(1) {
                    if plain {
                        return;
                    }
                    match check_pattern(pattern) {
                        Err(e) => self.findings.push(finding(
                            "bad-pattern",
                            severity,
                            *span,
                            format!("malformed pattern for `{path}`: {e}"),
                            Some(
                                "escape magic characters `^$()%.[]*+-?` with `%` (`%.`), or \
                                 pass `plain` to string.find"
                                    .into(),
                            ),
                        )),
                        Ok(captures) if path == "string.gsub" => {
                            if let Some((Arg::Str(repl), span)) = arg(2) {
                                if let Err(e) = check_replacement(repl, captures) {
                                    self.findings.push(finding(
                                        "bad-pattern",
                                        severity,
                                        *span,
                                        format!("bad replacement for `string.gsub`: {e}"),
                                        Some("write a literal `%` as `%%`".into()),
                                    ));
                                }
                            }
                        }
                        Ok(_) => {}
                    }
                }
            }
            "http.get" | "http.post" if !reach.uncertain => {
                if let Some((url, span)) = arg(0) {
                    self.http_url(path, url, *span, report);
                }
            }
            "load" | "loadstring" | "require" => {
                report.manifest.dynamic_load |= path != "require";
                match arg(0).map(|(a, _)| a.string()) {
                    Some(Some(name)) if path == "require" => {
                        report
                            .manifest
                            .requires
                            .insert(String::from_utf8_lossy(name).into_owned());
                    }
                    Some(Some(_)) => {}
                    _ => {
                        report.manifest.dynamic_load = true;
                        self.findings.push(finding(
                            "dynamic-load",
                            Severity::Info,
                            reach.span,
                            format!(
                                "`{path}` of a computed {}: that code cannot be checked before it runs",
                                if path == "require" { "module name" } else { "string" }
                            ),
                            None,
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// A literal URL (or a literal prefix that spells the whole host) against the
    /// allowlist, with the same matching the `http` client applies.
    fn http_url(&mut self, path: &str, url: &Arg, span: Span, report: &mut LintReport) {
        let (text, whole) = match url {
            Arg::Str(s) => (s, true),
            Arg::StrPrefix(s) => (s, false),
            Arg::Other => return,
        };
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        if !whole {
            // The host is certain only when the literal goes past the authority.
            let Some(after) = text.split_once("://").map(|(_, rest)| rest) else {
                return;
            };
            if !after.contains(['/', '?', '#']) {
                return;
            }
        }
        let Ok(parsed) = url::Url::parse(text) else {
            if whole {
                self.findings.push(finding(
                    "http-host",
                    Severity::Error,
                    span,
                    format!("`{path}`: {text:?} is not a URL"),
                    Some("write an absolute http or https URL".into()),
                ));
            }
            return;
        };
        let refusal = match crate::tools::check_url(&self.env.http, &parsed) {
            Ok((host, port)) => {
                let shown = match host {
                    url::Host::Ipv6(a) => format!("[{a}]:{port}"),
                    h => format!("{h}:{port}"),
                };
                report.manifest.hosts.insert(shown);
                return;
            }
            Err(refusal) => refusal,
        };
        if let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) {
            report.manifest.hosts.insert(format!("{host}:{port}"));
        }
        self.findings.push(finding(
            "http-host",
            Severity::Error,
            span,
            format!("`{path}` would be refused: {refusal}"),
            Some("use an allowed destination, or ask the host to allow this one".into()),
        ));
    }
}
