-- binary_trees.lua: allocate and walk many short-lived binary trees.
-- Stresses: table allocation, the garbage collector, recursion.
local function bottom_up(depth)
  if depth == 0 then return {} end
  depth = depth - 1
  return { bottom_up(depth), bottom_up(depth) }
end

local function check(tree)
  local left = tree[1]
  if left then
    return 1 + check(left) + check(tree[2])
  end
  return 1
end

local MIN_DEPTH = 4
local MAX_DEPTH = 15
local checksum = 0

local stretch = MAX_DEPTH + 1
checksum = checksum + check(bottom_up(stretch))

local long_lived = bottom_up(MAX_DEPTH)

for depth = MIN_DEPTH, MAX_DEPTH, 2 do
  local iterations = 1 << (MAX_DEPTH - depth + MIN_DEPTH)
  local sum = 0
  for _ = 1, iterations do
    sum = sum + check(bottom_up(depth))
  end
  checksum = checksum + sum * (depth + 1)
end

checksum = checksum + check(long_lived)
print(string.format("binary_trees max_depth=%d checksum=%d", MAX_DEPTH, checksum))
