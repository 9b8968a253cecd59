"""Local mode through the real AbstractCore package, talking to the loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abstractruntime.core.errors import EffectFailedError
from abstractruntime.core.models import RunStatus
from abstractruntime.core.policy import DefaultEffectPolicy
from abstractruntime.integrations.abstractcore import LocalAbstractCoreLLMClient, create_local_runtime
from integration_support import TOOL_RUNS, add, requires_abstractcore, single_llm_call_workflow, \
    tool_round_trip_workflow
from openai_fixture import OpenAIFixture, Reply, chat_completion

pytestmark = [pytest.mark.abstractcore, requires_abstractcore]

MODEL = "fixture-model"
HERE = Path(__file__).resolve().parent


def local_client(server: OpenAIFixture, **llm_kwargs: object) -> LocalAbstractCoreLLMClient:
    kwargs = {"base_url": server.v1_url, "api_key": "", **llm_kwargs}
    return LocalAbstractCoreLLMClient(provider="openai-compatible", model=MODEL, llm_kwargs=kwargs)


def test_generate_through_create_llm(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="Bonjour", model=MODEL))
    client = local_client(openai_server)
    assert openai_server.requests == []  # building the client touches no network
    out = client.generate(prompt="Say hello in French", system_prompt="Be brief", params={"temperature": 0.1})
    assert out["content"] == "Bonjour"
    assert out["model"] == MODEL and out["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == 18
    assert out["tool_calls"] is None
    json.dumps(out)  # JSON-safe
    (req,) = openai_server.chat_requests()
    assert req.body["model"] == MODEL and req.body["temperature"] == 0.1
    assert req.body["messages"][0] == {"role": "system", "content": "Be brief"}
    assert req.body["messages"][-1] == {"role": "user", "content": "Say hello in French"}


def test_native_tool_calls_keep_their_ids(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(tool_calls=[{"id": "call_n1", "name": "add", "arguments": {"a": 1, "b": 2}}]))
    out = local_client(openai_server).generate(prompt="1+2?", tools=[{"name": "add", "description": "Add",
                                                                       "parameters": {"type": "object"}}])
    assert out["tool_calls"] == [{"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "call_n1"}]


def test_prompted_tool_calls_get_stable_ids(openai_server: OpenAIFixture) -> None:
    prompted = chat_completion(content='{"name": "add", "arguments": {"a": 2, "b": 2}}')
    openai_server.script(prompted, prompted)
    client = local_client(openai_server)
    tools = [{"name": "add", "description": "Add", "parameters": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}}}]
    first = client.generate(prompt="2+2?", tools=tools)["tool_calls"]
    second = client.generate(prompt="2+2?", tools=tools)["tool_calls"]
    assert first is not None and first[0]["name"] == "add" and first[0]["arguments"] == {"a": 2, "b": 2}
    assert first[0]["call_id"]  # AbstractCore gave none; one was derived
    assert first == second


def test_a_payload_base_url_never_takes_the_operators_key_elsewhere(openai_server: OpenAIFixture,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-operator-key-local-0042"
    openai_server.script(chat_completion(content="from the configured endpoint"))
    with OpenAIFixture() as other:
        other.script(chat_completion(content="from the workflow's host"))
        out = local_client(openai_server, api_key=secret).generate(prompt="x", params={"base_url": other.v1_url})
        assert other.requests == []  # nothing, and no key, went to the host the payload named
    assert out["content"] == "from the configured endpoint"
    (req,) = openai_server.chat_requests()
    assert req.headers["authorization"] == f"Bearer {secret}" and "base_url" not in req.body
    assert "params.base_url ignored" in caplog.text


def test_the_configured_base_url_in_params_is_no_warning(openai_server: OpenAIFixture,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    openai_server.script(chat_completion(content="ok"))
    local_client(openai_server).generate(prompt="x", params={"base_url": openai_server.v1_url + "/"})
    assert len(openai_server.chat_requests()) == 1 and "ignored" not in caplog.text


@pytest.mark.parametrize("status, retryable", [(400, False), (401, False), (404, False), (429, True), (500, True)])
def test_provider_errors_are_classified(openai_server: OpenAIFixture, status: int, retryable: bool) -> None:
    openai_server.responder = lambda body: Reply(status=status, body={"error": {"message": "nope"}})
    with pytest.raises(EffectFailedError) as excinfo:
        local_client(openai_server).generate(prompt="x")
    assert excinfo.value.details["retryable"] is retryable
    assert "not retried" in excinfo.value.message if not retryable else "retryable" in excinfo.value.message


def test_provider_api_key_is_scrubbed_from_errors(openai_server: OpenAIFixture) -> None:
    secret = "sk-local-provider-key-123456789"
    openai_server.responder = lambda body: Reply(status=400, body={"error": {"message": f"bad key {secret}"}})
    with pytest.raises(EffectFailedError) as excinfo:
        local_client(openai_server, api_key=secret).generate(prompt="x")
    assert secret not in str(excinfo.value)


def test_local_tool_round_trip_through_the_runtime(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(
        chat_completion(content="", tool_calls=[{"id": "call_L", "name": "add", "arguments": {"a": 20, "b": 22}}]),
        chat_completion(content="The answer is 42."),
    )
    TOOL_RUNS.clear()
    wf = tool_round_trip_workflow()
    runtime = create_local_runtime(provider="openai-compatible", model=MODEL, tools=[add], store_dir=tmp_path,
                                   llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""})
    run_id = runtime.start(workflow=wf, vars={"question": "What is 20 + 22?"})
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.COMPLETED, state.error
    assert state.output == {"answer": "The answer is 42.", "tools_used": True}
    assert TOOL_RUNS == [(20, 22)]
    last = openai_server.chat_requests()[-1].body["messages"]
    assert last[-1]["role"] == "tool" and last[-1]["tool_call_id"] == "call_L" and last[-1]["content"] == "42"


def test_local_4xx_is_not_retried_by_the_runtime(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.responder = lambda body: Reply(status=404, body={"error": {"message": "no such model"}})
    runtime = create_local_runtime(provider="openai-compatible", model=MODEL, store_dir=tmp_path, tools=[add],
                                   llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""},
                                   effect_policy=DefaultEffectPolicy(default_backoff_base=0.0,
                                                                     effect_max_attempts={"llm_call": 3}))
    wf = single_llm_call_workflow({"prompt": "hi"})
    run_id = runtime.start(workflow=wf)
    state = runtime.tick(workflow=wf, run_id=run_id)
    assert state.status == RunStatus.FAILED
    assert state.error is not None and "after 1 attempt" in state.error


def test_stdout_stays_clean_and_logging_untouched(openai_server: OpenAIFixture) -> None:
    """AbstractCore logs provider errors; they must not land on stdout (the CLI's result channel)."""
    openai_server.script(Reply(status=500, body={"error": {"message": "kaboom"}}))
    openai_server.responder = lambda body: Reply(status=500, body={"error": {"message": "kaboom"}})
    code = textwrap.dedent(
        f"""
        import logging, sys
        handlers_before = list(logging.getLogger().handlers)
        level_before = logging.getLogger().level
        from abstractruntime.core.errors import EffectFailedError
        from abstractruntime.integrations.abstractcore import LocalAbstractCoreLLMClient
        client = LocalAbstractCoreLLMClient(provider="openai-compatible", model="{MODEL}",
                                            llm_kwargs={{"base_url": "{openai_server.v1_url}", "api_key": ""}})
        try:
            client.generate(prompt="x")
        except EffectFailedError as exc:
            sys.stderr.write("failed as expected: " + str(exc) + "\\n")
        same = logging.getLogger().handlers == handlers_before and logging.getLogger().level == level_before
        sys.stderr.write("logging unchanged: " + str(same) + "\\n")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "failed as expected" in proc.stderr and "kaboom" in proc.stderr
    assert "logging unchanged: True" in proc.stderr
