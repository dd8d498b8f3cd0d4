-- The LuaExecutor pattern with host tools: an LLM-written `run(context)` that calls a
-- web API through the `http` tool, decodes the answer with `json`, writes what it found
-- into the context and returns it.
--
-- Run it against the local fixture server (see the README, "Host tools"):
--   cargo run --example fixture_server -- 8765 &
--   cargo run -- run examples/agent_http.lua --allow-http 127.0.0.1:8765 \
--       --input '{"city": "Lyon"}' --json

function run(context)
  local base = context.base_url or "http://127.0.0.1:8765"
  local response = http.get(base .. "/weather?city=" .. context.city,
                            {accept = "application/json"})
  if response.status ~= 200 then
    error("the weather service answered " .. response.status .. ": " .. response.body)
  end
  local weather = json.decode(response.body)
  context.forecast = weather.forecast
  context.temperature_c = weather.temperature_c
  context.summary = string.format("%s: %s, %d °C", weather.city, weather.forecast,
                                  weather.temperature_c)
  return context
end
