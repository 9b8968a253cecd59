"""The command line with every command registered: what tests and the docs generator import.

The console script and ``python -m abstractruntime`` go through :mod:`.entry` and
:mod:`.launch`, which import only the module of the command that runs.
"""

from __future__ import annotations

import sys

from . import cmd_exec, cmd_graph, cmd_inspect, cmd_resume, cmd_snapshot, cmd_tools, cmd_verify  # noqa: F401  (register)
from . import cmd_keys, cmd_replay, cmd_report, cmd_store, cmd_worker  # noqa: F401,E402  (register)
from . import cmd_prune, cmd_schedule, cmd_usage, cmd_watch  # noqa: F401,E402  (register)
from .app import app
from .launch import COMMAND_MODULES, build_command, main, register_all

__all__ = ["app", "build_command", "main", "COMMAND_MODULES", "register_all"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
