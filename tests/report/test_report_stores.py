"""A store without run files (as a database store is): the page renders, the verdict covers the chain."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from abstractruntime import (Effect, EffectType, HashChainedLedgerStore, InMemoryLedgerStore, InMemoryRunStore,
                             Runtime, StepPlan, WorkflowSpec)
from abstractruntime.report import build_report, load_run


def _store() -> tuple[SimpleNamespace, str]:
    def ask(run, ctx):
        return StepPlan("ask", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Ship?", "choices": ["yes", "no"]}, result_key="reply"))

    def done(run, ctx):
        return StepPlan("done", complete_output={"ship": run.vars["reply"]["answer"] == "yes"})

    workflow = WorkflowSpec("ship", entry_node="ask", nodes={"ask": ask, "done": done})
    runs, ledger = InMemoryRunStore(), HashChainedLedgerStore(InMemoryLedgerStore())
    runtime = Runtime(run_store=runs, ledger_store=ledger)
    run_id = runtime.start(workflow=workflow)
    state = runtime.tick(workflow=workflow, run_id=run_id)
    runtime.resume(workflow=workflow, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "yes"})
    return SimpleNamespace(runs=runs, ledger=ledger), run_id


def test_a_store_without_files_reports_the_chain_verdict() -> None:
    store, run_id = _store()
    data = load_run(store, run_id)
    assert data.verify_scope == "chain" and data.verify["ok"] is True
    html = build_report(store, run_id)
    assert 'data-ok="true"' in html
    assert re.search(r'data-check="checkpoint" class="check-unchecked"', html)
    payload = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S)[1])
    assert len(payload["rows"]) == len(store.ledger.list(run_id)) and payload["graph"]["path"] == ["ask", "done"]


def test_an_edited_record_in_such_a_store_fails_the_chain() -> None:
    store, run_id = _store()
    records = store.ledger.list(run_id)
    edited = [dict(r) for r in records]
    edited[3] = dict(edited[3], result={"payload": {"answer": "no"}})
    store.ledger = SimpleNamespace(list=lambda rid: edited)
    html = build_report(store, run_id)
    assert 'data-ok="false"' in html and "record_hash_mismatch" in html
