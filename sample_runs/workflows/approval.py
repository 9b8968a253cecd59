"""Approval flow: ask a person to approve a deployment, then record the decision.

    abstractruntime run sample_runs/workflows/approval.py --var service=billing
"""

from abstractruntime.core.models import Effect, EffectType, StepPlan
from abstractruntime.core.spec import WorkflowSpec


def ask(run, ctx):
    service = run.vars.get("service", "web")
    return StepPlan(
        node_id="ask",
        effect=Effect(
            type=EffectType.ASK_USER,
            payload={
                "prompt": f"Deploy {service} to production? [y/n]",
                "choices": ["yes", "no"],
                "allow_free_text": False,
            },
            result_key="decision",
        ),
        next_node="decide",
    )


def decide(run, ctx):
    approved = run.vars["decision"]["answer"] == "yes"
    return StepPlan(node_id="decide", next_node="deploy" if approved else "rejected")


def deploy(run, ctx):
    return StepPlan(node_id="deploy", complete_output={"deployed": True, "service": run.vars.get("service", "web")})


def rejected(run, ctx):
    return StepPlan(node_id="rejected", complete_output={"deployed": False, "service": run.vars.get("service", "web")})


workflow = WorkflowSpec(
    workflow_id="approval",
    entry_node="ask",
    nodes={"ask": ask, "decide": decide, "deploy": deploy, "rejected": rejected},
)
