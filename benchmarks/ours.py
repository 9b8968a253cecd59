"""Step-throughput scenarios measured on this package, in the runner's own interpreter.

Each function takes a :class:`Sizes` and a scratch directory and returns a JSON-safe dict
of measurements (seconds, rates, bytes). Timed with ``time.perf_counter``; every
repeated measurement reports its median.
"""

from __future__ import annotations

import os
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.fsio import append_bytes, atomic_write_bytes, open_append
from abstractruntime.storage.store import FileStore

from . import harness, workloads

API = types.SimpleNamespace(StepPlan=StepPlan, Effect=Effect, EffectType=EffectType, WorkflowSpec=WorkflowSpec)
HANDLERS = {EffectType.TOOL_CALLS: workloads.make_handler(EffectOutcome)}


@dataclass
class Sizes:
    """How big each scenario is (``--quick`` shrinks everything)."""

    steps: int = 1000
    effect_steps: int = 1000
    reps: int = 3
    baseline_reps: int = 1
    fsync_samples: int = 200
    flat_lengths: list[int] = field(default_factory=lambda: [100, 1000, 3000, 10000])
    flat_steps: int = 50
    roundtrips: int = 20
    cli_roundtrips: int = 5
    verify_records: int = 50_000
    list_counts: list[int] = field(default_factory=lambda: [10_000, 100_000])
    startup_reps: int = 15
    async_runs: int = 1000
    async_serial_runs: int = 100
    recovery_records: int = 100_000
    recovery_behind: int = 1_000
    # The long ledger (benchmarks/ours_long.py): steps, and records per sealed segment (the default).
    long_steps: int = 1_000_000
    long_segment_records: int = 100_000
    state_at_samples: int = 20
    replay_steps: int = 10_000  # code-first replay (benchmarks/ours_codefirst.py)
    replay_reps: int = 5
    # The PostgreSQL group (benchmarks/postgres.py, --postgres)
    pg_effect_steps: int = 1000
    pg_rounds: int = 3  # interleaved rounds: ours, then the baseline
    pg_reps: int = 3  # workflows per round and side
    pg_commit_samples: int = 200
    # The worker fleet on PostgreSQL (benchmarks/pg_fleet.py)
    fleet_runs: int = 2000
    fleet_effect_s: float = 0.02
    fleet_workers: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    kill_runs: int = 400
    emit_samples: int = 30
    # The agent loop (benchmarks/agent_loop.py)
    agent_turns: list[int] = field(default_factory=lambda: [100, 200, 1000])
    agent_variants: list[str] = field(default_factory=lambda: ["chat", "tools"])
    agent_message_bytes: int = 1024
    agent_langgraph_max_turns: int = 200
    # Runs of ours at the flat-cost length: one run's two windows of 50 turns move with the disk's
    # fsync times, so the flat row is the median of these runs (each run's ratio shown).
    agent_flat_runs: int = 3

    @classmethod
    def quick(cls) -> "Sizes":
        """Tiny sizes: checks that every scenario works, in seconds."""
        return cls(steps=50, effect_steps=30, reps=1, baseline_reps=1, fsync_samples=20, flat_lengths=[20, 200],
                   flat_steps=10, roundtrips=3, cli_roundtrips=1, verify_records=500, list_counts=[300],
                   startup_reps=3, recovery_records=3000, recovery_behind=100, state_at_samples=5,
                   long_steps=5000, long_segment_records=1000,
                   replay_steps=200, replay_reps=2,
                   async_runs=40, async_serial_runs=5, pg_effect_steps=20, pg_rounds=1, pg_reps=1,
                   pg_commit_samples=10, fleet_runs=30, fleet_workers=[1, 2], kill_runs=40, emit_samples=3,
                   agent_turns=[12, 24], agent_flat_runs=1)


def _store(work: str, durability: str) -> FileStore:
    return FileStore(tempfile.mkdtemp(dir=work), durability=durability)


def fsync_costs(sizes: Sizes, work: str) -> dict[str, Any]:
    """The floor: one fsync'd append of a ledger-sized line, one fsync'd atomic replace."""
    root = Path(tempfile.mkdtemp(dir=work))
    line = b'{"k":"' + b"x" * 500 + b'"}\n'  # about one ledger record
    ledger = root / "ledger.jsonl"
    appends = []
    for _ in range(sizes.fsync_samples):
        fd = open_append(ledger)
        try:
            t0 = harness.clock()
            append_bytes(fd, line, path=ledger, durable=True)
            appends.append(harness.clock() - t0)
        finally:
            os.close(fd)
    replaces = []
    doc = b'{"format":1,"run":{"vars":{"i":1}},"x":"' + b"y" * 700 + b'"}\n'  # about one checkpoint
    for _ in range(sizes.fsync_samples):
        t0 = harness.clock()
        atomic_write_bytes(root / "run.json", doc, durable=True)
        replaces.append(harness.clock() - t0)
    return {"append_fsync_seconds": harness.median(appends), "atomic_replace_fsync_seconds": harness.median(replaces),
            "samples": sizes.fsync_samples, "append_bytes": len(line), "replace_bytes": len(doc)}


def durable_steps(sizes: Sizes, work: str) -> dict[str, Any]:
    """The linear workflow of trivial pure nodes in three durability modes, and bytes per step."""
    wf = workloads.linear(API, sizes.steps)
    # The fsync floor again, right before: a shared disk's fsync latency drifts within minutes.
    out: dict[str, Any] = {"steps": sizes.steps, "floor": fsync_costs(sizes, work)}
    modes = (
        ("group_commit", "fsync", 100, "fsync, default tick(max_steps=100): pure steps group-committed"),
        ("per_step_commit", "fsync", 1, "fsync, tick(max_steps=1): every step committed before the next"),
        ("fsync_off", "none", 100, 'durability="none", default tick(max_steps=100)'),
    )
    for name, durability, max_steps, note in modes:
        bytes_per_step = 0.0

        def once(rep: int) -> float:
            nonlocal bytes_per_step
            store = _store(work, durability)
            rt = store.runtime(effect_handlers=HANDLERS)
            t0 = harness.clock()
            run_id = rt.start(workflow=wf, vars={"i": 0})
            state = workloads.run_to_end(rt, wf, run_id, max_steps=max_steps)
            elapsed = harness.clock() - t0
            assert state.output == {"i": sizes.steps - 1}, state.output
            bytes_per_step = harness.tree_bytes(store.root / "runs" / run_id) / sizes.steps
            store.close()
            return elapsed

        elapsed = harness.repeat(sizes.reps, once)
        out[name] = {"seconds": elapsed, "steps_per_s": sizes.steps / elapsed,
                     "step_seconds": elapsed / sizes.steps, "bytes_per_step": bytes_per_step, "durability": note}
    return out


def effect_steps(sizes: Sizes, work: str) -> dict[str, Any]:
    """Effect steps (a trivial tool_calls handler), fsync on: intent, checkpoint, result per step."""
    wf = workloads.effects(API, sizes.effect_steps)

    def once(rep: int) -> float:
        store = _store(work, "fsync")
        rt = store.runtime(effect_handlers=HANDLERS)
        t0 = harness.clock()
        run_id = rt.start(workflow=wf)
        state = workloads.run_to_end(rt, wf, run_id)
        elapsed = harness.clock() - t0
        assert state.output == {"done": True}, state.output
        store.close()
        return elapsed

    floor = fsync_costs(sizes, work)  # measured right before, like durable_steps
    elapsed = harness.repeat(sizes.reps, once)
    n = sizes.effect_steps
    return {"floor": floor, "steps": n, "seconds": elapsed, "steps_per_s": n / elapsed, "step_seconds": elapsed / n,
            "durability": "fsync (intent + checkpoint durable before the handler, result before moving on)"}


def flat_cost(sizes: Sizes, work: str) -> dict[str, Any]:
    """Cost of one effect step when the ledger already holds L records, for each L.

    One run per length is first grown to L records; then the runs take turns (``rounds``
    short ticks each, round-robin) so that a burst of disk noise hits every length alike.
    """
    rounds = 5
    per_tick = max(sizes.flat_steps // rounds, 3)
    out: dict[str, Any] = {"measured_steps": rounds * per_tick, "rounds": rounds}
    for durability in ("fsync", "none"):
        runs = []
        for length in sizes.flat_lengths:
            stamps: list[float] = []
            spin = max(length - 1, 0)  # the start record plus ``spin`` node records
            wf = workloads.flat(API, spin=spin, measured=rounds * per_tick + 1, stamps=stamps)
            store = _store(work, durability)
            rt = store.runtime(effect_handlers=HANDLERS)
            run_id = rt.start(workflow=wf)
            if spin:
                rt.tick(workflow=wf, run_id=run_id, max_steps=spin)
            runs.append((length, store, rt, wf, run_id, stamps))
        gaps: dict[int, list[float]] = {length: [] for length in sizes.flat_lengths}
        for _ in range(rounds):
            for length, _kept_open, rt, wf, run_id, stamps in runs:
                stamps.clear()
                rt.tick(workflow=wf, run_id=run_id, max_steps=per_tick)
                gaps[length] += [b - a for a, b in zip(stamps, stamps[1:])]
        for _, store, *_rest in runs:
            store.close()
        out[durability] = [{"ledger_length": length, "step_seconds": harness.median(gaps[length])}
                           for length in sizes.flat_lengths]
    return out
