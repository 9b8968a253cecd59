"""The typer application, its global options and the one place errors become exit codes."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn, Optional, cast

import typer
from typer.core import TyperGroup

from .argv import hoist_global_options, wants_json
from .exit_codes import INTERRUPTED, TERMINATED, USAGE, exit_code_for, exit_code_for_status
from .output import Settings, json_document, json_inline, tool_call_text

if TYPE_CHECKING:
    # typer vendors click and gives its Context and ClickException no public name; these are the
    # classes typer's own TyperGroup is typed with, so the overrides below keep its signatures.
    from typer._click import ClickException
    from typer._click import Context as ClickContext

    from abstractruntime.core.models import RunState, WaitState

HELP = """Run, resume, inspect and verify durable workflow runs.

Runs live in a store directory: --store DIR, else $ABSTRACTRUNTIME_STORE, else the nearest
.abstractruntime directory in the current directory or a parent (as git finds .git).
Only run and start create a store. Global options go before or after the command.
Results go to stdout (JSON with --json, tab-separated when piped); messages go to stderr.
Exit codes: 0 ok, 1 error or run failed, 2 bad input, 3 verification failed, 4 not found,
5 run waiting, 6 run blocked (its code diverges from its history), 130 interrupted,
143 terminated.
"""


# Usage errors are the option parser's to print. Newer typer releases vendor click, so their
# base class is taken from typer.BadParameter itself.
_CLICK_EXCEPTION = cast("type[ClickException]", next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler, so a terminated command unwinds like Ctrl-C."""


def on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM handler installed by ``main``: stop the command where it is."""
    raise Terminated()


def _settings_of(ctx: "ClickContext") -> Optional[Settings]:
    obj = ctx.find_object(Settings)
    return obj if isinstance(obj, Settings) else None


def _json_wanted(ctx: "ClickContext") -> bool:
    s = _settings_of(ctx)
    return bool((s is not None and s.json) or wants_json(ctx.meta.get("abstractruntime.argv", [])))


def _scrubber(ctx: "ClickContext") -> Settings:
    """The settings that scrub printed text (fresh ones before the global options are parsed)."""
    return _settings_of(ctx) or Settings()


def report_error(ctx: "ClickContext", code: str, message: str, exit_code: int, **details: Any) -> None:
    """One ``error:`` line on stderr; with ``--json`` also ``{"error": {...}}`` on stdout.

    The message and every string of ``details`` are scrubbed of secrets first (:meth:`Settings.scrub`).
    """
    s = _scrubber(ctx)
    message = s.scrub(message)
    typer.echo(f"error: {message}", err=True)
    if _json_wanted(ctx):
        doc = s.scrub_errors({"code": code, "message": message, "exit_code": exit_code, **details}, inside=True)
        typer.echo(json_document({"error": doc}, lenient=True))


def _scrub_usage_error(ctx: "ClickContext", exc: "ClickException") -> None:
    """Click prints a usage error itself, quoting arguments: scrub its message in place first."""
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        exc.message = _scrubber(ctx).scrub(message)


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush of a closed pipe is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class RootGroup(TyperGroup):
    """Accepts global options anywhere; turns every error into one stderr line and an exit code."""

    def parse_args(self, ctx: "ClickContext", args: list[str]) -> list[str]:
        ctx.meta["abstractruntime.argv"] = list(args)
        try:
            return super().parse_args(ctx, hoist_global_options(self, ctx, list(args)))
        except _CLICK_EXCEPTION as exc:
            _scrub_usage_error(ctx, exc)
            raise

    def invoke(self, ctx: "ClickContext") -> Any:
        from abstractruntime.core.errors import AbstractRuntimeError

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except _CLICK_EXCEPTION as exc:  # usage errors: the parser prints them; JSON too if asked
            _scrub_usage_error(ctx, exc)
            if _json_wanted(ctx):
                code = "usage" if getattr(exc, "exit_code", 1) == USAGE else "error"
                doc = {"code": code, "message": exc.format_message(), "exit_code": exc.exit_code}
                typer.echo(json_document({"error": doc}, lenient=True))
            raise
        except BrokenPipeError:
            # The reader went away (`| head -1`): stop quietly and successfully, so
            # `set -o pipefail` pipelines do not fail on a command that did its job.
            silence_stdout()
            raise typer.Exit(0) from None
        except AbstractRuntimeError as exc:
            exit_code = exit_code_for(exc)
            details = {k: v for k, v in exc.to_dict().items() if k not in ("code", "message")}
            report_error(ctx, exc.code, _with_store(ctx, exc), exit_code, **details)
            _traceback_if_verbose(ctx)
            raise typer.Exit(exit_code) from None
        except KeyboardInterrupt as exc:
            signal_exit = TERMINATED if isinstance(exc, Terminated) else INTERRUPTED
            _report_interrupt(ctx, signal_exit)
            raise typer.Exit(signal_exit) from None
        except Exception as exc:  # a bug or an environment problem: one line, traceback with -v
            exit_code = exit_code_for(exc)
            report_error(ctx, "error", _one_line(f"{type(exc).__name__}: {exc}") + " (run with -v for the traceback)",
                         exit_code)
            _traceback_if_verbose(ctx)
            raise typer.Exit(exit_code) from None
        finally:
            obj = ctx.obj
            if isinstance(obj, Settings):
                obj.close()


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text else text


def _traceback_if_verbose(ctx: "ClickContext") -> None:
    s = _settings_of(ctx)
    if s is not None and s.verbose:
        typer.echo(s.scrub(traceback.format_exc().rstrip()), err=True)


def _with_store(ctx: "ClickContext", exc: Exception) -> str:
    """The error's message; a run/snapshot/bookmark not found also names the store searched."""
    from abstractruntime.core.errors import NotFoundError

    message = _one_line(str(exc))
    s = _settings_of(ctx)
    root = s.store_root() if s is not None else None
    if isinstance(exc, NotFoundError) and getattr(exc, "code", "") != "store_not_found" and root and root not in message:
        message += f" (store: {root})"
    return message


def _report_interrupt(ctx: "ClickContext", code: int) -> None:
    """Where the run stopped and the command that continues it."""
    what = "terminated" if code == TERMINATED else "interrupted"
    s = _settings_of(ctx)
    if s is None or s.current_run is None:
        report_error(ctx, what, what, code)
        return
    run_id = s.current_run
    message = f"{what}: run {run_id}"
    details: dict[str, Any] = {"run_id": run_id}
    try:
        state = s.open_store().runtime().get_state(run_id)
    except Exception:  # the store may be mid-write; the run id and tick are still right
        state = None
    if state is not None:
        status = state.status.value
        details.update(status=status, node=state.current_node)
        message += f" stopped at node {state.current_node} ({status})"
        cont = continue_command(state)
    else:
        cont = f"abstractruntime tick {run_id}"
    details["continue_with"] = cont
    report_error(ctx, what, f"{message}; continue with: {cont}", code, **details)


def continue_command(state: "RunState") -> str:
    """The command that moves a stopped run on (``tick`` unless it waits for someone)."""
    status = state.status.value
    wait = state.waiting
    if status == "waiting" and wait is not None:
        reason = wait.reason.value
        if reason == "user":
            return f"abstractruntime resume {wait_handle(state)} --answer TEXT"
        if reason == "budget":
            return f"abstractruntime resume {wait_handle(state)} --raise-budget {_budget_limit(wait)}=+N"
        if isinstance(wait.details, dict) and isinstance(wait.details.get("tool_calls"), list):
            return f"abstractruntime tools approve {state.run_id}"
        if reason in ("event", "job") and wait.wait_key and not _needs_handler(wait):
            return f"abstractruntime emit {wait.wait_key} --id ID --payload JSON"
        if reason == "until":
            return "abstractruntime tick --due"
    if status in ("completed", "failed", "cancelled"):
        return f"abstractruntime runs show {state.run_id}"
    return f"abstractruntime tick {state.run_id}"


def _can_retry(s: Settings, run_id: str) -> bool:
    """Whether ``retry`` would continue the failed run (the runtime's rule; ``False`` if unreadable)."""
    from abstractruntime.core.errors import AbstractRuntimeError

    try:
        return bool(s.open_store().runtime().can_retry(run_id))
    except (AbstractRuntimeError, OSError):
        return False  # only a hint: the failure itself was already reported


def _budget_limit(wait: "WaitState") -> str:
    """The first limit a budget wait reached (``tokens`` when it does not say)."""
    reached = wait.details.get("reached") if isinstance(wait.details, dict) else None
    return str(reached[0]) if isinstance(reached, list) and reached else "tokens"


def _needs_handler(wait: "WaitState") -> bool:
    return isinstance(wait.details, dict) and "needs_handler" in wait.details


def wait_handle(state: "RunState") -> str:
    """What ``resume`` takes for the run's current wait: ``RUN@wN`` when waits have ids, else the run id."""
    wait_id = getattr(state.waiting, "wait_id", None) if state.waiting is not None else None
    if not wait_id:
        return state.run_id
    from abstractruntime.core.waits import format_wait_handle

    return format_wait_handle(state.run_id, wait_id)


app = typer.Typer(
    name="abstractruntime",
    cls=RootGroup,
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: predictable text for docs/cli.md, and no markup parsing of help
    # strings (a "[default: ...]" in help text would otherwise vanish).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from abstractruntime import __version__

        typer.echo(f"abstractruntime {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    store: Optional[str] = typer.Option(
        None, "--store", metavar="DIR",
        help="Store directory [env var: ABSTRACTRUNTIME_STORE; default: the nearest .abstractruntime "
             "here or in a parent directory]."),
    workflows: list[str] = typer.Option(
        [], "--workflows", metavar="DIR|GLOB|FILE",
        help="Register workflow files: a folder's *.py, a glob or a file; repeatable. Commands that continue "
             "a run find its code by workflow id and sha256 among these, $ABSTRACTRUNTIME_WORKFLOWS and "
             "[tool.abstractruntime] workflows in the nearest pyproject.toml."),
    signing_key: Optional[str] = typer.Option(
        None, "--signing-key", metavar="PEM_FILE", envvar="ABSTRACTRUNTIME_SIGNING_KEY", show_envvar=True,
        help="Sign every batch a command writes with this ed25519 private key. A run whose head this key did "
             "not sign is refused (exit 3) unless adopted; a signed run is refused without its key."),
    adopt_unsigned: bool = typer.Option(
        False, "--adopt-unsigned",
        help="With --signing-key: take over a run whose head the key did not sign (begun without a key, "
             "stripped, or another key's), recorded in the ledger as a signed adoption. Check the run first."),
    upgrade: bool = typer.Option(
        False, "--upgrade", envvar="ABSTRACTRUNTIME_UPGRADE", show_envvar=True,
        help="Allow upgrades: a run whose workflow file changed since it recorded it continues with the new file "
             "when its history fits it (a code-first run's recorded steps replay; a graph run's nodes still "
             "exist), and the new sha256 is recorded; otherwise refused, naming where it diverges. Per "
             "workflow: upgrades = [...] under [tool.abstractruntime]."),
    json_out: bool = typer.Option(False, "--json", help="Write results as JSON (every data command)."),
    no_input: bool = typer.Option(False, "--no-input", envvar="ABSTRACTRUNTIME_NO_INPUT", show_envvar=True,
                                  help="Never prompt; a run that waits exits 5."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No messages on stderr (errors still shown)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="More messages; tracebacks for unexpected errors."),
    prices: Optional[str] = typer.Option(
        None, "--prices", metavar="FILE", envvar="ABSTRACTRUNTIME_PRICES", show_envvar=True,
        help="A price table (TOML or JSON, docs/llm.md): LLM calls record their cost."),
    max_in_flight: list[str] = typer.Option(
        [], "--max-in-flight", metavar="KEY=N",
        help="At most N effects in flight for KEY (e.g. llm:openai=4) among every process of the store; "
             "repeatable [env var: ABSTRACTRUNTIME_MAX_IN_FLIGHT, comma-separated]."),
    stream: bool = typer.Option(False, "--stream", envvar="ABSTRACTRUNTIME_LLM_STREAM", show_envvar=True,
                                help="LLM calls stream their reply (`abstractruntime watch` shows it token by token)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Global options (before or after the command)."""
    if adopt_unsigned and not signing_key:
        raise typer.BadParameter("--adopt-unsigned adopts a run for a signing key: give --signing-key PEM_FILE",
                                 param_hint="--adopt-unsigned")
    ctx.obj = Settings(store=store, json=json_out, no_input=no_input, quiet=quiet, verbose=verbose,
                       workflows=list(workflows), signing_key=signing_key or None, adopt_unsigned=adopt_unsigned,
                       upgrade=upgrade)
    from .llm import llm_run_options

    llm_run_options(prices, max_in_flight, stream)
    if verbose:
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(_scrubbing_formatter(ctx.obj, "%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])


def _scrubbing_formatter(s: Settings, fmt: str) -> Any:
    """A log formatter whose lines (``-v``) are scrubbed of secrets like any message on stderr."""
    import logging

    class ScrubbingFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return s.scrub(super().format(record))

    return ScrubbingFormatter(fmt)


def settings(ctx: typer.Context, json_flag: bool = False) -> Settings:
    """The global settings, with a command's own ``--json`` folded in."""
    obj = ctx.find_object(Settings)
    if obj is None:  # a command invoked without the root callback (tests of a subcommand)
        obj = Settings()
        ctx.obj = obj
    if json_flag:
        obj.json = True
    return obj


def shown_state(s: Settings, state: "RunState") -> "RunState":
    """``state`` as readers see it — every secret shown as its redacted text, as the ledger holds
    it — which is what every command prints (a real value only with ``runs show --reveal``)."""
    from abstractruntime.core.errors import AbstractRuntimeError
    from abstractruntime.core.models import RunState

    try:
        shown: RunState = s.open_store().runtime().shown_checkpoint(state.run_id).run
    except AbstractRuntimeError:
        # The run cannot be read back (a store gone away): the default rules, over the live state.
        from abstractruntime.core.redaction import Redactor

        shown = RunState.from_dict(Redactor().redact(state.to_dict()))
    return shown


def finish_batch(s: Settings, states: "list[RunState]", errors: list[str], summary: str) -> NoReturn:
    """Print the runs a batch command advanced, then its errors; exit 1 if any run failed to advance."""
    states = [shown_state(s, st) for st in states]
    if s.json:
        s.emit_json([st.to_dict() for st in states])
    else:
        s.emit_table(["run_id", "status", "node"], [[st.run_id, st.status.value, st.current_node] for st in states])
    s.info(summary)
    for line in errors:
        typer.echo(f"error: {s.scrub(line)}", err=True)
    raise typer.Exit(1 if errors else 0)


def finish_run(s: Settings, state: "RunState") -> NoReturn:
    """Print a run's outcome (run id on stdout, or its JSON) and exit with its status code."""
    status = state.status.value
    state = shown_state(s, state)
    if s.json:
        s.emit_json(state_document(state))
    else:
        s.emit_lines([wait_handle(state) if status == "waiting" else state.run_id])
        describe_state(s, state)
    raise typer.Exit(exit_code_for_status(status))


def state_document(state: "RunState") -> dict[str, Any]:
    """``RunState.to_dict()``, plus ``wait_id`` and ``wait_handle`` when the run waits."""
    doc = state.to_dict()
    if state.waiting is not None:
        doc["wait_id"] = getattr(state.waiting, "wait_id", None)
        doc["wait_handle"] = wait_handle(state)
    return doc


def describe_state(s: Settings, state: "RunState") -> None:
    """A short human summary of a run on stderr."""
    status = state.status.value
    if status == "completed":
        s.info(f"run {state.run_id} completed")
        if state.output is not None:
            s.info("output: " + json_inline(state.output))
    elif status == "waiting" and state.waiting is not None:
        wait = state.waiting
        reason = wait.reason.value
        s.info(f"run {state.run_id} is waiting ({reason})" + (f" on {wait.wait_key}" if wait.wait_key else ""))
        if wait.prompt:
            s.info(f"  prompt: {wait.prompt}")
        if wait.choices and reason != "budget":
            s.info("  choices: " + ", ".join(wait.choices))
        if wait.until:
            s.info(f"  until: {wait.until} (then: abstractruntime tick --due)")
        delayed = wait.details.get("retry_after") if isinstance(wait.details, dict) else None
        if isinstance(delayed, dict):
            s.info(f"  waiting out a rate limit, not a failed attempt: {delayed.get('reason')}")
        if isinstance(wait.details, dict) and "needs_handler" in wait.details:
            s.info(f"  needs --llm MODE --model MODEL ... to perform {wait.details['needs_handler']}; then: "
                   f"abstractruntime tick {state.run_id} --llm MODE ...")
        elif reason == "user":
            s.info(f"  answer with: abstractruntime resume {wait_handle(state)} --answer TEXT")
        elif reason == "budget":
            s.info(f"  raise with: abstractruntime resume {wait_handle(state)} --raise-budget "
                   f"{_budget_limit(wait)}=+N   (or end it: --answer stop)")
        elif isinstance(wait.details, dict) and isinstance(wait.details.get("tool_calls"), list):
            for call in wait.details["tool_calls"]:
                if isinstance(call, dict):
                    s.info(f"  tool call {tool_call_text(call)}")
            s.info(f"  approve with: abstractruntime tools approve {state.run_id}   "
                   f"(or: tools deny {state.run_id} --reason TEXT)")
        elif reason in ("event", "job") and wait.wait_key:
            s.info(f"  resume with: abstractruntime emit {wait.wait_key} --id ID --payload JSON   "
                   "(--id: the event's id, delivered once; a retried emit does nothing)")
    elif status in ("failed", "cancelled"):
        s.info(f"run {state.run_id} {status}: {state.error}")
        if status == "failed" and not s.quiet and _can_retry(s, state.run_id):
            s.info(f"  continue with: abstractruntime retry {state.run_id}")
    else:
        s.info(f"run {state.run_id} is {status} at node {state.current_node}")


__all__ = ["app", "RootGroup", "Terminated", "on_sigterm", "settings", "finish_run", "finish_batch", "describe_state",
           "shown_state", "state_document", "wait_handle", "continue_command", "report_error", "silence_stdout"]
