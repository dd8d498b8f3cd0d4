"""Sandbox(profile, **options): limits, profiles, tools and determinism, and the errors
of a configuration that cannot be built."""

from __future__ import annotations

import datetime
import os
import pathlib
from typing import Any, Dict

import pytest

import moonjail

DEFAULTS = {
    "wall_ms": 5000.0,
    "memory_bytes": 64 * 2**20,
    "instructions": None,
    "output_bytes": 2**20,
    "source_bytes": 2**20,
    "result_bytes": 16 * 2**20,
    "result_depth": 64,
}


def test_defaults() -> None:
    sb = moonjail.Sandbox()
    assert sb.profile == "standard"
    assert sb.limits == DEFAULTS
    assert sb.isolated is False
    assert "standard" in repr(sb)


@pytest.mark.parametrize(
    "options, expected",
    [
        (
            dict(memory_limit=1 << 20, timeout=0.5, instruction_limit=1000, output_limit=100,
                 source_limit=100, result_limit=100, result_depth=5),
            dict(memory_bytes=1 << 20, wall_ms=500.0, instructions=1000, output_bytes=100,
                 source_bytes=100, result_bytes=100, result_depth=5),
        ),
        (
            dict(memory_limit="16MiB", timeout="500ms", instruction_limit="1e6",
                 output_limit="1KiB", source_limit="2KB", result_limit="1MB"),
            dict(memory_bytes=16 * 2**20, wall_ms=500.0, instructions=10**6, output_bytes=1024,
                 source_bytes=2000, result_bytes=10**6),
        ),
        (dict(timeout=2), dict(wall_ms=2000.0)),
        (dict(timeout="1.5s"), dict(wall_ms=1500.0)),
        (dict(timeout="2m"), dict(wall_ms=120_000.0)),
        (dict(timeout=datetime.timedelta(milliseconds=250)), dict(wall_ms=250.0)),
        (dict(memory_limit="512KiB"), dict(memory_bytes=512 * 1024)),
        (dict(instruction_limit="123"), dict(instructions=123)),
        (
            dict(memory_limit=None, timeout=None, instruction_limit=None, output_limit=None,
                 source_limit=None, result_limit=None),
            dict(memory_bytes=None, wall_ms=None, instructions=None, output_bytes=None,
                 source_bytes=None, result_bytes=None),
        ),
    ],
)
def test_limits_accept_numbers_strings_timedelta_none(
    options: Dict[str, Any], expected: Dict[str, Any]
) -> None:
    limits = moonjail.Sandbox(**options).limits
    assert limits == {**DEFAULTS, **expected}


def test_limits_reach_the_runs() -> None:
    sb = moonjail.Sandbox(memory_limit="8MiB", timeout=datetime.timedelta(seconds=1),
                          instruction_limit=10**6, output_limit="2KiB")
    stats = sb.run("return 1").stats["limits"]
    assert stats["memory_bytes"] == 8 * 2**20
    assert stats["wall_ms"] == 1000.0
    assert stats["instructions"] == 10**6
    assert stats["output_bytes"] == 2048


def test_no_timeout_and_no_memory_limit_still_run() -> None:
    sb = moonjail.Sandbox(timeout=None, memory_limit=None, instruction_limit=10**6)
    out = sb.run("while true do end")
    assert isinstance(out.error, moonjail.InstructionLimitError)
    big = moonjail.Sandbox(memory_limit=None, timeout=None)
    assert big.run("return #string.rep('x', 100 * 2^20)").result == 100 * 2**20


def test_unknown_keyword_did_you_mean() -> None:
    with pytest.raises(TypeError) as info:
        moonjail.Sandbox(memory_limt=1)  # type: ignore[call-arg]
    assert "memory_limt" in str(info.value)
    assert 'did you mean "memory_limit"' in str(info.value)
    with pytest.raises(TypeError) as info:
        moonjail.Sandbox(timeot=1)  # type: ignore[call-arg]
    assert 'did you mean "timeout"' in str(info.value)
    with pytest.raises(TypeError) as info:
        moonjail.Sandbox(banana=1)  # type: ignore[call-arg]
    assert "banana" in str(info.value) and "did you mean" not in str(info.value)


@pytest.mark.parametrize("profile", ["nope", "Standard", "", "full"])
def test_bad_profile(profile: str) -> None:
    with pytest.raises(moonjail.ConfigError) as info:
        moonjail.Sandbox(profile)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert "minimal" in str(info.value) and "standard" in str(info.value)


def test_profiles() -> None:
    assert moonjail.Sandbox("minimal").profile == "minimal"
    assert moonjail.Sandbox(profile="aos").profile == "aos"
    minimal = moonjail.Sandbox("minimal")
    assert minimal.run("return setmetatable == nil, _G == nil, json == nil").results == [True, True, True]
    standard = moonjail.Sandbox("standard")
    assert standard.run("return _G ~= nil, json ~= nil, io == nil").results == [True, True, True]
    aos = moonjail.Sandbox("aos")
    assert aos.run("return type(io.open), type(unpack)").results == ["function", "function"]


@pytest.mark.parametrize("name", ["bad name", "1abc", "a..b", "end", "a.", ".a", "a-b", ""])
def test_bad_tool_name(name: str) -> None:
    with pytest.raises(moonjail.ConfigError) as info:
        moonjail.Sandbox(tools={name: print})
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["json.x", "string", "print"])
def test_tool_name_taken_by_the_profile(name: str) -> None:
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox(tools={name: print})


def test_bad_tool_values() -> None:
    with pytest.raises(TypeError):
        moonjail.Sandbox(tools={"ok": 5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        moonjail.Sandbox(tools={5: print})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        moonjail.Sandbox(tools=[print])  # type: ignore[arg-type]
    with pytest.raises(TypeError) as info:
        moonjail.Sandbox(tools={"t.x": moonjail.Tool(print, parameters={"a": object()})})
    assert "t.x" in str(info.value)
    assert moonjail.Sandbox(tools=None).run("return 1").ok
    assert moonjail.Sandbox(tools={}).run("return 1").ok


def test_negative_max_calls_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        moonjail.Sandbox(tools={"t.x": moonjail.Tool(print, max_calls=-1)})


def test_memory_limit_zero() -> None:
    with pytest.raises(moonjail.ConfigError) as info:
        moonjail.Sandbox(memory_limit=0)
    assert "memory" in str(info.value)
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox(memory_limit="1KiB")  # below what a state needs


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(memory_limit=-1), ValueError),
        (dict(memory_limit="lots"), ValueError),
        (dict(memory_limit=1.5), TypeError),
        (dict(memory_limit=True), TypeError),
        (dict(timeout=-1), ValueError),
        (dict(timeout=float("nan")), ValueError),
        (dict(timeout=float("inf")), ValueError),
        (dict(timeout=True), TypeError),
        (dict(timeout="forever"), ValueError),
        (dict(timeout=[1]), TypeError),
        (dict(timeout=0), moonjail.ConfigError),
        (dict(instruction_limit=0), moonjail.ConfigError),
        (dict(instruction_limit=-5), ValueError),
        (dict(instruction_limit=1.5), TypeError),
        (dict(result_depth=None), ValueError),
        (dict(result_depth=0), moonjail.ConfigError),
        (dict(result_depth=5000), moonjail.ConfigError),
        (dict(output_overflow="explode"), ValueError),
        (dict(deterministic="yes"), TypeError),
        (dict(isolate="yes"), TypeError),
        (dict(tool_call_limit=-1), ValueError),
        (dict(allow_http=["*"]), moonjail.ConfigError),
        (dict(allow_http=["*.com"]), moonjail.ConfigError),
        (dict(read=["/etc/hostname"]), moonjail.ConfigError),  # standard has no io.open
        (dict(workers=2), ValueError),
        (dict(worker="/bin/true"), ValueError),
        (dict(prepared_states=-1), ValueError),
    ],
)
def test_bad_options(options: Dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        moonjail.Sandbox(**options)


def test_seed_without_deterministic() -> None:
    with pytest.raises(ValueError) as info:
        moonjail.Sandbox(seed=1)
    assert "deterministic" in str(info.value)
    with pytest.raises(ValueError):
        moonjail.Sandbox(timestamp=1)


def test_deterministic_runs_are_identical() -> None:
    code = "local t = {} for i = 1, 10 do t[i] = math.random(1, 1000000) end return t, math.random()"
    a = moonjail.Sandbox(deterministic=True, seed=7)
    b = moonjail.Sandbox(deterministic=True, seed=7)
    c = moonjail.Sandbox(deterministic=True, seed=8)
    first = a.run(code).results
    assert a.run(code).results == first
    assert b.run(code).results == first
    assert c.run(code).results != first
    plain = moonjail.Sandbox(deterministic=True)
    assert plain.run(code).results == plain.run(code).results


def test_deterministic_time() -> None:
    sb = moonjail.Sandbox(deterministic=True, timestamp=1_700_000_000)
    assert sb.run("return os.time(), os.date('!%Y-%m-%d'), os.clock()").results == [
        1_700_000_000, "2023-11-14", 0.0
    ]


def test_deterministic_sessions() -> None:
    sb = moonjail.Sandbox(deterministic=True, seed=3)
    with sb.session() as s1, sb.session() as s2:
        seq1 = [s1.eval("math.random(1, 1000000000)") for _ in range(5)]
        seq2 = [s2.eval("math.random(1, 1000000000)") for _ in range(5)]
    assert seq1 == seq2


def test_output_overflow() -> None:
    with pytest.raises(TypeError):
        moonjail.Sandbox(output_overflow=None)  # type: ignore[arg-type]
    assert moonjail.Sandbox(output_overflow="fail", output_limit=10).run(
        "print(string.rep('x', 20))").error.kind == "output_limit"


def test_modules_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "greet.lua").write_text("return {hello = function(n) return 'hi ' .. n end}")
    sb = moonjail.Sandbox(modules=tmp_path)
    assert sb.eval("require('greet').hello('Ada')") == "hi Ada"
    assert moonjail.Sandbox(modules=str(tmp_path)).eval("require('greet').hello('B')") == "hi B"
    assert sb.run("require('missing')").error.kind == "runtime"
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox("minimal", modules=tmp_path)  # no require in minimal


def test_modules_directory_that_does_not_exist() -> None:
    # `moonjail run --modules /nonexistent` is a usage error ("not a directory"); the
    # README: a bad option raises ConfigError when the sandbox is built.
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox(modules="/nonexistent/modules")


def test_read_allowlist(tmp_path: pathlib.Path) -> None:
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("content")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    sb = moonjail.Sandbox("aos", read=[str(allowed)])
    assert sb.eval(f"io.open({str(allowed)!r}):read('a')") == "content"
    out = sb.run(f"return io.open({str(secret)!r})")
    assert out.results[0] is None  # as if it did not exist
    out = sb.run(f"return io.open({str(allowed)!r}, 'w')")
    assert out.results[0] is None and "only reading" in out.results[1]
    assert allowed.read_text() == "content"


def test_diagnostic() -> None:
    out = moonjail.Sandbox(diagnostic=True).run("x = string.format('%d', 1) return x")
    d = out.diagnostics
    assert d["globals_written"] == {"x": 1}
    assert d["library"] == {"string.format": 1}
    assert out.to_dict()["diagnostics"] == d


def test_allow_http_builds_the_http_tool() -> None:
    sb = moonjail.Sandbox(allow_http=["api.example.com"])
    names = {t["name"] for t in sb.tool_catalogue()["tools"]}
    assert {"http.get", "http.post"} <= names
    assert moonjail.Sandbox(allow_http="api.example.com").run("return type(http.get)").result == "function"
    assert moonjail.Sandbox().run("return http == nil").result is True
    # the script may only reach what is allowed (refused before any connection)
    out = sb.run("return pcall(http.get, 'http://127.0.0.1:1/')")
    assert out.results[0] is False


def test_prepared_states() -> None:
    sb = moonjail.Sandbox(prepared_states=2)
    assert [sb.run("x = (x or 0) + 1 return x").result for _ in range(5)] == [1] * 5


def test_environment_worker_variable_is_not_required() -> None:
    # The worker ships inside the package; isolate=True needs nothing else.
    assert "MOONJAIL_WORKER" not in os.environ or os.environ["MOONJAIL_WORKER"]
    pkg = os.path.dirname(moonjail.__file__)
    assert os.access(os.path.join(pkg, "moonjail-worker"), os.X_OK)


def test_version() -> None:
    assert isinstance(moonjail.__version__, str) and moonjail.__version__
