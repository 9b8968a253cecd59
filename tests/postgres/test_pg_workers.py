"""Several workers, each with its own connections, drain the same due timers from one
database with the scheduler as it is: every run is resumed exactly once."""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import create_scheduled_runtime
from abstractruntime.storage.ledger_chain import verify_ledger_chain

RUNS = 24


def _nap() -> WorkflowSpec:
    def sleep(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("sleep", effect=Effect(EffectType.WAIT_UNTIL, {"until": "2030-01-01T00:05:00Z"}),
                        next_node="done")

    return WorkflowSpec("nap", "sleep", {"sleep": sleep,
                                          "done": lambda run, ctx: StepPlan("done", complete_output={"woke": True})})


@pytest.mark.parametrize("workers", [2, 8])
def test_workers_resume_each_due_run_exactly_once(open_pg: Callable[..., Any], workers: int) -> None:
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    store = open_pg()
    rt = store.runtime(clock=clock)
    run_ids = []
    for _ in range(RUNS):
        run_id = rt.start(workflow=_nap())
        assert rt.tick(workflow=_nap(), run_id=run_id).status is RunStatus.WAITING
        run_ids.append(run_id)
    clock.advance(seconds=600)

    schedulers = []
    for _ in range(workers):
        own = open_pg()  # each worker: its own connections, as on its own machine
        schedulers.append(create_scheduled_runtime(run_store=own.runs, ledger_store=own.ledger, workflows=[_nap()],
                                                   auto_start=False, clock=clock).scheduler)
    gate = threading.Barrier(workers)
    advanced: list[list[str]] = [[] for _ in range(workers)]

    def drain(index: int) -> None:
        gate.wait()
        while True:
            states = schedulers[index].tick_due(limit=RUNS)
            if not states and not store.runs.list_due_wait_until(now_iso="2030-01-01T00:10:00Z"):
                return
            advanced[index].extend(s.run_id for s in states)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    resumed = [run_id for per_worker in advanced for run_id in per_worker]
    assert sorted(resumed) == sorted(run_ids)  # each once, none lost
    assert all(s.stats.runs_failed == 0 for s in schedulers)
    for run_id in run_ids:
        assert store.runs.load(run_id).status is RunStatus.COMPLETED
        records = store.ledger.list(run_id)
        assert verify_ledger_chain(records)["ok"] is True
        assert sum(1 for r in records if r["kind"] == "resume") == 1


def test_async_workers_advance_many_runs_over_postgres(open_pg: Callable[..., Any]) -> None:
    """Two workers (own connections, own event loops) run advance_many over the same runs at once:
    every run completes once, its one effect called once, and every ledger verifies."""
    import asyncio

    from abstractruntime.core.runtime import EffectOutcome
    from abstractruntime.scheduler.concurrent import advance_many

    calls: list[str] = []
    guard = threading.Lock()

    async def call_model(run: RunState, effect: Effect) -> EffectOutcome:
        await asyncio.sleep(0.001)
        with guard:
            calls.append(run.run_id)
        return EffectOutcome.completed({"content": "hi " + effect.payload["prompt"]})

    async def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="done", effect=Effect(EffectType.LLM_CALL, {"prompt": run.vars["who"]}, "llm"))

    wf = WorkflowSpec("greet", "ask", {
        "ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={"text": run.vars["llm"]["content"]})})
    store = open_pg()
    run_ids = [store.runtime().start(workflow=wf, vars={"who": f"n{i}"}) for i in range(12)]
    runtimes = [open_pg().runtime(effect_handlers={EffectType.LLM_CALL: call_model}) for _ in range(2)]
    results: list[Any] = [None, None]
    gate = threading.Barrier(2)

    def worker(index: int) -> None:
        gate.wait()
        results[index] = asyncio.run(advance_many(runtimes[index], [(wf, r) for r in run_ids], concurrency=6))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not r.errors for r in results), [r.errors for r in results]
    # A run may be ticked by both workers in turn (the second finds it completed); never at once.
    for run_id in run_ids:
        state = store.runs.load(run_id)
        assert state.status is RunStatus.COMPLETED and state.output["text"] == "hi " + state.vars["who"]
        assert verify_ledger_chain(store.ledger.list(run_id))["ok"] is True
    assert sorted(calls) == sorted(run_ids)
