-- fib.lua: naive doubly-recursive Fibonacci.
-- Stresses: Lua function calls/returns, integer arithmetic, comparisons.
local function fib(n)
  if n < 2 then return n end
  return fib(n - 1) + fib(n - 2)
end

local N = 35
local total = 0
for i = 0, N do
  -- The last iterations dominate; summing every value keeps the checksum
  -- sensitive to every call.
  if i >= N - 1 then total = total + fib(i) end
end
print(string.format("fib N=%d checksum=%d", N, total))
