"""A run whose writer stopped between its ledger append and its checkpoint is found and finished.

The writer is stopped by making its checkpoint write fail (what a kill at that instant leaves:
the records durable, the row as it was). Whatever the row says, queries show the run as its
ledger says, and the next worker pass finishes it — one at a time or N at a time, on a folder
store and on PostgreSQL (tests/reliability/stuck.py kills real processes at every step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.events import emit_event


class Killed(BaseException):
    """Stands for the process dying at that instant (nothing after it runs)."""


def _flow() -> WorkflowSpec:
    return WorkflowSpec("ahead", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="work", effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go:" + run.run_id}, "go")),
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"go": run.vars["go"]}),
    })


@pytest.fixture(params=["folder", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from abstractruntime import open_store

    if request.param == "folder":
        made = open_store(tmp_path / "store", durability="none")
    else:
        import uuid

        from abstractruntime.storage.postgres.store import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_url"), schema=f"t_{uuid.uuid4().hex[:16]}")
    yield made
    made.close()


def _setup(store: Any) -> tuple[Any, Scheduler, WorkflowSpec, list[str]]:
    calls: list[str] = []

    def tool(run: RunState, effect: Any) -> Any:
        calls.append(run.run_id)
        return EffectOutcome.completed({"ok": True})

    runtime = store.runtime(clock=FixedClock("2030-01-01T00:00:00+00:00"), effect_handlers={EffectType.TOOL_CALLS: tool})
    registry = WorkflowRegistry()
    flow = _flow()
    registry.register(flow)
    return runtime, Scheduler(runtime=runtime, registry=registry), flow, calls


def _killed_at_checkpoint(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(*args: Any, **kwargs: Any) -> None:
        raise Killed()

    monkeypatch.setattr(type(store.runs), "save_checkpoint", dies)


def _listed(store: Any, run_id: str) -> str:
    return next(r.status.value for r in store.runs.list_runs(limit=1000) if r.run_id == run_id)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_hand_off_killed_before_its_checkpoint_is_finished_by_the_next_pass(
        store: Any, monkeypatch: pytest.MonkeyPatch, concurrency: int) -> None:
    runtime, scheduler, flow, calls = _setup(store)
    run_id = runtime.start(workflow=flow, run_id="r1")
    assert runtime.tick(workflow=flow, run_id=run_id).status is RunStatus.WAITING
    with monkeypatch.context() as patch:
        _killed_at_checkpoint(store, patch)
        with pytest.raises(Killed):
            emit_event(store.runs, "go:r1", {"ok": 1}, resolve=lambda run: (flow, runtime), hand_off=True)
    # The answer is durable; the row still says waiting.
    assert runtime.get_state(run_id).status is RunStatus.RUNNING
    assert _listed(store, run_id) == "running"  # shown as the ledger says
    assert run_id in store.runs.list_ahead(limit=10)
    advanced = scheduler.work_pass(concurrency=concurrency)
    assert [s.run_id for s in advanced] == [run_id]
    assert runtime.get_state(run_id).status is RunStatus.COMPLETED and calls == [run_id]
    assert store.runs.list_ahead(limit=10) == []
    assert _listed(store, run_id) == "completed"


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_run_whose_writer_died_after_its_last_record_is_shown_finished_and_settled(
        store: Any, monkeypatch: pytest.MonkeyPatch, concurrency: int) -> None:
    runtime, scheduler, flow, calls = _setup(store)
    run_id = runtime.start(workflow=flow, run_id="r2")
    runtime.tick(workflow=flow, run_id=run_id)
    runtime.resume(workflow=flow, run_id=run_id, wait_key="go:r2", payload={"ok": 2}, max_steps=0)
    assert _listed(store, run_id) == "running"
    with monkeypatch.context() as patch:
        _killed_at_checkpoint(store, patch)
        with pytest.raises(Killed):
            runtime.tick(workflow=flow, run_id=run_id)  # the run completes in the ledger, not in its row
    assert runtime.get_state(run_id).status is RunStatus.COMPLETED
    assert _listed(store, run_id) == "completed"
    scheduler.work_pass(concurrency=concurrency)
    assert store.runs.list_ahead(limit=10) == []
    assert store.runs.list_runs(status=RunStatus.RUNNING, as_stored=True) == []  # the row says so too now
    assert calls == [run_id]  # nothing ran twice
    assert scheduler.work_pass(concurrency=concurrency) == []  # and nothing is left to claim


def test_a_run_marked_but_never_appended_to_is_cleared(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, scheduler, flow, calls = _setup(store)
    run_id = runtime.start(workflow=flow, run_id="r3")
    runtime.tick(workflow=flow, run_id=run_id)
    ledger = type(store.ledger)
    with monkeypatch.context() as patch:
        def dies(*args: Any, **kwargs: Any) -> None:
            raise Killed()

        patch.setattr(ledger, "append_lines", dies)
        with pytest.raises(Killed):
            runtime.resume(workflow=flow, run_id=run_id, wait_key="go:r3", payload={"ok": 3})
    assert runtime.get_state(run_id).status is RunStatus.WAITING
    scheduler.work_pass()
    assert store.runs.list_ahead(limit=10) == []
    assert _listed(store, run_id) == "waiting"


def test_a_run_whose_creator_was_killed_before_its_first_checkpoint_is_found(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime import open_store

    store = open_store(tmp_path / "store", durability="none")
    runtime, scheduler, flow, calls = _setup(store)
    store.runs.list_runs()  # the index exists and knows the runs directory as it is
    with monkeypatch.context() as patch:
        _killed_at_checkpoint(store, patch)
        with pytest.raises(Killed):
            runtime.start(workflow=flow, run_id="new")
    fresh = open_store(tmp_path / "store", durability="none")  # another process
    assert "new" in fresh.runs.list_ahead(limit=10)
    assert _listed(fresh, "new") == "running"
    fresh_runtime, fresh_scheduler, _, _ = _setup(fresh)
    fresh_scheduler.work_pass()
    assert fresh_runtime.get_state("new").status is RunStatus.WAITING
    assert fresh.runs.list_ahead(limit=10) == [] and _listed(fresh, "new") == "waiting"
    fresh.close()
    store.close()
