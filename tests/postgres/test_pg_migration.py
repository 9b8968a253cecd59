"""Schema migration 11 (one copy of each record): a store at schema 10 holding runs, records of
both formats, a snapshot and an artifact — each document also as ``jsonb`` and each ledger row
with its ``prev_hash``, as that release wrote them — upgraded in place by an open, then verified,
read and advanced."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from abstractruntime import Effect, EffectOutcome, EffectType, RunStatus, StepPlan, WorkflowSpec
from abstractruntime.core.models import RunState, StepRecord
from abstractruntime.core.wal import explicit_key
from abstractruntime.storage.postgres import schema
from abstractruntime.storage.snapshots import Snapshot
from abstractruntime.storage.postgres.verify import verify_run

# What release 10 kept beside each exact document: its jsonb copy (and the ledger's prev_hash).
_COPIES = {
    "ledger": ("record", "line"),
    "runs": ("checkpoint", "checkpoint_json"),
    "snapshots": ("snapshot", "snapshot_json"),
    "artifacts": ("tags", "tags_json"),
}


def _workflow() -> WorkflowSpec:
    """Pay once (an effect naming its idempotency key), wait for an event, then end."""
    return WorkflowSpec("pay", "pay", {
        "pay": lambda run, ctx: StepPlan("pay", effect=Effect(
            EffectType.TOOL_CALLS, {"idempotency_key": "pay-1", "amount": 5}, result_key="paid"), next_node="wait"),
        "wait": lambda run, ctx: StepPlan("wait", effect=Effect(
            EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="go"), next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"paid": run.vars["paid"], "go": run.vars["go"]}),
    })


def _handlers() -> dict[Any, Any]:
    return {EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({"receipt": "r-1"})}


def _columns(admin: Any, pg_schema: str) -> set[tuple[str, str, str]]:
    return {(r[0], r[1], r[2]) for r in admin.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s",
        [pg_schema]).fetchall()}


def _indexes(admin: Any, pg_schema: str) -> set[str]:
    return {r[0] for r in admin.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", [pg_schema])}


def _as_release_10(admin: Any, pg_schema: str) -> None:
    """Put a schema-11 store back as release 10 kept it: one row per record (every column filled
    from its own record), the jsonb copy of each document and the ledger's prev_hash, the index of
    completed effects, and no migration 11."""
    s = f'"{pg_schema}"'
    with admin.transaction():
        admin.execute(f"ALTER TABLE {s}.ledger ADD COLUMN record jsonb, ADD COLUMN prev_hash text")
        for run_id, first, data in admin.execute(
                f"SELECT run_id, seq, line FROM {s}.ledger WHERE last_seq IS NOT NULL").fetchall():
            admin.execute(f"DELETE FROM {s}.ledger WHERE run_id = %s AND seq = %s", [run_id, first])
            for seq, line in enumerate(bytes(data).split(b"\n"), start=first):
                doc = json.loads(line)
                effect_id = doc.get("effect_id") if doc.get("format") in (3, 4) else None
                admin.execute(f"INSERT INTO {s}.ledger (run_id, seq, line, record_hash, status, idempotency_key,"
                              " effect_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                              [run_id, seq, line, doc["record_hash"], doc.get("status"), doc.get("idempotency_key"),
                               effect_id])
        admin.execute(f"ALTER TABLE {s}.ledger DROP COLUMN last_seq")
        admin.execute(f"DROP INDEX {s}.ledger_intent_keys")
        admin.execute(f"""CREATE INDEX ledger_effect_completed ON {s}.ledger (run_id, effect_id, seq)
                          WHERE status = 'completed' AND effect_id IS NOT NULL""")
        for table, (copy, exact) in _COPIES.items():
            if table != "ledger":
                admin.execute(f"ALTER TABLE {s}.{table} ADD COLUMN {copy} jsonb")
            # NULL where jsonb cannot hold the document (U+0000), as release 10 left it.
            text = f"convert_from({exact}, 'UTF8')"
            admin.execute(f"UPDATE {s}.{table} SET {copy} = CASE WHEN strpos({text}, %s) = 0 THEN {text}::jsonb END",
                          ["\\u0000"])
        admin.execute(f"UPDATE {s}.ledger SET prev_hash = record ->> 'prev_hash'")
        admin.execute(f"DELETE FROM {s}.schema_migrations WHERE version = 11")


@pytest.fixture
def at_schema_10(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> Any:
    """A store at schema version 10 holding data: a waiting run (an effect that named its key), a
    run of older-format records, a snapshot and an artifact, with every copy release 10 kept."""
    old = open_pg()
    rt = old.runtime(effect_handlers=_handlers())
    run_id = rt.start(workflow=_workflow(), run_id="kept")
    assert rt.tick(workflow=_workflow(), run_id=run_id).status is RunStatus.WAITING
    old.snapshots.save(Snapshot.from_run(run=old.runs.load(run_id), name="waiting"))
    artifact = old.artifacts.store(b"bytes", tags={"big": 1e16, "note": "a\x00b"}, run_id=run_id)
    # A run of upstream 0.0.1's API: older-format records that name their key themselves.
    legacy = RunState.new(workflow_id="legacy", entry_node="a", run_id="legacy")
    record = StepRecord.start(run=legacy, node_id="a", effect=None, idempotency_key="k" * 32)
    record.finish_success({"legacy": True})
    old.ledger.append(record)
    lines, paid = old.ledger.lines(run_id), old.ledger.find_completed(run_id, explicit_key(run_id, "pay-1"))
    old.close()
    _as_release_10(admin, pg_schema)
    assert admin.execute(f'SELECT max(version) FROM "{pg_schema}".schema_migrations').fetchone() == (10,)
    assert admin.execute(f'SELECT count(*), count(record) FROM "{pg_schema}".ledger WHERE run_id = %s',
                         [run_id]).fetchone() == (len(lines), len(lines))
    assert admin.execute(f'SELECT count(*) FROM "{pg_schema}".artifacts WHERE tags IS NULL').fetchone() == (1,)
    return {"run_id": run_id, "artifact": artifact.artifact_id, "lines": lines, "paid": paid}


def test_a_store_at_schema_10_is_upgraded_in_place_and_verifies(at_schema_10: dict[str, Any],
                                                                open_pg: Callable[..., Any], admin: Any,
                                                                pg_schema: str) -> None:
    run_id = at_schema_10["run_id"]
    assert at_schema_10["paid"]["result"] == {"receipt": "r-1"}
    store = open_pg(create=False)  # what a worker opens after an upgrade
    rows = admin.execute(f'SELECT version FROM "{pg_schema}".schema_migrations ORDER BY version').fetchall()
    assert [r[0] for r in rows] == list(range(1, 12))
    columns = _columns(admin, pg_schema)
    assert not {c for c in columns if c[2] == "jsonb"}, "no jsonb copy is left"
    assert ("ledger", "prev_hash", "text") not in columns
    assert {"ledger_intent_keys", "ledger_completed"} <= _indexes(admin, pg_schema)
    assert "ledger_effect_completed" not in _indexes(admin, pg_schema)

    # The exact bytes are untouched: the chain, the checkpoint and the lookups read them.
    assert store.ledger.lines(run_id) == at_schema_10["lines"]
    assert verify_run(store, run_id).ok
    assert store.ledger.find_completed(run_id, explicit_key(run_id, "pay-1")) == at_schema_10["paid"]
    assert store.ledger.find_completed("legacy", "k" * 32)["result"] == {"legacy": True}
    assert store.runs.load(run_id).status is RunStatus.WAITING
    assert [s.name for s in store.snapshots.list(run_id=run_id)] == ["waiting"]
    tags = store.artifacts.get_metadata(at_schema_10["artifact"]).tags
    assert tags == {"big": 1e16, "note": "a\x00b"} and isinstance(tags["big"], float)

    # The run goes on after the upgrade, written without the copies, and still verifies.
    rt = store.runtime(effect_handlers=_handlers())
    waiting = store.runs.load(run_id).waiting
    done = rt.resume(workflow=_workflow(), run_id=run_id, wait_key=waiting.wait_key, payload={"ok": 1})
    assert done.status is RunStatus.COMPLETED and done.output == {"paid": {"receipt": "r-1"}, "go": {"ok": 1}}
    assert store.ledger.lines(run_id)[: len(at_schema_10["lines"])] == at_schema_10["lines"]
    assert verify_run(store, run_id).ok
    assert open_pg().ledger.find_completed(run_id, explicit_key(run_id, "pay-1")) == at_schema_10["paid"]


def test_a_release_10_process_is_refused_by_the_upgraded_store(at_schema_10: dict[str, Any],
                                                               open_pg: Callable[..., Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Once upgraded, an older release must not write rows it would read as one record each."""
    from abstractruntime.core.errors import UnsupportedFormatError

    open_pg(create=False)
    with monkeypatch.context() as patch:
        patch.setattr(schema, "SCHEMA_VERSION", 10)
        with pytest.raises(UnsupportedFormatError, match="version 11"):
            open_pg()


def test_find_completed_follows_an_effect_to_its_outcome_only(open_pg: Callable[..., Any]) -> None:
    """The key an intent named leads to that effect's outcome — not to a later effect's, and not
    to one that never completed."""
    store = open_pg()
    calls: list[int] = []

    def handler(run: Any, effect: Any) -> Any:
        calls.append(effect.payload["n"])
        if effect.payload["n"] == 2:
            return EffectOutcome.failed("no")
        return EffectOutcome.completed({"n": effect.payload["n"]})

    def node(n: int, after: str) -> Any:
        return lambda run, ctx: StepPlan(f"e{n}", effect=Effect(
            EffectType.TOOL_CALLS, {"idempotency_key": f"key-{n}", "n": n}, result_key="r"), next_node=after)

    wf = WorkflowSpec("keys", "e1", {"e1": node(1, "e3"), "e3": node(3, "e2"), "e2": node(2, "end"),
                                     "end": lambda run, ctx: StepPlan("end", complete_output={})})
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: handler})
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    assert calls == [1, 3, 2]
    found = {n: store.ledger.find_completed(run_id, explicit_key(run_id, f"key-{n}")) for n in (1, 2, 3, 9)}
    assert found[1]["result"] == {"n": 1} and found[3]["result"] == {"n": 3}
    assert found[2] is None and found[9] is None  # failed (no completed outcome); never named
