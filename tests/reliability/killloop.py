"""The kill -9 loop: run the driver in a subprocess, SIGKILL it at random moments, restart it.

Each *episode* is one ``crashy`` run in a fresh store. The driver is killed either after a
random delay (``timer``) or by itself right after its N-th mutating file operation
(``op``: lands exactly inside crash windows such as "ledger appended, checkpoint not yet
replaced"), then restarted, until the run completes. After every kill:

- every file of the store loads and :func:`verify_run` finds no problem;
- every step a driver reported as ``DURABLE <seq> <hash>`` is still in the ledger with that
  hash, and the checkpoint reflects at least that seq;
- no effect whose completed record was on disk has been executed since.

At the end the run's state and output equal those of an uncrashed reference run.

``workload="agent"`` drives an agent's loop instead (:func:`workload.agent_spec`: a model call
with the whole conversation and a tool call per turn): at the end its conversation must equal
the uncrashed run's, message for message.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from abstractruntime.core.clock import to_iso, utc_now
from abstractruntime.storage.store import FileStore

from . import checks, driver, fsops, workload

PACKAGE = __package__ or "tests.reliability"
# The directory from which ``python -m <PACKAGE>.driver`` imports.
IMPORT_BASE = Path(__file__).resolve().parents[len(PACKAGE.split("."))]
MAX_PROCESSES_PER_EPISODE = 300
# A child forked by one thread shares the open file descriptions of the parent until it execs,
# flock locks included; so the in-process reference run must not overlap another thread's fork
# (it would see its own run "locked by another writer").
_FORK_GUARD = threading.Lock()


@dataclass
class KillStats:
    """What a kill loop did and found."""

    kills: int = 0
    timer_kills: int = 0
    op_kills: int = 0
    processes: int = 0
    episodes: int = 0
    completed: int = 0
    durable_checked: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    reexecuted_in_flight: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class _Calibration:
    run_seconds: float
    ops: int


def calibrate(workdir: Path, kind: str = "graph") -> _Calibration:
    """Time one uncrashed fsync run in-process and count its mutating file operations."""
    target = workdir / "calibration"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    guard, counter = fsops.count_ops()
    started = time.perf_counter()
    with guard:
        driver.drive(target / "store", "calibrate", to_iso(utc_now()), target / "effects.log", io.StringIO(),
                     kind=kind)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target, ignore_errors=True)
    return _Calibration(run_seconds=elapsed, ops=counter["ops"])


def reference_state(workdir: Path, run_id: str, t0: str, kind: str = "graph") -> dict[str, Any]:
    """Final parent and child state of an uncrashed run with the same id and ``t0``."""
    target = workdir / f"reference-{run_id}"
    shutil.rmtree(target, ignore_errors=True)
    with _FORK_GUARD:
        driver.drive(target / "store", run_id, t0, target / "effects.log", io.StringIO(), durability="none",
                     kind=kind)
    result = final_state(target / "store", run_id)
    shutil.rmtree(target, ignore_errors=True)
    return result


def final_state(root: Path, run_id: str) -> dict[str, Any]:
    """What must match the reference: status, node, vars and output of the run and its child."""
    store = FileStore(root, durability="none")
    try:
        runtime = store.runtime()
        children = [child.run_id for child in store.runs.list_children(parent_run_id=run_id)]
        assert len(children) <= 1, children  # crashy has one child, the agent's loop none
        out = {}
        for rid in (run_id, *children):
            run = runtime.get_state(rid)
            out[rid] = {"status": run.status.value, "current_node": run.current_node, "vars": run.vars,
                        "output": run.output, "error": run.error}
        return out
    finally:
        store.close()


def _spawn(root: Path, run_id: str, t0: str, log: Path, die_at: int, kind: str = "graph") -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", f"{PACKAGE}.driver", str(root), run_id, t0, "--log", str(log), "--workload", kind]
    if die_at:
        cmd += ["--die-at-op", str(die_at)]
    with _FORK_GUARD:
        return subprocess.Popen(cmd, cwd=IMPORT_BASE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_episode(workdir: Path, index: int, rng: random.Random, stats: KillStats, calib: _Calibration,
                kill_budget: int, kind: str = "graph") -> None:
    """One run, killed and restarted until it completes (or the kill budget is spent)."""
    episode = workdir / f"ep{index}"
    root, log = episode / "store", episode / "effects.log"
    episode.mkdir(parents=True)
    run_id = f"{'crashy' if kind == 'graph' else kind}-{index}"
    t0 = to_iso(utc_now() + timedelta(seconds=0.05))
    effect_log = workload.EffectLog(log)
    acked: dict[int, str] = {}
    frozen: dict[str, int] = {}  # key -> executions when its completed record was first seen
    allowance: dict[str, int] = {}  # key -> kills that hit while the effect was inside its window
    done = False
    processes = 0
    kills_here = 0
    while not done and processes < MAX_PROCESSES_PER_EPISODE:
        processes += 1
        stats.processes += 1
        out_budget_spent = kills_here >= kill_budget
        mode = "none" if out_budget_spent else rng.choice(("timer", "op"))
        # Short lives (a third of a run at most) give several kills per episode.
        proc = _spawn(root, run_id, t0, log, rng.randint(1, max(1, calib.ops // 3)) if mode == "op" else 0, kind)
        lines: list[str] = []
        if mode == "timer":
            # Unbuffered: communicate() reads the raw pipe, so nothing may sit in a buffer.
            first = proc.stdout.raw.readline().decode() if proc.stdout else ""  # type: ignore[attr-defined]
            lines.append(first.strip())
            if first.startswith("READY"):
                time.sleep(rng.uniform(0.0, calib.run_seconds / 3))
            proc.kill()
        stdout, stderr = proc.communicate(timeout=120)
        lines += stdout.decode().split("\n")
        if proc.returncode == -9:
            for key in checks.in_flight_effect_keys(root):
                allowance[key] = allowance.get(key, 0) + 1
            kills_here += 1
            stats.kills += 1
            if mode == "timer":
                stats.timer_kills += 1
            else:
                stats.op_kills += 1
        elif proc.returncode == 0 and any(line.startswith("DONE") for line in lines):
            done = True
        else:
            stats.failures.append(f"episode {index}: driver exited {proc.returncode}: {stderr.decode()[-2000:]}")
            return
        for line in lines:
            if line.startswith("DURABLE"):
                _, seq, digest = line.split()
                if acked.get(int(seq), digest) != digest:
                    stats.failures.append(f"episode {index}: seq {seq} reported durable with two hashes")
                acked[int(seq)] = digest
        problems = checks.store_problems(root) + checks.durable_problems(root, run_id, acked)
        stats.durable_checked += len(acked)
        counts = effect_log.executions()
        for key in checks.completed_effect_keys(root):
            frozen.setdefault(key, counts.get(key, 0))
        for key, seen in frozen.items():
            if counts.get(key, 0) != seen:
                stats.duplicate_effects += counts.get(key, 0) - seen
                problems.append(f"completed effect {key} executed again ({seen} -> {counts.get(key, 0)})")
                frozen[key] = counts.get(key, 0)
        if problems:
            stats.lost += sum("lost" in p or "behind" in p for p in problems)
            stats.failures.extend(f"episode {index}, process {processes} ({mode}): {p}" for p in problems)
    stats.episodes += 1
    if not done:
        stats.failures.append(f"episode {index}: run did not complete after {processes} processes")
        return
    stats.completed += 1
    expected = reference_state(workdir, run_id, t0, kind)
    got = final_state(root, run_id)
    if got != expected:
        stats.failures.append(f"episode {index}: final state differs from the reference run:\n"
                              f"  got      {_short(got)}\n  expected {_short(expected)}")
    counts = effect_log.executions()
    # Executions of each counted effect or step in an uncrashed run.
    base = {"tool": 1, "flaky": 2, "model": 1, "agent_tool": 1, "step": 1, "flakystep": 2}
    kinds = {f[3]: f[0] for f in effect_log.lines()}
    for key, n in counts.items():
        extra = n - base[kinds[key]]
        stats.reexecuted_in_flight += max(0, extra)
        beyond = extra - allowance.get(key, 0)
        if beyond > 0:
            stats.duplicate_effects += beyond
            stats.failures.append(f"episode {index}: effect {key} ran {n} times: {beyond} more than its base "
                                  f"{base[kinds[key]]} plus {allowance.get(key, 0)} kill(s) inside its window")
    shutil.rmtree(episode, ignore_errors=True)


def _short(state: Any) -> str:
    """A state for a failure message (an agent's conversation is long)."""
    text = repr(state)
    return text if len(text) <= 4000 else text[:2000] + " … " + text[-2000:]


def _merge(total: KillStats, part: KillStats) -> None:
    for name, value in part.__dict__.items():
        if isinstance(value, int) and name != "seconds":
            setattr(total, name, getattr(total, name) + value)
    total.failures.extend(part.failures)


def kill_loop(workdir: Path, *, kills: int, seed: int = 0, max_kills_per_episode: int = 40,
              workers: int = 2, kind: str = "graph") -> KillStats:
    """Kill and restart drivers until ``kills`` kills happened; every run must still finish right.

    ``workers`` episodes run side by side (the drivers mostly wait on fsync). ``kind``: the
    graph workload ``crashy`` (every kind of effect), ``agent`` (an agent's conversation), or the
    code-first twin of ``crashy`` (``flow``: tests/reliability/workload_flow.py).
    """
    stats = KillStats()
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    calib = calibrate(workdir, kind)
    lock = threading.Lock()
    counter = {"next": 0, "claimed": 0}

    def worker() -> None:
        while True:
            with lock:
                if counter["claimed"] >= kills or stats.failures:
                    return
                index = counter["next"]
                counter["next"] += 1
                budget = min(max_kills_per_episode, kills - counter["claimed"])
                counter["claimed"] += budget
            part = KillStats()
            try:
                run_episode(workdir, index, random.Random(seed * 100003 + index), part, calib, budget, kind)
            except Exception as exc:  # a harness error must fail the battery, not vanish with the thread
                part.failures.append(f"episode {index}: {type(exc).__name__}: {exc}")
            with lock:
                _merge(stats, part)
                # Kills not spent (the run completed first) go back to the pool.
                counter["claimed"] -= budget - part.kills

    threads = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats.seconds = time.perf_counter() - started
    return stats


def main(argv: Optional[list[str]] = None) -> int:  # pragma: no cover - convenience
    """``python -m tests.reliability.killloop KILLS``."""
    import json
    import tempfile

    kills = int((argv or sys.argv[1:] or ["20"])[0])
    with tempfile.TemporaryDirectory() as tmp:
        stats = kill_loop(Path(tmp), kills=kills)
    print(json.dumps(stats.to_dict(), indent=2))
    return 0 if not stats.failures else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
