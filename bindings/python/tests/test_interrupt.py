"""Stopping a run from the host: Ctrl-C (SIGINT) and CancelToken.

Ctrl-C is tested in child processes, started together by one fixture: each child spins
in Lua with no timeout, says "started" from inside the run (a tool), gets SIGINT, and
must die of KeyboardInterrupt. A child that is not stopped ends itself after
``WATCHDOG_S`` seconds (killing its isolated workers first), so a missing interrupt
check fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any, Dict, Iterator

import pytest

import moonjail
from conftest import isolation_problem

WATCHDOG_S = 8
#: The hang guard of ``communicate``, not a performance bound.
COMMUNICATE_S = 20

PRELUDE = textwrap.dedent(
    f"""
    import os, signal, sys, threading

    def _descendants(root):
        kids = {{}}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{{entry}}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                kids.setdefault(ppid, []).append(int(entry))
        out, todo = [], [root]
        while todo:
            for k in kids.get(todo.pop(), []):
                out.append(k)
                todo.append(k)
        return out

    def _watchdog():
        sys.stderr.write("WATCHDOG: the run was not stopped\\n")
        sys.stderr.flush()
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(3)

    _timer = threading.Timer({WATCHDOG_S}, _watchdog)
    _timer.daemon = True
    _timer.start()

    import moonjail

    def ready(*args):
        print("started", flush=True)
        return True

    def ki(*args):
        raise KeyboardInterrupt
    """
)

SCENARIOS: Dict[str, Dict[str, Any]] = {
    "run": {
        "signal": True,
        "code": """
            sb = moonjail.Sandbox(timeout=None, tools={"probe.ready": ready})
            sb.run("pcall(probe.ready) while true do end")
            print("the run returned", flush=True)
        """,
    },
    "eval": {
        "signal": True,
        "code": """
            sb = moonjail.Sandbox(timeout=None, tools={"probe.ready": ready})
            sb.eval("pcall(probe.ready) while true do end")
            print("eval returned", flush=True)
        """,
    },
    "session": {
        "signal": True,
        "code": """
            sb = moonjail.Sandbox(timeout=None, tools={"probe.ready": ready})
            s = sb.session()
            s.exec("pcall(probe.ready) while true do end")
            print("exec returned", flush=True)
        """,
    },
    "isolated": {
        "signal": True,
        "isolated": True,
        "code": """
            sb = moonjail.Sandbox(isolate=True, timeout=None, tools={"probe.ready": ready})
            sb.run("pcall(probe.ready) while true do end")
            print("the run returned", flush=True)
        """,
    },
    # No signal: a tool raises KeyboardInterrupt, the script catches the Lua error and
    # spins; the run must stop anyway.
    "tool_ki_caught": {
        "signal": False,
        "code": """
            sb = moonjail.Sandbox(timeout=None, tools={"t.ki": ki})
            sb.run("pcall(t.ki) while true do end")
            print("the run returned", flush=True)
        """,
    },
}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Dict[str, Any]]]:
    """Every scenario's child, run together: {"name": {"returncode", "stdout",
    "stderr", "hung"}}."""
    cwd = tmp_path_factory.mktemp("interrupt")
    children: Dict[str, subprocess.Popen] = {}
    skipped: Dict[str, str] = {}
    for name, spec in SCENARIOS.items():
        if spec.get("isolated") and isolation_problem() is not None:
            skipped[name] = str(isolation_problem())
            continue
        script = PRELUDE + textwrap.dedent(spec["code"])
        children[name] = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,  # never the source tree: the installed package
        )
    first_lines: Dict[str, str] = {}
    for name, child in children.items():
        if SCENARIOS[name]["signal"]:
            assert child.stdout is not None
            first_lines[name] = child.stdout.readline()  # EOF at worst, by the watchdog
            if first_lines[name].strip() == "started":
                time.sleep(0.2)  # the tool has returned: the script spins in Lua
                child.send_signal(signal.SIGINT)
    results: Dict[str, Dict[str, Any]] = {}
    for name, child in children.items():
        hung = False
        try:
            out, err = child.communicate(timeout=COMMUNICATE_S)
        except subprocess.TimeoutExpired:
            hung = True
            child.kill()
            out, err = child.communicate()
        results[name] = {
            "returncode": child.returncode,
            "stdout": first_lines.get(name, "") + out,
            "stderr": err,
            "hung": hung,
        }
    for name, reason in skipped.items():
        results[name] = {"skip": reason}
    yield results


def check_keyboard_interrupt(result: Dict[str, Any]) -> None:
    if "skip" in result:
        pytest.skip(f"isolation unavailable: {result['skip']}")
    detail = f"stdout={result['stdout']!r}\nstderr={result['stderr'][-2000:]!r}"
    assert not result["hung"], detail
    assert "WATCHDOG" not in result["stderr"], detail
    assert result["returncode"] != 0, detail
    assert "KeyboardInterrupt" in result["stderr"], detail
    assert "returned" not in result["stdout"], detail


def test_ctrl_c_stops_a_run(interrupted: Dict[str, Dict[str, Any]]) -> None:
    assert interrupted["run"]["stdout"].startswith("started")
    check_keyboard_interrupt(interrupted["run"])


def test_ctrl_c_stops_eval(interrupted: Dict[str, Dict[str, Any]]) -> None:
    check_keyboard_interrupt(interrupted["eval"])


def test_ctrl_c_stops_a_session_request(interrupted: Dict[str, Dict[str, Any]]) -> None:
    check_keyboard_interrupt(interrupted["session"])


def test_ctrl_c_stops_an_isolated_run(interrupted: Dict[str, Dict[str, Any]]) -> None:
    check_keyboard_interrupt(interrupted["isolated"])


def test_keyboard_interrupt_from_a_tool_stops_a_script_that_catches_it(
    interrupted: Dict[str, Dict[str, Any]],
) -> None:
    check_keyboard_interrupt(interrupted["tool_ki_caught"])


def test_ctrl_c_outside_a_run_is_ordinary() -> None:
    script = PRELUDE + textwrap.dedent(
        """
        sb = moonjail.Sandbox()
        assert sb.run("return 1").result == 1
        os.kill(os.getpid(), signal.SIGINT)
        import time
        time.sleep(5)
        print("not interrupted")
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        timeout=COMMUNICATE_S, cwd=tempfile.gettempdir(),
    )
    assert child.returncode != 0
    assert "KeyboardInterrupt" in child.stderr
    assert "not interrupted" not in child.stdout


# ---------------------------------------------------------------------- CancelToken


def test_cancel_token_basics() -> None:
    token = moonjail.CancelToken()
    assert token.cancelled is False
    assert "cancelled=false" in repr(token).lower()
    token.cancel()
    token.cancel()
    assert token.cancelled is True
    assert "cancelled=true" in repr(token).lower()


def test_unused_token_changes_nothing() -> None:
    sb = moonjail.Sandbox()
    token = moonjail.CancelToken()
    assert sb.run("return 1", cancel=token).result == 1
    assert sb.eval("2", cancel=token) == 2
    with sb.session() as s:
        assert s.exec("return 3", cancel=token).result == 3
        s.execute("function f() return 4 end")
        assert s.call_outcome("f", cancel=token).result == 4
    assert token.cancelled is False


def _cancel_when_ready(token: moonjail.CancelToken, ready: threading.Event) -> threading.Thread:
    def cancel() -> None:
        if ready.wait(10):
            time.sleep(0.05)
            token.cancel()

    t = threading.Thread(target=cancel, daemon=True)
    t.start()
    return t


def test_cancel_token_stops_a_run() -> None:
    # The 1.5 s timeout is a safety net: without the interrupt check the run ends as
    # "timeout" instead of "interrupted".
    ready = threading.Event()
    sb = moonjail.Sandbox(timeout=1.5, tools={"probe.ready": lambda: ready.set()})
    token = moonjail.CancelToken()
    t = _cancel_when_ready(token, ready)
    out = sb.run("probe.ready() while true do end", cancel=token)
    t.join(10)
    assert isinstance(out.error, moonjail.InterruptedRunError), repr(out.error)
    assert out.error.kind == "interrupted"
    assert sb.run("return 'after'").result == "after"


def test_cancel_token_stops_a_session_request() -> None:
    ready = threading.Event()
    sb = moonjail.Sandbox(timeout=1.5, tools={"probe.ready": lambda: ready.set()})
    token = moonjail.CancelToken()
    with sb.session() as s:
        t = _cancel_when_ready(token, ready)
        out = s.exec("probe.ready() while true do end", cancel=token)
        t.join(10)
        assert isinstance(out.error, moonjail.InterruptedRunError), repr(out.error)


def test_cancelled_token_stops_the_next_run() -> None:
    sb = moonjail.Sandbox(timeout=1.5)
    token = moonjail.CancelToken()
    token.cancel()
    out = sb.run("while true do end", cancel=token)
    assert isinstance(out.error, moonjail.InterruptedRunError), repr(out.error)
