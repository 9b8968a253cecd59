"""Runs to prune and archive, the same on a folder store and a PostgreSQL store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.spec import WorkflowSpec

# A clock two months ahead: every run finished "long ago" for a 30-day prune.
LATER = datetime.now(timezone.utc) + timedelta(days=60)


def later() -> datetime:
    """The clock :func:`prune_store` is given in tests."""
    return LATER


def ask_workflow() -> WorkflowSpec:
    """Asks once, then completes with the answer."""
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Go?"}, result_key="reply"),
                        next_node="done")

    return WorkflowSpec("retention", "ask", {
        "ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={"reply": run.vars.get("reply")})})


def failing_workflow() -> WorkflowSpec:
    """Fails at its first node."""
    def boom(run: RunState, ctx: Any) -> StepPlan:
        raise RuntimeError("boom")

    return WorkflowSpec("retention-fails", "boom", {"boom": boom})


def fill(store: Any) -> dict[str, str]:
    """Runs of every kind: ``{run_id: what it is}``."""
    rt = store.runtime()
    wf = ask_workflow()
    kinds = {}
    for run_id in ("done-1", "done-2", "done-3"):
        rt.start(workflow=wf, run_id=run_id)
        rt.tick(workflow=wf, run_id=run_id)
        rt.resume(workflow=wf, run_id=run_id, payload={"answer": f"yes {run_id}"})
        kinds[run_id] = "completed"
    rt.start(workflow=wf, run_id="waiting-1")
    rt.tick(workflow=wf, run_id="waiting-1")
    kinds["waiting-1"] = "waiting"
    rt.start(workflow=wf, run_id="cancelled-1")
    rt.cancel_run("cancelled-1")
    kinds["cancelled-1"] = "cancelled"
    bad = failing_workflow()
    rt.start(workflow=bad, run_id="failed-1")
    try:
        rt.tick(workflow=bad, run_id="failed-1")
    except Exception:
        pass
    kinds["failed-1"] = "failed"
    return kinds


def heads(store: Any, run_ids: list[str]) -> dict[str, str]:
    """Each run's ledger head hash."""
    return {r: str(store.ledger.head(r).head_hash) for r in run_ids}


def run_start(store: Any, run_id: str) -> Callable[[], str]:
    """A callable that starts ``run_id`` again (what a pruned id must refuse)."""
    return lambda: store.runtime().start(workflow=ask_workflow(), run_id=run_id)
