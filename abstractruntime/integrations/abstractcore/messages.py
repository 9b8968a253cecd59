"""Building the next ``llm_call`` after a ``tool_calls`` step.

A tool round trip sends the model its own tool request and the results::

    messages = [
        *history,
        assistant_message(vars["llm"]),          # the turn that asked for tools
        *tool_result_messages(vars["tools"]),    # one "tool" turn per result
    ]

Both helpers produce plain JSON (safe in ``RunState.vars``); the LLM clients convert them
to the wire format of the server or provider.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ...core.errors import InvalidInputError
from ._support import jsonable, normalize_tool_calls


def assistant_message(llm_result: Mapping[str, Any]) -> dict[str, Any]:
    """The assistant turn of an ``llm_call`` result, tool calls included."""
    message: dict[str, Any] = {"role": "assistant", "content": llm_result.get("content") or ""}
    calls = llm_result.get("tool_calls")
    if calls:
        message["tool_calls"] = normalize_tool_calls(calls)
    return message


def tool_result_messages(tool_result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One ``{"role": "tool", "tool_call_id", "name", "content"}`` turn per executed result.

    A failed call becomes ``"Error: <error>"`` so the model can see and react to the failure.
    """
    if tool_result.get("mode") != "executed" or not isinstance(tool_result.get("results"), list):
        raise InvalidInputError("tool_result_messages needs an executed tool result ({'mode': 'executed', ...})")
    out = []
    for result in tool_result["results"]:
        if result.get("success"):
            output = result.get("output")
            content = output if isinstance(output, str) else json.dumps(jsonable(output), ensure_ascii=False)
        else:
            content = f"Error: {result.get('error') or 'tool failed'}"
        message = {"role": "tool", "tool_call_id": str(result.get("call_id") or ""), "content": content}
        if result.get("name"):
            message["name"] = str(result["name"])
        out.append(message)
    return out
