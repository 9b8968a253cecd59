"""Baseline: the agent loop on LangGraph with ``langgraph-checkpoint-sqlite`` (SqliteSaver), bench venv only.

The graph state is the conversation, ``Annotated[list, operator.add]`` (LangGraph's reducer for
message lists): the model node returns ``{"messages": [reply]}``, and in the "tools" variant a
tool node returns ``{"messages": [output]}``. ``durability="sync"`` makes each checkpoint
durable before the next step (SQLite WAL, ``synchronous=FULL``). One process per measurement: a
fresh database file.
"""

from __future__ import annotations

import operator
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
import workloads  # noqa: E402

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError as exc:
    harness.skipped(f"langgraph / langgraph-checkpoint-sqlite are not installed ({exc})")


class Conversation(TypedDict):
    """The graph state: the messages, appended to by each node."""

    messages: Annotated[list, operator.add]


def build(turns: int, size: int, tools: bool, stamps: list[float]) -> Any:
    """model (→ tool) → model … until ``turns`` model calls, then END."""
    graph = StateGraph(Conversation)

    def model(state: Conversation) -> dict:
        stamps.append(harness.clock())
        return {"messages": [workloads.model_reply(len(state["messages"]), size, tools=tools)]}

    def tool(state: Conversation) -> dict:
        return {"messages": [workloads.tool_output(state["messages"][-1]["tool_calls"][0], size)]}

    def route(state: Conversation) -> str:
        done = (len(state["messages"]) - 1) // (2 if tools else 1) >= turns
        return END if done else "model"

    graph.add_node("model", model)
    graph.add_edge(START, "model")
    if tools:
        graph.add_node("tool", tool)
        graph.add_edge("model", "tool")
        graph.add_conditional_edges("tool", route)
    else:
        graph.add_conditional_edges("model", route)
    return graph


def main() -> None:
    """Run the loop once on a fresh SQLite file; print one JSON document."""
    import langgraph.version

    spec = harness.read_spec()
    turns, size, tools = spec["turns"], spec["message_bytes"], spec["variant"] == "tools"
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as work:
        path = str(Path(work) / "checkpoints.sqlite")
        conn = sqlite3.connect(path, check_same_thread=False)
        app = build(turns, size, tools, stamps).compile(checkpointer=SqliteSaver(conn))
        config = {"configurable": {"thread_id": "agent"}, "recursion_limit": turns * (2 if tools else 1) + 10}
        t0 = harness.clock()
        out = app.invoke({"messages": [workloads.first_message()]}, config, durability="sync")
        end = harness.clock()
        assert len(out["messages"]) == 1 + turns * (2 if tools else 1), len(out["messages"])
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.close()  # checkpoints the WAL into the main file
        disk = harness.sqlite_bytes(path)
    harness.emit({"package": f"langgraph {langgraph.version.__version__} + SqliteSaver", "turns": turns,
                  "variant": spec["variant"], "seconds": end - t0,
                  "conversation_bytes": workloads.conversation_bytes(out["messages"]), "disk_bytes": disk,
                  **workloads.turn_costs(stamps, end, turns),
                  "durability": f"durability='sync', SQLite journal_mode={journal}, synchronous={synchronous} "
                                "(2 = FULL)"})


if __name__ == "__main__":
    main()
