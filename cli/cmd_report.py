"""``report``: a run as one self-contained HTML page (``abstractruntime.report`` does the work)."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import sys
from typing import Optional

import typer

from .app import app, settings


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]", help="The run to report on."),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", metavar="PATH",
        help="The HTML file to write ('-' for stdout) [default: RUN.html]; "
             "with --all, a directory [default: reports]."),
    at: Optional[int] = typer.Option(None, "--at", metavar="SEQ", help="Show the run as it was at ledger seq SEQ."),
    all_runs: bool = typer.Option(False, "--all", help="One page per run in the store, plus DIR/index.html."),
    layout: str = typer.Option("auto", "--layout", metavar="auto|dot|simple",
                               help="Graph layout: Graphviz dot when installed (auto), dot, or the simple fallback."),
    json_out: bool = typer.Option(False, "--json", help="Where the pages were written, as JSON."),
) -> None:
    """Write one self-contained HTML page of a run: header, verification verdict, graph, timeline.

    The page needs no network: CSS, script and SVG are inline. The verdict is computed when
    the page is written; the command exits 0 even when it shows a failed verification (a
    warning is printed), 4 for an unknown run, 2 for a SEQ outside the ledger. Piped output:
    the path of each page written (with --all: the index first). Workflow code is never imported.
    """
    from abstractruntime import __version__
    from abstractruntime.report import load_run, render_run, write_index, write_report

    s = settings(ctx, json_out)
    if all_runs == (run_id is not None):
        raise typer.BadParameter("give either RUN or --all", param_hint="RUN / --all")
    if layout not in ("auto", "dot", "simple"):
        raise typer.BadParameter("choose auto, dot or simple", param_hint="--layout")
    if all_runs and at is not None:
        raise typer.BadParameter("--at applies to one run", param_hint="--at")
    store = s.open_store()
    if all_runs:
        index, items = write_index(store, output or "reports", layout=layout)
        bad = [i for i in items if i.verified is False]
        if s.json:
            s.emit_json({"index": str(index), "runs": [i.to_dict() for i in items]})
        else:
            s.emit_lines([str(index)] + [i.path for i in items if i.path])
        for item in items:
            if item.error:
                typer.echo(f"error: run {item.run_id}: {item.error}", err=True)
        s.info(f"wrote {sum(1 for i in items if i.path)} report(s) and {index}"
               + (f"; {len(bad)} run(s) FAILED verification" if bad else ""))
        raise typer.Exit(1 if any(i.error for i in items) else 0)
    assert run_id is not None
    if output == "-":
        html, info = render_run(load_run(store, run_id, at=at), layout=layout, version=__version__)
        sys.stdout.write(html)
        sys.stdout.flush()
        _warn(run_id, info.get("verified"))
        return
    item = write_report(store, run_id, output or f"{run_id}.html", at=at, layout=layout)
    if s.json:
        s.emit_json(item.to_dict())
    else:
        s.emit_lines([str(item.path)])
    s.info(f"wrote {item.path}: {item.rows} record(s), {item.status}, graph laid out by {item.graph_engine}")
    _warn(run_id, item.verified)


def _warn(run_id: str, verified: object) -> None:
    if verified is False:
        typer.echo(f"warning: run {run_id} FAILED verification; the report shows the problems", err=True)
