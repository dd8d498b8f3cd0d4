-- coroutine_heavy.lua: generators and producer/consumer pipelines.
-- Stresses: coroutine creation, resume/yield context switches (with values
-- passed both ways), coroutine.wrap generators chained into pipelines,
-- coroutine.status/isyieldable.
local co_create, co_resume, co_yield, co_wrap, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.wrap, coroutine.status

-- 1. Prime sieve as a chain of coroutine.wrap filters (classic shape).
-- Each filter nests one more resume inside the previous one, and Lua limits
-- nested C calls (LUAI_MAXCCALLS = 200), so the chain is kept short (< 60).
local function gen_numbers(from)
  return co_wrap(function()
    local n = from
    while true do co_yield(n); n = n + 1 end
  end)
end

local function filter(p, source)
  return co_wrap(function()
    while true do
      local n = source()
      if n % p ~= 0 then co_yield(n) end
    end
  end)
end

local function sieve(count)
  local src = gen_numbers(2)
  local sum = 0
  for _ = 1, count do
    local p = src()
    sum = sum + p
    src = filter(p, src)
  end
  return sum
end

-- 2. Generator pipeline: range -> map -> take-while, consumed by a for loop.
local function range(n)
  return co_wrap(function()
    for i = 1, n do co_yield(i) end
  end)
end

local function map(f, gen)
  return co_wrap(function()
    for v in gen do co_yield(f(v)) end
  end)
end

-- 3. Explicit resume/yield with values flowing in both directions.
local function accumulator()
  return co_create(function(first)
    local total = first
    while true do
      assert(coroutine.isyieldable())
      local x = co_yield(total)
      if x == nil then return total end
      total = total + x
    end
  end)
end

-- 4. Many short-lived coroutines (creation + completion cost).
local function many_short(n)
  local s = 0
  for i = 1, n do
    local co = co_create(function(a, b)
      local c = co_yield(a + b)
      return c * 2
    end)
    local _, v1 = co_resume(co, i, 1)
    local _, v2 = co_resume(co, v1)
    assert(co_status(co) == "dead")
    s = s + v2
  end
  return s
end

local checksum = 0
local ROUNDS = 24
for round = 1, ROUNDS do
  for i = 1, 40 do checksum = checksum + sieve(40 + (i + round) % 10) end

  local sum = 0
  for v in map(function(x) return x * x % 1000 end, range(60000)) do
    sum = sum + v
  end
  checksum = checksum + sum

  local acc = accumulator()
  local ok, total = co_resume(acc, round)
  for i = 1, 60000 do
    ok, total = co_resume(acc, i % 7)
    assert(ok)
  end
  ok, total = co_resume(acc, nil)
  assert(ok and co_status(acc) == "dead")
  checksum = checksum + total

  checksum = checksum + many_short(20000)
end

print(string.format("coroutine_heavy rounds=%d checksum=%d", ROUNDS, checksum))
