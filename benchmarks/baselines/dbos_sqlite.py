"""Baseline: DBOS Transact with its system database in SQLite (offline), bench venv only.

The linear workflow is one ``@DBOS.workflow`` calling a trivial ``@DBOS.step`` ``steps``
times; DBOS records every step's output in SQLite (``synchronous=FULL``: fsync per commit).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
from baselines.dbos_linear import linear_workflow, timed_launch, timed_run  # noqa: E402

try:
    from dbos import DBOS
except ImportError as exc:
    harness.skipped(f"dbos is not installed ({exc})")


def main() -> None:
    """Launch DBOS on a fresh SQLite file, run the workflow ``reps`` times; print one JSON document."""
    import importlib.metadata

    spec = harness.read_spec()
    out: dict = {"package": f"dbos {importlib.metadata.version('dbos')} (SQLite)"}
    if "durable" not in spec["scenarios"]:
        harness.emit(out)
        return
    steps = spec["steps"]
    logging.getLogger("dbos").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as work:
        path = os.path.join(work, "dbos.sqlite")
        DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{path}", "run_admin_server": False})

        linear = linear_workflow(DBOS)
        launch = timed_launch(DBOS)
        logging.getLogger("dbos").setLevel(logging.WARNING)
        before = harness.sqlite_bytes(path)
        elapsed = harness.repeat(spec["reps"], lambda rep: timed_run(linear, steps))
        DBOS.destroy()
        grown = harness.sqlite_bytes(path) - before
        out["durable"] = {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
                          "bytes_per_step": grown / (steps * spec["reps"]), "launch_seconds": launch,
                          "durability": "SQLite synchronous=FULL (DBOS default)"}
    harness.emit(out)


if __name__ == "__main__":
    main()
