"""Code-first replay: resuming a run whose function has thousands of recorded steps.

A code-first workflow runs from the top on every resume and each ``ctx`` call returns what its
position recorded, so the price of the style is a replay linear in the run's positions. A run
is grown to ``replay_steps`` steps (then it waits on an event in a loop), and resumes are timed:

- **warm**: the same runtime, the run's history already read (a worker that served the run
  before): the steady state, one replay of every position per resume;
- **catch-up**: the first resume after the steps were recorded by this runtime in one long
  tick (the history reads the records appended since);
- **cold**: a new store and runtime per resume, as a new process would (the ledger is read and
  chain-checked from its first record).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from abstractruntime import workflow
from abstractruntime.storage.store import FileStore

from . import harness
from .ours import Sizes


def _tick(i: int) -> dict[str, int]:
    return {"i": i}


@workflow("bench_replay")
def _replayed(ctx: Any, steps: int) -> None:
    for i in range(steps):
        ctx.step(_tick, i)
    while True:
        ctx.wait_event("go")


def code_first_replay(sizes: Sizes, work: str) -> dict[str, Any]:
    """Resume latencies of a run with ``sizes.replay_steps`` recorded steps (warm, catch-up, cold)."""
    root = Path(tempfile.mkdtemp(dir=work))
    store = FileStore(root, durability="none")
    rt = store.runtime()
    t0 = harness.clock()
    run_id = rt.start(workflow=_replayed, vars={"steps": sizes.replay_steps}, run_id="long")
    state = rt.tick(workflow=_replayed, run_id=run_id)
    built = harness.clock() - t0

    def resume(runtime: Any) -> float:
        nonlocal state
        began = harness.clock()
        state = runtime.resume(workflow=_replayed, run_id=run_id, wait_id=state.waiting.wait_id, payload={})
        return harness.clock() - began

    catch_up = resume(rt)
    warm = [resume(rt) for _ in range(sizes.replay_reps)]
    store.close()
    cold = []
    for _ in range(max(1, sizes.replay_reps // 2)):
        fresh = FileStore(root, durability="none")
        cold.append(resume(fresh.runtime()))
        fresh.close()
    assert state.status.value == "waiting", state.status
    records = FileStore(root, durability="none").ledger.head(run_id).seq
    return {"steps": sizes.replay_steps, "records": records, "build_seconds": built,
            "warm_seconds": harness.median(warm), "warm_max_seconds": max(warm), "catch_up_seconds": catch_up,
            "cold_seconds": harness.median(cold), "resumes": len(warm)}
