//! The library tables of a fresh state are made from a recipe (stdlib/recipe.rs), not by
//! the stock `luaopen_*` functions; a deterministic state still opens the stock ones and
//! trims them. Scripts must not tell the two apart: the same members of the same types,
//! the same values, the same error messages (which name functions through the
//! registry's `_LOADED`), the same string metatable.

use moonjail::{Determinism, Profile, Sandbox};
use serde_json::Value as Json;

const DET: Determinism = Determinism {
    seed: 7,
    timestamp: 1_700_000_000,
};

const SCRIPT: &str = r#"
local out = {}
local names = {}
for k, v in next, _ENV do
  names[#names + 1] = k .. ":" .. type(v)
  if type(v) == "table" and k ~= "_G" then
    for m, w in next, v do names[#names + 1] = k .. "." .. tostring(m) .. ":" .. type(w) end
  end
end
table.sort(names)
out[#out + 1] = table.concat(names, " ")
local function try(f, ...) return select(2, pcall(f, ...)) end
out[#out + 1] = try(table.insert)
out[#out + 1] = try(table.concat, {{}})
out[#out + 1] = try(string.rep)
out[#out + 1] = try(string.format, "%d", "x")
out[#out + 1] = try(string.byte, {})
out[#out + 1] = try(string.find, "a", "[")
out[#out + 1] = try(math.floor, "x")
out[#out + 1] = try(math.random, 2, 1)
out[#out + 1] = try(math.random, 1, 2, 3)
if coroutine then out[#out + 1] = try(coroutine.resume, 1) end
out[#out + 1] = try(function() return string.rep() end)
out[#out + 1] = try(function() return ("x"):rep({}) end)
out[#out + 1] = try(function() return math.abs() end)
if utf8 then
  out[#out + 1] = try(utf8.char, -1)
  out[#out + 1] = try(utf8.len, 1, 5)
  out[#out + 1] = table.concat({utf8.charpattern:byte(1, -1)}, ",")
end
if os then out[#out + 1] = try(os.difftime) end
out[#out + 1] = tostring(math.pi) .. " " .. tostring(math.huge) .. " "
  .. math.maxinteger .. " " .. math.mininteger .. " " .. math.type(math.random(3))
out[#out + 1] = tostring(getmetatable and getmetatable("") or "no getmetatable")
out[#out + 1] = ("abc"):upper() .. ("10" + 1) .. ("3" * "4") .. (-"2") .. ("7" // 2)
out[#out + 1] = try(function() return "a" + 1 end)
out[#out + 1] = tostring(("x").len == string.len)
math.randomseed(42)
out[#out + 1] = math.random(1, 1000) .. " " .. math.random(1, 1000)
return table.concat(out, "\n")
"#;

#[test]
fn library_tables_are_the_stock_ones_to_a_script() {
    for profile in Profile::ALL {
        let fresh = Sandbox::builder().profile(profile).build().unwrap();
        let stock = Sandbox::builder()
            .profile(profile)
            .deterministic(Some(DET))
            .build()
            .unwrap();
        let got = fresh.run(SCRIPT, &Json::Null).result.unwrap();
        let expected = stock.run(SCRIPT, &Json::Null).result.unwrap();
        assert_eq!(got, expected, "{profile}");
        let text = got.as_str().unwrap_or_default();
        for needle in [
            "bad argument #1 to 'table.insert' (table expected, got no value)",
            "bad argument #1 to 'rep' (string expected, got no value)",
            "string.format:",
            "math.pi:number",
        ] {
            assert!(text.contains(needle), "{profile}: no {needle:?} in\n{text}");
        }
    }
}

#[test]
fn fresh_states_draw_unrelated_random_numbers() {
    // Stock Lua seeds `math.random` from the time in seconds and the state's address,
    // which the allocator gives the next state once one is closed: runs made within the
    // same second drew the same numbers, so one run could predict another's. Each state
    // is seeded with unpredictable bits, in process and isolated, runs and sessions.
    const DRAW: &str = "return math.random(0, math.maxinteger)";
    for (mode, sb) in crate::support::both_sandboxes(Sandbox::builder) {
        let mut draws: Vec<Json> = (0..4)
            .map(|_| sb.run(DRAW, &Json::Null).result.unwrap())
            .collect();
        for _ in 0..2 {
            let mut s = sb.session().unwrap();
            draws.push(s.exec(DRAW).result.unwrap());
        }
        let mut distinct = draws.clone();
        distinct.sort_by_key(|v| v.to_string());
        distinct.dedup();
        assert_eq!(distinct.len(), draws.len(), "{mode}: {draws:?}");
    }
}

#[test]
fn reseeding_without_arguments_draws_unrelated_random_numbers() {
    // Stock `math.randomseed()` seeds from the time in seconds and the state's address:
    // the same in runs made within a second, as with the initial seed above. Without
    // arguments it seeds from unpredictable bits, and returns them, as stock Lua does.
    const RESEED: &str = "local a, b = math.randomseed() \
        assert(math.type(a) == 'integer' and math.type(b) == 'integer') \
        return math.random(0, math.maxinteger)";
    for (mode, sb) in crate::support::both_sandboxes(Sandbox::builder) {
        let mut draws: Vec<Json> = (0..6)
            .map(|_| sb.run(RESEED, &Json::Null).result.unwrap())
            .collect();
        let mut s = sb.session().unwrap();
        draws.push(s.exec(RESEED).result.unwrap());
        draws.push(s.exec(RESEED).result.unwrap());
        let mut distinct = draws.clone();
        distinct.sort_by_key(|v| v.to_string());
        distinct.dedup();
        assert_eq!(distinct.len(), draws.len(), "{mode}: {draws:?}");
        // With arguments it seeds as stock Lua: the same seed, the same numbers.
        let seeded = "math.randomseed(42, 7) return {math.random(1 << 40), math.random(1 << 40)}";
        assert_eq!(
            sb.run(seeded, &Json::Null).result.unwrap(),
            sb.run(seeded, &Json::Null).result.unwrap(),
            "{mode}"
        );
    }
}
