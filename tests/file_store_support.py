"""Stores, fixtures and helpers shared by the file store tests (the fixtures are imported as such)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from abstractruntime.core.models import (
    RunState,
    StepRecord,
)
from abstractruntime.storage.json_files import JsonFileRunStore, JsonlLedgerStore

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


def append_records(store: JsonlLedgerStore, run_id: str, n: int) -> Path:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    for i in range(n):
        store.append(StepRecord.start(run=run, node_id=f"n{i}", effect=None).finish_success({"i": i}))
    return store.path(run_id)


def append_one(store: JsonlLedgerStore, run_id: str, node: str) -> None:
    run = RunState.new(workflow_id="wf", entry_node="a", run_id=run_id)
    store.append(StepRecord.start(run=run, node_id=node, effect=None).finish_success({"node": node}))


def ledger_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def save_run(runs: JsonFileRunStore, run_id: str = "r1") -> Path:
    """Save a fresh run; its checkpoint file."""
    runs.save(RunState.new(workflow_id="wf", entry_node="a", run_id=run_id))
    return runs.base_dir / "runs" / run_id / "run.json"
