"""The console script builds only the invoked command's path of the tree: what it prints must
still be what the whole tree prints, for every way a command line can be spelled.

Each command line runs twice in real processes: through ``python -m abstractruntime`` (the
pruned tree) and through :mod:`abstractruntime.cli.main`'s ``build_command()`` of the whole
tree; stdout, stderr and the exit code must be identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WHOLE = (
    "import sys\n"
    "from abstractruntime.cli import launch\n"
    "launch._named = lambda argv: []  # never prune: the whole tree, as help and usage errors build it\n"
    "sys.exit(launch.main())\n"
)


def _both(tmp_path: Path, *args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "ABSTRACTRUNTIME_STORE": str(tmp_path / "store")}
    out = []
    for head in ([sys.executable, "-m", "abstractruntime"], [sys.executable, "-c", WHOLE]):
        proc = subprocess.run([*head, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, timeout=120)
        out.append((proc.returncode, proc.stdout, proc.stderr))
    return out[0], out[1]


@pytest.mark.parametrize("args", [
    ("--help", "runs"),
    ("-h", "runs", "show"),
    ("--json", "--help", "verify"),
    ("--store", "x", "-h", "snapshot", "create"),
], ids=" ".join)
def test_root_help_before_a_command_lists_every_command(tmp_path: Path, args: tuple[str, ...]) -> None:
    pruned, whole = _both(tmp_path, *args)
    assert pruned == whole
    assert pruned[0] == 0 and "  run " in pruned[1] and "  verify " in pruned[1] and "  runs " in pruned[1]


@pytest.mark.parametrize("args", [
    ("runs", "--help"),
    ("runs", "show", "--help"),
    ("runs", "--help", "show"),
    ("--store", "s", "runs", "list"),
    ("--store=s", "runs", "list", "--json"),
    ("runs", "list", "--store", "s"),
    ("runs", "lst"),
    ("rns",),
    ("runs",),
    ("--bogus", "runs", "list"),
    ("runs", "show", "--bogus"),
    ("--json", "runs", "show", "nope"),
    ("--store",),
    ("--", "runs", "list"),
    ("--version", "runs"),
    ("snapshot", "-h", "create"),
], ids=" ".join)
def test_a_command_line_says_what_the_whole_tree_says(tmp_path: Path, args: tuple[str, ...]) -> None:
    pruned, whole = _both(tmp_path, *args)
    assert pruned == whole
