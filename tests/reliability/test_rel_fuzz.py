"""Battery 6: fuzz the ledger, checkpoint, snapshot and bookmark parsers.

Whatever the bytes, a parser answers or raises an ``AbstractRuntimeError`` (never a
``KeyError``, ``AttributeError``, ``RecursionError``...). Inputs: raw bytes, arbitrary JSON
values, and valid documents written by the real code with one field replaced, a line
dropped, duplicated or cut, or bytes flipped. ``RELIABILITY_FUZZ_EXAMPLES`` per target
(CI: 300). The pinned cases say exactly what they promise: a seed document is accepted by
every parser, a damaged one is refused as a corrupt record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import CorruptRecordError

from .fuzz_targets import KINDS, FuzzBench, Outcome

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "300"))
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
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """A seed document with one JSON value replaced, or its bytes damaged."""
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


def _inputs(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated(seed),
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> FuzzBench:
    """The targets and their seed documents, in a directory pytest owns and cleans."""
    return FuzzBench(tmp_path_factory.mktemp("rel-fuzz"))


def _refused(outcomes: list[Outcome], *calls: str) -> None:
    """Each named call raised a CorruptRecordError naming what is wrong."""
    by_call = {o.call: o for o in outcomes}
    for call in calls:
        assert isinstance(by_call[call].error, CorruptRecordError), (call, by_call[call])


def _fuzz(bench: FuzzBench, kind: str, data: st.DataObject) -> None:
    # A target raises ForeignException for anything but a project error; its outcomes are free.
    bench.targets()[kind](data.draw(_inputs(bench.seeds[kind]), label="input"))


@pytest.mark.parametrize("kind", KINDS)
def test_seed_documents_parse_cleanly(bench: FuzzBench, kind: str) -> None:
    outcomes = bench.targets()[kind](bench.seeds[kind])
    assert outcomes and all(o.accepted for o in outcomes), [o for o in outcomes if not o.accepted]


@FUZZ
@given(data=st.data())
def test_fuzz_ledger_parser_raises_only_project_errors(bench: FuzzBench, data: st.DataObject) -> None:
    _fuzz(bench, "ledger", data)


def test_a_ledger_record_with_a_list_idempotency_key_is_a_corrupt_record(bench: FuzzBench) -> None:
    lines = bench.seeds["ledger"].split(b"\n")
    doc = json.loads(lines[0])
    doc["idempotency_key"] = [None]
    outcomes = bench.ledger(b"\n".join([json.dumps(doc).encode()] + lines[1:]))
    _refused(outcomes, "parse_ledger", "list", "head", "find_completed")
    assert "idempotency_key" in str({o.call: o for o in outcomes}["parse_ledger"].error)


@pytest.mark.parametrize("seq", [[None], ":", 0, -1, True, 2.0])
def test_a_ledger_record_whose_seq_is_not_a_positive_integer_is_a_corrupt_record(bench: FuzzBench, seq: Any) -> None:
    lines = bench.seeds["ledger"].split(b"\n")
    doc = json.loads(lines[1])
    doc["seq"] = seq
    outcomes = bench.ledger(b"\n".join([lines[0], json.dumps(doc).encode()] + lines[2:]))
    _refused(outcomes, "parse_ledger(verify_chain)", "parse_ledger", "list", "head", "find_completed")


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_parser_raises_only_project_errors(bench: FuzzBench, data: st.DataObject) -> None:
    _fuzz(bench, "checkpoint", data)


@pytest.mark.parametrize("path,value", [(("ledger",), [1]), (("state",), "x"), (("state", "run"), "x"),
                                        (("state", "kernel"), [])])
def test_checkpoint_with_a_non_object_field_is_a_corrupt_record(bench: FuzzBench, path: tuple[str, ...],
                                                                value: Any) -> None:
    doc = _replace(json.loads(bench.seeds["checkpoint"]), path, value)
    read, verified = bench.checkpoint(json.dumps(doc).encode())
    _refused([read], "read_checkpoint")
    # The checkpoint is a cache of a replayable ledger: verify names it, as a note, not a failure.
    report = verified.value
    assert [n.type for n in report.notes] == ["checkpoint_corrupt"] and report.ok, report


@FUZZ
@given(data=st.data())
def test_fuzz_snapshot_parser_raises_only_project_errors(bench: FuzzBench, data: st.DataObject) -> None:
    _fuzz(bench, "snapshot", data)


@FUZZ
@given(data=st.data())
def test_fuzz_bookmarks_parser_raises_only_project_errors(bench: FuzzBench, data: st.DataObject) -> None:
    _fuzz(bench, "bookmarks", data)


@pytest.mark.parametrize("document", [b"[" * 10000 + b"]" * 10000,
                                      b'{"format": 1, "run": ' + b"[" * 10000 + b"]" * 10000 + b"}"])
def test_deep_nesting_is_a_project_error_everywhere(bench: FuzzBench, document: bytes) -> None:
    # Each file's own reader refuses it as a corrupt record (a ledger line is a whole line).
    # A bad last line could be a torn append; a bad line before a good one is corruption.
    ledger_lines = document + b"\n" + bench.seeds["ledger"]
    _refused(bench.ledger(ledger_lines), "parse_ledger", "list", "head", "find_completed")
    _refused(bench.checkpoint(document), "read_checkpoint")
    _refused(bench.snapshot(document), "load")
    _refused(bench.bookmarks(document), "read_bookmarks")


def test_importing_the_fuzz_modules_creates_no_directory() -> None:
    # An audit hook sees every os.mkdir (tempfile.mkdtemp included) made while the modules import.
    script = (
        "import sys\n"
        "made = []\n"
        "sys.addaudithook(lambda event, args: made.append(args[0]) if event == 'os.mkdir' else None)\n"
        "import tests.reliability.fuzz_targets, tests.reliability.test_rel_fuzz\n"
        "print(repr(made))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "[]", out.stdout
