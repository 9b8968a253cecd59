"""A run directory made within the same tick of the kernel's coarse clock as the ``runs/``
directory's mtime the index recorded leaves that mtime as it was: the index must not take it as
"no new run" (a creator killed before its row, or a run copied in, would stay hidden from queries,
``list_children`` and the workers). Recent mtimes are recorded so that they never match.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from abstractruntime import FileStore
from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage import run_index

FLOW = WorkflowSpec("racy", "a", {"a": lambda run, ctx: StepPlan("a", complete_output={"ok": True})})


def _made_elsewhere(tmp_path: Path, run_id: str, parent: str) -> Path:
    """A run's directory as a creator killed before its index row leaves it (made in another store)."""
    other = FileStore(tmp_path / "other", durability="none")
    try:
        other.runtime().start(workflow=FLOW, run_id=run_id, parent_run_id=parent)
    finally:
        other.close()
    return tmp_path / "other" / "runs" / run_id


def test_a_run_directory_made_in_the_tick_the_index_recorded_is_found(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    source = _made_elsewhere(tmp_path, "child", "parent")
    store = FileStore(root, durability="none")
    # The index records the runs/ mtime right after the mkdir: 1 ms later, however long a loaded
    # machine really took (a directory made in the same tick is only possible that soon).
    runs_dir = root / "runs"
    monkeypatch.setattr(run_index, "time", SimpleNamespace(
        time_ns=lambda: runs_dir.stat().st_mtime_ns + 1_000_000 if runs_dir.exists() else time.time_ns()))
    try:
        store.runtime().start(workflow=FLOW, run_id="parent")
        runs = root / "runs"
        recorded = runs.stat().st_mtime_ns
        shutil.copytree(source, runs / "child")
        os.utime(runs, ns=(recorded, recorded))  # the same coarse tick: the directory's mtime unchanged
        assert [r.run_id for r in store.runs.list_children(parent_run_id="parent")] == ["child"]
        assert "child" in {r.run_id for r in store.runs.list_runs()}
    finally:
        store.close()


def test_an_old_mtime_is_recorded_as_it_is_and_a_recent_one_never_matches() -> None:
    now = time.time_ns()
    old = now - 10 * run_index.RACY_WHOLE_SECONDS_NS
    assert run_index.vouched(old + 1) == str(old + 1)
    assert run_index.vouched(now) != str(now)
    whole_second = (now // 1_000_000_000) * 1_000_000_000  # a file system keeping whole seconds
    assert run_index.vouched(whole_second) != str(whole_second)


def test_a_query_after_the_racy_window_records_the_mtime_and_lists_no_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    store = FileStore(root, durability="none")
    try:
        store.runtime().start(workflow=FLOW, run_id="one")
        time.sleep(run_index.RACY_NS / 1e9 * 2)
        listed: list[int] = []
        real = os.listdir

        def counting(path: object) -> list[str]:
            if str(path) == str(root / "runs"):
                listed.append(1)
            return real(path)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "listdir", counting)
        store.runs.list_runs()
        store.runs.list_runs()
        assert len(listed) <= 1  # the first query lists (the mtime was recent), the next trusts it
    finally:
        store.close()
