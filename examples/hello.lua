-- The smallest moonjail script: print something, return a result.
-- Run it: cargo run --release -- run examples/hello.lua
local input = ...
print("hello from the sandbox")
return { greeting = "hello", input = input, answer = 6 * 7 }
