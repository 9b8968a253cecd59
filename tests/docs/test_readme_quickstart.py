"""The README's two set-up commands stay true.

Command 1 (install + run the sample) is run here as a user would after installing: the
`abstractruntime run ...` part in a real pseudo-terminal, answering the prompt. Command 2
(install + test suite) is the one .ci/run executes, checked word for word.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quickstart_commands() -> list[str]:
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", README, re.S)
    assert block, "README has no quick start shell block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_has_exactly_two_setup_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert "pip install -e ." in commands[0] and "abstractruntime run sample_runs/" in commands[0]
    assert "pip install -e '.[dev]'" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _quickstart_commands()[1] in ci


def test_quickstart_sample_runs_end_to_end_in_a_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    command = _quickstart_commands()[0]
    run_part = command[command.index("abstractruntime run "):].replace("abstractruntime ", "", 1)
    exe = shutil.which("abstractruntime", path=os.path.dirname(sys.executable)) or shutil.which("abstractruntime")
    assert exe, "the abstractruntime command is not installed"
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(exe, run_part.split(), cwd=str(ROOT), env=env, encoding="utf-8", timeout=60)
    child.expect("Deploy billing to production")
    child.sendline("yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "completed" in (child.before or "")


def _code_first_block() -> list[str]:
    block = re.search(r"The same approval written as one plain function.*?```sh\n(.*?)```", README, re.S)
    assert block, "README shows no code-first commands"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_code_first_commands_run_as_written(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    first, *rest = _code_first_block()
    assert "approval_flow.py" in first and any(line.startswith("abstractruntime replay") for line in rest)
    exe = shutil.which("abstractruntime", path=os.path.dirname(sys.executable)) or shutil.which("abstractruntime")
    assert exe, "the abstractruntime command is not installed"
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(tmp_path / "store"), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("ABSTRACTRUNTIME_WORKFLOWS", None)  # the repository's pyproject.toml registers the samples
    # On a terminal: the function's question is asked here, and the run completes with the answer.
    child = pexpect.spawn(exe, first.replace("abstractruntime ", "", 1).split(), cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=60)
    child.expect("Deploy billing to production")
    child.sendline("yes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "completed" in (child.before or ""), child.before
    # Without one (a script): the lines as written, in one shell, each `abstractruntime` a new process
    # (the no-input run exits 5: waiting).
    script = "set -e\n" + "\n".join(rest).replace("--no-input)", "--no-input) || test $? -eq 5")
    env["PATH"] = os.path.dirname(exe) + os.pathsep + env.get("PATH", "")
    done = subprocess.run(["sh", "-c", script], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "compatible" in done.stdout and "diverges" not in done.stdout
    runs = subprocess.run([exe, "runs", "list", "--json"], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=60)
    assert sorted(r["status"] for r in json.loads(runs.stdout)) == ["completed", "completed"]
