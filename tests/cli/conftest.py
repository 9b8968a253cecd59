"""Shared helpers for the CLI tests: an in-process runner and the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_support import BIN, REPO, SAMPLES, WORKFLOWS, store_files  # noqa: E402,F401  (re-exported)


@dataclass
class Result:
    """What a command did: exit code and the two streams, kept apart."""

    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty store directory (commands other than run/start need one to exist)."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def wf(tmp_path: Path) -> Path:
    """A private copy of the sample workflows (tests may edit them)."""
    target = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def cli(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the app in-process with typer's CliRunner against ``store``, from ``tmp_path``
    (so no pyproject.toml of this repository registers workflows)."""
    from abstractruntime.cli.main import app

    monkeypatch.delenv("ABSTRACTRUNTIME_STORE", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: Optional[str] = None) -> Result:
        result = runner.invoke(app, ["--store", str(store), *args], input=input, color=False)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def sh(store: Path, tmp_path: Path):
    """Run the installed ``abstractruntime`` command as a real subprocess."""

    def run(*args: str, input: Optional[str] = None, env: Optional[dict[str, str]] = None,
            timeout: float = 60) -> Result:
        full_env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", **(env or {})}
        proc = subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                              env=full_env, cwd=tmp_path, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
