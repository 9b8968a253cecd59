"""Attacks on the last line a cold open keeps (``peek_head`` for ``record_at`` and ``read_after``):
whatever happens to the files between the open's first read and the next, the open ends as a
fresh open of the files as they are then ends — the same state, or the same error — and nothing
is written or cut on the strength of a line that is no longer where it was read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import AbstractRuntimeError, StorageError
from abstractruntime.core import session
from abstractruntime.core.models import StepPlan
from abstractruntime.core.recovery import open_run
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

SEGMENT_RECORDS = 6


@pytest.fixture(autouse=True)
def _checkpoint_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint at the end of every tick: the line proving it is the ledger's last."""
    monkeypatch.setattr(session, "CHECKPOINT_EVERY", 1)


def _counter() -> WorkflowSpec:
    def step(run: Any, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan("step", next_node="step")

    return WorkflowSpec("counter", "step", {"step": step})


def _grow(root: Path, *, ticks: int) -> FileStore:
    """A running run ``r1`` ticked ``ticks`` times, two steps a tick, its ledger sealed every few records."""
    store = FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
    rt = store.runtime()
    rt.start(workflow=_counter(), run_id="r1")
    for _ in range(ticks):
        rt.tick(workflow=_counter(), run_id="r1", max_steps=2)
    while not (root / "runs" / "r1" / "ledger.jsonl").exists():  # not just sealed: a live file to keep a line of
        rt.tick(workflow=_counter(), run_id="r1", max_steps=1)
    store.close()
    return FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)


def _outcome(store: FileStore) -> tuple[str, Any]:
    """What opening ``r1`` gives: its node, variables and head, or the error's class."""
    try:
        opened = open_run(store.runs, store.ledger, "r1")
    except AbstractRuntimeError as exc:
        return "error", type(exc).__name__
    run = opened.checkpoint.run
    return "opened", (run.current_node, dict(run.vars), opened.head.seq, opened.head.head_hash)


def _between_peek_and_proof(store: FileStore, monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Run ``change`` right after the open's ``peek_head`` read the ledger's last line."""
    real = store.ledger.peek_head
    done: list[bool] = []

    def peek_then_change(run_id: str) -> Any:
        head = real(run_id)
        if not done:
            done.append(True)
            change()
        return head

    monkeypatch.setattr(store.ledger, "peek_head", peek_then_change)


def _segments(root: Path) -> list[Path]:
    return sorted((root / "runs" / "r1" / "segments").glob("*.jsonl"))


def _resize_first_record(segment: Path, grow: bool) -> None:
    """Edit a string inside the segment's first record: one byte longer or shorter."""
    data = segment.read_bytes()
    at = data.index(b'"at":"') + len(b'"at":"')
    data = data[:at] + (b"9" if grow else b"") + data[at + (0 if grow else 1):]
    segment.write_bytes(data)


@pytest.mark.parametrize("grow", [True, False], ids=["grown", "shrunk"])
def test_a_sealed_segment_resized_after_the_peek_is_not_read_past(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grow: bool) -> None:
    root = tmp_path / "s"
    store = _grow(root, ticks=6)
    segments = _segments(root)
    assert segments, "the run must have a sealed segment"
    live = root / "runs" / "r1" / "ledger.jsonl"
    stored = store.runs.load_checkpoint("r1")
    assert stored is not None and stored.ledger.offset == sum(p.stat().st_size for p in segments) + live.stat().st_size
    live_before = live.read_bytes()

    _between_peek_and_proof(store, monkeypatch, lambda: _resize_first_record(segments[0], grow))
    seen = _outcome(store)
    fresh = _outcome(FileStore(root, durability="none", segment_records=SEGMENT_RECORDS))
    assert seen == fresh == ("error", "CorruptRecordError")
    # No record of the live file was taken for a torn tail and cut.
    assert live.read_bytes() == live_before
    store.close()


def test_a_segment_resized_after_the_peek_is_not_trusted_by_the_tail_read(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = _grow(root, ticks=6)
    stored = store.runs.load_checkpoint("r1")
    assert stored is not None
    store.ledger.peek_head("r1")
    _resize_first_record(_segments(root)[0], grow=True)
    fresh = FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
    with pytest.raises(AbstractRuntimeError) as kept:
        store.ledger.read_after("r1", stored.ledger)
    with pytest.raises(AbstractRuntimeError) as read:
        fresh.ledger.read_after("r1", stored.ledger)
    assert type(kept.value) is type(read.value)
    store.close()
    fresh.close()


_REWRITE = """
import os, sys
path, at = sys.argv[1], int(sys.argv[2])
before = os.lstat(path)
data = open(path, "rb").read()
os.truncate(path, 0)
with open(path, "ab") as handle:  # truncated and appended again, to the same size
    handle.write(data[:at] + (b"1" if data[at:at + 1] != b"1" else b"2") + data[at + 1:])
os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
assert os.lstat(path).st_size == before.st_size and os.lstat(path).st_ino == before.st_ino
"""


def test_another_process_rewriting_the_ledger_to_its_size_after_the_peek(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    store = _grow(root, ticks=1)
    live = root / "runs" / "r1" / "ledger.jsonl"
    data = live.read_bytes()
    at = data.index(b'"at":"', data.rfind(b"\n", 0, len(data) - 1)) + len(b'"at":"')

    def rewrite() -> None:
        subprocess.run([sys.executable, "-c", _REWRITE, str(live), str(at)], check=True)

    _between_peek_and_proof(store, monkeypatch, rewrite)
    seen = _outcome(store)
    assert seen == _outcome(FileStore(root, durability="none")) == ("error", "CorruptRecordError")
    store.close()


def test_a_torn_append_cut_back_to_the_size_after_the_peek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed mid-append leaves a torn tail, another cuts it: the bytes are those the peek
    read, so the open is the one a fresh open gives."""
    root = tmp_path / "s"
    store = _grow(root, ticks=2)
    live = root / "runs" / "r1" / "ledger.jsonl"
    size = live.stat().st_size

    def torn_then_cut() -> None:
        with open(live, "ab") as handle:
            handle.write(b'{"seq":99,"kind":"st')
        os.truncate(live, size)

    _between_peek_and_proof(store, monkeypatch, torn_then_cut)
    seen = _outcome(store)
    assert seen[0] == "opened" and seen == _outcome(FileStore(root, durability="none"))
    store.close()


def test_a_seal_by_another_writer_after_the_peek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "s"
    store = _grow(root, ticks=1)
    before = len(_segments(root))

    def another_writer_ticks() -> None:
        writer = FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
        rt = writer.runtime()
        for _ in range(4):
            rt.tick(workflow=_counter(), run_id="r1", max_steps=2)
        writer.close()
        assert len(_segments(root)) > before

    _between_peek_and_proof(store, monkeypatch, another_writer_ticks)
    seen = _outcome(store)
    assert seen[0] == "opened" and seen == _outcome(FileStore(root, durability="none", segment_records=SEGMENT_RECORDS))
    rt = store.runtime()
    rt.tick(workflow=_counter(), run_id="r1", max_steps=2)
    assert verify_run(root, "r1").ok
    store.close()


def test_the_live_file_renamed_over_after_the_peek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the ledger with its last record edited, renamed over it (same size, a new inode)."""
    root = tmp_path / "s"
    store = _grow(root, ticks=1)
    live = root / "runs" / "r1" / "ledger.jsonl"

    def replace() -> None:
        data = live.read_bytes()
        at = data.index(b'"at":"', data.rfind(b"\n", 0, len(data) - 1)) + len(b'"at":"')
        copy = live.with_name("copy.tmp")
        copy.write_bytes(data[:at] + (b"1" if data[at:at + 1] != b"1" else b"2") + data[at + 1:])
        st = live.stat()
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(copy, live)

    _between_peek_and_proof(store, monkeypatch, replace)
    assert _outcome(store) == _outcome(FileStore(root, durability="none")) == ("error", "CorruptRecordError")
    store.close()


@pytest.mark.parametrize("grow", [True, False], ids=["grown", "shrunk"])
def test_a_tick_after_a_segment_resized_during_its_open_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grow: bool) -> None:
    """The open a tick makes refuses the run as a fresh one does: the live file's last record is
    not cut for a torn tail (its offset moved with the segment), nothing goes on after the edit."""
    root = tmp_path / "s"
    store = _grow(root, ticks=6)
    live = root / "runs" / "r1" / "ledger.jsonl"
    before = live.read_bytes()
    _between_peek_and_proof(store, monkeypatch, lambda: _resize_first_record(_segments(root)[0], grow))
    with pytest.raises(AbstractRuntimeError) as refused:
        store.runtime().tick(workflow=_counter(), run_id="r1", max_steps=1)
    assert type(refused.value).__name__ == "CorruptRecordError"
    assert live.read_bytes() == before
    assert not verify_run(root, "r1").ok
    store.close()


@pytest.mark.parametrize("shared", [False, True], ids=["two stores", "one store"])
def test_opens_racing_a_writer_thread_each_find_a_state_the_ledger_holds(tmp_path: Path, shared: bool) -> None:
    """A thread opens the run over and over while another ticks it (through another store of the
    same process, or the same store): every open is the state the ledger holds at the head it names."""
    import threading

    root = tmp_path / "s"
    _grow(root, ticks=1).close()
    writer = FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
    reader = writer if shared else FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
    seen: list[tuple[int, dict[str, Any], str]] = []
    errors: list[BaseException] = []
    retried: list[int] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                try:
                    opened = open_run(reader.runs, reader.ledger, "r1", for_writing=False)
                except StorageError as exc:
                    # The live file sealed into a segment under the read: said so, to be read again.
                    assert "read the ledger again" in str(exc)
                    retried.append(1)
                    continue
                run = opened.checkpoint.run
                seen.append((opened.head.seq, dict(run.vars), run.current_node))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        rt = writer.runtime()
        for _ in range(25):
            rt.tick(workflow=_counter(), run_id="r1", max_steps=2)
    finally:
        done.set()
        thread.join()
    assert not errors, errors
    assert len(seen) > 1
    fresh = FileStore(root, durability="none", segment_records=SEGMENT_RECORDS)
    rt = fresh.runtime()
    for seq, variables, node in seen:
        state = rt.state_at("r1", seq).run
        assert (dict(state.vars), state.current_node) == (variables, node), seq
    assert verify_run(root, "r1").ok
    fresh.close()
    writer.close()
    if not shared:
        reader.close()
