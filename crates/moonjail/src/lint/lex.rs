//! A small hand lexer for Lua source: enough to read the tokens of one line (for syntax
//! hints, which must work without a parse) and to bound how deeply a chunk nests before
//! the parser (which recurses) sees it.
//!
//! It is deliberately forgiving: it never fails, it knows the spellings other languages
//! use that Lua does not (`!=`, `+=`, `&&`, `?`), and an unterminated string or long
//! bracket simply runs to the end of the input. No regex: the Lua lexical grammar is
//! small enough to read byte by byte, and a lexer of our own costs nothing to depend on.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A name or a keyword (`local`, `x`, `continue`).
    Name,
    /// A numeral.
    Number,
    /// A short or long string literal.
    Str,
    /// An operator or punctuation, Lua's or a foreign one (`!=`, `+=`), by spelling.
    Sym(&'static str),
    /// Any other byte (`@`, `$`, a stray non-ASCII byte).
    Other,
}

/// One token: its kind and where it is in the input (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Token {
    /// The token's text in `src`.
    pub(crate) fn text<'a>(&self, src: &'a [u8]) -> &'a [u8] {
        src.get(self.start..self.end).unwrap_or(&[])
    }
}

/// Symbols, longest first: each foreign spelling is here so that it is one token (`!=` is
/// never valid Lua, so seeing it whole is what a hint needs).
const SYMBOLS: &[&str] = &[
    "...", "..=", "===", "!==", "..", "==", "~=", "!=", "<=", ">=", "<<", ">>", "//", "::", "+=",
    "-=", "*=", "/=", "%=", "^=", "++", "&&", "||", "->", "=>", "+", "-", "*", "/", "%", "^", "#",
    "&", "~", "|", "<", ">", "=", "(", ")", "{", "}", "[", "]", ";", ":", ",", ".", "!", "?",
];

/// [`SYMBOLS`] by first byte, longest first as there: trying every symbol's prefix at
/// each token made this lexer a third of a megabyte's lint.
static BY_FIRST_BYTE: std::sync::LazyLock<[Vec<&'static str>; 256]> =
    std::sync::LazyLock::new(|| {
        std::array::from_fn(|b| {
            SYMBOLS
                .iter()
                .copied()
                .filter(|s| usize::from(s.as_bytes()[0]) == b)
                .collect()
        })
    });

/// The spelling of Lua symbol `text` as this lexer's [`Kind::Sym`] holds it.
pub(crate) fn symbol(text: &[u8]) -> Option<&'static str> {
    SYMBOLS.iter().copied().find(|s| s.as_bytes() == text)
}

/// The tokens of `src`, comments and whitespace skipped.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// A long comment ran to the end of the input unclosed (a syntax error Lua reports;
    /// this lexer just skips it, and the strict parser asks).
    pub(crate) unfinished_comment: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Lexer<'a> {
        Lexer {
            src,
            pos: 0,
            unfinished_comment: false,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// The level of a long bracket opening at `i` (`[[` is 0, `[==[` is 2), if one does.
    fn long_bracket(&self, i: usize) -> Option<usize> {
        if self.at(i) != b'[' {
            return None;
        }
        let mut j = i + 1;
        while self.at(j) == b'=' {
            j += 1;
        }
        (self.at(j) == b'[').then_some(j - i - 1)
    }

    /// Skips past the long bracket of `level` whose body starts at `i` (to the end of the
    /// input when it is not closed).
    fn skip_long(&self, i: usize, level: usize) -> usize {
        self.close_long(i, level).unwrap_or(self.src.len())
    }

    /// Where the long bracket of `level` whose body starts at `i` ends, if it is closed.
    fn close_long(&self, mut i: usize, level: usize) -> Option<usize> {
        while i < self.src.len() {
            if self.src[i] == b']' {
                let mut j = i + 1;
                while self.at(j) == b'=' {
                    j += 1;
                }
                if j - i - 1 == level && self.at(j) == b']' {
                    return Some(j + 1);
                }
            }
            i += 1;
        }
        None
    }

    fn skip_trivia(&mut self) {
        loop {
            // Lua's spaces: ASCII whitespace and the vertical tab.
            while self.pos < self.src.len()
                && (self.src[self.pos].is_ascii_whitespace() || self.src[self.pos] == 0x0b)
            {
                self.pos += 1;
            }
            if self.at(self.pos) == b'-' && self.at(self.pos + 1) == b'-' {
                let body = self.pos + 2;
                self.pos = match self.long_bracket(body) {
                    Some(level) => match self.close_long(body + level + 2, level) {
                        Some(end) => end,
                        None => {
                            self.unfinished_comment = true;
                            self.src.len()
                        }
                    },
                    None => self.src[body..]
                        .iter()
                        // Lua ends a comment at either line break.
                        .position(|&b| b == b'\n' || b == b'\r')
                        .map_or(self.src.len(), |n| body + n),
                };
                continue;
            }
            return;
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.skip_trivia();
        let start = self.pos;
        let c = *self.src.get(start)?;
        let kind = if c.is_ascii_alphabetic() || c == b'_' {
            while self.at(self.pos).is_ascii_alphanumeric() || self.at(self.pos) == b'_' {
                self.pos += 1;
            }
            Kind::Name
        } else if c.is_ascii_digit() || (c == b'.' && self.at(start + 1).is_ascii_digit()) {
            self.pos += 1;
            // A sign belongs to the numeral after an exponent letter: `e` in decimal, `p`
            // in hexadecimal (`0x1e+5` is `0x1e + 5`).
            let hex = c == b'0' && matches!(self.at(self.pos), b'x' | b'X');
            loop {
                let b = self.at(self.pos);
                let exponent = if hex {
                    matches!(b, b'p' | b'P')
                } else {
                    matches!(b, b'e' | b'E')
                };
                if exponent && matches!(self.at(self.pos + 1), b'+' | b'-') {
                    self.pos += 2;
                } else if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            Kind::Number
        } else if c == b'"' || c == b'\'' {
            self.pos += 1;
            while self.pos < self.src.len() {
                match self.src[self.pos] {
                    // `\z` skips the whitespace after it, line breaks included.
                    b'\\' if self.at(self.pos + 1) == b'z' => {
                        self.pos += 2;
                        while self.at(self.pos).is_ascii_whitespace() || self.at(self.pos) == 0x0b {
                            self.pos += 1;
                        }
                    }
                    b'\\' => self.pos += 2,
                    // Lua's short strings end (unfinished) at either line break.
                    b'\n' | b'\r' => break,
                    b if b == c => {
                        self.pos += 1;
                        break;
                    }
                    _ => self.pos += 1,
                }
            }
            self.pos = self.pos.min(self.src.len());
            Kind::Str
        } else if let Some(level) = self.long_bracket(start) {
            self.pos = self.skip_long(start + level + 2, level);
            Kind::Str
        } else if let Some(sym) = BY_FIRST_BYTE[usize::from(c)]
            .iter()
            .find(|s| self.src[start..].starts_with(s.as_bytes()))
        {
            self.pos += sym.len();
            Kind::Sym(sym)
        } else {
            self.pos += 1;
            Kind::Other
        };
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

/// An upper bound on how deeply a parser recursing over `src` nests: brackets and blocks,
/// plus, within each, the operators of one expression (each binary or unary operator can
/// add a level of the syntax tree). Over-counting is harmless (a chunk is then reported as
/// too deep to check); under-counting is what must not happen.
pub(crate) fn nesting_bound(src: &[u8]) -> usize {
    nesting_bound_of(src, Lexer::new(src))
}

/// [`nesting_bound`] over given tokens of `src` (another lexer's, mapped to these).
pub(crate) fn nesting_bound_of(src: &[u8], tokens: impl Iterator<Item = Token>) -> usize {
    // Per open bracket or block: the operators of the current expression chain in it.
    let mut frames: Vec<usize> = vec![0];
    let mut bound = 0;
    let mut depth_sum = 0usize;
    for tok in tokens {
        let text = tok.text(src);
        let opens = matches!(tok.kind, Kind::Sym("(" | "[" | "{"))
            || (tok.kind == Kind::Name
                && matches!(text, b"function" | b"do" | b"repeat" | b"then" | b"else"));
        let closes = matches!(tok.kind, Kind::Sym(")" | "]" | "}"))
            || (tok.kind == Kind::Name && matches!(text, b"end" | b"until" | b"elseif" | b"else"));
        if closes && frames.len() > 1 {
            if let Some(chain) = frames.pop() {
                depth_sum = depth_sum.saturating_sub(chain + 1);
            }
        }
        if opens {
            frames.push(0);
            depth_sum += 1;
        }
        let operator = match tok.kind {
            // Suffixes (`a.b`, `a:b()`) are flat in the tree; `...` is an operand.
            Kind::Sym(s) => !matches!(
                s,
                "(" | ")" | "{" | "}" | "[" | "]" | ";" | "," | "=" | "::" | "." | ":" | "..."
            ),
            Kind::Name => matches!(text, b"and" | b"or" | b"not"),
            _ => false,
        };
        let operand = matches!(
            tok.kind,
            Kind::Number | Kind::Str | Kind::Sym("." | ":" | "...")
        ) || (tok.kind == Kind::Name
            && !matches!(
                text,
                b"local" | b"return" | b"while" | b"for" | b"in" | b"goto" | b"break" | b"if"
            ));
        if let Some(chain) = frames.last_mut() {
            if operator {
                *chain += 1;
                depth_sum += 1;
            } else if !operand && !opens && !closes {
                // `,` `;` `=` and statement keywords end the expression.
                depth_sum -= *chain;
                *chain = 0;
            }
        }
        bound = bound.max(depth_sum);
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(Kind, String)> {
        Lexer::new(src.as_bytes())
            .map(|t| {
                (
                    t.kind,
                    String::from_utf8_lossy(t.text(src.as_bytes())).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn tokens() {
        let toks = kinds("if a != b then x += 1 end -- c != d\nlocal s = 'it''s' .. [[!=]]");
        let texts: Vec<&str> = toks.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "if", "a", "!=", "b", "then", "x", "+=", "1", "end", "local", "s", "=", "'it'",
                "'s'", "..", "[[!=]]"
            ]
        );
        assert_eq!(toks[2].0, Kind::Sym("!="));
        assert_eq!(toks[15].0, Kind::Str);
        assert_eq!(kinds("--[==[ a\n]] b ]==] x")[0].1, "x");
        assert_eq!(kinds("0x1p-4 3.5e+2 .5")[0].0, Kind::Number);
        assert_eq!(kinds("0x1p-4 3.5e+2 .5").len(), 3);
        assert_eq!(kinds("'a\\'b' c")[1].1, "c");
        // Unterminated: runs to the end, never fails.
        assert_eq!(kinds("[==[ open").len(), 1);
        assert_eq!(kinds("\"open\nx")[1].1, "x");
    }

    #[test]
    fn nesting() {
        assert!(nesting_bound(b"local x = 1") <= 2);
        let deep = "x = ".to_string() + &"(".repeat(300) + "1" + &")".repeat(300);
        assert!(nesting_bound(deep.as_bytes()) >= 300);
        let chain = "x = 1".to_string() + &" + 1".repeat(500);
        assert!(nesting_bound(chain.as_bytes()) >= 500);
        let unary = "x = ".to_string() + &"- ".repeat(400) + "1";
        assert!(nesting_bound(unary.as_bytes()) >= 400);
        // Separate statements do not add up.
        let flat = "x = 1 + 1\n".repeat(1000);
        assert!(nesting_bound(flat.as_bytes()) < 10);
        let statements = "if a and b then x.y(c) elseif d then e = f or g else h:i() end\n";
        assert!(nesting_bound(statements.repeat(1000).as_bytes()) < 10);
        let blocks = "do ".repeat(250) + &"end ".repeat(250);
        assert!(nesting_bound(blocks.as_bytes()) >= 250);
    }
}
