//! Library tables made from a recipe instead of the stock `luaopen_*` functions.
//!
//! Opening a stock library interns and inserts every member, and the environment then
//! deletes what the profile does not list and overwrites what moonjail guards: a third
//! of building a fresh state. The stock members are C functions that Lua's sources keep
//! `static`, but their addresses are the same for every state of the process; so they
//! are read once per process from a throw-away state ([`stock`]), and each fresh state
//! gets tables holding only the profile's members, each set once to its final value (the
//! stock function, moonjail's guarded one, or the charged wrapper of the stock one).
//!
//! What `luaopen_*` does besides setting members is done here too: the library is a
//! global and an entry of the registry's `_LOADED` (where the auxiliary library looks
//! functions up to name them in error messages), `math.random` and `math.randomseed`
//! share a generator state (seeded with unpredictable bits, not the stock way: see
//! [`push_random_state`]), and `string` gets the string metatable
//! (already locked, as the environment locks the stock one). Tests compare every profile
//! against a state built the stock way.

use std::ffi::c_int;
use std::sync::OnceLock;

use mlua::ffi::{self, lua_CFunction, lua_State};
use mlua::{Lua, LuaOptions, StdLib, Table, Value};

use super::charged::{self, Cost};
use super::{identity, strmatch, table};
use crate::vm::hook::CO_GUARDS;

/// A member as a fresh state gets it.
#[derive(Debug)]
enum Member {
    /// A light C function: the stock one, or moonjail's version.
    Function(lua_CFunction),
    /// The stock function behind moonjail's charge (see charged.rs).
    Charged(lua_CFunction, Cost),
    /// `math.random`/`math.randomseed`: a C closure over the generator state.
    Random(lua_CFunction),
    Integer(ffi::lua_Integer),
    Number(ffi::lua_Number),
    String(Box<[u8]>),
}

/// One library: its members sorted by name length, with where each length starts.
#[derive(Debug)]
struct Library {
    name: &'static str,
    members: Vec<(Box<str>, Member)>,
    /// `members[starts[n]..starts[n + 1]]` have names of `n` bytes.
    starts: Vec<usize>,
}

impl Library {
    fn new(name: &'static str, mut members: Vec<(Box<str>, Member)>) -> Library {
        members.sort_by_key(|(n, _)| n.len());
        let longest = members.last().map_or(0, |(n, _)| n.len());
        let starts = (0..=longest + 1)
            .map(|len| members.partition_point(|(n, _)| n.len() < len))
            .collect();
        Library {
            name,
            members,
            starts,
        }
    }

    /// The member `name`: a scan of the few names of its length (a binary search over
    /// all names made the lookups a third of making the tables).
    fn get(&self, name: &str) -> Option<&Member> {
        let (from, to) = (
            *self.starts.get(name.len())?,
            *self.starts.get(name.len() + 1)?,
        );
        self.members[from..to]
            .iter()
            .find(|(n, _)| n.as_bytes() == name.as_bytes())
            .map(|(_, m)| m)
    }
}

/// What the stock libraries are made of, read once per process.
#[derive(Debug)]
struct Stock {
    libraries: Vec<Library>,
    /// The string metatable's members other than `__index` (the `string` table).
    string_meta: Vec<(Box<str>, lua_CFunction)>,
    /// `math.randomseed`, which seeds a generator state the stock way when called
    /// without arguments, and the size of that state.
    random_seed: lua_CFunction,
    random_state_bytes: usize,
}

/// The libraries the recipe makes, as mlua opens them (and as a deterministic state,
/// which opens the stock ones, asks for them: `env::libs_for`).
pub(crate) const LIBRARIES: [(&str, StdLib); 6] = [
    ("coroutine", StdLib::COROUTINE),
    ("table", StdLib::TABLE),
    ("os", StdLib::OS),
    ("string", StdLib::STRING),
    ("utf8", StdLib::UTF8),
    ("math", StdLib::MATH),
];

/// moonjail's own members of a stock library: functions that replace the stock ones
/// (the metered, guarded and opaque-identity versions), closures over the generator
/// state that replace `math`'s stock ones, and stock functions it charges for. The one list
/// both the recipe and the stock path (`env::build`) apply.
pub(crate) struct Guards {
    pub(crate) functions: &'static [&'static [(&'static str, lua_CFunction)]],
    /// Each a C closure over one upvalue, the generator state `math.random` draws from.
    pub(crate) closures: &'static [(&'static str, lua_CFunction)],
    pub(crate) charged: &'static [(&'static str, Cost)],
}

/// The guarded closures of `math`: they keep the stock ones' upvalue (the generator).
const MATH_CLOSURES: [(&str, lua_CFunction); 1] = [("randomseed", randomseed)];

/// The [`Guards`] of library `lib`.
pub(crate) fn guards(lib: &str) -> Guards {
    let (functions, charged): (&'static [&'static [(&'static str, lua_CFunction)]], _) = match lib {
        "string" => (
            &[&strmatch::FUNCS, &table::STRING, &identity::STRING],
            &charged::STRING[..],
        ),
        "utf8" => (&[], &charged::UTF8[..]),
        "table" => (&[&table::TABLE], &[][..]),
        "coroutine" => (&[&CO_GUARDS], &[][..]),
        _ => (&[], &[][..]),
    };
    let closures = match lib {
        "math" => &MATH_CLOSURES[..],
        _ => &[],
    };
    Guards {
        functions,
        closures,
        charged,
    }
}

/// Replaces each member of library table `lib` listed in `closures` (its
/// [`Guards::closures`]) by the guard's closure over the stock closure's generator state:
/// the stock path's version of what the recipe makes directly. A member that is not a C
/// closure over exactly such a state (the profile dropped it) is left alone.
pub(crate) fn wrap_closures(
    lua: &Lua,
    lib: &Table,
    closures: &[(&str, lua_CFunction)],
) -> mlua::Result<()> {
    if closures.is_empty() {
        return Ok(());
    }
    let state_bytes = stock().map_err(mlua::Error::runtime)?.random_state_bytes;
    // SAFETY: `exec_raw` pushes `lib` at 1 and runs the closure in protected mode (a
    // memory error raised by a push unwinds to it; the closure owns nothing with a
    // destructor). A guard is pushed only over a member's single upvalue that is a full
    // userdata of the generator state's size: what the guard's stock function reads.
    unsafe {
        lua.exec_raw::<()>(lib, |l| {
            for &(member, guard) in closures {
                ffi::lua_checkstack(l, 8);
                ffi::lua_pushlstring(l, member.as_ptr().cast(), member.len());
                let over_state = ffi::lua_rawget(l, 1) == ffi::LUA_TFUNCTION
                    && ffi::lua_iscfunction(l, 2) != 0
                    && !ffi::lua_getupvalue(l, 2, 1).is_null()
                    && ffi::lua_type(l, 3) == ffi::LUA_TUSERDATA
                    && ffi::lua_rawlen(l, 3) == state_bytes
                    && ffi::lua_getupvalue(l, 2, 2).is_null();
                if over_state {
                    ffi::lua_pushlstring(l, member.as_ptr().cast(), member.len());
                    ffi::lua_pushvalue(l, 3);
                    ffi::lua_pushcclosure(l, guard, 1);
                    ffi::lua_rawset(l, 1);
                }
                ffi::lua_settop(l, 1);
            }
        })
    }
}

/// `math.randomseed`, over the generator state (its upvalue) as the stock one: without
/// arguments it seeds from unpredictable bits, where the stock one takes the time in
/// seconds and the state's address, which the next state made within the second shares
/// (see [`push_random_state`]). It returns the two seed components, as the stock one.
unsafe extern "C-unwind" fn randomseed(l: *mut lua_State) -> c_int {
    let Ok(stock) = stock() else {
        // SAFETY: called by Lua as a C function; raising is how it reports errors.
        return unsafe { ffi::luaL_error(l, c"math.randomseed is unavailable".as_ptr()) };
    };
    // SAFETY: called by Lua with this closure's frame: the two seeds go where the
    // arguments would be (no arguments, so the slots are 1 and 2), and the stock function,
    // called directly within this frame, reads this closure's upvalue 1, the generator
    // state of the size it expects (the recipe and the stock path both give the guard
    // the stock closure's upvalue).
    unsafe {
        if ffi::lua_isnone(l, 1) != 0 {
            ffi::luaL_checkstack(l, 2, std::ptr::null());
            ffi::lua_pushinteger(l, crate::vm::seed::random_u64() as ffi::lua_Integer);
            ffi::lua_pushinteger(l, crate::vm::seed::random_u64() as ffi::lua_Integer);
        }
        (stock.random_seed)(l)
    }
}

/// moonjail's final version of `lib.member`, given the stock function.
fn guarded(lib: &str, member: &str, stock: lua_CFunction) -> Member {
    let guards = guards(lib);
    let replaced = guards
        .functions
        .iter()
        .flat_map(|list| list.iter())
        .find(|(n, _)| *n == member)
        .map(|(_, f)| Member::Function(*f));
    let charged = || {
        guards
            .charged
            .iter()
            .find(|(n, _)| *n == member)
            .map(|(_, c)| Member::Charged(stock, *c))
    };
    replaced.or_else(charged).unwrap_or(Member::Function(stock))
}

/// A C function value's function, whether it has upvalues, and the size of its first
/// upvalue if that is a full userdata.
fn inspect(lua: &Lua, f: &mlua::Function) -> mlua::Result<(Option<lua_CFunction>, c_int, usize)> {
    let mut out = (None, 0, 0);
    // SAFETY: `exec_raw` pushes `f` at 1; the closure only reads it with calls that
    // cannot raise (`lua_getupvalue` pushes an existing value into the free slots every
    // C function has) and writes plain values.
    unsafe {
        lua.exec_raw::<()>(f, |l| {
            out.0 = ffi::lua_tocfunction(l, 1);
            while !ffi::lua_getupvalue(l, 1, out.1 + 1).is_null() {
                if out.1 == 0 && ffi::lua_type(l, -1) == ffi::LUA_TUSERDATA {
                    out.2 = ffi::lua_rawlen(l, -1);
                }
                ffi::lua_pop(l, 1);
                out.1 += 1;
            }
        })?;
    }
    Ok(out)
}

/// Reads the stock libraries of a throw-away state.
fn capture() -> Result<Stock, String> {
    let read = || -> mlua::Result<Result<Stock, String>> {
        let libs = LIBRARIES.iter().fold(StdLib::NONE, |all, (_, l)| all | *l);
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        let g = lua.globals();
        let mut libraries = Vec::new();
        let (mut random_seed, mut random_state_bytes) = (None, 0);
        for (name, _) in LIBRARIES {
            let table: Table = g.raw_get(name)?;
            let mut members = Vec::new();
            for pair in table.pairs::<String, Value>() {
                let (member, value) = pair?;
                let made = match value {
                    Value::Integer(i) => Member::Integer(i),
                    Value::Number(n) => Member::Number(n),
                    Value::String(s) => Member::String(s.as_bytes().to_vec().into()),
                    Value::Function(f) => match inspect(&lua, &f)? {
                        (Some(stock), 0, _) => guarded(name, &member, stock),
                        (Some(stock), 1, bytes)
                            if name == "math"
                                && matches!(&*member, "random" | "randomseed")
                                && bytes > 0 =>
                        {
                            if member == "randomseed" {
                                random_seed = Some(stock);
                            }
                            random_state_bytes = bytes;
                            let guard = guards(name).closures.iter().find(|(n, _)| *n == member);
                            Member::Random(guard.map_or(stock, |(_, f)| *f))
                        }
                        _ => return Ok(Err(format!("{name}.{member} is not a plain C function"))),
                    },
                    other => return Ok(Err(format!("{name}.{member} is a {}", other.type_name()))),
                };
                members.push((member.into_boxed_str(), made));
            }
            libraries.push(Library::new(name, members));
        }
        let Value::Table(meta) = crate::vm::string_metatable(&lua)? else {
            return Ok(Err("strings have no metatable".into()));
        };
        let string: Table = g.raw_get("string")?;
        let mut string_meta = Vec::new();
        for pair in meta.pairs::<String, Value>() {
            let (key, value) = pair?;
            match value {
                Value::Table(t) if key == "__index" && t == string => {}
                Value::Function(f) => match inspect(&lua, &f)? {
                    (Some(stock), 0, _) => string_meta.push((key.into_boxed_str(), stock)),
                    _ => return Ok(Err(format!("string metatable: {key} is not a C function"))),
                },
                _ => return Ok(Err(format!("string metatable: unexpected {key}"))),
            }
        }
        let Some(random_seed) = random_seed else {
            return Ok(Err("math.randomseed not found".into()));
        };
        Ok(Ok(Stock {
            libraries,
            string_meta,
            random_seed,
            random_state_bytes,
        }))
    };
    read()
        .unwrap_or_else(|e| Err(e.to_string()))
        .map_err(|e| format!("reading the stock libraries: {e}"))
}

/// The stock libraries, read on first use.
fn stock() -> Result<&'static Stock, &'static str> {
    static STOCK: OnceLock<Result<Stock, String>> = OnceLock::new();
    STOCK.get_or_init(capture).as_ref().map_err(String::as_str)
}

/// Makes library `name` with exactly `members` (names the stock library lacks are left
/// out, as trimming the stock table would) and sets it as global `name` and as
/// `_LOADED[name]`; for `string`, also the locked string metatable. False, doing
/// nothing, when `globals` already holds a table `name` (the stock library was opened)
/// or the recipe does not know the library: the caller then trims the table it has.
pub(crate) fn open(lua: &Lua, globals: &Table, name: &str, members: &[&str]) -> mlua::Result<bool> {
    let stock = stock().map_err(mlua::Error::runtime)?;
    let Some(lib) = stock.libraries.iter().find(|l| l.name == name) else {
        return Ok(false);
    };
    let mut made = false;
    // SAFETY: `exec_raw` pushes `globals` at 1 and runs the closure in protected mode (a
    // memory error raised by a push or `lua_rawset` unwinds to it; the closure holds only
    // references and plain values, nothing with a destructor). Every access is raw but
    // the call of the stock `math.randomseed`, a C function that reads its upvalue (the
    // userdata of the size the stock one has) and pushes two integers. The stack holds
    // at most 5 values above the library table and the generator state.
    unsafe {
        lua.exec_raw::<()>(globals, |l| {
            ffi::lua_checkstack(l, 8);
            ffi::lua_pushlstring(l, name.as_ptr().cast(), name.len());
            let present = ffi::lua_rawget(l, 1) == ffi::LUA_TTABLE;
            ffi::lua_pop(l, 1);
            if present {
                return;
            }
            // Sized for the list: a name the stock library lacks is rare (a custom
            // profile's typo), and counting first would double the lookups.
            ffi::lua_createtable(l, 0, c_int::try_from(members.len()).unwrap_or(0));
            let mut random_state: c_int = 0;
            for member in members {
                let Some(value) = lib.get(member) else {
                    continue;
                };
                if matches!(value, Member::Random(_)) && random_state == 0 {
                    push_random_state(l, stock);
                    random_state = ffi::lua_gettop(l);
                }
                ffi::lua_pushlstring(l, member.as_ptr().cast(), member.len());
                match value {
                    Member::Function(f) => ffi::lua_pushcfunction(l, *f),
                    Member::Charged(f, cost) => charged::push(l, *f, *cost),
                    Member::Random(f) => {
                        ffi::lua_pushvalue(l, random_state);
                        ffi::lua_pushcclosure(l, *f, 1);
                    }
                    Member::Integer(i) => ffi::lua_pushinteger(l, *i),
                    Member::Number(n) => ffi::lua_pushnumber(l, *n),
                    Member::String(s) => {
                        ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                    }
                }
                ffi::lua_rawset(l, 2);
            }
            if name == "string" {
                set_string_metatable(l, stock);
            }
            ffi::lua_pushlstring(l, name.as_ptr().cast(), name.len());
            ffi::lua_pushvalue(l, 2);
            ffi::lua_rawset(l, 1);
            if ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, c"_LOADED".as_ptr()) == ffi::LUA_TTABLE
            {
                ffi::lua_pushlstring(l, name.as_ptr().cast(), name.len());
                ffi::lua_pushvalue(l, 2);
                ffi::lua_rawset(l, -3);
            }
            ffi::lua_settop(l, 1);
            made = true;
        })?;
    }
    Ok(made)
}

/// Pushes a generator state for `math.random`, seeded with unpredictable bits by the
/// stock `math.randomseed`. (`luaopen_math` seeds from the time in seconds and the
/// state's address, which the allocator hands to the next state once a state is
/// closed: fresh states made within a second drew the same numbers, so one run could
/// predict another's.)
///
/// # Safety
/// Inside a protected call, with 5 free stack slots.
unsafe fn push_random_state(l: *mut lua_State, stock: &Stock) {
    // SAFETY: caller's contract; the stock `math.randomseed` reads its first upvalue as
    // a userdata of `random_state_bytes`, which it gets, takes two integers and returns
    // two values, dropped.
    unsafe {
        ffi::lua_newuserdatauv(l, stock.random_state_bytes, 0);
        ffi::lua_pushvalue(l, -1);
        ffi::lua_pushcclosure(l, stock.random_seed, 1);
        ffi::lua_pushinteger(l, crate::vm::seed::random_u64() as ffi::lua_Integer);
        ffi::lua_pushinteger(l, crate::vm::seed::random_u64() as ffi::lua_Integer);
        ffi::lua_call(l, 2, 0);
    }
}

/// Gives strings their metatable: the stock metamethods, `__index` the `string` table at
/// index 2, `__metatable` false (the lock the environment puts on the stock one).
///
/// # Safety
/// Inside a protected call, with 4 free stack slots and the `string` table at index 2.
unsafe fn set_string_metatable(l: *mut lua_State, stock: &Stock) {
    // SAFETY: caller's contract; raw sets on a new table, then `lua_setmetatable` on a
    // string, which sets the metatable of all strings.
    unsafe {
        let size = c_int::try_from(stock.string_meta.len() + 2).unwrap_or(0);
        ffi::lua_createtable(l, 0, size);
        for (key, f) in &stock.string_meta {
            ffi::lua_pushlstring(l, key.as_ptr().cast(), key.len());
            ffi::lua_pushcfunction(l, *f);
            ffi::lua_rawset(l, -3);
        }
        ffi::lua_pushvalue(l, 2);
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_pushboolean(l, 0);
        ffi::lua_setfield(l, -2, c"__metatable".as_ptr());
        ffi::lua_pushstring(l, c"".as_ptr());
        ffi::lua_insert(l, -2);
        ffi::lua_setmetatable(l, -2);
        ffi::lua_pop(l, 1);
    }
}
