"""Size limits and redaction of what reaches the ledger."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from abstractruntime.core.canonical import MAX_RECORD_BYTES
from abstractruntime.core.errors import PayloadTooLargeError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan
from abstractruntime.core.runtime import EffectOutcome
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain

from runtime_support import effect_then_done, ask, two_questions

if TYPE_CHECKING:
    from conftest import Backend


# -- size limit ----------------------------------------------------------------------------


def test_oversized_resume_payload_is_refused_and_writes_nothing(rt_backend: "Backend") -> None:
    wf = ask({"prompt": "Upload?", "wait_key": "k"})
    rt = rt_backend.runtime()
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    before = rt_backend.fingerprint(run_id)
    with pytest.raises(PayloadTooLargeError) as info:
        rt.resume(workflow=wf, run_id=run_id, wait_key="k", payload={"blob": "x" * MAX_RECORD_BYTES})
    assert isinstance(info.value, ValueError) and "artifact" in str(info.value)
    assert info.value.code == "payload_too_large"
    assert rt_backend.fingerprint(run_id) == before
    assert rt.get_state(run_id).status is RunStatus.WAITING


def test_oversized_start_vars_create_no_run(rt_backend: "Backend") -> None:
    wf = two_questions()
    rt = rt_backend.runtime()
    with pytest.raises(PayloadTooLargeError):
        rt.start(workflow=wf, vars={"blob": "x" * MAX_RECORD_BYTES}, run_id="big")
    assert rt_backend.runs.load("big") is None and rt_backend.ledger.list("big") == []


def test_oversized_effect_record_fails_the_run_once(rt_backend: "Backend") -> None:
    half = "y" * (MAX_RECORD_BYTES // 2 + 1024)
    calls = []

    def echo(run: RunState, effect: Effect) -> EffectOutcome:
        calls.append(1)
        return EffectOutcome.completed({"echo": effect.payload["data"], "again": effect.payload["data"] + "z"})

    wf = effect_then_done(Effect(type=EffectType.LLM_CALL, payload={"data": half}, result_key="r"))
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: echo})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "limit" in state.error
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.FAILED
    assert calls == [1]


def test_an_outcome_does_not_repeat_its_intent_so_half_the_limit_each_fits(rt_backend: "Backend") -> None:
    # A payload and a result of just over half the limit each: the outcome's record names its
    # intent instead of repeating the payload, so no record goes over the limit.
    half = "y" * (MAX_RECORD_BYTES // 2 + 1024)

    def echo(run: RunState, effect: Effect) -> EffectOutcome:
        return EffectOutcome.completed({"echo": effect.payload["data"][::-1]})

    wf = effect_then_done(Effect(type=EffectType.LLM_CALL, payload={"data": half}, result_key="r"))
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: echo})
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED


# -- redaction -----------------------------------------------------------------------------


def test_secrets_are_redacted_from_the_ledger(rt_backend: "Backend") -> None:
    seen: list[dict[str, Any]] = []

    def llm(run: RunState, effect: Effect) -> EffectOutcome:
        seen.append(effect.payload)
        return EffectOutcome.completed({"text": "ok", "access_token": "SECRET-RESULT-3"})

    def call(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="call", effect=Effect(type=EffectType.LLM_CALL, result_key="llm", payload={
            "prompt": "hello", "api_key": "SECRET-KEY-1",
            "headers": {"Authorization": "Bearer SECRET-HEADER-2", "Accept": "text/plain"}}), next_node="wait")

    def wait(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="wait", effect=Effect(type=EffectType.WAIT_EVENT, payload={"wait_key": "login"},
                                                      result_key="login"), next_node="end")

    wf = WorkflowSpec("wf", "call", {"call": call, "wait": wait,
                                     "end": lambda run, ctx: StepPlan(node_id="end", complete_output={"ok": True})})
    rt = rt_backend.runtime(effect_handlers={EffectType.LLM_CALL: llm})
    run_id = rt.start(workflow=wf, vars={"user": "ada", "password": "SECRET-VAR-4"})
    rt.tick(workflow=wf, run_id=run_id)
    rt.resume(workflow=wf, run_id=run_id, wait_key="login", payload={"user": "ada", "client_secret": "SECRET-5"})

    # The handler got the real values; the ledger never holds them.
    assert seen[0]["api_key"] == "SECRET-KEY-1"
    assert seen[0]["headers"]["Authorization"] == "Bearer SECRET-HEADER-2"
    ledger = rt.get_ledger(run_id)
    text = json.dumps(ledger)
    assert "SECRET" not in text
    if rt_backend.files:
        assert b"SECRET" not in (rt_backend.root / "runs" / run_id / "ledger.jsonl").read_bytes()
    effect = next(r for r in ledger if r["effect"] and r["effect"]["type"] == "llm_call")["effect"]
    assert effect["payload"]["api_key"] == "[REDACTED]" and effect["payload"]["prompt"] == "hello"
    assert effect["payload"]["headers"] == {"Authorization": "[REDACTED]", "Accept": "text/plain"}
    completed = next(r for r in ledger if r["status"] == "completed" and r["effect"])
    assert completed["result"] == {"text": "ok", "access_token": "[REDACTED]"}
    assert verify_ledger_chain(ledger)["ok"] is rt_backend.chained
