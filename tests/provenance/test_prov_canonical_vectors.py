"""Test vectors for canonical JSON and record hashing (also printed in docs/provenance.md).

Each vector is a value, the canonical bytes written out by hand, and the SHA-256 of those
bytes computed once with hashlib from the literal. The code under test must produce exactly
these bytes and hashes; if it ever does not, stored ledgers would stop verifying.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.canonical import canonical_json, record_hash
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.storage.fsio import loads_strict
from abstractruntime.storage.ledger_chain import verify_ledger_chain

# (value, canonical bytes, sha256 hex of those bytes)
VECTORS: list[tuple[str, Any, bytes, str]] = [
    (
        "nesting-and-numbers",
        {"z": [3, 1.5, True, None], "a": {"y": "x", "b": -0.0}, "m": 1.0},
        b'{"a":{"b":-0.0,"y":"x"},"m":1.0,"z":[3,1.5,true,null]}',
        "2869e4774679f502a242413a5da5ba92256d5c3a6dac470cee8feee7988a6742",
    ),
    (
        "strings-utf8-unescaped",
        {"text": "caf\u00e9 \u2014 \u2713 \U0001F642", "ctl": 'tab\tnl\n"q" \\ /', "sep": "\u2028"},
        b'{"ctl":"tab\\tnl\\n\\"q\\" \\\\ /","sep":"\xe2\x80\xa8",'
        b'"text":"caf\xc3\xa9 \xe2\x80\x94 \xe2\x9c\x93 \xf0\x9f\x99\x82"}',
        "a3f493c2f7eaaa98a5ce4d54f5b3d84b8a7f2ba60c21fd050f5364359911eaad",
    ),
    (
        "keys-by-code-point",
        {"b": 1, "a": 2, "B": 3, "\u00e9": 4, "\uff21": 5, "\U0001F642": 6},
        b'{"B":3,"a":2,"b":1,"\xc3\xa9":4,"\xef\xbc\xa1":5,"\xf0\x9f\x99\x82":6}',
        "1d0cfcfb31e4faa065dd67c3ee4406b5cd27cc34b5d80a448f18f3eec5e6649c",
    ),
    (
        "python-number-forms",
        {"int": 12345678901234567890, "small": 1e-7, "big": 1e21, "sum": 0.1 + 0.2},
        b'{"big":1e+21,"int":12345678901234567890,"small":1e-07,"sum":0.30000000000000004}',
        "ce4acccb5c94a03842c3839db8878fb54ab3a0d07eb79e9fda1347f005f6e485",
    ),
]


@pytest.mark.parametrize(("name", "value", "canonical", "digest"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(name: str, value: Any, canonical: bytes, digest: str) -> None:
    assert hashlib.sha256(canonical).hexdigest() == digest  # the literal and its pinned hash agree
    assert canonical_json(value) == canonical
    assert record_hash(value) == digest


def test_not_rfc_8785() -> None:
    # RFC 8785 would write 1.0 as 1, -0.0 as 0, 1e-7 as 1e-7, and order the astral key U+1F642
    # (UTF-16 D83D DE42) before U+FF21. Ours keeps Python's number text and code-point order.
    assert canonical_json({"n": 1.0, "z": -0.0, "s": 1e-7}) == b'{"n":1.0,"s":1e-07,"z":-0.0}'
    assert canonical_json({"\U0001F642": 1, "\uff21": 2}).index("\uff21".encode()) < \
        canonical_json({"\U0001F642": 1, "\uff21": 2}).index("\U0001F642".encode())


# A two-record chain written out by hand: the first record (genesis) has prev_hash null.
GENESIS = (
    b'{"actor_id":null,"attempt":1,"effect":null,"ended_at":"2026-01-01T00:00:00+00:00","error":null,'
    b'"format":1,"idempotency_key":null,"kind":"start","node_id":"ask","prev_hash":null,'
    b'"result":{"parent_run_id":null,"vars":{},"workflow_id":"demo"},"run_id":"run-1","seq":1,'
    b'"started_at":"2026-01-01T00:00:00+00:00","status":"completed","step_id":"step-1"}'
)
GENESIS_HASH = "24f7b649543753bcf01d2970415a83a9a0c27a2a6e2316c28ca6b9d3d74968a5"
SECOND = (
    b'{"actor_id":null,"attempt":1,"effect":null,"ended_at":"2026-01-01T00:00:01+00:00","error":null,'
    b'"format":1,"idempotency_key":null,"kind":"node","node_id":"ask",'
    b'"prev_hash":"24f7b649543753bcf01d2970415a83a9a0c27a2a6e2316c28ca6b9d3d74968a5",'
    b'"result":{"next_node":"done"},"run_id":"run-1","seq":2,"started_at":"2026-01-01T00:00:01+00:00",'
    b'"status":"completed","step_id":"step-2"}'
)
SECOND_HASH = "68b7f31c506eeb41c696d2bb11624a397ac0aa3b7cacffc402076d5e3011a29b"


def stored(body: bytes, digest: str) -> dict[str, Any]:
    """The record as a ledger line holds it: the hashed body plus record_hash and signature."""
    return {**json.loads(body), "record_hash": digest, "signature": None}


def test_record_vectors_and_genesis() -> None:
    assert hashlib.sha256(GENESIS).hexdigest() == GENESIS_HASH
    assert hashlib.sha256(SECOND).hexdigest() == SECOND_HASH
    first, second = stored(GENESIS, GENESIS_HASH), stored(SECOND, SECOND_HASH)
    assert first["prev_hash"] is None and second["prev_hash"] == GENESIS_HASH
    # record_hash and signature are not part of what is hashed.
    assert record_hash(first) == GENESIS_HASH
    assert record_hash({**second, "signature": "anything"}) == SECOND_HASH
    result = verify_ledger_chain([first, second])
    assert result["ok"] and result["head_hash"] == SECOND_HASH


def test_genesis_must_be_null() -> None:
    first = stored(GENESIS, GENESIS_HASH)
    first["prev_hash"] = "0" * 64
    first["record_hash"] = record_hash(first)
    result = verify_ledger_chain([first])
    assert not result["ok"] and result["errors"][0]["type"] == "prev_hash_mismatch"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"x": [math.nan]}])
def test_nan_and_infinity_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        canonical_json(bad)


@pytest.mark.parametrize("text", ['{"a":NaN}', '{"a":Infinity}', '{"a":1,"a":2}'])
def test_reader_refuses_what_the_writer_never_writes(text: str) -> None:
    with pytest.raises(ValueError):
        loads_strict(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_canonical_form_ignores_key_order_and_round_trips(value: Any, rnd: Any) -> None:
    def shuffled(v: Any) -> Any:
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: shuffled(x) for k, x in items}
        if isinstance(v, list):
            return [shuffled(x) for x in v]
        return v

    encoded = canonical_json(value)
    assert canonical_json(shuffled(value)) == encoded
    assert loads_strict(encoded) == value
    assert canonical_json(loads_strict(encoded)) == encoded
