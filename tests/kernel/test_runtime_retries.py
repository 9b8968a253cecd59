"""Retries and idempotency: attempts, backoff, retryable or not, completed effects never re-run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional
from unittest.mock import patch


from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec

from runtime_support import effect_then_done, effect_records

if TYPE_CHECKING:
    from conftest import Backend


# -- retries and idempotency ---------------------------------------------------------------


class Flaky:
    """An LLM handler that fails ``failures`` times (or raises), then succeeds."""

    def __init__(self, failures: int, *, raise_exc: bool = False, retryable: bool = True) -> None:
        self.failures, self.raise_exc, self.retryable = failures, raise_exc, retryable
        self.calls = 0

    def __call__(self, run: RunState, effect: Effect) -> EffectOutcome:
        self.calls += 1
        if self.calls <= self.failures:
            if self.raise_exc:
                raise ConnectionError(f"network down #{self.calls}")
            return EffectOutcome.failed(f"try {self.calls} failed", retryable=self.retryable)
        return EffectOutcome.completed({"text": "ok", "call": self.calls})


LLM_WF = effect_then_done(Effect(type=EffectType.LLM_CALL, payload={"prompt": "hi"}, result_key="llm"))
THREE = DefaultEffectPolicy(effect_max_attempts={"llm_call": 3})


def test_retries_exhausted(rt_backend: "Backend") -> None:
    handler = Flaky(99)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler}, effect_policy=THREE)
    run_id = rt.start(workflow=LLM_WF)
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=LLM_WF, run_id=run_id)
    assert sleep.call_count == 2
    assert [c.args[0] for c in sleep.call_args_list] == [1.0, 2.0]
    assert handler.calls == 3
    assert state.status is RunStatus.FAILED and "after 3 attempts" in state.error and "try 3 failed" in state.error
    records = effect_records(rt, run_id)
    started = [r for r in records if r["status"] == "started"]
    assert [r["attempt"] for r in started] == [1, 2, 3]
    assert [r["status"] for r in records] == ["started", "failed"] * 3
    keys = {r["idempotency_key"] for r in records}
    assert len(keys) == 1 and all(len(k) == 32 and int(k, 16) >= 0 for k in keys)


def test_no_sleep_on_first_success(rt_backend: "Backend") -> None:
    handler = Flaky(0)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler}, effect_policy=THREE)
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF))
    assert sleep.call_count == 0 and handler.calls == 1
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["llm"] == {"text": "ok", "call": 1}


def test_success_after_a_retry(rt_backend: "Backend") -> None:
    handler = Flaky(1, raise_exc=True)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler},
                            effect_policy=DefaultEffectPolicy(default_max_attempts=3, default_backoff_base=0.25))
    run_id = rt.start(workflow=LLM_WF)
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=LLM_WF, run_id=run_id)
    assert [c.args[0] for c in sleep.call_args_list] == [0.25]
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["llm"]["call"] == 2
    records = effect_records(rt, run_id)
    assert [(r["status"], r["attempt"]) for r in records] == [("started", 1), ("failed", 1), ("started", 2),
                                                            ("completed", 2)]
    assert "network down #1" in records[1]["error"]


def test_handler_exceptions_count_as_attempts(rt_backend: "Backend") -> None:
    handler = Flaky(99, raise_exc=True)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler}, effect_policy=THREE)
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF))
    assert handler.calls == 3 and sleep.call_count == 2
    assert state.status is RunStatus.FAILED and "after 3 attempts" in state.error
    assert "ConnectionError" in state.error and "network down #3" in state.error


def test_not_retryable_stops_at_once(rt_backend: "Backend") -> None:
    handler = Flaky(99, retryable=False)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler}, effect_policy=THREE)
    run_id = rt.start(workflow=LLM_WF)
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=LLM_WF, run_id=run_id)
    assert handler.calls == 1 and sleep.call_count == 0
    assert state.status is RunStatus.FAILED and "after 1 attempt" in state.error
    assert [r["status"] for r in effect_records(rt, run_id)] == ["started", "failed"]


def test_waiting_effects_are_never_retried(rt_backend: "Backend") -> None:
    calls = []

    def wait_handler(run: RunState, effect: Effect, next_node: Optional[str]) -> EffectOutcome:
        from abstractruntime.core.models import WaitState

        calls.append(next_node)
        return EffectOutcome.waiting(WaitState(reason=WaitReason.EVENT, wait_key="k", resume_to_node=next_node))

    wf = effect_then_done(Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": "k"}))
    rt = rt_backend.runtime(effect_handlers={EffectType.WAIT_EVENT: wait_handler},
                            effect_policy=DefaultEffectPolicy(default_max_attempts=5))
    with patch("time.sleep") as sleep:
        state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
    assert state.status is RunStatus.WAITING and calls == ["done"] and sleep.call_count == 0


def test_completed_effect_not_re_executed_after_reset(rt_backend: "Backend") -> None:
    handler = Flaky(0)
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: handler})
    run_id = rt.start(workflow=LLM_WF)
    assert rt.tick(workflow=LLM_WF, run_id=run_id).status is RunStatus.COMPLETED
    run = rt_backend.runs.load(run_id)
    run.status, run.current_node, run.output, run.vars = RunStatus.RUNNING, "act", None, {}
    rt_backend.runs.save(run)
    state = rt.tick(workflow=LLM_WF, run_id=run_id)
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["llm"] == {"text": "ok", "call": 1}
    assert handler.calls == 1


def test_different_payload_is_a_different_effect(rt_backend: "Backend") -> None:
    prompts = []

    def llm(run: RunState, effect: Effect) -> EffectOutcome:
        prompts.append(effect.payload["prompt"])
        return EffectOutcome.completed({"n": len(prompts)})

    def loop(run: RunState, ctx: Any) -> StepPlan:
        i = run.vars.get("i", 0)
        if i == 3:
            return StepPlan(node_id="loop", complete_output={"prompts": i})
        run.vars["i"] = i + 1
        return StepPlan(node_id="loop", effect=Effect(type=EffectType.LLM_CALL, payload={"prompt": f"p{i}"}),
                        next_node="loop")

    wf = WorkflowSpec("wf", "loop", {"loop": loop})
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    assert rt.tick(workflow=wf, run_id=rt.start(workflow=wf)).status is RunStatus.COMPLETED
    assert prompts == ["p0", "p1", "p2"]


def test_handler_forms_two_and_three_arguments(rt_backend: "Backend") -> None:
    seen = []

    def three(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        seen.append(default_next_node)
        return EffectOutcome.completed({"form": 3})

    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: three,
                                             "tool_calls": lambda run, effect: EffectOutcome.completed({"form": 2})})
    assert rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF)).output["vars"]["llm"] == {"form": 3}
    assert seen == ["done"]
    tools = effect_then_done(Effect(type=EffectType.TOOL_CALLS, payload={}, result_key="t"))
    assert rt.tick(workflow=tools, run_id=rt.start(workflow=tools)).output["vars"]["t"] == {"form": 2}


def test_missing_handler_fails_the_run(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    state = rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF))
    assert state.status is RunStatus.FAILED and "llm_call" in state.error


def test_a_replaced_handler_is_called_with_its_own_arity(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    seen: list[object] = []

    def two(run: Any, effect: Any) -> EffectOutcome:
        return EffectOutcome.completed({"form": 2})

    def three(run: Any, effect: Any, next_node: Any) -> EffectOutcome:
        seen.append(next_node)
        return EffectOutcome.completed({"form": 3})

    for handler, form in ((two, 2), (three, 3), (two, 2)):
        rt.register_effect_handler(EffectType.LLM_CALL, handler)
        state = rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF))
        assert state.status is RunStatus.COMPLETED and state.output["vars"]["llm"] == {"form": form}
    assert len(seen) == 1 and seen[0] is not None  # the three-argument form got the default next node
