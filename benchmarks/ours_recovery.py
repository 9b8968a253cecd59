"""Recovery and point-in-time reads on a long run: the ledger as the write-ahead log, measured.

A run is grown to ``recovery_records`` ledger records, then its checkpoint is put back to the
copy taken ``recovery_behind`` records earlier (what a crash before the next checkpoint, or a
rolled-back ``run.json``, leaves). Measured with fresh store objects (as a new process would
open them): opening the run and taking one step, and ``state_at`` of positions spread over
the whole run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

from . import harness
from .ours import Sizes


def _spinner() -> WorkflowSpec:
    def spin(run: Any, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        run.vars["last"] = {"i": run.vars["i"], "note": "step"}
        return StepPlan(node_id="spin", next_node="spin")

    return WorkflowSpec("bench_recovery", "spin", {"spin": spin})


def recovery(sizes: Sizes, work: str) -> dict[str, Any]:
    """Open-and-step time with the checkpoint N records behind; ``state_at`` times across the run."""
    wf = _spinner()
    root = Path(tempfile.mkdtemp(dir=work))
    store = FileStore(root, durability="none")
    rt = store.runtime()
    run_id = rt.start(workflow=wf, run_id="long")
    target, behind = sizes.recovery_records, sizes.recovery_behind
    rt.tick(workflow=wf, run_id=run_id, max_steps=target - behind - 1)
    checkpoint = root / "runs" / run_id / "run.json"
    rt.checkpoint(run_id)  # a checkpoint exactly here
    early = root / "run.json.early"
    shutil.copyfile(checkpoint, early)
    rt.tick(workflow=wf, run_id=run_id, max_steps=behind)
    store.close()
    shutil.copyfile(early, checkpoint)  # the last checkpoint is `behind` records back

    opens = []
    for _ in range(sizes.reps):
        fresh = FileStore(root, durability="fsync")
        t0 = harness.clock()
        state = fresh.runtime().tick(workflow=wf, run_id=run_id, max_steps=1)
        opens.append(harness.clock() - t0)
        fresh.close()
        shutil.copyfile(early, checkpoint)
    assert state.vars["i"] >= target - 1, state.vars["i"]
    fresh = FileStore(root, durability="none")
    head, times = harness.state_at_times(fresh, run_id, sizes.state_at_samples, seed=7)
    fresh.close()
    return {"records": head, "checkpoint_behind": behind, "open_and_step_seconds": harness.median(opens),
            "state_at_median_seconds": harness.median(times), "state_at_max_seconds": max(times),
            "state_at_samples": len(times), "ledger_bytes": (root / "runs" / run_id / "ledger.jsonl").stat().st_size}
