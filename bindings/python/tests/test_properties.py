"""Property tests of the value bridge: any JSON-shaped Python value crosses into Lua and
back unchanged (as input, as a tool's argument and result, as a session call's
argument), and anything else is refused with an exception, never a crash."""

from __future__ import annotations

import math
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import moonjail  # noqa: E402

SETTINGS = settings(max_examples=int(__import__("os").environ.get("MOONJAIL_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
# Lua has no distinct empty object and empty array, and a table whose keys are exactly
# 1..n is an array: dict keys that look like small integers would read back as a list.
keys = st.text(min_size=1, max_size=12).filter(lambda k: not k.isdigit())
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, min_size=1, max_size=6)
    | st.dictionaries(keys, inner, min_size=1, max_size=6),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equality where a float that is integral may come back as an int and
    nil inside a list is null (JSON's rules)."""
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b or (math.isnan(a) and math.isnan(b))
    if a in ([], {}) and b in ([], {}):
        return True  # an empty Lua table is both
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


SB = moonjail.Sandbox(result_depth=64)


def expected_back(value: Any) -> Any:
    """What comes back from Lua: null in an array is kept (as ``json.null``), null in
    an object is an absent key (nil), as the README's JSON rules say."""
    if isinstance(value, list):
        return [expected_back(v) for v in value]
    if isinstance(value, dict):
        return {k: expected_back(v) for k, v in value.items() if v is not None}
    return value


@SETTINGS
@given(json_values)
def test_input_comes_back_as_the_result(value: Any) -> None:
    out = SB.run("return ...", value)
    assert out.ok, out.error
    assert same(expected_back(value), out.result), (value, out.result)


@SETTINGS
@given(json_values)
def test_a_tool_sees_what_the_script_passes_and_returns_what_it_gives(value: Any) -> None:
    seen = []

    def echo(v: Any = None) -> Any:
        seen.append(v)
        return v

    sb = moonjail.Sandbox(tools={"t.echo": echo})
    out = sb.run("local v = ... return t.echo(v)", value)
    assert out.ok, out.error
    assert len(seen) == 1
    expected = expected_back(value)
    assert same(expected, seen[0])
    assert same(expected, out.result)


@SETTINGS
@given(st.recursive(
    scalars | st.binary(max_size=4) | st.sets(st.integers(), max_size=2)
    | st.complex_numbers(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(), st.floats(allow_nan=False)), inner,
        max_size=4),
    max_leaves=12,
))
def test_anything_else_is_refused_with_an_exception(value: Any) -> None:
    try:
        out = SB.run("return ...", value)
    except (TypeError, ValueError) as e:
        assert str(e).startswith("input")
        return
    assert out.ok or out.error.kind in {"input", "result", "memory_limit"}
