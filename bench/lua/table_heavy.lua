-- table_heavy.lua: array and hash table manipulation.
-- Stresses: table.insert/remove (end and middle), table.sort with and without
-- a comparator, hash tables with string keys (insert/lookup/delete),
-- ipairs/pairs/next iteration, table.concat/unpack, length operator.
local insert, remove, sort, concat = table.insert, table.remove, table.sort, table.concat

local seed = 42
local function rand(n)
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed % n
end

local ROUNDS = 12
local N = 20000
local checksum = 0

for round = 1, ROUNDS do
  -- 1. Array: append, insert/remove in the middle, pop.
  local arr = {}
  for i = 1, N do insert(arr, rand(1000000)) end
  for i = 1, 300 do insert(arr, 1 + rand(#arr), i) end
  local removed = 0
  for _ = 1, 300 do removed = removed + remove(arr, 1 + rand(#arr)) end
  for _ = 1, 1000 do removed = removed + remove(arr) end
  checksum = (checksum + removed + #arr) & 0xffffffff

  -- 2. Sort numbers ascending (default) and descending (comparator).
  sort(arr)
  for i = 2, #arr, 97 do assert(arr[i - 1] <= arr[i]) end
  local s = 0
  for i, v in ipairs(arr) do s = s + i * (v % 1009) end
  sort(arr, function(a, b) return a > b end)
  s = s + arr[1] - arr[#arr]
  checksum = (checksum + s) & 0xffffffff

  -- 3. Records sorted by a total order (ties broken by a unique id, so the
  --    result does not depend on the sort's pivot choice).
  local recs = {}
  for i = 1, N // 4 do
    recs[i] = { id = i, score = rand(100), name = "user" .. rand(5000) }
  end
  sort(recs, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    if a.name ~= b.name then return a.name < b.name end
    return a.id < b.id
  end)
  local top = {}
  for i = 1, 20 do top[i] = recs[i].name end
  checksum = (checksum + #concat(top, ",") + recs[1].id + recs[#recs].id) & 0xffffffff

  -- 4. Hash table with string keys: insert, update, lookup, delete.
  local h = {}
  for i = 1, N do
    local k = "k" .. rand(N)
    h[k] = (h[k] or 0) + i
  end
  local hits = 0
  for i = 1, N do
    local v = h["k" .. i]
    if v then hits = hits + 1 end
  end
  -- delete every key whose value is odd, while iterating (allowed for
  -- assignments of nil to existing fields)
  for k, v in pairs(h) do
    if v % 2 == 1 then h[k] = nil end
  end
  local count, total = 0, 0
  for _, v in pairs(h) do count = count + 1; total = total + v end
  -- walk with next() too
  local k, v = next(h)
  local nexts = 0
  while k do nexts = nexts + 1; k, v = next(h, k) end
  assert(nexts == count)
  checksum = (checksum + hits + count + total) & 0xffffffff

  -- 5. Mixed tables, nested tables, unpack and select.
  local grid = {}
  for y = 1, 100 do
    local row = {}
    for x = 1, 100 do row[x] = (x * y + round) % 17 end
    grid[y] = row
  end
  local gsum = 0
  for _, row in ipairs(grid) do
    gsum = gsum + select("#", table.unpack(row, 1, 50)) + row[50] + row[100]
  end
  checksum = (checksum + gsum) & 0xffffffff
end

print(string.format("table_heavy rounds=%d checksum=%d", ROUNDS, checksum))
