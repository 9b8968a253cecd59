"""Variables named like marker keys on PostgreSQL: written, read back by another store, replayed,
exported and verified offline (docs/file-format.md, "Markers and user data")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from abstractruntime.core.jcs import jcs
from abstractruntime.core.markers import MARKER_KEYS
from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan
from abstractruntime.core.redaction import NoRedaction
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.postgres.transfer import export_run, import_run
from abstractruntime.storage.verify import verify_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "provenance"))
from independent_verifier import verify_lines as independent_verify  # noqa: E402

START = {name: {"x": 1, name: [name]} for name in sorted(MARKER_KEYS)}


def _first(run: Any, ctx: Any) -> StepPlan:
    run.vars["$v"] = 7
    del run.vars["$shown"]
    return StepPlan("first", effect=Effect(EffectType.TOOL_CALLS, {}, result_key="$lit.$v"), next_node="last")


def _last(run: Any, ctx: Any) -> StepPlan:
    return StepPlan("last", complete_output={"names": sorted(run.vars)})


WF = WorkflowSpec("pg_marker_names", "first", {"first": _first, "last": _last})


def test_marker_named_variables_round_trip_on_postgres(open_pg: Callable[..., Any], pg_schema: str,
                                                       tmp_path: Path) -> None:
    expected = {name: value for name, value in START.items() if name != "$shown"}
    expected["$v"] = 7
    expected["$lit"] = {"x": 1, "$lit": ["$lit"], "$v": {"$val": 2}}
    first = open_pg()
    rt = first.runtime(redactor=NoRedaction(),
                       effect_handlers={EffectType.TOOL_CALLS: lambda run, eff: EffectOutcome.completed({"$val": 2})})
    run_id = rt.start(workflow=WF, vars={k: dict(v) for k, v in START.items()})
    state = rt.tick(workflow=WF, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    assert jcs(state.vars) == jcs(expected)
    first.close()

    second = open_pg()  # another process
    assert jcs(second.runtime().get_state(run_id).vars) == jcs(expected)
    listed = second.runs.list_runs(status=RunStatus.COMPLETED)
    assert [r.run_id for r in listed] == [run_id] and sorted(listed[0].vars) == sorted(expected)
    loaded = second.runs.load(run_id)
    assert loaded is not None and jcs(loaded.vars) == jcs(expected)
    head = len(second.ledger.list(run_id))
    assert jcs(second.runtime().state_at(run_id, head).run.vars) == jcs(expected)
    assert jcs(second.runtime().state_at(run_id, 1).run.vars) == jcs(START)

    export_run(second, run_id, tmp_path / "offline")
    report = verify_run(tmp_path / "offline", run_id)
    assert report.ok, report.to_dict()
    lines = (tmp_path / "offline" / "runs" / run_id / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    ok, _, message = independent_verify(lines)
    assert ok, message

    # Imported into a fresh schema, the run reads the same.
    third = open_pg(schema=f"{pg_schema}_import")
    import_run(third, run_id, tmp_path / "offline")
    assert jcs(third.runtime().get_state(run_id).vars) == jcs(expected)
