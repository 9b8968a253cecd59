"""Positions at concurrency 50: subworkflows, parts and retries when one runtime advances many runs.

Each round starts 50 parent runs on one store and advances them all together — with
``advance_many(concurrency=50)`` on even rounds, with one ``Scheduler.work_pass(concurrency=50)``
on odd ones. A parent starts the same subworkflow with the same payload twice (two positions,
so two children), then runs an effect whose blocking handler records two parts, then an
effect whose handler fails its first attempt (a retry). Handlers sleep, so runs interleave.

Counted over every round:

- children whose id is not the one their position gives (``child_run_id(run, positional_key)``);
- parents whose two starts share one child (the second start reused the first);
- parts recorded in another run's ledger, or not twice per run;
- retries whose attempts do not carry their own position's key, or not (failed 1, completed 2);
- handlers handed another run's identity by ``current_effect()``;
- runs (parents and children) not completed.

Every count but the totals must be 0.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from abstractruntime import (
    DefaultEffectPolicy,
    Effect,
    EffectOutcome,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    WorkflowSpec,
    current_effect,
    open_store,
)
from abstractruntime.core.effect_exec import positional_key
from abstractruntime.core.effects import child_run_id
from abstractruntime.scheduler import Scheduler, WorkflowRegistry
from abstractruntime.scheduler.concurrent import advance_many

CONCURRENCY = 50
BAD = ("children_not_positional", "parents_reusing_a_child", "parts_misplaced", "retries_wrong",
       "wrong_identity", "not_completed")


@dataclass
class PositionStats:
    """What the battery did and found."""

    store: str = ""
    rounds: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain data (every name in :data:`BAD` present, 0 when nothing was found)."""
        return {"store": self.store, "rounds": self.rounds, "concurrency": CONCURRENCY,
                **{k: self.counts[k] for k in ("parents", "children", "parts", "retries", *BAD)},
                "failures": self.failures[:20]}


def _workflows() -> tuple[WorkflowSpec, WorkflowSpec]:
    child = WorkflowSpec("pos-child", "c", {"c": lambda run, ctx: StepPlan("c", complete_output={"n": run.vars["n"]})})

    def loop(run: RunState, ctx: Any) -> StepPlan:
        # The same subworkflow with the same payload, twice: two positions, two children.
        run.vars["i"] = run.vars.get("i", 0) + 1
        if run.vars["i"] <= 2:
            return StepPlan("loop", next_node="loop", effect=Effect(
                EffectType.START_SUBWORKFLOW, {"workflow_id": "pos-child", "vars": {"n": 1}}, f"child{run.vars['i']}"))
        return StepPlan("loop", next_node="parts")

    parent = WorkflowSpec("pos-parent", "loop", {
        "loop": loop,
        "parts": lambda run, ctx: StepPlan("parts", next_node="flaky",
                                           effect=Effect(EffectType.LLM_CALL, {"prompt": "p"}, "parts")),
        "flaky": lambda run, ctx: StepPlan("flaky", next_node="done",
                                           effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": []}, "flaky")),
        "done": lambda run, ctx: StepPlan("done", complete_output={}),
    })
    return parent, child


class _Handlers:
    """A blocking handler recording parts and an async handler failing each effect's first
    attempt; both note when the identity they are handed is not their own run's."""

    def __init__(self) -> None:
        self.wrong_identity = 0
        self.failed_once: set[str] = set()
        self.guard = threading.Lock()

    def _identity(self, run: RunState) -> Any:
        identity = current_effect()
        if identity is None or identity.run_id != run.run_id:
            with self.guard:
                self.wrong_identity += 1
        return identity

    def parts(self, run: RunState, effect: Effect) -> EffectOutcome:
        identity = self._identity(run)
        time.sleep(0.002)  # a blocking call: other runs advance meanwhile
        for name in ("a", "b"):
            identity.record_part(name, run.run_id)
        return EffectOutcome.completed({"by": run.run_id})

    async def flaky(self, run: RunState, effect: Effect) -> EffectOutcome:
        identity = self._identity(run)
        await asyncio.sleep(0.001)
        with self.guard:
            first = identity.key not in self.failed_once
            self.failed_once.add(identity.key)
        return EffectOutcome.failed("blip") if first else EffectOutcome.completed({"attempt": identity.attempt})


def _count(runtime: Any, run_ids: list[str], stats: PositionStats) -> None:
    """Add what the ledgers of ``run_ids`` (and their children) show to ``stats``."""
    c = stats.counts
    for run_id in run_ids:
        c["parents"] += 1
        state = runtime.get_state(run_id)
        if state.status is not RunStatus.COMPLETED:
            c["not_completed"] += 1
            stats.failures.append(f"{run_id}: {state.status.value} {state.error}")
            continue
        ledger = runtime.get_ledger(run_id)
        starts = [r for r in ledger if (r.get("effect") or {}).get("type") == "start_subworkflow"
                  and r.get("status") == "completed"]
        children = [r["result"]["sub_run_id"] for r in starts]
        c["children"] += len(children)
        expected = [child_run_id(run_id, positional_key(run_id, r["effect_id"])) for r in starts]
        wrong = sum(1 for got, want in zip(children, expected) if got != want) + abs(2 - len(children))
        c["children_not_positional"] += wrong
        if len(set(children)) < len(children):
            c["parents_reusing_a_child"] += 1
        for child_id in set(children):
            child = runtime.get_state(child_id)
            if child.status is not RunStatus.COMPLETED or child.parent_run_id != run_id:
                c["not_completed"] += 1
                stats.failures.append(f"{child_id}: {child.status.value}, parent {child.parent_run_id}")
        parts = [r for r in ledger if r.get("kind") == "part"]
        c["parts"] += len(parts)
        if len(parts) != 2 or {r["run_id"] for r in parts} != {run_id}:
            c["parts_misplaced"] += 1
        flaky = [r for r in ledger if (r.get("effect") or {}).get("type") == "tool_calls"
                 and r.get("status") in ("failed", "completed")]
        c["retries"] += sum(1 for r in flaky if r["status"] == "failed")
        keys = {r["idempotency_key"] for r in flaky}
        if ([(r["status"], r["attempt"]) for r in flaky] != [("failed", 1), ("completed", 2)]
                or keys != {positional_key(run_id, flaky[0]["effect_id"])}):
            c["retries_wrong"] += 1
            stats.failures.append(f"{run_id}: retries {[(r['status'], r['attempt']) for r in flaky]} keys {keys}")


def positions_battery(root: Path, *, store_url: Optional[str] = None, rounds: int = 4) -> PositionStats:
    """``rounds`` rounds of :data:`CONCURRENCY` parents on a folder store under ``root`` (or the
    PostgreSQL store at ``store_url``); see the module's docstring for what is counted."""
    stats = PositionStats(store="postgresql" if store_url else "folder")
    parent, child = _workflows()
    registry = WorkflowRegistry()
    registry.register(parent)
    registry.register(child)
    handlers = _Handlers()
    store = open_store(store_url) if store_url else open_store(root / "store", durability="none")
    try:
        runtime = store.runtime(
            workflow_registry=registry,
            effect_policy=DefaultEffectPolicy(default_max_attempts=2, default_backoff_base=0.0),
            effect_handlers={EffectType.LLM_CALL: handlers.parts, EffectType.TOOL_CALLS: handlers.flaky})
        for n in range(rounds):
            run_ids = [f"r{n}p{k}" for k in range(CONCURRENCY)]
            for run_id in run_ids:
                runtime.start(workflow=parent, run_id=run_id)
            if n % 2 == 0:
                result = asyncio.run(advance_many(runtime, [(parent, r) for r in run_ids], concurrency=CONCURRENCY))
                stats.failures += [f"{k}: {v}" for k, v in result.errors.items()]
            else:
                scheduler = Scheduler(runtime=runtime, registry=registry, batch_size=CONCURRENCY,
                                      on_run_failed=lambda run_id, exc: stats.failures.append(f"{run_id}: {exc}"))
                scheduler.work_pass(limit=3 * CONCURRENCY, concurrency=CONCURRENCY)
            _count(runtime, run_ids, stats)
            stats.rounds += 1
        stats.counts["wrong_identity"] = handlers.wrong_identity
    finally:
        store.close()
    return stats
