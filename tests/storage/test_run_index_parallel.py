"""An index rebuild shared with helper processes builds the rows one process builds.

The store holds every kind of run a rebuild meets: waiting and completed runs, a run whose
ledger went past its checkpoint (its row dirty), a run whose creator was killed before its
first checkpoint (a ledger only), an unreadable ``run.json`` and an empty run directory.
Helpers are real processes; the ones that fail are killed with SIGKILL, as is a builder.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import FileStore
from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.json_files import JsonFileRunStore, index_rows

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.storage.test_run_index_parallel"


def _flow() -> WorkflowSpec:
    return WorkflowSpec("par", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", next_node="end", effect=Effect(
            EffectType.ASK_USER, {"prompt": "go?", "wait_key": "k:" + run.run_id}, "reply")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })


def _make_store(root: Path, count: int = 30) -> None:
    store = FileStore(root, durability="none")
    runtime, flow = store.runtime(), _flow()
    for i in range(count):
        run_id = runtime.start(workflow=flow, run_id=f"run-{i:03d}")
        state = runtime.tick(workflow=flow, run_id=run_id)
        if i % 3 == 0:
            runtime.resume(workflow=flow, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "y"})
    runs = root / "runs"
    # Its ledger past its checkpoint: the checkpoint put back to the one before the last tick.
    run_id = runtime.start(workflow=flow, run_id="run-ahead")
    before = (runs / run_id / "run.json").read_bytes()
    runtime.tick(workflow=flow, run_id=run_id)
    (runs / run_id / "run.json").write_bytes(before)
    # A creator killed before the first checkpoint: a ledger, no run.json.
    run_id = runtime.start(workflow=flow, run_id="run-no-checkpoint")
    (runs / run_id / "run.json").unlink()
    (runs / "run-garbage").mkdir(mode=0o700)
    (runs / "run-garbage" / "run.json").write_bytes(b"{not json")
    (runs / "run-empty").mkdir(mode=0o700)
    store.close()
    _drop_index(root)


def _drop_index(root: Path) -> None:
    for path in root.glob("index*"):
        path.unlink()


def _rebuilt(root: Path, *, helpers: int, scanner: str | None = None) -> tuple[list[Any], list[str], int]:
    store = JsonFileRunStore(root, durability="none")
    index = store._index
    index.parallel_min, index.helpers = (2, helpers) if helpers else (10**9, None)
    if scanner is not None:
        index._scanner = scanner
    try:
        count = index.rebuild()
        with sqlite3.connect(root / "index.sqlite3") as db:
            rows = db.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        assert count == len(rows)
        return rows, sorted(index.last_unreadable), index.last_helpers
    finally:
        store.close()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parallel") / "store"
    _make_store(root)
    return root


@pytest.fixture
def store_root(populated: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(populated, root, symlinks=True)
    return root


def test_the_rows_built_by_helpers_are_the_rows_one_process_builds(store_root: Path) -> None:
    alone, unreadable, used = _rebuilt(store_root, helpers=0)
    assert used == 0
    assert {r[0] for r in alone} >= {"run-000", "run-ahead", "run-no-checkpoint"}
    dirty = {r[0] for r in alone if r[7] == 1}
    assert dirty == {"run-ahead", "run-no-checkpoint"}
    assert unreadable == ["run-garbage"]
    for helpers in (1, 3):
        _drop_index(store_root)
        shared, shared_unreadable, used = _rebuilt(store_root, helpers=helpers)
        assert used == helpers  # every share came back from its own process
        assert shared == alone
        assert shared_unreadable == unreadable


def test_a_share_is_the_runs_between_its_bounds(store_root: Path) -> None:
    rows, unreadable = index_rows(str(store_root), "run-010", "run-garbage")
    assert [r[0] for r in rows] == [f"run-{i:03d}" for i in range(10, 30)] + ["run-ahead"]
    assert unreadable == ["run-garbage"]


def die(root: str, first: str, last: str) -> Any:
    """A helper killed with SIGKILL while it scans."""
    os.kill(os.getpid(), signal.SIGKILL)


def garbage(root: str, first: str, last: str) -> Any:
    """A helper whose output is not a share's rows."""
    return "not rows"


@pytest.mark.parametrize("scanner", [f"{HERE}:die", f"{HERE}:garbage", f"{HERE}:no_such_function"])
def test_a_helper_that_fails_has_its_share_scanned_by_the_builder(store_root: Path, scanner: str) -> None:
    alone, unreadable, _ = _rebuilt(store_root, helpers=0)
    _drop_index(store_root)
    shared, shared_unreadable, used = _rebuilt(store_root, helpers=2, scanner=scanner)
    assert used == 0
    assert shared == alone and shared_unreadable == unreadable


def slow(root: str, first: str, last: str) -> Any:
    """A helper that takes its time (the builder is killed meanwhile)."""
    time.sleep(3)
    return index_rows(root, first, last)


BUILDER = r"""
import sys
from abstractruntime.core.models import RunStatus
from abstractruntime.storage.json_files import JsonFileRunStore
store = JsonFileRunStore(sys.argv[1], durability="none")
store._index.parallel_min, store._index.helpers, store._index._scanner = 2, 1, sys.argv[2]
store.list_runs(status=RunStatus.WAITING)
print("built")
"""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith(("Z", "X"))
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to see the helper process")
def test_a_builder_killed_mid_scan_leaves_a_usable_store(store_root: Path) -> None:
    expected = JsonFileRunStore(store_root, durability="none")
    expected._index.parallel_min = 10**9
    want = sorted(r.run_id for r in expected.list_runs(status=RunStatus.WAITING))
    expected.close()
    _drop_index(store_root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(store_root), f"{HERE}:slow"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    helpers: list[int] = []
    while not helpers and time.monotonic() < deadline and proc.poll() is None:
        helpers = _children(proc.pid)
        time.sleep(0.01)
    assert helpers, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)  # the builder, while its helper scans
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # The index exists (made before the scan) but holds no committed rebuild.
    with sqlite3.connect(store_root / "index.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    store = JsonFileRunStore(store_root, durability="none")
    assert sorted(r.run_id for r in store.list_runs(status=RunStatus.WAITING)) == want
    assert sorted(r.run_id for r in store.list_runs()) == sorted(
        p.name for p in (store_root / "runs").iterdir() if p.name not in ("run-garbage", "run-empty"))
    store.close()
    # The orphaned helper finishes, finds nobody reading and exits.
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in helpers)


def test_a_frozen_application_scans_alone(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its sys.executable is the application itself: started with -c it would run the application.
    alone, unreadable, _ = _rebuilt(store_root, helpers=0)
    _drop_index(store_root)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    shared, shared_unreadable, used = _rebuilt(store_root, helpers=2)
    assert used == 0 and shared == alone and shared_unreadable == unreadable


def test_the_rebuild_an_open_makes_leaves_a_rebuild_committed_meanwhile_alone(store_root: Path) -> None:
    # Two processes opening a new index at once both scan; the second to commit finds the
    # first's rebuild (and the dirty mark a writer made after it) and writes nothing.
    first = JsonFileRunStore(store_root, durability="none")
    first.list_runs()
    first._index.mark("run-001")
    second = JsonFileRunStore(store_root, durability="none")
    second._index._db()
    assert second._index.rebuild(unless_built=True) > 0
    with sqlite3.connect(store_root / "index.sqlite3") as db:
        assert db.execute("SELECT dirty FROM runs WHERE run_id = 'run-001'").fetchone() == (1,)
    assert second._index.rebuild() > 0  # runs reindex: rebuilt from the files...
    with sqlite3.connect(store_root / "index.sqlite3") as db:
        # ... and a writer's mark stands (it may have been made after the scan read the run).
        assert db.execute("SELECT dirty FROM runs WHERE run_id = 'run-001'").fetchone() == (1,)
    first.close()
    second.close()


_PLANTED_BUILDER = r"""
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")] # this process imports the real package
from abstractruntime.storage.json_files import JsonFileRunStore
store = JsonFileRunStore(sys.argv[1], durability="none")
index = store._index
index.parallel_min, index.helpers = 2, 2
index.rebuild()
print(index.last_helpers)
store.close()
"""


def test_helpers_import_what_their_builder_imported_not_the_working_directory_s(store_root: Path,
                                                                               tmp_path: Path) -> None:
    """A rebuild started in a directory holding a package of the same name (a checkout, a shared
    directory): the helpers, started with ``-c``, would find it first on their path."""
    planted = tmp_path / "cwd"
    (planted / "abstractruntime").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (planted / "abstractruntime" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    done = subprocess.run([sys.executable, "-c", _PLANTED_BUILDER, str(store_root)], cwd=planted,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), "a helper imported the working directory's package"
    assert done.stdout.strip() == "2"  # both helpers ran and sent their rows


def test_a_writer_s_mark_made_while_a_rebuild_scans_survives_it(store_root: Path) -> None:
    """A writer marks its run (its ledger about to pass its checkpoint) after the rebuild read it,
    then dies before its checkpoint: the rebuilt index still finds the run ahead."""
    flow = _flow()
    writer = FileStore(store_root, durability="none")
    rebuilder = JsonFileRunStore(store_root, durability="none")
    index = rebuilder._index
    index.parallel_min = 10**9
    try:
        runtime = writer.runtime()
        run_id = runtime.start(workflow=flow, run_id="run-marked-late")
        checkpoint = (store_root / "runs" / run_id / "run.json").read_bytes()
        scan = index._scan_all

        def scan_then_write() -> Any:
            found = scan()
            # The scan saw the run at its checkpoint; now its writer goes past it and is "killed"
            # before the checkpoint (the old run.json put back).
            runtime.tick(workflow=flow, run_id=run_id)
            (store_root / "runs" / run_id / "run.json").write_bytes(checkpoint)
            writer.runs._index.mark(run_id)  # (what it marked before appending, as a kill leaves it)
            return found

        index._scan_all = scan_then_write  # type: ignore[method-assign]
        index.rebuild()
        index._scan_all = scan  # type: ignore[method-assign]
        assert run_id in index.ahead(1000)
    finally:
        rebuilder.close()
        writer.close()
