"""RFC 8785 (JCS): the canonical form of format-3 records.

The vectors are the RFC's own examples (section 3.2.2 and appendix B) and ECMAScript's number
formatting, written out by hand; the properties check that canonical text is a fixed point of
parse-and-encode and that nothing JCS cannot carry is ever written.
"""

from __future__ import annotations

import hashlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.jcs import MAX_SAFE_INTEGER, es_number, is_jcs_line, jcs


def test_rfc_8785_example() -> None:
    value = {"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
             "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/", "literals": [None, True, False]}
    assert jcs(value) == ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                          '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()


def test_keys_sort_by_utf16_code_units() -> None:
    value = {"\u20ac": 1, "\r": 2, "\ufb33": 3, "1": 4, "\U0001F600": 5, "\u0080": 6, "\u00f6": 7}
    assert list(json.loads(jcs(value))) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]


@pytest.mark.parametrize("number, text", [
    (0.0, "0"), (-0.0, "0"), (1.0, "1"), (-1.5, "-1.5"), (0.1, "0.1"), (100.0, "100"),
    (1e20, "100000000000000000000"), (1e21, "1e+21"), (1e-6, "0.000001"), (1e-7, "1e-7"),
    (1.2345678901234568e20, "123456789012345680000"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (0.1 + 0.2, "0.30000000000000004"),
    (1.234e-6, "0.000001234"), (123e-20, "1.23e-18"), (4.5, "4.5"), (2e-3, "0.002"),
])
def test_numbers_as_ecmascript_writes_them(number: float, text: str) -> None:
    assert es_number(number) == text
    if not (number.is_integer() and MAX_SAFE_INTEGER < abs(number) < 1e21):
        assert jcs([number]) == f"[{text}]".encode()


@pytest.mark.parametrize("number", [2.0**53, 1e20, -1.2345678901234568e20])
def test_whole_floats_that_would_read_back_as_unsafe_integers_are_refused(number: float) -> None:
    # ECMAScript writes them without a point or exponent: a reader would get an integer beyond 2**53.
    with pytest.raises(InvalidInputError, match="beyond"):
        jcs({"x": number})
    assert jcs([1e21]) == b"[1e+21]"  # written with an exponent: reads back as a float


@pytest.mark.parametrize("value, where", [
    ({"n": 2**53}, "n"), ({"n": -(2**53)}, "n"), ({"x": [1, float("nan")]}, "x[1]"),
    ({"x": float("inf")}, "x"), ({1: "a"}, "(root)"), ({"s": {1, 2}}, "s"), ({"o": object()}, "o"),
])
def test_refused_at_the_source_naming_the_path(value: object, where: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        jcs(value)
    assert where in str(caught.value)


def test_the_largest_safe_integers_are_kept() -> None:
    assert jcs([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == b"[9007199254740991,-9007199254740991]"


def test_cycles_are_refused_not_looped() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(InvalidInputError, match="cycle"):
        jcs(loop)
    slow: dict[str, object] = {"f": 1e300}
    slow["again"] = [slow]
    with pytest.raises(InvalidInputError, match="cycle"):
        jcs(slow)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: not (f.is_integer() and MAX_SAFE_INTEGER < abs(f) < 1e21)) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_text_is_a_fixed_point(value: object) -> None:
    text = jcs(value)
    parsed = json.loads(text)
    assert jcs(parsed) == text
    assert is_jcs_line(text, parsed)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_round_trips_through_its_ecmascript_text(number: float) -> None:
    text = es_number(number)
    assert float(text) == number or (number == 0 and float(text) == 0)
    assert not math.isnan(float(text))


def test_a_non_canonical_line_is_told_apart() -> None:
    assert not is_jcs_line(b'{"b":1,"a":2}', {"b": 1, "a": 2})
    assert not is_jcs_line(b'{"a":1.0}', {"a": 1.0})
    assert is_jcs_line(b'{"a":1}', {"a": 1})


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["seq", "kind", "at", "node_id", "x\u00e9", "attempt", "result"]),
                       st.one_of(st.none(), st.booleans(), st.text(), st.floats(allow_nan=False),
                                 st.integers(min_value=-(2**60), max_value=2**60),
                                 st.lists(st.integers(min_value=-5, max_value=5), max_size=3))))
def test_a_sealed_record_is_the_jcs_form_of_its_fields_whatever_their_scalars(fields: dict) -> None:
    from abstractruntime.core.records import seal

    try:
        expected = jcs(fields)
    except InvalidInputError:
        with pytest.raises(InvalidInputError):
            seal(fields)
        return
    doc, line = seal(fields)
    assert line == jcs(doc) and doc["record_hash"] == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", 2**53, -(2**53), float("nan")])
def test_sealing_refuses_a_scalar_jcs_cannot_carry(value: object) -> None:
    from abstractruntime.core.records import seal

    with pytest.raises(InvalidInputError):
        seal({"format": 3, "seq": 1, "node_id": value})
