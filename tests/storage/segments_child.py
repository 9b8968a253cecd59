"""Grow a run on a folder store with small segments and SIGKILL itself at one step of a rotation.

    python -m tests.storage.segments_child ROOT POINT

POINT is one of :data:`POINTS` (or ``none``: run to the end). The run ``long`` is ticked in
rounds of 600 steps with a segment every 300 records (closed at the checkpoints, every 512).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec

POINTS = ("before_segment_record", "after_segment_record", "before_rename", "after_rename",
          "before_new_file", "after_new_file")


def spinner() -> WorkflowSpec:
    """A workflow that counts forever."""
    def spin(run: Any, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        return StepPlan(node_id="spin", next_node="spin")

    return WorkflowSpec("spinner", "spin", {"spin": spin})


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: str) -> None:
    from abstractruntime.storage import segments
    from abstractruntime.storage.ledger_files import JsonlLedgerStore

    append = JsonlLedgerStore.append_lines
    rename = segments.rename
    sealed = [False]

    def append_lines(self: Any, run_id: str, docs: Any, lines: Any, *, expect: Any) -> Any:
        closing = any(d.get("kind") == "segment" for d in docs)
        if (closing and point == "before_segment_record") or (sealed[0] and point == "before_new_file"):
            _die()
        head = append(self, run_id, docs, lines, expect=expect)
        if (closing and point == "after_segment_record") or (sealed[0] and point == "after_new_file"):
            _die()
        return head

    def renamed(source: Path, target: Path) -> None:
        if point == "before_rename":
            _die()
        rename(source, target)
        sealed[0] = True
        if point == "after_rename":
            _die()

    JsonlLedgerStore.append_lines = append_lines  # type: ignore[method-assign]
    segments.rename = renamed


def main(root: str, point: str) -> None:
    """Grow the run until the kill point is reached (or for three rounds)."""
    from abstractruntime.storage.store import FileStore

    if point != "none":
        _install(point)
    store = FileStore(root, segment_records=300)
    rt = store.runtime()
    wf = spinner()
    if store.ledger.head("long").seq == 0:
        rt.start(workflow=wf, run_id="long")
    for _ in range(3):
        rt.tick(workflow=wf, run_id="long", max_steps=600)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
