"""Kills at every step of `resume`, `emit` and `emit --hand-off`: no run is left stuck.

For each command and each N, a fresh run waits on an event; the command answers it and is
killed (SIGKILL, by itself: :mod:`.killpoint`) right after its N-th write to the store — a
ledger append, a checkpoint, an index row, an event-log row, a wake-up — until a command runs to
its end. After each kill:

- `runs list` shows the run as its ledger says (`runs show`);
- one `worker --once` pass later the run is completed, or — when the answer never became
  durable — still waits on the same wait, and the same command, run again, completes it;
- the run verifies, and its effect ran once (plus once if the kill landed inside it).

A run that is neither is *stuck* (answered in the ledger, waiting in its
row, and no worker ever claiming it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .killloop import IMPORT_BASE, PACKAGE

CLI = str(Path(sys.executable).parent / "abstractruntime")
COMMANDS = ("resume", "emit", "emit --hand-off", "emit --hand-off --id")

FLOW = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, current_effect

    def work(run, effect):
        with Path(os.environ["STUCK_LOG"]).open("a") as out:
            out.write(f"{run.run_id} {current_effect().key}\\n")
        return EffectOutcome.completed({"done": True})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    workflow = WorkflowSpec("stuck-check", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="work", effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go:" + run.run_id}, "go")),
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"go": run.vars["go"], "r": run.vars["r"]}),
    })
''')


@dataclass
class StuckStats:
    """What the battery did and found."""

    store: str = ""
    kills: Counter[str] = field(default_factory=Counter)
    steps: dict[str, int] = field(default_factory=dict)
    answered_before_kill: int = 0
    retried: int = 0
    stuck: int = 0
    listed_wrong: int = 0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return {"store": self.store, "kills": dict(self.kills), "kills_total": sum(self.kills.values()),
                "writes_per_command": self.steps, "answer_durable_at_kill": self.answered_before_kill,
                "command_retried": self.retried, "stuck": self.stuck, "runs_list_not_as_ledger": self.listed_wrong,
                "failures": self.failures[:20]}


def _cli(store: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--store", store, *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def _command(kind: str, run_id: str) -> list[str]:
    if kind == "resume":
        return ["resume", f"{run_id}@w1", "--payload", '{"ok": true}']
    args = ["emit", f"go:{run_id}", "--payload", '{"ok": true}']
    if "--hand-off" in kind:
        args.append("--hand-off")
    if "--id" in kind:
        args += ["--id", f"ev-{run_id}"]
    return args


def stuck_battery(root: Path, *, store_url: Optional[str] = None, max_steps: int = 40) -> StuckStats:
    """Run every command of :data:`COMMANDS`, killed after each of its writes in turn."""
    from abstractruntime import open_store
    from abstractruntime.loader import load_workflow_file

    root.mkdir(parents=True, exist_ok=True)
    flow = root / "stuck_flow.py"
    flow.write_text(FLOW)
    log = root / "effects.log"
    log.touch()
    store_arg = store_url or str(root / "store")
    env = {**os.environ, "STUCK_LOG": str(log), "ABSTRACTRUNTIME_WORKFLOWS": str(root / "*.py")}
    env.pop("ABSTRACTRUNTIME_STORE", None)
    stats = StuckStats(store="postgresql" if store_url else "folder")
    store = open_store(store_arg)
    loaded = load_workflow_file(flow)
    runtime = store.runtime(effect_handlers=loaded.effect_handlers)
    try:
        for kind in COMMANDS:
            for n in range(1, max_steps + 1):
                run_id = f"{kind.replace(' --', '-').replace(' ', '-')}-{n}"
                runtime.start(workflow=loaded.workflow, run_id=run_id)
                runtime.tick(workflow=loaded.workflow, run_id=run_id)
                steps = root / f"steps-{run_id}.log"
                killed = subprocess.run(
                    [sys.executable, "-m", f"{PACKAGE}.killpoint", str(n), "--log", str(steps), "--",
                     "--store", store_arg, *_command(kind, run_id)],
                    cwd=IMPORT_BASE, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
                if killed.returncode != -9:
                    if killed.returncode != 0:
                        stats.failures.append(f"{kind} ({run_id}) exited {killed.returncode}: {killed.stderr[-300:]}")
                    stats.steps[kind] = n - 1
                    _cli(store_arg, env, "worker", "--once")  # a handed-off run is the worker's
                    _check_done(store, runtime, run_id, log, kills=0, stats=stats)
                    break
                stats.kills[kind] += 1
                _check_after_kill(store, store_arg, env, runtime, kind, run_id, log, stats)
            else:
                stats.failures.append(f"{kind}: still killed after {max_steps} writes")
    finally:
        store.close()
    return stats


def _check_after_kill(store: Any, store_arg: str, env: dict[str, str], runtime: Any, kind: str, run_id: str,
                      log: Path, stats: StuckStats) -> None:
    listed = _cli(store_arg, env, "runs", "list", "--json", "--limit", "100000")
    rows = {r["run_id"]: r["status"] for r in json.loads(listed.stdout or "[]")} if listed.returncode == 0 else {}
    truth = runtime.get_state(run_id).status.value
    if rows.get(run_id) != truth:
        stats.listed_wrong += 1
        stats.failures.append(f"{kind} ({run_id}): runs list shows {rows.get(run_id)}, the ledger {truth}")
    answered = any(r.get("kind") == "resume" for r in runtime.get_ledger(run_id))
    stats.answered_before_kill += answered
    worker = _cli(store_arg, env, "worker", "--once")
    if worker.returncode != 0:
        stats.failures.append(f"{kind} ({run_id}): worker --once exited {worker.returncode}: {worker.stderr[-300:]}")
    state = runtime.get_state(run_id)
    if state.status.value != "completed":
        waiting_still = state.status.value == "waiting" and state.waiting is not None \
            and state.waiting.wait_id == "w1" and not answered
        if not waiting_still:
            stats.stuck += 1
            stats.failures.append(f"{kind} ({run_id}): {state.status.value} after a worker pass (answered: "
                                  f"{answered})")
            return
        stats.retried += 1
        again = _cli(store_arg, env, *_command(kind, run_id))
        if again.returncode != 0:
            stats.failures.append(f"{kind} ({run_id}): the retried command exited {again.returncode}: "
                                  f"{again.stderr[-300:]}")
        _cli(store_arg, env, "worker", "--once")
    _check_done(store, runtime, run_id, log, kills=1, stats=stats)


def _check_done(store: Any, runtime: Any, run_id: str, log: Path, *, kills: int, stats: StuckStats) -> None:
    state = runtime.get_state(run_id)
    if state.status.value != "completed":
        stats.stuck += 1
        stats.failures.append(f"{run_id}: {state.status.value} at the end")
    ran = sum(1 for line in log.read_text().splitlines() if line.split()[0] == run_id)
    if not 1 <= ran <= 1 + kills:
        stats.failures.append(f"{run_id}: its effect ran {ran} times ({kills} kill(s))")
    if hasattr(store, "db"):
        from abstractruntime.storage.postgres.verify import verify_run
    else:
        from abstractruntime.storage.verify import verify_run
    report = verify_run(store, run_id)
    if not report.ok:
        stats.failures.append(f"{run_id} does not verify: {[p.type for p in report.problems][:3]}")


__all__ = ["COMMANDS", "StuckStats", "stuck_battery"]
