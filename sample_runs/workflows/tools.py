"""Local tool calling: a tool_calls effect runs the functions this file exposes as `tools`.

    abstractruntime run sample_runs/workflows/tools.py --var text="durable runs survive restarts"
"""

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def word_count(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


tools = [word_count, shout]


def call_tools(run, ctx):
    text = run.vars.get("text", "hello durable world")
    return StepPlan(
        node_id="call_tools",
        effect=Effect(
            type=EffectType.TOOL_CALLS,
            payload={"tool_calls": [
                {"name": "word_count", "arguments": {"text": text}, "call_id": "c1"},
                {"name": "shout", "arguments": {"text": text}, "call_id": "c2"},
            ]},
            result_key="tool_results",
        ),
        next_node="report",
    )


def report(run, ctx):
    results = {r["call_id"]: r["output"] for r in run.vars["tool_results"]["results"]}
    return StepPlan(node_id="report", complete_output={"words": results["c1"], "shouted": results["c2"]})


workflow = WorkflowSpec(workflow_id="tools", entry_node="call_tools",
                        nodes={"call_tools": call_tools, "report": report})
