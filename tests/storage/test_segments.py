"""Long ledgers on the folder store: sealed segments, one chain from genesis.

A kill at every step of a rotation leaves a run that opens, verifies and goes on; a segment
deleted, truncated, reordered, renamed or edited is reported by ``verify`` and refused by the
writer; readers (open, ``state_at``, 0.0.1's ``list`` and ``verify_ledger_chain``) see one chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.core.ports import LedgerHead
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from tests.storage.segments_child import POINTS, spinner

REPO = Path(__file__).resolve().parents[2]


def _grow(root: Path, point: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "tests.storage.segments_child", str(root), point],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc.returncode


def _problems(root: Path) -> list[str]:
    return [p.type for p in verify_run(root, "long").problems]


def _segments(root: Path) -> list[str]:
    seg = root / "runs" / "long" / "segments"
    return sorted(os.listdir(seg)) if seg.is_dir() else []


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grown")
    assert _grow(root, "none") == 0
    return root


def test_a_long_run_is_sealed_into_numbered_segments_and_verifies(grown: Path) -> None:
    assert _segments(grown) == ["000001.jsonl", "000002.jsonl", "000003.jsonl"]
    report = verify_run(grown, "long")
    assert report.ok and report.count == report.head_seq > 1800
    # Each segment ends with the record that closes it, in the chain.
    store = FileStore(grown)
    closing = [r for r in store.ledger.stored("long") if r["kind"] == "segment"]
    assert [r["result"]["segment"] for r in closing] == [1, 2, 3]
    assert closing[0]["result"]["head_hash"] is None
    assert closing[1]["result"]["head_hash"] == closing[0]["record_hash"]
    assert closing[1]["result"]["count"] == closing[1]["seq"] - closing[0]["seq"]


def test_readers_see_one_chain_from_genesis(grown: Path) -> None:
    from abstractruntime.storage.ledger_chain import verify_ledger_chain

    store = FileStore(grown)
    records = store.ledger.list("long")
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["prev_hash"] is None
    assert verify_ledger_chain(records)["ok"]
    rt = store.runtime()
    past = rt.state_at("long", 700)  # inside the second segment
    assert past.ledger.seq == 700
    state = rt.tick(workflow=spinner(), run_id="long", max_steps=1)
    assert state.vars["i"] > 1800


def test_open_reads_no_sealed_segment_but_its_last_line(grown: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(grown, root)
    FileStore(root).runtime().checkpoint("long")
    for seg in (root / "runs" / "long" / "segments").iterdir():
        # Everything but the closing record becomes blank lines of the same length: reading any of
        # it would fail to parse (file permissions would not stop a test running as root).
        data = seg.read_bytes()
        cut = data.rfind(b"\n", 0, len(data) - 1) + 1
        seg.write_bytes(b" " * (cut - 1) + b"\n" + data[cut:])
    state = FileStore(root).runtime().tick(workflow=spinner(), run_id="long", max_steps=3)
    assert state.vars["i"] > 1800
    assert "invalid_json" in _problems(root)  # verify reads them all


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_every_step_of_a_rotation_leaves_a_run_that_opens_and_verifies(tmp_path: Path, point: str) -> None:
    assert _grow(tmp_path, point) == -signal.SIGKILL
    assert not _problems(tmp_path), point
    head = FileStore(tmp_path).ledger.head("long").seq
    assert _grow(tmp_path, "none") == 0  # the next writer finishes what was cut and goes on
    assert not _problems(tmp_path), point
    store = FileStore(tmp_path)
    assert store.ledger.head("long").seq >= head + 1800
    records = store.ledger.list("long")
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    names = _segments(tmp_path)
    assert names == [f"{n:06d}.jsonl" for n in range(1, len(names) + 1)] and len(names) >= 3


def _attack(grown: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    root = tmp_path / how
    shutil.copytree(grown, root)
    seg = root / "runs" / "long" / "segments"
    first, second = seg / "000001.jsonl", seg / "000002.jsonl"
    if how == "deleted":
        first.unlink()
    elif how == "deleted_last":
        second.unlink()
    elif how == "truncated":
        data = second.read_bytes()
        second.write_bytes(data[: data.rfind(b"\n", 0, len(data) - 1) + 1])  # its closing record cut
    elif how == "torn":
        second.write_bytes(second.read_bytes()[:-10])
    elif how == "reordered":
        first.rename(seg / "tmp.jsonl")
        second.rename(first)
        (seg / "tmp.jsonl").rename(second)
    elif how == "renamed":
        second.rename(seg / "000003.jsonl")
    elif how == "stray":
        second.rename(seg / "000002.jsonl.bak")
    elif how == "edited":
        data = first.read_bytes()
        assert b'["s",["i"],7]' in data
        first.write_bytes(data.replace(b'["s",["i"],7]', b'["s",["i"],8]', 1))
    return root


ATTACKS = ("deleted", "deleted_last", "truncated", "torn", "reordered", "renamed", "stray", "edited")


@pytest.mark.parametrize("how", ATTACKS)
def test_verify_reports_a_damaged_segment(grown: Path, tmp_path: Path, how: str) -> None:
    root = _attack(grown, tmp_path, how)
    assert _problems(root), how


@pytest.mark.parametrize("how", ("deleted", "truncated", "torn", "reordered", "renamed", "edited"))
def test_the_writer_refuses_a_ledger_with_a_damaged_segment(grown: Path, tmp_path: Path, how: str) -> None:
    root = _attack(grown, tmp_path, how)
    store = FileStore(root)
    with pytest.raises(CorruptRecordError):
        store.ledger.read_after("long", LedgerHead())  # what a writer reads the whole chain with


def _ledger_files(root: Path) -> dict[str, bytes]:
    run_dir = root / "runs" / "long"
    found = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.jsonl")
             if p.name in {"ledger.jsonl"} or p.parent.name == "segments"}
    return found


def test_an_archive_carries_the_segments_byte_for_byte(grown: Path, tmp_path: Path) -> None:
    from abstractruntime.storage.archive import export_archive, import_archive, verify_archive

    archive = tmp_path / "long.tar.gz"
    export_archive(FileStore(grown), archive)
    assert verify_archive(archive).ok
    target = FileStore(tmp_path / "restored")
    import_archive(archive, target)
    assert _ledger_files(tmp_path / "restored") == _ledger_files(grown)
    assert sorted(_ledger_files(grown)) == ["ledger.jsonl", "segments/000001.jsonl", "segments/000002.jsonl",
                                            "segments/000003.jsonl"]
    assert not _problems(tmp_path / "restored")
    state = target.runtime().tick(workflow=spinner(), run_id="long", max_steps=2)
    assert state.vars["i"] > 1800


@pytest.mark.parametrize("how", ("deleted", "deleted_last", "truncated", "torn", "reordered", "renamed", "stray"))
def test_opening_a_run_whose_segments_moved_refuses_it(grown: Path, tmp_path: Path, how: str) -> None:
    # The open reads each sealed segment's last line (never the segment): a segment deleted, cut,
    # renamed or swapped no longer ends with the segment record of its place.
    root = _attack(grown, tmp_path, how)
    with pytest.raises(CorruptRecordError):
        FileStore(root).runtime().tick(workflow=spinner(), run_id="long", max_steps=1)



def test_a_writer_whose_view_is_older_than_an_interrupted_seal_finishes_it_before_appending(tmp_path: Path) -> None:
    # This store object knows the ledger (its cache is warm); another process appends a segment
    # record and is killed before the rename. An append must not go after the record that closed the file.
    from abstractruntime.core.records import seal
    from abstractruntime.storage.ledger_files import JsonlLedgerStore
    from tests.storage.segments_child import spinner

    rt = FileStore(tmp_path).runtime()
    rt.start(workflow=spinner(), run_id="long")
    rt.tick(workflow=spinner(), run_id="long", max_steps=5)
    ledger = JsonlLedgerStore(tmp_path)
    ledger.head("long")  # its view: before the other process's records
    assert _grow(tmp_path, "after_segment_record") == -signal.SIGKILL
    head = JsonlLedgerStore(tmp_path).head("long")
    doc, line = seal({"format": 3, "seq": head.seq + 1, "kind": "checkpoint", "status": "completed",
                      "at": "2026-01-01T00:00:00+00:00", "prev_hash": head.head_hash})
    assert ledger.append_lines("long", [doc], [line], expect=head).seq == head.seq + 1
    names = _segments(tmp_path)
    assert names == ["000001.jsonl"]
    closing = (tmp_path / "runs" / "long" / "segments" / names[0]).read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert b'"kind":"segment"' in closing  # nothing was appended after the record that closed it
    assert (tmp_path / "runs" / "long" / "ledger.jsonl").read_bytes() == line + b"\n"
    records = FileStore(tmp_path).ledger.list("long")
    assert [r["seq"] for r in records] == list(range(1, head.seq + 2))
