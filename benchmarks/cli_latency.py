"""Latency of everyday CLI commands as ratios against ``abstractruntime --help`` in the same run.

Each repetition runs, as fresh processes and interleaved (so a noisy neighbour hits every
command alike): ``--help``; ``run WF --no-input`` (a run that stops on an ask_user wait);
``runs show RUN``; ``resume HANDLE --answer yes`` (to completion); ``run EVENT_WF`` then
``emit KEY --payload {}``. The medians are compared with the median of ``--help``: what a
command costs beyond starting the command line at all. Target: each ≤ 1.3× ``--help``.
The processes may write bytecode caches, as an installed package has them (an untimed first
round compiles); everything else is as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Optional

from . import harness

TARGET = 1.3
COMMANDS = ("run", "resume", "runs_show", "emit")

ASK_WORKFLOW = '''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def ask(run, ctx):
    return StepPlan("ask", next_node="done", effect=Effect(
        EffectType.ASK_USER, {"prompt": "Ship it?", "choices": ["yes", "no"], "allow_free_text": False},
        result_key="reply"))

def done(run, ctx):
    return StepPlan("done", complete_output={"ship": run.vars["reply"]["answer"] == "yes"})

workflow = WorkflowSpec("bench_cli_ask", entry_node="ask", nodes={"ask": ask, "done": done})
'''

EVENT_WORKFLOW = '''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def wait(run, ctx):
    return StepPlan("wait", next_node="done", effect=Effect(
        EffectType.WAIT_EVENT, {"wait_key": "bench:" + run.vars["key"]}, result_key="event"))

def done(run, ctx):
    return StepPlan("done", complete_output={"event": run.vars["event"]})

workflow = WorkflowSpec("bench_cli_event", entry_node="wait", nodes={"wait": wait, "done": done})
'''


def _command() -> Optional[list[str]]:
    from .ours_ops import cli_command

    return cli_command()


def _timed(cmd: list[str], env: dict[str, str], cwd: str, expect: int) -> tuple[float, str]:
    t0 = harness.clock()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          timeout=300)
    elapsed = harness.clock() - t0
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}: {proc.stderr.strip()[-400:]}")
    return elapsed, proc.stdout.strip()


def cli_latency(sizes: Any, work: str) -> dict[str, Any]:
    """Median seconds of each command and its ratio to ``--help``, all measured in this run."""
    cli = _command()
    if cli is None:
        return {"skipped": "the abstractruntime CLI is not installed"}
    root = Path(work) / "cli_latency"
    root.mkdir(parents=True, exist_ok=True)
    ask_file, event_file = root / "ask.py", root / "event.py"
    ask_file.write_text(ASK_WORKFLOW, encoding="utf-8")
    event_file.write_text(EVENT_WORKFLOW, encoding="utf-8")
    # An installed package has its bytecode compiled; without this, PYTHONDONTWRITEBYTECODE in
    # the runner's environment would make every process compile each recently edited module.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # The workflows are registered where an operator would: commands that continue a run find them there.
    env.update(ABSTRACTRUNTIME_STORE=str(root / "store"), ABSTRACTRUNTIME_WORKFLOWS=str(root), NO_COLOR="1")
    cwd = str(root)
    reps = max(5, int(getattr(sizes, "startup_reps", 5)))
    times: dict[str, list[float]] = {name: [] for name in ("help", *COMMANDS)}
    # One untimed round first: page cache, .pyc files, and the store's creation.
    for rep in range(reps + 1):
        samples: dict[str, float] = {}
        samples["help"], _ = _timed(cli + ["--help"], env, cwd, 0)
        samples["run"], handle = _timed(cli + ["run", str(ask_file), "--no-input"], env, cwd, 5)
        run_id = handle.split("@")[0]
        samples["runs_show"], _ = _timed(cli + ["runs", "show", run_id], env, cwd, 0)
        samples["resume"], _ = _timed(cli + ["resume", handle, "--answer", "yes"], env, cwd, 0)
        _timed(cli + ["run", str(event_file), "--var", f"key=k{rep}"], env, cwd, 5)
        samples["emit"], _ = _timed(cli + ["emit", f"bench:k{rep}", "--payload", "{}"], env, cwd, 0)
        if rep:
            for name, value in samples.items():
                times[name].append(value)
    help_s = harness.median(times["help"])
    out: dict[str, Any] = {"reps": reps, "help_seconds": help_s, "target_ratio": TARGET, "commands": {}}
    for name in COMMANDS:
        median = harness.median(times[name])
        out["commands"][name] = {"seconds": median, "ratio_to_help": median / help_s if help_s else None,
                                 "samples": times[name]}
    out["help_samples"] = times["help"]
    return out


LABELS = {"run": "run WF --no-input (to a wait)", "resume": "resume HANDLE --answer yes (to the end)",
          "runs_show": "runs show RUN", "emit": "emit KEY --payload {} (one run)"}


def rows(section: Any) -> list[Any]:
    """The report's rows for this scenario."""
    from .report import Row, _ok, _why, ms

    name = "CLI latency"
    if not _ok(section):
        return [Row(name, "commands", _why(section))] if section else []
    help_s = section["help_seconds"]
    out = [Row(name, "abstractruntime --help", ms(help_s))]
    for key in COMMANDS:
        entry = section["commands"][key]
        ratio = entry["ratio_to_help"]
        out.append(Row(name, LABELS[key], ms(entry["seconds"]), f"--help {ms(help_s)}", ratio,
                       f"≤ {TARGET}× --help", ratio is not None and ratio <= TARGET))
    return out


__all__ = ["cli_latency", "rows", "TARGET"]
