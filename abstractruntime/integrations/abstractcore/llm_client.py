"""LLM clients behind the ``llm_call`` effect: in-process AbstractCore, or an AbstractCore server.

Both clients have the same method, ``generate(*, prompt, messages, system_prompt, tools,
params) -> dict``, and return the same JSON-safe shape::

    {"content": str | None, "tool_calls": [{"name", "arguments", "call_id"}] | None,
     "usage": dict | None, "model": str | None, "finish_reason": str | None}

(plus ``"data"`` when AbstractCore returned a structured-output object). Tool calls always
carry a ``call_id``: when the model produced none (prompted tool calling), a deterministic id
is derived from the call itself.

Failures raise :class:`~abstractruntime.core.errors.EffectFailedError` whose
``details["retryable"]`` says whether another attempt could succeed (timeouts, refused
connections, 5xx, 408/429) or not (other 4xx, malformed responses). Error strings never
contain credentials.
"""

from __future__ import annotations

import asyncio

import math
import threading
from typing import Any, Callable, Optional, Protocol

from ...core.errors import EffectFailedError, InvalidInputError
from ._support import import_abstractcore, jsonable, scrub, secret_header_values
from .http_sender import AsyncHttpxRequestSender, HttpxRequestSender, RequestSender, display_url, is_retryable_status
from .logging import get_logger
from .rate_limits import MAX_DELAY_S, MIN_DELAY_S, RATE_LIMIT_STATUSES
from .streaming import CompletionAssembler, joined_stream, streamed_body
from .wire import (
    convert_messages,
    flat_tool_spec,
    normalize_chat_response,
    normalize_generate_response,
    openai_tool_spec,
    wire_messages,
)

logger = get_logger(__name__)

# AbstractCore exception class names whose cause a retry cannot fix.
_NON_RETRYABLE_CORE_ERRORS = frozenset(
    {
        "AuthenticationError",
        "InvalidRequestError",
        "ModelNotFoundError",
        "UnknownProviderError",
        "UnsupportedFeatureError",
        "ConfigurationError",
        "ModelArtifactMismatchError",
    }
)

# Local providers get this HTTP timeout unless llm_kwargs["timeout"] says otherwise.
DEFAULT_LOCAL_TIMEOUT_S = 600.0

# The header carrying the upstream provider's key to an AbstractCore server.
PROVIDER_KEY_HEADER = "X-AbstractCore-Provider-API-Key"

# Body keys the remote client owns; params cannot override them.
_RESERVED_BODY_KEYS = frozenset({"messages", "stream", "tools"})


class AbstractCoreLLMClient(Protocol):
    """What the ``llm_call`` handler needs from an LLM client."""

    def generate(
        self,
        *,
        prompt: str = "",
        messages: Optional[list[dict[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        tools: Optional[list[dict[str, Any]]] = None,
        params: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        """Return ``{content, tool_calls, usage, model, finish_reason}`` (JSON-safe)."""
        ...


def _check_timeout(timeout_s: float) -> float:
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise InvalidInputError(f"timeout_s must be a number of seconds, got {timeout_s!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"timeout_s must be a positive, finite number of seconds, got {timeout_s!r}")
    return value


def _core_error_is_retryable(exc: BaseException) -> bool:
    """AbstractCore's own verdict where it gives one (class, HTTP status), else "transient"."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _NON_RETRYABLE_CORE_ERRORS:
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and not is_retryable_status(status):
        # AbstractCore marks the few 4xx it knows to be sampling accidents as transient
        return "transient" in str(exc).lower()
    return True


# --------------------------------------------------------------------------- local
class LocalAbstractCoreLLMClient:
    """In-process LLM calls through AbstractCore's ``create_llm(provider, model=...).generate``.

    Needs the ``abstractcore`` extra (checked at construction: :class:`MissingExtraError`).
    The provider itself is created on the first call, so building a runtime never touches
    the network; a provider that cannot be reached fails that ``llm_call`` (and is retried
    by the effect policy) instead of failing the process. The endpoint is the operator's
    (``llm_kwargs["base_url"]``, else the provider's default): a payload's ``params.base_url``
    naming another one is ignored with a warning, as upstream 0.0.1 ignored it, so a workflow
    cannot send the operator's key (``llm_kwargs["api_key"]`` or the provider's environment
    variable) to a host of its choosing.

    Unless ``llm_kwargs`` says otherwise, the provider gets a 600 s HTTP ``timeout`` and
    ``retry_config=RetryConfig(max_attempts=1)``: retries belong to the runtime's effect
    policy, where every attempt is recorded.

    ``stream=True`` lets a call stream its text to ``on_text`` (the ``llm_call`` handler does
    so when someone observes the run); a call with tools never streams here.
    """

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        llm_kwargs: Optional[dict[str, Any]] = None,
        llm: Any = None,
        stream: bool = False,
    ) -> None:
        self._core = import_abstractcore("Local LLM mode")
        self.provider = provider
        self.model = model
        self.streams = bool(stream)
        self._llm_kwargs = dict(llm_kwargs or {})
        self._llm: Any = llm
        self._lock = threading.Lock()

    def _secrets(self) -> list[str]:
        return [str(v) for k, v in self._llm_kwargs.items() if "key" in k.lower() or "token" in k.lower() if v]

    def _check_endpoint(self, params: dict[str, Any]) -> None:
        """Drop ``params.base_url``: only the operator's endpoint is used (warn when it names another)."""
        requested = params.pop("base_url", None)
        configured = self._llm_kwargs.get("base_url")
        if requested and str(requested).rstrip("/") != str(configured or "").rstrip("/"):
            logger.warning("llm_call params.base_url ignored: local mode calls only the configured endpoint",
                           requested=display_url(str(requested)),
                           configured=display_url(str(configured)) if configured else "the provider's default")

    def _provider(self) -> Any:
        with self._lock:
            llm = self._llm
            if llm is None:
                kwargs = dict(self._llm_kwargs)
                kwargs.setdefault("timeout", DEFAULT_LOCAL_TIMEOUT_S)
                if "retry_config" not in kwargs:
                    # The runtime's effect policy owns retries (each attempt is a ledger record);
                    # AbstractCore's own retry loop would multiply attempts invisibly.
                    from abstractcore.core.retry import RetryConfig  # noqa: PLC0415 - optional extra

                    kwargs["retry_config"] = RetryConfig(max_attempts=1)
                llm = self._core.create_llm(self.provider, model=self.model, **kwargs)
                self._llm = llm
            return llm

    def generate(
        self,
        *,
        prompt: str = "",
        messages: Optional[list[dict[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        tools: Optional[list[dict[str, Any]]] = None,
        params: Optional[dict[str, Any]] = None,
        on_text: Optional[Callable[[str], None]] = None,
    ) -> dict[str, Any]:
        """Call the model once; see the module docstring for the result.

        With ``on_text`` (and ``stream=True`` at construction, and no tools) the reply streams:
        each piece of text is passed to ``on_text`` as it arrives; the result is the same.
        """
        params = dict(params or {})
        self._check_endpoint(params)
        history = convert_messages(messages) or None
        if not prompt and not history:
            raise InvalidInputError("llm_call requires payload.prompt or payload.messages")
        tool_specs = [flat_tool_spec(t) for t in tools] if tools else None
        stream = bool(on_text is not None and self.streams and not tool_specs)
        try:
            llm = self._provider()
            resp = llm.generate(
                prompt=str(prompt or ""),
                messages=history,
                system_prompt=system_prompt,
                tools=tool_specs,
                stream=stream,
                **params,
            )
            if stream:
                resp = joined_stream(resp, on_text)
        except EffectFailedError:
            raise
        except Exception as exc:  # AbstractCore raises its own tree; classify it without importing it
            raise self._failure(exc) from None
        return normalize_generate_response(resp)

    def _failure(self, exc: BaseException) -> EffectFailedError:
        retryable = _core_error_is_retryable(exc)
        hint = "retryable" if retryable else "not retried"
        message = scrub(f"{self.provider}/{self.model}: {type(exc).__name__}: {exc} ({hint})", self._secrets())
        details: dict[str, Any] = {"error_type": type(exc).__name__}
        status = getattr(exc, "status_code", None)
        delay = getattr(exc, "retry_after_s", None)
        rate_limited = type(exc).__name__ == "RateLimitError" or status in RATE_LIMIT_STATUSES
        if rate_limited and isinstance(delay, (int, float)) and not isinstance(delay, bool) and math.isfinite(delay):
            details["retry_after_s"] = min(max(float(delay), MIN_DELAY_S), MAX_DELAY_S)
        return EffectFailedError(message, retryable=retryable, **details)

    async def agenerate(self, **kwargs: Any) -> dict[str, Any]:
        """:meth:`generate` for an event loop, through the provider's own ``agenerate`` when it has one."""
        if kwargs.get("on_text") is not None:  # a streamed call is iterated in a worker thread
            return await asyncio.to_thread(lambda: self.generate(**kwargs))
        kwargs.pop("on_text", None)
        params = dict(kwargs.get("params") or {})
        self._check_endpoint(params)
        history = convert_messages(kwargs.get("messages")) or None
        prompt = kwargs.get("prompt") or ""
        if not prompt and not history:
            raise InvalidInputError("llm_call requires payload.prompt or payload.messages")
        llm = await asyncio.to_thread(self._provider)  # creating a provider may touch the network
        if not callable(getattr(llm, "agenerate", None)):
            return await asyncio.to_thread(lambda: self.generate(**kwargs))
        tools = kwargs.get("tools")
        try:
            resp = await llm.agenerate(prompt=str(prompt), messages=history, system_prompt=kwargs.get("system_prompt"),
                                       tools=[flat_tool_spec(t) for t in tools] if tools else None, stream=False,
                                       **params)
        except EffectFailedError:
            raise
        except Exception as exc:
            raise self._failure(exc) from None
        return normalize_generate_response(resp)

    @property
    def usage_provider(self) -> str:
        """The provider recorded in ``ext.usage``."""
        return self.provider

    @property
    def usage_model(self) -> str:
        """The model recorded in ``ext.usage``."""
        return self.model


# --------------------------------------------------------------------------- remote
class RemoteAbstractCoreLLMClient:
    """LLM calls over HTTP to an AbstractCore server's ``POST /v1/chat/completions``.

    Needs only httpx (imported on first call), or nothing at all with an injected
    ``request_sender`` (any object with ``post(url, *, headers, json, timeout) -> dict``).
    ``api_key`` is the server's bearer token (``Authorization``); ``provider_api_key`` is
    sent as ``X-AbstractCore-Provider-API-Key`` for the upstream provider. ``params`` are
    sent as top-level body fields (``temperature``, ``max_tokens``, ``base_url`` ...);
    ``params.timeout_s`` overrides the timeout for one call. A call whose ``params.base_url``
    routes it to another endpoint (the payload is the workflow's data, not the operator's
    configuration) is sent without the configured ``provider_api_key``. ``stream=True`` lets a
    call stream (``"stream": true``, server-sent events) when it is given ``on_text`` and the
    sender can (``post_stream``); the result is the same as without streaming.
    """

    def __init__(
        self,
        *,
        server_base_url: str,
        model: str,
        timeout_s: float = 60.0,
        headers: Optional[dict[str, str]] = None,
        request_sender: Optional[RequestSender] = None,
        api_key: Optional[str] = None,
        provider_api_key: Optional[str] = None,
        stream: bool = False,
    ) -> None:
        if not server_base_url or not str(server_base_url).startswith(("http://", "https://")):
            raise InvalidInputError(f"server_base_url must be an http(s) URL, got {server_base_url!r}")
        self.server_base_url = str(server_base_url).rstrip("/")
        self.model = model
        self.timeout_s = _check_timeout(timeout_s)
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if provider_api_key:
            self._headers[PROVIDER_KEY_HEADER] = str(provider_api_key)
        self._sender: Optional[RequestSender] = request_sender
        self._async_sender: Optional[AsyncHttpxRequestSender] = None
        self._stream = bool(stream)

    @property
    def streams(self) -> bool:
        """Whether calls given ``on_text`` stream (asked for, and the sender can)."""
        return self._stream and (self._sender is None or callable(getattr(self._sender, "post_stream", None)))

    @property
    def usage_provider(self) -> str:
        """The provider recorded in ``ext.usage``: the ``provider/`` prefix of the model, else the server."""
        if "/" in self.model:
            return self.model.split("/", 1)[0]
        return display_url(self.server_base_url).split("://", 1)[-1]

    @property
    def usage_model(self) -> str:
        """The model recorded in ``ext.usage`` (without the provider prefix)."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def url(self) -> str:
        """The chat completions endpoint this client posts to."""
        return f"{self.server_base_url}/v1/chat/completions"

    def __repr__(self) -> str:  # never show headers: they hold credentials
        return f"RemoteAbstractCoreLLMClient(server_base_url={display_url(self.server_base_url)!r}, model={self.model!r})"

    def build_request(
        self,
        *,
        prompt: str = "",
        messages: Optional[list[dict[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        tools: Optional[list[dict[str, Any]]] = None,
        params: Optional[dict[str, Any]] = None,
    ) -> tuple[dict[str, str], dict[str, Any], float]:
        """The headers, JSON body and timeout :meth:`generate` would send (no I/O)."""
        params = dict(params or {})
        timeout = _check_timeout(params.pop("timeout_s", self.timeout_s))
        headers = {"Content-Type": "application/json", **self._headers}
        if params.get("base_url"):
            # The call is routed where the payload (data, not the operator) says: the provider
            # key the operator configured is for the server's own routes and stays home. A key
            # the payload brings itself (params.provider_api_key) goes with it.
            headers = {k: v for k, v in headers.items() if k.lower() != PROVIDER_KEY_HEADER.lower()}
        for key in ("api_key", "provider_api_key"):  # a key in params travels as a header, not in the body
            value = params.pop(key, None)
            if value:
                headers[PROVIDER_KEY_HEADER] = str(value)
        body: dict[str, Any] = {
            "model": str(params.pop("model", None) or self.model),
            "messages": wire_messages(prompt=str(prompt or ""), messages=messages, system_prompt=system_prompt),
            "stream": False,
        }
        if tools:
            body["tools"] = [openai_tool_spec(t) for t in tools]
        for key, value in params.items():
            if key not in _RESERVED_BODY_KEYS and value is not None:
                body[key] = jsonable(value)
        return headers, body, timeout

    def generate(
        self,
        *,
        prompt: str = "",
        messages: Optional[list[dict[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        tools: Optional[list[dict[str, Any]]] = None,
        params: Optional[dict[str, Any]] = None,
        on_text: Optional[Callable[[str], None]] = None,
    ) -> dict[str, Any]:
        """POST one chat completion and normalise the answer (see the module docstring)."""
        headers, body, timeout = self.build_request(
            prompt=prompt, messages=messages, system_prompt=system_prompt, tools=tools, params=params
        )
        secrets = secret_header_values(headers)
        if self._sender is None:
            self._sender = HttpxRequestSender()
        try:
            if on_text is not None and self.streams:
                assembler = CompletionAssembler(on_text)
                for event in self._sender.post_stream(  # type: ignore[attr-defined]
                        self.url, headers=headers, json=streamed_body(body), timeout=timeout):
                    assembler.add(event)
                resp = assembler.completion()
            else:
                resp = self._sender.post(self.url, headers=headers, json=body, timeout=timeout)
        except EffectFailedError as exc:
            raise EffectFailedError(scrub(exc.message, secrets), **exc.details) from None
        except Exception as exc:  # an injected sender's own errors: count as transient
            message = scrub(f"request to {display_url(self.url)} failed: {type(exc).__name__}: {exc}", secrets)
            raise EffectFailedError(message, retryable=True, error_type=type(exc).__name__) from None
        return self._normalized(resp, secrets)

    async def agenerate(self, **kwargs: Any) -> dict[str, Any]:
        """:meth:`generate` for an event loop (``httpx.AsyncClient``; an injected synchronous
        ``request_sender`` runs in a worker thread), with the same errors, redaction and timeout."""
        if self._sender is not None:
            return await asyncio.to_thread(lambda: self.generate(**kwargs))
        on_text = kwargs.pop("on_text", None)
        headers, body, timeout = self.build_request(**kwargs)
        secrets = secret_header_values(headers)
        if self._async_sender is None:
            self._async_sender = AsyncHttpxRequestSender()
        try:
            if on_text is not None and self._stream:
                assembler = CompletionAssembler(on_text)
                await self._async_sender.post_stream(self.url, headers=headers, json=streamed_body(body), timeout=timeout,
                                                     on_event=assembler.add)
                resp = assembler.completion()
            else:
                resp = await self._async_sender.post(self.url, headers=headers, json=body, timeout=timeout)
        except EffectFailedError as exc:
            raise EffectFailedError(scrub(exc.message, secrets), **exc.details) from None
        return self._normalized(resp, secrets)

    @staticmethod
    def _normalized(resp: Any, secrets: list[str]) -> dict[str, Any]:
        try:
            return normalize_chat_response(resp)
        except EffectFailedError as exc:
            raise EffectFailedError(scrub(exc.message, secrets), **exc.details) from None

