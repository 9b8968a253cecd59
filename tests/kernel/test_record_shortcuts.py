"""The writer's shortcuts on an effect step give exactly what the long way gives.

A replay copies each stored value into the state image in one walk (``ValueTable.ref_copy``)
instead of two (``ref_form`` then ``json_copy``); a record reuses the JCS bytes its encoder
already made of a stored value (an effect's result) instead of encoding it again. A wrong
shortcut would leave the image sharing a container with the record (a later record would then
change an earlier one), or write bytes of a value other than the one the record holds (a
previous record's, or the value before redaction): these tests say which.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.jcs import jcs
from abstractruntime.core.markers import LIT, REF, VAL
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.records import record_hash3
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.core.values import ValueTable, json_copy, value_id
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

HEX = "ab" * 32
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-1e6, 1e6) | st.text(max_size=3)
KEYS = st.sampled_from(["a", "b", "$v", "$lit", "$val", "k"])


def _markers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (st.just({REF: HEX}) | inner.map(lambda v: {VAL: v})
            | st.dictionaries(st.sampled_from(["a", "$v", "b"]), inner, max_size=2).map(lambda d: {LIT: d}))


VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                      | st.dictionaries(st.sampled_from(["a", "b", "k"]), inner, max_size=3) | _markers(inner),
                      max_leaves=12)


def _containers(value: Any, found: dict[int, Any]) -> dict[int, Any]:
    if isinstance(value, (dict, list, tuple)):
        found[id(value)] = value
        for child in (value.values() if isinstance(value, dict) else value):
            _containers(child, found)
    return found


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_ref_copy_is_the_copy_of_the_ref_form_and_shares_nothing(value: Any) -> None:
    table = ValueTable()
    want = json_copy(table.ref_form(value))
    got = table.ref_copy(value)
    assert got == want and repr(got) == repr(want)  # same content, same container types
    if isinstance(value, (dict, list)):
        assert got is not value
    held = _containers(value, {})
    assert not [c for c in _containers(got, {}).values() if id(c) in held and held[id(c)] is c]


def test_ref_copy_replaces_definitions_by_references() -> None:
    table = ValueTable()
    stored = {"x": [{VAL: "w" * 300}], "y": {LIT: {"$v": 1}}}
    assert table.ref_copy(stored) == {"x": [{REF: value_id("w" * 300)}], "y": {LIT: {"$v": 1}}}


RESULTS = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.text(alphabet="ab$", max_size=3)
                       | st.just("long " + "w" * 300),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["a", "b", "$v", "k"]), inner, max_size=3),
                       max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RESULTS, min_size=1, max_size=6))
def test_each_effect_record_holds_the_bytes_of_its_own_stored_result(results: list[Any]) -> None:
    """Results of the same shape one after another (the previous one freed, its id free to be
    reused), secrets among them: every line is the canonical form of the record it holds, its
    hash is that record's, and the run verifies and replays."""
    answers = iter(results)

    def handler(run: Any, effect: Any) -> EffectOutcome:
        # A fresh object each time, with a secret the record must not hold.
        return EffectOutcome.completed({"r": json.loads(json.dumps(next(answers))), "password": "hunter2"})

    n = len(results)

    def node(k: int) -> Any:
        if k == n:
            return lambda run, ctx: StepPlan(node_id=f"e{k}", complete_output={"done": True})
        return lambda run, ctx: StepPlan(node_id=f"e{k}", effect=Effect(type=EffectType.TOOL_CALLS, payload={"k": k},
                                                                        result_key="last"), next_node=f"e{k + 1}")

    wf = WorkflowSpec(workflow_id="shortcuts", entry_node="e0", nodes={f"e{k}": node(k) for k in range(n + 1)})
    root = tempfile.mkdtemp()
    store = FileStore(root, durability="none")
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: handler})
    try:
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=10 * n + 10)
        assert state.output == {"done": True}
        live_vars = json.loads(jcs(state.vars))
    finally:
        store.close()
    raw = (store.root / "runs" / run_id / "ledger.jsonl").read_bytes()
    assert b"hunter2" not in raw
    lines = raw.splitlines()
    completed = 0
    for line in lines:
        doc = json.loads(line)
        assert jcs(doc) == line
        assert doc["record_hash"] == record_hash3(doc)
        completed += doc.get("kind") == "effect" and doc.get("status") == "completed"
    assert completed == n
    assert verify_run(store.root, run_id).ok
    fresh = FileStore(root, durability="none")
    try:
        replayed = json.loads(jcs(fresh.runtime().get_state(run_id).vars))
        assert replayed["last"]["r"] == live_vars["last"]["r"] == json.loads(jcs(results[-1]))
    finally:
        fresh.close()


# -- a record's step id, drawn when first read ---------------------------------------------------

def _started() -> Any:
    from abstractruntime.core.models import RunState, StepRecord

    return StepRecord.start(run=RunState.new(workflow_id="wf", entry_node="a", run_id="r1"), node_id="a", effect=None)


def test_a_started_record_has_one_step_id_of_its_own_however_it_is_read() -> None:
    import copy
    import dataclasses
    import pickle
    import uuid

    from abstractruntime.core.models import StepRecord

    first, second = _started(), _started()
    assert first.step_id == first.step_id and first.step_id != second.step_id
    assert uuid.UUID(first.step_id).version == 4
    # Whatever reads it first, every reader sees the same id.
    for read in (lambda r: r.to_dict()["step_id"], lambda r: dataclasses.asdict(r)["step_id"],
                 lambda r: StepRecord.from_dict(r.to_dict()).step_id):
        rec = _started()
        assert read(rec) == rec.step_id == read(rec)
    rec = _started()
    assert "not drawn" not in repr(rec) and rec.step_id in repr(rec)
    # Copies made before it is read carry the same id as the record (not one drawn each).
    for duplicate in (copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r)), dataclasses.replace):
        rec = _started()
        twin = duplicate(rec)
        assert twin.step_id == rec.step_id and twin == rec
    rec = _started()
    assert rec == dataclasses.replace(rec) and rec != _started()


def test_a_step_id_given_is_kept_even_the_text_of_the_undrawn_marker() -> None:
    from abstractruntime.core.models import StepRecord, StepStatus

    text = "step id " + "not drawn yet"
    assert StepRecord(run_id="r", step_id=text, node_id="a", status=StepStatus.STARTED).step_id == text
    rec = _started()
    rec.step_id = "mine"
    assert rec.step_id == "mine" and rec.to_dict()["step_id"] == "mine"


# -- an outcome's delta, encoded once per place its result goes ---------------------------------

RESULT_KEYS = st.sampled_from(["last", "a.b", "a.c", "ü", "x.ü.y", "b\\\"q", "last"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(RESULT_KEYS, st.booleans(), st.booleans()), min_size=1, max_size=8))
def test_each_outcome_delta_is_the_one_its_record_holds(steps: list[tuple[str, bool, bool]]) -> None:
    """Outcomes placing their result at several paths, some of them also setting a variable or
    completing the run (their delta then holds more than the result's place): every line is the
    canonical form of its record, and the run verifies and replays to the live state."""
    n = len(steps)

    def node(k: int) -> Any:
        if k == n:
            return lambda run, ctx: StepPlan(node_id=f"e{k}", complete_output={"done": True})
        result_key, touch, drop = steps[k]

        def plan(run: Any, ctx: Any) -> StepPlan:
            if touch:
                run.vars["t"] = k
            if drop:
                run.vars.pop("a", None)
            return StepPlan(node_id=f"e{k}", effect=Effect(type=EffectType.TOOL_CALLS, payload={"k": k},
                                                           result_key=result_key), next_node=f"e{k + 1}")

        return plan

    wf = WorkflowSpec(workflow_id="deltas", entry_node="e0", nodes={f"e{k}": node(k) for k in range(n + 1)})
    root = tempfile.mkdtemp()
    store = FileStore(root, durability="none")
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed(
        {"k": effect.payload["k"]})})
    try:
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=10 * n + 10)
        assert state.output == {"done": True}
        live = jcs(state.vars)
    finally:
        store.close()
    lines = (store.root / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines()
    deltas = []
    for line in lines:
        doc = json.loads(line)
        assert jcs(doc) == line and doc["record_hash"] == record_hash3(doc)
        deltas.append(doc.get("delta"))
    if any(key == "last" for key, _, _ in steps):
        assert {"vars": [["r", ["last"]]]} in deltas  # (what the shortcut serves)
    assert verify_run(store.root, run_id).ok
    fresh = FileStore(root, durability="none")
    try:
        assert jcs(fresh.runtime().get_state(run_id).vars) == live
    finally:
        fresh.close()
