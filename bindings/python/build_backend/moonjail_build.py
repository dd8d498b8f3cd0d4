"""PEP 517 backend: maturin, plus the isolated worker executable.

``isolate=True`` runs scripts in a separate, locked-down process: the ``moonjail-worker``
executable of the Rust workspace. maturin builds one Rust library per wheel, so before
delegating to it this backend builds the worker (``cargo build --release --bin
moonjail-worker``, in the workspace's own target directory, so the library compiled for
the extension module is reused) and copies it into the package directory, from where
the wheel carries it (``[tool.maturin] include``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import maturin
from maturin import *  # noqa: F401,F403  (every hook maturin defines, unchanged)

HERE = Path(__file__).resolve().parent.parent  # bindings/python
PACKAGE = HERE / "python" / "moonjail"


def _cargo() -> str:
    return os.environ.get("CARGO", "cargo")


def _build_worker() -> None:
    if os.environ.get("MOONJAIL_SKIP_WORKER_BUILD") == "1":
        return
    meta = subprocess.run(
        [_cargo(), "metadata", "--format-version", "1", "--no-deps"],
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(meta.stdout)
    target = Path(info["target_directory"])
    print("moonjail: building the isolated worker (cargo build --release --bin moonjail-worker)",
          file=sys.stderr)
    subprocess.run(
        [_cargo(), "build", "--release", "-p", "moonjail", "--bin", "moonjail-worker"],
        cwd=info["workspace_root"],
        check=True,
        stdout=sys.stderr,
    )
    built = target / "release" / "moonjail-worker"
    dest = PACKAGE / "moonjail-worker"
    tmp = dest.with_suffix(".tmp")
    shutil.copy2(built, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Dict[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    _build_worker()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Dict[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    _build_worker()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
