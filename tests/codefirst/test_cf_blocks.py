"""Block marks are hints beside the ledger: what editing, forging or deleting one can do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import NondeterminismError, step, workflow
from abstractruntime.core.blocks import blocked_runs, current_block, skip_blocked
from abstractruntime.storage.store import FileStore


def _diverged(root: Path) -> tuple[FileStore, Any, str, Any]:
    """A file store with one run blocked by a divergence; returns the store, runtime, run id and new code."""
    names = ["a", "b"]

    @workflow("marked")
    def marked(ctx: Any) -> dict[str, Any]:
        for name in names:
            ctx.step(step(name=name)(lambda value=name: value))
        ctx.wait_event("go")
        return {}

    store = FileStore(root, durability="none")
    rt = store.runtime()
    run_id = rt.start(workflow=marked, run_id="m1")
    rt.tick(workflow=marked, run_id=run_id)
    names.reverse()
    with pytest.raises(NondeterminismError):
        rt.resume(workflow=marked, run_id=run_id, wait_id="w3", payload={})
    return store, rt, run_id, marked


def test_a_mark_holds_only_at_the_ledger_head_it_names(tmp_path: Path) -> None:
    store, rt, run_id, marked = _diverged(tmp_path / "s")
    path = tmp_path / "s" / "blocked" / f"{run_id}.json"
    mark = json.loads(path.read_text())
    assert mark["position"] == 1 and mark["recorded"] == "step 'a'" and mark["code"] == "step 'b'"
    assert list(blocked_runs(store.runs, store.ledger)) == [run_id]
    checkpoint = rt.get_checkpoint(run_id)
    assert skip_blocked(store.runs, checkpoint, marked)  # the code that diverged: workers pass over it
    rt.cancel_run(run_id)  # anything recorded since: the mark no longer holds
    assert blocked_runs(store.runs, store.ledger) == {}
    assert current_block(store.runs, run_id, rt.get_checkpoint(run_id).ledger) is None


def test_an_edited_forged_or_misplaced_mark_blocks_nothing(tmp_path: Path) -> None:
    store, rt, run_id, marked = _diverged(tmp_path / "s")
    folder = tmp_path / "s" / "blocked"
    path = folder / f"{run_id}.json"
    good = path.read_bytes()
    path.write_bytes(b"{not json")  # torn or edited: ignored
    assert store.runs.get_block(run_id) is None and blocked_runs(store.runs, store.ledger) == {}
    path.write_bytes(good.replace(b'"run_id":"m1"', b'"run_id":"other"'))  # names another run: ignored
    assert store.runs.get_block(run_id) is None
    (folder / "..json").write_text("{}")  # a name that is no run id: ignored
    (folder / "x.txt").write_text("{}")
    path.write_bytes(good)
    assert list(blocked_runs(store.runs, store.ledger)) == [run_id]
    forged = json.loads(good)
    forged["head_hash"] = "0" * 64  # a mark that does not name the run's head holds nothing
    path.write_text(json.dumps(forged))
    assert blocked_runs(store.runs, store.ledger) == {}
    assert not skip_blocked(store.runs, rt.get_checkpoint(run_id), marked)
    path.unlink()  # deleted: the next replay finds the divergence again and marks it again
    with pytest.raises(NondeterminismError):
        rt.resume(workflow=marked, run_id=run_id, wait_id="w3", payload={})
    assert store.runs.get_block(run_id)["position"] == 1


def test_a_mark_does_not_stop_an_explicit_resume_with_fixed_code(tmp_path: Path) -> None:
    store, rt, run_id, _ = _diverged(tmp_path / "s")

    @workflow("marked")
    def fixed(ctx: Any) -> dict[str, Any]:
        for name in ["a", "b"]:
            ctx.step(step(name=name)(lambda value=name: value))
        ctx.wait_event("go")
        return {"fixed": True}

    assert rt.resume(workflow=fixed, run_id=run_id, wait_id="w3", payload={}).output == {"fixed": True}
    assert blocked_runs(store.runs, store.ledger) == {}
    assert not (tmp_path / "s" / "blocked" / f"{run_id}.json").exists()  # the run ended: its mark is gone
