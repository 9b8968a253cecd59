"""Baseline: the agent loop on DBOS Transact with its system database in SQLite, bench venv only.

One ``@DBOS.workflow`` keeps the conversation in a local list; every model call (and, in the
"tools" variant, every tool call) is a ``@DBOS.step``, whose output DBOS records in SQLite
(``synchronous=FULL``: an fsync per commit). The workflow returns the conversation's size, not
the conversation, so that DBOS does not store it a second time as the workflow's output (our
run completes with a small output too). One process per measurement: a fresh database file.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness  # noqa: E402
import workloads  # noqa: E402

try:
    from dbos import DBOS
except ImportError as exc:
    harness.skipped(f"dbos is not installed ({exc})")


def main() -> None:
    """Run the loop once on a fresh SQLite file; print one JSON document."""
    import importlib.metadata

    spec = harness.read_spec()
    turns, size, tools = spec["turns"], spec["message_bytes"], spec["variant"] == "tools"
    logging.getLogger("dbos").setLevel(logging.WARNING)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as work:
        path = os.path.join(work, "dbos.sqlite")
        DBOS(config={"name": "bench-agent", "system_database_url": f"sqlite:///{path}", "run_admin_server": False})

        @DBOS.step()
        def call_model(messages: list) -> dict:
            stamps.append(harness.clock())
            return workloads.model_reply(len(messages), size, tools=tools)

        @DBOS.step()
        def call_tool(call: dict) -> dict:
            return workloads.tool_output(call, size)

        @DBOS.workflow()
        def agent(turns: int) -> int:
            messages = [workloads.first_message()]
            for _ in range(turns):
                reply = call_model(messages)
                messages.append(reply)
                if tools:
                    messages.append(call_tool(reply["tool_calls"][0]))
            return workloads.conversation_bytes(messages)

        DBOS.launch()
        logging.getLogger("dbos").setLevel(logging.WARNING)
        before = harness.sqlite_bytes(path)
        t0 = harness.clock()
        conversation = agent(turns)
        end = harness.clock()
        DBOS.destroy()
        after = harness.sqlite_bytes(path)
    harness.emit({"package": f"dbos {importlib.metadata.version('dbos')} (SQLite)", "turns": turns,
                  "variant": spec["variant"], "seconds": end - t0, "conversation_bytes": conversation,
                  "disk_bytes": after, "grown_bytes": after - before, "empty_bytes": before,
                  **workloads.turn_costs(stamps, end, turns),
                  "durability": "SQLite synchronous=FULL (DBOS default): one fsync per step"})


if __name__ == "__main__":
    main()
