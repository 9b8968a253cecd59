"""Runtimes wired to AbstractCore in one of three modes.

=========  =============================================  ==========================================
mode       ``llm_call``                                   ``tool_calls``
=========  =============================================  ==========================================
local      in-process ``create_llm(provider, model)``     executed here (the given tools only)
remote     HTTP to an AbstractCore server                 passed through: the run waits for approval
hybrid     HTTP to an AbstractCore server                 executed here (the given tools only)
=========  =============================================  ==========================================

Stores: pass ``run_store`` and ``ledger_store`` (e.g. in-memory) or neither, in which case
the file stores under ``store_dir`` are used (default ``$ABSTRACTRUNTIME_STORE`` or
``./.abstractruntime``). The default effect policy attempts an ``llm_call`` up to 3 times
(exponential backoff from 1 s) and everything else once; non-retryable failures (HTTP 4xx,
malformed responses) are never repeated.

Rate limits: with ``rate_limits="wait"`` — the default of :func:`build_mode_handlers`,
:func:`create_remote_runtime` and :func:`create_hybrid_runtime` — a 429/503 that says when to
come back is a durable timer wait, not a failed attempt. :func:`create_local_runtime` keeps
upstream 0.0.1's behaviour (``"fail"``) unless told ``rate_limits="wait"``. ``prices`` (a
:class:`~.usage.PriceTable`) prices each call's recorded usage; ``stream=True`` lets calls
stream their text to whoever watches the run.

:func:`build_mode_handlers` gives the handlers alone, for a caller that builds its own
``Runtime``; :func:`handlers_for_config` gives them for a configuration a run recorded
(:mod:`abstractruntime.llm_config`), as the CLI does.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Optional, Union, cast

from ...core.errors import InvalidInputError
from ...core.models import EffectType
from ...core.policy import DefaultEffectPolicy, EffectPolicy
from ...core.runtime import Runtime
from ...llm_config import MODES as MODES  # the modes this module builds (defined with their rules)
from ...llm_config import LLMConfig, missing_mode_setting
from ...storage.base import LedgerStore, RunStore
from ._support import abstractcore_installed
from .effect_handlers import build_effect_handlers
from .http_sender import RequestSender
from .llm_client import LocalAbstractCoreLLMClient, RemoteAbstractCoreLLMClient
from .usage import PriceTable
from .tool_executor import (
    AbstractCoreToolExecutor,
    LocalToolExecutor,
    PassthroughToolExecutor,
    ToolExecutor,
    ToolsArg,
    tools_by_name,
)

ToolsSpec = Union[ToolExecutor, ToolsArg, None]


def default_effect_policy() -> EffectPolicy:
    """LLM calls: up to 3 attempts, backoff 1 s then 2 s. Everything else: one attempt."""
    return DefaultEffectPolicy(default_max_attempts=1, default_backoff_base=1.0, default_backoff_max=30.0,
                               effect_max_attempts={EffectType.LLM_CALL.value: 3})


def make_tool_executor(tools: ToolsSpec, *, prefer: str = "auto", max_threads: int = 0) -> ToolExecutor:
    """An executor for ``tools``: returned as is when it already has ``execute``.

    Callables (a list, or a ``{name: callable}`` dict) run through AbstractCore's registry when
    AbstractCore is installed (``prefer="auto"``; it coerces LLM-produced argument types), else
    through the pure-Python :class:`LocalToolExecutor`. ``prefer="local"`` or
    ``"abstractcore"`` forces one. ``None`` → an AbstractCore executor over its global registry.
    ``async def`` tools, or ``max_threads`` > 0 (a pool for plain tools), choose the local
    executor, whose calls of one effect run concurrently.
    """
    if tools is not None and callable(getattr(tools, "execute", None)):
        return tools  # type: ignore[return-value]
    if prefer not in ("auto", "local", "abstractcore"):
        raise InvalidInputError(f"prefer must be 'auto', 'local' or 'abstractcore', not {prefer!r}")
    if tools is None:
        return AbstractCoreToolExecutor()
    concurrent = max_threads > 0 or any(inspect.iscoroutinefunction(fn)
                                        for fn in tools_by_name(tools).values())  # type: ignore[arg-type]
    if prefer == "local" or (prefer == "auto" and concurrent):
        # Calls that can overlap (async tools, or a thread pool the workflow asked for) run
        # through the local executor, which awaits them concurrently.
        return LocalToolExecutor(tools, max_threads=max_threads)  # type: ignore[arg-type]
    if prefer == "abstractcore" or (prefer == "auto" and abstractcore_installed()):
        return AbstractCoreToolExecutor(tools)  # type: ignore[arg-type]
    return LocalToolExecutor(tools)  # type: ignore[arg-type]


def build_mode_handlers(
    *,
    mode: str,
    model: str,
    provider: Optional[str] = None,
    server_base_url: Optional[str] = None,
    tools: ToolsSpec = None,
    llm_kwargs: Optional[dict[str, Any]] = None,
    headers: Optional[dict[str, str]] = None,
    timeout_s: float = 60.0,
    api_key: Optional[str] = None,
    provider_api_key: Optional[str] = None,
    request_sender: Optional[RequestSender] = None,
    rate_limits: str = "wait",
    prices: Optional[PriceTable] = None,
    stream: bool = False,
    slot_key: Optional[str] = None,
) -> dict[EffectType, Any]:
    """The ``llm_call`` / ``tool_calls`` handlers for ``mode`` (``local``, ``remote``, ``hybrid``).

    ``local`` needs ``provider``; ``remote`` and ``hybrid`` need ``server_base_url``. In remote
    mode ``tools`` is ignored unless it is an executor (tools are passed through by default).
    ``rate_limits``, ``prices``, ``stream`` and ``slot_key``: see the module docstring and
    :func:`~.effect_handlers.make_llm_call_handler`.
    """
    missing = missing_mode_setting(mode, provider=provider, server_base_url=server_base_url)
    if missing == "provider":
        raise InvalidInputError("local mode needs a provider (e.g. 'ollama', 'openai-compatible')")
    if missing is not None:
        raise InvalidInputError(f"{mode} mode needs server_base_url (an AbstractCore server)")
    if mode == "local":
        llm: Any = LocalAbstractCoreLLMClient(provider=cast(str, provider), model=model, llm_kwargs=llm_kwargs,
                                              stream=stream)
        executor = make_tool_executor(tools) if tools is not None else _default_local_tools()
    else:
        llm = RemoteAbstractCoreLLMClient(
            server_base_url=cast(str, server_base_url), model=model, timeout_s=timeout_s, headers=headers,
            request_sender=request_sender, api_key=api_key, provider_api_key=provider_api_key, stream=stream,
        )
        if mode == "remote":
            has_execute = tools is not None and callable(getattr(tools, "execute", None))
            executor = tools if has_execute else PassthroughToolExecutor()  # type: ignore[assignment]
        elif tools is None:
            # Hybrid needs only httpx: AbstractCore's global registry is reached (and the extra
            # needed) only when a tool call actually arrives.
            executor = GlobalRegistryExecutor()
        else:
            executor = make_tool_executor(tools)
    return build_effect_handlers(llm=llm, tools=executor, rate_limits=rate_limits, prices=prices, slot_key=slot_key)


def handlers_for_config(
    config: LLMConfig,
    *,
    tools: ToolsSpec = None,
    api_key: Optional[str] = None,
    provider_api_key: Optional[str] = None,
    timeout_s: float = 60.0,
    prices: Optional[PriceTable] = None,
    stream: bool = False,
    rate_limits: str = "wait",
) -> dict[EffectType, Any]:
    """The handlers of a run's recorded configuration (:class:`~abstractruntime.llm_config.LLMConfig`).

    Local mode hands ``api_key`` to the provider's client; with a ``base_url`` (an
    OpenAI-compatible endpoint) the client gets a key even when none is set, since it needs a
    value to be built. Remote and hybrid send the model as ``provider/model``
    (:func:`~abstractruntime.llm_config.routed_model`); remote passes tool calls through (the
    run waits for approval) and hybrid runs them with ``tools``. Keys come from the caller,
    never from the configuration.
    """
    if config.mode == "local":
        llm_kwargs: dict[str, Any] = {}
        if config.base_url:
            llm_kwargs["base_url"] = config.base_url
            llm_kwargs["api_key"] = api_key or ""
        elif api_key:
            llm_kwargs["api_key"] = api_key
        return build_mode_handlers(mode="local", provider=config.provider, model=config.model, tools=tools,
                                   llm_kwargs=llm_kwargs or None, prices=prices, stream=stream,
                                   rate_limits=rate_limits)
    return build_mode_handlers(mode=config.mode, model=config.server_model, server_base_url=config.server,
                               tools=tools if config.mode == "hybrid" else None, timeout_s=timeout_s,
                               api_key=api_key, provider_api_key=provider_api_key, prices=prices, stream=stream,
                               rate_limits=rate_limits)


class GlobalRegistryExecutor:
    """AbstractCore's global tool registry, opened at the first tool call, not when built.

    What ``tools=None`` means in hybrid mode: a runtime whose workflow has no tools of its own
    does not need AbstractCore installed until one of its ``tool_calls`` effects runs (then a
    missing extra is that effect's :class:`~abstractruntime.core.errors.MissingExtraError`).
    """

    def __init__(self) -> None:
        self._inner: Optional[AbstractCoreToolExecutor] = None
        self._lock = threading.Lock()  # one runtime may run tool calls of several runs at once

    def _executor(self) -> AbstractCoreToolExecutor:
        with self._lock:
            if self._inner is None:
                self._inner = AbstractCoreToolExecutor()
            return self._inner

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run ``tool_calls`` through AbstractCore's global registry."""
        return self._executor().execute(tool_calls=tool_calls)


def _default_local_tools() -> ToolExecutor:
    # Local mode without tools: AbstractCore's global registry (where register_tool puts them).
    return AbstractCoreToolExecutor()


def _stores(
    run_store: Optional[RunStore], ledger_store: Optional[LedgerStore], store_dir: Optional[Union[str, os.PathLike[str]]]
) -> tuple[RunStore, LedgerStore]:
    if (run_store is None) != (ledger_store is None):
        raise InvalidInputError("pass both run_store and ledger_store, or neither (file stores under store_dir)")
    if run_store is not None and ledger_store is not None:
        return run_store, ledger_store
    from ...storage.json_files import JsonFileRunStore, JsonlLedgerStore  # noqa: PLC0415
    from ...storage.store import default_store_path  # noqa: PLC0415

    root = default_store_path(store_dir)
    return JsonFileRunStore(root), JsonlLedgerStore(root)


def _runtime(
    handlers: dict[EffectType, Any],
    *,
    run_store: Optional[RunStore],
    ledger_store: Optional[LedgerStore],
    store_dir: Optional[Union[str, os.PathLike[str]]],
    effect_policy: Optional[EffectPolicy],
    effect_handlers: Optional[dict[Any, Any]],
    runtime_kwargs: dict[str, Any],
) -> Runtime:
    runs, ledger = _stores(run_store, ledger_store, store_dir)
    merged: dict[Any, Any] = dict(handlers)
    merged.update(effect_handlers or {})  # the caller's own handlers win
    return Runtime(run_store=runs, ledger_store=ledger, effect_handlers=merged,
                   effect_policy=effect_policy or default_effect_policy(), **runtime_kwargs)


def create_local_runtime(
    *,
    provider: str,
    model: str,
    run_store: Optional[RunStore] = None,
    ledger_store: Optional[LedgerStore] = None,
    store_dir: Optional[Union[str, os.PathLike[str]]] = None,
    effect_policy: Optional[EffectPolicy] = None,
    tools: ToolsSpec = None,
    llm_kwargs: Optional[dict[str, Any]] = None,
    tool_executor: Optional[ToolExecutor] = None,
    effect_handlers: Optional[dict[Any, Any]] = None,
    rate_limits: str = "fail",
    prices: Optional[PriceTable] = None,
    stream: bool = False,
    **runtime_kwargs: Any,
) -> Runtime:
    """A runtime whose LLM runs in-process through AbstractCore and whose tools run here.

    ``tools``: callables, a ``{name: callable}`` dict or an executor; none → AbstractCore's
    global tool registry. ``llm_kwargs`` go to ``create_llm`` (``base_url``, ``api_key`` ...).
    ``rate_limits`` is ``"fail"`` as in upstream 0.0.1 (a 429 is a failed attempt); pass
    ``"wait"`` to wait out ``Retry-After`` on a durable timer instead.
    Extra keyword arguments (``context``, ``artifact_store``, ``clock`` ...) go to ``Runtime``.
    """
    handlers = build_mode_handlers(mode="local", provider=provider, model=model,
                                   tools=tool_executor or tools, llm_kwargs=llm_kwargs, rate_limits=rate_limits,
                                   prices=prices, stream=stream)
    return _runtime(handlers, run_store=run_store, ledger_store=ledger_store, store_dir=store_dir,
                    effect_policy=effect_policy, effect_handlers=effect_handlers, runtime_kwargs=runtime_kwargs)


def create_remote_runtime(
    *,
    server_base_url: str,
    model: str,
    headers: Optional[dict[str, str]] = None,
    timeout_s: float = 60.0,
    api_key: Optional[str] = None,
    provider_api_key: Optional[str] = None,
    run_store: Optional[RunStore] = None,
    ledger_store: Optional[LedgerStore] = None,
    store_dir: Optional[Union[str, os.PathLike[str]]] = None,
    effect_policy: Optional[EffectPolicy] = None,
    tool_executor: Optional[ToolExecutor] = None,
    request_sender: Optional[RequestSender] = None,
    effect_handlers: Optional[dict[Any, Any]] = None,
    rate_limits: str = "wait",
    prices: Optional[PriceTable] = None,
    stream: bool = False,
    **runtime_kwargs: Any,
) -> Runtime:
    """A runtime whose LLM is an AbstractCore server and whose tool calls wait for approval.

    Needs no AbstractCore install (httpx only). ``api_key`` is the server's bearer token,
    ``provider_api_key`` the upstream provider's key (``X-AbstractCore-Provider-API-Key``).
    """
    handlers = build_mode_handlers(
        mode="remote", model=model, server_base_url=server_base_url, tools=tool_executor, headers=headers,
        timeout_s=timeout_s, api_key=api_key, provider_api_key=provider_api_key, request_sender=request_sender,
        rate_limits=rate_limits, prices=prices, stream=stream,
    )
    return _runtime(handlers, run_store=run_store, ledger_store=ledger_store, store_dir=store_dir,
                    effect_policy=effect_policy, effect_handlers=effect_handlers, runtime_kwargs=runtime_kwargs)


def create_hybrid_runtime(
    *,
    server_base_url: str,
    model: str,
    tools: ToolsSpec = None,
    headers: Optional[dict[str, str]] = None,
    timeout_s: float = 60.0,
    api_key: Optional[str] = None,
    provider_api_key: Optional[str] = None,
    run_store: Optional[RunStore] = None,
    ledger_store: Optional[LedgerStore] = None,
    store_dir: Optional[Union[str, os.PathLike[str]]] = None,
    effect_policy: Optional[EffectPolicy] = None,
    request_sender: Optional[RequestSender] = None,
    effect_handlers: Optional[dict[Any, Any]] = None,
    rate_limits: str = "wait",
    prices: Optional[PriceTable] = None,
    stream: bool = False,
    **runtime_kwargs: Any,
) -> Runtime:
    """A runtime whose LLM is an AbstractCore server and whose tools run here.

    ``tools``: callables, a ``{name: callable}`` dict or an executor. Callables run through
    AbstractCore's registry when it is installed, else as plain Python; ``None`` means
    AbstractCore's global registry (needs the extra).
    """
    handlers = build_mode_handlers(
        mode="hybrid", model=model, server_base_url=server_base_url, tools=tools, headers=headers,
        timeout_s=timeout_s, api_key=api_key, provider_api_key=provider_api_key, request_sender=request_sender,
        rate_limits=rate_limits, prices=prices, stream=stream,
    )
    return _runtime(handlers, run_store=run_store, ledger_store=ledger_store, store_dir=store_dir,
                    effect_policy=effect_policy, effect_handlers=effect_handlers, runtime_kwargs=runtime_kwargs)
