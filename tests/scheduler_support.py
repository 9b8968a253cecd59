"""Workflows, stores and helpers shared by the scheduler tests (the fixtures are imported as such)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core.clock import FixedClock, to_iso
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import ScheduledRuntime, WorkflowRegistry, create_scheduled_runtime
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "scheduler.md"


# --------------------------------------------------------------------------- workflows


def done_with(key: str) -> Callable[[RunState, Any], StepPlan]:
    return lambda run, ctx: StepPlan("done", complete_output={key: run.vars.get(key)})


def timer_workflow(workflow_id: str = "timer") -> WorkflowSpec:
    """Waits until ``vars["until"]``, then completes with ``{"woke": True}``."""

    def wait(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}), next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"woke": True})

    return WorkflowSpec(workflow_id, "wait", {"wait": wait, "done": done})


def ask_workflow(workflow_id: str = "ask", wait_key: Optional[str] = "q1") -> WorkflowSpec:
    """Asks a question; completes with the answer payload."""

    def ask(run: RunState, ctx: Any) -> StepPlan:
        payload: dict[str, Any] = {"prompt": "Name?"}
        if wait_key is not None:
            payload["wait_key"] = wait_key
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, payload, result_key="answer"), next_node="done")

    return WorkflowSpec(workflow_id, "ask", {"ask": ask, "done": done_with("answer")})


def event_workflow(workflow_id: str = "event") -> WorkflowSpec:
    """Waits on the event ``"evt:go"``; completes with the event payload."""

    def wait(run: RunState, ctx: Any) -> StepPlan:
        effect = Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:go"}, result_key="event")
        return StepPlan("wait", effect=effect, next_node="done")

    return WorkflowSpec(workflow_id, "wait", {"wait": wait, "done": done_with("event")})


def parent_workflow(
    child_id: str, *, async_: bool = False, then_wait: bool = False, wf_id: str = "parent"
) -> WorkflowSpec:
    """Starts ``child_id`` as a subworkflow; optionally then waits on an event."""

    def call(run: RunState, ctx: Any) -> StepPlan:
        payload: dict[str, Any] = {"workflow_id": child_id, "vars": {"from": run.run_id}}
        if async_:
            payload["async"] = True
        effect = Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child")
        return StepPlan("call", effect=effect, next_node="hold" if then_wait else "done")

    def hold(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("hold", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "hold"}), next_node="done")

    return WorkflowSpec(wf_id, "call", {"call": call, "hold": hold, "done": done_with("child")})


# --------------------------------------------------------------------------- stores


@pytest.fixture(params=["memory", "files"])
def make_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], tuple[Any, Any]]:
    """A factory of (run_store, ledger_store); file stores reopen the same directory."""

    def factory() -> tuple[Any, Any]:
        if request.param == "memory":
            if not hasattr(factory, "pair"):
                factory.pair = (InMemoryRunStore(), InMemoryLedgerStore())  # type: ignore[attr-defined]
            return factory.pair  # type: ignore[attr-defined]
        base = tmp_path / "store"
        return JsonFileRunStore(base, durability="none"), JsonlLedgerStore(base, durability="none")

    return factory


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def make_runtime(stores: tuple[Any, Any], clock: Any, registry: Optional[WorkflowRegistry] = None) -> Runtime:
    run_store, ledger_store = stores
    return Runtime(run_store=run_store, ledger_store=ledger_store, workflow_registry=registry, clock=clock)


def start_timer(runtime: Runtime, wf: WorkflowSpec, until: datetime) -> str:
    run_id = runtime.start(workflow=wf, vars={"until": to_iso(until)})
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason == WaitReason.UNTIL
    return run_id


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "abstractruntime-scheduler"]


def scheduled_runtime(make_stores: Callable[[], tuple[Any, Any]], clock: Any, **kwargs: Any) -> ScheduledRuntime:
    run_store, ledger_store = make_stores()
    kwargs.setdefault("auto_start", False)
    return create_scheduled_runtime(run_store=run_store, ledger_store=ledger_store, clock=clock, **kwargs)
