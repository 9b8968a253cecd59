"""The SIGTERM battery: two `worker --concurrency 3` processes whose handlers are synchronous,
stopped with SIGTERM again and again, each replaced at once (a rolling restart: the new worker
starts while the old one stops), over runs of many iterations.

Each effect's handler logs ``B key pid t`` when it begins and ``E key pid t`` when it ends
(``t`` on the system-wide monotonic clock) and records a part half way. Most workers get the
default ``--grace`` (their handlers finish: exit 0); every fourth one gets ``--grace 0.02``, so
a handler in hand outlives it and the worker ends with exit 143, its threads with it. Checks:

- every ledger verifies (none corrupt: no missing seq, no broken chain);
- no effect ran in two workers at once: an execution lasts from its ``B`` to its ``E``, or, in
  a worker that exited 143 before its ``E``, to that worker's death; no other worker's ``B`` of
  the same effect falls inside;
- no effect ran more often than once plus once per worker that died (143) after it began it
  (inside the handler, or before its result was committed: the documented window);
- every run completes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CLI = str(Path(sys.executable).parent / "abstractruntime")
# A worker that exits 143 is seen dead this long after its real death at most (wait() returns at
# once): a begin in another worker this close after is not counted as running beside it.
DEATH_SLACK = 0.02

FLOW = textwrap.dedent('''
    import os, random, time
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, current_effect

    LONGEST = float(os.environ.get("SIGTERM_EFFECT_SECONDS", "0.12"))

    def _log(tag, key):
        with Path(os.environ["SIGTERM_LOG"]).open("a") as out:
            out.write(f"{tag} {key} {os.getpid()} {time.monotonic():.6f}\\n")

    def work(run, effect):
        key = current_effect().key
        _log("B", key)
        time.sleep(random.uniform(0, LONGEST) / 2)
        current_effect().record_part("half", run.vars["i"])
        time.sleep(random.uniform(0, LONGEST) / 2)
        _log("E", key)
        return EffectOutcome.completed({"i": run.vars["i"]})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    def count(run, ctx):
        run.vars["i"] += 1
        return StepPlan("count", next_node="work" if run.vars["i"] < run.vars["n"] else "end")

    workflow = WorkflowSpec("sigterm-loop", "work", {
        "work": lambda run, ctx: StepPlan("work", next_node="count",
                                          effect=Effect(EffectType.TOOL_CALLS, {"i": run.vars["i"]}, "r")),
        "count": count,
        "end": lambda run, ctx: StepPlan("end", complete_output={"i": run.vars["i"]}),
    })
''')


@dataclass
class SigtermStats:
    """What a SIGTERM battery did and found."""

    store: str = ""
    signals: int = 0
    exits: Counter[int] = field(default_factory=Counter)
    runs: int = 0
    completed: int = 0
    effects: int = 0
    executions: int = 0
    in_window: int = 0
    beyond_window: int = 0
    overlaps: int = 0
    corrupt: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return {"store": self.store, "signals": self.signals, "exits": dict(self.exits), "runs": self.runs,
                "completed": self.completed, "effects": self.effects, "executions": self.executions,
                "executed_again_in_window": self.in_window, "executed_again_beyond_window": self.beyond_window,
                "overlaps": self.overlaps, "corrupt_ledgers": self.corrupt, "failures": self.failures[:20],
                "seconds": round(self.seconds, 1)}


class _Workers:
    """Two worker slots; each restarted as soon as it exits."""

    def __init__(self, store: str, env: dict[str, str], rng: random.Random, lease: float) -> None:
        self.store, self.env, self.rng, self.lease = store, env, rng, lease
        self.procs: list[Optional[subprocess.Popen[bytes]]] = [None, None]
        self.started = 0
        self.deaths: dict[str, float] = {}  # pid -> when it was seen dead (exit 143 only)

    def spawn(self, slot: int) -> subprocess.Popen[bytes]:
        """Start a worker in ``slot`` (see :meth:`ready`)."""
        self.started += 1
        grace = "0.02" if self.started % 4 == 0 else "30"
        proc = self.procs[slot] = subprocess.Popen(
            [CLI, "--store", self.store, "worker", "--concurrency", "3", "--interval", "0.05", "--grace", grace,
             "--lease", str(self.lease)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env)
        return proc

    @staticmethod
    def ready(proc: subprocess.Popen[bytes]) -> None:
        """Wait until the worker works (a signal before that would find no handler of its own)."""
        assert proc.stderr is not None
        line = proc.stderr.readline().decode(errors="replace")
        if "worker started" not in line:
            raise AssertionError(f"the worker did not start: {line}{proc.stderr.read().decode(errors='replace')}")

    def replace(self, slot: int, stats: SigtermStats) -> None:
        """SIGTERM the worker in ``slot`` and start its replacement at once, as a rolling restart does."""
        old = self.procs[slot]
        assert old is not None
        old.send_signal(signal.SIGTERM)
        new = self.spawn(slot)
        self.reap(old, stats)
        self.ready(new)

    def reap(self, proc: subprocess.Popen[bytes], stats: SigtermStats) -> None:
        """Wait for a signalled worker to exit; note when it died."""
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            stats.failures.append(f"worker {proc.pid} did not stop within 90 s of SIGTERM")
        seen = time.monotonic()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr is not None else ""
        if proc.stderr is not None:
            proc.stderr.close()
        stats.exits[code] += 1
        if code == 143:
            self.deaths[str(proc.pid)] = seen
        elif code != 0:
            stats.failures.append(f"worker {proc.pid} exited {code}: {err[-400:]}")

    def close(self, stats: SigtermStats) -> None:
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                self.reap(proc, stats)


def sigterm_battery(root: Path, *, store_url: Optional[str] = None, signals: int = 100, runs: int = 12,
                    iterations: int = 40, seed: int = 0, effect_seconds: float = 0.12,
                    lease: float = 2.0) -> SigtermStats:
    """Run the battery on a folder store under ``root`` (or the PostgreSQL ``store_url``)."""
    from abstractruntime import open_store
    from abstractruntime.loader import load_workflow_file

    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    flow = root / "sigterm_flow.py"
    flow.write_text(FLOW)
    log = root / "effects.log"
    log.touch()
    store_arg = store_url or str(root / "store")
    stats = SigtermStats(store="postgresql" if store_url else "folder")
    env = {**os.environ, "SIGTERM_LOG": str(log), "SIGTERM_EFFECT_SECONDS": str(effect_seconds),
           "ABSTRACTRUNTIME_WORKFLOWS": str(root / "*.py")}
    env.pop("ABSTRACTRUNTIME_STORE", None)
    store = open_store(store_arg)
    loaded = load_workflow_file(flow)
    runtime = store.runtime()
    run_ids: list[str] = []

    def add_runs() -> None:
        for _ in range(runs):
            run_id = f"s{len(run_ids)}"
            runtime.start(workflow=loaded.workflow, run_id=run_id, vars={"i": 0, "n": iterations})
            run_ids.append(run_id)

    add_runs()
    rng = random.Random(seed)
    workers = _Workers(store_arg, env, rng, lease)
    try:
        for slot in (0, 1):
            workers.ready(workers.spawn(slot))
        while stats.signals < signals:
            time.sleep(rng.uniform(0.15, 0.6))
            workers.replace(rng.randrange(2), stats)
            stats.signals += 1
            if stats.signals % 10 == 0 and not _unfinished(store, run_ids):
                add_runs()  # keep the workers busy until every signal was sent
        deadline = time.monotonic() + 600
        while _unfinished(store, run_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        workers.close(stats)
    stats.runs = len(run_ids)
    left = _unfinished(store, run_ids)
    stats.completed = len(run_ids) - len(left)
    if left:
        stats.failures.append(f"{len(left)} run(s) not completed: {left[:5]}")
    _check_ledgers(store, run_ids, stats)
    store.close()
    _check_executions(log, workers.deaths, stats)
    stats.seconds = time.monotonic() - started
    return stats


def _unfinished(store: Any, run_ids: list[str]) -> list[str]:
    from abstractruntime.core.models import RunStatus

    runtime = store.runtime()
    left = []
    for run_id in run_ids:
        try:
            if runtime.get_state(run_id).status is not RunStatus.COMPLETED:
                left.append(run_id)
        except Exception:  # a corrupt run is counted by the ledger check
            left.append(run_id)
    return left


def _check_ledgers(store: Any, run_ids: list[str], stats: SigtermStats) -> None:
    if hasattr(store, "db"):
        from abstractruntime.storage.postgres.verify import verify_run
    else:
        from abstractruntime.storage.verify import verify_run
    for run_id in run_ids:
        try:
            report = verify_run(store, run_id)
            ok = report.ok
            problems = [p.type for p in report.problems]
        except Exception as exc:  # CorruptRecordError and the like: a corrupt ledger
            ok, problems = False, [f"{type(exc).__name__}: {exc}"]
        if not ok:
            stats.corrupt += 1
            stats.failures.append(f"run {run_id} does not verify: {problems[:3]}")


def _check_executions(log: Path, deaths: dict[str, float], stats: SigtermStats) -> None:
    begins: dict[str, list[tuple[str, float]]] = defaultdict(list)
    ends: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue  # a line cut by a worker's exit
        tag, key, pid, at = parts
        if tag == "B":
            begins[key].append((pid, float(at)))
        elif tag == "E":
            ends[(key, pid)].append(float(at))
    stats.effects = len(begins)
    for key, runs in begins.items():
        stats.executions += len(runs)
        runs.sort(key=lambda run: run[1])
        intervals = []
        for pid, began in runs:
            finished = [e for e in ends.get((key, pid), []) if e >= began]
            if finished:
                intervals.append((pid, began, min(finished)))
            elif pid in deaths:
                intervals.append((pid, began, deaths[pid] - DEATH_SLACK))
            else:
                stats.failures.append(f"effect {key}: began in worker {pid}, which neither ended it nor died")
        # An execution may be repeated when its worker died (143) before its outcome was recorded:
        # during the handler, or between its end and the commit of its result.
        died_inside = sum(1 for pid, began in runs[:-1] if deaths.get(pid, -1.0) >= began)
        extra = len(runs) - 1
        stats.in_window += min(extra, died_inside)
        if extra > died_inside:
            stats.beyond_window += extra - died_inside
            stats.failures.append(f"effect {key} ran {len(runs)} times, {died_inside} worker death(s) inside it: "
                                  f"{[(pid, began, ends.get((key, pid))) for pid, began in runs]}")
        for pid, began, ended in intervals:
            for other, other_began, _ in intervals:
                if other != pid and began < other_began < ended:
                    stats.overlaps += 1
                    stats.failures.append(f"effect {key} began in worker {other} while worker {pid} ran it")


__all__ = ["SigtermStats", "sigterm_battery"]
