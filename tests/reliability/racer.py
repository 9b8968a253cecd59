"""A long-lived worker process for the concurrency battery.

    python -m tests.reliability.racer ROOT

Reads commands on stdin, one per line, and answers one line each on stdout:

- ``resume RUN_ID WAIT_KEY`` → ``OK <status>`` or ``ERR <ErrorClass>``
- ``tick_due NOW_ISO`` → ``OK <run ids advanced, comma-separated>`` (scheduler ``tick_due``
  with a clock standing at NOW_ISO)

The parent writes the same command to every worker at once, so they race for the run lock.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import AbstractRuntimeError
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry
from abstractruntime.scheduler.scheduler import Scheduler
from abstractruntime.storage.store import FileStore


def event_workflow() -> WorkflowSpec:
    """Waits on ``evt:go`` then completes."""
    return WorkflowSpec("race_evt", "w", {
        "w": lambda run, ctx: StepPlan("w", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "evt:go"},
                                                         result_key="evt"), next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"evt": run.vars.get("evt")}),
    })


def timer_workflow() -> WorkflowSpec:
    """Waits until ``vars["until"]`` then completes."""
    return WorkflowSpec("race_timer", "t", {
        "t": lambda run, ctx: StepPlan("t", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]},
                                                         result_key="timer"), next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"timer": run.vars.get("timer")}),
    })


def registry() -> WorkflowRegistry:
    """Both race workflows."""
    reg = WorkflowRegistry()
    reg.register(event_workflow())
    reg.register(timer_workflow())
    return reg


def serve(root: Path, durability: str = "fsync") -> None:
    """Answer commands until stdin closes."""
    store = FileStore(root, durability=durability)  # type: ignore[arg-type]
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    rt = Runtime(run_store=store.runs, ledger_store=store.ledger, workflow_registry=registry(), clock=clock)
    scheduler = Scheduler(runtime=rt, registry=registry())
    print("READY", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        reply: Any
        try:
            if parts[0] == "resume":
                state = rt.resume(workflow=event_workflow(), run_id=parts[1], wait_key=parts[2],
                                  payload={"from": parts[3] if len(parts) > 3 else "?"})
                reply = f"OK {state.status.value}"
            elif parts[0] == "tick_due":
                clock.set(parts[1])
                advanced = scheduler.tick_due(limit=1000)
                reply = "OK " + ",".join(s.run_id for s in advanced)
            else:
                reply = f"ERR unknown-command {parts[0]}"
        except AbstractRuntimeError as exc:
            reply = f"ERR {type(exc).__name__}"
        except Exception as exc:  # reported, and the parent's test fails on it
            reply = f"ERR unexpected {type(exc).__name__}: {exc}".replace("\n", " ")
        print(reply, flush=True)
    store.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), *(sys.argv[2:3]))
