"""The store's housekeeping under abuse: a full disk, stale index rows, ``reindex``, leftover temp files.

Each test uses real files in a temporary store; the index is queried through the public
store API, and damaged on purpose with sqlite3 or by replacing files, as a crash or an
operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abstractruntime.core.errors import StorageError
from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.fsio import TidyRunLock, atomic_write_bytes, remove_stale_tmp_files
from abstractruntime.storage.reindex import ReindexReport, rebuild_index
from abstractruntime.storage.store import FileStore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_support import CLI, index_row, put_index_row, readonly_mode, run_readonly  # noqa: E402


def _run(run_id: str, status: RunStatus, second: int = 0) -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    run.status = status
    run.updated_at = f"2030-01-01T00:00:{second:02d}+00:00"
    if status is RunStatus.WAITING:
        run.waiting = WaitState(reason=WaitReason.UNTIL, until="2030-01-01T00:00:00+00:00", wait_key="t")
    return run


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    opened = FileStore(tmp_path / "store", durability="none")
    yield opened
    opened.close()


def _ids(runs: list[RunState]) -> list[str]:
    return sorted(r.run_id for r in runs)


# -- a full disk ---------------------------------------------------------------------------------

def _fill_index(store: FileStore) -> None:
    db = store.runs._index._db()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now answers SQLITE_FULL, as on a full disk


def _big(run_id: str, status: RunStatus = RunStatus.RUNNING) -> RunState:
    run = _run(run_id, status, 0)
    run.workflow_id = "w" * 2000
    return run


def test_a_full_disk_is_a_storage_error_naming_the_cause_and_moves_nothing(store: FileStore) -> None:
    for i in range(3):
        store.runs.save(_run(f"r{i}", RunStatus.RUNNING, i))
    _fill_index(store)
    before = sorted(p.name for p in store.root.iterdir())
    with pytest.raises(StorageError, match="disk is full") as info:
        for i in range(3, 500):
            store.runs._index.put(_big(f"r{i}"), dirty=True)
    assert "index.sqlite3" in str(info.value) and "run files were not changed" in str(info.value)
    assert sorted(p.name for p in store.root.iterdir()) == before  # nothing moved aside, nothing added
    assert not list(store.root.glob("*.damaged*"))


def test_checkpoints_written_while_the_index_is_full_are_still_found(store: FileStore,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    for i in range(3):
        store.runs.save(_run(f"r{i}", RunStatus.RUNNING, i))
    _fill_index(store)
    for i in range(3, 60):  # the checkpoints are written; their rows cannot be
        store.runs.save(_big(f"r{i}", RunStatus.WAITING))
    assert "disk is full" in caplog.text
    store.runs.save(_run("r1", RunStatus.COMPLETED, 1))  # an indexed run moves on, its row cannot follow
    waiting = _ids(store.runs.list_runs(status=RunStatus.WAITING, limit=1000))
    assert waiting == sorted(f"r{i}" for i in range(3, 60))
    assert _ids(store.runs.list_runs(status=RunStatus.COMPLETED)) == ["r1"]
    assert not list(store.root.glob("*.damaged*"))


def _probe_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    proc = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && touch /mnt/x"],
                          capture_output=True, timeout=30)
    return proc.returncode == 0


REAL_DISK_FULL = """
import os, sys, json
from abstractruntime.core.errors import StorageError
from abstractruntime.core.models import RunState
from abstractruntime.storage.store import FileStore
root = sys.argv[1]
store = FileStore(root, durability="none")
for i in range(3):
    store.runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id=f"r{i}"))
fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_CREAT)   # fill the disk to the last byte
for chunk in (b"x" * 4096, b"x"):
    try:
        while True:
            os.write(fd, chunk)
    except OSError:
        pass
os.close(fd)
errors = []
for i in range(3, 200):
    try:
        store.runs.save(RunState.new(workflow_id="w" * 3000, entry_node="a", run_id=f"r{i}"))
    except StorageError as exc:
        errors.append(str(exc))
        break
listed = sorted(r.run_id for r in store.runs.list_runs())
print(json.dumps({"errors": errors, "files": sorted(os.listdir(root)), "listed": listed}))
"""


def test_a_really_full_disk(tmp_path: Path) -> None:
    if not _probe_tmpfs():
        pytest.skip("cannot mount a small tmpfs here")
    script = tmp_path / "full.py"
    script.write_text(REAL_DISK_FULL)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=400k tmpfs /mnt && exec "$@"', "sh",
                           sys.executable, str(script), "/mnt/store"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["errors"]) == 1
    assert "No space left" in result["errors"][0] or "disk is full" in result["errors"][0] \
        or "disk I/O error" in result["errors"][0]
    assert not [f for f in result["files"] if "damaged" in f]
    assert {"r0", "r1", "r2"} <= set(result["listed"])


# -- stale rows ------------------------------------------------------------------------------------

def test_a_lost_index_write_does_not_hide_a_run_and_is_repaired(store: FileStore) -> None:
    root = store.root
    store.runs.save(_run("r1", RunStatus.WAITING, 1))
    store.runs.save(_run("r2", RunStatus.WAITING, 2))
    stale = index_row(root, "r1")
    store.runs.save(_run("r1", RunStatus.COMPLETED, 3))
    put_index_row(root, stale)  # the index write of the completion was lost (power failure)
    (root / "index.checked").write_bytes(b"the boot before the power cut")
    fresh = FileStore(root, durability="none")
    assert _ids(fresh.runs.list_runs(status=RunStatus.COMPLETED)) == ["r1"]
    assert _ids(fresh.runs.list_runs(status=RunStatus.WAITING)) == ["r2"]
    assert _ids(fresh.runs.list_due_wait_until(now_iso="2031-01-01T00:00:00+00:00")) == ["r2"]
    assert index_row(root, "r1")[2] == "completed"  # repaired in place on a writable store
    fresh.close()


def test_a_checkpoint_replaced_behind_the_index_is_seen(store: FileStore, tmp_path: Path) -> None:
    root = store.root
    store.runs.save(_run("r1", RunStatus.WAITING, 1))
    store.runs.save(_run("r2", RunStatus.COMPLETED, 1))
    saved = tmp_path / "run.json.copy"
    shutil.copy2(root / "runs" / "r1" / "run.json", saved)  # cp -p keeps the mtime
    store.runs.save(_run("r1", RunStatus.COMPLETED, 2))
    assert _ids(store.runs.list_runs(status=RunStatus.WAITING)) == []
    shutil.copy2(saved, root / "runs" / "r1" / "run.json")  # restored from a backup
    # A query whose row no longer matches its file checks every row and answers again.
    assert _ids(store.runs.list_runs(status=RunStatus.COMPLETED)) == ["r2"]
    assert _ids(store.runs.list_runs(status=RunStatus.WAITING)) == ["r1"]
    assert index_row(root, "r1")[2] == "waiting"  # repaired

    # A restore that no query's rows point at is seen after `runs reindex` (or on every query
    # with always_check), as docs/durability.md says.
    store.runs.save(_run("r1", RunStatus.COMPLETED, 3))
    shutil.copy2(saved, root / "runs" / "r1" / "run.json")
    proc = subprocess.run([*CLI, "--store", str(root), "runs", "reindex"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*CLI, "--store", str(root), "runs", "list", "--status", "waiting"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "r1" in proc.stdout, proc.stderr
    store.runs.save(_run("r1", RunStatus.COMPLETED, 4))
    shutil.copy2(saved, root / "runs" / "r1" / "run.json")
    checking = FileStore(root, durability="none")
    checking.runs._index.always_check = True
    assert _ids(checking.runs.list_runs(status=RunStatus.WAITING)) == ["r1"]
    checking.close()


def test_a_row_whose_run_directory_vanished_is_dropped(store: FileStore) -> None:
    store.runs.save(_run("r1", RunStatus.WAITING, 1))
    store.runs.save(_run("r2", RunStatus.WAITING, 2))
    os.unlink(store.root / "runs" / "r1" / "run.json")
    assert _ids(store.runs.list_runs()) == ["r2"]
    assert index_row(store.root, "r1") is None


# -- reindex ---------------------------------------------------------------------------------------

def test_rebuild_index_from_a_path(store: FileStore) -> None:
    for i in range(4):
        store.runs.save(_run(f"r{i}", RunStatus.COMPLETED, i))
    (store.root / "runs" / "broken").mkdir()
    (store.root / "runs" / "broken" / "run.json").write_text("{not json")
    (store.root / "runs" / "empty").mkdir()  # an interrupted start: not a run, not unreadable
    put_index_row(store.root, (*index_row(store.root, "r1")[:2], "waiting", *index_row(store.root, "r1")[3:]))
    report = rebuild_index(store.root)
    assert isinstance(report, ReindexReport)
    assert report.indexed == 4 and report.unreadable == ["broken"]
    assert report.to_dict() == {"path": str(store.root / "index.sqlite3"), "indexed": 4, "unreadable": ["broken"]}
    assert index_row(store.root, "r1")[2] == "completed"
    assert rebuild_index(store).indexed == 4  # a FileStore works too


def test_rebuild_index_refuses_a_readonly_store(store: FileStore) -> None:
    readonly_mode("read-only mount")
    store.runs.save(_run("r1", RunStatus.COMPLETED, 1))
    script = ("import sys\nfrom abstractruntime.storage.reindex import rebuild_index\n"
              "from abstractruntime.core.errors import StorageError\n"
              "try:\n    rebuild_index(sys.argv[1])\nexcept StorageError as exc:\n    print('refused:', exc)\n")
    proc = run_readonly("read-only mount", store.root, [sys.executable, "-c", script, str(store.root)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused:") and "read-only" in proc.stdout


# -- temp files left by kills ----------------------------------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_write_bytes(run_dir / "run.json", b"{}\n", durable=False)
    dead, me = _dead_pid(), os.getpid()
    killed = run_dir / f".run.json.{dead}.123456789.tmp"
    killed_bookmarks = run_dir / f".bookmarks.json.{dead}.5.tmp"
    mine = run_dir / f".run.json.{me}.42.tmp"
    ancient = run_dir / ".run.json.1.77.tmp"  # pid 1 is alive, but the file is a day old
    for path in (killed, killed_bookmarks, mine, ancient):
        path.write_bytes(b"partial")
    day_ago = time.time() - 86400
    os.utime(ancient, (day_ago, day_ago))
    lookalikes = [run_dir / ".run.json.tmp", run_dir / "run.json.1.2.tmp", run_dir / ".notes.txt"]
    for path in lookalikes:
        path.write_bytes(b"keep")
    (run_dir / f".link.{dead}.1.tmp").symlink_to(run_dir / "run.json")

    assert sorted(remove_stale_tmp_files(run_dir, targets=("run.json",))) == sorted([killed, ancient])
    assert killed_bookmarks.exists()
    assert remove_stale_tmp_files(run_dir) == [killed_bookmarks]
    assert mine.exists() and all(p.exists() for p in lookalikes)
    assert (run_dir / f".link.{dead}.1.tmp").is_symlink()
    assert (run_dir / "run.json").read_bytes() == b"{}\n"
    assert remove_stale_tmp_files(tmp_path / "missing") == []


def test_a_temp_file_of_a_killed_writer_is_cleaned(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A writer killed between creating its temp file and the rename.
    script = ("import os, sys, time\n"
              "path = os.path.join(sys.argv[1], f'.run.json.{os.getpid()}.{time.monotonic_ns()}.tmp')\n"
              "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
              "os.write(fd, b'{\"half\": ')\nos.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(run_dir)], timeout=60)
    assert proc.returncode == -9
    leftovers = list(run_dir.glob(".run.json.*.tmp"))
    assert len(leftovers) == 1
    assert remove_stale_tmp_files(run_dir) == leftovers
    assert list(run_dir.iterdir()) == []


def test_taking_the_run_lock_tidies_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    leftover = run_dir / f".run.json.{_dead_pid()}.1.tmp"
    leftover.write_bytes(b"{")
    mine = run_dir / f".run.json.{os.getpid()}.2.tmp"
    mine.write_bytes(b"{")
    with TidyRunLock(run_dir / ".lock", "r1"):
        assert not leftover.exists() and mine.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", mine.name]
