"""The README's two set-up commands stay true.

Command 1 (install + run the sample) is run here as a user would after installing: the
`abstractruntime run ...` part in a real pseudo-terminal, answering the prompt. Command 2
(install + test suite) is the one .ci/run executes, checked word for word.
"""

from __future__ import annotations

import os
import re
import shutil
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
