"""A run on PostgreSQL end to end: started by one process, answered by another, completed,
and its ledger exported and verified offline with no database."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import AlreadyAnsweredError, RunExistsError, RunLockedError, RunNotWaitingError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain
from abstractruntime.storage.postgres.transfer import export_run
from abstractruntime.storage.verify import verify_run


def _workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Deploy?", "choices": ["yes", "no"]},
                                             result_key="reply"), next_node="work")

    def work(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("work", effect=Effect(EffectType.LLM_CALL, {"prompt": f"said {run.vars['reply']['answer']}"},
                                              result_key="llm"), next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"text": run.vars["llm"]["text"]})

    return WorkflowSpec("deploy", "ask", {"ask": ask, "work": work, "done": done})


def _llm(run: RunState, effect: Effect) -> EffectOutcome:
    return EffectOutcome.completed({"text": effect.payload["prompt"].upper()})


def test_start_wait_resume_complete_across_processes(open_pg: Callable[..., Any], tmp_path: Path) -> None:
    wf = _workflow()
    first = open_pg()
    rt = first.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    run_id = rt.start(workflow=wf, vars={"service": "billing"})
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.USER
    handle = state.waiting.wait_key
    first.close()  # the first process exits

    second = open_pg()  # another process, maybe another machine
    waiting = second.runs.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.USER)
    assert [r.run_id for r in waiting] == [run_id]
    rt2 = second.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    state = rt2.resume(workflow=wf, run_id=run_id, wait_key=handle, payload={"answer": "yes"})
    assert state.status is RunStatus.COMPLETED and state.output == {"text": "SAID YES"}
    with pytest.raises(RunNotWaitingError):
        rt2.resume(workflow=wf, run_id=run_id, wait_key=handle, payload={"answer": "no"})

    third = open_pg()
    assert third.runtime().get_state(run_id).output == {"text": "SAID YES"}
    assert [r.run_id for r in third.runs.list_runs(status=RunStatus.COMPLETED)] == [run_id]
    records = third.ledger.list(run_id)
    report = verify_ledger_chain(records)
    assert report["ok"] is True and report["count"] == len(records) >= 5
    checkpoint = third.runs.load_checkpoint(run_id)
    assert checkpoint.ledger.seq == len(records) and checkpoint.ledger.head_hash == records[-1]["record_hash"]
    # Past states rebuild from the ledger here too.
    assert third.runtime().state_at(run_id, 1).run.status is RunStatus.RUNNING

    # Offline: the exported lines verify with the folder store's verifier, no database involved.
    export_run(third, run_id, tmp_path / "offline")
    offline = verify_run(tmp_path / "offline", run_id)
    assert offline.ok, offline.to_dict()
    assert offline.head_hash == records[-1]["record_hash"] and offline.count == len(records)


def test_timers_are_found_by_the_due_query(open_pg: Callable[..., Any]) -> None:
    clock = FixedClock("2030-01-01T00:00:00+00:00")

    def sleep(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("sleep", effect=Effect(EffectType.WAIT_UNTIL, {"until": "2030-01-01T01:00:00Z"}),
                        next_node="done")

    wf = WorkflowSpec("timer", "sleep", {"sleep": sleep,
                                          "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})
    store = open_pg()
    rt = store.runtime(clock=clock)
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    assert store.runs.list_due_wait_until(now_iso="2030-01-01T00:59:59Z") == []
    assert [r.run_id for r in store.runs.list_due_wait_until(now_iso="2030-01-01T01:00:00Z")] == [run_id]


def test_start_is_exclusive_across_stores(open_pg: Callable[..., Any]) -> None:
    wf = _workflow()
    open_pg().runtime().start(workflow=wf, run_id="only-once")
    other = open_pg().runtime()
    with pytest.raises(RunExistsError):
        other.start(workflow=wf, run_id="only-once")
    assert len(other.get_ledger("only-once")) == 1


def test_a_second_answer_to_the_same_wait_from_elsewhere_is_already_answered(open_pg: Callable[..., Any]) -> None:
    wf = _workflow()
    here = open_pg()
    rt = here.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    run_id = rt.start(workflow=wf)
    wait_id = rt.tick(workflow=wf, run_id=run_id).waiting.wait_id
    assert wait_id
    rt.resume(workflow=wf, run_id=run_id, wait_id=wait_id, payload={"answer": "yes"})
    elsewhere = open_pg().runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    before = here.ledger.lines(run_id)
    with pytest.raises(AlreadyAnsweredError):
        elsewhere.resume(workflow=wf, run_id=run_id, wait_id=wait_id, payload={"answer": "no"})
    assert here.ledger.lines(run_id) == before


def test_concurrent_resumers_advance_a_run_once(open_pg: Callable[..., Any]) -> None:
    """Eight threads, each with its own connections, answer the same wait: one wins; the others
    are refused (locked, or already answered) and write nothing."""
    wf = _workflow()
    store = open_pg()
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    run_id = rt.start(workflow=wf)
    wait_id = rt.tick(workflow=wf, run_id=run_id).waiting.wait_id
    runtimes = [open_pg().runtime(effect_handlers={EffectType.LLM_CALL: _llm}) for _ in range(8)]
    gate = threading.Barrier(len(runtimes))
    outcomes: list[Any] = [None] * len(runtimes)

    def answer(index: int) -> None:
        gate.wait()
        try:
            outcomes[index] = runtimes[index].resume(workflow=wf, run_id=run_id, wait_id=wait_id,
                                                     payload={"answer": f"a{index}"}).status
        except (RunLockedError, AlreadyAnsweredError) as exc:
            outcomes[index] = type(exc)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(len(runtimes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(RunStatus.COMPLETED) == 1, outcomes
    assert set(outcomes) <= {RunStatus.COMPLETED, RunLockedError, AlreadyAnsweredError}
    records = store.ledger.list(run_id)
    assert verify_ledger_chain(records)["ok"] is True
    assert sum(1 for r in records if r["kind"] == "resume") == 1


def test_the_scheduler_resumes_due_timers(open_pg: Callable[..., Any]) -> None:
    from abstractruntime.scheduler import create_scheduled_runtime

    clock = FixedClock("2030-01-01T00:00:00+00:00")

    def sleep(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("sleep", effect=Effect(EffectType.WAIT_UNTIL, {"until": "2030-01-01T00:10:00Z"}),
                        next_node="done")

    wf = WorkflowSpec("nap", "sleep", {"sleep": sleep,
                                        "done": lambda run, ctx: StepPlan("done", complete_output={"woke": True})})
    store = open_pg()
    scheduled = create_scheduled_runtime(run_store=store.runs, ledger_store=store.ledger, workflows=[wf],
                                         auto_start=False, clock=clock)
    run_id = scheduled.runtime.start(workflow=wf)
    assert scheduled.runtime.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    assert scheduled.scheduler.tick_due() == []
    clock.advance(seconds=600)
    assert [s.run_id for s in scheduled.scheduler.tick_due()] == [run_id]
    assert store.runs.load(run_id).output == {"woke": True}


def test_the_run_report_reads_a_database_run(open_pg: Callable[..., Any]) -> None:
    from abstractruntime.report.write import build_report

    wf = _workflow()
    store = open_pg()
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: _llm})
    run_id = rt.start(workflow=wf)
    rt.resume(workflow=wf, run_id=run_id, wait_key=rt.tick(workflow=wf, run_id=run_id).waiting.wait_key,
              payload={"answer": "yes"})
    html = build_report(store, run_id)
    assert run_id in html and "Verified: the ledger is intact" in html
