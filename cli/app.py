"""The typer application, its global options and the one place errors become exit codes."""

from __future__ import annotations

import traceback
from typing import Any, NoReturn, Optional

import typer
from typer.core import TyperGroup

from .exit_codes import INTERRUPTED, exit_code_for, exit_code_for_status
from .output import Settings

HELP = """Run, resume, inspect and verify durable workflow runs.

Runs live in a store directory (--store, $ABSTRACTRUNTIME_STORE, default ./.abstractruntime).
Results go to stdout (JSON with --json, tab-separated when piped); messages go to stderr.
Exit codes: 0 ok, 1 error or run failed, 2 bad input, 3 verification failed, 4 not found,
5 run waiting, 130 interrupted.
"""


# typer's own exit/abort/usage exceptions pass through untouched. Newer typer releases
# vendor click, so the usage-error base class is taken from typer.BadParameter itself.
_CONTROL_FLOW: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort) + tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _report(ctx: typer.Context, message: str) -> None:
    typer.echo(f"error: {message}", err=True)


class RootGroup(TyperGroup):
    """Turns every error raised by a command into one stderr line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        from abstractruntime.core.errors import AbstractRuntimeError

        try:
            return super().invoke(ctx)
        except _CONTROL_FLOW:
            raise
        except AbstractRuntimeError as exc:
            _report(ctx, _one_line(str(exc)))
            _traceback_if_verbose(ctx)
            raise typer.Exit(exit_code_for(exc)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(INTERRUPTED) from None
        except Exception as exc:  # a bug or an environment problem: one line, traceback with -v
            _report(ctx, _one_line(f"{type(exc).__name__}: {exc}") + " (run with -v for the traceback)")
            _traceback_if_verbose(ctx)
            raise typer.Exit(exit_code_for(exc)) from None
        finally:
            obj = ctx.obj
            if isinstance(obj, Settings):
                obj.close()


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text else text


def _traceback_if_verbose(ctx: typer.Context) -> None:
    obj = ctx.obj
    if isinstance(obj, Settings) and obj.verbose:
        typer.echo(traceback.format_exc().rstrip(), err=True)


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
        None, "--store", metavar="DIR", envvar="ABSTRACTRUNTIME_STORE", show_envvar=True,
        help="Store directory [default: ./.abstractruntime]."),
    json_out: bool = typer.Option(False, "--json", help="Write results as JSON (every data command)."),
    no_input: bool = typer.Option(False, "--no-input", envvar="ABSTRACTRUNTIME_NO_INPUT", show_envvar=True,
                                  help="Never prompt; a run that waits exits 5."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No messages on stderr (errors still shown)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="More messages; tracebacks for unexpected errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Global options (they go before the command)."""
    ctx.obj = Settings(store=store, json=json_out, no_input=no_input, quiet=quiet, verbose=verbose)
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def settings(ctx: typer.Context, json_flag: bool = False) -> Settings:
    """The global settings, with a command's own ``--json`` folded in."""
    obj = ctx.find_object(Settings)
    if obj is None:  # a command invoked without the root callback (tests of a subcommand)
        obj = Settings()
        ctx.obj = obj
    if json_flag:
        obj.json = True
    return obj


def finish_batch(s: Settings, states: list[Any], errors: list[str], summary: str) -> NoReturn:
    """Print the runs a batch command advanced, then its errors; exit 1 if any run failed to advance."""
    if s.json:
        s.emit_json([st.to_dict() for st in states])
    else:
        s.emit_table(["run_id", "status", "node"], [[st.run_id, st.status.value, st.current_node] for st in states])
    s.info(summary)
    for line in errors:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1 if errors else 0)


def finish_run(s: Settings, state: Any) -> NoReturn:
    """Print a run's outcome (run id on stdout, or its JSON) and exit with its status code."""
    status = state.status.value
    if s.json:
        s.emit_json(state.to_dict())
    else:
        s.emit_lines([state.run_id])
        describe_state(s, state)
    raise typer.Exit(exit_code_for_status(status))


def describe_state(s: Settings, state: Any) -> None:
    """A short human summary of a run on stderr."""
    import json

    status = state.status.value
    if status == "completed":
        s.info(f"run {state.run_id} completed")
        if state.output is not None:
            s.info("output: " + json.dumps(state.output, ensure_ascii=False, sort_keys=True))
    elif status == "waiting" and state.waiting is not None:
        wait = state.waiting
        reason = wait.reason.value
        s.info(f"run {state.run_id} is waiting ({reason})" + (f" on {wait.wait_key}" if wait.wait_key else ""))
        if wait.prompt:
            s.info(f"  prompt: {wait.prompt}")
        if wait.choices:
            s.info("  choices: " + ", ".join(wait.choices))
        if wait.until:
            s.info(f"  until: {wait.until} (then: abstractruntime tick --due)")
        if reason == "user":
            s.info(f"  answer with: abstractruntime resume {state.run_id} --answer TEXT")
        elif isinstance(wait.details, dict) and isinstance(wait.details.get("tool_calls"), list):
            for call in wait.details["tool_calls"]:
                if isinstance(call, dict):
                    s.info(f"  tool call {call.get('call_id')}: {call.get('name')} "
                           + json.dumps(call.get("arguments"), ensure_ascii=False, sort_keys=True))
            s.info(f"  approve with: abstractruntime tools approve {state.run_id}   "
                   f"(or: tools deny {state.run_id} --reason TEXT)")
        elif reason in ("event", "job") and wait.wait_key:
            s.info(f"  resume with: abstractruntime emit {wait.wait_key} --payload JSON")
    elif status in ("failed", "cancelled"):
        s.info(f"run {state.run_id} {status}: {state.error}")
    else:
        s.info(f"run {state.run_id} is {status} at node {state.current_node}")


__all__ = ["app", "RootGroup", "settings", "finish_run", "describe_state"]
