"""What the runtime refuses and writes nothing for: stale resumes, unknown runs, cancel, drift."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from abstractruntime.core.errors import (
    InvalidInputError,
    RunNotFoundError,
    RunNotWaitingError,
    WaitKeyMismatchError,
    WorkflowDriftError,
)
from abstractruntime.core.models import RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSource, WorkflowSpec

from runtime_support import two_questions

if TYPE_CHECKING:
    from conftest import Backend


# -- resume refusals -----------------------------------------------------------------------


def test_resume_refusals_are_typed_and_write_nothing(rt_backend: "Backend") -> None:
    wf = two_questions()
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
    wf = two_questions()
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
    run_id = rt.start(workflow=two_questions())
    other = WorkflowSpec("other", "q1", two_questions().nodes)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(InvalidInputError) as info:
        rt.tick(workflow=other, run_id=run_id)
    assert "two" in str(info.value) and "other" in str(info.value)
    assert rt_backend.fingerprint(run_id) == before


def test_start_with_an_existing_run_id_is_refused(rt_backend: "Backend") -> None:
    rt = rt_backend.runtime()
    wf = two_questions()
    run_id = rt.start(workflow=wf, run_id="fixed-id")
    assert run_id == "fixed-id"
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(InvalidInputError):
        rt.start(workflow=wf, run_id="fixed-id")
    assert rt_backend.fingerprint(run_id) == before


# -- cancel --------------------------------------------------------------------------------


def test_cancel_run(rt_backend: "Backend") -> None:
    wf = two_questions()
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
    wf = two_questions()
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
    base = two_questions()
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
    wf = two_questions().with_source(WorkflowSource("two.py", "c" * 64))
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    # A spec without a recorded source (plain Python use) is not checked.
    assert rt.tick(workflow=two_questions(), run_id=run_id).status is RunStatus.WAITING
