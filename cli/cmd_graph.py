"""``graph``: print a workflow as Mermaid flowchart text (:mod:`abstractruntime.graph`), optionally
with a run's path marked."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Optional

import typer

from . import workflows
from .app import app, settings
from .cmd_exec import AttrOpt


@app.command("graph")
def graph_cmd(
    ctx: typer.Context,
    workflow_file: str = typer.Argument(..., metavar="WORKFLOW.py"),
    attr: Optional[str] = AttrOpt,
    run_id: Optional[str] = typer.Option(None, "--run", metavar="RUN", help="Mark the path this run took."),
    json_out: bool = typer.Option(False, "--json", help="Nodes, edges, the nodes that can end the run, the run's path and the Mermaid "
                                                       "text as JSON."),
) -> None:
    """Print the workflow as a Mermaid flowchart (paste it into any Mermaid renderer).

    Edges are the handlers' next_node (and resume_to_node) values read from their source; a
    node that can return complete_output goes to an end marker.
    """
    from abstractruntime.graph import ending_nodes, mermaid, run_path, static_edges

    s = settings(ctx, json_out)
    records = None
    current = None
    workflow_id = None
    if run_id is not None:
        from .handles import run_id_of

        run_id = run_id_of(run_id)
        runtime = s.open_store().runtime()
        run = runtime.get_state(run_id)
        records, current, workflow_id = runtime.get_ledger(run_id), run.current_node, run.workflow_id
    spec = workflows.load(workflow_file, attr=attr, workflow_id=workflow_id).workflow
    if workflow_id is not None and spec.workflow_id != workflow_id:
        s.info(f"warning: run {run_id} is of workflow {workflow_id!r}, the file defines {spec.workflow_id!r}")
    text = mermaid(spec, records=records, current=current)
    if s.json:
        visited, taken = run_path(records) if records is not None else ([], [])
        s.emit_json({"workflow_id": spec.workflow_id, "entry_node": spec.entry_node, "nodes": list(spec.nodes),
                     "edges": [list(e) for e in static_edges(spec)], "ends": ending_nodes(spec),
                     "run_id": run_id, "visited": visited,
                     "taken": [list(e) for e in taken], "current_node": current, "mermaid": text})
        return
    s.emit_lines([text])
