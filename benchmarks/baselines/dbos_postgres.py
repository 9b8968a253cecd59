"""Baseline: DBOS Transact with its system database in PostgreSQL, bench venv only.

The PostgreSQL group (benchmarks/postgres.py) starts the cluster, creates a database for
DBOS and passes its URL as ``system_database_url``. The workload is the same as
dbos_sqlite.py's: one ``@DBOS.workflow`` calling a trivial ``@DBOS.step`` ``steps`` times
(DBOS commits each step's output to its ``operation_outputs`` table: one transaction per step),
``reps`` times after one launch. The server runs with its defaults (fsync and
synchronous_commit on), as for our store.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
from baselines.dbos_linear import linear_workflow, timed_launch, timed_run  # noqa: E402

try:
    from dbos import DBOS
except ImportError as exc:
    harness.skipped(f"dbos is not installed ({exc})")
try:
    import psycopg  # noqa: F401  (DBOS's PostgreSQL driver: fail here with a clear reason)
except ImportError as exc:
    harness.skipped(f"psycopg is not installed in the bench venv ({exc})")


def main() -> None:
    """Launch DBOS on ``system_database_url``, run the workflow ``reps`` times; print one JSON document."""
    import importlib.metadata

    spec = harness.read_spec()
    steps, reps = spec["steps"], spec["reps"]
    out: dict = {"package": f"dbos {importlib.metadata.version('dbos')} (PostgreSQL)"}
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "bench", "system_database_url": spec["system_database_url"], "run_admin_server": False,
                 "log_level": "WARNING"})

    linear = linear_workflow(DBOS)
    launch = timed_launch(DBOS)
    samples = []
    try:
        for _ in range(reps):
            samples.append(timed_run(linear, steps))
    finally:
        DBOS.destroy()
    elapsed = harness.median(samples)
    out["effect_steps"] = {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed, "samples": samples,
                           "launch_seconds": launch,
                           "durability": "PostgreSQL, one committed transaction per step (DBOS default)"}
    harness.emit(out)


if __name__ == "__main__":
    main()
