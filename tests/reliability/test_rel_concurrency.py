"""Battery 3: 2, 4 and 8 processes race on one run (resume) and on due timers (tick_due).

``RELIABILITY_RACE_ROUNDS`` rounds per worker count (CI: 20; the long form: 50).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.runtime import Runtime
from abstractruntime.scheduler.scheduler import Scheduler
from abstractruntime.storage.store import FileStore

from . import checks, racer, racing

ROUNDS = int(os.environ.get("RELIABILITY_RACE_ROUNDS", "20"))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4, 8])
def test_concurrent_resumes_apply_exactly_once(tmp_path: Path, workers: int) -> None:
    stats = racing.race_resume(tmp_path / "store", workers, ROUNDS)
    print(f"resume race x{workers}: {stats.to_dict()}")
    assert stats.failures == []
    assert stats.rounds == ROUNDS and stats.applied == ROUNDS
    # Everyone else was refused with a clear error, never an unexpected one.
    assert set(stats.replies) <= {"OK completed", "ERR RunLockedError", "ERR RunNotWaitingError"}
    assert sum(stats.replies.values()) == workers * ROUNDS


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4, 8])
def test_concurrent_tick_due_advances_each_due_run_exactly_once(tmp_path: Path, workers: int) -> None:
    stats, double_reports = racing.race_tick_due(tmp_path / "store", workers, ROUNDS, durability="none")
    print(f"tick_due race x{workers}: {stats.to_dict()}, reported twice: {double_reports}")
    assert stats.failures == []
    assert stats.applied == ROUNDS * 5  # one resume record per due run


class _StaleReadRuntime(Runtime):
    """Lets another scheduler advance the run between this one's due check and its tick."""

    other: "Scheduler | None" = None

    def get_checkpoint(self, run_id: str):  # type: ignore[no-untyped-def]
        checkpoint = super().get_checkpoint(run_id)  # what the scheduler reads before ticking
        if self.other is not None:
            other, self.other = self.other, None
            other.tick_due()
        return checkpoint


def test_a_worker_that_loses_the_tick_due_race_does_not_report_the_run(tmp_path: Path) -> None:
    root = tmp_path / "store"
    clock = FixedClock(racing.T0)
    store = FileStore(root, durability="none")
    rt_a = _StaleReadRuntime(run_store=store.runs, ledger_store=store.ledger, clock=clock)
    rt_b = Runtime(run_store=store.runs, ledger_store=store.ledger, clock=clock)
    wf = racer.timer_workflow()
    rt_b.start(workflow=wf, run_id="t1", vars={"until": "2030-01-01T00:01:00+00:00"})
    rt_b.tick(workflow=wf, run_id="t1")
    clock.advance(seconds=120)
    rt_a.other = Scheduler(runtime=rt_b, registry=racer.registry())
    advanced = Scheduler(runtime=rt_a, registry=racer.registry()).tick_due()
    resumes = [r for r in checks.ledger_records(root, "t1") if r.get("kind") == "resume"]
    assert len(resumes) == 1
    assert advanced == []
