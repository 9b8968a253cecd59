"""Runs move between a folder store and PostgreSQL with identical hashes, and keep running."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import RunExistsError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.transfer import export_run, import_run
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run


def _workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Token?"}, result_key="reply"),
                        next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"got": run.vars["reply"]["answer"], "n": run.vars["n"]})

    return WorkflowSpec("move", "ask", {"ask": ask, "done": done})


def test_folder_to_postgres_and_back(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    wf = _workflow()
    folder = FileStore(tmp_path / "a", durability="none")
    try:
        rt = folder.runtime()
        # A secret var: its real value is kept beside the run, the ledger holds it redacted.
        run_id = rt.start(workflow=wf, vars={"n": 7, "api_key": "sk-live-123"})
        waiting = rt.tick(workflow=wf, run_id=run_id)
        assert waiting.status is RunStatus.WAITING
        folder_lines = (tmp_path / "a" / "runs" / run_id / "ledger.jsonl").read_bytes()
    finally:
        folder.close()

    pg = open_pg()
    head = import_run(pg, run_id, tmp_path / "a")
    assert b"".join(line + b"\n" for line in pg.ledger.lines(run_id)) == folder_lines
    assert pg.ledger.head(run_id) == head
    with pytest.raises(RunExistsError):
        import_run(pg, run_id, tmp_path / "a")

    # The run goes on in PostgreSQL from where the folder left it.
    state = pg.runtime().resume(workflow=wf, run_id=run_id, wait_key=waiting.waiting.wait_key,
                                payload={"answer": "ok"})
    assert state.status is RunStatus.COMPLETED and state.output == {"got": "ok", "n": 7}
    assert state.vars["api_key"] == "sk-live-123"

    export_run(pg, run_id, tmp_path / "b")
    exported = (tmp_path / "b" / "runs" / run_id / "ledger.jsonl").read_bytes()
    assert exported.startswith(folder_lines)
    assert b"sk-live-123" not in exported
    report = verify_run(tmp_path / "b", run_id)
    assert report.ok, report.to_dict()
    back = FileStore(tmp_path / "b", durability="none")
    try:
        assert back.runtime().get_state(run_id).output == {"got": "ok", "n": 7}
    finally:
        back.close()
    with pytest.raises(RunExistsError):
        export_run(pg, run_id, tmp_path / "b")


def test_verify_run_checks_a_database_run_with_the_offline_verifier(open_pg: Callable[..., Any], admin: Any,
                                                                    pg_schema: str) -> None:
    from abstractruntime.storage.postgres.verify import verify_run as verify_pg_run, verify_store

    wf = _workflow()
    store = open_pg()
    rt = store.runtime()
    run_id = rt.start(workflow=wf, vars={"n": 1})
    rt.resume(workflow=wf, run_id=run_id, wait_key=rt.tick(workflow=wf, run_id=run_id).waiting.wait_key,
              payload={"answer": "ok"})
    store.bookmarks.add(run_id, "done")
    head = store.ledger.head(run_id)
    report = verify_pg_run(store, run_id, expect_head=head.head_hash)
    assert report.ok and report.bookmarks_checked == 1 and report.head_hash == head.head_hash, report.to_dict()
    assert report.path.startswith("postgresql://") and pg_schema in report.path
    seen: list[str] = []
    reports = verify_store(store, progress=lambda done, total, r: seen.append(r.path))
    assert [r.run_id for r in reports] == [run_id] and reports[0].ok and seen == [report.path]

    # An edit made behind the store's back, in SQL: the chain breaks at that record.
    admin.execute(f"""UPDATE "{pg_schema}".ledger SET line = convert_to(replace(convert_from(line, 'UTF8'),
                      '"answer":"ok"', '"answer":"no"'), 'UTF8') WHERE run_id = %s""", [run_id])
    report = verify_pg_run(store, run_id)
    assert not report.ok
    assert "record_hash_mismatch" in {p.type for p in report.problems}
    assert all("abstractruntime-verify-" not in p.message for p in report.problems)


def test_an_import_that_fails_half_way_writes_nothing(open_pg: Callable[..., Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from abstractruntime.core.errors import StorageError

    wf = _workflow()
    folder = FileStore(tmp_path / "a", durability="none")
    try:
        rt = folder.runtime()
        run_id = rt.start(workflow=wf, vars={"n": 1, "api_key": "sk-live-123"})
        rt.tick(workflow=wf, run_id=run_id)
    finally:
        folder.close()
    pg = open_pg()

    def refuse(checkpoint: Any) -> None:
        raise StorageError("disk full (injected after the ledger was inserted)")

    monkeypatch.setattr(pg.runs, "save_checkpoint", refuse)
    with pytest.raises(StorageError):
        import_run(pg, run_id, tmp_path / "a")
    monkeypatch.undo()
    assert pg.ledger.lines(run_id) == [] and pg.ledger.get_secrets(run_id) == []
    assert not pg.runs.exists(run_id)
    import_run(pg, run_id, tmp_path / "a")
    assert pg.runtime().get_state(run_id).vars["api_key"] == "sk-live-123"
