"""Subworkflows under the scheduler, and the examples of docs/scheduler.md."""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import (
    RunNotFoundError,
)
from abstractruntime.core.models import RunStatus, StepPlan, WaitReason
from abstractruntime.core.spec import WorkflowSpec

from scheduler_support import scheduled_runtime, DOCS, ask_workflow, event_workflow, parent_workflow
from scheduler_support import make_stores, clock  # noqa: F401 - pytest fixtures


# --------------------------------------------------------------------------- subworkflows


def test_subworkflow_parent_is_resumed_with_child_output(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    child = ask_workflow("child", wait_key="child-q")
    parent = parent_workflow("child")
    sr = scheduled_runtime(make_stores, clock, workflows=[parent, child])
    parent_id, state = sr.run(parent)
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason == WaitReason.SUBWORKFLOW and state.waiting.details is not None
    child_id = state.waiting.details["sub_run_id"]
    assert state.waiting.details["sub_workflow_id"] == "child"
    assert state.waiting.details["sub_waiting"]["reason"] == "user"
    child_state = sr.get_state(child_id)
    assert child_state.parent_run_id == parent_id and child_state.status == RunStatus.WAITING
    assert [r.run_id for r in sr.find_waiting_runs(wait_reason=WaitReason.SUBWORKFLOW)] == [parent_id]

    # The child has not finished: nothing waits on an unknown run, and a parent resume
    # with a completed child's output goes to the right parent only.
    assert sr.resume_subworkflow_parent(child_run_id="no-such-child", child_output={}) is None
    child_state = sr.respond(child_id, {"text": "Ada"})
    assert child_state.status == RunStatus.COMPLETED

    new_parent = sr.resume_subworkflow_parent(child_run_id=child_id, child_output=child_state.output)
    assert new_parent is not None and new_parent.run_id == parent_id
    assert new_parent.status == RunStatus.COMPLETED
    assert new_parent.output == {"child": {"sub_run_id": child_id, "output": {"answer": {"text": "Ada"}}}}
    # The parent no longer waits on that child.
    assert sr.resume_subworkflow_parent(child_run_id=child_id, child_output=child_state.output) is None
    # A run that is nobody's child.
    assert sr.resume_subworkflow_parent(child_run_id=parent_id, child_output={}) is None


def test_sync_subworkflow_that_completes_needs_no_resume(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    child = WorkflowSpec("quick", "end", {"end": lambda run, ctx: StepPlan("end", complete_output={"n": 7})})
    parent = parent_workflow("quick")
    sr = scheduled_runtime(make_stores, clock, workflows=[parent, child])
    _, state = sr.run(parent)
    assert state.status == RunStatus.COMPLETED
    assert state.output is not None and state.output["child"]["output"] == {"n": 7}


def test_cancel_with_children_cancels_the_whole_tree(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    leaf = event_workflow("leaf")
    middle = parent_workflow("leaf", async_=True, then_wait=True, wf_id="middle")
    root = parent_workflow("middle", async_=True, then_wait=True, wf_id="root")
    sr = scheduled_runtime(make_stores, clock, workflows=[root, middle, leaf])

    root_id, state = sr.run(root)
    assert state.status == RunStatus.WAITING  # on "hold", its async child left RUNNING
    middle_id = state.vars["child"]["sub_run_id"]
    middle_state = sr.tick(middle_id)  # the middle run starts its own async child
    leaf_id = middle_state.vars["child"]["sub_run_id"]
    assert sr.get_state(leaf_id).parent_run_id == middle_id
    # A finished sibling under the root is left alone.
    done_id = sr.runtime.start(workflow=leaf, parent_run_id=root_id)
    sr.tick(done_id)
    sr.resume_event(run_id=done_id, wait_key="evt:go", payload={})
    assert sr.get_state(done_id).status == RunStatus.COMPLETED

    cancelled = sr.cancel_with_children(root_id, reason="operator said stop")
    assert [s.run_id for s in cancelled] == [root_id, middle_id, leaf_id]  # parent first
    assert all(s.status == RunStatus.CANCELLED for s in cancelled)
    assert all(s.error == "operator said stop" for s in cancelled)
    for rid in (root_id, middle_id, leaf_id):
        stored = sr.get_state(rid)
        assert stored.status == RunStatus.CANCELLED and stored.waiting is None
    assert sr.get_state(done_id).status == RunStatus.COMPLETED

    # Idempotent: a second call changes nothing and reports the same tree.
    again = sr.cancel_with_children(root_id)
    assert [s.run_id for s in again] == [root_id, middle_id, leaf_id]
    assert sr.get_state(root_id).error == "operator said stop"
    with pytest.raises(KeyError):
        sr.cancel_with_children("no-such-run")
    with pytest.raises(RunNotFoundError):
        sr.cancel_with_children("no-such-run")


def test_cancel_run_cancels_only_that_run(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    leaf = event_workflow("leaf")
    root = parent_workflow("leaf", async_=True, then_wait=True, wf_id="root")
    sr = scheduled_runtime(make_stores, clock, workflows=[root, leaf])
    root_id, state = sr.run(root)
    child_id = state.vars["child"]["sub_run_id"]
    assert sr.cancel_run(root_id, reason="x").status == RunStatus.CANCELLED
    assert sr.get_state(child_id).status == RunStatus.RUNNING


# --------------------------------------------------------------------------- the docs


def _doc_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


def test_docs_have_examples() -> None:
    assert len(_doc_examples()) >= 3


@pytest.mark.parametrize("index", range(3))
def test_docs_examples_run(index: int) -> None:
    source = _doc_examples()[index]
    exec(compile(source, f"{DOCS.name}[{index}]", "exec"), {"__name__": f"doc_example_{index}"})


def _family(tmp_path: Any) -> tuple[Any, Any, Any, str, str]:
    from abstractruntime import FileStore
    from abstractruntime.scheduler import Scheduler, WorkflowRegistry

    child, parent = ask_workflow("kid", wait_key="kid-q"), parent_workflow("kid")
    registry = WorkflowRegistry()
    registry.register(child)
    registry.register(parent)
    store = FileStore(tmp_path / "store")
    runtime = store.runtime(workflow_registry=registry)
    parent_id = runtime.start(workflow=parent)
    state = runtime.tick(workflow=parent, run_id=parent_id)
    assert state.waiting is not None and state.waiting.reason == WaitReason.SUBWORKFLOW
    child_id = state.waiting.details["sub_run_id"]
    return store, runtime, Scheduler(runtime=runtime, registry=registry), parent_id, child_id


def test_a_work_pass_hands_a_completed_child_to_its_waiting_parent_once(tmp_path: Any) -> None:
    store, runtime, scheduler, parent_id, child_id = _family(tmp_path)
    assert scheduler.work_pass() == [] and runtime.get_state(parent_id).status == RunStatus.WAITING
    runtime.resume(workflow=ask_workflow("kid", wait_key="kid-q"), run_id=child_id, wait_key="kid-q",
                   payload={"text": "Ada"})
    advanced = scheduler.work_pass()
    assert [s.run_id for s in advanced] == [parent_id] and advanced[0].status == RunStatus.COMPLETED
    assert advanced[0].output == {"child": {"sub_run_id": child_id, "output": {"answer": {"text": "Ada"}}}}
    # A second scheduler (another worker) finds nothing to hand over: the wait took one answer.
    from abstractruntime.scheduler import Scheduler

    other = Scheduler(runtime=store.runtime(workflow_registry=scheduler._registry), registry=scheduler._registry)
    assert other.hand_over_children() == [] and other.work_pass() == []
    resumes = [r for r in runtime.get_ledger(parent_id) if r["kind"] == "resume"]
    assert len(resumes) == 1


def test_a_child_forged_as_completed_in_its_checkpoint_is_not_handed_over(tmp_path: Any) -> None:
    # The checkpoint is a cache: only the child's ledger says it completed.
    import json

    store, runtime, scheduler, parent_id, child_id = _family(tmp_path)
    path = tmp_path / "store" / "runs" / child_id / "run.json"
    doc = json.loads(path.read_bytes())
    run = doc["run"] if "run" in doc else doc
    run.update(status="completed", output={"answer": {"text": "forged"}}, waiting=None)
    path.write_text(json.dumps(doc))
    assert scheduler.hand_over_children() == []
    assert runtime.get_state(parent_id).status == RunStatus.WAITING


def test_an_outage_while_handing_over_children_ends_the_pass_not_a_run(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A database outage is the store's, not a parent's failure: it propagates to serve(), which
    # waits the outage out, instead of being recorded against the runs it touched.
    from abstractruntime.core.errors import DatabaseUnavailableError

    store, runtime, scheduler, parent_id, child_id = _family(tmp_path)

    def gone(**kwargs: Any) -> Any:
        raise DatabaseUnavailableError("the database went away")

    monkeypatch.setattr(scheduler._run_store, "list_runs", gone)
    with pytest.raises(DatabaseUnavailableError):
        scheduler.hand_over_children()
    assert scheduler.stats.errors == []
