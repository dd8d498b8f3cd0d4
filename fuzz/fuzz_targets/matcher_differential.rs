//! The metered matcher (`stdlib/strmatch.rs`) against stock Lua 5.4's `lstrlib` on the
//! same inputs, in one Lua state: `string.find`, `match`, `gmatch` and `gsub` with a
//! subject of up to 64 bytes (mostly from a small alphabet, so that patterns match) and a
//! pattern built from Lua pattern atoms (usually valid, sometimes not), `init`/`n` over
//! the whole integer range, replacement strings, tables and functions.
//!
//! Must hold: identical results, or identical error messages (pattern errors included),
//! for every input. No case is skipped for a resource error: both sides have the same
//! `MAXCCALLS` (200) and `LUA_MAXCAPTURES` (32), so "pattern too complex" and "too many
//! captures" must agree too. At most three quantified atoms are kept so that the stock
//! matcher, which cannot be interrupted, backtracks over at most 64^3 positions per start.
#![no_main]

use std::cell::RefCell;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moonjail::fuzzing::{Differential, MatchOp, Repl};

const SUBJ_BYTES: &[u8] = b"abc1 ()x%[]-_\0AB\n.";

const ATOMS: &[&str] = &[
    "a",
    "b",
    "c",
    "x",
    "1",
    " ",
    "\0",
    "%a",
    "%d",
    "%s",
    "%w",
    "%W",
    "%l",
    "%u",
    "%p",
    "%x",
    "%z",
    "%.",
    "%%",
    ".",
    "*",
    "+",
    "-",
    "?",
    "[ab]",
    "[^a]",
    "[a-c]",
    "[%d_]",
    "[]]",
    "[^]]",
    "[%a-]",
    "[a-]",
    "[-a]",
    "[%]",
    "[%]]",
    "[a-",
    "%]",
    "[",
    "]",
    "%b()",
    "%b",
    "%bab",
    "%f[%w]",
    "%f[%W]",
    "%f[a]",
    "%f[%s]",
    "%f[%z]",
    "%f[^%z]",
    "%f[%S]",
    "%f",
    "^",
    "$",
    "(",
    ")",
    "()",
    "%1",
    "%2",
    "%0",
    "%",
    "()%1",
    "(a)%1",
    "a*",
    "a-",
    "(a*)",
    "(.-)",
    "(%w+)",
    ".-",
    "%c",
    "%g",
    "%C",
    "[%w%s]",
    "[^%p]",
    "\u{ff}",
    "%\u{ff}",
    "[\u{1}-\u{7f}]",
];

const REPL_ATOMS: &[&str] = &[
    "x", "%0", "%1", "%2", "%%", "%", "%a", "-", "%9", "ab", "%3",
];

#[derive(Arbitrary, Debug)]
enum Atom {
    Listed(u8),
    /// A literal byte (escaped or not).
    Byte(u8),
    /// Captures around the next atom, up to 40 in a row (the limit is 32).
    Captures(u8),
}

#[derive(Arbitrary, Debug)]
enum Num {
    Absent,
    Small(i8),
    Any(i64),
}

#[derive(Arbitrary, Debug)]
enum ReplIn {
    Str(Vec<u8>),
    Table,
    Function(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Find(Num, bool),
    Match(Num),
    Gmatch(Num),
    Gsub(ReplIn, Num),
}

#[derive(Arbitrary, Debug)]
struct Input {
    subject: Vec<u8>,
    atoms: Vec<Atom>,
    op: Op,
}

fn num(n: &Num) -> Option<i64> {
    match n {
        Num::Absent => None,
        Num::Small(k) => Some(i64::from(*k)),
        Num::Any(k) => Some(*k),
    }
}

fn is_quantifier(b: u8) -> bool {
    matches!(b, b'*' | b'+' | b'-' | b'?')
}

fn pattern(atoms: &[Atom]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut quantified = 0;
    for atom in atoms.iter().take(24) {
        let piece: Vec<u8> = match atom {
            Atom::Listed(i) => ATOMS[usize::from(*i) % ATOMS.len()].bytes().collect(),
            Atom::Byte(b) => vec![*b],
            Atom::Captures(n) => {
                let n = usize::from(*n % 41);
                let mut p = b"(".repeat(n);
                p.push(b'a');
                p.extend_from_slice(&b")".repeat(n));
                p
            }
        };
        if piece.iter().any(|&b| is_quantifier(b)) {
            quantified += 1;
            if quantified > 3 {
                continue;
            }
        }
        out.extend_from_slice(&piece);
    }
    out
}

thread_local! {
    static DIFF: RefCell<Option<Differential>> = const { RefCell::new(None) };
}

fuzz_target!(|input: Input| {
    let subject: Vec<u8> = input
        .subject
        .iter()
        .take(64)
        .map(|&b| {
            if b < 224 {
                SUBJ_BYTES[usize::from(b) % SUBJ_BYTES.len()]
            } else {
                b
            }
        })
        .collect();
    let pattern = pattern(&input.atoms);
    let op = match &input.op {
        Op::Find(init, plain) => MatchOp::Find {
            init: num(init),
            plain: *plain,
        },
        Op::Match(init) => MatchOp::Match { init: num(init) },
        Op::Gmatch(init) => MatchOp::Gmatch { init: num(init) },
        Op::Gsub(repl, n) => MatchOp::Gsub {
            repl: match repl {
                ReplIn::Str(bytes) => Repl::Str(
                    bytes
                        .iter()
                        .take(6)
                        .flat_map(|&b| REPL_ATOMS[usize::from(b) % REPL_ATOMS.len()].bytes())
                        .collect(),
                ),
                ReplIn::Table => Repl::Table,
                ReplIn::Function(k) => Repl::Function(*k),
            },
            n: num(n),
        },
    };
    DIFF.with(|cell| {
        let mut cell = cell.borrow_mut();
        let diff = cell.get_or_insert_with(|| Differential::new().expect("a Lua state"));
        let (stock, metered) = diff
            .compare(&subject, &pattern, &op)
            .expect("the harness runs");
        assert!(
            stock == metered,
            "subject {:?} pattern {:?} op {:?}: stock {:?} metered {:?}",
            String::from_utf8_lossy(&subject),
            String::from_utf8_lossy(&pattern),
            op,
            String::from_utf8_lossy(&stock),
            String::from_utf8_lossy(&metered),
        );
    });
});
