"""A scripted OpenAI-compatible server on 127.0.0.1, so the agent sample runs offline (stdlib only).

    python3 sample_runs/scripted_llm.py PORT_FILE

Writes its base URL (``http://127.0.0.1:PORT``) to PORT_FILE, then serves
``POST /v1/chat/completions`` until it is terminated. It answers from the request itself, not
from a queue, so any number of runs can use it in any order:

- no tool result in the conversation yet: call ``get_weather`` for Paris;
- a weather result but no email sent or refused: call ``send_email`` with the forecast;
- otherwise: a final answer that says whether the email went out.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional


def completion(*, content: Optional[str] = None, call: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` with either text or one tool call ``{id, name, arguments}``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if call is not None:
        message["tool_calls"] = [{"id": call["id"], "type": "function", "function": {
            "name": call["name"], "arguments": json.dumps(call["arguments"])}}]
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 1_700_000_000,
            "model": "scripted", "choices": [{"index": 0, "message": message,
                                              "finish_reason": "tool_calls" if call else "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def reply_for(body: Any) -> dict[str, Any]:
    """The next assistant turn for a chat request (see the module docstring)."""
    messages = body.get("messages", []) if isinstance(body, dict) else []
    tool_turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "tool"]
    by_name = {m.get("name"): str(m.get("content") or "") for m in tool_turns}
    if "get_weather" not in by_name:
        return completion(call={"id": "call_weather", "name": "get_weather", "arguments": {"city": "Paris"}})
    if "send_email" not in by_name:
        return completion(call={"id": "call_email", "name": "send_email", "arguments": {
            "to": "ana@example.com", "subject": "Weather in Paris", "body": by_name["get_weather"]}})
    if by_name["send_email"].startswith("Error:"):
        return completion(content="I did not send the email: " + by_name["send_email"])
    return completion(content="Sent the Paris forecast to ana@example.com.")


class Handler(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions`` answered by :func:`reply_for`; anything else is 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep record.sh quiet
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, {"error": {"message": "body is not JSON"}})
        self._send(200, reply_for(body))

    def _send(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str]) -> int:
    """Serve until SIGTERM or SIGINT."""
    if len(argv) != 2:
        print("usage: scripted_llm.py PORT_FILE", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    Path(argv[1]).write_text(f"http://127.0.0.1:{server.server_address[1]}\n", encoding="utf-8")
    while not stop.wait(0.2):  # a timed wait keeps the signal handlers responsive
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
