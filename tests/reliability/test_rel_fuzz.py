"""Battery 6: fuzz the ledger, checkpoint, snapshot and bookmark parsers.

Whatever the bytes, a parser answers or raises an ``AbstractRuntimeError`` (never a
``KeyError``, ``AttributeError``, ``RecursionError``...). Inputs: raw bytes, arbitrary JSON
values, and valid documents written by the real code with one field replaced, a line
dropped, duplicated or cut, or bytes flipped. ``RELIABILITY_FUZZ_EXAMPLES`` per target
(CI: 300).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import fuzz_targets

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300"))
SEEDS = fuzz_targets.seeds()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, prefix + (i,))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _replace(doc[path[0]], path[1:], value)
    return doc


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> bytes:
    """A seed document with one JSON value replaced, or its bytes damaged."""
    seed = SEEDS[kind][0]
    how = draw(st.sampled_from(["replace", "flip", "cut", "lines"]))
    if how == "flip":
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "cut":
        return seed[:draw(st.integers(0, len(seed)))]
    lines = seed.split(b"\n")
    if how == "lines":
        ops = draw(st.lists(st.sampled_from(["drop", "dup", "swap"]), min_size=1, max_size=3))
        for op in ops:
            i = draw(st.integers(0, len(lines) - 1))
            if op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[i])
            elif lines:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            if not lines:
                return b""
        return b"\n".join(lines)
    i = draw(st.integers(0, len(lines) - 1))
    if not lines[i].strip():
        return seed
    doc = json.loads(lines[i])
    path = draw(st.sampled_from(_paths(doc)))
    # Cut the path at a random depth, so top-level fields are replaced as often as deep ones.
    path = path[:draw(st.integers(0, len(path)))]
    lines[i] = json.dumps(_replace(doc, path, draw(json_values))).encode()
    return b"\n".join(lines)


def _inputs(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated(kind),
    )


@pytest.mark.parametrize("kind", sorted(fuzz_targets.TARGETS))
def test_seed_documents_parse_cleanly(kind: str) -> None:
    fuzz_targets.TARGETS[kind](SEEDS[kind][0])


@FUZZ
@given(data=_inputs("ledger"))
def test_fuzz_ledger_parser_raises_only_project_errors(data: bytes) -> None:
    fuzz_targets.ledger(data)


def test_a_ledger_record_with_a_list_idempotency_key_is_a_corrupt_record() -> None:
    lines = SEEDS["ledger"][0].split(b"\n")
    doc = json.loads(lines[0])
    doc["idempotency_key"] = [None]
    fuzz_targets.ledger(b"\n".join([json.dumps(doc).encode()] + lines[1:]))


@FUZZ
@given(data=_inputs("checkpoint"))
def test_fuzz_checkpoint_parser_raises_only_project_errors(data: bytes) -> None:
    fuzz_targets.checkpoint(data)


@pytest.mark.parametrize("field,value", [("ledger", [1]), ("run", "x")])
def test_checkpoint_with_a_non_object_field_is_a_corrupt_record(field: str, value: Any) -> None:
    doc = json.loads(SEEDS["checkpoint"][0])
    doc[field] = value
    fuzz_targets.checkpoint(json.dumps(doc).encode())


@FUZZ
@given(data=_inputs("snapshot"))
def test_fuzz_snapshot_parser_raises_only_project_errors(data: bytes) -> None:
    fuzz_targets.snapshot(data)


@FUZZ
@given(data=_inputs("bookmarks"))
def test_fuzz_bookmarks_parser_raises_only_project_errors(data: bytes) -> None:
    fuzz_targets.bookmarks(data)


def test_deep_nesting_is_a_project_error_everywhere() -> None:
    deep = b"[" * 10000 + b"]" * 10000
    for target in fuzz_targets.TARGETS.values():
        target(deep)
        target(b'{"format": 1, "run": ' + deep + b"}")
