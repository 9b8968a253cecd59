"""Positions stay per run when one runtime advances many runs at once (advance_many, a worker's
concurrent pass): subworkflow children, parts and retries at concurrency 50."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from abstractruntime import (
    DefaultEffectPolicy,
    Effect,
    EffectOutcome,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    WorkflowSpec,
    current_effect,
    open_store,
)
from abstractruntime.core.effect_exec import positional_key
from abstractruntime.core.effects import child_run_id
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.concurrent import advance_many

RUNS = 50


def _workflows() -> tuple[WorkflowSpec, WorkflowSpec]:
    child = WorkflowSpec("child", "c", {"c": lambda run, ctx: StepPlan("c", complete_output={"n": run.vars["n"]})})

    def loop(run: RunState, ctx: Any) -> StepPlan:
        # The same subworkflow with the same payload, twice: two positions, two children.
        run.vars["i"] = run.vars.get("i", 0) + 1
        if run.vars["i"] <= 2:
            return StepPlan("loop", next_node="loop", effect=Effect(
                EffectType.START_SUBWORKFLOW, {"workflow_id": "child", "vars": {"n": 1}}, f"child{run.vars['i']}"))
        return StepPlan("loop", next_node="parts")

    def parts(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("parts", next_node="flaky", effect=Effect(EffectType.LLM_CALL, {"prompt": "p"}, "parts"))

    def flaky(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("flaky", next_node="done", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": []}, "flaky"))

    parent = WorkflowSpec("parent", "loop", {"loop": loop, "parts": parts, "flaky": flaky,
                                             "done": lambda run, ctx: StepPlan("done", complete_output={})})
    return parent, child


class Handlers:
    """A part-recording handler and a handler that fails each effect's first attempt; both check
    that the identity they are handed is their own run's."""

    def __init__(self) -> None:
        self.wrong_identity: list[tuple[str, Any]] = []
        self.failed_once: set[str] = set()
        self.guard = threading.Lock()

    def check(self, run: RunState) -> Any:
        identity = current_effect()
        if identity is None or identity.run_id != run.run_id:
            with self.guard:
                self.wrong_identity.append((run.run_id, identity))
        return identity

    def parts(self, run: RunState, effect: Effect) -> EffectOutcome:
        identity = self.check(run)
        time.sleep(0.002)  # a blocking call: other runs advance meanwhile
        for name in ("a", "b"):
            identity.record_part(name, run.run_id)
        return EffectOutcome.completed({"by": run.run_id})

    async def flaky(self, run: RunState, effect: Effect) -> EffectOutcome:
        identity = self.check(run)
        await asyncio.sleep(0.001)
        with self.guard:
            first = identity.key not in self.failed_once
            self.failed_once.add(identity.key)
        return EffectOutcome.failed("blip") if first else EffectOutcome.completed({"attempt": identity.attempt})


def _store(tmp_path: Path) -> tuple[Any, Any, Handlers, WorkflowSpec]:
    parent, child = _workflows()
    registry = WorkflowRegistry()
    registry.register(parent)
    registry.register(child)
    handlers = Handlers()
    store = open_store(tmp_path / "store", durability="none")
    runtime = store.runtime(workflow_registry=registry,
                            effect_policy=DefaultEffectPolicy(default_max_attempts=2, default_backoff_base=0.0),
                            effect_handlers={EffectType.LLM_CALL: handlers.parts, EffectType.TOOL_CALLS: handlers.flaky})
    for k in range(RUNS):
        runtime.start(workflow=parent, run_id=f"p{k}")
    return store, runtime, handlers, parent


def _check(runtime: Any, handlers: Handlers) -> None:
    assert handlers.wrong_identity == []
    for k in range(RUNS):
        run_id = f"p{k}"
        assert runtime.get_state(run_id).status is RunStatus.COMPLETED, runtime.get_state(run_id).error
        ledger = runtime.get_ledger(run_id)
        starts = [r for r in ledger if r.get("effect", {}) and r["effect"]["type"] == "start_subworkflow"
                  and r.get("status") == "completed"]
        children = [r["result"]["sub_run_id"] for r in starts]
        expected = [child_run_id(run_id, positional_key(run_id, r["effect_id"])) for r in starts]
        assert len(children) == 2 and len(set(children)) == 2, (run_id, children)
        assert children == expected, (run_id, children, expected)
        for child_id in children:
            child = runtime.get_state(child_id)
            assert child.status is RunStatus.COMPLETED and child.parent_run_id == run_id
        part_records = [r for r in ledger if r.get("kind") == "part"]
        assert len(part_records) == 2 and {r["run_id"] for r in part_records} == {run_id}
        flaky = [r for r in ledger if r.get("effect", {}) and r["effect"]["type"] == "tool_calls"
                 and r.get("status") in ("failed", "completed")]
        assert [(r["status"], r["attempt"]) for r in flaky] == [("failed", 1), ("completed", 2)]
        assert {r["idempotency_key"] for r in flaky} == {positional_key(run_id, flaky[0]["effect_id"])}


def test_advance_many_at_concurrency_50_keeps_every_position_per_run(tmp_path: Path) -> None:
    store, runtime, handlers, parent = _store(tmp_path)
    result = asyncio.run(advance_many(runtime, [(parent, f"p{k}") for k in range(RUNS)], concurrency=RUNS))
    assert result.errors == {} and result.locked == []
    _check(runtime, handlers)
    store.close()


def test_a_worker_pass_at_concurrency_50_keeps_every_position_per_run(tmp_path: Path) -> None:
    store, runtime, handlers, parent = _store(tmp_path)
    registry = runtime.workflow_registry
    failures: list[str] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, batch_size=RUNS,
                          on_run_failed=lambda run_id, exc: failures.append(f"{run_id}: {exc}"))
    advanced = scheduler.work_pass(limit=3 * RUNS, concurrency=RUNS)
    assert failures == []
    assert {s.run_id for s in advanced} >= {f"p{k}" for k in range(RUNS)}
    _check(runtime, handlers)
    store.close()


def test_the_effect_running_is_not_an_attribute_of_the_shared_runtime(tmp_path: Path) -> None:
    runtime = open_store(tmp_path / "store").runtime()
    assert not hasattr(runtime, "current_effect")  # it is the handler's context: current_effect()
