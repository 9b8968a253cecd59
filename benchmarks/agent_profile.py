"""Where the time of an agent's turn goes: ``python -m benchmarks.agent_profile [TURNS] [chat|tools] [fsync|none]``.

Runs the agent loop of benchmarks/agent_loop.py once on a fresh file store and times the
phases of the records it writes, wrapping the kernel's functions with a clock: the comparison
of the variables with the last record (``DeltaTracker.diff``), storing values and redacting
(``RecordEncoder.slot``), JCS + SHA-256 of each record (``seal``), the replay of the record
onto the state image (``apply_record``), the ledger's write + fsync (``append_bytes``) and,
once per tick, keeping the variables for the next tick (``Runtime.keep_warm``: the hand-over
and the returned state's snapshot) and taking them up again (``Runtime._load``: checked whole).
Prints the mean per turn for turns 11–60 and for the last 50 (the issue's windows). For a
function-level profile, run the loop under ``python -m cProfile`` instead.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from typing import Any, Optional

from . import agent_loop, harness, workloads

PHASES = (
    ("compare with the last record (DeltaTracker.diff)", "abstractruntime.core.wal", "DeltaTracker.diff"),
    ("of which: lists looked at for C code's writes", "abstractruntime.core.wal", "check_lists"),
    ("store values, redact (RecordEncoder.slot)", "abstractruntime.core.encode", "RecordEncoder.slot"),
    ("JCS + SHA-256 of the record (seal_pieces)", "abstractruntime.core.session", "seal_pieces"),
    ("replay onto the state image (apply_record)", "abstractruntime.core.session", "apply_record"),
    ("write + fsync (append_bytes)", "abstractruntime.storage.ledger_files", "append_bytes"),
    ("everything record() does", "abstractruntime.core.session", "RunSession.record"),
    ("state kept for the next tick (Runtime.keep_warm)", "abstractruntime.core.runtime", "Runtime.keep_warm"),
    ("kept state taken up (Runtime._load)", "abstractruntime.core.runtime", "Runtime._load"),
)


def profile(turns: int, variant: str, durability: str) -> dict[str, Any]:
    """``{"turn": (early, late), phase: (early, late)}``: mean seconds per turn."""
    from abstractruntime.storage.store import FileStore

    totals: dict[tuple[str, str], float] = defaultdict(float)
    window: dict[str, Optional[str]] = {"now": None}

    def record(label: str, seconds: float) -> None:
        if window["now"] is not None:
            totals[(window["now"], label)] += seconds

    undo = harness.time_functions(PHASES, record)
    tools = variant == "tools"
    stamps: list[float] = []
    handlers = agent_loop.handlers(1024, tools, stamps)
    model = next(iter(handlers.values()))

    def stamped(run: Any, effect: Any) -> Any:
        n = len(stamps)
        window["now"] = "early" if 10 <= n < 60 else "late" if n >= turns - 50 else None
        return model(run, effect)

    handlers[next(iter(handlers))] = stamped
    store = FileStore(tempfile.mkdtemp(), durability=durability)  # type: ignore[arg-type]
    try:
        wf = agent_loop.workflow(turns, 1024, tools)
        rt = store.runtime(effect_handlers=handlers)
        run_id = rt.start(workflow=wf, vars={"messages": [workloads.first_message()]})
        workloads.run_to_end(rt, wf, run_id)
        costs = workloads.turn_costs(stamps, time.perf_counter(), turns)
    finally:
        store.close()
        for restore in undo:
            restore()
    out: dict[str, Any] = {"turn": (costs["early_seconds"], costs["late_seconds"])}
    for label, _, _ in PHASES:
        out[label] = (totals[("early", label)] / 50, totals[("late", label)] / 50)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Print the profile."""
    args = argv if argv is not None else sys.argv[1:]
    turns = int(args[0]) if args else 1000
    variant = args[1] if len(args) > 1 else "chat"
    durability = args[2] if len(args) > 2 else "fsync"
    result = profile(turns, variant, durability)
    print(f"{variant}, {turns} turns, durability={durability}: mean per turn, turns 11–60 → last 50")
    for label, (early, late) in result.items():
        print(f"  {label:52s} {early * 1e3:8.3f} ms → {late * 1e3:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
