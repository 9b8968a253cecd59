"""Pure helpers: secret scrubbing, JSON safety, stable call ids, mode wiring, the logger."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.core.models import EffectType
from abstractruntime.integrations.abstractcore import (
    LocalToolExecutor,
    PassthroughToolExecutor,
    build_mode_handlers,
    make_tool_executor,
)
from abstractruntime.integrations.abstractcore._support import jsonable, normalize_tool_calls, scrub
from abstractruntime.integrations.abstractcore.http_sender import display_url
from abstractruntime.integrations.abstractcore.logging import get_logger

secrets_st = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=8,
                     max_size=40)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=40), suffix=st.text(max_size=40), secret=secrets_st)
def test_a_known_secret_never_survives_scrubbing(prefix: str, suffix: str, secret: str) -> None:
    assert secret not in scrub(f"{prefix}{secret}{suffix}", [secret])


@pytest.mark.parametrize(
    "text, leaked",
    [
        ("401: header was Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("bad api_key=zz-top-secret-99 given", "zz-top-secret-99"),
        ('{"api-key": "k-998877"}', "k-998877"),
        ("provider said: invalid key sk-proj-AbCdEf123456", "sk-proj-AbCdEf123456"),
        ("GET http://admin:pa55word@10.0.0.1/v1 failed", "pa55word"),
    ],
)
def test_credential_shapes_are_scrubbed_without_being_told(text: str, leaked: str) -> None:
    assert leaked not in scrub(text)


def test_display_url_drops_userinfo_and_query() -> None:
    assert display_url("https://u:p@host.example:8443/v1/chat?key=abc") == "https://host.example:8443/v1/chat"


@settings(max_examples=100, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.integers() | st.text(max_size=5), inner,
                                                                max_size=4)
    | st.tuples(inner, inner),
    max_leaves=20,
))
def test_jsonable_output_always_serialises_strictly(value: Any) -> None:
    json.dumps(jsonable(value), allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({"name": st.text(max_size=8),
                                       "arguments": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)}),
                max_size=5))
def test_generated_call_ids_are_deterministic_and_unique(calls: list[dict[str, Any]]) -> None:
    first, second = normalize_tool_calls(calls), normalize_tool_calls(calls)
    assert first == second
    assert len({c["call_id"] for c in first}) == len(first)


def test_build_mode_handlers_wires_both_effects() -> None:
    handlers = build_mode_handlers(mode="remote", model="m", server_base_url="http://127.0.0.1:1")
    assert set(handlers) == {EffectType.LLM_CALL, EffectType.TOOL_CALLS}


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"mode": "cloud"}, "unknown mode"),
        ({"mode": "local"}, "needs a provider"),
        ({"mode": "remote"}, "needs server_base_url"),
        ({"mode": "hybrid"}, "needs server_base_url"),
        ({"mode": "remote", "server_base_url": "ftp://x"}, r"an http\(s\) URL"),
    ],
)
def test_build_mode_handlers_refuses_incomplete_settings(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        build_mode_handlers(model="m", **kwargs)


def test_make_tool_executor_choices() -> None:
    def ping() -> str:
        return "pong"

    passthrough = PassthroughToolExecutor()
    assert make_tool_executor(passthrough) is passthrough
    assert isinstance(make_tool_executor([ping], prefer="local"), LocalToolExecutor)
    with pytest.raises(InvalidInputError):
        make_tool_executor([ping], prefer="remote")


def test_logger_takes_fields_and_uses_stdlib_logging(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("abstractruntime.test.logger")
    with caplog.at_level(logging.INFO, logger="abstractruntime.test.logger"):
        log.info("llm_call failed", attempt=2, retryable=True)
    assert any("llm_call failed" in r.getMessage() and "attempt=2" in r.getMessage() for r in caplog.records)
