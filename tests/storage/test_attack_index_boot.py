"""The query index rebuilt while other processes write: a rebuild's rows are taken from the files
before its transaction begins, and a writer may checkpoint a run and commit its row in between.
What the rebuild commits must not put that run back as it was, nor vouch for rows that are stale
(``index.checked``): a query would miss the run or show a stale status until ``runs reindex``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import abstractruntime.storage.run_index as run_index
from abstractruntime.core.models import RunState, RunStatus
from abstractruntime.storage.json_files import JsonFileRunStore


@pytest.fixture
def boot_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The boot id of this process read from a file of the test's (re-read: the cache is reset)."""
    path = tmp_path / "boot"
    path.write_bytes(b"boot-A")
    monkeypatch.setenv(run_index.BOOT_ID_FILE_ENV, str(path))
    monkeypatch.setattr(run_index, "_BOOT_ID", [])
    return path


def _run(run_id: str) -> RunState:
    return RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)


def _completed(run: RunState) -> RunState:
    run.status = RunStatus.COMPLETED
    run.output = {"ok": True}
    return run


def _rebuild_with_a_write_during_its_scan(root: Path, write: Any) -> JsonFileRunStore:
    """A store whose rebuild, between its scan of the files and its transaction, lets ``write`` run."""
    builder = JsonFileRunStore(root, durability="none")
    builder.list_runs()  # its index opened (and built) first, as a running process has it
    index = builder._index
    scan = index._scan_all

    def scan_then_write() -> Any:
        found = scan()
        write()  # another process checkpoints a run and commits its row now
        return found

    index._scan_all = scan_then_write  # type: ignore[method-assign]
    builder.rebuild_index()
    index._scan_all = scan  # type: ignore[method-assign]
    return builder


@pytest.mark.parametrize("self_check", [True, False])
def test_a_run_checkpointed_while_the_index_is_rebuilt_is_found_as_it_is(tmp_path: Path, boot_file: Path,
                                                                         self_check: bool) -> None:
    root = tmp_path / "s"
    writer = JsonFileRunStore(root, durability="none")
    run = _run("r1")
    writer.save(run)
    writer.save(_run("r2"))
    assert {r.run_id for r in writer.list_runs(status=RunStatus.RUNNING)} == {"r1", "r2"}

    builder = _rebuild_with_a_write_during_its_scan(root, lambda: writer.save(_completed(run)))
    for store in (builder, writer, JsonFileRunStore(root, durability="none")):
        store._index.self_check = self_check
        assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["r1"]
        assert [r.run_id for r in store.list_runs(status=RunStatus.RUNNING)] == ["r2"]
        store.close()


def test_a_run_created_while_the_index_is_rebuilt_is_found(tmp_path: Path, boot_file: Path) -> None:
    root = tmp_path / "s"
    writer = JsonFileRunStore(root, durability="none")
    writer.save(_run("r1"))
    writer.list_runs()

    builder = _rebuild_with_a_write_during_its_scan(root, lambda: writer.save(_run("r2")))
    for store in (builder, writer, JsonFileRunStore(root, durability="none")):
        assert {r.run_id for r in store.list_runs(status=RunStatus.RUNNING)} == {"r1", "r2"}
        store.close()
