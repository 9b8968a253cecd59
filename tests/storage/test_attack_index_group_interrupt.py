"""A writer stopped while it waits for the index's group commit (Ctrl-C in the main thread) must
not leave its statement queued: written later by another thread's transaction, after the caller
let go of the run's lock, a clean row would overwrite the mark of the run's next writer (another
process that marked the run before its append), and the run's ledger would be past a row that
says it is not."""

from __future__ import annotations

import inspect
import signal
import sys
import sqlite3
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core.models import RunState, RunStatus
from abstractruntime.core.ports import StoredCheckpoint
from abstractruntime.storage.base import LedgerHead
from abstractruntime.storage.json_files import JsonFileRunStore


def _dirty(root: Path, run_id: str) -> object:
    # A connection of its own: what is committed, not what a writer's connection sees.
    with sqlite3.connect(root / "index.sqlite3") as db:
        row = db.execute("SELECT dirty FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else row[0]


def _checkpoint(run_id: str, status: RunStatus = RunStatus.RUNNING) -> StoredCheckpoint:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    run.status = status
    document = {"run": run.to_dict(), "kernel": {"effects": 0, "pending": None, "metadata": {}, "workflow": None,
                                                 "origin": None}}
    return StoredCheckpoint(state=document, ledger=LedgerHead())


def _until(condition: "object", what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.005)


def _in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is running (or blocked in) ``function`` now."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_name == function


def _line(thread: threading.Thread) -> int:
    """The line ``thread`` is at now (0: none)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame.f_lineno if frame is not None else 0


def _interrupted(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt


def _interrupt_main_during(write: Callable[[], object], interrupt: Callable[[], None]) -> None:
    """Run ``write`` in the main thread while ``interrupt`` (another thread) sends it SIGINT; the
    write must end in ``KeyboardInterrupt``."""
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        killer = threading.Thread(target=interrupt)
        killer.start()
        with pytest.raises(KeyboardInterrupt):
            write()
        killer.join(30)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_row_whose_writer_was_interrupted_while_queued_never_overwrites_a_later_mark(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    store.save_checkpoint(_checkpoint("x"))
    index = store._index
    group = index._group
    main = threading.main_thread()
    assert threading.current_thread() is main  # SIGINT is handled in the main thread only

    # Another thread of this process leads a group commit that cannot start yet (the index is held).
    held, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        with index._lock:
            held.set()
            let_go.wait(60)

    def leader() -> None:
        store.mark_ahead("other")

    threads = [threading.Thread(target=holder), threading.Thread(target=leader)]
    threads[0].start()
    held.wait(30)
    threads[1].start()
    _until(lambda: group._writing, "a leader writing")

    # The main thread checkpoints run x: its clean row queues behind that leader, and Ctrl-C
    # stops it there.
    def interrupt() -> None:
        _until(lambda: _in(main, "wait") and len(group._pending) == 1, "the main thread's row queued")
        signal.pthread_kill(main.ident or 0, signal.SIGINT)

    _interrupt_main_during(lambda: store.save_checkpoint(_checkpoint("x", RunStatus.COMPLETED)), interrupt)

    # The run's lock is free: its next writer (another process, its own connection) marks it
    # before an append, and is killed before its checkpoint.
    other = JsonFileRunStore(root, durability="none")
    other.mark_ahead("x")
    other.close()
    assert _dirty(root, "x") == 1

    let_go.set()
    for thread in threads:
        thread.join(30)
    store.mark_ahead("later")  # any later index write of the interrupted process
    assert _dirty(root, "later") == 1
    assert _dirty(root, "x") == 1, "an interrupted writer's queued clean row overwrote a later mark"
    assert "x" in store.list_ahead(limit=100)
    store.close()


def _store_of_run_f(tmp_path: Path) -> "tuple[Path, JsonFileRunStore, Any, Any, threading.Thread]":
    """A store holding run ``f``'s checkpoint, its index and group commit, and the main thread
    (which the test runs in, to be interrupted there)."""
    root = tmp_path / "store"
    store = JsonFileRunStore(root, durability="none")
    store.save_checkpoint(_checkpoint("f"))
    index = store._index
    main = threading.main_thread()
    assert threading.current_thread() is main
    return root, store, index, index._group, main


def test_a_leader_interrupted_mid_transaction_leaves_its_followers_statements_to_them(tmp_path: Path) -> None:
    """The main thread leads a group commit holding another thread's mark and is stopped (Ctrl-C)
    before its transaction commits: that thread was not interrupted, so its mark must still be
    committed before its mark_ahead returns (the append it announces comes next)."""
    root, store, index, group, main = _store_of_run_f(tmp_path)

    # A follower queues its mark while a leader's transaction is under way (a group's state as
    # another thread's commit leaves it: writing, the follower waiting for it).
    with group._cond:
        group._writing = True
    seen: list[object] = []

    def follower() -> None:
        store.mark_ahead("f")
        seen.append(_dirty(root, "f"))  # what the append that follows the mark can rely on

    writer = threading.Thread(target=follower)
    writer.start()
    _until(lambda: len(group._pending) == 1, "the follower's mark queued")
    with group._cond:
        group._writing = False  # that commit is over; the follower has not woken yet

    # The index is held by another thread: the main thread, next to write, leads the batch of
    # both marks and waits for the index inside it, where Ctrl-C reaches it.
    held, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        with index._lock:
            held.set()
            let_go.wait(60)

    gate = threading.Thread(target=holder)
    gate.start()
    held.wait(30)

    def interrupt() -> None:
        _until(lambda: _in(main, "_write_all"), "the main thread leading the batch, waiting for the index")
        signal.pthread_kill(main.ident or 0, signal.SIGINT)

    _interrupt_main_during(lambda: store.mark_ahead("m"), interrupt)
    let_go.set()
    gate.join(30)
    writer.join(30)
    assert seen == [1], "the follower's mark_ahead returned without its mark committed"
    assert "f" in store.list_ahead(limit=100)
    store.close()


def test_a_leader_interrupted_as_its_transaction_begins_leaves_no_transaction_open(tmp_path: Path) -> None:
    """Ctrl-C reaches the leader of a batch while its ``BEGIN IMMEDIATE`` waits for another
    process's write: the transaction begins, then the interrupt is raised. It must be rolled back:
    a transaction left open holds the index's write lock for ever (every other process's marks
    fail) and every later statement of this process is written into it, never committed."""
    root, store, index, group, main = _store_of_run_f(tmp_path)

    with group._cond:  # a follower queued behind another thread's commit, as in the test above
        group._writing = True

    def follower() -> None:
        store.mark_ahead("f")

    writer = threading.Thread(target=follower)
    writer.start()
    _until(lambda: len(group._pending) == 1, "the follower's mark queued")
    with group._cond:
        group._writing = False

    # Another process is writing the index: the main thread's BEGIN IMMEDIATE waits for it.
    other = sqlite3.connect(root / "index.sqlite3", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    begin_line = next(number for number, line in enumerate(inspect.getsourcelines(index._write_all)[0],
                                                           start=index._write_all.__code__.co_firstlineno)
                      if '"BEGIN IMMEDIATE"' in line)

    def interrupt() -> None:
        _until(lambda: _in(main, "_write_all") and _line(main) == begin_line, "the main thread's BEGIN waiting")
        signal.pthread_kill(main.ident or 0, signal.SIGINT)
        time.sleep(0.1)
        other.execute("COMMIT")  # the BEGIN goes through, then the interrupt is raised

    _interrupt_main_during(lambda: store.mark_ahead("m"), interrupt)
    writer.join(30)
    other.close()
    assert not index._conn.in_transaction  # type: ignore[union-attr]
    assert _dirty(root, "f") == 1, "the follower's mark is not committed"
    # Another process can write the index.
    third = sqlite3.connect(root / "index.sqlite3", isolation_level=None, timeout=1.0)
    third.execute("UPDATE runs SET dirty = 1 WHERE run_id = 'f'")
    third.close()
    store.close()
