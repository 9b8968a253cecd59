"""Scheduler.work_pass (what `abstractruntime worker` runs) and emit_event with hand-off, over
real file stores: due timers and runs left running are advanced once, one or N at a time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import InvalidInputError, NotFoundError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.events import emit_event
from abstractruntime.storage.ledger_chain import verify_ledger_chain
from abstractruntime.storage.store import FileStore


def _flow(calls: list[str]) -> WorkflowSpec:
    """Waits on a timer or an event (per vars), then one effect that records its call."""

    def begin(run: RunState, ctx: Any) -> StepPlan:
        if run.vars.get("until"):
            return StepPlan("begin", next_node="work", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}))
        if run.vars.get("key"):
            return StepPlan("begin", next_node="work",
                            effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars["key"]}, result_key="event"))
        return StepPlan("begin", next_node="work")

    return WorkflowSpec("work", "begin", {
        "begin": begin,
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {})),
        "end": lambda run, ctx: StepPlan("end", complete_output={"event": run.vars.get("event")}),
    })


def _setup(tmp_path: Path, clock: Any = None) -> tuple[Any, Scheduler, WorkflowSpec, list[str]]:
    from abstractruntime.core.runtime import EffectOutcome

    calls: list[str] = []

    def tool(run: RunState, effect: Any) -> Any:
        calls.append(run.run_id)
        return EffectOutcome.completed({"ok": True})

    store = FileStore(tmp_path / "store")
    runtime = store.runtime(clock=clock or FixedClock("2030-01-01T00:00:00+00:00"), effect_handlers={EffectType.TOOL_CALLS: tool})
    flow = _flow(calls)
    registry = WorkflowRegistry()
    registry.register(flow)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    return runtime, scheduler, flow, calls


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_pass_advances_due_timers_and_runs_left_running_once(tmp_path: Path, concurrency: int) -> None:
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    runtime, scheduler, flow, calls = _setup(tmp_path, clock)
    running = [runtime.start(workflow=flow, run_id=f"r{i}") for i in range(3)]
    due = [runtime.start(workflow=flow, run_id=f"d{i}", vars={"until": "2030-01-01T00:00:30+00:00"})
           for i in range(3)]
    later = runtime.start(workflow=flow, run_id="later", vars={"until": "2030-01-02T00:00:00+00:00"})
    asked = runtime.start(workflow=flow, run_id="asked", vars={"key": "k"})
    for run_id in [*due, later, asked]:
        assert runtime.tick(workflow=flow, run_id=run_id).status is RunStatus.WAITING
    clock.advance(seconds=60)

    states = scheduler.work_pass(limit=100, concurrency=concurrency)

    assert sorted(s.run_id for s in states) == sorted(running + due)
    assert all(s.status is RunStatus.COMPLETED for s in states)
    assert sorted(calls) == sorted(running + due)  # each effect once
    assert runtime.get_state(later).status is RunStatus.WAITING  # not due
    assert runtime.get_state(asked).status is RunStatus.WAITING  # waits for its event
    assert scheduler.work_pass(limit=100, concurrency=concurrency) == []  # nothing left
    assert scheduler.stats.runs_resumed == len(states)
    for run_id in running + due:
        assert verify_ledger_chain(runtime.get_ledger(run_id))["ok"] is True


def test_a_pass_stops_at_its_limit_and_at_a_stop(tmp_path: Path) -> None:
    runtime, scheduler, flow, _calls = _setup(tmp_path)
    for i in range(5):
        runtime.start(workflow=flow, run_id=f"r{i}")
    assert len(scheduler.work_pass(limit=2)) == 2
    stop = threading.Event()
    stop.set()
    assert scheduler.work_pass(limit=100, stop_event=stop) == []
    assert len(scheduler.work_pass(limit=100)) == 3
    with pytest.raises(InvalidInputError):
        scheduler.work_pass(limit=0)
    with pytest.raises(InvalidInputError):
        scheduler.work_pass(concurrency=0)


def test_a_run_another_writer_holds_is_skipped(tmp_path: Path) -> None:
    runtime, scheduler, flow, calls = _setup(tmp_path)
    runtime.start(workflow=flow, run_id="held")
    with runtime.run_store.lock("held"):
        assert scheduler.work_pass(limit=10) == []
    assert scheduler.stats.runs_skipped_locked == 1 and calls == []
    assert [s.run_id for s in scheduler.work_pass(limit=10)] == ["held"]


def test_emit_hands_off_to_a_worker_and_refuses_a_key_nobody_waits_on(tmp_path: Path) -> None:
    runtime, scheduler, flow, calls = _setup(tmp_path)
    for run_id in ("a", "b"):
        runtime.start(workflow=flow, run_id=run_id, vars={"key": "paid:1"})
        runtime.tick(workflow=flow, run_id=run_id)
    runtime.start(workflow=flow, run_id="other", vars={"key": "paid:2"})
    runtime.tick(workflow=flow, run_id="other")

    result = emit_event(runtime.run_store, "paid:1", {"amount": 3}, resolve=lambda run: (flow, runtime),
                        hand_off=True)

    assert sorted(s.run_id for s in result.states) == ["a", "b"]
    assert all(s.status is RunStatus.RUNNING for s in result.states) and calls == []  # answered, not advanced
    states = scheduler.work_pass(limit=10)
    assert sorted(s.run_id for s in states) == ["a", "b"]
    assert all(s.output == {"event": {"amount": 3}} for s in states)
    assert runtime.get_state("other").status is RunStatus.WAITING
    with pytest.raises(NotFoundError):
        emit_event(runtime.run_store, "paid:1", {}, resolve=lambda run: (flow, runtime))


def test_emit_reports_a_run_answered_meanwhile_as_already_answered(tmp_path: Path) -> None:
    runtime, _scheduler, flow, _calls = _setup(tmp_path)
    runtime.start(workflow=flow, run_id="a", vars={"key": "k"})
    runtime.tick(workflow=flow, run_id="a")

    def answered_first(run: RunState) -> tuple[WorkflowSpec, Any]:
        # Another emitter answers between the listing and this emit's resume.
        runtime.resume(workflow=flow, run_id=run.run_id, wait_key="k", payload={"first": True})
        return flow, runtime

    result = emit_event(runtime.run_store, "k", {"second": True}, resolve=answered_first)
    assert result.states == [] and result.already_answered == ["a"]
    assert runtime.get_state("a").output == {"event": {"first": True}}


class _BrokenEvents:
    """An event log whose every read fails with ``error`` (a chore of the pass that breaks)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error
        return fail


def test_a_failing_chore_is_recorded_and_the_runs_still_advance_but_an_outage_ends_the_pass(
        tmp_path: Path) -> None:
    from abstractruntime.core.errors import DatabaseUnavailableError

    runtime, _, flow, calls = _setup(tmp_path)
    registry = WorkflowRegistry()
    registry.register(flow)
    run_id = runtime.start(workflow=flow, run_id="r1")
    broken = Scheduler(runtime=runtime, registry=registry, events=_BrokenEvents(OSError("disk on fire")))
    assert [s.run_id for s in broken.work_pass()] == [run_id] and calls == [run_id]
    assert any("delivering kept events failed: disk on fire" in e for e in broken.stats.errors)

    down = Scheduler(runtime=runtime, registry=registry, events=_BrokenEvents(DatabaseUnavailableError("gone")))
    runtime.start(workflow=flow, run_id="r2")
    with pytest.raises(DatabaseUnavailableError):
        down.work_pass()
    assert calls == [run_id]  # the pass ended before it claimed anything
