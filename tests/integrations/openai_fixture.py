"""A small, real OpenAI-compatible HTTP server for tests.

It listens on 127.0.0.1 on a free port (stdlib ``http.server`` in a thread) and answers
``GET /v1/models`` and ``POST /v1/chat/completions`` from a script of replies. Every request
is recorded (method, path, headers, parsed JSON body) so tests can assert what a client sent.

Replies are taken from a FIFO queue (:meth:`OpenAIFixture.script`); when the queue is empty
the optional ``responder(body) -> Reply`` decides, else the server answers 500 so a test that
forgot to script a reply fails loudly instead of hanging.

A reply may carry headers (``Retry-After`` on a 429). A request with ``"stream": true`` gets
its 200 reply as server-sent events, one word of the content per event (``token_delay_s``
apart) and the usage in the last one. :attr:`OpenAIFixture.max_in_flight` is the most chat
requests the server was answering at the same time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union


@dataclass
class Reply:
    """One scripted HTTP reply: a status, a body (dict → JSON, str/bytes → raw) and a delay."""

    status: int = 200
    body: Union[dict[str, Any], str, bytes] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    token_delay_s: float = 0.0


@dataclass
class RecordedRequest:
    """A request the fixture received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


def chat_completion(
    *,
    content: Optional[str] = None,
    tool_calls: Optional[list[dict[str, Any]]] = None,
    model: str = "fixture-model",
    finish_reason: Optional[str] = None,
    usage: Optional[dict[str, int]] = None,
) -> dict[str, Any]:
    """An OpenAI chat.completion object; ``tool_calls`` are ``{id?, name, arguments(dict)}``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.get("id", f"call_{i}"),
                "type": "function",
                "function": {"name": tc["name"], "arguments": json.dumps(tc.get("arguments", {}))},
            }
            for i, tc in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-fixture",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenAIFixture:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, *, models: tuple[str, ...] = ("fixture-model",)) -> None:
        self.models = models
        self.requests: list[RecordedRequest] = []
        self.responder: Optional[Callable[[Any], Reply]] = None
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "OpenAIFixture":
        """Bind a free loopback port and serve in a daemon thread."""
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

            def do_GET(self) -> None:
                fixture._record(self, None)
                if self.path.rstrip("/") == "/v1/models":
                    data = [{"id": m, "object": "model", "owned_by": "fixture"} for m in fixture.models]
                    self._send(Reply(body={"object": "list", "data": data}))
                else:
                    self._send(Reply(status=404, body={"error": {"message": f"no route {self.path}"}}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                fixture._record(self, body)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(Reply(status=404, body={"error": {"message": f"no route {self.path}"}}))
                    return
                with fixture._lock:
                    fixture.in_flight += 1
                    fixture.max_in_flight = max(fixture.max_in_flight, fixture.in_flight)
                try:
                    reply = fixture._next_reply(body)
                    if isinstance(body, dict) and body.get("stream") and reply.status == 200 \
                            and isinstance(reply.body, dict):
                        self._stream(reply)
                    else:
                        self._send(reply)
                finally:
                    with fixture._lock:
                        fixture.in_flight -= 1

            def _stream(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                assert isinstance(reply.body, dict)
                doc = reply.body
                message = doc["choices"][0]["message"]
                words = (message.get("content") or "").split(" ")
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for i, word in enumerate(w for w in words if w or len(words) == 1):
                        piece = word if i == 0 else " " + word
                        self._event({"model": doc["model"], "choices": [
                            {"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                        if reply.token_delay_s:
                            time.sleep(reply.token_delay_s)
                    if message.get("tool_calls"):
                        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                        self._event({"model": doc["model"], "choices": [
                            {"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]})
                    self._event({"model": doc["model"], "choices": [
                        {"index": 0, "delta": {}, "finish_reason": doc["choices"][0]["finish_reason"]}]})
                    self._event({"model": doc["model"], "choices": [], "usage": doc.get("usage")})
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def _event(self, data: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(data).encode("utf-8") + b"\n\n")
                self.wfile.flush()

            def _send(self, reply: Reply) -> None:
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if isinstance(reply.body, dict):
                    data = json.dumps(reply.body).encode("utf-8")
                elif isinstance(reply.body, str):
                    data = reply.body.encode("utf-8")
                else:
                    data = reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests); nothing to tell it

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a delayed reply must not hold up stop()
        self._server = server
        # a short poll interval keeps stop() (and so every test's teardown) fast
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="openai-fixture", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "OpenAIFixture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration -------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._server is not None, "fixture not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (an AbstractCore-server-style base URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (an OpenAI-style base URL)."""
        return f"{self.base_url}/v1"

    def script(self, *replies: Union[Reply, dict[str, Any]]) -> None:
        """Queue replies for the next chat requests (a dict is a 200 JSON body)."""
        with self._lock:
            for reply in replies:
                self._queue.append(reply if isinstance(reply, Reply) else Reply(body=reply))

    def chat_requests(self) -> list[RecordedRequest]:
        """The chat completion requests received so far."""
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/") == "/v1/chat/completions"]

    # -- internals -----------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body,
                )
            )

    def _next_reply(self, body: Any) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return self.responder(body)
        return Reply(status=500, body={"error": {"message": "fixture: no scripted reply left"}})
