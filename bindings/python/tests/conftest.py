"""Shared fixtures and helpers of moonjail's Python suite.

The suite tests the *installed* package (``import moonjail``), never the source tree:
``bindings/python/scripts/test.sh`` installs it into a virtual environment and runs
pytest from this directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import moonjail

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------- processes


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _stat(pid: int) -> Optional[Tuple[int, str, int]]:
    """(parent pid, state letter, CPU ticks used) of ``pid``, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[11]) + int(fields[12])


def descendants(pid: Optional[int] = None) -> List[int]:
    """Every live descendant of ``pid`` (default: this process)."""
    root = os.getpid() if pid is None else pid
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None:
            children.setdefault(st[0], []).append(int(entry))
    out: List[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def worker_processes() -> List[int]:
    """This process's descendants that run the isolated worker executable."""
    found = []
    for pid in descendants():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"moonjail-worker" in cmd.split(b"\0", 1)[0]:
            found.append(pid)
    return found


def proc_status(pid: int) -> Dict[str, str]:
    """The fields of /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kill_running_worker(exclude: List[int], deadline_s: float = 10.0) -> int:
    """SIGKILLs the worker process (not in ``exclude``) that is running a script: the one
    burning CPU. The "worker death" probe; call it once the script is known to spin.
    Returns the pid killed."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        first = {}
        for pid in worker_processes():
            st = _stat(pid)
            if pid not in exclude and st is not None:
                first[pid] = st[2]
        time.sleep(0.1)
        best, best_delta = None, 0
        for pid, ticks in first.items():
            st = _stat(pid)
            if st is not None and st[1] == "R" and st[2] - ticks > best_delta:
                best, best_delta = pid, st[2] - ticks
        if best is not None:
            os.kill(best, signal.SIGKILL)
            return best
    raise AssertionError("no worker process started running the script")


class WorkerKiller:
    """The worker death probe: give ``killer.tool`` to an isolated sandbox as a tool, run
    ``probe.ready() while true do end`` inside ``with killer:``, and the worker running
    the script is SIGKILLed once the script has called the tool and spins.

    Make the killer before the sandbox: workers alive then are never touched."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.before = worker_processes()
        self.killed: Optional[int] = None
        self.error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def tool(self, *args: object) -> bool:
        self.ready.set()
        return True

    def _kill(self) -> None:
        try:
            if not self.ready.wait(20):
                raise AssertionError("the script never called probe.ready()")
            self.killed = kill_running_worker(exclude=self.before)
        except BaseException as e:  # reported by __exit__
            self.error = e

    def __enter__(self) -> "WorkerKiller":
        self._thread = threading.Thread(target=self._kill, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        self._thread.join(30)
        if self.error is not None and exc[0] is None:
            raise self.error


# --------------------------------------------------------------------------- isolation

_ISOLATION: Dict[str, Optional[str]] = {}


def isolation_problem() -> Optional[str]:
    """None when ``Sandbox(isolate=True)`` runs scripts here, else why not (cached)."""
    if "reason" not in _ISOLATION:
        reason: Optional[str]
        try:
            out = moonjail.Sandbox(isolate=True).run("return 1")
            reason = None if out.ok and out.result == 1 else f"isolated run failed: {out.error!r}"
        except Exception as e:  # the sandbox cannot even be built
            reason = f"isolated sandbox cannot be built: {type(e).__name__}: {e}"
        _ISOLATION["reason"] = reason
    return _ISOLATION["reason"]


def require_isolation() -> None:
    reason = isolation_problem()
    if reason is not None:
        print(f"\nskipping: isolation unavailable: {reason}")
        pytest.skip(f"isolation (namespaces/seccomp) unavailable: {reason}")


@pytest.fixture(scope="module")
def isolated_sandbox() -> Iterator[moonjail.Sandbox]:
    """An isolated sandbox with a 2 s timeout, shared by a module; skips without
    isolation."""
    require_isolation()
    yield moonjail.Sandbox(isolate=True, timeout=2)


@pytest.fixture
def isolated() -> Callable[..., moonjail.Sandbox]:
    """A factory of isolated sandboxes (skips without isolation)."""
    require_isolation()

    def make(**options: object) -> moonjail.Sandbox:
        return moonjail.Sandbox(isolate=True, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def sandbox() -> moonjail.Sandbox:
    """A default in-process sandbox, shared by a module."""
    return moonjail.Sandbox()
