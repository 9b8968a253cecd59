"""A run directory's first look (two lstats, storage/run_files.py) against hand edits of the
store: ``runs/`` replaced by a file, a run directory replaced by a file. Each is a one-line
storage error (``storage_error``, documented in docs/errors.md), never an ``OSError`` from the
file system, and the run's files are not read through the edit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from abstractruntime import FileStore, StepPlan, WorkflowSpec
from abstractruntime.core.errors import StorageError


def _finish(run: object, ctx: object) -> StepPlan:
    return StepPlan(node_id="a", complete_output={"ok": True})


CLI = str(Path(sys.executable).parent / "abstractruntime")
WORKFLOW = WorkflowSpec(workflow_id="wf", entry_node="a", nodes={"a": _finish})


def _store_with_run(root: Path) -> str:
    store = FileStore(root, durability="none")
    runtime = store.runtime()
    run_id = runtime.start(workflow=WORKFLOW)
    runtime.tick(workflow=WORKFLOW, run_id=run_id)
    store.close()
    return run_id


def _runs_replaced_by_a_file(root: Path) -> None:
    shutil.rmtree(root / "runs")
    (root / "runs").write_bytes(b"not a directory\n")


@pytest.mark.parametrize("cached", [False, True], ids=["first-look", "known-dir"])
def test_runs_replaced_by_a_file_is_a_storage_error(tmp_path: Path, cached: bool) -> None:
    root = tmp_path / "store"
    run_id = _store_with_run(root)
    store = FileStore(root, durability="none")
    if cached:
        assert store.runs.load(run_id) is not None  # the run directory is known to this store
    _runs_replaced_by_a_file(root)
    with pytest.raises(StorageError):
        store.runs.load(run_id)
    with pytest.raises(StorageError):
        store.runtime().get_state(run_id)
    store.close()


def test_a_run_directory_replaced_by_a_file_is_a_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    run_id = _store_with_run(root)
    run_dir = root / "runs" / run_id
    shutil.rmtree(run_dir)
    run_dir.write_bytes(b"not a directory\n")
    store = FileStore(root, durability="none")
    with pytest.raises(StorageError):
        store.runs.load(run_id)
    store.close()


def test_the_command_line_reports_runs_replaced_by_a_file_as_a_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    run_id = _store_with_run(root)
    _runs_replaced_by_a_file(root)
    done = subprocess.run([CLI, "--store", str(root), "runs", "show", run_id, "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    error = json.loads(done.stdout or done.stderr)["error"]
    assert error["code"] == "storage_error", error
    assert "NotADirectoryError" not in error["message"]


def test_runs_swapped_for_a_symlink_after_the_run_directory_is_known_is_refused(tmp_path: Path) -> None:
    """A process that knows a run directory looks at it with one lstat of ``runs/<id>``; that
    lstat follows ``runs/`` itself. ``runs/`` swapped for a symlink to a directory elsewhere that
    holds a run directory of the same name must not send the run's reads and writes there."""
    root = tmp_path / "store"
    run_id = _store_with_run(root)
    store = FileStore(root, durability="none")
    assert store.runs.load(run_id) is not None  # the run directory is known to this store
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "runs", elsewhere)
    os.rename(root / "runs", tmp_path / "runs.moved")
    os.symlink(elsewhere, root / "runs")
    with pytest.raises(StorageError, match="symlink"):
        store.runs.load(run_id)
    with pytest.raises(StorageError, match="symlink"):
        store.runtime().cancel_run(run_id, reason="through the swapped directory")
    assert json.loads((elsewhere / run_id / "run.json").read_bytes()) == json.loads(
        (tmp_path / "runs.moved" / run_id / "run.json").read_bytes())
    store.close()


def test_listing_runs_when_runs_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _store_with_run(root)
    _runs_replaced_by_a_file(root)
    store = FileStore(root, durability="none")
    with pytest.raises(StorageError):
        store.runs.list_runs()
    store.close()
    done = subprocess.run([CLI, "--store", str(root), "runs", "list", "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 1, done
    error = json.loads(done.stdout or done.stderr)["error"]
    assert error["code"] == "storage_error", error
