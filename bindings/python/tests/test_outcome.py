"""Outcomes (the ``--json`` contract as an object) and every error kind, as exceptions."""

from __future__ import annotations

import builtins
import copy
import json
import pickle

import pytest

import moonjail
from conftest import WorkerKiller, require_isolation

ERROR_FIELDS = ("kind", "message", "line", "traceback", "value", "hint")

#: Every kind of the contract, with its class.
KINDS = {
    "syntax": moonjail.LuaSyntaxError,
    "runtime": moonjail.LuaRuntimeError,
    "memory_limit": moonjail.MemoryLimitError,
    "instruction_limit": moonjail.InstructionLimitError,
    "timeout": moonjail.TimeLimitError,
    "output_limit": moonjail.OutputLimitError,
    "input": moonjail.InputError,
    "result": moonjail.ResultError,
    "forbidden": moonjail.ForbiddenError,
    "killed": moonjail.WorkerKilledError,
    "internal": moonjail.InternalError,
    "lint": moonjail.LintError,
    "interrupted": moonjail.InterruptedRunError,
    "replay_divergence": moonjail.ReplayDivergenceError,
    "suspended": moonjail.SuspendedError,
}


def check_error(out: moonjail.Outcome, cls: type, kind: str) -> moonjail.SandboxError:
    """The outcome failed with ``cls``/``kind``, consistently across every view of it."""
    assert out.ok is False
    err = out.error
    assert type(err) is cls, repr(err)
    assert isinstance(err, moonjail.SandboxError)
    assert isinstance(err, Exception)
    assert err.kind == kind == cls.kind
    assert isinstance(err.message, str) and err.message
    assert err.message in str(err)
    assert out.result is None
    assert out.results == []
    doc = out.to_dict()
    assert doc["ok"] is False
    assert doc["error"]["kind"] == kind
    assert doc["error"]["message"] == err.message
    assert doc["error"]["line"] == err.line
    assert doc["error"]["traceback"] == err.traceback
    assert doc["error"]["value"] == err.value
    assert doc["error"]["hint"] == err.hint
    with pytest.raises(cls) as info:
        out.raise_for_error()
    assert info.value is err
    return err


# ------------------------------------------------------------------------ successes


def test_successful_outcome_fields(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("print('hi', 1) return 1, 'two', {a = 1}")
    assert out.ok is True
    assert out.error is None
    assert out.result == 1
    assert out.results == [1, "two", {"a": 1}]
    assert out.output == "hi\t1\n"
    assert out.output_truncated is None
    assert out.tool_calls == []
    assert out.lint is None
    assert out.diagnostics is None
    stats = out.stats
    for key in ("wall_ms", "memory_bytes", "peak_memory_bytes", "instructions",
                "output_bytes", "tool_calls", "limits"):
        assert key in stats, key
    assert stats["output_bytes"] == len("hi\t1\n")
    assert stats["tool_calls"] == 0
    assert stats["instructions"] is None  # no instruction limit: not counted
    assert 0 < stats["memory_bytes"] <= stats["peak_memory_bytes"]
    assert stats["limits"]["memory_bytes"] == sandbox.limits["memory_bytes"]
    assert stats["limits"]["wall_ms"] == sandbox.limits["wall_ms"]
    assert "ok" in repr(out)


def test_raise_for_error_returns_self_on_success(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("return 42")
    assert out.raise_for_error() is out
    assert sandbox.run("return 7").raise_for_error().result == 7


@pytest.mark.parametrize(
    "code, result, results",
    [
        ('return nil, "x"', None, [None, "x"]),
        ("return", None, []),
        ("local x = 1", None, []),
        ("return nil", None, [None]),
        ("return false, nil, 0", False, [False, None, 0]),
    ],
)
def test_results(sandbox: moonjail.Sandbox, code: str, result: object, results: list) -> None:
    out = sandbox.run(code)
    assert out.ok
    assert out.result == result
    assert out.results == results


def test_run_function_convention(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("function run(ctx) return {sum = ctx.a + ctx.b} end", {"a": 1, "b": 2})
    assert out.result == {"sum": 3}
    out = sandbox.run("local ctx = ... return ctx.a * 10", {"a": 4})
    assert out.result == 40


@pytest.mark.parametrize(
    "code",
    [
        "print('out') return {1, 2, {x = 'y'}}",
        "return nil, 'x'",
        "error({code = 42})",
        "return 1 != 2",
        "while true do end",
        "return function() end",
        "return 'line\\u{2028}sep \\u{85} é'",
    ],
)
def test_to_json_parses_and_equals_to_dict(code: str) -> None:
    sb = moonjail.Sandbox(timeout=0.05)
    out = sb.run(code)
    text = out.to_json()
    assert "\n" not in text
    assert json.loads(text) == out.to_dict()


def test_to_json_escapes_line_separators(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("return 'a\\u{2028}b\\u{2029}c\\u{85}d'")
    text = out.to_json()
    for raw in ("\u2028", "\u2029", "\u0085"):
        assert raw not in text
    assert json.loads(text)["result"] == "a\u2028b\u2029c\u0085d"


def test_to_dict_is_a_new_dict_each_call(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("return {1, 2}")
    d = out.to_dict()
    d["result"].append(3)
    d["ok"] = False
    assert out.to_dict()["result"] == [1, 2]
    assert out.ok is True
    assert out.result == [1, 2]


def test_to_dict_matches_the_properties(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("print('p') return 5, 'six'")
    d = out.to_dict()
    assert d["ok"] == out.ok
    assert d["result"] == out.result
    assert d["results"] == out.results
    assert d["output"] == out.output
    assert d["output_truncated"] == out.output_truncated
    assert d["error"] is None
    assert d["stats"] == out.stats


def test_outcome_error_is_cached(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("error('x')")
    assert out.error is out.error


# ---------------------------------------------------------------------- error kinds


@pytest.mark.parametrize(
    "code, hint_fragment",
    [
        ("return 1 != 2", "~="),
        ("local x = 1 x += 1", "x = x +"),
        ("local x = 1 x++", "x = x + 1"),
        ("for i = 1, 2 do continue end", "goto continue"),
        ("local x = true ? 1 : 2", "and"),
        ("// a comment", "--"),
        ("local a = true && false", "and"),
        ("local a = true || false", "or"),
        ("local a = !true", "not"),
    ],
)
def test_syntax_error_with_hint(sandbox: moonjail.Sandbox, code: str, hint_fragment: str) -> None:
    err = check_error(sandbox.run(code), moonjail.LuaSyntaxError, "syntax")
    assert err.line == 1
    assert err.traceback == []
    assert err.hint is not None and hint_fragment in err.hint
    assert err.hint in str(err)
    assert err.message.startswith("script:1:")


def test_syntax_error_not_equal_hint(sandbox: moonjail.Sandbox) -> None:
    err = check_error(sandbox.run("if x != 1 then return 1 end"), moonjail.LuaSyntaxError, "syntax")
    assert err.hint == "Lua writes 'not equal' as `~=`"


def test_syntax_error_without_hint_and_its_line(sandbox: moonjail.Sandbox) -> None:
    err = check_error(sandbox.run("local x = 1\n\nlocal y = x +\n"), moonjail.LuaSyntaxError, "syntax")
    assert err.hint is None
    assert err.line == 4


def test_runtime_error_line_and_traceback(sandbox: moonjail.Sandbox) -> None:
    code = "\n".join(
        [
            "local function total(t)",  # 1
            "  local n = t.field.sub",  # 2
            "  return n",  # 3
            "end",  # 4
            "function run(input)",  # 5
            "  local v = total({})",  # 6
            "  return v",  # 7
            "end",  # 8
        ]
    )
    err = check_error(sandbox.run(code), moonjail.LuaRuntimeError, "runtime")
    assert err.line == 2
    assert "attempt to index a nil value" in err.message
    assert err.message.startswith("script:2:")
    frames = err.traceback
    assert [f["line"] for f in frames] == [2, 6]
    assert [f["function"] for f in frames] == ["total", "run"]
    assert all(f["source"] == "script" for f in frames)
    assert all(set(f) == {"function", "source", "line"} for f in frames)
    assert err.value is None
    assert err.hint is None


def test_runtime_error_from_error_call(sandbox: moonjail.Sandbox) -> None:
    err = check_error(
        sandbox.run("local x = 1\nlocal function f()\n  error('boom')\nend\nf()"),
        moonjail.LuaRuntimeError,
        "runtime",
    )
    assert err.message == "script:3: boom"
    assert err.line == 3
    assert err.traceback[0] == {"function": "f", "source": "script", "line": 3}
    assert err.traceback[-1]["line"] == 5


def test_error_value_of_a_table(sandbox: moonjail.Sandbox) -> None:
    err = check_error(sandbox.run("error({code = 42})"), moonjail.LuaRuntimeError, "runtime")
    assert err.value == {"code": 42}
    assert err.line == 1
    with pytest.raises(moonjail.LuaRuntimeError) as info:
        sandbox.eval("error({code = 42, tags = {'a', 'b'}})")
    assert info.value.value == {"code": 42, "tags": ["a", "b"]}


def test_error_value_tostring_makes_the_message(sandbox: moonjail.Sandbox) -> None:
    err = sandbox.run(
        "error(setmetatable({why = 'x'}, {__tostring = function() return 'custom' end}))"
    ).error
    assert err.message == "custom"
    assert err.value == {"why": "x"}


def test_memory_limit() -> None:
    sb = moonjail.Sandbox(memory_limit="1MiB")
    out = sb.run("local t = {} while true do t[#t + 1] = string.rep('x', 100) .. #t end")
    err = check_error(out, moonjail.MemoryLimitError, "memory_limit")
    assert isinstance(err, moonjail.LimitError)
    assert "1 MiB" in err.message
    assert err.traceback == []  # a memory error unwinds before anything can look
    assert out.stats["peak_memory_bytes"] <= 1 << 20
    assert out.stats["limits"]["memory_bytes"] == 1 << 20


def test_memory_limit_cannot_be_caught_by_pcall() -> None:
    sb = moonjail.Sandbox(memory_limit="1MiB")
    out = sb.run(
        "local ok = pcall(function() local t = {} while true do t[#t+1] = {} end end)"
        " return 'survived'"
    )
    # Either the error escapes pcall, or the script goes on with its memory back: it
    # never gets more than its limit.
    if out.ok:
        assert out.result == "survived"
    else:
        check_error(out, moonjail.MemoryLimitError, "memory_limit")
    assert out.stats["peak_memory_bytes"] <= 1 << 20


def test_instruction_limit() -> None:
    sb = moonjail.Sandbox(instruction_limit=10_000)
    err = check_error(sb.run("while true do end"), moonjail.InstructionLimitError, "instruction_limit")
    assert isinstance(err, moonjail.LimitError)
    assert "10000" in err.message
    assert err.line == 1
    assert err.traceback and err.traceback[0]["line"] == 1


def test_instruction_count_is_exact() -> None:
    code = "local s = 0 for i = 1, 1000 do s = s + i end return s"
    used = moonjail.Sandbox(instruction_limit=10**9).run(code).stats["instructions"]
    assert isinstance(used, int) and used > 1000
    ok = moonjail.Sandbox(instruction_limit=used).run(code)
    assert ok.ok and ok.result == 500500 and ok.stats["instructions"] == used
    short = moonjail.Sandbox(instruction_limit=used - 1).run(code)
    check_error(short, moonjail.InstructionLimitError, "instruction_limit")


def test_timeout() -> None:
    sb = moonjail.Sandbox(timeout=0.05)
    out = sb.run("local function spin()\n  while true do end\nend\nspin()")
    err = check_error(out, moonjail.TimeLimitError, "timeout")
    assert isinstance(err, moonjail.LimitError)
    assert "50 ms" in err.message
    assert err.line == 2
    assert err.traceback[0]["function"] == "spin"


def test_timeout_cannot_be_caught_by_pcall() -> None:
    sb = moonjail.Sandbox(timeout=0.05)
    out = sb.run("while true do pcall(function() while true do end end) end")
    check_error(out, moonjail.TimeLimitError, "timeout")


def test_output_limit() -> None:
    sb = moonjail.Sandbox(output_limit=1000)
    out = sb.run("while true do print('xxxxxxxx') end")
    err = check_error(out, moonjail.OutputLimitError, "output_limit")
    assert isinstance(err, moonjail.LimitError)
    assert "1000 B" in err.message
    assert len(out.output.encode()) <= 1000


def test_output_overflow_truncate() -> None:
    sb = moonjail.Sandbox(output_limit=100, output_overflow="truncate")
    out = sb.run("for i = 1, 100 do print('xxxxxxxx') end return 'done'")
    assert out.ok and out.result == "done"
    assert out.output_truncated == {"kept_bytes": 100, "dropped_bytes": 800}
    assert "[... 800 bytes of output dropped ...]" in out.output
    assert out.output.startswith("xxxxxxxx\n")
    assert out.output.endswith("xxxxxxxx\n")


def test_input_error_source_over_limit() -> None:
    sb = moonjail.Sandbox(source_limit=100)
    err = check_error(sb.run("return 1" + " " * 200), moonjail.InputError, "input")
    assert "100" in err.message
    assert err.line is None
    assert err.traceback == []
    assert sb.run("return 1").ok


def test_input_error_input_too_deep(sandbox: moonjail.Sandbox) -> None:
    deep: object = 1
    for _ in range(100):  # past the default result depth of 64
        deep = [deep]
    err = check_error(sandbox.run("return 1", deep), moonjail.InputError, "input")
    assert err.line is None
    shallow = moonjail.Sandbox(result_depth=3)
    check_error(shallow.run("return 1", [[[[1]]]]), moonjail.InputError, "input")
    assert shallow.run("return 1", [[1]]).ok


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("return function() end", "function"),
        ("return coroutine.create(function() end)", "thread"),
        ("local t = {} t.t = t return t", "$.t"),
        ("return 0/0", "NaN"),
        ("return 1/0", "inf"),
        ("return '\\255'", "UTF-8"),
        ("return {[1] = 'a', ['1'] = 'b'}", '"1"'),
    ],
)
def test_result_error(sandbox: moonjail.Sandbox, code: str, fragment: str) -> None:
    err = check_error(sandbox.run(code), moonjail.ResultError, "result")
    assert fragment in err.message


def test_result_limits() -> None:
    err = check_error(
        moonjail.Sandbox(result_depth=3).run("return {{{{1}}}}"), moonjail.ResultError, "result"
    )
    assert "3 levels" in err.message
    err = check_error(
        moonjail.Sandbox(result_limit=100).run("return string.rep('x', 200)"),
        moonjail.ResultError,
        "result",
    )
    assert "100 byte" in err.message


@pytest.mark.parametrize("code", ["\x1bLuaT\x00", b"\x1bLuaT\x00\x19\x93\r\n\x1a\n"])
def test_forbidden_binary_chunk(sandbox: moonjail.Sandbox, code: object) -> None:
    err = check_error(sandbox.run(code), moonjail.ForbiddenError, "forbidden")  # type: ignore[arg-type]
    assert "binary" in err.message


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("setmetatable({}, {__gc = function() end})", "__gc"),
        ("collectgarbage('collect')", "collectgarbage"),
    ],
)
def test_forbidden_operations(sandbox: moonjail.Sandbox, code: str, fragment: str) -> None:
    err = check_error(sandbox.run(code), moonjail.ForbiddenError, "forbidden")
    assert fragment in err.message
    assert err.line == 1
    # refused under pcall too (the script may go on without it)
    out = sandbox.run(f"local ok, e = pcall(function() {code} end) return ok, e")
    assert out.results[0] is False and "forbidden" in out.results[1]


def test_forbidden_things_inside_the_script(sandbox: moonjail.Sandbox) -> None:
    # string.dump is not in the profile at all; load refuses binary chunks as Lua's load
    # answers any chunk it cannot load.
    out = sandbox.run("return string.dump == nil, load('\\27Lua')")
    assert out.ok
    assert out.results[0] is True
    assert out.results[1] is None
    assert "binary chunk" in out.results[2]
    out = sandbox.run(
        "return debug == nil, io == nil, os.execute == nil, package.loadlib == nil,"
        " collectgarbage('count') > 0"
    )
    assert out.results == [True, True, True, True, True]


def test_lint_error_stops_the_run(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("print('ran') return io.open('x')", lint=True)
    err = check_error(out, moonjail.LintError, "lint")
    assert out.output == ""  # the script did not run
    assert err.findings
    finding = err.findings[0]
    assert finding["rule"] == "removed-global"
    assert finding["severity"] == "error"
    assert "io" in finding["message"]
    assert out.lint is not None and out.lint["findings"] == err.findings
    assert out.to_dict()["lint"] == out.lint


def test_lint_clean_script_runs(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("local x = 1 return x", lint=True)
    assert out.ok and out.result == 1
    assert out.lint is not None and out.lint["findings"] == []
    assert sandbox.run("return io.open('x')").error.kind == "runtime"  # no lint: it runs


def test_lint_method(sandbox: moonjail.Sandbox) -> None:
    report = sandbox.lint("return io.open('x')")
    assert set(report) >= {"findings", "manifest"}
    assert report["findings"][0]["rule"] == "removed-global"
    assert sandbox.lint(b"local x = 1 return x")["findings"] == []


def test_require_run_and_require_table() -> None:
    err = moonjail.Sandbox(require_run=True).run("return 1").error
    assert isinstance(err, moonjail.LuaRuntimeError) and "run" in err.message
    err = moonjail.Sandbox(require_table=True).run("return 1").error
    assert isinstance(err, moonjail.ResultError)
    assert moonjail.Sandbox(require_table=True).run("return {}").ok


def test_internal_error_from_a_worker_that_is_not_one() -> None:
    require_isolation()
    sb = moonjail.Sandbox(isolate=True, worker="/bin/true")
    err = check_error(sb.run("return 1"), moonjail.InternalError, "internal")
    assert "worker" in err.message


def test_killed_worker() -> None:
    """The "worker death" probe: SIGKILL the worker running the script."""
    require_isolation()
    killer = WorkerKiller()
    sb = moonjail.Sandbox(isolate=True, workers=1, timeout=20, tools={"probe.ready": killer.tool})
    with killer:
        out = sb.run("probe.ready() while true do end")
    assert killer.killed is not None
    err = check_error(out, moonjail.WorkerKilledError, "killed")
    assert "SIGKILL" in err.message
    assert sb.run("return 2").result == 2  # the pool replaces the worker


def test_eval_raises_the_class_of_each_kind() -> None:
    sb = moonjail.Sandbox(timeout=0.05, memory_limit="1MiB", output_limit=100, source_limit=1000)
    cases = [
        ("1 +", moonjail.LuaSyntaxError),
        ("error('x')", moonjail.LuaRuntimeError),
        ("while true do end", moonjail.TimeLimitError),
        ("string.rep('x', 1 << 21)", moonjail.MemoryLimitError),
        ("print(string.rep('x', 200))", moonjail.OutputLimitError),
        ("function() end", moonjail.ResultError),
        ("1" + " " * 2000, moonjail.InputError),
        ("\x1bLua", moonjail.ForbiddenError),
    ]
    for code, cls in cases:
        with pytest.raises(cls):
            sb.eval(code)


def test_eval_values(sandbox: moonjail.Sandbox) -> None:
    assert sandbox.eval("1 + 1") == 2
    assert sandbox.eval("return 1, 2") == 1
    assert sandbox.eval("x = 3 return x") == 3
    assert sandbox.eval("(...).a", {"a": 5}) == 5
    assert sandbox.eval(b"'by' .. 'tes'") == "bytes"
    assert sandbox.eval("local x = 1") is None


def test_eval_of_an_expression_starting_with_the_length_operator(sandbox: moonjail.Sandbox) -> None:
    # Read as Lua's REPL reads a line: `#t` is the length of t, not a `#!` line.
    assert sandbox.eval("#'abc'") == 3
    assert sandbox.eval("#(...)", "abcd") == 4
    assert sandbox.eval("#{1, 2}") == 2


def test_shebang_line_is_skipped(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("#!/usr/bin/env lua\nreturn 1 + 1")
    assert out.result == 2
    out = sandbox.run("#!/usr/bin/env lua\nerror('x')")
    assert out.error.line == 2  # line numbers stay the file's


def test_module_level_run() -> None:
    assert moonjail.run("return 1 + 1").result == 2
    assert moonjail.run("return ... * 2", 21).result == 42
    assert moonjail.run("return setmetatable", profile="minimal").result is None


# ------------------------------------------------------------------- the hierarchy


def test_hierarchy() -> None:
    for kind, cls in KINDS.items():
        assert cls.kind == kind
        assert issubclass(cls, moonjail.SandboxError)
        assert cls.__module__.startswith("moonjail")
        assert not hasattr(builtins, cls.__name__), f"{cls.__name__} shadows a builtin"
    limits = {moonjail.MemoryLimitError, moonjail.InstructionLimitError,
              moonjail.TimeLimitError, moonjail.OutputLimitError}
    for cls in KINDS.values():
        assert issubclass(cls, moonjail.LimitError) == (cls in limits)
    assert issubclass(moonjail.LimitError, moonjail.SandboxError)
    assert issubclass(moonjail.SandboxError, Exception)
    assert issubclass(moonjail.ConfigError, ValueError)
    assert not issubclass(moonjail.ConfigError, moonjail.SandboxError)
    assert issubclass(moonjail.ToolError, Exception)
    assert not issubclass(moonjail.ToolError, moonjail.SandboxError)
    assert len(set(KINDS.values())) == len(KINDS)
    for name in moonjail.__all__:
        assert hasattr(moonjail, name), name


def test_exceptions_built_by_hand() -> None:
    e = moonjail.SandboxError("m")
    assert e.kind == "sandbox" and e.message == "m" and e.line is None
    assert e.traceback == [] and e.value is None and e.hint is None and e.findings is None
    assert "m" in str(e)
    t = moonjail.TimeLimitError("late", line=3)
    assert t.kind == "timeout" and t.line == 3 and isinstance(t, moonjail.LimitError)


def _errors() -> list:
    sb = moonjail.Sandbox(timeout=0.05, instruction_limit=10**6)
    outs = [
        sb.run("return 1 != 2"),
        sb.run("local function f()\n error('boom')\nend\nf()"),
        sb.run("error({code = 42, list = {1, 2}})"),
        sb.run("while true do end"),
        sb.run("return function() end"),
        sb.run("io.open('x')", lint=True),
    ]
    return [o.error for o in outs]


@pytest.mark.parametrize("index", range(6))
def test_pickling_keeps_every_field(index: int) -> None:
    err = _errors()[index]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=proto))
        assert type(back) is type(err)
        for field in ERROR_FIELDS + ("findings",):
            assert getattr(back, field) == getattr(err, field), field
        assert str(back) == str(err)
        assert back.args == err.args
    assert copy.deepcopy(err).traceback == err.traceback
    assert copy.copy(err).message == err.message


def test_pickling_config_and_tool_errors() -> None:
    with pytest.raises(moonjail.ConfigError) as info:
        moonjail.Sandbox("nope")
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is moonjail.ConfigError and str(back) == str(info.value)
    t = pickle.loads(pickle.dumps(moonjail.ToolError("exact")))
    assert type(t) is moonjail.ToolError and str(t) == "exact"
