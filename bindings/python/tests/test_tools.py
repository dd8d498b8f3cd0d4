"""Python callables as host tools: values, errors, schemas, quotas, audit, descriptions,
deadlines, and tools in sessions and isolated workers."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from typing import Any, List

import pytest

import moonjail

WEATHER_PARAMS = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
}


def test_values_cross_both_ways() -> None:
    seen: List[Any] = []

    def echo(*args: Any) -> Any:
        seen.append(args)
        return list(args)

    sb = moonjail.Sandbox(tools={"echo": echo})
    out = sb.run("return echo(1, 2.5, 'a', true, {1, 2}, {k = 'v'}, {})")
    assert out.result == [1, 2.5, "a", True, [1, 2], {"k": "v"}, {}]
    assert seen == [(1, 2.5, "a", True, [1, 2], {"k": "v"}, {})]
    assert [type(v) for v in seen[0][:2]] == [int, float]


def test_return_values() -> None:
    sb = moonjail.Sandbox(
        tools={
            "v.none": lambda: None,
            "v.tuple": lambda: (1, (2, 3)),
            "v.intkeys": lambda: {1: "a"},
            "v.nulls": lambda: [None, 1],
            "v.big": lambda: 2**63 - 1,
            "v.text": lambda: "é\u2028",
        }
    )
    out = sb.run(
        "return v.none() == nil, v.tuple()[2][1], v.intkeys()['1'], #v.nulls(),"
        " v.nulls()[1] == json.null, v.big() == math.maxinteger, v.text()"
    )
    assert out.results == [True, 2, "a", 2, True, True, "é\u2028"]


def test_dotted_names_and_read_only_namespaces() -> None:
    sb = moonjail.Sandbox(tools={"a.b.c": lambda: "deep", "top": lambda: "top", "a.x": lambda: 1})
    assert sb.eval("a.b.c()") == "deep"
    assert sb.eval("top()") == "top"
    for code in ("a.x = 1", "a.y = 2", "rawset(a, 'x', 1)", "setmetatable(a, {})"):
        out = sb.run(code)
        assert out.error is not None and out.error.kind == "runtime", code
    assert sorted(sb.eval("local n = {} for k in pairs(a) do n[#n + 1] = k end return n")) == ["b", "x"]
    assert isinstance(sb.eval("getmetatable(a)"), str)
    assert sb.eval("a = 5 return a") == 5  # replaces only the script's own global
    assert sb.eval("a.x()") == 1  # and the next run has it back


def test_exception_becomes_a_catchable_error() -> None:
    def boom(*args: Any) -> Any:
        raise ValueError("bad thing")

    sb = moonjail.Sandbox(tools={"x.boom": boom})
    out = sb.run("local ok, err = pcall(x.boom) return ok, err")
    assert out.results == [False, "x.boom: ValueError: bad thing"]
    assert "Traceback" not in out.results[1]
    call = out.tool_calls[0]
    assert call["name"] == "x.boom" and call["ok"] is False
    assert call["error"] == "ValueError: bad thing"
    # uncaught, it fails the run as runtime
    err = sb.run("x.boom()").error
    assert isinstance(err, moonjail.LuaRuntimeError)
    assert "x.boom: ValueError: bad thing" in err.message
    assert "Traceback" not in err.message and "File " not in err.message


def test_exception_without_message() -> None:
    def empty(*args: Any) -> Any:
        raise RuntimeError()

    sb = moonjail.Sandbox(tools={"x.empty": empty})
    assert sb.run("return select(2, pcall(x.empty))").result == "x.empty: RuntimeError"


def test_wrong_arity_is_a_tool_error() -> None:
    def f(a: Any, b: Any = 2) -> Any:
        return [a, b]

    sb = moonjail.Sandbox(tools={"t.f": f})
    assert sb.eval("t.f(1)") == [1, 2]
    ok, msg = sb.run("return pcall(t.f)").results
    assert ok is False and msg.startswith("t.f: TypeError:")


def test_tool_error_exact_message() -> None:
    def lookup(args: Any) -> Any:
        if args["city"] == "Atlantis":
            raise moonjail.ToolError("no forecast for Atlantis")
        return {"city": args["city"], "forecast": "sunny"}

    sb = moonjail.Sandbox(tools={"weather.lookup": lookup})
    out = sb.run(
        "local ok, err = pcall(weather.lookup, {city = 'Atlantis'})"
        " return {weather.lookup({city = 'Lyon'}).forecast, err}"
    )
    assert out.result == ["sunny", "weather.lookup: no forecast for Atlantis"]
    assert [c["ok"] for c in out.tool_calls] == [False, True]
    assert out.tool_calls[0]["error"] == "no forecast for Atlantis"
    err = sb.run("weather.lookup({city = 'Atlantis'})").error
    assert err.message == "script:1: weather.lookup: no forecast for Atlantis"


def test_non_json_return_is_a_tool_error() -> None:
    sb = moonjail.Sandbox(tools={"x.obj": lambda: object(), "x.nan": lambda: float("nan"),
                                 "x.deep": lambda: {"a": [1, {2, 3}]}})
    ok, msg = sb.run("return pcall(x.obj)").results
    assert ok is False and msg.startswith("x.obj: ") and "not JSON" in msg
    ok, msg = sb.run("return pcall(x.nan)").results
    assert ok is False and "JSON" in msg
    ok, msg = sb.run("return pcall(x.deep)").results
    assert ok is False and '["a"][1]' in msg and "set" in msg
    assert sb.run("return x.obj()").error.kind == "runtime"


def test_non_json_argument_is_refused_before_the_call() -> None:
    calls = []
    sb = moonjail.Sandbox(tools={"t.f": lambda *a: calls.append(a)})
    out = sb.run("return pcall(t.f, function() end)")
    assert out.results[0] is False and "function" in out.results[1]
    assert calls == []


def test_async_tool_refused_with_a_clear_message() -> None:
    async def fetch(*args: Any) -> Any:
        return 1

    sb = moonjail.Sandbox(tools={"x.fetch": fetch})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sb.run("return select(2, pcall(x.fetch))")
        gc.collect()
    msg = out.result
    assert msg.startswith("x.fetch: ")
    assert "async" in msg
    assert not msg.startswith("x.fetch: x.fetch:"), f"the tool name is repeated: {msg!r}"
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_keyboard_interrupt_in_a_tool_stops_the_run() -> None:
    after = []

    def ki(*args: Any) -> Any:
        raise KeyboardInterrupt

    sb = moonjail.Sandbox(tools={"t.ki": ki, "t.after": lambda: after.append(1)})
    with pytest.raises(KeyboardInterrupt):
        sb.run("t.ki() t.after() return 1")
    assert after == []
    # nothing is left pending: the next runs are ordinary
    assert sb.run("return 1").result == 1
    assert sb.eval("t.after()") is None and after == [1]


def test_keyboard_interrupt_stops_further_tool_calls() -> None:
    # The script catches the error; the run still ends in KeyboardInterrupt, and no
    # tool is called once it is pending.
    after = []

    def ki(*args: Any) -> Any:
        raise KeyboardInterrupt

    sb = moonjail.Sandbox(timeout=2, tools={"t.ki": ki, "t.after": lambda: after.append(1)})
    with pytest.raises(KeyboardInterrupt):
        sb.run("pcall(t.ki) pcall(t.after) return 1")
    assert after == []


def test_system_exit_in_a_tool_propagates() -> None:
    def leave(*args: Any) -> Any:
        raise SystemExit(3)

    sb = moonjail.Sandbox(tools={"t.exit": leave})
    with pytest.raises(SystemExit) as info:
        sb.run("t.exit()")
    assert info.value.code == 3
    assert sb.run("return 1").ok


def test_schema_checked_before_the_tool_runs() -> None:
    calls: List[Any] = []

    def lookup(args: Any) -> Any:
        calls.append(args)
        return {"forecast": "sunny"}

    sb = moonjail.Sandbox(
        tools={"weather.lookup": moonjail.Tool(lookup, parameters=WEATHER_PARAMS)}
    )
    out = sb.run(
        "local r = {}"
        " r[1] = select(2, pcall(weather.lookup, {city = 1}))"
        " r[2] = select(2, pcall(weather.lookup, {}))"
        " r[3] = select(2, pcall(weather.lookup, {city = 'Lyon', days = 0}))"
        " r[4] = select(2, pcall(weather.lookup, {city = 'a'}, 2))"
        " r[5] = weather.lookup({city = 'Lyon'}).forecast"
        " return r"
    )
    assert out.ok, out.error
    r = out.result
    assert r[0] == "weather.lookup: argument 1: at /city: expected string, got integer"
    assert r[1] == 'weather.lookup: argument 1: missing required property "city"'
    assert r[2].startswith("weather.lookup: argument 1: at /days")
    assert r[3].startswith("weather.lookup: ")
    assert r[4] == "sunny"
    assert calls == [{"city": "Lyon"}]  # only the valid call reached the function
    assert [c["ok"] for c in out.tool_calls] == [False, False, False, False, True]


def test_array_schema_describes_the_argument_list() -> None:
    calls: List[Any] = []

    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    schema = {
        "type": "array",
        "prefixItems": [{"type": "integer", "title": "a"}, {"type": "integer", "title": "b"}],
        "minItems": 2,
    }
    sb = moonjail.Sandbox(tools={"calc.add": moonjail.Tool(add, parameters=schema)})
    assert sb.eval("calc.add(2, 3)") == 5
    ok, msg = sb.run("return pcall(calc.add, 1)").results
    assert ok is False and msg == "calc.add: the arguments: expected at least 2, got 1"
    ok, msg = sb.run("return pcall(calc.add, 1, 'x')").results
    assert ok is False and msg == "calc.add: argument 2: expected integer, got string"
    assert calls == [(2, 3)]
    stubs = sb.lua_stubs()
    assert "---@param a integer" in stubs and "---@param b integer" in stubs


@pytest.mark.parametrize(
    "schema",
    [{"type": 5}, {"$ref": "http://example.com/schema.json"}, {"type": "string", "pattern": "(?=x)"}],
)
def test_invalid_schema_refused_when_built(schema: Any) -> None:
    with pytest.raises(moonjail.ConfigError) as info:
        moonjail.Sandbox(tools={"t.x": moonjail.Tool(print, parameters=schema)})
    assert "t.x" in str(info.value)


def test_max_calls_quota() -> None:
    n = []
    sb = moonjail.Sandbox(
        tools={"t.hit": moonjail.Tool(lambda: n.append(1) or len(n), max_calls=2),
               "t.other": lambda: "other"}
    )
    out = sb.run(
        "local r = {} for i = 1, 3 do r[#r + 1] = {pcall(t.hit)} end"
        " r[#r + 1] = {pcall(t.other)} return r"
    )
    assert out.result == [
        [True, 1],
        [True, 2],
        [False, "t.hit: tool call quota exceeded: at most 2 calls to `t.hit` per run"],
        [True, "other"],
    ]
    assert len(n) == 2
    # per run: the next run has its quota back
    assert sb.run("return t.hit(), t.hit()").results == [3, 4]
    err = sb.run("t.hit() t.hit() t.hit()").error
    assert isinstance(err, moonjail.LuaRuntimeError) and "quota" in err.message


def test_tool_call_limit() -> None:
    n = []
    sb = moonjail.Sandbox(tools={"t.hit": lambda: n.append(1) or len(n)}, tool_call_limit=3)
    out = sb.run("for i = 1, 5 do local ok, e = pcall(t.hit) if not ok then return i, e end end")
    assert out.results == [4, "t.hit: tool call quota exceeded: at most 3 tool calls per run"]
    assert len(n) == 3
    assert out.stats["tool_calls"] == 3
    assert out.stats["limits"]["tool_calls"] == 3
    assert len(out.tool_calls) == 3
    zero = moonjail.Sandbox(tools={"t.hit": lambda: 1}, tool_call_limit=0)
    assert zero.run("return pcall(t.hit)").results[0] is False


def test_default_tool_call_limit_is_1000() -> None:
    n = []
    sb = moonjail.Sandbox(tools={"t.hit": lambda: n.append(1)})
    out = sb.run("for i = 1, 1001 do local ok = pcall(t.hit) if not ok then return i end end")
    assert out.result == 1001
    assert len(n) == 1000


def test_audit_record() -> None:
    def fail(*args: Any) -> Any:
        raise moonjail.ToolError("nope")

    sb = moonjail.Sandbox(tools={"a.ok": lambda x: {"got": x}, "a.fail": fail})
    out = sb.run("a.ok('hello') pcall(a.fail, 1) a.ok({1, 2}) return 1")
    calls = out.tool_calls
    assert [c["name"] for c in calls] == ["a.ok", "a.fail", "a.ok"]
    assert [c["ok"] for c in calls] == [True, False, True]
    assert [c["error"] for c in calls] == [None, "nope", None]
    for c in calls:
        assert set(c) >= {"name", "ok", "error", "ms", "bytes_in", "bytes_out"}
        assert c["ms"] >= 0
    assert calls[0]["bytes_in"] == len('["hello"]')
    assert calls[0]["bytes_out"] == len('{"got":"hello"}')
    assert out.stats["tool_calls"] == 3
    assert out.to_dict()["tool_calls"] == calls


def test_description_from_docstring_in_catalogue_and_stubs() -> None:
    def lookup(args: Any) -> Any:
        """The forecast for a city.

        Longer text that is not part of the description."""
        return {"forecast": "sunny"}

    @moonjail.tool(parameters={"type": "object", "properties": {"q": {"type": "string"}}})
    def search(args: Any) -> Any:
        """Searches
        the web."""
        return []

    sb = moonjail.Sandbox(
        tools={
            "weather.lookup": moonjail.Tool(
                lookup,
                parameters=WEATHER_PARAMS,
                returns={"type": "object", "properties": {"forecast": {"type": "string"}}},
            ),
            "web.search": search,
            "plain.described": moonjail.Tool(lambda: 1, description="Explicit text."),
        }
    )
    assert isinstance(search, moonjail.Tool)
    assert search.description == "Searches the web."
    tools = {t["name"]: t for t in sb.tool_catalogue()["tools"]}
    names = [t["name"] for t in sb.tool_catalogue()["tools"]]
    assert names == sorted(names)
    w = tools["weather.lookup"]
    assert w["description"] == "The forecast for a city."
    assert w["kind"] == "function"
    assert w["parameters"] == WEATHER_PARAMS
    assert w["returns"]["properties"]["forecast"] == {"type": "string"}
    assert tools["web.search"]["description"] == "Searches the web."
    assert tools["plain.described"]["description"] == "Explicit text."
    assert "json.encode" in tools  # the profile's own functions are listed too
    stubs = sb.lua_stubs()
    assert "---The forecast for a city." in stubs
    assert "---@class weather.lookup.Args" in stubs
    assert "---@field city string" in stubs
    assert "---@field days? integer" in stubs
    assert "function weather.lookup(args) end" in stubs
    assert "---Searches the web." in stubs
    assert "Longer text" not in stubs


def test_tool_object() -> None:
    def f(x: int) -> int:
        return x + 1

    t = moonjail.Tool(f, max_calls=3)
    assert t(1) == 2
    assert t.func is f and t.max_calls == 3 and t.description is None
    assert "f" in repr(t)
    with pytest.raises(TypeError):
        moonjail.Tool(5)  # type: ignore[arg-type]


def test_slow_tool_against_a_short_timeout() -> None:
    finished = []

    def slow(*args: Any) -> Any:
        time.sleep(0.3)
        finished.append(True)
        return "done"

    sb = moonjail.Sandbox(timeout=0.1, tools={"x.slow": slow})
    out = sb.run("local r = x.slow() return r")
    assert finished == [True]  # the tool ran to its end ...
    err = out.error
    assert isinstance(err, moonjail.TimeLimitError)  # ... and the run ended as timeout
    assert out.tool_calls[0]["ok"] is True
    assert out.tool_calls[0]["ms"] >= 300 * 0.9
    # the deadline cannot be caught either
    out = sb.run("pcall(x.slow) return 'caught'")
    assert isinstance(out.error, moonjail.TimeLimitError)


def test_time_left_inside_a_tool() -> None:
    sb = moonjail.Sandbox(timeout=2, tools={"t.left": moonjail.time_left})
    left = sb.eval("t.left()")
    assert isinstance(left, float) and 0 < left <= 2
    none = moonjail.Sandbox(timeout=None, tools={"t.left": moonjail.time_left})
    assert none.eval("t.left()") is None
    with pytest.raises(RuntimeError):
        moonjail.time_left()


def test_time_left_decreases_and_reaches_zero() -> None:
    def wait_and_tell(*args: Any) -> Any:
        first = moonjail.time_left()
        time.sleep(0.05)
        return [first, moonjail.time_left()]

    sb = moonjail.Sandbox(timeout=5, tools={"t.w": wait_and_tell})
    first, second = sb.eval("t.w()")
    assert 0 < second < first <= 5
    seen = []

    def late(*args: Any) -> Any:
        time.sleep(0.1)
        seen.append(moonjail.time_left())

    sb = moonjail.Sandbox(timeout=0.05, tools={"t.late": late})
    assert isinstance(sb.run("t.late()").error, moonjail.TimeLimitError)
    assert seen == [0.0]


def test_nested_run_inside_a_tool() -> None:
    inner = moonjail.Sandbox(timeout=0.05)

    def nested(*args: Any) -> Any:
        before = moonjail.time_left()
        spun = inner.run("while true do end").error.kind
        value = inner.eval("40 + 2")
        after = moonjail.time_left()
        return [value, spun, before is not None and after is not None and after <= before]

    sb = moonjail.Sandbox(timeout=5, tools={"t.nested": nested})
    assert sb.eval("t.nested()") == [42, "timeout", True]


def test_tools_in_sessions() -> None:
    calls = []

    def record(x: Any) -> Any:
        calls.append(x)
        return len(calls)

    sb = moonjail.Sandbox(
        timeout=1, tools={"log.record": record, "t.left": moonjail.time_left,
                          "t.limited": moonjail.Tool(lambda: 1, max_calls=1)}
    )
    with sb.session() as s:
        s.execute("function step(x) return log.record(x) end")
        assert s.call("step", "a") == 1
        assert s.call("step", {"b": 1}) == 2
        out = s.call_outcome("step", "c")
        assert out.result == 3
        assert [c["name"] for c in out.tool_calls] == ["log.record"]
        assert s.eval("t.left()", timeout=0.5) <= 0.5
        # quotas are per request
        assert s.eval("t.limited()") == 1
        assert s.eval("t.limited()") == 1
        assert s.exec("t.limited() t.limited()").error.kind == "runtime"
    assert calls == ["a", {"b": 1}, "c"]


def test_tools_see_the_calling_thread() -> None:
    # A tool runs on the thread that called run (in process).
    sb = moonjail.Sandbox(tools={"t.thread": lambda: threading.get_ident()})
    assert sb.eval("t.thread()") == threading.get_ident()
    got = {}

    def other() -> None:
        got["id"] = sb.eval("t.thread()")
        got["me"] = threading.get_ident()

    th = threading.Thread(target=other)
    th.start()
    th.join(10)
    assert got["id"] == got["me"]


# ------------------------------------------------------------------------- isolated


def test_tools_in_isolated_mode(isolated: Any) -> None:
    calls = []

    def lookup(args: Any) -> Any:
        calls.append(args)
        if args["city"] == "Atlantis":
            raise moonjail.ToolError("no forecast for Atlantis")
        return {"forecast": "sunny", "pid": os.getpid()}

    def boom(*args: Any) -> Any:
        raise ValueError("bad")

    sb = isolated(
        timeout=2,
        tools={
            "weather.lookup": moonjail.Tool(lookup, parameters=WEATHER_PARAMS, max_calls=3),
            "x.boom": boom,
            "t.left": moonjail.time_left,
        },
    )
    out = sb.run(
        "local r = weather.lookup({city = 'Lyon'})"
        " local ok1, e1 = pcall(weather.lookup, {city = 'Atlantis'})"
        " local ok2, e2 = pcall(weather.lookup, {city = 5})"
        " local ok3, e3 = pcall(x.boom)"
        " return {r.forecast, r.pid, e1, e2, e3, t.left()}"
    )
    assert out.ok, out.error
    forecast, pid, e1, e2, e3, left = out.result
    assert forecast == "sunny"
    assert pid == os.getpid()  # the tool runs in this process, not in the worker
    assert e1 == "weather.lookup: no forecast for Atlantis"
    assert e2 == "weather.lookup: argument 1: at /city: expected string, got integer"
    assert e3 == "x.boom: ValueError: bad"
    assert 0 < left <= 2
    assert calls == [{"city": "Lyon"}, {"city": "Atlantis"}]  # the schema refused the third
    assert [c["name"] for c in out.tool_calls] == ["weather.lookup"] * 3 + ["x.boom", "t.left"]
    assert [c["ok"] for c in out.tool_calls] == [True, False, False, False, True]
    out = sb.run("for i = 1, 4 do weather.lookup({city = 'Lyon'}) end")
    assert isinstance(out.error, moonjail.LuaRuntimeError) and "quota" in out.error.message
    assert catalogue_names(sb) >= {"weather.lookup", "x.boom", "t.left"}


def catalogue_names(sb: moonjail.Sandbox) -> set:
    return {t["name"] for t in sb.tool_catalogue()["tools"]}


def test_keyboard_interrupt_in_an_isolated_tool(isolated: Any) -> None:
    def ki(*args: Any) -> Any:
        raise KeyboardInterrupt

    sb = isolated(timeout=2, tools={"t.ki": ki})
    with pytest.raises(KeyboardInterrupt):
        sb.run("t.ki() return 1")
    assert sb.run("return 1").result == 1


def test_slow_tool_in_isolated_mode(isolated: Any) -> None:
    finished = []

    def slow(*args: Any) -> Any:
        time.sleep(0.3)
        finished.append(True)
        return 1

    sb = isolated(timeout=0.1, tools={"x.slow": slow})
    out = sb.run("return x.slow()")
    assert finished == [True]
    assert isinstance(out.error, moonjail.TimeLimitError)
    assert sb.run("return 2").result == 2


def test_tools_in_an_isolated_session(isolated: Any) -> None:
    sb = isolated(timeout=2, tools={"t.add": lambda a, b: a + b, "t.pid": os.getpid})
    with sb.session() as s:
        s.execute("total = 0 function add(n) total = t.add(total, n) return total end")
        assert s.call("add", 2) == 2
        assert s.call("add", 3) == 5
        assert s.eval("t.pid()") == os.getpid()
        assert s.call_outcome("add", 1).tool_calls[0]["name"] == "t.add"


def test_keyboard_interrupt_in_a_session_tool() -> None:
    def ki(*args: Any) -> Any:
        raise KeyboardInterrupt

    sb = moonjail.Sandbox(timeout=2, tools={"t.ki": ki})
    with sb.session() as s:
        s.execute("x = 1")
        with pytest.raises(KeyboardInterrupt):
            s.execute("t.ki() x = 2")
        assert s.is_open
        assert s.eval("x") == 1  # stopped before the assignment


def test_tool_reentering_its_own_sandbox() -> None:
    holder = {}
    sb = moonjail.Sandbox(timeout=2, tools={"t.re": lambda: holder["sb"].eval("1 + 1")})
    holder["sb"] = sb
    assert sb.eval("t.re() * 10") == 20
