"""The scheduler's background thread and ScheduledRuntime (create_scheduled_runtime)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.clock import FixedClock, to_iso, utc_now
from abstractruntime.core.errors import (
    RunNotWaitingError,
    RunStateError,
    WaitKeyMismatchError,
)
from abstractruntime.core.models import RunStatus, WaitReason
from abstractruntime.scheduler import (
    ScheduledRuntime,
    Scheduler,
    WorkflowRegistry,
    create_scheduled_runtime,
)
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

from scheduler_support import scheduled_runtime, T0, timer_workflow, ask_workflow, event_workflow, make_runtime, start_timer, wait_for, scheduler_threads
from scheduler_support import make_stores, clock  # noqa: F401 - pytest fixtures


# --------------------------------------------------------------------------- the background thread


def test_background_thread_really_resumes_due_runs(make_stores: Callable[[], tuple[Any, Any]]) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = make_runtime(make_stores(), None, registry)  # the real clock
    resumed = threading.Event()
    scheduler = Scheduler(
        runtime=runtime, registry=registry, poll_interval_s=0.05, on_run_resumed=lambda s: resumed.set()
    )
    run_id = start_timer(runtime, wf, utc_now() + timedelta(seconds=0.4))
    scheduler.start()
    try:
        assert resumed.wait(timeout=5.0), "the scheduler thread did not resume the run"
        assert wait_for(lambda: runtime.get_state(run_id).status == RunStatus.COMPLETED)
        assert runtime.get_state(run_id).output == {"woke": True}
        assert scheduler.stats.runs_resumed == 1 and scheduler.stats.poll_cycles >= 1
    finally:
        scheduler.stop()
    assert scheduler_threads() == []


def test_resume_event_errors_and_success(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = event_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = make_runtime(make_stores(), clock, registry)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.waiting is not None and state.waiting.wait_key == "evt:go"

    with pytest.raises(ValueError, match="wait_key mismatch") as mismatch:
        scheduler.resume_event(run_id=run_id, wait_key="evt:other", payload={"x": 1})
    assert isinstance(mismatch.value, WaitKeyMismatchError)
    assert runtime.get_state(run_id).status == RunStatus.WAITING

    waiting = scheduler.find_waiting_runs(wait_reason=WaitReason.EVENT)
    assert [r.run_id for r in waiting] == [run_id]
    assert scheduler.find_waiting_runs(wait_reason=WaitReason.USER) == []
    assert scheduler.find_waiting_runs(workflow_id="other") == []

    state = scheduler.resume_event(run_id=run_id, wait_key="evt:go", payload={"x": 1})
    assert state.status == RunStatus.COMPLETED and state.output == {"event": {"x": 1}}
    with pytest.raises(ValueError, match="not waiting") as again:
        scheduler.resume_event(run_id=run_id, wait_key="evt:go", payload={"x": 2})
    assert isinstance(again.value, RunNotWaitingError)
    with pytest.raises(KeyError):
        scheduler.resume_event(run_id="no-such-run", wait_key="evt:go", payload={})


def test_resume_event_needs_the_workflow_registered(clock: FixedClock) -> None:
    wf = event_workflow()
    runtime = make_runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock)
    scheduler = Scheduler(runtime=runtime, registry=WorkflowRegistry())
    run_id = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=run_id)
    with pytest.raises(KeyError, match="not registered"):
        scheduler.resume_event(run_id=run_id, wait_key="evt:go", payload={})


# --------------------------------------------------------------------------- ScheduledRuntime




def test_create_scheduled_runtime_defaults_and_auto_start() -> None:
    sr = create_scheduled_runtime(poll_interval_s=0.02)
    try:
        assert isinstance(sr, ScheduledRuntime) and sr.is_running
        assert isinstance(sr.runtime.run_store, InMemoryRunStore)
        assert isinstance(sr.runtime.ledger_store, InMemoryLedgerStore)
        assert sr.runtime.workflow_registry is sr.registry and sr.scheduler.registry is sr.registry
        assert sr.stats is sr.scheduler.stats
    finally:
        assert sr.stop() is True
    assert not sr.is_running and scheduler_threads() == []
    sr.stop()
    sr.start_scheduler()
    sr.start_scheduler()  # already running: no error
    assert sr.is_running
    with sr:
        pass
    assert not sr.is_running


def test_run_respond_and_ledger(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = ask_workflow(wait_key=None)  # the runtime generates the wait_key
    sr = scheduled_runtime(make_stores, clock)
    run_id, state = sr.run(wf, vars={"k": 1})
    assert "ask" in sr.registry  # auto-registered
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason == WaitReason.USER and state.waiting.prompt == "Name?"
    assert [r.run_id for r in sr.find_waiting_runs()] == [run_id]
    assert [r.run_id for r in sr.find_waiting_runs(wait_reason=WaitReason.USER, workflow_id="ask")] == [run_id]

    state = sr.respond(run_id, {"text": "Ada"})
    assert state.status == RunStatus.COMPLETED and state.output == {"answer": {"text": "Ada"}}
    assert sr.get_state(run_id).status == RunStatus.COMPLETED
    assert sr.find_waiting_runs() == []
    ledger = sr.get_ledger(run_id)
    assert ledger and all(isinstance(r, dict) for r in ledger)
    with pytest.raises(ValueError, match="not waiting"):
        sr.respond(run_id, {"text": "again"})


def test_respond_refuses_a_wait_without_key(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    sr = scheduled_runtime(make_stores, clock)
    run_id, state = sr.run(timer_workflow(), vars={"until": to_iso(T0 + timedelta(minutes=1))})
    assert state.status == RunStatus.WAITING and state.waiting is not None
    keyless = sr.get_state(run_id)
    assert keyless.waiting is not None
    keyless.waiting.wait_key = None  # a timer needs no key; make sure of it
    sr.runtime.run_store.save(keyless)
    with pytest.raises(RunStateError, match="wait_key"):
        sr.respond(run_id, {})
    clock.advance(seconds=60)
    assert [s.run_id for s in sr.tick_due()] == [run_id]
    assert sr.get_state(run_id).status == RunStatus.COMPLETED


def test_start_tick_resume_event(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = event_workflow()
    sr = scheduled_runtime(make_stores, clock)
    run_id = sr.start(workflow=wf, vars={"a": 1})
    assert "event" in sr.registry
    assert sr.get_state(run_id).status == RunStatus.RUNNING  # start does not tick
    state = sr.tick(run_id)
    assert state.status == RunStatus.WAITING and state.waiting is not None
    with pytest.raises(ValueError, match="wait_key mismatch"):
        sr.resume_event(run_id=run_id, wait_key="wrong", payload={})
    state = sr.resume_event(run_id=run_id, wait_key="evt:go", payload={"ok": True})
    assert state.status == RunStatus.COMPLETED and state.output == {"event": {"ok": True}}

    sr.registry.unregister("event")
    other = sr.runtime.start(workflow=wf)
    with pytest.raises(KeyError, match="not registered"):
        sr.tick(other)


def test_timers_survive_a_restart_on_file_stores(tmp_path: Path, clock: FixedClock) -> None:
    base = tmp_path / "store"
    wf = timer_workflow()

    def open_sr() -> ScheduledRuntime:
        return create_scheduled_runtime(
            run_store=JsonFileRunStore(base, durability="none"),
            ledger_store=JsonlLedgerStore(base, durability="none"),
            workflows=[wf],
            clock=clock,
            auto_start=False,
        )

    first = open_sr()
    run_id, state = first.run(wf, vars={"until": to_iso(T0 + timedelta(hours=2))})
    assert state.status == RunStatus.WAITING
    del first  # the process "exits"

    clock.advance(seconds=7200)
    second = open_sr()
    assert second.scheduler.poll_once() == 1
    assert second.get_state(run_id).status == RunStatus.COMPLETED


def test_scheduled_runtime_background_thread_with_real_clock(make_stores: Callable[[], tuple[Any, Any]]) -> None:
    wf = timer_workflow()
    sr = scheduled_runtime(make_stores, None, workflows=[wf], poll_interval_s=0.05, auto_start=True)
    try:
        run_id, state = sr.run(wf, vars={"until": to_iso(utc_now() + timedelta(seconds=0.4))})
        assert state.status == RunStatus.WAITING
        # Stats are counted just after the tick returns: wait for both.
        assert wait_for(lambda: sr.stats.runs_resumed == 1)
        assert sr.get_state(run_id).status == RunStatus.COMPLETED
    finally:
        sr.stop()
