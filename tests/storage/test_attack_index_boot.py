"""The query index rebuilt while other processes write: a rebuild's rows are taken from the files
before its transaction begins, and a writer may checkpoint a run and commit its row in between.
What the rebuild commits must not put that run back as it was, nor vouch for rows that are stale
(``index.checked``): a query would miss the run or show a stale status until ``runs reindex``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import abstractruntime.storage.run_index as run_index
from abstractruntime.core.models import RunState, RunStatus
from abstractruntime.storage.json_files import JsonFileRunStore


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


# -- a store that cannot be written, opened in another boot --------------------------------------


def _in_boot(boot_file: Path, monkeypatch: pytest.MonkeyPatch, boot: bytes) -> None:
    boot_file.write_bytes(boot)
    monkeypatch.setattr(run_index, "_BOOT_ID", [])


def _damage_pages(index: Path) -> None:
    """Every page but the first (the header and schema) overwritten with garbage."""
    data = bytearray(index.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 2 * page
    data[page:] = b"\xa5" * (len(data) - page)
    index.write_bytes(bytes(data))


def _many(root: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    for i in range(40):
        store.save(_run(f"r{i:02d}"))
    store.close()


def test_a_read_only_store_does_not_trust_rows_of_another_boot(tmp_path: Path, boot_file: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An OS crash may have lost the index's last commits (written without fsync): a store that
    cannot be rebuilt (a crashed machine's disk mounted read-only) reads the files instead."""
    root = tmp_path / "s"
    _many(root)
    conn = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    # What the crash may leave: the rows of the last commits gone (a run created, its row lost),
    # and a row whose last write was lost (the status it had before).
    conn.execute("DELETE FROM runs WHERE run_id = 'r39'")
    conn.execute("UPDATE runs SET status = 'completed' WHERE run_id = 'r07'")
    conn.close()
    _in_boot(boot_file, monkeypatch, b"boot-B")
    monkeypatch.setattr(run_index.RunIndex, "_writable", lambda self: False)
    before = (root / "index.sqlite3").read_bytes()
    store = JsonFileRunStore(root, durability="none")
    assert len(store.list_runs(status=RunStatus.RUNNING, limit=1000)) == 40
    assert store.list_runs(status=RunStatus.COMPLETED) == []
    store.close()
    assert (root / "index.sqlite3").read_bytes() == before  # nothing written


def test_a_read_only_store_with_a_damaged_index_of_another_boot_reads_the_files(
        tmp_path: Path, boot_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    _many(root)
    _damage_pages(root / "index.sqlite3")
    _in_boot(boot_file, monkeypatch, b"boot-B")
    monkeypatch.setattr(run_index.RunIndex, "_writable", lambda self: False)
    store = JsonFileRunStore(root, durability="none")
    assert len(store.list_runs(status=RunStatus.RUNNING, limit=1000)) == 40
    store.close()
    assert not (root / "index.sqlite3.damaged").exists()  # nothing moved


def test_a_read_only_store_trusts_checked_rows_of_this_boot(tmp_path: Path, boot_file: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In the boot that wrote it, a read-only store still answers from the index (each row checked
    against its file): a row whose file says otherwise is repaired in the answer."""
    root = tmp_path / "s"
    _many(root)
    monkeypatch.setattr(run_index.RunIndex, "_writable", lambda self: False)
    store = JsonFileRunStore(root, durability="none")
    assert store._index._db() is not None and not store._index._no_index
    assert len(store.list_runs(status=RunStatus.RUNNING, limit=1000)) == 40
    store.close()


def test_a_read_only_store_with_an_index_damaged_past_its_first_rows_reads_the_files(
        tmp_path: Path, boot_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage the open does not meet (its first rows are whole) is met by a query: a store that
    cannot be written moves nothing aside and answers from the run files."""
    root = tmp_path / "s"
    store = JsonFileRunStore(root, durability="none")
    for i in range(400):
        store.save(_run(f"r{i:03d}"))
    store.close()
    index = root / "index.sqlite3"
    data = bytearray(index.read_bytes())
    assert len(data) > 16 * 4096
    data[len(data) // 2:] = b"\xa5" * (len(data) - len(data) // 2)
    index.write_bytes(bytes(data))
    monkeypatch.setattr(run_index.RunIndex, "_writable", lambda self: False)
    store = JsonFileRunStore(root, durability="none")
    assert len(store.list_runs(status=RunStatus.RUNNING, limit=1000)) == 400
    store.close()
    assert index.read_bytes() == bytes(data) and not (root / "index.sqlite3.damaged").exists()
