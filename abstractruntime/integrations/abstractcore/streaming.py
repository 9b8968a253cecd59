"""Streamed chat completions: server-sent events in, one chat completion out.

A streaming call (``"stream": true`` with ``stream_options.include_usage``) answers with
``data: {chunk}`` lines; each chunk's ``choices[0].delta`` carries a piece of the content or of
the tool calls, and the last chunk the usage. :class:`CompletionAssembler` puts the pieces
back together into the same ``chat.completion`` object a non-streaming call returns, so what
is recorded does not depend on whether the call streamed: only the final message is recorded,
the pieces travel by the progress side channel (never the ledger).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator, Optional

from ...core.errors import EffectFailedError
from ._support import jsonable


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream, until ``data: [DONE]``.

    An ``{"error": ...}`` event is a failure (a server that failed mid-stream must not look
    like one that finished); lines that are not JSON data are skipped.
    """
    for raw in lines:
        line = raw.strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise EffectFailedError(f"the server failed while streaming: {message}", retryable=True)
        yield event


class CompletionAssembler:
    """Collects streamed chunks; :meth:`completion` is the equivalent ``chat.completion`` object."""

    def __init__(self, on_text: Optional[Callable[[str], None]] = None) -> None:
        self.on_text = on_text
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.model: Optional[str] = None
        self.finish_reason: Optional[str] = None
        self.usage: Optional[dict[str, Any]] = None

    def add(self, chunk: dict[str, Any]) -> None:
        """Fold one chunk in (and pass its text on)."""
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else choice.get("message")
        if not isinstance(delta, dict):
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            self.content.append(text)
            if self.on_text is not None:
                self.on_text(text)
        for position, call in enumerate(delta.get("tool_calls") or []):
            if not isinstance(call, dict):
                continue
            index = call.get("index", position)
            slot = self.calls.setdefault(int(index) if isinstance(index, int) else position,
                                         {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if call.get("id"):
                slot["id"] = call["id"]
            raw_function = call.get("function")
            function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
            if function.get("name"):
                slot["function"]["name"] += str(function["name"])
            if function.get("arguments"):
                arguments = function["arguments"]
                slot["function"]["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments)

    def completion(self) -> dict[str, Any]:
        """The assembled ``chat.completion`` object."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content else None}
        if self.calls:
            message["tool_calls"] = [{k: v for k, v in call.items() if v is not None}
                                     for _, call in sorted(self.calls.items())]
        out: dict[str, Any] = {"object": "chat.completion", "model": self.model,
                               "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}]}
        if self.usage is not None:
            out["usage"] = self.usage
        return out


class TextPublisher:
    """Passes streamed text on in pieces that end at a word boundary, so a secret is never split.

    Redaction works on whole words (a key such as ``sk-...`` has no spaces): text is held back
    until a whitespace ends it, then published; :meth:`flush` publishes the rest.
    """

    def __init__(self, publish: Callable[[dict[str, Any]], None], *, max_hold: int = 512) -> None:
        self._publish = publish
        self._held = ""
        self._max_hold = max_hold

    def __call__(self, text: str) -> None:
        self._held += text
        cut = max(self._held.rfind(" "), self._held.rfind("\n"), self._held.rfind("\t"))
        if cut < 0 and len(self._held) < self._max_hold:
            return
        cut = len(self._held) if cut < 0 else cut + 1
        piece, self._held = self._held[:cut], self._held[cut:]
        if piece:
            self._publish({"text": piece})

    def flush(self) -> None:
        """Publish what is still held."""
        if self._held:
            piece, self._held = self._held, ""
            self._publish({"text": piece})


def joined_stream(chunks: Any, on_text: Any) -> dict[str, Any]:
    """One response from AbstractCore's streamed chunks, passing each piece of text on."""
    content: list[str] = []
    last: dict[str, Any] = {"usage": None, "model": None, "finish_reason": None, "tool_calls": None}
    for chunk in chunks:
        piece = getattr(chunk, "content", None)
        if isinstance(piece, str) and piece:
            content.append(piece)
            on_text(piece)
        for name in last:
            value = getattr(chunk, name, None)
            if value:
                last[name] = value
    return {"content": "".join(content), **{k: jsonable(v) for k, v in last.items()}}


def streamed_body(body: dict[str, Any]) -> dict[str, Any]:
    """The streaming form of a request body (usage asked for in the last event)."""
    return {**body, "stream": True, "stream_options": {"include_usage": True}}


__all__ = ["CompletionAssembler", "TextPublisher", "joined_stream", "sse_events", "streamed_body"]
