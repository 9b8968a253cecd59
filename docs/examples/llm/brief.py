"""Write a short brief in three LLM calls: outline, draft, tighten (the workflow of docs/llm.md).

    abstractruntime run docs/examples/llm/brief.py --llm remote --server URL --model scripted/brief \
        --var topic="durable agents"
"""

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec

STEPS = [("outline", "draft"), ("draft", "tighten"), ("tighten", "done")]


def step(name, following):
    def node(run, ctx):
        source = run.vars.get("topic", "durable agents") if name == "outline" else run.vars[previous(name)]["content"]
        return StepPlan(name, effect=Effect(EffectType.LLM_CALL, {"prompt": f"{name}: {source}"}, result_key=name),
                        next_node=following)
    return node


def previous(name):
    return {"draft": "outline", "tighten": "draft"}[name]


def done(run, ctx):
    return StepPlan("done", complete_output={"brief": run.vars["tighten"]["content"]})


workflow = WorkflowSpec("brief", "outline", {**{name: step(name, nxt) for name, nxt in STEPS}, "done": done})
