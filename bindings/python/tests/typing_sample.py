"""A typed use of moonjail's API, checked with ``mypy --strict`` by test_typing.py.

Not a test module (pytest collects ``test_*.py`` only); it runs too, so that what type
checks is also what works.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Dict, List, Optional

import moonjail


def lookup(args: Dict[str, Any]) -> Dict[str, Any]:
    """The forecast for a city."""
    if args["city"] == "Atlantis":
        raise moonjail.ToolError("no forecast for Atlantis")
    return {"city": args["city"], "forecast": "sunny"}


@moonjail.tool(parameters={"type": "object", "properties": {"q": {"type": "string"}}})
def search(args: Dict[str, Any]) -> List[str]:
    """Searches."""
    return []


def add(a: int, b: int) -> int:
    return a + b


def make_sandbox() -> moonjail.Sandbox:
    return moonjail.Sandbox(
        "standard",
        memory_limit="16MiB",
        timeout=datetime.timedelta(seconds=2),
        instruction_limit=10_000_000,
        output_limit=1 << 20,
        output_overflow="truncate",
        source_limit="1MiB",
        result_limit=None,
        result_depth=32,
        tools={
            "weather.lookup": moonjail.Tool(
                lookup,
                parameters={"type": "object", "required": ["city"]},
                max_calls=5,
            ),
            "web.search": search,
            "calc.add": add,
        },
        tool_call_limit=100,
        deterministic=True,
        seed=1,
    )


def use_outcome(sb: moonjail.Sandbox) -> int:
    out: moonjail.Outcome = sb.run("return calc.add(table.unpack(...))", [1, 2], lint=True)
    assert out.ok
    results: List[Any] = out.results
    stats: Dict[str, Any] = out.stats
    assert stats["tool_calls"] == 1 and len(results) == 1
    calls: List[Dict[str, Any]] = out.tool_calls
    assert calls[0]["ok"] is True
    text: str = out.to_json()
    doc: Dict[str, Any] = out.to_dict()
    assert text and doc["ok"]
    value: int = out.raise_for_error().result
    return value


def use_errors(sb: moonjail.Sandbox) -> Optional[str]:
    out = sb.run("error({code = 42})")
    err = out.error
    if isinstance(err, moonjail.LuaRuntimeError):
        code: Any = err.value["code"]
        assert code == 42
        line: Optional[int] = err.line
        frames: List[Dict[str, Any]] = err.traceback
        assert line == 1 and frames
    try:
        sb.eval("1 +")
    except moonjail.LuaSyntaxError as e:
        hint: Optional[str] = e.hint
        kind: str = e.kind
        assert kind == "syntax"
        return hint
    except moonjail.SandboxError:
        raise
    return None


def use_session(sb: moonjail.Sandbox) -> bool:
    with sb.session() as s:
        s.execute("function greet(name) return 'Hello, ' .. name end")
        greeting: Any = s.call("greet", "Ada")
        assert greeting == "Hello, Ada"
        out: moonjail.Outcome = s.exec("return 1", timeout=0.5, instruction_limit=1000)
        assert out.ok
        more: moonjail.Outcome = s.call_outcome("greet", "B")
        assert more.result == "Hello, B"
        assert s.eval("1 + 1") == 2
        exists: bool = s.function_exists("greet") and s.has_function("greet")
        opened: bool = s.is_open
        assert s.closed_reason is None
        return exists and opened


async def use_async(sb: moonjail.Sandbox) -> List[Any]:
    token = moonjail.CancelToken()
    assert not token.cancelled
    first = sb.run("return 1", cancel=token)
    outs = await asyncio.gather(*(sb.run_async("return ...", i) for i in range(3)))
    value = await sb.eval_async("2 + 2")
    return [first.result, [o.result for o in outs], value]


def tool_with_deadline() -> Optional[float]:
    try:
        return moonjail.time_left()
    except RuntimeError:
        return None


def main() -> None:
    sb = make_sandbox()
    assert use_outcome(sb) == 3
    assert use_errors(sb) is None  # "1 +" has no hint
    assert use_session(sb)
    assert asyncio.run(use_async(sb)) == [1, [0, 1, 2], 4]
    assert tool_with_deadline() is None
    limits: Dict[str, Any] = sb.limits
    assert limits["result_depth"] == 32
    assert sb.profile == "standard" and not sb.isolated
    stubs: str = sb.lua_stubs()
    catalogue: Dict[str, Any] = sb.tool_catalogue()
    report: Dict[str, Any] = sb.lint("return 1")
    assert "weather.lookup" in stubs and catalogue["tools"] and report["findings"] == []
    assert moonjail.run("return 1").result == 1
    try:
        moonjail.Sandbox(memory_limit=0)
    except moonjail.ConfigError as e:
        assert isinstance(e, ValueError)


if __name__ == "__main__":
    main()
    print("ok")
