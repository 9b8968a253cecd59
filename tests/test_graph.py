"""A workflow's graph (abstractruntime.graph): edges from the source, a run's path, Mermaid text."""

from __future__ import annotations

from typing import Any

from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.graph import mermaid, run_path, static_edges


def _spec() -> WorkflowSpec:
    def ask(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="ask", next_node="yes" if run.vars.get("ok") else "no")

    def yes(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="yes", next_node="yes" if run.vars.get("again") else "done")

    def no(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="no", complete_output={"mentions": "ask"})  # a literal naming a node is an edge

    def done(run: Any, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={})

    return WorkflowSpec("w", "ask", {"ask": ask, "yes": yes, "no": no, "done": done})


def test_static_edges_read_the_handlers() -> None:
    # A handler naming its own node is a loop only as a bare next_node= (here it sits in a conditional).
    assert static_edges(_spec()) == [("ask", "yes"), ("ask", "no"), ("yes", "done"), ("no", "ask")]


def test_run_path_from_records() -> None:
    records = [{"node_id": "ask", "result": {"next_node": "yes"}}, {"node_id": "yes"}, {"kind": "resume"},
               {"node_id": "done"}]
    assert run_path(records) == (["ask", "yes", "done"], [("ask", "yes"), ("yes", "done")])


def test_mermaid_marks_the_path_taken() -> None:
    text = mermaid(_spec(), records=[{"node_id": "ask"}, {"node_id": "yes"}], current="yes")
    assert text.startswith("flowchart TD\n")
    assert "start --> n0" in text and "n0 --> n1" in text
    assert "class n0 visited" in text and "class n1 current" in text
    assert "linkStyle 0,1 " in text


def test_mermaid_escapes_labels() -> None:
    from abstractruntime.graph import mermaid
    from abstractruntime.core.models import StepPlan
    from abstractruntime.core.spec import WorkflowSpec

    def a(run, ctx):  # type: ignore[no-untyped-def]
        return StepPlan(node_id='say "hi"', next_node="b<1>")

    def b(run, ctx):  # type: ignore[no-untyped-def]
        return StepPlan(node_id="b<1>", complete_output={})

    text = mermaid(WorkflowSpec("w", 'say "hi"', {'say "hi"': a, "b<1>": b}))
    assert 'n0["say #quot;hi#quot;"]' in text
    assert 'n1["b#lt;1#gt;"]' in text
    assert "n0 --> n1" in text
