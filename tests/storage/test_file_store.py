"""The file stores: torn tails and corruption in ledgers and checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from abstractruntime.core.canonical import canonical_json
from abstractruntime.core.errors import (
    CorruptRecordError,
    UnsupportedFormatError,
    VerificationFailedError,
)
from abstractruntime.core.models import (
    Effect,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
)
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.base import LedgerHead, StoredCheckpoint
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore
from abstractruntime.storage.ledger_chain import verify_ledger_chain

from file_store_support import save_run, LOGGER, append_records, append_one, ledger_lines
from file_store_support import root, ledger, runs  # noqa: F401 - pytest fixtures


# -- torn tails and corruption -------------------------------------------------------------

TORN_TAILS = [b'{"format":1,"run_id":"r1","seq":4,"stat', b"\x00" * 37 + b"\n", b'{"form\xff\xfe']


@pytest.mark.parametrize("tail", TORN_TAILS, ids=["partial-line", "zero-filled", "invalid-utf8"])
def test_torn_tail_is_ignored_on_read(ledger: JsonlLedgerStore, tail: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = append_records(ledger, "r1", 3)
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
    path = append_records(ledger, "r1", 3)
    good = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(tail)
    writer = JsonlLedgerStore(path.parents[2], durability="fsync") if fresh else ledger
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        append_one(writer, "r1", "after")
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
    path = append_records(ledger, "r1", 4)
    lines = ledger_lines(path)
    lines[1] = bad_line
    path.write_bytes(b"".join(lines))
    fresh = JsonlLedgerStore(path.parents[2], durability="none")
    for call in (lambda: fresh.list("r1"), lambda: append_one(fresh, "r1", "x"), lambda: fresh.head("r1")):
        with pytest.raises(CorruptRecordError) as info:
            call()
        assert info.value.line == 2 and info.value.path == str(path)
        assert f"{path}:2" in str(info.value) and info.value.code == "corrupt_record"
    assert path.read_bytes() == b"".join(lines)  # nothing truncated or appended


def test_writer_refuses_to_extend_a_tampered_chain(ledger: JsonlLedgerStore) -> None:
    path = append_records(ledger, "r1", 3)
    lines = ledger_lines(path)
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')
    path.write_bytes(b"".join(lines))
    fresh = JsonlLedgerStore(path.parents[2], durability="none")
    # Readers still show it (verify tells what is wrong)...
    listed = fresh.list("r1")
    assert listed[1]["result"] == {"i": 7}
    assert verify_ledger_chain(listed)["first_bad_index"] == 1
    # ...but the writer will not chain onto it.
    with pytest.raises(CorruptRecordError) as info:
        append_one(fresh, "r1", "x")
    assert info.value.line == 2


def test_tampered_last_record_is_not_taken_for_a_torn_tail(ledger: JsonlLedgerStore) -> None:
    path = append_records(ledger, "r1", 3)
    lines = ledger_lines(path)
    lines[2] = lines[2].replace(b'"i":2', b'"i":9')
    path.write_bytes(b"".join(lines))
    with pytest.raises(CorruptRecordError) as info:
        append_one(JsonlLedgerStore(path.parents[2], durability="none"), "r1", "x")
    assert info.value.line == 3
    assert path.read_bytes() == b"".join(lines)  # never silently dropped


def test_newer_ledger_format_is_refused(ledger: JsonlLedgerStore) -> None:
    path = append_records(ledger, "r1", 2)
    lines = ledger_lines(path)
    lines.insert(1, b'{"format":5,"run_id":"r1"}\n')
    path.write_bytes(b"".join(lines))
    with pytest.raises(UnsupportedFormatError) as info:
        JsonlLedgerStore(path.parents[2], durability="none").list("r1")
    assert "upgrade" in str(info.value)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[]", b'{"format":1}', b'{"format":1,"run":{"x":1}}',
                                     b'{"run":{}}', b'{"format":1,"a":1,"a":2}'],
                         ids=["garbage", "empty", "array", "no-run", "bad-run", "no-format", "duplicate-key"])
def test_corrupt_checkpoint_names_the_file(runs: JsonFileRunStore, content: bytes) -> None:
    path = save_run(runs)
    path.write_bytes(content)
    with pytest.raises(CorruptRecordError) as info:
        runs.load("r1")
    assert info.value.path == str(path) and str(path) in str(info.value)
    rt = Runtime(run_store=runs, ledger_store=JsonlLedgerStore(runs.base_dir, durability="none"))
    wf = WorkflowSpec("wf", "a", {"a": lambda run, ctx: StepPlan(node_id="a", complete_output={})})
    with pytest.raises(CorruptRecordError):
        rt.tick(workflow=wf, run_id="r1")


def test_newer_checkpoint_format_is_refused(runs: JsonFileRunStore) -> None:
    path = save_run(runs)
    doc = StoredCheckpoint(state={"run": runs.load("r1").to_dict(), "kernel": {}}, ledger=LedgerHead()).to_dict()
    doc["format"] = 4
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
    lines = ledger_lines(path)
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
        # Records removed from the end, or a checkpoint naming a position the ledger lacks: refused.
        with pytest.raises((CorruptRecordError, VerificationFailedError)) as info:
            call()
        assert "seq" in str(info.value)
    assert path.read_bytes() == damaged
