-- peak_heap.lua: development helper (NOT a benchmark, not run by compare.py).
-- Runs a benchmark under plain lua5.4 and reports the peak Lua heap as seen by
-- collectgarbage("count"), sampled every few hundred VM instructions by a
-- debug count hook.  Usage:  lua5.4 bench/peak_heap.lua bench/lua/fib.lua
local path = assert(arg[1], "usage: lua5.4 peak_heap.lua FILE.lua")
local chunk = assert(loadfile(path))
local peak = collectgarbage("count")
debug.sethook(function()
  local kb = collectgarbage("count")
  if kb > peak then peak = kb end
end, "", 200)
local t0 = os.clock()
chunk()
local cpu = os.clock() - t0
debug.sethook()
local kb = collectgarbage("count")
if kb > peak then peak = kb end
io.stderr:write(string.format("%s: peak Lua heap %.0f KiB (cpu %.2fs with hook)\n",
  path, peak, cpu))
