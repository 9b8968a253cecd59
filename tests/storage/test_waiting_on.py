"""Runs waiting on a key: the file index's ``wait_key`` column, its in-place migration, the fallback.

The contract itself (order, filters, limits) is in the conformance kit
(``RunStoreConformance.test_waiting_on_a_key_longest_waiting_first``), run against every store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Optional

import pytest

from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.core.ports import QueryableRunStore
from abstractruntime.storage.in_memory import InMemoryRunStore
from abstractruntime.storage.json_files import JsonFileRunStore
from abstractruntime.storage.query import waiting_on
from abstractruntime.storage.reindex import rebuild_index
from abstractruntime.storage.run_index import RunIndex

# The runs table as the releases before wait keys created it (identity columns included).
OLD_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, workflow_id TEXT, status TEXT, wait_reason TEXT, until_ts REAL, updated_ts REAL,
    parent_run_id TEXT, dirty INTEGER NOT NULL DEFAULT 0, ck_mtime_ns INTEGER, ck_size INTEGER, ck_ino INTEGER);
CREATE INDEX runs_status_updated ON runs (status, updated_ts);
CREATE INDEX runs_updated ON runs (updated_ts);
CREATE INDEX runs_until ON runs (status, wait_reason, until_ts);
CREATE INDEX runs_parent ON runs (parent_run_id);
CREATE INDEX runs_dirty ON runs (dirty);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
"""
OLD_COLUMNS = ("run_id, workflow_id, status, wait_reason, until_ts, updated_ts, parent_run_id, dirty, "
               "ck_mtime_ns, ck_size, ck_ino")


def _run(run_id: str, key: Optional[str], minute: int, status: RunStatus = RunStatus.WAITING) -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    run.status, run.updated_at = status, f"2030-01-01T00:{minute:02d}:00+00:00"
    if key is not None:
        run.waiting = WaitState(reason=WaitReason.EVENT, wait_key=key, resume_to_node="b")
    return run


def _ids(runs: list[RunState]) -> list[str]:
    return [r.run_id for r in runs]


def _columns(index: Path) -> set[str]:
    db = sqlite3.connect(index)
    try:
        return {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    finally:
        db.close()


def _downgrade(root: Path) -> None:
    """Rewrite ``index.sqlite3`` as a release before wait keys left it: same rows, trusted identities."""
    index = root / "index.sqlite3"
    db = sqlite3.connect(index)
    try:
        rows = db.execute(f"SELECT {OLD_COLUMNS} FROM runs").fetchall()
        meta = db.execute("SELECT key, value FROM meta").fetchall()
    finally:
        db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(index)
    try:
        db.executescript(OLD_SCHEMA)
        db.executemany(f"INSERT INTO runs ({OLD_COLUMNS}) VALUES ({','.join('?' * 11)})", rows)
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        db.commit()
    finally:
        db.close()
    assert "wait_key" not in _columns(index) and len(rows) == 4


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A file store whose index predates wait keys; its rows still match their run.json files."""
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    for run in (_run("late", "paid", 30), _run("early", "paid", 10), _run("other", "shipped", 5),
                _run("done", None, 1, RunStatus.COMPLETED)):
        store.save(run)
    store.close()
    _downgrade(root)
    return root


def test_an_old_index_is_migrated_in_place_and_answers(old_store: Path) -> None:
    inode = (old_store / "index.sqlite3").stat().st_ino
    store = JsonFileRunStore(old_store, durability="none")
    try:
        assert _ids(store.list_waiting_on("paid")) == ["early", "late"]
        assert _ids(store.list_waiting_on("shipped")) == ["other"]
        assert store.list_waiting_on("nobody") == []
        assert len(store.list_runs()) == 4  # the other queries are unaffected
    finally:
        store.close()
    index = old_store / "index.sqlite3"
    assert index.stat().st_ino == inode  # altered, not recreated
    assert "wait_key" in _columns(index)
    db = sqlite3.connect(index)
    try:  # the first query refilled every row from its file (the self-check)
        keys = dict(db.execute("SELECT run_id, wait_key FROM runs").fetchall())
        indexes = {r[1] for r in db.execute("PRAGMA index_list(runs)")}
    finally:
        db.close()
    assert keys == {"late": "paid", "early": "paid", "other": "shipped", "done": None}
    assert "runs_wait_key" in indexes


def test_migrated_rows_are_trusted_again_after_the_refill(old_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = JsonFileRunStore(old_store, durability="none")
    try:
        store.list_waiting_on("paid")  # migrates and refills
        reads: list[str] = []
        real = store.load
        monkeypatch.setattr(store._index, "_load", lambda run_id: reads.append(run_id) or real(run_id))
        assert _ids(store.list_waiting_on("paid")) == ["early", "late"]
        assert sorted(reads) == ["early", "late"]  # only what it returns is read: the rows are used
    finally:
        store.close()


def test_reindex_fills_the_column(old_store: Path) -> None:
    report = rebuild_index(old_store)
    assert report.indexed == 4
    db = sqlite3.connect(old_store / "index.sqlite3")
    try:
        assert dict(db.execute("SELECT run_id, wait_key FROM runs WHERE status = 'waiting'").fetchall()) == {
            "late": "paid", "early": "paid", "other": "shipped"}
    finally:
        db.close()


def test_a_readonly_old_index_is_not_changed_and_still_answers(old_store: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    index = old_store / "index.sqlite3"
    before = index.read_bytes()
    monkeypatch.setattr(RunIndex, "_writable", lambda self: False)
    store = JsonFileRunStore(old_store, durability="none")
    try:
        assert _ids(store.list_waiting_on("paid")) == ["early", "late"]
        assert _ids(store.list_runs(status=RunStatus.WAITING)) == ["late", "early", "other"]
        store._index.self_check = False  # no row can be trusted: read from the files all the same
        assert _ids(store.list_waiting_on("shipped")) == ["other"]
    finally:
        store.close()
    assert index.read_bytes() == before and "wait_key" not in _columns(index)


def test_a_changed_wait_is_seen_through_a_stale_row(tmp_path: Path) -> None:
    """The row says the run waits on "paid"; its run.json, replaced behind the index, says otherwise."""
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    try:
        store.save(_run("r1", "paid", 1))
        db = sqlite3.connect(root / "index.sqlite3")
        row = db.execute("SELECT * FROM runs WHERE run_id = 'r1'").fetchone()
        db.close()
        store.save(_run("r1", "shipped", 2))
        db = sqlite3.connect(root / "index.sqlite3")
        db.execute(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(row))})", row)
        db.commit()
        db.close()
        assert store.list_waiting_on("paid") == []
        assert _ids(store.list_waiting_on("shipped")) == ["r1"]
    finally:
        store.close()


class ListRunsOnly:
    """A queryable store as upstream 0.0.1 defined one: no ``list_waiting_on``."""

    def __init__(self, inner: InMemoryRunStore) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def list_runs(self, **kwargs: Any) -> list[RunState]:
        self.calls.append(kwargs)
        return self.inner.list_runs(**kwargs)

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        return self.inner.list_due_wait_until(now_iso=now_iso, limit=limit)

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        return self.inner.list_children(parent_run_id=parent_run_id, status=status)


def test_the_fallback_filters_list_runs_for_a_store_without_the_method() -> None:
    inner = InMemoryRunStore()
    for i in range(150):  # more than list_runs' default limit
        inner.save(_run(f"r{i:03d}", "paid" if i % 2 else "other", i % 60))
    store = ListRunsOnly(inner)
    assert isinstance(store, QueryableRunStore)  # the optional method is not required
    found = waiting_on(store, "paid", 1000)
    assert _ids(found) == _ids(inner.list_waiting_on("paid")) and len(found) == 75
    assert _ids(waiting_on(store, "paid", 3)) == _ids(found)[:3]
    assert store.calls and all(c["status"] is RunStatus.WAITING for c in store.calls)
