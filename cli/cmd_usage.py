"""``usage``: what runs spent on LLM calls, added up from their ledgers (``abstractruntime.usage``)."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Any, Optional

import typer

from .app import app, settings
from .handles import run_id_of


def _cost(value: Any) -> str:
    return "" if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


@app.command("usage")
def usage_cmd(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]",
                                           help="A run (with the runs it started as subworkflows)."),
    all_runs: bool = typer.Option(False, "--all", help="Every run in the store."),
    by: str = typer.Option("model", "--by", metavar="model|workflow|day|run",
                           help="Group the calls by model (provider/model), workflow, day (UTC) or run."),
    json_out: bool = typer.Option(False, "--json", help="The rows and the total as JSON."),
) -> None:
    """Add up the LLM calls runs recorded: calls, input and output tokens, cost.

    Every llm_call outcome records its usage (ext.usage: provider, model, tokens, latency and,
    with a price table, cost); this command reads those records, so the totals are the ledger's.
    A cost is shown for calls that had a price (--prices); `unpriced` counts the others.
    Piped: one line per group (key, calls, input, output, tokens, cost, unpriced), then `total`.
    Workflow code is never imported; nothing is written.
    """
    from abstractruntime.usage import tree_of, usage_rows

    s = settings(ctx, json_out)
    if all_runs == (run_id is not None):
        raise typer.BadParameter("give either RUN or --all", param_hint="RUN / --all")
    store = s.open_store()
    runtime = store.runtime()
    if run_id is not None:
        run_id = run_id_of(run_id)
        runtime.get_state(run_id)  # an unknown run is exit 4
        run_ids = tree_of(store, run_id)
    else:
        run_ids = [r.run_id for r in store.runs.list_runs(limit=10_000_000)]
    rows, total = usage_rows(runtime, run_ids, by=by)
    if s.json:
        s.emit_json({"by": by, "runs": run_ids, "rows": [r.to_dict() for r in rows], "total": total.to_dict()})
        return
    columns = [by, "calls", "input", "output", "tokens", "cost", "unpriced"]
    cells = [[r.key, r.calls, r.input_tokens, r.output_tokens, r.input_tokens + r.output_tokens, _cost(r.cost),
              r.unpriced] for r in [*rows, total]]
    s.emit_table(columns, cells)
    s.info(f"{total.calls} LLM call(s) in {len(total.runs)} of {len(run_ids)} run(s)")
