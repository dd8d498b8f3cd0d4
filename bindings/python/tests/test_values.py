"""Python values to Lua and back (JSON rules: ``json.dumps``'s on the way in, the
sandbox's marshaling on the way out)."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import math

import pytest

import moonjail

IDENTITY = "return ..."
TYPED = "local x = ... return math.type(x) or type(x), x"


@pytest.mark.parametrize(
    "value, lua_type",
    [
        (None, "nil"),
        (True, "boolean"),
        (False, "boolean"),
        (0, "integer"),
        (1, "integer"),
        (-1, "integer"),
        (2**63 - 1, "integer"),
        (-(2**63), "integer"),
        (1.5, "float"),
        (3.0, "float"),
        (-0.0, "float"),
        (1e308, "float"),
        (5e-324, "float"),
        ("", "string"),
        ("héllo ✓ 𝄞", "string"),
        ("a\x00b", "string"),
        ("line\u2028sep", "string"),
        ([1, [2, [3]]], "table"),
        ({"a": {"b": [1, 2.5, "c"]}}, "table"),
        ([], "table"),
        ({}, "table"),
    ],
)
def test_round_trip(sandbox: moonjail.Sandbox, value: object, lua_type: str) -> None:
    out = sandbox.run(TYPED, value)
    assert out.ok, out.error
    assert out.results[0] == lua_type
    back = out.results[1]
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, back) == math.copysign(1.0, value)


def test_integers_stay_integers_and_floats_floats(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("return 3, 3.0, 2^53, 7 // 2, 7 / 2, math.maxinteger, math.mininteger")
    assert out.results == [3, 3.0, 2.0**53, 3, 3.5, 2**63 - 1, -(2**63)]
    assert [type(v) for v in out.results] == [int, float, float, int, float, int, int]


def test_64_bit_integer_arithmetic(sandbox: moonjail.Sandbox) -> None:
    assert sandbox.eval("... + 1", 2**62) == 2**62 + 1
    assert sandbox.eval("... // 3", 2**63 - 1) == (2**63 - 1) // 3
    assert sandbox.eval("math.maxinteger + 1 == math.mininteger") is True


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_too_large_int_refused(sandbox: moonjail.Sandbox, value: int) -> None:
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, value)
    assert "input" in str(info.value)
    assert "too large" in str(info.value)
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, {"n": [value]})
    assert 'input["n"][0]' in str(info.value)


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30])
def test_integers_past_int64_become_floats(sandbox: moonjail.Sandbox, value: int) -> None:
    # The README's JSON rule: integers beyond 64 (signed) bits become floats.
    out = sandbox.run(TYPED, value)
    assert out.results == ["float", float(value)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_refused(sandbox: moonjail.Sandbox, value: float) -> None:
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, value)
    assert "JSON" in str(info.value)
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, {"x": [0.5, value]})
    assert 'input["x"][1]' in str(info.value)


def test_str_values(sandbox: moonjail.Sandbox) -> None:
    text = "é" * 1000 + "\u2028" + "😀"
    assert sandbox.run("return #(...)", text).result == len(text.encode("utf-8"))
    assert sandbox.eval("...", text) == text
    big = "x" * (1 << 20)
    assert sandbox.eval("...", big) == big


def test_int_dict_keys_become_strings(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("local t = ... return t['1'], t[1], t['x']", {1: "a", "x": 2})
    assert out.results == ["a", None, 2]
    assert sandbox.eval("...", {1: "a", 2: "b"}) == {"1": "a", "2": "b"}


def test_tuples_are_arrays(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("local t = ... return #t, t[1], t[3][2]", (1, "two", (3, 4)))
    assert out.results == [3, 1, 4]
    assert sandbox.eval("...", (1, (2, 3))) == [1, [2, 3]]


def test_nested_values(sandbox: moonjail.Sandbox) -> None:
    value = {
        "items": [{"price": 3, "tags": ["a"]}, {"price": 4.5, "tags": []}],
        "meta": {"count": 2, "ok": True, "none": None},
    }
    out = sandbox.run(
        "local ctx = ... local s = 0 for _, it in ipairs(ctx.items) do s = s + it.price end"
        " return s, ctx.meta.ok, ctx.meta.none == nil, #ctx.items[2].tags",
        value,
    )
    assert out.results == [7.5, True, True, 0]
    expected = {"items": value["items"], "meta": {"count": 2, "ok": True}}  # null field absent
    assert sandbox.eval("...", value) == expected


def test_json_null_in_arrays(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run(
        "local t = ... return #t, t[1] == json.null, t[2], t[3] == json.null", [None, 1, None]
    )
    assert out.results == [3, True, 1, True]
    assert sandbox.eval("...", [None, 1, None]) == [None, 1, None]
    assert sandbox.eval("...", [None]) == [None]
    assert sandbox.eval("{json.null, 1}") == [None, 1]
    assert sandbox.eval("json.null") is None


def test_json_null_fields_are_absent(sandbox: moonjail.Sandbox) -> None:
    out = sandbox.run("local t = ... return t.a == nil, t.b", {"a": None, "b": 1})
    assert out.results == [True, 1]
    assert sandbox.eval("...", {"a": None}) == {}


def test_lua_tables_to_python(sandbox: moonjail.Sandbox) -> None:
    assert sandbox.eval("{1, 2, 3}") == [1, 2, 3]
    assert sandbox.eval("{a = 1, b = {c = true}}") == {"a": 1, "b": {"c": True}}
    assert sandbox.eval("{1, nil, 3}") == {"1": 1, "3": 3}
    assert sandbox.eval("{[1] = 'a', [2] = 'b', x = 1}") == {"1": "a", "2": "b", "x": 1}
    assert sandbox.eval("{}") == {}
    # an array the script emptied stays an array
    assert sandbox.eval("(function(t) t[1] = nil return t end)(...)", [1]) == []


def test_mapping_and_sequence_subclasses(sandbox: moonjail.Sandbox) -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    od = collections.OrderedDict([("b", 1), ("a", 2)])
    dd = collections.defaultdict(list, {"k": [1]})
    assert sandbox.eval("...", od) == {"b": 1, "a": 2}
    assert sandbox.eval("...", dd) == {"k": [1]}
    assert sandbox.eval("...", Colour.RED) == 1
    assert sandbox.eval("...", Name("n")) == "n"


@pytest.mark.parametrize(
    "value, type_name",
    [
        (b"bytes", "bytes"),
        ({1, 2}, "set"),
        (object(), "object"),
        (1 + 2j, "complex"),
        (decimal.Decimal("1.5"), "Decimal"),
        (datetime.date(2024, 1, 1), "date"),
        (print, "builtin_function_or_method"),
    ],
)
def test_non_json_types_refused_with_path(
    sandbox: moonjail.Sandbox, value: object, type_name: str
) -> None:
    with pytest.raises(TypeError) as info:
        sandbox.run(IDENTITY, value)
    assert type_name in str(info.value)
    assert str(info.value).startswith("input")
    with pytest.raises(TypeError) as info:
        sandbox.run(IDENTITY, {"items": [1, 2, {"x": value}]})
    assert 'input["items"][2]["x"]' in str(info.value)
    assert type_name in str(info.value)


@pytest.mark.parametrize("key", [(1, 2), 1.5, True, None])
def test_non_json_keys_refused(sandbox: moonjail.Sandbox, key: object) -> None:
    with pytest.raises(TypeError) as info:
        sandbox.run(IDENTITY, {"outer": {key: 1}})
    assert 'input["outer"]' in str(info.value)
    assert "key" in str(info.value)


def test_self_containing_values_refused(sandbox: moonjail.Sandbox) -> None:
    lst: list = [1]
    lst.append(lst)
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, lst)
    assert "contain itself" in str(info.value)
    d: dict = {}
    d["self"] = d
    with pytest.raises(ValueError) as info:
        sandbox.run(IDENTITY, {"a": d})
    assert str(info.value).startswith('input["a"]["self"]')
    assert sandbox.eval("1") == 1  # and nothing broke


def test_very_deep_input_refused_without_crash(sandbox: moonjail.Sandbox) -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError):
        sandbox.run(IDENTITY, deep)
    deep = 1
    for _ in range(100_000):
        deep = {"k": deep}
    with pytest.raises(ValueError):
        sandbox.run(IDENTITY, deep)


def test_code_types(sandbox: moonjail.Sandbox) -> None:
    assert sandbox.run(b"return 'bytes code'").result == "bytes code"
    assert sandbox.run("return 'str code'").result == "str code"
    assert sandbox.run("return #'é'".encode()).result == 2
    assert sandbox.eval(b"1 + 2") == 3
    for bad in (123, None, ["return 1"], bytearray(b"return 1")):
        with pytest.raises(TypeError) as info:
            sandbox.run(bad)  # type: ignore[arg-type]
        assert "str or bytes" in str(info.value)


def test_invalid_utf8_in_code_and_output(sandbox: moonjail.Sandbox) -> None:
    # Lua strings are bytes: invalid UTF-8 may be printed (the output replaces it) but
    # cannot be a JSON result.
    out = sandbox.run(b"print('\xffabc') return 1")
    assert out.ok and out.output == "\ufffdabc\n"
    assert sandbox.run(b"return '\xff'").error.kind == "result"


def test_lone_surrogate_in_input(sandbox: moonjail.Sandbox) -> None:
    # Not UTF-8: refused as an error, never a crash.
    with pytest.raises((ValueError, UnicodeError)):
        sandbox.run(IDENTITY, "\udc80")
    with pytest.raises((ValueError, UnicodeError, TypeError)):
        sandbox.run("return '\udc80'")


def test_session_arguments_are_checked(sandbox: moonjail.Sandbox) -> None:
    with sandbox.session() as s:
        s.execute("function id(...) return ... end")
        assert s.call("id", {"a": [1, None]}) == {"a": [1, None]}
        with pytest.raises(TypeError) as info:
            s.call("id", 1, object())
        assert "argument 2" in str(info.value)
        with pytest.raises(ValueError) as info:
            s.call("id", float("nan"))
        assert "argument 1" in str(info.value)
