"""Runtime conformance: the runtime works unchanged over a store pair.

Start, wait, resume, effects, stale and duplicate resumes, and the ledger it leaves, over
whatever stores the backend holds; a custom store that implements only
``save``/``load``/``append``/``list`` passes too (the port defaults are enough).
"""

from __future__ import annotations

from typing import Any

import pytest

from ..core.errors import RunNotWaitingError, WaitKeyMismatchError
from ..core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from ..core.runtime import EffectOutcome
from ..core.spec import WorkflowSpec
from ..storage.ledger_chain import verify_ledger_chain
from .backend import StoreBackend


def _workflow() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="ask", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "Name?"},
                                                     result_key="answer"), next_node="work")

    def work(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="work", effect=Effect(type=EffectType.LLM_CALL,
                                                      payload={"prompt": f"hi {run.vars['answer']['name']}"},
                                                      result_key="llm"), next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"text": run.vars["llm"]["text"]})

    return WorkflowSpec("conf", "ask", {"ask": ask, "work": work, "done": done})


class RuntimeConformance:
    """Subclass it in a test module and define a ``backend`` fixture that returns a fresh :class:`StoreBackend`."""

    def test_runtime_end_to_end(self, backend: StoreBackend) -> None:
        calls: list[str] = []

        def llm(run: RunState, effect: Effect) -> EffectOutcome:
            calls.append(effect.payload["prompt"])
            return EffectOutcome.completed({"text": effect.payload["prompt"].upper()})

        wf = _workflow()
        rt = backend.runtime(effect_handlers={EffectType.LLM_CALL: llm})
        run_id = rt.start(workflow=wf, vars={"x": 1})
        state = rt.tick(workflow=wf, run_id=run_id)
        assert state.status is RunStatus.WAITING and state.waiting.reason is WaitReason.USER
        key = state.waiting.wait_key
        assert key

        with pytest.raises(WaitKeyMismatchError):
            rt.resume(workflow=wf, run_id=run_id, wait_key="wrong", payload={"name": "x"})
        state = rt.resume(workflow=wf, run_id=run_id, wait_key=key, payload={"name": "ada"})
        assert state.status is RunStatus.COMPLETED and state.output == {"text": "HI ADA"}
        assert rt.get_state(run_id).output == {"text": "HI ADA"}
        with pytest.raises(RunNotWaitingError):
            rt.resume(workflow=wf, run_id=run_id, wait_key=key, payload={"name": "again"})

        ledger = rt.get_ledger(run_id)
        effect_records = [r for r in ledger if r["effect"] is not None]
        assert [r["status"] for r in effect_records] == ["started", "waiting", "started", "completed"]
        assert all(len(r["idempotency_key"]) == 32 for r in effect_records)
        if backend.chained and backend.name != "chained-upstream-style":
            assert verify_ledger_chain(ledger)["ok"] is True
        if backend.checkpoints:
            checkpoint = rt.get_checkpoint(run_id)
            assert checkpoint.ledger.seq == len(ledger)
            assert checkpoint.ledger.head_hash == ledger[-1].get("record_hash")

        # Reset to the effect node (as upstream users do): the completed effect is reused.
        run = backend.runs.load(run_id)
        run.status, run.current_node, run.output = RunStatus.RUNNING, "work", None
        backend.runs.save(run)
        state = rt.tick(workflow=wf, run_id=run_id)
        assert state.status is RunStatus.COMPLETED and state.output == {"text": "HI ADA"}
        assert calls == ["hi ada"]

    def test_cancel_over_every_backend(self, backend: StoreBackend) -> None:
        wf = _workflow()
        rt = backend.runtime()
        run_id = rt.start(workflow=wf)
        rt.tick(workflow=wf, run_id=run_id)
        state = rt.cancel_run(run_id, reason="stop")
        assert state.status is RunStatus.CANCELLED and state.error == "stop" and state.waiting is None
        assert rt.get_state(run_id).status is RunStatus.CANCELLED
        assert rt.get_ledger(run_id)[-1]["kind"] == "cancel"
