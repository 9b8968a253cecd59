"""Read-only commands: runs list, runs show, ledger show. None of them imports workflow code."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Any, Optional

import typer

from .app import app, settings, wait_handle
from .cmd_exec import JSON_HELP
from .handles import run_id_of
from .output import Settings, json_inline, mapping, tool_call_text

runs_app = typer.Typer(help="List and inspect runs.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read a run's ledger.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(ledger_app, name="ledger")

SORT_KEYS = ("updated", "created", "status", "workflow", "id")


def _enum(value: Optional[str], enum: Any, option: str) -> Any:
    from abstractruntime.core.errors import InvalidInputError

    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise InvalidInputError(f"{option} must be one of: {allowed} (got {value!r})") from None


def _sort(runs: list[Any], key: str) -> list[Any]:
    from abstractruntime.storage.query import newest_first, timestamp

    if key == "updated":
        return newest_first(runs)  # the stores' own order
    if key == "created":
        return sorted(runs, key=lambda r: (-(timestamp(r.created_at) or 0.0), r.run_id))
    if key == "status":
        return sorted(runs, key=lambda r: (r.status.value, r.run_id))
    if key == "workflow":
        return sorted(runs, key=lambda r: (r.workflow_id, r.run_id))
    return sorted(runs, key=lambda r: r.run_id)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", metavar="STATUS",
                                         help="running, waiting, completed, failed or cancelled."),
    workflow: Optional[str] = typer.Option(None, "--workflow", metavar="ID", help="Only runs of this workflow id."),
    wait_reason: Optional[str] = typer.Option(None, "--wait-reason", metavar="REASON",
                                              help="user, event, until, job or subworkflow."),
    limit: int = typer.Option(100, "--limit", min=0, help="At most this many runs."),
    sort: str = typer.Option("updated", "--sort", metavar="KEY", help="updated (newest first), created, status, workflow or id."),
    wide: bool = typer.Option(False, "--wide", help="On a terminal, show every column in full, however wide."),
    blocked_only: bool = typer.Option(False, "--blocked", help="Only blocked runs (their code diverges from their "
                                                                "history; see replay)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List runs (newest first). Piped: run_id, status, workflow_id, node, wait reason, updated_at.

    On a terminal run ids are never wrapped; other columns wrap to fit (or --wide). A blocked
    run (a code-first run whose code diverged from its history: nothing advances it until
    compatible code is deployed, or it is forked or cancelled) shows as `waiting (blocked)` or
    `running (blocked)`, and its JSON carries `blocked` (where it diverged).
    """
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.core.models import RunStatus, WaitReason

    s = settings(ctx, json_out)
    if sort not in SORT_KEYS:
        raise InvalidInputError(f"--sort must be one of: {', '.join(SORT_KEYS)} (got {sort!r})")
    st = _enum(status, RunStatus, "--status")
    wr = _enum(wait_reason, WaitReason, "--wait-reason")
    store = s.open_store()
    # The index answers newest-first; other orders need every match before the limit applies.
    fetch = limit if sort == "updated" else 1_000_000
    from abstractruntime.core.blocks import blocked_runs

    blocks = blocked_runs(store.runs, store.ledger)
    if blocked_only:
        fetch = 1_000_000
    runs = _sort(store.runs.list_runs(status=st, wait_reason=wr, workflow_id=workflow, limit=fetch), sort)
    runs = [r for r in runs if r.run_id in blocks][:limit] if blocked_only else runs[:limit]
    if s.json:
        from abstractruntime.usage import stored_totals

        docs = []
        for r in runs:
            doc = r.to_dict()
            if r.run_id in blocks:
                doc["blocked"] = blocks[r.run_id]
            totals = stored_totals(store, r.run_id)  # what the run spent on LLM calls, from its checkpoint
            if totals is not None:
                doc["usage"] = totals
            docs.append(doc)
        s.emit_json(docs)
        return
    s.emit_table(
        ["run_id", "status", "workflow", "node", "waiting", "updated_at"],
        [[r.run_id, r.status.value + (" (blocked)" if r.run_id in blocks else ""), r.workflow_id, r.current_node,
          r.waiting.reason.value if r.waiting else None, r.updated_at] for r in runs],
        wide=wide,
    )
    if not runs:
        s.info("no runs match")


def _step_summary(s: Settings, rec: dict[str, Any]) -> str:
    effect = rec.get("effect") or {}
    what = effect.get("type") if isinstance(effect, dict) else None
    result = rec.get("result") or {}
    if rec.get("error"):
        return s.scrub(str(rec["error"]))
    if isinstance(result, dict) and "next_node" in result:
        return f"-> {result['next_node']}"
    if what:
        return str(what)
    ext = mapping(rec.get("ext"))
    if isinstance(ext.get("step"), dict):  # a code-first step or recorded value, at its position
        step = ext["step"]
        label = f"step {step.get('name')}" if step.get("kind") == "step" else str(step.get("kind"))
        return f"{label} @{rec.get('effect_id')}"
    if isinstance(ext.get("patch"), dict):
        return f"patched {ext['patch'].get('name')} @{rec.get('effect_id')}"
    if rec.get("kind") == "upgrade" and isinstance(result, dict):
        return f"upgrade ({result.get('checked')}) -> {str(result.get('to'))[:12]}"
    return ""


def position_of(store: Any, run_id: str, at: str) -> int:
    """A ledger seq from ``--at``: a number, or the name of one of the run's bookmarks."""
    if at.isdigit():
        return int(at)
    return int(store.bookmarks.get(run_id, at).seq)


@runs_app.command("reindex")
def runs_reindex(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rebuild the store's query index (index.sqlite3) from the run files."""
    from abstractruntime.storage.reindex import rebuild_index

    s = settings(ctx, json_out)
    report = rebuild_index(s.open_store())
    if s.json:
        s.emit_json(report.to_dict())
    else:
        s.emit_fields([("indexed", report.indexed), ("path", report.path)])
    for name in report.unreadable:
        s.info(f"warning: run directory {name} could not be read; `abstractruntime verify {name}` says why")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    steps: int = typer.Option(10, "--steps", min=0, help="How many of the last ledger records to show."),
    at: Optional[str] = typer.Option(None, "--at", metavar="SEQ|BOOKMARK",
                                     help="Show the run as it was right after this ledger record (or bookmark)."),
    reveal: Optional[str] = typer.Option(
        None, "--reveal", metavar="PATH",
        help="Print only the real value at PATH (e.g. vars.api_key), which every other output shows redacted; "
             "exit 3 when the run's secrets no longer hold it."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show a run: its state, what it waits for (prompt, choices, wait key) and its last steps.

    Secrets are shown redacted, as the ledger holds them; --reveal PATH prints one real value."""
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    store = s.open_store()
    runtime = store.runtime()
    if reveal is not None:
        _reveal(s, runtime, run_id, reveal, at)
        return
    if at is None:
        checkpoint = runtime.shown_checkpoint(run_id)
    else:
        checkpoint = runtime.shown_checkpoint(run_id, at=position_of(store, run_id, at))
    records = runtime.get_ledger(run_id)[: checkpoint.ledger.seq]
    last = records[-steps:] if steps else []
    from abstractruntime.core.blocks import current_block
    from abstractruntime.usage import describe_totals, run_totals

    block = current_block(store.runs, run_id, checkpoint.ledger) if at is None else None
    totals = run_totals(checkpoint.metadata)
    if s.json:
        doc = checkpoint.to_dict()
        if block is not None:
            doc["blocked"] = block
        if totals is not None:
            doc["usage"] = totals
        if checkpoint.run.waiting is not None:
            doc["wait_id"] = getattr(checkpoint.run.waiting, "wait_id", None)
            doc["wait_handle"] = wait_handle(checkpoint.run)
        doc["last_steps"] = last
        s.emit_json(doc)
        return
    run = checkpoint.run
    pairs: list[tuple[str, Any]] = [
        ("run_id", run.run_id), ("workflow_id", run.workflow_id), ("status", run.status.value),
        ("current_node", run.current_node), ("created_at", run.created_at), ("updated_at", run.updated_at),
    ]
    if run.actor_id:
        pairs.append(("actor_id", run.actor_id))
    if run.parent_run_id:
        pairs.append(("parent_run_id", run.parent_run_id))
    if checkpoint.workflow:
        if checkpoint.workflow.get("source"):  # recorded by older runs; shown, never used to find code
            pairs.append(("workflow_file", checkpoint.workflow.get("source")))
        pairs.append(("workflow_sha256", checkpoint.workflow.get("sha256")))
    if checkpoint.origin:
        pairs.append(("forked_from", checkpoint.origin.get("run_id")))
    pairs.append(("ledger_seq", checkpoint.ledger.seq))
    pairs.append(("ledger_head", checkpoint.ledger.head_hash))
    if totals is not None:
        pairs.append(("usage", describe_totals(totals)))
        if totals.get("budget"):
            pairs.append(("budget", ", ".join(f"{k} {v:g}" for k, v in totals["budget"].items())))
    wait = run.waiting
    if wait is not None:
        pairs.append(("wait_handle", wait_handle(run)))
        pairs.append(("wait_reason", wait.reason.value))
        pairs.append(("wait_key", wait.wait_key))
        if wait.prompt is not None:
            pairs.append(("prompt", wait.prompt))
        if wait.choices:
            pairs.append(("choices", ", ".join(wait.choices)))
            pairs.append(("free_text", "allowed" if wait.allow_free_text else "not allowed"))
        if wait.until:
            pairs.append(("until", wait.until))
        details = wait.details if isinstance(wait.details, dict) else {}
        if isinstance(details.get("tool_calls"), list):
            # The calls an operator is asked to approve, one line each, and the hash they approve.
            pairs.append(("calls_sha256", details.get("calls_sha256")))
            for call in details["tool_calls"]:
                if isinstance(call, dict):
                    pairs.append(("tool_call", tool_call_text(call)))
            pairs.append(("approve_with", f"abstractruntime tools approve {run.run_id}"))
    if run.output is not None:
        pairs.append(("output", run.output))
    if run.error:
        pairs.append(("error", run.error))
    if block is not None:
        pairs.append(("blocked", block.get("message")))
    pairs.append(("vars", run.vars))
    s.emit_fields(pairs)
    if last:
        from .output import stdout_is_tty

        if stdout_is_tty():
            s.emit_table(["seq", "kind", "status", "node", "detail", "ended_at"],
                         [[r.get("seq"), r.get("kind"), r.get("status"), r.get("node_id"), _step_summary(s, r),
                           r.get("ended_at")] for r in last], title="last steps")
        else:
            for r in last:
                s.emit_lines(["step\t" + "\t".join(str(v if v is not None else "") for v in (
                    r.get("seq"), r.get("kind"), r.get("status"), r.get("node_id"))) + "\t" +
                    _step_summary(s, r).replace("\t", " ").replace("\n", " ")])


def _reveal(s: Settings, runtime: Any, run_id: str, path: str, at: Optional[str]) -> None:
    """``runs show RUN --reveal PATH``: the one real value asked for (strings as they are, anything
    else as JSON); with --json, ``{"run_id", "path", "value"}``."""
    from abstractruntime.core.errors import InvalidInputError

    if at is not None:
        raise InvalidInputError("--reveal shows the run as it is now; it does not combine with --at")
    value = runtime.reveal(run_id, path)
    if s.json:
        s.emit_json({"run_id": run_id, "path": path, "value": value})
    else:
        s.emit_lines([value if isinstance(value, str) else json_inline(value)])


@ledger_app.command("show")
def ledger_show(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON record per line, exactly the stored fields."),
    from_seq: int = typer.Option(1, "--from", metavar="SEQ", min=1, help="Start at this seq."),
    json_out: bool = typer.Option(False, "--json", help="A JSON array of the records."),
) -> None:
    """Print a run's ledger records (piped: seq, kind, status, node, detail, record_hash)."""
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    runtime = s.open_store().runtime()
    runtime.get_checkpoint(run_id)  # unknown run -> not found, not an empty ledger
    records = [r for r in runtime.get_ledger(run_id) if int(r.get("seq") or 0) >= from_seq]
    if jsonl:
        s.emit_lines(json_inline(s.scrub_errors(r)) for r in records)
        return
    if s.json:
        s.emit_json(records)
        return
    s.emit_table(["seq", "kind", "status", "node", "detail", "record_hash"],
                 [[r.get("seq"), r.get("kind"), r.get("status"), r.get("node_id"), _step_summary(s, r),
                   r.get("record_hash")] for r in records])
