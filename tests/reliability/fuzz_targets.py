"""Parser fuzz targets: each takes bytes and may raise only the project's own errors.

Shared by the hypothesis tests (test_rel_fuzz.py) and the atheris runner
(``python -m tests.reliability.run --atheris SECONDS``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from abstractruntime.core.errors import AbstractRuntimeError
from abstractruntime.core.models import RunState
from abstractruntime.core.restore import take_snapshot
from abstractruntime.core.runtime import Runtime
from abstractruntime.storage.bookmarks import read_bookmarks
from abstractruntime.storage.json_files import JsonlLedgerStore, read_checkpoint
from abstractruntime.storage.ledger_file import parse_ledger
from abstractruntime.storage.snapshots import JsonSnapshotStore, Snapshot
from abstractruntime.storage.verify import verify_run

_DIR = Path(tempfile.mkdtemp(prefix="rel-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


class ForeignException(AssertionError):
    """A parser raised something that is not an AbstractRuntimeError."""


def _guard(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except AbstractRuntimeError:
        pass
    except FileNotFoundError:
        pass  # "no such run/file" is a valid answer for an absent file
    except Exception as exc:
        raise ForeignException(f"{type(exc).__name__}: {exc}") from exc


def _write(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ledger(data: bytes) -> None:
    """parse_ledger (chain-checked and not), and the store's list/head/find_completed."""
    _guard(lambda: parse_ledger(data, path="fuzz", verify_chain=True, run_id="f1"))
    _guard(lambda: parse_ledger(data, path="fuzz", verify_chain=False))
    store_root = _DIR / "ledger-store"
    _write("ledger-store/runs/f1/ledger.jsonl", data)
    store = JsonlLedgerStore(store_root, durability="none")
    _guard(lambda: store.list("f1"))
    _guard(lambda: store.head("f1"))
    _guard(lambda: store.find_completed("f1", "k"))


def checkpoint(data: bytes) -> None:
    """read_checkpoint and verify_run over a fuzzed run.json."""
    path = _write("ckpt-store/runs/c1/run.json", data)
    _guard(lambda: read_checkpoint(path))
    _guard(lambda: verify_run(_DIR / "ckpt-store", "c1"))


def snapshot(data: bytes) -> None:
    """JsonSnapshotStore.load/list and Snapshot.from_dict over fuzzed JSON."""
    _write("snaps/s1.json", data)
    snaps = JsonSnapshotStore(_DIR / "snaps", durability="none")
    _guard(lambda: snaps.load("s1"))
    _guard(lambda: snaps.list())
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    if isinstance(doc, dict):
        _guard(lambda: Snapshot.from_dict(doc))


def bookmarks(data: bytes) -> None:
    """read_bookmarks over a fuzzed bookmarks.json."""
    path = _write("bm/bookmarks.json", data)
    _guard(lambda: read_bookmarks(path))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "ledger": ledger, "checkpoint": checkpoint, "snapshot": snapshot, "bookmarks": bookmarks,
}


def seeds() -> dict[str, list[bytes]]:
    """Valid documents of each kind, to mutate (written by the real code)."""
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec
    from abstractruntime.storage.store import FileStore

    root = _DIR / "seed-store"
    store = FileStore(root, durability="none")
    rt: Runtime = store.runtime()
    wf = WorkflowSpec("seed", "a", {"a": lambda run, ctx: StepPlan("a", next_node="b"),
                                    "b": lambda run, ctx: StepPlan("b", complete_output={"ok": [1, 2.5, None]})})
    run_id = rt.start(workflow=wf, vars={"x": {"y": "é"}}) if not (root / "runs").exists() else \
        sorted(p.name for p in (root / "runs").iterdir())[0]
    if rt.get_state(run_id).status.value != "completed":
        rt.tick(workflow=wf, run_id=run_id)
        store.bookmarks.add(run_id, "b1", note="seed")
        store.snapshots.save(take_snapshot(rt, run_id, name="seed"))
    snap_file = next((root / "snapshots").glob("*.json"))
    store.close()
    run_dir = root / "runs" / run_id
    return {
        "ledger": [(run_dir / "ledger.jsonl").read_bytes()],
        "checkpoint": [(run_dir / "run.json").read_bytes()],
        "snapshot": [snap_file.read_bytes().replace(snap_file.stem.encode(), b"s1")],
        "bookmarks": [(run_dir / "bookmarks.json").read_bytes()],
    }


__all__ = ["TARGETS", "seeds", "ForeignException", "RunState"]
