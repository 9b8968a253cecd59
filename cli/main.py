"""Entry point of the ``abstractruntime`` command (console script and ``python -m abstractruntime``)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import cmd_exec, cmd_graph, cmd_inspect, cmd_resume, cmd_snapshot, cmd_tools, cmd_verify  # noqa: F401  (register)
from .app import app
from .exit_codes import INTERRUPTED


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; returns the exit code (see ``abstractruntime.cli.exit_codes``)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="abstractruntime", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except KeyboardInterrupt:  # outside a command (e.g. while parsing): still a clean 130
        typer.echo("interrupted", err=True)
        return INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
