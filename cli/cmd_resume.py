"""Commands that deliver something to runs: resume, emit, cancel."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from . import workflows
from .handles import run_id_of
from .app import app, describe_state, finish_batch, finish_run, settings, shown_state
from .cmd_exec import AttrOpt, DriftOpt, JSON_HELP, WaitOpt, WorkflowOpt, drive
from .llm import BaseUrlOpt, LlmOpt, ModelOpt, ProviderOpt, ServerOpt, llm_flags


def _read_text_file(path: str, what: str) -> str:
    from abstractruntime.core.errors import InvalidInputError

    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what} {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _strip_newline(text: str) -> str:
    # One trailing newline is how files and `echo` end text; it is not part of the answer.
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def read_payload(*, answer: Optional[str], answer_file: Optional[str], payload: Optional[str],
                 payload_file: Optional[str]) -> Optional[Any]:
    """The resume payload from at most one of the four options (``None`` when none is given)."""
    from abstractruntime.core.errors import InvalidInputError

    given = [name for name, value in (("--answer", answer), ("--answer-file", answer_file),
                                      ("--payload", payload), ("--payload-file", payload_file)) if value is not None]
    if len(given) > 1:
        raise InvalidInputError(f"give only one of {', '.join(given)}")
    if answer is not None:
        return {"answer": _strip_newline(sys.stdin.read()) if answer == "-" else answer}
    if answer_file is not None:
        return {"answer": _strip_newline(_read_text_file(answer_file, "--answer-file"))}
    if payload is not None:
        return workflows.parse_json(sys.stdin.read() if payload == "-" else payload, "--payload")
    if payload_file is not None:
        return workflows.parse_json(_read_text_file(payload_file, "--payload-file"), "--payload-file")
    return None


def budget_payload(items: list[str]) -> dict[str, Any]:
    """The answer to a budget wait from ``--raise-budget`` items: ``{"raise": {...}, "set": {...}}``."""
    from .cmd_exec import parse_budget

    raised = [i.replace("=+", "=", 1) for i in items if "=+" in i]
    fixed = [i for i in items if "=+" not in i]
    payload: dict[str, Any] = {}
    if raised:
        payload["raise"] = parse_budget(raised, option="--raise-budget")
    if fixed:
        payload["set"] = parse_budget(fixed, option="--raise-budget")
    return payload


@app.command("resume")
def resume_cmd(
    ctx: typer.Context,
    target: str = typer.Argument(..., metavar="RUN@WAIT|RUN",
                                 help="The wait handle `run` printed (RUN@wN), or a run id (see --current)."),
    current: bool = typer.Option(False, "--current",
                                 help="With a bare run id, answer whatever the run waits on now (needed in scripts)."),
    answer: Optional[str] = typer.Option(None, "--answer", metavar="TEXT",
                                         help="The answer to an ask_user wait ('-' reads it from stdin)."),
    answer_file: Optional[str] = typer.Option(None, "--answer-file", metavar="FILE", help="Read the answer from FILE."),
    payload: Optional[str] = typer.Option(None, "--payload", metavar="JSON", help="A JSON payload ('-' reads stdin)."),
    payload_file: Optional[str] = typer.Option(None, "--payload-file", metavar="FILE", help="Read the JSON payload from FILE."),
    wait_key: Optional[str] = typer.Option(None, "--wait-key", metavar="KEY", help="Refuse unless the run waits on KEY."),
    fire_timer: bool = typer.Option(False, "--fire-timer",
                                    help="Fire the wait_until timer the run waits on now, before its time "
                                         "(recorded as fired by an operator)."),
    raise_budget: list[str] = typer.Option([], "--raise-budget", metavar="LIMIT=+N|LIMIT=N",
                                           help="Answer a budget wait: raise a limit by N (tokens=+50000) or set it "
                                                "(cost=5); repeatable. `--answer stop` ends the run instead."),
    workflow_file: Optional[str] = WorkflowOpt,
    attr: Optional[str] = AttrOpt,
    allow_drift: bool = DriftOpt,
    wait: float = WaitOpt,
    llm: Optional[str] = LlmOpt,
    provider: Optional[str] = ProviderOpt,
    model: Optional[str] = ModelOpt,
    server: Optional[str] = ServerOpt,
    base_url: Optional[str] = BaseUrlOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Answer a waiting run and advance it (exit 0 completed, 1 failed, 5 waiting again).

    Give the wait handle `run`, `tick` or `resume` printed (RUN@wN): a handle already answered
    is refused (exit 1, nothing written). A bare run id answers the current wait on a terminal
    or with --current; in a script it is refused (exit 2) naming the handle.
    --answer TEXT sends {"answer": TEXT} (a unique prefix of a choice, any case, picks that
    choice); --payload sends any JSON value. Without either, on a terminal the prompt is
    asked here; otherwise the command exits 5 and prints the wait handle.
    A timer (wait_until) takes no answer (exit 2): it resumes when due (`tick --due`, a
    worker), or now with --fire-timer, which the ledger records as an operator's action.
    A run that reached its budget waits (reason budget): --raise-budget tokens=+50000 raises
    it and the run goes on (the decision is recorded); --answer stop ends it (cancelled).
    """
    from abstractruntime.core.answers import check_timer_rule
    from abstractruntime.core.errors import RunNotWaitingError
    from abstractruntime.core.models import RunStatus, WaitReason

    from .handles import check_target, split_handle

    s = settings(ctx, json_out)
    run_id, wait_id = split_handle(target)
    data = read_payload(answer=answer, answer_file=answer_file, payload=payload, payload_file=payload_file)
    if raise_budget:
        if data is not None:
            from abstractruntime.core.errors import InvalidInputError

            raise InvalidInputError("--raise-budget takes no --answer or --payload")
        data = budget_payload(raise_budget)
    if fire_timer and data is not None:
        from abstractruntime.core.errors import InvalidInputError

        raise InvalidInputError("--fire-timer takes no --answer or --payload: the run gets what the clock "
                                "would give it")
    # No LLM option given: nothing to check, and the LLM configuration loads only if the run recorded one.
    given = any(v is not None for v in (llm, provider, model, server, base_url))
    flags = llm_flags(llm, provider=provider, model=model, server=server, base_url=base_url, ctx=ctx) if given else None
    store = s.open_store()
    reader = store.runtime()  # one for every read before the workflow loads
    state = reader.get_state(run_id)
    # Only an answer (or a firing) can reach the wrong wait; without one the command just shows the wait.
    check_target(state, target, wait_id, current=current or (data is None and not fire_timer),
                 interactive=s.may_prompt(), runtime=reader)
    if state.status is not RunStatus.WAITING or state.waiting is None:
        # Checked here too so that no workflow code is imported for a hopeless resume.
        hint = ""
        if state.status is RunStatus.RUNNING:
            hint = (f"; it was stopped mid-step or another process is advancing it: "
                    f"continue it with: abstractruntime tick {run_id}")
        raise RunNotWaitingError(f"Run {run_id} is not waiting (status: {state.status.value}){hint}",
                                 run_id=run_id, status=state.status.value)
    if data is not None or fire_timer:
        # The kernel's rule, asked before any workflow code is imported (and again under the lock).
        check_timer_rule(run_id, state.waiting, data, fire_timer)
    if data is not None:
        # The kernel's rule for an answer to a wait on tool calls (asked again under the lock).
        from abstractruntime.core.approvals import check_calls_hash

        check_calls_hash(state.waiting, data, run_id, required=True)
    if data is None and not fire_timer:
        if state.waiting.reason is WaitReason.USER and s.may_prompt():
            from .prompt import ask  # a person answers here: only then

            data = ask(state.waiting)
        if data is None:
            finish_run(s, state)
    loaded, runtime = workflows.load_for_run(s, store, run_id, workflow_file=workflow_file, attr=attr, llm=flags,
                                             allow_drift=allow_drift)
    s.current_run = run_id
    s.redactor = runtime.redactor  # errors printed from here on: the workflow's own rules too
    # The kernel re-checks the wait id under the run's lock (two resumes racing on one handle).
    extra: dict[str, Any] = {"wait_id": wait_id} if wait_id is not None else {}
    if fire_timer:
        extra["fire_timer"] = True
    # Tool calls are decided with `tools approve|deny`; a raw answer to them must name their hash.
    state = runtime.resume(workflow=loaded.workflow, run_id=run_id, wait_key=wait_key, payload=data,
                           allow_drift=allow_drift, lock_wait=wait, require_calls_hash=True, **extra)
    state = drive(s, runtime, loaded.workflow, state, allow_drift=allow_drift, lock_wait=wait)
    finish_run(s, state)


@app.command("emit")
def emit_cmd(
    ctx: typer.Context,
    event_key: str = typer.Argument(..., metavar="EVENT_KEY", help="The wait key runs are waiting on."),
    payload: Optional[str] = typer.Option(None, "--payload", metavar="JSON", help="JSON payload [default: {}]."),
    payload_file: Optional[str] = typer.Option(None, "--payload-file", metavar="FILE", help="Read the JSON payload from FILE."),
    hand_off: bool = typer.Option(False, "--hand-off",
                                  help="Record the answers and leave the runs to a worker (woken at once on PostgreSQL)."),
    event_id: Optional[str] = typer.Option(None, "--id", metavar="ID",
                                           help="The event's id: an id is delivered at most once per store (a retried "
                                                "emit of a delivered id does nothing, exit 0)."),
    keep: Optional[str] = typer.Option(None, "--keep", metavar="DURATION",
                                       help="With --id, when no run waits on EVENT_KEY: keep the event this long "
                                            "(90s, 10m, 2h, 1d) for the first run that waits on it."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Accept changed workflow files."),
    wait: float = typer.Option(0.0, "--wait", metavar="SECONDS", help="Wait this long for runs locked by another process."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Resume every run waiting on EVENT_KEY with the payload (exit 4 if none waits on it).

    Each run is advanced here until it waits again or ends; with --hand-off the answer is
    recorded and the run left `running` for `abstractruntime worker` to advance.
    With --id, the event is delivered at most once per store: emitting a delivered id again
    does nothing (exit 0, "already delivered"), even if a run started waiting on the key since;
    an emit interrupted after it recorded the id is finished by emitting the same id again.
    With --keep DURATION (and --id), an event no run waits on yet is kept (exit 0) and given to
    the first run that waits on EVENT_KEY within DURATION, by the next `worker` pass or the
    next emit of the same id; then it is dropped.
    """
    from abstractruntime.scheduler.events import EMIT_LOCK_WAIT, emit_event

    s = settings(ctx, json_out)
    data = read_payload(answer=None, answer_file=None, payload=payload, payload_file=payload_file)
    data = {} if data is None else data
    store = s.open_store()

    def resolve(run: Any) -> tuple[Any, Any]:
        loaded, runtime = workflows.load_for_run(s, store, run.run_id, allow_drift=allow_drift)
        return loaded.workflow, runtime

    # Tool calls are decided with `tools approve|deny`; a raw event to them must name their hash
    # (the kernel checks it under each run's lock).
    result = emit_event(store.runs, event_key, data, resolve=resolve, hand_off=hand_off,
                        allow_drift=allow_drift, lock_wait=max(wait, EMIT_LOCK_WAIT), require_calls_hash=True,
                        event_id=event_id, events=store.events if event_id is not None else None, keep=keep,
                        ledger=store.ledger)
    elsewhere = result.already_answered
    if elsewhere:
        s.info(f"{len(elsewhere)} run(s) already answered: {', '.join(elsewhere[:10])}"
               + (" ..." if len(elsewhere) > 10 else ""))
    errors = [f"run {run_id}: {message}" for run_id, message in result.errors.items()]
    verb = "handed off to workers" if hand_off else "resumed"
    named = f" (event {event_id})" if event_id is not None else ""
    summary = {
        "already_delivered": f"event {event_id} was already delivered; nothing was done",
        "being_delivered": f"event {event_id} is being delivered by another process; nothing was done",
        "kept": f"no run waits on {event_key} yet: event {event_id} is kept until {result.kept_until} for the "
                "first run that waits on it (delivered by a worker, or by emitting this id again)",
        "expired": f"event {event_id} was kept until {result.kept_until} and expired undelivered; nothing was done",
    }.get(result.outcome, f"{len(result.states)} run(s) {verb} on {event_key}{named}")
    finish_batch(s, result.states, errors, summary)


@app.command("cancel")
def cancel_cmd(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="The run to cancel."),
    reason: Optional[str] = typer.Option(None, "--reason", metavar="TEXT", help="Why (recorded as the run's error)."),
    wait: float = WaitOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cancel a running or waiting run (exit 0; also when it was already cancelled).

    A run that already completed or failed is left as it is: exit 1, "nothing to cancel".
    """
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    runtime = s.open_store().runtime()
    before = runtime.get_state(run_id).status.value
    if before in ("completed", "failed"):
        from abstractruntime.core.errors import RunTerminalError

        raise RunTerminalError(f"run {run_id} already {before}; nothing to cancel", run_id=run_id, status=before)
    state = runtime.cancel_run(run_id, reason=reason, lock_wait=wait)
    if state.status.value != "cancelled":  # it finished while we waited for its lock
        raise RunTerminalError(f"run {run_id} already {state.status.value}; nothing to cancel", run_id=run_id,
                               status=state.status.value)
    state = shown_state(s, state)
    if s.json:
        s.emit_json(state.to_dict())
    else:
        s.emit_lines([state.run_id])
        describe_state(s, state)
