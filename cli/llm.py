"""LLM mode options (``--llm local|remote|hybrid`` ...) and the handlers they build.

The options are shared by every command that advances a run (``run``, ``resume``, ``tick``,
``retry``, ``tools approve``, ``tools deny``); each has an ``ABSTRACTRUNTIME_*`` environment
variable. ``run`` records the configuration (mode, provider, model, server, base URL) in the
run's metadata under ``"llm"``; later commands reuse it, options given again override it
field by field (a new ``--llm`` mode starts afresh) and the override is recorded.
Credentials never appear on the command line: they are read from the environment only
(``ABSTRACTRUNTIME_API_KEY``, ``ABSTRACTRUNTIME_PROVIDER_API_KEY``; in local mode AbstractCore
also reads the provider's own variables such as ``OPENAI_API_KEY``).

A key goes only to the server the operator configured for it, never to one a run recorded
(:func:`check_key_destination`): the recorded configuration is data, which anyone who can
write the store can edit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import typer

API_KEY_ENV = "ABSTRACTRUNTIME_API_KEY"
PROVIDER_API_KEY_ENV = "ABSTRACTRUNTIME_PROVIDER_API_KEY"
TIMEOUT_ENV = "ABSTRACTRUNTIME_LLM_TIMEOUT"
SERVER_ENV = "ABSTRACTRUNTIME_SERVER"
BASE_URL_ENV = "ABSTRACTRUNTIME_BASE_URL"
STREAM_ENV = "ABSTRACTRUNTIME_LLM_STREAM"

# Reused as defaults by several commands; typer reads each command's signature separately.
LlmOpt = typer.Option(None, "--llm", metavar="MODE", envvar="ABSTRACTRUNTIME_LLM", show_envvar=True,
                      help="Serve llm_call/tool_calls effects: local (AbstractCore in-process), remote "
                           "(a server; tool calls wait for approval) or hybrid (a server; tools run here).")
ProviderOpt = typer.Option(None, "--provider", metavar="NAME", envvar="ABSTRACTRUNTIME_PROVIDER", show_envvar=True,
                           help="AbstractCore provider for --llm local (ollama, openai, openai-compatible ...).")
ModelOpt = typer.Option(None, "--model", metavar="MODEL", envvar="ABSTRACTRUNTIME_MODEL", show_envvar=True,
                        help="Model name (needed with --llm).")
ServerOpt = typer.Option(None, "--server", metavar="URL", envvar=SERVER_ENV, show_envvar=True,
                         help="Server base URL for --llm remote|hybrid (POST URL/v1/chat/completions).")
BaseUrlOpt = typer.Option(None, "--base-url", metavar="URL", envvar=BASE_URL_ENV, show_envvar=True,
                          help="The provider's endpoint for --llm local (e.g. http://127.0.0.1:8080/v1).")


@dataclass(frozen=True)
class LLMConfig:
    """A validated ``--llm`` configuration (no credentials: those stay in the environment)."""

    mode: str
    model: str
    provider: Optional[str] = None
    server: Optional[str] = None
    base_url: Optional[str] = None

    def to_metadata(self) -> dict[str, Any]:
        """The form recorded with the run (never a key: keys stay in the environment)."""
        return {"mode": self.mode, "provider": self.provider, "model": self.model,
                "server": self.server, "base_url": self.base_url}

    def describe(self) -> str:
        """A one-line summary for ``-v`` (never includes a key)."""
        where = self.base_url if self.mode == "local" else self.server
        who = f"{self.provider}/{self.model}" if self.provider else self.model
        return f"llm {self.mode}: {who}" + (f" at {where}" if where else "")


def _check_url(value: str, option: str) -> str:
    from abstractruntime.core.errors import InvalidInputError

    if not value.startswith(("http://", "https://")):
        raise InvalidInputError(f"{option} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def llm_config(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
               base_url: Optional[str]) -> Optional[LLMConfig]:
    """Check the LLM options; ``None`` when ``--llm`` (and ``$ABSTRACTRUNTIME_LLM``) is not set."""
    from abstractruntime.core.errors import InvalidInputError

    mode = (mode or "").strip().lower() or None
    if mode is None:
        return None
    from abstractruntime.integrations.abstractcore.factory import MODES, missing_mode_setting

    if mode not in MODES:
        raise InvalidInputError(f"--llm must be one of: {', '.join(MODES)} (got {mode!r})")
    if not model:
        raise InvalidInputError(f"--llm {mode} needs --model MODEL (or $ABSTRACTRUNTIME_MODEL)")
    missing = missing_mode_setting(mode, provider=provider, server_base_url=server)
    if missing == "provider":
        raise InvalidInputError("--llm local needs --provider NAME (or $ABSTRACTRUNTIME_PROVIDER), "
                                "e.g. ollama or openai-compatible")
    if missing is not None:
        raise InvalidInputError(f"--llm {mode} needs --server URL (or $ABSTRACTRUNTIME_SERVER); "
                                "--base-url is for --llm local")
    if mode == "local":
        return LLMConfig(mode=mode, model=model, provider=provider,
                         base_url=_check_url(base_url, "--base-url") if base_url else None)
    return LLMConfig(mode=mode, model=model, provider=provider, server=_check_url(server, "--server"))


@dataclass(frozen=True)
class LlmFlags:
    """The LLM options as given on one command line (or by their environment variables)."""

    mode: Optional[str] = None
    provider: Optional[str] = None
    model: Optional[str] = None
    server: Optional[str] = None
    base_url: Optional[str] = None
    typed: frozenset[str] = frozenset()  # the fields typed on the command line (not from the environment)

    def given(self) -> dict[str, str]:
        """The options that were set, by field name."""
        return {k: v for k, v in (("mode", self.mode), ("provider", self.provider), ("model", self.model),
                                  ("server", self.server), ("base_url", self.base_url)) if v}

    def config(self) -> Optional[LLMConfig]:
        """These options alone, checked (``None`` without ``--llm``)."""
        return llm_config(self.mode, provider=self.provider, model=self.model, server=self.server,
                          base_url=self.base_url)


def _typed(ctx: Any, name: str) -> bool:
    """Whether option ``name`` was typed on the command line (not taken from its environment variable)."""
    source = ctx.get_parameter_source(name) if hasattr(ctx, "get_parameter_source") else None
    return getattr(source, "name", "") == "COMMANDLINE"


def llm_flags(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
              base_url: Optional[str], ctx: Any = None) -> LlmFlags:
    """Collect the options, checking each given value on its own (before anything is read or written).

    Whether they make a whole configuration is checked when they are used, together with
    what the run recorded (``resolve_llm``). ``ctx`` (the command's context) tells which
    options were typed on the command line; without it every given option counts as typed.
    """
    from abstractruntime.core.errors import InvalidInputError

    mode = (mode or "").strip().lower() or None
    if mode is not None:
        from abstractruntime.integrations.abstractcore.factory import MODES

        if mode not in MODES:
            raise InvalidInputError(f"--llm must be one of: {', '.join(MODES)} (got {mode!r})")
    flags = LlmFlags(mode, provider or None, model or None,
                     _check_url(server, "--server") if server else None,
                     _check_url(base_url, "--base-url") if base_url else None)
    typed = {name for name in flags.given() if ctx is None or _typed(ctx, name)}
    return LlmFlags(flags.mode, flags.provider, flags.model, flags.server, flags.base_url, frozenset(typed))


def resolve_llm(flags: Optional[LlmFlags], recorded: Any) -> tuple[Optional[LLMConfig], bool]:
    """The configuration a command uses for a run, and whether it differs from the recorded one.

    No options: the recorded configuration (or none). Options: the recorded one with the
    given fields replaced; a ``--llm`` mode other than the recorded one starts from nothing.
    """
    rec = {k: v for k, v in recorded.items() if v} if isinstance(recorded, dict) else {}
    given = flags.given() if flags is not None else {}
    if not given:
        if not rec:
            return None, False
        return llm_config(rec.get("mode"), provider=rec.get("provider"), model=rec.get("model"),
                          server=rec.get("server"), base_url=rec.get("base_url")), False
    base = rec if given.get("mode", rec.get("mode")) == rec.get("mode") else {}
    merged = {**base, **given}
    config = llm_config(merged.get("mode"), provider=merged.get("provider"), model=merged.get("model"),
                        server=merged.get("server"), base_url=merged.get("base_url"))
    changed = config is not None and {k: v for k, v in config.to_metadata().items() if v} != rec
    return config, changed


def check_key_destination(config: Optional[LLMConfig], flags: Optional[LlmFlags], recorded: Any, run_id: str,
                          environ: Optional[Any] = None) -> None:
    """Refuse to send an API key to a server the operator did not configure for it.

    The server a key may go to is the one configured for it: ``$ABSTRACTRUNTIME_SERVER``
    (remote, hybrid) or ``$ABSTRACTRUNTIME_BASE_URL`` (local), or the one typed on this
    command line (``--server`` / ``--base-url``: the operator moves the run there, and it is
    recorded). With a key set (remote, hybrid: ``$ABSTRACTRUNTIME_API_KEY`` or
    ``$ABSTRACTRUNTIME_PROVIDER_API_KEY``; local: any provider endpoint, since AbstractCore
    reads the providers' own key variables), a server the run recorded that is not the
    configured one is refused with :class:`ServerNotConfiguredError` naming both; nothing is
    sent. Without a key the recorded server is used as before.
    """
    if config is None:
        return
    env = os.environ if environ is None else environ
    if config.mode == "local":
        field, option, variable = "base_url", "--base-url", BASE_URL_ENV
        keyed = config.base_url is not None
    else:
        field, option, variable = "server", "--server", SERVER_ENV
        keyed = bool(env.get(API_KEY_ENV) or env.get(PROVIDER_API_KEY_ENV))
    used = getattr(config, field)
    if not keyed or used is None:
        return
    configured = _check_url(env[variable], option) if env.get(variable) else None
    if flags is not None and field in flags.typed:
        return  # typed on this command line: the operator's choice for this run (recorded)
    named = recorded.get(field) if isinstance(recorded, dict) else None
    named = named.rstrip("/") if isinstance(named, str) and named else None
    if flags is not None and flags.mode and isinstance(recorded, dict) and recorded.get("mode") != flags.mode:
        named = None  # another --llm mode starts afresh: the recorded server is not used at all
    if used == configured and (named is None or named == configured):
        return
    from abstractruntime.core.errors import ServerNotConfiguredError

    what = named if named is not None and named != configured else used
    where = f"{configured} (${variable})" if configured else f"none (set ${variable})"
    raise ServerNotConfiguredError(
        f"run {run_id} recorded the LLM server {what}, but the API key is configured for {where}; refusing to send "
        f"the key to a server named by the run's data: set ${variable} to the server the key is for, or pass "
        f"{option} URL to move the run to a server you name",
        run_id=run_id, recorded=what, configured=configured)


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


def mode_handlers(config: LLMConfig, tools: Any) -> dict[str, Any]:
    """``{"llm_call": ..., "tool_calls": ...}`` for ``config``; ``tools`` is an executor or ``None``.

    Remote mode passes every tool call through (the run waits for ``tools approve``); local
    and hybrid run them with ``tools`` (``None`` means AbstractCore's global registry).
    """
    from abstractruntime.integrations.abstractcore import build_mode_handlers
    from abstractruntime.integrations.abstractcore.usage import prices_from_env

    api_key = os.environ.get(API_KEY_ENV) or None
    # The price table in force (--prices, $ABSTRACTRUNTIME_PRICES) and streaming (--stream);
    # rate limits wait (429/503 with Retry-After become a durable timer), the CLI's default.
    extra: dict[str, Any] = {"prices": prices_from_env(), "rate_limits": "wait",
                             "stream": os.environ.get(STREAM_ENV, "").strip().lower() in ("1", "true", "yes", "on")}
    if config.mode == "local":
        llm_kwargs: dict[str, Any] = {}
        if config.base_url:
            llm_kwargs["base_url"] = config.base_url
            # An OpenAI-compatible endpoint without a key still needs a value to build the client.
            llm_kwargs["api_key"] = api_key or ""
        elif api_key:
            llm_kwargs["api_key"] = api_key
        handlers = build_mode_handlers(mode="local", provider=config.provider, model=config.model,
                                       tools=tools, llm_kwargs=llm_kwargs or None, **extra)
    else:
        # An AbstractCore server routes "provider/model"; a bare model goes as given.
        model = config.model
        if config.provider and "/" not in model:
            model = f"{config.provider}/{model}"
        handlers = build_mode_handlers(
            mode=config.mode, model=model, server_base_url=config.server,
            tools=tools if config.mode == "hybrid" else None, timeout_s=_timeout(), api_key=api_key,
            provider_api_key=os.environ.get(PROVIDER_API_KEY_ENV) or None, **extra,
        )
    return {getattr(k, "value", k): v for k, v in handlers.items()}


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
        os.environ["ABSTRACTRUNTIME_LLM_STREAM"] = "1"


__all__ = ["llm_run_options", "LLMConfig", "LlmFlags", "llm_flags", "resolve_llm", "llm_config", "check_key_destination", "mode_handlers",
           "LlmOpt", "ProviderOpt", "ModelOpt", "ServerOpt", "BaseUrlOpt", "API_KEY_ENV", "PROVIDER_API_KEY_ENV",
           "SERVER_ENV", "BASE_URL_ENV"]
