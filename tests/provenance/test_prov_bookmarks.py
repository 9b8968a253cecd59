"""Bookmarks: named ledger positions, stored per run, checked by verify."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import (
    BookmarkNotFoundError,
    CorruptRecordError,
    InvalidIdError,
    InvalidInputError,
    RunNotFoundError,
    UnsupportedFormatError,
)
from abstractruntime.storage.bookmarks import BookmarkStore
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

from prov_helpers import finish, ledger_path, open_demo, read_records, run_demo, start_waiting, write_records


@pytest.fixture
def done(tmp_path: Path) -> tuple[Path, FileStore, list[dict]]:
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    run_demo(runtime, "r1")
    return root, store, read_records(ledger_path(root, "r1"))


def test_add_defaults_to_the_head_and_is_stored_as_documented(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, _, records = done
    marks = BookmarkStore(root, durability="none", clock=FixedClock("2030-01-02T03:04:05+00:00"))
    mark = marks.add("r1", "audited", note="seen by Ann")
    assert (mark.name, mark.seq, mark.record_hash, mark.note) == ("audited", 10, records[9]["record_hash"],
                                                                  "seen by Ann")
    assert mark.created_at == "2030-01-02T03:04:05+00:00"
    assert mark.checkpoint_seq == 10

    path = root / "runs" / "r1" / "bookmarks.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_bytes())
    assert doc == {"format": 1, "bookmarks": {"audited": {
        "name": "audited", "seq": 10, "record_hash": records[9]["record_hash"], "note": "seen by Ann",
        "created_at": "2030-01-02T03:04:05+00:00", "checkpoint_seq": 10}}}


def test_explicit_seq_list_get_remove(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, store, records = done
    store.bookmarks.add("r1", "z-first", seq=2)
    store.bookmarks.add("r1", "b-later", seq=7)
    store.bookmarks.add("r1", "a-later", seq=7)
    assert [(b.name, b.seq) for b in store.bookmarks.list("r1")] == [("z-first", 2), ("a-later", 7),
                                                                      ("b-later", 7)]
    assert store.bookmarks.get("r1", "z-first").record_hash == records[1]["record_hash"]
    # Another store object (another process) reads the same file.
    assert [b.name for b in FileStore(root).bookmarks.list("r1")] == ["z-first", "a-later", "b-later"]

    removed = store.bookmarks.remove("r1", "a-later")
    assert removed.seq == 7
    assert [b.name for b in store.bookmarks.list("r1")] == ["z-first", "b-later"]
    with pytest.raises(BookmarkNotFoundError) as info:
        store.bookmarks.remove("r1", "a-later")
    assert isinstance(info.value, KeyError) and "a-later" in str(info.value)
    with pytest.raises(BookmarkNotFoundError):
        store.bookmarks.get("r1", "nope")
    assert verify_run(root, "r1").bookmarks_checked == 2


def test_refusals(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, store, _ = done
    marks = store.bookmarks
    with pytest.raises(RunNotFoundError):
        marks.add("no-such-run", "x")
    with pytest.raises(RunNotFoundError):
        marks.list("no-such-run")
    with pytest.raises(InvalidInputError, match="ends at seq 10"):
        marks.add("r1", "x", seq=11)
    for bad_seq in (0, -3, True, "2"):
        with pytest.raises(InvalidInputError):
            marks.add("r1", "x", seq=bad_seq)
    for bad_name in ("", "../up", "has space", "a/b", ".hidden"):
        with pytest.raises(InvalidIdError):
            marks.add("r1", bad_name)
    with pytest.raises(InvalidInputError, match="limit"):
        marks.add("r1", "x", note="n" * 2001)
    assert not (root / "runs" / "r1" / "bookmarks.json").exists()  # nothing was written


def test_duplicate_names_need_replace(done: tuple[Path, FileStore, list[dict]]) -> None:
    _, store, records = done
    store.bookmarks.add("r1", "pin", seq=3)
    with pytest.raises(InvalidInputError, match="replace=True"):
        store.bookmarks.add("r1", "pin", seq=4)
    assert store.bookmarks.get("r1", "pin").seq == 3
    moved = store.bookmarks.add("r1", "pin", seq=4, replace=True)
    assert (moved.seq, moved.record_hash) == (4, records[3]["record_hash"])
    assert len(store.bookmarks.list("r1")) == 1


def test_a_broken_chain_is_never_bookmarked(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, store, records = done
    records[2]["node_id"] = "forged"
    write_records(ledger_path(root, "r1"), records)
    with pytest.raises(CorruptRecordError) as info:
        store.bookmarks.add("r1", "bless")
    assert info.value.line == 3


def test_corrupt_or_newer_bookmark_files_are_refused(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, store, _ = done
    path = root / "runs" / "r1" / "bookmarks.json"
    path.write_text('{"format": 2, "bookmarks": {}}')
    with pytest.raises(UnsupportedFormatError):
        store.bookmarks.list("r1")
    path.write_text('{"format": 1, "bookmarks": {"x": {"seq": "one"}}}')
    with pytest.raises(CorruptRecordError, match="bookmarks.json"):
        store.bookmarks.list("r1")


def test_bookmarking_while_a_tick_holds_the_run_lock(tmp_path: Path) -> None:
    # Bookmarks use their own lock: a long-running tick (an LLM call, say) does not block them.
    root = tmp_path / "store"
    store, runtime = open_demo(root)
    waiting = start_waiting(runtime, "r1")
    with store.runs.lock("r1"):
        mark = store.bookmarks.add("r1", "during-tick")
    assert mark.seq == 6
    finish(runtime, waiting)
    assert verify_run(root, "r1").ok


def test_concurrent_adds_from_processes_lose_nothing(done: tuple[Path, FileStore, list[dict]]) -> None:
    root, _, _ = done
    script = ("import sys; from abstractruntime.storage.bookmarks import BookmarkStore; "
              "s = BookmarkStore(sys.argv[1]); [s.add('r1', f'{sys.argv[2]}-{i}', seq=1 + i) for i in range(5)]")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), f"p{n}"]) for n in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    names = {b.name for b in BookmarkStore(root).list("r1")}
    assert names == {f"p{n}-{i}" for n in range(4) for i in range(5)}
    assert verify_run(root, "r1").bookmarks_checked == 20
