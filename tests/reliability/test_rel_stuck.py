"""Battery: `resume`, `emit`, `emit --hand-off` killed after each of their writes, on a folder
store and on PostgreSQL: 0 runs stuck (tests/reliability/stuck.py says what is checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .stuck import stuck_battery
from .test_rel_sigterm import fresh_database


def _check(stats: object) -> None:
    found = stats.to_dict()  # type: ignore[attr-defined]
    print(f"stuck battery: {found}")
    assert found["failures"] == []
    assert found["stuck"] == 0 and found["runs_list_not_as_ledger"] == 0
    assert found["kills_total"] >= 4 and found["answer_durable_at_kill"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kills_at_every_step_of_resume_and_emit_leave_no_run_stuck_on_a_folder_store(tmp_path: Path) -> None:
    _check(stuck_battery(tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kills_at_every_step_of_resume_and_emit_leave_no_run_stuck_on_postgresql(tmp_path: Path,
                                                                                 postgres_url: str) -> None:
    _check(stuck_battery(tmp_path, store_url=fresh_database(postgres_url)))
