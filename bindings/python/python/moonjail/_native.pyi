"""Type stubs of moonjail's native module (the Rust extension)."""

import datetime
import os
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Type,
    TypeVar,
    Union,
)

from typing_extensions import disjoint_base, final

from ._tool import Tool

__version__: str
LUA_VERSION: str

#: JSON values as Python gives and takes them.
JSON = Any
#: A byte size: an int, or text such as ``"16MiB"``.
Size = Union[int, str]
#: A duration: seconds, a timedelta, or text such as ``"500ms"``.
Seconds = Union[int, float, datetime.timedelta, str]
StrPath = Union[str, "os.PathLike[str]"]
_S = TypeVar("_S", bound="Sandbox")
Profile = Literal["minimal", "standard", "aos"]

@final
class CancelToken:
    """Stops the runs it is passed to (``run(..., cancel=token)``) once cancelled."""

    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

@final
class Outcome:
    """What a run produced (the fields of ``moonjail run --json``)."""

    @property
    def ok(self) -> bool: ...
    @property
    def result(self) -> JSON: ...
    @property
    def results(self) -> List[JSON]: ...
    @property
    def output(self) -> str: ...
    @property
    def output_truncated(self) -> Optional[Dict[str, int]]: ...
    @property
    def error(self) -> Optional[Any]:
        """The ``moonjail.SandboxError`` subclass instance of the run's error, or None."""
    @property
    def stats(self) -> Dict[str, Any]: ...
    @property
    def tool_calls(self) -> List[Dict[str, Any]]: ...
    @property
    def lint(self) -> Optional[Dict[str, Any]]: ...
    @property
    def diagnostics(self) -> Optional[Dict[str, Any]]: ...
    def raise_for_error(self) -> "Outcome": ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self) -> str: ...

@final
class Session:
    """A persistent Lua state, usable on the thread that opened it."""

    def exec(
        self,
        code: Union[str, bytes],
        input: JSON = None,
        *,
        timeout: Optional[Union[int, float, str]] = None,
        instruction_limit: Optional[int] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Outcome: ...
    def execute(
        self,
        code: Union[str, bytes],
        input: JSON = None,
        *,
        timeout: Optional[Union[int, float, str]] = None,
        instruction_limit: Optional[int] = None,
    ) -> JSON: ...
    def eval(
        self,
        code: Union[str, bytes],
        *,
        timeout: Optional[Union[int, float, str]] = None,
        instruction_limit: Optional[int] = None,
    ) -> JSON: ...
    def call(
        self,
        name: str,
        *args: JSON,
        timeout: Optional[Union[int, float, str]] = None,
        instruction_limit: Optional[int] = None,
    ) -> JSON: ...
    def call_outcome(
        self,
        name: str,
        *args: JSON,
        timeout: Optional[Union[int, float, str]] = None,
        instruction_limit: Optional[int] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Outcome: ...
    def has_function(self, name: str) -> bool: ...
    def function_exists(self, name: str) -> bool: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def closed_reason(self) -> Optional[Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Session": ...
    def __exit__(self, *exc: object) -> None: ...

@disjoint_base
class Sandbox:
    """A sandbox: a profile, limits and host tools, ready to run scripts."""

    def __new__(
        cls: Type[_S],
        profile: Profile = "standard",
        *,
        memory_limit: Optional[Size] = ...,
        timeout: Optional[Seconds] = ...,
        instruction_limit: Optional[Union[int, str]] = ...,
        output_limit: Optional[Size] = ...,
        output_overflow: Literal["fail", "truncate"] = ...,
        source_limit: Optional[Size] = ...,
        result_limit: Optional[Size] = ...,
        result_depth: int = ...,
        tools: Optional[Mapping[str, Union[Callable[..., Any], Tool]]] = ...,
        defer_tools: Optional[Union[str, Sequence[str]]] = ...,
        tool_call_limit: Optional[int] = ...,
        allow_http: Optional[Union[str, Sequence[str]]] = ...,
        isolate: bool = ...,
        workers: int = ...,
        worker: Optional[StrPath] = ...,
        deterministic: bool = ...,
        seed: int = ...,
        timestamp: int = ...,
        modules: Optional[StrPath] = ...,
        read: Optional[Union[str, Sequence[str]]] = ...,
        require_run: bool = ...,
        require_table: bool = ...,
        diagnostic: bool = ...,
        prepared_states: int = ...,
    ) -> _S: ...
    def run(
        self,
        code: Union[str, bytes],
        input: JSON = None,
        *,
        lint: bool = False,
        cancel: Optional[CancelToken] = None,
        journal: Optional[StrPath] = None,
    ) -> Outcome: ...
    def eval(
        self,
        code: Union[str, bytes],
        input: JSON = None,
        *,
        cancel: Optional[CancelToken] = None,
    ) -> JSON: ...
    def resume(
        self, journal: StrPath, answer: JSON = None, *, error: Optional[str] = None
    ) -> Outcome: ...
    def start(
        self, code: Union[str, bytes], input: JSON = None
    ) -> Union[Outcome, "Suspension"]: ...
    def session(self) -> Session: ...
    def lint(self, code: Union[str, bytes]) -> Dict[str, Any]: ...
    def tool_catalogue(self) -> Dict[str, Any]: ...
    def lua_stubs(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def limits(self) -> Dict[str, Optional[Union[int, float]]]: ...
    @property
    def isolated(self) -> bool: ...

@final
class Suspension:
    """A run suspended at a deferred tool call, held in memory (``Sandbox.start``)."""

    @property
    def pending(self) -> Dict[str, Any]: ...
    def resume(
        self, answer: JSON = None, *, error: Optional[str] = None
    ) -> Union[Outcome, "Suspension"]: ...
    def abandon(self) -> Outcome:
        """Gives the run up where it waits: its outcome (kind "suspended"), output so far."""

def replay(
    journal: StrPath,
    *,
    source: Optional[Union[str, bytes]] = None,
    isolate: bool = False,
    worker: Optional[StrPath] = None,
    trust_limits: bool = False,
) -> Outcome:
    """Re-executes a journal (``Sandbox.run(journal=...)``) without calling a tool.

    A journal whose limits allow more than 60 s, 1 GiB, 16 MiB of output or of result
    (or no limit) raises ``JournalError`` unless ``trust_limits`` is set."""

def time_left() -> Optional[float]:
    """Seconds left before the deadline of the tool call running on this thread."""
