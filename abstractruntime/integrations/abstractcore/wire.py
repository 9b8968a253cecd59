"""The OpenAI chat wire format: messages and tool definitions out, chat completions back.

One message history and one tool-definition shape work for both clients: our tool calls
(``{name, arguments, call_id}``) and flat tool specs (``{name, description, parameters}``)
are converted here, and both AbstractCore's ``GenerateResponse`` and an OpenAI
``chat.completion`` object come back as ``{content, tool_calls, usage, model, finish_reason}``.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from ...core.errors import EffectFailedError, InvalidInputError
from ._support import jsonable, normalize_tool_calls


def convert_messages(messages: Optional[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Chat history in the OpenAI wire shape.

    Assistant turns holding our ``{name, arguments, call_id}`` tool calls and ``tool`` turns
    with non-string content are converted, so one message history works for the local and
    the remote client alike.
    """
    if messages is None:
        return []
    if not isinstance(messages, list):
        raise InvalidInputError("llm_call payload.messages must be a list of message objects")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise InvalidInputError(f"llm_call payload.messages[{i}] must be an object with a 'role'")
        msg = dict(message)
        if msg.get("tool_calls"):
            msg["tool_calls"] = [
                {
                    "id": call["call_id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
                for call in normalize_tool_calls(msg["tool_calls"])
            ]
            if msg.get("content") is None:
                msg["content"] = ""  # some servers reject a null assistant content
        if msg.get("role") == "tool" and not isinstance(msg.get("content"), str):
            msg["content"] = json.dumps(jsonable(msg.get("content")))
        out.append(jsonable(msg))
    return out


def wire_messages(
    *, prompt: str, messages: Optional[list[dict[str, Any]]], system_prompt: Optional[str]
) -> list[dict[str, Any]]:
    """OpenAI-style chat messages: system first, then history, then ``prompt`` as a user turn."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": str(system_prompt)})
    out.extend(convert_messages(messages))
    if prompt:
        out.append({"role": "user", "content": str(prompt)})
    if all(m.get("role") == "system" for m in out):
        raise InvalidInputError("llm_call requires payload.prompt or payload.messages")
    return out


def flat_tool_spec(tool: Mapping[str, Any]) -> dict[str, Any]:
    """``{name, description, parameters}`` from either that shape or OpenAI's function shape."""
    fn = tool.get("function") if tool.get("type") == "function" else None
    src = fn if isinstance(fn, Mapping) else tool
    if not src.get("name"):
        raise InvalidInputError("every tool definition needs a 'name'")
    spec = {"name": str(src["name"]), "description": str(src.get("description") or "")}
    spec["parameters"] = jsonable(src.get("parameters") or {"type": "object", "properties": {}})
    return spec


def openai_tool_spec(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI ``{"type": "function", "function": {...}}`` form of a tool definition."""
    return {"type": "function", "function": flat_tool_spec(tool)}


def normalize_chat_response(resp: Any) -> dict[str, Any]:
    """Our result shape from an OpenAI chat.completion object; malformed → non-retryable failure."""
    if not isinstance(resp, Mapping):
        raise EffectFailedError(
            f"malformed response from AbstractCore server: expected a JSON object, got {type(resp).__name__}",
            retryable=False,
        )
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise EffectFailedError("malformed response from AbstractCore server: no 'choices'", retryable=False)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise EffectFailedError("malformed response from AbstractCore server: choices[0] has no 'message'",
                                retryable=False)
    try:
        tool_calls = normalize_tool_calls(message.get("tool_calls") or None) or None
    except InvalidInputError as exc:
        raise EffectFailedError(f"malformed tool_calls in AbstractCore server response: {exc}",
                                retryable=False) from exc
    usage = resp.get("usage")
    return {
        "content": message.get("content") if isinstance(message.get("content"), str) else None,
        "tool_calls": tool_calls,
        "usage": jsonable(usage) if isinstance(usage, Mapping) else None,
        "model": resp.get("model") if isinstance(resp.get("model"), str) else None,
        "finish_reason": choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
    }


def normalize_generate_response(resp: Any) -> dict[str, Any]:
    """Our result shape from AbstractCore's ``GenerateResponse`` (or a structured-output model)."""
    if isinstance(resp, Mapping):
        data = jsonable(resp)
        return {
            "content": data.get("content"),
            "tool_calls": normalize_tool_calls(data.get("tool_calls") or None) or None,
            "usage": data.get("usage"),
            "model": data.get("model"),
            "finish_reason": data.get("finish_reason"),
        }
    if not hasattr(resp, "content") and (hasattr(resp, "model_dump") or hasattr(resp, "dict")):
        # response_model=... returns the pydantic object itself
        return {"content": None, "tool_calls": None, "usage": None, "model": None, "finish_reason": None,
                "data": jsonable(resp)}
    raw_calls = getattr(resp, "tool_calls", None)
    return {
        "content": getattr(resp, "content", None),
        "tool_calls": normalize_tool_calls(raw_calls) if raw_calls else None,
        "usage": jsonable(getattr(resp, "usage", None)),
        "model": jsonable(getattr(resp, "model", None)),
        "finish_reason": jsonable(getattr(resp, "finish_reason", None)),
    }
