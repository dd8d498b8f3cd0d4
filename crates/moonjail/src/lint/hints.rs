//! Hints for syntax errors that come from writing another language in Lua: `!=`, `+=`,
//! `continue`, `? :`, `//` comments, `&&`. Lua's own message (`'then' expected near '!'`)
//! is exact but does not say what to write instead; a model that wrote the script learns
//! faster from "Lua writes 'not equal' as `~=`".
//!
//! The recogniser reads only the tokens of the offending line (and, for code after a
//! `return`, the line before), with the small lexer of this module's parent, so it works
//! without a parse: the runtime calls it for the `syntax` errors of `run`, and the linter
//! for the errors full_moon reports. Every spelling it reacts to is invalid Lua except
//! `//` (integer division), `continue` and `null` (plain names), which it only names when
//! the error is on their line and their use there cannot be the Lua meaning.

use super::lex::{Kind, Lexer, Token};

/// A hint for the syntax error `message` reported at `line` (1-based) of `source`, when
/// the line shows a mistake from another language. `line` `None`: the whole source is
/// searched for spellings that are never valid Lua.
pub(crate) fn syntax_hint(source: &[u8], line: Option<u32>, message: &str) -> Option<String> {
    hint(
        &SourceLines {
            source,
            starts: None,
        },
        line,
        message,
    )
}

/// [`syntax_hint`] with where each line of `source` starts (`starts[n]` for line n + 1):
/// for the linter, which asks for a hint per syntax error and must not scan the source
/// from its start for each (40,000 errors in a file took seconds).
pub(crate) fn syntax_hint_indexed(
    source: &[u8],
    starts: &[u32],
    line: Option<u32>,
    message: &str,
) -> Option<String> {
    let lines = SourceLines {
        source,
        starts: Some(starts),
    };
    hint(&lines, line, message)
}

/// The lines of a source, by a scan or from an index of their starts.
struct SourceLines<'a> {
    source: &'a [u8],
    starts: Option<&'a [u32]>,
}

impl<'a> SourceLines<'a> {
    /// Line `line` (1-based), cut to [`MAX_SCANNED`] bytes.
    fn line(&self, line: u32) -> Option<&'a [u8]> {
        let Some(starts) = self.starts else {
            return line_text(self.source, line);
        };
        let index = usize::try_from(line.checked_sub(1)?).ok()?;
        let start = *starts.get(index)? as usize;
        let end = starts
            .get(index + 1)
            .map_or(self.source.len(), |&next| (next as usize).saturating_sub(1));
        let text = self.source.get(start..end.max(start))?;
        Some(&text[..text.len().min(MAX_SCANNED)])
    }
}

fn hint(lines: &SourceLines<'_>, line: Option<u32>, message: &str) -> Option<String> {
    let source = lines.source;
    if message.contains("near '`'") {
        return Some(
            "a backtick is not Lua: strings are quoted with \"...\", '...' or [[...]], and a \
             Markdown code fence (```) does not belong in the script"
                .to_string(),
        );
    }
    let Some(line) = line else {
        let source = &source[..source.len().min(MAX_SCANNED * 16)];
        let tokens: Vec<Token> = Lexer::new(source).collect();
        return (0..tokens.len()).find_map(|i| foreign(source, &tokens, i, false));
    };
    let text = lines.line(line)?;
    let tokens: Vec<Token> = Lexer::new(text).collect();
    // Lua reports a `continue` statement at the token after it, often on the next line.
    let before = line.checked_sub(1).and_then(|l| lines.line(l));
    if let Some(before) = before {
        let prev: Vec<Token> = Lexer::new(before).collect();
        if prev
            .last()
            .is_some_and(|t| t.text(before) == b"continue" && !tokens.is_empty())
        {
            if let Some(hint) = foreign(before, &prev, prev.len() - 1, true) {
                return Some(hint);
            }
        }
    }
    // The token the message names first (`near '!'`), then any other on the line.
    let near = near_token(message);
    let order = (0..tokens.len())
        .filter(|&i| near.is_some_and(|n| tokens[i].text(text).starts_with(n.as_bytes())))
        .chain(0..tokens.len());
    for i in order {
        if let Some(hint) = foreign(text, &tokens, i, true) {
            return Some(hint);
        }
    }
    after_return(lines, line, message)
}

/// A hint for reading the global `name` that the sandbox does not define, when it is
/// another language's spelling of something Lua has.
pub(crate) fn foreign_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "null" | "undefined" | "None" | "nullptr" => {
            "Lua's null value is `nil` (inside JSON data, `json.null` where the profile has json)"
        }
        "True" => "Lua's booleans are `true` and `false`",
        "False" => "Lua's booleans are `true` and `false`",
        "console" | "printf" | "println" | "echo" => "Lua prints with `print(...)`",
        "len" => "Lua's length operator is `#t` (or `string.len(s)`)",
        "this" => "Lua methods get the object as `self` (define them with `function T:m()`)",
        "str" | "int" | "float" => "Lua converts with `tostring(x)` and `tonumber(x)`",
        _ => return None,
    })
}

/// One foreign spelling that [`repair`] replaced: where it was (byte offsets) and the hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) text: String,
    pub(crate) hint: String,
}

/// `source` with other languages' spellings replaced by Lua of the same length (`!=` by
/// `~=`, `x += 1` by `x =  1`, `&&` by `or`, `continue` by `do end`, a `//` comment by
/// `--`), so that after a syntax error the rest of the script can still be read for
/// names and calls at the same lines and columns, and each spelling reported where it is
/// (not where the parser's recovery lands). What it writes need not mean what the script
/// meant. Every spelling replaced is invalid Lua where it stands.
pub(crate) fn repair(source: &str) -> Option<(String, Vec<Repair>)> {
    let bytes = source.as_bytes();
    let tokens: Vec<Token> = Lexer::new(bytes).collect();
    let mut out = bytes.to_vec();
    let mut repairs = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        let first_on_line = i == 0 || bytes[tokens[i - 1].end..tok.start].contains(&b'\n');
        let replacement: Option<&[u8]> = match tok.kind {
            Kind::Sym("!=") => Some(b"~="),
            Kind::Sym("!") => Some(b"~"),
            Kind::Sym("&&" | "||") => Some(b"or"),
            Kind::Sym("+=" | "-=" | "*=" | "/=" | "%=" | "^=") => Some(b"= "),
            Kind::Sym("..=") => Some(b"=  "),
            Kind::Sym("//") if first_on_line && prose_follows(bytes, &tokens, i + 1) => Some(b"--"),
            Kind::Name
                if tok.text(bytes) == b"continue" && continue_statement(bytes, &tokens, i) =>
            {
                Some(b"do end  ")
            }
            _ => None,
        };
        let Some(r) = replacement else { continue };
        let Some(hint) = foreign(bytes, &tokens, i, true) else {
            continue;
        };
        if let Some(slot) = out.get_mut(tok.start..tok.end) {
            if slot.len() == r.len() {
                slot.copy_from_slice(r);
                repairs.push(Repair {
                    start: tok.start,
                    end: tok.end,
                    text: String::from_utf8_lossy(tok.text(bytes)).into_owned(),
                    hint,
                });
            }
        }
    }
    if repairs.is_empty() {
        return None;
    }
    Some((String::from_utf8(out).ok()?, repairs))
}

/// `continue` standing as a statement (not a call `continue(...)`, `continue "x"`, nor a
/// variable): another language's keyword.
fn continue_statement(src: &[u8], tokens: &[Token], i: usize) -> bool {
    match tokens.get(i + 1) {
        None => true,
        Some(next) => {
            next.kind != Kind::Str
                && !matches!(
                    next.text(src),
                    b"(" | b"=" | b"." | b":" | b"[" | b"," | b"{"
                )
        }
    }
}

/// How much of a line the recogniser reads. A line written by hand (or by a model) is
/// far shorter; a generated one-line megabyte gets its hint from its start, and the run
/// pipeline, which calls this inside the run's deadline, never pays for more.
const MAX_SCANNED: usize = 4096;

/// The text of 1-based `line`, without its newline, cut to [`MAX_SCANNED`] bytes.
fn line_text(source: &[u8], line: u32) -> Option<&[u8]> {
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    let text = source.split(|&b| b == b'\n').nth(index)?;
    Some(&text[..text.len().min(MAX_SCANNED)])
}

/// `X` of `near 'X'` in Lua's message, or the first `` `X` `` in full_moon's.
fn near_token(message: &str) -> Option<&str> {
    let rest = match message.split_once("near ") {
        Some((_, rest)) => rest,
        None => &message[message.find('`')?..],
    };
    let quote = rest.chars().next()?;
    if quote != '\'' && quote != '`' {
        return None;
    }
    let inner = &rest[1..];
    let end = inner.find(quote)?;
    Some(&inner[..end]).filter(|t| !t.is_empty())
}

/// The hint for token `i`, if it is another language's spelling. `on_error_line`: the
/// error is on this line, so plain names (`continue`) may be what broke it.
fn foreign(src: &[u8], tokens: &[Token], i: usize, on_error_line: bool) -> Option<String> {
    let tok = tokens.get(i)?;
    let next = tokens.get(i + 1).map(|t| t.text(src));
    let hint = match tok.kind {
        Kind::Sym("!=" | "!==") => "Lua writes 'not equal' as `~=`".to_string(),
        Kind::Sym("===") => "Lua compares with `==`".to_string(),
        Kind::Sym("!") => "Lua's negation is the keyword `not` (`not x`)".to_string(),
        Kind::Sym("&&") => "Lua's logical and is the keyword `and`".to_string(),
        Kind::Sym("||") => "Lua's logical or is the keyword `or`".to_string(),
        Kind::Sym("?") => {
            "Lua has no `? :` operator: write `cond and a or b` (when `a` is neither nil nor \
             false), or an if statement"
                .to_string()
        }
        Kind::Sym(op @ ("+=" | "-=" | "*=" | "/=" | "%=" | "^=" | "..=")) => {
            let target = i
                .checked_sub(1)
                .and_then(|p| tokens.get(p))
                .filter(|t| t.kind == Kind::Name)
                .map_or("x".to_string(), |t| {
                    String::from_utf8_lossy(t.text(src)).into_owned()
                });
            let bin = &op[..op.len() - 1];
            format!("Lua has no compound assignment: write `{target} = {target} {bin} ...`")
        }
        Kind::Sym("++") => {
            let target = i
                .checked_sub(1)
                .and_then(|p| tokens.get(p))
                .filter(|t| t.kind == Kind::Name)
                .or_else(|| tokens.get(i + 1).filter(|t| t.kind == Kind::Name))
                .map_or("x".to_string(), |t| {
                    String::from_utf8_lossy(t.text(src)).into_owned()
                });
            format!("Lua has no `++`: write `{target} = {target} + 1`")
        }
        // `//` is integer division; as the first token of a line, or before prose, it is
        // a comment from C or JavaScript.
        Kind::Sym("//") if on_error_line && (i == 0 || prose_follows(src, tokens, i + 1)) => {
            "Lua comments start with `--` (`//` is integer division)".to_string()
        }
        Kind::Name if on_error_line => match tok.text(src) {
            b"continue" if continue_statement(src, tokens, i) => {
                "Lua has no `continue`: put `goto continue` here and `::continue::` just before \
                 the loop's `end`, or restructure with `if`"
                    .to_string()
            }
            b"null" | b"undefined" => foreign_name("null")?.to_string(),
            b"elif" | b"elsif" => "Lua writes `elseif`".to_string(),
            b"var" | b"let" | b"const" if next.is_some() => {
                "Lua declares variables with `local` (`local x = 1`)".to_string()
            }
            b"def" | b"fn" | b"func" => {
                "Lua defines functions with `function name(...) ... end`".to_string()
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(hint)
}

/// True when the tokens from `i` on read like words of a sentence (two names in a row).
fn prose_follows(src: &[u8], tokens: &[Token], i: usize) -> bool {
    let name = |j: usize| tokens.get(j).is_some_and(|t| t.kind == Kind::Name);
    let _ = src;
    name(i) && name(i + 1)
}

/// Code after `return` in the same block: Lua reports the token after the return
/// statement (`'end' expected near 'print'`), full_moon the return itself (`expected
/// `end` to close function body block`); neither says why.
fn after_return(lines: &SourceLines<'_>, line: u32, message: &str) -> Option<String> {
    if !message.contains("expected") {
        return None;
    }
    let first_is_closer = |text: &[u8]| {
        Lexer::new(text)
            .next()
            .is_none_or(|t| matches!(t.text(text), b"end" | b"else" | b"elseif" | b"until"))
    };
    let has_return =
        |text: &[u8]| Lexer::new(text).any(|t| t.kind == Kind::Name && t.text(text) == b"return");
    let here = lines.line(line)?;
    let before = line.checked_sub(1).and_then(|l| lines.line(l));
    let after = lines.line(line + 1);
    let code_after_return = (before.is_some_and(has_return) && !first_is_closer(here))
        || (has_return(here) && after.is_some_and(|a| !first_is_closer(a)));
    code_after_return.then(|| {
        "`return` must be the last statement of its block: code after it never runs; to \
         return early, write `do return end`"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(source: &str, line: u32, message: &str) -> String {
        syntax_hint(source.as_bytes(), Some(line), message).unwrap_or_default()
    }

    #[test]
    fn other_languages_operators() {
        let h = hint(
            "local a = 1\nif a != 2 then end",
            2,
            "'then' expected near '!'",
        );
        assert!(h.contains("`~=`"), "{h}");
        let h = hint("count += 1", 1, "syntax error near '+'");
        assert_eq!(
            h,
            "Lua has no compound assignment: write `count = count + ...`"
        );
        assert!(hint("s ..= 'x'", 1, "syntax error near '..'").contains("`s = s .. ...`"));
        assert!(hint("i++", 1, "syntax error near '+'").contains("`i = i + 1`"));
        assert!(hint("if a && b then end", 1, "x").contains("`and`"));
        assert!(hint("if a || b then end", 1, "x").contains("`or`"));
        assert!(hint("if !a then end", 1, "unexpected symbol near '!'").contains("`not`"));
        assert!(hint("x = a ? 1 : 2", 1, "x").contains("and a or b"));
        assert!(hint("if a === b then end", 1, "x").contains("`==`"));
    }

    #[test]
    fn other_languages_words() {
        let src = "for i = 1, 3 do\n  if i == 2 then continue end\nend";
        assert!(hint(src, 2, "syntax error near 'end'").contains("goto continue"));
        // `continue` as a name is valid Lua: no hint.
        assert_eq!(hint("continue(1) x x", 1, "syntax error near 'x'"), "");
        assert!(hint("// add them\nx = 1", 1, "unexpected symbol near '/'").contains("`--`"));
        assert!(hint("x = 1 // set the value", 1, "x").contains("`--`"));
        // Integer division is not a comment.
        assert_eq!(hint("x = a // 2 )", 1, "x"), "");
        assert!(hint("if x == null then", 1, "x").contains("`nil`"));
        assert!(hint("elif x then", 1, "x").contains("`elseif`"));
        assert!(hint("let x = 1", 1, "syntax error near 'x'").contains("`local`"));
    }

    #[test]
    fn the_token_named_by_the_message_comes_first() {
        let h = hint("x += a != b", 1, "syntax error near '!='");
        assert!(h.contains("`~=`"), "{h}");
        // full_moon's quoting.
        let h = hint("x += a != b", 1, "unexpected token `!=`");
        assert!(h.contains("`~=`"), "{h}");
    }

    #[test]
    fn code_after_return() {
        let src = "local function f()\n  return 1\n  print('after')\nend";
        let h = hint(
            src,
            3,
            "'end' expected (to close 'function' at line 1) near 'print'",
        );
        assert!(h.contains("do return end"), "{h}");
        // full_moon reports the return itself.
        let h = hint(src, 2, "expected `end` to close function body block");
        assert!(h.contains("do return end"), "{h}");
        assert_eq!(hint("return 1\nend", 2, "'<eof>' expected near 'end'"), "");
    }

    #[test]
    fn nothing_to_say() {
        assert_eq!(hint("x = = 1", 1, "unexpected symbol near '='"), "");
        assert_eq!(hint("x = 1", 9, "whatever"), "");
        assert_eq!(
            syntax_hint(b"a != b", None, "x").unwrap_or_default(),
            "Lua writes 'not equal' as `~=`"
        );
        assert_eq!(syntax_hint(b"x = a // 2", None, "x"), None);
        // Inside strings and comments, nothing is foreign.
        assert_eq!(hint("x = 'a != b' -- c += 1", 1, "x"), "");
    }

    #[test]
    fn repairs_keep_positions() {
        let src = "if a != b && !c then x += 1 end\n// note it here\nfor i=1,2 do continue end";
        let (fixed, repairs) = repair(src).unwrap();
        assert_eq!(fixed.len(), src.len());
        assert_eq!(
            fixed,
            "if a ~= b or ~c then x =  1 end\n-- note it here\nfor i=1,2 do do end   end"
        );
        let texts: Vec<&str> = repairs.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["!=", "&&", "!", "+=", "//", "continue"]);
        assert_eq!(repair("x = a // 2"), None);
        assert_eq!(repair("continue 'x' continue(1)"), None);
    }

    #[test]
    fn continue_on_the_line_before() {
        let src = "for i = 1, 2 do\n  continue\nend";
        assert!(hint(src, 3, "syntax error near 'end'").contains("goto continue"));
    }

    #[test]
    fn a_huge_line_costs_little() {
        let braces = format!("return {}{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(hint(&braces, 1, "C stack overflow near '{'"), "");
        let long = format!("x = 1 {}!= 2", " ".repeat(10_000));
        // Past what is read: no hint rather than a slow one.
        assert_eq!(hint(&long, 1, "x"), "");
    }

    #[test]
    fn foreign_names() {
        assert!(foreign_name("null").is_some_and(|h| h.contains("nil")));
        assert_eq!(foreign_name("print"), None);
    }
}
