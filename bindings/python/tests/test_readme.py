"""The package README's Python examples run as written (so they cannot go stale).

Blocks that show another library (LuaWard, lupa) are skipped: those are not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
FOREIGN = ("from luaward", "from lupa")


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int) -> None:
    code = BLOCKS[index]
    if any(marker in code for marker in FOREIGN):
        pytest.skip("shows another library")
    if "isolate=True" in code:
        import moonjail

        try:
            moonjail.Sandbox(isolate=True).run("return 1").raise_for_error()
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"isolation unavailable here: {e}")
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "readme"})
