"""Steps, effects and waits are identified by their position in the run, never by their payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from abstractruntime import (
    Effect,
    EffectOutcome,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    RunState,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowSpec,
    open_store,
)
from abstractruntime.core.errors import AlreadyAnsweredError, RunExistsError, RunNotWaitingError


def _runtimes(tmp_path: Path, **kwargs: Any) -> list[Runtime]:
    return [Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), **kwargs),
            open_store(tmp_path / "store").runtime(**kwargs)]


def two_questions() -> WorkflowSpec:
    def first(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("first", next_node="second", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Migrate the database?", "choices": ["yes", "no"]}, result_key="migrate"))

    def second(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("second", next_node="done", effect=Effect(
            EffectType.ASK_USER, {"prompt": "Also DROP the old database?", "choices": ["yes", "no"]},
            result_key="drop"))

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("done", complete_output={"migrate": run.vars["migrate"], "drop": run.vars.get("drop")})

    return WorkflowSpec("two-questions", "first", {"first": first, "second": second, "done": done})


@pytest.mark.parametrize("index", [0, 1], ids=["memory", "files"])
def test_a_retried_answer_is_refused_not_applied_to_the_next_wait(tmp_path: Path, index: int) -> None:
    rt = _runtimes(tmp_path)[index]
    wf = two_questions()
    run_id = rt.start(workflow=wf)
    first = rt.tick(workflow=wf, run_id=run_id).waiting
    assert first is not None and first.wait_id == "w1"
    after = rt.resume(workflow=wf, run_id=run_id, wait_id=first.wait_id, payload={"answer": "yes"})
    assert after.waiting is not None and after.waiting.prompt == "Also DROP the old database?"
    before = rt.get_ledger(run_id)
    with pytest.raises(AlreadyAnsweredError, match="already answered"):
        rt.resume(workflow=wf, run_id=run_id, wait_id=first.wait_id, payload={"answer": "yes"})
    assert rt.get_ledger(run_id) == before  # nothing written
    state = rt.get_state(run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None and state.waiting.wait_id == "w2"
    assert "drop" not in state.vars
    # Also refused once the run has finished, and still a RunNotWaitingError for 0.0.1 callers.
    rt.resume(workflow=wf, run_id=run_id, wait_id="w2", payload={"answer": "no"})
    with pytest.raises(RunNotWaitingError):
        rt.resume(workflow=wf, run_id=run_id, wait_id="w2", payload={"answer": "no"})


def test_a_retried_answer_does_not_fire_the_next_timer_or_event(tmp_path: Path) -> None:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", next_node="sleep", effect=Effect(EffectType.ASK_USER, {"prompt": "go?"}, "a"))

    def sleep(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("sleep", next_node="listen", effect=Effect(
            EffectType.WAIT_UNTIL, {"until": "2999-01-01T00:00:00+00:00"}))

    def listen(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("listen", next_node="end", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "pay"}, "p"))

    wf = WorkflowSpec("chain", "ask", {"ask": ask, "sleep": sleep, "listen": listen,
                                       "end": lambda run, ctx: StepPlan("end", complete_output={})})
    rt = open_store(tmp_path / "store").runtime()
    run_id = rt.start(workflow=wf)
    wait = rt.tick(workflow=wf, run_id=run_id).waiting
    assert wait is not None
    timer = rt.resume(workflow=wf, run_id=run_id, wait_id=wait.wait_id, payload={"answer": "yes"})
    assert timer.waiting is not None and timer.waiting.reason.value == "until"
    with pytest.raises(AlreadyAnsweredError):
        rt.resume(workflow=wf, run_id=run_id, wait_id=wait.wait_id, payload={"answer": "yes"})
    assert rt.get_state(run_id).waiting.wait_id == timer.waiting.wait_id  # the one-hour timer still waits


@pytest.mark.parametrize("effect_type", [EffectType.LLM_CALL, EffectType.TOOL_CALLS, EffectType.ASK_USER])
def test_a_loop_that_repeats_the_same_effect_runs_it_every_time(tmp_path: Path, effect_type: EffectType) -> None:
    calls: list[int] = []

    def handler(run: RunState, effect: Effect) -> EffectOutcome:
        calls.append(run.vars["i"])
        return EffectOutcome.completed({"status": "pending" if len(calls) < 3 else "done"})

    def poll(run: RunState, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        return StepPlan("poll", next_node="check", effect=Effect(effect_type, {"prompt": "status?", "job": "j1"},
                                                                  result_key="r"))

    def check(run: RunState, ctx: Any) -> StepPlan:
        if run.vars["i"] >= 3:
            return StepPlan("check", complete_output={"polls": run.vars["i"]})
        return StepPlan("check", next_node="poll")

    wf = WorkflowSpec("poller", "poll", {"poll": poll, "check": check})
    for rt in _runtimes(tmp_path, effect_handlers={EffectType.LLM_CALL: handler, EffectType.TOOL_CALLS: handler}):
        calls.clear()
        run_id = rt.start(workflow=wf)
        state = rt.tick(workflow=wf, run_id=run_id)
        for _ in range(5):
            if state.status is not RunStatus.WAITING:
                break
            assert state.waiting is not None
            state = rt.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, payload={"answer": "x"})
        assert state.output == {"polls": 3}
        effects = [r for r in rt.get_ledger(run_id) if r["kind"] == "effect" and r["status"] == "started"]
        assert [r["effect_id"] for r in effects] == [1, 2, 3]
        assert len({r["idempotency_key"] for r in effects}) == 3
        if effect_type is not EffectType.ASK_USER:
            assert calls == [1, 2, 3]


def test_an_explicit_idempotency_key_deduplicates_across_the_run(tmp_path: Path) -> None:
    calls: list[int] = []

    def charge(run: RunState, effect: Effect) -> EffectOutcome:
        calls.append(1)
        return EffectOutcome.completed({"receipt": len(calls)})

    def pay(run: RunState, ctx: Any) -> StepPlan:
        run.vars["n"] = run.vars.get("n", 0) + 1
        return StepPlan("pay", next_node="again", effect=Effect(
            EffectType.TOOL_CALLS, {"idempotency_key": "order-42", "amount": 5}, result_key="r"))

    def again(run: RunState, ctx: Any) -> StepPlan:
        if run.vars["n"] < 2:
            return StepPlan("again", next_node="pay")
        return StepPlan("again", complete_output={"r": run.vars["r"]})

    wf = WorkflowSpec("pay-once", "pay", {"pay": pay, "again": again})
    for rt in _runtimes(tmp_path, effect_handlers={EffectType.TOOL_CALLS: charge}):
        calls.clear()
        state = rt.tick(workflow=wf, run_id=rt.start(workflow=wf))
        assert state.output == {"r": {"receipt": 1}} and calls == [1]


def test_starting_an_existing_run_id_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    for rt in _runtimes(tmp_path):
        wf = two_questions()
        rt.start(workflow=wf, run_id="once")
        before = rt.get_ledger("once")
        with pytest.raises(RunExistsError, match="already exists"):
            rt.start(workflow=wf, run_id="once")
        assert rt.get_ledger("once") == before


def test_state_at_any_position_matches_what_the_run_saw(tmp_path: Path) -> None:
    seen: dict[int, dict[str, Any]] = {}

    def step(run: RunState, ctx: Any) -> StepPlan:
        run.vars["i"] = run.vars.get("i", 0) + 1
        run.vars.setdefault("log", {})[str(run.vars["i"])] = {"nested": [run.vars["i"]] * 3}
        if run.vars["i"] == 3:
            del run.vars["log"]["1"]
        if run.vars["i"] >= 5:
            return StepPlan("step", complete_output={"i": run.vars["i"]})
        return StepPlan("step", next_node="step")

    wf = WorkflowSpec("count", "step", {"step": step})
    for rt in _runtimes(tmp_path):
        run_id = rt.start(workflow=wf, vars={"keep": True})
        for _ in range(6):
            state = rt.tick(workflow=wf, run_id=run_id, max_steps=1)
            seen[len(rt.get_ledger(run_id))] = state.to_dict()
        for seq, expected in seen.items():
            rebuilt = rt.state_at(run_id, seq).run.to_dict()
            assert {k: v for k, v in rebuilt.items() if k != "updated_at"} == \
                {k: v for k, v in expected.items() if k != "updated_at"}


def test_rebuilt_from_the_ledger_alone_when_the_checkpoint_is_gone(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    rt = store.runtime()
    wf = two_questions()
    run_id = rt.start(workflow=wf, vars={"k": [1, 2]})
    state = rt.tick(workflow=wf, run_id=run_id)
    (tmp_path / "store" / "runs" / run_id / "run.json").unlink()
    fresh = open_store(tmp_path / "store").runtime()
    again = fresh.get_state(run_id)
    assert again.to_dict() | {"updated_at": None} == state.to_dict() | {"updated_at": None}
    done = fresh.resume(workflow=wf, run_id=run_id, wait_id="w1", payload={"answer": "no"})
    assert done.waiting is not None and done.waiting.wait_id == "w2"


def test_an_answer_naming_other_tool_calls_is_refused_by_the_library(tmp_path: Path) -> None:
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.integrations.abstractcore import PassthroughToolExecutor
    from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler

    calls = [{"name": "send_email", "arguments": {"to": "a@example.com"}, "call_id": "c1"}]
    wf = WorkflowSpec("tools", "call", {
        "call": lambda run, ctx: StepPlan("call", next_node="end", effect=Effect(
            EffectType.TOOL_CALLS, {"tool_calls": calls}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"r": run.vars["r"]})})
    rt = open_store(tmp_path / "store").runtime(
        effect_handlers={EffectType.TOOL_CALLS: make_tool_calls_handler(tools=PassthroughToolExecutor())})
    run_id = rt.start(workflow=wf)
    wait = rt.tick(workflow=wf, run_id=run_id).waiting
    digest = wait.details["calls_sha256"]
    before = rt.get_ledger(run_id)
    with pytest.raises(InvalidInputError, match="calls_sha256 mismatch"):
        rt.resume(workflow=wf, run_id=run_id, wait_id=wait.wait_id,
                  payload={"mode": "executed", "results": [], "calls_sha256": "0" * 64})
    assert rt.get_ledger(run_id) == before
    done = rt.resume(workflow=wf, run_id=run_id, wait_id=wait.wait_id,
                     payload={"mode": "executed", "results": [], "calls_sha256": digest})
    assert done.status is RunStatus.COMPLETED
