-- Under --profile minimal there are no metatables, no raw access, no _G, no coroutines.
-- Run it: cargo run --release -- run --profile minimal examples/minimal.lua
-- (and compare with the default profile: cargo run --release -- run examples/minimal.lua)
print("math.pi is " .. math.pi)
return {
  setmetatable = setmetatable ~= nil,
  rawget = rawget ~= nil,
  _G = _G ~= nil,
  load = load ~= nil,
  coroutine = coroutine ~= nil,
  io = io ~= nil,
  require = require ~= nil,
}
