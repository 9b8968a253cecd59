"""Global options written after the command are moved in front of it, and nothing else is."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from abstractruntime.cli.argv import GLOBAL_OPTIONS, hoist_global_options, wants_json
from abstractruntime.cli.main import build_command


@pytest.fixture(scope="module")
def root() -> Any:
    return build_command()


def _hoist(root: Any, *args: str) -> list[str]:
    ctx = typer.Context(root, info_name="abstractruntime")
    return hoist_global_options(root, ctx, list(args))


def test_every_global_option_of_the_root_is_known_with_its_arity(root: Any) -> None:
    # A global option added to the root callback but not here would be refused after the command.
    declared = {}
    for param in root.params:
        for name in [*param.opts, *param.secondary_opts]:
            declared[name] = not (param.is_flag or param.count)
    for eager in ("--version", "--install-completion", "--show-completion"):  # act before any command
        declared.pop(eager)
    assert declared == GLOBAL_OPTIONS


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "wf.py", "--no-input", "--store", "S"], ["--no-input", "--store", "S", "run", "wf.py"]),
    (["runs", "show", "r1", "--store=S", "-qv"], ["--store=S", "-qv", "runs", "show", "r1"]),
    (["--json", "runs", "list", "-v"], ["--json", "-v", "runs", "list"]),
    # The command's own --json stays its own; a value of its own option is never a global option.
    (["runs", "show", "r1", "--json"], ["runs", "show", "r1", "--json"]),
    (["resume", "r1", "--answer", "-v"], ["resume", "r1", "--answer", "-v"]),
    (["resume", "r1", "--answer", "--store"], ["resume", "r1", "--answer", "--store"]),
    # After `--` everything is an argument.
    (["run", "wf.py", "--", "-q"], ["run", "wf.py", "--", "-q"]),
    # An unknown command is left for the parser to name.
    (["no-such", "--store", "S"], ["no-such", "--store", "S"]),
])
def test_hoisting(root: Any, args: list[str], expected: list[str]) -> None:
    assert _hoist(root, *args) == expected


def test_wants_json_stops_at_the_separator() -> None:
    assert wants_json(["runs", "show", "--json"])
    assert not wants_json(["run", "wf.py", "--", "--json"])
