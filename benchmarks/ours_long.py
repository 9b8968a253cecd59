"""A long ledger: a run of a million steps on the folder store, sealed into segments.

The run is grown with ``durability="none"`` (to build it in reasonable time; the layout is the
same), then measured with fresh store objects as a new process would open them: opening the run
and taking one more step (from its proven checkpoint: no sealed segment is read), ``state_at``
of positions spread over every segment, bytes on disk per step, and ``verify`` of the whole chain.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from . import harness
from .ours import Sizes
from .report import Row, ms


def _counter() -> WorkflowSpec:
    def count(run: Any, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        return StepPlan(node_id="count", next_node="count")

    return WorkflowSpec("bench_long_ledger", "count", {"count": count})


def long_ledger(sizes: Sizes, work: str) -> dict[str, Any]:
    """Grow one run to ``long_steps`` steps, then time open + one step, ``state_at`` and verify."""
    wf = _counter()
    root = Path(tempfile.mkdtemp(dir=work))
    segment_records = sizes.long_segment_records
    store = FileStore(root, durability="none", segment_records=segment_records)
    rt = store.runtime()
    run_id = rt.start(workflow=wf, run_id="long")
    t0 = harness.clock()
    left = sizes.long_steps
    while left > 0:
        batch = min(left, 10_000)
        rt.tick(workflow=wf, run_id=run_id, max_steps=batch)
        left -= batch
    rt.checkpoint(run_id)
    build = harness.clock() - t0
    store.close()
    run_dir = root / "runs" / run_id
    disk = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    segments = len(list((run_dir / "segments").glob("*.jsonl")))

    opens = []
    for _ in range(sizes.reps):
        fresh = FileStore(root, durability="fsync", segment_records=segment_records)
        t0 = harness.clock()
        state = fresh.runtime().tick(workflow=wf, run_id=run_id, max_steps=1)
        opens.append(harness.clock() - t0)
        fresh.close()
    assert state.vars["i"] >= sizes.long_steps, state.vars["i"]

    fresh = FileStore(root, durability="none", segment_records=segment_records)
    head, times = harness.state_at_times(fresh, run_id, sizes.state_at_samples, seed=11)
    fresh.close()

    t0 = harness.clock()
    report = verify_run(root, run_id)
    verify_seconds = harness.clock() - t0
    assert report.ok, [p.type for p in report.problems[:5]]
    try:  # the same in one process, right after (a package without ``jobs`` has nothing else)
        t0 = harness.clock()
        one = verify_run(root, run_id, jobs=1)
        one_seconds: Optional[float] = harness.clock() - t0
        assert one.to_dict() == report.to_dict()
    except TypeError:
        one_seconds = None
    return {"steps": sizes.long_steps, "records": head, "segments": segments, "segment_records": segment_records,
            "build_seconds": build, "disk_bytes": disk, "bytes_per_step": disk / sizes.long_steps,
            "open_and_step_seconds": harness.median(opens), "state_at_median_seconds": harness.median(times),
            "state_at_max_seconds": max(times), "state_at_samples": len(times),
            "verify_seconds": verify_seconds, "verify_records_per_second": head / verify_seconds,
            "verify_one_process_seconds": one_seconds}


def rows(r: Any) -> list[Row]:
    """The table rows of :func:`long_ledger`'s result."""
    name = "long ledger"
    if not isinstance(r, dict) or "error" in r or r.get("skipped") or "steps" not in r:
        return [Row(name, "long run", str(r.get("error") or r.get("skipped") or "not run") if isinstance(r, dict)
                    else "not run")]
    measure = f"{r['steps']:,} steps, {r['segments']} segments"
    return [
        Row(name, f"{measure}: open + one step", ms(r["open_and_step_seconds"]), "", None, "< 100 ms",
            r["open_and_step_seconds"] < 0.1),
        Row(name, f"{measure}: on disk per step", f"{r['bytes_per_step']:,.0f} B", "", None, "≤ 1 KB",
            r["bytes_per_step"] <= 1024),
        Row(name, f"{measure}: state_at, {r['state_at_samples']} positions: slowest", ms(r["state_at_max_seconds"]),
            f"median {ms(r['state_at_median_seconds'])}"),
        Row(name, f"{measure}: verify, every segment in order", f"{r['verify_records_per_second']:,.0f} records/s",
            f"{r['verify_seconds']:.1f} s"
            + (f"; one process {r['verify_one_process_seconds']:.1f} s" if r.get("verify_one_process_seconds") else ""),
            r["verify_one_process_seconds"] / r["verify_seconds"] if r.get("verify_one_process_seconds") else None),
    ]


__all__ = ["long_ledger", "rows"]
