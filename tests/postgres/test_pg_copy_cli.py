"""`store copy` at the command line fails half-way for a real reason (the database refuses a
row; the disk refuses a file), leaves no partial run behind, and a second `store copy`
finishes the job: the runs already there are skipped, not refused."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.copy import run_ids
from abstractruntime.storage.postgres.store import PostgresStore
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_store

CLI = str(Path(sys.executable).parent / "abstractruntime")
RUNS = [f"run-{i:02d}" for i in range(16)]
BIG = "run-05"


def _workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Go?"}, result_key="reply"),
                        next_node="done")

    return WorkflowSpec("copied", "ask", {"ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={})})


def _fill(store: Any) -> None:
    rt = store.runtime()
    for run_id in RUNS:
        # One run carries 300 KB: a file-size limit of 200 KB stops the copy inside it.
        payload = {"blob": "x" * 300_000} if run_id == BIG else {"n": run_id}
        rt.start(workflow=_workflow(), run_id=run_id, vars=payload)
        rt.tick(workflow=_workflow(), run_id=run_id)


def _copy(source: str, target: str, *, file_limit: Optional[int] = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([CLI, "--store", source, "store", "copy", "--to", target], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env=env,
                          preexec_fn=limit if file_limit is not None else None)


def test_folder_to_postgresql_is_restartable_after_the_database_refuses_a_run(tmp_path: Path,
                                                                             database_url: str) -> None:
    folder = FileStore(tmp_path / "runs", durability="none")
    try:
        _fill(folder)
    finally:
        folder.close()
    target = PostgresStore(database_url)
    try:
        # The database refuses the 6th run's checkpoint row: after its ledger rows, in its transaction.
        with target.db.connection() as conn:
            conn.execute("""CREATE FUNCTION abstractruntime.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                            BEGIN RAISE EXCEPTION 'refused by the test'; END $$""")
            conn.execute(f"""CREATE TRIGGER refuse BEFORE INSERT ON abstractruntime.runs FOR EACH ROW
                             WHEN (NEW.run_id = '{BIG}') EXECUTE FUNCTION abstractruntime.refuse()""")
        failed = _copy(str(tmp_path / "runs"), database_url)
        assert failed.returncode == 1, failed.stderr
        assert "refused by the test" in failed.stderr
        assert run_ids(target) == RUNS[:5]  # whole runs only: nothing of the 6th
        assert target.ledger.lines(BIG) == [] and target.ledger.get_secrets(BIG) == []
        with target.db.connection() as conn:
            conn.execute("DROP TRIGGER refuse ON abstractruntime.runs")

        again = _copy(str(tmp_path / "runs"), database_url)
        assert again.returncode == 0, again.stderr
        assert again.stdout.split() == RUNS[5:]
        assert "copied 11 run(s); 5 already there" in again.stderr
        assert run_ids(target) == RUNS
        for run_id in RUNS:
            assert target.runs.load(run_id) is not None
    finally:
        target.close()


def test_postgresql_to_folder_is_restartable_after_the_disk_refuses_a_file(tmp_path: Path,
                                                                          database_url: str) -> None:
    source = PostgresStore(database_url)
    try:
        _fill(source)
    finally:
        source.close()
    out = tmp_path / "copy"
    failed = _copy(database_url, str(out), file_limit=200_000)
    assert failed.returncode == 1, failed.stderr
    # Five whole runs; no directory, file or leftover of the sixth anywhere in the copy.
    assert sorted(p.name for p in (out / "runs").iterdir()) == RUNS[:5]
    assert not any(BIG in str(p) for p in out.rglob("*"))
    assert [p.name for p in out.iterdir() if p.name.startswith(".copy")] == []

    again = _copy(database_url, str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == RUNS[5:]
    assert "copied 11 run(s); 5 already there" in again.stderr
    reports = verify_store(out)
    assert [r.run_id for r in reports] == RUNS and all(r.ok for r in reports)
