"""Whole stores copied between a folder and PostgreSQL: runs, bookmarks, snapshots, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import InvalidInputError, RunExistsError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.copy import copy_store, run_ids
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_store


def _workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Go?"}, result_key="reply"),
                        next_node="done")

    return WorkflowSpec("copy", "ask", {"ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={})})


def _fill(store: Any, count: int) -> list[str]:
    rt = store.runtime()
    ids = []
    for i in range(count):
        run_id = rt.start(workflow=_workflow(), run_id=f"run-{i}")
        rt.tick(workflow=_workflow(), run_id=run_id)
        ids.append(run_id)
    rt.resume(workflow=_workflow(), run_id=ids[0], payload={"answer": "go"})
    store.bookmarks.add(ids[0], "finished")
    store.snapshots.save(Snapshot.from_run(run=store.runs.load(ids[1]), name="waiting"))
    store.artifacts.store_text("attached", run_id=ids[1])
    store.artifacts.store_text("shared by all")
    return ids


def _ledgers(store: Any, ids: list[str]) -> dict[str, list[str]]:
    return {r: [rec["record_hash"] for rec in store.ledger.list(r)] for r in ids}


def test_folder_to_postgres_to_folder(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "a", durability="none")
    pg = open_pg()
    back = FileStore(tmp_path / "b", durability="none")
    try:
        ids = _fill(folder, 3)
        assert copy_store(folder, pg) == ids == run_ids(pg)
        assert _ledgers(pg, ids) == _ledgers(folder, ids)
        assert pg.runs.load(ids[0]).status is RunStatus.COMPLETED
        assert [b.name for b in pg.bookmarks.list(ids[0])] == ["finished"]
        assert [s.name for s in pg.snapshots.list(run_id=ids[1])] == ["waiting"]
        assert sorted(m.to_dict()["artifact_id"] for m in pg.artifacts.list_all()) == \
            sorted(m.artifact_id for m in folder.artifacts.list_all())
        assert [m.to_dict() for m in pg.artifacts.list_by_run(ids[1])] == \
            [m.to_dict() for m in folder.artifacts.list_by_run(ids[1])]

        # Runs go on in PostgreSQL, then come back.
        pg.runtime().resume(workflow=_workflow(), run_id=ids[1], payload={"answer": "later"})
        assert copy_store(pg, back) == ids
        assert _ledgers(back, ids) == _ledgers(pg, ids)
        assert back.runs.load(ids[1]).status is RunStatus.COMPLETED
        reports = verify_store(back)
        assert all(r.ok for r in reports) and len(reports) == 3
        assert back.artifacts.load_text(folder.artifacts.list_by_run(ids[1])[0].artifact_id) == "attached"
    finally:
        folder.close()
        back.close()


def test_copy_refuses_to_overwrite_and_same_kind(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "a", durability="none")
    try:
        ids = _fill(folder, 2)
        pg = open_pg()
        copy_store(folder, pg, runs=[ids[0]])
        assert run_ids(pg) == [ids[0]]
        with pytest.raises(RunExistsError):
            copy_store(folder, pg)
        assert run_ids(pg) == [ids[0]]  # nothing of the refused copy was written
        assert copy_store(folder, pg, runs=[ids[1]]) == [ids[1]]
        with pytest.raises(InvalidInputError):
            copy_store(folder, folder)
    finally:
        folder.close()


def test_runs_copied_into_a_folder_are_listed_there(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    pg = open_pg()
    ids = _fill(pg, 3)
    folder = FileStore(tmp_path / "f", durability="none")
    try:
        assert folder.runs.list_runs() == []  # the folder's query index exists before the copy
        copy_store(pg, folder)
        assert sorted(r.run_id for r in folder.runs.list_runs()) == ids
        assert [r.run_id for r in folder.runs.list_runs(status=RunStatus.COMPLETED)] == [ids[0]]
    finally:
        folder.close()
