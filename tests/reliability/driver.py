"""Drives one ``crashy`` (or ``agent``, or code-first) run to completion; the kill loop runs it as a subprocess and kills it.

    python -m tests.reliability.driver ROOT RUN_ID T0 [--die-at-op N] [--workload graph|agent|flow]

Prints ``READY`` once imported and the store is open, ``DURABLE <seq> <hash>`` after every
``start``/``tick``/``resume`` that returned (the ledger head its checkpoint reflects: a step
the caller was told about), and ``DONE <status>`` at the end. Restarting it continues the
run from whatever is on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from abstractruntime.core.clock import parse_iso, utc_now
from abstractruntime.core.errors import RunNotFoundError
from abstractruntime.core.models import RunState, RunStatus, WaitReason
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.store import FileStore

from . import fsops, workload, workload_flow

TICK_STEPS = 3


WORKLOADS = ("graph", "agent", "flow")


def make_runtime(store: FileStore, log: workload.EffectLog, kind: str = "graph") -> Runtime:
    """A runtime over ``store`` with the workload's handlers, policy and registry."""
    if kind == "agent":
        return Runtime(run_store=store.runs, ledger_store=store.ledger, effect_handlers=workload.agent_handlers(log),
                       effect_policy=workload.policy())
    registry = workload_flow.registry() if kind == "flow" else workload.registry()
    return Runtime(run_store=store.runs, ledger_store=store.ledger, effect_handlers=workload.handlers(log),
                   effect_policy=workload.policy(), workflow_registry=registry)


def drive(root: Path, run_id: str, t0: str, log_path: Path, out: TextIO,
          *, durability: str = "fsync", on_ready: Optional[Callable[[], None]] = None, kind: str = "graph") -> RunState:
    """Start (if needed) and advance the run until it completes or fails; report durable steps.

    ``kind``: the graph workload (``crashy``), an agent's conversation (``agent``) or the code-first
    twin of ``crashy`` (``flow``)."""
    store = FileStore(root, durability=durability)  # type: ignore[arg-type]
    try:
        log = workload.EffectLog(log_path)
        rt = make_runtime(store, log, kind)
        workload_flow.use_log(log)
        spec: Any = {"agent": workload.agent_spec, "flow": lambda: workload_flow.crashy_flow}.get(
            kind, workload.parent_spec)()
        first_vars = workload.agent_vars() if kind == "agent" else {"t0": t0}
        out.write("READY\n")
        out.flush()
        if on_ready is not None:
            on_ready()

        def durable() -> None:
            head = rt.get_checkpoint(run_id).ledger
            out.write(f"DURABLE {head.seq} {head.head_hash}\n")
            out.flush()

        try:
            state = rt.get_state(run_id)
        except RunNotFoundError:
            rt.start(workflow=spec, vars=first_vars, run_id=run_id)
            durable()
            state = rt.get_state(run_id)
        while not state.status.is_terminal:
            wait = state.waiting
            if state.status is RunStatus.WAITING and wait is not None:
                reason = WaitReason(wait.reason)
                if reason is WaitReason.UNTIL:
                    delay = (parse_iso(wait.until or t0) - utc_now()).total_seconds()
                    if delay > 0:
                        time.sleep(delay)
                    state = rt.tick(workflow=spec, run_id=run_id, max_steps=TICK_STEPS)
                else:
                    state = rt.resume(workflow=spec, run_id=run_id, wait_key=wait.wait_key,
                                      payload=workload.answer_for(state), max_steps=TICK_STEPS)
            else:
                state = rt.tick(workflow=spec, run_id=run_id, max_steps=TICK_STEPS)
            durable()
        out.write(f"DONE {state.status.value}\n")
        out.flush()
        return state
    finally:
        store.close()


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the subprocess."""
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("t0")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--die-at-op", type=int, default=0)
    parser.add_argument("--workload", choices=WORKLOADS, default="graph")
    args = parser.parse_args(argv)
    guard = fsops.die_at_op(args.die_at_op) if args.die_at_op > 0 else contextlib.nullcontext()
    with guard:
        drive(args.root, args.run_id, args.t0, args.log, sys.stdout, kind=args.workload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
