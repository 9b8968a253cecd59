"""Read commands work on a store that cannot be written, and write nothing.

Two real ways to make a store read-only, each a separate parameter: a read-only bind mount
(root cannot write through it either) and running as ``nobody`` after ``chmod -R a-w``.
Afterwards every file and directory must be byte- and mtime-identical, and nothing new may
appear (no ``snapshots/``, no ``index.sqlite3-wal``, no ``.damaged`` index).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_support import (CLI, READONLY_MODES, WAITING_WORKFLOW, changes, index_row, make_readonly_for_nobody,  # noqa: E402
                           put_index_row, readonly_mode, run_readonly, tree, world_dir)  # noqa: F401

LIBRARY_READS = """
import json, sys
from abstractruntime.core.models import RunStatus
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_store
store = FileStore(sys.argv[1])
print(json.dumps({
    "all": sorted(r.run_id for r in store.runs.list_runs()),
    "waiting": sorted(r.run_id for r in store.runs.list_runs(status=RunStatus.WAITING)),
    "completed": sorted(r.run_id for r in store.runs.list_runs(status=RunStatus.COMPLETED)),
    "due": [r.run_id for r in store.runs.list_due_wait_until(now_iso="2999-01-01T00:00:00+00:00")],
    "snapshots": [s.snapshot_id for s in store.snapshots.list()],
    "verified": [r.ok for r in verify_store(store.root)],
}))
"""


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The workflow file lives beside the store: the operator registers that folder.
    return subprocess.run([*CLI, "--store", str(store), "--workflows", str(store.parent), *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def _build(base: Path) -> tuple[Path, str, str, tuple]:
    """A store with one completed run (whose index row is kept from when it waited) and one waiting run."""
    store, workflow = base / "store", base / "wf.py"
    workflow.write_text(WAITING_WORKFLOW)
    first = _cli(store, "run", str(workflow), "--no-input")
    assert first.returncode == 5, first.stderr
    first_id = first.stdout.strip().split("@")[0]
    waiting_row = index_row(store, first_id)
    assert _cli(store, "emit", "evt-1", "--payload", "{}").returncode == 0
    second = _cli(store, "run", str(workflow), "--no-input")
    assert second.returncode == 5, second.stderr
    return store, first_id, second.stdout.strip().split("@")[0], waiting_row


@pytest.mark.parametrize("mode", READONLY_MODES)
def test_read_commands_work_on_a_readonly_store_and_write_nothing(mode: str, world_dir: Path) -> None:
    readonly_mode(mode)
    store, done_id, waiting_id, _ = _build(world_dir)
    if mode.startswith("non-root"):
        make_readonly_for_nobody(world_dir)
    before = tree(store)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_readonly(mode, store, [*CLI, "--store", str(store), *args])

    listed = cli("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert done_id in listed.stdout and waiting_id in listed.stdout
    waiting = cli("runs", "list", "--status", "waiting")
    assert waiting.returncode == 0 and waiting_id in waiting.stdout and done_id not in waiting.stdout
    nobody_waits = cli("emit", "no-such-key", "--payload", "{}")
    assert nobody_waits.returncode == 4, nobody_waits.stderr  # "no run is waiting", not a storage error
    assert "no run is waiting" in nobody_waits.stderr
    due = cli("tick", "--due")
    assert due.returncode == 0, due.stderr
    snapshots = cli("snapshot", "list")
    assert snapshots.returncode == 0, snapshots.stderr
    verified = cli("verify", "--all")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    library = run_readonly(mode, store, [sys.executable, "-c", LIBRARY_READS, str(store)])
    assert library.returncode == 0, library.stderr
    assert json.loads(library.stdout) == {"all": sorted([done_id, waiting_id]), "waiting": [waiting_id],
                                          "completed": [done_id], "due": [], "snapshots": [],
                                          "verified": [True, True]}
    assert changes(before, tree(store)) == {}
    assert not (store / "snapshots").exists()


@pytest.mark.parametrize("mode", READONLY_MODES)
def test_a_readonly_store_without_an_index_is_read_from_the_files(mode: str, world_dir: Path) -> None:
    readonly_mode(mode)
    store, done_id, waiting_id, _ = _build(world_dir)
    for path in store.glob("index.sqlite3*"):
        path.unlink()
    if mode.startswith("non-root"):
        make_readonly_for_nobody(world_dir)
    before = tree(store)
    library = run_readonly(mode, store, [sys.executable, "-c", LIBRARY_READS, str(store)])
    assert library.returncode == 0, library.stderr
    result = json.loads(library.stdout)
    assert result["waiting"] == [waiting_id] and result["completed"] == [done_id]
    listed = run_readonly(mode, store, [*CLI, "--store", str(store), "runs", "list", "--status", "completed"])
    assert listed.returncode == 0 and done_id in listed.stdout and waiting_id not in listed.stdout
    assert changes(before, tree(store)) == {}
    assert not list(store.glob("index.sqlite3*"))


@pytest.mark.parametrize("mode", READONLY_MODES)
def test_a_stale_row_does_not_hide_a_run_on_a_readonly_store(mode: str, world_dir: Path) -> None:
    readonly_mode(mode)
    store, done_id, waiting_id, stale_row = _build(world_dir)
    put_index_row(store, stale_row)  # the index still says "waiting", as if its last write was lost
    if mode.startswith("non-root"):
        make_readonly_for_nobody(world_dir)
    before = tree(store)
    library = run_readonly(mode, store, [sys.executable, "-c", LIBRARY_READS, str(store)])
    assert library.returncode == 0, library.stderr
    result = json.loads(library.stdout)
    assert result["completed"] == [done_id] and result["waiting"] == [waiting_id]
    assert changes(before, tree(store)) == {}  # answered in memory; the row is not repaired on a read-only store


def test_the_same_reads_on_a_writable_store_agree(world_dir: Path) -> None:
    store, done_id, waiting_id, _ = _build(world_dir)
    proc = subprocess.run([sys.executable, "-c", LIBRARY_READS, str(store)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["completed"] == [done_id]
    assert not (store / "snapshots").exists()  # listing never creates the directory


def test_tick_due_on_a_readonly_store_without_artifacts(world_dir: Path) -> None:
    mode = readonly_mode("read-only mount")
    store, _, _, _ = _build(world_dir)
    for path in sorted(store.rglob("*"), reverse=True):
        if path.relative_to(store).parts[0] == "artifacts":
            path.rmdir() if path.is_dir() else path.unlink()
    before = tree(store)
    due = run_readonly(mode, store, [*CLI, "--store", str(store), "tick", "--due"])
    assert changes(before, tree(store)) == {}
    assert due.returncode == 0, due.stderr
