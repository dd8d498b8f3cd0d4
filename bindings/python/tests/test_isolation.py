"""isolate=True: scripts run in locked-down worker processes, with the same outcomes."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import moonjail
from conftest import isolation_problem, proc_status, require_isolation, worker_processes


def test_isolation_is_available_here() -> None:
    # Reported, not failed: the rest of the module skips when this does.
    reason = isolation_problem()
    if reason is not None:
        print(f"\nisolation unavailable: {reason}")
        pytest.skip(reason)


def test_results_are_correct(isolated_sandbox: moonjail.Sandbox) -> None:
    assert isolated_sandbox.isolated is True
    assert moonjail.Sandbox().isolated is False
    for i in range(50):
        out = isolated_sandbox.run("local x = ... return {n = x.n * 2, s = x.s .. '!'}", {"n": i, "s": str(i)})
        assert out.ok, out.error
        assert out.result == {"n": i * 2, "s": f"{i}!"}
    out = isolated_sandbox.run("print('from the worker') return nil, 'x'")
    assert out.output == "from the worker\n"
    assert out.results == [None, "x"]
    assert isolated_sandbox.eval("6 * 7") == 42


def locked_down(pid: int, my_net: str) -> bool:
    status = proc_status(pid)
    return (
        status["Uid"].split() == ["65534"] * 4
        and status["Gid"].split() == ["65534"] * 4
        and status["NoNewPrivs"] == "1"
        and status["Seccomp"] == "2"  # filter mode
        and status["CapEff"] == "0000000000000000"
        and os.readlink(f"/proc/{pid}/ns/net") != my_net  # a network namespace of its own
    )


def test_workers_are_other_locked_down_processes(isolated_sandbox: moonjail.Sandbox) -> None:
    assert isolated_sandbox.run("return 1").ok
    workers = worker_processes()
    assert workers, "no worker process under this one"
    assert os.getpid() not in workers
    my_net = os.readlink("/proc/self/ns/net")
    checked = 0
    for pid in workers:
        # A worker some pool is starting right now locks itself down before it reads
        # anything: give it a moment.
        deadline = time.monotonic() + 5
        while True:
            try:
                ok = locked_down(pid, my_net)
            except OSError:
                break  # gone meanwhile
            if ok:
                checked += 1
                break
            assert time.monotonic() < deadline, (pid, proc_status(pid))
            time.sleep(0.02)
    assert checked


def test_profile_is_the_same(isolated_sandbox: moonjail.Sandbox) -> None:
    out = isolated_sandbox.run("return io == nil, os.execute == nil, string.dump == nil, debug == nil")
    assert out.results == [True, True, True, True]


@pytest.mark.parametrize(
    "code",
    [
        "return 1 != 2",
        "local function f()\n  error('boom')\nend\nf()",
        "error({code = 42})",
        "return function() end",
        "local t = {} t.t = t return t",
        "\x1bLua",
        "return string.rep('x', 10, 5, 7) .. nil",
    ],
)
def test_errors_are_the_same_as_in_process(isolated_sandbox: moonjail.Sandbox, code: str) -> None:
    here = moonjail.Sandbox(timeout=2).run(code).error
    there = isolated_sandbox.run(code).error
    assert type(there) is type(here)
    for field in ("kind", "message", "line", "traceback", "value", "hint"):
        assert getattr(there, field) == getattr(here, field), field


def test_memory_limit(isolated: Any) -> None:
    sb = isolated(memory_limit="4MiB", timeout=5)
    out = sb.run("local t = {} for i = 1, 1e7 do t[i] = string.rep('x', 64) .. i end")
    assert isinstance(out.error, moonjail.MemoryLimitError)
    assert "4 MiB" in out.error.message
    assert out.stats["peak_memory_bytes"] <= 4 << 20
    assert sb.run("return 'still works'").result == "still works"


def test_timeout(isolated: Any) -> None:
    sb = isolated(timeout=0.1)
    out = sb.run("while true do end")
    assert isinstance(out.error, moonjail.TimeLimitError)
    assert sb.run("return 2").result == 2


def test_instruction_and_output_limits(isolated: Any) -> None:
    sb = isolated(instruction_limit=10_000, output_limit=100)
    assert isinstance(sb.run("while true do end").error, moonjail.InstructionLimitError)
    assert isinstance(sb.run("while true do print('xxxx') end").error, moonjail.OutputLimitError)
    assert isinstance(sb.run("return 1 +").error, moonjail.LuaSyntaxError)


def test_many_runs_and_workers(isolated: Any) -> None:
    sb = isolated(workers=2, timeout=2)
    for i in range(200):
        assert sb.run("return ... + 1", i).result == i + 1


def test_config_errors(isolated: Any) -> None:
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox(isolate=True, workers=0)
    with pytest.raises(ValueError):
        moonjail.Sandbox(workers=2)  # without isolate
    with pytest.raises(ValueError):
        moonjail.Sandbox(worker="/bin/true")  # without isolate


def test_missing_worker_executable_is_refused_when_built() -> None:
    require_isolation()
    # The README: "A bad option raises moonjail.ConfigError when the sandbox is built,
    # never at run time."
    with pytest.raises(moonjail.ConfigError):
        moonjail.Sandbox(isolate=True, worker="/nonexistent/moonjail-worker")
