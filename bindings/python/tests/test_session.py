"""Sessions: one persistent Lua state, LuaWard's names (execute, call, function_exists)
and moonjail's (exec, call_outcome, has_function) side by side."""

from __future__ import annotations

import gc
import threading
from typing import Any, Callable, Dict

import pytest

import moonjail
from conftest import WorkerKiller


@pytest.fixture
def sb() -> moonjail.Sandbox:
    return moonjail.Sandbox(timeout=2)


def test_luaward_style(sb: moonjail.Sandbox) -> None:
    with sb.session() as vm:
        assert vm.execute("function greet(name) return 'Hello, ' .. name end") is None
        assert vm.call("greet", "Python User") == "Hello, Python User"
        assert vm.function_exists("greet") is True
        assert vm.function_exists("nope") is False


def test_state_persists(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        s.execute("count = 0 function inc(n) count = count + (n or 1) return count end")
        assert s.call("inc") == 1
        assert s.call("inc", 5) == 6
        assert s.eval("count") == 6
        assert s.execute("return count * 2") == 12
        s.execute("local hidden = 1")  # locals do not outlive their chunk
        assert s.eval("hidden") is None
        assert s.execute("return ...", {"a": [1, 2]}) == {"a": [1, 2]}


def test_readme_state_example(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        s.execute(
            "count = 0\n"
            "function compute(state, msg) count = count + 1;"
            " state.total = (state.total or 0) + msg.n; return state end"
        )
        assert s.call("compute", {}, {"n": 5}) == {"total": 5}
        assert s.function_exists("compute") and not s.has_function("nope")
        assert s.eval("count") == 1


def test_eval_of_the_length_operator(sb: moonjail.Sandbox) -> None:
    # As Lua's REPL reads a line: `#data` is a length, not a `#!` line to skip.
    with sb.session() as s:
        s.execute("data = {1, 2, 3}")
        assert s.eval("rawlen(data)") == 3
        assert s.eval("#data") == 3


def test_exec_and_call_outcome_never_raise(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        out = s.exec("print('hi') x = 1 return x, 'two'")
        assert out.ok and out.results == [1, "two"] and out.output == "hi\n"
        out = s.exec("error({code = 7})")
        assert isinstance(out.error, moonjail.LuaRuntimeError) and out.error.value == {"code": 7}
        s.execute("function two() return 1, 2 end function bad() error('bad') end")
        out = s.call_outcome("two")
        assert out.results == [1, 2] and out.result == 1
        out = s.call_outcome("bad")
        assert not out.ok and "bad" in out.error.message
        out = s.call_outcome("missing")
        assert not out.ok and "missing" in out.error.message
        assert s.is_open  # a script error does not close the session


def test_dotted_names_and_callable_tables(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        s.execute(
            "lib = {f = function(a, b) return a * b end, sub = {g = function() return 'g' end}}"
            " callable = setmetatable({}, {__call = function(_, x) return x + 1 end})"
            " notfn = 5"
        )
        assert s.call("lib.f", 6, 7) == 42
        assert s.call("lib.sub.g") == "g"
        assert s.has_function("lib.f") and s.has_function("lib.sub.g")
        assert s.has_function("callable")
        assert s.call("callable", 1) == 2
        assert not s.has_function("notfn")
        assert not s.has_function("lib.nope.deeper")
        with pytest.raises(moonjail.LuaRuntimeError):
            s.call("notfn")


def test_errors_raise(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        with pytest.raises(moonjail.LuaRuntimeError) as info:
            s.execute("error('bad')")
        assert info.value.line == 1
        with pytest.raises(moonjail.LuaSyntaxError) as syn:
            s.execute("x != 1")
        assert syn.value.hint is not None
        with pytest.raises(moonjail.LuaRuntimeError):
            s.call("nope")
        with pytest.raises(moonjail.SandboxError):
            s.eval("error('e')")
        with pytest.raises(moonjail.ResultError):
            s.eval("function() end")
        assert s.is_open


def test_per_call_timeout(sb: moonjail.Sandbox) -> None:
    s = sb.session()
    s.execute("count = 1")
    out = s.exec("while true do end", timeout=0.05)
    assert isinstance(out.error, moonjail.TimeLimitError)
    assert "50 ms" in out.error.message
    assert not s.is_open  # a session stopped by a limit refuses later requests ...
    assert isinstance(s.closed_reason, moonjail.TimeLimitError)
    with pytest.raises(moonjail.TimeLimitError) as info:  # ... saying why
        s.execute("return count")
    assert "closed" in info.value.message
    s.close()


def test_per_call_timeout_as_text(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        with pytest.raises(moonjail.TimeLimitError):
            s.execute("while true do end", timeout="30ms")


def test_per_call_instruction_limit(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        s.execute("function spin() while true do end end function cheap() return 1 end")
        assert s.call("cheap", instruction_limit=1000) == 1
        with pytest.raises(moonjail.InstructionLimitError) as info:
            s.call("spin", instruction_limit=1000)
        assert "1000" in info.value.message
        assert not s.is_open
        assert isinstance(s.closed_reason, moonjail.InstructionLimitError)


def test_per_call_limits_validated(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        for bad in (0, -1, float("nan"), "never"):
            with pytest.raises(ValueError):
                s.exec("return 1", timeout=bad)
        with pytest.raises(ValueError):
            s.exec("return 1", instruction_limit=0)
        assert s.execute("return 1") == 1


def test_memory_limit_applies_to_the_whole_state() -> None:
    sb = moonjail.Sandbox(memory_limit="2MiB")
    with sb.session() as s:
        s.execute("keep = {}")
        with pytest.raises(moonjail.MemoryLimitError):
            for _ in range(100):
                s.execute("keep[#keep + 1] = string.rep('x', 100000) .. #keep")


def test_closed_session_raises(sb: moonjail.Sandbox) -> None:
    s = sb.session()
    assert s.is_open and s.closed_reason is None and "open" in repr(s)
    s.close()
    s.close()  # idempotent
    assert not s.is_open and s.closed_reason is None and "closed" in repr(s)
    calls: Dict[str, Callable[[], Any]] = {
        "exec": lambda: s.exec("return 1"),
        "execute": lambda: s.execute("return 1"),
        "eval": lambda: s.eval("1"),
        "call": lambda: s.call("f"),
        "call_outcome": lambda: s.call_outcome("f"),
        "has_function": lambda: s.has_function("f"),
        "function_exists": lambda: s.function_exists("f"),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError) as info:
            call()
        assert "closed" in str(info.value), name


def test_context_manager_closes(sb: moonjail.Sandbox) -> None:
    with sb.session() as s:
        assert s.is_open
    assert not s.is_open
    with pytest.raises(ValueError):
        with sb.session() as s2:
            s2.execute("x = 1")
            raise ValueError("from the body")  # propagates: __exit__ returns False
    assert not s2.is_open


def test_use_from_another_thread_raises(sb: moonjail.Sandbox) -> None:
    s = sb.session()
    s.execute("x = 41")
    errors: Dict[str, BaseException] = {}
    ops: Dict[str, Callable[[], Any]] = {
        "exec": lambda: s.exec("return x"),
        "execute": lambda: s.execute("return x"),
        "eval": lambda: s.eval("x"),
        "call": lambda: s.call("f"),
        "call_outcome": lambda: s.call_outcome("f"),
        "has_function": lambda: s.has_function("f"),
        "function_exists": lambda: s.function_exists("f"),
        "is_open": lambda: s.is_open,
        "closed_reason": lambda: s.closed_reason,
        "close": lambda: s.close(),
    }

    def other() -> None:
        for name, op in ops.items():
            try:
                op()
            except BaseException as e:
                errors[name] = e

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert set(errors) == set(ops)
    for name, e in errors.items():
        assert type(e) is RuntimeError, (name, e)
        assert "thread" in str(e), name
    # the owner still has it, intact
    assert s.is_open
    assert s.execute("x = x + 1 return x") == 42
    s.close()


def test_session_made_on_a_thread_stays_there(sb: moonjail.Sandbox) -> None:
    holder = []

    def make() -> None:
        s = sb.session()
        s.execute("x = 1")
        holder.append(s)

    t = threading.Thread(target=make)
    t.start()
    t.join(10)
    with pytest.raises(RuntimeError):
        holder[0].execute("return x")
    holder.clear()  # dropped on a thread that does not own it: no crash
    gc.collect()


def test_session_outlives_its_sandbox() -> None:
    sb = moonjail.Sandbox()
    s = sb.session()
    del sb
    gc.collect()
    assert s.execute("return 5") == 5
    s.close()


def test_sessions_are_independent(sb: moonjail.Sandbox) -> None:
    with sb.session() as a, sb.session() as b:
        a.execute("x = 'a'")
        b.execute("x = 'b'")
        assert a.eval("x") == "a" and b.eval("x") == "b"
    assert sb.eval("x") is None  # nor do runs see a session's globals


def test_profile_applies_to_sessions() -> None:
    with moonjail.Sandbox("minimal").session() as s:
        assert s.eval("setmetatable") is None
        assert s.eval("_G") is None
    with moonjail.Sandbox("standard").session() as s:
        assert s.eval("io") is None
        assert s.eval("os.execute") is None


# ------------------------------------------------------------------------- isolated


def test_isolated_session(isolated: Any) -> None:
    sb = isolated(timeout=2)
    with sb.session() as s:
        s.execute("count = 0 function inc() count = count + 1 return count end")
        assert [s.call("inc") for _ in range(5)] == [1, 2, 3, 4, 5]
        assert s.function_exists("inc") and not s.function_exists("dec")
        with pytest.raises(moonjail.LuaRuntimeError):
            s.execute("error('x')")
        assert s.eval("count") == 5
    assert not s.is_open


def test_isolated_session_timeout_closes_it(isolated: Any) -> None:
    sb = isolated(timeout=2)
    with sb.session() as s:
        s.execute("x = 1")
        with pytest.raises(moonjail.TimeLimitError):
            s.execute("while true do end", timeout=0.05)
        assert not s.is_open
        assert isinstance(s.closed_reason, moonjail.TimeLimitError)
        with pytest.raises(moonjail.SandboxError):
            s.execute("return x")


def test_isolated_session_worker_death(isolated: Any) -> None:
    killer = WorkerKiller()
    sb = isolated(timeout=20, tools={"probe.ready": killer.tool})
    s = sb.session()
    s.execute("x = 1")
    with killer:
        out = s.exec("probe.ready() while true do end")
    assert isinstance(out.error, moonjail.WorkerKilledError)
    assert out.error.kind == "killed"
    assert not s.is_open
    assert isinstance(s.closed_reason, moonjail.WorkerKilledError)
    with pytest.raises(moonjail.WorkerKilledError):
        s.execute("return x")
    s.close()
    with sb.session() as fresh:  # the sandbox still opens sessions
        assert fresh.execute("return 3") == 3
