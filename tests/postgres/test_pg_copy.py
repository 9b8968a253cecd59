"""Whole stores copied between a folder and PostgreSQL: runs, bookmarks, snapshots, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import InvalidInputError, RunExistsError, VerificationFailedError
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
        assert copy_store(folder, pg).copied == ids == run_ids(pg)
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
        assert copy_store(pg, back).copied == ids
        assert _ledgers(back, ids) == _ledgers(pg, ids)
        assert back.runs.load(ids[1]).status is RunStatus.COMPLETED
        reports = verify_store(back)
        assert all(r.ok for r in reports) and len(reports) == 3
        assert back.artifacts.load_text(folder.artifacts.list_by_run(ids[1])[0].artifact_id) == "attached"
    finally:
        folder.close()
        back.close()


def test_copy_skips_identical_runs_and_refuses_a_different_one(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    folder = FileStore(tmp_path / "a", durability="none")
    other = FileStore(tmp_path / "other", durability="none")
    try:
        ids = _fill(folder, 3)
        pg = open_pg()
        assert copy_store(folder, pg, runs=[ids[0]]).copied == [ids[0]]
        again = copy_store(folder, pg)  # restartable: what is there already is skipped
        assert again.copied == ids[1:] and again.already == [ids[0]] and run_ids(pg) == ids
        assert copy_store(folder, pg).already == ids

        # Another run under an existing id: refused (not overwritten); the rest goes on.
        other.runtime().start(workflow=_workflow(), run_id=ids[2], vars={"other": True})
        other.runtime().start(workflow=_workflow(), run_id="new-run")
        before = pg.ledger.lines(ids[2])
        with pytest.raises(RunExistsError) as info:
            copy_store(other, pg)
        assert ids[2] in str(info.value) and "different" in str(info.value)
        assert info.value.details["copied"] == ["new-run"] and list(info.value.details["refused"]) == [ids[2]]
        assert pg.ledger.lines(ids[2]) == before
        with pytest.raises(InvalidInputError):
            copy_store(folder, folder)
    finally:
        folder.close()
        other.close()


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


def test_a_run_is_copied_as_it_was_at_one_moment(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    """A writer finishes the run between the copy's read of its ledger and of its checkpoint:
    the copy still holds one consistent (ledger, checkpoint) pair, and opens."""
    source, writer = open_pg(), open_pg()
    ids = _fill(source, 2)
    moving = ids[1]  # waiting on its question
    real_lines = source.ledger.lines
    finished: list[str] = []

    def lines_then_a_writer(run_id: str) -> list[bytes]:
        got = real_lines(run_id)
        if run_id == moving and not finished:
            state = writer.runtime().resume(workflow=_workflow(), run_id=moving, payload={"answer": "late"})
            finished.append(state.status.value)
        return got

    source.ledger.lines = lines_then_a_writer  # type: ignore[method-assign]
    folder = FileStore(tmp_path / "copy", durability="none")
    try:
        assert copy_store(source, folder).copied == ids
        assert finished == ["completed"]
        assert verify_store(folder) and all(r.ok for r in verify_store(folder))
        state = folder.runtime().get_state(moving)
        assert state.status is RunStatus.WAITING  # as it was when the copy read it: a pair that fits
        done = folder.runtime().resume(workflow=_workflow(), run_id=moving, payload={"answer": "in the copy"})
        assert done.status is RunStatus.COMPLETED
    finally:
        folder.close()


def test_a_tampered_run_is_refused_in_both_directions(open_pg: Callable[..., Any], admin: Any, pg_schema: str,
                                                      tmp_path: Path) -> None:
    import json

    pg = open_pg()
    ids = _fill(pg, 3)
    # PostgreSQL -> folder: a record edited in place behind the store's back.
    admin.execute(f"""UPDATE "{pg_schema}".ledger SET line = convert_to(replace(convert_from(line, 'UTF8'),
                      '"prompt":"Go?"', '"prompt":"No?"'), 'UTF8') WHERE run_id = %s""", [ids[1]])
    folder = FileStore(tmp_path / "out", durability="none")
    try:
        with pytest.raises(VerificationFailedError) as info:
            copy_store(pg, folder)
        assert ids[1] in str(info.value) and "record_hash_mismatch" in str(info.value)
        assert info.value.details["copied"] == [ids[0], ids[2]]
        assert run_ids(folder) == [ids[0], ids[2]]  # the tampered run is not in the copy
        assert all(r.ok for r in verify_store(folder))
    finally:
        folder.close()

    # Folder -> PostgreSQL: a checkpoint that claims another head, and a ledger line edited.
    source = FileStore(tmp_path / "src", durability="none")
    try:
        ids = _fill(source, 3)
    finally:
        source.close()
    checkpoint = tmp_path / "src" / "runs" / ids[0] / "run.json"
    doc = json.loads(checkpoint.read_text())
    doc["ledger"]["head_hash"] = "0" * 64
    checkpoint.write_text(json.dumps(doc))
    ledger = tmp_path / "src" / "runs" / ids[2] / "ledger.jsonl"
    ledger.write_bytes(ledger.read_bytes().replace(b'"prompt":"Go?"', b'"prompt":"No?"'))
    target = open_pg(schema=pg_schema + "_in")
    source = FileStore(tmp_path / "src", durability="none")
    try:
        with pytest.raises(VerificationFailedError) as info:
            copy_store(source, target)
        assert sorted(info.value.details["refused"]) == [ids[0], ids[2]]
        assert run_ids(target) == [ids[1]]
    finally:
        source.close()
