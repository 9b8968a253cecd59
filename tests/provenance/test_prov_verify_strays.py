"""``verify --all`` reports every entry of ``runs/`` that is not a run, instead of skipping it.

A symlinked run directory, a badly named one and a stray file are each a failed report (the
CLI exits 3); an empty run directory left by an interrupted start is not a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from abstractruntime import StepPlan, WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_store

FLOW = WorkflowSpec("strays", "a", {"a": lambda run, ctx: StepPlan("a", next_node="b"),
                                    "b": lambda run, ctx: StepPlan("b", complete_output={"ok": True})})


def _one_run(root: Path) -> str:
    store = FileStore(root, durability="none")
    runtime = store.runtime()
    run_id = runtime.start(workflow=FLOW)
    assert runtime.tick(workflow=FLOW, run_id=run_id).status.value == "completed"
    store.close()
    return run_id


def _store_with_strays(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    run_id = _one_run(root)
    runs = root / "runs"
    outside = tmp_path / "outside-run"
    shutil.copytree(runs / run_id, outside)
    (runs / "evil-link").symlink_to(outside, target_is_directory=True)  # a real, verifiable run behind it
    shutil.copytree(runs / run_id, runs / "bad name")
    (runs / ".hidden").mkdir()
    (runs / "stray-file").write_text("not a run")
    (runs / "interrupted-start").mkdir()  # created, then killed before the first write
    return root, run_id


def test_verify_store_reports_what_is_not_a_run(tmp_path: Path) -> None:
    root, run_id = _store_with_strays(tmp_path)
    reports = {r.run_id: r for r in verify_store(root)}
    assert reports[run_id].ok
    assert "interrupted-start" not in reports
    expected = {"evil-link": "symlinked_run_dir", "bad name": "invalid_run_dir_name",
                ".hidden": "invalid_run_dir_name", "stray-file": "not_a_run_dir"}
    for name, kind in expected.items():
        report = reports[name]
        assert not report.ok
        assert [p.type for p in report.problems] == [kind]
        assert repr(name) in report.problems[0].message
    assert "outside-run" in reports["evil-link"].problems[0].message
    assert set(reports) == {run_id, *expected}


def test_verify_all_exits_3_on_strays(tmp_path: Path) -> None:
    root, run_id = _store_with_strays(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", "--store", str(root), "verify", "--all"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "symlinked_run_dir" in proc.stdout + proc.stderr
    assert "invalid_run_dir_name" in proc.stdout + proc.stderr


def test_a_clean_store_still_verifies(tmp_path: Path) -> None:
    root = tmp_path / "store"
    run_id = _one_run(root)
    (root / "runs" / "interrupted-start").mkdir()
    reports = verify_store(root)
    assert [r.run_id for r in reports] == [run_id] and reports[0].ok
