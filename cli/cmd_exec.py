"""Commands that advance runs: run, start, tick, retry."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from . import workflows
from .app import app, finish_batch, finish_run, settings
from .llm import BaseUrlOpt, LlmOpt, ModelOpt, ProviderOpt, ServerOpt, llm_config_of, llm_flags
from .handles import run_id_of
from .output import Settings, json_inline

if TYPE_CHECKING:
    from abstractruntime.core.models import RunState
    from abstractruntime.core.runtime import Runtime

JSON_HELP = "Write JSON to stdout (schema: docs/cli.md)."
AttrOpt = typer.Option(None, "--attr", metavar="NAME", help="Attribute holding the WorkflowSpec [default: workflow].")
WorkflowOpt = typer.Option(None, "--workflow", metavar="FILE",
                           help="The run's workflow file [default: the registered file for the run's workflow id "
                                "and sha256; see --workflows].")
DriftOpt = typer.Option(False, "--allow-drift", help="Accept a workflow file that changed since the run started.")
WaitOpt = typer.Option(0.0, "--wait", metavar="SECONDS", help="Wait this long for a run locked by another process.")


def drive(s: Settings, runtime: "Runtime", workflow: Any, state: "RunState", *, allow_drift: bool = False,
          lock_wait: float = 0.0, max_steps: int = 10_000) -> "RunState":
    """Tick until the run stops running; on a terminal, answer ask_user prompts and go on."""
    from abstractruntime.core.models import RunStatus, WaitReason

    budget = max_steps
    while True:
        if state.status is RunStatus.RUNNING and budget > 0:
            step = min(budget, 100)
            budget -= step
            state = runtime.tick(workflow=workflow, run_id=state.run_id, max_steps=step,
                                 allow_drift=allow_drift, lock_wait=lock_wait)
            continue
        wait = state.waiting
        if (state.status is RunStatus.WAITING and wait is not None and wait.reason is WaitReason.USER
                and s.may_prompt()):
            from .prompt import ask  # a person answers here: only then

            payload = ask(wait)
            if payload is None:
                return state
            state = runtime.resume(workflow=workflow, run_id=state.run_id, wait_key=wait.wait_key,
                                   payload=payload, allow_drift=allow_drift, lock_wait=lock_wait)
            continue
        if state.status is RunStatus.RUNNING:
            s.info(f"run {state.run_id} is still running after {max_steps} steps; continue with: "
                   f"abstractruntime tick {state.run_id}")
        return state


def _advance(s: Settings, first: Callable[..., Any], runtime: Any, workflow: Any, run_id: str, *,
             allow_drift: bool, wait: float, max_steps: int) -> None:
    """Make the ``first`` call (``tick`` or ``retry``) on ``run_id``, drive the run on, report it."""
    s.current_run = run_id
    s.redactor = runtime.redactor  # errors printed from here on: the workflow's own rules too
    state = first(workflow=workflow, run_id=run_id, allow_drift=allow_drift, lock_wait=wait,
                  max_steps=min(max_steps, 100))
    finish_run(s, drive(s, runtime, workflow, state, allow_drift=allow_drift, lock_wait=wait,
                        max_steps=max(max_steps - 100, 0)))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    workflow_file: str = typer.Argument(..., metavar="WORKFLOW.py", help="Python file exposing a WorkflowSpec."),
    attr: Optional[str] = AttrOpt,
    var: list[str] = typer.Option([], "--var", metavar="KEY=VALUE",
                                  help="An input variable (VALUE parsed as JSON when it is JSON); repeatable."),
    vars_json: Optional[str] = typer.Option(None, "--vars-json", metavar="JSON", help="Input variables as a JSON object."),
    run_id: Optional[str] = typer.Option(None, "--run-id", metavar="ID", help="Use this run id instead of a random one."),
    actor: Optional[str] = typer.Option(None, "--actor", metavar="ID", help="Actor id recorded on the run."),
    max_steps: int = typer.Option(10_000, "--max-steps", min=1, help="Stop after this many node steps."),
    llm: Optional[str] = LlmOpt,
    provider: Optional[str] = ProviderOpt,
    model: Optional[str] = ModelOpt,
    server: Optional[str] = ServerOpt,
    base_url: Optional[str] = BaseUrlOpt,
    budget: list[str] = typer.Option([], "--budget", metavar="LIMIT=N",
                                     help="Pause the run when its LLM calls reach N: tokens=100000, cost=2.5 or "
                                          "calls=20; repeatable (over the workflow file's `budget`)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Start a run and advance it until it completes, fails or waits (exit 0, 1 or 5).

    On a terminal an ask_user prompt is asked here and the run goes on with the answer;
    with --no-input or without a terminal the command exits 5 and prints the run id.
    With --llm, llm_call and tool_calls effects go to an LLM (API keys: environment only); the
    configuration is recorded with the run (never a key) and reused by later commands. An
    llm_call with no --llm makes the run wait (exit 5, "needs --llm ...") rather than fail.
    With a budget, a run whose calls reach it waits (reason budget, exit 5) for
    `resume RUN@wN --raise-budget tokens=+N` or `--answer stop`.
    """
    s = settings(ctx, json_out)
    limits = parse_budget(budget) if budget else {}
    config = llm_config_of(llm, provider=provider, model=model, server=server, base_url=base_url)
    loaded = workflows.load(workflow_file, attr=attr)
    # Only a code-first workflow has typed inputs, and its file imported abstractruntime.flow:
    # a graph workflow's run does not load that package.
    flow = sys.modules.get("abstractruntime.flow.spec")
    inputs = workflows.parse_vars(var, vars_json, flow.text_inputs(loaded.workflow) if flow else frozenset())
    if config is not None:
        s.debug(config.describe())
    runtime = workflows.runtime_for(s.open_store(create=True), loaded, config)
    s.redactor = runtime.redactor  # errors printed from here on: the workflow's own rules too
    # The LLM configuration goes with the run, so later commands need no --llm again.
    metadata = {"llm": config.to_metadata()} if config is not None else None
    declared = getattr(loaded.module, "budget", None)
    merged = {**(declared if isinstance(declared, dict) else {}), **limits} or None
    new_id = runtime.start(workflow=loaded.workflow, vars=inputs, actor_id=actor, run_id=run_id, metadata=metadata,
                           budget=merged)
    s.current_run = new_id
    s.debug(f"started run {new_id}")
    state = drive(s, runtime, loaded.workflow, runtime.get_state(new_id), max_steps=max_steps)
    finish_run(s, state)


@app.command("start")
def start_cmd(
    ctx: typer.Context,
    workflow_file: str = typer.Argument(..., metavar="WORKFLOW.py", help="Python file exposing a WorkflowSpec."),
    attr: Optional[str] = AttrOpt,
    var: list[str] = typer.Option([], "--var", metavar="KEY=VALUE", help="An input variable; repeatable."),
    vars_json: Optional[str] = typer.Option(None, "--vars-json", metavar="JSON", help="Input variables as a JSON object."),
    run_id: Optional[str] = typer.Option(None, "--run-id", metavar="ID", help="Use this run id instead of a random one."),
    actor: Optional[str] = typer.Option(None, "--actor", metavar="ID", help="Actor id recorded on the run."),
    llm: Optional[str] = LlmOpt,
    provider: Optional[str] = ProviderOpt,
    model: Optional[str] = ModelOpt,
    server: Optional[str] = ServerOpt,
    base_url: Optional[str] = BaseUrlOpt,
    budget: list[str] = typer.Option([], "--budget", metavar="LIMIT=N",
                                     help="Pause the run when its LLM calls reach N (tokens, cost or calls); "
                                          "repeatable."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create a run without advancing it; prints its id (advance it with `tick RUN` or a worker).

    With --llm ... the LLM configuration is recorded with the run (never a key), so a worker
    serves its llm_call effects; --budget as for `run`.
    """
    s = settings(ctx, json_out)
    limits = parse_budget(budget) if budget else {}
    config = llm_config_of(llm, provider=provider, model=model, server=server, base_url=base_url)
    loaded = workflows.load(workflow_file, attr=attr)
    # Only a code-first workflow has typed inputs, and its file imported abstractruntime.flow:
    # a graph workflow's run does not load that package.
    flow = sys.modules.get("abstractruntime.flow.spec")
    inputs = workflows.parse_vars(var, vars_json, flow.text_inputs(loaded.workflow) if flow else frozenset())
    runtime = workflows.runtime_for(s.open_store(create=True), loaded)
    metadata = {"llm": config.to_metadata()} if config is not None else None
    declared = getattr(loaded.module, "budget", None)
    merged = {**(declared if isinstance(declared, dict) else {}), **limits} or None
    new_id = runtime.start(workflow=loaded.workflow, vars=inputs, actor_id=actor, run_id=run_id, metadata=metadata,
                           budget=merged)
    state = runtime.shown_checkpoint(new_id).run
    if s.json:
        s.emit_json(state.to_dict())
    else:
        s.emit_lines([new_id])
        s.info(f"run {new_id} created at node {state.current_node}")


def parse_budget(items: list[str], *, option: str = "--budget") -> dict[str, Any]:
    """``{"tokens": 100000}`` from ``LIMIT=N`` items (checked: exit 2 on anything else)."""
    from abstractruntime.core.budget import check_budget
    from abstractruntime.core.errors import InvalidInputError

    limits: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"{option} expects LIMIT=N (tokens, cost or calls), got {item!r}")
        try:
            limits[name.strip()] = float(value) if name.strip() == "cost" else int(value)
        except ValueError:
            raise InvalidInputError(f"{option} {item!r}: N must be a number") from None
    return check_budget(limits) or {}


def run_resolver(s: Settings, store: Any, llm: Any = None, *,
                 allow_drift: bool = False) -> Callable[[Any], tuple[Any, Any]]:
    """``resolve(checkpoint) -> (workflow, runtime)``: each run with the workflow file the
    operator's registry holds for its recorded id and sha256, and that file's tools and handlers
    (loaded once per workflow, source hash and LLM setup)."""
    cache: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def resolve(checkpoint: Any) -> tuple[Any, Any]:
        from abstractruntime.trust import recorded_workflow

        run = checkpoint.run
        # Keyed on what the run's hash chain recorded (checked against run.json for every run).
        workflow = recorded_workflow(store.runtime(), run.run_id, checkpoint)
        recorded = json_inline((getattr(checkpoint, "metadata", None) or {}).get("llm"))
        key = (workflow.workflow_id, workflow.sha256 or "", recorded)
        if key not in cache:
            cache[key] = workflows.load_for_run(s, store, run.run_id, llm=llm, allow_drift=allow_drift)
        loaded, runtime = cache[key]
        return loaded.workflow, runtime

    return resolve


def scheduler_for(s: Settings, *, limit: int, allow_drift: bool, errors: list[str], llm: Any = None,
                  schedules: bool = False, **options: Any) -> Any:
    """A :class:`~abstractruntime.scheduler.Scheduler` over the store that serves runs of any
    workflow file (:func:`run_resolver`); failures go to ``errors`` (reported once, by the command).
    With ``schedules`` each pass first starts the runs of the store's due schedule ticks, their
    workflow files located through the operator's registry."""
    import logging

    from abstractruntime.scheduler import Scheduler, WorkflowRegistry

    store = s.open_store()
    if schedules:
        from abstractruntime.scheduler.schedules import Schedules
        from abstractruntime.workflow_files import schedule_resolver

        built: list[Callable[[Any], Any]] = []

        def resolve_schedule(schedule: Any) -> Any:
            if not built:  # the registry is read when a tick is first due, as for runs
                built.append(schedule_resolver(store, registry=workflows.registry(s, store)))
            return built[0](schedule)

        options.update(schedules=Schedules(store.schedules), resolve_schedule=resolve_schedule,
                       on_schedule_failed=lambda name, message: errors.append(s.scrub(message)))
    quiet_log = logging.getLogger("abstractruntime.scheduler")
    if not s.verbose and not quiet_log.handlers:
        # Failures are reported by the command, once; the scheduler's own log lines are for -v.
        quiet_log.addHandler(logging.NullHandler())
    return Scheduler(runtime=store.runtime(), registry=WorkflowRegistry(),
                     resolve_checkpoint=run_resolver(s, store, llm, allow_drift=allow_drift),
                     allow_drift=allow_drift, batch_size=limit, events=store.events,
                     on_run_failed=lambda run_id, exc: errors.append(s.scrub(f"run {run_id}: {exc}")),
                     on_run_locked=lambda run_id: s.info(f"run {run_id} is locked by another writer; skipped"),
                     **options)


def tick_due_runs(s: Settings, *, limit: int, allow_drift: bool,
                  llm: Any = None) -> tuple[list[Any], list[str]]:
    """One pass of the scheduler over the store's due timers; returns (new states, error lines)."""
    errors: list[str] = []
    scheduler = scheduler_for(s, limit=limit, allow_drift=allow_drift, errors=errors, llm=llm)
    return scheduler.tick_due(limit=limit), errors


@app.command("tick")
def tick_cmd(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]", help="The run to advance."),
    due: bool = typer.Option(False, "--due", help="Advance every run whose wait_until timer is due."),
    limit: int = typer.Option(100, "--limit", min=1, help="With --due: at most this many runs."),
    workflow_file: Optional[str] = WorkflowOpt,
    attr: Optional[str] = AttrOpt,
    allow_drift: bool = DriftOpt,
    wait: float = WaitOpt,
    max_steps: int = typer.Option(10_000, "--max-steps", min=1, help="Stop after this many node steps."),
    llm: Optional[str] = LlmOpt,
    provider: Optional[str] = ProviderOpt,
    model: Optional[str] = ModelOpt,
    server: Optional[str] = ServerOpt,
    base_url: Optional[str] = BaseUrlOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Advance one run (`tick RUN`) or every run whose timer is due (`tick --due`).

    A run waiting on a timer that is not yet due, an answer or an event is left as it is (exit 5).
    A run waiting for a handler (an llm_call started without --llm) is performed now when the
    run's recorded LLM configuration, or --llm given here, provides one.
    """
    s = settings(ctx, json_out)
    if due == (run_id is not None):
        raise typer.BadParameter("give either RUN or --due", param_hint="RUN / --due")
    flags = llm_flags(llm, provider=provider, model=model, server=server, base_url=base_url, ctx=ctx)
    if due:
        states, errors = tick_due_runs(s, limit=limit, allow_drift=allow_drift, llm=flags)
        finish_batch(s, states, errors, f"{len(states)} due run(s) advanced")
    assert run_id is not None
    run_id = run_id_of(run_id)
    loaded, runtime = workflows.load_for_run(s, s.open_store(), run_id, workflow_file=workflow_file, attr=attr,
                                             llm=flags, allow_drift=allow_drift)
    _advance(s, runtime.tick, runtime, loaded.workflow, run_id, allow_drift=allow_drift, wait=wait,
             max_steps=max_steps)


@app.command("retry")
def retry_cmd(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN", help="A run that failed on a retryable effect error."),
    workflow_file: Optional[str] = WorkflowOpt,
    attr: Optional[str] = AttrOpt,
    allow_drift: bool = DriftOpt,
    wait: float = WaitOpt,
    max_steps: int = typer.Option(10_000, "--max-steps", min=1, help="Stop after this many node steps."),
    llm: Optional[str] = LlmOpt,
    provider: Optional[str] = ProviderOpt,
    model: Optional[str] = ModelOpt,
    server: Optional[str] = ServerOpt,
    base_url: Optional[str] = BaseUrlOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Attempt again the effect a run failed on, when the failure was retryable (a blip).

    The failure stays in the ledger and a retry record starts a new set of attempts; the run
    then goes on as `tick` would (exit 0, 1 or 5). A run that did not fail on a retryable
    effect error is refused (exit 1, nothing written). The run's recorded LLM configuration
    is used unless --llm ... options override it.
    """
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    flags = llm_flags(llm, provider=provider, model=model, server=server, base_url=base_url, ctx=ctx)
    store = s.open_store()
    state = store.runtime().get_state(run_id)
    if state.status.value != "failed":
        from abstractruntime.core.errors import RunNotRetryableError

        # Checked before any workflow code is imported (the kernel checks again under the lock).
        raise RunNotRetryableError(f"Run {run_id} cannot be retried: it is {state.status.value}, not failed",
                                   run_id=run_id, status=state.status.value)
    loaded, runtime = workflows.load_for_run(s, store, run_id, workflow_file=workflow_file, attr=attr, llm=flags,
                                             allow_drift=allow_drift)
    _advance(s, runtime.retry, runtime, loaded.workflow, run_id, allow_drift=allow_drift, wait=wait,
             max_steps=max_steps)
