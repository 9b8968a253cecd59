"""Checkpoint rows are fenced by their ledger position: a writer that lost its run (its lock's
backend terminated, another writer took over) cannot put an older state back in the row, and
``verify`` reports a row that disagrees with the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import LedgerConflictError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain

CLI = str(Path(sys.executable).parent / "abstractruntime")


def _workflow() -> WorkflowSpec:
    """work (an effect) -> ask (a person) -> done."""

    def work(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("work", next_node="ask", effect=Effect(EffectType.TOOL_CALLS, {}, "worked"))

    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "Ship?"}, "reply"))

    return WorkflowSpec("fenced", "work", {"work": work, "ask": ask,
                                           "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})


def _lock_backends(admin: Any) -> list[int]:
    return [row[0] for row in admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()").fetchall()]


def test_an_older_checkpoint_never_replaces_a_newer_row(open_pg: Callable[..., Any]) -> None:
    store = open_pg()
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({})})
    run_id = rt.start(workflow=_workflow())
    waiting = rt.tick(workflow=_workflow(), run_id=run_id)
    assert waiting.status is RunStatus.WAITING
    older = store.runs.load_checkpoint(run_id)
    rt.resume(workflow=_workflow(), run_id=run_id, wait_key=waiting.waiting.wait_key, payload={"answer": "yes"})
    newer = store.runs.load_checkpoint(run_id)

    with pytest.raises(LedgerConflictError) as info:
        open_pg().runs.save_checkpoint(older)
    assert f"seq {older.ledger.seq}" in str(info.value) and f"seq {newer.ledger.seq}" in str(info.value)
    assert store.runs.load(run_id).status is RunStatus.COMPLETED
    store.runs.save_checkpoint(newer)  # the same position again: allowed (idempotent)
    assert store.runs.load_checkpoint(run_id).ledger == newer.ledger


def test_a_writer_whose_lock_backend_was_terminated_cannot_roll_the_row_back(open_pg: Callable[..., Any],
                                                                            admin: Any) -> None:
    """The first writer is inside a handler when its lock's backend is terminated. It goes on:
    its append still fits the head, then it stalls before its checkpoint (a pause in the run
    store, standing for a slow network or a GC pause). A second writer takes the run and
    completes it. The first writer's checkpoint comes last: refused, the row says completed."""
    inside, go_on, at_checkpoint, write_it = (threading.Event() for _ in range(4))

    def slow_work(run: RunState, effect: Any) -> EffectOutcome:
        inside.set()
        assert go_on.wait(30)
        return EffectOutcome.completed({"by": "first"})

    first_store, second_store = open_pg(), open_pg()
    real_save = first_store.runs.save_checkpoint

    def stalled_save(checkpoint: Any) -> None:
        if checkpoint.shown_run().status is RunStatus.WAITING:  # after its handler returned
            at_checkpoint.set()
            assert write_it.wait(30)
        real_save(checkpoint)

    first_store.runs.save_checkpoint = stalled_save  # type: ignore[method-assign]
    first = first_store.runtime(effect_handlers={EffectType.TOOL_CALLS: slow_work})
    second = second_store.runtime(effect_handlers={
        EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({"by": "second"})})
    run_id = first.start(workflow=_workflow())
    outcome: dict[str, Any] = {}

    def first_tick() -> None:
        try:
            outcome["state"] = first.tick(workflow=_workflow(), run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=first_tick)
    thread.start()
    try:
        assert inside.wait(30)
        backends = _lock_backends(admin)
        assert len(backends) == 1
        admin.execute("SELECT pg_terminate_backend(%s)", backends)
        go_on.set()
        assert at_checkpoint.wait(30)  # its batch is appended; its checkpoint is not written yet
        waiting = second.tick(workflow=_workflow(), run_id=run_id)
        assert waiting.status is RunStatus.WAITING
        done = second.resume(workflow=_workflow(), run_id=run_id, wait_key=waiting.waiting.wait_key,
                             payload={"answer": "yes"})
        assert done.status is RunStatus.COMPLETED
    finally:
        go_on.set()
        write_it.set()
        thread.join(60)

    assert isinstance(outcome.get("error"), LedgerConflictError), outcome
    row = second_store.runs.load_checkpoint(run_id)
    assert row.shown_run().status is RunStatus.COMPLETED
    assert row.ledger == second_store.ledger.head(run_id)
    assert verify_ledger_chain(second_store.ledger.list(run_id))["ok"] is True
    assert second_store.runs.list_runs(status=RunStatus.WAITING) == []


def _verify(url: str, schema: str, run_id: str) -> dict[str, Any]:
    code = ("import json, sys\n"
            "from abstractruntime.storage.postgres.store import PostgresStore\n"
            "from abstractruntime.storage.postgres.verify import verify_run\n"
            "store = PostgresStore(sys.argv[1], schema=sys.argv[2])\n"
            "print(json.dumps(verify_run(store, sys.argv[3]).to_dict()))\n")
    done = subprocess.run([sys.executable, "-c", code, url, schema, run_id], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"})
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_verify_compares_the_row_with_the_ledger(open_pg: Callable[..., Any], admin: Any, postgres_url: str,
                                                pg_schema: str) -> None:
    store = open_pg()
    rt = store.runtime(effect_handlers={EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({})})
    run_id = rt.start(workflow=_workflow())
    waiting = rt.tick(workflow=_workflow(), run_id=run_id)
    table = f'"{pg_schema}".runs'
    columns = [row[0] for row in admin.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'runs'"
        " AND column_name NOT IN ('run_id', 'version')", [pg_schema]).fetchall()]
    stale = admin.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE run_id = %s",
                          [run_id]).fetchone()
    rt.resume(workflow=_workflow(), run_id=run_id, wait_key=waiting.waiting.wait_key, payload={"answer": "yes"})
    assert _verify(postgres_url, pg_schema, run_id)["ok"] is True

    # A row the fence would refuse, put back by hand (or left by a release without the fence).
    assignments = ", ".join(f"{name} = %s" for name in columns)
    admin.execute(f"UPDATE {table} SET {assignments} WHERE run_id = %s", [*stale, run_id])
    report = _verify(postgres_url, pg_schema, run_id)
    assert report["ok"] is False
    behind = [p for p in report["problems"] if p["type"] == "checkpoint_behind_ledger"]
    assert len(behind) == 1 and "waiting" in behind[0]["message"]

    # An indexed column that disagrees with the row's own checkpoint (what queries and workers read).
    rt.tick(workflow=_workflow(), run_id=run_id)  # rebuilt from the ledger: the row is right again
    assert _verify(postgres_url, pg_schema, run_id)["ok"] is True
    admin.execute(f"UPDATE {table} SET status = 'waiting' WHERE run_id = %s", [run_id])
    report = _verify(postgres_url, pg_schema, run_id)
    columns = [p for p in report["problems"] if p["type"] == "row_columns_mismatch"]
    assert len(columns) == 1 and "status" in columns[0]["message"]


def test_a_stale_writer_keeps_no_secret(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    """The secret values of a batch go in with the batch: a writer whose append is refused
    leaves no ``secrets`` row (one that would match no record, never be pruned, be copied)."""
    inside, go_on = threading.Event(), threading.Event()

    def first_fetch(run: RunState, effect: Any) -> EffectOutcome:
        inside.set()
        assert go_on.wait(30)
        return EffectOutcome.completed({"value": "first-writer-secret"})

    def fetch_token(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("fetch", next_node="done", effect=Effect(EffectType.TOOL_CALLS, {}, "api_token"))

    flow = WorkflowSpec("secretive", "fetch", {"fetch": fetch_token,
                                               "done": lambda run, ctx: StepPlan("done", complete_output={})})
    first = open_pg().runtime(effect_handlers={EffectType.TOOL_CALLS: first_fetch})
    second_store = open_pg()
    second = second_store.runtime(effect_handlers={
        EffectType.TOOL_CALLS: lambda run, effect: EffectOutcome.completed({"value": "second-writer-secret"})})
    run_id = first.start(workflow=flow)
    outcome: dict[str, Any] = {}

    def first_tick() -> None:
        try:
            outcome["state"] = first.tick(workflow=flow, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=first_tick)
    thread.start()
    try:
        assert inside.wait(30)
        admin.execute("SELECT pg_terminate_backend(%s)", _lock_backends(admin))
        assert second.tick(workflow=flow, run_id=run_id).status is RunStatus.COMPLETED
    finally:
        go_on.set()
        thread.join(60)

    assert isinstance(outcome.get("error"), LedgerConflictError), outcome
    kept = admin.execute(f'SELECT convert_from(entry, \'UTF8\') FROM "{pg_schema}".secrets WHERE run_id = %s',
                         [run_id]).fetchall()
    assert not any("first-writer-secret" in row[0] for row in kept), kept
    # The run finished: the values it no longer needs are gone; readers see the value redacted.
    assert kept == []
    assert second_store.runs.load(run_id).vars["api_token"] == "[REDACTED]"
    records = json.dumps(second_store.ledger.list(run_id))
    assert "second-writer-secret" not in records  # redacted in the ledger: the value is kept beside it


def test_secrets_go_in_with_their_batch_or_not_at_all(open_pg: Callable[..., Any]) -> None:
    from abstractruntime.core.chain import seal_record_line
    from abstractruntime.core.models import StepRecord
    from abstractruntime.core.ports import LedgerHead

    def sealed(node: str) -> tuple[dict[str, Any], bytes]:
        rec = StepRecord.start(run=RunState.new(workflow_id="wf", entry_node="a", run_id="s1"), node_id=node,
                               effect=None)
        rec.finish_success({"node": node})
        return seal_record_line(rec, head=LedgerHead())

    ledger = open_pg().ledger
    (mine, my_line), (theirs, their_line) = sealed("mine"), sealed("theirs")
    ledger.append_lines("s1", [theirs], [their_line], expect=LedgerHead())  # another writer got there first
    entry = {"record_hash": mine["record_hash"], "seq": 1, "field": "result", "path": ["k"], "value": "v"}
    ledger.put_secrets("s1", [entry])
    with pytest.raises(LedgerConflictError):  # the batch read a head that moved: refused ...
        ledger.append_lines("s1", [mine], [my_line], expect=LedgerHead())
    assert ledger.get_secrets("s1") == []  # ... and its secret with it

    ledger.put_secrets("s2", [{**entry, "record_hash": mine["record_hash"]}])
    ledger.append_lines("s2", [{**mine, "run_id": "s2"}], [my_line], expect=LedgerHead())
    assert [e["value"] for e in open_pg().ledger.get_secrets("s2")] == ["v"]
