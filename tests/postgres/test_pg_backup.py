"""Backup as docs/postgres.md says: pg_dump of the schema, pg_restore into another database,
and the runs there verify and go on."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable

from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.store import PostgresStore
from abstractruntime.storage.postgres.verify import verify_run


def _ask() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Go?"}, result_key="reply"),
                        next_node="done")

    return WorkflowSpec("backup", "ask", {"ask": ask,
                                          "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})


def _bindir() -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster_bin",
                                                  Path(__file__).parent / "cluster.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.find_bindir()


def test_pg_dump_and_pg_restore(open_pg: Callable[..., Any], postgres_url: str, pg_schema: str, admin: Any,
                                tmp_path: Path) -> None:
    store = open_pg()
    rt = store.runtime()
    run_id = rt.start(workflow=_ask())
    handle = rt.tick(workflow=_ask(), run_id=run_id).waiting.wait_key
    store.bookmarks.add(run_id, "before-answer")

    dump = tmp_path / "runs.dump"
    bindir = _bindir()
    subprocess.run([str(bindir / "pg_dump"), f"--schema={pg_schema}", "--format=custom", f"--file={dump}",
                    postgres_url], check=True, capture_output=True, timeout=120)
    restored_db = f"restored_{pg_schema}"
    admin.execute(f'CREATE DATABASE "{restored_db}"')
    restored_url = postgres_url.rsplit("/", 1)[0] + "/" + restored_db
    subprocess.run([str(bindir / "pg_restore"), f"--dbname={restored_url}", str(dump)], check=True,
                   capture_output=True, timeout=120)

    with PostgresStore(restored_url, schema=pg_schema, create=False) as restored:
        assert restored.ledger.lines(run_id) == store.ledger.lines(run_id)
        report = verify_run(restored, run_id)
        assert report.ok and report.bookmarks_checked == 1, report.to_dict()
        state = restored.runtime().resume(workflow=_ask(), run_id=run_id, wait_key=handle, payload={"answer": "y"})
        assert state.status is RunStatus.COMPLETED
    assert store.runs.load(run_id).status is RunStatus.WAITING  # the original is untouched
