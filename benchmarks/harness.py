"""Timing and measuring helpers shared by the runner and the baseline scripts (stdlib only).

Baseline scripts run in the bench venv with ``python -I``, so they can never import this
project's ``abstractruntime`` by accident (upstream 0.0.1 has the same import name); they put
the ``benchmarks/`` folder on ``sys.path`` to import this module and ``workloads`` only.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def read_spec() -> dict[str, Any]:
    """The scenario spec: a JSON object given as the only argument."""
    return json.loads(sys.argv[1])


def emit(result: dict[str, Any]) -> None:
    """Print the result document (the runner parses stdout as one JSON object)."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def run_json_script(python: str | os.PathLike[str], script: str | os.PathLike[str], spec: dict[str, Any], *,
                    cwd: str, timeout: float = 3600) -> dict[str, Any]:
    """Run a baseline ``script`` with ``python -I`` and ``spec`` as its argument; the JSON document
    it printed last, or ``{"error": ...}`` (exit status, timeout, no output)."""
    name = Path(script).name
    try:
        proc = subprocess.run([str(python), "-I", str(script), json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"{name} timed out"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{name} exited {proc.returncode}: {tail[0]}"}
    return json.loads(lines[-1])


def skipped(reason: str) -> None:
    """Report the whole baseline as skipped and exit 0."""
    emit({"skipped": reason})
    sys.exit(0)


def median(values: list[float]) -> float:
    """Median of ``values`` (0.0 when empty)."""
    return statistics.median(values) if values else 0.0


def repeat(times: int, fn: Callable[[int], float]) -> float:
    """Median of ``fn(rep)`` over ``times`` repetitions (each returns seconds)."""
    return median([fn(rep) for rep in range(times)])


def step_gaps(stamps: list[float], skip: int = 5) -> float:
    """Median gap between consecutive timestamps, ignoring the first ``skip`` (warm-up)."""
    gaps = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1:])]
    return median(gaps)


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the regular files under ``path`` (or of ``path`` itself)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def sqlite_bytes(path: str) -> int:
    """A SQLite database's size on disk including its WAL and shared-memory files."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm", path + "-journal")
               if os.path.exists(p))


def clock() -> float:
    """A monotonic high-resolution clock."""
    return time.perf_counter()


def time_functions(phases: Any, record: Callable[[str, float], None]) -> list[Callable[[], None]]:
    """Wrap each ``(label, module, "name" or "Class.name")`` of ``phases`` with a clock that calls
    ``record(label, seconds)`` after every call; returns the functions that put the originals back."""
    import importlib

    undo: list[Callable[[], None]] = []
    for label, module_name, attr in phases:
        module = importlib.import_module(module_name)
        owner: Any = module
        name = attr
        if "." in attr:
            owner, name = getattr(module, attr.split(".")[0]), attr.split(".")[1]
        original = getattr(owner, name)

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                record(_label, time.perf_counter() - start)

        setattr(owner, name, timed)
        undo.append(lambda owner=owner, name=name, original=original: setattr(owner, name, original))
    return undo


def state_at_times(store: Any, run_id: str, samples: int, seed: int) -> tuple[int, list[float]]:
    """The run's head seq, and the seconds ``state_at`` took at ``samples`` random positions
    (chosen with ``seed``), each checked to land where it was asked."""
    import random

    head: int = store.ledger.head(run_id).seq
    picks = sorted(random.Random(seed).sample(range(1, head + 1), k=min(samples, head)))
    times = []
    for seq in picks:
        t0 = clock()
        past = store.runtime().state_at(run_id, seq)
        times.append(clock() - t0)
        assert past.ledger.seq == seq
    return head, times
