"""Helpers shared by the runtime tests."""

from __future__ import annotations

from typing import Any, Callable

from abstractruntime.core.models import Effect, EffectType, RunState, StepPlan
from abstractruntime.core.runtime import Runtime
from abstractruntime.core.spec import WorkflowSpec


Node = Callable[[RunState, Any], StepPlan]


def effect_then_done(effect: Effect, *, wf_id: str = "wf") -> WorkflowSpec:
    """``act`` performs ``effect`` and goes to ``done``, which completes with the vars."""

    def act(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="act", effect=effect, next_node="done")

    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"vars": run.vars})

    return WorkflowSpec(wf_id, "act", {"act": act, "done": done})


def ask(payload: dict[str, Any], result_key: str = "answer", wf_id: str = "wf") -> WorkflowSpec:
    return effect_then_done(Effect(type=EffectType.ASK_USER, payload=payload, result_key=result_key), wf_id=wf_id)


def effect_records(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    return [r for r in rt.get_ledger(run_id) if r["effect"] is not None]


def two_questions() -> WorkflowSpec:
    def q1(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="q1", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "1?"},
                                                    result_key="a1"), next_node="q2")

    def q2(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="q2", effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "2?"},
                                                    result_key="a2"), next_node="end")

    return WorkflowSpec("two", "q1", {"q1": q1, "q2": q2,
                                      "end": lambda run, ctx: StepPlan(node_id="end", complete_output=run.vars)})


def ask_workflow_source(workflow_id: str) -> str:
    """The source of a workflow file asking "Ship it?" (yes/no) and completing with ``ship``: what the
    command-line tests run, continue and measure."""
    return f'''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def ask(run, ctx):
    return StepPlan("ask", next_node="done", effect=Effect(
        EffectType.ASK_USER, {{"prompt": "Ship it?", "choices": ["yes", "no"], "allow_free_text": False}},
        result_key="reply"))

def done(run, ctx):
    return StepPlan("done", complete_output={{"ship": run.vars["reply"]["answer"] == "yes"}})

workflow = WorkflowSpec({workflow_id!r}, entry_node="ask", nodes={{"ask": ask, "done": done}})
'''
