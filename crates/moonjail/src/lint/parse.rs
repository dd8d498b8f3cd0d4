//! A strict, fast parser of valid Lua 5.4 into the linter's [`ast`](super::ast).
//!
//! **Why our own, beside full_moon.** The issue's budget is a megabyte linted in under
//! 100 ms. full_moon builds a lossless tree (every token with its whitespace and comments)
//! and took ~120 ms of CPU for the megabyte by itself here (460M of the lint's 661M
//! instructions, a third of them `memmove` and `malloc`); the other parsers surveyed were
//! either as slow, misread 5.4, had no error recovery, or (emmylua_parser) would only just
//! reach the budget for ~80 more crates. This one reads the tokens of
//! [`super::lex`] once, with one token of lookahead, into the small tree the rules need,
//! following the grammar of Lua's own `lparser.c` (the same operator priorities).
//!
//! **What it does not do** is error recovery or messages: at the first thing that is not
//! valid Lua it returns `None`, and the script is read again by full_moon, which says what
//! is wrong and recovers ([`super::recover`]). So this parser must never accept what
//! full_moon rejects; it may reject more (then the script only takes the slower path). A
//! differential test holds the two to the same tree on every valid input it has.
//!
//! It recurses once per level of nesting; the caller bounds the nesting first and grows
//! the stack to fit, as it does for full_moon.

use super::ast::{Args, Block, Expr, ExprKind, Field, FuncBody, Name, Prefix, Range, Stmt};
use super::ast::{Suffix, Table};
use super::lex::{Kind, Lexer};

/// A chunk that parses, and what Lua's compiler would still refuse in it: the rules it
/// checks beyond the grammar that are cheap to check while parsing (full_moon checks
/// none of them).
#[derive(Debug)]
pub(crate) struct Parsed<'s> {
    pub(crate) block: Block<'s>,
    pub(crate) refused: Vec<Refusal>,
}

/// Something Lua's compiler refuses in a chunk that parses, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `break` outside a loop of its function.
    BreakOutsideLoop(Range),
    /// `...` in a function that does not declare it.
    VarargOutsideVararg(Range),
}

/// Parses a whole chunk (shebang already skipped). If it is not valid Lua 5.4 as far as
/// this parser knows: the token it stood at when it gave up (`None` when it could not
/// read a first one), where to place an error Lua's compiler names only by line and
/// token (`near 'x'`).
pub(crate) fn chunk(src: &str) -> Result<Parsed<'_>, Option<Range>> {
    let mut p = Parser::new(src).ok_or(None)?;
    match p.block() {
        Some(block) if p.cur.t == T::Eof && !p.lexer.unfinished_comment => Ok(Parsed {
            block,
            refused: p.refused,
        }),
        _ => Err(Some(p.cur.range())),
    }
}

/// A token as the parser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T {
    Eof,
    Name,
    /// A reserved word, by spelling.
    Kw(&'static str),
    Number,
    Str,
    /// A Lua symbol, by spelling.
    Sym(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    t: T,
    start: u32,
    end: u32,
}

impl Tok {
    fn range(self) -> Range {
        Range {
            start: self.start,
            end: self.end,
        }
    }
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    cur: Tok,
    peeked: Option<Tok>,
    /// Where the last token taken ended: a node's end.
    prev_end: u32,
    /// Loops open in the current function (`break` needs one).
    loops: u32,
    /// The current function takes `...` (the main chunk does).
    vararg: bool,
    refused: Vec<Refusal>,
}

/// Lua's reserved words (a match on the bytes: a jump on the length, then a compare).
fn keyword(text: &[u8]) -> Option<&'static str> {
    Some(match text {
        b"and" => "and",
        b"break" => "break",
        b"do" => "do",
        b"else" => "else",
        b"elseif" => "elseif",
        b"end" => "end",
        b"false" => "false",
        b"for" => "for",
        b"function" => "function",
        b"goto" => "goto",
        b"if" => "if",
        b"in" => "in",
        b"local" => "local",
        b"nil" => "nil",
        b"not" => "not",
        b"or" => "or",
        b"repeat" => "repeat",
        b"return" => "return",
        b"then" => "then",
        b"true" => "true",
        b"until" => "until",
        b"while" => "while",
        _ => return None,
    })
}

/// Symbols the lexer knows that are not Lua's (other languages' spellings): a token of
/// one is a syntax error.
fn lua_symbol(s: &'static str) -> bool {
    !matches!(
        s,
        "..="
            | "==="
            | "!=="
            | "!="
            | "+="
            | "-="
            | "*="
            | "/="
            | "%="
            | "^="
            | "++"
            | "&&"
            | "||"
            | "->"
            | "=>"
            | "!"
            | "?"
    )
}

/// A numeral as Lua reads one: decimal `3`, `3.`, `.5`, `1e+5`; hexadecimal `0xA`,
/// `0x.8p1`. The lexer munches any run of letters, digits and dots; Lua calls what is not
/// one of these a malformed number.
fn valid_number(text: &[u8]) -> bool {
    let (hex, body) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let digits = |b: &u8| {
        if hex {
            b.is_ascii_hexdigit()
        } else {
            b.is_ascii_digit()
        }
    };
    let exp: &[u8] = if hex { b"pP" } else { b"eE" };
    let int = body.iter().take_while(|b| digits(b)).count();
    let mut i = int;
    let mut frac = 0;
    if body.get(i) == Some(&b'.') {
        i += 1;
        frac = body[i..].iter().take_while(|b| digits(b)).count();
        i += frac;
    }
    if int + frac == 0 {
        return false;
    }
    if let Some(e) = body.get(i) {
        if !exp.contains(e) {
            return false;
        }
        i += 1;
        if matches!(body.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = body[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == body.len()
}

/// A string token the lexer found is a whole, closed literal: a short string closed on
/// its line with only Lua's escapes in it (full_moon does not check escapes, Lua refuses
/// the chunk), a long one closed at its level. (The forgiving lexer runs unfinished ones
/// to the end of the line or input.)
fn valid_string(text: &[u8]) -> bool {
    match text.first() {
        Some(&q @ (b'"' | b'\'')) => {
            let mut i = 1;
            while let Some(&b) = text.get(i) {
                match b {
                    b'\\' => match escape_len(&text[i + 1..]) {
                        Some(n) => i += 1 + n,
                        None => return false,
                    },
                    b'\n' | b'\r' => return false,
                    _ if b == q => return i + 1 == text.len(),
                    _ => i += 1,
                }
            }
            false
        }
        Some(b'[') => {
            let level = text[1..].iter().take_while(|&&b| b == b'=').count();
            let close_len = level + 2;
            text.len() >= 2 * close_len
                && text.ends_with(b"]")
                && text[text.len() - close_len + 1..text.len() - 1]
                    .iter()
                    .all(|&b| b == b'=')
                && text[text.len() - close_len] == b']'
        }
        _ => false,
    }
}

/// Where the first escape Lua refuses is in short string literal `text` (its offset), if
/// one is: full_moon does not check them.
pub(crate) fn invalid_escape(text: &[u8]) -> Option<usize> {
    if !matches!(text.first(), Some(b'"' | b'\'')) {
        return None;
    }
    let mut i = 1;
    while i < text.len() {
        if text[i] == b'\\' {
            // An escaped `\r` is valid Lua (a line break); only this parser leaves it.
            if text.get(i + 1) == Some(&b'\r') {
                i += 2;
                continue;
            }
            match text.get(i + 1..).and_then(escape_len) {
                Some(n) => i += 1 + n,
                None if i + 1 < text.len() => return Some(i),
                None => return None,
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The length of the escape after a backslash in a short string, if Lua accepts it:
/// `\n` and the other letters, an escaped line break, `\z` and the whitespace it skips,
/// `\xXX`, `\ddd` up to 255, `\u{XXX}` up to 2^31. An escaped `\r` is left to
/// full_moon (Lua reads `\r\n` as one line break).
fn escape_len(rest: &[u8]) -> Option<usize> {
    match *rest.first()? {
        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'\\' | b'"' | b'\'' | b'\n' => Some(1),
        b'z' => Some(
            1 + rest[1..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace() || **b == 0x0b)
                .count(),
        ),
        b'x' => (rest.len() >= 3 && rest[1..3].iter().all(u8::is_ascii_hexdigit)).then_some(3),
        b'0'..=b'9' => {
            let n = rest
                .iter()
                .take(3)
                .take_while(|b| b.is_ascii_digit())
                .count();
            let value = rest[..n]
                .iter()
                .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            (value <= 255).then_some(n)
        }
        b'u' => {
            if rest.get(1) != Some(&b'{') {
                return None;
            }
            let digits = rest[2..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            let value = rest[2..2 + digits].iter().try_fold(0u64, |v, d| {
                let v = v * 16 + u64::from(char::from(*d).to_digit(16)?);
                (v <= 0x7FFF_FFFF).then_some(v)
            });
            (digits > 0 && value.is_some() && rest.get(2 + digits) == Some(&b'}'))
                .then_some(3 + digits)
        }
        _ => None,
    }
}

/// Binary operators: spelling, left and right priority (`lparser.c`'s table).
fn binary(t: T) -> Option<(u8, u8)> {
    Some(match t {
        T::Kw("or") => (1, 1),
        T::Kw("and") => (2, 2),
        T::Sym("<" | ">" | "<=" | ">=" | "~=" | "==") => (3, 3),
        T::Sym("|") => (4, 4),
        T::Sym("~") => (5, 5),
        T::Sym("&") => (6, 6),
        T::Sym("<<" | ">>") => (7, 7),
        T::Sym("..") => (9, 8),
        T::Sym("+" | "-") => (10, 10),
        T::Sym("*" | "/" | "//" | "%") => (11, 11),
        T::Sym("^") => (14, 13),
        _ => return None,
    })
}

/// Unary operators bind tighter than all binary ones but `^`.
const UNARY_PRIORITY: u8 = 12;

fn unary(t: T) -> bool {
    matches!(t, T::Kw("not") | T::Sym("-" | "#" | "~"))
}

fn offset(n: usize) -> Option<u32> {
    u32::try_from(n).ok()
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Option<Parser<'s>> {
        // Offsets are u32: a source over 4 GiB is not linted this way (the source limit
        // keeps it far below).
        offset(src.len())?;
        let mut p = Parser {
            src,
            lexer: Lexer::new(src.as_bytes()),
            cur: Tok {
                t: T::Eof,
                start: 0,
                end: 0,
            },
            peeked: None,
            prev_end: 0,
            loops: 0,
            vararg: true,
            refused: Vec::new(),
        };
        p.cur = p.read()?;
        Some(p)
    }

    /// The next token from the lexer, checked; `None` for one that is not valid Lua.
    fn read(&mut self) -> Option<Tok> {
        let Some(tok) = self.lexer.next() else {
            let end = offset(self.src.len())?;
            return Some(Tok {
                t: T::Eof,
                start: end,
                end,
            });
        };
        let text = tok.text(self.src.as_bytes());
        let t = match tok.kind {
            Kind::Name => keyword(text).map_or(T::Name, T::Kw),
            Kind::Number if valid_number(text) => T::Number,
            Kind::Str if valid_string(text) => T::Str,
            Kind::Sym(s) if lua_symbol(s) => T::Sym(s),
            _ => return None,
        };
        Some(Tok {
            t,
            start: offset(tok.start)?,
            end: offset(tok.end)?,
        })
    }

    /// Takes the current token.
    fn bump(&mut self) -> Option<()> {
        self.prev_end = self.cur.end;
        self.cur = match self.peeked.take() {
            Some(t) => t,
            None => self.read()?,
        };
        Some(())
    }

    fn peek(&mut self) -> Option<T> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read()?);
        }
        self.peeked.map(|t| t.t)
    }

    /// Takes the current token if it is `t`.
    fn eat(&mut self, t: T) -> Option<bool> {
        if self.cur.t == t {
            self.bump()?;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Takes the current token, which must be `t`.
    fn expect(&mut self, t: T) -> Option<()> {
        if self.cur.t == t {
            self.bump()
        } else {
            None
        }
    }

    fn text(&self, tok: Tok) -> &'s str {
        self.src
            .get(tok.start as usize..tok.end as usize)
            .unwrap_or("")
    }

    fn name(&mut self) -> Option<Name<'s>> {
        if self.cur.t != T::Name {
            return None;
        }
        let tok = self.cur;
        self.bump()?;
        Some(Name {
            text: self.text(tok),
            range: tok.range(),
        })
    }

    fn range_from(&self, start: u32) -> Range {
        Range {
            start,
            end: self.prev_end,
        }
    }

    fn block_ends(&self) -> bool {
        matches!(
            self.cur.t,
            T::Eof | T::Kw("end" | "else" | "elseif" | "until")
        )
    }

    fn block(&mut self) -> Option<Block<'s>> {
        let mut block = Block::default();
        while !self.block_ends() {
            if self.cur.t == T::Kw("return") {
                self.bump()?;
                let values = if self.block_ends() || self.cur.t == T::Sym(";") {
                    Vec::new()
                } else {
                    self.exprlist()?
                };
                self.eat(T::Sym(";"))?;
                block.ret = Some(values);
                // Nothing may follow a `return` in its block.
                return self.block_ends().then_some(block);
            }
            if let Some(stmt) = self.statement()? {
                block.stmts.push(stmt);
            }
        }
        Some(block)
    }

    /// A block closed by `end`.
    fn block_end(&mut self) -> Option<Block<'s>> {
        let block = self.block()?;
        self.expect(T::Kw("end"))?;
        Some(block)
    }

    /// A loop's body, closed by `end`.
    fn loop_body(&mut self) -> Option<Block<'s>> {
        self.loops += 1;
        let block = self.block_end();
        self.loops -= 1;
        block
    }

    /// One statement; `Some(None)` for those the tree leaves out.
    fn statement(&mut self) -> Option<Option<Stmt<'s>>> {
        let stmt = match self.cur.t {
            T::Sym(";") => {
                self.bump()?;
                return Some(None);
            }
            T::Kw("break") => {
                if self.loops == 0 {
                    let at = self.cur.range();
                    self.refused.push(Refusal::BreakOutsideLoop(at));
                }
                self.bump()?;
                return Some(None);
            }
            T::Kw("goto") => {
                self.bump()?;
                Stmt::Goto(self.name()?)
            }
            T::Sym("::") => {
                self.bump()?;
                let name = self.name()?;
                self.expect(T::Sym("::"))?;
                Stmt::Label(name)
            }
            T::Kw("if") => {
                let mut arms = Vec::new();
                let mut otherwise = None;
                loop {
                    // `if` or `elseif`
                    self.bump()?;
                    let cond = self.expr()?;
                    self.expect(T::Kw("then"))?;
                    arms.push((cond, self.block()?));
                    match self.cur.t {
                        T::Kw("elseif") => continue,
                        T::Kw("else") => {
                            self.bump()?;
                            otherwise = Some(self.block()?);
                            self.expect(T::Kw("end"))?;
                            break;
                        }
                        _ => {
                            self.expect(T::Kw("end"))?;
                            break;
                        }
                    }
                }
                Stmt::If { arms, otherwise }
            }
            T::Kw("while") => {
                self.bump()?;
                let cond = self.expr()?;
                self.expect(T::Kw("do"))?;
                Stmt::While(cond, self.loop_body()?)
            }
            T::Kw("do") => {
                self.bump()?;
                Stmt::Do(self.block_end()?)
            }
            T::Kw("repeat") => {
                self.bump()?;
                self.loops += 1;
                let body = self.block();
                self.loops -= 1;
                let body = body?;
                self.expect(T::Kw("until"))?;
                Stmt::Repeat(body, self.expr()?)
            }
            T::Kw("for") => {
                self.bump()?;
                let first = self.name()?;
                if self.eat(T::Sym("="))? {
                    let start = self.expr()?;
                    self.expect(T::Sym(","))?;
                    let end = self.expr()?;
                    let step = if self.eat(T::Sym(","))? {
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    self.expect(T::Kw("do"))?;
                    Stmt::NumericFor {
                        var: first,
                        start,
                        end,
                        step,
                        body: self.loop_body()?,
                    }
                } else {
                    let mut names = vec![first];
                    while self.eat(T::Sym(","))? {
                        names.push(self.name()?);
                    }
                    self.expect(T::Kw("in"))?;
                    let exprs = self.exprlist()?;
                    self.expect(T::Kw("do"))?;
                    Stmt::GenericFor {
                        names,
                        exprs,
                        body: self.loop_body()?,
                    }
                }
            }
            T::Kw("function") => {
                self.bump()?;
                let start = self.cur.start;
                let mut names = vec![self.name()?];
                while self.eat(T::Sym("."))? {
                    names.push(self.name()?);
                }
                let method = if self.eat(T::Sym(":"))? {
                    Some(self.name()?)
                } else {
                    None
                };
                let range = self.range_from(start);
                Stmt::Function {
                    names,
                    method,
                    range,
                    body: self.funcbody()?,
                }
            }
            T::Kw("local") => {
                self.bump()?;
                if self.eat(T::Kw("function"))? {
                    let name = self.name()?;
                    Stmt::LocalFunction {
                        name,
                        body: self.funcbody()?,
                    }
                } else {
                    let mut names = Vec::new();
                    loop {
                        let name = self.name()?;
                        let attribute = if self.eat(T::Sym("<"))? {
                            let a = self.name()?;
                            // Lua 5.4 knows these two; any other is a compile error.
                            if !matches!(a.text, "const" | "close") {
                                return None;
                            }
                            self.expect(T::Sym(">"))?;
                            Some(a)
                        } else {
                            None
                        };
                        names.push((name, attribute));
                        if !self.eat(T::Sym(","))? {
                            break;
                        }
                    }
                    let values = if self.eat(T::Sym("="))? {
                        self.exprlist()?
                    } else {
                        Vec::new()
                    };
                    Stmt::Local { names, values }
                }
            }
            _ => {
                let first = self.suffixed()?;
                if matches!(self.cur.t, T::Sym("=" | ",")) {
                    let mut targets = vec![first];
                    while self.eat(T::Sym(","))? {
                        targets.push(self.suffixed()?);
                    }
                    self.expect(T::Sym("="))?;
                    if !targets.iter().all(assignable) {
                        return None;
                    }
                    Stmt::Assign {
                        targets,
                        values: self.exprlist()?,
                    }
                } else if first.is_call() {
                    Stmt::Call(first)
                } else {
                    return None;
                }
            }
        };
        Some(Some(stmt))
    }

    /// `(params) block end`
    fn funcbody(&mut self) -> Option<FuncBody<'s>> {
        self.expect(T::Sym("("))?;
        let mut params = Vec::new();
        let mut vararg = false;
        if self.cur.t != T::Sym(")") {
            loop {
                if self.eat(T::Sym("..."))? {
                    vararg = true;
                    break;
                }
                params.push(self.name()?);
                if !self.eat(T::Sym(","))? {
                    break;
                }
            }
        }
        self.expect(T::Sym(")"))?;
        // A function's body is its own: no loop around it, its own `...`.
        let outer = (self.loops, self.vararg);
        (self.loops, self.vararg) = (0, vararg);
        let block = self.block_end();
        (self.loops, self.vararg) = outer;
        Some(FuncBody {
            params,
            block: block?,
        })
    }

    fn exprlist(&mut self) -> Option<Vec<Expr<'s>>> {
        let mut list = vec![self.expr()?];
        while self.eat(T::Sym(","))? {
            list.push(self.expr()?);
        }
        Some(list)
    }

    fn expr(&mut self) -> Option<Expr<'s>> {
        self.subexpr(0)
    }

    /// `lparser.c`'s `subexpr`: operators binding tighter than `limit`.
    fn subexpr(&mut self, limit: u8) -> Option<Expr<'s>> {
        let mut left = if unary(self.cur.t) {
            let op = self.cur;
            self.bump()?;
            let operand = self.subexpr(UNARY_PRIORITY)?;
            Expr {
                range: Range {
                    start: op.start,
                    end: operand.range.end,
                },
                kind: ExprKind::Unary(self.text(op), Box::new(operand)),
            }
        } else {
            self.simple()?
        };
        while let Some((lp, rp)) = binary(self.cur.t) {
            if lp <= limit {
                break;
            }
            let op = self.cur;
            self.bump()?;
            let right = self.subexpr(rp)?;
            left = Expr {
                range: Range {
                    start: left.range.start,
                    end: right.range.end,
                },
                kind: ExprKind::Binary(self.text(op), Box::new(left), Box::new(right)),
            };
        }
        Some(left)
    }

    fn simple(&mut self) -> Option<Expr<'s>> {
        let tok = self.cur;
        let kind = match tok.t {
            T::Number => ExprKind::Number(self.text(tok)),
            T::Str => ExprKind::Str(self.text(tok)),
            T::Kw("nil") => ExprKind::Nil,
            T::Kw("true") => ExprKind::True,
            T::Kw("false") => ExprKind::False,
            T::Sym("...") => {
                if !self.vararg {
                    let at = tok.range();
                    self.refused.push(Refusal::VarargOutsideVararg(at));
                }
                ExprKind::Dots
            }
            T::Sym("{") => {
                let table = self.table()?;
                return Some(Expr {
                    kind: ExprKind::Table(table),
                    range: self.range_from(tok.start),
                });
            }
            T::Kw("function") => {
                self.bump()?;
                let body = self.funcbody()?;
                return Some(Expr {
                    kind: ExprKind::Function(Box::new(body)),
                    range: self.range_from(tok.start),
                });
            }
            _ => return self.suffixed(),
        };
        self.bump()?;
        Some(Expr {
            kind,
            range: tok.range(),
        })
    }

    /// A name or `( expr )`, then any indexes and calls.
    fn suffixed(&mut self) -> Option<Expr<'s>> {
        let start = self.cur.start;
        let prefix = match self.cur.t {
            T::Name => Prefix::Name(self.name()?),
            T::Sym("(") => {
                self.bump()?;
                let inner = self.expr()?;
                self.expect(T::Sym(")"))?;
                Prefix::Expr(Expr {
                    kind: ExprKind::Paren(Box::new(inner)),
                    range: self.range_from(start),
                })
            }
            _ => return None,
        };
        let mut suffixes = Vec::new();
        loop {
            let suffix = match self.cur.t {
                T::Sym(".") => {
                    self.bump()?;
                    Suffix::Dot(self.name()?)
                }
                T::Sym("[") => {
                    self.bump()?;
                    let key = self.expr()?;
                    self.expect(T::Sym("]"))?;
                    Suffix::Index(key)
                }
                T::Sym(":") => {
                    self.bump()?;
                    let name = self.name()?;
                    Suffix::Method(name, self.args()?)
                }
                T::Sym("(" | "{") | T::Str => Suffix::Call(self.args()?),
                _ => break,
            };
            suffixes.push(suffix);
        }
        Some(match prefix {
            // A parenthesised expression alone is just that.
            Prefix::Expr(e) if suffixes.is_empty() => e,
            prefix => Expr {
                kind: ExprKind::Chain(Box::new(prefix), suffixes),
                range: self.range_from(start),
            },
        })
    }

    fn args(&mut self) -> Option<Args<'s>> {
        let tok = self.cur;
        match tok.t {
            T::Str => {
                self.bump()?;
                Some(Args::Str(self.text(tok), tok.range()))
            }
            T::Sym("{") => {
                let table = self.table()?;
                Some(Args::Table(table, self.range_from(tok.start)))
            }
            T::Sym("(") => {
                self.bump()?;
                let list = if self.cur.t == T::Sym(")") {
                    Vec::new()
                } else {
                    self.exprlist()?
                };
                self.expect(T::Sym(")"))?;
                Some(Args::List(list))
            }
            _ => None,
        }
    }

    /// `{ fields }`
    fn table(&mut self) -> Option<Table<'s>> {
        self.expect(T::Sym("{"))?;
        let mut fields = Vec::new();
        while self.cur.t != T::Sym("}") {
            let named = self.cur.t == T::Name && self.peek()? == T::Sym("=");
            let field = match self.cur.t {
                T::Sym("[") => {
                    self.bump()?;
                    let key = self.expr()?;
                    self.expect(T::Sym("]"))?;
                    self.expect(T::Sym("="))?;
                    Field::Keyed(key, self.expr()?)
                }
                T::Name if named => {
                    let name = self.name()?;
                    self.bump()?;
                    Field::Named(name, self.expr()?)
                }
                _ => Field::Item(self.expr()?),
            };
            fields.push(field);
            if !(self.eat(T::Sym(","))? || self.eat(T::Sym(";"))?) {
                break;
            }
        }
        self.expect(T::Sym("}"))?;
        Some(Table { fields })
    }
}

/// What an assignment may write: a name, or a chain ending in an index.
fn assignable(e: &Expr<'_>) -> bool {
    match &e.kind {
        ExprKind::Chain(prefix, suffixes) => match suffixes.last() {
            None => matches!(**prefix, Prefix::Name(_)),
            Some(s) => matches!(s, Suffix::Dot(_) | Suffix::Index(_)),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerals() {
        for ok in [
            "3", "3.", ".5", "3.25", "1e5", "1E+2", "2e-3", "0xA", "0x.8p1", "0x1p-4",
        ] {
            assert!(valid_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "3..2", "1e", "0x", "3p1", "1e+", "0x1e+5", "1.2.3", "3x", "08a", ".",
        ] {
            assert!(!valid_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn strings() {
        for ok in [
            r#""a""#,
            "'it\\'s'",
            "\"a\\\nb\"",
            "[[x]]",
            "[==[a]]b]==]",
            "''",
        ] {
            assert!(valid_string(ok.as_bytes()), "{ok}");
        }
        for bad in ["\"a", "'a\nb'", "\"a\\\"", "[[x]", "[==[x]=]", "[[", "'\\"] {
            assert!(!valid_string(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn valid_and_invalid() {
        for ok in [
            "",
            "local x <const>, y <close> = 1, nil",
            "return",
            "return;",
            "::top:: goto top",
            "a.b[c]:d 's' {1} (2)",
            "x = -2 ^ -3 .. 'a' .. 'b'",
            "for i = 1, 2 do break end for k, v in pairs(t) do end",
            "repeat local x = 1 until x",
            "if a then elseif b then else end",
            "function a.b.c:d(x, ...) return ... end",
            "local t = {1; 2, x = 3, [4] = 5,}",
            "x = 0x1e+5 - 0xAe-1 + 0x1p+4 + 1e-2",
        ] {
            assert!(chunk(ok).is_ok_and(|p| p.refused.is_empty()), "{ok}");
        }
        for bad in [
            "x = = 1",
            "if a != b then end",
            "x += 1",
            "return 1; x = 2",
            "f() = 1",
            "(a) = 1",
            "a.b:c = 1",
            "local function a.b() end",
            "x = 3..2",
            "'unfinished",
            "--[[ unfinished",
            "x = 1e",
            "goto",
            "x",
            "local x <other> = 1",
            "x = {a = }",
            "`",
            "x = @",
            "end",
        ] {
            assert!(chunk(bad).is_err(), "{bad}");
        }
        // Where it gave up: the second `return`.
        assert_eq!(
            chunk("return return").err(),
            Some(Some(Range { start: 7, end: 13 }))
        );
    }

    #[test]
    fn what_lua_refuses_in_a_chunk_that_parses() {
        let refused = |src: &str| chunk(src).ok().map(|p| p.refused);
        assert_eq!(
            refused("print(1)\nbreak"),
            Some(vec![Refusal::BreakOutsideLoop(Range { start: 9, end: 14 })])
        );
        assert_eq!(
            refused("while x do local f = function() break end end"),
            Some(vec![Refusal::BreakOutsideLoop(Range {
                start: 32,
                end: 37
            })])
        );
        assert_eq!(
            refused("local f = function(a) return ... end"),
            Some(vec![Refusal::VarargOutsideVararg(Range {
                start: 29,
                end: 32
            })])
        );
        for fine in [
            "return ...",
            "local f = function(...) return function() end, ... end",
            "for i = 1, 2 do if i then break end end",
            "repeat local f = function(...) return ... end break until true",
            "while true do do break end end",
        ] {
            assert_eq!(refused(fine), Some(vec![]), "{fine}");
        }
    }

    #[test]
    fn escapes_lua_refuses() {
        assert_eq!(invalid_escape(br"'a\q'"), Some(2));
        assert_eq!(invalid_escape(br"'\xZZ'"), Some(1));
        assert_eq!(invalid_escape(br"'ok\256'"), Some(3));
        assert_eq!(invalid_escape(br"'\u{80000000}'"), Some(1));
        for fine in [
            r"'\n\t\\\''",
            r"'\x41\65\u{7FFFFFFF}'",
            "'a\\z\n  b'",
            "[[\\q]]",
        ] {
            assert_eq!(invalid_escape(fine.as_bytes()), None, "{fine}");
        }
    }
}
