"""moonjail's exceptions: one class per outcome kind, rooted at ``SandboxError``.

The native module builds them (``exception_class``); they are plain Python classes so
that they pickle, subclass and print like any other exception.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Type


class SandboxError(Exception):
    """A run failed: the script's error, or a limit it ran into.

    Every field of the ``error`` of ``moonjail run --json`` is an attribute:

    - ``kind``: the stable category (``"runtime"``, ``"timeout"``, ...);
    - ``message``: the message, as Lua worded it where it was raised;
    - ``line``: the line in the script (None when no line applies);
    - ``traceback``: the Lua frames, innermost first, as dicts
      ``{"function", "source", "line"}``;
    - ``value``: the error value when the script raised a table (``error({code = 1})``);
    - ``hint``: for a syntax habit from another language, what Lua writes instead.
    """

    kind: str = "sandbox"

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        line: Optional[int] = None,
        traceback: Optional[List[Dict[str, Any]]] = None,
        value: Any = None,
        hint: Optional[str] = None,
        findings: Optional[List[Dict[str, Any]]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.line = line
        self.traceback = list(traceback or [])
        self.value = value
        self.hint = hint
        self.findings = findings

    def __str__(self) -> str:
        # The message already names the place (``script:3: ...``) or the limit
        # (``timeout: ...``); the hint, when there is one, follows it.
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message

    def __reduce__(self):  # pickle: keyword fields survive
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "kind": self.kind,
                    "line": self.line,
                    "traceback": self.traceback,
                    "value": self.value,
                    "hint": self.hint,
                    "findings": self.findings,
                },
            ),
        )


def _rebuild(cls: Type[SandboxError], message: str, fields: Dict[str, Any]) -> SandboxError:
    return cls(message, **fields)


class LuaSyntaxError(SandboxError):
    """The source does not parse (``kind == "syntax"``)."""

    kind = "syntax"


class LuaRuntimeError(SandboxError):
    """The script raised an error or misused a function (``kind == "runtime"``)."""

    kind = "runtime"


class LimitError(SandboxError):
    """The run ran into one of its limits (the four subclasses below)."""


class MemoryLimitError(LimitError):
    """The Lua heap would have grown past ``memory_limit`` (``"memory_limit"``)."""

    kind = "memory_limit"


class InstructionLimitError(LimitError):
    """The instruction budget ran out (``"instruction_limit"``)."""

    kind = "instruction_limit"


class TimeLimitError(LimitError):
    """The run passed its wall-clock ``timeout`` (``kind == "timeout"``)."""

    kind = "timeout"


class OutputLimitError(LimitError):
    """The script printed more than ``output_limit`` (``"output_limit"``)."""

    kind = "output_limit"


class InputError(SandboxError):
    """The source or input was refused before the script ran (``"input"``)."""

    kind = "input"


class ResultError(SandboxError):
    """The result could not be turned into JSON (``"result"``)."""

    kind = "result"


class ForbiddenError(SandboxError):
    """The script tried something the sandbox refuses (``"forbidden"``)."""

    kind = "forbidden"


class WorkerKilledError(SandboxError):
    """The isolated worker running the script died (``"killed"``)."""

    kind = "killed"


class InternalError(SandboxError):
    """A fault in moonjail itself, never the script's doing (``"internal"``)."""

    kind = "internal"


class LintError(SandboxError):
    """``lint=True`` found errors, so the script did not run (``"lint"``); the
    findings are in ``findings``."""

    kind = "lint"


class InterruptedRunError(SandboxError):
    """The host stopped the run (a cancelled ``run_async``) (``"interrupted"``)."""

    kind = "interrupted"


class ReplayDivergenceError(SandboxError):
    """A replay of a journal stopped because the script asked for something other than
    what the journal recorded next (``"replay_divergence"``); the message names the
    step, what was recorded and what was asked."""

    kind = "replay_divergence"


class SuspendedError(SandboxError):
    """The script called a deferred tool (``defer_tools=``) and the run stopped there to
    wait for the host's answer (``"suspended"``). Not the script's fault: ``value`` is
    the pending call ``{"name", "args"}``; a run recorded with ``journal=`` continues
    with ``Sandbox.resume(journal, answer)``, one started with ``Sandbox.start`` with
    ``Suspension.resume(answer)``."""

    kind = "suspended"


class JournalError(Exception):
    """A journal could not be written, read, or resumed (missing, truncated, corrupt,
    over its size limit, not suspended). A replay that diverges is not one: it is an
    outcome of kind ``"replay_divergence"``."""


class ConfigError(ValueError):
    """A sandbox cannot be built as configured (an unknown profile, a bad limit, a tool
    name that is not a Lua identifier, ...)."""


class ToolError(Exception):
    """Raise it from a tool to fail the call with exactly this message.

    The script sees a catchable Lua error (``pcall`` returns it). Any other exception a
    tool raises becomes ``"<ExceptionType>: <message>"``; a Python traceback never
    reaches the script.
    """


_BY_KIND: Dict[str, Type[SandboxError]] = {
    cls.kind: cls
    for cls in (
        LuaSyntaxError,
        LuaRuntimeError,
        MemoryLimitError,
        InstructionLimitError,
        TimeLimitError,
        OutputLimitError,
        InputError,
        ResultError,
        ForbiddenError,
        WorkerKilledError,
        InternalError,
        LintError,
        InterruptedRunError,
        ReplayDivergenceError,
        SuspendedError,
    )
}


def exception_class(kind: str) -> Type[SandboxError]:
    """The exception class of an outcome kind (``SandboxError`` for an unknown one)."""
    return _BY_KIND.get(kind, SandboxError)
