"""The async path: many runs on one event loop, parallel tool calls, and its cost on pure steps.

- ``concurrency``: runs whose one effect waits 50 ms (an async handler standing in for an LLM
  call), advanced by :func:`abstractruntime.scheduler.concurrent.advance_many` with
  ``concurrency=1`` and ``concurrency=100``, fsync on; throughput in runs/s, and every ledger
  verified afterwards.
- ``tool_calls``: one ``tool_calls`` effect with 5 async tools of 200 ms each, against one tool's time.
- ``pure steps``: the linear workflow of pure nodes through ``atick`` and through ``tick``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler
from abstractruntime.integrations.abstractcore.tool_executor import LocalToolExecutor
from abstractruntime.scheduler.concurrent import advance_many
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from . import harness, workloads
from .ours import API, Sizes

WAIT_S = 0.05
TOOL_S = 0.2


async def _llm(run: Any, effect: Effect) -> EffectOutcome:
    await asyncio.sleep(WAIT_S)
    return EffectOutcome.completed({"content": "ok"})


def _one_call() -> WorkflowSpec:
    return WorkflowSpec("bench_async", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(EffectType.LLM_CALL, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True})})


def _drain(work: str, runs: int, concurrency: int) -> tuple[float, float, bool]:
    """Seconds of the drain, CPU seconds of the whole process over it (every thread), verified."""
    store = FileStore(tempfile.mkdtemp(dir=work), durability="fsync")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    wf = _one_call()
    ids = [rt.start(workflow=wf) for _ in range(runs)]
    t0, c0 = harness.clock(), time.process_time()
    result = asyncio.run(advance_many(rt, [(wf, i) for i in ids], concurrency=concurrency))
    elapsed, cpu = harness.clock() - t0, time.process_time() - c0
    done = len(result.states) == runs and all(s.output == {"ok": True} for s in result.states)
    verified = done and all(verify_run(store.root, i).ok for i in ids)
    store.close()
    return elapsed, cpu, verified


def concurrency(sizes: Sizes, work: str) -> dict[str, Any]:
    """Runs/s of one worker with ``concurrency`` 1 and 100 (fsync on), every ledger verified; and the
    CPU time of one run in each (the figure a busy machine moves least: the waits overlap, the
    CPU time is what bounds the concurrent drain)."""
    serial_runs, parallel_runs = sizes.async_serial_runs, sizes.async_runs
    serial, serial_cpu, ok1 = _drain(work, serial_runs, 1)
    parallel, parallel_cpu, ok2 = _drain(work, parallel_runs, 100)
    return {"effect_wait_s": WAIT_S, "serial": {"runs": serial_runs, "seconds": serial,
                                                "runs_per_s": serial_runs / serial,
                                                "cpu_ms_per_run": serial_cpu / serial_runs * 1000},
            "concurrent": {"runs": parallel_runs, "concurrency": 100, "seconds": parallel,
                           "runs_per_s": parallel_runs / parallel,
                           "cpu_ms_per_run": parallel_cpu / parallel_runs * 1000},
            "all_verified": ok1 and ok2}


def tool_calls(sizes: Sizes, work: str) -> dict[str, Any]:
    """One tool_calls effect with 5 async tools of 200 ms each."""

    async def slow(n: int) -> int:
        await asyncio.sleep(TOOL_S)
        return n

    calls = [{"name": "slow", "arguments": {"n": n}, "call_id": f"c{n}"} for n in range(5)]
    wf = WorkflowSpec("bench_tools", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(
            EffectType.TOOL_CALLS, {"tool_calls": calls}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"n": len(run.vars["r"]["results"])})})
    times = []
    for _ in range(sizes.reps):
        store = FileStore(tempfile.mkdtemp(dir=work), durability="fsync")
        rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: make_tool_calls_handler(
            tools=LocalToolExecutor([slow]))})
        run_id = rt.start(workflow=wf)
        t0 = harness.clock()
        state = asyncio.run(rt.atick(workflow=wf, run_id=run_id))
        times.append(harness.clock() - t0)
        assert state.output == {"n": 5}, state.output
        store.close()
    return {"tools": 5, "tool_seconds": TOOL_S, "seconds": harness.median(times)}


def pure_steps(sizes: Sizes, work: str) -> dict[str, Any]:
    """Cost per pure step through atick against tick (fsync on, default tick size)."""
    wf = workloads.linear(API, sizes.steps)
    out: dict[str, Any] = {"steps": sizes.steps}
    for name in ("sync", "async"):
        def once(rep: int) -> float:
            store = FileStore(tempfile.mkdtemp(dir=work), durability="fsync")
            rt = store.runtime()
            run_id = rt.start(workflow=wf, vars={"i": 0})
            t0 = harness.clock()
            state = rt.get_state(run_id)
            while state.status.value == "running":
                if name == "sync":
                    state = rt.tick(workflow=wf, run_id=run_id)
                else:
                    state = asyncio.run(rt.atick(workflow=wf, run_id=run_id))
            elapsed = harness.clock() - t0
            store.close()
            return elapsed

        elapsed = harness.repeat(sizes.reps, once)
        out[name] = {"seconds": elapsed, "step_seconds": elapsed / sizes.steps}
    return out


def async_path(sizes: Sizes, work: str) -> dict[str, Any]:
    """All three measurements of the async path."""
    return {"concurrency": concurrency(sizes, work), "tool_calls": tool_calls(sizes, work),
            "pure_steps": pure_steps(sizes, work)}
