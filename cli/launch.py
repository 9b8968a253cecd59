"""Running the command line: the command tree the arguments need, parsed and invoked.

The console script (:mod:`.entry`) comes here without importing every command module: a
command line that names a command imports the one module that defines it and builds only
its path of the tree. Anything else (no command, ``--help``, a name that is not a command)
imports them all and builds the whole tree, so help and usage errors list every command.
:mod:`.main` imports every command module and is what tests and the docs generator use.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any, Optional

import typer

from .app import app, on_sigterm, silence_stdout
from .exit_codes import INTERRUPTED

# The module defining each top-level command and group, in the order --help lists them
# (tests/cli/test_cli_command_tree.py checks this table against what each module registers).
COMMAND_MODULES: dict[str, str] = {
    "run": "cmd_exec", "start": "cmd_exec", "tick": "cmd_exec", "retry": "cmd_exec",
    "graph": "cmd_graph",
    "runs": "cmd_inspect", "ledger": "cmd_inspect",
    "resume": "cmd_resume", "emit": "cmd_resume", "cancel": "cmd_resume",
    "snapshot": "cmd_snapshot", "bookmark": "cmd_snapshot",
    "tools": "cmd_tools",
    "verify": "cmd_verify",
    "keys": "cmd_keys",
    "replay": "cmd_replay",
    "report": "cmd_report",
    "store": "cmd_store",
    "worker": "cmd_worker",
    "prune": "cmd_prune",
    "schedule": "cmd_schedule",
    "usage": "cmd_usage",
    "watch": "cmd_watch",
}


def register_all() -> None:
    """Import every command module (each registers its commands on :data:`app`), in help's order."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(f"{__package__}.{module}")


def build_command(argv: Optional[list[str]] = None) -> Any:
    """The click command tree of the app, with plain (pydantic-free) option coercion.

    With ``argv`` naming a command (``run ...``, ``runs show ...``), only the path to it is built:
    typer turns every command's signature into click parameters (some 8 ms for the whole tree,
    as long again as the rest of a short command's own work), and the command that runs needs
    its own alone. Anything else — no command, ``--help``, a name that is not a command — builds
    the whole tree, so help and usage errors list every command as before.
    """
    from .fastparams import install_plain_coercion

    names = _named(argv) if argv else []
    module = COMMAND_MODULES.get(names[0]) if names else None
    if module is not None:
        importlib.import_module(f"{__package__}.{module}")
    pruned = _only(app, names) if module is not None else None
    if pruned is None:
        register_all()
    return install_plain_coercion(typer.main.get_command(pruned if pruned is not None else app))


def _named(argv: list[str]) -> list[str]:
    """The command names at the head of ``argv``, after the root's global options (at most two:
    a group and its command); none when the root's ``--help`` comes first."""
    from .argv import command_start

    names: list[str] = []
    i = command_start(argv)
    if any(token in ("-h", "--help") for token in argv[:i]):
        return []  # the root's own help (eager: the command after it never runs) lists every command
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



__all__ = ["COMMAND_MODULES", "build_command", "main", "register_all"]
