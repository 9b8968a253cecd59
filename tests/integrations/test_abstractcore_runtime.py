"""Remote and hybrid modes driven by the Runtime over file stores, against a real loopback server."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.models import Effect, EffectType, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.integrations.abstractcore import (
    LocalToolExecutor,
    approve_tool_calls,
    build_effect_handlers,
    create_hybrid_runtime,
    create_remote_runtime,
    deny_tool_calls,
)
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from integration_support import TOOL_RUNS, add, single_llm_call_workflow, tool_round_trip_workflow
from openai_fixture import OpenAIFixture, Reply, chat_completion, free_port

FAST_RETRIES = DefaultEffectPolicy(default_backoff_base=0.0, effect_max_attempts={"llm_call": 3})
SECRET = "sk-live-do-not-record-0123456789"


def effect_records(runtime: Runtime, run_id: str) -> list[dict[str, Any]]:
    return [r for r in runtime.get_ledger(run_id) if r["effect"] is not None]


def script_round_trip(server: OpenAIFixture) -> None:
    server.script(
        chat_completion(content="", tool_calls=[{"id": "call_add", "name": "add", "arguments": {"a": 2, "b": 3}}]),
        chat_completion(content="2 + 3 = 5"),
    )


def test_hybrid_tool_round_trip_with_file_stores(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    script_round_trip(openai_server)
    TOOL_RUNS.clear()
    wf = tool_round_trip_workflow()
    runtime = create_hybrid_runtime(server_base_url=openai_server.base_url, model="m", tools=[add],
                                    store_dir=tmp_path)
    run_id = runtime.start(workflow=wf, vars={"question": "What is 2 + 3?"})
    state = runtime.tick(workflow=wf, run_id=run_id)

    assert state.status == RunStatus.COMPLETED, state.error
    assert state.output == {"answer": "2 + 3 = 5", "tools_used": True}
    assert TOOL_RUNS == [(2, 3)]
    assert state.vars["tool_results"]["results"][0] == {
        "call_id": "call_add", "name": "add", "success": True, "output": 5, "error": None}

    # the result went back to the model, matched to its call id
    first, second = openai_server.chat_requests()
    assert first.body["tools"][0]["function"]["name"] == "add"
    assert second.body["messages"][-1] == {"role": "tool", "tool_call_id": "call_add", "content": "5", "name": "add"}
    assert second.body["messages"][-2]["tool_calls"][0]["id"] == "call_add"

    # every effect is in the ledger on disk, in order, and another runtime sees the finished run
    effects = [(r["node_id"], r["effect"]["type"], r["status"]) for r in effect_records(runtime, run_id)]
    assert [e for e in effects if e[2] != "started"] == [
        ("ask", "llm_call", "completed"), ("tools", "tool_calls", "completed"), ("answer", "llm_call", "completed")]
    assert (tmp_path / "runs" / run_id / "ledger.jsonl").is_file()
    reopened = create_hybrid_runtime(server_base_url=openai_server.base_url, model="m", tools=[add],
                                     store_dir=tmp_path)
    assert reopened.get_state(run_id).output == state.output


def test_remote_pass_through_waits_then_approval_resumes(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    script_round_trip(openai_server)
    TOOL_RUNS.clear()
    wf = tool_round_trip_workflow()
    runtime = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    run_id = runtime.start(workflow=wf, vars={"question": "What is 2 + 3?"})
    state = runtime.tick(workflow=wf, run_id=run_id)

    assert state.status == RunStatus.WAITING
    waiting = state.waiting
    assert waiting is not None and waiting.reason == WaitReason.EVENT
    assert (waiting.resume_to_node, waiting.result_key) == ("answer", "tool_results")
    expected_calls = [{"name": "add", "arguments": {"a": 2, "b": 3}, "call_id": "call_add"}]
    assert waiting.details is not None and waiting.details["tool_calls"] == expected_calls
    digest = hashlib.sha256(json.dumps(expected_calls, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert waiting.details["calls_sha256"] == digest
    assert waiting.wait_key == f"tools:{run_id}:{digest[:16]}"
    assert TOOL_RUNS == []  # nothing ran without approval

    # later, in another process: a host approves, runs the calls and resumes
    host = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    parked = host.get_state(run_id)
    payload = approve_tool_calls(parked.waiting, LocalToolExecutor([add]))
    final = host.resume(workflow=wf, run_id=run_id, wait_key=parked.waiting.wait_key, payload=payload)

    assert final.status == RunStatus.COMPLETED, final.error
    assert final.output == {"answer": "2 + 3 = 5", "tools_used": True}
    assert TOOL_RUNS == [(2, 3)]
    assert openai_server.chat_requests()[1].body["messages"][-1]["content"] == "5"


def test_denied_tool_calls_reach_the_model_as_errors(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    script_round_trip(openai_server)
    wf = tool_round_trip_workflow()
    runtime = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    run_id = runtime.start(workflow=wf, vars={"question": "What is 2 + 3?"})
    waiting = runtime.tick(workflow=wf, run_id=run_id).waiting
    assert waiting is not None
    final = runtime.resume(workflow=wf, run_id=run_id, wait_key=waiting.wait_key,
                           payload=deny_tool_calls(waiting, reason="no arithmetic today"))
    assert final.status == RunStatus.COMPLETED
    assert openai_server.chat_requests()[1].body["messages"][-1]["content"] == \
        "Error: Tool call refused: no arithmetic today"


def test_unknown_tool_in_hybrid_mode_is_a_failed_result_not_a_failed_run(
    tmp_path: Path, openai_server: OpenAIFixture
) -> None:
    openai_server.script(
        chat_completion(content="", tool_calls=[{"id": "c1", "name": "delete_everything", "arguments": {}}]),
        chat_completion(content="I cannot do that."),
    )
    wf = tool_round_trip_workflow()
    runtime = create_hybrid_runtime(server_base_url=openai_server.base_url, model="m",
                                    tools=LocalToolExecutor([add]), store_dir=tmp_path)
    run_id = runtime.start(workflow=wf, vars={"question": "clean up"})
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.COMPLETED
    (result,) = state.vars["tool_results"]["results"]
    assert result["success"] is False and "delete_everything" in result["error"]


# ----------------------------------------------------------------------------- failures through the runtime
def remote_runtime(server_base_url: str, tmp_path: Path, **kwargs: Any) -> Runtime:
    kwargs.setdefault("effect_policy", FAST_RETRIES)
    return create_remote_runtime(server_base_url=server_base_url, model="m", store_dir=tmp_path, **kwargs)


def run_once(runtime: Runtime, wf: WorkflowSpec) -> tuple[str, Any]:
    run_id = runtime.start(workflow=wf, vars={})
    return run_id, runtime.tick(workflow=wf, run_id=run_id)


def test_5xx_is_retried_by_the_effect_policy(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(status=503, body={"error": {"message": "warming up"}}), chat_completion(content="ok"))
    wf = single_llm_call_workflow({"prompt": "hi"})
    runtime = remote_runtime(openai_server.base_url, tmp_path)
    run_id, state = run_once(runtime, wf)
    assert state.status == RunStatus.COMPLETED and state.output == {"content": "ok"}
    attempts = [(r["attempt"], r["status"]) for r in effect_records(runtime, run_id) if r["status"] != "started"]
    assert attempts == [(1, "failed"), (2, "completed")]
    assert "HTTP 503" in effect_records(runtime, run_id)[1]["error"]
    assert len(openai_server.chat_requests()) == 2


def test_4xx_fails_at_once_and_says_so(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(status=400, body={"error": {"message": "unknown model 'm'"}}),
                         chat_completion(content="never sent"))
    runtime = remote_runtime(openai_server.base_url, tmp_path)
    run_id, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert state.status == RunStatus.FAILED
    assert state.error is not None
    assert "after 1 attempt" in state.error and "HTTP 400" in state.error and "not retried" in state.error
    assert len(openai_server.chat_requests()) == 1  # 3 attempts allowed, 1 used
    failed = [r for r in effect_records(runtime, run_id) if r["status"] == "failed"]
    assert len(failed) == 1 and "unknown model" in failed[0]["error"]


def test_timeouts_are_retried_then_fail_the_run(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(body=chat_completion(content="late"), delay_s=1.0),
                         Reply(body=chat_completion(content="late"), delay_s=1.0))
    runtime = remote_runtime(openai_server.base_url, tmp_path, timeout_s=0.2,
                             effect_policy=DefaultEffectPolicy(default_backoff_base=0.0,
                                                               effect_max_attempts={"llm_call": 2}))
    started = time.monotonic()
    run_id, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert time.monotonic() - started < 2.0
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "after 2 attempts" in state.error and "timed out after 0.2s" in state.error


def test_connection_refused_fails_the_run_after_retries(tmp_path: Path) -> None:
    runtime = remote_runtime(f"http://127.0.0.1:{free_port()}", tmp_path)
    run_id, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "after 3 attempts" in state.error and "could not connect" in state.error
    assert len([r for r in effect_records(runtime, run_id) if r["status"] == "failed"]) == 3


def test_malformed_json_fails_without_retry(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(body="this is not json"))
    runtime = remote_runtime(openai_server.base_url, tmp_path)
    _, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "after 1 attempt" in state.error and "not JSON" in state.error


def test_invalid_payload_fails_without_retry(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    runtime = remote_runtime(openai_server.base_url, tmp_path)
    _, state = run_once(runtime, single_llm_call_workflow({"system_prompt": "no prompt, no messages"}))
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "after 1 attempt" in state.error and "payload.prompt" in state.error
    assert openai_server.chat_requests() == []


def test_secrets_never_reach_the_ledger_or_the_run(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    echo = f"upstream rejected Authorization: Bearer {SECRET} / X-AbstractCore-Provider-API-Key={SECRET}"
    openai_server.script(Reply(status=502, body={"error": {"message": echo}}), chat_completion(content="fine"))
    runtime = remote_runtime(openai_server.base_url, tmp_path, api_key=SECRET, provider_api_key=SECRET)
    run_id, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi", "params": {"api_key": SECRET}}))
    assert state.status == RunStatus.COMPLETED
    assert openai_server.chat_requests()[0].headers["authorization"] == f"Bearer {SECRET}"  # it was sent...
    stored = "".join(p.read_text() for p in (tmp_path / "runs" / run_id).iterdir() if p.is_file())
    assert SECRET not in stored  # ...but never written
    assert "[REDACTED]" in stored


def test_default_policy_retries_llm_calls_with_backoff(
    tmp_path: Path, openai_server: OpenAIFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)  # the runtime looks time.sleep up at call time
    openai_server.script(*[Reply(status=500, body={"error": {"message": "down"}})] * 3)
    runtime = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    _, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert state.status == RunStatus.FAILED and state.error is not None and "after 3 attempts" in state.error
    assert sleeps == [1.0, 2.0]


def test_in_memory_stores_when_given(openai_server: OpenAIFixture, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    openai_server.script(chat_completion(content="ok"))
    runtime = create_remote_runtime(server_base_url=openai_server.base_url, model="m",
                                    run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    _, state = run_once(runtime, single_llm_call_workflow({"prompt": "hi"}))
    assert state.status == RunStatus.COMPLETED
    assert list(tmp_path.iterdir()) == []  # nothing written to disk


# ----------------------------------------------------------------------------- duck-typed clients (0.0.1 contract)
def test_build_effect_handlers_accepts_duck_typed_clients() -> None:
    class EchoLLM:
        def generate(self, **kwargs: Any) -> dict[str, Any]:
            return {"content": f"echo: {kwargs['prompt']}", "seen_params": kwargs["params"]}

    class HandBack:
        def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
            return {"mode": "delegated", "tool_calls": tool_calls}

    def ask(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="ask", effect=Effect(type=EffectType.LLM_CALL, result_key="llm",
                                                     payload={"prompt": "ping", "params": {"temperature": 0}}),
                        next_node="tools")

    def tools(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="tools", effect=Effect(type=EffectType.TOOL_CALLS, result_key="tr",
                                                       payload={"tool_calls": [{"name": "t", "arguments": {}}]}),
                        next_node="end")

    def end(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="end", complete_output={"llm": run.vars["llm"], "tr": run.vars["tr"]})

    wf = WorkflowSpec(workflow_id="duck", entry_node="ask", nodes={"ask": ask, "tools": tools, "end": end})
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(),
                      effect_handlers=build_effect_handlers(llm=EchoLLM(), tools=HandBack()))
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.vars["llm"] == {"content": "echo: ping", "seen_params": {"temperature": 0}}
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.details is not None and state.waiting.details["mode"] == "delegated"
    assert state.waiting.details["tool_calls"][0]["name"] == "t"
    assert state.waiting.resume_to_node == "end"
    done = runtime.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key,
                          payload={"mode": "executed", "results": []})
    assert done.status == RunStatus.COMPLETED and done.output is not None
    assert done.output["tr"] == {"mode": "executed", "results": []}
