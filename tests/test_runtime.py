"""The runtime: every effect and wait kind, subworkflows, retries and idempotency, crash
recovery, failures on the record, resume refusals, cancel, drift, size limits and redaction.

Most tests run twice, over the in-memory stores and over the file stores (``rt_backend``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional
from unittest.mock import patch

import pytest

from abstractruntime.core.canonical import MAX_RECORD_BYTES
from abstractruntime.core.clock import FixedClock, parse_iso
from abstractruntime.core.errors import (
    InvalidAnswerError,
    InvalidInputError,
    PayloadTooLargeError,
    RunNotFoundError,
    RunNotWaitingError,
    WaitKeyMismatchError,
    WorkflowDriftError,
)
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import EffectOutcome, Runtime
from abstractruntime.core.spec import WorkflowSource, WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain

if TYPE_CHECKING:
    from conftest import Backend

Node = Callable[[RunState, Any], StepPlan]


def effect_then_done(effect: Effect, *, wf_id: str = "wf") -> WorkflowSpec:
    """``act`` performs ``effect`` and goes to ``done``, which completes with the vars."""

    def act(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="act", effect=effect, next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"vars": run.vars})

    return WorkflowSpec(wf_id, "act", {"act": act, "done": done})


def ask(payload: dict[str, Any], result_key: str = "answer", wf_id: str = "wf") -> WorkflowSpec:
    return effect_then_done(Effect(type=EffectType.ASK_USER, payload=payload, result_key=result_key), wf_id=wf_id)


def effect_records(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    return [r for r in rt.get_ledger(run_id) if r["effect"] is not None]


# -- ask_user ------------------------------------------------------------------------------


def test_ask_user_with_choices_and_wait_key(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Ship it?", "choices": ["yes", "no"], "wait_key": "approve-1"})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING
    wait = state.waiting
    assert wait.reason is WaitReason.USER and wait.wait_key == "approve-1" and wait.prompt == "Ship it?"
    assert wait.choices == ["yes", "no"] and wait.allow_free_text is True
    assert wait.resume_to_node == "done" and wait.result_key == "answer"
    assert rt.get_state(run_id).waiting == wait

    state = rt.resume(workflow=wf, run_id=run_id, wait_key="approve-1", payload={"answer": "maybe later"})
    assert state.status is RunStatus.COMPLETED
    assert state.output == {"vars": {"answer": {"answer": "maybe later"}}}
    resume = [r for r in rt.get_ledger(run_id) if r["kind"] == "resume"]
    assert len(resume) == 1 and resume[0]["result"]["payload"] == {"answer": "maybe later"}


def test_ask_user_without_wait_key_generates_one(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Name?"})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    key = state.waiting.wait_key
    assert isinstance(key, str) and key and state.waiting.choices is None
    # A second run gets its own key.
    other = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=other).waiting.wait_key != key
    state = rt.resume(workflow=wf, run_id=run_id, wait_key=rt.get_state(run_id).waiting.wait_key,
                      payload={"name": "Ada"})
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["answer"] == {"name": "Ada"}


def test_resume_without_wait_key_is_accepted(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Name?"})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    assert rt.resume(workflow=wf, run_id=run_id, wait_key=None, payload={"n": 1}).status is RunStatus.COMPLETED


def test_closed_choices_refuse_a_wrong_answer_and_write_nothing(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Ship?", "choices": ["yes", "no"], "allow_free_text": False, "wait_key": "k"})
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).waiting.allow_free_text is False
    before = rt_backend.fingerprint(run_id)
    for bad in ({"answer": "maybe"}, {"answer": "YES"}, {"reply": "yes"}, {}):
        with pytest.raises(InvalidAnswerError) as info:
            rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload=bad)
        assert isinstance(info.value, ValueError) and "yes" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before
    assert rt.get_state(run_id).status is RunStatus.WAITING
    state = rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"answer": "no"})
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["answer"] == {"answer": "no"}


# -- wait_event / wait_job -----------------------------------------------------------------


def test_wait_event(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = effect_then_done(Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": "order:42"}, result_key="evt"))
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.EVENT
    assert state.waiting.wait_key == "order:42" and state.waiting.resume_to_node == "done"
    # A tick does not move an event wait.
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    state = rt.resume(workflow=wf, run_id=run_id, wait_key="order:42", payload={"paid": True})
    assert state.status is RunStatus.COMPLETED and state.output == {"vars": {"evt": {"paid": True}}}


def test_wait_event_resume_to_node_in_payload(rt_backend: "Backend") -> None:
    def act(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="act", effect=Effect(type=EffectType.WAIT_EVENT,
                                                     payload={"wait_key": "e", "resume_to_node": "other"}),
                        next_node="done")

    wf = WorkflowSpec("wf", "act", {
        "act": act,
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"via": "done"}),
        "other": lambda run, ctx: StepPlan(node_id="other", complete_output={"via": "other"}),
    })
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).waiting.resume_to_node == "other"
    assert rt.resume(workflow=wf, run_id=run_id, wait_key="e", payload={}).output == {"via": "other"}


def test_wait_event_without_key_fails_the_run(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = effect_then_done(Effect(type=EffectType.WAIT_EVENT, payload={}))
    state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
    assert state.status is RunStatus.FAILED and "wait_key" in state.error


def test_wait_job(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = effect_then_done(Effect(type=EffectType.WAIT_JOB, payload={"job_id": "build-7"}, result_key="job"))
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.JOB
    assert state.waiting.wait_key == "job:build-7" and state.waiting.details["job_id"] == "build-7"
    with pytest.raises(WaitKeyMismatchError):
        rt.resume(workflow=wf, run_id=run_id, wait_key="job:other", payload={})
    state = rt.resume(workflow=wf, run_id=run_id, wait_key="job:build-7", payload={"exit": 0})
    assert state.status is RunStatus.COMPLETED and state.output == {"vars": {"job": {"exit": 0}}}


# -- wait_until with an injected clock -----------------------------------------------------


def _timer(until: str) -> WorkflowSpec:
    return effect_then_done(Effect(type=EffectType.WAIT_UNTIL, payload={"until": until}, result_key="timer"))


@pytest.mark.parametrize("until", ["2029-12-31T23:00:00Z", "2029-12-31T23:00:00", "2030-01-01T01:00:00+02:00",
                                   "2029-12-31T18:59:59-05:00"])
def test_wait_until_in_the_past_continues_at_once(rt_backend: "Backend", clock: FixedClock, until: str) -> None:
    rt = rt_backend.runtime(clock=clock)  # clock: 2030-01-01T00:00:00Z
    wf = _timer(until)
    state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
    assert state.status is RunStatus.COMPLETED
    assert state.output["vars"]["timer"]["ready"] is True


# All four are the same instant: 2030-01-01T01:00:00Z. As strings, several would compare wrongly.
@pytest.mark.parametrize("until", ["2030-01-01T01:00:00Z", "2030-01-01T01:00:00", "2030-01-01T03:00:00+02:00",
                                   "2029-12-31T20:00:00-05:00"])
def test_wait_until_in_the_future_waits_until_due(rt_backend: "Backend", clock: FixedClock, until: str) -> None:
    rt = rt_backend.runtime(clock=clock)
    wf = _timer(until)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.UNTIL
    assert parse_iso(state.waiting.until) == parse_iso("2030-01-01T01:00:00Z")
    assert state.waiting.resume_to_node == "done"

    clock.set("2030-01-01T00:59:59Z")
    before = rt_backend.fingerprint(run_id)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING
    assert rt_backend.fingerprint(run_id) == before  # a tick before due writes nothing

    clock.set("2030-01-01T01:00:00Z")
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    assert state.output["vars"]["timer"]["ready"] is True
    resumes = [r for r in rt.get_ledger(run_id) if r["kind"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["result"]["reason"] == "until"
    assert rt.get_ledger(run_id)[-1]["kind"] == "complete"


def test_wait_until_is_found_by_the_due_query(rt_backend: "Backend", clock: FixedClock) -> None:
    rt = rt_backend.runtime(clock=clock)
    wf = _timer("2030-01-01T03:00:00+02:00")
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    assert rt_backend.runs.list_due_wait_until(now_iso="2030-01-01T00:59:00Z") == []
    assert [r.run_id for r in rt_backend.runs.list_due_wait_until(now_iso="2030-01-01T01:00:00Z")] == [run_id]


def test_wait_until_with_a_bad_timestamp_fails(rt_backend: "Backend", clock: FixedClock) -> None:
    rt = rt_backend.runtime(clock=clock)
    wf = _timer("next tuesday")
    state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
    assert state.status is RunStatus.FAILED and "next tuesday" in state.error


def test_context_uses_the_injected_clock(rt_backend: "Backend", clock: FixedClock) -> None:
    wf = WorkflowSpec("wf", "n", {"n": lambda run, ctx: StepPlan(node_id="n", complete_output={"now": ctx.now_iso()})})
    rt = rt_backend.runtime(clock=clock)
    state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
    assert parse_iso(state.output["now"]) == parse_iso("2030-01-01T00:00:00Z")
    assert rt.now() == parse_iso("2030-01-01T00:00:00Z")


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


def test_replaced_handler_arity_is_not_confused_by_id_reuse(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    two = lambda run, effect: EffectOutcome.completed({"form": 2})  # noqa: E731
    rt.register_effect_handler(EffectType.LLM_CALL, two)
    assert rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF)).status is RunStatus.COMPLETED
    freed_id = id(two)
    rt.register_effect_handler(EffectType.LLM_CALL, lambda run, effect: EffectOutcome.completed({}))
    del two
    keep = []
    for _ in range(10_000):
        candidate = (lambda run, effect, next_node: EffectOutcome.completed({"form": 3}))  # noqa: E731
        if id(candidate) == freed_id:
            break
        keep.append(candidate)
    else:
        pytest.skip("the allocator did not reuse the freed handler's id")
    rt.register_effect_handler(EffectType.LLM_CALL, candidate)
    state = rt.tick(workflow=LLM_WF, run_id=rt.start(workflow=LLM_WF))
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["llm"] == {"form": 3}


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


# -- resume refusals -----------------------------------------------------------------------


def _two_questions() -> WorkflowSpec:
    def q1(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="q1", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "1?"},
                                                    result_key="a1"), next_node="q2")

    def q2(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="q2", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "2?"},
                                                    result_key="a2"), next_node="end")

    return WorkflowSpec("two", "q1", {"q1": q1, "q2": q2,
                                      "end": lambda run, ctx: StepPlan(node_id="end", complete_output=run.vars)})


def test_resume_refusals_are_typed_and_write_nothing(rt_backend: "Backend") -> None:
    wf = _two_questions()
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)

    # Not waiting yet (started, never ticked).
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(RunNotWaitingError) as info:
        rt.resume(workflow=wf, run_id=run_id, wait_key=None, payload={})
    assert isinstance(info.value, ValueError) and "not waiting" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before

    first_key = rt.tick(workflow=wf, run_id=run_id).waiting.wait_key
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(WaitKeyMismatchError) as mismatch:
        rt.resume(workflow=wf, run_id=run_id, wait_key="not-the-key", payload={"x": 1})
    assert isinstance(mismatch.value, ValueError) and "wait_key mismatch" in str(mismatch.value)
    assert rt_backend.fingerprint(run_id) == before

    rt.resume(workflow=wf, run_id=run_id, wait_key=first_key, payload={"x": 1})
    # The same wait resumed again: refused (the run now waits on another question).
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(WaitKeyMismatchError):
        rt.resume(workflow=wf, run_id=run_id, wait_key=first_key, payload={"x": 2})
    assert rt_backend.fingerprint(run_id) == before

    second_key = rt.get_state(run_id).waiting.wait_key
    assert second_key != first_key
    assert rt.resume(workflow=wf, run_id=run_id, wait_key=second_key, payload={"y": 1}).status is RunStatus.COMPLETED
    before = rt_backend.fingerprint(run_id)
    for key in (second_key, first_key, None):
        with pytest.raises(RunNotWaitingError):
            rt.resume(workflow=wf, run_id=run_id, wait_key=key, payload={"y": 2})
    assert rt_backend.fingerprint(run_id) == before
    assert len([r for r in rt.get_ledger(run_id) if r["kind"] == "resume"]) == 2
    assert rt.get_state(run_id).output == {"a1": {"x": 1}, "a2": {"y": 1}}


def test_unknown_run(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = _two_questions()
    with pytest.raises(RunNotFoundError) as info:
        rt.get_state("missing")
    assert isinstance(info.value, KeyError) and "missing" in str(info.value)
    for call in (lambda: rt.tick(workflow=wf, run_id="missing"),
                 lambda: rt.resume(workflow=wf, run_id="missing", wait_key=None, payload={}),
                 lambda: rt.cancel_run("missing")):
        with pytest.raises(RunNotFoundError):
            call()
    assert rt.get_ledger("missing") == []


def test_another_workflow_is_refused(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=_two_questions())
    other = WorkflowSpec("other", "q1", _two_questions().nodes)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(InvalidInputError) as info:
        rt.tick(workflow=other, run_id=run_id)
    assert "two" in str(info.value) and "other" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before


def test_start_with_an_existing_run_id_is_refused(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = _two_questions()
    run_id = rt.start(workflow=wf, run_id="fixed-id")
    assert run_id == "fixed-id"
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(InvalidInputError):
        rt.start(workflow=wf, run_id="fixed-id")
    assert rt_backend.fingerprint(run_id) == before


# -- cancel --------------------------------------------------------------------------------


def test_cancel_run(rt_backend: "Backend") -> None:
    wf = _two_questions()
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    key = rt.tick(workflow=wf, run_id=run_id).waiting.wait_key
    state = rt.cancel_run(run_id, reason="user gave up")
    assert state.status is RunStatus.CANCELLED and state.error == "user gave up" and state.waiting is None
    assert rt.get_state(run_id) == state
    last = rt.get_ledger(run_id)[-1]
    assert last["kind"] == "cancel" and last["result"]["reason"] == "user gave up"
    assert last["result"]["previous_status"] == "waiting"

    before = rt_backend.fingerprint(run_id)
    with pytest.raises(RunNotWaitingError):
        rt.resume(workflow=wf, run_id=run_id, wait_key=key, payload={})
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.CANCELLED
    assert rt.cancel_run(run_id, reason="again").error == "user gave up"  # terminal: unchanged
    assert rt_backend.fingerprint(run_id) == before


def test_cancel_default_reason_and_terminal_runs(rt_backend: "Backend") -> None:
    wf = _two_questions()
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    state = rt.cancel_run(run_id)
    assert state.status is RunStatus.CANCELLED and state.error  # a default reason
    done = WorkflowSpec("d", "n", {"n": lambda run, ctx: StepPlan(node_id="n", complete_output={"x": 1})})
    done_id = rt.start(workflow=done)
    rt.tick(workflow=done, run_id=done_id)
    before = rt_backend.fingerprint(done_id)
    state = rt.cancel_run(done_id, reason="too late")
    assert state.status is RunStatus.COMPLETED and state.error is None
    assert rt_backend.fingerprint(done_id) == before


# -- workflow drift ------------------------------------------------------------------------


def test_drift_is_refused_naming_both_hashes(rt_backend: "Backend") -> None:
    old_sha, new_sha = "a" * 64, "b" * 64
    base = _two_questions()
    old = base.with_source(WorkflowSource("flows/two.py", old_sha))
    new = base.with_source(WorkflowSource("flows/two.py", new_sha))
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=old)
    key = rt.tick(workflow=old, run_id=run_id).waiting.wait_key

    before = rt_backend.fingerprint(run_id)
    for call in (lambda: rt.tick(workflow=new, run_id=run_id),
                 lambda: rt.resume(workflow=new, run_id=run_id, wait_key=key, payload={"x": 1})):
        with pytest.raises(WorkflowDriftError) as info:
            call()
        assert old_sha in str(info.value) and new_sha in str(info.value)
        assert "allow_drift" in str(info.value) and info.value.code == "workflow_drift"
    assert rt_backend.fingerprint(run_id) == before

    state = rt.resume(workflow=new, run_id=run_id, wait_key=key, payload={"x": 1}, allow_drift=True)
    assert state.status is RunStatus.WAITING
    drift = [r for r in rt.get_ledger(run_id) if (r["result"] or {}).get("workflow_drift")]
    assert len(drift) == 1 and drift[0]["result"]["workflow_drift"] == {"from": old_sha, "to": new_sha}
    # The run now records the new source: the new code is accepted, the old one refused.
    assert rt.tick(workflow=new, run_id=run_id).status is RunStatus.WAITING
    with pytest.raises(WorkflowDriftError):
        rt.tick(workflow=old, run_id=run_id)


def test_same_source_is_not_drift(rt_backend: "Backend") -> None:
    wf = _two_questions().with_source(WorkflowSource("two.py", "c" * 64))
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    # A spec without a recorded source (plain Python use) is not checked.
    assert rt.tick(workflow=_two_questions(), run_id=run_id).status is RunStatus.WAITING


# -- size limit ----------------------------------------------------------------------------


def test_oversized_resume_payload_is_refused_and_writes_nothing(rt_backend: "Backend") -> None:
    wf = ask({"prompt": "Upload?", "wait_key": "k"})
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(PayloadTooLargeError) as info:
        rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"blob": "x" * MAX_RECORD_BYTES})
    assert isinstance(info.value, ValueError) and "artifact" in str(info.value)
    assert info.value.code == "payload_too_large"
    assert rt_backend.fingerprint(run_id) == before
    assert rt.get_state(run_id).status is RunStatus.WAITING


def test_oversized_start_vars_create_no_run(rt_backend: "Backend") -> None:
    wf = _two_questions()
    rt = rt_backend.runtime()
    with pytest.raises(PayloadTooLargeError):
        rt.start(workflow=wf, vars={"blob": "x" * MAX_RECORD_BYTES}, run_id="big")
    assert rt_backend.runs.load("big") is None and rt_backend.ledger.list("big") == []


def test_oversized_effect_record_fails_the_run_once(rt_backend: "Backend") -> None:
    half = "y" * (MAX_RECORD_BYTES // 2 + 1024)
    calls = []

    def echo(run: RunState, effect: Effect) -> EffectOutcome:
        calls.append(1)
        return EffectOutcome.completed({"echo": effect.payload["data"]})

    wf = effect_then_done(Effect(type=EffectType.LLM_CALL, payload={"data": half}, result_key="r"))
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: echo})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "limit" in state.error
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.FAILED
    assert calls == [1]


# -- redaction -----------------------------------------------------------------------------


def test_secrets_are_redacted_from_the_ledger(rt_backend: "Backend") -> None:
    seen: list[dict[str, Any]] = []

    def llm(run: RunState, effect: Effect) -> EffectOutcome:
        seen.append(effect.payload)
        return EffectOutcome.completed({"text": "ok", "access_token": "SECRET-RESULT-3"})

    def call(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="call", effect=Effect(type=EffectType.LLM_CALL, result_key="llm", payload={
            "prompt": "hello", "api_key": "SECRET-KEY-1",
            "headers": {"Authorization": "Bearer SECRET-HEADER-2", "Accept": "text/plain"}}), next_node="wait")

    def wait(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="wait", effect=Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": "login"},
                                                      result_key="login"), next_node="end")

    wf = WorkflowSpec("wf", "call", {"call": call, "wait": wait,
                                     "end": lambda run, ctx: StepPlan(node_id="end", complete_output={"ok": True})})
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    run_id = rt.start(workflow=wf, vars={"user": "ada", "password": "SECRET-VAR-4"})
    rt.tick(workflow=wf, run_id=run_id)
    rt.resume(workflow=wf, run_id=run_id, wait_key="login", payload={"user": "ada", "client_secret": "SECRET-5"})

    # The handler got the real values; the ledger never holds them.
    assert seen[0]["api_key"] == "SECRET-KEY-1"
    assert seen[0]["headers"]["Authorization"] == "Bearer SECRET-HEADER-2"
    ledger = rt.get_ledger(run_id)
    text = json.dumps(ledger)
    assert "SECRET" not in text
    if rt_backend.files:
        assert b"SECRET" not in (rt_backend.root / "runs" / run_id / "ledger.jsonl").read_bytes()
    effect = next(r for r in ledger if r["effect"] and r["effect"]["type"] == "llm_call")["effect"]
    assert effect["payload"]["api_key"] == "[REDACTED]" and effect["payload"]["prompt"] == "hello"
    assert effect["payload"]["headers"] == {"Authorization": "[REDACTED]", "Accept": "text/plain"}
    completed = next(r for r in ledger if r["status"] == "completed" and r["effect"])
    assert completed["result"] == {"text": "ok", "access_token": "[REDACTED]"}
    assert verify_ledger_chain(ledger)["ok"] is rt_backend.chained
