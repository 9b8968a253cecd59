"""LLM calls async end to end: atick over the loopback fixture, AbstractCore locally, a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from abstractruntime.core.models import RunStatus
from abstractruntime.integrations.abstractcore import (
    LocalAbstractCoreLLMClient,
    RemoteAbstractCoreLLMClient,
    create_remote_runtime,
)
from abstractruntime.integrations.abstractcore.effect_handlers import make_llm_call_handler
from abstractruntime.storage.verify import verify_run
from integration_support import AbstractCoreServer, requires_abstractcore, single_llm_call_workflow
from openai_fixture import OpenAIFixture, Reply, chat_completion

MODEL = "fixture-model"


def test_remote_calls_of_many_runs_go_out_together_under_atick(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(*[chat_completion(content=f"answer {i}") for i in range(6)])
    runtime = create_remote_runtime(server_base_url=openai_server.base_url, model=MODEL, store_dir=tmp_path,
                                    timeout_s=30)
    wf = single_llm_call_workflow({"prompt": "hi"})
    ids = [runtime.start(workflow=wf) for _ in range(6)]

    async def all_runs() -> list:
        return list(await asyncio.gather(*(runtime.atick(workflow=wf, run_id=i) for i in ids)))

    states = asyncio.run(all_runs())
    assert all(s.status is RunStatus.COMPLETED for s in states)
    assert sorted(s.output["content"] for s in states) == [f"answer {i}" for i in range(6)]
    assert len(openai_server.chat_requests()) == 6
    assert all(verify_run(tmp_path, i).ok for i in ids)


def test_async_remote_errors_are_retried_and_scrubbed_like_the_sync_ones(openai_server: OpenAIFixture) -> None:
    secret = "sk-live-async-secret-0123456789"
    openai_server.script(Reply(status=503, body={"error": {"message": f"overloaded, key {secret}"}}),
                         chat_completion(content="fine"))
    client = RemoteAbstractCoreLLMClient(server_base_url=openai_server.base_url, model=MODEL, api_key=secret)
    handler = make_llm_call_handler(llm=client)
    assert asyncio.iscoroutinefunction(handler)
    from abstractruntime import Effect, EffectType, RunState

    run = RunState.new(workflow_id="w", entry_node="n")
    first = asyncio.run(handler(run, Effect(EffectType.LLM_CALL, {"prompt": "x"})))
    assert first.status == "failed" and first.retryable and secret not in (first.error or "")
    second = asyncio.run(handler(run, Effect(EffectType.LLM_CALL, {"prompt": "x"})))
    assert second.status == "completed" and second.result["content"] == "fine"
    assert openai_server.chat_requests()[0].headers["authorization"] == f"Bearer {secret}"


@requires_abstractcore
@pytest.mark.abstractcore
def test_local_mode_awaits_abstractcores_agenerate(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="Bonjour", model=MODEL))
    client = LocalAbstractCoreLLMClient(provider="openai-compatible", model=MODEL,
                                        llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""})
    out = asyncio.run(client.agenerate(prompt="Say hello in French", system_prompt="Be brief"))
    assert out["content"] == "Bonjour" and out["model"] == MODEL
    (req,) = openai_server.chat_requests()
    assert req.body["messages"][-1] == {"role": "user", "content": "Say hello in French"}


@requires_abstractcore
@pytest.mark.abstractcore
def test_async_calls_through_a_real_abstractcore_server(tmp_path: Path, abstractcore_server: AbstractCoreServer,
                                                        openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="via the server"))
    runtime = create_remote_runtime(server_base_url=abstractcore_server.base_url,
                                    model="openai-compatible/fixture-model", api_key=abstractcore_server.token,
                                    store_dir=tmp_path, timeout_s=30)
    wf = single_llm_call_workflow({"prompt": "hi", "params": {"base_url": openai_server.v1_url}})
    run_id = runtime.start(workflow=wf)
    state = asyncio.run(runtime.atick(workflow=wf, run_id=run_id))
    assert state.status is RunStatus.COMPLETED, state.error
    assert state.output == {"content": "via the server"}
