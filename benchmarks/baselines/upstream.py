"""Baseline: upstream AbstractRuntime 0.0.1 with its JSON file stores (bench venv only).

Run by the runner as ``.bench-venv/bin/python -I benchmarks/baselines/upstream.py SPEC``.
Upstream's stores never fsync, so its numbers are for "no durability" on our scale.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
import workloads  # noqa: E402

try:
    from abstractruntime.core.models import Effect, EffectType, StepPlan, StepRecord
    from abstractruntime.core.runtime import EffectOutcome, Runtime
    from abstractruntime.core.spec import WorkflowSpec
    from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
except ImportError as exc:  # not installed in this interpreter
    harness.skipped(f"upstream abstractruntime 0.0.1 is not installed ({exc})")

API = types.SimpleNamespace(StepPlan=StepPlan, Effect=Effect, EffectType=EffectType, WorkflowSpec=WorkflowSpec)


def runtime(root: str) -> Runtime:
    """An upstream runtime over JSON files in ``root`` with the trivial tool_calls handler."""
    return Runtime(run_store=JsonFileRunStore(root), ledger_store=JsonlLedgerStore(root),
                   effect_handlers={EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)})


def durable(spec: dict, work: str) -> dict:
    """The linear pure-node workflow: steps/s and bytes per step."""
    steps, wf = spec["steps"], workloads.linear(API, spec["steps"])
    sizes: list[int] = []

    def once(rep: int) -> float:
        root = tempfile.mkdtemp(dir=work)
        rt = runtime(root)
        t0 = harness.clock()
        run_id = rt.start(workflow=wf, vars={"i": 0})
        state = workloads.run_to_end(rt, wf, run_id)
        elapsed = harness.clock() - t0
        assert state.output == {"i": steps - 1}, state.output
        sizes.append(harness.tree_bytes(root))
        return elapsed

    elapsed = harness.repeat(spec["reps"], once)
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
            "bytes_per_step": sizes[-1] / steps, "durability": "none (upstream never fsyncs)"}


def effects(spec: dict, work: str) -> dict:
    """Effect steps with a trivial handler: steps/s."""
    steps, wf = spec["effect_steps"], workloads.effects(API, spec["effect_steps"])

    def once(rep: int) -> float:
        rt = runtime(tempfile.mkdtemp(dir=work))
        t0 = harness.clock()
        run_id = rt.start(workflow=wf)
        state = workloads.run_to_end(rt, wf, run_id)
        assert state.output == {"done": True}, state.output
        return harness.clock() - t0

    elapsed = harness.repeat(spec["reps"], once)
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed}


def flat(spec: dict, work: str) -> dict:
    """Per-effect-step cost at several ledger lengths (ledger pre-filled with effect records)."""
    points = []
    for length in spec["flat_lengths"]:
        # Upstream scans the whole ledger per effect: keep the measured window affordable.
        measured = max(10, min(spec["flat_steps"], 2_000_000 // max(length, 1)))
        stamps: list[float] = []
        wf = workloads.flat(API, spin=0, measured=measured, stamps=stamps)
        root = tempfile.mkdtemp(dir=work)
        rt = runtime(root)
        run_id = rt.start(workflow=wf)
        run = rt.get_state(run_id)
        filler = Effect(type=EffectType.TOOL_CALLS, payload={"k": -1}, result_key="last")
        for i in range(length):  # upstream's pure steps write no records: append effect records
            rec = StepRecord.start(run=run, node_id="eff", effect=filler, idempotency_key=f"fill-{i // 2}")
            if i % 2:
                rec.finish_success({"ok": True})
            rt.ledger_store.append(rec)
        workloads.run_to_end(rt, wf, run_id, max_steps=measured + 2)
        points.append({"ledger_length": length, "step_seconds": harness.step_gaps(stamps), "measured": measured})
    return {"points": points}


def ask_roundtrip(spec: dict, work: str) -> dict:
    """start → tick (waits) → resume → completed, through the API."""
    wf = workloads.ask(API)
    rt = runtime(tempfile.mkdtemp(dir=work))
    times = []
    for _ in range(spec["roundtrips"]):
        t0 = harness.clock()
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id)
        state = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "yes"})
        times.append(harness.clock() - t0)
        assert state.status.value == "completed", state
    return {"seconds": harness.median(times), "roundtrips": len(times)}


def main() -> None:
    """Run the scenarios named in the spec; print one JSON document."""
    spec = harness.read_spec()
    out: dict = {"package": "abstractruntime 0.0.1"}
    with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as work:
        for name, fn in (("durable", durable), ("effects", effects), ("flat", flat), ("ask", ask_roundtrip)):
            if name in spec["scenarios"]:
                out[name] = fn(spec, work)
    harness.emit(out)


if __name__ == "__main__":
    main()
