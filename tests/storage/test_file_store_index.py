"""The file stores' SQLite query index: built, kept in step, rebuilt, never trusted over the files."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import abstractruntime.storage.json_files as json_files
import abstractruntime.storage.ledger_files as ledger_files
from abstractruntime.core.canonical import canonical_json
from abstractruntime.core.errors import (
    StorageError,
)
from abstractruntime.core.models import (
    Effect,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
    WaitReason,
    WaitState,
)
from abstractruntime.core.runtime import EffectOutcome, Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.base import LedgerHead, StoredCheckpoint
from abstractruntime.storage.fsio import atomic_write_bytes
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.run_index import RACY_NS, boot_id

from file_store_support import save_run, root, ledger, runs  # noqa: F401 - pytest fixtures


# -- the SQLite query index ----------------------------------------------------------------


def _write_run_by_hand(root: Path, run: RunState) -> None:
    run_dir = root / "runs" / run.run_id
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "run.json").write_bytes(canonical_json(
        StoredCheckpoint(state={"run": run.to_dict(), "kernel": {}}, ledger=LedgerHead()).to_dict()))


def _hand_run(run_id: str, i: int, status: RunStatus = RunStatus.COMPLETED) -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    run.status = status
    run.updated_at = f"2030-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
    if status is RunStatus.WAITING:
        run.waiting = WaitState(reason=WaitReason.UNTIL, until=run.updated_at, wait_key="t")
    return run


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    real = json_files.read_checkpoint

    def counting(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(json_files, "read_checkpoint", counting)
    return reads


def test_queries_read_only_what_they_return(root: Path, count_reads: list[Path]) -> None:
    for i in range(2000):
        _write_run_by_hand(root, _hand_run(f"r{i:04d}", i, RunStatus.WAITING if i % 2 else RunStatus.COMPLETED))
    store = JsonFileRunStore(root, durability="none")
    assert len(store.list_runs(limit=5000)) == 2000  # the first query builds the index (one full scan)
    count_reads.clear()

    newest = store.list_runs(limit=10)
    assert [r.run_id for r in newest] == [f"r{i:04d}" for i in range(1999, 1989, -1)]
    assert len(count_reads) <= 12, len(count_reads)

    count_reads.clear()
    waiting = store.list_runs(status=RunStatus.WAITING, limit=10)
    assert [r.run_id for r in waiting] == [f"r{i:04d}" for i in range(1999, 1979, -2)]
    assert len(count_reads) <= 12

    count_reads.clear()
    due = store.list_due_wait_until(now_iso="2030-01-01T00:00:10Z", limit=10)
    assert [r.run_id for r in due] == ["r0001", "r0003", "r0005", "r0007", "r0009"]
    assert len(count_reads) <= 7
    store.close()


def test_runs_copied_in_by_hand_are_found(root: Path, tmp_path: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    store.save(_hand_run("local", 1))
    assert [r.run_id for r in store.list_runs()] == ["local"]
    # A run written by another store, then copied in with cp -r.
    elsewhere = JsonFileRunStore(tmp_path / "elsewhere", durability="none")
    elsewhere.save(_hand_run("copied", 5, RunStatus.WAITING))
    elsewhere.close()
    shutil.copytree(tmp_path / "elsewhere" / "runs" / "copied", root / "runs" / "copied")
    assert [r.run_id for r in store.list_runs()] == ["copied", "local"]
    assert [r.run_id for r in store.list_due_wait_until(now_iso="2031-01-01T00:00:00Z")] == ["copied"]
    # And a run directory removed by hand disappears.
    shutil.rmtree(root / "runs" / "local")
    assert [r.run_id for r in store.list_runs()] == ["copied"]
    store.close()


def test_index_is_shared_by_instances(root: Path) -> None:
    first, second = JsonFileRunStore(root, durability="none"), JsonFileRunStore(root, durability="none")
    first.list_runs()
    second.list_runs()
    first.save(_hand_run("a", 1))
    second.save(_hand_run("b", 2, RunStatus.RUNNING))
    assert [r.run_id for r in first.list_runs()] == ["b", "a"]
    assert [r.run_id for r in second.list_runs(status=RunStatus.COMPLETED)] == ["a"]
    first.close()
    second.close()


def test_dirty_rows_are_found_after_a_crash(root: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    run = _hand_run("r1", 1, RunStatus.RUNNING)
    store.save(run)
    # Crash window 1: the row was updated (dirty) but the checkpoint was never written.
    moved = _hand_run("r1", 2, RunStatus.COMPLETED)
    store._index.put(moved, dirty=True)
    fresh = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in fresh.list_runs(status=RunStatus.RUNNING)] == ["r1"]
    assert fresh.list_runs(status=RunStatus.COMPLETED) == []

    # Crash window 2: the checkpoint was written but the row never marked clean.
    waiting = _hand_run("r1", 3, RunStatus.WAITING)
    store._index.put(waiting, dirty=True)
    atomic_write_bytes(root / "runs" / "r1" / "run.json",
                       canonical_json(StoredCheckpoint(state={"run": waiting.to_dict(), "kernel": {}}, ledger=LedgerHead()).to_dict()), durable=False)
    fresh = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in fresh.list_runs(status=RunStatus.WAITING)] == ["r1"]
    assert [r.run_id for r in fresh.list_due_wait_until(now_iso="2031-01-01T00:00:00Z")] == ["r1"]
    assert fresh.list_runs(status=RunStatus.RUNNING) == []
    store.close()
    fresh.close()


def test_rebuild_index(root: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    for i in range(5):
        store.save(_hand_run(f"r{i}", i))
    time.sleep(2 * RACY_NS / 1e9)  # the runs/ directory's mtime is then recorded as it is (not racy)
    store.list_runs()
    store.close()
    # Rows lost behind the store's back (a damaged or stale index).
    with sqlite3.connect(root / "index.sqlite3") as db:
        db.execute("DELETE FROM runs WHERE run_id IN ('r1', 'r3')")
    store = JsonFileRunStore(root, durability="none")
    assert len(store.list_runs()) == 3
    assert store.rebuild_index() == 5
    assert sorted(r.run_id for r in store.list_runs()) == ["r0", "r1", "r2", "r3", "r4"]
    store.close()

    # A deleted index is recreated from the files.
    for path in root.glob("index.sqlite3*"):
        path.unlink()
    store = JsonFileRunStore(root, durability="none")
    assert sorted(r.run_id for r in store.list_runs()) == ["r0", "r1", "r2", "r3", "r4"]
    store.close()


def test_a_corrupt_run_does_not_hide_the_others(runs: JsonFileRunStore) -> None:
    save_run(runs, "good")
    bad = save_run(runs, "bad")
    bad.write_bytes(b"{broken")
    assert [r.run_id for r in runs.list_runs()] == ["good"]


class _Crash(BaseException):
    """Stands for the process dying at that point."""


def test_dirty_mark_is_not_skipped_on_stale_knowledge(root: Path) -> None:
    mine, theirs = JsonFileRunStore(root, durability="none"), JsonFileRunStore(root, durability="none")
    mine.save(_hand_run("r1", 1, RunStatus.RUNNING))       # this process indexed r1 clean as running
    theirs.save(_hand_run("r1", 2, RunStatus.WAITING))     # another process moved it on
    def crash_before_clean(run: RunState) -> None:
        raise _Crash()

    mine._index.put_together = crash_before_clean  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        mine.save(_hand_run("r1", 3, RunStatus.RUNNING))   # checkpoint written, then the process dies
    assert JsonFileRunStore(root, durability="none").load("r1").status is RunStatus.RUNNING
    fresh = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in fresh.list_runs(status=RunStatus.RUNNING)] == ["r1"]


def test_run_directory_swapped_for_a_symlink_later_is_refused(runs: JsonFileRunStore, tmp_path: Path) -> None:
    save_run(runs, "r1")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(runs.base_dir / "runs" / "r1")
    (runs.base_dir / "runs" / "r1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    assert list(outside.iterdir()) == []


def test_damaged_index_is_rebuilt_not_fatal(root: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    store.save(_hand_run("r1", 1))
    store.close()
    for path in root.glob("index.sqlite3*"):
        path.unlink()
    (root / "index.sqlite3").write_bytes(b"this is not a database\n" * 200)
    store = JsonFileRunStore(root, durability="none")
    store.save(_hand_run("r2", 2))
    assert sorted(r.run_id for r in store.list_runs()) == ["r1", "r2"]
    store.close()


def test_failed_append_does_not_poison_the_idempotency_index(ledger: JsonlLedgerStore) -> None:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id="r1")
    key = "k" * 32
    llm = Effect(type=EffectType.LLM_CALL, payload={"prompt": "p"})
    ledger.append(StepRecord.start(run=run, node_id="first", effect=None).finish_success({}))
    completed = StepRecord.start(run=run, node_id="a", effect=llm, idempotency_key=key).finish_success({"v": 1})
    too_big = StepRecord.start(run=run, node_id="b", effect=None).finish_success({"blob": "x" * (9 * 2**20)})
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: the point is what the batch left
        ledger.append_batch([completed, too_big])
    assert ledger.list("r1")[-1]["node_id"] == "first"  # the batch wrote nothing
    ledger.append(StepRecord.start(run=run, node_id="a", effect=llm, idempotency_key=key))  # a new attempt starts
    assert ledger.find_completed("r1", key) is None
    ledger.append(StepRecord.start(run=run, node_id="a", effect=llm, idempotency_key=key).finish_success({"v": 2}))
    found = ledger.find_completed("r1", key)
    assert found is not None and found["status"] == "completed" and found["result"] == {"v": 2}


def test_step_cost_does_not_grow_with_the_ledger(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def spin(run: RunState, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        if run.vars["n"] % 1000 == 0:
            return StepPlan(node_id="spin", effect=Effect(type=EffectType.LLM_CALL, payload={"n": run.vars["n"]}),
                            next_node="spin")
        return StepPlan(node_id="spin", next_node="spin")

    rt = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                 ledger_store=JsonlLedgerStore(root, durability="none"),
                 effect_handlers={EffectType.LLM_CALL: lambda run, effect: EffectOutcome.completed({"ok": 1})})
    wf = WorkflowSpec("wf", "spin", {"spin": spin})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id, max_steps=5000)
    ledger_size = (root / "runs" / run_id / "ledger.jsonl").stat().st_size
    assert ledger_size > 1_000_000

    read: list[int] = []
    real = ledger_files.read_bytes

    def counting(path: Path, **kwargs: Any) -> bytes:
        data = real(path, **kwargs)
        if path.name == "ledger.jsonl":
            read.append(len(data))
        return data

    monkeypatch.setattr(ledger_files, "read_bytes", counting)
    state = rt.tick(workflow=wf, run_id=run_id, max_steps=1001)  # includes an effect (idempotency lookup)
    assert state.vars["n"] == 6001
    assert sum(read) < 2_000, read  # only what this process had not seen yet


def test_a_rebuild_never_follows_a_symlinked_run_directory(root: Path, tmp_path: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    store.save(_hand_run("r1", 1, RunStatus.WAITING))
    store.close()
    # A run elsewhere on disk, linked in as if it were one of the store's runs.
    elsewhere = tmp_path / "elsewhere"
    _write_run_by_hand(elsewhere, _hand_run("r2", 2, RunStatus.WAITING))
    (root / "runs" / "r2").symlink_to(elsewhere / "runs" / "r2", target_is_directory=True)
    (root / "runs" / "r3").mkdir()  # an interrupted start: no files yet
    for path in root.glob("index.sqlite3*"):
        path.unlink()
    store = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in store.list_runs(status=RunStatus.WAITING)] == ["r1"]
    assert store.rebuild_index() == 1
    assert store._index.last_unreadable == ["r2"]
    store.close()


def test_a_row_out_of_step_after_a_rebuild_is_caught_by_the_next_query(root: Path) -> None:
    store = JsonFileRunStore(root, durability="none")
    store.save(_hand_run("r1", 1, RunStatus.WAITING))
    store.close()
    for path in root.glob("index.sqlite3*"):
        path.unlink()
    store = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in store.list_runs(status=RunStatus.WAITING)] == ["r1"]  # rebuilt by this query
    # Replaced behind the index after the rebuild: the next query sees it.
    atomic_write_bytes(root / "runs" / "r1" / "run.json", canonical_json(StoredCheckpoint(
        state={"run": _hand_run("r1", 2).to_dict(), "kernel": {}}, ledger=LedgerHead()).to_dict()), durable=False)
    assert store.list_runs(status=RunStatus.WAITING) == []
    assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["r1"]
    store.close()


def test_the_shown_run_a_read_built_is_handed_out_once() -> None:
    run = _hand_run("r1", 1, RunStatus.WAITING)
    stored = StoredCheckpoint.from_dict(StoredCheckpoint(state={"run": run.to_dict(), "kernel": {}},
                                                         ledger=LedgerHead()).to_dict())
    first, second = stored.shown_run(), stored.shown_run()
    assert first is not second and first.to_dict() == second.to_dict() == run.to_dict()
    # A state document replaced after the read is what the next view shows.
    stored = StoredCheckpoint.from_dict(stored.to_dict())
    stored.state["run"] = _hand_run("r1", 5).to_dict()
    assert stored.shown_run().status is RunStatus.COMPLETED


def _counting_lstat(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import abstractruntime.storage.run_index as run_index

    seen: list[str] = []
    real = run_index.os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith("run.json"):
            seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(run_index.os, "lstat", lstat)
    return seen


@pytest.mark.skipif(boot_id() is None, reason="no boot id on this platform: every query checks every row")
def test_rows_in_step_are_not_checked_until_a_writer_loses_a_row(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = JsonFileRunStore(root, durability="none")
    for i in range(20):
        store.save(_hand_run(f"r{i:02d}", i, RunStatus.WAITING if i % 2 else RunStatus.COMPLETED))
    assert len(store.list_runs(status=RunStatus.WAITING)) == 10  # the first query checks every row
    assert (root / "index.checked").read_bytes() == boot_id()
    stats = _counting_lstat(monkeypatch)
    assert len(store.list_runs(status=RunStatus.WAITING)) == 10
    assert stats == []  # in step: no stat per row

    # A writer whose row write fails (here: the index turned read-only) leaves its signal...
    other = JsonFileRunStore(root, durability="none")
    other._index._readonly = True
    other.save(_hand_run("r00", 100, RunStatus.WAITING))
    other.close()
    assert (root / "index.unchecked").exists()
    # ... so the next query checks every row, sees the run, repairs its row and clears the signal.
    assert "r00" in [r.run_id for r in store.list_runs(status=RunStatus.WAITING)]
    assert len(stats) >= 20 and not (root / "index.unchecked").exists()
    stats.clear()
    assert len(store.list_runs(status=RunStatus.WAITING)) == 11 and stats == []

    # After a reboot (a power cut may have lost the index's last commits) the first query checks.
    (root / "index.checked").write_bytes(b"an earlier boot")
    assert len(store.list_runs(status=RunStatus.WAITING)) == 11
    assert len(stats) >= 20 and (root / "index.checked").read_bytes() == boot_id()
    store.close()
