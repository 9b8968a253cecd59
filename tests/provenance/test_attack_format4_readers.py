"""Attacks on what writes and reads format-4 records: a checkpoint's record sealed again from its
pieces is byte for byte the record sealed whole (for any content), and hand-made ledgers whose
outcomes close effects oddly are read alike by the package and by the independent verifier."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.jcs import jcs
from abstractruntime.core.records import reseal, seal, seal_pieces, with_signature

import independent_verifier as iv

# -- a record resealed from its pieces ----------------------------------------------------------

_FLOATS = st.sampled_from([1e21, 1e-7, 5e-324, -0.0, 0.0, 1.7976931348623157e308, 0.1, -1e-7, 1e20, 123456789.125])
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["\U0001f600", "\uff01", "\u00e9", "\x7f", "\u2028", "a\"b\\c", "\x00", "state"])
_SCALARS = (st.none() | st.booleans() | _FLOATS | st.floats(allow_nan=False, allow_infinity=False)
            | st.integers(min_value=-(2 ** 53) + 1, max_value=2 ** 53 - 1) | _TEXT)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                     max_leaves=20)
# Names a record's fields could have, with names around "state" in every place of the order.
_NAMES = st.sampled_from(["at", "delta", "effect", "kind", "node_id", "prev_hash", "result", "run_id",
                          "seq", "sta", "stat", "state_", "statf", "statd", "status", "z", "A", "_", "$", "~"])


def _fields(extra: dict[str, Any], result: Any, effect: Any, delta: Any) -> dict[str, Any]:
    fields = {"format": 4, "kind": "step", "seq": 7, "run_id": "r", "prev_hash": "ab" * 32,
              "at": "2026-01-01T00:00:00+00:00", "result": result, "effect": effect, "delta": delta}
    fields.update({k: v for k, v in extra.items() if k not in ("record_hash", "signature", "state")})
    return fields


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.dictionaries(_NAMES, _JSON, max_size=4), result=_JSON, effect=_JSON, delta=_JSON,
       first_state=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
       state=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64) | st.none())
def test_a_record_resealed_with_its_state_is_the_record_sealed_whole(
        extra: dict[str, Any], result: Any, effect: Any, delta: Any, first_state: Any, state: Any) -> None:
    fields = _fields(extra, result, effect, delta)
    if first_state is not None:
        fields["state"] = first_state  # a record sealed with a digest already, given another
    try:
        seal({**fields, "state": state})
    except InvalidInputError as whole:
        # A value JSON cannot carry exactly (a whole float past 2**53): refused by the pieces too.
        with pytest.raises(InvalidInputError) as pieced:
            seal_pieces(fields)
        assert str(pieced.value) == str(whole)
        return
    _, _, pieces = seal_pieces(fields)
    new_fields, doc, line, new_pieces = reseal(fields, pieces, "state", state)
    whole_doc, whole_line = seal({**fields, "state": state})
    assert line == whole_line and doc == whole_doc and new_fields == {**fields, "state": state}
    # What the independent verifier, written from the format's page alone, says of it.
    parsed = json.loads(line)
    assert iv.jcs(parsed).encode("utf-8") == line
    assert parsed["record_hash"] == iv.record_hash(parsed) == doc["record_hash"]
    assert jcs(doc) == line
    # Sealed again from those pieces: still the whole seal.
    _, again, again_line, _ = reseal(new_fields, new_pieces, "state", "f" * 64)
    assert again_line == seal({**fields, "state": "f" * 64})[1]
    # A signature is put on the whole record (outside the hash).
    signed = with_signature(dict(doc), {"key_id": "k", "sig": "s"})
    assert json.loads(signed)["record_hash"] == doc["record_hash"] and iv.jcs(json.loads(signed)).encode() == signed


@pytest.mark.parametrize("value", [2 ** 53, -(2 ** 53), 10 ** 30, math.nan, math.inf, "\ud800", {"\ud800": 1},
                                   {1: "a"}, (1, 2), b"x"])
def test_a_value_jcs_refuses_is_refused_resealed_as_sealed_whole(value: Any) -> None:
    fields = _fields({}, None, None, None)
    _, _, pieces = seal_pieces(fields)
    outcomes = []
    for attempt in (lambda: reseal(fields, pieces, "state", value)[2],
                    lambda: seal({**fields, "state": value})[1],
                    lambda: seal_pieces({**fields, "result": value})[1],
                    lambda: jcs({**fields, "result": value})):
        try:
            outcomes.append(("ok", attempt()))
        except (InvalidInputError, ValueError, TypeError) as exc:
            outcomes.append(("refused", type(exc).__name__))
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[2][0] == outcomes[3][0], outcomes
