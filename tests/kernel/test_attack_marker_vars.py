"""Variables named like marker keys, and values that use marker keys, through the paths that
write or read a run's variables outside the ledger's records (docs/file-format.md, "Markers and
user data"): each must come back as it was, never taken for a marker.
"""

from __future__ import annotations

import json
from typing import Any


from abstractruntime.core.models import RunState
from abstractruntime.testing.backend import StoreBackend

# Names at the root that are marker keys, and user objects below it that use marker keys in
# every shape (valid marker shapes included: they are user data here, not markers).
VARS: dict[str, Any] = {
    "$v": "plain",
    "$lit": {"x": 1},
    "a": {"$v": 1},
    "b": {"$lit": 2},
    "c": {"$secret": "0" * 64, "$shown": "looks like a secret"},
    "d": [{"$ext": "e" * 64, "$items": []}, {"$val": {"$v": "f" * 64}}],
}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_a_bare_run_saved_through_a_run_store_reads_back_its_variables(run_backend: StoreBackend) -> None:
    """``runs.save`` of a run with no ledger (upstream 0.0.1's way of storing a run) keeps each
    variable as it was, whatever marker keys its values use: the state document holds values in
    stored form, so reading it back takes none of them for a marker."""
    run = RunState.new(workflow_id="done", entry_node="done", vars=json.loads(json.dumps(VARS)))
    run_backend.runs.save(run)
    loaded = run_backend.runs.load(run.run_id)
    assert loaded is not None and canonical(loaded.vars) == canonical(VARS)
    if run_backend.checkpoints:
        checkpoint = run_backend.runs.load_checkpoint(run.run_id)
        assert checkpoint is not None and canonical(checkpoint.shown_run().vars) == canonical(VARS)
    if run_backend.queryable:
        listed = [r for r in run_backend.runs.list_runs() if r.run_id == run.run_id]  # type: ignore[attr-defined]
        assert [canonical(r.vars) for r in listed] == [canonical(VARS)]
    if run_backend.reopen is not None:
        again = run_backend.reopen()
        found = again.runs.load(run.run_id)
        assert found is not None and canonical(found.vars) == canonical(VARS)
