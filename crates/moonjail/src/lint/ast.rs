//! The linter's syntax tree: what the rules look at and nothing more (no trivia, no
//! punctuation), with every node's place as byte offsets into the source.
//!
//! Two parsers build it. [`super::parse`], this module's own, reads valid Lua 5.4 fast
//! and gives up at the first syntax error; full_moon, which recovers from errors and says
//! what they are, reads the scripts that have one ([`super::recover`] converts its tree).
//! Both give the same tree for the same valid source, offsets included: a test holds
//! them to it on every Lua file of the repository and on generated programs.

/// Where something is: 1-based lines and columns, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) end_line: u32,
    pub(crate) end_column: u32,
}

impl Span {
    /// Line 1, column 1: for what is about the whole script.
    pub(crate) const START: Span = Span {
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
    };
}

/// A count as a 1-based position (at least 1; saturated).
pub(crate) fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// Byte offsets to lines and columns (a column counts characters), each in about constant
/// time: a finding's column must not cost a scan of its line, which may be the whole
/// megabyte of a minified script.
pub(crate) struct Lines<'t> {
    text: &'t str,
    /// Where each line starts.
    starts: Vec<u32>,
    /// For text that is not ASCII: how many characters start before each block of
    /// [`CHARS_BLOCK`] bytes.
    chars: Vec<u32>,
}

const CHARS_BLOCK: usize = 64;

impl<'t> Lines<'t> {
    pub(crate) fn new(text: &'t str) -> Lines<'t> {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| u32::try_from(i + 1).unwrap_or(u32::MAX)),
        );
        let mut chars = Vec::new();
        if !text.is_ascii() {
            let mut count = 0u32;
            for block in bytes.chunks(CHARS_BLOCK) {
                chars.push(count);
                count += block.iter().filter(|&&b| !is_continuation(b)).count() as u32;
            }
            // The block that starts at the end (an offset there is a finding's end).
            chars.push(count);
        }
        Lines {
            text,
            starts,
            chars,
        }
    }

    /// Characters that start before byte `offset`.
    fn chars_before(&self, offset: usize) -> usize {
        if self.chars.is_empty() {
            return offset;
        }
        let block = offset / CHARS_BLOCK;
        let base = self.chars.get(block).copied().unwrap_or(0) as usize;
        let from = block * CHARS_BLOCK;
        base + self
            .text
            .as_bytes()
            .get(from..offset)
            .map_or(0, |b| b.iter().filter(|&&b| !is_continuation(b)).count())
    }

    /// The line and column of byte `offset`.
    fn at(&self, offset: u32) -> (u32, u32) {
        let offset = offset.min(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self.chars_before(offset as usize) - self.chars_before(start as usize) + 1;
        (clamp(line), clamp(column))
    }

    /// Where each line starts (line n + 1 at `starts()[n]`).
    pub(crate) fn starts(&self) -> &[u32] {
        &self.starts
    }

    pub(crate) fn span(&self, range: Range) -> Span {
        let (line, column) = self.at(range.start);
        let (end_line, end_column) = self.at(range.end);
        Span {
            line,
            column,
            end_line,
            end_column,
        }
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Where a node is: bytes `start..end` of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Range {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

/// An identifier and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Name<'s> {
    pub(crate) text: &'s str,
    pub(crate) range: Range,
}

/// Statements, and the `return` that may end them.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Block<'s> {
    pub(crate) stmts: Vec<Stmt<'s>>,
    /// `return e1, e2`: the values (empty for a bare `return`); `None` without a `return`.
    pub(crate) ret: Option<Vec<Expr<'s>>>,
}

/// A statement. `break` and empty statements are left out: no rule looks at them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stmt<'s> {
    /// `a, b.c = 1, 2`: the targets are names or chains ending in an index.
    Assign {
        targets: Vec<Expr<'s>>,
        values: Vec<Expr<'s>>,
    },
    /// `local a <const>, b = 1`: each name with its attribute.
    Local {
        names: Vec<(Name<'s>, Option<Name<'s>>)>,
        values: Vec<Expr<'s>>,
    },
    /// A call as a statement: a chain ending in a call.
    Call(Expr<'s>),
    Do(Block<'s>),
    While(Expr<'s>, Block<'s>),
    /// `repeat block until condition`: the condition sees the block's locals.
    Repeat(Block<'s>, Expr<'s>),
    /// `if c then b elseif c then b ... else b end`.
    If {
        arms: Vec<(Expr<'s>, Block<'s>)>,
        otherwise: Option<Block<'s>>,
    },
    NumericFor {
        var: Name<'s>,
        start: Expr<'s>,
        end: Expr<'s>,
        step: Option<Expr<'s>>,
        body: Block<'s>,
    },
    GenericFor {
        names: Vec<Name<'s>>,
        exprs: Vec<Expr<'s>>,
        body: Block<'s>,
    },
    /// `function a.b.c:m() end`: `range` covers the name (`a.b.c:m`).
    Function {
        names: Vec<Name<'s>>,
        method: Option<Name<'s>>,
        range: Range,
        body: FuncBody<'s>,
    },
    LocalFunction {
        name: Name<'s>,
        body: FuncBody<'s>,
    },
    /// `goto name`
    Goto(Name<'s>),
    /// `::name::`
    Label(Name<'s>),
}

/// A function's parameters and body (`...` is not among the names).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FuncBody<'s> {
    pub(crate) params: Vec<Name<'s>>,
    pub(crate) block: Block<'s>,
}

/// An expression and where it is (parentheses included when it has them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr<'s> {
    pub(crate) kind: ExprKind<'s>,
    pub(crate) range: Range,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExprKind<'s> {
    Nil,
    True,
    False,
    /// `...`
    Dots,
    /// A numeral as written.
    Number(&'s str),
    /// A string literal as written, quotes or brackets included.
    Str(&'s str),
    Function(Box<FuncBody<'s>>),
    Table(Table<'s>),
    /// A binary operator, by its spelling (`..`, `and`, `+`).
    Binary(&'s str, Box<Expr<'s>>, Box<Expr<'s>>),
    /// A unary operator, by its spelling (`not`, `#`, `-`, `~`).
    Unary(&'s str, Box<Expr<'s>>),
    /// `( e )`
    Paren(Box<Expr<'s>>),
    /// A name or a parenthesised expression followed by indexes and calls: `x`, `a.b[c]`,
    /// `f(1):m "s"`. A call when its last suffix is one.
    Chain(Box<Prefix<'s>>, Vec<Suffix<'s>>),
}

/// What a chain starts from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prefix<'s> {
    Name(Name<'s>),
    /// A parenthesised expression (its kind is [`ExprKind::Paren`]).
    Expr(Expr<'s>),
}

/// One step of a chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Suffix<'s> {
    /// `.name`
    Dot(Name<'s>),
    /// `[expr]`
    Index(Expr<'s>),
    /// `(args)`, `{...}`, `"s"`
    Call(Args<'s>),
    /// `:name(args)`
    Method(Name<'s>, Args<'s>),
}

/// A call's arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Args<'s> {
    /// `(a, b)`
    List(Vec<Expr<'s>>),
    /// `f{...}`
    Table(Table<'s>, Range),
    /// `f"s"`: the literal as written, and where.
    Str(&'s str, Range),
}

/// A table constructor's fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Table<'s> {
    pub(crate) fields: Vec<Field<'s>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'s> {
    /// `[k] = v`
    Keyed(Expr<'s>, Expr<'s>),
    /// `name = v`
    Named(Name<'s>, Expr<'s>),
    /// `v`
    Item(Expr<'s>),
}

impl Expr<'_> {
    /// True for a chain whose last step is a call (a function call expression).
    pub(crate) fn is_call(&self) -> bool {
        matches!(&self.kind, ExprKind::Chain(_, s) if matches!(s.last(), Some(Suffix::Call(_) | Suffix::Method(..))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let text = "ab\nçd\n\nx";
        let lines = Lines::new(text);
        let at = |o: u32| lines.at(o);
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(3), (2, 1));
        assert_eq!(at(5), (2, 2)); // after `ç` (two bytes): one character
        assert_eq!(at(8), (4, 1));
        assert_eq!(at(9), (4, 2)); // the end of the text
    }

    /// A non-ASCII text whose length is a multiple of the block: an offset at its end
    /// fell past the counts (a panic in a debug build, `u32::MAX` in release).
    #[test]
    fn the_end_of_a_text_of_whole_blocks() {
        let mut text = "é".to_string();
        text.push_str(&"x".repeat(CHARS_BLOCK * 2 - 2));
        assert_eq!(text.len(), CHARS_BLOCK * 2);
        let lines = Lines::new(&text);
        assert_eq!(lines.at(text.len() as u32), (1, CHARS_BLOCK as u32 * 2));
    }
}
