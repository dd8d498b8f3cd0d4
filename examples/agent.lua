-- The LuaExecutor pattern: an LLM-written plan defines run(context), reads what it
-- needs from the context, and returns the context enriched with its findings.
-- Run it: cargo run --release -- run examples/agent.lua --input @examples/context.json
function run(context)
  local total, names = 0, {}
  for _, order in ipairs(context.orders) do
    total = total + order.amount
    names[#names + 1] = order.customer
  end
  table.sort(names)
  context.summary = {
    orders = #context.orders,
    total = total,
    customers = table.concat(names, ", "),
    report = json.encode({ total = total }),
  }
  print(string.format("summarised %d orders", #context.orders))
  return context
end
