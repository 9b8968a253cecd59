"""Where the time of an effect step goes: ``python -m benchmarks.effect_profile [STEPS] [fsync|none] [--cprofile]``.

Runs the effect workflow of the ``effect_steps`` scenario (each node a ``tool_calls`` effect
with a trivial handler) once on a fresh file store, wrapping the kernel's functions with a
clock, and prints the mean per step and per ledger record of each phase next to the fsync
floor measured right before (one fsync'd append of a ledger-sized line): the records'
encoding (``RunSession.record``: delta, stored values, redaction, JCS + SHA-256, replay onto
the state image), the ledger append as a whole (``append_lines``: the kept descriptor's flock
and identity checks, or the open, then the write) and its write + fsync alone
(``append_bytes``), the checkpoint
(``atomic_write_bytes`` of ``run.json``, no fsync), the index row marked dirty before the
append and made clean after the checkpoint (``RunIndex.mark`` / ``RunIndex.put``), and the
fsync calls counted; and the process's CPU time per step, taken in a second run without the
wrapping clocks (with ``none`` it is the whole Python of a step). What is left of a step is the
runtime's own bookkeeping (planning the node, the effect's identity and policy, locks, the
handler call). With ``--cprofile`` it prints instead the functions of one unwrapped run under
:mod:`cProfile`, by their own time (a warm-up run first, so imports and first-use work are left
out).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable, Optional

from . import harness, workloads

PHASES = (
    ("records: delta, values, redaction, JCS + SHA-256, replay (RunSession.record)",
     "abstractruntime.core.session", "RunSession.record"),
    ("  of which JCS + SHA-256 (seal_pieces)", "abstractruntime.core.session", "seal_pieces"),
    ("ledger append: lock, file checks, write + fsync (append_lines)", "abstractruntime.storage.ledger_files",
     "JsonlLedgerStore.append_lines"),
    ("  of which write + fsync (append_bytes)", "abstractruntime.storage.ledger_files", "append_bytes"),
    ("run.json replaced, no fsync (atomic_write_bytes)", "abstractruntime.storage.json_files", "atomic_write_bytes"),
    ("index row marked dirty before the append (RunIndex.mark)", "abstractruntime.storage.run_index",
     "RunIndex.mark"),
    ("index row made clean after the checkpoint (RunIndex.put)", "abstractruntime.storage.run_index", "RunIndex.put"),
)


def _wrap(totals: dict[str, float], counts: dict[str, int]) -> list[Callable[[], None]]:
    def record(label: str, seconds: float) -> None:
        totals[label] += seconds
        counts[label] += 1

    undo = harness.time_functions(PHASES, record)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        real_fsync(fd)

    os.fsync = fsync
    undo.append(lambda: setattr(os, "fsync", real_fsync))
    return undo


def _cpu_per_step(steps: int, durability: str, work: str) -> float:
    """CPU seconds of this process per step over one whole run, no function wrapped."""
    from abstractruntime import EffectOutcome, EffectType, FileStore

    from .ours import API

    wf = workloads.effects(API, steps)
    store = FileStore(tempfile.mkdtemp(dir=work), durability=durability)  # type: ignore[arg-type]
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)})
    try:
        start = time.process_time()
        workloads.run_to_end(rt, wf, rt.start(workflow=wf))
        return (time.process_time() - start) / steps
    finally:
        store.close()


def profile(steps: int, durability: str) -> dict[str, Any]:
    """Seconds per step of the whole step and of each phase, records and fsyncs per step, the floor,
    and the CPU time per step of an unwrapped run."""
    from abstractruntime import EffectOutcome, EffectType, FileStore

    from .ours import API, Sizes, fsync_costs

    work = tempfile.mkdtemp()
    floor = fsync_costs(Sizes(fsync_samples=50), work)
    wf = workloads.effects(API, steps)
    handlers = {EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)}
    store = FileStore(tempfile.mkdtemp(dir=work), durability=durability)  # type: ignore[arg-type]
    rt = store.runtime(effect_handlers=handlers)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    undo = _wrap(totals, counts)
    try:
        start = time.perf_counter()
        run_id = rt.start(workflow=wf)
        state = workloads.run_to_end(rt, wf, run_id)
        elapsed = time.perf_counter() - start
        assert state.output == {"done": True}, state.output
    finally:
        for restore in undo:
            restore()
        store.close()
    records = (store.root / "runs" / run_id / "ledger.jsonl").read_bytes().count(b"\n")
    cpu = _cpu_per_step(steps, durability, work)
    return {"cpu_seconds_per_step": cpu, "steps": steps, "durability": durability, "step_seconds": elapsed / steps, "records": records,
            "floor_append_fsync_seconds": floor["append_fsync_seconds"],
            "fsyncs_per_step": counts["fsync"] / steps,
            "phases": {label: {"per_step_seconds": totals[label] / steps, "calls_per_step": counts[label] / steps}
                       for label, _, _ in PHASES}}


def cprofile(steps: int, durability: str, top: int = 30) -> str:
    """The ``top`` functions of one unwrapped run of ``steps`` effect steps by their own time (cProfile)."""
    import cProfile
    import io
    import pstats

    work = tempfile.mkdtemp()
    _cpu_per_step(min(steps, 200), durability, work)  # imports and first-use work, left out
    profiler = cProfile.Profile()
    profiler.enable()
    _cpu_per_step(steps, durability, work)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: Optional[list[str]] = None) -> int:
    """Print the profile as the Markdown table docs/performance.md shows (or cProfile's, ``--cprofile``)."""
    args = list(argv if argv is not None else sys.argv[1:])
    if "--cprofile" in args:
        args.remove("--cprofile")
        print(cprofile(int(args[0]) if args else 1000, args[1] if len(args) > 1 else "none"))
        return 0
    steps = int(args[0]) if args else 1000
    durability = args[1] if len(args) > 1 else "fsync"
    p = profile(steps, durability)
    per_record = p["steps"] / p["records"]
    floor = p["floor_append_fsync_seconds"]
    print(f"{steps} effect steps, durability={durability}: {p['records'] / steps:.2f} records, "
          f"{p['fsyncs_per_step']:.2f} fsyncs per step; floor (append + fsync) {floor * 1e3:.3f} ms; "
          f"CPU time per step (a run without the clocks) {p['cpu_seconds_per_step'] * 1e3:.3f} ms")
    print("| phase | per step | per record | calls per step | × floor |")
    print("|---|---|---|---|---|")
    rows = [("a whole step", p["step_seconds"], 1.0)]
    rows += [(label, v["per_step_seconds"], v["calls_per_step"]) for label, v in p["phases"].items()]
    for label, seconds, calls in rows:
        print(f"| {label} | {seconds * 1e3:.3f} ms | {seconds * per_record * 1e3:.3f} ms | {calls:.2f} | "
              f"{seconds / floor:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
