"""The scheduler package: registry, Scheduler, ScheduledRuntime — on memory and file stores."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.clock import FixedClock, to_iso, utc_now
from abstractruntime.core.errors import (
    InvalidInputError,
    RunNotFoundError,
    RunNotWaitingError,
    RunStateError,
    WaitKeyMismatchError,
)
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import (
    ScheduledRuntime,
    Scheduler,
    SchedulerStats,
    WorkflowNotRegisteredError,
    WorkflowRegistry,
    create_scheduled_runtime,
)
from abstractruntime.storage.base import RunStore
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "scheduler.md"


# --------------------------------------------------------------------------- workflows


def _done(key: str) -> Callable[[RunState, Any], StepPlan]:
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

    return WorkflowSpec(workflow_id, "ask", {"ask": ask, "done": _done("answer")})


def event_workflow(workflow_id: str = "event") -> WorkflowSpec:
    """Waits on the event ``"evt:go"``; completes with the event payload."""

    def wait(run: RunState, ctx: Any) -> StepPlan:
        effect = Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:go"}, result_key="event")
        return StepPlan("wait", effect=effect, next_node="done")

    return WorkflowSpec(workflow_id, "wait", {"wait": wait, "done": _done("event")})


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

    return WorkflowSpec(wf_id, "call", {"call": call, "hold": hold, "done": _done("child")})


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


def _runtime(stores: tuple[Any, Any], clock: Any, registry: Optional[WorkflowRegistry] = None) -> Runtime:
    run_store, ledger_store = stores
    return Runtime(run_store=run_store, ledger_store=ledger_store, workflow_registry=registry, clock=clock)


def _start_timer(runtime: Runtime, wf: WorkflowSpec, until: datetime) -> str:
    run_id = runtime.start(workflow=wf, vars={"until": to_iso(until)})
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason == WaitReason.UNTIL
    return run_id


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "abstractruntime-scheduler"]


# --------------------------------------------------------------------------- registry


def test_registry_register_get_list_contains() -> None:
    registry = WorkflowRegistry()
    a, b = timer_workflow("a"), ask_workflow("b")
    registry.register(a)
    registry.register(b)
    assert registry.get("a") is a and registry.get_or_raise("b") is b
    assert registry.get("zzz") is None
    assert registry.list_ids() == ["a", "b"] and list(registry) == ["a", "b"]
    assert "a" in registry and "zzz" not in registry and len(registry) == 2


def test_registry_duplicate_is_a_value_error() -> None:
    registry = WorkflowRegistry()
    registry.register(timer_workflow("a"))
    with pytest.raises(ValueError, match="already registered") as info:
        registry.register(timer_workflow("a"))
    assert isinstance(info.value, InvalidInputError)


def test_registry_unknown_ids_are_key_errors() -> None:
    registry = WorkflowRegistry()
    with pytest.raises(KeyError, match="not registered"):
        registry.unregister("nope")
    with pytest.raises(KeyError, match="not registered") as info:
        registry.get_or_raise("nope")
    assert isinstance(info.value, WorkflowNotRegisteredError)
    assert "'nope'" in str(info.value) and not str(info.value).startswith('"')


def test_registry_unregister_then_replace() -> None:
    registry = WorkflowRegistry()
    first, second = timer_workflow("a"), timer_workflow("a")
    registry.register(first)
    registry.unregister("a")
    assert "a" not in registry and registry.get("a") is None
    registry.register(second)
    assert registry.get("a") is second


def test_registry_rejects_non_workflows() -> None:
    with pytest.raises(ValueError, match="workflow_id"):
        WorkflowRegistry().register(object())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction


class _PlainRunStore(RunStore):
    """A run store that can save and load but not be queried."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}

    def save(self, run: RunState) -> None:
        self.runs[run.run_id] = run

    def load(self, run_id: str) -> Optional[RunState]:
        return self.runs.get(run_id)


def test_scheduler_requires_a_queryable_run_store() -> None:
    runtime = Runtime(run_store=_PlainRunStore(), ledger_store=InMemoryLedgerStore())
    with pytest.raises(TypeError, match="QueryableRunStore"):
        Scheduler(runtime=runtime, registry=WorkflowRegistry())


@pytest.mark.parametrize(
    "kwargs", [{"poll_interval_s": 0}, {"poll_interval_s": -1}, {"max_errors_kept": -1}, {"batch_size": 0}]
)
def test_scheduler_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    with pytest.raises(ValueError):
        Scheduler(runtime=runtime, registry=WorkflowRegistry(), **kwargs)


# --------------------------------------------------------------------------- start / stop


def test_start_stop_lifecycle_joins_the_thread() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    scheduler = Scheduler(runtime=runtime, registry=WorkflowRegistry(), poll_interval_s=0.02)
    assert scheduler.is_running is False
    assert scheduler.stop() is True  # stopping a scheduler never started is fine

    scheduler.start()
    assert scheduler.is_running is True
    assert len(_scheduler_threads()) == 1
    with pytest.raises(RuntimeError, match="already running"):
        scheduler.start()
    assert _wait_for(lambda: scheduler.stats.poll_cycles >= 2)

    assert scheduler.stop() is True
    assert scheduler.is_running is False
    assert _scheduler_threads() == []
    assert scheduler.stop() is True  # twice is safe
    cycles = scheduler.stats.poll_cycles
    time.sleep(0.1)
    assert scheduler.stats.poll_cycles == cycles  # nothing polls any more

    scheduler.start()  # restartable
    assert _wait_for(lambda: scheduler.stats.poll_cycles > cycles)
    scheduler.stop()
    assert _scheduler_threads() == []


def test_scheduler_as_context_manager() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    with Scheduler(runtime=runtime, registry=WorkflowRegistry(), poll_interval_s=0.02) as scheduler:
        assert scheduler.is_running
    assert not scheduler.is_running and _scheduler_threads() == []


# --------------------------------------------------------------------------- poll_once with a fixed clock


def test_poll_once_resumes_only_due_runs(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime(make_stores(), clock, registry)
    resumed: list[RunState] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=resumed.append)
    run_id = _start_timer(runtime, wf, T0 + timedelta(seconds=60))

    assert scheduler.poll_once() == 0
    assert runtime.get_state(run_id).status == RunStatus.WAITING
    assert scheduler.stats.poll_cycles == 1 and scheduler.stats.runs_resumed == 0
    assert scheduler.stats.last_poll_at is not None
    assert datetime.fromisoformat(scheduler.stats.last_poll_at) == T0

    clock.advance(seconds=60)
    assert scheduler.poll_once() == 1
    state = runtime.get_state(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"woke": True}
    assert [s.run_id for s in resumed] == [run_id] and resumed[0].status == RunStatus.COMPLETED
    stats = scheduler.stats
    assert isinstance(stats, SchedulerStats)
    assert (stats.poll_cycles, stats.runs_resumed, stats.runs_failed, stats.errors) == (2, 1, 0, [])
    assert datetime.fromisoformat(stats.last_poll_at or "") == T0 + timedelta(seconds=60)

    assert scheduler.poll_once() == 0  # completed runs are not due any more
    assert scheduler.stats.to_dict()["runs_resumed"] == 1


def test_tick_due_returns_states_in_until_order_and_honours_limit(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime(make_stores(), clock, registry)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    late = _start_timer(runtime, wf, T0 + timedelta(seconds=30))
    early = _start_timer(runtime, wf, T0 + timedelta(seconds=10))
    middle = _start_timer(runtime, wf, T0 + timedelta(seconds=20))
    never = _start_timer(runtime, wf, T0 + timedelta(hours=1))

    clock.advance(seconds=45)
    first = scheduler.tick_due(limit=2)
    assert [s.run_id for s in first] == [early, middle]
    assert all(s.status == RunStatus.COMPLETED for s in first)
    second = scheduler.tick_due(limit=2)
    assert [s.run_id for s in second] == [late]
    assert scheduler.tick_due() == []
    assert runtime.get_state(never).status == RunStatus.WAITING
    assert scheduler.stats.runs_resumed == 3 and scheduler.stats.poll_cycles == 0
    with pytest.raises(ValueError, match="limit"):
        scheduler.tick_due(limit=0)


def test_locked_run_is_skipped_not_an_error(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    stores = make_stores()
    runtime = _runtime(stores, clock, registry)
    failed: list[str] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_failed=lambda rid, exc: failed.append(rid))
    run_id = _start_timer(runtime, wf, T0 + timedelta(seconds=5))
    clock.advance(seconds=5)

    with stores[0].lock(run_id):  # another writer holds the run
        assert scheduler.poll_once() == 0
    assert runtime.get_state(run_id).status == RunStatus.WAITING
    stats = scheduler.stats
    assert (stats.runs_skipped_locked, stats.runs_failed, stats.errors, failed) == (1, 0, [], [])

    assert scheduler.poll_once() == 1  # lock released: the next round advances it
    assert runtime.get_state(run_id).status == RunStatus.COMPLETED


def test_unregistered_workflow_is_recorded_and_does_not_starve_others(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    orphan_wf, wf = timer_workflow("orphan"), timer_workflow("timer")
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime(make_stores(), clock)
    failures: list[tuple[str, BaseException]] = []
    scheduler = Scheduler(
        runtime=runtime,
        registry=registry,
        batch_size=1,
        max_errors_kept=2,
        on_run_failed=lambda rid, exc: failures.append((rid, exc)),
    )
    orphan = _start_timer(runtime, orphan_wf, T0 + timedelta(seconds=1))  # due first
    good = _start_timer(runtime, wf, T0 + timedelta(seconds=2))
    clock.advance(seconds=10)

    assert scheduler.poll_once() == 1  # looks past the orphan even with batch_size=1
    assert runtime.get_state(good).status == RunStatus.COMPLETED
    assert runtime.get_state(orphan).status == RunStatus.WAITING
    assert scheduler.stats.runs_failed == 1
    assert len(scheduler.stats.errors) == 1
    assert orphan in scheduler.stats.errors[0] and "not registered" in scheduler.stats.errors[0]
    assert failures[0][0] == orphan and isinstance(failures[0][1], KeyError)

    for _ in range(3):
        assert scheduler.poll_once() == 0
    assert scheduler.stats.runs_failed == 4
    assert len(scheduler.stats.errors) == 2  # bounded by max_errors_kept

    registry.register(orphan_wf)
    assert scheduler.poll_once() == 1
    assert runtime.get_state(orphan).status == RunStatus.COMPLETED


def test_failing_callbacks_are_recorded_not_raised(clock: FixedClock) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock, registry)

    def boom(state: RunState) -> None:
        raise RuntimeError("callback exploded")

    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=boom, max_errors_kept=0)
    run_id = _start_timer(runtime, wf, T0 + timedelta(seconds=1))
    clock.advance(seconds=1)
    assert scheduler.poll_once() == 1
    assert runtime.get_state(run_id).status == RunStatus.COMPLETED
    assert scheduler.stats.errors == []  # max_errors_kept=0 keeps none

    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=boom)
    _start_timer(runtime, wf, T0 + timedelta(seconds=2))
    clock.advance(seconds=1)
    assert scheduler.poll_once() == 1
    assert len(scheduler.stats.errors) == 1 and "callback exploded" in scheduler.stats.errors[0]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=600), min_size=1, max_size=6),
    now=st.integers(min_value=0, max_value=600),
)
def test_exactly_the_due_runs_are_resumed(offsets: list[int], now: int) -> None:
    clock = FixedClock(T0)
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock, registry)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    # Start each timer in the future relative to T0 so it really waits.
    runs = {_start_timer(runtime, wf, T0 + timedelta(seconds=off + 1)): off + 1 for off in offsets}
    clock.set(T0 + timedelta(seconds=now))
    advanced = scheduler.tick_due(limit=len(runs))
    expected_due = {rid for rid, off in runs.items() if off <= now}
    assert {s.run_id for s in advanced} == expected_due
    assert [runs[s.run_id] for s in advanced] == sorted(runs[s.run_id] for s in advanced)
    for rid, off in runs.items():
        status = runtime.get_state(rid).status
        assert status == (RunStatus.COMPLETED if off <= now else RunStatus.WAITING)


# --------------------------------------------------------------------------- the background thread


def test_background_thread_really_resumes_due_runs(make_stores: Callable[[], tuple[Any, Any]]) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime(make_stores(), None, registry)  # the real clock
    resumed = threading.Event()
    scheduler = Scheduler(
        runtime=runtime, registry=registry, poll_interval_s=0.05, on_run_resumed=lambda s: resumed.set()
    )
    run_id = _start_timer(runtime, wf, utc_now() + timedelta(seconds=0.4))
    scheduler.start()
    try:
        assert resumed.wait(timeout=5.0), "the scheduler thread did not resume the run"
        assert _wait_for(lambda: runtime.get_state(run_id).status == RunStatus.COMPLETED)
        assert runtime.get_state(run_id).output == {"woke": True}
        assert scheduler.stats.runs_resumed == 1 and scheduler.stats.poll_cycles >= 1
    finally:
        scheduler.stop()
    assert _scheduler_threads() == []


def test_resume_event_errors_and_success(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = event_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = _runtime(make_stores(), clock, registry)
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
    runtime = _runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock)
    scheduler = Scheduler(runtime=runtime, registry=WorkflowRegistry())
    run_id = runtime.start(workflow=wf)
    runtime.tick(workflow=wf, run_id=run_id)
    with pytest.raises(KeyError, match="not registered"):
        scheduler.resume_event(run_id=run_id, wait_key="evt:go", payload={})


# --------------------------------------------------------------------------- ScheduledRuntime


def _scheduled(make_stores: Callable[[], tuple[Any, Any]], clock: Any, **kwargs: Any) -> ScheduledRuntime:
    run_store, ledger_store = make_stores()
    kwargs.setdefault("auto_start", False)
    return create_scheduled_runtime(run_store=run_store, ledger_store=ledger_store, clock=clock, **kwargs)


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
    assert not sr.is_running and _scheduler_threads() == []
    sr.stop()
    sr.start_scheduler()
    sr.start_scheduler()  # already running: no error
    assert sr.is_running
    with sr:
        pass
    assert not sr.is_running


def test_run_respond_and_ledger(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = ask_workflow(wait_key=None)  # the runtime generates the wait_key
    sr = _scheduled(make_stores, clock)
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
    sr = _scheduled(make_stores, clock)
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
    sr = _scheduled(make_stores, clock)
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
    sr = _scheduled(make_stores, None, workflows=[wf], poll_interval_s=0.05, auto_start=True)
    try:
        run_id, state = sr.run(wf, vars={"until": to_iso(utc_now() + timedelta(seconds=0.4))})
        assert state.status == RunStatus.WAITING
        # Stats are counted just after the tick returns: wait for both.
        assert _wait_for(lambda: sr.stats.runs_resumed == 1)
        assert sr.get_state(run_id).status == RunStatus.COMPLETED
    finally:
        sr.stop()


# --------------------------------------------------------------------------- subworkflows


def test_subworkflow_parent_is_resumed_with_child_output(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    child = ask_workflow("child", wait_key="child-q")
    parent = parent_workflow("child")
    sr = _scheduled(make_stores, clock, workflows=[parent, child])
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
    sr = _scheduled(make_stores, clock, workflows=[parent, child])
    _, state = sr.run(parent)
    assert state.status == RunStatus.COMPLETED
    assert state.output is not None and state.output["child"]["output"] == {"n": 7}


def test_cancel_with_children_cancels_the_whole_tree(
    make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock
) -> None:
    leaf = event_workflow("leaf")
    middle = parent_workflow("leaf", async_=True, then_wait=True, wf_id="middle")
    root = parent_workflow("middle", async_=True, then_wait=True, wf_id="root")
    sr = _scheduled(make_stores, clock, workflows=[root, middle, leaf])

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
    sr = _scheduled(make_stores, clock, workflows=[root, leaf])
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
