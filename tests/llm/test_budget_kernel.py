"""Usage on the record and budgets that pause, in the kernel (a scripted in-process LLM handler).

The kernel knows numbers, not providers: a handler reports ``ext.usage`` and the runtime
records it, keeps the run's totals, pauses the run at its budget and records every decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.usage_totals import totals_of
from abstractruntime.core.errors import AlreadyAnsweredError, InvalidInputError, WaitKeyMismatchError
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.runtime import EffectOutcome, Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.scheduler import WorkflowRegistry
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run

PRICES = {"models": {"m": {"input_per_million": 2.0, "output_per_million": 10.0}}, "currency": "USD"}


class ScriptedLLM:
    """An ``llm_call`` handler: each call spends 100 input and 50 output tokens (cost 0.0007)."""

    def __init__(self, prices: Any = PRICES) -> None:
        self.calls: list[str] = []
        self.prices = prices

    def __call__(self, run: RunState, effect: Effect) -> EffectOutcome:
        prompt = str(effect.payload.get("prompt"))
        self.calls.append(prompt)
        usage = {"provider": "scripted", "model": "m", "input_tokens": 100, "output_tokens": 50, "latency_ms": 3,
                 "cost": 0.0007}
        ext: dict[str, Any] = {"usage": usage}
        if self.prices is not None:
            ext["prices"] = self.prices
        return EffectOutcome.completed({"content": f"answer to {prompt}"}, ext=ext)


def chat(n: int, wf_id: str = "chat") -> WorkflowSpec:
    """``n`` LLM calls in a row, then complete with the replies."""

    def make(i: int) -> Any:
        def node(run: RunState, ctx: Any) -> StepPlan:
            nxt = f"ask{i + 1}" if i + 1 < n else "done"
            return StepPlan(f"ask{i}", effect=Effect(EffectType.LLM_CALL, {"prompt": f"q{i}"}, result_key=f"r{i}"),
                            next_node=nxt)
        return node

    nodes: dict[str, Any] = {f"ask{i}": make(i) for i in range(n)}
    nodes["done"] = lambda run, ctx: StepPlan("done", complete_output={
        "replies": [run.vars[f"r{i}"]["content"] for i in range(n)]})
    return WorkflowSpec(wf_id, "ask0", nodes)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", durability="none")


def runtime(store: FileStore, llm: ScriptedLLM, **kwargs: Any) -> Runtime:
    return store.runtime(effect_handlers={EffectType.LLM_CALL: llm}, **kwargs)


def records(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    return rt.get_ledger(run_id)


def test_usage_is_on_each_llm_record_and_totalled_in_the_state(store: FileStore) -> None:
    llm = ScriptedLLM()
    rt, wf = runtime(store, llm), chat(3)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    outcomes = [r for r in records(rt, run_id) if r["kind"] == "effect" and r["status"] == "completed"]
    assert [r["ext"]["usage"]["input_tokens"] for r in outcomes] == [100, 100, 100]
    # The price table is recorded where it comes into force, not on every call.
    assert ["prices" in r["ext"] for r in outcomes] == [True, False, False]
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert totals["calls"] == 3 and totals["input_tokens"] == 300 and totals["output_tokens"] == 150
    assert totals["cost"] == pytest.approx(0.0021)
    assert verify_run(store, run_id).ok
    # A fresh runtime rebuilds the same totals from the ledger alone (the checkpoint is a cache).
    (store.root / "runs" / run_id / "run.json").unlink()
    assert totals_of(store.runtime().get_checkpoint(run_id).metadata) == totals


def test_a_changed_price_table_is_recorded_again(store: FileStore) -> None:
    llm = ScriptedLLM()
    wf = chat(3)
    rt = runtime(store, llm)
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id, max_steps=1)
    llm.prices = {"models": {"m": {"input_per_million": 3.0, "output_per_million": 10.0}}, "currency": "USD"}
    rt.tick(workflow=wf, run_id=run_id)
    outcomes = [r for r in records(rt, run_id) if r["kind"] == "effect" and r["status"] == "completed"]
    assert [r["ext"].get("prices", {}).get("models", {}).get("m", {}).get("input_per_million") for r in outcomes] \
        == [2.0, 3.0, None]


def test_a_call_that_crosses_the_budget_is_recorded_then_the_run_pauses(store: FileStore) -> None:
    llm = ScriptedLLM()
    rt, wf = runtime(store, llm), chat(4)
    run_id = rt.start(workflow=wf, budget={"tokens": 250})
    state = rt.tick(workflow=wf, run_id=run_id)
    # Calls 1 (150 tokens) and 2 (300: crosses 250) ran; the run paused right after the second.
    assert llm.calls == ["q0", "q1"]
    assert state.status is RunStatus.WAITING and state.waiting is not None
    wait = state.waiting
    assert wait.reason is WaitReason.BUDGET and wait.wait_id == "w3" and wait.resume_to_node == "ask2"
    assert wait.details is not None and wait.details["reached"] == ["tokens"]
    assert wait.details["spent"]["input_tokens"] == 200 and wait.details["before_call"] is False
    assert "tokens 300 of 250" in (wait.prompt or "")
    pause = records(rt, run_id)[-1]
    assert pause["kind"] == "pause" and pause["status"] == "waiting" and pause["result"]["pause"] == "budget"
    assert state.vars["r1"]["content"] == "answer to q1"  # the crossing call's result is kept

    # Too small a raise is refused before anything is written.
    before = (store.root / "runs" / run_id / "ledger.jsonl").read_bytes()
    with pytest.raises(InvalidInputError, match="still reached"):
        rt.resume(workflow=wf, run_id=run_id, wait_id="w3", payload={"raise": {"tokens": 50}})
    assert (store.root / "runs" / run_id / "ledger.jsonl").read_bytes() == before

    state = rt.resume(workflow=wf, run_id=run_id, wait_id="w3", payload={"raise": {"tokens": 1000}})
    assert state.status is RunStatus.COMPLETED, state.error
    assert llm.calls == ["q0", "q1", "q2", "q3"]  # nothing ran twice
    decision = next(r for r in records(rt, run_id) if r["kind"] == "resume")
    assert decision["result"]["decision"] == "raise" and decision["result"]["budget"] == {"tokens": 1250}
    assert rt.get_checkpoint(run_id).metadata["budget"] == {"tokens": 1250}
    # A retried answer to the same handle is refused, never applied to anything else.
    with pytest.raises(AlreadyAnsweredError):
        rt.resume(workflow=wf, run_id=run_id, wait_id="w3", payload={"raise": {"tokens": 1}})
    assert verify_run(store, run_id).ok


def test_a_call_is_not_started_once_the_budget_is_reached(store: FileStore) -> None:
    llm = ScriptedLLM()
    rt, wf = runtime(store, llm), chat(2)
    run_id = rt.start(workflow=wf, budget={"calls": 0})
    state = rt.tick(workflow=wf, run_id=run_id)
    assert llm.calls == [] and state.status is RunStatus.WAITING
    assert state.waiting is not None and state.waiting.details is not None
    assert state.waiting.details["before_call"] is True and state.waiting.wait_id == "w2"
    pending = rt.get_checkpoint(run_id).pending
    assert pending is not None and pending.effect_id == 1 and pending.attempt == 0
    # No intent was written for the call that did not start.
    assert not [r for r in records(rt, run_id) if r["kind"] == "effect"]

    # Another process raises it: the pending call is performed once, without re-entering its node.
    other = runtime(FileStore(store.root, durability="none"), llm)
    state = other.resume(workflow=wf, run_id=run_id, wait_id="w2", payload={"raise": {"calls": 1}})
    assert llm.calls == ["q0"]
    # The second call is not started either: effect 3, paused as w4.
    assert state.status is RunStatus.WAITING and state.waiting is not None and state.waiting.wait_id == "w4"
    intents = [r for r in records(rt, run_id) if r["kind"] == "effect" and r["status"] == "started"]
    assert [(r["effect_id"], r["attempt"]) for r in intents] == [(1, 1)]
    state = other.resume(workflow=wf, run_id=run_id, wait_id="w4", payload={"set": {"calls": 5}})
    assert state.status is RunStatus.COMPLETED and llm.calls == ["q0", "q1"]
    assert verify_run(store, run_id).ok


def test_stop_ends_the_run_and_is_recorded(store: FileStore) -> None:
    llm = ScriptedLLM()
    rt, wf = runtime(store, llm), chat(3)
    run_id = rt.start(workflow=wf, budget={"cost": 0.001})
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.details is not None and state.waiting.details["reached"] == ["cost"]
    state = rt.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, payload={"answer": "stop"})
    assert state.status is RunStatus.CANCELLED and "stopped at its budget" in (state.error or "")
    cancel = records(rt, run_id)[-1]
    assert cancel["kind"] == "cancel" and cancel["result"]["decision"] == "stop"
    assert llm.calls == ["q0", "q1"]
    assert verify_run(store, run_id).ok


@pytest.mark.parametrize("payload", [{"answer": "yes"}, {"raise": {"dollars": 5}}, {"raise": {"tokens": -1}},
                                     {"raise": "lots"}, None, {"answer": "stop", "raise": {"tokens": 1}}])
def test_unusable_answers_to_a_budget_wait_are_refused(store: FileStore, payload: Any) -> None:
    llm = ScriptedLLM()
    rt, wf = runtime(store, llm), chat(2)
    run_id = rt.start(workflow=wf, budget={"calls": 1})
    wait = rt.tick(workflow=wf, run_id=run_id).waiting
    assert wait is not None and wait.reason is WaitReason.BUDGET
    with pytest.raises(InvalidInputError):
        rt.resume(workflow=wf, run_id=run_id, wait_id=wait.wait_id, payload=payload)
    assert rt.get_state(run_id).status is RunStatus.WAITING


def test_bad_budgets_are_refused_at_start(store: FileStore) -> None:
    rt = runtime(store, ScriptedLLM())
    for bad in ({"tokens": -5}, {"tokens": 1.5}, {"euros": 3}, {"cost": float("nan")}, "100"):
        with pytest.raises(InvalidInputError):
            rt.start(workflow=chat(1), budget=bad)  # type: ignore[arg-type]


def test_a_workflow_may_declare_its_budget(store: FileStore) -> None:
    class Budgeted(WorkflowSpec):
        budget = {"calls": 1}

    base = chat(2)
    wf = Budgeted(base.workflow_id, base.entry_node, base.nodes)
    llm = ScriptedLLM()
    rt = runtime(store, llm)
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING and llm.calls == ["q0"]


def test_a_child_gets_what_remains_and_its_spend_counts_toward_its_parent(store: FileStore) -> None:
    llm = ScriptedLLM(prices=None)
    child = chat(3, wf_id="child")

    def start(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("start", effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "child"},
                                               result_key="sub"), next_node="after")

    def after(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("after", effect=Effect(EffectType.LLM_CALL, {"prompt": "parent"}, result_key="p"),
                        next_node="end")

    parent = WorkflowSpec("parent", "start", {"start": start, "after": after,
                                              "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True})})
    registry = WorkflowRegistry()
    registry.register(child)
    rt = runtime(store, llm, workflow_registry=registry)
    run_id = rt.start(workflow=parent, budget={"calls": 4})
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.status is RunStatus.COMPLETED, state.error
    assert llm.calls == ["q0", "q1", "q2", "parent"]
    sub_id = state.vars["sub"]["sub_run_id"]
    assert rt.get_checkpoint(sub_id).metadata["budget"] == {"calls": 4}
    parent_totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert parent_totals["calls"] == 4 and parent_totals["input_tokens"] == 400
    collected = next(r for r in records(rt, run_id) if "child_usage" in (r.get("ext") or {}))
    assert collected["ext"]["child_usage"]["run_id"] == sub_id and collected["ext"]["child_usage"]["calls"] == 3

    # With less left, the child pauses on its allotment before it can overspend the parent's.
    llm2 = ScriptedLLM(prices=None)
    rt2 = runtime(store, llm2, workflow_registry=registry)
    run2 = rt2.start(workflow=parent, budget={"calls": 2})
    state = rt2.tick(workflow=parent, run_id=run2)
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.SUBWORKFLOW
    assert state.waiting.details is not None and state.waiting.details["sub_waiting"]["reason"] == "budget"
    assert llm2.calls == ["q0", "q1"]


def test_an_unusable_usage_report_fails_the_attempt_without_retry(store: FileStore) -> None:
    def bad(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.completed({"content": "x"}, ext={"usage": {"input_tokens": -3}})

    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: bad})
    wf = chat(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "unusable ext" in (state.error or "")


def test_totals_are_settled_once_per_tick_and_recovered_after_a_crash(store: FileStore) -> None:
    class Crash(BaseException):
        """Stands for the process dying inside a handler (nothing after it runs)."""

    llm = ScriptedLLM(prices=None)

    def dies_on_the_third(run: RunState, effect: Effect) -> EffectOutcome:
        if len(llm.calls) == 2:
            raise Crash()
        return llm(run, effect)

    wf = chat(4)
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: dies_on_the_third})
    run_id = rt.start(workflow=wf, budget={"tokens": 400})
    with pytest.raises(Crash):
        rt.tick(workflow=wf, run_id=run_id)
    # Two calls are on the record; the tick never ended, so nothing settled them in the state.
    assert "usage" not in store.runtime().get_checkpoint(run_id).metadata
    # The next process counts them from the ledger: call 3 (450 tokens, over 400) pauses the run.
    fresh = runtime(FileStore(store.root, durability="none"), llm)
    state = fresh.tick(workflow=wf, run_id=run_id)
    assert llm.calls == ["q0", "q1", "q2"]
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.details is not None and state.waiting.details["spent"]["input_tokens"] == 300
    totals = totals_of(fresh.get_checkpoint(run_id).metadata)
    assert totals["calls"] == 3 and totals["through"] == fresh.get_ledger(run_id)[-1]["seq"]
    # One settlement per tick, not one per call: the pause record carried them.
    carriers = [r for r in fresh.get_ledger(run_id) if "metadata" in (r.get("stored", {}).get("delta") or {})]
    assert [r["kind"] for r in carriers] == ["start", "pause"]
    assert verify_run(store, run_id).ok


def test_what_a_handler_reports_is_redacted_on_the_record(store: FileStore) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz0123"

    def leaky(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.completed({"content": "ok"}, ext={"usage": {"model": f"m {secret}", "input_tokens": 1},
                                                               "note": {"api_key": "hunter2-hunter2"}})

    rt, wf = store.runtime(effect_handlers={EffectType.LLM_CALL: leaky}), chat(1)
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    text = (store.root / "runs" / run_id / "ledger.jsonl").read_text()
    assert secret not in text and "hunter2-hunter2" not in text and "[REDACTED]" in text


def test_a_crash_never_makes_the_totals_short_even_when_the_next_tick_calls_no_llm(store: FileStore) -> None:
    class Crash(BaseException):
        """Stands for the process dying inside a handler (nothing after it runs)."""

    llm = ScriptedLLM(prices=None)
    crash = [True]

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        if crash[0]:
            raise Crash()
        return EffectOutcome.completed({"tool": "ok"})

    def ask(i: int) -> Any:
        return lambda run, ctx: StepPlan(f"ask{i}", effect=Effect(EffectType.LLM_CALL, {"prompt": f"q{i}"}),
                                         next_node=f"ask{i + 1}" if i == 0 else "tool")

    wf = WorkflowSpec("tools", "ask0", {
        "ask0": ask(0), "ask1": ask(1),
        "tool": lambda run, ctx: StepPlan("tool", effect=Effect(EffectType.TOOL_CALLS, {"calls": []}),
                                          next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})
    handlers = {EffectType.LLM_CALL: llm, EffectType.TOOL_CALLS: tool}
    rt = store.runtime(effect_handlers=handlers)
    run_id = rt.start(workflow=wf)
    with pytest.raises(Crash):
        rt.tick(workflow=wf, run_id=run_id)
    assert llm.calls == ["q0", "q1"]
    # An operator stores a checkpoint first (no tick): it must carry what the crashed tick spent.
    fresh = FileStore(store.root, durability="none").runtime(effect_handlers=handlers)
    fresh.checkpoint(run_id)
    assert totals_of(fresh.get_checkpoint(run_id).metadata)["calls"] == 2
    crash[0] = False
    # The next tick performs the tool call again and completes, calling no LLM: the totals stay whole.
    again = FileStore(store.root, durability="none").runtime(effect_handlers=handlers)
    assert again.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    totals = totals_of(again.get_checkpoint(run_id).metadata)
    assert totals["calls"] == 2 and totals["input_tokens"] == 200
    assert totals_of(store.runtime().state_at(run_id, again.get_ledger(run_id)[-1]["seq"]).metadata)["calls"] == 2
    assert verify_run(store, run_id).ok


def test_a_crash_then_a_tick_without_llm_calls_keeps_the_totals(store: FileStore) -> None:
    class Crash(BaseException):
        """Stands for the process dying inside a handler (nothing after it runs)."""

    llm = ScriptedLLM(prices=None)
    crash = [True]

    def tool(run: RunState, effect: Effect) -> EffectOutcome:
        if crash[0]:
            raise Crash()
        return EffectOutcome.completed({"tool": "ok"})

    wf = WorkflowSpec("tools2", "ask", {
        "ask": lambda run, ctx: StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "q"}), next_node="tool"),
        "tool": lambda run, ctx: StepPlan("tool", effect=Effect(EffectType.TOOL_CALLS, {"calls": []}),
                                          next_node="done"),
        "done": lambda run, ctx: StepPlan("done", complete_output={"ok": True})})
    handlers = {EffectType.LLM_CALL: llm, EffectType.TOOL_CALLS: tool}
    run_id = store.runtime(effect_handlers=handlers).start(workflow=wf)
    with pytest.raises(Crash):
        store.runtime(effect_handlers=handlers).tick(workflow=wf, run_id=run_id)
    crash[0] = False
    again = FileStore(store.root, durability="none").runtime(effect_handlers=handlers)
    assert again.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    assert totals_of(again.get_checkpoint(run_id).metadata)["calls"] == 1
    assert llm.calls == ["q"]


def test_an_async_childs_spend_counts_toward_its_parents_budget_once(store: FileStore) -> None:
    llm = ScriptedLLM(prices=None)

    def child_ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "child"}), next_node="hold")

    def child_hold(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("hold", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": f"go:{run.run_id}"}),
                        next_node="end")

    child = WorkflowSpec("bg", "ask", {"ask": child_ask, "hold": child_hold,
                                       "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True})})

    def spawn(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("spawn", effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "bg", "async": True},
                                               result_key="sub"), next_node="hold")

    def hold(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("hold", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "parent-go"}), next_node="ask0")

    def ask(i: int) -> Any:
        return lambda run, ctx: StepPlan(f"ask{i}", effect=Effect(EffectType.LLM_CALL, {"prompt": f"p{i}"}),
                                         next_node=f"ask{i + 1}" if i < 2 else "end")

    parent = WorkflowSpec("spawner", "spawn", {
        "spawn": spawn, "hold": hold, "ask0": ask(0), "ask1": ask(1), "ask2": ask(2),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True})})
    registry = WorkflowRegistry()
    registry.register(child)
    rt = runtime(store, llm, workflow_registry=registry)
    run_id = rt.start(workflow=parent, budget={"calls": 3})
    state = rt.tick(workflow=parent, run_id=run_id)
    sub_id = state.vars["sub"]["sub_run_id"]
    assert rt.get_checkpoint(run_id).metadata["budget_children"] == [sub_id]
    # The child runs on its own and spends one call, then waits.
    assert rt.tick(workflow=child, run_id=sub_id).status is RunStatus.WAITING and llm.calls == ["child"]
    state = rt.resume(workflow=parent, run_id=run_id, wait_key="parent-go", payload={})
    # The parent's own 2 calls and the running child's 1 reach 3: its third call is not started.
    assert llm.calls == ["child", "p0", "p1"]
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.BUDGET and state.waiting.details is not None
    assert state.waiting.details["spent"]["calls"] == 3 and state.waiting.details["before_call"] is True
    assert totals_of(rt.get_checkpoint(run_id).metadata)["calls"] == 2  # the child's spend is still its own
    # A raise that the running child's spend still reaches is refused.
    with pytest.raises(InvalidInputError, match="still reached"):
        rt.resume(workflow=parent, run_id=run_id, wait_id=state.waiting.wait_id, payload={"set": {"calls": 3}})
    # The child ends; the parent, raised, collects its totals once and finishes.
    assert rt.resume(workflow=child, run_id=sub_id, wait_key=f"go:{sub_id}", payload={}).status \
        is RunStatus.COMPLETED
    state = rt.resume(workflow=parent, run_id=run_id, wait_id=state.waiting.wait_id, payload={"raise": {"calls": 1}})
    assert state.status is RunStatus.COMPLETED, state.error
    assert llm.calls == ["child", "p0", "p1", "p2"]
    checkpoint = rt.get_checkpoint(run_id)
    assert totals_of(checkpoint.metadata)["calls"] == 4 and checkpoint.metadata["budget_children"] == []
    collected = [r for r in records(rt, run_id) if "child_usage" in (r.get("ext") or {})]
    assert len(collected) == 1 and collected[0]["kind"] == "metadata"
    assert collected[0]["ext"]["child_usage"]["run_id"] == sub_id and collected[0]["ext"]["child_usage"]["calls"] == 1
    assert verify_run(store, run_id).ok


def test_a_child_raised_past_its_parents_budget_pauses_the_parent_when_collected(store: FileStore) -> None:
    llm = ScriptedLLM(prices=None)
    child = chat(3, wf_id="child3")

    def start(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("start", effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "child3"},
                                               result_key="sub"), next_node="after")

    def after(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("after", effect=Effect(EffectType.LLM_CALL, {"prompt": "parent"}), next_node="end")

    parent = WorkflowSpec("parent3", "start", {"start": start, "after": after,
                                               "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True})})
    registry = WorkflowRegistry()
    registry.register(child)
    rt = runtime(store, llm, workflow_registry=registry)
    run_id = rt.start(workflow=parent, budget={"calls": 2})
    state = rt.tick(workflow=parent, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None
    sub_id = state.waiting.details["sub_run_id"] if state.waiting.details else None
    assert isinstance(sub_id, str) and llm.calls == ["q0", "q1"]
    # The child's budget is its own: the operator raises it and the child finishes.
    child_wait = rt.get_state(sub_id).waiting
    assert child_wait is not None and child_wait.reason is WaitReason.BUDGET
    done = rt.resume(workflow=child, run_id=sub_id, wait_id=child_wait.wait_id, payload={"raise": {"calls": 1}})
    assert done.status is RunStatus.COMPLETED and llm.calls == ["q0", "q1", "q2"]
    # The parent collects the child's 3 calls (over its 2) and pauses before its own call.
    state = rt.resume(workflow=parent, run_id=run_id, wait_key=state.waiting.wait_key,
                      payload={"sub_run_id": sub_id, "output": done.output})
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.BUDGET and state.waiting.details is not None
    assert state.waiting.details["spent"]["calls"] == 3 and llm.calls == ["q0", "q1", "q2"]
    state = rt.resume(workflow=parent, run_id=run_id, wait_id=state.waiting.wait_id, payload={"raise": {"calls": 5}})
    assert state.status is RunStatus.COMPLETED and llm.calls == ["q0", "q1", "q2", "parent"]
    assert totals_of(rt.get_checkpoint(run_id).metadata)["calls"] == 4
    assert len([r for r in records(rt, run_id) if "child_usage" in (r.get("ext") or {})]) == 1


def test_a_retry_is_not_started_once_the_budget_is_reached(store: FileStore) -> None:
    tries: list[int] = []

    def spends_then_fails(run: RunState, effect: Effect) -> EffectOutcome:
        tries.append(len(tries) + 1)
        if len(tries) < 3:  # the reply was paid for, but could not be used
            return EffectOutcome.failed("unparseable reply", ext={"usage": {"input_tokens": 100, "output_tokens": 50}})
        return EffectOutcome.completed({"content": "ok"}, ext={"usage": {"input_tokens": 100, "output_tokens": 50}})

    policy = DefaultEffectPolicy(default_max_attempts=3, default_backoff_base=0.0)
    rt = store.runtime(effect_handlers={EffectType.LLM_CALL: spends_then_fails}, effect_policy=policy)
    wf = chat(1)
    run_id = rt.start(workflow=wf, budget={"tokens": 150})
    state = rt.tick(workflow=wf, run_id=run_id)
    # The first attempt spent the whole budget: its retry is not started, the run pauses.
    assert tries == [1] and state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.BUDGET and state.waiting.details is not None
    assert state.waiting.details["before_call"] is True
    pending = rt.get_checkpoint(run_id).pending
    assert pending is not None and pending.attempt == 1 and pending.failed == 1
    state = rt.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, payload={"raise": {"tokens": 1000}})
    assert state.status is RunStatus.COMPLETED, state.error
    assert tries == [1, 2, 3]
    attempts = [(r["attempt"], r["status"]) for r in records(rt, run_id) if r["kind"] == "effect"]
    assert attempts == [(1, "started"), (1, "failed"), (2, "started"), (2, "failed"), (3, "started"), (3, "completed")]
    assert totals_of(rt.get_checkpoint(run_id).metadata)["input_tokens"] == 300


@pytest.fixture(params=["file", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """``reopen()`` → the same store opened again, as another process would (files or PostgreSQL)."""
    if request.param == "file":
        yield lambda: FileStore(tmp_path / "store", durability="none")
        return
    import uuid

    from abstractruntime.storage.postgres.store import PostgresStore

    url, schema, opened = request.getfixturevalue("postgres_url"), f"t_{uuid.uuid4().hex[:12]}", []

    def open_() -> Any:
        opened.append(PostgresStore(url, schema=schema))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def test_budgets_and_totals_hold_on_every_store(reopen: Any) -> None:
    class Crash(BaseException):
        """Stands for the process dying inside a handler (nothing after it runs)."""

    llm = ScriptedLLM(prices=None)
    crash = [True]

    def dies_on_the_second(run: RunState, effect: Effect) -> EffectOutcome:
        if len(llm.calls) == 1 and crash[0]:
            crash[0] = False
            raise Crash()
        return llm(run, effect)

    wf = chat(4)
    rt = reopen().runtime(effect_handlers={EffectType.LLM_CALL: dies_on_the_second})
    run_id = rt.start(workflow=wf, budget={"calls": 2})
    with pytest.raises(Crash):
        rt.tick(workflow=wf, run_id=run_id)
    # Another process: the call the crash interrupted is performed again, and the run pauses at 2.
    state = reopen().runtime(effect_handlers={EffectType.LLM_CALL: dies_on_the_second}).tick(workflow=wf, run_id=run_id)
    assert llm.calls == ["q0", "q1"] and state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.BUDGET and state.waiting.details is not None
    assert state.waiting.details["spent"]["calls"] == 2
    third = reopen().runtime(effect_handlers={EffectType.LLM_CALL: llm})
    with pytest.raises(WaitKeyMismatchError):  # w1 was a call, never a wait: nothing to answer there
        third.resume(workflow=wf, run_id=run_id, wait_id="w1", payload={"raise": {"calls": 2}})
    state = third.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, payload={"raise": {"calls": 2}})
    assert state.status is RunStatus.COMPLETED and llm.calls == ["q0", "q1", "q2", "q3"]
    fourth = reopen().runtime()
    assert totals_of(fourth.get_checkpoint(run_id).metadata)["calls"] == 4
    assert [r["kind"] for r in fourth.get_ledger(run_id)].count("pause") == 1
