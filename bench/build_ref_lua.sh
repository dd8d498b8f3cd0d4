#!/bin/sh
# build_ref_lua.sh: build a plain Lua interpreter from the *same* Lua sources
# that moonjail embeds (the lua-src crate pinned in Cargo.lock, as vendored by
# mlua), so that compare.py can separate sandbox overhead from differences
# between Lua releases (Debian's lua5.4 may be an older 5.4.x).  Like the
# stock lua.c it runs the collector in generational mode.
#
#   sh bench/build_ref_lua.sh            # prints the path of the interpreter
#   python3 bench/compare.py --lua bench/.ref-lua/lua
#
# Needs a C compiler and the crate sources in the cargo registry (run
# `cargo fetch` first if they are missing).  Output goes to bench/.ref-lua/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
ver=$(awk '/^name = "lua-src"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")
[ -n "$ver" ] || { echo "lua-src not found in Cargo.lock" >&2; exit 1; }
src=
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/lua-src-"$ver"/lua-5.4*; do
  [ -f "$d/lua.h" ] && src=$d
done
[ -n "$src" ] || { echo "lua-src $ver sources not in the cargo registry; run 'cargo fetch'" >&2; exit 1; }
out="$here/.ref-lua"
mkdir -p "$out"
cat > "$out/main.c" <<'C'
/* Minimal stand-alone host: `lua -v` or `lua FILE [ARGS...]`. */
#include <stdio.h>
#include <string.h>
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s FILE | -v\n", argv[0]); return 2; }
  if (strcmp(argv[1], "-v") == 0) { puts(LUA_RELEASE " (reference build of moonjail's vendored sources)"); return 0; }
  lua_State *L = luaL_newstate();
  lua_gc(L, LUA_GCSTOP);  /* as lua.c does: stop the GC while loading libraries, */
  luaL_openlibs(L);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);  /* then run it in generational mode */
  lua_newtable(L);
  for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
  lua_setglobal(L, "arg");
  if (luaL_dofile(L, argv[1]) != LUA_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  lua_close(L);
  return 0;
}
C
${CC:-cc} -O2 -DLUA_USE_LINUX -I"$src" -o "$out/lua" "$out/main.c" \
  $(ls "$src"/*.c | grep -v -e '/lua\.c$' -e '/luac\.c$' -e '/onelua\.c$') -lm -ldl
"$out/lua" -v >&2
echo "$out/lua"
