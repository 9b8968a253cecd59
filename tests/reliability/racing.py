"""Driving a pool of :mod:`.racer` processes: every worker gets the same command at once."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from abstractruntime.core.clock import FixedClock, parse_iso, to_iso
from abstractruntime.core.models import RunStatus
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.store import FileStore

from . import checks, racer
from .killloop import IMPORT_BASE, PACKAGE

T0 = "2030-01-01T00:00:00+00:00"


class Pool:
    """``n`` racer processes on one store."""

    def __init__(self, root: Path, n: int, durability: str = "fsync") -> None:
        self.procs = [subprocess.Popen([sys.executable, "-m", f"{PACKAGE}.racer", str(root), durability],
                                       cwd=IMPORT_BASE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       bufsize=1) for _ in range(n)]
        for proc in self.procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"

    def broadcast(self, command: str) -> list[str]:
        """Send ``command`` to all workers (as close together as we can), collect the replies."""
        for i, proc in enumerate(self.procs):
            assert proc.stdin is not None
            proc.stdin.write(command.replace("{i}", str(i)) + "\n")
            proc.stdin.flush()
        return [proc.stdout.readline().strip() for proc in self.procs]  # type: ignore[union-attr]

    def close(self) -> None:
        """Close stdin and reap the workers."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(timeout=30)


@dataclass
class RaceStats:
    """What a race battery saw."""

    rounds: int = 0
    applied: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return {"rounds": self.rounds, "applied": self.applied, "replies": dict(self.replies),
                "failures": self.failures}


def race_resume(root: Path, workers: int, rounds: int, durability: str = "fsync") -> RaceStats:
    """Each round: a fresh run waits on an event; every worker resumes it at once."""
    store = FileStore(root, durability=durability)  # type: ignore[arg-type]
    rt = Runtime(run_store=store.runs, ledger_store=store.ledger)
    wf = racer.event_workflow()
    pool = Pool(root, workers, durability)
    stats = RaceStats()
    try:
        for r in range(rounds):
            run_id = f"resume-{workers}-{r}"
            rt.start(workflow=wf, run_id=run_id)
            rt.tick(workflow=wf, run_id=run_id)
            replies = pool.broadcast(f"resume {run_id} evt:go w{{i}}")
            stats.rounds += 1
            stats.replies.update(replies)
            ok = [x for x in replies if x.startswith("OK")]
            bad = [x for x in replies if not x.startswith("OK") and x not in
                   ("ERR RunLockedError", "ERR RunNotWaitingError")]
            resumes = [rec for rec in checks.ledger_records(root, run_id) if rec.get("kind") == "resume"]
            state = rt.get_state(run_id)
            stats.applied += len(ok)
            if len(ok) != 1 or bad or len(resumes) != 1 or state.status is not RunStatus.COMPLETED:
                stats.failures.append(f"{run_id}: replies {replies}, {len(resumes)} resume records, "
                                      f"status {state.status.value}")
            elif state.output != {"evt": resumes[0]["result"]["payload"]}:
                stats.failures.append(f"{run_id}: output {state.output} is not the one applied resume")
            problems = checks.store_problems(root) if r % 10 == 0 or r == rounds - 1 else []
            stats.failures += problems
    finally:
        pool.close()
        store.close()
    return stats


def race_tick_due(root: Path, workers: int, rounds: int, runs_per_round: int = 5,
                  durability: str = "fsync") -> tuple[RaceStats, int]:
    """Each round: ``runs_per_round`` timers fall due; every worker runs ``tick_due`` at once.

    Returns the stats and how many times a run was *reported* advanced by more than one worker.
    """
    clock = FixedClock(T0)
    store = FileStore(root, durability=durability)  # type: ignore[arg-type]
    rt = Runtime(run_store=store.runs, ledger_store=store.ledger, clock=clock)
    wf = racer.timer_workflow()
    pool = Pool(root, workers, durability)
    stats = RaceStats()
    double_reports = 0
    try:
        for r in range(rounds):
            now = parse_iso(T0) + timedelta(hours=r)
            clock.set(now)
            ids = [f"due-{workers}-{r}-{i}" for i in range(runs_per_round)]
            for run_id in ids:
                rt.start(workflow=wf, run_id=run_id, vars={"until": to_iso(now + timedelta(minutes=1))})
                rt.tick(workflow=wf, run_id=run_id)
            replies = pool.broadcast(f"tick_due {to_iso(now + timedelta(minutes=2))}")
            stats.rounds += 1
            reported = Counter(x for reply in replies if reply.startswith("OK ")
                               for x in reply[3:].split(",") if x)
            stats.replies.update("OK" if x.startswith("OK") else x for x in replies)
            double_reports += sum(1 for n in reported.values() if n > 1)
            bad = [x for x in replies if not x.startswith("OK")]
            for run_id in ids:
                resumes = [rec for rec in checks.ledger_records(root, run_id) if rec.get("kind") == "resume"]
                state = rt.get_state(run_id)
                stats.applied += len(resumes)
                if len(resumes) != 1 or state.status is not RunStatus.COMPLETED or not reported[run_id]:
                    stats.failures.append(f"{run_id}: {len(resumes)} resume records, status "
                                          f"{state.status.value}, reported by {reported[run_id]} workers")
            if bad:
                stats.failures.append(f"round {r}: errors {bad}")
    finally:
        pool.close()
        store.close()
    return stats, double_reports
