"""A scripted OpenAI-compatible server on 127.0.0.1 for the sessions of docs/llm.md (stdlib only).

    python3 docs/examples/llm/llm_server.py URL_FILE [--rate-limit N] [--delay SECONDS] [--token-delay SECONDS]
                                            [--stats FILE]

Writes its base URL (``http://127.0.0.1:PORT``) to URL_FILE, then serves
``POST /v1/chat/completions`` until it is terminated. Every answer is decided by the request:

- the reply is ``"<Step> done: "`` followed by the first words of the last user message;
- ``usage`` counts about one token per four characters of the request's messages
  (``prompt_tokens``) and of the reply (``completion_tokens``), so totals are predictable;
- with ``"stream": true`` the reply comes as server-sent events, one word per event
  (``--token-delay`` apart), the usage in the last one;
- ``--rate-limit N``: the first N requests are answered ``429 Too Many Requests`` with
  ``Retry-After: 2``; ``--delay``: every answer waits that long (to see calls overlap);
- ``--stats FILE``: the most requests it answered at the same time, rewritten as it grows.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class State:
    """What the server was told and what it has seen."""

    rate_limited = 0
    delay = 0.0
    token_delay = 0.0
    requests = 0
    in_flight = 0
    max_in_flight = 0
    stats: Path | None = None
    lock = threading.Lock()


def reply_to(body: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """The reply text and the usage for a chat request."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    step = last.split(":", 1)[0].strip().capitalize() or "Reply"
    words = last.split(":", 1)[-1].split()
    text = f"{step} done: " + " ".join(words[:8])
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
    usage = {"prompt_tokens": max(prompt_chars // 4, 1), "completion_tokens": max(len(text) // 4, 1)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return text, usage


class Handler(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``; anything else is 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, {"error": {"message": "body is not JSON"}})
        with State.lock:
            State.requests += 1
            limited = State.requests <= State.rate_limited
            State.in_flight += 1
            if State.in_flight > State.max_in_flight:
                State.max_in_flight = State.in_flight
                if State.stats is not None:
                    State.stats.write_text(f"most calls in flight at once: {State.max_in_flight}\n")
        try:
            self._answer(body, limited)
        finally:
            with State.lock:
                State.in_flight -= 1

    def _answer(self, body: dict[str, Any], limited: bool) -> None:
        if limited:
            return self._send(429, {"error": {"message": "rate limit reached, retry in 2 s"}}, {"Retry-After": "2"})
        if State.delay:
            time.sleep(State.delay)
        text, usage = reply_to(body)
        model = str(body.get("model") or "scripted")
        if body.get("stream"):
            return self._stream(model, text, usage)
        self._send(200, {"id": "chatcmpl-docs", "object": "chat.completion", "created": 1_700_000_000,
                         "model": model, "usage": usage,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})

    def _stream(self, model: str, text: str, usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i, word in enumerate(text.split(" ")):
            self._event({"model": model, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + word}}]})
            time.sleep(State.token_delay)
        self._event({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({"model": model, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode("utf-8") + b"\n\n")
        self.wfile.flush()

    def _send(self, status: int, document: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str]) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url_file")
    parser.add_argument("--rate-limit", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--stats")
    args = parser.parse_args(argv[1:])
    State.rate_limited, State.delay, State.token_delay = args.rate_limit, args.delay, args.token_delay
    State.stats = Path(args.stats) if args.stats else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    Path(args.url_file).write_text(f"http://127.0.0.1:{server.server_address[1]}\n", encoding="utf-8")
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
