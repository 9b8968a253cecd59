"""A reference cycle (or any value JSON cannot hold) fails at once with a message naming it, never loops.

``run.vars["self"] = run.vars`` used to send canonical JSON into an endless loop with the run's
lock held. Now canonical_json raises InvalidInputError naming the path, and the runtime fails
the run on the record within the same tick.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime import (InMemoryLedgerStore, InMemoryRunStore, Runtime, RunStatus, StepPlan, WorkflowSpec,
                             open_store)
from abstractruntime.core.canonical import canonical_json
from abstractruntime.core.storable import find_unstorable
from abstractruntime.core.errors import InvalidInputError

# A hang here is the bug: stop it well before the suite's global timeout.
pytestmark = pytest.mark.timeout(60)


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"a": [1, 2]}
    value["self"] = value
    return value


@pytest.mark.parametrize(("value", "message"), [
    ({"vars": _cyclic()}, r"reference cycle at vars\.self"),
    ([[1, {"x": None}]], None),
    ({"l": (lambda v: (v.append(v), v)[1])([0])}, r"reference cycle at l\[1\]"),
    ({"vars": {"s": {1, 2}}}, r"type set at vars\.s"),
    ({"vars": {"o": object()}}, r"type object at vars\.o"),
    ({"x": [1.0, math.nan]}, r"nan at x\[1\]"),
    ({"x": {"y": math.inf}}, r"inf at x\.y"),
    ({"x": {(1, 2): "tuple key"}}, r"non-string object key \(1, 2\) in x"),
    ({"x": {1: "int key"}}, r"object key 1 at x is not a string"),
    ({"x": {"b": 1, 2: "mixed keys"}}, r"non-string object key 2 in x"),
    ({"s": "lone \ud800 surrogate"}, r"not valid Unicode"),
])
def test_unstorable_values_are_named(value: Any, message: str | None) -> None:
    if message is None:
        assert canonical_json(value) == b'[[1,{"x":null}]]'
        return
    with pytest.raises(InvalidInputError, match=message) as info:
        canonical_json(value)
    assert str(info.value).startswith("Value is not canonical JSON")


def test_the_root_can_be_named() -> None:
    with pytest.raises(InvalidInputError, match=r"reference cycle at vars\.self \("):
        canonical_json(_cyclic(), root="vars")
    with pytest.raises(InvalidInputError, match=r"type set at vars, which"):
        canonical_json({1, 2}, root="vars")
    with pytest.raises(InvalidInputError, match=r"object key 1 at vars is not a string"):
        canonical_json({1: 2}, root="vars")


def test_a_shared_container_is_not_a_cycle() -> None:
    shared = {"k": [1]}
    value = {"a": shared, "b": [shared, shared]}
    assert find_unstorable(value) is None
    assert canonical_json(value) == b'{"a":{"k":[1]},"b":[{"k":[1]},{"k":[1]}]}'


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        canonical_json(value)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(), lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
                    max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_every_json_value_is_storable(value: Any) -> None:
    assert find_unstorable(value) is None
    canonical_json(value)


def _cycle_node(run: Any, ctx: Any) -> StepPlan:
    run.vars["self"] = run.vars
    return StepPlan("loop", next_node="after")


def _after(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("after", complete_output={"reached": True})


FLOW = WorkflowSpec("cycle", "loop", {"loop": _cycle_node, "after": _after})


def _runtime(kind: str, tmp_path: Path) -> Runtime:
    if kind == "files":
        return open_store(tmp_path / "store").runtime()
    return Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_a_cycle_in_vars_fails_the_run_on_the_record_in_the_same_tick(kind: str, tmp_path: Path) -> None:
    runtime = _runtime(kind, tmp_path)
    run_id = runtime.start(workflow=FLOW, vars={"n": 1})
    state = runtime.tick(workflow=FLOW, run_id=run_id)
    assert state.status is RunStatus.FAILED
    # The path is named from whatever the runtime encodes (the vars or the state holding them).
    assert state.error is not None and re.search(r"reference cycle at (\S+\.)?self\b", state.error), state.error
    stored = runtime.get_state(run_id)
    assert stored.status is RunStatus.FAILED and "reference cycle" in (stored.error or "")
    ledger = runtime.get_ledger(run_id)
    assert ledger[-1]["status"] == "failed" and "reference cycle at" in (ledger[-1]["error"] or "")
    assert all(r["node_id"] != "after" or r["status"] == "failed" for r in ledger)
    if kind == "files":
        from abstractruntime.storage.verify import verify_run

        with open_store(tmp_path / "store").runs.lock(run_id):  # nothing is left locked
            pass
        assert verify_run(tmp_path / "store", run_id).ok


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_an_unstorable_var_fails_the_run_naming_it(kind: str, tmp_path: Path) -> None:
    def node(run: Any, ctx: Any) -> StepPlan:
        run.vars["seen"] = {"ids": {1, 2, 3}}
        return StepPlan("n", complete_output={"ok": True})

    flow = WorkflowSpec("unstorable", "n", {"n": node})
    runtime = _runtime(kind, tmp_path)
    run_id = runtime.start(workflow=flow)
    state = runtime.tick(workflow=flow, run_id=run_id)
    assert state.status is RunStatus.FAILED
    assert state.error is not None and re.search(r"type set at (\S+\.)?seen\.ids\b", state.error), state.error
