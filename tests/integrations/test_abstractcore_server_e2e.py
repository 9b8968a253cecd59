"""End to end: Runtime → real `python -m abstractcore.server` → loopback OpenAI-compatible fixture.

The AbstractCore server routes ``model="openai-compatible/<name>"`` to the URL in the
request's top-level ``base_url`` (loopback URLs are allowed by default), so the remote
client's ``params.base_url`` reaches the fixture through a real server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from abstractruntime.core.models import RunStatus
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.integrations.abstractcore import create_hybrid_runtime, create_remote_runtime
from integration_support import (
    TOOL_RUNS,
    AbstractCoreServer,
    add,
    requires_abstractcore,
    single_llm_call_workflow,
    tool_round_trip_workflow,
)
from openai_fixture import OpenAIFixture, chat_completion

pytestmark = [pytest.mark.abstractcore, requires_abstractcore]

MODEL = "openai-compatible/fixture-model"


def test_tool_round_trip_through_a_real_abstractcore_server(
    tmp_path: Path, abstractcore_server: AbstractCoreServer, openai_server: OpenAIFixture
) -> None:
    # content "" rather than null next to tool_calls: AbstractCore 2.30's server fails on a null content
    openai_server.script(
        chat_completion(content="", tool_calls=[{"id": "call_s", "name": "add", "arguments": {"a": 7, "b": 8}}]),
        chat_completion(content="7 + 8 = 15"),
    )
    TOOL_RUNS.clear()
    wf = tool_round_trip_workflow(params={"base_url": openai_server.v1_url, "temperature": 0})
    runtime = create_hybrid_runtime(server_base_url=abstractcore_server.base_url, model=MODEL, tools=[add],
                                    api_key=abstractcore_server.token, store_dir=tmp_path, timeout_s=30)
    run_id = runtime.start(workflow=wf, vars={"question": "What is 7 + 8?"})
    state = runtime.tick(workflow=wf, run_id=run_id)

    assert state.status == RunStatus.COMPLETED, state.error
    assert state.output == {"answer": "7 + 8 = 15", "tools_used": True}
    assert TOOL_RUNS == [(7, 8)]
    assert state.vars["llm"]["tool_calls"] == [{"name": "add", "arguments": {"a": 7, "b": 8}, "call_id": "call_s"}]
    # the server forwarded both turns to the fixture, tool result included
    upstream = openai_server.chat_requests()
    assert len(upstream) == 2
    assert upstream[0].body["model"] == "fixture-model"
    tool_turn = upstream[1].body["messages"][-1]
    assert (tool_turn["role"], tool_turn["tool_call_id"], tool_turn["content"]) == ("tool", "call_s", "15")


def test_pass_through_via_a_real_server_waits_with_the_calls(
    tmp_path: Path, abstractcore_server: AbstractCoreServer, openai_server: OpenAIFixture
) -> None:
    openai_server.script(
        chat_completion(content="", tool_calls=[{"id": "call_p", "name": "add", "arguments": {"a": 1, "b": 1}}]))
    wf = tool_round_trip_workflow(params={"base_url": openai_server.v1_url})
    runtime = create_remote_runtime(server_base_url=abstractcore_server.base_url, model=MODEL,
                                    api_key=abstractcore_server.token, store_dir=tmp_path, timeout_s=30)
    run_id = runtime.start(workflow=wf, vars={"question": "1 + 1?"})
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.WAITING and state.waiting is not None
    assert state.waiting.details is not None
    assert state.waiting.details["tool_calls"] == [{"name": "add", "arguments": {"a": 1, "b": 1},
                                                    "call_id": "call_p"}]


def test_a_wrong_server_token_fails_without_retry(
    tmp_path: Path, abstractcore_server: AbstractCoreServer, openai_server: OpenAIFixture
) -> None:
    runtime = create_remote_runtime(
        server_base_url=abstractcore_server.base_url, model=MODEL, api_key="wrong-token-abcdef", store_dir=tmp_path,
        effect_policy=DefaultEffectPolicy(default_backoff_base=0.0, effect_max_attempts={"llm_call": 3}),
    )
    wf = single_llm_call_workflow({"prompt": "hi", "params": {"base_url": openai_server.v1_url}})
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "HTTP 401" in state.error and "after 1 attempt" in state.error
    assert "wrong-token-abcdef" not in state.error
    assert openai_server.chat_requests() == []
