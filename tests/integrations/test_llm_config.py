"""The LLM configuration rules, at the library level: checking, merging with what a run recorded,
the ``provider/model`` name a server is sent, and where a key may go."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from abstractruntime.core.errors import InvalidInputError, ServerNotConfiguredError
from abstractruntime.core.models import RunStatus
from abstractruntime.core.runtime import Runtime
from abstractruntime.integrations.abstractcore.factory import handlers_for_config
from abstractruntime.integrations.abstractcore.usage import PriceTable
from abstractruntime.llm_config import (
    LLMConfig,
    LlmFlags,
    llm_config,
    llm_flags,
    llm_for_run,
    resolve_llm,
    routed_model,
)
from abstractruntime.storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from integration_support import single_llm_call_workflow
from openai_fixture import OpenAIFixture, chat_completion

REMOTE = {"mode": "remote", "provider": "openai", "model": "gpt", "server": "http://a.example", "base_url": None}


@pytest.mark.parametrize(("provider", "model", "routed"), [
    ("openai", "gpt", "openai/gpt"),
    (None, "gpt", "gpt"),
    ("", "gpt", "gpt"),
    ("openai", "meta/llama", "meta/llama"),  # the model already names its provider
])
def test_the_model_a_server_is_sent(provider: Optional[str], model: str, routed: str) -> None:
    assert routed_model(provider, model) == routed
    assert LLMConfig("remote", model, provider=provider, server="http://h").server_model == routed


def test_a_price_table_finds_a_model_by_the_same_name_first() -> None:
    table = PriceTable.from_dict({"models": {"openai/gpt": {"input_per_million": 1, "output_per_million": 2},
                                             "gpt": {"input_per_million": 5, "output_per_million": 5},
                                             "meta/llama": {"input_per_million": 3, "output_per_million": 3}}})
    assert table.rates_for("openai", "gpt") == table.models["openai/gpt"]
    assert table.rates_for(None, "gpt") == table.models["gpt"]
    assert table.rates_for("openai", "meta/llama") == table.models["meta/llama"]


def test_a_remote_handler_sends_the_routed_model(openai_server: OpenAIFixture) -> None:
    openai_server.script(chat_completion(content="hi"))
    config = llm_config("remote", provider="openai", model="gpt", server=openai_server.base_url + "/", base_url=None)
    assert config is not None and config.server == openai_server.base_url  # no trailing slash kept
    runtime = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(),
                      effect_handlers=handlers_for_config(config, timeout_s=10))
    wf = single_llm_call_workflow({"prompt": "hi"})
    state = runtime.tick(workflow=wf, run_id=runtime.start(workflow=wf))
    assert state.status is RunStatus.COMPLETED, state.error
    assert [r.body["model"] for r in openai_server.chat_requests()] == ["openai/gpt"]


@pytest.mark.parametrize(("args", "message"), [
    ({"mode": "cloud", "model": "m"}, "--llm must be one of: local, remote, hybrid"),
    ({"mode": "remote"}, "needs --model"),
    ({"mode": "local", "model": "m"}, "needs --provider"),
    ({"mode": "hybrid", "model": "m", "base_url": "http://x"}, "needs --server"),
    ({"mode": "remote", "model": "m", "server": "file:///etc"}, "--server must be an http\\(s\\) URL"),
    ({"mode": "local", "model": "m", "provider": "p", "base_url": "127.0.0.1:8080"}, "--base-url must be"),
])
def test_a_configuration_is_refused_naming_what_to_give(args: dict[str, Any], message: str) -> None:
    fields = {"provider": None, "model": None, "server": None, "base_url": None, **args}
    with pytest.raises(InvalidInputError, match=message):
        llm_config(fields.pop("mode"), **fields)


def test_no_mode_is_no_configuration_and_a_mode_is_spelled_once() -> None:
    assert llm_config(None, provider="p", model="m", server=None, base_url=None) is None
    assert llm_config("   ", provider=None, model=None, server=None, base_url=None) is None
    config = llm_config(" Hybrid ", provider=None, model="m", server="http://h:1/", base_url=None)
    assert config == LLMConfig("hybrid", "m", server="http://h:1")


def test_flags_are_checked_alone_and_say_which_were_typed() -> None:
    flags = llm_flags("REMOTE", provider=None, model="", server="http://h/", base_url=None)
    assert flags == LlmFlags(mode="remote", server="http://h", typed=frozenset({"mode", "server"}))
    from_env = llm_flags(None, provider="p", model=None, server="http://h", base_url=None, typed={"provider", "model"})
    assert from_env.typed == frozenset({"provider"})  # typed but not given counts for nothing
    with pytest.raises(InvalidInputError, match="--base-url must be"):
        llm_flags(None, provider=None, model=None, server=None, base_url="ftp://x")
    assert llm_flags(None, provider=None, model="m", server=None, base_url=None).config() is None


def test_without_options_the_recorded_configuration_is_used_unchanged() -> None:
    assert resolve_llm(None, None) == (None, False)
    assert resolve_llm(LlmFlags(), {}) == (None, False)
    config, changed = resolve_llm(None, REMOTE)
    assert config == LLMConfig("remote", "gpt", provider="openai", server="http://a.example") and not changed
    assert resolve_llm(None, config.to_metadata()) == (config, False)  # what is recorded reads back as itself


def test_options_replace_recorded_fields_one_by_one() -> None:
    config, changed = resolve_llm(LlmFlags(model="gpt-2"), REMOTE)
    assert config == LLMConfig("remote", "gpt-2", provider="openai", server="http://a.example") and changed
    same, changed = resolve_llm(LlmFlags(mode="remote", model="gpt"), REMOTE)
    assert same == LLMConfig("remote", "gpt", provider="openai", server="http://a.example") and not changed


def test_another_mode_starts_afresh() -> None:
    with pytest.raises(InvalidInputError, match="needs --server"):
        resolve_llm(LlmFlags(mode="hybrid", model="gpt"), REMOTE)  # the recorded server is not carried over
    config, changed = resolve_llm(LlmFlags(mode="local", provider="ollama", model="llama"), REMOTE)
    assert config == LLMConfig("local", "llama", provider="ollama") and changed


@pytest.mark.parametrize("recorded", [["remote"], "remote", 7, {"mode": None, "model": ""}])
def test_an_edited_record_that_is_no_configuration_counts_as_none(recorded: Any) -> None:
    assert resolve_llm(None, recorded) == (None, False)


def test_an_edited_record_with_a_bad_value_is_refused_not_used() -> None:
    with pytest.raises(InvalidInputError, match="--server must be an http"):
        resolve_llm(None, {**REMOTE, "server": "file:///etc/passwd"})
    with pytest.raises(InvalidInputError, match="--llm must be one of"):
        resolve_llm(None, {**REMOTE, "mode": "shell"})


def test_a_run_continues_only_with_a_key_bound_for_its_server() -> None:
    environ = {"ABSTRACTRUNTIME_API_KEY": "sk-x", "ABSTRACTRUNTIME_SERVER": "http://b.example"}
    with pytest.raises(ServerNotConfiguredError, match="http://a.example"):
        llm_for_run(None, REMOTE, "r1", environ=environ)
    moved = llm_flags(None, provider=None, model=None, server="http://c.example", base_url=None)
    config, changed = llm_for_run(moved, REMOTE, "r1", environ=environ)  # typed: the operator moves the run
    assert config is not None and config.server == "http://c.example" and changed
    assert llm_for_run(None, REMOTE, "r1", environ={}) == (resolve_llm(None, REMOTE)[0], False)  # no key
