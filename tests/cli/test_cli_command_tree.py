"""The command tree a command line builds: only the path to the command that runs, the same command.

Building every command's click parameters costs as much as a short command's own work, so
``build_command(argv)`` builds only the command ``argv`` names; help, no command and unknown
names build the whole tree. Every command must come out the same either way.
"""

from __future__ import annotations

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
