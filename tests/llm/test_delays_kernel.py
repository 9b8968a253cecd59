"""A handler that says "try again in N seconds" makes the run wait on a durable timer, not fail an attempt."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.errors import TimerWaitError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import NoRetryPolicy
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


class RateLimited:
    """Answers "retry in 2 s" ``limited`` times, then completes."""

    def __init__(self, limited: int) -> None:
        self.limited, self.calls = limited, 0

    def __call__(self, run: RunState, effect: Effect) -> EffectOutcome:
        self.calls += 1
        if self.calls <= self.limited:
            return EffectOutcome.delayed(2, "HTTP 429 Too Many Requests: Retry-After 2")
        return EffectOutcome.completed({"content": "ok"})


def one_call() -> WorkflowSpec:
    return WorkflowSpec("one", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, result_key="r"),
                                         next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars["r"]["content"]})})


def test_a_delay_is_a_timer_not_a_failed_attempt(tmp_path: Path) -> None:
    clock, llm = Clock(), RateLimited(2)
    store = FileStore(tmp_path, durability="none")
    # One attempt only: a delay that counted as an attempt would fail the run.
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: llm}, effect_policy=NoRetryPolicy(), clock=clock)
    wf = one_call()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None
    wait = state.waiting
    assert wait.reason is WaitReason.UNTIL and wait.wait_id == "w2"
    assert wait.until == (clock.now + timedelta(seconds=2)).isoformat()
    assert wait.details is not None and wait.details["retry_after"]["seconds"] == 2
    pending = rt.get_checkpoint(run_id).pending
    assert pending is not None and pending.effect_id == 1 and pending.failed == 0
    assert not [r for r in rt.get_ledger(run_id) if r["status"] == "failed"]

    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING and llm.calls == 1  # not due yet
    with pytest.raises(TimerWaitError):  # a timer takes no answer
        rt.resume(workflow=wf, run_id=run_id, wait_id="w2", payload={"answer": "go"})

    clock.now += timedelta(seconds=2)
    state = rt.tick(workflow=wf, run_id=run_id)  # due: the same effect again, delayed once more
    assert state.waiting is not None and state.waiting.wait_id == "w3" and llm.calls == 2
    clock.now += timedelta(seconds=2)
    state = FileStore(tmp_path, durability="none").runtime(
        effect_handlers={EffectType.LLM_CALL: llm}, effect_policy=NoRetryPolicy(), clock=clock).tick(
        workflow=wf, run_id=run_id)  # another process picks it up
    assert state.status is RunStatus.COMPLETED and state.output == {"reply": "ok"} and llm.calls == 3
    intents = [(r["effect_id"], r["attempt"]) for r in rt.get_ledger(run_id)
               if r["kind"] == "effect" and r["status"] == "started"]
    assert intents == [(1, 1), (1, 2), (1, 3)]
    assert [r["result"]["pause"] for r in rt.get_ledger(run_id) if r["kind"] == "pause"] == ["retry_after"] * 2
    assert verify_run(store, run_id).ok


def test_an_operator_may_fire_the_timer_early(tmp_path: Path) -> None:
    clock, llm = Clock(), RateLimited(1)
    rt = FileStore(tmp_path, durability="none").runtime(effect_handlers={EffectType.LLM_CALL: llm}, clock=clock)
    wf = one_call()
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    state = rt.resume(workflow=wf, run_id=run_id, wait_id="w2", fire_timer=True)
    assert state.status is RunStatus.COMPLETED and llm.calls == 2


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "soon"])
def test_an_unusable_delay_is_a_failed_attempt(tmp_path: Path, delay: Any) -> None:
    def handler(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.delayed(delay, "HTTP 429")

    rt = FileStore(tmp_path, durability="none").runtime(effect_handlers={EffectType.LLM_CALL: handler})
    wf = one_call()
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "unusable delay" in (state.error or "")
