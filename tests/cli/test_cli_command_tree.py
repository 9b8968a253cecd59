"""The command tree a command line builds: only the path to the command that runs, the same command.

Building every command's click parameters costs as much as a short command's own work, so
``build_command(argv)`` builds only the command ``argv`` names; help, no command and unknown
names build the whole tree. Every command must come out the same either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from abstractruntime.cli.main import build_command


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, sub in getattr(command, "commands", {}).items():
        found.append((*prefix, name))
        found.extend(_paths(sub, (*prefix, name)))
    return found


def _walk(command: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        command = command.commands[name]
    return command


def _shape(command: Any) -> list[tuple[Any, ...]]:
    """What a command parses and says: each parameter's names, kind, default, help; its own help."""
    params = [(type(p).__name__, p.name, tuple(p.opts), tuple(p.secondary_opts), repr(p.default),
               getattr(p, "help", None), p.required, p.nargs, p.multiple, getattr(p, "is_flag", None),
               type(getattr(p, "type", None)).__name__) for p in command.params]
    return [*params, ("help", command.help, command.short_help, command.hidden)]


FULL = build_command()
PATHS = _paths(FULL)


def test_every_command_is_reached() -> None:
    assert ("run",) in PATHS and ("runs", "show") in PATHS and ("emit",) in PATHS and len(PATHS) > 40


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_a_command_built_alone_is_the_command_of_the_whole_tree(path: tuple[str, ...]) -> None:
    for argv in ([*path, "x"], ["--store", "runs", "--json", *path], [*path, "--help"]):
        alone = build_command(argv)
        assert _shape(_walk(alone, path)) == _shape(_walk(FULL, path)), argv
        # Only the path is built (a group named alone keeps all its commands).
        assert list(alone.commands) == [path[0]]
        if len(path) == 2:
            assert list(alone.commands[path[0]].commands) == [path[1]]
    assert _shape(FULL) == _shape(build_command(list(path)))  # the root's own global options


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["nosuch"], ["runs"], ["runs", "nosuch"], ["--json"]])
def test_no_command_or_an_unknown_one_builds_the_tree_it_names(argv: list[str]) -> None:
    built = build_command(argv)
    if argv[:1] == ["runs"]:
        assert list(built.commands) == ["runs"]
        assert set(built.commands["runs"].commands) == set(FULL.commands["runs"].commands)
    else:
        assert set(built.commands) == set(FULL.commands)


def test_help_and_usage_errors_are_unchanged(sh: Any) -> None:
    """Through the installed command (a process), as a user meets them."""
    top = sh("--help")
    assert top.exit_code == 0 and "schedule" in top.stdout and "resume" in top.stdout
    group = sh("runs", "--help")
    assert group.exit_code == 0 and "reindex" in group.stdout and "show" in group.stdout
    typo = sh("runs", "shw", "x")
    assert typo.exit_code == 2 and "Did you mean 'show'?" in typo.stderr
    missing = sh("resume")
    assert missing.exit_code == 2 and "Missing argument" in missing.stderr
    alone = sh("resume", "--help")
    assert alone.exit_code == 0 and alone.stdout.startswith("Usage: abstractruntime resume [OPTIONS]")


# Which command modules a process imported, after the app and each module in turn.
REGISTERS = r"""
import importlib, json, sys
from abstractruntime.cli.app import app
from abstractruntime.cli.launch import COMMAND_MODULES
def names():
    return [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
found = {}
for module in dict.fromkeys(COMMAND_MODULES.values()):
    before = set(names())
    importlib.import_module("abstractruntime.cli." + module)
    for name in names():
        if name not in before:
            found[name] = module
print(json.dumps(found))
"""

LOADED = r"""
import json, sys
from abstractruntime.cli.entry import run
code = run(sys.argv[1:])
print(json.dumps(sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("abstractruntime.cli.cmd_"))))
"""


def test_the_table_of_command_modules_is_what_each_module_registers() -> None:
    from abstractruntime.cli.launch import COMMAND_MODULES

    proc = subprocess.run([sys.executable, "-c", REGISTERS], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout) == COMMAND_MODULES
    assert set(COMMAND_MODULES) == set(FULL.commands)
    # ... and help lists the commands in the same order through the console script, which imports
    # the modules itself, as through abstractruntime.cli.main, which imports them all first.
    script = subprocess.run([sys.executable, "-m", "abstractruntime", "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100"})
    library = subprocess.run([sys.executable, "-c", "import sys, abstractruntime.cli.main as m; "
                              "sys.exit(m.main(['--help']))"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100"})
    assert script.returncode == library.returncode == 0
    assert script.stdout == library.stdout and "schedule" in script.stdout


@pytest.mark.parametrize("argv, modules", [
    (["verify", "--help"], ["cmd_verify"]),
    (["runs", "show", "--help"], ["cmd_exec", "cmd_inspect"]),  # cmd_exec: options other modules share
    (["run", "--help"], ["cmd_exec"]),
    (["--help"], None),
    (["nosuch"], None),
])
def test_a_command_line_imports_the_module_of_its_command_alone(argv: list[str], modules: Any) -> None:
    from abstractruntime.cli.launch import COMMAND_MODULES

    proc = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, timeout=60)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == (modules if modules is not None else sorted(set(COMMAND_MODULES.values())))
