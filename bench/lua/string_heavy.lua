-- string_heavy.lua: string building and pattern matching.
-- Stresses: string creation/interning, string.format, table.concat,
-- gsub/find/match/gmatch with Lua patterns, string.rep/sub/byte/char,
-- upper/lower/reverse, and the GC pressure all of that causes.
local format, concat = string.format, table.concat
local byte, char, sub, rep = string.byte, string.char, string.sub, string.rep

-- Deterministic pseudo-random numbers (no math.random).
local seed = 12345
local function rand(n)
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed % n
end

-- Order-independent string hash helper (FNV-1a over bytes).
local function hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ byte(s, i)) * 16777619) & 0xffffffff
  end
  return h
end

local SYLLABLES = { "lu", "na", "moon", "jail", "ka", "ri", "so", "te", "vo", "xi", "qu", "ze" }

local function make_word()
  local parts = {}
  for i = 1, 1 + rand(3) do parts[i] = SYLLABLES[1 + rand(#SYLLABLES)] end
  return concat(parts)
end

local function make_line(i)
  local words = {}
  for w = 1, 4 + rand(8) do words[w] = make_word() end
  return format("%05d|%s|%d.%02d|key=%s;", i, concat(words, " "), rand(1000), rand(100),
    make_word())
end

local ROUNDS, LINES = 40, 2000
local checksum = 0
local word_total = 0

for round = 1, ROUNDS do
  -- 1. Build a document line by line.
  local lines = {}
  for i = 1, LINES do lines[i] = make_line(i) end
  local doc = concat(lines, "\n")
  checksum = (checksum + hash(sub(doc, 1, 4096)) + #doc) & 0xffffffff

  -- 2. gmatch: count words (string keys in a hash table).
  local counts = {}
  for word in doc:gmatch("%a+") do
    counts[word] = (counts[word] or 0) + 1
  end
  local distinct, acc = 0, 0
  for word, n in pairs(counts) do
    distinct = distinct + 1
    acc = (acc + hash(word) * n) & 0xffffffff
  end
  word_total = word_total + distinct
  checksum = (checksum ~ acc) & 0xffffffff

  -- 3. gsub with a pattern and captures, a replacement function and a table.
  local swapped, nswap = doc:gsub("(%d+)%.(%d+)", "%2.%1")
  local upper_keys = swapped:gsub("key=(%a+);", function(k) return "KEY=" .. k:upper() .. ";" end)
  local subst = upper_keys:gsub("%a%a", { lu = "LU", na = "NA", ka = "KA" })
  checksum = (checksum + nswap + hash(sub(subst, -2048)) + #subst) & 0xffffffff

  -- 4. find/match: parse every line back with anchored patterns.
  local pos, parsed, sum = 1, 0, 0
  while true do
    local s, e, id, text, a, b = doc:find("(%d+)|([^|]*)|(%d+)%.(%d+)|", pos)
    if not s then break end
    parsed = parsed + 1
    sum = sum + tonumber(id) + tonumber(a) * 100 + tonumber(b) + #text
    local key = doc:match("key=(%a+);", e)
    if key then sum = sum + #key end
    pos = e + 1
  end
  assert(parsed == LINES, "parse mismatch")
  checksum = (checksum + sum) & 0xffffffff

  -- 5. Byte-level work: rep/sub/byte/char/reverse/lower.
  local pieces = {}
  for i = 1, 400 do
    local w = make_word()
    local r = rep(w, 1 + i % 5, "-")
    local bytes = { byte(r, 1, -1) }
    for j = 1, #bytes do bytes[j] = bytes[j] ~ 1 end
    local flipped = char(table.unpack(bytes))
    pieces[i] = sub(flipped, 2, -2):reverse():lower()
  end
  local blob = concat(pieces, ",")
  checksum = (checksum + hash(blob) + round) & 0xffffffff
end

print(format("string_heavy rounds=%d words=%d checksum=%d", ROUNDS, word_total, checksum))
