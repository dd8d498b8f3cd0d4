//! Metered replacement for Lua 5.4's pattern-matching functions
//! (`string.find`, `string.match`, `string.gmatch`, `string.gsub`).
//!
//! The stock implementations in `lstrlib.c` run entirely in C and can
//! backtrack for an unbounded time (for example
//! `string.find(("a"):rep(40), ("a*"):rep(40) .. "b")`). Lua hooks never fire
//! inside a C function, so a wall-clock deadline cannot interrupt them.
//!
//! This module is a faithful port of the Lua 5.4.9 matcher (`match`,
//! `max_expand`, `min_expand`, captures, `%b`, `%f`, back references,
//! anchors, `MAXCCALLS`, `LUA_MAXCAPTURES`, `lmemfind`, ...) to safe Rust over
//! byte slices, with a step counter: every [`CHECK_INTERVAL`] steps it calls
//! [`crate::vm::native_charge`] (which also charges the steps to the instruction
//! budget, one instruction each), and when that returns `Some(msg)` the
//! match is abandoned and a Lua error carrying exactly `msg` is raised.
//!
//! A *step* is one iteration of the matcher's main loop (one pattern item
//! tried at one subject position) or one subject byte examined by a scanning
//! loop (repetition scans, `%b`, back-reference comparison, plain `find`
//! search, the first-item skip described below) or one byte of a `gsub`
//! replacement string expanded.
//!
//! Results and error messages are identical to the C functions. Errors raised
//! by the matcher are prefixed with the caller's position exactly as
//! `luaL_error` does; the checkpoint message is raised verbatim.
//!
//! One optimisation goes beyond the C code without changing behaviour: when
//! the pattern's first item is a single-character class that must match at
//! least once (no `*`, `?` or `-` suffix), unanchored searches skip directly
//! to the next subject position where that item matches, since `match` would
//! fail immediately (and without any error) at every position in between.
//!
//! The Lua-facing glue uses the raw C API. Lua errors are `longjmp`s, so the
//! glue never keeps a value with a destructor alive in a frame while calling a
//! Lua API function that can raise; all matcher state is plain `Copy` data
//! on the stack and `gsub` accumulates its result in a `luaL_Buffer`.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_char, c_int};

use mlua::ffi;

/// Maximum recursion depth of `match` (lstrlib's `MAXCCALLS`).
const MAXCCALLS: u32 = 200;
/// Maximum number of captures in a pattern (`LUA_MAXCAPTURES`).
const MAXCAPTURES: usize = 32;
/// `len` value of a capture that has been opened but not closed yet.
const CAP_UNFINISHED: isize = -1;
/// `len` value of a position capture `()`.
const CAP_POSITION: isize = -2;
/// The pattern escape character.
const L_ESC: u8 = b'%';
/// Characters that make a pattern "special" for `string.find`.
const SPECIALS: &[u8] = b"^$*+?.([%-";
/// Number of steps between two calls of the native checkpoint.
pub(crate) const CHECK_INTERVAL: isize = 1024;

// ---------------------------------------------------------------------------
// Character classes (C locale `ctype.h`, as Lua sees it in a Rust process).
// ---------------------------------------------------------------------------

const CT_ALPHA: u16 = 1 << 0;
const CT_CNTRL: u16 = 1 << 1;
const CT_DIGIT: u16 = 1 << 2;
const CT_GRAPH: u16 = 1 << 3;
const CT_LOWER: u16 = 1 << 4;
const CT_PUNCT: u16 = 1 << 5;
const CT_SPACE: u16 = 1 << 6;
const CT_UPPER: u16 = 1 << 7;
const CT_ALNUM: u16 = 1 << 8;
const CT_XDIGIT: u16 = 1 << 9;
const CT_ZERO: u16 = 1 << 10;

const fn ctype_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut f = 0u16;
        if c.is_ascii_alphabetic() {
            f |= CT_ALPHA;
        }
        if c.is_ascii_control() {
            f |= CT_CNTRL;
        }
        if c.is_ascii_digit() {
            f |= CT_DIGIT;
        }
        if c.is_ascii_graphic() {
            f |= CT_GRAPH;
        }
        if c.is_ascii_lowercase() {
            f |= CT_LOWER;
        }
        if c.is_ascii_punctuation() {
            f |= CT_PUNCT;
        }
        // C's isspace includes '\v' (0x0b), unlike u8::is_ascii_whitespace.
        if matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            f |= CT_SPACE;
        }
        if c.is_ascii_uppercase() {
            f |= CT_UPPER;
        }
        if c.is_ascii_alphanumeric() {
            f |= CT_ALNUM;
        }
        if c.is_ascii_hexdigit() {
            f |= CT_XDIGIT;
        }
        if c == 0 {
            f |= CT_ZERO;
        }
        t[i] = f;
        i += 1;
    }
    t
}

static CTYPE: [u16; 256] = ctype_table();

/// lstrlib's `match_class`: does byte `c` belong to class `%cl`?
#[inline]
fn match_class(c: u8, cl: u8) -> bool {
    // `cl | 0x20` only lower-cases letters in the list below: the only bytes
    // mapping to a lowercase letter this way are that letter and its
    // uppercase form.
    let bit = match cl | 0x20 {
        b'a' => CT_ALPHA,
        b'c' => CT_CNTRL,
        b'd' => CT_DIGIT,
        b'g' => CT_GRAPH,
        b'l' => CT_LOWER,
        b'p' => CT_PUNCT,
        b's' => CT_SPACE,
        b'u' => CT_UPPER,
        b'w' => CT_ALNUM,
        b'x' => CT_XDIGIT,
        b'z' => CT_ZERO,
        _ => return cl == c,
    };
    let res = CTYPE[usize::from(c)] & bit != 0;
    // `cl` is a letter here: lowercase means the class, uppercase its
    // complement.
    if cl & 0x20 != 0 {
        res
    } else {
        !res
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error raised while matching. Every variant except `Interrupted` and
/// `Internal` corresponds to one `luaL_error` call in lstrlib.c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatchError {
    /// "pattern too complex" (matchdepth exhausted).
    TooComplex,
    /// "too many captures".
    TooManyCaptures,
    /// "invalid capture index %N".
    InvalidCaptureIndex(i32),
    /// "invalid pattern capture".
    InvalidPatternCapture,
    /// "malformed pattern (ends with '%')".
    EndsWithEscape,
    /// "malformed pattern (missing ']')".
    MissingBracket,
    /// "malformed pattern (missing arguments to '%b')".
    MissingBalanceArgs,
    /// "missing '[' after '%f' in pattern".
    MissingFrontierBracket,
    /// "unfinished capture".
    UnfinishedCapture,
    /// "invalid use of '%' in replacement string".
    InvalidReplacement,
    /// The native checkpoint asked to stop; the message is in the [`Meter`].
    Interrupted,
    /// A bug in this module (a caught panic); never expected.
    Internal,
}

impl MatchError {
    /// The error text as a static prefix plus an optional integer suffix,
    /// exactly as lstrlib.c formats it.
    fn parts(self) -> (&'static str, Option<i32>) {
        match self {
            MatchError::TooComplex => ("pattern too complex", None),
            MatchError::TooManyCaptures => ("too many captures", None),
            MatchError::InvalidCaptureIndex(n) => ("invalid capture index %", Some(n)),
            MatchError::InvalidPatternCapture => ("invalid pattern capture", None),
            MatchError::EndsWithEscape => ("malformed pattern (ends with '%')", None),
            MatchError::MissingBracket => ("malformed pattern (missing ']')", None),
            MatchError::MissingBalanceArgs => {
                ("malformed pattern (missing arguments to '%b')", None)
            }
            MatchError::MissingFrontierBracket => ("missing '[' after '%f' in pattern", None),
            MatchError::UnfinishedCapture => ("unfinished capture", None),
            MatchError::InvalidReplacement => ("invalid use of '%' in replacement string", None),
            MatchError::Interrupted => ("interrupted", None),
            MatchError::Internal => ("internal error in pattern matcher", None),
        }
    }
}

impl std::fmt::Display for MatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (msg, num) = self.parts();
        f.write_str(msg)?;
        if let Some(n) = num {
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

type MResult = Result<Option<usize>, MatchError>;

// ---------------------------------------------------------------------------
// Step meter
// ---------------------------------------------------------------------------

/// Step counter that calls the native checkpoint every [`CHECK_INTERVAL`]
/// steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meter {
    budget: isize,
    interrupt: &'static str,
}

impl Meter {
    pub(crate) const fn new() -> Self {
        Meter {
            budget: CHECK_INTERVAL,
            interrupt: "",
        }
    }

    /// The message returned by the checkpoint that interrupted the match.
    pub(crate) fn interrupt_message(&self) -> &'static str {
        self.interrupt
    }

    /// Count one step.
    #[inline(always)]
    fn tick(&mut self) -> Result<(), MatchError> {
        self.budget -= 1;
        if self.budget <= 0 {
            return self.checkpoint();
        }
        Ok(())
    }

    /// Count `n` steps at once.
    #[inline(always)]
    fn charge(&mut self, n: usize) -> Result<(), MatchError> {
        let n = isize::try_from(n).unwrap_or(isize::MAX);
        self.budget = self.budget.saturating_sub(n);
        if self.budget <= 0 {
            return self.checkpoint();
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn checkpoint(&mut self) -> Result<(), MatchError> {
        // Steps since the last checkpoint (the budget is <= 0 here), charged to the
        // instruction budget at one instruction each, so `--instructions` ends runaway
        // backtracking too, not only the deadline.
        let spent = CHECK_INTERVAL.saturating_sub(self.budget).unsigned_abs() as u64;
        self.budget = CHECK_INTERVAL;
        match crate::vm::native_charge(spent) {
            Some(msg) => {
                self.interrupt = msg;
                Err(MatchError::Interrupted)
            }
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/// lstrlib's `posrelatI`: translate a relative initial position (negative
/// means back from the end) and clip it to `[1, inf)`.
pub(crate) fn posrelat(pos: i64, len: usize) -> usize {
    if pos > 0 {
        usize::try_from(pos).unwrap_or(usize::MAX)
    } else if pos == 0 {
        1
    } else {
        // len + pos + 1, computed without overflow; clipped to 1 when
        // pos < -len.
        let back = pos.unsigned_abs();
        match usize::try_from(back) {
            Ok(back) if back <= len => len - back + 1,
            _ => 1,
        }
    }
}

/// lstrlib's `nospecials`: true when the pattern has no magic characters.
pub(crate) fn nospecials(p: &[u8]) -> bool {
    !p.iter().any(|c| SPECIALS.contains(c))
}

/// Position of the first `c` in `hay`. Blocks of 64 bytes are first tested
/// with a branch-free lane-wise reduction (SIMD compares once compiled);
/// the block that contains `c`, and the tail, are searched a word at a time.
#[inline]
fn memchr(c: u8, hay: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut blocks = hay.chunks_exact(BLOCK);
    let mut off = 0usize;
    for block in &mut blocks {
        if let Ok(arr) = <&[u8; BLOCK]>::try_from(block) {
            let mut acc = [0u8; 16];
            #[allow(clippy::needless_range_loop)] // this form vectorises reliably
            for i in 0..16 {
                acc[i] = u8::from(arr[i] == c)
                    | u8::from(arr[i + 16] == c)
                    | u8::from(arr[i + 32] == c)
                    | u8::from(arr[i + 48] == c);
            }
            if u128::from_ne_bytes(acc) != 0 {
                return memchr_words(c, block).map(|i| off + i);
            }
        }
        off += BLOCK;
    }
    memchr_words(c, blocks.remainder()).map(|i| off + i)
}

/// [`memchr`] for short slices: 8 bytes at a time with the classic
/// "has zero byte" test (exact for the lowest zero byte), then bytewise.
#[inline(never)]
fn memchr_words(c: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let rep = LO.wrapping_mul(u64::from(c));
    let mut words = hay.chunks_exact(8);
    let mut off = 0usize;
    for word in &mut words {
        if let Ok(bytes) = <[u8; 8]>::try_from(word) {
            let w = u64::from_le_bytes(bytes) ^ rep;
            let z = w.wrapping_sub(LO) & !w & HI;
            if z != 0 {
                return Some(off + (z.trailing_zeros() / 8) as usize);
            }
        }
        off += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == c)
        .map(|i| off + i)
}

/// Number of subject positions scanned between checkpoint checks in the
/// plain and first-item searches.
const SCAN_CHUNK: usize = CHECK_INTERVAL as usize;

/// lstrlib's `lmemfind`: first occurrence of `needle` in `hay`, metered (one
/// step per position skipped or candidate examined).
pub(crate) fn lmemfind(meter: &mut Meter, hay: &[u8], needle: &[u8]) -> MResult {
    let Some((&first, rest)) = needle.split_first() else {
        return Ok(Some(0)); // empty strings are everywhere
    };
    if needle.len() > hay.len() {
        return Ok(None);
    }
    let stop = hay.len() - needle.len() + 1; // candidate starts are < stop
    let mut pos = 0usize;
    while pos < stop {
        let end = stop.min(pos.saturating_add(SCAN_CHUNK));
        let window = hay.get(pos..end).unwrap_or(&[]);
        match memchr(first, window) {
            Some(i) => {
                let at = pos + i;
                meter.charge(i + 1 + (rest.len() >> 4))?;
                if hay.get(at + 1..at + needle.len()) == Some(rest) {
                    return Ok(Some(at));
                }
                pos = at + 1;
            }
            None => {
                meter.charge(end - pos)?;
                pos = end;
            }
        }
    }
    Ok(None)
}

/// lstrlib's `classend` over a pattern slice: index just past the single
/// character class starting at `p` (which must be `< pat.len()`).
fn classend(pat: &[u8], p: usize) -> Result<usize, MatchError> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let plen = pat.len();
    let c = at(p);
    let mut p = p + 1;
    match c {
        L_ESC => {
            if p >= plen {
                return Err(MatchError::EndsWithEscape);
            }
            Ok(p + 1)
        }
        b'[' => {
            if at(p) == b'^' {
                p += 1;
            }
            loop {
                // look for a ']'
                if p >= plen {
                    return Err(MatchError::MissingBracket);
                }
                let cc = at(p);
                p += 1;
                if cc == L_ESC && p < plen {
                    p += 1; // skip escapes (e.g. '%]')
                }
                if at(p) == b']' {
                    break;
                }
            }
            Ok(p + 1)
        }
        _ => Ok(p),
    }
}

// ---------------------------------------------------------------------------
// The matcher
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Capture {
    init: usize,
    len: isize,
}

/// A capture value as `get_onecapture` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cap<'a> {
    /// A substring of the subject.
    Str(&'a [u8]),
    /// A position capture (1-based).
    Pos(usize),
}

/// What unanchored searches may skip over (see the module docs).
#[derive(Clone, Copy, Debug)]
enum FirstItem {
    /// No skipping possible.
    None,
    /// The first item is this literal byte.
    Lit(u8),
    /// The first item is the class `pat[0..end]` (`%x` or `[...]`).
    Class(usize),
}

/// lstrlib's `MatchState`, over byte slices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatchState<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    matchdepth: u32,
    level: usize,
    /// Computed on the first unanchored search.
    first: Option<FirstItem>,
    pub(crate) meter: Meter,
    capture: [Capture; MAXCAPTURES],
}

impl<'a> MatchState<'a> {
    /// `prepstate`: `pat` must already have its anchor `^` removed where the
    /// caller treats it as an anchor.
    pub(crate) fn new(src: &'a [u8], pat: &'a [u8]) -> Self {
        MatchState {
            src,
            pat,
            matchdepth: MAXCCALLS,
            level: 0,
            first: None,
            meter: Meter::new(),
            capture: [Capture { init: 0, len: 0 }; MAXCAPTURES],
        }
    }

    fn first_item(pat: &[u8]) -> FirstItem {
        let Some(&c) = pat.first() else {
            return FirstItem::None;
        };
        match c {
            b'(' | b')' | b'.' => return FirstItem::None,
            b'$' if pat.len() == 1 => return FirstItem::None,
            L_ESC if matches!(pat.get(1), None | Some(b'b' | b'f' | b'0'..=b'9')) => {
                return FirstItem::None
            }
            _ => {}
        }
        let Ok(ep) = classend(pat, 0) else {
            return FirstItem::None; // let `match` raise the error
        };
        if matches!(pat.get(ep), Some(b'*' | b'?' | b'-')) {
            return FirstItem::None; // item may match the empty string
        }
        match c {
            L_ESC | b'[' => FirstItem::Class(ep),
            _ => FirstItem::Lit(c),
        }
    }

    /// The subject string.
    pub(crate) fn subject(&self) -> &'a [u8] {
        self.src
    }

    /// Number of captures (finished or not) of the last match.
    pub(crate) fn level(&self) -> usize {
        self.level
    }

    /// `reprepstate`.
    #[inline]
    fn reprep(&mut self) {
        self.matchdepth = MAXCCALLS;
        self.level = 0;
    }

    #[inline(always)]
    fn p_at(&self, i: usize) -> u8 {
        // Past the end reads the terminating '\0', like C does.
        self.pat.get(i).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn s_at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// Search for a match starting at some position in `start..=len` (only
    /// at `start` when `anchor`), ignoring matches that end at `lastmatch`.
    /// Returns the match's `(start, end)`; the captures stay in `self`.
    ///
    /// This is the loop shared by `str_find_aux`, `gmatch_aux` and
    /// `str_gsub` (where a match ending at `lastmatch` makes the loop skip
    /// one character).
    pub(crate) fn search(
        &mut self,
        start: usize,
        lastmatch: Option<usize>,
        anchor: bool,
    ) -> Result<Option<(usize, usize)>, MatchError> {
        let len = self.src.len();
        if anchor {
            if start > len {
                return Ok(None);
            }
            self.reprep();
            return Ok(match self.do_match(start, 0)? {
                Some(e) if Some(e) != lastmatch => Some((start, e)),
                _ => None,
            });
        }
        let first = match self.first {
            Some(first) => first,
            None => *self.first.insert(Self::first_item(self.pat)),
        };
        let mut s = start;
        while s <= len {
            match self.next_candidate(first, s)? {
                Some(c) => s = c,
                None => return Ok(None),
            }
            self.reprep();
            if let Some(e) = self.do_match(s, 0)? {
                if Some(e) != lastmatch {
                    return Ok(Some((s, e)));
                }
            }
            s += 1;
        }
        Ok(None)
    }

    /// First position `>= from` where a match could start: `from` itself
    /// unless the pattern's first item is a mandatory single-character
    /// class, in which case the first position where that item matches
    /// (`None` if there is none; `match` fails at the end of the subject).
    #[inline]
    fn next_candidate(
        &mut self,
        first: FirstItem,
        from: usize,
    ) -> Result<Option<usize>, MatchError> {
        match first {
            FirstItem::None => Ok(Some(from)),
            FirstItem::Lit(c) => {
                let len = self.src.len();
                let mut pos = from;
                while pos < len {
                    let end = len.min(pos.saturating_add(SCAN_CHUNK));
                    let window = self.src.get(pos..end).unwrap_or(&[]);
                    if let Some(i) = memchr(c, window) {
                        self.meter.charge(i)?;
                        return Ok(Some(pos + i));
                    }
                    self.meter.charge(end - pos)?;
                    pos = end;
                }
                Ok(None)
            }
            FirstItem::Class(ep) => {
                let len = self.src.len();
                let mut pos = from;
                while pos < len {
                    let end = len.min(pos.saturating_add(SCAN_CHUNK));
                    let window = self.src.get(pos..end).unwrap_or(&[]);
                    if let Some(i) = window.iter().position(|&c| self.single_class(c, 0, ep)) {
                        self.meter.charge(i)?;
                        return Ok(Some(pos + i));
                    }
                    self.meter.charge(end - pos)?;
                    pos = end;
                }
                Ok(None)
            }
        }
    }

    /// `get_onecapture`: the `i`-th capture of the last match, or the whole
    /// match `s..e` when there are no captures and `i == 0`.
    pub(crate) fn get_onecapture(
        &self,
        i: usize,
        s: usize,
        e: usize,
    ) -> Result<Cap<'a>, MatchError> {
        if i >= self.level {
            if i != 0 {
                return Err(MatchError::InvalidCaptureIndex(
                    i32::try_from(i + 1).unwrap_or(i32::MAX),
                ));
            }
            return self.src.get(s..e).map(Cap::Str).ok_or(MatchError::Internal);
        }
        let cap = self.capture.get(i).ok_or(MatchError::Internal)?;
        match cap.len {
            CAP_UNFINISHED => Err(MatchError::UnfinishedCapture),
            CAP_POSITION => Ok(Cap::Pos(cap.init + 1)),
            len => {
                let len = usize::try_from(len).map_err(|_| MatchError::Internal)?;
                self.src
                    .get(cap.init..cap.init + len)
                    .map(Cap::Str)
                    .ok_or(MatchError::Internal)
            }
        }
    }

    /// `match`: try to match `pat[p..]` at subject position `s`; returns the
    /// end of the match.
    fn do_match(&mut self, s: usize, p: usize) -> MResult {
        if self.matchdepth == 0 {
            return Err(MatchError::TooComplex);
        }
        self.matchdepth -= 1;
        let res = self.match_body(s, p);
        self.matchdepth += 1;
        res
    }

    fn match_body(&mut self, mut s: usize, mut p: usize) -> MResult {
        loop {
            self.meter.tick()?;
            let Some(&pc) = self.pat.get(p) else {
                return Ok(Some(s)); // end of pattern
            };
            match pc {
                b'(' => {
                    return if self.p_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => {
                    return Ok(if s == self.src.len() { Some(s) } else { None });
                }
                L_ESC => match self.p_at(p + 1) {
                    b'b' => match self.matchbalance(s, p + 2)? {
                        Some(ns) => {
                            s = ns;
                            p += 4;
                            continue;
                        }
                        None => return Ok(None),
                    },
                    b'f' => {
                        p += 2;
                        if self.p_at(p) != b'[' {
                            return Err(MatchError::MissingFrontierBracket);
                        }
                        let ep = classend(self.pat, p)?;
                        let previous = if s == 0 { 0 } else { self.s_at(s - 1) };
                        let ec = ep.saturating_sub(1);
                        if !self.matchbracketclass(previous, p, ec)
                            && self.matchbracketclass(self.s_at(s), p, ec)
                        {
                            p = ep;
                            continue;
                        }
                        return Ok(None);
                    }
                    d @ b'0'..=b'9' => match self.match_capture(s, d)? {
                        Some(ns) => {
                            s = ns;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    },
                    _ => {} // default
                },
                _ => {} // default
            }
            // default: pattern class plus optional suffix
            let ep = classend(self.pat, p)?;
            let epc = self.p_at(ep);
            if !self.singlematch(s, p, ep) {
                if matches!(epc, b'*' | b'?' | b'-') {
                    p = ep + 1; // accept empty
                    continue;
                }
                return Ok(None);
            }
            match epc {
                b'?' => {
                    if let Some(res) = self.do_match(s + 1, ep + 1)? {
                        return Ok(Some(res));
                    }
                    p = ep + 1;
                }
                b'+' => return self.max_expand(s + 1, p, ep),
                b'*' => return self.max_expand(s, p, ep),
                b'-' => return self.min_expand(s, p, ep),
                _ => {
                    s += 1;
                    p = ep;
                }
            }
        }
    }

    /// `matchbracketclass`: `p` is the '[' and `ec` the closing ']'.
    fn matchbracketclass(&self, c: u8, p: usize, ec: usize) -> bool {
        let mut p = p;
        let mut sig = true;
        if self.p_at(p + 1) == b'^' {
            sig = false;
            p += 1; // skip the '^'
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            let pc = self.p_at(p);
            if pc == L_ESC {
                p += 1;
                if match_class(c, self.p_at(p)) {
                    return sig;
                }
            } else if self.p_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if pc <= c && c <= self.p_at(p) {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
        !sig
    }

    /// `singlematch` for a subject byte that exists.
    #[inline(always)]
    fn single_class(&self, c: u8, p: usize, ep: usize) -> bool {
        match self.p_at(p) {
            b'.' => true,
            L_ESC => match_class(c, self.p_at(p + 1)),
            b'[' => self.matchbracketclass(c, p, ep.saturating_sub(1)),
            pc => pc == c,
        }
    }

    #[inline(always)]
    fn singlematch(&self, s: usize, p: usize, ep: usize) -> bool {
        match self.src.get(s) {
            Some(&c) => self.single_class(c, p, ep),
            None => false,
        }
    }

    /// `matchbalance` (`%bxy`); `p` points at `x`.
    fn matchbalance(&mut self, s: usize, p: usize) -> MResult {
        if p + 1 >= self.pat.len() {
            return Err(MatchError::MissingBalanceArgs);
        }
        let b = self.p_at(p);
        let e = self.p_at(p + 1);
        if self.s_at(s) != b {
            return Ok(None);
        }
        let rest = self.src.get(s + 1..).unwrap_or(&[]);
        let mut cont: usize = 1;
        for (k, &c) in rest.iter().enumerate() {
            if c == e {
                cont -= 1;
                if cont == 0 {
                    self.meter.charge(k)?;
                    return Ok(Some(s + 1 + k + 1));
                }
            } else if c == b {
                cont += 1;
            }
        }
        self.meter.charge(rest.len())?;
        Ok(None) // string ends out of balance
    }

    /// Length of the longest run of items `pat[p..ep]` starting at `s`.
    #[inline]
    fn count_run(&self, s: usize, p: usize, ep: usize) -> usize {
        let rest = self.src.get(s..).unwrap_or(&[]);
        match self.p_at(p) {
            b'.' => rest.len(),
            L_ESC => {
                let cl = self.p_at(p + 1);
                rest.iter().take_while(|&&c| match_class(c, cl)).count()
            }
            b'[' => {
                let ec = ep.saturating_sub(1);
                rest.iter()
                    .take_while(|&&c| self.matchbracketclass(c, p, ec))
                    .count()
            }
            pc => rest.iter().take_while(|&&c| c == pc).count(),
        }
    }

    /// `max_expand`: greedy repetition of `pat[p..ep]` from `s`.
    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> MResult {
        let mut i = self.count_run(s, p, ep);
        self.meter.charge(i)?;
        // keeps trying to match with the maximum repetitions
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1; // else didn't match; reduce 1 repetition to try again
        }
    }

    /// `min_expand`: lazy repetition of `pat[p..ep]` from `s`.
    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> MResult {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if self.singlematch(s, p, ep) {
                s += 1; // try with one more repetition
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> MResult {
        let level = self.level;
        let Some(slot) = self.capture.get_mut(level) else {
            return Err(MatchError::TooManyCaptures);
        };
        *slot = Capture { init: s, len: what };
        self.level = level + 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level = level; // undo capture
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> MResult {
        let l = self.capture_to_close()?;
        let Some(cap) = self.capture.get_mut(l) else {
            return Err(MatchError::Internal);
        };
        cap.len = isize::try_from(s.saturating_sub(cap.init)).map_err(|_| MatchError::Internal)?;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            if let Some(cap) = self.capture.get_mut(l) {
                cap.len = CAP_UNFINISHED; // undo capture
            }
        }
        Ok(res)
    }

    fn capture_to_close(&self) -> Result<usize, MatchError> {
        self.capture
            .get(..self.level)
            .and_then(|caps| caps.iter().rposition(|c| c.len == CAP_UNFINISHED))
            .ok_or(MatchError::InvalidPatternCapture)
    }

    /// `check_capture`: `lc` is the digit character after '%'.
    fn check_capture(&self, lc: u8) -> Result<usize, MatchError> {
        let l = i32::from(lc) - i32::from(b'1');
        let invalid = Err(MatchError::InvalidCaptureIndex(l + 1));
        let Ok(idx) = usize::try_from(l) else {
            return invalid;
        };
        if idx >= self.level {
            return invalid;
        }
        match self.capture.get(idx) {
            Some(c) if c.len != CAP_UNFINISHED => Ok(idx),
            _ => invalid,
        }
    }

    /// `match_capture`: back reference `%1`-`%9`.
    fn match_capture(&mut self, s: usize, lc: u8) -> MResult {
        let l = self.check_capture(lc)?;
        let Some(cap) = self.capture.get(l).copied() else {
            return Err(MatchError::Internal);
        };
        // A position capture has length (size_t)-2 in C: never fits.
        let Ok(len) = usize::try_from(cap.len) else {
            return Ok(None);
        };
        self.meter.charge(len)?;
        let captured = self.src.get(cap.init..cap.init + len);
        let here = self.src.get(s..s.saturating_add(len));
        match (captured, here) {
            (Some(a), Some(b)) if a == b => Ok(Some(s + len)),
            _ => Ok(None),
        }
    }
}

/// Run `f`, turning a panic (a bug in this module) into
/// [`MatchError::Internal`] so that it never unwinds into Lua's C frames.
/// `f` must not call the Lua API.
#[inline]
fn guard<T>(f: impl FnOnce() -> Result<T, MatchError>) -> Result<T, MatchError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(res) => res,
        Err(_) => Err(MatchError::Internal),
    }
}

// ---------------------------------------------------------------------------
// Lua glue
// ---------------------------------------------------------------------------
//
// Conventions for everything below: `l` is the `lua_State` of a running C
// function called by Lua (so the C API may be used on it, with at least
// LUA_MINSTACK free slots). None of these frames own values with destructors
// while a Lua API function that can raise an error (a longjmp) runs: all
// locals are integers, raw pointers, borrowed slices or `Copy` structs.

type State = *mut ffi::lua_State;

/// View a Lua string's bytes as a slice.
///
/// # Safety
/// `ptr` must point to `len` readable bytes that stay alive and unchanged for
/// `'a` (a Lua string anchored in a stack slot or upvalue for as long as the
/// slice is used; Lua strings are immutable and Lua's GC does not move them).
unsafe fn lua_bytes<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() {
        return &[];
    }
    // SAFETY: guaranteed by this function's contract.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// Raise `err` as a Lua error. Matcher errors get the caller's position
/// prefix, like `luaL_error`; an interruption raises the checkpoint's message
/// verbatim.
///
/// # Safety
/// See the glue conventions above.
unsafe fn raise_error(l: State, err: MatchError, interrupt: &'static str) -> ! {
    if err == MatchError::Interrupted {
        // SAFETY: `l` is a valid running state; pushing a string and raising
        // are always allowed in a C function (lua_error never returns).
        unsafe {
            ffi::lua_pushlstring(l, interrupt.as_ptr().cast(), interrupt.len());
            ffi::lua_error(l)
        }
    }
    let (msg, num) = err.parts();
    // SAFETY: as above; luaL_where pushes one string, and lua_concat joins
    // the 2 or 3 values pushed here (an integer is converted with "%d", the
    // same as luaL_error's formatting).
    unsafe {
        ffi::luaL_where(l, 1);
        ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
        match num {
            Some(n) => {
                ffi::lua_pushinteger(l, ffi::lua_Integer::from(n));
                ffi::lua_concat(l, 3);
            }
            None => ffi::lua_concat(l, 2),
        }
        ffi::lua_error(l)
    }
}

/// `push_onecapture`.
///
/// # Safety
/// See the glue conventions above; `ms.subject()` must be anchored.
unsafe fn push_onecapture(l: State, ms: &MatchState<'_>, i: usize, s: usize, e: usize) {
    match ms.get_onecapture(i, s, e) {
        // SAFETY: `bytes` borrows the anchored subject string.
        Ok(Cap::Str(bytes)) => unsafe {
            ffi::lua_pushlstring(l, bytes.as_ptr().cast(), bytes.len());
        },
        // SAFETY: pushing an integer onto a valid state.
        Ok(Cap::Pos(pos)) => unsafe {
            ffi::lua_pushinteger(
                l,
                ffi::lua_Integer::try_from(pos).unwrap_or(ffi::lua_Integer::MAX),
            );
        },
        // SAFETY: no value with a destructor is alive in this frame.
        Err(err) => unsafe { raise_error(l, err, "") },
    }
}

/// `push_captures`: `whole` is the match range for `match`/`gmatch`/`gsub`
/// (`None` for `find`, which pushes only explicit captures).
///
/// # Safety
/// See the glue conventions above; `ms.subject()` must be anchored.
unsafe fn push_captures(l: State, ms: &MatchState<'_>, whole: Option<(usize, usize)>) -> c_int {
    let nlevels = if ms.level() == 0 && whole.is_some() {
        1
    } else {
        ms.level()
    };
    let (s, e) = whole.unwrap_or((0, 0));
    // nlevels <= MAXCAPTURES, so the cast is lossless.
    let n = nlevels as c_int;
    // SAFETY: luaL_checkstack either grows the stack or raises an error.
    unsafe { ffi::luaL_checkstack(l, n, c"too many captures".as_ptr()) };
    for i in 0..nlevels {
        // SAFETY: forwarded contract; stack space was reserved above.
        unsafe { push_onecapture(l, ms, i, s, e) };
    }
    n
}

/// `str_find_aux`.
///
/// # Safety
/// See the glue conventions above.
unsafe fn str_find_aux(l: State, find: bool) -> c_int {
    let mut ls = 0usize;
    let mut lp = 0usize;
    // SAFETY: argument checks on a valid running state; the returned strings
    // stay anchored in stack slots 1 and 2 until this function returns.
    let (s, p, init_arg) = unsafe {
        let s = ffi::luaL_checklstring(l, 1, &mut ls);
        let p = ffi::luaL_checklstring(l, 2, &mut lp);
        let init_arg = ffi::luaL_optinteger(l, 3, 1);
        (lua_bytes(s, ls), lua_bytes(p, lp), init_arg)
    };
    let init = posrelat(init_arg, ls) - 1;
    if init > ls {
        // start after string's end: cannot find anything
        // SAFETY: pushing nil onto a valid state.
        unsafe { ffi::lua_pushnil(l) };
        return 1;
    }
    // SAFETY: reading argument 4 (possibly none) of a valid state.
    if find && (unsafe { ffi::lua_toboolean(l, 4) } != 0 || nospecials(p)) {
        // do a plain search
        let mut meter = Meter::new();
        let hay = s.get(init..).unwrap_or(&[]);
        match guard(|| lmemfind(&mut meter, hay, p)) {
            Ok(Some(i)) => {
                let start = init + i;
                // SAFETY: pushing integers onto a valid state (2 slots are
                // guaranteed by LUA_MINSTACK).
                unsafe {
                    ffi::lua_pushinteger(l, start as ffi::lua_Integer + 1);
                    ffi::lua_pushinteger(l, (start + lp) as ffi::lua_Integer);
                }
                return 2;
            }
            Ok(None) => {}
            // SAFETY: no value with a destructor is alive in this frame.
            Err(err) => unsafe { raise_error(l, err, meter.interrupt_message()) },
        }
    } else {
        let (anchor, pat) = match p.split_first() {
            Some((b'^', rest)) => (true, rest),
            _ => (false, p),
        };
        let mut ms = MatchState::new(s, pat);
        match guard(|| ms.search(init, None, anchor)) {
            Ok(Some((start, end))) => {
                if find {
                    // SAFETY: pushing integers, then captures of the
                    // anchored subject, onto a valid state.
                    unsafe {
                        ffi::lua_pushinteger(l, start as ffi::lua_Integer + 1);
                        ffi::lua_pushinteger(l, end as ffi::lua_Integer);
                        return push_captures(l, &ms, None) + 2;
                    }
                }
                // SAFETY: pushing captures of the anchored subject.
                return unsafe { push_captures(l, &ms, Some((start, end))) };
            }
            Ok(None) => {}
            // SAFETY: no value with a destructor is alive in this frame.
            Err(err) => unsafe { raise_error(l, err, ms.meter.interrupt_message()) },
        }
    }
    // SAFETY: pushing nil onto a valid state.
    unsafe { ffi::lua_pushnil(l) }; // not found
    1
}

/// Metered `string.find`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_find(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { str_find_aux(l, true) }
}

/// Metered `string.match`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_match(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { str_find_aux(l, false) }
}

/// Marker for "no last match" in [`GMatchState::lastmatch`].
const NO_LASTMATCH: usize = usize::MAX;

/// `GMatchState`, kept in a full userdata (upvalue 3 of the iterator).
/// Positions instead of pointers; the subject and pattern are upvalues 1
/// and 2.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct GMatchState {
    /// Current position.
    src: usize,
    /// End of last match, or [`NO_LASTMATCH`].
    lastmatch: usize,
    /// Subject and pattern lengths, to validate the upvalues.
    ls: usize,
    lp: usize,
}

/// Raise a plain error (with position) from a static message.
///
/// # Safety
/// See the glue conventions above.
unsafe fn raise_static(l: State, msg: &'static CStr) -> ! {
    // SAFETY: luaL_error with a "%s" format and a NUL-terminated argument.
    unsafe {
        ffi::luaL_error(l, c"%s".as_ptr(), msg.as_ptr());
        ffi::lua_error(l) // not reached: luaL_error never returns
    }
}

/// `gmatch_aux`: the iterator returned by `string.gmatch`.
unsafe extern "C-unwind" fn gmatch_aux(l: *mut ffi::lua_State) -> c_int {
    let mut ls = 0usize;
    let mut lp = 0usize;
    // SAFETY: reading this closure's own upvalues on a valid running state.
    // Upvalue 3 is checked to be a full userdata of exactly our size before
    // its block is read (unaligned, so alignment is not assumed); the
    // strings stay anchored as upvalues 1 and 2 while this function runs.
    let (s, p, ud) = unsafe {
        let ud_idx = ffi::lua_upvalueindex(3);
        let ud = if ffi::lua_type(l, ud_idx) == ffi::LUA_TUSERDATA
            && ffi::lua_rawlen(l, ud_idx) == std::mem::size_of::<GMatchState>()
        {
            ffi::lua_touserdata(l, ud_idx).cast::<GMatchState>()
        } else {
            std::ptr::null_mut()
        };
        let s = ffi::lua_tolstring(l, ffi::lua_upvalueindex(1), &mut ls);
        let p = ffi::lua_tolstring(l, ffi::lua_upvalueindex(2), &mut lp);
        if ud.is_null() || s.is_null() || p.is_null() {
            raise_static(l, c"corrupted gmatch iterator");
        }
        (lua_bytes(s, ls), lua_bytes(p, lp), ud)
    };
    // SAFETY: `ud` points to a live userdata block of the right size.
    let mut gm = unsafe { ud.read_unaligned() };
    if gm.ls != ls || gm.lp != lp || gm.src > ls + 1 {
        // SAFETY: no value with a destructor is alive in this frame.
        unsafe { raise_static(l, c"corrupted gmatch iterator") };
    }
    let lastmatch = (gm.lastmatch != NO_LASTMATCH).then_some(gm.lastmatch);
    let mut ms = MatchState::new(s, p);
    match guard(|| ms.search(gm.src, lastmatch, false)) {
        Ok(Some((start, end))) => {
            gm.src = end;
            gm.lastmatch = end;
            // SAFETY: `ud` is still the live userdata block (upvalue 3); the
            // captures borrow the anchored subject.
            unsafe {
                ud.write_unaligned(gm);
                push_captures(l, &ms, Some((start, end)))
            }
        }
        Ok(None) => 0, // not found
        // SAFETY: no value with a destructor is alive in this frame.
        Err(err) => unsafe { raise_error(l, err, ms.meter.interrupt_message()) },
    }
}

/// Metered `string.gmatch` (Lua 5.4: optional `init`, `lastmatch` rule).
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_gmatch(l: *mut ffi::lua_State) -> c_int {
    let mut ls = 0usize;
    let mut lp = 0usize;
    // SAFETY: argument checks on a valid running state, then the same stack
    // manipulation as lstrlib's gmatch: keep the two strings, push a fresh
    // userdata (Lua allocates at least the requested size; it is written
    // unaligned) and close the three values into the iterator.
    unsafe {
        ffi::luaL_checklstring(l, 1, &mut ls);
        ffi::luaL_checklstring(l, 2, &mut lp);
        let mut init = posrelat(ffi::luaL_optinteger(l, 3, 1), ls) - 1;
        ffi::lua_settop(l, 2); // keep strings on closure to avoid being collected
        let ud =
            ffi::lua_newuserdatauv(l, std::mem::size_of::<GMatchState>(), 0).cast::<GMatchState>();
        if init > ls {
            init = ls + 1; // start after string's end
        }
        ud.write_unaligned(GMatchState {
            src: init,
            lastmatch: NO_LASTMATCH,
            ls,
            lp,
        });
        ffi::lua_pushcclosure(l, gmatch_aux, 3);
    }
    1
}

/// `add_s`: append the replacement string (argument 3) with `%0`-`%9` and
/// `%%` expanded.
///
/// # Safety
/// See the glue conventions above; `b` is an initialised buffer whose box is
/// on top of the stack; `ms.subject()` and argument 3 are anchored strings or
/// numbers.
unsafe fn add_s(l: State, b: *mut ffi::luaL_Buffer, ms: &MatchState<'_>, s: usize, e: usize) {
    let mut rl = 0usize;
    // SAFETY: argument 3 is a string or a number (checked by the caller);
    // lua_tolstring converts a number in place, so the result stays anchored
    // in slot 3.
    let news = unsafe { lua_bytes(ffi::lua_tolstring(l, 3, &mut rl), rl) };
    let mut i = 0usize;
    while let Some(off) = memchr(L_ESC, news.get(i..).unwrap_or(&[])) {
        let pos = i + off;
        // SAFETY: appending anchored bytes to a valid buffer.
        unsafe { add_bytes(b, news.get(i..pos).unwrap_or(&[])) };
        let c = news.get(pos + 1).copied().unwrap_or(0); // '\0' past the end, as in C
        if c == L_ESC {
            // SAFETY: appending to a valid buffer.
            unsafe { ffi::luaL_addchar(b, L_ESC as c_char) };
        } else if c == b'0' {
            // SAFETY: appending anchored subject bytes.
            unsafe { add_bytes(b, ms.subject().get(s..e).unwrap_or(&[])) };
        } else if c.is_ascii_digit() {
            match ms.get_onecapture(usize::from(c - b'1'), s, e) {
                // SAFETY: appending anchored subject bytes.
                Ok(Cap::Str(bytes)) => unsafe { add_bytes(b, bytes) },
                // SAFETY: the integer is pushed on top of the buffer box,
                // which is what luaL_addvalue expects.
                Ok(Cap::Pos(n)) => unsafe {
                    ffi::lua_pushinteger(
                        l,
                        ffi::lua_Integer::try_from(n).unwrap_or(ffi::lua_Integer::MAX),
                    );
                    ffi::luaL_addvalue(b);
                },
                // SAFETY: no value with a destructor is alive in this frame.
                Err(err) => unsafe { raise_error(l, err, "") },
            }
        } else {
            // SAFETY: no value with a destructor is alive in this frame.
            unsafe { raise_error(l, MatchError::InvalidReplacement, "") };
        }
        i = pos + 2;
    }
    // SAFETY: appending anchored bytes to a valid buffer.
    unsafe { add_bytes(b, news.get(i..).unwrap_or(&[])) };
}

/// Append bytes to a buffer (no-op when empty, like `luaL_addlstring`).
///
/// # Safety
/// `b` is an initialised buffer whose box is on top of the stack.
#[inline]
unsafe fn add_bytes(b: *mut ffi::luaL_Buffer, bytes: &[u8]) {
    if !bytes.is_empty() {
        // SAFETY: forwarded contract; `bytes` is a valid slice.
        unsafe { ffi::luaL_addlstring(b, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// `add_value`: append the replacement for the match `s..e`. Returns false
/// when the original text must be kept (function/table gave nil or false);
/// in that case nothing was appended and the caller keeps the match text.
///
/// # Safety
/// As for [`add_s`]; argument 3 has type `tr`.
unsafe fn add_value(
    l: State,
    b: *mut ffi::luaL_Buffer,
    ms: &MatchState<'_>,
    s: usize,
    e: usize,
    tr: c_int,
) -> bool {
    match tr {
        ffi::LUA_TFUNCTION => {
            // SAFETY: push the function and all captures as arguments, then
            // call it for one result (errors propagate, as in C).
            unsafe {
                ffi::lua_pushvalue(l, 3);
                let n = push_captures(l, ms, Some((s, e)));
                ffi::lua_call(l, n, 1);
            }
        }
        ffi::LUA_TTABLE => {
            // SAFETY: push the first capture as key and index the table.
            unsafe {
                push_onecapture(l, ms, 0, s, e);
                ffi::lua_gettable(l, 3);
            }
        }
        _ => {
            // LUA_TNUMBER or LUA_TSTRING
            // SAFETY: forwarded contract.
            unsafe { add_s(l, b, ms, s, e) };
            return true;
        }
    }
    // SAFETY: the replacement value is on top of the stack, above the buffer
    // box; it is popped or moved into the buffer (luaL_addvalue).
    unsafe {
        if ffi::lua_toboolean(l, -1) == 0 {
            ffi::lua_pop(l, 1); // keep original text
            false
        } else if ffi::lua_isstring(l, -1) == 0 {
            ffi::luaL_error(
                l,
                c"invalid replacement value (a %s)".as_ptr(),
                ffi::luaL_typename(l, -1),
            );
            ffi::lua_error(l) // not reached: luaL_error never returns
        } else {
            ffi::luaL_addvalue(b);
            true
        }
    }
}

/// `luaL_typeerror` (not exported by mlua-sys), as used by
/// `luaL_argexpected`.
///
/// # Safety
/// See the glue conventions above.
unsafe fn type_error(l: State, arg: c_int, tname: &'static CStr) -> ! {
    // SAFETY: same calls as lauxlib's luaL_typeerror on a valid state.
    unsafe {
        let typearg = if ffi::luaL_getmetafield(l, arg, c"__name".as_ptr()) == ffi::LUA_TSTRING {
            ffi::lua_tolstring(l, -1, std::ptr::null_mut())
        } else if ffi::lua_type(l, arg) == ffi::LUA_TLIGHTUSERDATA {
            c"light userdata".as_ptr()
        } else {
            ffi::luaL_typename(l, arg)
        };
        let msg = ffi::lua_pushfstring(l, c"%s expected, got %s".as_ptr(), tname.as_ptr(), typearg);
        ffi::luaL_argerror(l, arg, msg);
        ffi::lua_error(l) // not reached: luaL_argerror never returns
    }
}

/// Metered `string.gsub`.
///
/// # Safety
/// Must only be called by Lua as a C function.
pub(crate) unsafe extern "C-unwind" fn str_gsub(l: *mut ffi::lua_State) -> c_int {
    let mut srcl = 0usize;
    let mut lp = 0usize;
    // SAFETY: argument checks on a valid running state, in lstrlib's order;
    // the strings stay anchored in slots 1 and 2 until this function returns.
    let (src, p, tr, max_s) = unsafe {
        let src = ffi::luaL_checklstring(l, 1, &mut srcl);
        let p = ffi::luaL_checklstring(l, 2, &mut lp);
        let tr = ffi::lua_type(l, 3);
        let max_s = ffi::luaL_optinteger(l, 4, (srcl as ffi::lua_Integer).wrapping_add(1));
        if !matches!(
            tr,
            ffi::LUA_TNUMBER | ffi::LUA_TSTRING | ffi::LUA_TFUNCTION | ffi::LUA_TTABLE
        ) {
            type_error(l, 3, c"string/function/table");
        }
        (lua_bytes(src, srcl), lua_bytes(p, lp), tr, max_s)
    };
    let (anchor, pat) = match p.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, p),
    };
    let mut buf = MaybeUninit::<ffi::luaL_Buffer>::uninit();
    let b = buf.as_mut_ptr();
    // SAFETY: luaL_buffinit initialises the buffer in place (it is never
    // moved afterwards) and pushes its placeholder on the stack.
    unsafe { ffi::luaL_buffinit(l, b) };

    let mut ms = MatchState::new(src, pat);
    let mut pos = 0usize; // where the next search starts (C's `src`)
    let mut copied = 0usize; // subject text before this is in the buffer
    let mut lastmatch: Option<usize> = None;
    let mut n: ffi::lua_Integer = 0; // replacement count
    let mut changed = false;
    while n < max_s {
        match guard(|| ms.search(pos, lastmatch, anchor)) {
            Ok(Some((start, e))) => {
                n += 1;
                // SAFETY: the buffer box is on top of the stack; the text
                // appended is anchored subject text.
                unsafe { add_bytes(b, src.get(copied..start).unwrap_or(&[])) };
                copied = start;
                // SAFETY: buffer box on top; argument 3 has type `tr`.
                if unsafe { add_value(l, b, &ms, start, e, tr) } {
                    changed = true;
                    copied = e;
                } // else the match text stays pending as original text
                if matches!(tr, ffi::LUA_TSTRING | ffi::LUA_TNUMBER) {
                    // Meter the replacement string's expansion too (one step
                    // per byte), so a huge replacement cannot outrun the
                    // checkpoint. Slot 3 is a string now (add_s converted it).
                    // SAFETY: reading the length of argument 3 of a valid state.
                    let cost = unsafe { ffi::lua_rawlen(l, 3) };
                    if let Err(err) = ms.meter.charge(cost) {
                        // SAFETY: no value with a destructor is alive in this frame.
                        unsafe { raise_error(l, err, ms.meter.interrupt_message()) };
                    }
                }
                pos = e;
                lastmatch = Some(e);
            }
            Ok(None) => break, // end of subject
            // SAFETY: no value with a destructor is alive in this frame.
            Err(err) => unsafe { raise_error(l, err, ms.meter.interrupt_message()) },
        }
        if anchor {
            break;
        }
    }
    // SAFETY: the buffer box is on top of the stack (or the original string
    // is returned instead); two results are pushed.
    unsafe {
        if !changed {
            ffi::lua_pushvalue(l, 1); // return original string
        } else {
            add_bytes(b, src.get(copied..).unwrap_or(&[]));
            ffi::luaL_pushresult(b);
        }
        ffi::lua_pushinteger(l, n);
    }
    2
}

/// Checks a pattern without a subject: the errors the matcher would raise on reaching
/// each part of it (the same [`classend`] and the same messages, so that the linter
/// says exactly what a run would). A pattern that passes may still fail only as "pattern
/// too complex", which depends on the subject. Returns the number of captures.
pub(crate) fn check_pattern(pat: &[u8]) -> Result<usize, String> {
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let mut p = usize::from(at(0) == b'^');
    // One entry per capture opened: true once closed (position captures at once).
    let mut captures: Vec<bool> = Vec::new();
    while p < pat.len() {
        match pat[p] {
            b'(' => {
                let position = at(p + 1) == b')';
                captures.push(position);
                if captures.len() > MAXCAPTURES {
                    return Err(MatchError::TooManyCaptures.to_string());
                }
                p += if position { 2 } else { 1 };
                continue;
            }
            b')' => {
                let open = captures
                    .iter()
                    .rposition(|closed| !closed)
                    .ok_or_else(|| MatchError::InvalidPatternCapture.to_string())?;
                captures[open] = true;
                p += 1;
                continue;
            }
            b'$' if p + 1 == pat.len() => break,
            L_ESC => match at(p + 1) {
                b'b' => {
                    if p + 3 >= pat.len() {
                        return Err(MatchError::MissingBalanceArgs.to_string());
                    }
                    p += 4;
                    continue;
                }
                b'f' => {
                    p += 2;
                    if at(p) != b'[' {
                        return Err(MatchError::MissingFrontierBracket.to_string());
                    }
                    p = classend(pat, p).map_err(|e| e.to_string())?;
                    continue;
                }
                d @ b'0'..=b'9' => {
                    let index = usize::from(d - b'0');
                    if index == 0 || !captures.get(index - 1).copied().unwrap_or(false) {
                        return Err(
                            MatchError::InvalidCaptureIndex(i32::from(d - b'0')).to_string()
                        );
                    }
                    p += 2;
                    continue;
                }
                _ => {}
            },
            _ => {}
        }
        p = classend(pat, p).map_err(|e| e.to_string())?;
        if matches!(at(p), b'*' | b'+' | b'-' | b'?') {
            p += 1;
        }
    }
    if captures.iter().any(|closed| !closed) {
        return Err(MatchError::UnfinishedCapture.to_string());
    }
    Ok(captures.len())
}

/// Checks a `gsub` replacement string against a pattern with `captures` captures: `%`
/// must be followed by `%` or a digit naming the whole match (`%0`) or a capture (`%1`
/// is the whole match when there are none), as `add_s` requires.
pub(crate) fn check_replacement(repl: &[u8], captures: usize) -> Result<(), String> {
    let mut i = 0;
    while i < repl.len() {
        if repl[i] == L_ESC {
            match repl.get(i + 1) {
                Some(b'%') => {}
                Some(&d) if d.is_ascii_digit() => {
                    let index = usize::from(d - b'0');
                    if index > captures.max(1) {
                        return Err(format!(
                            "invalid capture index %{index} in replacement string"
                        ));
                    }
                }
                _ => return Err(MatchError::InvalidReplacement.to_string()),
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Replaces `find`, `match`, `gmatch` and `gsub` in `string` with the metered versions,
/// where present (states build theirs through `recipe::guards`; this is for the tests and
/// the differential fuzzer's harness).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn install(lua: &mlua::Lua, string: &mlua::Table) -> mlua::Result<()> {
    crate::vm::set_c_functions(lua, string, &FUNCS, true)
}

/// The metered members of `string`.
pub(crate) const FUNCS: [(&str, ffi::lua_CFunction); 4] = [
    ("find", str_find),
    ("match", str_match),
    ("gmatch", str_gmatch),
    ("gsub", str_gsub),
];

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pure `string.find` / `string.match`: `Ok(None)` is "no match";
    /// captures as strings ("<pos>" for position captures).
    fn pfind(
        s: &str,
        p: &str,
        init: i64,
        find: bool,
    ) -> Result<Option<(usize, usize, Vec<String>)>, MatchError> {
        let (s, p) = (s.as_bytes(), p.as_bytes());
        let init = posrelat(init, s.len()) - 1;
        if init > s.len() {
            return Ok(None);
        }
        if find && nospecials(p) {
            let mut m = Meter::new();
            return Ok(lmemfind(&mut m, &s[init..], p)?
                .map(|i| (init + i + 1, init + i + p.len(), vec![])));
        }
        let (anchor, pat) = match p.split_first() {
            Some((b'^', rest)) => (true, rest),
            _ => (false, p),
        };
        let mut ms = MatchState::new(s, pat);
        let Some((start, end)) = ms.search(init, None, anchor)? else {
            return Ok(None);
        };
        let n = if ms.level() == 0 && !find {
            1
        } else {
            ms.level()
        };
        let mut caps = vec![];
        for i in 0..n {
            caps.push(match ms.get_onecapture(i, start, end)? {
                Cap::Str(b) => String::from_utf8_lossy(b).into_owned(),
                Cap::Pos(p) => format!("<{p}>"),
            });
        }
        Ok(Some((start + 1, end, caps)))
    }

    fn caps(s: &str, p: &str) -> Option<Vec<String>> {
        pfind(s, p, 1, false).expect("no error").map(|(_, _, c)| c)
    }

    fn err(s: &str, p: &str) -> String {
        pfind(s, p, 1, false).expect_err("an error").to_string()
    }

    #[test]
    fn basic_find() {
        assert_eq!(
            pfind("hello world", "wor", 1, true),
            Ok(Some((7, 9, vec![])))
        );
        assert_eq!(pfind("hello world", "o", 6, true), Ok(Some((8, 8, vec![]))));
        assert_eq!(pfind("hello", "", 10, true), Ok(None));
        assert_eq!(pfind("hello", "", 6, true), Ok(Some((6, 5, vec![]))));
        assert_eq!(pfind("hello", "l+", -3, true), Ok(Some((3, 4, vec![]))));
        assert_eq!(pfind("hello", "l+", -100, true), Ok(Some((3, 4, vec![]))));
        assert_eq!(pfind("hello", "^h", 2, true), Ok(None));
        assert_eq!(
            pfind("hello", "(l)(l)", 1, true),
            Ok(Some((3, 4, vec!["l".into(), "l".into()])))
        );
    }

    #[test]
    fn classes_and_sets() {
        assert_eq!(caps("abc 123", "%d+"), Some(vec!["123".into()]));
        assert_eq!(caps("abc 123", "%a+"), Some(vec!["abc".into()]));
        assert_eq!(caps("abc 123", "%A+"), Some(vec![" 123".into()]));
        assert_eq!(caps("x\x0by", "%s"), Some(vec!["\x0b".into()]));
        assert_eq!(caps("a]b", "[]]"), Some(vec!["]".into()]));
        assert_eq!(caps("a-b", "[a%-]+"), Some(vec!["a-".into()]));
        assert_eq!(caps("xyz", "[^x]+"), Some(vec!["yz".into()]));
        assert_eq!(caps("a.b", "%."), Some(vec![".".into()]));
        assert_eq!(
            caps("key = value", "(%w+)%s*=%s*(%w+)"),
            Some(vec!["key".into(), "value".into()])
        );
    }

    #[test]
    fn quantifiers_anchors() {
        assert_eq!(caps("aaab", "a-b"), Some(vec!["aaab".into()]));
        assert_eq!(caps("<a><b>", "<(.-)>"), Some(vec!["a".into()]));
        assert_eq!(caps("<a><b>", "<(.*)>"), Some(vec!["a><b".into()]));
        assert_eq!(caps("ab", "a?b"), Some(vec!["ab".into()]));
        assert_eq!(caps("b", "a?b"), Some(vec!["b".into()]));
        assert_eq!(caps("abc", "c$"), Some(vec!["c".into()]));
        assert_eq!(caps("abc", "b$"), None);
        assert_eq!(caps("a$b", "$b"), Some(vec!["$b".into()]));
        assert_eq!(caps("abc", "^b"), None);
    }

    #[test]
    fn captures_balance_frontier_backref() {
        assert_eq!(
            caps("hello", "()ll()"),
            Some(vec!["<3>".into(), "<5>".into()])
        );
        assert_eq!(caps("f(a(b)c) x", "%b()"), Some(vec!["(a(b)c)".into()]));
        assert_eq!(
            caps("THE (quick) fox", "%f[%a]%a+"),
            Some(vec!["THE".into()])
        );
        assert_eq!(
            caps("THE (quick) fox", "%f[%l]%a+"),
            Some(vec!["quick".into()])
        );
        assert_eq!(
            caps("say \"hi\" ok", "([\"'])(.-)%1"),
            Some(vec!["\"".into(), "hi".into()])
        );
        assert_eq!(caps("abab", "(ab)%1"), Some(vec!["ab".into()]));
        assert_eq!(caps("xyxy", "()%1"), None); // back reference to a position capture
    }

    #[test]
    fn install_replaces_only_present_entries() {
        let lua = mlua::Lua::new();
        let t = lua.create_table().expect("table");
        t.set("find", 1).expect("set");
        t.set("gsub", 2).expect("set");
        install(&lua, &t).expect("install");
        assert!(matches!(
            t.get::<mlua::Value>("find"),
            Ok(mlua::Value::Function(_))
        ));
        assert!(matches!(
            t.get::<mlua::Value>("gsub"),
            Ok(mlua::Value::Function(_))
        ));
        assert!(matches!(
            t.get::<mlua::Value>("match"),
            Ok(mlua::Value::Nil)
        ));
        assert!(matches!(
            t.get::<mlua::Value>("gmatch"),
            Ok(mlua::Value::Nil)
        ));
    }

    #[test]
    fn check_pattern_agrees_with_the_matcher() {
        for bad in [
            "%", "[a", "[a-", "[a%]", "%b", "%bx", "%fa", "a)", "%1", "%0", "(a%1)", "(a", "[]",
        ] {
            // Where the matcher reaches the fault, it reports the same message.
            let checked = check_pattern(bad.as_bytes()).expect_err(bad);
            assert_eq!(checked, err("a", bad), "{bad}");
        }
        for good in [
            "",
            "a",
            "^a$",
            "[a-z]+",
            "%d+%.%d*",
            "(a)(b)%2",
            "()",
            "%b()",
            "%f[%w]%w+",
            "[]]",
            "[^%]]",
            "a$b",
            "%%",
            "(%w+)=(%w+)",
            "[%a_][%w_]*",
        ] {
            assert!(check_pattern(good.as_bytes()).is_ok(), "{good}");
        }
        assert_eq!(check_pattern(b"(a)(b)"), Ok(2));
        assert!(check_replacement(b"%1-%0 100%%", 1).is_ok());
        assert!(check_replacement(b"%1", 0).is_ok());
        assert!(check_replacement(b"%2", 1).is_err());
        assert!(check_replacement(b"50%", 0).is_err());
        assert!(check_replacement(b"%x", 0).is_err());
    }

    #[test]
    fn errors_match_lstrlib() {
        assert_eq!(err("a", "%"), "malformed pattern (ends with '%')");
        assert_eq!(err("a", "[a"), "malformed pattern (missing ']')");
        assert_eq!(err("a", "[a%]"), "malformed pattern (missing ']')");
        assert_eq!(
            err("a", "%b("),
            "malformed pattern (missing arguments to '%b')"
        );
        assert_eq!(err("a", "%fa"), "missing '[' after '%f' in pattern");
        assert_eq!(err("a", "a)"), "invalid pattern capture");
        assert_eq!(err("a", "%1"), "invalid capture index %1");
        assert_eq!(err("a", "%0"), "invalid capture index %0");
        assert_eq!(err("aa", "(a%1)"), "invalid capture index %1");
        assert_eq!(err("a", "(a"), "unfinished capture");
        assert_eq!(err("a", &"()".repeat(33)), "too many captures");
        assert_eq!(
            err(&"a".repeat(300), &"a?".repeat(300)),
            "pattern too complex"
        );
        assert!(caps(&"a".repeat(300), &"a?".repeat(150)).is_some());
    }

    #[test]
    fn lmemfind_and_helpers() {
        let mut m = Meter::new();
        let hay = b"abcabcabd".repeat(500);
        assert_eq!(lmemfind(&mut m, &hay, b"abd"), Ok(Some(6)));
        assert_eq!(lmemfind(&mut m, &hay, b""), Ok(Some(0)));
        assert_eq!(lmemfind(&mut m, b"ab", b"abc"), Ok(None));
        assert_eq!(lmemfind(&mut m, &hay, b"abe"), Ok(None));
        let mut tail = vec![b'x'; 5000];
        tail.extend_from_slice(b"needle");
        assert_eq!(lmemfind(&mut m, &tail, b"needle"), Ok(Some(5000)));
        for n in 0..40 {
            let v: Vec<u8> = (0..n).map(|i| b'a' + (i % 7) as u8).collect();
            for c in b'a'..=b'h' {
                assert_eq!(memchr(c, &v), v.iter().position(|&x| x == c));
            }
        }
        assert_eq!(posrelat(0, 5), 1);
        assert_eq!(posrelat(-1, 5), 5);
        assert_eq!(posrelat(-5, 5), 1);
        assert_eq!(posrelat(-6, 5), 1);
        assert_eq!(posrelat(i64::MIN, 5), 1);
        assert_eq!(posrelat(7, 5), 7);
        assert!(nospecials(b"abc def"));
        assert!(!nospecials(b"a.b"));
        assert!(!nospecials(b"a\0^"));
    }

    #[test]
    fn ctype_matches_c_locale() {
        for c in 0u8..=255 {
            assert_eq!(
                match_class(c, b's'),
                matches!(c, b' ' | b'\t'..=b'\r'),
                "{c}"
            );
            assert_eq!(match_class(c, b'z'), c == 0);
            assert_eq!(match_class(c, b'W'), !c.is_ascii_alphanumeric());
            assert_eq!(match_class(c, b'p'), c.is_ascii_punctuation());
            assert_eq!(match_class(c, b'.'), c == b'.');
        }
    }

    // ---- Differential tests against the stock C functions -----------------

    /// Runs one call in a Lua state and serialises its outcome (results or
    /// error message) to a string.
    const HARNESS: &str = r#"
local mode, s, p, a3, a4, rk = ...
local function ser(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v)
  elseif t == "table" then
    local parts = {}
    for i = 1, (v.n or #v) do parts[i] = ser(v[i]) end
    return "{" .. table.concat(parts, ",") .. "}"
  else return t .. ":" .. tostring(v) end
end
local funcs = {
  function(...) return nil end,
  function(a, ...) return tostring(a) .. "|" .. select('#', ...) end,
  function(a) return false end,
  function(a) return {} end,
  function(a) if a == "a" then return "A" end end,
  function(...) return 42 end,
  function(a) return 1.5 end,
  function(a) return true end,
}
local tables = {
  { a = "<A>", b = false, c = 7, ["1"] = "one", [1] = "pos1", [2] = true, x = {} },
  {},
}
local function run()
  if mode == 0 then return string.find(s, p, a3, a4)
  elseif mode == 1 then return string.match(s, p, a3)
  elseif mode == 2 then
    local it = string.gmatch(s, p, a3)
    local out = { n = 0 }
    for _ = 1, 100 do
      local r = table.pack(it())
      if r.n == 0 then break end
      out.n = out.n + 1
      out[out.n] = r
    end
    return out
  elseif mode == 3 then
    local r
    if rk == 0 then r = a4
    elseif rk > 0 then r = funcs[rk]
    elseif rk == -100 then r = true
    else r = tables[-rk] end
    return string.gsub(s, p, r, a3)
  else
    return s:find(p, a3), s:match(p), select('#', s:gsub(p, "%0"))
  end
end
return ser(table.pack(pcall(run)))
"#;

    /// A pair of Lua states: stock functions and metered ones.
    pub(crate) struct Pair {
        stock: mlua::Lua,
        metered: mlua::Lua,
    }

    impl Pair {
        pub(crate) fn new() -> Pair {
            let stock = mlua::Lua::new();
            let metered = mlua::Lua::new();
            let string: mlua::Table = metered.globals().get("string").expect("string table");
            install(&metered, &string).expect("install");
            Pair { stock, metered }
        }

        fn one(lua: &mlua::Lua, case: &Case) -> String {
            let f = lua
                .load(HARNESS)
                .set_name("=harness")
                .into_function()
                .expect("harness compiles");
            let arg = |v: &Arg| -> mlua::Value {
                match v {
                    Arg::Nil => mlua::Value::Nil,
                    Arg::Int(i) => mlua::Value::Integer(*i),
                    Arg::Float(x) => mlua::Value::Number(*x),
                    Arg::Str(b) => mlua::Value::String(lua.create_string(b).expect("string")),
                }
            };
            f.call::<String>((
                case.mode,
                lua.create_string(&case.s).expect("s"),
                lua.create_string(&case.p).expect("p"),
                arg(&case.a3),
                arg(&case.a4),
                case.rk,
            ))
            .expect("harness runs")
        }

        pub(crate) fn compare(&self, case: &Case) -> (String, String) {
            (Self::one(&self.stock, case), Self::one(&self.metered, case))
        }
    }

    #[derive(Clone, Debug)]
    pub(crate) enum Arg {
        Nil,
        Int(i64),
        Float(f64),
        Str(Vec<u8>),
    }

    #[derive(Clone, Debug)]
    pub(crate) struct Case {
        pub(crate) mode: i64,
        pub(crate) s: Vec<u8>,
        pub(crate) p: Vec<u8>,
        pub(crate) a3: Arg,
        pub(crate) a4: Arg,
        pub(crate) rk: i64,
    }

    const PAT_TOKENS: &[&str] = &[
        "a", "b", "c", "x", "1", " ", "\0", "%a", "%d", "%s", "%w", "%W", "%l", "%u", "%p", "%x",
        "%z", "%.", "%%", ".", "*", "+", "-", "?", "[ab]", "[^a]", "[a-c]", "[%d_]", "[]]", "[^]]",
        "[%a-]", "[a-]", "[-a]", "[%]", "[%]]", "[a-", "%]", "[", "]", "%b()", "%b", "%bab",
        "%f[%w]", "%f[%W]", "%f[a]", "%f[%s]", "%f[%z]", "%f[^%z]", "%f[%S]", "%f", "^", "$", "(",
        ")", "()", "%1", "%2", "%0", "%", "()%1", "(a)%1", "a*", "a-", "(a*)", "(.-)", "(%w+)",
        ".-",
    ];

    const SUBJ_BYTES: &[u8] = b"abc1 ()x%[]-_\0AB\n.";

    const REPL_TOKENS: &[&str] = &["x", "%0", "%1", "%2", "%%", "%", "%a", "-", "%9", "ab"];

    pub(crate) fn pattern() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(PAT_TOKENS), 0..8)
            .prop_map(|v| v.concat().into_bytes())
    }

    pub(crate) fn subject() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(SUBJ_BYTES), 0..24)
    }

    fn int_arg() -> impl Strategy<Value = Arg> {
        prop_oneof![
            3 => Just(Arg::Nil),
            6 => (-30i64..30).prop_map(Arg::Int),
            1 => prop::sample::select(vec![i64::MIN, i64::MAX, i64::MIN + 1, -1, 0]).prop_map(Arg::Int),
            1 => Just(Arg::Float(2.0)),
            1 => Just(Arg::Float(1.5)),
            1 => Just(Arg::Str(b"2".to_vec())),
        ]
    }

    fn repl() -> impl Strategy<Value = (Arg, i64)> {
        prop_oneof![
            6 => prop::collection::vec(prop::sample::select(REPL_TOKENS), 0..4)
                .prop_map(|v| (Arg::Str(v.concat().into_bytes()), 0)),
            1 => Just((Arg::Int(12), 0)),
            1 => Just((Arg::Float(0.5), 0)),
            1 => Just((Arg::Nil, 0)),
            4 => (1i64..=8).prop_map(|k| (Arg::Nil, k)),
            2 => (1i64..=2).prop_map(|k| (Arg::Nil, -k)),
            1 => Just((Arg::Nil, -100)),
        ]
    }

    /// A pattern derived from a slice of the subject (so that it often
    /// matches), with items turned into classes, sets, captures and
    /// quantified items according to `ops`.
    fn derived_pattern(s: &[u8], start: usize, len: usize, ops: &[u8]) -> Vec<u8> {
        let start = start % (s.len() + 1);
        let end = (start + len).min(s.len());
        let mut out = Vec::new();
        if ops.first().is_some_and(|o| o % 5 == 0) {
            out.push(b'^');
        }
        for (k, &c) in s[start..end].iter().enumerate() {
            let op = ops.get(k + 1).copied().unwrap_or(0);
            let lit = |out: &mut Vec<u8>| {
                if SPECIALS.contains(&c) || c == b']' {
                    out.push(L_ESC);
                }
                out.push(c);
            };
            match op % 8 {
                0..=2 => lit(&mut out),
                3 => out.push(b'.'),
                4 => out.extend_from_slice(match c {
                    b'a'..=b'z' | b'A'..=b'Z' => b"%a",
                    b'0'..=b'9' => b"%d",
                    b' ' | b'\n' => b"%s",
                    0 => b"%z",
                    _ => b"%p",
                }),
                5 => {
                    out.push(b'[');
                    lit(&mut out);
                    out.extend_from_slice(b"x]");
                }
                6 => {
                    out.push(b'(');
                    lit(&mut out);
                    out.push(b')');
                }
                _ => {
                    lit(&mut out);
                    out.push(b"*+-?"[usize::from(op / 8) % 4]);
                }
            }
        }
        if ops.last().is_some_and(|o| o % 3 == 0) {
            out.push(b'$');
        }
        out
    }

    pub(crate) fn case() -> impl Strategy<Value = Case> {
        let derived = (
            0usize..24,
            0usize..8,
            prop::collection::vec(any::<u8>(), 0..10),
        );
        (
            0i64..5,
            subject(),
            pattern(),
            (prop::bool::ANY, derived),
            int_arg(),
            prop::bool::ANY,
            repl(),
        )
            .prop_map(
                |(mode, s, tokens, (use_derived, (start, len, ops)), a3, plain, (r, rk))| {
                    let p = if use_derived {
                        derived_pattern(&s, start, len, &ops)
                    } else {
                        tokens
                    };
                    let a4 = match mode {
                        0 if plain => Arg::Int(1),
                        0 => Arg::Nil,
                        3 => r,
                        _ => Arg::Nil,
                    };
                    Case {
                        mode,
                        s,
                        p,
                        a3,
                        a4,
                        rk,
                    }
                },
            )
    }

    pub(crate) fn run_differential(cases: u32) {
        let pair = Pair::new();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let res = runner.run(&case(), |c| {
            let (stock, metered) = pair.compare(&c);
            prop_assert_eq!(stock, metered, "case {:?}", c);
            Ok(())
        });
        if let Err(e) = res {
            panic!("{e}");
        }
    }

    #[test]
    fn differential_random() {
        run_differential(256);
    }

    fn explicit(mode: i64, s: &[u8], p: &[u8], a3: Arg, a4: Arg, rk: i64) {
        let pair = Pair::new();
        let c = Case {
            mode,
            s: s.to_vec(),
            p: p.to_vec(),
            a3,
            a4,
            rk,
        };
        let (stock, metered) = pair.compare(&c);
        assert_eq!(stock, metered, "case {c:?}");
    }

    #[test]
    fn differential_explicit() {
        use Arg::*;
        let long = "a".repeat(300);
        explicit(0, long.as_bytes(), "a?".repeat(300).as_bytes(), Nil, Nil, 0);
        explicit(1, long.as_bytes(), "()".repeat(33).as_bytes(), Nil, Nil, 0);
        explicit(1, long.as_bytes(), "()".repeat(32).as_bytes(), Nil, Nil, 0);
        explicit(0, b"hello world", b"o w", Nil, Nil, 0);
        explicit(0, b"a.b", b".", Nil, Int(1), 0);
        explicit(0, b"a+b", b"+", Int(-1), Int(1), 0);
        explicit(0, b"abc", b"", Int(4), Nil, 0);
        explicit(0, b"abc", b"", Int(5), Nil, 0);
        explicit(2, b"hello world from lua", b"%a+", Nil, Nil, 0);
        explicit(2, b"k1=v1, k2=v2", b"(%w+)=(%w+)", Int(3), Nil, 0);
        explicit(2, b"abc", b"", Int(10), Nil, 0);
        explicit(2, b"abc", b"^a", Nil, Nil, 0);
        explicit(3, b"hello world", b"o", Nil, Str(b"0".to_vec()), 0);
        explicit(
            3,
            b"hello world",
            b"(o)",
            Int(1),
            Str(b"[%1%0%%]".to_vec()),
            0,
        );
        explicit(3, b"hello world", b"()o", Nil, Str(b"%1".to_vec()), 0);
        explicit(3, b"hello", b"", Nil, Str(b"-".to_vec()), 0);
        explicit(3, b"hello", b"l*", Nil, Str(b"-".to_vec()), 0);
        explicit(3, b"hello", b"^h", Nil, Str(b"J".to_vec()), 0);
        explicit(3, b"hello", b"x*", Int(-1), Str(b"J".to_vec()), 0);
        explicit(3, b"abc", b"%w", Nil, Nil, 2);
        explicit(3, b"abc", b"%w", Nil, Nil, -1);
        explicit(3, b"abc", b"%w", Nil, Nil, 4);
        explicit(3, b"abc", b"%w", Nil, Nil, -100);
        explicit(3, b"abc", b"%w", Nil, Str(b"%".to_vec()), 0);
        explicit(3, b"abc", b"%w", Nil, Str(b"%2".to_vec()), 0);
        explicit(3, b"abc", b"(%w", Nil, Str(b"%1".to_vec()), 0);
        explicit(0, b"THE (quick) fox", b"%f[%a]%a+", Int(2), Nil, 0);
        explicit(1, b"f(a(b)c) x", b"%b()", Nil, Nil, 0);
        explicit(4, b"abc", b"b", Nil, Nil, 0);
        explicit(0, b"abc", b"b", Float(1.5), Nil, 0);
        explicit(0, b"abc", b"b", Str(b"x".to_vec()), Nil, 0);
    }

    /// Serialiser shared by the free-form differential snippets.
    const SER: &str = r#"
local function ser(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v)
  elseif t == "table" then
    local parts = {}
    for i = 1, (v.n or #v) do parts[i] = ser(v[i]) end
    return "{" .. table.concat(parts, ",") .. "}"
  else return t .. ":" .. tostring(v) end
end
"#;

    /// Runs the body of a function in both states; compares its results or
    /// error.
    fn same_code(pair: &Pair, body: &str) {
        let code = format!("{SER}\nreturn ser(table.pack(pcall(function()\n{body}\nend)))");
        let run = |lua: &mlua::Lua| -> String {
            lua.load(&code)
                .set_name("=snippet")
                .eval::<String>()
                .expect("snippet runs")
        };
        let (a, b) = (run(&pair.stock), run(&pair.metered));
        assert_eq!(a, b, "snippet: {body}");
    }

    #[test]
    fn differential_snippets() {
        let pair = Pair::new();
        let snippets = [
            // number arguments are converted like luaL_checklstring does
            "return string.find(12345, 34)",
            "return string.find(12345, 3, -2)",
            "return string.match(3.5, '%d')",
            "return string.gsub(1234, 2, 9)",
            "return string.gsub('abc', 'b', 5)",
            "local t = {} for a in string.gmatch(112131, 1) do t[#t+1] = a end return table.concat(t, ',')",
            // argument errors, with and without a call-site name
            "return string.find()",
            "return string.find('a')",
            "return string.gsub('a', 'a')",
            "return string.gsub('a', 'a', true)",
            "return string.gsub('a', 'a', 'x', 'y')",
            "return string.gsub('a', 'a', nil, 'y')",
            "return string.gmatch('a')",
            "return pcall(string.find)",
            "return pcall(string.gsub, 'a', 'a', io and io.stdout or 1)",
            "return ('x'):find({})",
            "return string.find('abc', 'b', 1.5)",
            "return string.find('abc', 'b', '1')",
            // gmatch: anchors are literal, init, exhaustion and reuse
            "local it = string.gmatch('^a^a', '^a') return it(), it(), it(), it()",
            "local it = string.gmatch('abc', '()', 2) return it(), it(), it(), it()",
            "local it = string.gmatch('abc', '', 10) return it(), it()",
            "local it = string.gmatch('aXbX', '%u', -2) return it(), it()",
            "local it = string.gmatch('a,b,,c', '([^,]*)') return it(), it(), it(), it(), it(), it()",
            "local it = string.gmatch('abc', '(a') return it()",
            // gsub corner cases
            "return string.gsub('hello world', '(o)', '%1%1', 1)",
            "return string.gsub('hello', '', '-', 3)",
            "return string.gsub('hello', 'l', 'L', 0)",
            "return string.gsub('hello', 'l', 'L', -5)",
            "return string.gsub('hello', 'l', 'L', math.maxinteger)",
            "return string.gsub('hello', 'l', 'L', math.mininteger)",
            "return string.gsub('abc', '%w', '%9')",
            "return string.gsub('abc', '(%w)', '%2')",
            "return string.gsub('abc', '%w', '%')",
            "return string.gsub('abc', '%w', '%x')",
            "return string.gsub('abc', '()', '%1')",
            "return string.gsub('abc', '()', {[1] = 'one', [2] = false})",
            "return string.gsub('abc', '%w', function(c) error('boom ' .. c) end)",
            "return string.gsub('abc', '%w', function(c) error({}) end)",
            "return string.gsub('abc', '%w', function(c) return coroutine.yield(c) end)",
            "return coroutine.wrap(function() return string.gsub('abc', '%w', function(c) return coroutine.yield(c) end) end)()",
            "return string.gsub('abc', '%w', setmetatable({}, {__index = function(t, k) return k:upper() end}))",
            "return string.gsub('abc', '%w', setmetatable({}, {__call = function() return 'x' end}))",
            "local n = 0 local r = {string.gsub(('ab'):rep(3000), '%w', function(c) n = n + 1 if n % 3 == 0 then return nil elseif n % 3 == 1 then return c:rep(3) end return 7 end)} return #r[1], r[2], r[1]:sub(1, 40), n",
            "local r = {string.gsub(('abc '):rep(2000), '(%w+)', {abc = ('x'):rep(5)})} return #r[1], r[2], r[1]:sub(-20)",
            "local r = {string.gsub(('abc '):rep(2000), '%w+', '<%0>')} return #r[1], r[2], r[1]:sub(-20)",
            // long subjects: chunk boundaries of the metered scans
            "local s = ('x'):rep(1023) .. 'needle' .. ('x'):rep(3000) return s:find('needle', 1, true), s:find('needle'), s:find('n%a+'), s:find('[n]eedle'), s:find('needle', 1030, true)",
            "local s = ('x'):rep(1020) .. 'needle' return s:find('needle', 1, true), s:find('needle'), s:find('e%a'), s:find('%f[n]')",
            "local s = ('x'):rep(5000) return s:find('xy', 1, true), s:find('y'), s:find('%d'), s:find('x', 4990), s:find('x$'), select(2, s:gsub('x', 'y'))",
            "local s = ('ab'):rep(2000) return select(2, s:gsub('b', '')), select(2, s:gsub('ba', '')), s:find('bb'), s:find('(ab)%1b')",
            "local s = '(' .. ('x'):rep(3000) .. ')' return s:find('%b()'), s:find('%b)(')",
            "return string.find(('a'):rep(300), ('a?'):rep(198)), pcall(string.find, ('a'):rep(300), ('a?'):rep(199)), pcall(string.find, ('a'):rep(300), ('a?'):rep(250))",
            "return string.find(('a'):rep(300), ('(a)'):rep(32)), pcall(string.find, ('a'):rep(300), ('(a)'):rep(33))",
            "return string.match(('a'):rep(50), ('(a)'):rep(32))",
            "return select('#', string.match(('a'):rep(50), ('()'):rep(32)))",
            // classes over the full byte range
            "local t = {} for i = 0, 255 do t[#t+1] = string.char(i) end local s = table.concat(t) local r = {} for _, c in ipairs({'a','c','d','g','l','p','s','u','w','x','z','A','C','D','G','L','P','S','U','W','X','Z'}) do r[#r+1] = select(2, s:gsub('%' .. c, '')) end return table.concat(r, ',')",
            "local t = {} for i = 0, 255 do t[#t+1] = string.char(i) end local s = table.concat(t) return select(2, s:gsub('[%w_\\0-\\31\\200-\\255]', '')), select(2, s:gsub('[^%s%p]', '')), select(2, s:gsub('[a-]', '')), select(2, s:gsub('[%]-]', ''))",
        ];
        for body in snippets {
            same_code(&pair, body);
        }
    }
}
