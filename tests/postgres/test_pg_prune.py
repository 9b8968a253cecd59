"""Pruning a PostgreSQL store: tombstone rows, verify, refused ids, edited rows, atomic prunes."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from abstractruntime.core.errors import CorruptRecordError, RunPrunedError, StorageError
from abstractruntime.storage.postgres import verify as pg_verify
from abstractruntime.storage.postgres.copy import run_ids
from abstractruntime.storage.postgres.tombstones import check
from abstractruntime.storage.prune import parse_age, prune_store
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.verify import TOMBSTONE_LOG
from tests.retention_support import fill, heads, later, run_start

FINISHED = ["cancelled-1", "done-1", "done-2", "done-3", "failed-1"]


def _prune(store: Any, **kwargs: Any) -> Any:
    return prune_store(store, finished_before=parse_age("30d"), now=later, **kwargs)


def _by_id(reports: list[Any]) -> dict[str, Any]:
    return {r.run_id: r for r in reports}


def _count(admin: Any, schema: str, table: str, run_id: str) -> int:
    return int(admin.execute(f'SELECT count(*) FROM "{schema}".{table} WHERE run_id = %s', [run_id]).fetchone()[0])


def test_prune_and_verify_on_postgres(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    pg = open_pg()
    kinds = fill(pg)
    before = heads(pg, list(kinds))
    pg.snapshots.save(Snapshot.from_run(run=pg.runs.load("done-1"), name="kept"))
    report = _prune(pg)
    assert sorted(t["run_id"] for t in report.pruned) == [r for r in FINISHED if r != "done-1"]
    assert "snapshot" in report.kept[0]["reason"]
    assert run_ids(pg) == ["done-1", "waiting-1"]
    for table in ("runs", "ledger", "secrets", "anchors", "bookmarks"):
        assert _count(admin, pg_schema, table, "done-2") == 0
    reports = _by_id(pg_verify.verify_store(pg))
    assert sorted(reports) == sorted(kinds)
    assert all(r.ok for r in reports.values()), {k: r.to_dict()["problems"] for k, r in reports.items() if not r.ok}
    for run_id in FINISHED:
        if run_id != "done-1":
            assert reports[run_id].pruned is not None and reports[run_id].head_hash == before[run_id]
            assert "tombstones" in reports[run_id].path and "/tmp" not in reports[run_id].path
    assert pg_verify.verify_run(pg, "done-3").pruned["head_hash"] == before["done-3"]
    # With its snapshots, when told.
    assert [t["run_id"] for t in _prune(pg, include_snapshotted=True).pruned] == ["done-1"]
    assert pg.snapshots.list(run_id="done-1", limit=None) == []
    assert check(pg).ok and [t.seq for t in check(pg).entries] == [1, 2, 3, 4, 5]


def test_a_pruned_id_is_refused_on_postgres_from_any_connection(open_pg: Callable[..., Any]) -> None:
    pg = open_pg()
    fill(pg)
    _prune(pg)
    other = open_pg()  # another process or machine
    with pytest.raises(RunPrunedError):
        run_start(other, "done-2")()
    assert other.runs.pruned("done-2") and not other.runs.pruned("waiting-1")


@pytest.mark.parametrize("attack, problem", [
    ("edit", "tombstone_hash_mismatch"),
    ("drop_middle", "tombstone_chain_broken"),
    ("drop_last", "tombstones_truncated"),
    ("drop_head", "tombstones_head_missing"),
])
def test_edited_tombstone_rows_fail_verify_and_block_prune(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                           attack: str, problem: str) -> None:
    pg = open_pg()
    fill(pg)
    _prune(pg, statuses=["completed"])
    t = f'"{pg_schema}".tombstones'
    if attack == "edit":
        admin.execute(f"UPDATE {t} SET line = convert_to(replace(convert_from(line, 'UTF8'), "
                      "'\"status\":\"completed\"', '\"status\":\"cancelled\"'), 'UTF8') WHERE seq = 2")
    elif attack == "drop_middle":
        admin.execute(f"DELETE FROM {t} WHERE seq = 2")
    elif attack == "drop_last":
        admin.execute(f"DELETE FROM {t} WHERE seq = 3")
    else:
        admin.execute(f'DELETE FROM "{pg_schema}".tombstone_head')
    reports = _by_id(pg_verify.verify_store(pg))
    assert problem in [p.type for p in reports[TOMBSTONE_LOG].problems], reports[TOMBSTONE_LOG].to_dict()
    with pytest.raises(CorruptRecordError):
        _prune(pg)  # a tombstone chained to a damaged log would seal the damage
    assert "failed-1" in run_ids(pg)


def test_a_failed_prune_leaves_the_run_and_no_tombstone(open_pg: Callable[..., Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune interrupted inside its transaction (here by a failing statement) writes nothing."""
    from abstractruntime.storage.postgres import tombstones

    pg = open_pg()
    before = heads(pg, list(fill(pg)))
    monkeypatch.setattr(tombstones, "RUN_TABLES", ("ledger", "secrets", "no_such_table", "runs"))
    with pytest.raises(StorageError):
        _prune(pg, statuses=["completed"])
    assert "done-1" in run_ids(pg) and heads(pg, ["done-1"]) == {"done-1": before["done-1"]}
    assert check(pg).entries == [] and not pg.runs.pruned("done-1")
    monkeypatch.undo()
    assert len(_prune(pg, statuses=["completed"]).pruned) == 3


KILLED_CHILD = """
import os, signal, sys
from datetime import timedelta
from abstractruntime.storage.postgres import tombstones
from abstractruntime.storage.postgres.store import PostgresStore
from abstractruntime.storage.prune import prune_store


class Killer(tuple):
    # Iterated by prune_run inside its transaction: the process dies after the tombstone and
    # three of the run's tables were written, before the commit.
    def __add__(self, other):
        return Killer(tuple(self) + tuple(other))

    def __iter__(self):
        for index, table in enumerate(tuple.__iter__(self)):
            if index == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            yield table


tombstones.RUN_TABLES = Killer(tombstones.RUN_TABLES)
prune_store(PostgresStore(sys.argv[1], schema=sys.argv[2]), finished_before=timedelta(0), statuses=["completed"])
print("not killed")
"""


def test_a_prune_killed_inside_its_transaction_leaves_the_run(open_pg: Callable[..., Any], postgres_url: str,
                                                                pg_schema: str) -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    pg = open_pg()
    before = heads(pg, list(fill(pg)))
    child = subprocess.run([sys.executable, "-c", KILLED_CHILD, postgres_url, pg_schema], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert check(pg).ok and check(pg).entries == []
    assert {"done-1", "done-2", "done-3"} <= set(run_ids(pg)) and heads(pg, ["done-1"]) == {"done-1": before["done-1"]}
    assert all(r.ok for r in pg_verify.verify_store(pg))
    assert sorted(t["run_id"] for t in _prune(pg, statuses=["completed"]).pruned) == ["done-1", "done-2", "done-3"]
    assert all(r.ok for r in pg_verify.verify_store(pg))
