"""Snapshots and bookmarks on PostgreSQL: the snapshot store conformance suite
(abstractruntime.testing) run unchanged against the database, the folder stores' bookmark
behaviour, and bookmarks that ``verify`` re-checks after the run is exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import (
    BookmarkNotFoundError,
    CorruptRecordError,
    InvalidInputError,
    RunNotFoundError,
)
from abstractruntime.core.models import RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.transfer import export_run, import_run
from abstractruntime.storage.snapshots import Snapshot, SnapshotStore
from abstractruntime.storage.verify import verify_run
from abstractruntime.testing import SnapshotStoreConformance


class TestPostgresSnapshotStore(SnapshotStoreConformance):
    """The shared suite over the PostgreSQL snapshot store."""

    @pytest.fixture
    def make_store(self, open_pg: Callable[..., Any]) -> Callable[..., Any]:
        """The suite's store factory, over one PostgreSQL store of this test."""
        from abstractruntime.storage.postgres.marks import PostgresSnapshotStore

        db = open_pg().db
        return lambda clock=None: PostgresSnapshotStore(db, clock=clock)


def _three_steps() -> WorkflowSpec:
    return WorkflowSpec("three", "a", {
        "a": lambda run, ctx: StepPlan("a", next_node="b"),
        "b": lambda run, ctx: StepPlan("b", next_node="c"),
        "c": lambda run, ctx: StepPlan("c", complete_output={"done": True}),
    })


def _completed(store: Any) -> str:
    rt = store.runtime()
    run_id = rt.start(workflow=_three_steps())
    assert rt.tick(workflow=_three_steps(), run_id=run_id).status is RunStatus.COMPLETED
    return run_id


def _snapshot(run_id: str, name: str, *, created_at: str, tags: list[str], description: str = "") -> Snapshot:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id, vars={"nul": "a\x00b"})
    snap = Snapshot.from_run(run=run, name=name, description=description or None, tags=tags)
    snap.created_at = snap.updated_at = created_at
    return snap


def test_snapshots_round_trip_filter_and_order(open_pg: Callable[..., Any]) -> None:
    store = open_pg().snapshots
    assert isinstance(store, SnapshotStore)
    early = _snapshot("r1", "before deploy", created_at="2030-01-01T12:00:00+05:00", tags=["Prod"])  # 07:00Z
    late = _snapshot("r1", "after deploy", created_at="2030-01-01T08:00:00Z", tags=["prod", "ok"],
                     description="all green")
    other = _snapshot("r2", "other run", created_at="2030-01-02T00:00:00Z", tags=[])
    for snap in (early, late, other):
        store.save(snap)
    again = open_pg().snapshots
    assert again.load(early.snapshot_id).to_dict() == early.to_dict()
    assert again.load(early.snapshot_id).run_state["vars"]["nul"] == "a\x00b"
    assert [s.name for s in again.list()] == ["other run", "after deploy", "before deploy"]
    assert [s.name for s in again.list(run_id="r1")] == ["after deploy", "before deploy"]
    assert [s.name for s in again.list(tag="PROD")] == ["after deploy", "before deploy"]
    assert [s.name for s in again.list(query="GREEN")] == ["after deploy"]
    assert [s.name for s in again.list(limit=1)] == ["other run"]
    updated = again.update(late.snapshot_id, name="renamed", tags=[])
    assert store.get(late.snapshot_id).name == "renamed" and updated.tags == []
    assert store.delete(late.snapshot_id) is True and store.delete(late.snapshot_id) is False
    assert store.load(late.snapshot_id) is None


def test_bookmarks_add_list_get_remove(open_pg: Callable[..., Any]) -> None:
    store = open_pg()
    run_id = _completed(store)
    marks = store.bookmarks
    head = store.ledger.head(run_id)
    at_head = marks.add(run_id, "audited", note="checked by ops")
    assert (at_head.seq, at_head.record_hash) == (head.seq, head.head_hash)
    first = marks.add(run_id, "first", seq=1)
    assert first.record_hash == store.ledger.list(run_id)[0]["record_hash"]
    with pytest.raises(InvalidInputError, match="already has a bookmark"):
        marks.add(run_id, "first", seq=2)
    assert marks.add(run_id, "first", seq=2, replace=True).seq == 2
    with pytest.raises(InvalidInputError, match="ends at seq"):
        marks.add(run_id, "beyond", seq=head.seq + 1)
    with pytest.raises(RunNotFoundError):
        marks.add("no-such-run", "x")
    assert [b.name for b in open_pg().bookmarks.list(run_id)] == ["first", "audited"]
    assert marks.get(run_id, "audited").note == "checked by ops"
    assert marks.remove(run_id, "first").seq == 2
    with pytest.raises(BookmarkNotFoundError):
        marks.get(run_id, "first")
    with pytest.raises(BookmarkNotFoundError):
        marks.remove(run_id, "first")


def test_a_bookmark_never_blesses_a_tampered_ledger(open_pg: Callable[..., Any], admin: Any,
                                                    pg_schema: str) -> None:
    store = open_pg()
    run_id = _completed(store)
    changed = admin.execute(
        f"""UPDATE "{pg_schema}".ledger SET line = convert_to(replace(convert_from(line, 'UTF8'), '"three"',
            '"thre3"'), 'UTF8') WHERE run_id = %s AND seq = 1""", [run_id]).rowcount
    assert changed == 1 and b'"thre3"' in store.ledger.lines(run_id)[0]
    with pytest.raises(CorruptRecordError):
        store.bookmarks.add(run_id, "blessed")
    assert store.bookmarks.list(run_id) == []


def test_exported_bookmarks_are_verified_offline(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    store = open_pg()
    run_id = _completed(store)
    store.bookmarks.add(run_id, "audited", seq=2)
    export_run(store, run_id, tmp_path / "copy")
    report = verify_run(tmp_path / "copy", run_id)
    assert report.ok and report.bookmarks_checked == 1, report.to_dict()

    other = open_pg(schema=f"{store.db.schema}_b")
    import_run(other, run_id, tmp_path / "copy")
    assert [b.to_dict() for b in other.bookmarks.list(run_id)] == [b.to_dict() for b in store.bookmarks.list(run_id)]
