"""The LLM configuration a run records, and the rules that combine it with what an operator gives.

A configuration is a mode (``local``, ``remote``, ``hybrid``: see
:mod:`abstractruntime.integrations.abstractcore.factory`), a model, and where the model is
served: a provider (local, in-process AbstractCore) or a server (remote, hybrid). ``run --llm``
records it in the run's metadata under ``"llm"`` (:meth:`LLMConfig.to_metadata`, never a key);
later commands reuse it, and options given again override it field by field, a new mode
starting afresh (:func:`resolve_llm`). The fields are named as the command line names them
(``mode`` is ``--llm``), so refusals quote the option to fix.

Credentials are never part of a configuration: they stay in the environment
(:data:`API_KEY_ENV`, :data:`PROVIDER_API_KEY_ENV`). The recorded configuration is data that
anyone who can write the store can edit, so a key goes only to the server the operator
configured for it (:func:`check_key_destination`).

Standard library only, and cheap to import: every command that continues a run asks it,
with or without an LLM.
"""

from __future__ import annotations

import os
from typing import Any, Collection, Mapping, Optional, cast

from .core.errors import InvalidInputError, ServerNotConfiguredError
from .core.fastclass import dataclass  # the standard decorator's code generation would double this import

MODES = ("local", "remote", "hybrid")

API_KEY_ENV = "ABSTRACTRUNTIME_API_KEY"
PROVIDER_API_KEY_ENV = "ABSTRACTRUNTIME_PROVIDER_API_KEY"
SERVER_ENV = "ABSTRACTRUNTIME_SERVER"
BASE_URL_ENV = "ABSTRACTRUNTIME_BASE_URL"


def missing_mode_setting(mode: str, *, provider: Optional[str], server_base_url: Optional[str]) -> Optional[str]:
    """The setting ``mode`` needs and lacks: ``"provider"`` (local) or ``"server_base_url"`` (remote, hybrid).

    ``None`` when nothing is missing; an unknown mode is :class:`InvalidInputError`.
    """
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "local":
        return None if provider else "provider"
    return None if server_base_url else "server_base_url"


def routed_model(provider: Optional[str], model: str) -> str:
    """The model as an AbstractCore server routes it: ``provider/model``.

    A model that already names its provider (it has a ``/``), or one given without a provider,
    goes as given. Price tables are looked up by the same name first (:class:`~.PriceTable`).
    """
    return f"{provider}/{model}" if provider and "/" not in model else model


def check_url(value: str, option: str) -> str:
    """``value`` without a trailing ``/``; :class:`InvalidInputError` naming ``option`` unless http(s)."""
    if not value.startswith(("http://", "https://")):
        raise InvalidInputError(f"{option} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _mode(value: Optional[str]) -> Optional[str]:
    """A mode as typed (any case, spaces around) in its canonical form; ``None`` when empty."""
    mode = (value or "").strip().lower() or None
    if mode is not None and mode not in MODES:
        raise InvalidInputError(f"--llm must be one of: {', '.join(MODES)} (got {mode!r})")
    return mode


@dataclass(frozen=True)
class LLMConfig:
    """A checked LLM configuration (no credentials: those stay in the environment)."""

    mode: str
    model: str
    provider: Optional[str] = None
    server: Optional[str] = None
    base_url: Optional[str] = None

    @property
    def server_model(self) -> str:
        """The model name sent to a server (:func:`routed_model`)."""
        return routed_model(self.provider, self.model)

    def to_metadata(self) -> dict[str, Any]:
        """The form recorded with the run (never a key: keys stay in the environment)."""
        return {"mode": self.mode, "provider": self.provider, "model": self.model,
                "server": self.server, "base_url": self.base_url}

    def describe(self) -> str:
        """A one-line summary for ``-v`` (never includes a key)."""
        where = self.base_url if self.mode == "local" else self.server
        who = f"{self.provider}/{self.model}" if self.provider else self.model
        return f"llm {self.mode}: {who}" + (f" at {where}" if where else "")


def llm_config(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
               base_url: Optional[str]) -> Optional[LLMConfig]:
    """A whole configuration, checked; ``None`` when no mode is given.

    The mode needs a model, local mode a provider, remote and hybrid a server
    (:func:`missing_mode_setting`); URLs are http(s). Each refusal is :class:`InvalidInputError`
    naming the option (and its environment variable) to give.
    """
    checked = _mode(mode)
    if checked is None:
        return None
    if not model:
        raise InvalidInputError(f"--llm {checked} needs --model MODEL (or $ABSTRACTRUNTIME_MODEL)")
    missing = missing_mode_setting(checked, provider=provider, server_base_url=server)
    if missing == "provider":
        raise InvalidInputError("--llm local needs --provider NAME (or $ABSTRACTRUNTIME_PROVIDER), "
                                "e.g. ollama or openai-compatible")
    if missing is not None:
        raise InvalidInputError(f"--llm {checked} needs --server URL (or ${SERVER_ENV}); "
                                "--base-url is for --llm local")
    if checked == "local":
        return LLMConfig(mode=checked, model=model, provider=provider,
                         base_url=check_url(base_url, "--base-url") if base_url else None)
    # missing_mode_setting found a server above.
    return LLMConfig(mode=checked, model=model, provider=provider, server=check_url(cast(str, server), "--server"))


@dataclass(frozen=True)
class LlmFlags:
    """The LLM options one command was given (on its command line or by their environment variables)."""

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
        """These options alone, checked (``None`` without a mode)."""
        return llm_config(self.mode, provider=self.provider, model=self.model, server=self.server,
                          base_url=self.base_url)


def llm_flags(mode: Optional[str], *, provider: Optional[str], model: Optional[str], server: Optional[str],
              base_url: Optional[str], typed: Optional[Collection[str]] = None) -> LlmFlags:
    """The given options, each value checked on its own (before anything is read or written).

    Whether they make a whole configuration is checked when they are used, together with what
    the run recorded (:func:`resolve_llm`). ``typed`` names the fields typed on the command
    line rather than taken from the environment; ``None`` counts every given field as typed.
    """
    flags = LlmFlags(_mode(mode), provider or None, model or None,
                     check_url(server, "--server") if server else None,
                     check_url(base_url, "--base-url") if base_url else None)
    given = flags.given()
    chosen = frozenset(given if typed is None else (name for name in given if name in typed))
    return LlmFlags(flags.mode, flags.provider, flags.model, flags.server, flags.base_url, chosen)


def _recorded(recorded: Any) -> dict[str, Any]:
    """The set fields of a recorded configuration (anything but an object records none)."""
    return {k: v for k, v in recorded.items() if v} if isinstance(recorded, dict) else {}


def resolve_llm(flags: Optional[LlmFlags], recorded: Any) -> tuple[Optional[LLMConfig], bool]:
    """The configuration a command uses for a run, and whether it differs from the recorded one.

    No options: the recorded configuration (or none). Options: the recorded one with the
    given fields replaced; a mode other than the recorded one starts from nothing.
    """
    rec = _recorded(recorded)
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
                          environ: Optional[Mapping[str, str]] = None) -> None:
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
    env: Mapping[str, str] = os.environ if environ is None else environ
    if config.mode == "local":
        field, option, variable = "base_url", "--base-url", BASE_URL_ENV
        keyed = config.base_url is not None
    else:
        field, option, variable = "server", "--server", SERVER_ENV
        keyed = bool(env.get(API_KEY_ENV) or env.get(PROVIDER_API_KEY_ENV))
    used = config.base_url if field == "base_url" else config.server
    if not keyed or used is None:
        return
    configured = check_url(env[variable], option) if env.get(variable) else None
    if flags is not None and field in flags.typed:
        return  # typed on this command line: the operator's choice for this run (recorded)
    named = recorded.get(field) if isinstance(recorded, dict) else None
    named = named.rstrip("/") if isinstance(named, str) and named else None
    if flags is not None and flags.mode and isinstance(recorded, dict) and recorded.get("mode") != flags.mode:
        named = None  # another mode starts afresh: the recorded server is not used at all
    if used == configured and (named is None or named == configured):
        return
    what = named if named is not None and named != configured else used
    where = f"{configured} (${variable})" if configured else f"none (set ${variable})"
    raise ServerNotConfiguredError(
        f"run {run_id} recorded the LLM server {what}, but the API key is configured for {where}; refusing to send "
        f"the key to a server named by the run's data: set ${variable} to the server the key is for, or pass "
        f"{option} URL to move the run to a server you name",
        run_id=run_id, recorded=what, configured=configured)


def llm_for_run(flags: Optional[LlmFlags], recorded: Any, run_id: str,
                environ: Optional[Mapping[str, str]] = None) -> tuple[Optional[LLMConfig], bool]:
    """:func:`resolve_llm`, then :func:`check_key_destination`: what a command continuing
    ``run_id`` uses, checked before any workflow code is imported or any request made."""
    config, changed = resolve_llm(flags, recorded)
    check_key_destination(config, flags, recorded, run_id, environ=environ)
    return config, changed


__all__ = ["MODES", "API_KEY_ENV", "PROVIDER_API_KEY_ENV", "SERVER_ENV", "BASE_URL_ENV", "LLMConfig",
           "LlmFlags", "llm_config", "llm_flags", "resolve_llm", "check_key_destination", "llm_for_run",
           "missing_mode_setting", "routed_model", "check_url"]
