"""Variables named like marker keys, and values that use marker keys, through the paths that
write or read a run's variables outside the ledger's records (docs/file-format.md, "Markers and
user data"): each must come back as it was, never taken for a marker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest


from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.redaction import NoRedaction
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from abstractruntime.testing.backend import StoreBackend

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "provenance"))
from independent_verifier import verify_lines as independent_verify  # noqa: E402

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


def _done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan("done", complete_output={"names": sorted(run.vars)})


DONE = WorkflowSpec("done", "done", {"done": _done})


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


def _waits(run: RunState, ctx: Any) -> StepPlan:
    """Wait twice (results at marker-named keys), then complete with every variable."""
    if "$lit" not in run.vars:
        return StepPlan("w", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "one"}, result_key="$lit"),
                        next_node="w")
    if "$v" not in run.vars:
        return StepPlan("w", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "two"}, result_key="$v.$shown"),
                        next_node="w")
    return StepPlan("w", complete_output={"vars": dict(run.vars)})


WAITS = WorkflowSpec("waits", "w", {"w": _waits})


def test_wait_payloads_at_marker_named_keys_replay_from_the_ledger_alone(tmp_path: Path) -> None:
    """Payloads delivered to waits whose result keys are marker keys (at the root and below it),
    themselves objects using marker keys, replay from the ledger alone to the live state at every
    position, and the run verifies (ours and the independent verifier)."""
    first = {"$v": "x", "$lit": {"$v": 1}, "$secret": "0" * 64}
    second = {"$shown": [{"$ext": "e" * 64, "$items": []}]}
    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=WAITS, vars={"$items": {"$val": 2}})
    live: list[str] = []
    state = rt.tick(workflow=WAITS, run_id=run_id)
    live.append(canonical(state.vars))
    state = rt.resume(workflow=WAITS, run_id=run_id, wait_key="one", payload=json.loads(json.dumps(first)))
    live.append(canonical(state.vars))
    state = rt.resume(workflow=WAITS, run_id=run_id, wait_key="two", payload=json.loads(json.dumps(second)))
    expected = {"$items": {"$val": 2}, "$lit": first, "$v": {"$shown": second}}
    assert canonical(state.output) == canonical({"vars": expected})
    head = store.ledger.head(run_id).seq
    at_each = [canonical(rt.state_at(run_id, seq).run.vars) for seq in range(1, head + 1)]
    store.close()
    (tmp_path / "runs" / run_id / "run.json").unlink()
    reader = FileStore(tmp_path, durability="none")
    try:
        rt = reader.runtime()
        assert canonical(rt.get_state(run_id).vars) == canonical(expected)
        assert [canonical(rt.state_at(run_id, seq).run.vars) for seq in range(1, head + 1)] == at_each
        assert at_each[-1] == canonical(expected) and set(live) <= set(at_each)
        assert rt.reveal(run_id, "vars.$lit.$lit") == {"$v": 1}
    finally:
        reader.close()
    assert verify_run(tmp_path, run_id).ok
    lines = (tmp_path / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    ok, _, message = independent_verify(lines)
    assert ok, message


def _forged(tmp_path: Path, first_ops: list[Any], later_ops: Optional[list[Any]] = None) -> str:
    """A finished run whose first record's (and, given, second record's) vars operations are
    replaced by a forger who rehashes the chain; its checkpoint is removed (the ledger decides)."""
    from prov_helpers import read_records, rehash, write_records

    store = FileStore(tmp_path, durability="none")
    rt = store.runtime(redactor=NoRedaction())
    run_id = rt.start(workflow=DONE, vars={"$v": 1})
    rt.tick(workflow=DONE, run_id=run_id)
    store.close()
    ledger = tmp_path / "runs" / run_id / "ledger.jsonl"
    records = read_records(ledger)
    records[0]["delta"]["vars"] = first_ops
    if later_ops is not None:
        records[1]["delta"] = {**(records[1].get("delta") or {}), "vars": later_ops}
    write_records(ledger, rehash(records))
    (tmp_path / "runs" / run_id / "run.json").unlink()
    return run_id


@pytest.mark.parametrize("where", ["first", "later"])
def test_a_forged_delete_of_the_variables_root_is_unreplayable(tmp_path: Path, where: str) -> None:
    """``["d", []]`` would delete the variables themselves, which are replaced, never deleted:
    ``verify`` says the record is unreplayable and opening the run is refused in one line (no
    traceback from a path with no last key)."""
    whole = [["s", [], {"$lit": {"$v": 1}}]]
    if where == "first":
        run_id = _forged(tmp_path, whole + [["d", []]])
    else:
        run_id = _forged(tmp_path, whole, [["d", []]])
    report = verify_run(tmp_path, run_id)
    assert not report.ok and "unreplayable" in json.dumps(report.to_dict()), report.to_dict()
    reader = FileStore(tmp_path, durability="none")
    try:
        with pytest.raises(CorruptRecordError) as caught:
            reader.runtime().get_state(run_id)
        assert "\n" not in str(caught.value)
    finally:
        reader.close()
    shown = subprocess.run([sys.executable, "-m", "abstractruntime", "--store", str(tmp_path), "runs", "show", run_id],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert shown.returncode != 0 and "Traceback" not in shown.stderr, shown.stderr
