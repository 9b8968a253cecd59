"""A workflow file's tools and approval gate (integrations.abstractcore.workflow_tools)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.errors import WorkflowLoadError
from abstractruntime.core.models import Effect, EffectType, RunState
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.integrations.abstractcore.workflow_tools import (ApprovalGate, approval_required,
                                                                      gated_executor, local_executor,
                                                                      tool_calls_handler, workflow_tools_handler)
from abstractruntime.loader import LoadedWorkflow


def add(a: int, b: int) -> int:
    return a + b


def bad() -> None:
    raise ValueError("nope")


def _loaded(**attrs: Any) -> LoadedWorkflow:
    module = types.ModuleType("wf")
    for key, value in attrs.items():
        setattr(module, key, value)
    return LoadedWorkflow(workflow=WorkflowSpec("w", "n", {}), path=Path("wf.py"), sha256="0" * 64,
                          module=module, tools=attrs.get("tools"))


def test_the_handler_runs_the_tools_and_reports_each_call() -> None:
    handler = tool_calls_handler([add, bad])
    run = RunState.new(workflow_id="w", entry_node="n")
    outcome = handler(run, Effect(EffectType.TOOL_CALLS, {"tool_calls": [
        {"name": "add", "arguments": {"a": 2, "b": 3}, "call_id": "1"},
        {"name": "bad", "arguments": {}, "call_id": "2"},
        {"name": "rm", "arguments": {}, "call_id": "3"},
    ]}))
    assert outcome.status == "completed" and outcome.result["mode"] == "executed"
    results = outcome.result["results"]
    assert [(r["call_id"], r["success"], r["output"]) for r in results] == [("1", True, 5), ("2", False, None),
                                                                           ("3", False, None)]
    assert "nope" in results[1]["error"]


def test_the_gate_passes_a_batch_naming_a_gated_tool_through_whole() -> None:
    class Inner:
        def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
            return {"mode": "executed", "results": [{"call_id": c["call_id"]} for c in tool_calls]}

    gate = ApprovalGate(Inner(), frozenset({"deploy"}))
    calls = [{"name": "add", "call_id": "1"}, {"name": "deploy", "call_id": "2"}]
    assert gate.execute(tool_calls=calls) == {"mode": "passthrough", "tool_calls": calls}
    assert gate.execute(tool_calls=calls[:1]) == {"mode": "executed", "results": [{"call_id": "1"}]}


def test_require_approval_is_read_and_checked() -> None:
    assert approval_required(_loaded()) == frozenset()
    assert approval_required(_loaded(require_approval=["deploy"])) == frozenset({"deploy"})
    for bad_value in ("deploy", [1]):
        with pytest.raises(WorkflowLoadError, match="require_approval"):
            approval_required(_loaded(require_approval=bad_value))


def test_executors_for_a_workflow_file() -> None:
    assert local_executor(_loaded()) is None and gated_executor(_loaded()) is None
    assert callable(getattr(local_executor(_loaded(tools=[add])), "execute", None))
    gated = gated_executor(_loaded(tools=[add], require_approval=["add"]))
    assert isinstance(gated, ApprovalGate) and gated.require_approval == frozenset({"add"})
    handler = workflow_tools_handler(_loaded(tools=[add], require_approval=["add"]))
    run = RunState.new(workflow_id="w", entry_node="n")
    outcome = handler(run, Effect(EffectType.TOOL_CALLS, {"tool_calls": [{"name": "add", "arguments": {}}]}))
    assert outcome.status == "waiting"  # passed through for approval: nothing ran
