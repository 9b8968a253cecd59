"""A durable timer is resumed by the clock, or by an explicit, recorded operator action — never answered away."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    FixedClock,
    InMemoryLedgerStore,
    InMemoryRunStore,
    Runtime,
    RunStatus,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.core.errors import AlreadyAnsweredError, InvalidInputError, TimerWaitError
from abstractruntime.scheduler import Scheduler, WorkflowRegistry, create_scheduled_runtime

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
FAR = "2099-01-01T00:00:00+00:00"


def _timer(until: str = FAR) -> WorkflowSpec:
    def sleep(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("sleep", next_node="done", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}, "timer"))

    return WorkflowSpec("timer", "sleep", {"sleep": sleep, "done": lambda run, ctx: StepPlan(
        "done", complete_output={"timer": run.vars.get("timer")})})


def _runtime(**kwargs: Any) -> Runtime:
    return Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), clock=FixedClock(T0), **kwargs)


def _waiting(runtime: Runtime, wf: WorkflowSpec) -> tuple[str, Any]:
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason.value == "until"
    return run_id, state


@pytest.mark.parametrize("by", ["wait_id", "wait_key", "current"])
def test_an_answer_to_a_timer_is_refused_and_writes_nothing(by: str) -> None:
    runtime, wf = _runtime(), _timer()
    run_id, state = _waiting(runtime, wf)
    before = runtime.get_ledger(run_id)
    target = {"wait_id": {"wait_id": state.waiting.wait_id}, "wait_key": {"wait_key": state.waiting.wait_key},
              "current": {}}[by]
    with pytest.raises(TimerWaitError) as info:
        runtime.resume(workflow=wf, run_id=run_id, payload={"answer": "skip"}, **target)
    assert isinstance(info.value, ValueError) and info.value.code == "timer_wait"
    assert "fire_timer" in str(info.value) and FAR[:10] in str(info.value)
    assert runtime.get_ledger(run_id) == before
    assert runtime.get_state(run_id).status is RunStatus.WAITING


def test_the_scheduled_runtimes_respond_refuses_a_timer_too() -> None:
    wf = _timer()
    with create_scheduled_runtime(workflows=[wf], auto_start=False, clock=FixedClock(T0)) as sr:
        run_id, _ = sr.run(wf)
        with pytest.raises(TimerWaitError):
            sr.respond(run_id, {"answer": "skip"})
        assert sr.get_state(run_id).status is RunStatus.WAITING


def test_an_operator_fires_a_timer_explicitly_and_the_ledger_says_so() -> None:
    runtime, wf = _runtime(), _timer()
    run_id, state = _waiting(runtime, wf)
    done = runtime.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, fire_timer=True)
    assert done.status is RunStatus.COMPLETED
    # The workflow sees what the clock would have given it.
    assert done.output == {"timer": {"until": state.waiting.until, "ready": True}}
    resume = [r for r in runtime.get_ledger(run_id) if r["kind"] == "resume"]
    assert len(resume) == 1
    assert resume[0]["result"]["reason"] == "until" and resume[0]["result"]["fired_by"] == "operator"
    assert resume[0]["result"]["wait_id"] == state.waiting.wait_id
    with pytest.raises(AlreadyAnsweredError):
        runtime.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, fire_timer=True)


def test_aresume_fires_a_timer_the_same_way() -> None:
    runtime, wf = _runtime(), _timer()
    run_id, state = _waiting(runtime, wf)
    with pytest.raises(TimerWaitError):
        asyncio.run(runtime.aresume(workflow=wf, run_id=run_id, payload={"answer": "skip"}))
    done = asyncio.run(runtime.aresume(workflow=wf, run_id=run_id, fire_timer=True))
    assert done.status is RunStatus.COMPLETED


def test_fire_timer_takes_no_payload_and_only_fires_timers() -> None:
    runtime, wf = _runtime(), _timer()
    run_id, _ = _waiting(runtime, wf)
    with pytest.raises(InvalidInputError, match="payload"):
        runtime.resume(workflow=wf, run_id=run_id, payload={"answer": "x"}, fire_timer=True)
    ask = WorkflowSpec("ask", "ask", {"ask": lambda run, ctx: StepPlan("ask", next_node="done", effect=Effect(
        EffectType.ASK_USER, {"prompt": "?"}, "a")), "done": lambda run, ctx: StepPlan("done", complete_output={})})
    asked = runtime.start(workflow=ask)
    runtime.tick(workflow=ask, run_id=asked)
    before = runtime.get_ledger(asked)
    with pytest.raises(InvalidInputError, match="not a timer"):
        runtime.resume(workflow=ask, run_id=asked, fire_timer=True)
    assert runtime.get_ledger(asked) == before


def test_moving_a_timer_as_upstream_did_stays_the_clocks_way() -> None:
    clock = FixedClock(T0)
    wf = _timer((T0 + timedelta(days=365)).isoformat())
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), clock=clock,
                      workflow_registry=registry)
    run_id, state = _waiting(runtime, wf)
    state.waiting.until = (T0 - timedelta(seconds=1)).isoformat()
    runtime.run_store.save(state)
    assert Scheduler(runtime=runtime, registry=registry).poll_once() == 1
    assert runtime.get_state(run_id).status is RunStatus.COMPLETED
    resume = [r for r in runtime.get_ledger(run_id) if r["kind"] == "resume"][0]
    assert resume["result"]["reason"] == "until" and "fired_by" not in resume["result"]
