"""Sandboxes survive ``fork`` (multiprocessing's default start method on Linux, and
pre-forking servers): the child's deadlines still fire, an isolated sandbox's child
spawns workers of its own and never touches (or kills) the parent's.

Each case runs in a fresh interpreter, which forks; the pytest process never forks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import isolation_problem

SCRIPT = textwrap.dedent(
    """
    import os, sys, signal, moonjail
    iso = sys.argv[1] == "iso"
    sb = moonjail.Sandbox(timeout=0.2, isolate=iso, **({"workers": 2} if iso else {}))
    assert sb.run("return 1").result == 1
    assert sb.run("while true do end").error.kind == "timeout"   # arms this thread's timer
    def workers():
        me = os.getpid()
        found = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            if ppid == me:
                found.add(int(pid))
        return found
    # The timed-out run's worker is retired and replaced by the pool's keeper thread,
    # off the run's path: take the parent's workers once that has settled.
    import time
    before, settled = workers(), 0
    while settled < 4:
        time.sleep(0.05)
        now = workers()
        settled = settled + 1 if now == before else 0
        before = now
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)                      # a hang guard for the child
        out = sb.run("return 2")
        assert out.result == 2, out.error
        out = sb.run("while true do end")     # the timer made before the fork is gone
        assert out.error is not None and out.error.kind == "timeout", out.error
        with sb.session() as s:
            assert s.eval("1 + 2") == 3
        sys.exit(0)                           # finalises the sandbox in the child
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    # The parent's workers were not killed by the child, and the parent goes on.
    if iso:
        assert before and before <= workers(), (before, workers())
    assert sb.run("return 4").result == 4
    assert sb.run("while true do end").error.kind == "timeout"
    print("ok")
    """
)


@pytest.mark.parametrize("mode", ["in_process", "iso"])
def test_a_forked_child_runs_with_deadlines_and_leaves_the_parent_alone(mode: str) -> None:
    if mode == "iso" and isolation_problem():
        pytest.skip(f"isolation unavailable: {isolation_problem()}")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"
    assert "panicked" not in done.stderr, done.stderr
