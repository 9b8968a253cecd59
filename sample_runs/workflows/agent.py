"""An LLM agent loop: llm_call -> tool_calls -> llm_call ... until the model answers.

Two tools: `get_weather` runs here as soon as the model asks for it; `send_email` is listed
in `require_approval`, so a batch of calls that includes it waits (exit 5) until an operator
runs `abstractruntime tools approve RUN` (or `tools deny RUN --reason TEXT`).

    # any OpenAI-compatible server (AbstractCore server, llama.cpp, vLLM, LM Studio ...)
    abstractruntime run sample_runs/workflows/agent.py --llm hybrid --server http://127.0.0.1:8000 \\
        --model qwen3:4b --var question="Weather in Paris? Email it to ana@example.com"
    # AbstractCore in-process, pointed at an OpenAI-compatible endpoint
    abstractruntime run sample_runs/workflows/agent.py --llm local --provider openai-compatible \\
        --base-url http://127.0.0.1:8080/v1 --model qwen3:4b --var question="..."

With `--llm remote` every tool call waits for approval. Inputs: `question` (text) and
`max_turns` (LLM calls before giving up, default 6).
"""

import hashlib

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec
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


def think(run, ctx):
    if "messages" not in run.vars:
        run.vars["messages"] = [{"role": "user", "content": run.vars.get("question", "What is the weather in Paris?")}]
        run.vars["turns"] = 0
    run.vars["turns"] += 1
    return StepPlan(
        node_id="think",
        effect=Effect(
            type=EffectType.LLM_CALL,
            payload={"system_prompt": SYSTEM, "messages": run.vars["messages"], "tools": TOOL_SPECS},
            result_key="llm",
        ),
        next_node="route",
    )


def route(run, ctx):
    llm = run.vars["llm"]
    if llm.get("tool_calls"):
        run.vars["messages"].append(assistant_message(llm))
        if run.vars["turns"] >= int(run.vars.get("max_turns", 6)):
            return StepPlan(node_id="route", complete_output={"answer": None, "turns": run.vars["turns"],
                                                              "stopped": "max_turns reached"})
        return StepPlan(node_id="route", next_node="act")
    return StepPlan(node_id="route", complete_output={"answer": llm.get("content"), "turns": run.vars["turns"]})


def act(run, ctx):
    return StepPlan(
        node_id="act",
        effect=Effect(type=EffectType.TOOL_CALLS, payload={"tool_calls": run.vars["llm"]["tool_calls"]},
                      result_key="tool_results"),
        next_node="observe",
    )


def observe(run, ctx):
    run.vars["messages"].extend(tool_result_messages(run.vars["tool_results"]))
    return StepPlan(node_id="observe", next_node="think")


workflow = WorkflowSpec(workflow_id="agent", entry_node="think",
                        nodes={"think": think, "route": route, "act": act, "observe": observe})
