"""``schedule``: start runs of a workflow on a cron schedule (add, list, pause, resume, remove, history)."""

from typing import Any, Optional

import typer

from . import workflows
from .app import app, settings
from .cmd_exec import JSON_HELP, AttrOpt
from .output import Settings

schedule_app = typer.Typer(help="Start runs of a workflow on a cron schedule; workers start each tick's run once.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

NameArg = typer.Argument(..., metavar="NAME", help="The schedule's name (letters, digits, '-', '_').")


def _book(s: Settings, *, create: bool = False) -> Any:
    from abstractruntime.scheduler.schedules import Schedules

    return Schedules(s.open_store(create=create).schedules)


def _row(book: Any, schedule: Any) -> dict[str, Any]:
    """A schedule as ``list --json`` prints it: its fields, its next tick and its latest decision."""
    from abstractruntime.core.clock import to_iso

    doc: dict[str, Any] = schedule.to_dict()
    upcoming = None if schedule.paused else book.next_tick(schedule.name)
    doc["next_tick"] = to_iso(upcoming) if upcoming is not None else None
    last = book.decisions(schedule.name, limit=1)
    doc["last_decision"] = last[0].to_dict() if last else None
    return doc


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context,
    name: str = NameArg,
    workflow_file: str = typer.Argument(..., metavar="WORKFLOW.py",
                                        help="The workflow file (its id and sha256 are recorded, never its path)."),
    cron: str = typer.Option(..., "--cron", metavar="EXPR",
                             help="Five-field cron expression, e.g. \"0 9 * * MON-FRI\" (or @daily, @hourly ...)."),
    tz: str = typer.Option("UTC", "--tz", metavar="ZONE", help="IANA time zone the expression is read in."),
    var: list[str] = typer.Option([], "--var", metavar="KEY=VALUE", help="An input variable of every run; repeatable."),
    vars_json: Optional[str] = typer.Option(None, "--vars-json", metavar="JSON", help="Input variables as a JSON object."),
    catch_up: str = typer.Option("skip", "--catch-up", metavar="skip|one|all",
                                 help="Missed ticks: skip those later than --grace, run only the latest (one), or "
                                      "run each (all)."),
    overlap: str = typer.Option("skip", "--overlap", metavar="skip|allow|queue",
                                help="A tick while the previous run is still going: skip it, start it anyway "
                                     "(allow), or start it once that run ends (queue)."),
    grace: float = typer.Option(60.0, "--grace", metavar="SECONDS", min=0.0,
                                help="How late a tick may start under --catch-up skip."),
    attr: Optional[str] = AttrOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add a schedule: a run of WORKFLOW.py at each tick of --cron, started by `worker`.

    The schedule records the workflow's id and the sha256 of the file's bytes; a worker finds
    the file through the operator's registry (--workflows, $ABSTRACTRUNTIME_WORKFLOWS,
    [tool.abstractruntime] in pyproject.toml) by that id and hash, as for any run, and starts
    nothing while it is not registered or its bytes changed (deploy a new file: remove and add
    the schedule again). A bad expression or time zone exits 2; a name in use exits 1.
    """
    from abstractruntime.flow.spec import text_inputs

    s = settings(ctx, json_out)
    loaded = workflows.load(workflow_file, attr=attr)
    inputs = workflows.parse_vars(var, vars_json, text_inputs(loaded.workflow))
    store = s.open_store(create=True)
    from abstractruntime.scheduler.schedules import Schedules

    book = Schedules(store.schedules)
    schedule = book.add(name, cron=cron, tz=tz, workflow_id=loaded.workflow.workflow_id, sha256=loaded.sha256,
                        vars=inputs, catch_up=catch_up, overlap=overlap, grace_s=grace)
    try:
        workflows.registry(s, store).locate(schedule.workflow_id, schedule.sha256,
                                            recorded_by=f"schedule {schedule.name}")
    except Exception as exc:  # the schedule stands; workers will say the same until it is registered
        s.info(f"warning: workers will start no run of it yet: {exc}")
    if s.json:
        s.emit_json(_row(book, schedule))
        return
    s.emit_lines([schedule.name])
    upcoming = book.next_tick(schedule.name)
    s.info(f"schedule {schedule.name}: workflow {schedule.workflow_id} at '{schedule.cron}' ({schedule.tz}); "
           f"next tick {upcoming.isoformat() if upcoming else 'never'}")


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the store's schedules: name, state, cron, time zone, workflow, next tick, last decision."""
    s = settings(ctx, json_out)
    book = _book(s)
    rows = [_row(book, schedule) for schedule in book.list()]
    if s.json:
        s.emit_json(rows)
        return
    s.emit_table(["name", "state", "cron", "tz", "workflow", "next_tick", "last"],
                 [[r["name"], "paused" if r["paused"] else "active", r["cron"], r["tz"], r["workflow_id"],
                   r["next_tick"] or "", _last(r["last_decision"])] for r in rows])


def _last(decision: Optional[dict[str, Any]]) -> str:
    if not decision:
        return ""
    return f"{decision['tick']} {decision['action']}" + (f" ({decision['reason']})" if decision.get("reason") else "")


def _change(ctx: typer.Context, name: str, json_out: bool, verb: str) -> None:
    s = settings(ctx, json_out)
    book = _book(s)
    if verb == "remove":
        book.remove(name)
        if s.json:
            s.emit_json({"name": name, "removed": True})
        else:
            s.info(f"schedule {name} removed (its runs stay)")
        return
    schedule = book.pause(name) if verb == "pause" else book.resume(name)
    if s.json:
        s.emit_json(_row(book, schedule))
    else:
        s.info(f"schedule {name} {'paused' if schedule.paused else 'active'}")


@schedule_app.command("pause")
def schedule_pause(ctx: typer.Context, name: str = NameArg,
                   json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Stop starting runs (runs already started go on). Unknown name: exit 4."""
    _change(ctx, name, json_out, "pause")


@schedule_app.command("resume")
def schedule_resume(ctx: typer.Context, name: str = NameArg,
                    json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Start runs again from the next tick; ticks that fell while paused are not run."""
    _change(ctx, name, json_out, "resume")


@schedule_app.command("remove")
def schedule_remove(ctx: typer.Context, name: str = NameArg,
                    json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Remove a schedule: no more runs; its runs and its log stay (the name may be added again)."""
    _change(ctx, name, json_out, "remove")


@schedule_app.command("history")
def schedule_history(ctx: typer.Context, name: str = NameArg,
                     limit: int = typer.Option(20, "--limit", min=1, help="At most this many ticks, latest first."),
                     json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The decisions of a schedule's latest ticks: start (with the run id), skip or queue, and why."""
    s = settings(ctx, json_out)
    book = _book(s)
    book.get(name)
    decisions = [d.to_dict() for d in book.decisions(name, limit=limit)]
    if s.json:
        s.emit_json(decisions)
        return
    s.emit_table(["tick", "action", "run_id", "reason", "decided_at"],
                 [[d["tick"], d["action"], d["run_id"] or "", d["reason"], d["decided_at"]] for d in decisions])
