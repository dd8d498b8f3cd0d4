"""Leaks: many runs, sessions, sandboxes and errors keep this process's memory bounded,
and Python objects handed to the sandbox are released."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import moonjail
from conftest import rss_bytes

MiB = 1 << 20


def test_10000_runs_keep_rss_bounded() -> None:
    sb = moonjail.Sandbox()
    code = (
        "local ctx = ... local s = 0 for _, v in ipairs(ctx.items) do s = s + v end"
        " return {sum = s, name = ctx.name, items = ctx.items}"
    )

    def batch(start: int, n: int) -> None:
        for i in range(start, start + n):
            out = sb.run(code, {"items": [i, 1, 2], "name": f"n{i}"})
            assert out.result["sum"] == i + 3
            # touch the lazily converted fields too
            assert out.stats["output_bytes"] == 0 and out.error is None

    batch(0, 1000)  # warm-up
    gc.collect()
    before = rss_bytes()
    batch(1000, 10_000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 20 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 10,000 runs"


def test_failing_runs_and_exceptions_keep_rss_bounded() -> None:
    sb = moonjail.Sandbox(instruction_limit=10_000)
    codes = ["error({code = 1, msg = string.rep('x', 100)})", "while true do end",
             "return 1 +", "return function() end"]

    def batch(n: int) -> None:
        for i in range(n):
            out = sb.run(codes[i % 4])
            err = out.error
            assert err is not None and err.traceback is not None
            try:
                out.raise_for_error()
            except moonjail.SandboxError:
                pass
            out.to_dict()

    batch(500)
    gc.collect()
    before = rss_bytes()
    batch(4000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 10 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 4,000 failing runs"


def test_sessions_and_sandboxes_keep_rss_bounded() -> None:
    def churn(n: int) -> None:
        for i in range(n):
            sb = moonjail.Sandbox(tools={"t.f": lambda x: x})
            with sb.session() as s:
                s.execute("data = {} for i = 1, 100 do data[i] = t.f(i) end")
                assert s.eval("rawlen(data)") == 100
            sb.run("return 1")

    churn(100)
    gc.collect()
    before = rss_bytes()
    churn(1000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 10 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 1,000 sandboxes"


def test_tool_arguments_and_results_are_released() -> None:
    shared = {"payload": ["x" * 100]}
    received = []

    def give(x: Any) -> Any:
        received.append(x)
        return shared

    sb = moonjail.Sandbox(tools={"t.give": give})
    base = sys.getrefcount(shared)
    for i in range(2000):
        received.clear()
        assert sb.eval("t.give({i = ...}).payload[1]", i) == "x" * 100
    gc.collect()
    assert sys.getrefcount(shared) == base


def test_tool_functions_are_released_with_the_sandbox() -> None:
    class Target:
        def __call__(self, *args: Any) -> Any:
            return 1

    func = Target()
    ref = weakref.ref(func)
    sb = moonjail.Sandbox(tools={"t.f": func})
    assert sb.eval("t.f()") == 1
    del func
    assert ref() is not None  # the sandbox holds it
    del sb
    gc.collect()
    assert ref() is None


def test_sandbox_tool_cycle_is_collected() -> None:
    """An object whose sandbox has the object's own method as a tool (the natural way to
    write an agent class) is a reference cycle through the native Sandbox: the garbage
    collector must be able to free it."""

    class Agent:
        def __init__(self) -> None:
            self.sb = moonjail.Sandbox(tools={"agent.fetch": self.fetch})

        def fetch(self, *args: Any) -> Any:
            return "page"

    refs = []
    for _ in range(5):
        agent = Agent()
        assert agent.sb.eval("agent.fetch()") == "page"
        refs.append(weakref.ref(agent))
        del agent
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of 5 agents (and their sandboxes) were never freed"


def test_isolated_runs_keep_rss_bounded(isolated: Any) -> None:
    sb = isolated(timeout=2)
    for i in range(300):
        assert sb.run("return ...", {"i": i}).result == {"i": i}
    gc.collect()
    before = rss_bytes()
    for i in range(2000):
        assert sb.run("return ...", {"i": i}).result == {"i": i}
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 10 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 2,000 isolated runs"
