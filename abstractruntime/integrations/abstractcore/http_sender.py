"""The one way out to the network for the remote LLM client: a request sender.

A request sender is any object with ``post(url, *, headers, json, timeout) -> dict``. The
default, :class:`HttpxRequestSender`, imports httpx on first use and turns every failure into
an :class:`~abstractruntime.core.errors.EffectFailedError` with ``details``:

==========================  ==============================================  =========
failure                     message starts with                              retryable
==========================  ==============================================  =========
timeout                     ``timed out after Ns``                           yes
connection refused / reset  ``could not connect to URL``                     yes
HTTP 408, 425, 429, 5xx     ``AbstractCore server returned HTTP N``          yes
other HTTP 4xx              ``... HTTP N ... (client error; not retried)``   no
body is not JSON            ``malformed response ... not JSON``              no
==========================  ==============================================  =========

A 429 or 503 that says when to come back (``Retry-After`` or a reset header,
:mod:`.rate_limits`) also carries ``details["retry_after_s"]``: the ``llm_call`` handler turns
it into a durable timer wait instead of a failed attempt.

A timeout is always set: there is no way to make a call that can hang forever.
:meth:`HttpxRequestSender.post_stream` is the streaming form of ``post``: it yields the
server-sent events of a ``"stream": true`` call, with the same errors.
"""

from __future__ import annotations

import contextlib

import json as _json
import threading
from typing import Any, Iterator, Optional, Protocol
from urllib.parse import urlsplit, urlunsplit

from ...core.errors import EffectFailedError
from ._support import scrub, secret_header_values
from .rate_limits import retry_after_seconds
from .streaming import sse_events

RETRYABLE_STATUS = frozenset({408, 425, 429})
_MAX_ECHO_CHARS = 300  # how much of a server's error body is quoted in a failure message


class RequestSender(Protocol):
    """Sends one JSON POST and returns the decoded JSON object."""

    def post(self, url: str, *, headers: dict[str, str], json: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST ``json`` to ``url``; raise on failure."""
        ...


def display_url(url: str) -> str:
    """``url`` without user:password and without a query string (either may hold a key)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def is_retryable_status(status: int) -> bool:
    """True for statuses where the same request may succeed later (5xx, 408, 425, 429)."""
    return status >= 500 or status in RETRYABLE_STATUS


def server_error_text(body: bytes, limit: int = _MAX_ECHO_CHARS) -> str:
    """The most useful line of an error body: ``error.message`` / ``detail`` / the text itself."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = _json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            text = str(err["message"])
        elif isinstance(err, str):
            text = err
        elif data.get("detail"):
            detail = data["detail"]
            if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
                detail = detail["error"].get("message", detail)
            text = str(detail)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def http_status_error(status: int, reason: str, url: str, body: bytes, secrets: list[str],
                      headers: Optional[Any] = None) -> EffectFailedError:
    """The failure for a non-2xx answer, with the retry decision in ``details`` (and, for a 429
    or 503 that says when to come back, ``retry_after_s``)."""
    retryable = is_retryable_status(status)
    kind = ("server error; retryable" if status >= 500 else "retryable") if retryable else "client error; not retried"
    echo = server_error_text(body)
    message = f"AbstractCore server returned HTTP {status} {reason} for POST {display_url(url)}"
    if echo:
        message += f": {echo}"
    retry_after = retry_after_seconds(status, dict(headers.items()) if headers is not None else {})
    if retry_after is not None:
        kind += f"; retry after {retry_after:g} s"
    message = scrub(f"{message} ({kind})", secrets)
    details: dict[str, Any] = {"status_code": status}
    if retry_after is not None:
        details["retry_after_s"] = retry_after
    return EffectFailedError(message, retryable=retryable, **details)


def decode_json_body(body: bytes, url: str) -> dict[str, Any]:
    """The JSON object in ``body``; a non-JSON or non-object body is a non-retryable failure."""
    try:
        data = _json.loads(body)
    except ValueError:
        snippet = " ".join(body[:80].decode("utf-8", "replace").split())
        raise EffectFailedError(
            f"malformed response from {display_url(url)}: body is not JSON (starts with {snippet!r}; not retried)",
            retryable=False,
        ) from None
    if not isinstance(data, dict):
        raise EffectFailedError(
            f"malformed response from {display_url(url)}: expected a JSON object, got {type(data).__name__} "
            "(not retried)",
            retryable=False,
        )
    return data


_shared_client: Optional[Any] = None
_shared_lock = threading.Lock()


def _default_client(httpx: Any) -> Any:
    # One pooled client per process: building one costs tens of milliseconds (TLS context),
    # and every runtime in a worker may share its connections.
    global _shared_client
    with _shared_lock:
        if _shared_client is None or _shared_client.is_closed:
            _shared_client = httpx.Client()
        return _shared_client


class HttpxRequestSender:
    """The default sender over httpx (a process-wide pooled client); ``transport`` is for tests."""

    def __init__(self, *, transport: Any = None) -> None:
        import httpx  # noqa: PLC0415 - remote mode only; the package import must not load it

        self._httpx = httpx
        self._own = transport is not None
        self._client: Any = httpx.Client(transport=transport) if self._own else _default_client(httpx)

    def close(self) -> None:
        """Close this sender's own client (the shared default client stays open)."""
        if self._own:
            self._client.close()

    def post(self, url: str, *, headers: dict[str, str], json: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST and decode, mapping every failure to :class:`EffectFailedError` (see module doc)."""
        httpx = self._httpx
        if not self._own and self._client.is_closed:
            self._client = _default_client(httpx)
        secrets = secret_header_values(headers)
        with _mapped_errors(httpx, url, timeout, secrets):
            resp = self._client.post(url, headers=headers, json=json, timeout=httpx.Timeout(timeout))
        return _decoded(resp, url, secrets)

    def post_stream(self, url: str, *, headers: dict[str, str], json: dict[str, Any],
                    timeout: float) -> Iterator[dict[str, Any]]:
        """POST a streaming request and yield its server-sent events (failures as :meth:`post`'s)."""
        httpx = self._httpx
        if not self._own and self._client.is_closed:
            self._client = _default_client(httpx)
        secrets = secret_header_values(headers)
        with _mapped_errors(httpx, url, timeout, secrets):
            with self._client.stream("POST", url, headers=headers, json=json,
                                     timeout=httpx.Timeout(timeout)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise http_status_error(resp.status_code, resp.reason_phrase or "", url, resp.content, secrets,
                                            resp.headers)
                if _is_json(resp):  # a server that does not stream answers with the whole completion
                    resp.read()
                    yield decode_json_body(resp.content, url)
                    return
                yield from sse_events(resp.iter_lines())


class AsyncHttpxRequestSender:
    """:class:`HttpxRequestSender` over ``httpx.AsyncClient``: the same requests and errors, awaited.

    An ``AsyncClient`` belongs to the event loop it first ran on, so one is kept per loop.
    """

    def __init__(self, *, transport: Any = None) -> None:
        import httpx  # noqa: PLC0415 - remote mode only

        self._httpx = httpx
        self._transport = transport
        self._clients: dict[int, Any] = {}

    def _client(self) -> Any:
        import asyncio  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None or client.is_closed:
            client = self._clients[id(loop)] = self._httpx.AsyncClient(transport=self._transport)
        return client

    async def post(self, url: str, *, headers: dict[str, str], json: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST and decode; failures are :class:`EffectFailedError` exactly as the sync sender's."""
        httpx = self._httpx
        secrets = secret_header_values(headers)
        with _mapped_errors(httpx, url, timeout, secrets):
            resp = await self._client().post(url, headers=headers, json=json, timeout=httpx.Timeout(timeout))
        return _decoded(resp, url, secrets)

    async def post_stream(self, url: str, *, headers: dict[str, str], json: dict[str, Any], timeout: float,
                          on_event: Any) -> None:
        """POST a streaming request, calling ``on_event(event)`` for each server-sent event."""
        httpx = self._httpx
        secrets = secret_header_values(headers)
        with _mapped_errors(httpx, url, timeout, secrets):
            async with self._client().stream("POST", url, headers=headers, json=json,
                                             timeout=httpx.Timeout(timeout)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise http_status_error(resp.status_code, resp.reason_phrase or "", url, resp.content, secrets,
                                            resp.headers)
                if _is_json(resp):
                    await resp.aread()
                    on_event(decode_json_body(resp.content, url))
                    return
                lines: list[str] = []
                async for line in resp.aiter_lines():
                    lines.append(line)
                    for event in sse_events(lines):
                        on_event(event)
                    lines.clear()


@contextlib.contextmanager
def _mapped_errors(httpx: Any, url: str, timeout: float, secrets: list[str]) -> Iterator[None]:
    """Transport failures as :class:`EffectFailedError`, all retryable (the same for both senders)."""
    where = display_url(url)
    try:
        yield
    except httpx.TimeoutException as exc:
        phase = type(exc).__name__.replace("Timeout", "").lower() or "request"
        raise EffectFailedError(
            f"timed out after {timeout:g}s waiting for {where} ({phase} timeout; retryable)",
            retryable=True, error_type=type(exc).__name__,
        ) from None
    except httpx.ConnectError as exc:
        raise EffectFailedError(
            scrub(f"could not connect to {where}: {exc or 'connection refused'} (retryable)", secrets),
            retryable=True, error_type=type(exc).__name__,
        ) from None
    except httpx.TransportError as exc:  # reset, protocol errors, proxy errors
        raise EffectFailedError(
            scrub(f"transport error talking to {where}: {type(exc).__name__}: {exc} (retryable)", secrets),
            retryable=True, error_type=type(exc).__name__,
        ) from None


def _is_json(resp: Any) -> bool:
    return str(resp.headers.get("content-type", "")).split(";")[0].strip().lower() == "application/json"


def _decoded(resp: Any, url: str, secrets: list[str]) -> dict[str, Any]:
    if resp.status_code >= 400:
        raise http_status_error(resp.status_code, resp.reason_phrase or "", url, resp.content, secrets, resp.headers)
    return decode_json_body(resp.content, url)
