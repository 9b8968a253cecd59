"""What proving a checkpoint costs, next to an effect step, as a run's state grows.

A checkpoint is believed only once the state it holds has the digest the ledger recorded at
its position (docs/durability.md). Two costs follow, both measured here for states of 1 KB,
100 KB and 1 MB (50 variables, one of them changed per step):

- **the proof**, paid when a process opens a run from its checkpoint: read it, digest its
  state, compare with the ledger's record (``core.recovery.prove``);
- **keeping the digest**, paid on every step: only what changed is rehashed, so an effect step
  on a 1 MB state should cost what it costs on a 1 KB one.

Each is compared with an effect step (a trivial completed handler, fsync on) on the same
state, measured in the same run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.recovery import prove
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

from . import harness
from .ours import Sizes
from .report import Row, _ok, _why, ms

STATE_BYTES = (1_000, 100_000, 1_000_000)
VARIABLES = 50


def _workflow(state_bytes: int, steps: int) -> WorkflowSpec:
    """``init`` fills the state; ``work`` changes one small variable and performs one effect."""
    chunk = state_bytes // VARIABLES

    def init(run: Any, ctx: Any) -> StepPlan:
        for i in range(VARIABLES):
            # Distinct contents: equal values would be stored once and hashed once.
            run.vars[f"v{i}"] = f"{i:04d}" + "x" * max(chunk - 4, 0)
        run.vars["i"] = 0
        return StepPlan("init", next_node="work")

    def work(run: Any, ctx: Any) -> StepPlan:
        run.vars["i"] += 1
        if run.vars["i"] > steps:
            return StepPlan("work", complete_output={"i": run.vars["i"]})
        return StepPlan("work", next_node="work",
                        effect=Effect(EffectType.TOOL_CALLS, {"calls": [{"name": "noop"}]}, result_key="r"))

    return WorkflowSpec(f"bench_proof_{state_bytes}", "init", {"init": init, "work": work})


def _noop(run: Any, effect: Any, default_next_node: Any) -> EffectOutcome:
    return EffectOutcome.completed({"ok": True})


def checkpoint_proof(sizes: Sizes, work: str) -> dict[str, Any]:
    """Per state size: effect step, the proof on open, and one open from the checkpoint."""
    steps = max(sizes.effect_steps // 5, 10)
    out: dict[str, Any] = {"steps": steps, "variables": VARIABLES, "sizes": []}
    for state_bytes in STATE_BYTES:
        wf = _workflow(state_bytes, steps)
        store = FileStore(Path(tempfile.mkdtemp(dir=work)), durability="fsync")
        rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: _noop})
        run_id = rt.start(workflow=wf)
        rt.tick(workflow=wf, run_id=run_id, max_steps=1)  # init: the state is filled
        t0 = harness.clock()
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=10 * steps)
        step_seconds = (harness.clock() - t0) / steps
        assert state.output == {"i": steps + 1}, state.output
        stored = store.runs.load_checkpoint(run_id)
        assert stored is not None
        proofs = []
        for _ in range(max(sizes.reps, 5)):
            t0 = harness.clock()
            proven = prove(store.ledger, run_id, stored)
            proofs.append(harness.clock() - t0)
            assert proven is not None, "the benchmark's own checkpoint did not prove"
        store.close()
        opens = []
        for _ in range(max(sizes.reps, 3)):
            fresh = FileStore(store.root, durability="fsync")
            t0 = harness.clock()
            fresh.runtime().get_state(run_id)
            opens.append(harness.clock() - t0)
            fresh.close()
        out["sizes"].append({"state_bytes": state_bytes, "effect_step_seconds": step_seconds,
                             "prove_seconds": harness.median(proofs), "open_seconds": harness.median(opens),
                             "checkpoint_bytes": (store.root / "runs" / run_id / "run.json").stat().st_size})
    return out


def rows(r: Any) -> list[Row]:
    """The benchmark table's rows for :func:`checkpoint_proof`."""
    name = "checkpoint proof"
    if not _ok(r):
        return [Row(name, "prove a checkpoint", _why(r))]
    out: list[Row] = []
    by_size = {s["state_bytes"]: s for s in r["sizes"]}
    for s in r["sizes"]:
        label = f"{s['state_bytes'] / 1000:,.0f} KB" if s["state_bytes"] < 1_000_000 else "1 MB"
        ratio = s["prove_seconds"] / s["effect_step_seconds"]
        target = "≤ 0.10×" if s["state_bytes"] <= 100_000 else ""
        out.append(Row(name, f"state {label}: prove on open (open total {ms(s['open_seconds'])})",
                       ms(s["prove_seconds"]), f"effect step {ms(s['effect_step_seconds'])}", ratio, target,
                       ratio <= 0.10 if target else None))
    small, large = by_size.get(STATE_BYTES[0]), by_size.get(STATE_BYTES[-1])
    if small and large:
        ratio = large["effect_step_seconds"] / small["effect_step_seconds"]
        out.append(Row(name, "effect step, one variable changed: 1 MB state vs 1 KB",
                       ms(large["effect_step_seconds"]), f"1 KB {ms(small['effect_step_seconds'])}", ratio,
                       "≤ 1.2× (cost follows what changed)", ratio <= 1.2))
    return out
