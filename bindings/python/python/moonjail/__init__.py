"""moonjail: run Lua you did not write, safely, from Python.

::

    import moonjail

    sb = moonjail.Sandbox(memory_limit="16MiB", timeout=0.5)
    out = sb.run("function run(ctx) return {sum = ctx.a + ctx.b} end", input={"a": 1, "b": 2})
    assert out.ok and out.result == {"sum": 3}

Every run gets a fresh Lua 5.4 state whose globals are exactly the profile's, under exact
limits (memory counted by the allocator, a wall-clock deadline, an optional instruction
budget, output and result caps). The GIL is released while Lua runs. See the package's
README for the whole API.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Literal, Union

from . import _native
from ._errors import (
    ConfigError,
    ForbiddenError,
    InputError,
    InstructionLimitError,
    InternalError,
    InterruptedRunError,
    JournalError,
    ReplayDivergenceError,
    LimitError,
    LintError,
    LuaRuntimeError,
    LuaSyntaxError,
    MemoryLimitError,
    OutputLimitError,
    ResultError,
    SandboxError,
    SuspendedError,
    TimeLimitError,
    ToolError,
    WorkerKilledError,
)
from ._native import CancelToken, Outcome, Session, Suspension, replay, time_left
from ._tool import Tool, tool

__version__: str = _native.__version__

__all__ = [
    "Sandbox",
    "Session",
    "Outcome",
    "Suspension",
    "CancelToken",
    "Tool",
    "tool",
    "time_left",
    "run",
    "replay",
    "SandboxError",
    "LuaSyntaxError",
    "LuaRuntimeError",
    "LimitError",
    "MemoryLimitError",
    "InstructionLimitError",
    "TimeLimitError",
    "OutputLimitError",
    "InputError",
    "ResultError",
    "ForbiddenError",
    "WorkerKilledError",
    "InternalError",
    "LintError",
    "InterruptedRunError",
    "ReplayDivergenceError",
    "SuspendedError",
    "JournalError",
    "ConfigError",
    "ToolError",
]


class Sandbox(_native.Sandbox):
    """A sandbox: a profile, limits and host tools, ready to run scripts.

    ``Sandbox(profile="standard", *, memory_limit=..., timeout=..., ...)``; see the
    package README (or ``help(moonjail.Sandbox.__init__)`` in the stubs) for every
    option. A sandbox is safe to share between threads; each run gets a fresh state.
    """

    async def run_async(
        self,
        code: Union[str, bytes],
        input: Any = None,
        *,
        lint: bool = False,
    ) -> Outcome:
        """``run`` on the event loop's default executor; cancelling the awaiting task
        stops the script (within about 50 ms) and raises ``CancelledError``."""
        outcome: Outcome = await _cancellable(
            lambda token: self.run(code, input, lint=lint, cancel=token)
        )
        return outcome

    async def eval_async(self, code: Union[str, bytes], input: Any = None) -> Any:
        """``eval`` on the event loop's default executor (cancellable as ``run_async``)."""
        return await _cancellable(lambda token: self.eval(code, input, cancel=token))


async def _cancellable(call: Callable[[CancelToken], Any]) -> Any:
    """``call(token)`` on the default executor; the token is cancelled, stopping the
    script, when the awaiting task is."""
    token = CancelToken()
    future = asyncio.get_running_loop().run_in_executor(None, call, token)
    try:
        return await future
    except asyncio.CancelledError:
        token.cancel()
        raise


def run(
    code: Union[str, bytes],
    input: Any = None,
    *,
    profile: Literal["minimal", "standard", "aos"] = "standard",
) -> Outcome:
    """Runs ``code`` once in a default sandbox of ``profile`` (a new sandbox per call:
    for many runs, make a ``Sandbox`` and reuse it)."""
    return Sandbox(profile).run(code, input)


