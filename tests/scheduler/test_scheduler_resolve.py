"""The scheduler as the one timer driver: a per-run resolver (as the CLI uses), lock reports,
and a pass that survives any one run's error; the one ``is_due`` rule (core.timers)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from abstractruntime.core.clock import FixedClock, to_iso
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason, WaitState
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.core.timers import is_due, run_is_due
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc)


def _timer(workflow_id: str) -> WorkflowSpec:
    def wait(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}), next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"by": workflow_id})

    return WorkflowSpec(workflow_id, "wait", {"wait": wait, "done": done})


def _setup() -> tuple[Runtime, FixedClock, list[str]]:
    clock = FixedClock(T0)
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), clock=clock)
    ids = []
    for i, wf in enumerate((_timer("a"), _timer("b"), _timer("c"))):
        # Distinct instants: due runs are listed earliest first, so a before b before c.
        run_id = runtime.start(workflow=wf, vars={"until": to_iso(T0 + timedelta(seconds=3 + i))})
        runtime.tick(workflow=wf, run_id=run_id)
        ids.append(run_id)
    clock.advance(seconds=5)
    return runtime, clock, ids


def test_a_resolver_picks_each_runs_workflow_and_one_failure_does_not_end_the_pass() -> None:
    runtime, _, ids = _setup()
    specs = {"a": _timer("a"), "c": _timer("c")}
    failed: list[tuple[str, str]] = []

    def resolve(run: RunState) -> tuple[WorkflowSpec, Runtime]:
        if run.workflow_id == "b":
            raise RuntimeError("cannot load b")  # not an AbstractRuntimeError: still only this run fails
        return specs[run.workflow_id], runtime

    scheduler = Scheduler(runtime=runtime, registry=WorkflowRegistry(), resolve=resolve,
                          on_run_failed=lambda run_id, exc: failed.append((run_id, str(exc))))
    advanced = scheduler.tick_due()
    assert sorted(s.output["by"] for s in advanced) == ["a", "c"]
    assert failed == [(ids[1], "cannot load b")]
    assert runtime.get_state(ids[1]).status is RunStatus.WAITING


def test_locked_runs_are_reported_and_paged_past() -> None:
    runtime, _, ids = _setup()
    registry = WorkflowRegistry()
    for wf in (_timer("a"), _timer("b"), _timer("c")):
        registry.register(wf)
    locked: list[str] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_locked=locked.append)
    with runtime.run_store.lock(ids[0]), runtime.run_store.lock(ids[1]):
        # A page of one holds only the first (locked) run: the pass fetches past the locked ones.
        advanced = scheduler.tick_due(limit=1)
    assert [s.run_id for s in advanced] == [ids[2]]
    assert locked == ids[:2] and scheduler.stats.runs_skipped_locked == 2


def test_is_due() -> None:
    def wait(until: str, reason: WaitReason = WaitReason.UNTIL) -> WaitState:
        return WaitState(reason=reason, until=until, wait_key="k")

    assert is_due(wait("2030-01-01T10:00:00+02:00"), T0)  # 08:00Z: compared as instants
    assert is_due(wait("2030-01-01T09:00:00Z"), T0)
    assert not is_due(wait("2030-01-01T09:00:01Z"), T0)
    assert not is_due(wait("2030-01-01T08:00:00Z", WaitReason.USER), T0)
    assert not is_due(None, T0) and not is_due(wait(""), T0)
    with pytest.raises(ValueError):
        is_due(wait("next tuesday"), T0)
    run = RunState.new(workflow_id="w", entry_node="n")
    run.waiting = wait("2030-01-01T08:00:00Z")
    assert not run_is_due(run, T0)  # still RUNNING
    run.status = RunStatus.WAITING
    assert run_is_due(run, T0)
