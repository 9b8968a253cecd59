"""Attacks on what writes and reads format-4 records: a checkpoint's record sealed again from its
pieces is byte for byte the record sealed whole (for any content), and hand-made ledgers whose
outcomes close effects oddly are read alike by the package and by the independent verifier."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import AbstractRuntimeError, InvalidInputError
from abstractruntime.core.jcs import jcs
from abstractruntime.core.records import reseal, seal, seal_pieces, with_signature
from abstractruntime.core.recovery import open_run
from abstractruntime.loader import load_workflow
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

import independent_verifier as iv
from prov_helpers import ledger_path, open_demo, read_records, rechain, rehash, run_demo, write_records

RUN = "forged"

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


# -- hand-made ledgers: where an outcome leaves the run ------------------------------------------

def _demo_records(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The demo run's first four records: start, the node step to ``fetch``, the intent of effect 1
    (``next_node`` ``ask``) and its outcome."""
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_demo(runtime, RUN)
    store.close()
    records = read_records(ledger_path(root, RUN))[:4]
    assert [r["kind"] for r in records] == ["start", "node", "effect", "effect"] and records[2]["next_node"] == "ask"
    return root, records


def _outcome(records: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(records[3]), **changes}


def _cancel(seq: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"format": 4, "kind": "cancel", "node_id": "fetch", "run_id": RUN, "seq": seq, "status": "completed",
            "at": "2026-01-01T00:00:00+00:00", "result": {"reason": "stop"}, "delta": delta}


def _decision(seq: int, pending: Any) -> dict[str, Any]:
    return {"format": 4, "kind": "node", "node_id": "fetch", "run_id": RUN, "seq": seq, "status": "completed",
            "at": "2026-01-01T00:00:00+00:00", "result": {"decided": True}, "delta": {"pending": pending}}


def _pending(effect_id: Any, next_node: Any) -> dict[str, Any]:
    return {"effect_id": effect_id, "node_id": "fetch", "effect": {"type": "llm_call", "payload": {}, "result_key": "x"},
            "next_node": next_node, "idempotency_key": "k", "attempt": 1, "explicit": False, "parts": {}, "failed": 0}


def _format_2(record: dict[str, Any]) -> dict[str, Any]:
    """The record as format 2 wrote it: every field on the line, no state digest, no stored values."""
    return {**{k: v for k, v in record.items() if k != "state"}, "format": 2, "run_id": RUN}


def _with_intent(records: list[dict[str, Any]], **changes: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(records)
    out[2].update(changes)
    return out


LEDGERS: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "as written": lambda r: r,
    "outcome of another effect": lambda r: r[:3] + [_outcome(r, effect_id=2)],
    "outcome naming effect true": lambda r: r[:3] + [_outcome(r, effect_id=True)],
    "outcome naming effect '1'": lambda r: r[:3] + [_outcome(r, effect_id="1")],
    "outcome naming no effect": lambda r: r[:3] + [{k: v for k, v in _outcome(r).items() if k != "effect_id"}],
    "two outcomes of one intent": lambda r: r + [_outcome(r, seq=5)],
    "a second outcome moving elsewhere": lambda r: r + [_outcome(r, seq=5, delta={"current_node": "start"})],
    "outcome after a cancel": lambda r: r[:3] + [_cancel(4, {"status": "cancelled"}), _outcome(r, seq=5)],
    "outcome after a cancel clearing pending": lambda r: r[:3] + [_cancel(4, {"status": "cancelled", "pending": None}),
                                                                   _outcome(r, seq=5)],
    "next_node null": lambda r: _with_intent(r, next_node=None),
    "next_node a number": lambda r: _with_intent(r, next_node=5),
    "next_node a list": lambda r: _with_intent(r, next_node=["ask"]),
    "next_node an object": lambda r: _with_intent(r, next_node={"node": "ask"}),
    "next_node absent": lambda r: [*r[:2], {k: v for k, v in r[2].items() if k != "next_node"}, r[3]],
    "pending set by a decision, then its outcome": lambda r: r[:2] + [_decision(3, _pending(7, "done")),
                                                                      _outcome(r, effect_id=7)],
    "pending set by a decision naming no string": lambda r: r[:2] + [_decision(3, _pending(7, 9)),
                                                                       _outcome(r, effect_id=7)],
    "pending replaced by a decision after the intent": lambda r: r[:3] + [_decision(4, _pending(7, "done")),
                                                                           _outcome(r, seq=5)],
    "pending cleared by a decision after the intent": lambda r: r[:3] + [_decision(4, None), _outcome(r, seq=5)],
    "outcome in format 3": lambda r: r[:3] + [_outcome(r, format=3)],
    "intent in format 3": lambda r: _with_intent(r, format=3),
    "outcome in format 4 after an intent in format 2": lambda r: [*r[:2], _format_2(r[2]), r[3]],
    "a format-2 ledger going on with a format-4 outcome": lambda r: [_format_2(x) for x in r[:3]] + r[3:],
    "a waiting outcome then a completed one": lambda r: r[:3] + [_outcome(r, status="waiting", delta={}),
                                                                  _outcome(r, seq=5)],
    "a failed outcome then a completed one": lambda r: r[:3] + [_outcome(r, status="failed", delta={}),
                                                                 _outcome(r, seq=5)],
    "the intent again (a retry), then its outcome": lambda r: r[:3] + [
        {k: v for k, v in r[2].items() if k not in ("next_node", "effect", "node_id")} | {"seq": 4}, _outcome(r, seq=5)],
}


def _package(root: Path) -> tuple[str, Any]:
    """What the package's readers say of the ledger: the node after its last record (verify, state_at
    and an open from the ledger alone must agree), or that they refuse it."""
    (root / "runs" / RUN / "anchors.jsonl").unlink(missing_ok=True)
    (root / "runs" / RUN / "run.json").unlink()
    report = verify_run(root, RUN)
    store, runtime = open_demo(root)
    try:
        last = len(read_records(ledger_path(root, RUN)))
        try:
            at = runtime.state_at(RUN, last).run.current_node
        except AbstractRuntimeError:
            at = None
        try:
            opened: Any = open_run(store.runs, store.ledger, RUN, for_writing=False).checkpoint.run.current_node
        except AbstractRuntimeError:
            opened = None
    finally:
        store.close()
    if at is None or opened is None or not report.ok:
        assert at is None and opened is None, (at, opened)
        assert not report.ok, report.problems
        return "refused", None
    assert at == opened
    return "node", at


def _independent(root: Path) -> tuple[str, Any]:
    lines = ledger_path(root, RUN).read_bytes().splitlines(keepends=True)
    ok, _, _ = iv.verify_lines(lines)
    if not ok:
        return "refused", None
    return "node", iv.nodes(lines)[-1]


@pytest.mark.parametrize("name", sorted(LEDGERS))
def test_the_package_and_the_independent_verifier_agree_on_the_node(tmp_path: Path, name: str) -> None:
    root, records = _demo_records(tmp_path)
    forged = LEDGERS[name](copy.deepcopy(records))
    try:
        chained = rechain(forged)
    except (ValueError, KeyError, TypeError):
        chained = rehash(forged)  # the library cannot replay it: digests left as they were
    write_records(ledger_path(root, RUN), chained)
    assert _package(root) == _independent(root)


def test_a_run_upgraded_from_format_1_rebuilds_from_its_ledger_alone(tmp_path: Path) -> None:
    """A format-1 run resumed in format 4 (its first format-4 record carries the whole state), its
    run.json removed: verify and the opener agree, and the run rebuilt is the one run.json held."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "format1"
    root = tmp_path / "store"
    shutil.copytree(fixtures / "store", root)
    store = FileStore(root, durability="none")
    runtime = store.runtime()
    waiting = runtime.get_state("approval-waiting")
    assert waiting.waiting is not None
    workflow = load_workflow(fixtures / "workflows" / "approval.py")
    runtime.resume(workflow=workflow, run_id="approval-waiting", wait_key=waiting.waiting.wait_key,
                   payload={"answer": "yes"}, allow_drift=True)
    formats = [r["format"] for r in runtime.get_ledger("approval-waiting")]
    assert formats[0] == 1 and formats[-1] == 4
    kept = runtime.get_state("approval-waiting").to_dict()
    store.close()
    run_dir = root / "runs" / "approval-waiting"
    for name in ("run.json", "anchors.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    assert verify_run(root, "approval-waiting").ok
    store = FileStore(root, durability="none")
    rebuilt = store.runtime().get_state("approval-waiting").to_dict()
    store.close()
    assert rebuilt == kept and rebuilt["status"] == "completed"
