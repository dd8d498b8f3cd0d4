-- closure_heavy.lua: closures, upvalues and metatable-based objects.
-- Stresses: closure creation, upvalue reads/writes (shared and open/closed
-- upvalues), method calls through __index chains (class inheritance),
-- metamethods (__add, __eq, __lt, __len, __call, __index/__newindex
-- functions, __tostring), setmetatable/getmetatable.

-- 1. Closures and upvalues -------------------------------------------------
local function make_counter(step)
  local n = 0
  return function() n = n + step; return n end,
         function() return n end
end

local function compose(f, g) return function(x) return f(g(x)) end end

local function closures(rounds)
  local total = 0
  for r = 1, rounds do
    local inc, get = make_counter(r % 5 + 1)
    for _ = 1, 20 do inc() end
    total = total + get()
    -- a fresh closure per iteration capturing the loop variable
    local fs = {}
    for i = 1, 10 do fs[i] = function(x) return x * i + r end end
    local f = fs[1]
    for i = 2, 10 do f = compose(fs[i], f) end
    total = (total + f(1)) & 0xffffffff
  end
  return total
end

-- 2. Classes with inheritance ----------------------------------------------
local Vec = {}
Vec.__index = Vec

function Vec.new(x, y) return setmetatable({ x = x, y = y }, Vec) end
function Vec.__add(a, b) return Vec.new(a.x + b.x, a.y + b.y) end
function Vec.__eq(a, b) return a.x == b.x and a.y == b.y end
function Vec.__lt(a, b) return a:len2() < b:len2() end
function Vec.__tostring(v) return "(" .. v.x .. "," .. v.y .. ")" end
function Vec:len2() return self.x * self.x + self.y * self.y end
function Vec:scale(k) return Vec.new(self.x * k, self.y * k) end

local Shape = {}
Shape.__index = Shape
function Shape.new(name) return setmetatable({ name = name, moves = 0 }, Shape) end
function Shape:area() return 0 end
function Shape:move() self.moves = self.moves + 1; return self end
function Shape:describe() return self.name .. ":" .. self:area() end

local Rect = setmetatable({}, { __index = Shape })
Rect.__index = Rect
function Rect.new(w, h)
  local o = Shape.new("rect")
  o.w, o.h = w, h
  return setmetatable(o, Rect)
end
function Rect:area() return self.w * self.h end

local Square = setmetatable({}, { __index = Rect })
Square.__index = Square
function Square.new(s)
  local o = Rect.new(s, s)
  o.name = "square"
  return setmetatable(o, Square)
end
function Square:diagonal2() return 2 * self.w * self.w end

local function objects(n)
  local acc = Vec.new(0, 0)
  local shapes = {}
  local total = 0
  for i = 1, n do
    local v = Vec.new(i % 7, i % 11)
    acc = acc + v:scale(2)
    if v == Vec.new(3, 3) then total = total + 1 end
    if v < acc then total = total + 1 end
    local s
    if i % 3 == 0 then s = Square.new(i % 13)
    elseif i % 3 == 1 then s = Rect.new(i % 5, i % 9)
    else s = Shape.new("blob") end
    s:move():move()
    total = total + s:area() + s.moves
    if getmetatable(s) == Square then total = total + s:diagonal2() end
    shapes[i % 64 + 1] = s
  end
  local d = 0
  for _, s in ipairs(shapes) do d = d + #s:describe() end
  return (total + acc.x + acc.y + d + #tostring(acc)) & 0xffffffff
end

-- 3. Proxies: __index/__newindex functions, __len, __call --------------------
local function make_proxy()
  local store, writes = {}, 0
  return setmetatable({}, {
    __index = function(_, k) return store[k] or 0 end,
    __newindex = function(_, k, v) writes = writes + 1; store[k] = v end,
    __len = function() return writes end,
    __call = function(_, k, d) store[k] = (store[k] or 0) + d; return store[k] end,
  })
end

local function proxies(n)
  local p = make_proxy()
  local total = 0
  for i = 1, n do
    local k = i % 100
    p[k] = p[k] + i
    total = total + p(k, 1)
  end
  return (total + #p) & 0xffffffff
end

local ROUNDS = 35
local checksum = 0
for _ = 1, ROUNDS do
  checksum = (checksum + closures(4000)) & 0xffffffff
  checksum = (checksum + objects(12000)) & 0xffffffff
  checksum = (checksum + proxies(30000)) & 0xffffffff
end
print(string.format("closure_heavy rounds=%d checksum=%d", ROUNDS, checksum))
