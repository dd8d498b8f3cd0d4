"""``Tool``: a host tool with a description, schemas and a quota."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Tool:
    """A Python callable offered to scripts as a host tool, described for the model.

    ``func`` takes the script's arguments (JSON values: None, bool, int, float, str,
    list, dict) and returns one. ``parameters`` is a JSON Schema of the argument list
    (an ``array`` schema) or of the first argument (any other schema): every call is
    checked against it before ``func`` runs, and a call that does not fit is a tool error
    naming the argument. ``returns`` documents the result. ``max_calls`` bounds the
    calls one run may make to this tool. ``description`` defaults to the first
    paragraph of ``func``'s docstring.
    """

    __slots__ = ("func", "description", "parameters", "returns", "max_calls")

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        description: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        returns: Optional[Dict[str, Any]] = None,
        max_calls: Optional[int] = None,
    ) -> None:
        if not callable(func):
            raise TypeError("Tool(func): func must be callable")
        if description is None:
            doc = inspect.getdoc(func)
            if doc:
                description = doc.split("\n\n", 1)[0].replace("\n", " ").strip() or None
        self.func = func
        self.description = description
        self.parameters = parameters
        self.returns = returns
        self.max_calls = max_calls

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", repr(self.func))
        return f"<moonjail.Tool {name}>"


def tool(
    *,
    description: Optional[str] = None,
    parameters: Optional[Dict[str, Any]] = None,
    returns: Optional[Dict[str, Any]] = None,
    max_calls: Optional[int] = None,
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator form of ``Tool``::

        @moonjail.tool(parameters={"type": "object", "required": ["city"]})
        def lookup(args):
            '''The forecast for a city.'''
            return {"forecast": "sunny"}
    """

    def wrap(func: Callable[..., Any]) -> Tool:
        return Tool(
            func,
            description=description,
            parameters=parameters,
            returns=returns,
            max_calls=max_calls,
        )

    return wrap
