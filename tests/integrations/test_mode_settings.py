"""One rule for what each LLM mode needs, shared by the factories and the --llm configuration."""

from __future__ import annotations

import pytest

from abstractruntime.core.errors import InvalidInputError
from abstractruntime.integrations.abstractcore.factory import build_mode_handlers, missing_mode_setting


def test_missing_mode_setting() -> None:
    assert missing_mode_setting("local", provider="ollama", server_base_url=None) is None
    assert missing_mode_setting("local", provider=None, server_base_url="http://x") == "provider"
    for mode in ("remote", "hybrid"):
        assert missing_mode_setting(mode, provider=None, server_base_url="http://x") is None
        assert missing_mode_setting(mode, provider="p", server_base_url=None) == "server_base_url"
    with pytest.raises(InvalidInputError, match="unknown mode"):
        missing_mode_setting("cloud", provider=None, server_base_url=None)


def test_the_factory_and_the_cli_refuse_the_same_configurations() -> None:
    from abstractruntime.llm_config import llm_config

    with pytest.raises(InvalidInputError, match="needs a provider"):
        build_mode_handlers(mode="local", model="m")
    with pytest.raises(InvalidInputError, match="--provider"):
        llm_config("local", provider=None, model="m", server=None, base_url=None)
    with pytest.raises(InvalidInputError, match="needs server_base_url"):
        build_mode_handlers(mode="hybrid", model="m")
    with pytest.raises(InvalidInputError, match="--server"):
        llm_config("hybrid", provider=None, model="m", server=None, base_url=None)
