"""The scheduler: its registry, construction, start and stop, and one poll with a fixed clock."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import (
    InvalidInputError,
)
from abstractruntime.core.models import RunState, RunStatus
from abstractruntime.core.runtime import Runtime
from abstractruntime.scheduler import (
    Scheduler,
    SchedulerStats,
    WorkflowNotRegisteredError,
    WorkflowRegistry,
)
from abstractruntime.storage.base import RunStore
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore

from scheduler_support import T0, timer_workflow, ask_workflow, make_runtime, start_timer, wait_for, scheduler_threads
from scheduler_support import make_stores, clock  # noqa: F401 - pytest fixtures


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
    assert len(scheduler_threads()) == 1
    with pytest.raises(RuntimeError, match="already running"):
        scheduler.start()
    assert wait_for(lambda: scheduler.stats.poll_cycles >= 2)

    assert scheduler.stop() is True
    assert scheduler.is_running is False
    assert scheduler_threads() == []
    assert scheduler.stop() is True  # twice is safe
    cycles = scheduler.stats.poll_cycles
    time.sleep(0.1)
    assert scheduler.stats.poll_cycles == cycles  # nothing polls any more

    scheduler.start()  # restartable
    assert wait_for(lambda: scheduler.stats.poll_cycles > cycles)
    scheduler.stop()
    assert scheduler_threads() == []


def test_scheduler_as_context_manager() -> None:
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    with Scheduler(runtime=runtime, registry=WorkflowRegistry(), poll_interval_s=0.02) as scheduler:
        assert scheduler.is_running
    assert not scheduler.is_running and scheduler_threads() == []


# --------------------------------------------------------------------------- poll_once with a fixed clock


def test_poll_once_resumes_only_due_runs(make_stores: Callable[[], tuple[Any, Any]], clock: FixedClock) -> None:
    wf = timer_workflow()
    registry = WorkflowRegistry()
    registry.register(wf)
    runtime = make_runtime(make_stores(), clock, registry)
    resumed: list[RunState] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=resumed.append)
    run_id = start_timer(runtime, wf, T0 + timedelta(seconds=60))

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
    runtime = make_runtime(make_stores(), clock, registry)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    late = start_timer(runtime, wf, T0 + timedelta(seconds=30))
    early = start_timer(runtime, wf, T0 + timedelta(seconds=10))
    middle = start_timer(runtime, wf, T0 + timedelta(seconds=20))
    never = start_timer(runtime, wf, T0 + timedelta(hours=1))

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
    runtime = make_runtime(stores, clock, registry)
    failed: list[str] = []
    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_failed=lambda rid, exc: failed.append(rid))
    run_id = start_timer(runtime, wf, T0 + timedelta(seconds=5))
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
    runtime = make_runtime(make_stores(), clock)
    failures: list[tuple[str, BaseException]] = []
    scheduler = Scheduler(
        runtime=runtime,
        registry=registry,
        batch_size=1,
        max_errors_kept=2,
        on_run_failed=lambda rid, exc: failures.append((rid, exc)),
    )
    orphan = start_timer(runtime, orphan_wf, T0 + timedelta(seconds=1))  # due first
    good = start_timer(runtime, wf, T0 + timedelta(seconds=2))
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
    runtime = make_runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock, registry)

    def boom(state: RunState) -> None:
        raise RuntimeError("callback exploded")

    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=boom, max_errors_kept=0)
    run_id = start_timer(runtime, wf, T0 + timedelta(seconds=1))
    clock.advance(seconds=1)
    assert scheduler.poll_once() == 1
    assert runtime.get_state(run_id).status == RunStatus.COMPLETED
    assert scheduler.stats.errors == []  # max_errors_kept=0 keeps none

    scheduler = Scheduler(runtime=runtime, registry=registry, on_run_resumed=boom)
    start_timer(runtime, wf, T0 + timedelta(seconds=2))
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
    runtime = make_runtime((InMemoryRunStore(), InMemoryLedgerStore()), clock, registry)
    scheduler = Scheduler(runtime=runtime, registry=registry)
    # Start each timer in the future relative to T0 so it really waits.
    runs = {start_timer(runtime, wf, T0 + timedelta(seconds=off + 1)): off + 1 for off in offsets}
    clock.set(T0 + timedelta(seconds=now))
    advanced = scheduler.tick_due(limit=len(runs))
    expected_due = {rid for rid, off in runs.items() if off <= now}
    assert {s.run_id for s in advanced} == expected_due
    assert [runs[s.run_id] for s in advanced] == sorted(runs[s.run_id] for s in advanced)
    for rid, off in runs.items():
        status = runtime.get_state(rid).status
        assert status == (RunStatus.COMPLETED if off <= now else RunStatus.WAITING)
