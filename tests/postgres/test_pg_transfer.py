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
