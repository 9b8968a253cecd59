"""Canonical JSON (what record hashes are computed over): properties and pinned vectors."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.canonical import canonical_json, record_hash
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.storage.fsio import loads_strict

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text()),
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(), children, max_size=5)),
    max_leaves=30,
)


def _shuffled(value: object, rng: random.Random) -> object:
    """The same JSON value with every object's keys inserted in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_round_trip(value: object) -> None:
    encoded = canonical_json(value)
    assert loads_strict(encoded) == value
    # Canonical: encoding the decoded value gives the same bytes.
    assert canonical_json(loads_strict(encoded)) == encoded
    encoded.decode("utf-8")  # always valid UTF-8


@settings(max_examples=100, deadline=None)
@given(value=json_values, seed=st.integers(0, 2**32 - 1))
def test_key_order_does_not_matter(value: object, seed: int) -> None:
    other = _shuffled(value, random.Random(seed))
    assert canonical_json(other) == canonical_json(value)
    if isinstance(value, dict):
        assert record_hash(other) == record_hash(value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}, {"x": {"y": math.inf}}])
def test_nan_and_infinity_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        canonical_json(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [{"a": object()}, {"s": {1, 2}}, b"bytes"])
def test_non_json_types_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        canonical_json(bad)


def test_lone_surrogate_is_refused_with_the_library_error() -> None:
    with pytest.raises(InvalidInputError):
        canonical_json({"text": "\ud800"})


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        canonical_json({1: "a"})


def test_loads_strict_refuses_what_canonical_json_never_writes() -> None:
    for text in ['{"a":NaN}', '{"a":Infinity}', '{"a":1,"a":2}']:
        with pytest.raises(ValueError):
            loads_strict(text)


def test_pinned_vectors() -> None:
    # Sorted keys, no spaces, UTF-8 (not \\u escapes), Python float repr.
    assert canonical_json({"b": 1, "a": [True, None, 1.5, "é"]}) == '{"a":[true,null,1.5,"é"],"b":1}'.encode()
    assert canonical_json({"z": {"y": 1.0, "x": -0}}) == b'{"z":{"x":0,"y":1.0}}'
    record = {"seq": 1, "prev_hash": None, "record_hash": "ignored", "signature": "ignored", "status": "completed"}
    expected = hashlib.sha256(b'{"prev_hash":null,"seq":1,"status":"completed"}').hexdigest()
    assert record_hash(record) == expected
