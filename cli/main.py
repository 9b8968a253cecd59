"""Entry point of the ``abstractruntime`` command (console script and ``python -m abstractruntime``)."""

from __future__ import annotations

import signal
import sys
from typing import Any, Optional

import typer

from . import cmd_exec, cmd_graph, cmd_inspect, cmd_resume, cmd_snapshot, cmd_tools, cmd_verify  # noqa: F401  (register)
from . import cmd_keys, cmd_replay, cmd_report, cmd_store, cmd_worker  # noqa: F401,E402  (register)
from . import cmd_prune, cmd_schedule, cmd_usage, cmd_watch  # noqa: F401,E402  (register)
from .app import app, on_sigterm, silence_stdout
from .exit_codes import INTERRUPTED


def build_command() -> Any:
    """The click command tree of the app, with plain (pydantic-free) option coercion."""
    from .fastparams import install_plain_coercion

    return install_plain_coercion(typer.main.get_command(app))


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; returns the exit code (see ``abstractruntime.cli.exit_codes``)."""
    command = build_command()
    try:
        # SIGTERM unwinds the command like Ctrl-C does, so it can say where the run stopped.
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass
    try:
        command.main(args=argv, prog_name="abstractruntime", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except BrokenPipeError:  # the reader closed stdout: end quietly, like a finished `cat`
        silence_stdout()
        return 0
    except KeyboardInterrupt as exc:  # outside a command (e.g. while parsing): still a clean exit
        from .app import Terminated
        from .exit_codes import TERMINATED

        typer.echo("terminated" if isinstance(exc, Terminated) else "interrupted", err=True)
        return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
