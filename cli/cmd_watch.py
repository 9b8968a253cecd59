"""``watch``: follow a run as it advances (``abstractruntime.watch`` does the work)."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import sys
from typing import Any, Optional

import typer

from .app import app, describe_state, settings, state_document, wait_handle
from .exit_codes import exit_code_for_status
from .handles import run_id_of
from .output import json_inline, mapping


# Control characters other than newline and tab: a model's reply (or an edited live file) must
# not drive the terminal (escape sequences), so they are shown as U+FFFD.
_CONTROLS = {c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]}


def printable(text: str) -> str:
    """``text`` without terminal control characters (newlines and tabs kept)."""
    return text.translate(_CONTROLS)


def record_line(record: dict[str, Any]) -> str:
    """One line for a record: seq, kind, status, node, and what it did."""
    effect = mapping(record.get("effect"))
    kind, status = record.get("kind"), record.get("status")
    what = ""
    ext = mapping(record.get("ext"))
    usage = ext.get("usage")
    if kind == "effect" and status == "started":
        what = f"{effect.get('type')} in flight (effect {record.get('effect_id')}, attempt {record.get('attempt')})"
    elif kind == "effect":
        what = str(effect.get("type") or "")
        if isinstance(usage, dict):
            what += (f": {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens, "
                     f"{usage.get('latency_ms', 0):g} ms")
            if usage.get("cost") is not None:
                what += f", cost {usage['cost']:g}"
    elif kind == "pause":
        wait = (record.get("result") or {}).get("wait") or {}
        what = f"paused ({wait.get('reason')}): {wait.get('prompt') or wait.get('until') or ''}"
    elif kind == "resume":
        what = f"resumed ({(record.get('result') or {}).get('reason')})"
    if record.get("error"):
        what = (what + " " if what else "") + str(record["error"])
    return f"{record.get('seq')}\t{kind}\t{status}\t{record.get('node_id')}\t{what}".rstrip()


@app.command("watch")
def watch_cmd(
    ctx: typer.Context,
    target: str = typer.Argument(..., metavar="RUN", help="The run to follow (a wait handle RUN@wN is accepted)."),
    last: int = typer.Option(10, "--last", min=0, help="Show this many records already written first."),
    interval: float = typer.Option(0.2, "--interval", metavar="SECONDS", min=0.01,
                                   help="How often the ledger is read (PostgreSQL also wakes on NOTIFY)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", min=0.0,
                                            help="Stop following after this long (exit 0 if still running)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per event (JSON lines)."),
) -> None:
    """Follow a run: each record as it becomes durable, the effect in flight, and an LLM reply
    streaming token by token when the run's LLM calls stream (--stream where the run advances).

    Exits when the run waits or ends, with the run's code: 0 completed, 1 failed or cancelled,
    5 waiting (the wait handle is printed). Streamed text comes from a side channel beside the
    run (a file in a folder store, NOTIFY on PostgreSQL), redacted like everything else; only the
    final reply is recorded. Piped: `seq kind status node what` lines, streamed text as it comes.
    Nothing is written.
    """
    from abstractruntime.watch import follow

    s = settings(ctx, json_out)
    run_id = run_id_of(target)
    store = s.open_store()
    s.current_run = run_id
    streaming = False
    end_state = None
    for event in follow(store, run_id, interval=interval, last=last, timeout=timeout):
        if s.json:
            doc: dict[str, Any] = {"event": event.kind}
            if event.record is not None:
                doc["record"] = {k: v for k, v in event.record.items() if k != "stored"}
            if event.text is not None:
                doc.update(text=event.text, effect_id=event.effect_id)
            if event.state is not None:
                doc["state"] = state_document(event.state)
            typer.echo(json_inline(s.scrub_errors(doc)))
            sys.stdout.flush()
        elif event.kind == "text" and event.text is not None:
            sys.stdout.write(printable(event.text))
            sys.stdout.flush()
            streaming = True
        elif event.kind == "record" and event.record is not None:
            if streaming:
                sys.stdout.write("\n")
                streaming = False
            typer.echo(printable(s.scrub(record_line(event.record))))
        if event.kind == "end":
            end_state = event.state
    if streaming:
        sys.stdout.write("\n")
    if end_state is None:
        s.info(f"run {run_id} is still running (--timeout)")
        raise typer.Exit(0)
    if not s.json and end_state.status.value == "waiting":
        typer.echo(wait_handle(end_state))
    describe_state(s, end_state)
    raise typer.Exit(exit_code_for_status(end_state.status.value))
