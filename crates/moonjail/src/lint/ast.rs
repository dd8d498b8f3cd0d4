//! The linter's syntax tree: what the rules look at and nothing more (no trivia, no
//! punctuation), with every node's place as byte offsets into the source.
//!
//! Two parsers build it. [`super::parse`], this module's own, reads valid Lua 5.4 fast
//! and gives up at the first syntax error; full_moon, which recovers from errors and says
//! what they are, reads the scripts that have one ([`super::recover`] converts its tree).
//! Both give the same tree for the same valid source, offsets included: a test holds
//! them to it on every Lua file of the repository and on generated programs.

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

/// A statement. `break`, `goto`, labels and empty statements are left out: no rule
/// looks at them.
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
