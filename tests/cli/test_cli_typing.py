"""The CLI is type-checked as strictly as the package, by the same mypy run CI makes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_checks_the_package_and_the_cli_strictly() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert {"abstractruntime", "cli"} <= set(config["files"])
    assert config["strict"] is True
    loosened = [o for o in config.get("overrides", []) if any(m == "cli" or m.startswith("cli.") for m in o["module"])]
    assert loosened == []  # no override relaxes the CLI's modules (checked as the package `cli`)


def test_ci_runs_that_mypy() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\.venv/bin/mypy$", ci, re.M)  # no arguments: the files of pyproject.toml
