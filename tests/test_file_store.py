"""The file stores on real files: torn tails, corruption, formats, ids, symlinks, permissions,
fsync behaviour and the SQLite query index."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest

import abstractruntime.storage.json_files as json_files
import abstractruntime.storage.ledger_files as ledger_files
from abstractruntime.core.canonical import canonical_json
from abstractruntime.core.errors import (
    CorruptRecordError,
    InvalidIdError,
    StorageError,
    UnsupportedFormatError,
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
from abstractruntime.storage.base import Checkpoint, LedgerHead
from abstractruntime.storage.fsio import atomic_write_bytes
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import verify_ledger_chain

LOGGER = "abstractruntime.storage"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def ledger(root: Path) -> JsonlLedgerStore:
    return JsonlLedgerStore(root, durability="none")


@pytest.fixture
def runs(root: Path) -> Iterator[JsonFileRunStore]:
    store = JsonFileRunStore(root, durability="none")
    yield store
    store.close()


def _records(store: JsonlLedgerStore, run_id: str, n: int) -> Path:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    for i in range(n):
        store.append(StepRecord.start(run=run, node_id=f"n{i}", effect=None).finish_success({"i": i}))
    return store.path(run_id)


def _append(store: JsonlLedgerStore, run_id: str, node: str) -> None:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    store.append(StepRecord.start(run=run, node_id=node, effect=None).finish_success({"node": node}))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# -- torn tails and corruption -------------------------------------------------------------

TORN_TAILS = [b'{"format":1,"run_id":"r1","seq":4,"stat', b"\x00" * 37 + b"\n", b'{"form\xff\xfe']


@pytest.mark.parametrize("tail", TORN_TAILS, ids=["partial-line", "zero-filled", "invalid-utf8"])
def test_torn_tail_is_ignored_on_read(ledger: JsonlLedgerStore, tail: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = _records(ledger, "r1", 3)
    with open(path, "ab") as handle:
        handle.write(tail)
    size = path.stat().st_size
    for store in (ledger, JsonlLedgerStore(path.parents[2], durability="none")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            listed = store.list("r1")
        assert [r["node_id"] for r in listed] == ["n0", "n1", "n2"]
        assert any("torn" in m for m in caplog.messages)
        assert path.stat().st_size == size  # a reader never changes the file
        assert store.head("r1").seq == 3


@pytest.mark.parametrize("tail", TORN_TAILS, ids=["partial-line", "zero-filled", "invalid-utf8"])
@pytest.mark.parametrize("fresh", [False, True], ids=["same-instance", "new-instance"])
def test_torn_tail_is_truncated_on_write(ledger: JsonlLedgerStore, tail: bytes, fresh: bool,
                                         caplog: pytest.LogCaptureFixture) -> None:
    path = _records(ledger, "r1", 3)
    good = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(tail)
    writer = JsonlLedgerStore(path.parents[2], durability="fsync") if fresh else ledger
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _append(writer, "r1", "after")
    assert any("torn" in m and "truncated" in m for m in caplog.messages)
    assert path.read_bytes().startswith(good)
    listed = writer.list("r1")
    assert [r["node_id"] for r in listed] == ["n0", "n1", "n2", "after"]
    assert [r["seq"] for r in listed] == [1, 2, 3, 4]
    assert verify_ledger_chain(listed)["ok"] is True
    assert path.read_bytes().endswith(b"\n") and tail not in path.read_bytes()


def test_runtime_recovers_from_a_torn_tail(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    wf = WorkflowSpec("wf", "a", {"a": lambda run, ctx: StepPlan(node_id="a", next_node="b"),
                                  "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"ok": True})})
    rt = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                 ledger_store=JsonlLedgerStore(root, durability="none"))
    run_id = rt.start(workflow=wf)
    path = root / "runs" / run_id / "ledger.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"format":1,"run_id":')
    fresh = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                    ledger_store=JsonlLedgerStore(root, durability="none"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert fresh.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    assert any("truncated" in m for m in caplog.messages)
    ledger = fresh.get_ledger(run_id)
    assert verify_ledger_chain(ledger)["ok"] is True
    assert fresh.get_checkpoint(run_id).ledger.seq == len(ledger)


@pytest.mark.parametrize("bad_line", [b'{"not json\n', b"[1,2,3]\n", b"\x00\x00\n"], ids=["broken", "array", "nul"])
def test_mid_file_corruption_names_file_and_line(ledger: JsonlLedgerStore, bad_line: bytes) -> None:
    path = _records(ledger, "r1", 4)
    lines = _lines(path)
    lines[1] = bad_line
    path.write_bytes(b"".join(lines))
    fresh = JsonlLedgerStore(path.parents[2], durability="none")
    for call in (lambda: fresh.list("r1"), lambda: _append(fresh, "r1", "x"), lambda: fresh.head("r1")):
        with pytest.raises(CorruptRecordError) as info:
            call()
        assert info.value.line == 2 and info.value.path == str(path)
        assert f"{path}:2" in str(info.value) and info.value.code == "corrupt_record"
    assert path.read_bytes() == b"".join(lines)  # nothing truncated or appended


def test_writer_refuses_to_extend_a_tampered_chain(ledger: JsonlLedgerStore) -> None:
    path = _records(ledger, "r1", 3)
    lines = _lines(path)
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')
    path.write_bytes(b"".join(lines))
    fresh = JsonlLedgerStore(path.parents[2], durability="none")
    # Readers still show it (verify tells what is wrong)...
    listed = fresh.list("r1")
    assert listed[1]["result"] == {"i": 7}
    assert verify_ledger_chain(listed)["first_bad_index"] == 1
    # ...but the writer will not chain onto it.
    with pytest.raises(CorruptRecordError) as info:
        _append(fresh, "r1", "x")
    assert info.value.line == 2


def test_tampered_last_record_is_not_taken_for_a_torn_tail(ledger: JsonlLedgerStore) -> None:
    path = _records(ledger, "r1", 3)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"i":2', b'"i":9')
    path.write_bytes(b"".join(lines))
    with pytest.raises(CorruptRecordError) as info:
        _append(JsonlLedgerStore(path.parents[2], durability="none"), "r1", "x")
    assert info.value.line == 3
    assert path.read_bytes() == b"".join(lines)  # never silently dropped


def test_newer_ledger_format_is_refused(ledger: JsonlLedgerStore) -> None:
    path = _records(ledger, "r1", 2)
    lines = _lines(path)
    lines.insert(1, b'{"format":3,"run_id":"r1"}\n')
    path.write_bytes(b"".join(lines))
    with pytest.raises(UnsupportedFormatError) as info:
        JsonlLedgerStore(path.parents[2], durability="none").list("r1")
    assert "upgrade" in str(info.value)


def _save(runs: JsonFileRunStore, run_id: str = "r1") -> Path:
    runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id=run_id))
    return runs.base_dir / "runs" / run_id / "run.json"


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b'{"format":1}', b'{"format":1,"run":{"x":1}}',
                                     b'{"run":{}}', b'{"format":1,"a":1,"a":2}'],
                         ids=["garbage", "empty", "array", "no-run", "bad-run", "no-format", "duplicate-key"])
def test_corrupt_checkpoint_names_the_file(runs: JsonFileRunStore, content: bytes) -> None:
    path = _save(runs)
    path.write_bytes(content)
    with pytest.raises(CorruptRecordError) as info:
        runs.load("r1")
    assert info.value.path == str(path) and str(path) in str(info.value)
    rt = Runtime(run_store=runs, ledger_store=JsonlLedgerStore(runs.base_dir, durability="none"))
    wf = WorkflowSpec("wf", "a", {"a": lambda run, ctx: StepPlan(node_id="a", complete_output={})})
    with pytest.raises(CorruptRecordError):
        rt.tick(workflow=wf, run_id="r1")


def test_newer_checkpoint_format_is_refused(runs: JsonFileRunStore) -> None:
    path = _save(runs)
    doc = Checkpoint(run=runs.load("r1"), ledger=LedgerHead()).to_dict()
    doc["format"] = 3
    path.write_bytes(canonical_json(doc))
    with pytest.raises(UnsupportedFormatError) as info:
        runs.load("r1")
    assert str(path) in str(info.value) and "newer" in str(info.value)


@pytest.mark.parametrize("damage", ["remove-tail", "rewrite-last"])
def test_checkpoint_pointing_past_the_ledger_is_corruption(root: Path, damage: str) -> None:
    wf = WorkflowSpec("wf", "a", {
        "a": lambda run, ctx: StepPlan(node_id="a", next_node="b"),
        "b": lambda run, ctx: StepPlan(node_id="b", effect=Effect(type=EffectType.WAIT_EVENT,
                                                                  payload={"wait_key": "go"}), next_node="c"),
        "c": lambda run, ctx: StepPlan(node_id="c", complete_output={"ok": True})})
    rt = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                 ledger_store=JsonlLedgerStore(root, durability="none"))
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    path = root / "runs" / run_id / "ledger.jsonl"
    lines = _lines(path)
    if damage == "remove-tail":
        path.write_bytes(b"".join(lines[:-2]))  # two whole records gone: the chain alone cannot tell
    else:
        # The last record replaced by another validly chained one: same seq, another head.
        path.write_bytes(b"".join(lines[:-1]))
        forged = StepRecord.start(run=RunState.new(workflow_id="wf", entry_node="b", run_id=run_id), node_id="b",
                                  effect=None).finish_success({"forged": 1})
        JsonlLedgerStore(root, durability="none").append(forged)
    damaged = path.read_bytes()
    fresh = Runtime(run_store=JsonFileRunStore(root, durability="none"),
                    ledger_store=JsonlLedgerStore(root, durability="none"))
    for call in (lambda: fresh.resume(workflow=wf, run_id=run_id, wait_key="go", payload={}),
                 lambda: fresh.tick(workflow=wf, run_id=run_id)):
        with pytest.raises(CorruptRecordError) as info:
            call()
        assert "seq" in str(info.value)
    assert path.read_bytes() == damaged


# -- ids and paths -------------------------------------------------------------------------

BAD_IDS = ["a/b", "..", "../escape", "/etc/passwd", "", ".hidden", "x" * 129, "a\x00b", "sp ace", "a/../../b"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_run_ids_are_refused(runs: JsonFileRunStore, ledger: JsonlLedgerStore, bad: str, tmp_path: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    run = RunState(run_id=bad, workflow_id="wf", status=RunStatus.RUNNING, current_node="a")
    calls = [
        lambda: runs.load(bad), lambda: runs.save(run), lambda: runs.load_checkpoint(bad),
        lambda: runs.lock(bad).__enter__(), lambda: ledger.list(bad), lambda: ledger.head(bad),
        lambda: ledger.find_completed(bad, "k" * 32),
        lambda: ledger.append(StepRecord.start(run=run, node_id="a", effect=None)),
    ]
    for call in calls:
        with pytest.raises(InvalidIdError) as info:
            call()
        assert isinstance(info.value, ValueError) and info.value.code == "invalid_id"
    rt = Runtime(run_store=runs, ledger_store=ledger)
    wf = WorkflowSpec("wf", "a", {"a": lambda r, c: StepPlan(node_id="a", complete_output={})})
    with pytest.raises(InvalidIdError):
        rt.start(workflow=wf, run_id=bad)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_valid_id_edges_are_accepted(runs: JsonFileRunStore) -> None:
    for good in ["a", "A.b_c-9", "0" * 128, "run.v1"]:
        _save(runs, good)
        assert runs.load(good).run_id == good


def test_symlinked_run_directory_is_refused(runs: JsonFileRunStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    other = JsonFileRunStore(outside, durability="none")
    other.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    other.close()
    target = outside / "runs" / "r1"
    (runs.base_dir / "runs").mkdir(exist_ok=True)
    (runs.base_dir / "runs" / "r1").symlink_to(target, target_is_directory=True)
    before = (target / "run.json").read_bytes()
    ledger = JsonlLedgerStore(runs.base_dir, durability="none")
    for call in (lambda: runs.load("r1"), lambda: runs.save(RunState.new(workflow_id="w", entry_node="a", run_id="r1")),
                 lambda: ledger.list("r1"), lambda: _append(ledger, "r1", "x")):
        with pytest.raises(StorageError):
            call()
    assert (target / "run.json").read_bytes() == before and not (target / "ledger.jsonl").exists()

    # A symlink that stays inside the store is refused too.
    _save(runs, "real")
    (runs.base_dir / "runs" / "alias").symlink_to(runs.base_dir / "runs" / "real", target_is_directory=True)
    with pytest.raises(StorageError):
        runs.load("alias")


def test_symlinked_files_are_refused(runs: JsonFileRunStore, ledger: JsonlLedgerStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not touch\n")
    path = _save(runs, "r1")
    ledger_path = path.parent / "ledger.jsonl"
    ledger_path.symlink_to(secret)
    for call in (lambda: ledger.list("r1"), lambda: _append(ledger, "r1", "x"), lambda: ledger.head("r1")):
        with pytest.raises(StorageError):
            call()
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(StorageError):
        runs.load("r1")
    with pytest.raises(StorageError):
        runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id="r1"))
    assert secret.read_bytes() == b"do not touch\n"


def test_permissions_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "store"
        runs, ledger = JsonFileRunStore(root, durability="fsync"), JsonlLedgerStore(root, durability="fsync")
        rt = Runtime(run_store=runs, ledger_store=ledger)
        wf = WorkflowSpec("wf", "a", {"a": lambda r, c: StepPlan(node_id="a", effect=Effect(
            type=EffectType.ASK_USER, payload={"prompt": "?"}), next_node="a")})
        run_id = rt.start(workflow=wf)
        rt.tick(workflow=wf, run_id=run_id)
        runs.list_runs()
        runs.close()
    finally:
        os.umask(old)
    run_dir = root / "runs" / run_id
    for directory in (root, root / "runs", run_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    files = [run_dir / "run.json", run_dir / "ledger.jsonl", run_dir / ".lock", root / "index.sqlite3"]
    files += [p for p in root.glob("index.sqlite3-*")]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# -- fsync ---------------------------------------------------------------------------------


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_durability_setting(root: Path, durability: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = _count_fsyncs(monkeypatch)
    at_handler: list[tuple[int, list[str]]] = []
    runs, ledger = JsonFileRunStore(root, durability=durability), JsonlLedgerStore(root, durability=durability)

    def handler(run: RunState, effect: Effect) -> EffectOutcome:
        on_disk = JsonlLedgerStore(root, durability="none").list(run.run_id)
        at_handler.append((len(fsyncs), [r["status"] for r in on_disk if r["effect"]]))
        return EffectOutcome.completed({"ok": True})

    rt = Runtime(run_store=runs, ledger_store=ledger, effect_handlers={EffectType.LLM_CALL: handler})
    wf = WorkflowSpec("wf", "a", {
        "a": lambda r, c: StepPlan(node_id="a", effect=Effect(type=EffectType.LLM_CALL, payload={}), next_node="b"),
        "b": lambda r, c: StepPlan(node_id="b", complete_output={"ok": True})})
    run_id = rt.start(workflow=wf)
    started = len(fsyncs)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    runs.close()
    # Whatever the setting, the intent is on disk before the handler runs.
    assert at_handler[0][1] == ["started"]
    if durability == "none":
        assert fsyncs == []
    else:
        assert started >= 2  # the start record and the first checkpoint
        assert at_handler[0][0] > started  # the intent was fsynced before the handler ran
        assert len(fsyncs) > at_handler[0][0]  # and the result after it


def test_bad_durability_value() -> None:
    with pytest.raises(ValueError):
        JsonFileRunStore("/tmp/never-created-abstractruntime", durability="sometimes")  # type: ignore[arg-type]


# -- the SQLite query index ----------------------------------------------------------------


def _write_run_by_hand(root: Path, run: RunState) -> None:
    run_dir = root / "runs" / run.run_id
    run_dir.mkdir(parents=True, mode=0o700)
    (run_dir / "run.json").write_bytes(canonical_json(Checkpoint(run=run, ledger=LedgerHead()).to_dict()))


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
                       canonical_json(Checkpoint(run=waiting, ledger=LedgerHead()).to_dict()), durable=False)
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
    _save(runs, "good")
    bad = _save(runs, "bad")
    bad.write_bytes(b"{broken")
    assert [r.run_id for r in runs.list_runs()] == ["good"]


class _Crash(BaseException):
    """Stands for the process dying at that point."""


def test_dirty_mark_is_not_skipped_on_stale_knowledge(root: Path) -> None:
    mine, theirs = JsonFileRunStore(root, durability="none"), JsonFileRunStore(root, durability="none")
    mine.save(_hand_run("r1", 1, RunStatus.RUNNING))       # this process indexed r1 clean as running
    theirs.save(_hand_run("r1", 2, RunStatus.WAITING))     # another process moved it on
    real_put = mine._index.put

    def crash_before_clean(run: RunState, *, dirty: bool) -> None:
        if not dirty:
            raise _Crash()
        real_put(run, dirty=dirty)

    mine._index.put = crash_before_clean  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        mine.save(_hand_run("r1", 3, RunStatus.RUNNING))   # checkpoint written, then the process dies
    assert JsonFileRunStore(root, durability="none").load("r1").status is RunStatus.RUNNING
    fresh = JsonFileRunStore(root, durability="none")
    assert [r.run_id for r in fresh.list_runs(status=RunStatus.RUNNING)] == ["r1"]


def test_run_directory_swapped_for_a_symlink_later_is_refused(runs: JsonFileRunStore, tmp_path: Path) -> None:
    _save(runs, "r1")
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
