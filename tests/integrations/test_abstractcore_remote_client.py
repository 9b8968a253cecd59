"""The remote LLM client over real httpx against a real loopback OpenAI-compatible server."""

from __future__ import annotations

import time

import httpx
import pytest

from abstractruntime.core.errors import EffectFailedError, InvalidInputError
from abstractruntime.integrations.abstractcore import HttpxRequestSender, RemoteAbstractCoreLLMClient
from openai_fixture import OpenAIFixture, Reply, chat_completion, free_port

SERVER_TOKEN = "srv-secret-token-777"
PROVIDER_KEY = "sk-provider-secret-abcdef123456"


def client_for(server: OpenAIFixture, **kwargs: object) -> RemoteAbstractCoreLLMClient:
    kwargs.setdefault("model", "openai-compatible/fixture-model")
    return RemoteAbstractCoreLLMClient(server_base_url=server.base_url, **kwargs)  # type: ignore[arg-type]


def test_request_shape(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="hello"))
    client = client_for(openai_server, api_key=SERVER_TOKEN, provider_api_key=PROVIDER_KEY,
                        headers={"X-Trace": "t-1"})
    client.generate(
        prompt="and now?",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        system_prompt="be brief",
        tools=[{"name": "add", "description": "Add", "parameters": {"type": "object", "properties": {}}}],
        params={"temperature": 0.2, "max_tokens": 50, "base_url": "http://127.0.0.1:9/v1", "seed": 7},
    )
    (req,) = openai_server.chat_requests()
    assert req.path == "/v1/chat/completions"
    body = req.body
    assert body["model"] == "openai-compatible/fixture-model"
    assert body["stream"] is False
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "be brief"
    assert body["messages"][-1]["content"] == "and now?"
    # params are flattened to top-level body fields; base_url is routed by the AbstractCore server
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 50, 7)
    assert body["base_url"] == "http://127.0.0.1:9/v1"
    assert body["tools"] == [{"type": "function", "function": {
        "name": "add", "description": "Add", "parameters": {"type": "object", "properties": {}}}}]
    assert req.headers["authorization"] == f"Bearer {SERVER_TOKEN}"
    assert req.headers["x-trace"] == "t-1"
    # The payload routed the call (base_url): the operator's provider key is not sent with it.
    assert "x-abstractcore-provider-api-key" not in req.headers
    assert "api_key" not in body and PROVIDER_KEY not in str(body)


@pytest.mark.parametrize("configured", ["argument", "header"])
def test_the_operators_provider_key_goes_only_with_calls_the_server_routes(openai_server: OpenAIFixture,
                                                                           configured: str) -> None:
    openai_server.script(chat_completion(content="a"), chat_completion(content="b"), chat_completion(content="c"))
    kwargs: dict[str, object] = {"provider_api_key": PROVIDER_KEY} if configured == "argument" else \
        {"headers": {"x-abstractcore-provider-api-key": PROVIDER_KEY}}
    client = client_for(openai_server, **kwargs)
    client.generate(prompt="x", params={"temperature": 0})
    client.generate(prompt="x", params={"base_url": "http://attacker.example/v1"})
    client.generate(prompt="x", params={"base_url": "http://other.example/v1", "provider_api_key": "sk-its-own"})
    plain, routed, own = openai_server.chat_requests()
    assert plain.headers["x-abstractcore-provider-api-key"] == PROVIDER_KEY
    assert PROVIDER_KEY not in str(routed.headers) and routed.body["base_url"] == "http://attacker.example/v1"
    assert own.headers["x-abstractcore-provider-api-key"] == "sk-its-own"


def test_api_key_in_params_travels_as_header_not_body(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="ok"))
    client_for(openai_server).generate(prompt="x", params={"api_key": PROVIDER_KEY, "model": "other/model"})
    (req,) = openai_server.chat_requests()
    assert PROVIDER_KEY not in str(req.body)
    assert req.headers["x-abstractcore-provider-api-key"] == PROVIDER_KEY
    assert req.body["model"] == "other/model"


def test_response_is_normalised_and_json_safe(openai_server: OpenAIFixture) -> None:
    openai_server.script(
        chat_completion(content=None, tool_calls=[{"id": "call_a", "name": "add", "arguments": {"a": 1, "b": 2}}],
                        model="served-model", usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    )
    out = client_for(openai_server).generate(prompt="1+2?")
    assert out == {
        "content": None,
        "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "call_a"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        "model": "served-model",
        "finish_reason": "tool_calls",
    }


def test_tool_calls_without_ids_get_stable_ids(openai_server: OpenAIFixture) -> None:
    body = chat_completion(tool_calls=[{"name": "add", "arguments": {"a": 1}}, {"name": "add", "arguments": {"a": 1}}])
    for tc in body["choices"][0]["message"]["tool_calls"]:
        del tc["id"]
    openai_server.script(body, body)
    first = client_for(openai_server).generate(prompt="x")["tool_calls"]
    second = client_for(openai_server).generate(prompt="x")["tool_calls"]
    ids = [c["call_id"] for c in first]
    assert all(ids) and len(set(ids)) == 2  # two identical calls still get distinct ids
    assert ids == [c["call_id"] for c in second]  # and the same ids on a repeat


def test_history_with_our_tool_call_shape_is_sent_in_openai_shape(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="3"))
    client_for(openai_server).generate(messages=[
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2},
                                                               "call_id": "c9"}]},
        {"role": "tool", "tool_call_id": "c9", "content": {"sum": 3}},
    ])
    msgs = openai_server.chat_requests()[0].body["messages"]
    assert msgs[1]["content"] == ""
    assert msgs[1]["tool_calls"] == [{"id": "c9", "type": "function",
                                      "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    assert msgs[2] == {"role": "tool", "tool_call_id": "c9", "content": '{"sum": 3}'}


def test_needs_prompt_or_messages(openai_server: OpenAIFixture) -> None:
    with pytest.raises(InvalidInputError, match="prompt or payload.messages"):
        client_for(openai_server).generate(prompt="", system_prompt="only a system prompt")
    assert openai_server.chat_requests() == []


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "soon"])
def test_timeout_must_be_positive_and_finite(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="timeout_s"):
        RemoteAbstractCoreLLMClient(server_base_url="http://127.0.0.1:1", model="m", timeout_s=bad)  # type: ignore


def test_repr_hides_credentials() -> None:
    client = RemoteAbstractCoreLLMClient(server_base_url="http://user:pw@127.0.0.1:1", model="m",
                                         api_key=SERVER_TOKEN)
    assert SERVER_TOKEN not in repr(client) and "pw" not in repr(client)


# ----------------------------------------------------------------------------- failures
def failure(excinfo: pytest.ExceptionInfo[EffectFailedError]) -> tuple[str, bool]:
    return excinfo.value.message, excinfo.value.details["retryable"]


def test_timeout_is_retryable_and_bounded(openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(body=chat_completion(content="late"), delay_s=2.0))
    client = client_for(openai_server, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    assert time.monotonic() - started < 1.5
    message, retryable = failure(excinfo)
    assert retryable is True
    assert message.startswith("timed out after 0.3s")


def test_connection_refused_is_retryable() -> None:
    port = free_port()  # nothing listens there
    client = RemoteAbstractCoreLLMClient(server_base_url=f"http://127.0.0.1:{port}", model="m", timeout_s=5)
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    message, retryable = failure(excinfo)
    assert retryable is True
    assert message.startswith(f"could not connect to http://127.0.0.1:{port}/v1/chat/completions")


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
def test_server_errors_and_throttling_are_retryable(openai_server: OpenAIFixture, status: int) -> None:
    openai_server.script(Reply(status=status, body={"error": {"message": "upstream overloaded"}}))
    with pytest.raises(EffectFailedError) as excinfo:
        client_for(openai_server).generate(prompt="x")
    message, retryable = failure(excinfo)
    assert retryable is True
    assert f"HTTP {status}" in message and "upstream overloaded" in message
    assert excinfo.value.details["status_code"] == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(openai_server: OpenAIFixture, status: int) -> None:
    openai_server.script(Reply(status=status, body={"detail": {"error": {"message": "model not allowed"}}}))
    with pytest.raises(EffectFailedError) as excinfo:
        client_for(openai_server).generate(prompt="x")
    message, retryable = failure(excinfo)
    assert retryable is False
    assert f"HTTP {status}" in message and "model not allowed" in message and "not retried" in message


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("<html>502 gateway</html>", "body is not JSON"),
        ('{"choices": [', "body is not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"object": "chat.completion"}', "no 'choices'"),
        ('{"choices": [{"index": 0}]}', "has no 'message'"),
    ],
)
def test_malformed_responses_fail_clearly(openai_server: OpenAIFixture, body: str, fragment: str) -> None:
    openai_server.script(Reply(status=200, body=body))
    with pytest.raises(EffectFailedError) as excinfo:
        client_for(openai_server).generate(prompt="x")
    message, retryable = failure(excinfo)
    assert fragment in message
    assert retryable is False


def test_secrets_echoed_by_the_server_are_scrubbed(openai_server: OpenAIFixture) -> None:
    echo = f"bad request; you sent Authorization: Bearer {SERVER_TOKEN} and key {PROVIDER_KEY}"
    openai_server.script(Reply(status=400, body={"error": {"message": echo}}))
    client = client_for(openai_server, api_key=SERVER_TOKEN, provider_api_key=PROVIDER_KEY)
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    assert SERVER_TOKEN not in str(excinfo.value) and PROVIDER_KEY not in str(excinfo.value)
    assert "[REDACTED]" in str(excinfo.value)


def test_url_credentials_never_appear_in_errors() -> None:
    port = free_port()
    client = RemoteAbstractCoreLLMClient(server_base_url=f"http://admin:hunter2@127.0.0.1:{port}", model="m",
                                         timeout_s=5)
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    assert "hunter2" not in str(excinfo.value) and "admin" not in str(excinfo.value)


# -- transport failures a loopback server cannot produce on demand: httpx.MockTransport
@pytest.mark.parametrize(
    "exc, fragment",
    [
        (httpx.ReadError("connection reset by peer"), "transport error"),
        (httpx.RemoteProtocolError("server disconnected without sending a response"), "transport error"),
        (httpx.PoolTimeout("no connection available"), "timed out after"),
    ],
)
def test_transport_errors_map_to_retryable_failures(exc: Exception, fragment: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    sender = HttpxRequestSender(transport=httpx.MockTransport(handler))
    client = RemoteAbstractCoreLLMClient(server_base_url="http://ac.test", model="m", request_sender=sender)
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    assert fragment in excinfo.value.message
    assert excinfo.value.details["retryable"] is True


def test_injected_sender_errors_are_wrapped_and_scrubbed() -> None:
    class ExplodingSender:
        def post(self, url: str, *, headers: dict, json: dict, timeout: float) -> dict:
            raise RuntimeError(f"socket closed while sending {headers['Authorization']}")

    client = RemoteAbstractCoreLLMClient(server_base_url="http://ac.test", model="m", api_key=SERVER_TOKEN,
                                         request_sender=ExplodingSender())
    with pytest.raises(EffectFailedError) as excinfo:
        client.generate(prompt="x")
    assert "RuntimeError: socket closed" in excinfo.value.message
    assert SERVER_TOKEN not in excinfo.value.message
    assert excinfo.value.details["retryable"] is True


def test_injected_sender_receives_the_timeout() -> None:
    seen: dict[str, object] = {}

    class RecordingSender:
        def post(self, url: str, *, headers: dict, json: dict, timeout: float) -> dict:
            seen.update(url=url, timeout=timeout)
            return chat_completion(content="ok")

    client = RemoteAbstractCoreLLMClient(server_base_url="http://ac.test/", model="m", timeout_s=12.5,
                                         request_sender=RecordingSender())
    client.generate(prompt="x")
    client.generate(prompt="x", params={"timeout_s": 3})
    assert seen == {"url": "http://ac.test/v1/chat/completions", "timeout": 3.0}
