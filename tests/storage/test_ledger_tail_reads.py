"""A cold open reads the ledger's last line once: ``peek_head`` keeps what it read for the record
that proves the checkpoint and for the tail read after it — only while the live file is the one
it read (inode, size, mtime, ctime), and only once."""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.ports import LedgerHead
from abstractruntime.core.recovery import open_run
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run


def _workflow() -> WorkflowSpec:
    return WorkflowSpec("tail_reads", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(EffectType.LLM_CALL, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": run.vars["r"]["content"]})})


def _llm(run: Any, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"content": "ok"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = FileStore(tmp_path / "s", durability="none")
    store.runtime().start(workflow=_workflow(), run_id="r1")
    store.close()
    return tmp_path / "s"


def _ledger_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every opening of a ledger file for reading, from now on."""
    seen: list[str] = []
    real_open = builtins.open

    def spying(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".jsonl") and "r" in mode and "+" not in mode:
            seen.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying)
    return seen


def test_a_cold_open_reads_the_ledger_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(root, durability="none")
    reads = _ledger_reads(monkeypatch)
    opened = open_run(store.runs, store.ledger, "r1")
    assert len(reads) == 1, reads
    assert opened.saved is not None and opened.saved.seq == 1  # the checkpoint was proven and used
    assert opened.parts.head_digest is not None and opened.checkpoint.run.current_node == "call"
    store.close()


def test_an_open_by_the_process_that_wrote_the_run_reads_the_ledger_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "w", durability="none")
    store.runtime().start(workflow=_workflow(), run_id="r1")
    reads = _ledger_reads(monkeypatch)
    opened = open_run(store.runs, store.ledger, "r1")  # what a runtime does for a run it keeps no copy of
    assert len(reads) == 1, reads
    assert opened.saved is not None and opened.saved.seq == 1 and opened.checkpoint.run.current_node == "call"
    store.close()


def test_a_run_opened_cold_advances_and_verifies(root: Path) -> None:
    store = FileStore(root, durability="fsync")
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    assert rt.tick(workflow=_workflow(), run_id="r1").output == {"ok": "ok"}
    assert verify_run(store.root, "r1").ok
    store.close()


def _edit_last_line_in_place(path: Path) -> None:
    """Change one character of the last record's timestamp, same size, mtime set back."""
    before = os.lstat(path)
    data = path.read_bytes()
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    at = data.index(b'"at":"', start) + len(b'"at":"')
    digit = data[at:at + 1]
    data = data[:at] + (b"1" if digit != b"1" else b"2") + data[at + 1:]
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(path).st_size == before.st_size


def test_an_edit_after_the_head_was_read_is_seen_by_the_proof(root: Path) -> None:
    store = FileStore(root, durability="none")
    stored = store.runs.load_checkpoint("r1")
    assert stored is not None
    store.ledger.peek_head("r1")
    _edit_last_line_in_place(store.ledger.path("r1"))
    doc = store.ledger.record_at("r1", stored.ledger)
    # What record_at hands out is the line as it is now, not as peek_head read it.
    line = (root / "runs" / "r1" / "ledger.jsonl").read_bytes().splitlines()[-1]
    assert doc == json.loads(line)
    # So the checkpoint is not proven by it, and the open says so instead of trusting it.
    with pytest.raises(CorruptRecordError):
        open_run(store.runs, store.ledger, "r1")
    store.close()


def test_an_append_by_another_writer_after_the_head_was_read_is_read(root: Path) -> None:
    reader = FileStore(root, durability="none")
    stored = reader.runs.load_checkpoint("r1")
    assert stored is not None
    assert reader.ledger.peek_head("r1").seq == 1
    writer = FileStore(root, durability="none")
    writer.runtime(effect_handlers={EffectType.LLM_CALL: _llm}).tick(workflow=_workflow(), run_id="r1")
    assert (doc := reader.ledger.record_at("r1", stored.ledger)) is not None and doc["seq"] == 1
    head, records = reader.ledger.read_after("r1", stored.ledger)
    assert [r["seq"] for r in records] == [2, 3, 4] and head.seq == 4
    assert open_run(reader.runs, reader.ledger, "r1").checkpoint.run.output == {"ok": "ok"}
    writer.close()
    reader.close()


def test_what_peek_head_read_is_used_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(root, durability="none")
    stored = store.runs.load_checkpoint("r1")
    assert stored is not None
    store.ledger.peek_head("r1")
    first = store.ledger.record_at("r1", stored.ledger)
    reads = _ledger_reads(monkeypatch)
    second = store.ledger.record_at("r1", stored.ledger)
    assert first == second and first is not second and len(reads) == 1
    assert store.ledger.read_after("r1", LedgerHead())[0].seq == 1
    store.close()
