"""Failures on the record: crash recovery in real processes, node exceptions, bad graphs, step bounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain

from runtime_support import Node, effect_records

if TYPE_CHECKING:
    from conftest import Backend


# -- crash recovery (real processes) -------------------------------------------------------

FLOW = '''
import os
from pathlib import Path
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec

def charge(run, effect):
    with open(os.environ["COUNTER_FILE"], "a") as handle:
        handle.write("charged\\n")
    if os.environ.get("CRASH_IN_HANDLER"):
        os._exit(17)
    return EffectOutcome.completed({"charged": effect.payload["amount"]})

def pay(run, ctx):
    return StepPlan(node_id="pay", effect=Effect(type=EffectType.LLM_CALL, payload={"amount": 5},
                    result_key="receipt"), next_node="after")

def after(run, ctx):
    if os.environ.get("CRASH_IN_AFTER"):
        os._exit(17)
    return StepPlan(node_id="after", complete_output={"receipt": run.vars["receipt"]})

workflow = WorkflowSpec("crashy", "pay", {"pay": pay, "after": after})
'''

TICK = '''
import sys
sys.path.insert(0, sys.argv[1])
import flow
from abstractruntime.core.models import EffectType
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
root = sys.argv[2]
rt = Runtime(run_store=JsonFileRunStore(root, durability="none"),
             ledger_store=JsonlLedgerStore(root, durability="none"),
             effect_handlers={EffectType.LLM_CALL: flow.charge})
rt.tick(workflow=flow.workflow, run_id=sys.argv[3])
'''


def _load_flow(directory: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"flow_{directory.name}", directory / "flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("crash_env", ["CRASH_IN_AFTER", "CRASH_IN_HANDLER"])
def test_crash_recovery_runs_a_completed_effect_once(file_backend: "Backend", tmp_path: Path, crash_env: str) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "flow.py").write_text(FLOW)
    counter = tmp_path / "counter.txt"
    flow = _load_flow(code_dir)
    rt = file_backend.runtime(effect_handlers={EffectType.LLM_CALL: flow.charge})
    run_id = rt.start(workflow=flow.workflow)

    env = {**os.environ, "COUNTER_FILE": str(counter), crash_env: "1"}
    proc = subprocess.run([sys.executable, "-c", TICK, str(code_dir), str(file_backend.root), run_id],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    assert counter.read_text().count("charged") == 1
    # The effect's intent reached the ledger before its handler ran.
    assert [r["status"] for r in effect_records(rt, run_id)][0] == "started"

    os.environ["COUNTER_FILE"] = str(counter)
    try:
        state = rt.tick(workflow=flow.workflow, run_id=run_id)
    finally:
        del os.environ["COUNTER_FILE"]
    assert state.status is RunStatus.COMPLETED and state.output == {"receipt": {"charged": 5}}
    statuses = [r["status"] for r in effect_records(rt, run_id)]
    # Either crash falls inside the effect's window — from its durable intent to the batch
    # that makes its result durable (group commit: the result shares the fsync of the pure
    # steps after it) — so the effect runs again once, at least once as documented.
    assert counter.read_text().count("charged") == 2
    assert statuses == ["started", "started", "completed"]
    assert verify_ledger_chain(rt.get_ledger(run_id))["ok"] is True


# -- failures on the record ----------------------------------------------------------------


def test_node_exception_fails_the_run_on_the_record(rt_backend: "Backend") -> None:
    def explode(run: RunState, ctx: Any) -> StepPlan:
        raise KeyError("missing-thing")

    wf = WorkflowSpec("wf", "first", {
        "first": lambda run, ctx: StepPlan(node_id="first", next_node="explode"), "explode": explode})
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "missing-thing" in state.error
    assert rt.get_state(run_id).status is RunStatus.FAILED
    last = rt.get_ledger(run_id)[-1]
    assert last["kind"] == "fail" and last["status"] == "failed" and last["node_id"] == "explode"
    assert "KeyError" in last["error"] and "missing-thing" in last["error"]
    assert last["result"] == {"exception_type": "KeyError"}
    # A failed run stays failed.
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.FAILED


@pytest.mark.parametrize("nodes, fragment", [
    ({"a": lambda run, ctx: StepPlan(node_id="a", next_node="nowhere")}, "nowhere"),
    ({"a": lambda run, ctx: StepPlan(node_id="a")}, "no next_node"),
    ({"a": lambda run, ctx: {"not": "a plan"}}, "StepPlan"),
], ids=["unknown-node", "dead-end", "not-a-plan"])
def test_bad_graphs_fail_the_run(rt_backend: "Backend", nodes: dict[str, Node], fragment: str) -> None:
    wf = WorkflowSpec("wf", "a", nodes)
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and fragment in state.error
    assert rt.get_ledger(run_id)[-1]["kind"] == "fail"


@pytest.mark.parametrize("where", ["vars", "effect-payload"])
def test_non_json_values_fail_the_run(rt_backend: "Backend", where: str) -> None:
    def bad(run: RunState, ctx: Any) -> StepPlan:
        if where == "vars":
            run.vars["handle"] = {1, 2, 3}
            return StepPlan(node_id="bad", next_node="done")
        return StepPlan(node_id="bad", effect=Effect(type=EffectType.WAIT_EVENT,
                                                     payload={"wait_key": "k", "when": {1, 2}}), next_node="done")

    wf = WorkflowSpec("wf", "bad", {"bad": bad, "done": lambda run, ctx: StepPlan(node_id="done",
                                                                                    complete_output={"ok": True})})
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "bad" in state.error
    assert rt.get_ledger(run_id)[-1]["kind"] == "fail"


def test_max_steps_bounds_one_tick(rt_backend: "Backend") -> None:
    def spin(run: RunState, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan(node_id="spin", next_node="spin")

    wf = WorkflowSpec("wf", "spin", {"spin": spin})
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id, max_steps=3)
    assert state.status is RunStatus.RUNNING and state.vars["n"] == 3
    assert rt.get_state(run_id).vars["n"] == 3
    assert [r["kind"] for r in rt.get_ledger(run_id)] == ["start", "node", "node", "node"]
