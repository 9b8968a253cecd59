"""LLM mode options (``--llm local|remote|hybrid`` ...) and the handlers they build.

The options are shared by every command that advances a run (``run``, ``resume``, ``tick``,
``retry``, ``tools approve``, ``tools deny``); each has an ``ABSTRACTRUNTIME_*`` environment
variable. What they mean is the library's (:mod:`abstractruntime.llm_config`): ``run`` records
the configuration in the run's metadata, later commands reuse it with options given again
over it, and a key goes only to the server the operator configured for it. This module
declares the options, tells which were typed, and reads the environment the handlers need.
Credentials never appear on the command line: they are read from the environment only
(``ABSTRACTRUNTIME_API_KEY``, ``ABSTRACTRUNTIME_PROVIDER_API_KEY``; in local mode AbstractCore
also reads the provider's own variables such as ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # the library is imported when a command uses the options, not at start-up
    from abstractruntime.llm_config import LLMConfig, LlmFlags

TIMEOUT_ENV = "ABSTRACTRUNTIME_LLM_TIMEOUT"
STREAM_ENV = "ABSTRACTRUNTIME_LLM_STREAM"

# Reused as defaults by several commands; typer reads each command's signature separately.
LlmOpt = typer.Option(None, "--llm", metavar="MODE", envvar="ABSTRACTRUNTIME_LLM", show_envvar=True,
                      help="Serve llm_call/tool_calls effects: local (AbstractCore in-process), remote "
                           "(a server; tool calls wait for approval) or hybrid (a server; tools run here).")
ProviderOpt = typer.Option(None, "--provider", metavar="NAME", envvar="ABSTRACTRUNTIME_PROVIDER", show_envvar=True,
                           help="AbstractCore provider for --llm local (ollama, openai, openai-compatible ...).")
ModelOpt = typer.Option(None, "--model", metavar="MODEL", envvar="ABSTRACTRUNTIME_MODEL", show_envvar=True,
                        help="Model name (needed with --llm).")
ServerOpt = typer.Option(None, "--server", metavar="URL", envvar="ABSTRACTRUNTIME_SERVER", show_envvar=True,
                         help="Server base URL for --llm remote|hybrid (POST URL/v1/chat/completions).")
BaseUrlOpt = typer.Option(None, "--base-url", metavar="URL", envvar="ABSTRACTRUNTIME_BASE_URL", show_envvar=True,
                          help="The provider's endpoint for --llm local (e.g. http://127.0.0.1:8080/v1).")


# Option name of each configuration field (``mode`` is ``--llm``).
_PARAMS = {"mode": "llm", "provider": "provider", "model": "model", "server": "server", "base_url": "base_url"}


def _typed(ctx: Any, name: str) -> bool:
    """Whether the option of field ``name`` was typed on the command line (not taken from its environment variable)."""
    source = ctx.get_parameter_source(_PARAMS[name]) if hasattr(ctx, "get_parameter_source") else None
    return getattr(source, "name", "") == "COMMANDLINE"


def llm_config_of(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
                  base_url: Optional[str]) -> "Optional[LLMConfig]":
    """The configuration the options make for a new run (:meth:`LlmFlags.config`); ``None`` when
    none is given, without loading the configuration module."""
    if mode is None and provider is None and model is None and server is None and base_url is None:
        return None
    return llm_flags(mode, provider=provider, model=model, server=server, base_url=base_url).config()


def llm_flags(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
              base_url: Optional[str], ctx: Any = None) -> "LlmFlags":
    """The options as given, each checked on its own (:func:`abstractruntime.llm_config.llm_flags`).

    ``ctx`` (the command's context) tells which options were typed on the command line;
    without it every given option counts as typed.
    """
    from abstractruntime.llm_config import llm_flags as library_llm_flags

    typed = None if ctx is None else {name for name in _PARAMS if _typed(ctx, name)}
    return library_llm_flags(mode, provider=provider, model=model, server=server, base_url=base_url, typed=typed)


def _timeout() -> float:
    from abstractruntime.core.errors import InvalidInputError

    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return 60.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"${TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise InvalidInputError(f"${TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def mode_handlers(config: "LLMConfig", tools: Any) -> dict[str, Any]:
    """``{"llm_call": ..., "tool_calls": ...}`` for ``config``; ``tools`` is an executor or ``None``.

    The keys, the timeout, the price table (``--prices``) and streaming (``--stream``) come
    from the environment (:func:`~abstractruntime.integrations.abstractcore.factory.handlers_for_config`);
    rate limits wait (429/503 with Retry-After become a durable timer), the CLI's default.
    """
    from abstractruntime.integrations.abstractcore.factory import handlers_for_config
    from abstractruntime.integrations.abstractcore.usage import prices_from_env
    from abstractruntime.llm_config import API_KEY_ENV, PROVIDER_API_KEY_ENV

    handlers = handlers_for_config(
        config, tools=tools, api_key=os.environ.get(API_KEY_ENV) or None,
        provider_api_key=os.environ.get(PROVIDER_API_KEY_ENV) or None, timeout_s=_timeout(), prices=prices_from_env(),
        stream=os.environ.get(STREAM_ENV, "").strip().lower() in ("1", "true", "yes", "on"), rate_limits="wait")
    return {k.value: v for k, v in handlers.items()}


def llm_run_options(prices: Optional[str], max_in_flight: list[str], stream: bool) -> None:
    """Check the LLM run options now (bad input exits 2 before anything runs) and hand them to
    the handlers this process builds, through the environment variables they read."""
    if prices:
        from abstractruntime.integrations.abstractcore.usage import PRICES_ENV, PriceTable

        PriceTable.load(prices)
        os.environ[PRICES_ENV] = prices
    from abstractruntime.equip import LIMITS_ENV, parse_limits

    items = [*filter(None, [os.environ.get(LIMITS_ENV)]), *max_in_flight]
    if items:
        limits = parse_limits(items)
        os.environ[LIMITS_ENV] = ",".join(f"{k}={v}" for k, v in limits.items())
    if stream:
        os.environ[STREAM_ENV] = "1"


__all__ = ["llm_run_options", "llm_flags", "mode_handlers", "LlmOpt", "ProviderOpt", "ModelOpt", "ServerOpt",
           "BaseUrlOpt", "TIMEOUT_ENV", "STREAM_ENV"]
