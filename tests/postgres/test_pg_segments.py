"""A folder run sealed into segments moves to PostgreSQL (rows, no segments) and back with the
same bytes: the segment records stay in the chain, and the folder copy is laid out in segments again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from abstractruntime.storage.postgres.copy import copy_store
from abstractruntime.storage.postgres.verify import verify_run as pg_verify_run
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from tests.storage.segments_child import spinner

REPO = Path(__file__).resolve().parents[2]


def _files(root: Path) -> dict[str, bytes]:
    run_dir = root / "runs" / "long"
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.jsonl")
            if p.name == "ledger.jsonl" or p.parent.name == "segments"}


def test_segments_round_trip_through_postgres(tmp_path: Path, open_pg: Callable[..., Any]) -> None:
    source = tmp_path / "source"
    subprocess.run([sys.executable, "-m", "tests.storage.segments_child", str(source), "none"], cwd=REPO, check=True,
                   timeout=120)
    pg = open_pg()
    assert copy_store(FileStore(source), pg).copied == ["long"]
    records = pg.ledger.list("long")
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert sum(1 for r in records if r["kind"] == "segment") == 3
    assert pg_verify_run(pg, "long").ok
    back = tmp_path / "back"
    assert copy_store(pg, FileStore(back)).copied == ["long"]
    assert _files(back) == _files(source)
    assert verify_run(back, "long").ok
    state = pg.runtime().tick(workflow=spinner(), run_id="long", max_steps=2)
    assert state.vars["i"] > 1800
    assert not (set(_files(back)) - {"ledger.jsonl", "segments/000001.jsonl", "segments/000002.jsonl",
                                     "segments/000003.jsonl"})
