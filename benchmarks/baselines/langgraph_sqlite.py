"""Baseline: LangGraph with ``langgraph-checkpoint-sqlite`` (SqliteSaver), bench venv only.

The same linear workflow as ``workloads.linear``: ``steps`` nodes in a chain, each adding 1
to a counter. ``durability="sync"`` makes every checkpoint durable before the next step
(SQLite WAL with ``synchronous=FULL``: one fsync per commit); LangGraph's default ("async")
is measured too.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError as exc:
    harness.skipped(f"langgraph / langgraph-checkpoint-sqlite are not installed ({exc})")


class Counter(TypedDict):
    """The graph state: one counter."""

    i: int


def build(steps: int) -> Any:
    """A StateGraph n0 → n1 → … → END of trivial nodes."""
    graph = StateGraph(Counter)

    def node(state: Counter) -> dict:
        return {"i": state["i"] + 1}

    for k in range(steps):
        graph.add_node(f"n{k}", node)
    graph.add_edge(START, "n0")
    for k in range(steps - 1):
        graph.add_edge(f"n{k}", f"n{k + 1}")
    graph.add_edge(f"n{steps - 1}", END)
    return graph


def measure(graph: Any, steps: int, mode: str, reps: int, work: str) -> dict:
    """Median seconds for one invoke with ``durability=mode``, plus the checkpoint bytes."""
    sizes: dict[str, int] = {}

    def once(rep: int) -> float:
        path = str(Path(tempfile.mkdtemp(dir=work)) / "checkpoints.sqlite")
        conn = sqlite3.connect(path, check_same_thread=False)
        app = graph.compile(checkpointer=SqliteSaver(conn))
        config = {"configurable": {"thread_id": "bench"}, "recursion_limit": steps + 10}
        t0 = harness.clock()
        out = app.invoke({"i": 0}, config, durability=mode)
        elapsed = harness.clock() - t0
        assert out == {"i": steps}, out
        row = conn.execute("SELECT COUNT(*), SUM(LENGTH(checkpoint)) + SUM(LENGTH(metadata)) FROM checkpoints").fetchone()
        writes = conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes").fetchone()[0]
        sizes.update(checkpoints=row[0], blob_bytes=row[1] + writes,
                     synchronous=conn.execute("PRAGMA synchronous").fetchone()[0],
                     journal_mode=conn.execute("PRAGMA journal_mode").fetchone()[0])
        conn.close()  # checkpoints the WAL into the main file
        sizes["file_bytes"] = harness.sqlite_bytes(path)
        return elapsed

    elapsed = harness.repeat(reps, once)
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
            "bytes_per_step": sizes["file_bytes"] / steps,
            "checkpoint_bytes_per_step": sizes["blob_bytes"] / steps,
            "checkpoints": sizes["checkpoints"],
            "durability": f"durability={mode!r}, SQLite journal_mode={sizes['journal_mode']}, "
                          f"synchronous={sizes['synchronous']} (2 = FULL)"}


def main() -> None:
    """Measure the linear workflow in "sync" and "async" durability; print one JSON document."""
    import langgraph.version

    spec = harness.read_spec()
    out: dict = {"package": f"langgraph {langgraph.version.__version__} + SqliteSaver"}
    if "durable" in spec["scenarios"]:
        graph = build(spec["steps"])
        with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as work:
            out["durable"] = measure(graph, spec["steps"], "sync", spec["reps"], work)
            out["durable_async"] = measure(graph, spec["steps"], "async", spec["reps"], work)
    harness.emit(out)


if __name__ == "__main__":
    main()
