"""``tools list|approve|deny``: decide on the tool calls a run is waiting on.

A ``tool_calls`` effect that is passed through (``--llm remote``, or a batch naming a tool
the workflow lists in ``require_approval``) parks the run with the calls and their
``calls_sha256``. ``tools approve`` runs them with the workflow file's own ``tools`` and
resumes the run with the results; ``tools deny`` resumes it with a refusal for each call.

Both are kernel operations (``Runtime.approve_tool_calls`` / ``deny_tool_calls``): under the
run's lock a ``decision`` record binds the decision to the calls' ``calls_sha256`` before any
call runs, each call's result is recorded before the next starts, and the results — with
``calls_sha256`` and an ``approval`` record — answer the wait. Calls that do not hash to their
recorded hash are refused (exit 3), and with ``--calls-sha256`` so are calls other than the
ones the operator reviewed (exit 2): an approval cannot be replayed onto other arguments.
"""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import TYPE_CHECKING, Any, Optional

import typer

from . import workflows
from .app import app, finish_run, settings
from .cmd_exec import AttrOpt, DriftOpt, JSON_HELP, WaitOpt, WorkflowOpt, drive
from .handles import run_id_of
from .llm import BaseUrlOpt, LlmOpt, ModelOpt, ProviderOpt, ServerOpt, llm_flags
from .output import Settings

if TYPE_CHECKING:
    from abstractruntime.core.models import RunState
    from abstractruntime.llm_config import LlmFlags

tools_app = typer.Typer(help="Approve or deny the tool calls a run is waiting on.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")

ShaOpt = typer.Option(None, "--calls-sha256", metavar="HEX",
                      help="Refuse unless the pending calls hash to HEX (the calls_sha256 you reviewed).")


def _summary(calls: list[dict[str, Any]]) -> list[list[Any]]:
    return [[c["call_id"], c["name"], c["arguments"]] for c in calls]


def _shown_calls(runtime: Any, run_id: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls as the ledger holds them: each secret argument as its redacted text (the hash
    approved is still the real calls')."""
    wait = runtime.shown_checkpoint(run_id).run.waiting
    details = wait.details if wait is not None and isinstance(wait.details, dict) else {}
    recorded = {c.get("call_id"): c for c in details.get("tool_calls") or [] if isinstance(c, dict)}
    shown = []
    for call in calls:
        match = recorded.get(call.get("call_id"))
        arguments = match.get("arguments") if match is not None and match.get("name") == call.get("name") \
            else runtime.redactor.redact(call.get("arguments"))
        shown.append({**call, "arguments": arguments})
    return shown


@tools_app.command("list")
def tools_list(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="A run waiting on tool calls (or its wait handle RUN@wN)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the tool calls a run waits on (piped: call_id, name, arguments as JSON)."""
    from abstractruntime.integrations.abstractcore.approval_checks import checked_calls, require_tool_wait

    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    runtime = s.open_store().runtime()
    waiting = require_tool_wait(run_id, runtime.get_state(run_id))
    calls, digest = checked_calls(waiting, None, ledger=runtime.get_ledger(run_id))
    calls = _shown_calls(runtime, run_id, calls)
    if s.json:
        s.emit_json({"run_id": run_id, "wait_key": waiting.wait_key, "calls_sha256": digest, "tool_calls": calls})
        return
    s.emit_table(["call_id", "name", "arguments"], _summary(calls), title=f"calls_sha256 {digest}")
    s.info(f"calls_sha256: {digest}")


def _decide(s: Settings, run_id: str, *, decision: str, only: list[str], reason: Optional[str],
            expected_sha256: Optional[str], workflow_file: Optional[str], attr: Optional[str], allow_drift: bool,
            lock_wait: float, config: Optional["LlmFlags"], by: Optional[str]) -> "RunState":
    from abstractruntime.core.approvals import pending_calls
    from abstractruntime.core.errors import WorkflowLoadError
    from abstractruntime.integrations.abstractcore.workflow_tools import local_executor

    from .handles import check_target, split_handle

    given = run_id
    run_id, wait_id = split_handle(given)
    store = s.open_store()
    reader = store.runtime()
    state = reader.get_state(run_id)
    # Asked before any workflow code is loaded (the kernel asks again under the run's lock).
    check_target(state, given, wait_id, current=True, interactive=True, runtime=reader)
    calls, _ = pending_calls(state)
    loaded, runtime = workflows.load_for_run(s, store, run_id, workflow_file=workflow_file, attr=attr, llm=config,
                                             allow_drift=allow_drift)
    s.current_run = run_id
    common: dict[str, Any] = {"workflow": loaded.workflow, "run_id": run_id, "reason": reason,
                              "calls_sha256": expected_sha256, "by": by or _operator(), "wait_id": wait_id,
                              "allow_drift": allow_drift, "lock_wait": lock_wait}
    if decision == "approved":
        executor = local_executor(loaded)
        if executor is None:
            raise WorkflowLoadError(f"{loaded.path}: the workflow file exposes no tools to run the calls with",
                                    path=str(loaded.path))
        state = runtime.approve_tool_calls(executor=executor, only=only or None, **common)
        approved = len(only) if only else len(calls)
    else:
        state = runtime.deny_tool_calls(**common)
        approved = 0
    s.info(f"run {run_id}: {approved} call(s) approved, {len(calls) - approved} refused")
    return drive(s, runtime, loaded.workflow, state, allow_drift=allow_drift, lock_wait=lock_wait)


def _operator() -> Optional[str]:
    """Who decides, when --by does not say: the operating-system user running the command."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


ByOpt = typer.Option(None, "--by", metavar="NAME",
                     help="Who decides, recorded with the decision [default: the operating-system user].")


@tools_app.command("approve")
def tools_approve(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="A run waiting on tool calls (or its wait handle RUN@wN)."),
    only: list[str] = typer.Option([], "--only", metavar="CALL_ID",
                                   help="Approve only this call (repeatable); the others are refused."),
    reason: Optional[str] = typer.Option(None, "--reason", metavar="TEXT", help="Why the calls left out were refused."),
    calls_sha256: Optional[str] = ShaOpt,
    by: Optional[str] = ByOpt,
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
    """Run the pending tool calls with the workflow file's tools and resume the run.

    Under the run's lock the decision is recorded (bound to the calls' calls_sha256) before any
    call runs, and each call's result before the next starts: after a crash, approving again
    runs only the calls without a result; two approvals at once run the calls once.
    Exit like `resume`: 0 completed, 1 failed, 5 waiting again (e.g. on the next calls).
    A run not waiting on tool calls is an error (exit 1); an unknown run exit 4.
    """
    s = settings(ctx, json_out)
    config = llm_flags(llm, provider=provider, model=model, server=server, base_url=base_url, ctx=ctx)
    state = _decide(s, run_id, decision="approved", only=only, reason=reason, expected_sha256=calls_sha256,
                    workflow_file=workflow_file, attr=attr, allow_drift=allow_drift, lock_wait=wait, config=config,
                    by=by)
    finish_run(s, state)


@tools_app.command("deny")
def tools_deny(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="A run waiting on tool calls (or its wait handle RUN@wN)."),
    reason: str = typer.Option("denied by operator", "--reason", metavar="TEXT",
                               help="Why; the workflow sees 'Tool call refused: TEXT' for each call."),
    calls_sha256: Optional[str] = ShaOpt,
    by: Optional[str] = ByOpt,
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
    """Refuse every pending tool call and resume the run (exit codes as `tools approve`)."""
    s = settings(ctx, json_out)
    config = llm_flags(llm, provider=provider, model=model, server=server, base_url=base_url, ctx=ctx)
    state = _decide(s, run_id, decision="denied", only=[], reason=reason, expected_sha256=calls_sha256,
                    workflow_file=workflow_file, attr=attr, allow_drift=allow_drift, lock_wait=wait, config=config,
                    by=by)
    finish_run(s, state)


__all__ = ["tools_app"]
