"""Index rows and marks written by many threads at once go in one transaction, and each writer
goes on only once its own statement is committed (the dirty-mark protocol relies on it)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from abstractruntime.core.models import RunState
from abstractruntime.core.ports import StoredCheckpoint
from abstractruntime.storage.base import LedgerHead
from abstractruntime.storage.json_files import JsonFileRunStore


def _dirty(root: Path, run_id: str) -> object:
    # A connection of its own: what is committed, not what the writer's connection sees.
    with sqlite3.connect(root / "index.sqlite3") as db:
        row = db.execute("SELECT dirty FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else row[0]


def _checkpoint(run_id: str) -> StoredCheckpoint:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    document = {"run": run.to_dict(), "kernel": {"effects": 0, "pending": None, "metadata": {}, "workflow": None,
                                                 "origin": None}}
    return StoredCheckpoint(state=document, ledger=LedgerHead())


def test_marks_and_rows_of_many_threads_are_each_committed_before_their_writer_returns(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    store.list_runs()  # the index exists before the threads start
    threads_n, per_thread = 12, 15
    seen: list[tuple[str, object, object]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n + 1)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                run_id = f"t{t}-{i}"
                store.save_checkpoint(_checkpoint(run_id))
                store.mark_ahead(run_id)
                marked = _dirty(root, run_id)
                store.save_checkpoint(_checkpoint(run_id))
                seen.append((run_id, marked, _dirty(root, run_id)))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    # Hold the index while every thread hands its first row in: they queue behind one writer and
    # go in together once it is let go.
    with store._index._lock:
        start.wait()
        threading.Event().wait(0.2)
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(seen) == threads_n * per_thread
    assert all(marked == 1 and clean == 0 for _, marked, clean in seen), [s for s in seen if s[1:] != (1, 0)]
    assert store.list_ahead(limit=1000) == []
    assert {r.run_id for r in store.list_runs(limit=1000)} == {s[0] for s in seen}
    store.close()


def test_a_mark_left_by_a_writer_is_found_by_the_next_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    for i in range(5):
        store.save_checkpoint(_checkpoint(f"r{i}"))
    done = []

    def mark(run_id: str) -> None:
        store.mark_ahead(run_id)
        done.append(run_id)

    threads = [threading.Thread(target=mark, args=(f"r{i}",)) for i in (1, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # No close, no flush: another store (as after a kill) finds both marks.
    other = JsonFileRunStore(root, durability="none")
    assert sorted(other.list_ahead(limit=10)) == ["r1", "r3"] and sorted(done) == ["r1", "r3"]
    other.close()
    store.close()


def test_a_mark_made_under_the_index_lock_does_not_wait_for_itself(tmp_path: Path) -> None:
    # A write from a thread that already holds the index (as a query's loader would) while
    # another thread waits to lead a group: it goes alone instead of waiting for that leader.
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    store.save_checkpoint(_checkpoint("r1"))
    store.save_checkpoint(_checkpoint("r2"))
    other = threading.Thread(target=store.mark_ahead, args=("r2",))
    done = threading.Event()

    def under_lock() -> None:
        with store._index._lock:
            other.start()
            threading.Event().wait(0.1)  # the other thread now leads, waiting for the lock
            store.mark_ahead("r1")
        done.set()

    mine = threading.Thread(target=under_lock, daemon=True)
    mine.start()
    assert done.wait(30), "the write under the index lock waited for a leader that needed the lock"
    other.join(timeout=30)
    assert _dirty(root, "r1") == 1 and _dirty(root, "r2") == 1
    store.close()
