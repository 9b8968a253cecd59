"""The workload both DBOS baselines measure (dbos_sqlite.py, dbos_postgres.py), defined once.

One ``@DBOS.workflow`` calling a trivial ``@DBOS.step`` ``n`` times: DBOS records every step's
output in its system database, one transaction per step.
"""

from __future__ import annotations

from typing import Any, Callable

import harness


def linear_workflow(dbos: Any) -> Callable[[int], int]:
    """Register the step and the workflow with ``dbos`` (the ``DBOS`` class, configured, not
    launched yet); return the workflow."""

    @dbos.step()
    def step(i: int) -> int:
        return i + 1

    @dbos.workflow()
    def linear(n: int) -> int:
        i = 0
        for _ in range(n):
            i = step(i)
        return i

    return linear


def timed_launch(dbos: Any) -> float:
    """``DBOS.launch()``; the seconds it took."""
    t0 = harness.clock()
    dbos.launch()
    return harness.clock() - t0


def timed_run(linear: Callable[[int], int], steps: int) -> float:
    """Seconds for one run of ``linear(steps)`` (checked: it returns ``steps``)."""
    t = harness.clock()
    assert linear(steps) == steps
    return harness.clock() - t
