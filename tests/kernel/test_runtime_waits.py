"""The runtime's waits: ask_user, wait_event, wait_job and wait_until (with an injected clock).

Most tests run twice, over the in-memory stores and over the file stores (``rt_backend``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from abstractruntime.core.clock import FixedClock, parse_iso
from abstractruntime.core.errors import (
    InvalidAnswerError,
    WaitKeyMismatchError,
)
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.spec import WorkflowSpec

from runtime_support import effect_then_done, ask

if TYPE_CHECKING:
    from conftest import Backend


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
    for bad in ({"answer": "maybe"}, {"answer": "yess"}, {"reply": "yes"}, {}):
        with pytest.raises(InvalidAnswerError) as info:
            rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload=bad)
        assert isinstance(info.value, ValueError) and "yes" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before
    assert rt.get_state(run_id).status is RunStatus.WAITING
    state = rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"answer": "no"})
    assert state.status is RunStatus.COMPLETED and state.output["vars"]["answer"] == {"answer": "no"}


@pytest.mark.parametrize(("choices", "free", "given", "recorded"), [
    (["yes", "no"], False, "YES", "yes"),
    (["yes", "no"], False, "Y", "yes"),
    (["yes", "no"], False, " n ", "no"),
    (["yes", "no"], True, "Yes", "yes"),   # a whole choice in any case is that choice
    (["yes", "no"], True, "y", "y"),       # free text: a short answer stays the answer given
    (["no", "none"], True, "nothing", "nothing"),
])
def test_an_answer_picks_its_choice_by_one_rule(rt_backend: "Backend", choices: list[str], free: bool, given: str,
                                                recorded: str) -> None:
    # The rule the prompt uses is the kernel's: resume, emit and the prompt record the same choice.
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Ship?", "choices": choices, "allow_free_text": free, "wait_key": "k"})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    state = rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"answer": given})
    assert state.output["vars"]["answer"] == {"answer": recorded}
    resumed = [r for r in rt.get_ledger(run_id) if r["kind"] == "resume"]
    assert resumed[-1]["result"]["payload"] == {"answer": recorded}


def test_an_answer_that_could_be_two_choices_is_refused(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = ask({"prompt": "Which?", "choices": ["no", "none"], "allow_free_text": False, "wait_key": "k"})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    with pytest.raises(InvalidAnswerError):
        rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"answer": "n"})


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
