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


def test_prompt_takes_what_it_shows(store: Path, wf: Path, sh) -> None:
    # The sample shows "[y/n]" over the choices yes/no: "y" and "N" are answers, not errors.
    child = spawn(store, "run", str(wf / "approval.py"), "--run-id", "tty5", "--var", "service=billing")
    child.expect_exact("Deploy billing to production? [y/n]")
    child.expect_exact("> ")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert json.loads(sh("runs", "show", "tty5", "--json").stdout)["run"]["output"]["deployed"] is True
    child = spawn(store, "run", str(wf / "approval.py"), "--run-id", "tty6")
    child.expect_exact("> ")
    child.sendline("N")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(sh("runs", "show", "tty6", "--json").stdout)["run"]["output"]["deployed"] is False


def test_scripted_answer_takes_a_unique_prefix_in_any_case(sh, wf: Path) -> None:
    handle = sh("run", str(wf / "approval.py"), "--run-id", "p1").stdout.strip()
    r = sh("resume", handle, "--answer", "Y", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["vars"]["decision"] == {"answer": "yes"}
    handle = sh("run", str(wf / "approval.py"), "--run-id", "p2").stdout.strip()
    r = sh("resume", handle, "--answer", "maybe")
    assert r.exit_code == 2 and "yes" in r.stderr
    assert json.loads(sh("runs", "show", "p2", "--json").stdout)["run"]["status"] == "waiting"


def test_runs_list_keeps_ids_whole_at_80_columns(store: Path, wf: Path, sh) -> None:
    ids = []
    for _ in range(3):
        r = sh("run", str(wf / "approval.py"), "--var", "service=a-rather-long-service-name-for-the-table")
        ids.append(r.stdout.strip().split("@")[0])
    env = {**os.environ, "ABSTRACTRUNTIME_STORE": str(store), "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(str(BIN), ["runs", "list"], env=env, encoding="utf-8", timeout=30, dimensions=(40, 80))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    lines = child.before.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for run_id in ids:
        assert any(run_id in line for line in lines), (run_id, lines)
    child = pexpect.spawn(str(BIN), ["runs", "list", "--wide"], env=env, encoding="utf-8", timeout=30,
                          dimensions=(40, 80))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    for run_id in ids:
        assert run_id in child.before
