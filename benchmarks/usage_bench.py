"""What usage accounting costs per LLM call: effect steps with and without ``ext.usage``, fsync on.

    python -m benchmarks.usage_bench            # also a scenario of ``python -m benchmarks``
    python -m benchmarks.usage_bench --json

Two workflows of ``effect_steps / 10`` llm_call effects each, in a folder store with fsync, run
in interleaved rounds, A B B A ... (so a burst of disk noise hits both alike): the handler returns the same
result, once bare and once with what the AbstractCore handler reports — ``ext.usage``
(provider, model, tokens, latency, cost) and ``ext.prices`` — and with a budget on the run, so
everything the kernel does for a call is measured: checking the report, adding it to the
totals, recording ``ext`` and the new totals, the budget checks before and after the call.
Two rows: the median wall time per step with accounting over the one without (disk noise
moves it both ways), and — the target — the CPU time accounting adds per step (the median
difference of the least CPU time of each side: noise only adds) as a share of a bare step's wall
time.
Target: ≤ 1.05× (accounting costs at most 5% of an effect step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore

from . import harness

TARGET = 1.05
PRICES = {"currency": "USD", "models": {"openai/gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}},
          "sha256": "0" * 64}
RESULT = {"content": "The answer is 42.", "tool_calls": None, "model": "gpt-4o-mini", "finish_reason": "stop",
          "usage": {"prompt_tokens": 812, "completion_tokens": 120, "total_tokens": 932}}


def bare(run: RunState, effect: Effect) -> EffectOutcome:
    """An llm_call handler that reports nothing beyond its result."""
    return EffectOutcome.completed(dict(RESULT))


def metered(run: RunState, effect: Effect) -> EffectOutcome:
    """The same result with the usage and prices the AbstractCore handler records."""
    return EffectOutcome.completed(dict(RESULT), ext={
        "usage": {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 812, "output_tokens": 120,
                  "latency_ms": 412.5, "cost": 0.0001938},
        "prices": PRICES})


def calls(n: int) -> WorkflowSpec:
    """One node that performs ``n`` llm_calls, one per step, then completes."""
    def ask(run: RunState, ctx: Any) -> StepPlan:
        i = run.vars.get("i", 0)
        if i >= n:
            return StepPlan("ask", complete_output={"done": True})
        run.vars["i"] = i + 1
        return StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "What is the answer?"}, "reply"),
                        next_node="ask")

    return WorkflowSpec("bench_usage", "ask", {"ask": ask})


def _step_seconds(root: Path, handler: Any, n: int, budget: Any) -> tuple[float, float]:
    """Wall and CPU seconds per step of ``n`` llm_call steps."""
    store = FileStore(root, durability="fsync")
    try:
        rt = store.runtime(effect_handlers={EffectType.LLM_CALL: handler})
        wf = calls(n)
        run_id = rt.start(workflow=wf, budget=budget)
        started, cpu = harness.clock(), time.process_time()
        state = rt.tick(workflow=wf, run_id=run_id, max_steps=n + 1)
        elapsed, cpu = harness.clock() - started, time.process_time() - cpu
        assert state.status.value == "completed", state.error
        return elapsed / n, cpu / n
    finally:
        store.close()


def usage_accounting(sizes: Any, work: str) -> dict[str, Any]:
    """Median cost per effect step, bare and with accounting, over interleaved rounds (A B B A ...)."""
    n = max(sizes.effect_steps // 10, 10)
    rounds = max(sizes.reps * 4, 4)
    sides = {"bare": (bare, None), "metered": (metered, {"tokens": 10**12, "cost": 10**6})}
    wall: dict[str, list[float]] = {"bare": [], "metered": []}
    cpu: dict[str, list[float]] = {"bare": [], "metered": []}
    for i in range(rounds):
        for label in (("bare", "metered") if i % 2 == 0 else ("metered", "bare")):
            handler, budget = sides[label]
            root = Path(tempfile.mkdtemp(prefix=f"usage-{label}-{i}-", dir=work))
            try:
                seconds, cpu_seconds = _step_seconds(root, handler, n, budget)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            wall[label].append(seconds)
            cpu[label].append(cpu_seconds)
    without, with_ = statistics.median(wall["bare"]), statistics.median(wall["metered"])
    return {"steps": n, "rounds": rounds, "bare_step_seconds": without, "metered_step_seconds": with_,
            "ratio": with_ / without, "durability": "fsync",
            # CPU noise only ever adds time: the least of each side is its cost.
            "accounting_cpu_seconds": min(cpu["metered"]) - min(cpu["bare"])}


def rows(section: Any) -> list[Any]:
    """The table row of this scenario."""
    from .report import Row, _ok, _why, ms

    name = "usage accounting"
    if not _ok(section):
        return [Row(name, "llm_call steps", _why(section))]
    bare_step, cpu = section["bare_step_seconds"], max(section["accounting_cpu_seconds"], 0.0)
    share = 1 + cpu / bare_step
    return [
        Row(name, f"{section['steps']} llm_call steps with ext.usage + prices + a budget, fsync: cost/step",
            ms(section["metered_step_seconds"]), f"the same steps bare {ms(bare_step)}", section["ratio"]),
        Row(name, "CPU accounting adds to an llm_call step (ext.usage, totals, budget checks)", ms(cpu),
            f"a bare step, fsync {ms(bare_step)}", share, f"≤ {TARGET:g}×", share <= TARGET),
    ]


def main(argv: Any = None) -> int:
    """Measure and print (``--json``: as JSON)."""
    from .ours import Sizes

    parser = argparse.ArgumentParser(prog="python -m benchmarks.usage_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    with tempfile.TemporaryDirectory() as work:
        figures = usage_accounting(sizes, work)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['steps']} llm_call steps, fsync, median of {figures['rounds']} rounds each:")
        print(f"  bare           {figures['bare_step_seconds'] * 1e3:8.3f} ms/step")
        print(f"  with usage     {figures['metered_step_seconds'] * 1e3:8.3f} ms/step")
        print(f"  ratio          {figures['ratio']:8.3f}x")
        share = 1 + max(figures["accounting_cpu_seconds"], 0.0) / figures["bare_step_seconds"]
        print(f"  accounting CPU {figures['accounting_cpu_seconds'] * 1e6:8.1f} us/step: {share:.3f}x a bare step "
              f"(target <= {TARGET:g}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
