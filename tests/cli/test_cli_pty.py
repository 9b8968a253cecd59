"""The interactive ask_user prompt, in a real pseudo-terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pexpect

from cli_support import BIN


def spawn(store: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", "TERM": "dumb"}
    return pexpect.spawn(str(BIN), list(args), env=env, encoding="utf-8", timeout=30, dimensions=(40, 200))


def test_run_asks_and_continues_with_the_answer(store: Path, wf: Path, sh) -> None:
    child = spawn(store, "run", str(wf / "approval.py"), "--run-id", "tty1", "--var", "service=billing")
    child.expect_exact("Deploy billing to production? [y/n]")
    child.expect_exact("1) yes")
    child.expect_exact("2) no")
    child.expect_exact("> ")
    child.sendline("maybe")
    child.expect_exact("Please answer with one of: yes, no")
    child.expect_exact("> ")
    child.sendline("1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    doc = json.loads(sh("runs", "show", "tty1", "--json").stdout)
    assert doc["run"]["output"] == {"deployed": True, "service": "billing"}


def test_resume_asks_on_a_terminal(store: Path, wf: Path, sh) -> None:
    assert sh("run", str(wf / "approval.py"), "--run-id", "tty2").exit_code == 5
    child = spawn(store, "resume", "tty2")
    child.expect_exact("Deploy web to production? [y/n]")
    child.expect_exact("> ")
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(sh("runs", "show", "tty2", "--json").stdout)["run"]["output"]["deployed"] is False


def test_no_input_never_prompts_on_a_terminal(store: Path, wf: Path) -> None:
    child = spawn(store, "--no-input", "run", str(wf / "approval.py"), "--run-id", "tty3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5
    assert "tty3" in child.before
    assert "1) yes" not in child.before  # the choices menu of the prompt was never shown


def test_eof_leaves_the_run_waiting(store: Path, wf: Path, sh) -> None:
    child = spawn(store, "run", str(wf / "approval.py"), "--run-id", "tty4")
    child.expect_exact("> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5
    assert json.loads(sh("runs", "show", "tty4", "--json").stdout)["run"]["status"] == "waiting"
