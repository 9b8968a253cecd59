"""An LLM agent loop written as one function: the code-first twin of agent.py.

The same two tools: `get_weather` runs here as soon as the model asks for it; `send_email` is
listed in `require_approval`, so a batch of calls that includes it waits (exit 5) until an
operator runs `abstractruntime tools approve RUN` (or `tools deny RUN --reason TEXT`).

    abstractruntime run sample_runs/workflows/agent_flow.py --llm hybrid --server http://127.0.0.1:8000 \\
        --model qwen3:4b --var question="Weather in Paris? Email it to ana@example.com"

Inputs: `question` (text) and `max_turns` (LLM calls before giving up, default 6).
"""

import hashlib

from abstractruntime import workflow
from abstractruntime.integrations.abstractcore import assistant_message, describe_tool, tool_result_messages

SYSTEM = ("You are a helpful assistant. Use get_weather for weather questions and send_email only when "
          "the user asks you to send something. Answer briefly once you have what you need.")


def get_weather(city: str) -> dict:
    """Get today's weather forecast for a city."""
    # A stand-in forecast, stable for a given city, so the sample runs offline.
    seed = int(hashlib.sha256(city.strip().lower().encode("utf-8")).hexdigest()[:8], 16)
    skies = ("sunny", "cloudy", "rainy", "windy")[seed % 4]
    return {"city": city, "forecast": skies, "temperature_c": 5 + seed % 21}


def send_email(to: str, subject: str, body: str) -> dict:
    """Send an email (needs an operator's approval)."""
    # A stand-in mailer: returns a receipt; a real one would call an SMTP or mail API here.
    receipt = hashlib.sha256(f"{to}\n{subject}\n{body}".encode("utf-8")).hexdigest()[:12]
    return {"sent": True, "to": to, "subject": subject, "message_id": f"msg-{receipt}"}


tools = [get_weather, send_email]
require_approval = ["send_email"]
TOOL_SPECS = [describe_tool(fn.__name__, fn) for fn in tools]


@workflow("agent_flow")
def agent(ctx, question="What is the weather in Paris?", max_turns=6):
    messages = [{"role": "user", "content": question}]
    for turn in range(1, int(max_turns) + 1):
        reply = ctx.llm(system_prompt=SYSTEM, messages=messages, tools=TOOL_SPECS)
        if not reply.get("tool_calls"):
            return {"answer": reply.get("content"), "turns": turn}
        messages.append(assistant_message(reply))
        messages.extend(tool_result_messages(ctx.tools(reply["tool_calls"])))
    return {"answer": None, "turns": int(max_turns), "stopped": "max_turns reached"}
