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


def build_command(argv: Optional[list[str]] = None) -> Any:
    """The click command tree of the app, with plain (pydantic-free) option coercion.

    With ``argv`` naming a command (``run ...``, ``runs show ...``), only the path to it is built:
    typer turns every command's signature into click parameters (some 8 ms for the whole tree,
    as long again as the rest of a short command's own work), and the command that runs needs
    its own alone. Anything else — no command, ``--help``, a name that is not a command — builds
    the whole tree, so help and usage errors list every command as before.
    """
    from .fastparams import install_plain_coercion

    pruned = _only(app, _named(argv)) if argv else None
    return install_plain_coercion(typer.main.get_command(pruned if pruned is not None else app))


def _named(argv: list[str]) -> list[str]:
    """The command names at the head of ``argv``, after the root's global options (at most two:
    a group and its command)."""
    from .argv import command_start

    names: list[str] = []
    i = command_start(argv)
    while i < len(argv) and len(names) < 2 and not argv[i].startswith("-"):
        names.append(argv[i])
        i += 1
    return names


def _only(group: typer.Typer, names: list[str]) -> Optional[typer.Typer]:
    """A copy of ``group`` holding only the command (or sub-group) ``names`` leads to; ``None``
    when ``names`` names none (the whole group is then built)."""
    import copy

    if not names:
        return None
    for info in group.registered_commands:
        callback = info.callback
        name = info.name or (typer.main.get_command_name(callback.__name__) if callback is not None else None)
        if name == names[0]:
            pruned = copy.copy(group)
            pruned.registered_commands, pruned.registered_groups = [info], []
            return pruned
    for sub in group.registered_groups:
        if sub.name == names[0] and sub.typer_instance is not None:
            kept = copy.copy(sub)
            kept.typer_instance = _only(sub.typer_instance, names[1:]) or sub.typer_instance
            pruned = copy.copy(group)
            pruned.registered_commands, pruned.registered_groups = [], [kept]
            return pruned
    return None


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; returns the exit code (see ``abstractruntime.cli.exit_codes``)."""
    command = build_command(sys.argv[1:] if argv is None else argv)
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
