"""Parser fuzz targets: each takes bytes and may raise only the project's own errors.

Shared by the hypothesis tests (test_rel_fuzz.py) and the atheris runner
(``python -m tests.reliability.run --atheris SECONDS``). A :class:`FuzzBench` works in a
directory its caller owns (pytest's ``tmp_path_factory``, or a ``TemporaryDirectory``), so
importing this module creates nothing. Each target returns what every parser call did (an
:class:`Outcome`), so a test can assert that a valid document parses and a damaged one is
refused, not merely that nothing foreign was raised.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from abstractruntime.core.errors import AbstractRuntimeError
from abstractruntime.core.restore import take_snapshot
from abstractruntime.storage.bookmarks import read_bookmarks
from abstractruntime.storage.json_files import JsonlLedgerStore, read_checkpoint
from abstractruntime.storage.ledger_parse import parse_ledger
from abstractruntime.storage.snapshots import JsonSnapshotStore, Snapshot
from abstractruntime.storage.verify import verify_run
from abstractruntime.storage.verify_report import VerifyReport

# The run the seed documents describe: targets put a document where that run lives, so a
# valid seed is also in its right place and parses cleanly.
SEED_RUN = "seed-run"
KINDS = ("bookmarks", "checkpoint", "ledger", "snapshot")


class ForeignException(AssertionError):
    """A parser raised something that is not an AbstractRuntimeError."""


@dataclass
class Outcome:
    """What one parser call did with the bytes: returned ``value`` or raised ``error``."""

    call: str
    value: Any = None
    error: Optional[AbstractRuntimeError] = None

    @property
    def accepted(self) -> bool:
        """True when the call returned and, for a verification, found nothing wrong."""
        if self.error is not None:
            return False
        return self.value.ok if isinstance(self.value, VerifyReport) else True


def _call(name: str, fn: Callable[[], Any]) -> Outcome:
    try:
        return Outcome(name, value=fn())
    except AbstractRuntimeError as exc:
        return Outcome(name, error=exc)
    except Exception as exc:
        raise ForeignException(f"{name}: {type(exc).__name__}: {exc}") from exc


class FuzzBench:
    """The parser targets over files in ``root`` (seed documents are written there first)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seeds = self._write_seeds()

    def targets(self) -> dict[str, Callable[[bytes], list[Outcome]]]:
        """Each target by the kind of document it parses."""
        return {"ledger": self.ledger, "checkpoint": self.checkpoint, "snapshot": self.snapshot,
                "bookmarks": self.bookmarks}

    def _write(self, relative: str, data: bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def ledger(self, data: bytes) -> list[Outcome]:
        """parse_ledger (chain-checked and not), and the store's list/head/find_completed."""
        self._write(f"ledger-store/runs/{SEED_RUN}/ledger.jsonl", data)
        store = JsonlLedgerStore(self.root / "ledger-store", durability="none")
        return [
            _call("parse_ledger(verify_chain)",
                  lambda: parse_ledger(data, path="fuzz", verify_chain=True, run_id=SEED_RUN)),
            _call("parse_ledger", lambda: parse_ledger(data, path="fuzz", verify_chain=False)),
            _call("list", lambda: store.list(SEED_RUN)),
            _call("head", lambda: store.head(SEED_RUN)),
            _call("find_completed", lambda: store.find_completed(SEED_RUN, "k")),
        ]

    def checkpoint(self, data: bytes) -> list[Outcome]:
        """read_checkpoint and verify_run over a fuzzed run.json beside the seed ledger."""
        path = self._write(f"ckpt-store/runs/{SEED_RUN}/run.json", data)
        return [_call("read_checkpoint", lambda: read_checkpoint(path)),
                _call("verify_run", lambda: verify_run(self.root / "ckpt-store", SEED_RUN))]

    def snapshot(self, data: bytes) -> list[Outcome]:
        """JsonSnapshotStore.load/list and Snapshot.from_dict over fuzzed JSON."""
        self._write("snaps/s1.json", data)
        snaps = JsonSnapshotStore(self.root / "snaps", durability="none")
        outcomes = [_call("load", lambda: snaps.load("s1")), _call("list", lambda: snaps.list())]
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return outcomes
        if isinstance(doc, dict):
            outcomes.append(_call("Snapshot.from_dict", lambda: Snapshot.from_dict(doc)))
        return outcomes

    def bookmarks(self, data: bytes) -> list[Outcome]:
        """read_bookmarks over a fuzzed bookmarks.json."""
        path = self._write("bm/bookmarks.json", data)
        return [_call("read_bookmarks", lambda: read_bookmarks(path))]

    def _write_seeds(self) -> dict[str, bytes]:
        """Valid documents of each kind, written by the real code."""
        from abstractruntime.core.models import StepPlan
        from abstractruntime.core.spec import WorkflowSpec
        from abstractruntime.storage.store import FileStore

        root = self.root / "seed-store"
        store = FileStore(root, durability="none")
        try:
            rt = store.runtime()
            wf = WorkflowSpec("seed", "a", {
                "a": lambda run, ctx: StepPlan("a", next_node="b"),
                "b": lambda run, ctx: StepPlan("b", complete_output={"ok": [1, 2.5, None]})})
            rt.start(workflow=wf, vars={"x": {"y": "é"}}, run_id=SEED_RUN)
            rt.tick(workflow=wf, run_id=SEED_RUN)
            store.bookmarks.add(SEED_RUN, "b1", note="seed")
            store.snapshots.save(take_snapshot(rt, SEED_RUN, name="seed"))
        finally:
            store.close()
        run_dir = root / "runs" / SEED_RUN
        # The checkpoint target verifies a run.json against the seed ledger it belongs to.
        ckpt_dir = self.root / "ckpt-store" / "runs" / SEED_RUN
        ckpt_dir.mkdir(parents=True)
        shutil.copyfile(run_dir / "ledger.jsonl", ckpt_dir / "ledger.jsonl")
        snap_file = next((root / "snapshots").glob("*.json"))
        return {
            "ledger": (run_dir / "ledger.jsonl").read_bytes(),
            "checkpoint": (run_dir / "run.json").read_bytes(),
            "snapshot": snap_file.read_bytes().replace(snap_file.stem.encode(), b"s1"),
            "bookmarks": (run_dir / "bookmarks.json").read_bytes(),
        }


__all__ = ["FuzzBench", "ForeignException", "KINDS", "Outcome", "SEED_RUN"]
