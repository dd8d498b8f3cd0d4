"""The type stubs: mypy's stubtest against the installed module, ``mypy --strict`` over a
typed sample (typing_sample.py), and misuse that the stubs must reject.

Checks the installed package (as the rest of the suite does), from a temporary
directory so that the source tree is never picked up instead.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from typing import List

import pytest

from conftest import TESTS_DIR

ALLOWLIST = os.path.join(TESTS_DIR, "stubtest_allowlist.txt")
SAMPLE = os.path.join(TESTS_DIR, "typing_sample.py")


def installed_package_dir() -> str:
    spec = importlib.util.find_spec("moonjail")
    assert spec is not None and spec.submodule_search_locations
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def stubs() -> str:
    """The installed package's directory; skips while it has no ``_native.pyi``."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed in this environment")
    pkg = installed_package_dir()
    if not os.path.isfile(os.path.join(pkg, "_native.pyi")):
        source = os.path.join(TESTS_DIR, os.pardir, "python", "moonjail", "_native.pyi")
        where = (
            "written in the source tree but not in the installed package yet (reinstall it)"
            if os.path.isfile(source)
            else "not written yet"
        )
        pytest.skip(f"the stub python/moonjail/_native.pyi is {where}")
    return pkg


def mypy(args: List[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in ``cwd``, with an empty mypy configuration (``mypy.ini``)."""
    (cwd / "mypy.ini").write_text("[mypy]\n")
    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stubtest(stubs: str, tmp_path: pathlib.Path) -> None:
    args = ["mypy.stubtest", "moonjail", "--mypy-config-file", "mypy.ini"]
    if os.path.isfile(ALLOWLIST):
        args += ["--allowlist", ALLOWLIST]
    done = mypy(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_typed_sample_passes_mypy_strict(stubs: str, tmp_path: pathlib.Path) -> None:
    done = mypy(
        ["mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", "mypy.ini", SAMPLE],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_typed_sample_runs(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, SAMPLE], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


MISUSE = textwrap.dedent(
    """\
    import moonjail

    sb = moonjail.Sandbox(timeout=[1])  # E:3
    sb.run(123)  # E:4
    moonjail.Sandbox(memory_limt=1)  # E:5
    moonjail.Sandbox("full")  # E:6
    out = sb.run("return 1")
    n: int = out.ok + ""  # E:8
    s = sb.session()
    s.call(5)  # E:10
    x: str = sb.limits  # E:11
    moonjail.Tool(print, max_calls="3")  # E:12
    ok: bool = out.raise_for_error().ok
    """
)


def test_stubs_reject_misuse(stubs: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "misuse.py"
    path.write_text(MISUSE)
    done = mypy(
        ["mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", "mypy.ini", str(path)],
        tmp_path,
    )
    flagged = {int(m) for m in re.findall(r"misuse\.py:(\d+): error", done.stdout)}
    expected = {int(m) for m in re.findall(r"# E:(\d+)", MISUSE)}
    assert flagged == expected, done.stdout + done.stderr
