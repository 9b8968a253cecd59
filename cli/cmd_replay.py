"""``replay``: check new workflow code against recorded runs, writing nothing (the deploy check)."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Any, Optional

import typer

from .app import app, settings
from .exit_codes import BLOCKED
from .handles import run_id_of


@app.command("replay")
def replay_cmd(
    ctx: typer.Context,
    run_ids: Optional[list[str]] = typer.Argument(None, metavar="[RUN]...", help="The runs to check."),
    workflow_file: str = typer.Option(..., "--workflow", metavar="FILE",
                                      help="The new workflow file (imported: you named it)."),
    all_runs: bool = typer.Option(False, "--all", help="Check every run of the file's workflows."),
    status: Optional[str] = typer.Option(None, "--status", metavar="STATUS",
                                         help="Check the runs of the file's workflows with this status "
                                              "(e.g. waiting: the runs a deploy must not strand)."),
    json_out: bool = typer.Option(False, "--json", help="One result per run as JSON."),
) -> None:
    """Check that FILE's code can continue recorded runs (exit 0 all compatible, 6 one diverges).

    A code-first run replays: its function runs over the run's history without executing
    anything, and each recorded position must be asked for, in order, with the same kind and
    name. A graph run is compatible when every node it can still enter exists. Piped output:
    `compatible<TAB>run_id<TAB>positions` or `diverges<TAB>run_id<TAB>at position N: recorded X,
    code Y`. Nothing is written to the store. With no RUN, --all or --status is needed; no run
    to check is exit 4.
    """
    from abstractruntime.core.errors import InvalidInputError, NotFoundError
    from abstractruntime.core.models import RunStatus
    from abstractruntime.flow.replay import check_runs, runs_of
    from abstractruntime.loader import load_workflows

    s = settings(ctx, json_out)
    named = [run_id_of(r) for r in run_ids or []]
    if named and (all_runs or status is not None):
        raise typer.BadParameter("give RUN... or --all / --status, not both", param_hint="RUN / --all / --status")
    if not named and not all_runs and status is None:
        raise typer.BadParameter("give RUN..., --all or --status STATUS", param_hint="RUN / --all / --status")
    if status is not None and status not in {m.value for m in RunStatus}:
        allowed = ", ".join(m.value for m in RunStatus)
        raise InvalidInputError(f"--status must be one of: {allowed} (got {status!r})")
    store = s.open_store()
    _, workflows = load_workflows(workflow_file)
    if not workflows:
        raise InvalidInputError(f"{workflow_file}: defines no workflow (a WorkflowSpec, or a function decorated "
                                "with @workflow)")
    ids = named or runs_of(store, [w.workflow_id for w in workflows], status=status)
    if not ids:
        where = s.store_root()
        raise NotFoundError(f"no runs of {', '.join(w.workflow_id for w in workflows)} to check in store {where}",
                            store=str(where))
    results = check_runs(workflows, store, ids)
    docs = [r.to_dict() for r in results]
    if s.json:
        s.emit_json(docs)
    else:
        s.emit_table(["result", "run_id", "detail"], [_row(doc) for doc in docs])
    bad = [doc for doc in docs if not doc["compatible"]]
    s.info(f"checked {len(docs)} run(s) against {workflow_file}: "
           + ("all compatible" if not bad else f"{len(bad)} not compatible"))
    if bad:
        raise typer.Exit(BLOCKED)


def _row(doc: dict[str, Any]) -> list[Any]:
    if doc["compatible"]:
        unit = ("position" if doc["checked"] == 1 else "positions") if doc["style"] == "code-first" else "nodes needed"
        return ["compatible", doc["run_id"], f"{doc['checked']} {unit} ({doc['status']})"]
    if doc.get("position") is not None:
        return ["diverges", doc["run_id"], f"at position {doc['position']}: recorded {doc['recorded']}, "
                                            f"code {doc['code']}"]
    return ["incompatible", doc["run_id"], doc["message"]]
