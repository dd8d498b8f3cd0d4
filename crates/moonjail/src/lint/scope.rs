//! The walk over the script's tree ([`super::ast`]): scopes and locals, then every global
//! path the script reads, writes or calls, checked against the sandbox's [`Environment`]
//! once the whole script has been seen (a global the script defines on line 90 may be
//! read by a function on line 3).
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

use super::ast::{clamp, Args, Block, Expr, ExprKind, Field, FuncBody, Lines, Name, Prefix, Range};
use super::ast::{Span, Stmt, Suffix, Table};
use super::hints::foreign_name;
use super::rules;
use super::view::{Entry, Environment, TableKind};
use super::{finding, Finding, LintReport, Severity};
use super::{parse, recover};
use crate::stdlib::strmatch::{check_pattern, check_replacement};

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
struct Local<'s> {
    name: &'s str,
    range: Range,
    used: bool,
    /// Report it when unused (plain locals and local functions, not parameters or loop
    /// variables, not `<close>` variables, which exist for their effect).
    report_unused: bool,
    /// Declared `<const>` or `<close>`: Lua refuses to compile an assignment to it.
    constant: bool,
}

#[derive(Debug, Default)]
struct Scope<'s> {
    locals: Vec<Local<'s>>,
    /// A function's outermost scope: shadowing is only reported within one function.
    function: bool,
}

/// A block's labels, and what a `goto` to one must not jump past.
#[derive(Default)]
struct BlockLabels<'s> {
    /// Each label, and whether only other labels follow it to the block's end (Lua
    /// takes such a label to stand outside the scope of the block's locals).
    labels: Vec<(Name<'s>, bool)>,
    /// The locals the block's own statements declare, in order: where each starts.
    locals: Vec<Name<'s>>,
}

impl<'s> BlockLabels<'s> {
    /// The block's locals declared before byte `at`.
    fn locals_before(&self, at: u32) -> usize {
        self.locals.partition_point(|l| l.range.start < at)
    }
}

struct Walker<'e, 's> {
    env: &'e Environment,
    lines: &'e Lines<'s>,
    scopes: Vec<Scope<'s>>,
    /// Each name's locals in scope, innermost last, as (scope, index in its locals): a
    /// name resolves in constant time, however many locals a script declares (a scan
    /// of every scope made a megabyte of `local` lines take seconds).
    visible: HashMap<&'s str, Vec<(usize, usize)>>,
    /// The scopes that are a function's outermost, innermost last.
    roots: Vec<usize>,
    /// The labels of each block being walked (all of a block's, wherever they stand: a
    /// `goto` may jump forward), innermost last.
    labels: Vec<BlockLabels<'s>>,
    /// Where each function's blocks start in `labels`: a label is not visible inside a
    /// nested function.
    label_roots: Vec<usize>,
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

/// A call `s:name(...)` read as a call of `string.name` with the receiver as `self`;
/// `uncertain` when the receiver is not known to be a string.
fn string_method_call(
    lines: &Lines<'_>,
    method: &Name<'_>,
    args: &Args<'_>,
    uncertain: bool,
) -> Reach {
    let list = call_args(args);
    Reach {
        path: vec!["string".into(), method.text.to_string()],
        span: lines.span(method.range),
        use_: Use::Call {
            args: list.iter().map(|a| arg_with_span(lines, a)).collect(),
            literal: None,
            open: open_ended(list),
            method: true,
        },
        uncertain,
    }
}

/// Parses `text` and adds what it finds to `report`: valid Lua with this module's own
/// parser; a script with a syntax error with full_moon, whose recovery reads the rest
/// of it ([`recover::read`]).
pub(crate) fn analyse(env: &Environment, text: &str, report: &mut LintReport) {
    let lines = Lines::new(text);
    let stuck = match parse::chunk(text) {
        Ok(parsed) => {
            for refusal in &parsed.refused {
                report.findings.push(refused(&lines, *refusal));
            }
            let syntax_errors = !parsed.refused.is_empty();
            walk(env, &lines, &parsed.block, report, syntax_errors, false);
            return;
        }
        Err(stuck) => stuck,
    };
    // full_moon may nest deeper than the bound the caller sized the stack for (its lexer
    // reads some strings differently): this path runs on a stack for the most it parses.
    let stack = super::stack_for(super::MAX_NESTING);
    stacker::maybe_grow(stack, stack, || {
        if let Some(recovered) =
            recover::read(text, &lines, report, env.lua_in_host.then_some(stuck))
        {
            // The recovered source has the script's offsets (what is repaired keeps its
            // length), so `lines` places its nodes too.
            let block = recovered.tree();
            walk(
                env,
                &lines,
                &block,
                report,
                recovered.syntax_errors,
                recovered.still_broken,
            );
            if let Some(said) = recovered.lua_said {
                let walk_said_it = report
                    .findings
                    .iter()
                    .any(|f| f.rule == "syntax" && f.line == said.line);
                if !walk_said_it {
                    report.findings.push(said);
                }
            }
        }
    });
}

/// What Lua's compiler says of a chunk that parses, as a finding (its words, and how
/// to write it instead).
fn refused(lines: &Lines<'_>, refusal: parse::Refusal) -> Finding {
    let (range, message, suggestion) = match refusal {
        parse::Refusal::BreakOutsideLoop(at) => (
            at,
            "syntax error: `break` outside a loop",
            "`break` leaves the innermost `while`, `for` or `repeat` loop of its function; \
             to leave the function early, use `return`",
        ),
        parse::Refusal::VarargOutsideVararg(at) => (
            at,
            "syntax error: cannot use `...` outside a vararg function",
            "declare the function with `...` as its last parameter (`function(a, ...)`), \
             or pass the values as parameters",
        ),
    };
    finding(
        "syntax",
        Severity::Error,
        lines.span(range),
        message.to_string(),
        Some(suggestion.to_string()),
    )
}

/// Walks `block` and adds the findings and the manifest to `report`.
fn walk(
    env: &Environment,
    lines: &Lines<'_>,
    block: &Block<'_>,
    report: &mut LintReport,
    syntax_errors: bool,
    still_broken: bool,
) {
    let mut walker = Walker {
        env,
        lines,
        scopes: Vec::new(),
        visible: HashMap::new(),
        roots: Vec::new(),
        labels: Vec::new(),
        label_roots: Vec::new(),
        findings: Vec::new(),
        reaches: Vec::new(),
        defined: HashSet::new(),
        defined_members: HashSet::new(),
        tested: HashSet::new(),
        env_tricks: false,
        in_condition: 0,
    };
    walker.push(true);
    walker.block(block);
    walker.pop();
    if still_broken {
        // The recovered tree lacks what the parser skipped: what it says is unused or
        // shadowed may not be.
        walker
            .findings
            .retain(|f| !matches!(f.rule, "unused-local" | "shadowing" | "syntax"));
    }
    walker.finish(report, syntax_errors);
}

/// A string literal's value as written (quotes or long brackets included), escapes
/// decoded; `None` when the escapes are not valid.
fn string_value(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    match bytes.first()? {
        b'[' => {
            let level = bytes[1..].iter().take_while(|&&b| b == b'=').count();
            let text = raw.get(level + 2..raw.len().checked_sub(level + 2)?)?;
            // A long string skips a first newline.
            let text = text
                .strip_prefix("\r\n")
                .or_else(|| text.strip_prefix('\n'))
                .unwrap_or(text);
            Some(text.as_bytes().to_vec())
        }
        _ => unescape(bytes.get(1..bytes.len().checked_sub(1)?)?),
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
fn literal_string(expr: &Expr<'_>) -> Option<Vec<u8>> {
    match &expr.kind {
        ExprKind::Str(raw) => string_value(raw),
        ExprKind::Paren(inner) => literal_string(inner),
        _ => None,
    }
}

fn arg_of(expr: &Expr<'_>) -> Arg {
    match &expr.kind {
        ExprKind::Str(raw) => string_value(raw).map_or(Arg::Other, Arg::Str),
        ExprKind::Paren(inner) => arg_of(inner),
        ExprKind::Binary("..", lhs, _) => match arg_of(lhs) {
            Arg::Str(s) | Arg::StrPrefix(s) => Arg::StrPrefix(s),
            Arg::Other => Arg::Other,
        },
        _ => Arg::Other,
    }
}

/// The argument and, for a string (the only arguments findings point at), its span.
fn arg_with_span(lines: &Lines<'_>, expr: &Expr<'_>) -> (Arg, Span) {
    match arg_of(expr) {
        Arg::Other => (Arg::Other, Span::default()),
        arg => (arg, lines.span(expr.range)),
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

/// How many leading names of a tested path are remembered: deeper than any library or
/// tool namespace a finding is about.
const MAX_TESTED_DEPTH: usize = 16;

/// Deepest literal table converted to JSON for a schema check.
const MAX_LITERAL_DEPTH: usize = 32;

/// A literal expression as the JSON a tool would receive (the marshaling rules: a table
/// with keys `1..n` is an array, any other an object); `None` when it is not a literal,
/// or holds `nil` (whose place in a list a schema check cannot judge).
fn literal_json(expr: &Expr<'_>, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    match &expr.kind {
        ExprKind::Str(raw) => String::from_utf8(string_value(raw)?).ok().map(Json::String),
        ExprKind::Number(text) => number_json(text),
        ExprKind::True => Some(Json::Bool(true)),
        ExprKind::False => Some(Json::Bool(false)),
        ExprKind::Paren(inner) => literal_json(inner, depth),
        ExprKind::Unary("-", operand) => match &operand.kind {
            ExprKind::Number(text) => number_json(&format!("-{text}")),
            _ => None,
        },
        ExprKind::Table(t) => table_json(t, depth),
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

fn table_json(table: &Table<'_>, depth: usize) -> Option<serde_json::Value> {
    if depth >= MAX_LITERAL_DEPTH {
        return None;
    }
    let fields = &table.fields;
    if fields.is_empty() {
        return Some(serde_json::Value::Object(serde_json::Map::new()));
    }
    if fields.iter().all(|f| matches!(f, Field::Item(_))) {
        let items: Option<Vec<serde_json::Value>> = fields
            .iter()
            .map(|f| match f {
                Field::Item(e) => literal_json(e, depth + 1),
                _ => None,
            })
            .collect();
        return items.map(serde_json::Value::Array);
    }
    let mut object = serde_json::Map::new();
    for field in fields {
        match field {
            Field::Named(key, value) => {
                object.insert(key.text.to_string(), literal_json(value, depth + 1)?);
            }
            Field::Keyed(key, value) => {
                let key = String::from_utf8(literal_string(key)?).ok()?;
                object.insert(key, literal_json(value, depth + 1)?);
            }
            Field::Item(_) => return None,
        }
    }
    Some(serde_json::Value::Object(object))
}

/// True for an argument list whose last value may expand to any number of values.
fn open_ended(args: &[Expr<'_>]) -> bool {
    args.last()
        .is_some_and(|e| matches!(e.kind, ExprKind::Dots) || e.is_call())
}

fn call_args<'a, 's>(args: &'a Args<'s>) -> &'a [Expr<'s>] {
    match args {
        Args::List(list) => list,
        _ => &[],
    }
}

/// The name a chain is, when it is a bare name.
fn bare_name<'s>(expr: &Expr<'s>) -> Option<&'s str> {
    match &expr.kind {
        ExprKind::Chain(prefix, suffixes) if suffixes.is_empty() => match **prefix {
            Prefix::Name(name) => Some(name.text),
            Prefix::Expr(_) => None,
        },
        _ => None,
    }
}

impl<'s> Walker<'_, 's> {
    fn push(&mut self, function: bool) {
        if function {
            self.roots.push(self.scopes.len());
        }
        self.scopes.push(Scope {
            locals: Vec::new(),
            function,
        });
    }

    fn pop(&mut self) {
        let Some(scope) = self.scopes.pop() else {
            return;
        };
        if scope.function {
            self.roots.pop();
        }
        for local in scope.locals {
            if let Some(stack) = self.visible.get_mut(local.name) {
                stack.pop();
            }
            if local.report_unused && !local.used && !local.name.starts_with('_') {
                self.findings.push(finding(
                    "unused-local",
                    Severity::Warning,
                    self.lines.span(local.range),
                    format!("local `{}` is never used", local.name),
                    Some(format!(
                        "remove it, or name it `_{}` if it must stay",
                        local.name
                    )),
                ));
            }
        }
    }

    /// Puts `local` in the innermost scope.
    fn add_local(&mut self, local: Local<'s>) {
        let Some(at) = self.scopes.len().checked_sub(1) else {
            return;
        };
        let name = local.name;
        let locals = &mut self.scopes[at].locals;
        locals.push(local);
        let index = locals.len() - 1;
        self.visible.entry(name).or_default().push((at, index));
    }

    /// The local `name` refers to here, if it is one.
    fn resolve(&self, name: &str) -> Option<&Local<'s>> {
        let (scope, index) = self.resolve_at(name)?;
        self.scopes.get(scope)?.locals.get(index)
    }

    /// Where the local `name` refers to here is: its scope and its index there.
    fn resolve_at(&self, name: &str) -> Option<(usize, usize)> {
        self.visible.get(name)?.last().copied()
    }

    fn declare(&mut self, name: &Name<'s>, report_unused: bool) {
        self.declare_local(name, report_unused, false);
    }

    fn declare_local(&mut self, name: &Name<'s>, report_unused: bool, constant: bool) {
        let text = name.text;
        if text == "_ENV" {
            self.env_tricks = true;
        }
        if !text.starts_with('_') {
            if let Some(outer) = self.shadowed(text) {
                self.findings.push(finding(
                    "shadowing",
                    Severity::Warning,
                    self.lines.span(name.range),
                    format!(
                        "local `{text}` shadows the `{text}` declared on line {}",
                        self.lines.span(outer).line
                    ),
                    Some("give one of them another name".into()),
                ));
            }
        }
        self.add_local(Local {
            name: text,
            range: name.range,
            used: false,
            report_unused,
            constant,
        });
    }

    /// Where a local `name` declared now would shadow another: the innermost one in an
    /// enclosing block of the same function. A redeclaration in the same block
    /// (`local x = x + 1`) is an idiom, not a mistake, and parameters shadow nothing.
    fn shadowed(&self, name: &str) -> Option<Range> {
        let current = self.scopes.len().checked_sub(1)?;
        if self.scopes[current].function {
            return None;
        }
        let root = self.roots.last().copied().unwrap_or(0);
        let stack = self.visible.get(name)?;
        // The stack is ordered by scope: those of the current block are at its top.
        let enclosing = stack.partition_point(|&(scope, _)| scope < current);
        let &(scope, index) = stack.get(enclosing.checked_sub(1)?)?;
        (scope >= root).then(|| self.scopes[scope].locals[index].range)
    }

    /// Marks local `name` used; false when it is not a local (a global).
    fn use_local(&mut self, name: &str) -> bool {
        let Some((scope, index)) = self.resolve_at(name) else {
            return false;
        };
        if let Some(local) = self
            .scopes
            .get_mut(scope)
            .and_then(|s| s.locals.get_mut(index))
        {
            local.used = true;
        }
        true
    }

    fn is_local(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    fn exprs(&mut self, exprs: &[Expr<'s>]) {
        for e in exprs {
            self.expr(e);
        }
    }

    fn block(&mut self, block: &Block<'s>) {
        self.enter_labels(block);
        for stmt in &block.stmts {
            self.stmt(stmt);
        }
        if let Some(values) = &block.ret {
            self.exprs(values);
        }
        self.labels.pop();
    }

    /// The labels a block defines, checked as Lua checks them: a label may not repeat
    /// one visible where it stands (earlier in this block or an enclosing one of the same
    /// function).
    fn enter_labels(&mut self, block: &Block<'s>) {
        let root = self.label_roots.last().copied().unwrap_or(0);
        let mut here = BlockLabels::default();
        for (i, stmt) in block.stmts.iter().enumerate() {
            match stmt {
                Stmt::Local { names, .. } => here.locals.extend(names.iter().map(|(n, _)| *n)),
                Stmt::LocalFunction { name, .. } => here.locals.push(*name),
                Stmt::Label(name) => {
                    let enclosing = self.labels.get(root..).unwrap_or_default().iter();
                    let earlier = here
                        .labels
                        .iter()
                        .map(|(l, _)| l)
                        .chain(
                            enclosing
                                .flat_map(|b| b.labels.iter().map(|(l, _)| l))
                                .filter(|l| l.range.start < name.range.start),
                        )
                        .find(|l| l.text == name.text);
                    if let Some(earlier) = earlier {
                        self.refuse(
                            name.range,
                            format!(
                                "label `{}` already defined on line {}",
                                name.text,
                                self.lines.span(earlier.range).line
                            ),
                            "give the second label another name".into(),
                        );
                    }
                    // Only labels after it (Lua skips `;` too, which the tree leaves out;
                    // a `break` it also leaves out makes this generous: no false alarm).
                    let last = block.ret.is_none()
                        && block.stmts[i + 1..]
                            .iter()
                            .all(|s| matches!(s, Stmt::Label(_)));
                    here.labels.push((*name, last));
                }
                _ => {}
            }
        }
        self.labels.push(here);
    }

    /// A syntax finding at `range`: what Lua's compiler refuses there, and what to write.
    fn refuse(&mut self, range: Range, message: String, suggestion: String) {
        let span = self.lines.span(range);
        self.findings.push(finding(
            "syntax",
            Severity::Error,
            span,
            format!("syntax error: {message}"),
            Some(suggestion),
        ));
    }

    /// `goto name`: Lua refuses to compile it unless a label `name` is visible (in this
    /// block or an enclosing one of the same function, before or after the `goto`), and
    /// when it would jump forward into the scope of a local declared in between.
    fn goto(&mut self, name: &Name<'s>) {
        let root = self.label_roots.last().copied().unwrap_or(0);
        let blocks = self.labels.get(root..).unwrap_or_default();
        // The innermost block with such a label is the one the `goto` jumps to.
        let target = blocks.iter().rev().find_map(|b| {
            let (label, last) = b.labels.iter().find(|(l, _)| l.text == name.text)?;
            Some((b, label, *last))
        });
        let Some((block, label, last)) = target else {
            self.refuse(
                name.range,
                format!("no visible label `{}` for `goto`", name.text),
                format!(
                    "define `::{}::` in this block or an enclosing one of the same function \
                     (a label is not visible inside a nested function)",
                    name.text
                ),
            );
            return;
        };
        let (from, to) = (
            block.locals_before(name.range.start),
            block.locals_before(label.range.start),
        );
        if to > from && !last {
            let local = block.locals[from];
            self.refuse(
                name.range,
                format!(
                    "`goto {}` jumps into the scope of local `{}` (line {})",
                    name.text,
                    local.text,
                    self.lines.span(local.range).line
                ),
                format!(
                    "declare `{}` before the `goto`, or close its scope with `do ... end` \
                     before `::{}::`",
                    local.text, name.text
                ),
            );
        }
    }

    fn scoped_block(&mut self, block: &Block<'s>) {
        self.push(false);
        self.block(block);
        self.pop();
    }

    fn condition(&mut self, expr: &Expr<'s>) {
        self.in_condition += 1;
        self.expr(expr);
        self.in_condition -= 1;
    }

    fn stmt(&mut self, stmt: &Stmt<'s>) {
        match stmt {
            Stmt::Assign { targets, values } => {
                self.exprs(values);
                for target in targets {
                    self.assign_target(target);
                }
            }
            Stmt::Local { names, values } => {
                self.exprs(values);
                let mut closes = 0;
                for (name, attribute) in names {
                    let kind = attribute.map(|a| a.text);
                    if let (Some(other), Some(a)) =
                        (kind.filter(|k| !matches!(*k, "const" | "close")), attribute)
                    {
                        // Only full_moon's path gets here: the fast parser refuses it.
                        self.refuse(
                            a.range,
                            format!("unknown attribute `{other}`"),
                            "Lua 5.4 knows `<const>` and `<close>`".into(),
                        );
                    }
                    if kind == Some("close") {
                        closes += 1;
                        if closes == 2 {
                            self.refuse(
                                name.range,
                                "multiple to-be-closed variables in local list".into(),
                                "declare each `<close>` variable in its own `local`".into(),
                            );
                        }
                    }
                    let constant = matches!(kind, Some("const" | "close"));
                    self.declare_local(name, kind != Some("close"), constant);
                }
            }
            Stmt::Call(call) => self.expr(call),
            Stmt::Do(block) => self.scoped_block(block),
            Stmt::While(cond, block) => {
                self.condition(cond);
                self.scoped_block(block);
            }
            Stmt::Repeat(block, until) => {
                // `until` sees the block's locals.
                self.push(false);
                self.block(block);
                self.condition(until);
                self.pop();
            }
            Stmt::If { arms, otherwise } => {
                for (cond, block) in arms {
                    self.condition(cond);
                    self.scoped_block(block);
                }
                if let Some(block) = otherwise {
                    self.scoped_block(block);
                }
            }
            Stmt::NumericFor {
                var,
                start,
                end,
                step,
                body,
            } => {
                self.expr(start);
                self.expr(end);
                if let Some(step) = step {
                    self.expr(step);
                }
                self.zero_based(start, end, step.is_some());
                self.push(false);
                self.declare(var, false);
                self.block(body);
                self.pop();
            }
            Stmt::GenericFor { names, exprs, body } => {
                self.exprs(exprs);
                self.push(false);
                for name in names {
                    self.declare(name, false);
                }
                self.block(body);
                self.pop();
            }
            Stmt::Function {
                names,
                method,
                range,
                body,
            } => {
                if let Some(first) = names.first() {
                    if names.len() == 1 && method.is_none() {
                        self.assign_name(first);
                    } else {
                        let mut path: Vec<String> =
                            names.iter().map(|n| n.text.to_string()).collect();
                        if let Some(m) = method {
                            path.push(m.text.to_string());
                        }
                        self.write_path(first.text, path, self.lines.span(*range));
                    }
                }
                self.function_body(body, method.is_some());
            }
            Stmt::LocalFunction { name, body } => {
                self.declare(name, true);
                self.function_body(body, false);
            }
            Stmt::Goto(name) => self.goto(name),
            Stmt::Label(_) => {}
        }
    }

    fn assign_target(&mut self, target: &Expr<'s>) {
        let ExprKind::Chain(prefix, suffixes) = &target.kind else {
            return;
        };
        match &**prefix {
            Prefix::Name(name) if suffixes.is_empty() => {
                if name.text == "_ENV" {
                    self.env_tricks = true;
                }
                self.assign_name(name);
            }
            Prefix::Name(name) => {
                let dotted: Option<Vec<String>> = suffixes
                    .iter()
                    .map(|s| match s {
                        Suffix::Dot(field) => Some(field.text.to_string()),
                        _ => None,
                    })
                    .collect();
                match dotted {
                    Some(rest) if !self.is_local(name.text) => {
                        let mut path = vec![name.text.to_string()];
                        path.extend(rest);
                        self.write_path(name.text, path, self.lines.span(target.range));
                    }
                    _ => {
                        // A local table, or an index we cannot name: walk it as a read
                        // of everything but the written key.
                        self.chain_from_name(name, suffixes, true);
                    }
                }
            }
            Prefix::Expr(e) => {
                self.expr(e);
                self.suffix_exprs(suffixes);
            }
        }
    }

    /// An assignment to a bare name: a global defined, or a local written (which Lua
    /// refuses to compile when the local is `<const>` or `<close>`).
    fn assign_name(&mut self, name: &Name<'s>) {
        match self.resolve(name.text) {
            None => {
                self.defined.insert(name.text.to_string());
            }
            Some(local) if local.constant => {
                let declared = self.lines.span(local.range).line;
                self.refuse(
                    name.range,
                    format!(
                        "attempt to assign to const variable `{}` (declared \
                         on line {declared})",
                        name.text
                    ),
                    format!(
                        "declare `{}` without `<const>` if it must change, or assign a new \
                         local",
                        name.text
                    ),
                );
            }
            Some(_) => {}
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

    fn function_body(&mut self, body: &FuncBody<'s>, method: bool) {
        self.push(true);
        if method {
            self.add_local(Local {
                name: "self",
                range: Range::default(),
                used: false,
                report_unused: false,
                constant: false,
            });
        }
        for param in &body.params {
            self.declare(param, false);
        }
        self.label_roots.push(self.labels.len());
        self.block(&body.block);
        self.label_roots.pop();
        self.pop();
    }

    /// A chain: `name...` is a local's use or a global path; `(expr)...` is walked, and
    /// a call of a string method on a literal (`("x"):rep(3)`) checked.
    fn chain(&mut self, expr: &Expr<'s>, prefix: &Prefix<'s>, suffixes: &[Suffix<'s>]) {
        match prefix {
            Prefix::Name(name) => self.chain_from_name(name, suffixes, false),
            Prefix::Expr(e) => {
                self.expr(e);
                if expr.is_call() {
                    self.string_method(e, suffixes);
                }
                self.suffix_exprs(suffixes);
            }
        }
    }

    /// `("x"):rep(3)`: a method of the string library, certainly.
    fn string_method(&mut self, receiver: &Expr<'s>, suffixes: &[Suffix<'s>]) {
        if literal_string(receiver).is_none() {
            return;
        }
        if let Some(Suffix::Method(name, args)) = suffixes.first() {
            let reach = string_method_call(self.lines, name, args, false);
            self.reaches.push(reach);
        }
    }

    /// Walks the expressions inside suffixes (call arguments, bracket indexes).
    fn suffix_exprs(&mut self, suffixes: &[Suffix<'s>]) {
        for suffix in suffixes {
            match suffix {
                Suffix::Call(args) | Suffix::Method(_, args) => self.args(args),
                Suffix::Index(key) => self.expr(key),
                Suffix::Dot(_) => {}
            }
        }
    }

    fn args(&mut self, args: &Args<'s>) {
        match args {
            Args::List(list) => self.exprs(list),
            Args::Table(t, _) => self.table(t),
            Args::Str(..) => {}
        }
    }

    /// `name.a.b(...)...`: a local's use, or a global path to check. `writing`: the last
    /// suffix is the key an assignment writes (not read).
    fn chain_from_name(&mut self, name: &Name<'s>, suffixes: &[Suffix<'s>], writing: bool) {
        let root = name.text;
        if root == "_ENV" {
            self.env_tricks = true;
        }
        let reads = if writing {
            &suffixes[..suffixes.len().saturating_sub(1)]
        } else {
            suffixes
        };
        if self.use_local(root) {
            self.method_patterns(reads);
            self.suffix_exprs(suffixes);
            return;
        }
        // The global path: the name and the `.field`s after it.
        let mut path = vec![root.to_string()];
        let mut range = name.range;
        let mut rest = reads;
        while let Some((Suffix::Dot(field), tail)) = rest.split_first() {
            path.push(field.text.to_string());
            range.end = field.range.end;
            rest = tail;
        }
        let use_ = match rest.first() {
            None if writing => Use::Index,
            None => Use::Value,
            Some(Suffix::Call(args)) => {
                let list = call_args(args);
                // `setmetatable(_G, ...)`: globals may come from anywhere.
                let first_is_globals = list.first().and_then(bare_name) == Some("_G");
                if path.len() == 1 && root == "setmetatable" && first_is_globals {
                    self.env_tricks = true;
                }
                let mut collected: Vec<(Arg, Span)> =
                    list.iter().map(|a| arg_with_span(self.lines, a)).collect();
                let mut open = open_ended(list);
                let mut literal: Option<Vec<serde_json::Value>> =
                    list.iter().map(|a| literal_json(a, 0)).collect();
                match args {
                    Args::Str(raw, at) => {
                        let value = string_value(raw);
                        literal = value
                            .as_ref()
                            .and_then(|v| String::from_utf8(v.clone()).ok())
                            .map(|v| vec![serde_json::Value::String(v)]);
                        collected.push((value.map_or(Arg::Other, Arg::Str), self.lines.span(*at)));
                        open = false;
                    }
                    Args::Table(t, at) => {
                        literal = table_json(t, 0).map(|v| vec![v]);
                        collected.push((Arg::Other, self.lines.span(*at)));
                        open = false;
                    }
                    Args::List(_) => {}
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
            // A path's prefixes, as deep as a library or tool namespace can be: all of
            // them made a tested `a.a.a...` of k names cost k² time and memory.
            let mut prefix = String::new();
            for part in path.iter().take(MAX_TESTED_DEPTH) {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                self.tested.insert(prefix.clone());
            }
        }
        self.reaches.push(Reach {
            path,
            span: self.lines.span(range),
            use_,
            uncertain: false,
        });
        self.method_patterns(rest);
        self.suffix_exprs(suffixes);
    }

    /// `s:find("[a-")`: method calls of the pattern functions on a receiver we cannot
    /// see; the pattern is checked, as a warning (the receiver may not be a string).
    fn method_patterns(&mut self, suffixes: &[Suffix<'s>]) {
        for suffix in suffixes {
            if let Suffix::Method(name, args) = suffix {
                if matches!(name.text, "find" | "match" | "gmatch" | "gsub") {
                    let reach = string_method_call(self.lines, name, args, true);
                    self.reaches.push(reach);
                }
            }
        }
    }

    fn table(&mut self, table: &Table<'s>) {
        for field in &table.fields {
            match field {
                Field::Keyed(key, value) => {
                    self.expr(key);
                    self.expr(value);
                }
                Field::Named(_, value) | Field::Item(value) => self.expr(value),
            }
        }
    }

    fn expr(&mut self, expr: &Expr<'s>) {
        match &expr.kind {
            ExprKind::Binary(op, lhs, rhs) => {
                if matches!(*op, "and" | "or") {
                    // The left operand guards the right one.
                    self.condition(lhs);
                } else {
                    self.expr(lhs);
                }
                self.expr(rhs);
            }
            ExprKind::Unary(op, operand) => {
                if let ("#", ExprKind::Table(t)) = (*op, &operand.kind) {
                    if !t.fields.is_empty() && t.fields.iter().all(|f| !matches!(f, Field::Item(_)))
                    {
                        self.findings.push(finding(
                            "length-of-map",
                            Severity::Warning,
                            self.lines.span(expr.range),
                            "`#` of a table built with keys only: its length is 0".into(),
                            Some("count the keys with a `pairs` loop".into()),
                        ));
                    }
                }
                if *op == "not" {
                    self.condition(operand);
                } else {
                    self.expr(operand);
                }
            }
            ExprKind::Paren(inner) => self.expr(inner),
            ExprKind::Function(body) => self.function_body(body, false),
            ExprKind::Table(t) => self.table(t),
            ExprKind::Chain(prefix, suffixes) => self.chain(expr, prefix, suffixes),
            ExprKind::Nil
            | ExprKind::True
            | ExprKind::False
            | ExprKind::Dots
            | ExprKind::Number(_)
            | ExprKind::Str(_) => {}
        }
    }

    /// `for i = 0, #t do`: Lua sequences start at 1.
    fn zero_based(&mut self, start: &Expr<'s>, end: &Expr<'s>, stepped: bool) {
        let zero = matches!(start.kind, ExprKind::Number("0"));
        let length = |e: &Expr<'_>| matches!(e.kind, ExprKind::Unary("#", _));
        let end = match &end.kind {
            ExprKind::Binary(_, lhs, _) => length(lhs),
            _ => length(end),
        };
        if zero && end && !stepped {
            self.findings.push(finding(
                "zero-based-loop",
                Severity::Warning,
                self.lines.span(start.range),
                "this loop starts at 0, but Lua sequences start at 1 (`t[0]` is nil)".into(),
                Some("write `for i = 1, #t do`".into()),
            ));
        }
    }

    /// Checks every global path against the environment, now that every definition is
    /// known, and fills the manifest.
    fn finish(mut self, report: &mut LintReport, syntax_errors: bool) {
        let syntax_errors = syntax_errors || self.findings.iter().any(|f| f.rule == "syntax");
        if self.env.require_run && !self.defined.contains("run") && !syntax_errors {
            self.findings.push(finding(
                "missing-run",
                Severity::Error,
                Span::START,
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
