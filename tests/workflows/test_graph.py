"""A workflow's graph (abstractruntime.graph): edges from the source, a run's path, Mermaid text."""

from __future__ import annotations

from typing import Any

from abstractruntime.core.models import StepPlan
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.graph import ending_nodes, mermaid, run_path, static_edges


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


def test_static_edges_are_next_node_values_only() -> None:
    # "yes" may go to itself (a real loop); "no" only mentions "ask" in its output: no edge.
    assert static_edges(_spec()) == [("ask", "yes"), ("ask", "no"), ("yes", "yes"), ("yes", "done")]
    assert ending_nodes(_spec()) == ["no", "done"]


ROUTES = {"left": "l", "right": "r"}


def test_values_that_clearly_flow_into_next_node_are_edges() -> None:
    def make(target: str) -> Any:
        def hop(run: Any, ctx: Any) -> StepPlan:
            return StepPlan("hop", next_node=target)
        return hop

    def route(run: Any, ctx: Any) -> StepPlan:
        side = run.vars.get("side", "left")  # "left" is a key here, not a node
        return StepPlan("route", None, ROUTES[side])

    def pick(run: Any, ctx: Any) -> StepPlan:
        nxt = "a" if run.vars.get("x") else None
        nxt = nxt or "b"
        return StepPlan(node_id="pick", next_node=nxt)

    def ask(run: Any, ctx: Any) -> StepPlan:
        from abstractruntime.core.models import Effect, EffectType

        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "l?", "resume_to_node": "l"}),
                        next_node="r")

    spec = WorkflowSpec("w", "route", {
        "route": route, "l": make("pick"), "r": make("pick"), "pick": pick, "ask": ask,
        "a": lambda run, ctx: StepPlan("a", next_node="b"), "b": lambda run, ctx: StepPlan("b", complete_output=1),
    })
    assert static_edges(spec) == [("route", "l"), ("route", "r"), ("l", "pick"), ("r", "pick"), ("pick", "a"),
                                  ("pick", "b"), ("ask", "r"), ("ask", "l"), ("a", "b")]
    assert ending_nodes(spec) == ["b"]


def test_complete_output_none_and_unreadable_handlers_do_not_complete() -> None:
    class Node:
        def __call__(self, run: Any, ctx: Any) -> StepPlan:
            return StepPlan("x", complete_output={})

    def loop(run: Any, ctx: Any) -> StepPlan:
        return StepPlan("loop", next_node="loop", complete_output=None)

    spec = WorkflowSpec("w", "loop", {"loop": loop, "x": Node()})
    assert static_edges(spec) == [("loop", "loop")]
    assert ending_nodes(spec) == []


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
    # Nodes that can complete go to the end marker ("end" is a Mermaid keyword: its id is stop).
    assert 'stop(("end"))' in text and "n2 --> stop" in text and "n3 --> stop" in text
    assert "n2 --> n0" not in text  # the literal "ask" in node no's output is no edge


def test_mermaid_marks_the_end_a_completed_run_took() -> None:
    records = [{"node_id": "ask", "result": {"next_node": "no"}}, {"node_id": "no", "kind": "complete"}]
    text = mermaid(_spec(), records=records, current="no")
    lines = [line.strip() for line in text.splitlines()]
    links = [line for line in lines if "-->" in line or "-.->" in line]
    end_link = links.index("n2 --> stop")
    assert f"linkStyle 0,2,{end_link} " in text


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
