"""Subworkflows: a child run started, waited on, failing, nested, or left running."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pytest

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.spec import WorkflowSpec

from runtime_support import Node, effect_then_done, ask

if TYPE_CHECKING:
    from conftest import Backend


# -- subworkflows --------------------------------------------------------------------------


class Registry:
    """The runtime needs only ``get(workflow_id)`` from a registry."""

    def __init__(self, *workflows: WorkflowSpec) -> None:
        self._by_id = {w.workflow_id: w for w in workflows}

    def get(self, workflow_id: str) -> Optional[WorkflowSpec]:
        return self._by_id.get(workflow_id)


def _caller(wf_id: str, payload: dict[str, Any]) -> WorkflowSpec:
    return effect_then_done(Effect(type=EffectType.START_SUBWORKFLOW, payload=payload, result_key="sub"), wf_id=wf_id)


def _raise(message: str) -> Node:
    def node(run: RunState, ctx: Any) -> StepPlan:
        raise ValueError(message)

    return node


CHILD_OK = WorkflowSpec("child_ok", "n", {
    "n": lambda run, ctx: StepPlan(node_id="n", complete_output={"double": run.vars["x"] * 2})})
CHILD_ASK = ask({"prompt": "Child question?"}, wf_id="child_ask")
CHILD_FAIL = WorkflowSpec("child_fail", "n", {"n": _raise("child exploded")})
MIDDLE = _caller("middle", {"workflow_id": "child_ask"})


def test_subworkflow_sync_completes(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime(workflow_registry=Registry(CHILD_OK))
    parent = _caller("parent", {"workflow_id": "child_ok", "vars": {"x": 21}})
    run_id = rt.start(workflow=parent)
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    sub = state.output["vars"]["sub"]
    assert sub["output"] == {"double": 42}
    child = rt.get_state(sub["sub_run_id"])
    assert child.status is RunStatus.COMPLETED and child.parent_run_id == run_id
    assert [c.run_id for c in rt_backend.runs.list_children(parent_run_id=run_id)] == [sub["sub_run_id"]]


def test_subworkflow_sync_child_waits(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime(workflow_registry=Registry(CHILD_ASK))
    parent = _caller("parent", {"workflow_id": "child_ask"})
    run_id = rt.start(workflow=parent)
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.SUBWORKFLOW
    details = state.waiting.details
    assert details["sub_workflow_id"] == "child_ask" and details["sub_waiting"]["reason"] == "user"
    child = rt.get_state(details["sub_run_id"])
    assert child.status is RunStatus.WAITING and child.parent_run_id == run_id
    assert details["sub_waiting"]["wait_key"] == child.waiting.wait_key


def test_subworkflow_nested_waits_propagate(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime(workflow_registry=Registry(CHILD_ASK, MIDDLE))
    top = _caller("top", {"workflow_id": "middle"})
    run_id = rt.start(workflow=top)
    state = rt.tick(workflow=top, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.SUBWORKFLOW
    assert state.waiting.details["sub_workflow_id"] == "middle"
    assert state.waiting.details["sub_waiting"]["reason"] == "subworkflow"
    middle = rt.get_state(state.waiting.details["sub_run_id"])
    assert middle.status is RunStatus.WAITING and middle.waiting.details["sub_waiting"]["reason"] == "user"
    leaf = rt.get_state(middle.waiting.details["sub_run_id"])
    assert leaf.workflow_id == "child_ask" and leaf.parent_run_id == middle.run_id


def test_subworkflow_child_failure_fails_the_parent(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime(workflow_registry=Registry(CHILD_FAIL))
    parent = _caller("parent", {"workflow_id": "child_fail"})
    state = rt.tick(workflow=parent, run_id=rt.start(workflow=parent))
    assert state.status is RunStatus.FAILED
    assert "child_fail" in state.error and "child exploded" in state.error


@pytest.mark.parametrize("payload, registry, fragments", [
    ({"workflow_id": "child_ok"}, None, ["workflow_registry"]),
    ({"workflow_id": "ghost"}, Registry(CHILD_OK), ["ghost", "not found"]),
    ({"vars": {}}, Registry(CHILD_OK), ["workflow_id"]),
], ids=["no-registry", "unknown-id", "missing-id"])
def test_subworkflow_errors(rt_backend: "Backend", payload: dict[str, Any], registry: Optional[Registry],
                            fragments: list[str]) -> None:
    rt = rt_backend.runtime(workflow_registry=registry)
    parent = _caller("parent", payload)
    state = rt.tick(workflow=parent, run_id=rt.start(workflow=parent))
    assert state.status is RunStatus.FAILED
    for fragment in fragments:
        assert fragment in state.error


def test_subworkflow_async_leaves_the_child_running(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime(workflow_registry=Registry(CHILD_OK))
    parent = _caller("parent", {"workflow_id": "child_ok", "vars": {"x": 1}, "async": True})
    run_id = rt.start(workflow=parent)
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    sub = state.output["vars"]["sub"]
    assert sub["async"] is True
    child = rt.get_state(sub["sub_run_id"])
    assert child.status is RunStatus.RUNNING and child.parent_run_id == run_id
    assert rt.tick(workflow=CHILD_OK, run_id=child.run_id).output == {"double": 2}
