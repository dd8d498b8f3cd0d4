//! The linter's data: stock Lua 5.4 (to tell "removed by this sandbox" from "never
//! existed"), why the sandbox removes what it removes, the argument counts of stock
//! functions, and what other languages call things Lua has under another name.
//!
//! Rules are data here so that a new entry is one line, as in selene's standard library
//! files; the walker (`scope.rs`) only looks things up.

/// The globals of stock Lua 5.4 (`lua.c` with every library opened).
pub(crate) const STOCK_GLOBALS: &[&str] = &[
    "_G",
    "_VERSION",
    "assert",
    "collectgarbage",
    "coroutine",
    "debug",
    "dofile",
    "error",
    "getmetatable",
    "io",
    "ipairs",
    "load",
    "loadfile",
    "math",
    "next",
    "os",
    "package",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "require",
    "select",
    "setmetatable",
    "string",
    "table",
    "tonumber",
    "tostring",
    "type",
    "utf8",
    "warn",
    "xpcall",
];

/// The members of stock Lua 5.4's library tables.
pub(crate) fn stock_members(lib: &str) -> &'static [&'static str] {
    match lib {
        "string" => &[
            "byte", "char", "dump", "find", "format", "gmatch", "gsub", "len", "lower", "match",
            "pack", "packsize", "rep", "reverse", "sub", "unpack", "upper",
        ],
        "table" => &[
            "concat", "insert", "move", "pack", "remove", "sort", "unpack",
        ],
        "os" => &[
            "clock",
            "date",
            "difftime",
            "execute",
            "exit",
            "getenv",
            "remove",
            "rename",
            "setlocale",
            "time",
            "tmpname",
        ],
        "io" => &[
            "close", "flush", "input", "lines", "open", "output", "popen", "read", "stderr",
            "stdin", "stdout", "tmpfile", "type", "write",
        ],
        "debug" => &[
            "debug",
            "gethook",
            "getinfo",
            "getlocal",
            "getmetatable",
            "getregistry",
            "getupvalue",
            "getuservalue",
            "sethook",
            "setlocal",
            "setmetatable",
            "setupvalue",
            "setuservalue",
            "traceback",
            "upvalueid",
            "upvaluejoin",
        ],
        "package" => &[
            "config",
            "cpath",
            "loaded",
            "loadlib",
            "path",
            "preload",
            "searchers",
            "searchpath",
        ],
        _ => &[],
    }
}

/// Why the sandbox does not have `name` (a global or `lib.member`) that stock Lua has.
pub(crate) fn removed_reason(name: &str, profile: &str) -> String {
    let why = match name {
        "io" | "dofile" | "loadfile" => "the sandbox has no file system".to_string(),
        "os.execute" | "os.exit" | "os.getenv" | "os.remove" | "os.rename" | "os.tmpname"
        | "os.setlocale" => "the sandbox has no processes, environment or file system".into(),
        "debug" => "the debug library would reach past every guarantee of the sandbox".into(),
        "string.dump" => "bytecode is refused: only source text is loaded".into(),
        "collectgarbage" => "the collector is not the script's to control".into(),
        "package" | "require" => {
            "modules exist only in the aos profile, from the host's --modules directory".into()
        }
        "warn" | "_VERSION" => "it is not on the profile's list".into(),
        n if n.starts_with("io.") => {
            "the aos profile keeps only `io.open`, for files the host lists with --read".into()
        }
        n if n.starts_with("package.") => {
            "package keeps only loaded, preload, path and cpath: no C modules or searchers".into()
        }
        _ => format!("the {profile} profile does not list it"),
    };
    format!("the sandbox removes `{name}` on purpose: {why}")
}

/// Globals of other Lua versions (5.1, LuaJIT) that 5.4 does not have, with what to write.
pub(crate) fn old_global(name: &str) -> Option<&'static str> {
    Some(match name {
        "unpack" => "Lua 5.4 spells it `table.unpack`",
        "loadstring" => "Lua 5.4 spells it `load`",
        "setfenv" | "getfenv" => "Lua 5.4 has no setfenv/getfenv: pass an env table to `load`",
        "module" => "Lua 5.4 has no `module`: return a table from the chunk",
        "jit" | "bit" | "bit32" => "not in Lua 5.4: use the integer operators `& | ~ << >>`",
        "ngx" | "vim" | "love" | "game" | "workspace" => "a host API of another embedding",
        _ => return None,
    })
}

/// Members other languages (or other Lua versions) have, with what to write in Lua:
/// `(library, names, advice)`.
const FOREIGN_MEMBERS: &[(&str, &[&str], &str)] = &[
    (
        "string",
        &["split"],
        "Lua has no `string.split`: iterate with `for part in s:gmatch(\"[^,]+\") do ... end`",
    ),
    (
        "string",
        &["trim", "strip"],
        "Lua has no trim: `s:match(\"^%s*(.-)%s*$\")`",
    ),
    (
        "string",
        &["startswith", "starts_with", "startsWith"],
        "`s:sub(1, #prefix) == prefix`",
    ),
    (
        "string",
        &["endswith", "ends_with", "endsWith"],
        "`s:sub(-#suffix) == suffix`",
    ),
    (
        "string",
        &["replace", "replaceAll"],
        "`string.gsub(s, pattern, repl)` (a Lua pattern: escape magic characters with `%`)",
    ),
    (
        "string",
        &["contains", "includes"],
        "`string.find(s, sub, 1, true) ~= nil`",
    ),
    (
        "string",
        &["length", "size", "count"],
        "`#s` (or `string.len(s)`)",
    ),
    ("string", &["join"], "`table.concat(list, sep)`"),
    ("string", &["tolower", "lowercase"], "`string.lower`"),
    ("string", &["toupper", "uppercase"], "`string.upper`"),
    ("string", &["gfind"], "Lua 5.4 spells it `string.gmatch`"),
    ("table", &["len", "length", "size", "count", "getn"], "`#t`"),
    (
        "table",
        &["push", "append", "add"],
        "`table.insert(t, value)`",
    ),
    ("table", &["pop"], "`table.remove(t)`"),
    ("table", &["shift"], "`table.remove(t, 1)`"),
    ("table", &["unshift"], "`table.insert(t, 1, value)`"),
    ("table", &["join"], "`table.concat(t, sep)`"),
    (
        "table",
        &["keys"],
        "Lua has no table.keys: `for k in pairs(t) do ... end`",
    ),
    (
        "table",
        &["values"],
        "Lua has no table.values: `for _, v in pairs(t) do ... end`",
    ),
    (
        "table",
        &["contains", "includes", "indexOf", "find", "index"],
        "Lua has no table search: loop with `for i, v in ipairs(t) do ... end`",
    ),
    (
        "table",
        &["slice"],
        "`{table.unpack(t, i, j)}` or `table.move(t, i, j, 1, {})`",
    ),
    (
        "table",
        &["maxn"],
        "Lua 5.4 has no table.maxn: loop with `pairs`",
    ),
    ("math", &["pow"], "Lua 5.4 has no math.pow: `x ^ y`"),
    (
        "math",
        &["round"],
        "Lua has no math.round: `math.floor(x + 0.5)`",
    ),
    (
        "math",
        &["trunc"],
        "`math.tointeger(x)` or `x >= 0 and math.floor(x) or math.ceil(x)`",
    ),
    (
        "math",
        &["log10"],
        "Lua 5.4 has no math.log10: `math.log(x, 10)`",
    ),
    ("math", &["mod"], "`math.fmod(a, b)` or `a % b`"),
    ("math", &["isnan"], "`x ~= x` is true only for NaN"),
    (
        "math",
        &["cosh", "sinh", "tanh", "frexp", "ldexp"],
        "removed from Lua 5.4's math library",
    ),
];

/// What to write instead of `lib.member`, when another language has that member; a typo
/// of one (`string.spilt`) is recognised too.
pub(crate) fn foreign_member(lib: &str, member: &str) -> Option<&'static str> {
    let of_lib = || FOREIGN_MEMBERS.iter().filter(move |(l, _, _)| *l == lib);
    let advice = |name: &str| {
        of_lib()
            .find(|(_, names, _)| names.contains(&name))
            .map(|(_, _, advice)| *advice)
    };
    advice(member).or_else(|| {
        let names = of_lib().flat_map(|(_, names, _)| names.iter().copied());
        nearest(member, names).and_then(advice)
    })
}

/// Argument counts of library functions: the least a call must pass (fewer is an error
/// as soon as the call runs) and the most the function reads (more are ignored: a
/// warning). `None`: any number. Only functions whose counts the sandbox keeps as stock.
pub(crate) fn arity(path: &str) -> Option<(usize, Option<usize>)> {
    Some(match path {
        "assert" | "ipairs" | "pairs" | "tostring" | "type" | "rawlen" | "getmetatable" => {
            (1, Some(1))
        }
        "tonumber" => (1, Some(2)),
        "select" => (1, None),
        "pcall" => (1, None),
        "xpcall" => (2, None),
        "next" => (1, Some(2)),
        "rawequal" | "rawget" => (2, Some(2)),
        "rawset" => (3, Some(3)),
        "setmetatable" => (2, Some(2)),
        "error" => (0, Some(2)),
        "load" | "loadstring" => (1, Some(4)),
        "unpack" | "table.unpack" => (1, Some(3)),
        "string.byte" => (1, Some(3)),
        "string.find" => (2, Some(4)),
        "string.format" => (1, None),
        "string.gmatch" => (2, Some(3)),
        "string.gsub" => (3, Some(4)),
        "string.len" | "string.lower" | "string.upper" | "string.reverse" => (1, Some(1)),
        "string.match" => (2, Some(3)),
        "string.rep" => (2, Some(3)),
        "string.sub" => (2, Some(3)),
        "string.packsize" => (1, Some(1)),
        "string.unpack" => (2, Some(3)),
        "table.concat" => (1, Some(4)),
        "table.insert" => (2, Some(3)),
        "table.move" => (4, Some(5)),
        "table.remove" => (1, Some(2)),
        "table.sort" => (1, Some(2)),
        "math.abs" | "math.ceil" | "math.floor" | "math.sqrt" | "math.sin" | "math.cos"
        | "math.tan" | "math.asin" | "math.acos" | "math.exp" | "math.deg" | "math.rad"
        | "math.tointeger" | "math.modf" | "math.type" => (1, Some(1)),
        "math.atan" | "math.log" => (1, Some(2)),
        "math.fmod" | "math.ult" => (2, Some(2)),
        "math.max" | "math.min" => (1, None),
        "math.random" | "math.randomseed" => (0, Some(2)),
        "os.time" => (0, Some(1)),
        "os.date" => (0, Some(2)),
        "os.clock" => (0, Some(0)),
        "os.difftime" => (2, Some(2)),
        "coroutine.create" | "coroutine.wrap" | "coroutine.status" | "coroutine.close" => {
            (1, Some(1))
        }
        "coroutine.resume" => (1, None),
        "coroutine.running" => (0, Some(0)),
        "utf8.codepoint" => (1, Some(4)),
        "utf8.len" => (1, Some(4)),
        "utf8.offset" => (2, Some(3)),
        "utf8.codes" => (1, Some(2)),
        _ => return None,
    })
}

/// Optimal string alignment distance (Levenshtein with adjacent transpositions), so that
/// `spilt` is one edit from `split` and `lookpu` one from `lookup`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate nearest to `name`, if it is close enough to be a typo: the linter's
/// "did you mean", and front ends' for their own option names.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("spilt", "split"), 1);
        assert_eq!(edit_distance("lookpu", "lookup"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(nearest("prnit", ["print", "pairs", "error"]), Some("print"));
        assert_eq!(nearest("xyz", ["print"]), None);
        assert_eq!(nearest("tabel", ["table", "type"]), Some("table"));
    }
}
