"""Battery: subworkflows, parts and retries of 50 runs advanced together by one runtime, on a
folder store and on PostgreSQL: every position stays its own run's (tests/reliability/positions.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .positions import BAD, positions_battery
from .test_rel_sigterm import fresh_database

ROUNDS = int(os.environ.get("RELIABILITY_POSITION_ROUNDS", "2"))


def _check(stats: object) -> None:
    found = stats.to_dict()  # type: ignore[attr-defined]
    print(f"positions battery: {found}")
    assert found["failures"] == []
    assert {k: found[k] for k in BAD} == dict.fromkeys(BAD, 0)
    assert found["parents"] == 50 * ROUNDS and found["children"] == 100 * ROUNDS
    assert found["parts"] == 100 * ROUNDS and found["retries"] == 50 * ROUNDS


@pytest.mark.timeout(900)
def test_subworkflows_parts_and_retries_at_concurrency_50_keep_their_positions_on_a_folder_store(
        tmp_path: Path) -> None:
    _check(positions_battery(tmp_path, rounds=ROUNDS))


@pytest.mark.timeout(900)
def test_subworkflows_parts_and_retries_at_concurrency_50_keep_their_positions_on_postgresql(
        tmp_path: Path, postgres_url: str) -> None:
    _check(positions_battery(tmp_path, store_url=fresh_database(postgres_url), rounds=ROUNDS))
