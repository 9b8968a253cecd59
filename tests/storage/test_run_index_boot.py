"""The query index across boots, kills and hand edits.

The index is written with ``synchronous=OFF`` where the machine's boot id is known: a killed
process loses nothing SQLite wrote (the OS has it), an OS crash may lose or tear it, and the
machine then boots with a new id. These tests stand for "another boot" through the documented
test hook ``ABSTRACTRUNTIME_BOOT_ID_FILE`` (the file the boot id is read from), kill real
command-line processes with SIGKILL at each of their writes, damage the index file, and leave a
stale ``-wal`` beside a deleted one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
from runtime_support import ask_workflow_source

import abstractruntime.storage.run_index as run_index
from abstractruntime.core.models import RunState, RunStatus
from abstractruntime.storage.json_files import JsonFileRunStore

ASK = ask_workflow_source("boot_ask")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "ask.py").write_text(ASK, encoding="utf-8")
    (tmp_path / "boot").write_text("boot-A\n", encoding="utf-8")
    return tmp_path


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "ABSTRACTRUNTIME_STORE": str(site / "store"), "ABSTRACTRUNTIME_WORKFLOWS": str(site),
            "NO_COLOR": "1", run_index.BOOT_ID_FILE_ENV: str(site / "boot")}


def _cli(site: Path, *args: str, expect: Optional[int] = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "abstractruntime", *args], capture_output=True, text=True,
                          cwd=site, env=_env(site), stdin=subprocess.DEVNULL, timeout=120)
    if expect is not None:
        assert proc.returncode == expect, (args, proc.returncode, proc.stderr)
    return proc


def _killed(site: Path, n: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line killed with SIGKILL (by itself) right after its ``n``-th write to the store."""
    args = tuple(str(site / a) if a.endswith(".py") else a for a in args)  # it runs from the repository
    return subprocess.run([sys.executable, "-m", "tests.reliability.killpoint", str(n), "--", *args],
                          capture_output=True, text=True, cwd=REPO, env=_env(site), stdin=subprocess.DEVNULL,
                          timeout=120)


def _sql(site: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    # Read and write, never create: a missing index stays missing.
    conn = sqlite3.connect(f"{(site / 'store' / 'index.sqlite3').as_uri()}?mode=rw", uri=True, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _meta(site: Path) -> dict[str, str]:
    return dict(_sql(site, "SELECT key, value FROM meta"))  # type: ignore[arg-type]


def _listed(site: Path, *args: str) -> dict[str, str]:
    out = json.loads(_cli(site, "runs", "list", "--json", *args).stdout)
    return {r["run_id"]: r["status"] for r in out}


def _status(site: Path, run_id: str) -> str:
    return str(json.loads(_cli(site, "runs", "show", run_id, "--json").stdout)["run"]["status"])


# -- the index's synchronous setting follows what is known of the boot -----------------------


def _run(run_id: str) -> RunState:
    return RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)


def test_the_index_is_written_without_fsync_in_a_known_boot(tmp_path: Path, boot_file: Path) -> None:
    store = JsonFileRunStore(tmp_path / "s", durability="none")
    store.save(_run("r1"))
    conn = store._index._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF
    assert dict(conn.execute("SELECT key, value FROM meta"))["boot_id"] == "boot-A"
    store.close()


def test_without_a_boot_id_the_index_keeps_synchronous_normal(tmp_path: Path, boot_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(run_index.BOOT_ID_FILE_ENV, str(tmp_path / "no such file"))
    store = JsonFileRunStore(tmp_path / "s", durability="none")
    store.save(_run("r1"))
    conn = store._index._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert "boot_id" not in dict(conn.execute("SELECT key, value FROM meta"))
    assert [r.run_id for r in store.list_runs()] == ["r1"]
    store.close()


def test_an_index_of_an_older_release_is_rebuilt_once_in_a_known_boot(tmp_path: Path, boot_file: Path) -> None:
    store = JsonFileRunStore(tmp_path / "s", durability="none")
    store.save(_run("r1"))
    store.close()
    conn = sqlite3.connect(tmp_path / "s" / "index.sqlite3", isolation_level=None)
    conn.execute("DELETE FROM meta WHERE key = 'boot_id'")  # what a release without it wrote
    conn.execute("UPDATE runs SET status = 'completed'")  # ... and a row a power cut rolled back
    conn.close()
    store = JsonFileRunStore(tmp_path / "s", durability="none")
    assert [r.run_id for r in store.list_runs(status=RunStatus.RUNNING)] == ["r1"]
    assert store._index._conn is not None
    assert dict(store._index._conn.execute("SELECT key, value FROM meta"))["boot_id"] == "boot-A"
    store.close()


# -- another boot: nothing the index says is used before it is rebuilt from the files ---------


def test_rows_of_another_boot_are_rebuilt_before_they_are_trusted(site: Path) -> None:
    run_id = _cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip().split("@")[0]
    assert _meta(site)["boot_id"] == "boot-A"
    # What an OS crash with synchronous=OFF may leave: the run's last row write lost.
    _sql(site, "UPDATE runs SET status = 'completed', wait_reason = NULL, wait_key = NULL WHERE run_id = ?",
         (run_id,))
    # In the boot that wrote it the index is trusted: the rows are in step, the run is not listed.
    assert run_id not in _listed(site, "--status", "waiting")
    # After a reboot the first command rebuilds it from the files before answering.
    (site / "boot").write_text("boot-B\n", encoding="utf-8")
    assert _listed(site, "--status", "waiting") == {run_id: "waiting"}
    assert _meta(site)["boot_id"] == "boot-B"
    assert _sql(site, "SELECT status, dirty FROM runs WHERE run_id = ?", (run_id,)) == [("waiting", 0)]


def test_a_dirty_mark_lost_with_another_boot_is_made_again(site: Path) -> None:
    handle = _cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip()
    run_id = handle.split("@")[0]
    # resume's writes: 1 the mark, 2 the answer's append. Killed after the append: the ledger is
    # past the checkpoint and the row is marked.
    killed = _killed(site, 2, "resume", handle, "--answer", "yes")
    assert killed.returncode == -9, killed.stderr
    assert _sql(site, "SELECT dirty FROM runs WHERE run_id = ?", (run_id,)) == [(1,)]
    _sql(site, "UPDATE runs SET dirty = 0 WHERE run_id = ?", (run_id,))  # the mark lost in an OS crash
    (site / "boot").write_text("boot-B\n", encoding="utf-8")
    _cli(site, "runs", "list")
    assert _sql(site, "SELECT dirty FROM runs WHERE run_id = ?", (run_id,)) == [(1,)]
    _cli(site, "worker", "--once")  # found by its mark, finished from its ledger
    assert _status(site, run_id) == "completed"


def _damage_a_page(index: Path) -> None:
    """Overwrite every page but the first (the header and schema) with garbage."""
    data = bytearray(index.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 2 * page
    data[page:] = b"\xa5" * (len(data) - page)
    index.write_bytes(bytes(data))


def test_a_damaged_index_of_another_boot_is_set_aside_with_one_line(site: Path) -> None:
    ids = {_cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip().split("@")[0] for _ in range(3)}
    index = site / "store" / "index.sqlite3"
    assert not Path(f"{index}-wal").exists()  # the last command's close checkpointed it into the file
    _damage_a_page(index)
    (site / "boot").write_text("boot-B\n", encoding="utf-8")
    proc = _cli(site, "runs", "list", "--json")
    assert {r["run_id"] for r in json.loads(proc.stdout)} == ids
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert (site / "store" / "index.sqlite3.damaged").exists()
    assert _sql(site, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pages"])
def test_a_damaged_index_in_this_boot_is_rebuilt_by_a_writing_command(site: Path, damage: str) -> None:
    first = _cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip()
    index = site / "store" / "index.sqlite3"
    if damage == "garbage":
        index.write_bytes(b"not a database at all\n" * 300)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:1500])
    else:
        _damage_a_page(index)
    proc = _cli(site, "resume", first, "--answer", "yes")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert _listed(site) == {first.split("@")[0]: "completed"}
    assert _sql(site, "PRAGMA integrity_check") == [("ok",)]


# -- a stale write-ahead log beside a deleted index --------------------------------------------


# A whole index in its write-ahead log, never checkpointed: made by a process killed with SIGKILL
# right after its commits. It claims to be built in this boot and holds a run that does not exist.
GHOST_WAL = """
import os, signal, sqlite3, sys
from abstractruntime.storage.run_index_schema import SCHEMA
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.executescript(SCHEMA)
conn.execute("INSERT INTO meta VALUES ('runs_mtime_ns', ?), ('boot_id', 'boot-A')", (sys.argv[2],))
conn.execute("INSERT INTO runs (run_id, status, dirty) VALUES ('ghost', 'waiting', 0)")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_stale_wal_beside_a_deleted_index_is_not_applied_to_the_new_one(site: Path) -> None:
    old = _cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip().split("@")[0]
    store = site / "store"
    elsewhere = site / "elsewhere"
    elsewhere.mkdir()
    made = subprocess.run([sys.executable, "-c", GHOST_WAL, str(elsewhere / "index.sqlite3"),
                           str((store / "runs").stat().st_mtime_ns)], capture_output=True, text=True, cwd=REPO)
    assert made.returncode == -9, made.stderr
    stale = (elsewhere / "index.sqlite3-wal").read_bytes()
    assert len(stale) > 4096
    # An operator deletes the index to rebuild it, and its log (restored with a backup, copied
    # in with the store...) is the other one.
    for path in store.glob("index.sqlite3*"):
        path.unlink()
    Path(f"{store / 'index.sqlite3'}-wal").write_bytes(stale)
    _cli(site, "run", "ask.py", "--no-input", expect=5)  # a writing command makes the new index
    assert "ghost" not in {r[0] for r in _sql(site, "SELECT run_id FROM runs")}
    assert len(_sql(site, "SELECT run_id FROM runs")) == 2 and old in _listed(site)
    assert _sql(site, "PRAGMA integrity_check") == [("ok",)]


# -- kill -9 of writing commands: the index keeps every committed write ------------------------


def test_a_writing_command_killed_at_each_write_leaves_an_index_that_is_right(site: Path) -> None:
    """kill -9 after each write of ``run`` then of ``resume``: in the same boot the next command
    trusts the index (no rebuild), and it lists every run as its ledger says."""
    expected: dict[str, str] = {}
    for command in ("run", "resume"):
        for n in range(1, 12):
            if command == "run":
                args: tuple[str, ...] = ("run", "ask.py", "--no-input")
            else:
                handle = _cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip()
                args = ("resume", handle, "--answer", "yes")
            before = set(os.listdir(site / "store" / "runs")) if (site / "store" / "runs").exists() else set()
            killed = _killed(site, n, *args)
            for run_id in set(os.listdir(site / "store" / "runs")) - before:
                expected[run_id] = ""
            if killed.returncode != -9:
                assert killed.returncode in (0, 5), killed.stderr
                break
            if (site / "store" / "index.sqlite3").exists():  # killed before the index was made: none
                assert _sql(site, "PRAGMA integrity_check") == [("ok",)]
                assert _meta(site).get("boot_id") in (None, "boot-A")
        else:
            pytest.fail(f"{command} still killed after 11 writes")
    listed = _listed(site, "--limit", "1000")
    assert expected
    for run_id in expected:
        shown = _cli(site, "runs", "show", run_id, "--json", expect=None)
        if shown.returncode == 0:  # a run whose creator was killed before its first record has none
            assert listed.get(run_id) == json.loads(shown.stdout)["run"]["status"], run_id


def test_an_index_deleted_while_a_process_has_it_open_gets_that_process_s_marks(tmp_path: Path,
                                                                                boot_file: Path) -> None:
    root = tmp_path / "s"
    store = JsonFileRunStore(root, durability="none")
    store.save(_run("r1"))
    for path in root.glob("index.sqlite3*"):
        path.unlink()  # deleted by hand, to rebuild it, while this process holds it open
    other = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in other.list_runs()] == ["r1"]  # the new index, rebuilt from the files
    # The first process marks the run before its ledger goes past its checkpoint: the mark must
    # reach the index the others read, not the deleted file this process had open.
    store._index.mark("r1")
    assert other._index.ahead(10) == ["r1"]
    other.close()
    store.close()


def test_writing_commands_killed_at_any_moment_leave_an_index_that_is_right(site: Path) -> None:
    """kill -9 from outside at spread-out moments of ``run`` and ``resume``, the index's closing
    checkpoint included (no hook reaches inside SQLite): the file stays sound, and in the same
    boot the next command lists every run as its ledger says."""
    import random
    import signal
    import time

    rng = random.Random(7)
    env = _env(site)
    # One command left to finish makes the store and says how long a command lasts on this machine
    # now: the kills are spread over that time (fixed times all fall in start-up when it is loaded).
    began = time.monotonic()
    handles: list[str] = [_cli(site, "run", "ask.py", "--no-input", expect=5).stdout.strip()]
    lasts = time.monotonic() - began
    for i in range(16):
        if i % 2 and handles:
            args = ["resume", handles.pop(), "--answer", "yes"]
        else:
            args = ["run", "ask.py", "--no-input"]
        proc = subprocess.Popen([sys.executable, "-m", "abstractruntime", *args], cwd=site, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.01, 1.2 * lasts))  # where it is killed: anywhere from start-up to exit
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        if proc.returncode == 5 and args[0] == "run":
            handles.append(out.decode().strip())
        if (site / "store" / "index.sqlite3").exists():
            assert _sql(site, "PRAGMA integrity_check") == [("ok",)]
    listed = _listed(site, "--limit", "1000")
    assert _meta(site)["boot_id"] == "boot-A"  # trusted as it is: no rebuild in the same boot
    for run_id in os.listdir(site / "store" / "runs"):
        shown = _cli(site, "runs", "show", run_id, "--json", expect=None)
        if shown.returncode == 0:
            assert listed.get(run_id) == json.loads(shown.stdout)["run"]["status"], run_id
