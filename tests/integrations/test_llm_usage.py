"""Usage on the record, prices, rate limits and streaming against the loopback OpenAI-compatible server.

Every number asserted here is one the server reported: the totals a run records must equal the
sum of the ``usage`` objects the server sent back, whatever the mode (remote, hybrid, local
through the real AbstractCore package), the driver (tick, atick) or whether the call streamed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from abstractruntime.core.usage_totals import totals_of
from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import Effect, EffectType, RunState, RunStatus, StepPlan, WaitReason
from abstractruntime.core.policy import DefaultEffectPolicy, NoRetryPolicy
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.integrations.abstractcore import (
    PassthroughToolExecutor,
    PriceTable,
    RemoteAbstractCoreLLMClient,
    build_effect_handlers,
    create_hybrid_runtime,
    create_local_runtime,
    create_remote_runtime,
    retry_after_seconds,
)
from abstractruntime.storage.store import FileStore
from abstractruntime.storage.verify import verify_run
from integration_support import requires_abstractcore
from openai_fixture import OpenAIFixture, Reply, chat_completion

PRICES = PriceTable.from_dict({"currency": "USD", "models": {
    "fake/fixture-model": {"input_per_million": 2.0, "output_per_million": 8.0}}})


def calls(n: int) -> WorkflowSpec:
    """``n`` llm_calls in a row, then complete with the last reply."""
    def make(i: int) -> Any:
        def node(run: RunState, ctx: Any) -> StepPlan:
            nxt = f"c{i + 1}" if i + 1 < n else "done"
            return StepPlan(f"c{i}", effect=Effect(EffectType.LLM_CALL, {"prompt": f"question {i}"},
                                                   result_key=f"r{i}"), next_node=nxt)
        return node

    nodes: dict[str, Any] = {f"c{i}": make(i) for i in range(n)}
    nodes["done"] = lambda run, ctx: StepPlan("done", complete_output={"last": run.vars[f"r{n - 1}"]["content"]})
    return WorkflowSpec("calls", "c0", nodes)


def scripted_usage(server: OpenAIFixture, n: int) -> tuple[int, int]:
    """Script ``n`` replies with distinct usage; returns the sums the server will report."""
    inputs, outputs = 0, 0
    for i in range(n):
        usage = {"prompt_tokens": 100 + 7 * i, "completion_tokens": 20 + 3 * i,
                 "total_tokens": 120 + 10 * i}
        inputs += usage["prompt_tokens"]
        outputs += usage["completion_tokens"]
        server.script(chat_completion(content=f"answer number {i}", usage=usage))
    return inputs, outputs


def recorded_usage(rt: Any, run_id: str) -> list[dict[str, Any]]:
    return [r["ext"]["usage"] for r in rt.get_ledger(run_id) if "usage" in (r.get("ext") or {})]


@pytest.mark.parametrize("driver", ["tick", "atick"])
def test_remote_totals_equal_the_servers_usage(tmp_path: Path, openai_server: OpenAIFixture, driver: str) -> None:
    inputs, outputs = scripted_usage(openai_server, 3)
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="fake/fixture-model",
                               store_dir=tmp_path, prices=PRICES)
    wf = calls(3)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id) if driver == "tick" else asyncio.run(
        rt.atick(workflow=wf, run_id=run_id))
    assert state.status is RunStatus.COMPLETED, state.error
    assert len(openai_server.chat_requests()) == 3
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert (totals["calls"], totals["input_tokens"], totals["output_tokens"]) == (3, inputs, outputs)
    assert totals["cost"] == pytest.approx((inputs * 2.0 + outputs * 8.0) / 1e6)
    per_call = recorded_usage(rt, run_id)
    assert [u["provider"] for u in per_call] == ["fake"] * 3 and [u["model"] for u in per_call] == ["fixture-model"] * 3
    assert all(isinstance(u["latency_ms"], (int, float)) and u["latency_ms"] >= 0 for u in per_call)
    assert verify_run(tmp_path, run_id).ok


def test_hybrid_totals_include_every_turn_of_a_tool_loop(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    from integration_support import add, tool_round_trip_workflow

    first = {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}
    second = {"prompt_tokens": 80, "completion_tokens": 4, "total_tokens": 84}
    openai_server.script(
        chat_completion(content="", tool_calls=[{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}],
                        usage=first),
        chat_completion(content="5", usage=second))
    rt = create_hybrid_runtime(server_base_url=openai_server.base_url, model="fixture-model", tools=[add],
                               store_dir=tmp_path)
    wf = tool_round_trip_workflow()
    run_id = rt.start(workflow=wf, vars={"question": "2+3?"})
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert (totals["calls"], totals["input_tokens"], totals["output_tokens"]) == (2, 130, 13)
    assert "cost" not in totals and totals["unpriced"] == 2  # no price table: no cost, and it says so
    # Without a provider prefix, the server names the provider (and the in-flight key).
    assert recorded_usage(rt, run_id)[0]["provider"] == f"127.0.0.1:{openai_server.port}"


def test_a_response_without_usage_is_recorded_as_unreported(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    reply = chat_completion(content="hi")
    del reply["usage"]
    openai_server.script(reply)
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    (usage,) = recorded_usage(rt, run_id)
    assert usage["input_tokens"] == 0 and usage["reported"] is False


@requires_abstractcore
@pytest.mark.abstractcore
def test_local_mode_totals_equal_the_servers_usage(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    inputs, outputs = scripted_usage(openai_server, 2)
    prices = PriceTable.from_dict({"models": {"openai-compatible/fixture-model": {
        "input_per_million": 1.0, "output_per_million": 1.0}}})
    rt = create_local_runtime(provider="openai-compatible", model="fixture-model", store_dir=tmp_path,
                              llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""}, prices=prices)
    wf = calls(2)
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert (totals["calls"], totals["input_tokens"], totals["output_tokens"]) == (2, inputs, outputs)
    assert totals["cost"] == pytest.approx((inputs + outputs) / 1e6)
    assert recorded_usage(rt, run_id)[0]["provider"] == "openai-compatible"


def test_the_price_table_is_recorded_when_it_changes_across_processes(tmp_path: Path,
                                                                        openai_server: OpenAIFixture) -> None:
    scripted_usage(openai_server, 3)
    wf = calls(3)
    first = create_remote_runtime(server_base_url=openai_server.base_url, model="fake/fixture-model",
                                  store_dir=tmp_path, prices=PRICES)
    run_id = first.start(workflow=wf)
    first.tick(workflow=wf, run_id=run_id, max_steps=2)  # two calls under the first table
    dearer = PriceTable.from_dict({"currency": "USD", "models": {
        "fake/fixture-model": {"input_per_million": 4.0, "output_per_million": 8.0}}})
    second = create_remote_runtime(server_base_url=openai_server.base_url, model="fake/fixture-model",
                                   store_dir=tmp_path, prices=dearer)
    assert second.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED
    recorded = [r.get("ext", {}).get("prices") for r in second.get_ledger(run_id) if r.get("ext")]
    assert [p["models"]["fake/fixture-model"]["input_per_million"] if p else None for p in recorded] == [2, None, 4]
    assert recorded[0]["sha256"] != recorded[2]["sha256"]


def test_price_tables_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "prices.toml"
    good.write_text('currency = "EUR"\n[models."a/b"]\ninput_per_million = 1\noutput_per_million = 2.5\n')
    table = PriceTable.load(good)
    assert table.currency == "EUR" and table.cost("a", "b", 1_000_000, 1_000_000) == 3.5
    assert table.cost("a", "other", 10, 10) is None
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"models": {"b": {"input_per_million": 1, "output_per_million": 1}}}))
    assert PriceTable.load(as_json).cost("anyone", "b", 500_000, 500_000) == 1.0
    for bad in ('[models."x"]\ninput_per_million = -1\n', '[models."x"]\ninput = 1\n', 'currency = 5\n',
                'models = "cheap"\n', 'not toml ['):
        path = tmp_path / "bad.toml"
        path.write_text(bad)
        with pytest.raises(InvalidInputError, match="price table"):
            PriceTable.load(path)
    with pytest.raises(InvalidInputError, match="cannot read"):
        PriceTable.load(tmp_path / "missing.toml")


def test_a_429_with_retry_after_is_a_durable_timer_not_an_attempt(tmp_path: Path,
                                                                     openai_server: OpenAIFixture) -> None:
    limited = Reply(status=429, headers={"Retry-After": "2"}, body={"error": {"message": "slow down"}})
    openai_server.script(limited, limited, chat_completion(content="finally"))
    # One attempt allowed: a 429 counted as an attempt would fail the run.
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path,
                               effect_policy=NoRetryPolicy())
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.WAITING and state.waiting is not None
    assert state.waiting.reason is WaitReason.UNTIL and state.waiting.details is not None
    assert state.waiting.details["retry_after"]["seconds"] == 2
    assert "HTTP 429" in state.waiting.details["retry_after"]["reason"]
    for _ in range(2):  # another process fires each timer (as a worker would once it is due)
        other = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path,
                                      effect_policy=NoRetryPolicy())
        state = other.resume(workflow=wf, run_id=run_id, wait_id=other.get_state(run_id).waiting.wait_id,
                             fire_timer=True)
    assert state.status is RunStatus.COMPLETED and state.output == {"last": "finally"}
    assert len(openai_server.chat_requests()) == 3
    ledger = rt.get_ledger(run_id)
    assert not [r for r in ledger if r["status"] == "failed"]
    assert [r["result"]["pause"] for r in ledger if r["kind"] == "pause"] == ["retry_after", "retry_after"]


def test_a_503_with_a_reset_header_waits_too(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(status=503, headers={"x-ratelimit-reset-requests": "1m30s"}, body={}),
                         chat_completion(content="ok"))
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path)
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.waiting is not None and state.waiting.details is not None
    assert state.waiting.details["retry_after"]["seconds"] == 90


def test_a_0_0_1_embedder_keeps_failed_attempts_unless_it_opts_in(tmp_path: Path,
                                                                   openai_server: OpenAIFixture) -> None:
    limited = Reply(status=429, headers={"Retry-After": "2"}, body={"error": {"message": "slow down"}})
    openai_server.script(limited)
    client = RemoteAbstractCoreLLMClient(server_base_url=openai_server.base_url, model="m")
    store = FileStore(tmp_path, durability="none")
    wf = calls(1)
    plain = store.runtime(effect_handlers=build_effect_handlers(llm=client, tools=PassthroughToolExecutor()),
                          effect_policy=DefaultEffectPolicy(default_backoff_base=0.0))
    run_id = plain.start(workflow=wf)
    state = plain.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.FAILED and "HTTP 429" in (state.error or "")

    openai_server.script(limited)
    opted = store.runtime(effect_handlers=build_effect_handlers(llm=client, tools=PassthroughToolExecutor(),
                                                                rate_limits="wait"))
    run_id = opted.start(workflow=wf)
    assert opted.tick(workflow=wf, run_id=run_id).waiting.reason is WaitReason.UNTIL  # type: ignore[union-attr]


@requires_abstractcore
@pytest.mark.abstractcore
def test_local_mode_waits_out_a_429_when_asked(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(Reply(status=429, headers={"Retry-After": "3"}, body={"error": {"message": "busy"}}),
                         chat_completion(content="ok"))
    rt = create_local_runtime(provider="openai-compatible", model="fixture-model", store_dir=tmp_path,
                              llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""}, rate_limits="wait",
                              effect_policy=NoRetryPolicy())
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.waiting is not None and state.waiting.reason is WaitReason.UNTIL
    assert state.waiting.details is not None and state.waiting.details["retry_after"]["seconds"] == 3
    state = rt.resume(workflow=wf, run_id=run_id, wait_id=state.waiting.wait_id, fire_timer=True)
    assert state.status is RunStatus.COMPLETED


@pytest.mark.parametrize(("status", "headers", "seconds"), [
    (429, {"Retry-After": "2"}, 2.0),
    (429, {"retry-after-ms": "2500"}, 2.5),
    (503, {"Retry-After": "Wed, 01 Jan 2031 00:00:10 GMT"}, 10.0),
    (429, {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
    (429, {"x-ratelimit-reset-tokens": "20ms"}, 1.0),  # at least a second: no tight loop of calls
    (429, {"anthropic-ratelimit-requests-reset": "2031-01-01T00:00:30Z"}, 30.0),
    (429, {"Retry-After": "-5"}, 1.0),
    (429, {"Retry-After": "0"}, 1.0),
    (429, {"Retry-After": "99999999"}, 7 * 24 * 3600.0),
    (429, {}, None),
    (429, {"Retry-After": "soon"}, None),
    (500, {"Retry-After": "2"}, None),
])
def test_retry_after_headers(status: int, headers: dict[str, str], seconds: Any) -> None:
    from datetime import datetime, timezone

    now = datetime(2031, 1, 1, tzinfo=timezone.utc)
    found = retry_after_seconds(status, headers, now=now)
    assert found == (pytest.approx(seconds) if seconds is not None else None)


class Collect:
    """An observer that keeps what handlers stream."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def progress(self, run_id: str, effect_id: int, attempt: int, data: dict[str, Any]) -> None:
        self.pieces.append(data["text"])


def test_a_streamed_reply_is_recorded_whole_and_its_pieces_go_to_observers(tmp_path: Path,
                                                                            openai_server: OpenAIFixture) -> None:
    secret = "sk-live-0123456789abcdefghijklmnop"
    usage = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
    openai_server.script(chat_completion(content=f"the key is {secret} and more words follow", usage=usage))
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path, stream=True)
    seen = Collect()
    rt.observers.append(seen)
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.COMPLETED
    (request,) = openai_server.chat_requests()
    assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
    assert len(seen.pieces) > 3
    assert secret not in "".join(seen.pieces) and "[REDACTED]" in "".join(seen.pieces)
    assert "".join(seen.pieces).endswith("and more words follow")
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert (totals["input_tokens"], totals["output_tokens"]) == (31, 12)
    # Only the final message is recorded, once, and as always redacted in the ledger.
    ledger_text = (tmp_path / "runs" / run_id / "ledger.jsonl").read_text()
    assert secret not in ledger_text and "and more words follow" in ledger_text


def test_nobody_watching_means_no_streaming(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="plain"))
    rt = create_remote_runtime(server_base_url=openai_server.base_url, model="m", store_dir=tmp_path, stream=True)
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=run_id)
    assert openai_server.chat_requests()[0].body["stream"] is False


@requires_abstractcore
@pytest.mark.abstractcore
def test_local_mode_streams_through_abstractcore(tmp_path: Path, openai_server: OpenAIFixture) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    openai_server.script(chat_completion(content="one two three four five", usage=usage))
    rt = create_local_runtime(provider="openai-compatible", model="fixture-model", store_dir=tmp_path,
                              llm_kwargs={"base_url": openai_server.v1_url, "api_key": ""}, stream=True)
    seen = Collect()
    rt.observers.append(seen)
    wf = calls(1)
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    assert state.status is RunStatus.COMPLETED and state.output == {"last": "one two three four five"}
    assert openai_server.chat_requests()[0].body.get("stream") is True
    assert "".join(seen.pieces) == "one two three four five" and len(seen.pieces) >= 2
    totals = totals_of(rt.get_checkpoint(run_id).metadata)
    assert (totals["input_tokens"], totals["output_tokens"]) == (9, 5)


def test_a_server_that_ignores_stream_still_gives_the_whole_reply(tmp_path: Path) -> None:
    from abstractruntime.integrations.abstractcore.http_sender import HttpxRequestSender

    with OpenAIFixture() as server:
        # a JSON body answering a streaming request (the fixture streams only dict bodies on 200)
        server.script(Reply(body=json.dumps(chat_completion(content="whole reply")), content_type="application/json"))
        client = RemoteAbstractCoreLLMClient(server_base_url=server.base_url, model="m", stream=True,
                                             request_sender=HttpxRequestSender())
        pieces: list[str] = []
        out = client.generate(prompt="hi", on_text=pieces.append)
    assert out["content"] == "whole reply" and pieces == ["whole reply"]
